"""Mask criteria and pruning against docs/semantics.md ("Pruning schedule", "Mask criteria"),
on small NumPy arrays."""

import numpy as np
import pytest

from tf_lth.core import masks

QUADRANT = ("large_init_large_final", "small_init_small_final")
SCORE_CRITERIA = tuple(c for c in masks.CRITERIA if c not in QUADRANT + ("random",))

# docs/semantics.md's criteria table, written out again so the tests do not read the code's scores.
SPEC_SCORES = {
    "large_final": lambda wi, wf, g: np.abs(wf),
    "small_final": lambda wi, wf, g: -np.abs(wf),
    "large_init": lambda wi, wf, g: np.abs(wi),
    "small_init": lambda wi, wf, g: -np.abs(wi),
    "magnitude_increase": lambda wi, wf, g: np.abs(wf) - np.abs(wi),
    "movement": lambda wi, wf, g: np.abs(wf - wi),
    "large_final_same_sign": lambda wi, wf, g: np.abs(wf) * (np.sign(wi) == np.sign(wf)),
    "large_final_diff_sign": lambda wi, wf, g: np.abs(wf) * (np.sign(wi) != np.sign(wf)),
    "magnitude_increase_same_sign": lambda wi, wf, g: (np.abs(wf) - np.abs(wi))
    * (np.sign(wi) == np.sign(wf)),
    "magnitude_increase_diff_sign": lambda wi, wf, g: (np.abs(wf) - np.abs(wi))
    * (np.sign(wi) != np.sign(wf)),
    "snip": lambda wi, wf, g: np.abs(g * wi),
    "grad": lambda wi, wf, g: np.abs(g),
}


def random_weights(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)


def pruned_values(mask, values):
    return set(np.asarray(values)[np.asarray(mask) == 0].tolist())


def test_criteria_list_matches_spec():
    assert set(masks.CRITERIA) == set(SPEC_SCORES) | set(QUADRANT) | {"random"}
    assert len(masks.CRITERIA) == 15
    assert masks.GRADIENT_CRITERIA == ("snip", "grad")


# --- Hand-computed examples -----------------------------------------------------------------


def test_large_final_prunes_smallest_two_of_arange():
    w = np.arange(1, 11, dtype=float)
    mask = masks.compute_mask("large_final", w, w, np.ones(10), 0.2)
    assert pruned_values(mask, w) == {1.0, 2.0}
    assert mask.dtype == np.float32


def test_small_final_prunes_largest_two_of_arange():
    w = np.arange(1, 11, dtype=float)
    mask = masks.compute_mask("small_final", w, w, np.ones(10), 0.2)
    assert pruned_values(mask, w) == {9.0, 10.0}


def test_large_final_uses_magnitude_not_value():
    w_final = np.array([-5.0, 1.0, -0.5, 3.0, 0.25])
    # abs(w_f) = [5, 1, 0.5, 3, 0.25]: the two smallest magnitudes are positions 4 and 2.
    mask = masks.compute_mask("large_final", np.ones(5), w_final, np.ones(5), 0.4)
    np.testing.assert_array_equal(mask, [1, 1, 0, 1, 0])


