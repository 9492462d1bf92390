"""SavedModel with a serving signature, for TF Serving and `tf.saved_model.load`.

Deployment layer of tf_lth (docs/architecture.md). Two signatures:

- The CLI's, for the paper's networks (`serving_module`, `write_saved_model`): float32
  `images` `[batch, height, width, channels]` in [0, 1] in, `{"logits", "probabilities"}`
  out.
- Any model's own (`model_signature`, `model_serving_module`, used by
  `tf_lth.export_saved_model` and `tf_lth.export_litert`): one named input per model input
  (any shape and dtype, batch free), the model's outputs under their own names, as they
  are (no softmax added, no assumption that they are logits).

The model is saved through a `tf.Module` that tracks the variables explicitly, so loading
needs TensorFlow only (no Keras classes, no tf_lth).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from export.bake import check_plain
from tf_lth.core.keras_compat import build_shapes, functional_graph, functional_inputs
from tf_lth.core.run_files import replace_directory

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
    return write_module(serving_module(plain_model, input_shape), path)


def write_module(module: tf.Module, path: str) -> str:
    """Saves a module with `serve` as `serving_default` at `path` atomically; returns path."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
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


# ---- any model's own signature -------------------------------------------------------
def _identifier(name: str, fallback: str) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", str(name or ""))
    if not name or name.startswith("keras_tensor") or name[0].isdigit():
        return fallback
    return name


def _unique(names: list) -> list:
    seen, result = {}, []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        result.append(name if count == 0 else f"{name}_{count + 1}")
    return result


def _spec(shape, dtype, name) -> tf.TensorSpec:
    shape = list(shape)
    if shape:
        shape[0] = None  # any batch size
    return tf.TensorSpec(shape, tf.as_dtype(dtype or "float32"), name=name)


def model_signature(model: keras.Model, input_signature=None) -> tuple:
    """(flat named TensorSpecs, `call(tensors)`) for the model's own inputs.

    Sequential and functional models give their `keras.Input`s (names, shapes, dtypes,
    and the structure they are passed in: one tensor, a list or a dict). A subclassed
    model gives the shapes of its first call (float inputs; pass `input_signature` for
    other dtypes). `input_signature` (a TensorSpec, or a list or dict of them) overrides
    both. `call` rebuilds the structure and runs the model with `training=False`.
    """
    if input_signature is not None:
        structure = input_signature
        leaves = keras.tree.flatten(structure)
        if not leaves or not all(isinstance(leaf, tf.TensorSpec) for leaf in leaves):
            raise ValueError(
                "input_signature must be a tf.TensorSpec, or a list or dict of them. "
                f"Received: {input_signature!r}"
            )
        names = ([str(key) for key in structure] if isinstance(structure, dict)
                 else [leaf.name for leaf in leaves])
        names = _unique([_identifier(name, f"input_{i}") for i, name in enumerate(names)])
        specs = [_spec(leaf.shape, leaf.dtype, name) for leaf, name in zip(leaves, names)]
        return specs, lambda tensors: model(
            keras.tree.pack_sequence_as(structure, list(tensors)), training=False)
    inputs_struct = functional_inputs(model)
    if inputs_struct is not None:
        leaves = keras.tree.flatten(inputs_struct)
        if isinstance(inputs_struct, dict):
            raw = [str(key) for key in inputs_struct]
            leaves = [inputs_struct[key] for key in inputs_struct]
            structure = {key: None for key in inputs_struct}
        else:
            raw = [leaf.name for leaf in leaves]
            structure = inputs_struct
        fallback = ["inputs"] if len(leaves) == 1 else [f"input_{i}" for i in range(len(leaves))]
        names = _unique([_identifier(name, fallback[i]) for i, name in enumerate(raw)])
        specs = [_spec(leaf.shape, leaf.dtype, name) for leaf, name in zip(leaves, names)]
        if isinstance(structure, dict):
            keys = list(structure)
            return specs, lambda tensors: model(dict(zip(keys, tensors)), training=False)
        return specs, lambda tensors: model(
            keras.tree.pack_sequence_as(structure, list(tensors)), training=False)
    shapes = build_shapes(model)
    if not shapes:
        raise ValueError(
            f"Cannot tell the inputs of model '{model.name}': call it once on a batch, or pass "
            "input_signature=[tf.TensorSpec(...)]."
        )
    arguments = [key.removesuffix("_shape") for key in shapes]
    values = list(shapes.values())
    dtype = getattr(model, "input_dtype", "float32")

    def is_shape(value):
        return isinstance(value, (tuple, list)) and all(
            isinstance(dim, (int, type(None))) for dim in value)

    flat, names, structures = [], [], []
    for argument, value in zip(arguments, values):
        if is_shape(value):
            structures.append(None)
            flat.append(value)
            names.append(argument if argument != "input" else "inputs")
        elif isinstance(value, dict):
            structures.append(list(value))
            for key, shape in value.items():
                flat.append(shape)
                names.append(str(key))
        else:
            raise ValueError(
                f"Cannot tell the inputs of model '{model.name}' from its build shapes "
                f"{shapes}; pass input_signature=[tf.TensorSpec(...)]."
            )
    names = _unique([_identifier(name, f"input_{i}") for i, name in enumerate(names)])
    specs = [_spec(shape, dtype, name) for shape, name in zip(flat, names)]

    def call(tensors):
        tensors, arguments_in = list(tensors), []
        for keys in structures:
            if keys is None:
                arguments_in.append(tensors.pop(0))
            else:
                arguments_in.append({key: tensors.pop(0) for key in keys})
        return model(*arguments_in, training=False)

    return specs, call


def output_names(model: keras.Model, outputs) -> list:
    """Names of the model's outputs: dict keys, else its output layers' names, else output_i."""
    if isinstance(outputs, dict):
        return _unique([_identifier(key, f"output_{i}") for i, key in enumerate(outputs)])
    flat = keras.tree.flatten(outputs)
    known = list(getattr(functional_graph(model) or model, "output_names", None) or [])
    if len(known) != len(flat):
        known = [None] * len(flat)
    return _unique([_identifier(name, f"output_{i}") for i, name in enumerate(known)])


def model_serving_module(model: keras.Model, input_signature=None, exclude=()) -> tf.Module:
    """A tf.Module whose `serve(*inputs)` returns `{output name: tensor}` of `model`.

    Tracks the model's variables except those whose ids are in `exclude` (mask state the
    traced function never reads: see `export.bake.plain_view`).
    """
    specs, call = model_signature(model, input_signature)
    module = tf.Module(name="serving")
    module.model_variables = [variable.value for variable in model.variables
                              if id(variable) not in set(exclude)]

    @tf.function(input_signature=specs)
    def serve(*tensors):
        outputs = call(tensors)
        if isinstance(outputs, dict):
            values = list(outputs.values())
        else:
            values = keras.tree.flatten(outputs)
        return dict(zip(output_names(model, outputs), values))

    module.serve = serve
    module.input_names = [spec.name for spec in specs]
    return module
