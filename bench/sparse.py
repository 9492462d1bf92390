"""`make bench`, section sparse: the cost of sparse training through the command users run
(docs/sparse_training.md).

`python -m tf_lth.train` end to end, one fresh run directory each, alternated: native
gradual magnitude pruning (`--experiment=gradual`) against tfmot's gradual pruning in its
Keras 2 subprocess (`--experiment=tfmot_baseline --final_sparsity`, what a tfmot user runs
today), and RigL, SET and static sparse training against dense training in the same loop.
Two figures per run: the training loop's examples/s from the round's record (start-up
excluded) and the whole command's wall seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARSITY = 0.95
RUNS = {
    "gradual": ["--experiment=gradual", f"--final_sparsity={SPARSITY}"],
    "tfmot_gradual": ["--experiment=tfmot_baseline", f"--final_sparsity={SPARSITY}"],
    "rigl": ["--experiment=dynamic_sparse", "--sparse_method=rigl",
             f"--final_sparsity={SPARSITY}"],
    "set": ["--experiment=dynamic_sparse", "--sparse_method=set",
            f"--final_sparsity={SPARSITY}"],
    "static": ["--experiment=dynamic_sparse", "--sparse_method=static",
               f"--final_sparsity={SPARSITY}"],
    "dense": ["--experiment=dense"],
}
LABELS = {
    "gradual": "tf_lth CLI: --experiment=gradual (native, Keras 3)",
    "tfmot_gradual": "tfmot prune_low_magnitude, Keras 2 subprocess (--experiment=tfmot_baseline)",
    "rigl": "tf_lth CLI: --experiment=dynamic_sparse --sparse_method=rigl",
    "set": "tf_lth CLI: --sparse_method=set",
    "static": "tf_lth CLI: --sparse_method=static",
    "dense": "tf_lth CLI: --experiment=dense (same loop, no mask updates)",
}


def _cli_run(flags: list, data_dir: str | None, seconds_log: list):
    """A closure running the CLI once; returns (examples, loop seconds) and logs wall time."""

    def measure():
        with tempfile.TemporaryDirectory(prefix="tf_lth-bench-sparse-") as folder:
            run_dir = os.path.join(folder, "run")
            command = [sys.executable, "-m", "tf_lth.train", f"--run_dir={run_dir}",
                       "--noprogress", *flags]
            command.append(f"--data_dir={data_dir}" if data_dir else "--dataset=synthetic_mnist")
            started = time.perf_counter()
            finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            seconds_log.append(time.perf_counter() - started)
            if finished.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}):\n"
                                   f"{finished.stderr[-2000:]}")
            with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
                record = json.load(stream)["rounds"][0]
        return record["examples_per_second"] * record["seconds"], record["seconds"]

    return measure


def sparse_training_cost(data_dir: str | None, repeats: int, quick: bool, alternate) -> dict:
    """Examples/s of each sparse-training command and the ratios that matter."""
    length = ["--iterations=300"] if quick else ["--epochs=1"]
    common = ["--arch=fc", "--batch_size=60", "--seed=0", "--eval_every=1000000", *length]
    walls = {name: [] for name in RUNS}
    measures = {name: _cli_run(flags + common, data_dir, walls[name])
                for name, flags in RUNS.items()}
    rates = alternate(measures, repeats)
    speed = {name: entry["examples_per_second"] for name, entry in rates.items()}
    return {
        "sparsity": SPARSITY, "length": " ".join(length), "rates": rates,
        "command_seconds": {name: sum(v) / len(v) for name, v in walls.items() if v},
        "gradual_vs_tfmot": speed["gradual"] / speed["tfmot_gradual"],
        "gradual_vs_tfmot_command": (sum(walls["tfmot_gradual"]) / len(walls["tfmot_gradual"]))
        / (sum(walls["gradual"]) / len(walls["gradual"])),
        "of_dense": {name: speed[name] / speed["dense"] for name in ("gradual", "rigl", "set",
                                                                     "static")},
    }


def rows(sparse: dict) -> list:
    """(what, value, reference, ratio, target) rows for bench's table."""
    speed = {name: entry["examples_per_second"] for name, entry in sparse["rates"].items()}
    walls = sparse["command_seconds"]
    ratio = sparse["gradual_vs_tfmot"]
    found = [(f"sparse training, fc at {100 * sparse['sparsity']:g}% ({sparse['length']}): "
              "native gradual vs tfmot, training loop",
              f"{speed['gradual']:,.0f} ex/s", f"{speed['tfmot_gradual']:,.0f} ex/s "
              f"({LABELS['tfmot_gradual']})", f"{ratio:.2f}x",
              f"{'ok' if ratio >= 3 else 'MISSED'} (>= 3x)"),
             ("  the same, whole command (start-up included)", f"{walls['gradual']:.1f} s",
              f"{walls['tfmot_gradual']:.1f} s", f"{sparse['gradual_vs_tfmot_command']:.2f}x",
              "")]
    for name in ("rigl", "set", "static", "gradual"):
        found.append((f"  {LABELS[name]} against dense", f"{speed[name]:,.0f} ex/s",
                      f"{speed['dense']:,.0f} ex/s", f"{sparse['of_dense'][name]:.2f}x", ""))
    return found