def test_large_init_and_small_init_read_w_init():
    w_init = np.array([0.1, -0.9, 0.5, -0.2, 0.7])
    w_final = np.array([9.0, 0.1, 0.1, 9.0, 0.1])  # would give the opposite answer
    large = masks.compute_mask("large_init", w_init, w_final, np.ones(5), 0.4)
    small = masks.compute_mask("small_init", w_init, w_final, np.ones(5), 0.4)
    np.testing.assert_array_equal(large, [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(small, [1, 0, 1, 1, 0])


def test_magnitude_increase_hand_example():
    w_init = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    w_final = np.array([3.0, 0.5, -2.0, 1.5, -0.1])
    # abs(w_f) - abs(w_i) = [2, -0.5, 1, 0.5, -0.9]: the two lowest are positions 4 and 1.
    mask = masks.compute_mask("magnitude_increase", w_init, w_final, np.ones(5), 0.4)
    np.testing.assert_array_equal(mask, [1, 0, 1, 1, 0])


def test_movement_hand_example():
    w_init = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    w_final = np.array([3.0, -0.5, -2.0, 1.2, -2.1])
    # abs(w_f - w_i) = [2, 0.5, 3, 0.2, 1.1]: the two lowest are positions 3 and 1.
    mask = masks.compute_mask("movement", w_init, w_final, np.ones(5), 0.4)
    np.testing.assert_array_equal(mask, [1, 0, 1, 0, 1])


SIGN_W_INIT = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
SIGN_W_FINAL = np.array([4.0, 3.0, -2.0, -5.0, 0.5, 6.0])
# Signs agree at positions 0, 3 and 4 (abs(w_f) 4, 5, 0.5); differ at 1, 2, 5 (3, 2, 6).
# abs(w_f) - abs(w_i) = [3, 2, 1, 4, -0.5, 5].
SMALL_W_INIT = np.array([2.0, -1.0, 1.0, -1.0])
SMALL_W_FINAL = np.array([-1.0, 3.0, 0.5, -2.0])
# Signs differ at 0 and 1, agree at 2 and 3; abs(w_f) - abs(w_i) = [-1, 2, -0.5, 1].


@pytest.mark.parametrize(
    "criterion, w_init, w_final, fraction, expected",
    [
        # Scores [4, 0, 0, 5, 0.5, 0]: prune the three zeros.
        ("large_final_same_sign", SIGN_W_INIT, SIGN_W_FINAL, 0.5, [1, 0, 0, 1, 1, 0]),
        # Scores [0, 3, 2, 0, 0, 6]: prune the three zeros.
        ("large_final_diff_sign", SIGN_W_INIT, SIGN_W_FINAL, 0.5, [0, 1, 1, 0, 0, 1]),
        # Scores [0, 2, 1, 0, 0, 5]: prune the three zeros.
        ("magnitude_increase_diff_sign", SIGN_W_INIT, SIGN_W_FINAL, 0.5, [0, 1, 1, 0, 0, 1]),
        # Scores [-1, 2, 0, 0]: the diff-sign weight that shrank goes first.
        ("magnitude_increase_diff_sign", SMALL_W_INIT, SMALL_W_FINAL, 0.25, [0, 1, 1, 1]),
        # Scores [0, 0, -0.5, 1]: the same-sign weight that shrank goes first.
        ("magnitude_increase_same_sign", SMALL_W_INIT, SMALL_W_FINAL, 0.25, [1, 1, 0, 1]),
        # Scores [0, 0, 0.5, 2]: prune the two diff-sign weights.
        ("large_final_same_sign", SMALL_W_INIT, SMALL_W_FINAL, 0.5, [0, 0, 1, 1]),
    ],
)
def test_sign_criteria_hand_examples(criterion, w_init, w_final, fraction, expected):
    mask = masks.compute_mask(criterion, w_init, w_final, np.ones(w_init.shape), fraction)
    np.testing.assert_array_equal(mask, expected)


def test_magnitude_increase_same_sign_prunes_the_shrunk_weight_first():
    # Scores [3, 0, 0, 4, -0.5, 0]: position 4 goes first, then two of the three zeros.
    mask = masks.compute_mask(
        "magnitude_increase_same_sign", SIGN_W_INIT, SIGN_W_FINAL, np.ones(6), 0.5
    )
    assert mask[0] == 1 and mask[3] == 1 and mask[4] == 0
    assert mask[[1, 2, 5]].sum() == 1


def test_snip_and_grad_hand_examples():
    w_init = np.array([1.0, -2.0, 3.0, -4.0, 5.0])
    grad = np.array([-4.0, 0.5, 1.0, 0.1, -0.01])
    # snip = abs(g * w_i) = [4, 1, 3, 0.4, 0.05]; grad = abs(g) = [4, 0.5, 1, 0.1, 0.01].
    snip = masks.compute_mask("snip", w_init, w_init, np.ones(5), 0.6, grad_init=grad)
    np.testing.assert_array_equal(snip, [1, 0, 1, 0, 0])
    grad_mask = masks.compute_mask("grad", w_init, w_init, np.ones(5), 0.4, grad_init=grad)
    np.testing.assert_array_equal(grad_mask, [1, 1, 1, 0, 0])
    snip_scores = masks.score("snip", w_init, w_init, np.random.default_rng(0), grad)
    np.testing.assert_allclose(snip_scores, [4, 1, 3, 0.4, 0.05])


# Quadrant example, worked out by hand. abs(w_i) is 1..8 row-major; abs(w_f) below.
QUAD_W_INIT = np.array([[-1.0, 2.0, -3.0, 4.0], [5.0, -6.0, 7.0, -8.0]])
QUAD_W_FINAL = np.array([[9.0, -1.0, 2.0, 3.0], [-8.0, 7.0, -6.0, 5.0]])


def test_large_init_large_final_keeps_the_upper_quadrant():
    # Prune 4 of 8. The 4th smallest (p = 3) abs(w_i) is 4 and abs(w_f) is 5: weights with
    # abs(w_i) >= 4 and abs(w_f) >= 5 are exactly row 1. large_final alone would keep the 9.
    mask = masks.compute_mask(
        "large_init_large_final", QUAD_W_INIT, QUAD_W_FINAL, np.ones((2, 4)), 0.5
    )
    np.testing.assert_array_equal(mask, [[0, 0, 0, 0], [1, 1, 1, 1]])


def test_small_init_small_final_keeps_the_lower_quadrant():
    # On -abs values the 3rd smallest (p = 2) are -6 (init) and -7 (final): keep
    # abs(w_i) <= 6 and abs(w_f) <= 7, i.e. (0, 1), (0, 2), (0, 3) and (1, 1).
    mask = masks.compute_mask(
        "small_init_small_final", QUAD_W_INIT, QUAD_W_FINAL, np.ones((2, 4)), 0.5
    )
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 1, 0, 0]])


