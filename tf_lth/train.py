"""`python -m tf_lth.train --flagfile=configs/mnist_fc_lottery.flags`: the main command.

CLI layer (composition root): flags -> Config -> experiment -> export. Bad input exits
with status 2 and one line, before anything is trained or written.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from tf_lth import flags as tf_lth_flags  # noqa: E402

tf_lth_flags.define_flags()


def main(argv) -> int:
    if len(argv) > 1:
        tf_lth_flags.fail(f"unexpected arguments {argv[1:]}; allowed: --flag=value only.")
    from tf_lth.config import ConfigError
    from tf_lth.data import DataError
    from tf_lth import run_files
    from tf_lth.run_files import CorruptFileError

    try:
        config = tf_lth_flags.to_config()
        # The run directory and --source_run are checked before TensorFlow loads.
        run_files.check_run_dir(config)
        run_files.check_source_run(config)
    except ConfigError as error:
        tf_lth_flags.fail(str(error))
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    import trainers
    from trainers import runs
    from trainers.loop import NonFiniteLossError

    try:
        if config.experiment != "tfmot_baseline":
            data = trainers.load_data(config)
            trainers.check_compatible(config, data)
        else:
            data = None
        runs.prepare(config, tf_lth_flags.own_flags_text())
    except (ConfigError, DataError) as error:
        tf_lth_flags.fail(str(error))
    except OSError as error:
        tf_lth_flags.fail(f"--run_dir={config.run_dir!r} cannot be written "
                          f"({error.strerror or error}).")
    try:
        trainers.run(config, data=data)
    except (ConfigError, DataError, CorruptFileError) as error:
        tf_lth_flags.fail(str(error))
    except NonFiniteLossError as error:
        sys.stderr.write(f"error: {error}; completed rounds are kept in {config.run_dir}\n")
        return 3
    except OSError as error:
        sys.stderr.write(f"error: writing to --run_dir={config.run_dir!r} failed: "
                         f"{error.strerror or error}\n")
        return 4
    if config.export:
        from tf_lth import export as export_cli

        status = export_cli.export_run(config.run_dir, list(config.export),
                                       supermask_export=config.supermask_export)
        return status
    return 0


def run() -> None:
    app.run(main, flags_parser=tf_lth_flags.parse_flags)


if __name__ == "__main__":
    run()
