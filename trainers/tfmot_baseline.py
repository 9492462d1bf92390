"""The tfmot gradual-magnitude-pruning baseline (`--experiment=tfmot_baseline`).

Experiment layer of tf_lth. tensorflow-model-optimization supports only legacy Keras 2
(tf_keras), and importing it switches `tf.keras` to Keras 2 for the whole process, so this
module never imports it: every target sparsity is trained by `trainers/tfmot_worker.py` in
its own subprocess with `TF_USE_LEGACY_KERAS=1`.

The targets are the sparsities of the architecture's lottery schedule (docs/semantics.md, Pruning schedule):
level r keeps `kept_count(size, rate, r)` weights of each layer, so `--rounds=7` on fc
means 21.1% kept overall. Without `--one_shot` there is one run per level 1..rounds; with
it, only the level of `--rounds`. Each level trains from the seeded Glorot-normal
initialisation (the same values as a lottery run with the same seed) for one round's
budget (`--epochs`/`--iterations`, `--batch_size`, `--optimizer`, `--learning_rate`),
pruning with `prune_low_magnitude` and a PolynomialDecay schedule inside that budget.

With `--final_sparsity` (uniform mode) it trains one run instead, into round_000 (round and
prune_level 0), with the schedule of `--experiment=gradual` on the same flags: every
kernel, the output layer's too, wrapped with one PolynomialDecay from `--initial_sparsity`
to `--final_sparsity` over `tf_lth.core.config.gradual_window`, and
round_000/mask_updates.jsonl in the native format (the kept counts after each pruning
step), so the two runs can be compared step by step (tests/test_sparse_cli_tfmot.py).

A level is complete when its `round_NNN/DONE` marker exists, so running again resumes.
SIGTERM and SIGINT are passed on to the worker, which stops at its next training step; the
interrupted level has no DONE marker, so `--resume` trains it again from its start.
results.json and summary.csv have the lottery runs' format (docs/architecture.md, Data flow of a lottery run), with
`round` and `prune_level` equal to the level, so `tf_lth.plot` draws both side by side.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tf_lth.core import config as config_lib
from tf_lth.core import preemption, run_files
from tf_lth.core.config import ConfigError
from tf_lth.core.data import DataError
from trainers import runs

WORKER = "trainers.tfmot_worker"  # run with python -m, from the repository root
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The worker's exit statuses for bad flags and unreadable data (one "error: ..." line).
EXIT_CONFIG, EXIT_DATA = 2, 6


class BaselineError(RuntimeError):
    """The tfmot worker subprocess failed; the message holds its last error line."""


def levels(config) -> list:
    """The prune levels (round counts of the arch's schedule) the baseline trains; [0], one
    run with one uniform gradual schedule, with --final_sparsity."""
    if config.final_sparsity is not None:
        return [0]
    if config.rounds < 1:
        raise ConfigError(
            f"--rounds={config.rounds} gives no target sparsity; allowed: --rounds >= 1 with "
            "--experiment=tfmot_baseline (level r keeps the weights of r lottery rounds)."
        )
    return [config.rounds] if config.one_shot else list(range(1, config.rounds + 1))


def worker_env() -> dict:
    """The worker's environment: legacy Keras 2, tf_lth importable, quiet TensorFlow."""
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def run_level(config, level: int, log=print, timeout: float | None = None) -> dict:
    """Trains one target sparsity in a subprocess; returns its record (written, DONE)."""
    folder = run_files.round_dir(config.run_dir, level)
    os.makedirs(folder, exist_ok=True)
    spec_path = os.path.join(folder, "worker_spec.json")
    run_files.write_json(spec_path, {"config": config_lib.to_dict(config), "level": level,
                                     "out_dir": folder})
    stderr_path = os.path.join(folder, "worker.log")
    _stop_if_requested(level)
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", WORKER, spec_path], stdout=subprocess.PIPE, stderr=stderr,
            env=worker_env(), cwd=ROOT, text=True,
        )
        # SIGTERM/SIGINT reach the worker too; it stops at its next step and the level is
        # trained again by --resume (DONE is only written below, after it succeeded).
        with preemption.forwarding(process.pid):
            try:
                for line in process.stdout:
                    log(line.rstrip("\n"))
                status = process.wait(timeout=timeout)
            except BaseException:
                process.kill()
                process.wait()
                raise
    if status != 0:
        _stop_if_requested(level)
        message = _last_error(stderr_path) or f"exit status {status}, see {stderr_path}"
        if status == EXIT_CONFIG:
            raise ConfigError(message)
        if status == EXIT_DATA:
            raise DataError(message)
        raise BaselineError(f"tfmot baseline level {level}: {message}")
    record = run_files.read_json(os.path.join(folder, "record.json"))
    run_files.mark_done(config.run_dir, level)  # written last: the level is complete
    return record


def _stop_if_requested(level: int) -> None:
    """Raises Preempted when SIGTERM or SIGINT arrived: the level (not DONE) is redone."""
    signum = preemption.requested()
    if signum:
        raise preemption.Preempted(
            signum, where=f"level {level}, which --resume trains again from its start")


def _last_error(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            lines = [line.strip() for line in stream if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return lines[-1] if lines else ""


def run_baseline(config, log=print) -> list:
    """Trains every pending level; writes results.json and summary.csv; returns records."""
    if config.strategy != "default":
        raise ConfigError(
            f"--strategy={config.strategy!r} is not supported by --experiment=tfmot_baseline; "
            "allowed: default (tfmot's legacy Keras 2 loop runs on one device)."
        )
    log(f"run directory: {config.run_dir}")
    for level in levels(config):
        if run_files.is_done(config.run_dir, level):
            log(f"level {level}: already complete, skipped")
            continue
        run_level(config, level, log=log)
        runs.write_results(config.run_dir, config, runs.round_records(config.run_dir),
                           extra=_extra(config))
    records = runs.round_records(config.run_dir)
    runs.write_results(config.run_dir, config, records, extra=_extra(config))
    return records


def _extra(config) -> dict:
    targets = ("per-layer targets of the lottery schedule" if config.final_sparsity is None
               else f"every layer from sparsity {config.initial_sparsity} to "
                    f"{config.final_sparsity}, the schedule of --experiment=gradual")
    return {"baseline": {
        "method": f"tfmot.sparsity.keras.prune_low_magnitude, PolynomialDecay schedule, "
                  f"{targets}",
        "best": "lowest validation loss among evaluations at the target sparsity",
    }}
