"""The one round engine, `tf_lth.core.rounds` (docs/semantics.md, "One round engine").

(a) The engine on tiny arrays against hand-computed masks and values: per-layer and
    global counts, one-shot counts, 1x4 blocks, every mask-1 and mask-0 action, the
    controls, and the documented order of random draws, replayed by hand with NumPy.
(b) The two drivers: from the same trained weights, `tf_lth.find_ticket` and the command
    line's `LotteryRun` give identical masks, start values and frozen values (and the
    controls the values the documented rule gives). Training is replaced in both by the
    same deterministic function of the weights (the engine itself is not touched), so
    many cases stay cheap.
(c) The command line's lottery round, really trained, on SeparableConv2D and EinsumDense
    kernels.
"""

import ast
import os
import sys
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lth
from tf_lth.core import actions, masks, rounds, run_files
from tf_lth.core import config as config_lib
from tf_lth.core import data as data_lib
from trainers import lottery
from trainers.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(w_init, w_final, prev=None, frozen=None, gradients=None):
    prev = prev or {key: np.ones(value.shape, np.float32) for key, value in w_init.items()}
    frozen = frozen or {key: np.zeros(value.shape, np.float32) for key, value in w_init.items()}
    return rounds.RoundArrays(masks=prev, frozen=frozen, w_init=w_init, w_final=w_final,
                              gradients=gradients)


def _f32(values):
    return np.array(values, np.float32)


# ---- (a) counts ------------------------------------------------------------------------
def test_per_layer_prunes_floor_rate_times_kept_lowest_first_and_kernels_without_rate_stay():
    a = _f32([[0.5, -0.1], [0.3, 0.9], [-0.7, 0.2], [0.05, -0.6], [0.8, 0.4]])
    b = _f32([[9.0, 0.2], [0.3, -0.4], [0.5, 0.6], [-0.7, 0.8]])
    c = _f32([[0.01, 0.02]])
    prev_b = np.ones((4, 2), np.float32)
    prev_b[0, 0] = 0  # pruned earlier: not a candidate although its |w| is the largest
    arrays = _arrays({"a": a, "b": b, "c": c}, {"a": a, "b": b, "c": c},
                     prev={"a": np.ones((5, 2), np.float32), "b": prev_b,
                           "c": np.ones((1, 2), np.float32)})
    result = rounds.next_round(arrays, {"a": 0.2, "b": 0.5}, "large_final",
                               np.random.default_rng(0))
    expected_a = np.ones((5, 2))  # floor(0.2 x 10) = 2: |0.05| and |-0.1|
    expected_a[3, 0] = expected_a[0, 1] = 0
    expected_b = np.ones((4, 2))  # floor(0.5 x 7) = 3 of the kept: 0.2, 0.3, -0.4
    expected_b[0, 0] = expected_b[0, 1] = expected_b[1, 0] = expected_b[1, 1] = 0
    np.testing.assert_array_equal(result["a"][0], expected_a)
    np.testing.assert_array_equal(result["b"][0], expected_b)
    np.testing.assert_array_equal(result["c"][0], np.ones((1, 2)))
    assert list(result) == ["a", "b", "c"]


def test_global_prunes_down_to_the_per_layer_schedule_total_at_the_level():
    a = _f32(np.arange(1, 11).reshape(5, 2) / 10)          # 0.1 ... 1.0
    b = _f32([[0.05, 0.15], [0.25, 0.35], [2, 3], [4, 5]])
    arrays = _arrays({"a": a, "b": b}, {"a": a, "b": b})
    rates = {"a": 0.2, "b": 0.5}
    # level 2: kept_count(10, 0.2, 2) = 7 (10 - 2, then 8 - 1), kept_count(8, 0.5, 2) = 2,
    # so 18 - 9 = 9 are pruned: the 9 lowest |w| over both kernels
    result = rounds.next_round(arrays, rates, "large_final", np.random.default_rng(0),
                               scope="global", level=2)
    pruned = sorted(np.concatenate([a.ravel(), b.ravel()]))[:9]
    for key, values in (("a", a), ("b", b)):
        np.testing.assert_array_equal(result[key][0], ~np.isin(values, pruned))
    # without a level (one `prune`): the sum of the kernels' floor(rate x kept) = 2 + 4
    single = rounds.next_round(arrays, rates, "large_final", np.random.default_rng(0),
                               scope="global")
    pruned = sorted(np.concatenate([a.ravel(), b.ravel()]))[:6]
    for key, values in (("a", a), ("b", b)):
        np.testing.assert_array_equal(single[key][0], ~np.isin(values, pruned))


