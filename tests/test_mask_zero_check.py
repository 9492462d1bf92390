"""The mask-0 check: each action's rule, weight by weight, on a small case by hand and on a
real lottery run of the CLI; a wrong implementation is caught."""

import os

import numpy as np
import pytest

from tests.helpers import run_cli
from tf_lth.cli.reproduce import mask_zero_check

# One kernel of six weights. Last round kept all but position 5 (pruned earlier, frozen at
# 0.7); this round prunes positions 3 and 4 (the smallest abs(w_f) of those kept).
W_INIT = np.array([0.5, -0.4, 0.3, 0.2, -0.15, 0.7])
W_FINAL = np.array([0.9, -0.3, 0.8, 0.05, -0.2, 0.7])  # positions 1 and 3 shrank, 4 grew
PREV = {"mask": np.array([1, 1, 1, 1, 1, 0.]), "frozen": np.array([0, 0, 0, 0, 0, 0.7])}
MASK = np.array([1, 1, 1, 0, 0, 0.])


def _start(frozen_3, frozen_4, kept_start=None):
    kernel = W_INIT.copy() if kept_start is None else kept_start
    frozen = np.array([0, 0, 0, frozen_3, frozen_4, 0.7])
    kernel = np.where(MASK > 0, kernel, frozen)
    return {"kernel": kernel, "mask": MASK.copy(), "frozen": frozen}


def _end(start):
    return {"kernel": np.where(MASK > 0, start["kernel"] + 0.01, start["kernel"]),
            "mask": start["mask"].copy(), "frozen": start["frozen"].copy()}


# By hand from docs/semantics.md: position 3 shrank (0.05 < 0.2), position 4 grew (0.2 > 0.15).
CASES = {
    "zero": (0.0, 0.0, None),
    "freeze_init": (0.2, -0.15, None),
    "freeze_init_zero_mask": (0.0, -0.15, None),
    # variant 2 also starts kept position 1 (shrank: 0.3 < 0.4) at 0
    "freeze_init_zero_all": (0.0, -0.15, np.array([0.5, 0.0, 0.3, 0.0, 0.0, 0.0])),
    "freeze_init_zero_rev": (0.2, 0.0, None),
    "freeze_init_zero_reshuffle": (0.2, 0.0, None),  # one zero (variant 1 has one), anywhere
}


@pytest.mark.parametrize("action", sorted(CASES))
def test_each_action_done_right_by_hand_breaks_no_rule(action):
    frozen_3, frozen_4, kept = CASES[action]
    start = _start(frozen_3, frozen_4, kept)
    counts = mask_zero_check.check_transition(action, W_INIT, W_FINAL, PREV, start,
                                              _end(start))
    assert counts["pruned_now"] == 2 and counts["kept"] == 3
    assert sum(counts.get(key, 0) for key in mask_zero_check.VIOLATIONS) == 0, counts
    assert counts["zeroed"] == {"zero": 2, "freeze_init": 0}.get(action, 1)
    assert counts["variant2_zero_starts"] == (1 if action == "freeze_init_zero_all" else 0)
    assert counts["kept_trained"] == 3


@pytest.mark.parametrize("action,wrong", [
    ("freeze_init", (0.0, -0.15, None)),             # a pruned weight zeroed
    ("freeze_init_zero_mask", (0.2, 0.0, None)),    # variant 1's choice reversed
    ("freeze_init_zero_all", (0.0, -0.15, None)),    # kept weight that shrank not at 0
    ("zero", (0.2, 0.0, None)),                     # a pruned weight left at w_i
    ("freeze_init_zero_reshuffle", (0.0, 0.0, None)),  # two zeros where variant 1 has one
])
def test_a_wrong_action_is_caught(action, wrong):
    start = _start(*wrong)
    counts = mask_zero_check.check_transition(action, W_INIT, W_FINAL, PREV, start,
                                              _end(start))
    assert sum(counts.get(key, 0) for key in mask_zero_check.VIOLATIONS) > 0


def test_a_wrong_mask_or_training_is_caught():
    start = _start(0.2, -0.15)
    revived = {**PREV, "mask": np.array([1, 1, 1, 1, 1, 0.])}
    start_revived = {**start, "mask": np.array([1, 1, 1, 0, 0, 1.])}  # position 5 back
    counts = mask_zero_check.check_transition("freeze_init", W_INIT, W_FINAL, revived,
                                              start_revived, _end(start_revived))
    assert counts["revived"] == 1
    # keeps abs(w_f) 0.9, 0.3, 0.05 and drops 0.8 and 0.2: both larger than a kept one
    wrong_kept = {**start, "mask": np.array([1, 1, 0, 1, 0, 0.])}
    counts = mask_zero_check.check_transition("freeze_init", W_INIT, W_FINAL, PREV, wrong_kept,
                                              _end(wrong_kept))
    assert counts["criterion"] == 2
    moved = _end(start)
    moved["frozen"] = moved["frozen"] + np.array([0, 0, 0, 0.01, 0, 0])  # frozen weight trained
    counts = mask_zero_check.check_transition("freeze_init", W_INIT, W_FINAL, PREV, start, moved)
    assert counts["frozen_moved_in_training"] == 1


def test_lottery_runs_of_the_cli_follow_every_rule(tmp_path):
    """Variant 2 (the action with the most rules) and the reshuffle control, 3 rounds each
    through `python -m tf_lth.train`: no weight of any kernel breaks a rule."""
    for action in ("freeze_init_zero_all", "freeze_init_zero_reshuffle"):
        run_dir = str(tmp_path / action)
        process = run_cli("tf_lth.train", "--experiment=lottery", "--dataset=synthetic_mnist",
                          "--arch=fc", "--rounds=2", "--iterations=30", "--eval_every=15",
                          f"--mask_zero_action={action}", "--seed=3", f"--run_dir={run_dir}",
                          "--noprogress")
        assert process.returncode == 0, process.stderr[-2000:]
        result = mask_zero_check.check_run(run_dir)
        assert result["action"] == action and [r["round"] for r in result["rounds"]] == [1, 2]
        assert result["violations"] == 0, result
        counts = result["rounds"][0]["layers"]["dense_1"]
        assert 0 < counts["zeroed"] < counts["pruned_now"] == round(0.2 * 784 * 300)
        assert counts["kept_trained"] > 0.5 * counts["kept"]
        if action == "freeze_init_zero_all":
            assert counts["variant2_zero_starts"] > 0
    # and the command line says so
    process = run_cli("tf_lth.cli.reproduce.mask_zero_check", str(tmp_path / action))
    assert process.returncode == 0, process.stderr
    assert "0 breaking a rule" in process.stdout


def test_check_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    process = run_cli("tf_lth.cli.reproduce.mask_zero_check", str(tmp_path))
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no config.json; allowed: a tf_lth lottery run directory."]
    assert os.listdir(tmp_path) == []
