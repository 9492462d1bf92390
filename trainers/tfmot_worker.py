"""One target sparsity of the tfmot baseline, in legacy Keras 2 (run by tfmot_baseline.py).

Experiment layer of tf_lth, in its own process: `TF_USE_LEGACY_KERAS=1 python -m
trainers.tfmot_worker ROUND_DIR/worker_spec.json`. The `trainers` package imports nothing
at the top, so Keras 3 is never imported beside tf_keras and tensorflow-model-optimization.
It uses only the NumPy/TensorFlow parts of tf_lth
(`config`, `data`, `masks`, `run_files`, `schedules`, `sparsity`).

With `--final_sparsity` (uniform mode) it trains one run, round 0, with the schedule of
`--experiment=gradual` on the same flags: every Dense/Conv2D kernel, the output layer's too,
wrapped with `PolynomialDecay(--initial_sparsity, --final_sparsity, begin, end,
--pruning_power, frequency)`, (begin, end, frequency) from
`tf_lth.core.config.gradual_window`; after each pruning step t it appends
`{"iteration": t, "kept": {layer: count}}` to round_000/mask_updates.jsonl (the native
run's format), read from the wrappers' masks.

Otherwise, for level r of `--arch`'s lottery schedule (docs/semantics.md, Networks to Pruning schedule):
- builds the arch in tf_keras with the same layer names and the same seeded Glorot-normal
  kernels and zero biases as `tf_lth.core.models.build` (the initial weights are identical);
- wraps each prunable layer in `prune_low_magnitude` with its own PolynomialDecay schedule
  from 0 to `1 - kept_count(size, rate, r) / size` (hidden and output layers keep
  different fractions, as in the lottery schedule);
- trains with the run's optimizer, learning rate, batch size and iteration budget on the
  same batches as a lottery round 0, evaluating every `--eval_every` iterations;
- strips the wrappers, measures the fraction of nonzero kernel weights per layer, and
  writes initial.npz, final.npz, masks.npz, metrics.jsonl and record.json atomically.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

EXIT_CONFIG, EXIT_DATA = 2, 6  # the same statuses as trainers/tfmot_baseline.py
_PARENT = os.getppid()  # the tfmot_baseline run; when it is gone, the worker stops

# (conv filters per block, dense units before the output layer), as in tf_lth.core.models.
CONV_ARCHS = {
    "conv2": ([[64, 64]], [256, 256]),
    "conv4": ([[64, 64], [128, 128]], [256, 256]),
    "conv6": ([[64, 64], [128, 128], [256, 256]], [256, 256]),
}


def _fail(message: str, status: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(status)


def load_data(config: dict):
    """The run's data (`tf_lth.core.data.for_config`, which imports no Keras)."""
    import types

    from tf_lth.core import data as data_lib

    return data_lib.for_config(types.SimpleNamespace(**config))


def build_model(arch: str, input_shape, num_classes: int, seed, schedules=None):
    """The paper's network in tf_keras; layers named in `schedules` are pruning-wrapped."""
    import tf_keras
    import tensorflow_model_optimization as tfmot

    schedules = schedules or {}
    index = iter(range(1_000_000))

    def layer(kind, *args, **kwargs):
        number = next(index)  # the same seed per layer as tf_lth.core.models.build
        kwargs.update(
            kernel_initializer=tf_keras.initializers.GlorotNormal(
                seed=None if seed is None else seed * 1000 + number),
            bias_initializer="zeros",
        )
        built = kind(*args, **kwargs)
        if kwargs["name"] in schedules:
            return tfmot.sparsity.keras.prune_low_magnitude(
                built, pruning_schedule=schedules[kwargs["name"]], name=f"prune_{kwargs['name']}")
        return built

    layers = [tf_keras.Input(shape=tuple(input_shape), name="images"),
              tf_keras.layers.Flatten(name="flatten")]
    if arch == "fc":
        layers += [layer(tf_keras.layers.Dense, 300, activation="relu", name="dense_1"),
                   layer(tf_keras.layers.Dense, 100, activation="relu", name="dense_2")]
    elif arch in CONV_ARCHS:
        layers = layers[:1]
        conv_blocks, dense_units = CONV_ARCHS[arch]
        count = 0
        for block, filters_list in enumerate(conv_blocks, start=1):
            for filters in filters_list:
                count += 1
                layers.append(layer(tf_keras.layers.Conv2D, filters, 3, padding="same",
                                    activation="relu", name=f"conv_{count}"))
            layers.append(tf_keras.layers.MaxPooling2D(2, name=f"pool_{block}"))
        layers.append(tf_keras.layers.Flatten(name="flatten"))
        for number, units in enumerate(dense_units, start=1):
            layers.append(layer(tf_keras.layers.Dense, units, activation="relu",
                                name=f"dense_{number}"))
    else:
        _fail(f"--arch={arch!r} is not allowed; allowed: fc, conv2, conv4, conv6.", EXIT_CONFIG)
    layers.append(layer(tf_keras.layers.Dense, num_classes, name="output"))
    return tf_keras.Sequential(layers, name=arch)