def test_one_shot_prunes_to_the_level_and_a_kernel_below_it_loses_nothing():
    w = _f32(np.arange(1, 11).reshape(5, 2))
    sparse = np.zeros((5, 2), np.float32)
    sparse.ravel()[5:] = 1  # 5 kept, below the level's 6
    arrays = _arrays({"dense": w, "sparse": w}, {"dense": w, "sparse": w},
                     prev={"dense": np.ones((5, 2), np.float32), "sparse": sparse})
    result = rounds.next_round(arrays, {"dense": 0.2, "sparse": 0.2}, "large_final",
                               np.random.default_rng(0), level=3, one_shot=True)
    # kept_count(10, 0.2, 3): 10 -> 8 -> 7 -> 6, so the 4 smallest go at once
    np.testing.assert_array_equal(result["dense"][0].ravel(), [0, 0, 0, 0] + [1] * 6)
    np.testing.assert_array_equal(result["sparse"][0], sparse)
    with pytest.raises(ValueError, match="needs level"):
        rounds.next_round(arrays, {}, "large_final", np.random.default_rng(0), one_shot=True)


def test_masks_only_draw_as_the_actions_none_and_zero_and_one_shot_is_one_shot_mask():
    kernels = {"a": _f32(np.linspace(-1, 1, 12).reshape(3, 4)),
               "b": _f32(np.linspace(-2, 1, 6).reshape(2, 3))}
    arrays = _arrays(kernels, {key: w[::-1] for key, w in kernels.items()})
    rates = {"a": 0.2, "b": 0.3}
    options = dict(level=4, one_shot=True)
    only = rounds.next_round(arrays, rates, "random", np.random.default_rng(5),
                             values=False, **options)
    full = rounds.next_round(arrays, rates, "random", np.random.default_rng(5), **options)
    rng = np.random.default_rng(5)  # the sweep's documented mask: masks.one_shot_mask
    for key, w in kernels.items():
        assert only[key][1] is None and only[key][2] is None
        np.testing.assert_array_equal(only[key][0], full[key][0])
        np.testing.assert_array_equal(only[key][0], masks.one_shot_mask(
            "random", w, arrays.w_final[key], rates[key], 4, rng=rng))
        assert int(only[key][0].sum()) == masks.kept_count(w.size, rates[key], 4)


def test_1x4_blocks_prune_whole_units_and_never_overshoot_the_target():
    w = np.zeros((8, 2), np.float32)
    w[:4, 0], w[:4, 1] = 1.0, [0.1, 0.2, 0.1, 0.2]   # unit means 1.0 and 0.15
    w[4:, 0], w[4:, 1] = 0.5, 2.0                     # unit means 0.5 and 2.0
    arrays = _arrays({"k": w}, {"k": w})

    def mask(rate):
        return rounds.next_round(arrays, {"k": rate}, "large_final", np.random.default_rng(0),
                                 block=4)["k"][0]

    expected = np.ones((8, 2))
    expected[:4, 1] = 0
    np.testing.assert_array_equal(mask(0.3), expected)   # floor(4.8) = 4: one unit
    np.testing.assert_array_equal(mask(0.4), expected)   # 6: a second unit would make 8
    expected[4:, 0] = 0
    np.testing.assert_array_equal(mask(0.5), expected)   # 8: the two lowest units


def test_weights_remaining_counts_kept_weights_overall_and_per_kernel():
    fraction, per_kernel = rounds.weights_remaining(
        {"a": _f32([1, 0, 1, 1]), "b": _f32([[0, 0], [1, 0]])})
    assert fraction == 0.5
    assert per_kernel == {"a": 0.75, "b": 0.25}


