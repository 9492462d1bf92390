"""What a user would pick instead of tf_lth, timed for `make bench`.

Each function trains one network for a given number of examples and returns
(examples, wall seconds): Keras `model.fit` with XLA and 100 steps per execution, a plain
per-batch `tf.function` loop over `tf.data`, PyTorch eager with the mask re-applied after
every optimizer step (as OpenLTH does), and tf_lth's own command line, end to end, read
from its results.json. None of them runs in tf_lth's training loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stock_network(arch: str, image_shape, seed: int = 0):
    """The paper's network built from stock Keras layers (no masks)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input(image_shape)]
    if arch == "fc":
        layers += [keras.layers.Flatten(), keras.layers.Dense(300, activation="relu"),
                   keras.layers.Dense(100, activation="relu"), keras.layers.Dense(10)]
    elif arch == "conv2":
        layers += [keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                   keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                   keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                   keras.layers.Dense(256, activation="relu"),
                   keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    else:
        raise ValueError(f"no stock reference for {arch!r}")
    return keras.Sequential(layers)


def keras_fit(arch: str, data, batch: int, examples: int, repeats: int = 1):
    """`model.fit(jit_compile=True, steps_per_execution=100)`: a closure timing one epoch
    of `examples` examples (compiled and warmed up before the first timing)."""
    import keras

    model = stock_network(arch, data.image_shape)
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True, steps_per_execution=100)
    examples = examples // batch * batch
    images, labels = data.train_images[:examples], data.train_labels[:examples]
    model.fit(images[:batch * 200], labels[:batch * 200], batch_size=batch, epochs=1,
              verbose=0)  # warm-up: traces and compiles

    def measure():
        started = time.perf_counter()
        model.fit(images, labels, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        return examples, time.perf_counter() - started

    return measure


def tf_function_loop(arch: str, data, batch: int, examples: int):
    """A plain per-batch `tf.function` step over a shuffled `tf.data` pipeline."""
    import keras
    import tensorflow as tf

    model = stock_network(arch, data.image_shape)
    optimizer = keras.optimizers.Adam(1.2e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    examples = examples // batch * batch
    dataset = tf.data.Dataset.from_tensor_slices(
        (data.train_images[:examples], data.train_labels[:examples]))
    dataset = dataset.shuffle(examples, seed=0).batch(batch, drop_remainder=True).prefetch(2)
    for images, labels in dataset.take(3):
        step(images, labels)

    def measure():
        started = time.perf_counter()
        loss = None
        for images, labels in dataset:
            loss = step(images, labels)
        float(loss)
        return examples, time.perf_counter() - started

    return measure


def torch_available() -> str | None:
    """None when PyTorch imports, else why not."""
    try:
        import torch  # noqa: F401
    except Exception as error:  # not installed, or a broken build
        return (f"PyTorch not importable ({type(error).__name__}); install the optional "
                "extra: pip install -e '.[bench]'")
    return None


def torch_masked_fc(data, batch: int, examples: int, kept: float = 0.5):
    """PyTorch eager fc 784-300-100-10 with Adam; masks multiplied into the weights after
    each optimizer step, as OpenLTH does. Threads: torch's default for this machine."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 300), torch.nn.ReLU(),
                                torch.nn.Linear(300, 100), torch.nn.ReLU(),
                                torch.nn.Linear(100, 10))
    linears = [module for module in model if isinstance(module, torch.nn.Linear)]
    generator = torch.Generator().manual_seed(0)
    masks = [(torch.rand(layer.weight.shape, generator=generator) < kept).float()
             for layer in linears]
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    examples = examples // batch * batch
    images = torch.from_numpy(np.ascontiguousarray(data.train_images[:examples]))
    labels = torch.from_numpy(data.train_labels[:examples].astype(np.int64))

    def train(count):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch):
            index = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for layer, mask in zip(linears, masks):
                    layer.weight.mul_(mask)
        return float(loss)

    train(batch * 50)  # warm-up

    def measure():
        started = time.perf_counter()
        train(examples)
        return examples, time.perf_counter() - started

    return measure


def cli_round(flags: list, data_dir: str | None, round_index: int = 1):
    """tf_lth's command line end to end: `python -m tf_lth.train FLAGS` in a fresh folder;
    returns the round's results.json examples/s and seconds (a closure, as above)."""

    def measure():
        with tempfile.TemporaryDirectory(prefix="tf_lth-bench-cli-") as folder:
            run_dir = os.path.join(folder, "run")
            command = [sys.executable, "-m", "tf_lth.train", f"--run_dir={run_dir}",
                       "--noprogress", *flags]
            if data_dir:
                command.append(f"--data_dir={data_dir}")
            environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            finished = subprocess.run(command, cwd=ROOT, env=environment,
                                      capture_output=True, text=True)
            if finished.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}):\n"
                                   f"{finished.stderr[-2000:]}")
            with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as stream:
                record = json.load(stream)["rounds"][round_index]
        examples = record["examples_per_second"] * record["seconds"]
        return examples, record["seconds"]

    return measure
