"""Exporting finished runs: train --export, tf_lth.export, saved_model_cli, the examples."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, run_cli

FORMATS = "saved_model,tflite,tflite_sparse,tflite_int8,tflite_sparse_int8"


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("export") / "run")
    process = run_cli("tf_lth.train", "--experiment=lottery", "--dataset=synthetic_mnist",
                      "--iterations=200", "--eval_every=100", "--rounds=2", "--one_shot",
                      "--prune_rates=dense=0.9,output=0.5", f"--export={FORMATS}",
                      f"--run_dir={run_dir}")
    assert process.returncode == 0, process.stderr[-3000:]
    return run_dir


def test_train_export_writes_every_format_and_a_passing_report(exported_run):
    export_dir = os.path.join(exported_run, "export")
    report = json.load(open(os.path.join(export_dir, "export_report.json")))
    assert set(report["formats"]) == set(FORMATS.split(","))
    assert report["passed_all"] is True
    # one-shot to the level of 2 rounds at 90% per round: about 1% of hidden weights kept
    assert report["weights_remaining"] < 0.05
    for name, entry in report["formats"].items():
        path = os.path.join(export_dir, entry["file"])
        assert os.path.exists(path), name
        if not name.endswith("int8"):
            assert entry["max_abs_logit_diff"] <= 1e-4
    dense_size = report["formats"]["tflite"]["size_bytes"]
    assert report["formats"]["tflite_sparse"]["size_bytes"] < 0.2 * dense_size
    assert [layer["name"] for layer in report["layers"]] == ["dense_1", "dense_2", "output"]


def test_export_command_re_exports_a_chosen_round(exported_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(exported_run, copy)
    shutil.rmtree(os.path.join(copy, "export"))
    process = run_cli("tf_lth.export", f"--run_dir={copy}", "--round=0",
                      "--formats=saved_model,tflite")
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.load(open(os.path.join(copy, "export", "export_report.json")))
    assert report["weights_remaining"] == 1.0  # round 0 is the dense network


def test_saved_model_cli_lists_the_serving_signature(exported_run):
    tool = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable),
                                                           "saved_model_cli")
    process = subprocess.run([tool, "show", "--dir",
                              os.path.join(exported_run, "export", "saved_model"), "--all"],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "serving_default" in process.stdout
    assert "probabilities" in process.stdout and "logits" in process.stdout


@pytest.mark.parametrize("script", ["serve_saved_model.py", "keras_tfsmlayer.py",
                                    "run_tflite.py"])
def test_examples_classify_images_with_each_format(exported_run, tmp_path, script):
    images = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    path = str(tmp_path / "images.npy")
    np.save(path, images)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    environment.pop("PYTHONPATH", None)  # the examples need nothing of tf_lth
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script),
         f"--export_dir={os.path.join(exported_run, 'export')}", f"--images={path}"],
        capture_output=True, text=True, timeout=300, env=environment, cwd=str(tmp_path))
    assert process.returncode == 0, process.stderr[-3000:]
    if script == "run_tflite.py":
        assert process.stdout.count(".tflite") == 4
    else:
        assert "predictions" in process.stdout or "class" in process.stdout


def test_learned_supermask_exports_one_recorded_sample(tmp_path):
    run_dir = str(tmp_path / "supermask")
    process = run_cli("tf_lth.train", "--experiment=learned_supermask",
                      "--dataset=synthetic_mnist", "--iterations=20", "--eval_every=10",
                      "--eval_samples=2", f"--run_dir={run_dir}")
    assert process.returncode == 0, process.stderr[-3000:]
    process = run_cli("tf_lth.export", f"--run_dir={run_dir}", "--formats=tflite",
                      "--supermask_export=sample", "--seed=5")
    assert process.returncode == 0, process.stderr[-3000:]
    report = json.load(open(os.path.join(run_dir, "export", "export_report.json")))
    assert report["supermask_export"] == "sample" and report["seed"] == 5
    assert 0.2 < report["weights_remaining"] < 0.8  # a Bernoulli(~0.5) sample of the mask