# ---- (a) actions and the order of draws -----------------------------------------------
W_INIT = _f32([[0.3, -0.01, 0.2, -0.8], [0.6, -0.1, 0.4, 0.9], [-0.2, 0.7, -0.6, 0.5]])
W_FINAL = _f32([[0.9, -0.05, 0.8, -0.7], [0.02, -0.6, 0.5, 1.0], [-0.3, 0.65, -0.01, 0.4]])
# large_final at rate 0.25 of 12 prunes the 3 smallest |w_f|: 0.01, 0.02, 0.05
KEPT = np.abs(W_FINAL) > 0.06


def _expected_start(action, rng):
    """The mask-1 values the docs define, drawn from `rng` after the mask's tie-breaks."""
    base = action.removesuffix("_rescaled")
    kind = base.removeprefix("signed_")
    sign = np.sign(W_INIT)
    c = np.std(W_INIT)
    values = W_INIT.copy()
    if kind == "reinit":
        values = rng.permutation(W_INIT.ravel()).reshape(W_INIT.shape)
    elif kind == "reshuffle":
        values[KEPT] = rng.permutation(W_INIT[KEPT])
    elif kind == "constant":
        values = c * sign
        if not base.startswith("signed_"):
            values = rng.permutation(values.ravel()).reshape(W_INIT.shape)
    if base.startswith("signed_"):
        values = np.abs(values) * sign
    if action.endswith("_rescaled"):
        values = values * (12 / 9)
    return np.where(KEPT, values, 0)


@pytest.mark.parametrize("action", actions.MASK_ONE_ACTIONS)
def test_every_mask_one_action_draws_after_the_mask_as_documented(action):
    arrays = _arrays({"k": W_INIT}, {"k": W_FINAL})
    mask, start, frozen = rounds.next_round(arrays, {"k": 0.25}, "large_final",
                                            np.random.default_rng(7),
                                            mask_one_action=action)["k"]
    np.testing.assert_array_equal(mask, KEPT)
    replay = np.random.default_rng(7)
    replay.random(12)  # the mask's tie-breaks, one per kept weight
    np.testing.assert_allclose(start, _expected_start(action, replay), rtol=1e-6)
    np.testing.assert_array_equal(frozen, np.zeros((3, 4)))
    if action.startswith("signed_"):
        assert np.all(np.sign(start[KEPT]) == np.sign(W_INIT[KEPT]))


def _mask_zero_case():
    """One weight pruned earlier (frozen at 7); floor(0.3 x 11) = 3 pruned now: |w_f| 0.01
    and 0.02 (both shrank from |w_i| 0.6) and 0.05 (grew from 0.01)."""
    prev = np.ones((3, 4), np.float32)
    prev[2, 3] = 0
    prev_frozen = np.zeros((3, 4), np.float32)
    prev_frozen[2, 3] = 7.0
    arrays = _arrays({"k": W_INIT}, {"k": W_FINAL}, prev={"k": prev},
                     frozen={"k": prev_frozen})
    newly = np.zeros((3, 4), bool)
    newly[2, 2] = newly[1, 0] = newly[0, 1] = True
    return arrays, prev.astype(bool) & ~newly, newly


@pytest.mark.parametrize("action", actions.MASK_ZERO_ACTIONS)
def test_every_mask_zero_action_gives_the_documented_frozen_and_start_values(action):
    arrays, kept, newly = _mask_zero_case()
    mask, start, frozen = rounds.next_round(arrays, {"k": 0.3}, "large_final",
                                            np.random.default_rng(3),
                                            mask_zero_action=action)["k"]
    np.testing.assert_array_equal(mask, kept)
    shrank = np.zeros((3, 4), bool)
    shrank[2, 2] = shrank[1, 0] = True  # among the newly pruned; (0, 1) grew
    assert np.array_equal(newly & (np.abs(W_FINAL) < np.abs(W_INIT)), shrank)
    if action == "zero":
        zeroed = newly
    elif action == "freeze_init":
        zeroed = np.zeros_like(newly)
    elif action in ("freeze_init_zero_mask", "freeze_init_zero_all"):
        zeroed = shrank
    elif action == "freeze_init_zero_rev":
        zeroed = newly & ~shrank
    else:  # reshuffle: as many as variant 1 zeroes (2), at random among the 3 newly pruned
        replay = np.random.default_rng(3)
        replay.random(11)  # the mask's tie-breaks; mask-1 "none" draws nothing
        zeroed = np.zeros(12, bool)
        zeroed[replay.choice(np.flatnonzero(newly), size=2, replace=False)] = True
        zeroed = zeroed.reshape(3, 4)
        assert zeroed.sum() == 2 and not np.any(zeroed & ~newly)
    expected_frozen = np.where(newly, np.where(zeroed, 0, W_INIT), 0)
    expected_frozen[2, 3] = 7.0  # pruned earlier: keeps its frozen value
    np.testing.assert_array_equal(frozen, expected_frozen)
    expected_start = np.where(kept, W_INIT, expected_frozen)
    if action == "freeze_init_zero_all":  # variant 2: kept weights that shrank start at 0
        kept_shrank = kept & (np.abs(W_FINAL) < np.abs(W_INIT))
        assert kept_shrank.any()
        expected_start = np.where(kept_shrank, 0, expected_start)
    np.testing.assert_array_equal(start, expected_start)