def kernel_layers(model) -> dict:
    """{name: layer} of the Dense/Conv2D layers (unwrapped), in order."""
    import tf_keras

    found = {}
    for item in model.layers:
        inner = getattr(item, "layer", item)
        if isinstance(inner, (tf_keras.layers.Dense, tf_keras.layers.Conv2D)):
            found[inner.name] = inner
    return found


def layer_group(name: str, names: list) -> str:
    """conv, dense or output (the last Dense): the prune-rate group, as tf_lth.core.models."""
    if name.startswith("conv_"):
        return "conv"
    return "output" if name == names[-1] else "dense"


def pruning_window(iterations: int, frequency: int = 100) -> tuple:
    """The baseline's (begin_step, end_step, frequency): `tf_lth.core.sparsity.pruning_window`."""
    from tf_lth.core.sparsity import pruning_window as window

    return window(iterations, frequency)


def make_optimizer(name: str, learning_rate: float, momentum: float):
    import tf_keras

    if name == "adam":
        return tf_keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return tf_keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "rmsprop":
        return tf_keras.optimizers.RMSprop(learning_rate=learning_rate, momentum=0.0)
    _fail(f"--optimizer={name!r} is not allowed; allowed: adam, sgd, rmsprop.", EXIT_CONFIG)


@dataclasses.dataclass
class Pruning:
    """The schedule for tfmot: per-layer kept counts at the end and the window. Level r of
    the lottery schedule (one PolynomialDecay per layer, from 0 to its target, power 3), or
    with `uniform` (the final sparsity) one PolynomialDecay for every layer."""

    names: list        # the kernel layers, in order
    sizes: dict        # {name: kernel size}
    targets: dict      # {name: kept_count(size, rate, level)}, or tfmot's count at `uniform`
    window: tuple      # (begin_step, end_step, frequency)
    initial: float = 0.0          # the sparsity at begin_step
    power: float = 3
    uniform: float | None = None  # --final_sparsity: every layer, the output layer too

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def overall_sparsity(self) -> float:
        return 1.0 - sum(self.targets.values()) / self.total

    def schedules(self) -> dict:
        """{name: PolynomialDecay from 0 to the layer's target}, for layers that prune."""
        import tensorflow_model_optimization as tfmot

        begin, end, frequency = self.window
        if self.uniform is not None:  # as --experiment=gradual: every kernel is masked
            return {name: tfmot.sparsity.keras.PolynomialDecay(
                initial_sparsity=self.initial, final_sparsity=self.uniform, begin_step=begin,
                end_step=end, power=self.power, frequency=frequency) for name in self.names}
        return {
            name: tfmot.sparsity.keras.PolynomialDecay(
                initial_sparsity=0.0, final_sparsity=1.0 - self.targets[name] / self.sizes[name],
                begin_step=begin, end_step=end, power=3, frequency=frequency)
            for name in self.names if self.targets[name] < self.sizes[name]
        }

    def pruning_steps(self, iterations: int) -> set:
        """The training steps (1 = the first batch) at which tfmot updates the masks."""
        from tf_lth.core.schedules import PolynomialDecay

        begin, end, frequency = self.window
        return set(PolynomialDecay(self.initial, self.uniform or 0.0, begin, end,
                                   power=self.power, frequency=frequency)
                   .pruning_steps(iterations))


def round_iterations(config: dict, data, batch_size: int) -> int:
    """The round's training iterations (--iterations, or --epochs of the training split);
    exits with EXIT_CONFIG when one batch is larger than the training set."""
    if config.get("iterations"):
        iterations = int(config["iterations"])
    else:
        iterations = max(1, int(round(config["epochs"] * data.steps_per_epoch(batch_size))))
    if batch_size > len(data.train_images):
        _fail(f"--batch_size={batch_size} is larger than the {len(data.train_images)} training "
              "examples; allowed: 1 to the training set size.", EXIT_CONFIG)
    return iterations


