"""Masks that change while training: gradual magnitude pruning (tfmot's semantics) and
dynamic sparse training (RigL, SET, static), for `model.fit` and for tf_lth's own loop.

Public API layer (docs/sparse_training.md). In `model.fit` an updater runs at the start of
every training step, inside the compiled step, so a mask changes at the exact step its
schedule names with `steps_per_execution > 1` and under XLA as well. tf_lth's own loop
(`trainers.loop.Trainer`) instead ends its compiled calls just before each update step and
runs the update between calls (`update_next`), so its steps carry no branch (`count_step`):

- `GradualUpdater` (tfmot's `prune_low_magnitude` + `UpdatePruningStep`): the step counter
  is incremented first (the first batch is step 1); at a pruning step every mask keeps the
  largest-magnitude current weights (`tf_lth.core.sparse_ops.magnitude_mask`); then every kernel
  is written back as kernel x mask, so pruned weights are exactly 0. As in tfmot, the
  forward pass uses the kernel itself and pruned weights get their gradient: they are
  zeroed again before the next step and may come back at a later pruning step.
- `DynamicUpdater` (RigL, Evci et al. 2020; SET, Mocanu et al. 2018): a fixed random mask
  at the ERK or uniform densities from the start; every `update_every` steps up to
  `end_step`, each kernel drops the cosine-decayed fraction of its active weights with the
  smallest |w| and grows as many by the largest dense gradient on the step's batch (RigL)
  or at random (SET). Grown connections start at 0 with zeroed optimizer moments.

`GradualPruning` and `DynamicSparse` are the Keras callbacks: they install the updater in
the model's `train_step` for the length of `fit` and restore it afterwards.
"""

from __future__ import annotations

import abc
import contextlib
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_lth.core import choices, sparse_ops, sparsity
from tf_lth.core.schedules import PruningSchedule
from tf_lth.core.wrap import kernel_slots

BLOCKS = {"1x1": 1, "1x4": 4, 1: 1, 4: 4}


def _block(block) -> int:
    if block not in BLOCKS:
        raise ValueError(f"block must be 1x1 or 1x4. Received: block={block!r}")
    return BLOCKS[block]


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}. Received: {name}={value!r}")
    return value


def _checked_slots(model) -> list:
    slots = kernel_slots(model)
    if not slots:
        raise ValueError(f"Model '{model.name}' has no masked layers; call tf_lth.masked(model) "
                         "first.")
    supermasks = sorted({slot.layer.name for slot in slots if slot.layer.supermask})
    if supermasks:
        raise ValueError(f"Sparse training changes fixed masks; layers {supermasks} are "
                         "supermasks (masked with supermask=False instead).")
    return slots


@contextlib.contextmanager
def dense_gradients(slots):
    """While tracing inside this block, masked kernels pass their gradient at every
    position (the kernel's value is still kernel x mask)."""
    layers = list({id(slot.layer): slot.layer for slot in slots}.values())
    before = [layer.dense_gradient for layer in layers]
    for layer in layers:
        layer.dense_gradient = True
    try:
        yield
    finally:
        for layer, value in zip(layers, before):
            layer.dense_gradient = value