def _random_kernels():
    a = _f32(np.linspace(-1, 1, 12).reshape(3, 4))
    b = _f32(np.linspace(-2, 1, 6).reshape(2, 3))
    return {"a": a, "b": b}


def _expected_after_scores(kernels, w_final, scores, pruned_scores, rng):
    """Masks pruning the given random scores, then reinit and variant-1-reshuffle values
    drawn kernel by kernel from `rng`."""
    results = {}
    for key, w in kernels.items():
        mask = (~np.isin(scores[key], pruned_scores[key])).astype(np.float32)
        newly = mask == 0
        start = rng.permutation(w.ravel()).reshape(w.shape)
        shrank = np.abs(w_final[key]) < np.abs(w)
        zeroed = np.zeros(w.size, bool)
        zeroed[rng.choice(np.flatnonzero(newly), size=int((newly & shrank).sum()),
                          replace=False)] = True
        frozen = np.where(newly, np.where(zeroed.reshape(w.shape), 0, w), 0)
        results[key] = (mask, np.where(mask == 1, start, frozen), frozen)
    return results


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_the_documented_order_of_draws_replayed_by_hand(scope):
    kernels = _random_kernels()
    w_final = {"a": 0.5 * kernels["a"], "b": 2 * kernels["b"]}  # a shrank, b grew
    arrays = _arrays(kernels, w_final)
    rates = {"a": 0.25, "b": 0.5}
    options = dict(mask_one_action="reinit", mask_zero_action="freeze_init_zero_reshuffle",
                   scope=scope, level=1)
    result = rounds.next_round(arrays, rates, "random", np.random.default_rng(11), **options)
    again = rounds.next_round(arrays, rates, "random", np.random.default_rng(11), **options)
    other = rounds.next_round(arrays, rates, "random", np.random.default_rng(12), **options)
    replay = np.random.default_rng(11)
    if scope == "layer":  # kernel by kernel: scores, tie-breaks, mask-1, mask-0
        expected = {}
        for key, w in kernels.items():
            scores = replay.random(w.shape)
            replay.random(w.size)
            lowest = np.sort(scores.ravel())[:int(rates[key] * w.size)]  # 3 and 3
            expected.update(_expected_after_scores({key: w}, w_final, {key: scores},
                                                   {key: lowest}, replay))
    else:  # the pooled ranking first (scores kernel by kernel, one tie-break pass)
        scores = {key: replay.random(w.shape) for key, w in kernels.items()}
        replay.random(18)
        # level 1 keeps kept_count(12, 0.25, 1) = 9 and kept_count(6, 0.5, 1) = 3: 6 go
        pooled = np.sort(np.concatenate([s.ravel() for s in scores.values()]))[:6]
        expected = _expected_after_scores(kernels, w_final, scores,
                                          {key: pooled for key in kernels}, replay)
    for key in kernels:
        for got, want, same in zip(result[key], expected[key], again[key]):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, same)
    assert any(not np.array_equal(result[key][0], other[key][0]) for key in kernels)


