"""The tf.distribute strategy of a run (--strategy), created once per process.

Core layer of tf_lth. `mirrored` replicates over every GPU, or over the logical CPU devices
when there is no GPU and more than one CPU device is configured (how the tests run it).
`multi_worker` reads TF_CONFIG and must exist before TensorFlow runs any op, so data
loading for a config creates it first; the cache hands the same strategy to the run.
"""

from __future__ import annotations

from tf_lth.core.config import STRATEGIES, ConfigError

_STRATEGIES = {}


def make_strategy(name: str):
    """The strategy for --strategy=`name` (one per process and name)."""
    import tensorflow as tf

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
            f"--strategy={name!r} is not allowed; allowed: {', '.join(STRATEGIES)}."
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