class MaskUpdater(abc.ABC):
    """What changes masks at the start of a training step; `before_step(x, y)` runs inside
    the compiled step. `step` counts the steps taken (after the increment: this step)."""

    dense_training_gradient = False  # the training step's own gradient reaches pruned weights

    def __init__(self, model):
        self.model = model
        self.slots = _checked_slots(model)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="sparse_step")

    @abc.abstractmethod
    def before_step(self, x, y, loss_fn=None) -> None:
        """The step's mask work, inside the compiled step, before its forward pass;
        `loss_fn(x, y)` gives the loss on the step's batch where an update needs one."""

    @abc.abstractmethod
    def update_steps(self, total_steps: int) -> list:
        """The steps in 1..`total_steps` at which `before_step` changes the masks."""

    @abc.abstractmethod
    def update_next(self, x, y, loss_fn=None) -> None:
        """The mask update of the step about to be taken (the counter + 1) on that step's
        batch, outside the training steps: for a loop that ends its compiled calls just
        before each of `update_steps` and steps with `count_step` (no branch in the step)."""

    def count_step(self) -> None:
        """`before_step` without its update: what every step does in such a loop."""
        self.step.assign_add(1)

    @property
    def variables(self) -> list:
        """The updater's own state, for a checkpoint (the masks are the model's)."""
        return [self.step]

    @property
    def kernel_sizes(self) -> dict:
        """{kernel key: number of weights}."""
        return {slot.key: int(np.prod(slot.kernel.shape)) for slot in self.slots}

    def kept_counts(self) -> dict:
        """{kernel key: weights kept} now."""
        return {slot.key: int(np.sum(slot.mask.numpy())) for slot in self.slots}

    def zero_pruned(self) -> None:
        """kernel = kernel x mask for every kernel (pruned weights exactly 0)."""
        for slot in self.slots:
            slot.kernel.assign(slot.kernel * slot.mask)

    @contextlib.contextmanager
    def training_mode(self):
        """Layer settings for the training steps this updater runs in."""
        if not self.dense_training_gradient:
            yield
            return
        with dense_gradients(self.slots):
            yield


class GradualUpdater(MaskUpdater):
    """tfmot's gradual magnitude pruning (docs/sparse_training.md, "Gradual pruning")."""

    dense_training_gradient = True

    def __init__(self, model, schedule: PruningSchedule, scope: str = "layer", block="1x1",
                 sparsity_m_by_n=None):
        self.schedule, self.scope, self.block, self.m_by_n = self.check_arguments(
            schedule, scope, block, sparsity_m_by_n)
        super().__init__(model)
        for slot in self.slots:
            if self.m_by_n and (len(slot.kernel.shape) < 2
                                or slot.kernel.shape[-2] % self.m_by_n[1]):
                raise ValueError(f"sparsity_m_by_n={self.m_by_n} needs kernels whose input axis "
                                 f"is a multiple of {self.m_by_n[1]}; {slot.key} has shape "
                                 f"{tuple(slot.kernel.shape)}.")
            slot.frozen.assign(tf.zeros_like(slot.frozen))

    @staticmethod
    def check_arguments(schedule, scope, block, sparsity_m_by_n) -> tuple:
        """(schedule, scope, block size, (m, n) or None), else ValueError naming the
        argument."""
        if not isinstance(schedule, PruningSchedule):
            raise ValueError("schedule must be a tf_lth.PolynomialDecay or "
                             f"tf_lth.ConstantSparsity. Received: {type(schedule).__name__}")
        scope = _choice("scope", scope, choices.PRUNE_SCOPES)
        block = _block(block)
        m_by_n = _m_by_n(sparsity_m_by_n)
        if m_by_n and (block > 1 or scope == "global"):
            raise ValueError("sparsity_m_by_n works per layer on single weights (scope='layer', "
                             "block='1x1').")
        return schedule, scope, block, m_by_n

    def _update_masks(self, sparsity_value):
        kernels = [slot.kernel for slot in self.slots]
        if self.m_by_n:
            new = [sparse_ops.m_by_n_mask(kernel, *self.m_by_n) for kernel in kernels]
        elif self.scope == "global":
            new = sparse_ops.global_magnitude_masks(kernels, sparsity_value, self.block)
        else:
            new = [sparse_ops.magnitude_mask(kernel, sparsity_value, self.block)
                   for kernel in kernels]
        for slot, mask in zip(self.slots, new):
            slot.mask.assign(tf.cast(mask, slot.mask.dtype))
        return tf.constant(True)

    def should_prune(self, step):
        """Whether `step` (1 = the first batch) updates the masks."""
        if self.m_by_n:
            return tf.equal(tf.cast(step, tf.int64), 1)
        return self.schedule(step)[0]

    def update_steps(self, total_steps: int) -> list:
        if self.m_by_n:
            return [1] if total_steps >= 1 else []
        return self.schedule.pruning_steps(total_steps)

    def before_step(self, x=None, y=None, loss_fn=None) -> None:
        step = self.step.assign_add(1)
        _, value = self.schedule(step)
        tf.cond(self.should_prune(step), lambda: self._update_masks(value),
                lambda: tf.constant(False))
        self.zero_pruned()

    def update_next(self, x=None, y=None, loss_fn=None) -> None:
        _, value = self.schedule(self.step + 1)
        self._update_masks(value)

    def count_step(self) -> None:
        super().count_step()
        self.zero_pruned()