# ---- (a) controls ----------------------------------------------------------------------
def test_random_control_keeps_the_ticket_counts_at_positions_replayed_by_hand():
    kernels = _random_kernels()
    prev = {key: np.ones(w.shape, np.float32) for key, w in kernels.items()}
    prev["a"][0, 0] = 0
    prev_frozen = {key: np.zeros(w.shape, np.float32) for key, w in kernels.items()}
    prev_frozen["a"][0, 0] = 5.0
    arrays = _arrays(kernels, {key: w * 0.5 for key, w in kernels.items()}, prev=prev,
                     frozen=prev_frozen)
    ticket = {"a": (np.abs(kernels["a"]) > 0.3).astype(np.float32) * prev["a"],
              "b": (np.abs(kernels["b"]) > 1.0).astype(np.float32)}
    result = rounds.control_round("random", ticket, arrays, seed=4, round_index=2,
                                  mask_zero_action="freeze_init")
    positions = np.random.default_rng([4, 2, 11])
    for key, w in kernels.items():
        expected = np.zeros(w.size, np.float32)
        expected[positions.permutation(w.size)[:int(ticket[key].sum())]] = 1
        expected = expected.reshape(w.shape)
        mask, start, frozen = result[key]
        np.testing.assert_array_equal(mask, expected)
        pruned_now = (expected == 0) & (np.maximum(prev[key], expected) == 1)
        want_frozen = np.where(pruned_now, w, prev_frozen[key] * (np.maximum(
            prev[key], expected) == 0))
        np.testing.assert_array_equal(frozen, want_frozen)
        np.testing.assert_array_equal(start, np.where(expected == 1, w, want_frozen))


def test_reinit_control_keeps_the_ticket_mask_on_the_fresh_values():
    kernels = _random_kernels()
    arrays = _arrays(kernels, kernels)
    ticket = {key: (np.abs(w) > 0.5).astype(np.float32) for key, w in kernels.items()}
    fresh = {key: w + 10 for key, w in kernels.items()}
    result = rounds.control_round("reinit", ticket, arrays, seed=1, round_index=1,
                                  fresh_init=fresh)
    for key in kernels:
        mask, start, frozen = result[key]
        np.testing.assert_array_equal(mask, ticket[key])
        np.testing.assert_array_equal(start, np.where(ticket[key] == 1, fresh[key], 0))
        np.testing.assert_array_equal(frozen, np.zeros(kernels[key].shape))
    with pytest.raises(ValueError, match="fresh_init"):
        rounds.control_round("reinit", ticket, arrays, seed=1, round_index=1)
    assert rounds.fresh_init_seed(1, 2, 3) == int(
        np.random.default_rng([1, 2, 3, 7919]).integers(2 ** 31 - 1))


def test_round_arrays_must_name_the_same_kernels_and_rates_known_ones():
    w = {"a": np.ones((2, 2), np.float32)}
    with pytest.raises(ValueError, match="w_final"):
        rounds.RoundArrays(masks=w, frozen=w, w_init=w, w_final={"b": w["a"]})
    with pytest.raises(ValueError, match="unknown kernels"):
        rounds.next_round(_arrays(w, w), {"b": 0.2}, "large_final", np.random.default_rng(0))


def test_rounds_imports_only_numpy_the_standard_library_and_the_pure_modules():
    with open(os.path.join(ROOT, "tf_lth", "core", "rounds.py"), encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    pure = {"tf_lth.core.actions", "tf_lth.core.masks", "tf_lth.core.choices"}
    assert all(name.split(".")[0] in allowed or name in pure for name in names), names


# ---- (b) the two drivers from the same trained weights ---------------------------------
RATES_BY_LAYER = {"conv": 0.3, "separable": 0.3, "einsum": 0.4, "output": 0.2}
PRUNE_RATES = "conv=0.3,dense=0.4,output=0.2"
REWIND = -1  # the "round" of the rewind point in `_trained`


def tiny_model():
    """Conv2D, SeparableConv2D (two kernels), EinsumDense and Dense, masked, seeded."""
    init = keras.initializers.GlorotNormal
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv",
                            kernel_initializer=init(1))(inputs)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu",
                                     name="separable", depthwise_initializer=init(2),
                                     pointwise_initializer=init(3))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.EinsumDense("ab,bc->ac", output_shape=12, bias_axes="c",
                                 activation="relu", name="einsum", kernel_initializer=init(4))(x)
    outputs = keras.layers.Dense(10, name="output", kernel_initializer=init(5))(x)
    return tf_lth.masked(keras.Model(inputs, outputs, name="tiny"), frozen_values=True)


