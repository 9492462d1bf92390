"""Run-directory bookkeeping shared by every experiment: create, resume, summarise.

Experiment layer of tf_lth (docs/architecture.md, "Data flow of a lottery run").
"""

from __future__ import annotations

import os

from tf_lth.core import config as config_lib
from tf_lth.core import run_files, run_lock
from tf_lth.core.config import ConfigError

SUMMARY_COLUMNS = [
    "round", "prune_level", "weights_remaining", "test_accuracy", "val_accuracy", "test_loss",
    "best_iteration", "best_val_loss", "best_test_accuracy", "iterations", "seconds",
    "examples_per_second",
]


def prepare(config, flags_text: str, lock: bool = True) -> None:
    """Checks the run directory against --resume/--overwrite, takes its lock, writes
    config.json and flags.txt.

    Raises ConfigError (nothing written) for an existing run without --resume or
    --overwrite, a resume whose identity flags differ, or an unwritable folder; and
    `run_lock.RunInUseError` (a ConfigError naming the pid) while another process holds the
    run directory. With `lock` (all but a multi-worker run's non-chief workers, which share
    the chief's folder) the lock is held until this process ends or releases it; then the
    temporaries that interrupted writes left behind are removed.
    """
    run_dir = config.run_dir
    config_path = os.path.join(run_dir, "config.json")
    exists = run_files.check_run_dir(config)  # also probes that run_dir is writable
    if lock:
        held_before = run_lock.holds(run_dir)
        run_lock.acquire(run_dir)  # creates the folder and RUN_DIR/.lock
        try:  # again, now that no other process can be writing it
            exists = run_files.check_run_dir(config)
        except ConfigError:
            if not held_before:
                run_lock.release(run_dir)
            raise
        run_files.remove_temporaries(run_dir)
    if exists and config.overwrite:
        run_files.remove_directory(run_dir)  # renamed away first: a kill leaves no half run
        if lock:
            os.makedirs(run_dir, exist_ok=True)
            run_lock.acquire(run_dir, renew=True)  # the old lock file went with the old run
    os.makedirs(run_dir, exist_ok=True)
    if not (exists and config.resume):
        # config.json first: a folder holding it is a run that --resume/--overwrite accept
        run_files.write_json(config_path, config_lib.to_dict(config))
    if not (exists and config.resume) or not os.path.exists(os.path.join(run_dir, "flags.txt")):
        run_files.write_text(os.path.join(run_dir, "flags.txt"), flags_text)


def write_results(run_dir: str, config, rounds: list, masks: list | None = None,
                  extra: dict | None = None) -> None:
    """results.json and summary.csv (docs/architecture.md, Data flow of a lottery run)."""
    results = {"config": config_lib.to_dict(config), "rounds": rounds}
    if masks is not None:
        results["masks"] = masks
    if extra:
        results.update(extra)
    run_files.write_json(os.path.join(run_dir, "results.json"), results)
    if masks is not None and not rounds:
        columns = ["criterion", "weight_treatment", "prune_level", "weights_remaining",
                   "test_accuracy"]
        run_files.write_csv(os.path.join(run_dir, "summary.csv"), masks, columns)
        return
    rows = []
    for record in rounds:
        row = {key: record.get(key) for key in SUMMARY_COLUMNS}
        best = record.get("best") or {}
        row.update(best_iteration=best.get("iteration"), best_val_loss=best.get("val_loss"),
                   best_test_accuracy=best.get("test_accuracy"))
        rows.append(row)
    columns = list(SUMMARY_COLUMNS)
    if rounds and "test_accuracy_expected_mask" in rounds[0]:
        columns += ["test_accuracy_expected_mask", "test_accuracy_sampled"]
        for row, record in zip(rows, rounds):
            row["test_accuracy_expected_mask"] = record["test_accuracy_expected_mask"]
            row["test_accuracy_sampled"] = record["test_accuracy_sampled"]
    run_files.write_csv(os.path.join(run_dir, "summary.csv"), rows, columns)


def round_records(run_dir: str) -> list:
    """The record.json of every completed round, in order."""
    return [
        run_files.read_json(os.path.join(run_files.round_dir(run_dir, index), "record.json"))
        for index in run_files.completed_rounds(run_dir)
    ]


def kernels_from_state(model, state: dict, what: str = "saved weights") -> dict:
    """{kernel key: kernel array} of `model`'s masked kernels in a saved model state
    (`tf_lth.core.models.model_state`: variable path -> array). CorruptFileError names `what`
    when a kernel is missing."""
    from tf_lth.core.ticket import kernel_values  # Keras: not for the tfmot baseline's parent

    return kernel_values(model, state, model.variables, what=what,
                         error=run_files.CorruptFileError)
