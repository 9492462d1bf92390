"""Sparse-training mask math (tf_lth.core.sparsity) against hand-computed cases and the formulas
of docs/sparse_training.md; the tfmot-named schedules against tfmot's documented rules."""

import math

import numpy as np
import pytest

from tf_lth.core import sparsity


def test_kept_count_rounds_half_to_even_and_keeps_at_least_one():
    assert sparsity.kept_for_sparsity(10, 0.25) == 8   # round(7.5) = 8
    assert sparsity.kept_for_sparsity(10, 0.35) == 6   # round(6.5) = 6
    assert sparsity.kept_for_sparsity(3, 0.9) == 1     # round(0.3) = 0 -> at least 1
    assert sparsity.kept_for_sparsity(266200, 0.8) == 53240


def test_magnitude_mask_keeps_every_tie_at_the_threshold():
    w = np.array([0.1, -0.5, 0.5, 0.3, 0.5])
    # k = round(5 x 0.4) = 2; the 2nd largest |w| is 0.5; all three 0.5s are kept
    np.testing.assert_array_equal(sparsity.magnitude_mask(w, 0.6), [0, 1, 1, 0, 1])


def test_block_mask_ranks_blocks_by_mean_magnitude():
    w = np.array([1, -1, 1, 1, 0, 0, 0, 3], np.float32).reshape(8, 1)
    # block means 1.0 and 0.75; 2 units at sparsity 0.5 keep 1: the first block
    np.testing.assert_array_equal(sparsity.magnitude_mask(w, 0.5, block=4).ravel(),
                                  [1, 1, 1, 1, 0, 0, 0, 0])


def test_global_mask_uses_one_threshold_over_all_kernels():
    result = sparsity.global_magnitude_mask({"a": np.array([1.0, 2.0]),
                                             "b": np.array([3.0, 4.0, 0.5, 0.1])}, 0.5)
    # 6 weights, k = 3, threshold 2.0
    np.testing.assert_array_equal(result["a"], [0, 1])
    np.testing.assert_array_equal(result["b"], [1, 1, 0, 0])


def test_m_by_n_zeroes_m_of_every_n_inputs_as_tfmot():
    w = np.array([1, -3, 2, 0.5, 0, 0, 5, 0], np.float32).reshape(8, 1)
    # (2, 4): 2 zeros per 4; second group keeps 5 and the first tied zero (index 4)
    np.testing.assert_array_equal(sparsity.m_by_n_mask(w).ravel(), [0, 1, 1, 0, 1, 0, 1, 0])
    # (1, 4): 1 zero per 4, the smallest magnitude of each group
    np.testing.assert_array_equal(sparsity.m_by_n_mask(w, 1, 4).ravel(),
                                  [1, 1, 1, 0, 1, 1, 1, 0])
    two_outputs = np.stack([w.ravel(), -w.ravel()[::-1]], axis=1)
    assert sparsity.m_by_n_mask(two_outputs).sum(axis=0).tolist() == [4, 4]
    with pytest.raises(ValueError, match="multiple of 4"):
        sparsity.m_by_n_mask(np.ones((6, 2)))


def test_erk_densities_for_fc_by_hand():
    shapes = {"d1": (784, 300), "d2": (300, 100), "out": (100, 10)}
    densities = sparsity.erk_densities(shapes, 0.9)
    kept = 0.1 * 266200
    # first pass: eps = kept / (1084 + 400 + 110); the output layer's 0.11 x eps > 1: dense
    assert 110 / 1000 * kept / (1084 + 400 + 110) > 1
    eps = (kept - 1000) / (1084 + 400)
    assert densities["out"] == 1.0
    assert densities["d1"] == pytest.approx(1084 / 235200 * eps)
    assert densities["d2"] == pytest.approx(400 / 30000 * eps)
    total = sum(densities[k] * np.prod(s) for k, s in shapes.items())
    assert total == pytest.approx(kept)


def test_erk_densities_for_conv2_by_hand():
    shapes = {"c1": (3, 3, 3, 64), "c2": (3, 3, 64, 64), "d1": (16384, 256),
              "d2": (256, 256), "out": (256, 10)}
    sizes = {"c1": 1728, "c2": 36864, "d1": 4194304, "d2": 65536, "out": 2560}
    sums = {"c1": 73, "c2": 134, "d1": 16640, "d2": 512, "out": 266}
    kept = 0.1 * sum(sizes.values())
    # pass 1: the output layer (266 / 2560 the largest ratio) would exceed 1
    assert 266 / 2560 * kept / sum(sums.values()) > 1
    # pass 2: then the first conv (73 / 1728)
    assert 73 / 1728 * (kept - 2560) / (sum(sums.values()) - 266) > 1
    # pass 3: the rest fit
    eps = (kept - 2560 - 1728) / (134 + 16640 + 512)
    assert 512 / 65536 * eps <= 1
    densities = sparsity.erk_densities(shapes, 0.9)
    assert densities["out"] == densities["c1"] == 1.0
    for key in ("c2", "d1", "d2"):
        assert densities[key] == pytest.approx(sums[key] / sizes[key] * eps)