def tiny_data():
    return data_lib.synthetic((8, 8, 3), num_train=32, num_val=16, num_test=16, seed=0)


def _trained(kernel, key, round_index):
    """The stand-in for training: the same function of the weights in both drivers."""
    rng = np.random.default_rng([zlib.crc32(key.encode()), round_index + 10])
    return (kernel + 0.6 * np.std(kernel) * rng.standard_normal(kernel.shape)).astype(
        np.float32)


def _train_in_place(model, round_index):
    for slot in tf_lth.kernel_slots(model):
        slot.kernel.assign(_trained(np.array(slot.kernel), slot.key, round_index))


def _fake_fit(self, data, schedule, hooks=None, start_iteration=0, history=None):
    """Trainer.fit without steps: the kernels become `_trained` of themselves; the rewind
    snapshot is taken between two such moves, as a real round takes it mid-way."""
    if schedule.snapshot_at:
        _train_in_place(self.model, REWIND)
        hooks.snapshot(schedule.snapshot_at[0])
    _train_in_place(self.model, schedule.round_index)
    record = {"iteration": schedule.iterations, "val_loss": 1.0, "val_accuracy": 0.5,
              "test_loss": 1.0, "test_accuracy": 0.5}
    return {"test_accuracy": 0.5, "val_accuracy": 0.5, "test_loss": 1.0, "val_loss": 1.0,
            "best": {"iteration": schedule.iterations, "val_loss": 1.0, "val_accuracy": 0.5,
                     "test_accuracy": 0.5},
            "iterations": schedule.iterations, "seconds": 1.0, "examples_per_second": 1.0,
            "xla": False, "history": [record]}


def _cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def _cli_round_files(tmp_path, monkeypatch, captured_controls, **flags):
    """A LotteryRun on the tiny model with `_fake_fit`; reads its round files back."""
    monkeypatch.setattr(Trainer, "fit", _fake_fit)
    original = lottery.RoundTrainer.train_control

    def train_control(self, kind, round_index):
        captured_controls[(kind, round_index)] = {
            slot.key: (np.array(slot.mask), np.array(slot.kernel), np.array(slot.frozen))
            for slot in tf_lth.kernel_slots(self.model)}
        return original(self, kind, round_index)

    monkeypatch.setattr(lottery.RoundTrainer, "train_control", train_control)
    config = config_lib.make(experiment="lottery", dataset="synthetic", iterations=4,
                             eval_every=4, batch_size=8, seed=5, prune_rates=PRUNE_RATES,
                             run_dir=str(tmp_path / "cli"), progress=False, **flags)
    lottery.LotteryRun(config, tiny_data(), tiny_model, tf.distribute.get_strategy(),
                       log=lambda *_: None).run()

    def files(round_index, name):
        return run_files.load_arrays(
            os.path.join(run_files.round_dir(config.run_dir, round_index), f"{name}.npz"))

    return config, files


def _api_ticket(config, files, checked, seen, **options):
    """find_ticket on the same model, its "training" `_trained`; each round's starting
    point compared with the command line's files as the round begins."""
    model = tiny_model()
    snapshot = tf_lth.RewindSnapshot(config.rewind_iteration) if config.rewind_iteration else 0

    def train(model, round_index):
        start = files(round_index, "initial")
        for key, value in tf_lth.weights_state(model).items():
            np.testing.assert_array_equal(value, start[key], err_msg=f"round {round_index} {key}")
        for key, mask in tf_lth.get_masks(model).items():
            np.testing.assert_array_equal(mask, files(round_index, "masks")[key],
                                          err_msg=f"round {round_index} mask {key}")
        for slot in tf_lth.kernel_slots(model):
            np.testing.assert_array_equal(np.array(slot.frozen),
                                          files(round_index, "frozen")[slot.key],
                                          err_msg=f"round {round_index} frozen {slot.key}")
        seen[round_index] = {"masks": tf_lth.get_masks(model), "frozen": {
            slot.key: np.array(slot.frozen) for slot in tf_lth.kernel_slots(model)}}
        if snapshot and round_index == 0:
            _train_in_place(model, REWIND)
            snapshot.state = tf_lth.weights_state(model)
        _train_in_place(model, round_index)
        seen[round_index]["final"] = {slot.key: np.array(slot.kernel)
                                      for slot in tf_lth.kernel_slots(model)}
        checked.append(round_index)

    data = tiny_data()
    return tf_lth.find_ticket(model, train, config.rounds, RATES_BY_LAYER,
                              seed=config.seed, verbose=0, rewind_to=snapshot,
                              one_shot=config.one_shot, block=config.mask_block,
                              gradient_data=(data.train_images[:1000], data.train_labels[:1000]),
                              loss=_cross_entropy, **options)