def _m_by_n(value):
    if value is None:
        return None
    try:
        m, n = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity_m_by_n must be a pair (m, n). Received: {value!r}") from None
    if not 0 < m < n:
        raise ValueError(f"sparsity_m_by_n must be (m, n) with 0 < m < n. Received: {value!r}")
    return m, n


class DynamicUpdater(MaskUpdater):
    """RigL / SET / static sparse training (docs/sparse_training.md, "Dynamic sparse
    training"); `update_every=0` or method "static" never changes the initial mask."""

    def __init__(self, model, sparsity_target, method: str = "rigl", distribution: str = "erk",
                 update_every: int = 100, drop_fraction: float = 0.3, end_step=None,
                 seed: int = 0):
        checked = self.check_arguments(sparsity_target, method, distribution, update_every,
                                       drop_fraction, end_step, seed)
        (self.sparsity, self.method, self.distribution, self.update_every,
         self.drop_fraction, end_step, self.seed) = checked
        super().__init__(model)
        self.end_step = tf.Variable(int(end_step or 1), dtype=tf.int64, trainable=False,
                                    name="sparse_end_step")
        self.end_step_given = end_step is not None
        self.optimizer = None  # whose moments grown weights reset; default: model.optimizer
        self.densities = self.layer_densities()
        self.targets = sparsity.kept_counts({s.key: tuple(s.kernel.shape) for s in self.slots},
                                            self.densities)
        rng = np.random.default_rng([self.seed, 1])
        for slot in self.slots:
            mask = sparsity.random_mask(tuple(slot.kernel.shape), self.targets[slot.key], rng)
            slot.mask.assign(mask)
            slot.frozen.assign(tf.zeros_like(slot.frozen))
            slot.kernel.assign(slot.kernel * mask)

    @staticmethod
    def check_arguments(sparsity_target, method, distribution, update_every, drop_fraction,
                        end_step, seed) -> tuple:
        """The arguments checked and normalised, else ValueError naming the argument."""
        target = sparsity.check_sparsity("sparsity", sparsity_target)
        method = _choice("method", method, choices.SPARSE_METHODS)
        distribution = _choice("distribution", distribution, choices.SPARSITY_DISTRIBUTIONS)
        if isinstance(update_every, bool) or not isinstance(update_every, (int, np.integer)) \
                or update_every < 0:
            raise ValueError(f"update_every must be an integer >= 0 (0: static). Received: "
                             f"update_every={update_every!r}")
        fraction = _fraction("drop_fraction", drop_fraction)
        if end_step is not None and (isinstance(end_step, bool) or not isinstance(
                end_step, (int, np.integer)) or end_step < 1):
            raise ValueError(f"end_step must be a positive integer or None. Received: "
                             f"end_step={end_step!r}")
        every = 0 if method == "static" else int(update_every)
        return target, method, distribution, every, fraction, end_step, int(seed)

    def layer_densities(self) -> dict:
        shapes = {slot.key: tuple(slot.kernel.shape) for slot in self.slots}
        if self.distribution == "uniform":
            return sparsity.uniform_densities(shapes, self.sparsity)
        return sparsity.erk_densities(shapes, self.sparsity)

    def set_total_steps(self, total_steps) -> None:
        """end_step defaults to 75% of training, once its length is known."""
        if self.end_step_given:
            return
        if not total_steps:
            raise ValueError("DynamicSparse needs end_step= when the number of training steps "
                             "is not known (a dataset without a length).")
        self.end_step.assign(max(1, int(0.75 * total_steps)))

    def _grow_scores(self, x, y, loss_fn, step):
        if self.method == "set":
            return [tf.random.stateless_uniform(tuple(slot.kernel.shape),
                                                seed=tf.stack([tf.cast(self.seed, tf.int64),
                                                               step * 1000 + index]))
                    for index, slot in enumerate(self.slots)]
        with dense_gradients(self.slots):
            with tf.GradientTape() as tape:
                loss = loss_fn(x, y)
            gradients = tape.gradient(loss, [slot.kernel for slot in self.slots])
        return [tf.abs(g) if g is not None else tf.zeros_like(slot.kernel)
                for g, slot in zip(gradients, self.slots)]

    def _update(self, x, y, loss_fn, step):
        fraction = sparse_ops.drop_fraction(step, self.drop_fraction, self.end_step)
        scores = self._grow_scores(x, y, loss_fn, step)
        moments = optimizer_moments(self.optimizer or getattr(self.model, "optimizer", None),
                                    self.slots)
        for slot, score in zip(self.slots, scores):
            # the decayed fraction never exceeds drop_fraction, the kept count is held
            bound = int(self.drop_fraction * self.targets[slot.key]) + 1
            new, grown = sparse_ops.drop_and_grow(slot.mask, slot.kernel, fraction, score,
                                                  max_count=bound)
            slot.kernel.assign(slot.kernel * (1.0 - grown))
            for moment in moments.get(id(slot.kernel), ()):
                moment.assign(moment * tf.cast(1.0 - grown, moment.dtype))
            slot.mask.assign(new)
        return tf.constant(True)

    @property
    def variables(self) -> list:
        return [self.step, self.end_step]

    def update_steps(self, total_steps: int) -> list:
        if not self.update_every:
            return []
        last = min(int(self.end_step.numpy()), total_steps)
        return list(range(self.update_every, last + 1, self.update_every))

    def is_update_step(self, step):
        if not self.update_every:
            return tf.constant(False)
        return tf.logical_and(tf.equal(tf.math.floormod(step, self.update_every), 0),
                              step <= self.end_step)

    def before_step(self, x=None, y=None, loss_fn=None) -> None:
        step = self.step.assign_add(1)
        if not self.update_every:
            return
        tf.cond(self.is_update_step(step), lambda: self._update(x, y, loss_fn, step),
                lambda: tf.constant(False))

    def update_next(self, x=None, y=None, loss_fn=None) -> None:
        self._update(x, y, loss_fn, self.step + 1)


