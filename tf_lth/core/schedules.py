"""Pruning schedules with tensorflow-model-optimization's names, arguments and meanings.

`PolynomialDecay` and `ConstantSparsity` are drop-in replacements for tfmot's classes of the
same names (docs/sparse_training.md, "Coming from tfmot"): the same constructor arguments,
the same `ValueError`s for arguments tfmot refuses, `schedule(step) -> (should_prune,
sparsity)` as TensorFlow tensors (so they run inside a compiled training step), and
`get_config` / `from_config` round trips. Nothing here imports tfmot.
"""

from __future__ import annotations

import abc

import tensorflow as tf


class PruningSchedule(abc.ABC):
    """When to update the masks, and the sparsity they are updated to, at each step.

    Steps count training batches from 1 (the first batch is step 1), as in tfmot.
    """

    @abc.abstractmethod
    def __call__(self, step):
        """(should_prune, sparsity) at `step`, as boolean and float32 tensors."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """{"class_name": ..., "config": {constructor arguments}}."""

    @classmethod
    def from_config(cls, config: dict):
        """The schedule `get_config` described (its inner "config" dict, or that dict)."""
        config = dict(config.get("config", config))
        return cls(**config)

    def pruning_steps(self, last: int) -> list:
        """The steps in 1..`last` at which `schedule(step)` says prune (host side: where a
        compiled training call must end for the masks to be read)."""
        end = last if self.end_step < 0 else min(self.end_step, last)
        first = max(self.begin_step, 1)
        first += (self.begin_step - first) % self.frequency
        return list(range(first, end + 1, self.frequency))

    @staticmethod
    def _validate_step(begin_step, end_step, frequency, allow_negative_1: bool) -> None:
        if begin_step < 0:
            raise ValueError("begin_step should be >= 0")
        if not allow_negative_1 and end_step == -1:
            raise ValueError("end_step cannot be -1.")
        if end_step != -1:
            if end_step < 0:
                raise ValueError("end_step can be -1 or >= 0")
            if end_step < begin_step:
                raise ValueError("begin_step should be <= end_step if end_step != -1")
        if frequency <= 0:
            raise ValueError("frequency should be > 0")

    @staticmethod
    def _validate_sparsity(sparsity, variable_name: str) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"{variable_name} must be in range [0,1)")

    @staticmethod
    def _should_prune_in_step(step, begin_step, end_step, frequency):
        """step >= begin and (step <= end or end < 0) and (step - begin) % frequency == 0."""
        step = tf.cast(step, tf.int64)
        in_range = tf.logical_and(
            tf.greater_equal(step, begin_step),
            tf.logical_or(tf.less_equal(step, end_step), tf.less(tf.constant(end_step, tf.int64), 0)))
        turn = tf.equal(tf.math.floormod(step - begin_step, frequency), 0)
        return tf.logical_and(in_range, turn)


class ConstantSparsity(PruningSchedule):
    """`target_sparsity` at every pruning step from `begin_step` (to `end_step`; -1: to the
    end of training), every `frequency` steps."""

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        self.target_sparsity = target_sparsity
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self._validate_step(begin_step, end_step, frequency, True)
        self._validate_sparsity(target_sparsity, "target_sparsity")

    def __call__(self, step):
        return (self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
                tf.constant(self.target_sparsity, dtype=tf.float32))

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": {
            "target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
            "end_step": self.end_step, "frequency": self.frequency}}


class PolynomialDecay(PruningSchedule):
    """Sparsity from `initial_sparsity` at `begin_step` to `final_sparsity` at `end_step`:
    `final + (initial - final) * (1 - p) ** power`, `p` the clipped progress, pruning every
    `frequency` steps (Zhu & Gupta 2017, as tfmot implements it)."""

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        self.initial_sparsity = initial_sparsity
        self.final_sparsity = final_sparsity
        self.power = power
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self._validate_step(begin_step, end_step, frequency, False)
        self._validate_sparsity(initial_sparsity, "initial_sparsity")
        self._validate_sparsity(final_sparsity, "final_sparsity")

    def __call__(self, step):
        progress = tf.math.divide(tf.cast(tf.cast(step, tf.int64) - self.begin_step, tf.float32),
                                  float(self.end_step - self.begin_step))
        progress = tf.minimum(1.0, tf.maximum(0.0, progress))
        sparsity = (self.initial_sparsity - self.final_sparsity) * tf.pow(1.0 - progress,
                                                                          float(self.power))
        sparsity = tf.add(sparsity, self.final_sparsity, name="sparsity")
        return (self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
                sparsity)

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": {
            "initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
            "power": self.power, "begin_step": self.begin_step, "end_step": self.end_step,
            "frequency": self.frequency}}


SCHEDULES = {"PolynomialDecay": PolynomialDecay, "ConstantSparsity": ConstantSparsity}


def deserialize(config: dict) -> PruningSchedule:
    """A schedule from `schedule.get_config()` ({"class_name": ..., "config": {...}})."""
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in SCHEDULES:
        raise ValueError(f"Unknown pruning schedule {name!r}. Allowed: "
                         f"{', '.join(SCHEDULES)}.")
    return SCHEDULES[name].from_config(config["config"])