def test_quadrant_fix_up_makes_the_count_exact():
    # abs(w_i) is 1..8 again, abs(w_f) = [[8, 1, 7, 2], [6, 3, 5, 4]]. Prune 4 of 8.
    # p = 2 (thresholds 3 and 3) prunes (0, 0), (0, 1), (0, 3): three. p = 3 (thresholds
    # 4 and 4) prunes five, adding (0, 2) and (1, 1). So the three are pruned and the fix-up
    # adds one of (0, 2) and (1, 1) -- the weights the next percentile would take.
    w_final = np.array([[8.0, 1.0, 7.0, 2.0], [6.0, 3.0, 5.0, 4.0]])
    for seed in range(4):
        mask = masks.compute_mask(
            "large_init_large_final",
            QUAD_W_INIT,
            w_final,
            np.ones((2, 4)),
            0.5,
            np.random.default_rng(seed),
        )
        assert mask.sum() == 4
        assert mask[0, 0] == 0 and mask[0, 1] == 0 and mask[0, 3] == 0
        assert mask[0, 2] + mask[1, 1] == 1
        assert mask[1, 0] == 1 and mask[1, 2] == 1 and mask[1, 3] == 1


@pytest.mark.parametrize("criterion", QUADRANT)
def test_quadrant_never_prunes_a_weight_that_dominates_a_kept_one(criterion):
    w_init, w_final, _ = random_weights((30, 20), seed=3)
    mask = masks.compute_mask(criterion, w_init, w_final, np.ones((30, 20)), 0.37)
    sign = 1 if criterion == "large_init_large_final" else -1
    a_init, a_final = sign * np.abs(w_init), sign * np.abs(w_final)
    kept, pruned = mask == 1, mask == 0
    # A pruned weight may not beat some kept weight on both init and final magnitude.
    dominates = (a_init[pruned][:, None] > a_init[kept][None, :]) & (
        a_final[pruned][:, None] > a_final[kept][None, :]
    )
    assert not dominates.any()


