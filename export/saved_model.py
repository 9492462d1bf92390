"""SavedModel with a serving signature, for TF Serving and `tf.saved_model.load` (DESIGN.md).

Deployment layer of tf_lth. The `serving_default` signature takes float32 `images`
`[batch, height, width, channels]` in [0, 1] and returns `{"logits", "probabilities"}`.
The model is saved through a `tf.Module` that tracks the variables explicitly, so loading
needs TensorFlow only (no Keras classes, no tf_lth).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from export.bake import check_plain
from tf_lth.run_files import replace_directory

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"


def check_input_shape(input_shape) -> tuple:
    """`input_shape` as a tuple of 3 positive ints (height, width, channels)."""
    try:
        shape = tuple(int(dim) for dim in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            "input_shape must be (height, width, channels) of positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def serving_module(
    plain_model: keras.Model, input_shape, with_probabilities: bool = True
) -> tf.Module:
    """A tf.Module that tracks the model's variables and has `serve(images)`, batch None.

    `serve` returns `{"logits", "probabilities"}`, or the logits tensor alone when
    `with_probabilities` is False (what the LiteRT converter takes).
    """
    input_shape = check_input_shape(input_shape)
    module = tf.Module(name="serving")
    # Keras 3 variables wrap tf.Variables; tracking those is what saves (or freezes) them.
    module.model_variables = [variable.value for variable in plain_model.variables]
    spec = tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(images):
        logits = plain_model(images, training=False)
        if not with_probabilities:
            return logits
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    module.serve = serve
    return module


def write_saved_model(plain_model: keras.Model, path: str, input_shape) -> str:
    """Writes `plain_model` as a SavedModel at `path` (temp dir, then rename); returns path."""
    check_plain(plain_model)
    input_shape = check_input_shape(input_shape)
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    module = serving_module(plain_model, input_shape)
    temporary = tempfile.mkdtemp(prefix=".tmp-saved_model-", dir=parent)
    try:
        tf.saved_model.save(module, temporary, signatures={SIGNATURE_KEY: module.serve})
        os.chmod(temporary, 0o755)  # mkdtemp makes 0700; servers may run as another user
        replace_directory(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def load_signature(path: str) -> Callable:
    """The `serving_default` function of the SavedModel at `path`."""
    return tf.saved_model.load(path).signatures[SIGNATURE_KEY]


def predict(path_or_signature, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Logits of the SavedModel on `images`, in batches."""
    serve = (
        load_signature(path_or_signature)
        if isinstance(path_or_signature, (str, os.PathLike))
        else path_or_signature
    )
    images = np.asarray(images, dtype=np.float32)
    outputs = [
        serve(**{INPUT_NAME: tf.constant(images[start : start + batch_size])})["logits"].numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


def latency_per_example(path_or_signature, images: np.ndarray, repeats: int = 1) -> float:
    """Median seconds of one TensorFlow call at batch 1, after a warm-up."""
    serve = (
        load_signature(path_or_signature)
        if isinstance(path_or_signature, (str, os.PathLike))
        else path_or_signature
    )
    images = np.asarray(images, dtype=np.float32)
    for image in images[:5]:  # warm-up: first calls trace and allocate
        serve(**{INPUT_NAME: tf.constant(image[None])})
    times = []
    for _ in range(int(repeats)):
        for image in images:
            start = time.perf_counter()
            serve(**{INPUT_NAME: tf.constant(image[None])})["logits"].numpy()
            times.append(time.perf_counter() - start)
    return float(statistics.median(times))