def tfmot_kept(size: int, sparsity: float) -> int:
    """The weights a kernel of `size` keeps at `sparsity` in tfmot 0.8 (pruning_impl.py,
    `_update_mask`): max(round(size x (1 - sparsity)), 1) in float32, half to even."""
    import numpy as np

    return int(max(np.round(np.float32(size) * (np.float32(1) - np.float32(sparsity))), 1))


def uniform_window(config: dict, iterations: int) -> tuple:
    """(begin, end, frequency) of --experiment=gradual on the same flags; a bad window
    exits with EXIT_CONFIG."""
    import types

    from tf_lth.core.config import ConfigError, gradual_window

    try:
        return gradual_window(types.SimpleNamespace(**config), iterations)
    except ConfigError as error:
        _fail(str(error), EXIT_CONFIG)


def pruning_for(config: dict, data, level: int, iterations: int) -> Pruning:
    """The per-layer targets, measured on an unwrapped build of the arch."""
    import numpy as np

    from tf_lth.core import masks

    plain = build_model(config["arch"], data.image_shape, data.num_classes, config["seed"])
    layers = kernel_layers(plain)
    names = list(layers)
    sizes = {name: int(np.prod(layer.kernel.shape)) for name, layer in layers.items()}
    final = config.get("final_sparsity")
    if final is not None:
        targets = {name: tfmot_kept(sizes[name], final) for name in names}
        return Pruning(names, sizes, targets, uniform_window(config, iterations),
                       initial=float(config["initial_sparsity"]),
                       power=config["pruning_power"], uniform=float(final))
    rates = config["prune_rates"]
    targets = {name: masks.kept_count(sizes[name], rates[layer_group(name, names)], level)
               for name in names}
    return Pruning(names, sizes, targets, pruning_window(iterations))


def compiled_steps(model, optimizer) -> tuple:
    """(train_step, evaluate): one compiled training step returning the batch loss, and
    (mean loss, accuracy) over a whole split in compiled chunks of 2,500."""
    import tensorflow as tf
    import tf_keras

    @tf.function(reduce_retracing=True)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(reduce_retracing=True)
    def eval_step(images, labels):
        logits = model(images, training=False)
        losses = tf_keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                 from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        return tf.reduce_sum(losses), tf.reduce_sum(correct)

    def evaluate(images, labels, size=2500):
        loss, correct = 0.0, 0.0
        for start in range(0, len(images), size):
            batch_loss, batch_correct = eval_step(tf.constant(images[start:start + size]),
                                                  tf.constant(labels[start:start + size]))
            loss += float(batch_loss)  # sync point
            correct += float(batch_correct)
        return loss / max(len(images), 1), correct / max(len(images), 1)

    return train_step, evaluate


class Evaluations:
    """Validation and test evaluation with the current sparsity, each record appended to
    a fresh metrics.jsonl in the level's folder."""

    def __init__(self, evaluate, data, layers: dict, total: int, out_dir: str):
        self.evaluate, self.data, self.layers, self.total = evaluate, data, layers, total
        self.path = os.path.join(out_dir, "metrics.jsonl")
        if os.path.exists(self.path):
            os.unlink(self.path)

    def sparsity(self) -> float:
        import numpy as np

        zeros = sum(int(np.sum(layer.kernel.numpy() == 0)) for layer in self.layers.values())
        return zeros / self.total

    def __call__(self, iteration: int, train_loss=None) -> dict:
        from tf_lth.core import run_files

        val_loss, val_accuracy = self.evaluate(self.data.val_images, self.data.val_labels)
        test_loss, test_accuracy = self.evaluate(self.data.test_images, self.data.test_labels)
        record = {"iteration": iteration, "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "test_loss": test_loss, "test_accuracy": test_accuracy,
                  "sparsity": self.sparsity()}
        if train_loss is not None:
            record["train_loss"] = train_loss
        run_files.append_jsonl(self.path, record)
        return record


class MaskUpdates:
    """round_NNN/mask_updates.jsonl as a native --experiment=gradual run writes it: after
    each training step t that is a pruning step, `{"iteration": t, "kept": {layer: count}}`
    from the wrappers' masks (read only there: a read is a sync point)."""

    def __init__(self, model, steps: set, out_dir: str):
        self.steps = steps
        self.wrappers = {item.layer.name: item for item in model.layers
                         if hasattr(item, "pruning_vars")}
        self.path = os.path.join(out_dir, "mask_updates.jsonl")
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __call__(self, iteration: int) -> None:
        import numpy as np

        from tf_lth.core import run_files

        if iteration not in self.steps:
            return
        kept = {name: int(np.count_nonzero(wrapper.pruning_vars[0][1].numpy()))
                for name, wrapper in self.wrappers.items()}
        run_files.append_jsonl(self.path, {"iteration": iteration, "kept": kept})