def test_random_breaks_ties_by_rng():
    w = np.ones(20)
    first = masks.compute_mask("large_final", w, w, np.ones(20), 0.5, np.random.default_rng(1))
    again = masks.compute_mask("large_final", w, w, np.ones(20), 0.5, np.random.default_rng(1))
    other = masks.compute_mask("large_final", w, w, np.ones(20), 0.5, np.random.default_rng(2))
    assert first.sum() == 10 and other.sum() == 10
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_random_criterion_ignores_weights():
    w = np.arange(1, 101, dtype=float)
    masks_by_seed = [
        masks.compute_mask("random", w, w, np.ones(100), 0.5, np.random.default_rng(seed))
        for seed in range(5)
    ]
    assert all(m.sum() == 50 for m in masks_by_seed)
    # large_final would keep exactly 51..100; random keeps some small ones.
    assert all(m[:50].sum() > 0 for m in masks_by_seed)


# --- Properties for every criterion ---------------------------------------------------------


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_prunes_floor_fraction_of_kept_and_never_revives(criterion):
    w_init, w_final, grad = random_weights((20, 15))
    rng = np.random.default_rng(0)
    first = masks.compute_mask(criterion, w_init, w_final, np.ones((20, 15)), 0.2, rng, grad)
    assert first.shape == (20, 15)
    assert set(np.unique(first)) <= {0.0, 1.0}
    assert first.sum() == 300 - 60

    second = masks.compute_mask(criterion, w_init, w_final, first, 0.15, rng, grad)
    assert second.sum() == 240 - 36  # floor(0.15 * 240)
    assert np.all(second <= first)


@pytest.mark.parametrize("criterion", SCORE_CRITERIA)
def test_every_pruned_score_is_at_most_every_kept_score(criterion):
    w_init, w_final, grad = random_weights((12, 10), seed=1)
    old = np.ones((12, 10))
    old[0, :] = 0  # pre-pruned weights are not candidates
    new = masks.compute_mask(criterion, w_init, w_final, old, 0.3, grad_init=grad)
    spec_scores = SPEC_SCORES[criterion](w_init, w_final, grad)
    newly_pruned = (old == 1) & (new == 0)
    assert newly_pruned.sum() == 33  # floor(0.3 * 110)
    assert spec_scores[newly_pruned].max() <= spec_scores[new == 1].min()
    np.testing.assert_allclose(
        masks.score(criterion, w_init, w_final, np.random.default_rng(0), grad), spec_scores
    )


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_num_prune_is_exact_and_one_shot_matches_kept_count(criterion):
    w_init, w_final, grad = random_weights((25, 8), seed=2)
    mask = masks.compute_mask(
        criterion, w_init, w_final, np.ones((25, 8)), 0.0, grad_init=grad, num_prune=123
    )
    assert mask.sum() == 200 - 123
    one_shot = masks.one_shot_mask(criterion, w_init, w_final, 0.2, 3, grad_init=grad)
    # 200 -> 160 -> 128 -> 103 (floor of 20% each round)
    assert one_shot.sum() == 103


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_zero_fraction_keeps_everything(criterion):
    w_init, w_final, grad = random_weights((4, 3))
    mask = masks.compute_mask(criterion, w_init, w_final, np.ones((4, 3)), 0.0, grad_init=grad)
    np.testing.assert_array_equal(mask, np.ones((4, 3)))


# --- Schedule (docs/semantics.md, "Pruning schedule") --------------------------------------------------------------


def test_num_to_prune_floors_without_float_error():
    assert masks.num_to_prune(235200, 0.2) == 47040
    assert masks.num_to_prune(10, 0.2) == 2
    assert masks.num_to_prune(9, 0.2) == 1
    assert masks.num_to_prune(1000, 0.15) == 150
    assert masks.num_to_prune(0, 0.2) == 0


