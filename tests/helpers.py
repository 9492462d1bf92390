"""Helpers for tests that run the CLI in a subprocess."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(module, *args, timeout=600, env=None):
    """Runs `python -m module args` from the repository root; returns CompletedProcess."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def results(run_dir):
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
        return json.load(stream)
