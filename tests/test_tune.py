"""`python -m tf_lth.tune`: keras-tuner over tf_lth's own training loop."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--experiment=dense", "--dataset=synthetic_mnist", "--arch=fc", "--iterations=20",
        "--eval_every=10", "--noprogress"]


def _run(module, *arguments, timeout=150):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _flag_values(path):
    values = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("--") and "=" in line:
            name, value = line[2:].split("=", 1)
            values[name] = value
    return values


def test_random_search_writes_trials_and_a_best_flagfile_that_trains_as_is(tmp_path):
    flagfile = tmp_path / "base.flags"
    flagfile.write_text("# a tiny dense run\n" + "\n".join(BASE) + "\n")
    run_dir = tmp_path / "tune"
    result = _run("tf_lth.tune", f"--flagfile={flagfile}", "--tuner=random", "--max_trials=2",
                  f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(name for name in os.listdir(run_dir / "tuning") if name.startswith("trial_"))
    assert len(trials) == 2
    for trial in trials:  # each trial is a complete tf_lth run of our own loop
        with open(run_dir / "tuning" / trial / "run" / "results.json") as stream:
            assert len(json.load(stream)["rounds"]) == 1
    summary = json.loads((run_dir / "tuning_summary.json").read_text())
    scores = [trial["val_accuracy"] for trial in summary["trials"]]
    assert summary["best"]["val_accuracy"] == max(scores)
    best = summary["best"]["hyperparameters"]
    assert set(best) == {"learning_rate", "batch_size"}

    values = _flag_values(run_dir / "best.flags")
    assert float(values["learning_rate"]) == pytest.approx(best["learning_rate"])
    assert int(values["batch_size"]) == best["batch_size"]
    assert "tuner" not in values and "max_trials" not in values
    rerun = _run("tf_lth.train", f"--flagfile={run_dir / 'best.flags'}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with open(values["run_dir"] + "/results.json") as stream:
        rerun_results = json.load(stream)
    assert rerun_results["config"]["learning_rate"] == pytest.approx(best["learning_rate"])
    trial_dir = run_dir / "tuning" / f"trial_{summary['best']['trial_id']}" / "run"
    with open(trial_dir / "results.json") as stream:
        trial_results = json.load(stream)
    # The same flags give the same run: the re-run reproduces the trial's objective.
    assert rerun_results["rounds"][-1]["best"]["val_accuracy"] == pytest.approx(
        trial_results["rounds"][-1]["best"]["val_accuracy"], abs=0.02)


def test_hyperband_tunes_a_learned_supermask(tmp_path):
    run_dir = tmp_path / "tune"
    result = _run("tf_lth.tune", "--experiment=learned_supermask", "--dataset=synthetic_mnist",
                  "--supermask_weights=signed_constant", "--iterations=16", "--eval_every=8",
                  "--eval_samples=2", "--tuner=hyperband", "--max_trials=2",
                  "--hyperband_max_epochs=2", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "tuning_summary.json").read_text())
    assert len(summary["trials"]) == 2
    names = {key for key in summary["best"]["hyperparameters"] if not key.startswith("tuner/")}
    assert names == {"learning_rate", "sigmoid_bias", "constant_multiplier"}
    values = _flag_values(run_dir / "best.flags")
    assert values["experiment"] == "learned_supermask"
    assert values["iterations"] == "16"  # the full budget, not hyperband's share


@pytest.mark.parametrize("flags, message", [
    (["--tuner=grid"], "--tuner='grid' is not allowed"),
    (["--max_trials=0"], "--max_trials=0 is not allowed"),
    (["--experiment=untrained_supermask"], "cannot be tuned"),
    (["--learning_rate=-1"], "--learning_rate"),
    (["--no_such_flag=1"], "no_such_flag"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, flags, message):
    run_dir = tmp_path / "tune"
    result = _run("tf_lth.tune", *BASE, f"--run_dir={run_dir}", *flags, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not run_dir.exists()  # nothing written


def test_search_spaces_and_trial_budgets():
    from tf_lth.core import config as config_lib
    from tf_lth.cli import tune

    dense = config_lib.make(experiment="lottery", run_dir="x", rounds=2)
    assert set(tune.search_space(dense).values) == {"learning_rate", "batch_size"}
    supermask = config_lib.make(experiment="learned_supermask", run_dir="x")
    assert set(tune.search_space(supermask).values) == {"learning_rate", "sigmoid_bias"}
    signed = config_lib.make(experiment="learned_supermask", run_dir="x",
                             supermask_weights="signed_constant")
    space = tune.search_space(signed)
    assert set(space.values) == {"learning_rate", "sigmoid_bias", "constant_multiplier"}
    assert space.values["learning_rate"] == 100.0  # the preset is the default point

    base = {"iterations": 100, "epochs": None, "batch_size": 60, "learning_rate": 1e-3}
    values = tune.trial_values(base, {"learning_rate": 0.01, "batch_size": 120,
                                      "tuner/epochs": 1}, max_epochs=4)
    assert values == {"iterations": 25, "epochs": None, "batch_size": 120,
                      "learning_rate": 0.01}
    by_epochs = tune.trial_values({"iterations": None, "epochs": 2.0}, {"tuner/epochs": 2},
                                  max_epochs=4)
    assert by_epochs["epochs"] == 1.0


def test_distributed_chief_and_worker_on_localhost(tmp_path):
    """keras-tuner's chief/worker mode: the chief runs the oracle, the worker the trials."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    run_dir = tmp_path / "tune"
    processes = {}
    for tuner_id in ("chief", "tuner0"):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "tf_lth.tune", *BASE, "--tuner=random", "--max_trials=2",
             f"--run_dir={run_dir}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = {}
    try:
        for tuner_id, process in processes.items():
            outputs[tuner_id] = process.communicate(timeout=150)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for tuner_id, process in processes.items():
        assert process.returncode == 0, (tuner_id, outputs[tuner_id][1][-2000:])
    assert "trial 1:" in outputs["tuner0"][0]  # the worker ran both trials
    assert "[trial" not in outputs["chief"][0]  # the chief only ran the oracle
    summary = json.loads((run_dir / "tuning_summary.json").read_text())
    assert [trial["status"] for trial in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    assert (run_dir / "best.flags").exists()


def test_tune_preset_parses_with_the_tune_flags():
    from tf_lth.cli import flags as tf_lth_flags
    from tf_lth.cli import tune  # noqa: F401  (defines --tuner, --max_trials)

    flags = tf_lth_flags.FLAGS
    flags.unparse_flags()
    try:
        flags(["tune", f"--flagfile={ROOT}/configs/tune/mnist_fc_dense.flags",
               "--run_dir=/tmp/unused"])
        config = tf_lth_flags.to_config()
        assert (config.experiment, config.arch, config.dataset) == ("dense", "fc", "mnist")
        assert (flags.tuner, flags.max_trials) == ("random", 4)
    finally:
        flags.unparse_flags()