def test_kept_count_of_the_first_fc_layer():
    assert masks.kept_count(235200, 0.2, 0) == 235200
    assert masks.kept_count(235200, 0.2, 1) == 188160
    # 188160 -> 150528 -> 150528 - floor(30105.6) = 120423
    assert masks.kept_count(235200, 0.2, 3) == 120423
    assert masks.kept_count(1000, 0.1, 2) == 810


@pytest.mark.parametrize(
    "rounds, percent", [(3, 51.3), (7, 21.1), (12, 7.0), (15, 3.6), (18, 1.9)]
)
def test_fc_weights_remaining_match_spec(rounds, percent):
    layers = [(784 * 300, 0.2), (300 * 100, 0.2), (100 * 10, 0.1)]
    total = sum(size for size, _ in layers)
    assert total == 266200
    kept = sum(masks.kept_count(size, rate, rounds) for size, rate in layers)
    assert abs(100 * kept / total - percent) < 0.1


# --- 1x4 blocks -----------------------------------------------------------------------------


def test_block_units_layout():
    units = masks.block_units((6, 2), 4)
    # Rows 0-3 form one block per column; rows 4 and 5 are single units.
    np.testing.assert_array_equal(units, [[0, 1], [0, 1], [0, 1], [0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(masks.block_units((2, 3), 1), [[0, 1, 2], [3, 4, 5]])


def test_block_mean_and_expand_blocks():
    x = np.arange(12, dtype=float).reshape(6, 2)
    means = masks.block_mean(x, 4)
    np.testing.assert_allclose(means, [[3, 4], [8, 9], [10, 11]])
    np.testing.assert_allclose(
        masks.expand_blocks(means, (6, 2), 4), [[3, 4]] * 4 + [[8, 9], [10, 11]]
    )
    conv = np.ones((3, 3, 8, 2))
    assert masks.block_mean(conv, 4).shape == (3, 3, 2, 2)


def test_is_block_structured():
    mask = np.ones((5, 2))
    assert masks.is_block_structured(mask, 4)
    mask[4, 0] = 0  # a remainder row is its own unit
    assert masks.is_block_structured(mask, 4)
    mask[1, 1] = 0
    assert not masks.is_block_structured(mask, 4)


def test_block_large_final_hand_example():
    # Column 0: block mean abs 1 (rows 0-3), singles 0.5 and 9; column 1: block mean 5,
    # singles 2 and 3. Prune floor(0.3 * 12) = 3 weights: the 0.5 single, then the block of
    # mean 1 would overshoot (1 + 4 > 3) and is skipped, then singles 2 and 3.
    w = np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0], [1.0, 5.0], [0.5, 2.0], [9.0, 3.0]])
    mask = masks.compute_mask("large_final", w, w, np.ones((6, 2)), 0.3, block=4)
    np.testing.assert_array_equal(mask, [[1, 1]] * 4 + [[0, 0], [1, 0]])


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_block_masks_have_exact_count_with_remainder_rows(criterion):
    # Dense kernel (10, 8): 2 blocks and 2 singles per column, 16 singles in all.
    w_init, w_final, grad = random_weights((10, 8), seed=4)
    rng = np.random.default_rng(0)
    first = masks.compute_mask(
        criterion, w_init, w_final, np.ones((10, 8)), 0.2, rng, grad, block=4
    )
    assert masks.is_block_structured(first, 4)
    assert first.sum() == 80 - 16
    second = masks.compute_mask(criterion, w_init, w_final, first, 0.2, rng, grad, block=4)
    assert masks.is_block_structured(second, 4)
    assert np.all(second <= first)
    # Target floor(0.2 * 64) = 12. After the last whole block fits, less than 4 weights
    # remain to prune, and kept singles fill them exactly when at least 3 are left.
    kept_singles = first[8:].sum()
    if kept_singles >= 3:
        assert second.sum() == 64 - 12
    else:
        assert 64 - 12 <= second.sum() <= 64 - 12 + 3


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_block_masks_without_remainder_prune_whole_blocks_below_target(criterion):
    # Conv kernel (3, 3, 8, 2): 8 input channels are exactly 2 blocks; 144 weights.
    w_init, w_final, grad = random_weights((3, 3, 8, 2), seed=5)
    mask = masks.compute_mask(
        criterion, w_init, w_final, np.ones((3, 3, 8, 2)), 0.2, grad_init=grad, block=4
    )
    assert masks.is_block_structured(mask, 4)
    # Target floor(0.2 * 144) = 28 is a multiple of 4; at 0.1 the target 14 gives 12.
    assert mask.sum() == 144 - 28
    mask = masks.compute_mask(
        criterion, w_init, w_final, np.ones((3, 3, 8, 2)), 0.1, grad_init=grad, block=4
    )
    assert mask.sum() == 144 - 12


