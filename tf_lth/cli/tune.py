"""`python -m tf_lth.tune --flagfile=F --tuner=random --max_trials=N --run_dir=DIR`.

CLI layer (a composition root, like `tf_lth.train`): hyperparameter search with
keras-tuner over tf_lth's own training loop. The flagfile describes a run as for
`tf_lth.train`; each trial is that run with the trial's hyperparameters, trained by
`trainers.run` (not `model.fit`) in `DIR/tuning/trial_<id>/run/` (a complete run directory
with its own flags.txt). The objective is validation accuracy: of the last round, at its
lowest validation loss (`best.val_accuracy` in results.json), so test data never steers
the search.

Search spaces:
- dense, lottery: learning rate (log-uniform, 0.1x to 10x the flag's value) and batch size;
- learned_supermask: learning rate (0.1x to 10x, log), sigmoid bias (-2 to 3), and the
  signed-constant multiplier (0.5 to 2, log; only with --supermask_weights=signed_constant,
  where it has an effect).

At the end `DIR/best.flags` holds the flagfile's run with the best trial's values;
`python -m tf_lth.train --flagfile=DIR/best.flags` runs it as is (into DIR/best, or give
--run_dir after the flagfile). `DIR/tuning_summary.json` lists every trial.

Distributed: keras-tuner's chief/worker mode spreads trials over machines. Start the same
command on every machine with KERASTUNER_TUNER_ID (`chief` on one, `tuner0`, `tuner1`, ...
on the others), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT (the chief's address).
The chief runs the oracle and writes best.flags; workers run trials.

Bad flags print one line and exit with status 2, before anything is written.

SIGTERM or SIGINT stops the search: the trial in progress checkpoints at its next compiled
call and the command exits with 143 or 130. `--resume` reloads the search; keras-tuner
hands the interrupted trial out again, and its run continues from the checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_lth.cli import flags as tf_lth_flags  # noqa: E402
from tf_lth.core import preemption, run_lock  # noqa: E402
from tf_lth.core.choices import TUNABLE_EXPERIMENTS as TUNABLE  # noqa: E402
from tf_lth.core.choices import TUNERS  # noqa: E402

tf_lth_flags.define_flags()
OBJECTIVE = "val_accuracy"
if "tuner" not in flags.FLAGS:
    flags.DEFINE_string("tuner", "random", f"Search algorithm: {', '.join(TUNERS)}.")
    flags.DEFINE_integer("max_trials", 10, "Trials to run (hyperband: at most this many).")
    flags.DEFINE_integer("hyperband_max_epochs", 4, "Hyperband's largest budget, in units: "
                         "a trial with budget b trains b / hyperband_max_epochs of a round.")
    flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor (>= 2).")
FLAGS = flags.FLAGS
TUNE_FLAGS = ("tuner", "max_trials", "hyperband_max_epochs", "hyperband_factor")


def search_space(config):
    """The keras-tuner HyperParameters searched for `config.experiment`."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    rate = float(config.learning_rate)
    hp.Float("learning_rate", rate / 10.0, rate * 10.0, sampling="log", default=rate)
    if config.experiment == "learned_supermask":
        hp.Float("sigmoid_bias", -2.0, 3.0, default=float(config.sigmoid_bias))
        if config.supermask_weights == "signed_constant":
            hp.Float("constant_multiplier", 0.5, 2.0, sampling="log",
                     default=min(max(float(config.constant_multiplier), 0.5), 2.0))
    else:
        choices = sorted({30, 60, 120, 250, int(config.batch_size)})
        hp.Choice("batch_size", choices, default=int(config.batch_size))
    return hp


