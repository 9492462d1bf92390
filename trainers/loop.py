"""The one training loop every experiment shares (docs/architecture.md, "The training loop").

Experiment layer of tf_lth. `Trainer` compiles one training call that runs up to
`steps_per_call` steps, each gathering its batch by index from training data held as
tensors, and one evaluation call that scores a whole split. Masks, frozen values and the
learning rate are variables, so rounds never retrace. `Trainer.fit` runs calls whose
boundaries land exactly on every evaluation, checkpoint, rewind snapshot and round end;
values reach the host only there.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lth.core import preemption
from tf_lth.core.config import JIT_MODES
from tf_lth.core.layers import masked_layers, walk_layers
from tf_lth.core.ticket import reset_optimizer_state, weights_remaining

STEPS_PER_CALL = 100     # most training steps in one compiled call
CALL_SECONDS = 0.5       # calls are shortened to about this long (signals, progress)
EVAL_CHUNK_VALUES = 8_000_000  # most image values per evaluation chunk (memory bound)
EVAL_CHUNK_IMAGES = 10_000     # most images per evaluation chunk


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def due(iteration: int, every: int, total: int) -> bool:
    """True at multiples of `every` and at the last iteration."""
    return iteration == total or (every > 0 and iteration % every == 0)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, cosine_steps: int = 0):
    """`cosine_steps` > 0: cosine decay of the learning rate to 0 over that many steps
    (a schedule: `Trainer.set_learning_rate` cannot assign it); `weight_decay`: Keras's
    decoupled weight decay (edge-popup, docs/semantics.md)."""
    if cosine_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, cosine_steps)
    options = {"learning_rate": learning_rate}
    if weight_decay:
        options["weight_decay"] = weight_decay
    if name == "adam":
        return keras.optimizers.Adam(**options)
    if name == "sgd":
        return keras.optimizers.SGD(momentum=momentum, **options)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=0.0, **options)
    raise ValueError(f"Unknown optimizer {name!r}. Allowed: adam, sgd, rmsprop. Received: {name!r}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What one round trains: its length, batches, and where the loop must stop a call."""

    iterations: int
    batch_size: int
    seed: int
    eval_every: int = 0
    checkpoint_every: int = 0
    snapshot_at: tuple = ()
    round_index: int = 0
    label: str = "train"
    progress: bool = True
    # steps (1 = the first batch) whose start a mask updater changes the masks at; calls end
    # just before each, and the update runs between calls (Trainer.fit)
    mask_update_at: tuple = ()


    def next_boundary(self, iteration: int) -> int:
        """The first iteration after `iteration` at which a call must end."""
        candidates = [self.iterations]
        for every in (self.eval_every, self.checkpoint_every):
            if every > 0:
                candidates.append((iteration // every + 1) * every)
        candidates += [at for at in self.snapshot_at if at > iteration]
        later = bisect.bisect_right(self.mask_update_at, iteration + 1)
        if later < len(self.mask_update_at):
            candidates.append(self.mask_update_at[later] - 1)
        return min(candidates)

    def checkpoint_due(self, iteration: int) -> bool:
        return (self.checkpoint_every > 0 and iteration % self.checkpoint_every == 0
                and iteration < self.iterations)


class RoundHooks:
    """What a round does at the loop's boundaries; the defaults do nothing."""

    def evaluated(self, record: dict) -> None:
        """An evaluation record (iteration, losses, accuracies) was added to the history."""

    def save_checkpoint(self, iteration: int, history: list) -> None:
        """Write an in-round checkpoint at `iteration` (also called before a signal exit)."""

    def snapshot(self, iteration: int) -> None:
        """The weights at `iteration`, one of `Schedule.snapshot_at`, are wanted."""

    def masks_updated(self, iteration: int) -> None:
        """The mask updater changed the masks at step `iteration` (`Schedule.mask_update_at`)."""


class _DeviceData:
    """A dataset's arrays as tensors: training images and labels for gathering, and each
    evaluation set cut into as few equal chunks as the bounds allow (padding scored into a
    discarded segment). One chunk is fastest: XLA then copies no slice of the images."""

    def __init__(self, data, strategy):
        self.data = data
        with strategy.scope():
            self.train_images = tf.constant(data.train_images)
            self.train_labels = tf.constant(data.train_labels)
        pixels = int(np.prod(data.image_shape)) or 1
        self.max_chunk = int(min(EVAL_CHUNK_IMAGES, max(100, EVAL_CHUNK_VALUES // pixels)))
        self._sets = {}

    def eval_set(self, splits: tuple):
        """(images [chunks, chunk, ...], labels [chunks, chunk], segments) for `splits`."""
        if splits not in self._sets:
            arrays = {"validation": (self.data.val_images, self.data.val_labels),
                      "test": (self.data.test_images, self.data.test_labels)}
            images = np.concatenate([arrays[split][0] for split in splits])
            labels = np.concatenate([arrays[split][1] for split in splits])
            segments = np.concatenate([np.full(len(arrays[split][1]), index, np.int32)
                                       for index, split in enumerate(splits)])
            size = len(labels)
            chunks = max(1, -(-size // self.max_chunk))
            chunk = max(1, -(-size // chunks))
            pad = chunks * chunk - size
            images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.float32)])
            labels = np.concatenate([labels, np.zeros(pad, np.int32)])
            segments = np.concatenate([segments, np.full(pad, len(splits), np.int32)])
            shape = (chunks, chunk)
            self._sets[splits] = (
                tf.constant(images.reshape(shape + images.shape[1:])),
                tf.constant(labels.reshape(shape)),
                tf.constant(segments.reshape(shape)),
                [len(arrays[split][1]) for split in splits],
            )
        return self._sets[splits]


class Trainer:
    """Owns a model, its optimizer and the compiled training and evaluation calls.

    `jit_compile`: "auto" compiles with XLA and falls back to the plain graph, once and
    saying so through `log`, when XLA refuses an op; "on" requires XLA; "off" never uses
    it. "auto" runs the plain graph with more than one replica (MirroredStrategy,
    multi-worker: the optimizer's cross-replica update cannot live inside an XLA cluster),
    and, when there is no GPU, for convolutional networks and edge-popup supermasks, which
    the plain graph runs faster on CPU.
    """

    def __init__(self, model, optimizer_name="adam", learning_rate=1e-3, momentum=0.9,
                 strategy=None, jit_compile="auto", steps_per_call=STEPS_PER_CALL, log=print,
                 weight_decay=0.0, cosine_steps=0, mask_updater=None):
        if jit_compile not in JIT_MODES:
            raise ValueError(f"jit_compile must be one of {', '.join(JIT_MODES)}. "
                             f"Received: {jit_compile!r}")
        self.model = model
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.steps_per_call = int(steps_per_call)
        self.log = log
        if jit_compile == "on" and self.replicas > 1:
            raise ValueError(
                f"--jit_compile=on is not supported with {self.replicas} replicas; allowed "
                "there: auto or off (the plain graph).")
        self.jit_mode = jit_compile
        # changes masks inside each step (tf_lth.core.sparse_training): one replica only
        self.mask_updater = mask_updater
        if mask_updater is not None and self.replicas > 1:
            raise ValueError("a mask updater (gradual pruning, dynamic sparse training) runs on "
                             "one replica; allowed: --strategy=default.")
        self.jit = jit_compile == "on" or (jit_compile == "auto" and self.replicas == 1
                                           and self._xla_suits(model))
        self.scheduled = cosine_steps > 0  # the schedule, not set_learning_rate, sets the rate
        with self.strategy.scope():
            self.optimizer = make_optimizer(optimizer_name, learning_rate, momentum,
                                            weight_decay, cosine_steps)
            self.optimizer.build(model.trainable_variables)
            self.loss_sum = tf.Variable(0.0, trainable=False, name="train_loss_sum")
            self.loss_count = tf.Variable(0.0, trainable=False, name="train_loss_count")
            # 1-based step (counted like loss_count) of the first non-finite loss; 0: none
            self.first_nonfinite = tf.Variable(0.0, trainable=False, name="first_nonfinite")
        self._device = None
        self._compile(self.jit)

    def _xla_suits(self, model) -> bool:
        """Under "auto": XLA, except without a GPU for convolutional networks and edge-popup
        supermasks, where the plain graph is faster on CPU (measured on 2 cores: a conv2
        round took minutes under XLA against 49 s, and an edge-popup step ran 1.5x slower,
        its top-k); said once. Bernoulli supermasks draw hashed noise, which XLA fuses."""
        if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
            return True
        convolutions = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                        keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                        keras.layers.Conv2DTranspose)
        layers = walk_layers(model)
        reason = None
        if any(isinstance(layer, convolutions) for layer in layers):
            reason = "this convolutional network"
        elif any(getattr(layer, "supermask", False) and layer.mask_sampling == "topk"
                 for layer in masked_layers(model)):
            reason = "edge-popup's top-k"
        if reason:
            self.log(f"--jit_compile=auto: the plain graph for {reason} on CPU (faster than "
                     "XLA there); --jit_compile=on forces XLA")
            return False
        return True

    def _compile(self, jit: bool) -> None:
        self.jit = jit
        self._train_call = tf.function(self._train_steps, jit_compile=jit)
        self._eval_call = tf.function(self._evaluate_chunks, jit_compile=jit)
        self._update_call = tf.function(self._mask_update, jit_compile=jit)

    # ---- compiled math -------------------------------------------------------------
    def _batch_loss(self, images, labels, global_batch_size, training=True):
        logits = self.model(images, training=training)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                   from_logits=True)
        return tf.reduce_sum(per_example) / tf.cast(global_batch_size, tf.float32)

    def _replica_step(self, images, labels, global_batch_size):
        updater = self.mask_updater
        if updater is not None:  # the step's mask work, before its forward pass; the
            updater.count_step()  # updates themselves run between calls (_mask_update)
        with updater.training_mode() if updater is not None else contextlib.nullcontext():
            with tf.GradientTape() as tape:
                loss = self._batch_loss(images, labels, global_batch_size)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return loss

    def _compile_mask_update(self, device, batch_size: int) -> None:
        """Compiles the mask-update call before the loop is timed, as the training call is:
        one update on batch 0, then every variable it can touch (model, optimizer, updater)
        set back to its value before."""
        variables = (list(self.model.variables) + list(self.optimizer.variables)
                     + list(self.mask_updater.variables))
        saved = [variable.numpy() for variable in variables]
        self._call("_update_call", device.train_images, device.train_labels,
                   tf.zeros((batch_size,), tf.int32))
        for variable, value in zip(variables, saved):
            variable.assign(value)

    def _mask_update(self, images, labels, batch_indices):
        """The mask updater's update for the next step, on that step's batch."""
        self.mask_updater.update_next(
            tf.gather(images, batch_indices), tf.gather(labels, batch_indices),
            lambda x, y: self._batch_loss(x, y, batch_indices.shape[0], training=False))

    def _replica_gather_step(self, images, labels, batch_indices):
        """One replica's share of the global batch `batch_indices`."""
        size = batch_indices.shape[0] // self.replicas
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * size
        share = batch_indices[start:start + size]
        return self._replica_step(tf.gather(images, share), tf.gather(labels, share),
                                  batch_indices.shape[0])

    def _train_steps(self, images, labels, indices, num_steps):
        """`num_steps` training steps; step k trains on the examples `indices[k]`.

        A `while` on a counter, not `tf.range(num_steps)`: XLA would take the range's
        length as a compile-time constant and compile again for every call length.
        """
        k = tf.constant(0, tf.int32)
        while k < num_steps:
            batch_indices = indices[k]
            if self.replicas == 1:
                loss = self._replica_step(tf.gather(images, batch_indices),
                                          tf.gather(labels, batch_indices),
                                          batch_indices.shape[0])
            else:
                per_replica = self.strategy.run(self._replica_gather_step,
                                                args=(images, labels, batch_indices))
                loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            self.loss_sum.assign_add(loss)
            self.loss_count.assign_add(1.0)
            self.first_nonfinite.assign(tf.where(
                tf.logical_or(self.first_nonfinite > 0.0, tf.math.is_finite(loss)),
                self.first_nonfinite, self.loss_count))
            k += 1

    def _evaluate_chunks(self, images, labels, segments):
        """[segments + 1, 2] sums of (loss, correct) per segment over every chunk."""
        num_segments = 3  # validation, test, padding (a set holds at most two splits)
        totals = tf.zeros([num_segments, 2])
        for index in tf.range(tf.shape(labels)[0]):
            logits = self.model(images[index], training=False)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels[index], logits, from_logits=True)
            correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                                       labels[index]), tf.float32)
            totals += tf.math.unsorted_segment_sum(
                tf.stack([per_example, correct], axis=1), segments[index], num_segments)
        return totals

    def _call(self, function_name: str, *args):
        """Runs a compiled call; under "auto", falls back to the plain graph once if XLA
        refuses the network."""
        try:
            return getattr(self, function_name)(*args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.InternalError) as error:
            if not (self.jit and self.jit_mode == "auto"):
                raise
            first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            self.log(f"XLA could not compile this network ({type(error).__name__}: "
                     f"{first_line}); training with the plain graph (--jit_compile=off)")
            self._compile(False)
            return getattr(self, function_name)(*args)

    # ---- state ---------------------------------------------------------------------
    @property
    def train_tracing_count(self) -> int:
        return self._train_call.experimental_get_tracing_count()

    @property
    def eval_tracing_count(self) -> int:
        return self._eval_call.experimental_get_tracing_count()

    def set_learning_rate(self, value: float) -> None:
        if not self.scheduled:
            self.optimizer.learning_rate.assign(value)

    def reset_optimizer(self) -> None:
        """Fresh optimizer state by assignment (`tf_lth.core.ticket.reset_optimizer_state`), so
        the compiled call is kept; a learning-rate schedule restarts (its step count is
        zeroed too). The training-loss sums start again as well."""
        reset_optimizer_state(self.optimizer)
        self.loss_sum.assign(0.0)
        self.loss_count.assign(0.0)
        self.first_nonfinite.assign(0.0)

    def raise_if_nonfinite(self, round_index: int, iteration: int) -> None:
        """NonFiniteLossError naming the round and the first iteration whose loss was NaN/inf."""
        first = float(self.first_nonfinite.read_value())  # sync point
        if first > 0:
            bad = iteration - int(float(self.loss_count.read_value())) + int(first)
            raise NonFiniteLossError(
                f"round {round_index}, iteration {bad}: the training loss became NaN or infinite"
            )

    def checkpoint(self):
        # model.variables also lists what Keras leaves out of tf.train's object graph (the
        # supermask layers' seed-generator states), so a resumed round samples the same masks
        extra = {}
        if self.mask_updater is not None:
            extra["mask_updater"] = list(self.mask_updater.variables)
        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                   loss_sum=self.loss_sum, loss_count=self.loss_count,
                                   model_variables=list(self.model.variables), **extra)

    # ---- evaluation ----------------------------------------------------------------
    def device_data(self, data) -> _DeviceData:
        """`data` as tensors, converted once per dataset."""
        if self._device is None or self._device.data is not data:
            self._device = _DeviceData(data, self.strategy)
        return self._device

    def evaluate(self, data, splits=("test",)) -> list:
        """[(mean loss, accuracy)] of the model on each split, in one compiled call."""
        images, labels, segments, counts = self.device_data(data).eval_set(tuple(splits))
        totals = np.array(self._call("_eval_call", images, labels, segments))  # sync point
        return [(float(totals[index, 0]) / max(count, 1), float(totals[index, 1]) / max(count, 1))
                for index, count in enumerate(counts)]

    def evaluate_splits(self, data, iteration: int) -> dict:
        (val_loss, val_accuracy), (test_loss, test_accuracy) = self.evaluate(
            data, ("validation", "test"))
        return {
            "iteration": iteration, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "test_loss": test_loss, "test_accuracy": test_accuracy,
        }

    # ---- the driver ----------------------------------------------------------------
    def fit(self, data, schedule: Schedule, hooks: RoundHooks | None = None,
            start_iteration: int = 0, history=None) -> dict:
        """Trains `schedule.iterations` steps, evaluating every `eval_every` and at the end.

        Returns the round's metrics: final and best (lowest validation loss) evaluations,
        throughput and the evaluation history. On SIGTERM or SIGINT (see
        `tf_lth.core.preemption`) it checkpoints after the call in progress and raises
        `preemption.Preempted`.
        """
        hooks = hooks or RoundHooks()
        total, batch_size = schedule.iterations, schedule.batch_size
        if batch_size % self.replicas:
            raise ValueError(f"--batch_size={batch_size} must be divisible by the "
                             f"{self.replicas} replicas.")
        device = self.device_data(data)
        order = data.batch_order(batch_size, schedule.seed)
        if self.train_tracing_count == 0:  # compile now (a call of zero steps), not timed
            self._call("_train_call", device.train_images, device.train_labels,
                       tf.zeros((self.steps_per_call, batch_size), tf.int32),
                       tf.constant(0, tf.int32))
        if schedule.mask_update_at and self._update_call.experimental_get_tracing_count() == 0:
            self._compile_mask_update(device, batch_size)
        history = list(history or [])
        if start_iteration == 0 and not history:
            record = self.evaluate_splits(data, 0)
            history.append(record)
            hooks.evaluated(record)
        bar = _progress_bar(schedule, start_iteration)
        started = time.time()
        iteration, loss_value, steps_per_second = start_iteration, float("nan"), None
        try:
            while iteration < total:
                signal_number = preemption.requested()
                if signal_number:
                    self.raise_if_nonfinite(schedule.round_index, iteration)
                    hooks.save_checkpoint(iteration, history)
                    raise preemption.Preempted(signal_number, round_index=schedule.round_index,
                                               iteration=iteration)
                if schedule.mask_update_at and _contains(schedule.mask_update_at,
                                                         iteration + 1):
                    self._call("_update_call", device.train_images, device.train_labels,
                               tf.constant(order.indices(iteration, 1, pad_to=1)[0]))
                    hooks.masks_updated(iteration + 1)
                count = min(self.steps_per_call, schedule.next_boundary(iteration) - iteration)
                if steps_per_second:  # keep calls short enough to answer signals promptly
                    count = min(count, max(1, int(steps_per_second * CALL_SECONDS)))
                indices = order.indices(iteration, count, pad_to=self.steps_per_call)
                call_started = time.time()
                self._call("_train_call", device.train_images, device.train_labels,
                           tf.constant(indices), tf.constant(count, tf.int32))
                iteration += count
                if iteration in schedule.snapshot_at:
                    hooks.snapshot(iteration)
                if due(iteration, schedule.eval_every, total):
                    loss_value = self._take_train_loss(schedule.round_index, iteration)
                    record = self.evaluate_splits(data, iteration)
                    record["train_loss"] = loss_value
                    history.append(record)
                    hooks.evaluated(record)
                if schedule.checkpoint_due(iteration):
                    self.raise_if_nonfinite(schedule.round_index, iteration)  # never save NaN
                    hooks.save_checkpoint(iteration, history)
                elapsed = time.time() - call_started
                if count >= 10 and elapsed > 0:  # includes dispatch; the first has compiling
                    steps_per_second = count / elapsed
                bar.update(count * batch_size)
                if math.isfinite(loss_value):
                    bar.set_postfix_str(f"loss {loss_value:.4f}", refresh=False)
        finally:
            bar.close()
        seconds = time.time() - started
        trained = total - start_iteration
        final = history[-1]
        best = min(history, key=lambda item: item["val_loss"])
        return {
            "test_accuracy": final["test_accuracy"],
            "val_accuracy": final["val_accuracy"],
            "test_loss": final["test_loss"],
            "val_loss": final["val_loss"],
            "best": {"iteration": best["iteration"], "val_loss": best["val_loss"],
                     "val_accuracy": best["val_accuracy"],
                     "test_accuracy": best["test_accuracy"]},
            "iterations": total,
            "seconds": seconds,
            "examples_per_second": trained * batch_size / seconds if seconds > 0 else 0.0,
            "xla": self.jit,
            "history": history,
        }

    def _take_train_loss(self, round_index: int, iteration: int) -> float:
        """Mean training loss since the last evaluation (a sync point); resets the sums."""
        self.raise_if_nonfinite(round_index, iteration)
        # read_value() also reads a strategy's mirrored variable
        loss_value = float(self.loss_sum.read_value()) / max(
            float(self.loss_count.read_value()), 1.0)
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"round {round_index}: training loss became {loss_value} before iteration "
                f"{iteration}")
        self.loss_sum.assign(0.0)
        self.loss_count.assign(0.0)
        self.first_nonfinite.assign(0.0)
        return loss_value


def _contains(sorted_steps: tuple, step: int) -> bool:
    index = bisect.bisect_left(sorted_steps, step)
    return index < len(sorted_steps) and sorted_steps[index] == step


def _progress_bar(schedule: Schedule, start_iteration: int):
    """A tqdm bar in examples (rate and time left), moved once per compiled call; silent
    when stderr is not a terminal."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=schedule.iterations * schedule.batch_size,
                initial=start_iteration * schedule.batch_size, desc=schedule.label,
                unit="ex", unit_scale=True, dynamic_ncols=True, leave=True,
                disable=not (schedule.progress and sys.stderr.isatty()))


def mask_summary(model) -> tuple:
    """(overall fraction of masked kernel weights kept, {kernel key: fraction kept}); a
    kernel key is the layer name for one-kernel layers (`tf_lth.core.ticket.weights_remaining`)."""
    return weights_remaining(model)
