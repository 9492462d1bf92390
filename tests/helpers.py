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


def assert_plot_shows_rounds(png_path, run_dir):
    """The figure is a drawn image, and its data are the run's pruned rounds: weights
    remaining (%) against test accuracy at the best validation loss (%), from results.json."""
    import numpy as np
    from matplotlib.image import imread

    from tf_lth.cli import plot

    image = imread(png_path)[..., :3]
    assert image.shape[0] > 200 and image.shape[1] > 300, image.shape
    assert (image.min(axis=-1) < 0.9).mean() > 0.01, f"{png_path} is (almost) blank"
    run = results(run_dir)
    pruned = sorted((r for r in run["rounds"] if r["weights_remaining"] < 1.0),
                    key=lambda r: -r["weights_remaining"])
    series, _ = plot.run_series([run])
    line = series[0]
    np.testing.assert_allclose(line.x, [100 * r["weights_remaining"] for r in pruned])
    np.testing.assert_allclose(line.y, [100 * r["best"]["test_accuracy"] for r in pruned])


def snapshot(folder):
    """Every path under `folder` with its bytes and mtime (dot files included)."""
    state = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as stream:
                state[os.path.relpath(path, folder)] = (stream.read(), os.stat(path).st_mtime_ns)
    return state


def metrics_lines(run_dir, round_index):
    """Evaluations a run has recorded in round `round_index` so far (0 before any)."""
    path = os.path.join(run_dir, f"round_{round_index:03d}", "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as stream:
        return sum(1 for line in stream if line.strip())


def mid_round_2(run_dir):
    """Round 1 done and round 2 evaluated at iteration 25 of 200."""
    return (os.path.exists(os.path.join(run_dir, "round_001", "DONE"))
            and metrics_lines(run_dir, 2) >= 2)


def sigterm_when(command, cwd, env, ready, deadline_s=400):
    """Starts `command` and sends it SIGTERM once `ready()` is true; returns (exit status,
    output). Fails if the process ends first or `deadline_s` passes."""
    import signal
    import time

    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    deadline = time.time() + deadline_s
    try:
        while not ready():
            assert process.poll() is None, "the run ended before the signal"
            assert time.time() < deadline, "the signal point was never reached"
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
    return process.returncode, output
