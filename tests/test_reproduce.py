"""tf_lth.reproduce: the plan, resuming, and RESULTS.md from (fabricated) run directories.

Fast: nothing is trained. Run directories are written by hand in the format of
`python -m tf_lth.train` (results.json, round_NNN/DONE), so the report, its figures and
its verdicts are checked without TensorFlow.
"""

import dataclasses
import json
import os
import sys

import pytest

from tf_lth import reproduce

REQUIRED_CRITERIA = {"large_final", "magnitude_increase", "movement", "large_init_large_final",
                     "large_init", "small_final", "random", "large_final_same_sign"}
VERDICTS = ("reproduced", "not reproduced", "not measured")


def tiny_budget():
    """The smoke budget's sizes with every criterion and action of the paper's figures."""
    return dataclasses.replace(reproduce.budget_for("mnist_fc", "smoke"),
                               criteria=reproduce.FIGURE_CRITERIA,
                               mask_one_actions=reproduce.MASK_ONE_ACTIONS,
                               mask_zero_actions=reproduce.MASK_ZERO_ACTIONS)


def _write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(value, stream)


def _remaining(r):
    # fc: 20% of hidden dense layers, 10% of the output layer per round (close enough here)
    return 0.8 ** r


def fake_lottery(run_dir, rounds, accuracy, experiment="lottery"):
    """A finished lottery run: results.json and DONE markers, accuracy(r) per round."""
    records = []
    for r in range(rounds + 1):
        acc = accuracy(r)
        records.append({"round": r, "weights_remaining": _remaining(r), "test_accuracy": acc,
                        "best": {"iteration": 10, "val_loss": 0.1, "test_accuracy": acc}})
        os.makedirs(os.path.join(run_dir, f"round_{r:03d}"), exist_ok=True)
        open(os.path.join(run_dir, f"round_{r:03d}", "DONE"), "w").close()
    _write(os.path.join(run_dir, "config.json"), {"experiment": experiment})
    _write(os.path.join(run_dir, "results.json"),
           {"config": {"experiment": experiment}, "rounds": records})


def fake_reproduction(out_dir, budget, runs, skip=()):
    """Run directories for every sub-run of `runs` (but `skip`), paper-like numbers."""
    quality = {"large_final": 0.0, "magnitude_increase": 0.001, "large_final_same_sign": 0.002,
               "movement": -0.01, "large_init_large_final": -0.05, "large_init": -0.1,
               "random": -0.2, "small_init": -0.25, "small_final": -0.4}
    actions = {"reinit": -0.05, "reshuffle": -0.04, "constant": -0.06, "signed_reinit": -0.005,
               "signed_reshuffle": -0.004, "signed_constant": -0.006}
    zero = {"freeze_init": -0.3, "freeze_init_zero_mask": 0.004, "freeze_init_zero_all": 0.008}
    for run in runs:
        if run.name in skip:
            continue
        run_dir = run.run_dir(out_dir)
        leaf = run.name.split("/")[-1]
        if run.kind == "lottery":
            offset = quality.get(leaf, actions.get(leaf, zero.get(leaf, 0.0)))
            if run.figure == "blocks":
                offset = -0.003
            fake_lottery(run_dir, run.rounds,
                         lambda r, o=offset: 0.98 + (o * r / run.rounds if r else 0.0))
        elif run.kind == "tfmot":
            _write(os.path.join(run_dir, "results.json"), {"rounds": [
                {"round": run.rounds, "weights_remaining": _remaining(run.rounds),
                 "best": {"test_accuracy": 0.975}}]})
            os.makedirs(os.path.join(run_dir, f"round_{run.rounds:03d}"), exist_ok=True)
            open(os.path.join(run_dir, f"round_{run.rounds:03d}", "DONE"), "w").close()
        elif run.kind == "learned":
            _write(os.path.join(run_dir, "results.json"), {"rounds": [
                {"round": 0, "weights_remaining": 0.4, "best": {"test_accuracy": 0.95},
                 "test_accuracy_expected_mask": 0.953, "test_accuracy_sampled": 0.95,
                 "test_accuracy_sampled_std": 0.001}]})
            os.makedirs(os.path.join(run_dir, "round_000"), exist_ok=True)
            open(os.path.join(run_dir, "round_000", "DONE"), "w").close()
        elif run.kind == "untrained":
            masks = []
            levels = [int(x) for x in run.flags["prune_levels"].split(",")]
            for criterion in reproduce.ALL_CRITERIA:
                for treatment in ("init", "signed_constant", "rescaled"):
                    for level in levels:
                        good = criterion == "large_final_same_sign"
                        acc = {"init": 0.6, "signed_constant": 0.8, "rescaled": 0.7}[treatment] \
                            if good and level else 0.1
                        masks.append({"criterion": criterion, "weight_treatment": treatment,
                                      "prune_level": level, "weights_remaining": _remaining(level),
                                      "test_accuracy": acc})
            _write(os.path.join(run_dir, "results.json"), {"rounds": [], "masks": masks})
        elif run.kind == "export":
            ticket_1x4 = run.name.endswith("1x4")
            _write(os.path.join(run_dir, "export", "export_report.json"), {
                "formats": {"tflite": {"latency_per_example_s": 20e-6, "size_bytes": 1_000_000},
                            "tflite_sparse": {"latency_per_example_s": 6e-6 if ticket_1x4
                                              else 20e-6, "size_bytes": 120_000}},
                "layers": [{"name": "dense_1",
                            "litert_kernel": "sparse" if ticket_1x4 else "dense (densified)"}]})
            _write(run.export_marker(out_dir), {"round": run.export_round})
    return {"sub_runs": {run.name: {"status": "done", "seconds": 1.0} for run in runs
                         if run.name not in skip}}


