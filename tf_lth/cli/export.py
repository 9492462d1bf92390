"""`python -m tf_lth.export --run_dir=RUN_DIR [--round=N] --formats=...`: ship a finished run.

CLI layer (composition root): loads a completed round of a run without retraining, bakes
its masks into plain Keras layers, and writes RUN_DIR/export/ (SavedModel, LiteRT files
and export_report.json). Exit status: 0 all checks passed, 1 a parity or accuracy check
failed, 2 bad input or a run directory in use by another live process (its pid named).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_lth.core.choices import EXPORT_FORMATS as ALL_FORMATS  # noqa: E402 (no TensorFlow)
from tf_lth.core.choices import SUPERMASK_EXPORTS  # noqa: E402


class ExportInputError(ValueError):
    """Bad input to the export command; the message names the flag or file."""


def _check_request(run_dir: str, round_index, formats: list) -> None:
    if not formats:
        raise ExportInputError(f"--formats is empty; allowed: {', '.join(ALL_FORMATS)}.")
    for name in formats:
        if name not in ALL_FORMATS:
            raise ExportInputError(
                f"--formats={','.join(formats)!r}: {name!r} is not allowed; allowed: "
                f"{', '.join(ALL_FORMATS)}."
            )
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise ExportInputError(
            f"--run_dir={run_dir!r} is not a tf_lth run (no config.json); allowed: the "
            "run_dir of a tf_lth.train run."
        )


def load_round_model(run_dir: str, round_index: int | None = None):
    """(config, data, masked model with the round's final weights, round index)."""
    from tf_lth.core import config as config_lib
    from tf_lth.core import data as data_lib
    from tf_lth.core import models, run_files

    stored = run_files.read_json(os.path.join(run_dir, "config.json"))
    stored["prune_rates"] = ",".join(f"{k}={v}" for k, v in stored["prune_rates"].items())
    stored.update(resume=False, overwrite=False, export=())
    config = config_lib.make(**stored)
    if config.experiment in ("untrained_supermask", "tfmot_baseline"):
        raise ExportInputError(
            f"--run_dir={run_dir!r} is a {config.experiment} run; allowed: a dense, lottery or "
            "learned_supermask run (its rounds hold trained weights)."
        )
    completed = run_files.completed_rounds(run_dir)
    if not completed:
        raise ExportInputError(
            f"--run_dir={run_dir!r} has no completed round (no round_*/DONE); allowed: a run "
            "with at least one finished round."
        )
    if round_index is None:
        round_index = completed[-1]
    elif round_index not in completed:
        raise ExportInputError(
            f"--round={round_index} is not a completed round of {run_dir!r}; allowed: "
            f"{', '.join(map(str, completed))}."
        )
    data = data_lib.for_config(config)
    model = models.for_config(config, data)()
    folder = run_files.round_dir(run_dir, round_index)
    models.set_model_state(model, run_files.load_arrays(os.path.join(folder, "final.npz")),
                    source=os.path.join(folder, "final.npz"))
    return config, data, model, round_index


def export_run(run_dir: str, formats: list, round_index: int | None = None,
               supermask_export: str = "expected", seed: int = 0, log=print) -> int:
    """Exports a run's round; returns the exit status (0 passed, 1 a check failed)."""
    from export import export_all

    from tf_lth.core import run_lock

    config, data, model, round_index = load_round_model(run_dir, round_index)
    run_lock.acquire(run_dir)  # one writer per run directory (a no-op inside tf_lth.train)
    out_dir = os.path.join(run_dir, "export")
    log(f"exporting round {round_index} of {run_dir} as {', '.join(formats)}")
    report = export_all(
        model, out_dir, formats, data.test_images, data.test_labels, data.train_images,
        data.image_shape, supermask_export=supermask_export, seed=seed,
    )
    for name, entry in report["formats"].items():
        latency = entry.get("latency_per_example_s")
        log(f"  {name:20s} {entry['size_bytes'] / 1024:9.1f} KiB  "
            f"weights {100 * entry['weights_remaining']:6.2f}%  "
            f"max|dlogit| {entry['max_abs_logit_diff']:.2e}  "
            f"accuracy {100 * entry['test_accuracy']:6.2f}%  "
            f"latency {'-' if latency is None else f'{1e6 * latency:.1f} us'}  "
            f"{'ok' if entry['passed'] else 'FAILED'}")
    log(f"report: {os.path.join(out_dir, 'export_report.json')}")
    return 0 if report["passed_all"] else 1


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tf_lth.export", description=__doc__)
    parser.add_argument("--run_dir", required=True, help="a finished tf_lth run")
    parser.add_argument("--round", type=int, default=None,
                        help="round to export (default: the last completed)")
    parser.add_argument("--formats", default="saved_model,tflite,tflite_sparse,tflite_int8",
                        help=f"comma-separated: {', '.join(ALL_FORMATS)}")
    parser.add_argument("--supermask_export", default="expected", choices=SUPERMASK_EXPORTS,
                        help="learned supermasks: the expected mask or one recorded sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of --supermask_export=sample")

    def error(message):
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)

    parser.error = error
    arguments = parser.parse_args(argv)
    formats = [item for item in arguments.formats.split(",") if item]
    from tf_lth.core.config import ConfigError
    from tf_lth.core.data import DataError
    from tf_lth.core.run_files import CorruptFileError

    try:
        _check_request(arguments.run_dir, arguments.round, formats)
        from tf_lth.core import run_lock

        run_lock.check_free(arguments.run_dir)  # refused at once while a run writes there
        return export_run(arguments.run_dir, formats, arguments.round,
                          arguments.supermask_export, arguments.seed)
    except (ExportInputError, ConfigError, DataError, CorruptFileError) as error_value:
        sys.stderr.write(f"error: {error_value}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