def train(train_step, evaluation, data, config: dict, level: int, iterations: int,
          mask_updates=None) -> tuple:
    """Trains on lottery round 0's batches, evaluating every --eval_every iterations and at
    the end; returns (history, seconds). A non-finite training loss exits with status 3.
    `mask_updates(iteration)`, when given, runs after every training step."""
    import tensorflow as tf

    batch_size = int(config["batch_size"])
    history = [evaluation(0)]
    batches = data.train_batches(batch_size, config["seed"] * 1000)  # lottery round 0's order
    eval_every = int(config["eval_every"])
    started = time.time()
    loss_sum, loss_count = tf.constant(0.0), 0
    for iteration in range(1, iterations + 1):
        _stop_if_signalled(level, iteration - 1)
        images, labels = next(batches)
        loss_sum += train_step(images, labels)
        loss_count += 1
        if mask_updates is not None:
            mask_updates(iteration)
        if iteration == iterations or iteration % eval_every == 0:
            train_loss = float(loss_sum) / loss_count  # sync point
            if not math.isfinite(train_loss):
                _fail(f"level {level}: training loss became {train_loss} between iterations "
                      f"{iteration - loss_count + 1} and {iteration}", 3)
            loss_sum, loss_count = tf.constant(0.0), 0
            history.append(evaluation(iteration, train_loss))
    return history, time.time() - started


def stripped_state(model) -> tuple:
    """(stripped model, {name: final kernel}, {name: mask of its nonzero weights})."""
    import numpy as np
    import tensorflow_model_optimization as tfmot

    stripped = tfmot.sparsity.keras.strip_pruning(model)
    final_kernels = {name: layer.kernel.numpy()
                     for name, layer in kernel_layers(stripped).items()}
    kept_masks = {name: (kernel != 0).astype(np.float32) for name, kernel in final_kernels.items()}
    return stripped, final_kernels, kept_masks


def level_record(level: int, pruning: Pruning, kept_masks: dict, finals: dict, history: list,
                 iterations: int, batch_size: int, seconds: float) -> dict:
    """record.json of the level; `finals` holds the stripped model's test and validation
    (loss, accuracy). Only evaluations at the target sparsity compete for "best": an
    earlier, denser point would credit the baseline with a network it does not return."""
    begin, end, frequency = pruning.window
    schedule = {"kind": "PolynomialDecay", "initial_sparsity": pruning.initial,
                "power": pruning.power, "begin_step": begin, "end_step": end,
                "frequency": frequency}
    if pruning.uniform is not None:
        schedule["final_sparsity"] = pruning.uniform
    kept = sum(float(mask.sum()) for mask in kept_masks.values())
    (test_loss, test_accuracy), (val_loss, val_accuracy) = finals["test"], finals["val"]
    at_target = [item for item in history if item["iteration"] >= end] or history[-1:]
    best = min(at_target, key=lambda item: item["val_loss"])
    return {
        "round": level,
        "prune_level": level,
        "criterion": "tfmot_magnitude",
        "weights_remaining": kept / pruning.total,
        "layers": {name: float(mask.mean()) for name, mask in kept_masks.items()},
        "target_weights_remaining": 1.0 - pruning.overall_sparsity,
        "target_layers": {name: pruning.targets[name] / pruning.sizes[name]
                          for name in pruning.names},
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy,
        "test_loss": test_loss,
        "val_loss": val_loss,
        "best": {"iteration": best["iteration"], "val_loss": best["val_loss"],
                 "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"]},
        "iterations": iterations,
        "seconds": seconds,
        "examples_per_second": iterations * batch_size / seconds if seconds > 0 else 0.0,
        "evaluations": len(history),
        "pruning_schedule": schedule,
    }


def write_level(out_dir: str, initial: dict, final_kernels: dict, kept_masks: dict,
                record: dict) -> None:
    """initial.npz, final.npz, masks.npz and record.json, each written atomically."""
    from tf_lth.core import run_files

    run_files.save_arrays(os.path.join(out_dir, "initial.npz"), initial)
    run_files.save_arrays(os.path.join(out_dir, "final.npz"),
                          {f"{name}/kernel": kernel for name, kernel in final_kernels.items()})
    run_files.save_arrays(os.path.join(out_dir, "masks.npz"), kept_masks)
    run_files.write_json(os.path.join(out_dir, "record.json"), record)