def test_default_plan_covers_the_paper_within_the_budget():
    budget = reproduce.budget_for("mnist_fc", "default")
    runs = reproduce.plan("mnist_fc", budget)
    names = {run.name for run in runs}
    assert {f"criteria/{c}" for c in REQUIRED_CRITERIA} <= names
    assert {f"mask_one/{a}" for a in ("reinit", "reshuffle", "constant", "signed_reinit",
                                      "signed_reshuffle", "signed_constant")} <= names
    assert {f"mask_zero/{a}" for a in ("freeze_init", "freeze_init_zero_mask",
                                       "freeze_init_zero_all")} <= names
    assert {"untrained/all_criteria", "learned/signed_constant", "blocks/large_final_1x4",
            "export/large_final", "export/large_final_1x4"} <= names
    assert any(run.kind == "tfmot" for run in runs)
    assert reproduce.total_estimate(runs) < 80 * 60  # comfortably under 90 minutes
    baseline = next(run for run in runs if run.name == reproduce.BASELINE)
    assert baseline.rounds == 24  # the criteria figure compares at 0.5% remaining
    blocks = next(run for run in runs if run.name == "blocks/large_final_1x4")
    assert blocks.flags["mask_block"] == "1x4" and blocks.rounds >= 15  # to 3.6%
    # dependencies come first
    order = [run.name for run in runs]
    for run in runs:
        for dep in run.depends:
            assert order.index(dep) < order.index(run.name)
    text = reproduce.format_plan("mnist_fc", budget, runs, "/tmp/x")
    assert "estimated total" in text and "criteria/movement" in text


def test_commands_use_the_train_and_export_clis_and_resume_only_existing_runs(tmp_path):
    budget = reproduce.budget_for("mnist_fc", "smoke")
    runs = reproduce.plan("mnist_fc", budget, dataset="synthetic_mnist")
    out_dir = str(tmp_path)
    run = next(r for r in runs if r.name == "mask_zero/freeze_init_zero_all")
    args = reproduce.command(run, out_dir, None)
    assert args[:3] == [sys.executable, "-m", "tf_lth.train"]
    assert "--mask_zero_action=freeze_init_zero_all" in args and "--resume" not in args
    assert f"--run_dir={os.path.join(out_dir, 'mask_zero', 'freeze_init_zero_all')}" in args
    _write(os.path.join(run.run_dir(out_dir), "config.json"), {})
    assert "--resume" in reproduce.command(run, out_dir, None)
    untrained = next(r for r in runs if r.kind == "untrained")
    args = reproduce.command(untrained, out_dir, "/data")
    assert f"--source_run={out_dir}/criteria/large_final" in args and "--data_dir=/data" in args
    export = next(r for r in runs if r.name == "export/large_final_1x4")
    args = reproduce.command(export, out_dir, None)
    assert args[2] == "tf_lth.export" and f"--round={budget.export_round}" in args
    learned = next(r for r in runs if r.name == "learned/signed_constant")
    args = reproduce.command(learned, out_dir, None)
    assert "--batch_size=250" in args and "--learning_rate=100.0" in args