def test_kept_counts_hit_the_target_total_exactly():
    shapes = {"d1": (784, 300), "d2": (300, 100), "out": (100, 10)}
    for target in (0.8, 0.95, 0.98):
        counts = sparsity.kept_counts(shapes, sparsity.erk_densities(shapes, target))
        assert sum(counts.values()) == round((1 - target) * 266200)
        uniform = sparsity.kept_counts(shapes, sparsity.uniform_densities(shapes, target))
        assert sum(uniform.values()) == round((1 - target) * 266200)


def test_drop_fraction_is_a_cosine_from_the_initial_fraction_to_zero():
    assert sparsity.drop_fraction(0, 0.3, 1000) == pytest.approx(0.3)
    assert sparsity.drop_fraction(500, 0.3, 1000) == pytest.approx(0.15)
    assert sparsity.drop_fraction(250, 0.3, 1000) == pytest.approx(
        0.15 * (1 + math.cos(math.pi / 4)))
    assert sparsity.drop_fraction(1000, 0.3, 1000) == pytest.approx(0.0)


def test_drop_and_grow_by_hand():
    mask = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)
    weights = np.array([0.1, -0.5, 0.3, 0.05, 9, 9, 9, 9], np.float32)  # stale inactive
    grads = np.array([0, 0, 0, 10, 1, 5, 3, 0], np.float32)
    new, grown = sparsity.drop_and_grow(mask, weights, 0.5, grads)
    # drop floor(0.5 x 4) = 2 smallest active |w|: indices 3 and 0; grow the 2 highest
    # scores among positions not kept: index 3 (10, dropped and grown back) and 5 (5)
    np.testing.assert_array_equal(new, [0, 1, 1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(grown, [0, 0, 0, 0, 0, 1, 0, 0])
    assert new.sum() == mask.sum()


def test_random_mask_has_the_exact_count():
    mask = sparsity.random_mask((30, 7), 50, np.random.default_rng(0))
    assert mask.shape == (30, 7) and mask.sum() == 50


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "x", None])
def test_sparsity_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match="final_sparsity"):
        sparsity.check_sparsity("final_sparsity", value)


# ---- schedules with tfmot's names -----------------------------------------------------------
def _at(schedule, step):
    should, value = schedule(step)
    return bool(should), float(value)


def test_polynomial_decay_follows_the_formula_and_the_pruning_steps():
    from tf_lth.core.schedules import PolynomialDecay

    schedule = PolynomialDecay(0.2, 0.8, begin_step=100, end_step=1100, power=3, frequency=100)
    assert _at(schedule, 99) == (False, pytest.approx(0.2))
    assert _at(schedule, 100) == (True, pytest.approx(0.2))
    assert _at(schedule, 150)[0] is False
    # p = 0.5 at step 600: 0.8 + (0.2 - 0.8) x 0.5 ** 3
    assert _at(schedule, 600) == (True, pytest.approx(0.8 - 0.6 * 0.125))
    assert _at(schedule, 1100) == (True, pytest.approx(0.8))
    assert _at(schedule, 1200) == (False, pytest.approx(0.8))  # after end_step


def test_constant_sparsity_prunes_forever_with_end_step_minus_one():
    from tf_lth.core.schedules import ConstantSparsity

    schedule = ConstantSparsity(0.5, begin_step=0, frequency=10)
    assert _at(schedule, 0) == (True, 0.5)
    assert _at(schedule, 15)[0] is False
    assert _at(schedule, 10 ** 7) == (True, 0.5)
    bounded = ConstantSparsity(0.5, begin_step=10, end_step=30, frequency=10)
    assert [_at(bounded, s)[0] for s in (0, 10, 20, 30, 40)] == [False, True, True, True, False]


@pytest.mark.parametrize("arguments, message", [
    (dict(initial_sparsity=0.0, final_sparsity=1.0, begin_step=0, end_step=10),
     "final_sparsity must be in range"),
    (dict(initial_sparsity=-0.1, final_sparsity=0.5, begin_step=0, end_step=10),
     "initial_sparsity must be in range"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=20, end_step=10),
     "begin_step should be <= end_step"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=-1),
     "end_step cannot be -1"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=-1, end_step=10),
     "begin_step should be >= 0"),
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, frequency=0),
     "frequency should be > 0"),
])
def test_polynomial_decay_refuses_what_tfmot_refuses(arguments, message):
    from tf_lth.core.schedules import PolynomialDecay

    with pytest.raises(ValueError, match=message):
        PolynomialDecay(**arguments)


