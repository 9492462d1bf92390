"""Run-directory bookkeeping shared by every experiment: create, resume, summarise.

Experiment layer of tf_lth (DESIGN.md, "Run directory").
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from tf_lth import config as config_lib
from tf_lth import run_files
from tf_lth.config import ConfigError

SUMMARY_COLUMNS = [
    "round", "prune_level", "weights_remaining", "test_accuracy", "val_accuracy", "test_loss",
    "best_iteration", "best_val_loss", "best_test_accuracy", "iterations", "seconds",
    "examples_per_second",
]


def prepare(config, flags_text: str) -> None:
    """Checks the run directory against --resume/--overwrite; writes flags.txt first.

    Raises ConfigError (nothing written) for an existing run without --resume or
    --overwrite, a resume whose identity flags differ, or an unwritable folder.
    """
    run_dir = config.run_dir
    config_path = os.path.join(run_dir, "config.json")
    exists = os.path.isdir(run_dir) and any(
        not name.startswith(".") for name in os.listdir(run_dir)
    )
    if exists and not (config.resume or config.overwrite):
        raise ConfigError(
            f"--run_dir={run_dir!r} already holds a run; allowed: --resume to continue it, "
            "--overwrite to replace it, or a new folder."
        )
    if exists and config.resume:
        if not os.path.exists(config_path):
            raise ConfigError(
                f"--resume: {config_path} is missing, so {run_dir!r} is not a tf_lth run; "
                "allowed: the run_dir of an earlier tf_lth run."
            )
        try:
            previous = run_files.read_json(config_path)
        except run_files.CorruptFileError as error:
            raise ConfigError(f"--resume: {error}") from None
        current = config_lib.to_dict(config)
        for key in config_lib.RUN_IDENTITY:
            if _normalise(previous.get(key)) != _normalise(current.get(key)):
                raise ConfigError(
                    f"--resume: --{key}={current.get(key)!r} differs from the run's "
                    f"{previous.get(key)!r}; allowed: the run's own flags (see {run_dir}/flags.txt)."
                )
    from trainers.loop import path_exists_writable

    parent = os.path.dirname(os.path.abspath(run_dir))
    problem = path_exists_writable(parent if not os.path.isdir(run_dir) else run_dir)
    if problem:
        raise ConfigError(f"--run_dir={run_dir!r} is not writable ({problem}).")
    if exists and config.overwrite:
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    if not (exists and config.resume):
        run_files.write_text(os.path.join(run_dir, "flags.txt"), flags_text)
        run_files.write_json(config_path, config_lib.to_dict(config))


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in sorted(value.items())}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def write_results(run_dir: str, config, rounds: list, masks: list | None = None,
                  extra: dict | None = None) -> None:
    """results.json and summary.csv (SPEC.md section 9)."""
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


def kernels_from_state(state: dict, layer_names: list) -> dict:
    """{layer name: kernel array} from a saved model state (variable path -> array)."""
    kernels = {}
    for name in layer_names:
        key = f"{name}/kernel"
        matches = [path for path in state if path.endswith(key)]
        if not matches:
            raise run_files.CorruptFileError(f"saved weights have no kernel for layer {name}")
        kernels[name] = np.asarray(state[matches[0]])
    return kernels