def test_report_marks_every_claim_and_draws_every_figure(tmp_path):
    budget = tiny_budget()
    runs = reproduce.plan("mnist_fc", budget)
    out_dir = str(tmp_path / "runs")
    state = fake_reproduction(out_dir, budget, runs)
    assert all(reproduce.is_complete(run, out_dir) for run in runs)
    results = str(tmp_path / "docs" / "RESULTS.md")
    figures = str(tmp_path / "docs" / "figures")
    text = reproduce.report("mnist_fc", budget, runs, out_dir, results, figures, state)
    assert open(results, encoding="utf-8").read() == text
    for heading in ("Mask criteria", "Mask-1 actions", "Mask-0 actions", "Untrained supermasks",
                    "Learned supermasks", "gradual magnitude pruning", "1x1 vs 1x4"):
        assert heading in text
    claims = ["large_final and magnitude_increase are the best criteria",
              "small_* and random are the worst criteria",
              "reinit, reshuffle and constant fail as mask-1 actions",
              "keeping the sign of w_i rescues all three",
              "pruned weights must be zero, not frozen at init",
              "variant 2 beats variant 1, which beats the lottery ticket at high sparsity",
              "untrained masked networks are far above chance",
              "signed constants raise them further"]
    glance = text.split("## Claims at a glance")[1].split("## 1.")[0]
    for claim in claims:
        row = next(line for line in glance.splitlines() if claim in line)
        assert "**reproduced**" in row, row  # the fabricated numbers follow the paper
    # the paper's numbers are beside ours
    for number in ("95.3", "86", "94.4", "98.24", "97.9"):
        assert number in text
    for name in ("criteria", "mask_one", "mask_zero", "untrained", "learned", "tfmot",
                 "blocks"):
        path = os.path.join(figures, f"mnist_fc_{name}.png")
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/mnist_fc_{name}.png" in text


def test_report_says_which_claims_fail_and_which_runs_are_missing(tmp_path):
    budget = tiny_budget()
    runs = reproduce.plan("mnist_fc", budget)
    out_dir = str(tmp_path / "runs")
    tfmot = [run.name for run in runs if run.kind == "tfmot"]
    state = fake_reproduction(out_dir, budget, runs, skip=tfmot + ["mask_one/signed_constant"])
    for name in tfmot:
        state["sub_runs"][name] = {"status": "failed", "error": "No module named 'tfmot'"}
    # reinit does as well as the lottery ticket: the mask-1 claim must fail
    reinit = next(run for run in runs if run.name == "mask_one/reinit")
    fake_lottery(reinit.run_dir(out_dir), reinit.rounds, lambda r: 0.98)
    results = str(tmp_path / "RESULTS.md")
    text = reproduce.report("mnist_fc", budget, runs, out_dir, results,
                            str(tmp_path / "figures"), state)
    assert "**failed**" in text and "No module named 'tfmot'" in text
    assert "`mask_one/signed_constant`: not run yet" in text
    assert "| missing |" in text  # tfmot levels in the table
    glance = text.split("## Claims at a glance")[1].split("## 1.")[0]
    row = next(line for line in glance.splitlines() if "fail as mask-1" in line)
    assert "**not reproduced**" in row
    row = next(line for line in glance.splitlines() if "rescues all three" in line)
    assert "**not measured**" in row
    assert all(any(v in line for v in VERDICTS) for line in glance.splitlines()
               if line.startswith("| ") and "verdict" not in line)


def test_report_only_cli_regenerates_without_training(tmp_path, capsys):
    out_dir = str(tmp_path / "runs")
    budget = reproduce.budget_for("mnist_fc", "smoke")
    runs = reproduce.plan("mnist_fc", budget)
    state = fake_reproduction(out_dir, budget, runs)
    _write(os.path.join(out_dir, "reproduce.json"), state)
    results = str(tmp_path / "R.md")
    status = reproduce.main(["--budget=smoke", f"--out_dir={out_dir}", f"--results={results}",
                             "--report_only"])
    assert status == 0
    assert "Claims at a glance" in open(results, encoding="utf-8").read()
    assert "estimated total" in capsys.readouterr().out
    assert reproduce.main(["--plan", "--preset=cifar10_conv4"]) == 0


def test_cifar_preset_refuses_without_data_or_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "_has_gpu", lambda: False)
    status = reproduce.main(["--preset=cifar10_conv2", f"--out_dir={tmp_path}",
                             f"--results={tmp_path}/R.md"])
    assert status == 2
    assert not os.path.exists(os.path.join(tmp_path, "R.md"))


@pytest.mark.parametrize("preset", sorted(reproduce.PRESETS))
def test_every_preset_plans(preset):
    for name in ("default", "smoke", "paper"):
        runs = reproduce.plan(preset, reproduce.budget_for(preset, name))
        assert len({run.name for run in runs}) == len(runs)