def test_block_unit_with_pruned_weights_stays_partly_pruned():
    w = np.arange(1, 9, dtype=float).reshape(4, 2) * np.array([1.0, 10.0])
    old = np.ones((4, 2))
    old[0, 1] = 0  # not block-constant: column 1's block is kept with 3 weights
    new = masks.compute_mask("large_final", w, w, old, 0.5, block=4, num_prune=4)
    # Column 0's block (mean 4) is pruned; column 1's block would overshoot (4 + 3 > 4).
    np.testing.assert_array_equal(new, [[0, 0], [0, 1], [0, 1], [0, 1]])


# --- Errors ---------------------------------------------------------------------------------


def test_unknown_criterion_error_lists_allowed_and_received():
    w = np.ones(4)
    expected = (
        r"Unknown criterion 'large_fnal'\. Allowed: large_final, small_final, .* "
        r"Received: criterion='large_fnal'"
    )
    with pytest.raises(ValueError, match=expected):
        masks.compute_mask("large_fnal", w, w, np.ones(4), 0.2)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_fraction_outside_range_raises(fraction):
    w = np.ones(4)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)\. Received: fraction="):
        masks.compute_mask("large_final", w, w, np.ones(4), fraction)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"w_final must have the shape of w_init \(3, 4\)"):
        masks.compute_mask("large_final", np.ones((3, 4)), np.ones((4, 3)), np.ones((3, 4)), 0.2)
    with pytest.raises(ValueError, match=r"Received: mask\.shape=\(4,\)"):
        masks.compute_mask("large_final", np.ones(3), np.ones(3), np.ones(4), 0.2)


@pytest.mark.parametrize("criterion", masks.GRADIENT_CRITERIA)
def test_gradient_criteria_need_grad_init(criterion):
    w = np.ones(4)
    with pytest.raises(ValueError, match="needs grad_init"):
        masks.compute_mask(criterion, w, w, np.ones(4), 0.2)