CASES = [  # (id, CLI flags, find_ticket options besides the shared ones)
    ("per_layer", dict(rounds=2), {}),
    ("global_rewind", dict(rounds=2, prune_scope="global", rewind_iteration=2,
                           criterion="magnitude_increase"),
     dict(scope="global", criterion="magnitude_increase")),
    ("one_shot", dict(rounds=3, one_shot=True), {}),
    ("one_shot_global", dict(rounds=3, one_shot=True, prune_scope="global",
                             criterion="large_final_same_sign"),
     dict(scope="global", criterion="large_final_same_sign")),
    ("blocks_1x4", dict(rounds=2, mask_block="1x4", criterion="large_init_large_final"),
     dict(criterion="large_init_large_final")),
    ("random_criterion", dict(rounds=2, criterion="random"), dict(criterion="random")),
    ("snip_freeze_init", dict(rounds=2, criterion="snip", mask_zero_action="freeze_init"),
     dict(criterion="snip", mask_zero_action="freeze_init")),
    ("variant2_4_rounds", dict(rounds=4, mask_zero_action="freeze_init_zero_all"),
     dict(mask_zero_action="freeze_init_zero_all")),
    ("variant2_rewind_magnitude_increase",
     dict(rounds=3, rewind_iteration=2, criterion="magnitude_increase",
          mask_zero_action="freeze_init_zero_all"),
     dict(criterion="magnitude_increase", mask_zero_action="freeze_init_zero_all")),
] + [
    (f"{one}+{zero}", dict(rounds=2, mask_one_action=one, mask_zero_action=zero),
     dict(mask_one_action=one, mask_zero_action=zero))
    for one, zero in zip(actions.MASK_ONE_ACTIONS,
                         actions.MASK_ZERO_ACTIONS * 3)
]