def flags_text(values: dict, header: str = "") -> str:
    """A train flagfile for `values` (flag name -> value), in `own_flags_text`'s format."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join(lines + tf_lth_flags.flagfile_lines(values)) + "\n"


def trial_values(base: dict, hyperparameters: dict, max_epochs: int) -> dict:
    """The flag values of one trial: the base run with the trial's hyperparameters.

    Hyperband's `tuner/epochs` (1..max_epochs) scales the per-round budget.
    """
    values = dict(base)
    for name in ("learning_rate", "sigmoid_bias", "constant_multiplier"):
        if name in hyperparameters:
            values[name] = float(hyperparameters[name])  # plain floats, not NumPy scalars
    if "batch_size" in hyperparameters:
        values["batch_size"] = int(hyperparameters["batch_size"])
    if "tuner/epochs" in hyperparameters:
        fraction = hyperparameters["tuner/epochs"] / max_epochs
        if values.get("iterations"):
            values["iterations"] = max(1, int(round(values["iterations"] * fraction)))
        else:
            values["epochs"] = float(values["epochs"]) * fraction
    return values


def _plain(value):
    """A NumPy scalar as the Python number it holds (for logs, JSON and flagfiles)."""
    return value.item() if hasattr(value, "item") else value


def make_tuner(kind: str, config, max_trials: int, directory: str, overwrite: bool,
               base_values: dict, log=print):
    """A keras-tuner Tuner running tf_lth's training loop for each trial."""
    import keras_tuner

    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    space = search_space(config)
    common = dict(objective=objective, hyperparameters=space, seed=config.seed,
                  tune_new_entries=False, allow_new_entries=False)
    if kind == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    elif kind == "bayesian":
        oracle = keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=max_trials, num_initial_points=min(2, max_trials), **common)
    else:
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=FLAGS.hyperband_max_epochs, factor=FLAGS.hyperband_factor, **common)
        oracle.max_trials = max_trials  # Hyperband has no max_trials of its own
    max_epochs = FLAGS.hyperband_max_epochs

    class LoopTuner(keras_tuner.Tuner):
        """run_trial trains a tf_lth run with the trial's hyperparameters."""

        data = None

        def run_trial(self, trial, *args, **kwargs):
            import keras

            from tf_lth.core import config as config_lib
            from tf_lth.core import data as data_lib
            from tf_lth.core import models
            from tf_lth.core.config import ConfigError
            from tf_lth.core.data import DataError
            import trainers
            from trainers import runs

            if preemption.requested():
                raise _stopped(preemption.requested(), f"the start of trial {trial.trial_id}")
            values = trial_values(base_values, trial.hyperparameters.values, max_epochs)
            trial_dir = os.path.join(self.get_trial_dir(trial.trial_id), "run")
            # A trial stopped by a signal is handed out again after --resume (keras-tuner
            # retries the trials that were running): its run continues from its checkpoint.
            again = os.path.isfile(os.path.join(trial_dir, "config.json"))
            values.update(run_dir=trial_dir, overwrite=not again, resume=again,
                          progress=False, export="")
            try:
                trial_config = config_lib.make(**dict(values))
                if self.data is None:
                    LoopTuner.data = data_lib.for_config(trial_config)
                models.check_compatible(trial_config, self.data)
                runs.prepare(trial_config, flags_text(values, f"tuning trial {trial.trial_id}"))
            except (ConfigError, DataError) as error:
                # A bad base flag fails every trial: stop the search, not just this trial.
                raise keras_tuner.errors.FatalError(str(error)) from None
            keras.backend.clear_session()
            shown = ", ".join(f"{key}={_plain(value)}"
                              for key, value in trial.hyperparameters.values.items())
            log(f"trial {trial.trial_id}: {shown}")
            started = time.time()
            try:
                records = trainers.run(
                    trial_config, data=self.data,
                    log=lambda line: log(f"  [trial {trial.trial_id}] {line}"))
            except preemption.Preempted as error:  # checkpointed: --resume continues it
                where = f"trial {trial.trial_id}"
                if error.iteration is not None:
                    where += f", round {error.round_index}, iteration {error.iteration}"
                raise _stopped(error.signum, where) from None
            finally:
                run_lock.release(trial_dir)
            value = float(records[-1]["best"]["val_accuracy"])
            log(f"trial {trial.trial_id}: {OBJECTIVE}={value:.4f} "
                f"({time.time() - started:.0f} s)")
            return {OBJECTIVE: value}

    return LoopTuner(oracle=oracle, directory=directory, project_name="tuning",
                     overwrite=overwrite)


def _stopped(signum: int, where: str):
    """A keras-tuner FatalError for a signal: it ends the search (an ordinary exception
    would only fail the trial and go on to the next), carrying the exit status."""
    import keras_tuner

    error = keras_tuner.errors.FatalError(str(preemption.Preempted(signum, where=where)))
    error.exit_code = 128 + signum
    return error


def write_best(tuner, run_dir: str, base_values: dict, kind: str) -> str | None:
    """DIR/best.flags and DIR/tuning_summary.json from the finished search."""
    from tf_lth.core import run_files

    trials = list(tuner.oracle.trials.values())
    summary = []
    for trial in sorted(trials, key=lambda item: (len(str(item.trial_id)), str(item.trial_id))):
        score = trial.score
        summary.append({"trial_id": trial.trial_id, "status": trial.status,
                        "hyperparameters": {key: _plain(value) for key, value
                                            in trial.hyperparameters.values.items()},
                        OBJECTIVE: None if score is None else float(score)})
    best_trials = tuner.oracle.get_best_trials(1)
    result = {"objective": OBJECTIVE, "tuner": kind, "trials": summary}
    path = None
    if best_trials and best_trials[0].score is not None:
        best = best_trials[0]
        values = trial_values(base_values, {k: v for k, v in best.hyperparameters.values.items()
                                            if not k.startswith("tuner/")}, 1)
        values.update(run_dir=os.path.join(run_dir, "best"))
        shown = ", ".join(f"{key}={_plain(value)}" for key, value
                          in best.hyperparameters.values.items() if not key.startswith("tuner/"))
        header = (
            f"The best of {len(trials)} tuning trials ({kind} search) of {run_dir}:\n"
            f"trial {best.trial_id}, {OBJECTIVE}={float(best.score):.4f} ({shown}).\n"
            f"Command: python -m tf_lth.train --flagfile={os.path.join(run_dir, 'best.flags')}\n"
            "(runs into --run_dir below; give --run_dir=... after --flagfile to change it)."
        )
        path = os.path.join(run_dir, "best.flags")
        run_files.write_text(path, flags_text(values, header))
        result["best"] = {"trial_id": best.trial_id, OBJECTIVE: float(best.score),
                          "hyperparameters": {key: _plain(value) for key, value
                                              in best.hyperparameters.values.items()},
                          "flagfile": path}
    run_files.write_json(os.path.join(run_dir, "tuning_summary.json"), result)
    return path


