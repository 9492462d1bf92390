"""The mask-0 explanation (tf_lth.cli.reproduce.mask_zero_why): its runs are the ticket's,
one-shot to the mask-0 level; its accuracies equal a forward pass by hand from the saved
weights; the report's conclusion follows its stated rules."""

import os

import numpy as np
import pytest

from tests.helpers import run_cli
from tf_lth.cli.reproduce import mask_zero_evidence, mask_zero_why, paper, plan


def test_runs_are_the_tickets_flags_one_shot_to_the_last_mask_zero_level():
    budget = paper.budget_for("mnist_fc", "paper")
    ticket = next(run for run in plan.plan("mnist_fc", budget) if run.name == plan.BASELINE)
    runs = mask_zero_why.sub_runs("mnist_fc", budget)
    assert [(run.flags["criterion"], run.flags["mask_zero_action"]) for run in runs] == [
        ("large_final", "zero"), ("large_final", "freeze_init"),
        ("random", "zero"), ("random", "freeze_init")]
    for run in runs:
        assert run.flags["one_shot"] is True and run.flags["rounds"] == 24 == \
            budget.mask_zero_rounds
        assert run.flags["epochs"] == 55 and run.flags["eval_every"] == 100
        same = {key: value for key, value in run.flags.items()
                if key not in ("rounds", "one_shot", "criterion", "mask_zero_action")}
        assert same == {key: value for key, value in ticket.flags.items() if key in same}
        assert run.rounds == 1 and run.name.startswith("mask_zero_why/")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The command on the smoke budget and synthetic MNIST: four real runs, measured."""
    out_dir = tmp_path_factory.mktemp("why")
    archive_dir = out_dir / "archive"
    process = run_cli("tf_lth.cli.reproduce.mask_zero_why", "--preset=mnist_fc",
                      "--budget=smoke", "--dataset=synthetic_mnist", f"--out_dir={out_dir}",
                      f"--archive={archive_dir}", "--jobs=2")
    return out_dir, archive_dir, process


def _forward(weights: dict, images: np.ndarray, frozen_scale: float) -> np.ndarray:
    """The fc network by hand: kernel = mask x w + (1 - mask) x frozen x scale, ReLU."""
    hidden = images.reshape(len(images), -1)
    names = sorted({key.split("/")[-2] for key in weights if key.endswith("/mask")},
                   key=lambda name: (name == "output", name))
    for name in names:
        prefix = next(key[:-len("mask")] for key in weights if key.endswith(f"{name}/mask"))
        mask = weights[prefix + "mask"]
        kernel = mask * weights[prefix + "kernel"] + (1 - mask) * weights[prefix + "frozen"] \
            * frozen_scale
        hidden = hidden @ kernel + weights[prefix + "bias"]
        if name != "output":
            hidden = np.maximum(hidden, 0)
    return hidden.argmax(axis=1)


def test_the_command_runs_four_runs_and_its_accuracies_are_a_forward_pass_by_hand(smoke):
    from tf_lth.cli.export import load_round_model

    out_dir, archive_dir, process = smoke
    assert process.returncode == 0, process.stderr[-2000:]
    content = mask_zero_why.read(str(archive_dir))
    budget = paper.budget_for("mnist_fc", "smoke")
    assert content["level"] == budget.mask_zero_rounds and len(content["cases"]) == 4
    for name, case in content["cases"].items():
        run_dir = os.path.join(out_dir, *name.split("/"))
        _, data, _, round_index = load_round_model(run_dir)
        assert round_index == 1
        with np.load(os.path.join(run_dir, "round_001", "final.npz")) as arrays:
            weights = {key: arrays[key] for key in arrays.files}
        masks = [value for key, value in weights.items() if key.endswith("/mask")]
        assert case["kept_kernel_weights"] == int(sum(mask.sum() for mask in masks))
        assert case["kernel_weights"] == sum(mask.size for mask in masks)
        assert case["prune_level"] == budget.mask_zero_rounds
        as_trained = np.mean(_forward(weights, data.test_images, 1.0) == data.test_labels)
        assert case["end_test_accuracy"] == pytest.approx(as_trained, abs=1.5e-3)
        if case["mask_zero_action"] == "freeze_init":
            frozen = [value for key, value in weights.items() if key.endswith("/frozen")]
            assert any(np.any(value != 0) for value in frozen)  # there is something to zero
            zeroed = np.mean(_forward(weights, data.test_images, 0.0) == data.test_labels)
            assert case["frozen_zeroed_test_accuracy"] == pytest.approx(zeroed, abs=1.5e-3)
        else:
            assert "frozen_zeroed_test_accuracy" not in case
    assert f"measurements: {archive_dir}" in process.stdout


def _case(criterion, action, best, end=None, zeroed=None):
    case = {"criterion": criterion, "mask_zero_action": action, "prune_level": 24,
            "weights_remaining": 0.005, "kept_kernel_weights": 1341,
            "kernel_weights": 266200, "test_accuracy": best,
            "end_test_accuracy": best if end is None else end}
    if zeroed is not None:
        case["frozen_zeroed_test_accuracy"] = zeroed
    return case


def _content(random_freeze=0.90, zeroed=0.25):
    cases = [_case("large_final", "zero", 0.94), _case("large_final", "freeze_init", 0.95,
                                                       0.945, zeroed),
             _case("random", "zero", 0.45), _case("random", "freeze_init", random_freeze,
                                                  random_freeze, 0.11)]
    return {"level": 24, "budget": "paper", "commit": "abc",
            "cases": {mask_zero_why.run_name(c["criterion"], c["mask_zero_action"]): c
                      for c in cases}}


def test_the_report_says_features_explain_it_when_both_rules_hold():
    lines = "\n".join(mask_zero_evidence.why_lines(_content()))
    # by hand: 94.5 - 25.0 = 69.5 and 90.0 - 11.0 = 79.0 points lost; 90.0 - 45.0 = +45.0
    assert "here 69.5 with large_final, 79.0 with random" in lines
    assert "(here +45.0)" in lines
    assert "is not a sparse network" in lines and "1,341 of its 266,200" in lines
    assert "| random | freeze_init | 0.50% | 1,341 of 266,200 | 90.00 | 90.00 | 11.00 |" in lines
    summary = mask_zero_evidence.why_summary(_content())
    assert "random features" in summary and "+45.0 points" in summary


@pytest.mark.parametrize("content", [
    _content(zeroed=0.90),          # zeroing the frozen weights costs 4.5 points: not used
    _content(random_freeze=0.50),   # +5.0 points with a random mask: not features
])
def test_the_report_says_they_do_not_explain_it_when_a_rule_fails(content):
    lines = "\n".join(mask_zero_evidence.why_lines(content))
    assert "do not show the frozen weights acting as random features" in lines
    assert "is not a sparse network" not in lines
    assert "do not explain it" in mask_zero_evidence.why_summary(content)


def test_the_report_draws_no_conclusion_while_a_run_is_missing():
    content = _content()
    del content["cases"][mask_zero_why.run_name("random", "zero")]
    lines = mask_zero_evidence.why_lines(content)
    assert any("| random | zero | not run yet |" in line for line in lines)
    assert not any("Rules:" in line for line in lines)
    assert mask_zero_evidence.why_summary(content) == ""
    assert mask_zero_evidence.why_lines(None) == []


def test_bad_flags_get_one_line_and_exit_2(tmp_path):
    process = run_cli("tf_lth.cli.reproduce.mask_zero_why", "--preset=mnist_cnn",
                      f"--out_dir={tmp_path / 'out'}")
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "--preset='mnist_cnn' is not allowed; allowed: "
        + ", ".join(paper.PRESETS) + "."]
    assert not (tmp_path / "out").exists()