def _fraction(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1]. Received: {name}={value!r}") from None
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{name} must be in (0, 1]. Received: {name}={value!r}")
    return number


def optimizer_moments(optimizer, slots) -> dict:
    """{id(kernel variable): [the optimizer's variables for it]} (Adam's momentum and
    velocity, SGD's momentum...): Keras 3 names a per-variable optimizer variable after the
    variable's path, '/' replaced by '_', then '_' and its own name."""
    if optimizer is None or not getattr(optimizer, "built", False):
        return {}
    found = {}
    for slot in slots:
        prefix = slot.kernel.path.replace("/", "_") + "_"
        found[id(slot.kernel)] = [
            variable for variable in optimizer.variables
            if variable.name.startswith(prefix) and tuple(variable.shape) == tuple(slot.kernel.shape)]
    return found


# ---- the Keras callbacks ------------------------------------------------------------------
class _SparseTraining(keras.callbacks.Callback):
    """Installs an updater in `model.train_step` for the length of `fit`; per-kernel
    sparsity goes to TensorBoard under `log_dir` (as tfmot's PruningSummaries) at every
    epoch end."""

    def __init__(self, log_dir: str | None = None):
        super().__init__()
        self.log_dir = log_dir
        self.updater = None
        self._writer = None
        self._installed = None  # the model whose train_step is wrapped

    @abc.abstractmethod
    def make_updater(self, model) -> MaskUpdater:
        """The updater for `model` (built once, on the first fit)."""

    def set_model(self, model):
        super().set_model(model)
        if self.updater is None or self.updater.model is not model:
            self.updater = self.make_updater(model)
        if self._installed is not model:
            self._install(model)

    def _install(self, model) -> None:
        original, updater = model.train_step, self.updater

        def loss_fn(x, y):
            return model.compute_loss(x=x, y=y, y_pred=model(x, training=False),
                                      training=False)

        def train_step(data):
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            updater.before_step(x, y, loss_fn)
            with updater.training_mode():
                return original(data)

        model.train_step = train_step
        model.train_function = None  # fit traces the wrapped step
        self._installed = model

    def _uninstall(self) -> None:
        model, self._installed = self._installed, None
        if model is not None and "train_step" in vars(model):
            del model.train_step
            model.train_function = None

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its moments exist when traced

    def on_epoch_end(self, epoch, logs=None):
        self.updater.zero_pruned()
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                step = int(self.updater.step.numpy())
                for slot in self.updater.slots:
                    tf.summary.scalar(f"pruning/{slot.key}/sparsity",
                                      1.0 - float(np.mean(slot.mask.numpy())), step=step)
            self._writer.flush()

    def on_train_end(self, logs=None):
        self.updater.zero_pruned()
        self._uninstall()