def test_schedules_round_trip_through_get_config():
    from tf_lth.core import schedules

    for schedule in (schedules.PolynomialDecay(0.1, 0.9, 5, 50, power=2, frequency=5),
                     schedules.ConstantSparsity(0.7, 3, end_step=40, frequency=7)):
        config = schedule.get_config()
        again = schedules.deserialize(config)
        assert type(again) is type(schedule) and again.get_config() == config
        assert type(schedule).from_config(config["config"]).get_config() == config
        for step in (0, 5, 21, 35, 50):
            assert _at(again, step) == _at(schedule, step)


# ---- the compiled versions agree with the NumPy ones ----------------------------------------
@pytest.mark.parametrize("shape, block", [((12, 5), 1), ((13, 6), 4), ((3, 3, 8, 4), 1),
                                          ((3, 3, 9, 4), 4)])
def test_compiled_magnitude_masks_equal_the_numpy_ones(shape, block):
    import tensorflow as tf

    from tf_lth.core import sparse_ops

    rng = np.random.default_rng(1)
    kernel = rng.normal(size=shape).astype(np.float32)
    kernel.flat[:6] = 0.25  # ties at some threshold
    other = rng.normal(size=(7, 3)).astype(np.float32)

    @tf.function(jit_compile=True)
    def both(kernel, other, value):
        return (sparse_ops.magnitude_mask(kernel, value, block),
                sparse_ops.global_magnitude_masks([kernel, other], value, block))

    for value in (0.0, 0.3, 0.5, 0.9, 0.99):
        mask, (g1, g2) = both(tf.constant(kernel), tf.constant(other), tf.constant(value))
        np.testing.assert_array_equal(mask.numpy(), sparsity.magnitude_mask(kernel, value, block))
        expected = sparsity.global_magnitude_mask({"a": kernel, "b": other}, value, block)
        np.testing.assert_array_equal(g1.numpy(), expected["a"])
        np.testing.assert_array_equal(g2.numpy(), expected["b"])


def test_compiled_m_by_n_and_drop_and_grow_equal_the_numpy_ones():
    import tensorflow as tf

    from tf_lth.core import sparse_ops

    rng = np.random.default_rng(2)
    for shape in ((16, 5), (3, 3, 8, 2)):
        kernel = rng.normal(size=shape).astype(np.float32)
        kernel.flat[:4] = 0.0
        np.testing.assert_array_equal(
            tf.function(sparse_ops.m_by_n_mask, jit_compile=True)(tf.constant(kernel)).numpy(),
            sparsity.m_by_n_mask(kernel))
        np.testing.assert_array_equal(sparse_ops.m_by_n_mask(tf.constant(kernel), 1, 4).numpy(),
                                      sparsity.m_by_n_mask(kernel, 1, 4))
    update = tf.function(sparse_ops.drop_and_grow, jit_compile=True)
    # max_count: top-k of the bound instead of a whole sort; 16 = floor(0.5 x 30) + 1
    bounded = tf.function(lambda *args: sparse_ops.drop_and_grow(*args, max_count=16),
                          jit_compile=True)
    for trial in range(5):
        mask = sparsity.random_mask((20, 6), 30, rng)
        kernel = rng.normal(size=(20, 6)).astype(np.float32)
        kernel.flat[20:40] = np.round(kernel.flat[20:40])  # ties in the drop scores
        scores = np.abs(rng.normal(size=(20, 6))).astype(np.float32)
        scores.flat[:10] = 1.0  # ties in the grow scores
        for fraction in (0.0, 0.1, 0.3, 0.5):
            want_new, want_grown = sparsity.drop_and_grow(mask, kernel, fraction, scores)
            for compiled in (update, bounded):
                new, grown = compiled(tf.constant(mask), tf.constant(kernel),
                                      tf.constant(fraction), tf.constant(scores))
                np.testing.assert_array_equal(new.numpy(), want_new)
                np.testing.assert_array_equal(grown.numpy() > 0, want_grown)
    assert float(sparse_ops.drop_fraction(250, 0.3, 1000)) == pytest.approx(
        sparsity.drop_fraction(250, 0.3, 1000))


@pytest.mark.parametrize("begin, end, frequency, last", [
    (0, 1000, 100, 2000), (150, 1000, 100, 600), (7, 7 + 5 * 13, 13, 10_000), (1, 1, 1, 5)])
def test_pruning_steps_are_the_steps_the_schedule_prunes_at(begin, end, frequency, last):
    from tf_lth.core.schedules import ConstantSparsity, PolynomialDecay

    schedules = [ConstantSparsity(0.5, begin, end, frequency)]
    if begin < end:
        schedules.append(PolynomialDecay(0.0, 0.5, begin, end, frequency=frequency))
    for schedule in schedules:
        expected = [t for t in range(1, last + 1)
                    if begin <= t <= end and (t - begin) % frequency == 0]  # tfmot's rule
        assert schedule.pruning_steps(last) == expected
        sampled = [t for t in range(1, min(last, 300) + 1) if bool(schedule(t)[0])]
        assert sampled == [t for t in expected if t <= 300]  # the compiled answer agrees