def run(spec: dict) -> dict:
    """Trains level `spec["level"]` into `spec["out_dir"]`; returns its record."""
    import tensorflow as tf
    import tf_keras
    import tensorflow_model_optimization as tfmot

    from tf_lth.core.data import DataError

    config, level, out_dir = spec["config"], int(spec["level"]), spec["out_dir"]
    if config.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    tf_keras.utils.set_random_seed(config["seed"])
    try:
        data = load_data(config)
    except DataError as error:
        _fail(str(error), EXIT_DATA)
    batch_size = int(config["batch_size"])
    iterations = round_iterations(config, data, batch_size)
    pruning = pruning_for(config, data, level, iterations)
    schedules = pruning.schedules()
    tf_keras.backend.clear_session()
    model = build_model(config["arch"], data.image_shape, data.num_classes, config["seed"],
                        schedules)
    layers = kernel_layers(model)
    initial = {name: layer.kernel.numpy() for name, layer in layers.items()}
    optimizer = make_optimizer(config["optimizer"], config["learning_rate"],
                               config.get("momentum", 0.9))
    step_callback = tfmot.sparsity.keras.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()  # pruning_step starts at 0; each training call adds 1
    train_step, evaluate = compiled_steps(model, optimizer)
    evaluation = Evaluations(evaluate, data, layers, pruning.total, out_dir)
    begin, end, frequency = pruning.window
    shape = ("" if pruning.uniform is None else
             f" (every layer, sparsity {pruning.initial} to {pruning.uniform}, power "
             f"{pruning.power})")
    print(f"level {level}: tfmot prune_low_magnitude to "
          f"{100 * (1 - pruning.overall_sparsity):.2f}% of weights remaining{shape}, pruning "
          f"from iteration {begin} to {end} every {frequency}, {iterations} iterations",
          flush=True)
    mask_updates = None
    if pruning.uniform is not None:
        mask_updates = MaskUpdates(model, pruning.pruning_steps(iterations), out_dir)
    history, seconds = train(train_step, evaluation, data, config, level, iterations,
                             mask_updates)
    step_callback.on_epoch_end(-1)  # weights = weights * mask before stripping
    stripped, final_kernels, kept_masks = stripped_state(model)
    finals = {"test": evaluate_plain(stripped, data.test_images, data.test_labels),
              "val": evaluate_plain(stripped, data.val_images, data.val_labels)}
    record = level_record(level, pruning, kept_masks, finals, history, iterations, batch_size,
                          seconds)
    write_level(out_dir, initial, final_kernels, kept_masks, record)
    best = record["best"]
    print(f"level {level}: {100 * record['weights_remaining']:.2f}% of weights remaining, "
          f"test accuracy {100 * record['test_accuracy']:.2f}% (at best validation loss at "
          f"the target: {100 * best['test_accuracy']:.2f}%, iteration {best['iteration']}), "
          f"{record['examples_per_second']:.0f} examples/s", flush=True)
    return record


def _stop_if_signalled(level: int, iteration: int) -> None:
    """Exits between steps on SIGTERM or SIGINT (passed on by tfmot_baseline.py), or when
    the parent is gone: the level has no DONE marker, so --resume trains it again."""
    from tf_lth.core import preemption

    signum = preemption.requested()
    if signum:
        sys.stderr.write(f"level {level}: stopped by {preemption.signal_name(signum)} at "
                         f"iteration {iteration}; --resume trains this level again\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)  # no teardown (seconds): every file written is closed
    if os.getppid() != _PARENT:
        sys.stderr.write(f"level {level}: the run that started this worker is gone\n")
        sys.exit(1)


def evaluate_plain(model, images, labels, size=2500):
    """(mean loss, accuracy) of a plain (stripped) tf_keras model."""
    import numpy as np
    import tf_keras

    losses, correct = [], 0
    for start in range(0, len(images), size):
        logits = model(images[start:start + size], training=False).numpy()
        losses.append(tf_keras.losses.sparse_categorical_crossentropy(
            labels[start:start + size], logits, from_logits=True).numpy())
        correct += int(np.sum(np.argmax(logits, -1) == labels[start:start + size]))
    return float(np.concatenate(losses).mean()), correct / max(len(images), 1)


def main(argv) -> int:
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        _fail("the tfmot worker needs TF_USE_LEGACY_KERAS=1 (tfmot supports Keras 2 only); "
              "run it through --experiment=tfmot_baseline.", EXIT_CONFIG)
    if len(argv) != 2:
        _fail("usage: tfmot_worker.py ROUND_DIR/worker_spec.json", EXIT_CONFIG)
    with open(argv[1], encoding="utf-8") as stream:
        spec = json.load(stream)
    from tf_lth.core import preemption

    preemption.install()  # SIGTERM/SIGINT: stop at the next training step
    run(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