class GradualPruning(_SparseTraining):
    """Gradual magnitude pruning in `model.fit`, with tfmot's semantics.

    Args:
        schedule: `tf_lth.PolynomialDecay` or `tf_lth.ConstantSparsity` (tfmot's arguments).
        scope: "layer" (each kernel to the schedule's sparsity, as tfmot) or "global" (one
            magnitude threshold over every masked kernel).
        block: "1x1" or "1x4" (units of 4 along the input axis, magnitudes averaged).
        sparsity_m_by_n: (m, n): m zeros in every n consecutive inputs, as tfmot; set at
            step 1.
        log_dir: TensorBoard folder for per-kernel sparsity (tfmot's PruningSummaries).
    """

    def __init__(self, schedule, scope: str = "layer", block="1x1", sparsity_m_by_n=None,
                 log_dir: str | None = None):
        super().__init__(log_dir)
        self.schedule, self.scope, self.block = schedule, scope, block
        self.sparsity_m_by_n = sparsity_m_by_n
        GradualUpdater.check_arguments(schedule, scope, block, sparsity_m_by_n)
        if sparsity_m_by_n is None and schedule.end_step >= 0 \
                and not schedule.pruning_steps(schedule.end_step):
            # tfmot accepts such a schedule and leaves the model dense without a word
            warnings.warn(
                f"GradualPruning: {type(schedule).__name__}(begin_step={schedule.begin_step}, "
                f"end_step={schedule.end_step}, frequency={schedule.frequency}) never prunes: "
                "it prunes at begin_step + k * frequency, counting batches from 1, up to "
                "end_step, and no such step exists, so the model stays dense. Lower frequency "
                "or raise end_step.", stacklevel=2)

    def make_updater(self, model) -> MaskUpdater:
        return GradualUpdater(model, self.schedule, self.scope, self.block,
                              self.sparsity_m_by_n)


class DynamicSparse(_SparseTraining):
    """Dynamic sparse training in `model.fit`: RigL, SET, or static (`update_every=0`).

    Args:
        sparsity: the target, in [0, 1), held exactly from the first step.
        method: "rigl" (grow by the dense gradient), "set" (grow at random), "static".
        distribution: "erk" or "uniform" layer densities.
        update_every: steps between mask updates (0: never, static sparse training).
        drop_fraction: the fraction of active weights updated at step 0 of the cosine decay.
        end_step: the last step that updates (default: 75% of the fit's steps).
        seed: the initial masks and SET's draws.
    """

    def __init__(self, sparsity, method: str = "rigl", distribution: str = "erk",
                 update_every: int = 100, drop_fraction: float = 0.3, end_step=None,
                 seed: int = 0, log_dir: str | None = None):
        super().__init__(log_dir)
        self.arguments = dict(sparsity_target=sparsity, method=method,
                              distribution=distribution, update_every=update_every,
                              drop_fraction=drop_fraction, end_step=end_step, seed=seed)
        DynamicUpdater.check_arguments(**self.arguments)

    def make_updater(self, model) -> MaskUpdater:
        return DynamicUpdater(model, **self.arguments)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        self.updater.set_total_steps(steps * epochs if steps and epochs else None)
