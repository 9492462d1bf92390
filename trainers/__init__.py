"""Experiment drivers of tf_lth: one training loop, many experiments (DESIGN.md)."""

from __future__ import annotations

import functools
import os

import keras
import tensorflow as tf

from tf_lth import data as data_lib
from tf_lth import models
from tf_lth.config import SYNTHETIC_DATASETS, ConfigError


_STRATEGIES = {}


def make_strategy(name: str):
    """The tf.distribute strategy for --strategy, created once per process.

    `mirrored` replicates over every GPU, or over the logical CPU devices when there is no
    GPU and more than one CPU device is configured (how the tests run it). `multi_worker`
    reads TF_CONFIG and must exist before TensorFlow runs any op, so `load_data` creates it
    first; the cache hands the same strategy to the experiment.
    """
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices or None)
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise ConfigError(
            f"--strategy={name!r} is not allowed; allowed: default, mirrored, multi_worker, tpu."
        )
    _STRATEGIES[name] = strategy
    return strategy


def is_chief(strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def load_data(config):
    if config.strategy in ("multi_worker", "tpu"):
        make_strategy(config.strategy)  # before tfds runs the first TensorFlow op
    if config.dataset in SYNTHETIC_DATASETS:
        shape = (28, 28, 1) if config.dataset == "synthetic_mnist" else (32, 32, 3)
        return data_lib.synthetic(shape, seed=config.seed, name=config.dataset,
                                  **data_lib.SYNTHETIC_SIZES)
    return data_lib.load(config.dataset, config.data_dir, config.validation_size,
                         download=config.download)


def model_factory(config, data):
    """A function building the configured network for `data`'s images."""
    options = {"mask_block": config.block_size,
               # the mask-0 action `zero` keeps pruned weights at zero: skip the frozen term
               "frozen_values": config.mask_zero_action != "zero"}
    signed_constant = False
    if config.experiment == "learned_supermask":
        signed_constant = config.supermask_weights == "signed_constant"
        options.update(
            supermask=True,
            frozen_values=False,
            dynamic_scaling=config.dynamic_scaling,
            sigmoid_bias=config.sigmoid_bias,
            mask_sampling=config.mask_sampling,
        )
    build = functools.partial(models.build, config.arch, data.image_shape, data.num_classes,
                              seed=config.seed, **options)
    if not signed_constant:
        return build
    return functools.partial(_with_signed_constants, build, config.constant_multiplier)


def _with_signed_constants(build, multiplier):
    """Builds, then sets each frozen kernel to `std(w_i) * multiplier * sign(w_i)` once.

    Equivalent to the layers' `weight_transform="signed_constant"`, without recomputing the
    constant at every step (the kernel never trains in a supermask).
    """
    import numpy as np

    from tf_lth.layers import masked_layers

    model = build()
    for layer in masked_layers(model):
        kernel = np.array(layer._kernel)
        layer._kernel.assign((np.sign(kernel) * np.std(kernel) * multiplier).astype(np.float32))
    return model


def check_compatible(config, data) -> None:
    """The network must take the dataset's images (raises ConfigError naming both flags)."""
    shape = data.image_shape
    if len(shape) != 3:
        raise ConfigError(
            f"--dataset={config.dataset!r} has images of shape {shape}; allowed: "
            "(height, width, channels) images."
        )
    if config.arch != "fc":
        pools = {"conv2": 1, "conv4": 2, "conv6": 3}[config.arch]
        if min(shape[:2]) < 2 ** pools:
            raise ConfigError(
                f"--arch={config.arch!r} cannot take --dataset={config.dataset!r} images of "
                f"shape {shape}; allowed: images of at least {2 ** pools}x{2 ** pools}."
            )
    if config.batch_size > len(data.train_images):
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the {len(data.train_images)} "
            "training examples; allowed: 1 to the training set size."
        )
    if config.rewind_iteration > 0:
        iterations = config.train_iterations(data.steps_per_epoch(config.batch_size))
        if config.rewind_iteration >= iterations:
            raise ConfigError(
                f"--rewind_iteration={config.rewind_iteration} is beyond the training length "
                f"of {iterations} iterations; allowed: 0 <= rewind_iteration < {iterations}."
            )


def run(config, data=None, log=print):
    """Runs the configured experiment in `config.run_dir`; returns its records."""
    from trainers.lottery import LotteryRun
    from trainers.supermask import LearnedSupermaskRun, UntrainedSupermaskRun

    if config.experiment == "tfmot_baseline":
        from trainers.tfmot_baseline import run_baseline

        return run_baseline(config, log=log)
    strategy = make_strategy(config.strategy)  # multi_worker: before any TensorFlow op
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"--batch_size={config.batch_size} does not split over the "
            f"{strategy.num_replicas_in_sync} replicas of --strategy={config.strategy}; "
            "allowed: a multiple of the replica count."
        )
    if not is_chief(strategy):
        # Every worker runs the same rounds; only the chief's files are the run's.
        import dataclasses
        import tempfile

        config = dataclasses.replace(config, run_dir=tempfile.mkdtemp(prefix="tf_lth-worker-"))
        log(f"non-chief worker: writing to {config.run_dir}")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    data = data or load_data(config)
    check_compatible(config, data)
    factory = model_factory(config, data)
    classes = {
        "dense": LotteryRun,
        "lottery": LotteryRun,
        "learned_supermask": LearnedSupermaskRun,
        "untrained_supermask": UntrainedSupermaskRun,
    }
    experiment = classes[config.experiment](config, data, factory, strategy, log=log)
    records = experiment.run()
    if not is_chief(strategy):
        import shutil

        shutil.rmtree(config.run_dir, ignore_errors=True)  # the non-chief's temporary copy
        return records
    if config.experiment in ("lottery", "untrained_supermask"):
        try:
            from tf_lth import plot

            plot.plot_runs([config.run_dir], os.path.join(config.run_dir, "plots",
                                                            f"{config.experiment}.png"))
        except Exception as error:  # a plot must never lose a finished run
            log(f"plot skipped: {type(error).__name__}: {error}")
    return records
