"""`tf_lth.strip`, `export_saved_model`, `export_litert`, `run_litert`: ship your own model.

The Python API's face of the deployment layer (docs/architecture.md): it reuses
`export.bake` (effective kernels, plain Keras twins), `export.saved_model` (the serving
module) and `export.tflite` (conversion, sparse encoding, the CSR re-encoding, LiteRT
checks). Core modules never import it.

Unlike the CLI export (`python -m tf_lth.export`, logits in, logits and probabilities out
for the paper's networks), these take the model's own input signature (any shapes, several
inputs, dict inputs) and return its own outputs under their own names, as they are: a
model ending in softmax exports probabilities, once.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tf_lth.core.layers import masked_layers, unmask_layer_in_place
from tf_lth.core.wrap import is_graph_model


def strip(model: keras.Model, inplace: bool = False, supermask: str = "expected",
          seed: int = 0) -> keras.Model:
    """A plain Keras model whose kernels are the effective kernels (no tf_lth layers).

    Pruned weights are exact zeros (or their frozen values), signed constants and dynamic
    scaling are folded in, and a supermask becomes one fixed mask: the expected mask
    (`supermask="expected"`) or one sample drawn with `seed`. Other layers (BatchNorm,
    Dropout, ...) are copied as they are.

    Args:
        model: A masked model.
        inplace: False returns a new model and leaves `model` masked (Sequential and
            functional models, nested ones included). True turns `model` itself plain and
            returns it; that is the way for subclassed models, which Keras cannot clone.
            The stripped layers' kernels and biases become trainable again; other
            variables a supermask froze stay frozen (set `layer.trainable` to fine-tune).
        supermask, seed: The fixed mask of supermask layers.
    """
    from export.bake import bake, effective_kernels

    if not masked_layers(model):
        raise ValueError(f"Model '{model.name}' has no masked layers; nothing to strip.")
    if inplace:
        kernels = effective_kernels(model, supermask, seed)
        for layer in masked_layers(model):
            unmask_layer_in_place(layer, kernels[id(layer)])
        for name in ("train_function", "test_function", "predict_function"):
            if getattr(model, name, None) is not None:
                setattr(model, name, None)
        return model
    if not is_graph_model(model):
        raise ValueError(
            f"strip(model) copies Sequential and functional models; '{model.name}' is a "
            f"subclassed {type(model).__name__}, which Keras cannot clone. Use "
            "strip(model, inplace=True), or export it directly with tf_lth.export_saved_model "
            "or tf_lth.export_litert."
        )
    return bake(model, supermask, seed)


def _plain_module(model, input_signature, supermask, seed):
    """(context manager, module factory): the model plain in place while tracing."""
    from export.bake import mask_state_ids, plain_view
    from export.saved_model import model_serving_module

    exclude = mask_state_ids(model)
    return plain_view(model, supermask, seed), lambda: model_serving_module(
        model, input_signature, exclude)


def export_saved_model(model: keras.Model, path: str, input_signature=None,
                       supermask: str = "expected", seed: int = 0) -> str:
    """Writes `model` (masked or not) as a SavedModel with a `serving_default` signature.

    The signature takes the model's own inputs by name (`keras.Input` names, dict keys, or
    `inputs` / `input_i`) with a free batch size, and returns `{output name: tensor}`
    (output layer names, dict keys, or `output_i`). Masks are baked in as in `strip`; the
    file needs TensorFlow only. Works for every kind of model: the masked layers are
    made plain in place while tracing and restored afterwards. Returns `path`.

    Args:
        input_signature: Overrides the inputs: a `tf.TensorSpec`, or a list or dict of
            them (needed for a subclassed model with non-float inputs).
    """
    from export.saved_model import write_module

    view, make_module = _plain_module(model, input_signature, supermask, seed)
    with view:
        module = make_module()
        module.serve.get_concrete_function()  # trace while the model is plain
        return write_module(module, path)


def export_litert(model: keras.Model, path: str, sparse: bool = True, int8: bool = False,
                  representative_data=None, input_signature=None,
                  supermask: str = "expected", seed: int = 0) -> dict:
    """Writes `model` as a LiteRT (.tflite) file with its own signature; returns a report.

    Args:
        sparse: Encode weights sparse (`EXPERIMENTAL_SPARSITY`), re-encoding LiteRT's
            block encoding of partly filled blocks as element-wise CSR when smaller. The
            dense file is kept when sparse encoding is not smaller or does not run; the
            report says why.
        int8: int8 weights and activations (float inputs and outputs), calibrated on
            `representative_data`. Otherwise float32, also for a mixed-precision model.
        representative_data: About 100 examples: an array (one input), or a list or dict
            of arrays (one per input, in the signature's order or by name).
        input_signature: As in `export_saved_model`.

    Returns:
        {"path", "kind", "size_bytes", "inputs", "outputs", "sparse_encoding_used",
        "sparse_encoding_reason", ...sizes}. `requires_default_delegates_off` marks a file
        that runs only with LiteRT's built-in kernels (XNNPACK refuses it); `run_litert`
        handles it.
    """
    from export import tflite
    from export.bake import float32_compute

    kind = ("tflite_sparse" if sparse else "tflite") + ("_int8" if int8 else "")
    view, make_module = _plain_module(model, input_signature, supermask, seed)
    with view, float32_compute(model):
        module = make_module()
        dataset = None
        if int8:
            dataset = _representative(representative_data, module.input_names)
        model_bytes, info = tflite.convert_module_with_fallback(module, kind, dataset)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomically(path, model_bytes)
    runner = tflite.load_interpreter(model_bytes, default_delegates=False).get_signature_runner()
    return {"path": path, "kind": kind, "size_bytes": len(model_bytes),
            "inputs": sorted(runner.get_input_details()),
            "outputs": sorted(runner.get_output_details()), **info}


def _write_atomically(path: str, payload: bytes) -> None:
    """Temporary file in the same folder, fsync, rename: never a half-written file."""
    import tempfile

    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _representative(data, names):
    from export.tflite import representative_examples

    if data is None:
        raise ValueError("int8=True needs representative_data (about 100 examples).")
    if isinstance(data, dict):
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"representative_data misses inputs {missing}; it has {sorted(data)}.")
        arrays = [np.asarray(data[name]) for name in names]
    elif isinstance(data, (list, tuple)):
        arrays = [np.asarray(item) for item in data]
    else:
        arrays = [np.asarray(data)]
    if len(arrays) != len(names):
        raise ValueError(
            f"representative_data needs one array per input ({names}). Received {len(arrays)}"
        )
    return representative_examples(arrays)


def run_litert(path_or_bytes, inputs, num_threads: int = 1) -> dict:
    """Runs a file from `export_litert` with `ai_edge_litert`: {output name: array}.

    `inputs`: {input name: array}, or one array for a one-input model; any batch size.
    Files XNNPACK refuses (sparse int8) run on LiteRT's built-in kernels.
    """
    from export import tflite

    model_bytes = tflite.read_model(path_or_bytes)
    default_delegates = tflite.runs_in_default_interpreter(model_bytes) is None
    return tflite.run_signature(model_bytes, inputs, num_threads, default_delegates)
