"""`python -m tf_lth.train --flagfile=configs/mnist_fc_lottery.flags`: the main command.

CLI layer (composition root): flags -> Config -> experiment -> export. Bad input exits
with status 2 and one line, before anything is trained or written.

Exit statuses: 0 done; 2 bad input, or the run directory is in use by another live
process (its pid is named); 3 the loss became NaN or infinite, or the disk is full (the
file is named; every file already written is whole, and `--resume` continues once there is
space); 4 another write error; 130 / 143 stopped by SIGINT / SIGTERM after an in-round
checkpoint (`--resume` continues from it; a second signal exits at once).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from tf_lth.cli import flags as tf_lth_flags  # noqa: E402

tf_lth_flags.define_flags()
PLOTTED = ("lottery", "untrained_supermask")  # experiments whose run draws its figure


def main(argv) -> int:
    if len(argv) > 1:
        tf_lth_flags.fail(f"unexpected arguments {argv[1:]}; allowed: --flag=value only.")
    from tf_lth.core.config import ConfigError
    from tf_lth.core.data import DataError
    from tf_lth.core import preemption, run_files, run_lock
    from tf_lth.core.run_files import CorruptFileError

    preemption.install()  # SIGTERM/SIGINT: checkpoint at the next compiled-call boundary
    try:
        config = tf_lth_flags.to_config()
        # The run directory and --source_run are checked before TensorFlow loads.
        if config.strategy != "multi_worker":  # non-chief workers share the chief's folder
            run_lock.check_free(config.run_dir)
        run_files.check_run_dir(config)
        run_files.check_source_run(config)
    except ConfigError as error:
        tf_lth_flags.fail(str(error))
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    import trainers
    from tf_lth.core import data as data_lib
    from tf_lth.core import models
    from tf_lth.core.distribute import is_chief, make_strategy
    from trainers import runs
    from trainers.loop import NonFiniteLossError

    try:
        if config.experiment != "tfmot_baseline":
            data = data_lib.for_config(config)
            models.check_compatible(config, data)
        else:
            data = None
        chief = config.strategy != "multi_worker" or is_chief(make_strategy(config.strategy))
        runs.prepare(config, tf_lth_flags.own_flags_text(), lock=chief)
    except (ConfigError, DataError) as error:
        tf_lth_flags.fail(str(error))
    except OSError as error:
        if run_files.disk_full(error):
            return _disk_full(config.run_dir, error)
        tf_lth_flags.fail(f"--run_dir={config.run_dir!r} cannot be written "
                          f"({error.strerror or error}).")
    try:
        signum = preemption.requested()
        if signum:
            raise preemption.Preempted(signum, where="the start of training")
        trainers.run(config, data=data)
        if chief and config.experiment in PLOTTED:
            _plot(config)
    except preemption.Preempted as error:
        sys.stderr.write(f"{error}\n")  # the one line: where it stopped, how to go on
        _exit_now(error.exit_code)
    except (ConfigError, DataError, CorruptFileError) as error:
        tf_lth_flags.fail(str(error))
    except NonFiniteLossError as error:
        sys.stderr.write(f"error: {error}; completed rounds are kept in {config.run_dir}\n")
        return 3
    except Exception as error:  # OSError, or TensorFlow's error for a checkpoint or event file
        if run_files.disk_full(error):
            return _disk_full(config.run_dir, error)
        if not isinstance(error, OSError):
            raise
        sys.stderr.write(f"error: writing to --run_dir={config.run_dir!r} failed: "
                         f"{error.strerror or error}\n")
        return 4
    if config.export:
        from tf_lth.cli import export as export_cli

        signum = preemption.requested()
        if signum:  # every round is done; only the export is left
            sys.stderr.write(f"{preemption.Preempted(signum, where='the end of training')} "
                             f"--export={','.join(config.export)} to export\n")
            return 128 + signum
        try:
            return export_cli.export_run(config.run_dir, list(config.export),
                                         supermask_export=config.supermask_export)
        except ConfigError as error:
            tf_lth_flags.fail(str(error))
    return 0


def _plot(config) -> None:
    """The run's figure in `RUN_DIR/plots/`; a plot must never lose a finished run."""
    try:
        from tf_lth.cli import plot

        plot.plot_runs([config.run_dir], os.path.join(config.run_dir, "plots",
                                                        f"{config.experiment}.png"))
    except Exception as error:
        print(f"plot skipped: {type(error).__name__}: {error}")


def _exit_now(status: int) -> None:
    """Exits without the interpreter's and TensorFlow's teardown, which takes a second or
    more on a busy machine, when a cluster's grace period after SIGTERM may be short. The
    checkpoint and every run file are written and closed by now."""
    from tf_lth.core import run_lock

    run_lock.release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _disk_full(run_dir: str, error: BaseException) -> int:
    """One line naming the file and the cause, temporaries removed; exit status 3."""
    from tf_lth.core import run_files, run_lock

    path, cause = run_files.disk_full(error)
    if run_lock.holds(run_dir):  # no other process writes here: its temporaries are ours
        run_files.remove_temporaries(run_dir)
    sys.stderr.write(f"error: disk full: writing {path or 'a file in ' + repr(run_dir)} failed "
                     f"({cause}); the files already in {run_dir} are whole: free space, then "
                     "run again with --resume\n")
    return 3


def run() -> None:
    app.run(main, flags_parser=tf_lth_flags.parse_flags)


if __name__ == "__main__":
    run()
