"""The one training loop every experiment shares (DESIGN.md, "Performance rules").

Experiment layer of tf_lth. `Trainer` compiles one `tf.function` train step and one
evaluation step per experiment; masks, frozen values and the learning rate are variables,
so rounds never retrace. The Python driver (`Trainer.fit`) decides when to evaluate,
checkpoint and report progress; values reach the host only at those points.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tf_lth import run_files
from tf_lth.layers import masked_layers


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def due(iteration: int, every: int, total: int) -> bool:
    """True at multiples of `every` and at the last iteration."""
    return iteration == total or (every > 0 and iteration % every == 0)


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.9):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, momentum=0.0)
    raise ValueError(f"Unknown optimizer {name!r}. Allowed: adam, sgd, rmsprop. Received: {name!r}")


def model_state(model) -> dict:
    """Every variable of the model by path, as NumPy arrays (a sync point)."""
    return {variable.path: np.array(variable) for variable in model.variables}


def set_model_state(model, state: dict, source: str = "state") -> None:
    for variable in model.variables:
        if variable.path not in state:
            raise run_files.CorruptFileError(f"{source}: missing variable {variable.path}")
        value = state[variable.path]
        if tuple(value.shape) != tuple(variable.shape):
            raise run_files.CorruptFileError(
                f"{source}: variable {variable.path} has shape {value.shape}, "
                f"expected {tuple(variable.shape)}"
            )
        variable.assign(value)


class Progress:
    """A one-line progress bar on a terminal; silent when output is not a TTY."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled = enabled and sys.stderr.isatty()
        self.label, self.total, self.last = label, total, 0.0

    def update(self, iteration: int, text: str = "") -> None:
        if not self.enabled:
            return
        now = time.time()
        if now - self.last < 0.2 and iteration != self.total:
            return
        self.last = now
        width = 30
        filled = int(width * iteration / max(self.total, 1))
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{iteration}/{self.total} {text}   "
        )
        if iteration == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class Trainer:
    """Owns a model, its optimizer and the compiled train and evaluation steps."""

    def __init__(self, model, optimizer_name="adam", learning_rate=1e-3, momentum=0.9,
                 strategy=None):
        self.model = model
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.optimizer = make_optimizer(optimizer_name, learning_rate, momentum)
            self.optimizer.build(model.trainable_variables)
            self.loss_sum = tf.Variable(0.0, trainable=False, name="train_loss_sum")
            self.loss_count = tf.Variable(0.0, trainable=False, name="train_loss_count")
            # 1-based step (counted like loss_count) of the first non-finite loss; 0: none
            self.first_nonfinite = tf.Variable(0.0, trainable=False, name="first_nonfinite")
        self._train_step = tf.function(self._distributed_train_step, reduce_retracing=True)
        self._eval_step = tf.function(self._eval_batch, reduce_retracing=True)

    # ---- compiled math -------------------------------------------------------------
    def _replica_step(self, images, labels, global_batch_size):
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            loss = tf.reduce_sum(per_example) / tf.cast(global_batch_size, tf.float32)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        return loss

    def _distributed_train_step(self, images, labels):
        global_batch_size = tf.shape(labels)[0] if self.strategy.num_replicas_in_sync == 1 \
            else self._global_batch_size
        per_replica = self.strategy.run(self._replica_step, args=(images, labels, global_batch_size))
        loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        self.loss_sum.assign_add(loss)
        self.loss_count.assign_add(1.0)
        self.first_nonfinite.assign(tf.where(
            tf.logical_or(self.first_nonfinite > 0.0, tf.math.is_finite(loss)),
            self.first_nonfinite, self.loss_count))
        return loss

    def _eval_batch(self, images, labels):
        logits = self.model(images, training=False)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                          tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct)

    # ---- state ---------------------------------------------------------------------
    @property
    def train_tracing_count(self) -> int:
        return self._train_step.experimental_get_tracing_count()

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)

    def reset_optimizer(self) -> None:
        """Fresh optimizer state by assignment, so the compiled step is kept (SPEC.md 2)."""
        learning_rate = self.optimizer.learning_rate
        for variable in self.optimizer.variables:
            if variable is learning_rate or variable.path == learning_rate.path:
                continue
            variable.assign(tf.zeros(variable.shape, variable.dtype))
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
        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                   loss_sum=self.loss_sum, loss_count=self.loss_count,
                                   model_variables=list(self.model.variables))

    # ---- evaluation ----------------------------------------------------------------
    def evaluate(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 2500):
        """(mean loss, accuracy) of the model on arrays, in large batches."""
        total_loss, total_correct = 0.0, 0.0
        for start in range(0, len(images), batch_size):
            loss, correct = self._eval_step(
                tf.constant(images[start:start + batch_size]),
                tf.constant(labels[start:start + batch_size]),
            )
            total_loss += float(loss)  # sync point
            total_correct += float(correct)
        count = max(len(images), 1)
        return total_loss / count, total_correct / count

    def evaluate_splits(self, data, iteration: int) -> dict:
        val_loss, val_accuracy = self.evaluate(data.val_images, data.val_labels)
        test_loss, test_accuracy = self.evaluate(data.test_images, data.test_labels)
        return {
            "iteration": iteration, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "test_loss": test_loss, "test_accuracy": test_accuracy,
        }

    # ---- the driver ----------------------------------------------------------------
    def fit(self, data, iterations: int, batch_size: int, seed: int, eval_every: int,
            round_index: int = 0, label: str = "train", progress: bool = True,
            start_iteration: int = 0, history=None, on_iteration=None,
            checkpoint_every: int = 0, save_checkpoint=None, log_evaluation=None,
            before_evaluation=None) -> dict:
        """Trains `iterations` steps, evaluating every `eval_every` and at the end.

        Returns the round's metrics: final and best (lowest validation loss) evaluations,
        throughput and the evaluation history. `on_iteration(i)` runs after step i
        (rewind snapshots); `save_checkpoint(i, history)` every `checkpoint_every` steps.
        """
        self._global_batch_size = batch_size
        history = list(history or [])
        if start_iteration == 0 and not history:
            if before_evaluation:
                before_evaluation()
            record = self.evaluate_splits(data, 0)
            history.append(record)
            if log_evaluation:
                log_evaluation(record)
        bar = Progress(progress, f"{label}", iterations)
        batches = data.train_batches(batch_size, seed, start_iteration)
        if self.strategy.num_replicas_in_sync > 1:
            batches = self._distribute(batches, batch_size)
        started = time.time()
        trained = 0
        iteration = start_iteration
        loss_value = float("nan")
        while iteration < iterations:
            images, labels = next(batches)
            self._train_step(images, labels)
            iteration += 1
            trained += 1
            if on_iteration is not None:
                on_iteration(iteration)
            if due(iteration, eval_every, iterations):
                self.raise_if_nonfinite(round_index, iteration)
                # sync point; read_value() also reads a strategy's mirrored variable
                loss_value = float(self.loss_sum.read_value()) / max(
                    float(self.loss_count.read_value()), 1.0)
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"round {round_index}: training loss became {loss_value} between "
                        f"iterations {iteration - eval_every + 1} and {iteration}"
                    )
                self.loss_sum.assign(0.0)
                self.loss_count.assign(0.0)
                self.first_nonfinite.assign(0.0)
                if before_evaluation:
                    before_evaluation()
                record = self.evaluate_splits(data, iteration)
                record["train_loss"] = loss_value
                history.append(record)
                if log_evaluation:
                    log_evaluation(record)
            if checkpoint_every and save_checkpoint and iteration % checkpoint_every == 0 \
                    and iteration < iterations:
                self.raise_if_nonfinite(round_index, iteration)  # never checkpoint NaN weights
                save_checkpoint(iteration, history)
            bar.update(iteration, f"loss {loss_value:.4f}" if math.isfinite(loss_value) else "")
        seconds = time.time() - started
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
            "iterations": iterations,
            "seconds": seconds,
            "examples_per_second": trained * batch_size / seconds if seconds > 0 else 0.0,
            "history": history,
        }

    def _distribute(self, batches, batch_size):
        """Splits each global batch across replicas (cross-replica input)."""
        replicas = self.strategy.num_replicas_in_sync
        if batch_size % replicas:
            raise ValueError(
                f"--batch_size={batch_size} must be divisible by the {replicas} replicas."
            )
        for images, labels in batches:
            def split(context, images=images, labels=labels):
                size = batch_size // replicas
                start = context.replica_id_in_sync_group * size
                return images[start:start + size], labels[start:start + size]
            yield self.strategy.experimental_distribute_values_from_function(split)


def mask_summary(model) -> tuple:
    """(overall fraction of masked kernel weights kept, {layer name: fraction kept})."""
    kept_total, size_total, layers = 0.0, 0, {}
    for layer in masked_layers(model):
        mask = np.array(layer.mask)
        kept_total += float(mask.sum())
        size_total += mask.size
        layers[layer.name] = float(mask.mean())
    return (kept_total / size_total if size_total else 1.0), layers


def path_exists_writable(folder: str) -> str | None:
    """None when `folder` can be created and written, else the reason."""
    try:
        os.makedirs(folder, exist_ok=True)
        # A unique name: processes sharing a parent folder (multi-worker) probe at once.
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(b"0" * 1024)
            stream.flush()
            os.fsync(stream.fileno())
        os.unlink(probe)
        return None
    except OSError as error:
        return error.strerror or str(error)
