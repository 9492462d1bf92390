"""--experiment=tfmot_baseline: tfmot gradual pruning in a legacy-Keras subprocess.

The end-to-end test trains two levels of fc on synthetic_mnist (200 iterations each) and
checks the measured per-layer sparsity against the lottery schedule, the results.json and
summary.csv schema, resuming, and that the baseline starts from the same initial weights
as tf_lth's Keras 3 model with the same seed.
"""

import ast
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--experiment=tfmot_baseline", "--dataset=synthetic_mnist", "--arch=fc",
         "--iterations=200", "--eval_every=100", "--rounds=2", "--seed=3", "--noprogress"]
RECORD_FIELDS = {"round", "prune_level", "weights_remaining", "layers", "test_accuracy",
                 "val_accuracy", "test_loss", "best", "iterations", "seconds",
                 "examples_per_second"}


def _train(*arguments, timeout=150):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.run([sys.executable, "-m", "tf_lth.train", *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tfmot") / "run"
    result = _train(*FLAGS, f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_levels_keep_the_lottery_schedule_per_layer(baseline_run):
    from tf_lth.core import masks

    run_dir, _ = baseline_run
    with open(run_dir / "results.json") as stream:
        results = json.load(stream)
    rounds = results["rounds"]
    assert [record["round"] for record in rounds] == [1, 2]
    sizes = {"dense_1": 784 * 300, "dense_2": 300 * 100, "output": 100 * 10}
    rates = {"dense_1": 0.2, "dense_2": 0.2, "output": 0.1}
    for record in rounds:
        level = record["round"]
        assert record["prune_level"] == level
        assert RECORD_FIELDS <= set(record), RECORD_FIELDS - set(record)
        assert set(record["best"]) >= {"iteration", "val_loss", "test_accuracy"}
        assert record["iterations"] == 200
        kept_total = 0
        for name, size in sizes.items():
            kept = masks.kept_count(size, rates[name], level)
            kept_total += kept
            # measured from the stripped kernels (nonzero weights)
            assert abs(record["layers"][name] - kept / size) <= 0.01 * kept / size, name
        assert abs(record["weights_remaining"] - kept_total / sum(sizes.values())) < 0.01
        # "best" is chosen among evaluations at the target sparsity only
        assert record["best"]["iteration"] >= record["pruning_schedule"]["end_step"]
        assert record["test_accuracy"] > 0.5  # synthetic_mnist is easy
    # level 2 of fc keeps 64.06% (0.8^2 of hidden, 0.9^2 of output weights)
    assert abs(rounds[1]["weights_remaining"] - 0.6406) < 0.001


def test_summary_matches_lottery_runs_and_files_are_complete(baseline_run):
    from trainers import runs

    run_dir, _ = baseline_run
    with open(run_dir / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == runs.SUMMARY_COLUMNS
    assert [int(row["round"]) for row in rows] == [1, 2]
    for level in (1, 2):
        folder = run_dir / f"round_{level:03d}"
        for name in ("DONE", "record.json", "metrics.jsonl", "masks.npz", "final.npz",
                     "initial.npz"):
            assert (folder / name).exists(), name
        with np.load(folder / "masks.npz") as archive:
            assert set(archive.files) == {"dense_1", "dense_2", "output"}


def test_initial_weights_equal_the_keras3_model_with_the_same_seed(baseline_run):
    from tf_lth.core import models
    from tf_lth.core.layers import masked_layers

    run_dir, _ = baseline_run
    model = models.build("fc", (28, 28, 1), 10, seed=3)
    with np.load(run_dir / "round_001" / "initial.npz") as archive:
        for layer in masked_layers(model):
            np.testing.assert_allclose(archive[layer.name], np.array(layer.kernel_variable),
                                       rtol=1e-6, atol=1e-7, err_msg=layer.name)


def test_resume_skips_finished_levels(baseline_run):
    run_dir, _ = baseline_run
    before = (run_dir / "results.json").read_text()
    result = _train(*FLAGS, f"--run_dir={run_dir}", "--resume", timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already complete, skipped") == 2
    after = json.loads((run_dir / "results.json").read_text())
    assert after["rounds"] == json.loads(before)["rounds"]


def test_plot_draws_the_baseline(baseline_run, tmp_path):
    from tf_lth.cli import plot

    run_dir, _ = baseline_run
    out = plot.plot_runs([str(run_dir)], str(tmp_path / "baseline.png"))
    from tests.helpers import assert_plot_shows_rounds

    assert_plot_shows_rounds(out, str(run_dir))


def test_rounds_zero_is_one_line_exit_2(tmp_path):
    flags = [flag for flag in FLAGS if not flag.startswith("--rounds")]
    result = _train(*flags, "--rounds=0", f"--run_dir={tmp_path / 'run'}", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --rounds=0")


def test_tfmot_is_never_imported_outside_the_worker():
    """Importing tfmot turns tf.keras into Keras 2 for a whole process (docs/architecture.md)."""
    import trainers.tfmot_baseline  # noqa: F401

    assert "tensorflow_model_optimization" not in sys.modules
    for folder in ("tf_lth", "trainers", "export"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py") or name == "tfmot_worker.py":
                continue
            with open(os.path.join(ROOT, folder, name)) as stream:
                tree = ast.parse(stream.read())
            for node in ast.walk(tree):
                modules = []
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""]
                for module in modules:
                    assert not module.startswith(("tensorflow_model_optimization", "tf_keras")), \
                        f"{folder}/{name} imports {module}"


@pytest.mark.parametrize("iterations", [8, 50, 200, 1832, 50000])
def test_pruning_window_ends_on_a_pruning_step_inside_the_budget(iterations):
    from trainers.tfmot_worker import pruning_window

    begin, end, frequency = pruning_window(iterations)
    assert 0 <= begin < end <= iterations
    assert (end - begin) % frequency == 0  # tfmot prunes to the final sparsity at end_step
    assert frequency <= 100


def test_worker_tables_match_the_keras3_side():
    """The worker cannot import tf_lth.core.models or trainers (Keras 3): its copies must agree."""
    from tf_lth.core import config as config_lib
    from tf_lth.core import data as data_lib
    from tf_lth.core import models
    from trainers import tfmot_worker

    assert tfmot_worker.CONV_ARCHS == models._CONV_ARCHS
    config = config_lib.make(experiment="tfmot_baseline", dataset="synthetic_mnist", seed=5,
                             rounds=1, run_dir="unused")
    ours = data_lib.for_config(config)
    theirs = tfmot_worker.load_data(config_lib.to_dict(config))
    for field in ("train_images", "train_labels", "val_images", "test_labels"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))


def test_preset_has_the_budget_of_the_reduced_lottery_preset():
    """The baseline preset pairs with mnist_fc_lottery_reduced: same data, budget and levels."""
    from tf_lth.cli import flags as tf_lth_flags

    tf_lth_flags.define_flags()
    flags = tf_lth_flags.FLAGS
    configs = {}
    try:
        for name in ("mnist_fc_tfmot_baseline", "mnist_fc_lottery_reduced"):
            flags.unparse_flags()
            flags(["train", f"--flagfile={ROOT}/configs/{name}.flags", "--run_dir=/tmp/unused"])
            configs[name] = tf_lth_flags.to_config()
    finally:
        flags.unparse_flags()
    baseline, lottery = configs.values()
    assert baseline.experiment == "tfmot_baseline"
    for field in ("dataset", "arch", "optimizer", "learning_rate", "batch_size", "epochs",
                  "iterations", "seed", "rounds", "prune_rates"):
        assert getattr(baseline, field) == getattr(lottery, field), field