@pytest.mark.parametrize("flags, options", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_find_ticket_and_the_cli_give_identical_masks_starts_and_frozen_values(
        tmp_path, monkeypatch, flags, options):
    config, files = _cli_round_files(tmp_path, monkeypatch, {}, **flags)
    checked, seen = [], {}
    ticket = _api_ticket(config, files, checked, seen, **options)
    rounds_run = [0, 1] if config.one_shot else list(range(config.rounds + 1))
    assert checked == rounds_run
    last = rounds_run[-1]
    for key, mask in ticket.masks.items():
        np.testing.assert_array_equal(mask, files(last, "masks")[key])
    assert set(ticket.masks) == {"conv", "separable/depthwise_kernel",
                                 "separable/pointwise_kernel", "einsum", "output"}
    assert ticket.weights_remaining < 1.0


def _expected_fresh(model, key, seed, round_index):
    """A fresh draw of the kernel's own initializer at the documented seed."""
    slots = tf_lth.kernel_slots(model)
    index = [slot.key for slot in slots].index(key)
    slot = slots[index]
    layer_initializers = {"conv": "kernel_initializer", "einsum": "kernel_initializer",
                          "output": "kernel_initializer",
                          "separable/depthwise_kernel": "depthwise_initializer",
                          "separable/pointwise_kernel": "pointwise_initializer"}
    initializer = getattr(slot.layer, layer_initializers[key])
    fresh = type(initializer)(seed=rounds.fresh_init_seed(seed, round_index, index))
    return np.asarray(fresh(tuple(slot.kernel.shape), dtype="float32"))


def test_cli_controls_match_the_engine_on_the_api_ticket_and_the_documented_seeds(
        tmp_path, monkeypatch):
    controls = {}
    config, files = _cli_round_files(
        tmp_path, monkeypatch, controls, rounds=2, controls="random,reinit",
        mask_one_action="signed_reshuffle", mask_zero_action="freeze_init_zero_mask")
    checked, seen = [], {}
    _api_ticket(config, files, checked, seen, mask_one_action="signed_reshuffle",
                mask_zero_action="freeze_init_zero_mask")
    model = tiny_model()
    w_init = {slot.key: np.array(slot.kernel) for slot in tf_lth.kernel_slots(model)}
    for round_index in (1, 2):
        arrays = rounds.RoundArrays(
            masks=seen[round_index - 1]["masks"], frozen=seen[round_index - 1]["frozen"],
            w_init=w_init, w_final=seen[round_index - 1]["final"])
        for kind in ("random", "reinit"):
            fresh = {key: _expected_fresh(model, key, config.seed, round_index)
                     for key in w_init} if kind == "reinit" else None
            expected = rounds.control_round(
                kind, seen[round_index]["masks"], arrays, config.seed, round_index,
                mask_one_action="signed_reshuffle", mask_zero_action="freeze_init_zero_mask",
                fresh_init=fresh)
            for key, (mask, start, frozen) in expected.items():
                got_mask, got_kernel, got_frozen = controls[(kind, round_index)][key]
                np.testing.assert_array_equal(got_mask, mask, err_msg=f"{kind} {key}")
                np.testing.assert_array_equal(got_kernel, start, err_msg=f"{kind} {key}")
                np.testing.assert_array_equal(got_frozen, frozen, err_msg=f"{kind} {key}")
                assert int(got_mask.sum()) == int(seen[round_index]["masks"][key].sum())
    # the ticket's own files are the ticket's, not a control's
    np.testing.assert_array_equal(files(2, "masks")["einsum"], seen[2]["masks"]["einsum"])


# ---- (c) a real CLI round on SeparableConv2D and EinsumDense kernels -------------------
def test_cli_lottery_round_trains_and_prunes_separable_and_einsum_kernels(tmp_path):
    config = config_lib.make(experiment="lottery", dataset="synthetic", iterations=4,
                             eval_every=2, batch_size=8, rounds=1, seed=2,
                             prune_rates=PRUNE_RATES, run_dir=str(tmp_path / "run"),
                             progress=False, jit_compile="off")
    records = lottery.LotteryRun(config, tiny_data(), tiny_model,
                                 tf.distribute.get_strategy(), log=lambda *_: None).run()
    assert [record["round"] for record in records] == [0, 1]
    folder = run_files.round_dir(config.run_dir, 1)
    round_masks = run_files.load_arrays(os.path.join(folder, "masks.npz"))
    final_0 = run_files.load_arrays(os.path.join(run_files.round_dir(config.run_dir, 0),
                                                 "final.npz"))
    start_1 = run_files.load_arrays(os.path.join(folder, "initial.npz"))
    initial_0 = run_files.load_arrays(os.path.join(run_files.round_dir(config.run_dir, 0),
                                                   "initial.npz"))
    model = tiny_model()
    sizes = {slot.key: int(np.prod(slot.kernel.shape)) for slot in tf_lth.kernel_slots(model)}
    rates = {"conv": 0.3, "separable/depthwise_kernel": 0.3, "separable/pointwise_kernel": 0.3,
             "einsum": 0.4, "output": 0.2}
    assert set(round_masks) == set(sizes)
    for slot in tf_lth.kernel_slots(model):
        key, path = slot.key, slot.kernel.path
        mask = round_masks[key]
        assert int(mask.sum()) == sizes[key] - int(np.floor(rates[key] * sizes[key] + 1e-9))
        kept = mask == 1  # large_final: the kept weights had the largest |w_f|
        assert np.abs(final_0[path][~kept]).max() <= np.abs(final_0[path][kept]).min()
        np.testing.assert_array_equal(start_1[path][kept], initial_0[path][kept])
        assert np.all(start_1[path][~kept] == 0)
    assert records[1]["layers"]["separable/depthwise_kernel"] == pytest.approx(
        int(round_masks["separable/depthwise_kernel"].sum()) / sizes["separable/depthwise_kernel"])
