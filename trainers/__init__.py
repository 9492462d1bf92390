"""Experiment drivers of tf_lth: one training loop, many experiments (docs/architecture.md).

This package only dispatches: `run(config)` picks the experiment class for
`--experiment`. Strategy setup lives in `tf_lth.core.distribute`, data for a configuration in
`tf_lth.core.data.for_config`, the network in `tf_lth.core.models.for_config`. Nothing heavy is
imported here, so `python -m trainers.tfmot_worker` can run beside legacy Keras. The
run's figure is drawn by the CLI (`tf_lth.train`): experiments import no CLI module.
"""

from __future__ import annotations


def run(config, data=None, log=print):
    """Runs the configured experiment in `config.run_dir`; returns its records."""
    if config.experiment == "tfmot_baseline":
        from trainers.tfmot_baseline import run_baseline

        return run_baseline(config, log=log)

    import dataclasses
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    from tf_lth.core import data as data_lib
    from tf_lth.core import models
    from tf_lth.core.config import ConfigError
    from tf_lth.core.distribute import is_chief, make_strategy
    from trainers.lottery import LotteryRun
    from trainers.sparse import SparseTrainingRun
    from trainers.supermask import LearnedSupermaskRun, UntrainedSupermaskRun

    strategy = make_strategy(config.strategy)  # multi_worker: before any TensorFlow op
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"--batch_size={config.batch_size} does not split over the "
            f"{strategy.num_replicas_in_sync} replicas of --strategy={config.strategy}; "
            "allowed: a multiple of the replica count."
        )
    chief = is_chief(strategy)
    if not chief:  # every worker runs the same rounds; only the chief's files are the run's
        config = dataclasses.replace(config, run_dir=tempfile.mkdtemp(prefix="tf_lth-worker-"))
        log(f"non-chief worker: writing to {config.run_dir}")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    data = data or data_lib.for_config(config)
    models.check_compatible(config, data)
    experiments = {
        "dense": LotteryRun,
        "lottery": LotteryRun,
        "learned_supermask": LearnedSupermaskRun,
        "untrained_supermask": UntrainedSupermaskRun,
        "gradual": SparseTrainingRun,
        "dynamic_sparse": SparseTrainingRun,
    }
    experiment = experiments[config.experiment](config, data, models.for_config(config, data),
                                                strategy, log=log)
    records = experiment.run()
    if not chief:
        shutil.rmtree(config.run_dir, ignore_errors=True)  # the non-chief's temporary copy
    return records
