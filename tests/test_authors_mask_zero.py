"""The mask-0 actions against the authors' procedure, round by round on a small case.

The reference below restates, in NumPy, what the authors' iterative script does between
two rounds (docs/semantics.md, "Mask-0 actions", "Against the authors' code"): each round
reads the previous round's *starting* weights (`S`, the first row of its weights file) and
final weights (`F`); the mask keeps the largest abs(F) among last round's kept weights; the
frozen layer's kernel is `underlying * mask + (1 - mask) * frozen`. Per action:

- zero: pruned weights are 0, kept weights start at `S`;
- freeze_init: pruned weights frozen at `S`, kept weights start at `S`;
- variant 1: pruned weights with abs(S) > abs(F) frozen at 0, the rest at `S`;
- variant 2: every weight with abs(S) > abs(F) set to 0 in the new start (kept weights
  start there, pruned weights are frozen there), the rest keep `S`;
- zero_rev: pruned weights with abs(S) < abs(F) frozen at 0, the rest at `S`.

Weights pruned earlier never train, so their `F` equals their `S` and nothing changes them.
"Training" is a fixed shift per round, the same for the reference and `find_ticket`, and
large enough that a kept weight started at 0 grows past abs(w_i): the case that tells
"compare with the round's own start" (the authors) from "compare with the first w_i".
"""

import keras
import numpy as np
import pytest

import tf_lth

RATE = 0.25  # (1 - 0.75) x 100 is exactly 25 in floating point, as the count must be
ROUNDS = 4
ACTIONS = ("zero", "freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all",
           "freeze_init_zero_rev")


def _model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden",
                           kernel_initializer=keras.initializers.GlorotNormal(3))(inputs)
    outputs = keras.layers.Dense(4, name="output",
                                 kernel_initializer=keras.initializers.GlorotNormal(4))(x)
    return tf_lth.masked(keras.Model(inputs, outputs), frozen_values=True)


def _shift(key, round_index, shape):
    """The stand-in for a round of training: a fixed shift of every trainable weight."""
    rng = np.random.default_rng([round_index, 7 if key == "hidden" else 8])
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


def _authors_next(action, start, final, mask):
    """The next round's (mask, effective start kernel, frozen values at pruned positions)
    by the authors' rules, from one kernel's previous start, final weights and mask."""
    kept = mask > 0
    prune = int(kept.sum() * RATE)
    candidates = np.where(kept, np.abs(final), np.inf).ravel()
    order = np.argsort(candidates, kind="stable")
    new_mask = mask.copy().ravel()
    new_mask[order[:prune]] = 0
    new_mask = new_mask.reshape(mask.shape)
    pruned = new_mask == 0
    shrank = np.abs(start) > np.abs(final)
    grew = np.abs(start) < np.abs(final)
    if action == "zero":
        frozen = np.zeros_like(start)
        underlying = start
    elif action == "freeze_init":
        frozen = underlying = start
    elif action == "freeze_init_zero_mask":
        frozen = underlying = np.where(pruned & shrank, 0, start)
    elif action == "freeze_init_zero_all":
        frozen = underlying = np.where(shrank, 0, start)
    else:  # freeze_init_zero_rev
        frozen = underlying = np.where(pruned & grew, 0, start)
    effective = np.where(pruned, frozen, underlying)
    return new_mask, effective, np.where(pruned, frozen, 0)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_round_starts_where_the_authors_procedure_starts(action):
    model = _model()
    seen = []  # (masks, effective start kernels, frozen) at the start of each round

    def train(model, round_index):
        slots = tf_lth.kernel_slots(model)
        seen.append(({s.key: np.array(s.mask) for s in slots},
                     {s.key: np.where(np.array(s.mask) > 0, np.array(s.kernel),
                                      np.array(s.frozen)) for s in slots},
                     {s.key: np.array(s.frozen) for s in slots}))
        for slot in slots:  # only kept weights train: pruned ones get no gradient
            kernel = np.array(slot.kernel)
            shift = _shift(slot.key, round_index, kernel.shape) * np.array(slot.mask)
            slot.kernel.assign(kernel + shift)

    tf_lth.find_ticket(model, train, ROUNDS, RATE, verbose=0, mask_zero_action=action)
    assert len(seen) == ROUNDS + 1
    masks, start, _ = seen[0]
    told_apart = 0
    for round_index in range(1, ROUNDS + 1):
        final = {key: start[key] + _shift(key, round_index - 1, start[key].shape)
                 * masks[key] for key in start}
        expected = {key: _authors_next(action, start[key], final[key], masks[key])
                    for key in start}
        got_masks, got_start, got_frozen = seen[round_index]
        for key, (mask, effective, frozen) in expected.items():
            where = f"{action}, round {round_index}, {key}"
            np.testing.assert_array_equal(got_masks[key], mask, err_msg=where)
            np.testing.assert_allclose(got_start[key], effective, rtol=0, atol=1e-7,
                                       err_msg=where)
            np.testing.assert_allclose(got_frozen[key], frozen, rtol=0, atol=1e-7,
                                       err_msg=where)
            first = seen[0][1][key]
            # a kept weight started at 0 that ended past abs(w_i): the two readings differ
            told_apart += int(np.sum((start[key] == 0) & (first != 0) & (masks[key] > 0)
                                     & (np.abs(final[key]) >= np.abs(first))))
        masks, start = got_masks, got_start
    if action == "freeze_init_zero_all":
        assert told_apart > 0, "the case never tells the two readings of variant 2 apart"


