"""Every examples/api_*.py runs to the end (each checks its own claims and export parity).

They use real MNIST when TFDS_DATA_DIR holds it (as CI sets it) and synthetic data
otherwise. Each is a few hundred training steps; the global-vs-per-layer comparison runs
a two-round, 5%-of-an-epoch version of itself.
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "api_*.py")))
QUICK = {"api_global_vs_layer.py": ["--rounds=2", "--epochs=0.05"],
         "api_sparse_cnn.py": ["--steps=100"]}


def test_every_api_example_is_listed():
    names = {os.path.basename(path) for path in EXAMPLES}
    assert {"api_ticket_cnn.py", "api_ticket_subclassed.py", "api_ticket_nested.py",
            "api_ticket_conv1d.py", "api_supermask.py", "api_prune_and_rewind.py",
            "api_global_vs_layer.py", "api_sparse_cnn.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path, tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    command = [sys.executable, path, f"--out={tmp_path}", *QUICK.get(os.path.basename(path), [])]
    result = subprocess.run(command, cwd=os.path.join(ROOT, "examples"), env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if os.path.basename(path) != "api_global_vs_layer.py":
        assert "export: SavedModel max|diff|" in result.stdout


def test_sparse_example_runs_rigl_too(tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    command = [sys.executable, os.path.join(ROOT, "examples", "api_sparse_cnn.py"),
               f"--out={tmp_path}", "--steps=60", "--method=rigl"]
    result = subprocess.run(command, cwd=os.path.join(ROOT, "examples"), env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sparsity 80.0% (target 80%)" in result.stdout