def _check_tune_flags(config) -> None:
    fail = tf_lth_flags.fail
    if FLAGS.tuner not in TUNERS:
        fail(f"--tuner={FLAGS.tuner!r} is not allowed; allowed: {', '.join(TUNERS)}.")
    if FLAGS.max_trials < 1:
        fail(f"--max_trials={FLAGS.max_trials} is not allowed; allowed: an integer >= 1.")
    if FLAGS.hyperband_max_epochs < 1:
        fail(f"--hyperband_max_epochs={FLAGS.hyperband_max_epochs} is not allowed; "
             "allowed: an integer >= 1.")
    if FLAGS.hyperband_factor < 2:
        fail(f"--hyperband_factor={FLAGS.hyperband_factor} is not allowed; "
             "allowed: an integer >= 2.")
    if config.experiment not in TUNABLE:
        fail(f"--experiment={config.experiment!r} cannot be tuned; allowed: "
             f"{', '.join(TUNABLE)}.")


def main(argv) -> int:
    if len(argv) > 1:
        tf_lth_flags.fail(f"unexpected arguments {argv[1:]}; allowed: --flag=value only.")
    from tf_lth.core.config import ConfigError

    preemption.install()  # SIGTERM/SIGINT: the trial checkpoints, the search stops
    try:
        config = tf_lth_flags.to_config()
    except ConfigError as error:
        tf_lth_flags.fail(str(error))
    _check_tune_flags(config)
    run_dir = config.run_dir
    project = os.path.join(run_dir, "tuning")
    if os.path.isdir(project) and not (config.resume or config.overwrite):
        tf_lth_flags.fail(f"--run_dir={run_dir!r} already holds a tuning run; allowed: "
                          "--resume to continue it, --overwrite to replace it, or a new folder.")
    import warnings

    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # The Bayesian oracle's Gaussian process warns about length scales on tiny searches.
    warnings.filterwarnings("ignore", module="sklearn")
    from keras_tuner import errors as tuner_errors

    from tf_lth.core import run_files

    # keras-tuner's documented distributed-tuning variables: the chief oracle's process
    # has KERASTUNER_TUNER_ID=chief; without KERASTUNER_ORACLE_IP there is one process.
    chief = ("KERASTUNER_ORACLE_IP" not in os.environ
             or os.environ.get("KERASTUNER_TUNER_ID") == "chief")
    if config.overwrite and chief:
        for name in ("tuning", "best", "best.flags", "tuning_summary.json"):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
    os.makedirs(run_dir, exist_ok=True)
    base_values = tf_lth_flags.values()
    tune_lines = [f"--{name}={FLAGS[name].value}" for name in TUNE_FLAGS]
    if chief:
        run_files.write_text(os.path.join(run_dir, "tune.flags"),
                             flags_text(base_values, "tf_lth.tune flags of this search")
                             + "\n".join(tune_lines) + "\n")
    print(f"tuning directory: {project} ({FLAGS.tuner}, up to {FLAGS.max_trials} trials, "
          f"objective {OBJECTIVE})", flush=True)
    started = time.time()
    try:
        tuner = make_tuner(FLAGS.tuner, config, FLAGS.max_trials, run_dir,
                           overwrite=False, base_values=base_values,
                           log=lambda line: print(line, flush=True))
    except ImportError as error:  # bayesian needs scikit-learn (keras-tuner[bayesian])
        tf_lth_flags.fail(f"--tuner={FLAGS.tuner}: {str(error).splitlines()[0]}")
    try:
        tuner.search(verbose=0)
    except tuner_errors.FatalError as error:
        if getattr(error, "exit_code", None):  # a signal: the one line, then 130 or 143
            sys.stderr.write(f"{str(error).splitlines()[0]}\n")
            # no teardown (seconds with TensorFlow and keras-tuner loaded): the trial's
            # checkpoint and the oracle's state are written
            run_lock.release_all()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(error.exit_code)
        tf_lth_flags.fail(str(error).splitlines()[0])
    except RuntimeError as error:  # keras-tuner: too many consecutive failed trials
        sys.stderr.write(f"error: {str(error).splitlines()[0]}\n")
        return 3
    if not chief:
        return 0
    path = write_best(tuner, run_dir, base_values, FLAGS.tuner)
    if path is None:
        sys.stderr.write("error: no trial completed; see the trials under "
                         f"{project}\n")
        return 3
    print(f"best flags: {path} ({time.time() - started:.0f} s)", flush=True)
    return 0


def run() -> None:
    app.run(main, flags_parser=tf_lth_flags.parse_flags)


if __name__ == "__main__":
    run()