def test_variant_2_keeps_a_zeroed_start_at_zero_in_later_rounds():
    """By hand on one weight: w_i = 0.4; round 0 ends at 0.1 (shrank: start round 1 at 0);
    round 1 ends at 0.9 (grew past abs(w_i) from 0). The authors compare 0.9 with the
    round's own start (0): it did not shrink, so round 2 still starts at 0, not at 0.4."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        4, use_bias=False, kernel_initializer=keras.initializers.Constant(
            [[0.4, 1.0, 2.0, 3.0]]))])
    model = tf_lth.masked(model, frozen_values=True)
    finals = {0: [0.1, 1.1, 2.1, 3.1], 1: [0.9, 1.2, 2.2, 3.2], 2: [0.9, 1.2, 2.2, 3.2]}
    starts = []

    def train(model, round_index):
        [slot] = tf_lth.kernel_slots(model)
        starts.append(np.array(slot.kernel).ravel().tolist())
        slot.kernel.assign(np.array([finals[round_index]], np.float32) * np.array(slot.mask))

    tf_lth.find_ticket(model, train, 2, 0.0, verbose=0, mask_zero_action="freeze_init_zero_all")
    np.testing.assert_allclose(starts, [[0.4, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0],
                                        [0.0, 1.0, 2.0, 3.0]], rtol=1e-6)


def test_a_variant_2_run_from_before_the_rule_is_refused_past_round_1(tmp_path):
    """A variant 2 run directory whose rounds after round 1 an older tf_lth made (no marker
    file) is refused on resume with one line naming --run_dir and exit status 2, and
    nothing in it changes; one that stopped at round 1 follows the same rule in both
    versions, so it goes on."""
    import os

    from tests.helpers import run_cli
    from trainers.lottery import VARIANT_2_MARKER

    def train(run_dir, *extra):
        return run_cli("tf_lth.train", "--experiment=lottery", "--dataset=synthetic_mnist",
                       "--arch=fc", "--iterations=10", "--eval_every=10", "--batch_size=50",
                       "--mask_zero_action=freeze_init_zero_all", "--seed=2",
                       f"--run_dir={run_dir}", "--noprogress", *extra)

    import shutil

    from tf_lth.core import run_files

    old = str(tmp_path / "old")
    assert train(old, "--rounds=3").returncode == 0
    assert os.path.exists(os.path.join(old, VARIANT_2_MARKER))
    os.remove(os.path.join(old, VARIANT_2_MARKER))  # as the older tf_lth left it,
    shutil.rmtree(run_files.round_dir(old, 3))  # stopped before round 3
    before = sorted(os.listdir(old))
    refused = train(old, "--rounds=3", "--resume")
    assert refused.returncode == 2, refused.stderr[-2000:]
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error")]
    assert line.startswith(f"error: --run_dir={old}: this variant 2 run") and \
        "reached round 2" in line and "--overwrite" in line, line
    assert "Traceback" not in refused.stderr
    assert sorted(os.listdir(old)) == before

    early = str(tmp_path / "early")
    assert train(early, "--rounds=2").returncode == 0
    os.remove(os.path.join(early, VARIANT_2_MARKER))
    shutil.rmtree(run_files.round_dir(early, 2))  # stopped after round 1
    resumed = train(early, "--rounds=2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert os.path.exists(os.path.join(early, VARIANT_2_MARKER))
    assert run_files.is_done(early, 2)