def test_other_argument_errors():
    w = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"block must be one of 1, 4 .*Received: block=2"):
        masks.compute_mask("large_final", w, w, np.ones((4, 2)), 0.2, block=2)
    with pytest.raises(ValueError, match=r"num_prune must be an integer in \[0, 8\]"):
        masks.compute_mask("large_final", w, w, np.ones((4, 2)), 0.0, num_prune=9)
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        masks.compute_mask("large_final", w, w, np.full((4, 2), 0.5), 0.2)
    with pytest.raises(ValueError, match="keeps a quadrant"):
        masks.score("large_init_large_final", w, w, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        masks.kept_count(100, 1.0, 2)


# --- Global ranking across tensors (hand-computed) ------------------------------------------


def test_global_large_final_prunes_the_smallest_weights_wherever_they_are():
    a = np.array([1.0, 5.0, 3.0])
    b = np.array([[2.0, 4.0], [0.5, 6.0]])
    ones = {"a": np.ones(3), "b": np.ones((2, 2))}
    # 7 kept, floor(0.5 x 7) = 3 pruned: 0.5 and 2 (both in b) and 1 (in a)
    result = masks.global_masks("large_final", {"a": a, "b": b}, {"a": a, "b": b}, ones, 0.5)
    np.testing.assert_array_equal(result["a"], [0, 1, 1])
    np.testing.assert_array_equal(result["b"], [[0, 1], [0, 1]])
    assert list(result) == ["a", "b"] and result["a"].dtype == np.float32
    # Per-layer pruning at the same fraction takes floor(0.5 x 3) = 1 and floor(0.5 x 4) = 2.
    per_layer_a = masks.compute_mask("large_final", a, a, np.ones(3), 0.5)
    np.testing.assert_array_equal(per_layer_a, [0, 1, 1])


def test_global_only_kept_weights_count_and_pruned_ones_stay_pruned():
    a = np.array([1.0, 5.0, 3.0, 7.0])
    b = np.array([2.0, 4.0])
    prev = {"a": np.array([1, 1, 0, 1]), "b": np.array([1, 1])}
    # kept values 1, 5, 7, 2, 4: floor(0.4 x 5) = 2 pruned, 1 (a) and 2 (b); 3 stays pruned
    result = masks.global_masks("large_final", {"a": a, "b": b}, {"a": a, "b": b}, prev, 0.4)
    np.testing.assert_array_equal(result["a"], [0, 1, 0, 1])
    np.testing.assert_array_equal(result["b"], [0, 1])


def test_global_num_prune_and_init_criteria_use_w_init():
    w_init = {"a": np.array([3.0, -1.0]), "b": np.array([0.5, 2.0])}
    w_final = {"a": np.array([0.1, 9.0]), "b": np.array([9.0, 0.2])}
    ones = {"a": np.ones(2), "b": np.ones(2)}
    # large_init: |w_i| = 3, 1, 0.5, 2 -> prune 0.5 then 1
    result = masks.global_masks("large_init", w_init, w_final, ones, 0.0, num_prune=2)
    np.testing.assert_array_equal(result["a"], [1, 0])
    np.testing.assert_array_equal(result["b"], [0, 1])
    # magnitude_increase: |w_f| - |w_i| = -2.9, 8, 8.5, -1.8 -> prune -2.9 (a[0])
    result = masks.global_masks("magnitude_increase", w_init, w_final, ones, 0.0, num_prune=1)
    np.testing.assert_array_equal(result["a"], [0, 1])
    np.testing.assert_array_equal(result["b"], [1, 1])


def test_global_blocks_of_four_rank_block_means_across_tensors():
    # a: one 4-block (mean 1) and b: two 4-blocks (means 3 and 0.5): prune 8 weights ->
    # the blocks of means 0.5 and 1.
    a = np.ones((4, 1))
    b = np.concatenate([np.full((4, 1), 3.0), np.full((4, 1), 0.5)], axis=0)
    ones = {"a": np.ones((4, 1)), "b": np.ones((8, 1))}
    result = masks.global_masks("large_final", {"a": a, "b": b}, {"a": a, "b": b}, ones, 0.0,
                                num_prune=8, block=4)
    np.testing.assert_array_equal(result["a"].ravel(), [0, 0, 0, 0])
    np.testing.assert_array_equal(result["b"].ravel(), [1, 1, 1, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("criterion", masks.CRITERIA)
def test_global_with_one_tensor_is_compute_mask(criterion):
    w_init, w_final, grad = random_weights((6, 5), seed=3)
    prev = (np.random.default_rng(4).uniform(size=(6, 5)) > 0.2).astype(np.float32)
    expected = masks.compute_mask(criterion, w_init, w_final, prev, 0.3,
                                  rng=np.random.default_rng(7), grad_init=grad)
    result = masks.global_masks(criterion, {"k": w_init}, {"k": w_final}, {"k": prev}, 0.3,
                                rng=np.random.default_rng(7), grad_init={"k": grad})
    np.testing.assert_array_equal(result["k"], expected)


def test_global_quadrant_pools_percentiles_across_tensors():
    w_init = {"a": np.array([1.0, 4.0]), "b": np.array([3.0, 2.0])}
    w_final = {"a": np.array([4.0, 1.0]), "b": np.array([3.0, 2.0])}
    ones = {"a": np.ones(2), "b": np.ones(2)}
    # Pooled |w_i| = 1,4,3,2 and |w_f| = 4,1,3,2: at p = 1 the units below either 2nd
    # smallest value (2) are a[0] (init 1) and a[1] (final 1): both pruned, b kept.
    result = masks.global_masks("large_init_large_final", w_init, w_final, ones, 0.5)
    np.testing.assert_array_equal(result["a"], [0, 0])
    np.testing.assert_array_equal(result["b"], [1, 1])


def test_scheduled_prune_count_iterative_and_one_shot():
    mask = np.ones(100)
    assert masks.scheduled_prune_count(mask, 0.2) == 20
    assert masks.scheduled_prune_count(mask, 0.2, one_shot_rounds=2) == 36  # keeps 64
    mask[:36] = 0
    assert masks.scheduled_prune_count(mask, 0.2, one_shot_rounds=2) == 0


def test_global_argument_errors():
    a = {"a": np.ones(3)}
    with pytest.raises(ValueError, match="must name the same tensors"):
        masks.global_masks("large_final", a, {"b": np.ones(3)}, a, 0.2)
    with pytest.raises(ValueError, match=r"num_prune must be an integer in \[0, 3\]"):
        masks.global_masks("large_final", a, a, a, 0.0, num_prune=4)
    with pytest.raises(ValueError, match="Unknown criterion"):
        masks.global_masks("largest", a, a, a, 0.2)
    assert masks.global_masks("large_final", {}, {}, {}, 0.2) == {}


def test_global_prune_count_reaches_the_per_layer_schedules_total():
    masks_now = {"a": np.ones(100), "b": np.ones(10)}
    rates = {"a": 0.2, "b": 0.1}
    # level 1: per-layer keeps 80 + 9 = 89 of 110
    assert masks.global_prune_count(masks_now, rates, 1) == 21
    # after a global round that kept 85 of a and 4 of b (89), level 2 keeps 64 of a and
    # 9 of b (floor(0.1 x 9) = 0 pruned in round 2): 73
    masks_now = {"a": np.r_[np.ones(85), np.zeros(15)], "b": np.r_[np.ones(4), np.zeros(6)]}
    assert masks.global_prune_count(masks_now, rates, 2) == 89 - 73
    assert masks.global_prune_count(masks_now, rates, 0) == 0


def test_ranks_count_the_values_at_or_below_each_value_with_ties():
    values = np.array([0.5, -1.0, 0.5, 2.0, -1.0, 0.5, 3.0])
    # -1 -1 0.5 0.5 0.5 2 3 sorted: a tied value's rank is the last position of its run
    np.testing.assert_array_equal(masks._ranks_at_or_below(values), [5, 2, 5, 6, 2, 5, 7])
    random = np.random.default_rng(0).integers(0, 50, 2000).astype(np.float64)
    np.testing.assert_array_equal(masks._ranks_at_or_below(random),
                                  np.searchsorted(np.sort(random), random, side="right"))


@pytest.mark.parametrize("criterion", ["large_init_large_final", "small_init_small_final"])
def test_quadrant_pruning_by_partition_takes_the_head_of_the_full_order(criterion):
    """Single-weight units (pruned by partition) are exactly the first `target` of the full
    quadrant order (a sort), ties included."""
    rng = np.random.default_rng(7)
    w_init = np.round(rng.normal(size=(40, 30)), 1)  # rounded: many tied values
    w_final = np.round(rng.normal(size=(40, 30)), 1)
    sign = 1.0 if criterion == "large_init_large_final" else -1.0
    for target in (0, 1, 333, 1199, 1200):
        mask = masks.compute_mask(criterion, w_init, w_final, np.ones((40, 30)), 0.0,
                                  rng=np.random.default_rng(target), num_prune=target)
        order = masks._quadrant_order(sign * np.abs(w_init).ravel(),
                                      sign * np.abs(w_final).ravel(),
                                      np.ones(1200, bool), np.random.default_rng(target))
        expected = np.ones(1200)
        expected[order[:target]] = 0.0
        np.testing.assert_array_equal(mask.ravel(), expected)
