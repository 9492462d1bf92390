"""Export every requested format and write `export_report.json` (docs/architecture.md, Deployment).

`export_all` bakes the masked model, writes the SavedModel and LiteRT files into the run's
`export/` folder, checks each one against the masked Keras model (logit parity for float
formats, accuracy for int8), measures size and single-example latency, and describes each
Dense/Conv layer: sparsity, 1x4 block structure, and whether LiteRT runs it sparse.
Every file is written to a temporary name and renamed; the report is written last.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from export import saved_model as saved_model_lib
from export import tflite as tflite_lib
from export.bake import bake, check_supermask_export, expected_supermasks, kernel_layers
from tf_lth.core.run_files import atomic_write_bytes as write_bytes
from tf_lth.core.run_files import write_json

FORMATS = ("saved_model",) + tflite_lib.KINDS
FILE_NAMES = {
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_sparse": "model_sparse.tflite",
    "tflite_int8": "model_int8.tflite",
    "tflite_sparse_int8": "model_sparse_int8.tflite",
}
REPORT_NAME = "export_report.json"
MAX_EVAL_EXAMPLES = 2000  # accuracy and parity; enough for a 0.05-point resolution
NUM_LATENCY_EXAMPLES = 200
NUM_REPRESENTATIVE_IMAGES = 100
FLOAT_TOLERANCE = 1e-4  # max |logit difference| for float formats
INT8_MAX_ACCURACY_DROP = 0.01  # one accuracy point
LITERT_KERNEL_NOTE = (
    "litert_kernel says whether LiteRT runs the layer with its sparse fully-connected "
    "kernel: 'sparse' when the exported sparse-encoded file feeds the layer's weights to "
    "FULLY_CONNECTED still sparse (1x4 zero blocks, 1x16 for int8); 'dense (densified)' "
    "when they are stored dense or expanded by a DENSIFY op at load time (unstructured "
    "zeros, and every convolution). Read from the file's structure; it is validated by "
    "measured latency, not assumed to make the layer faster."
)


def check_formats(formats) -> tuple:
    """`formats` as a tuple of known names, in the order given, without repeats."""
    if isinstance(formats, str):
        formats = [item for item in formats.split(",") if item]
    formats = tuple(dict.fromkeys(formats or ()))
    unknown = [item for item in formats if item not in FORMATS]
    if not formats or unknown:
        raise ValueError(
            f"formats must be a non-empty subset of {', '.join(FORMATS)}. "
            f"Received: formats={list(formats)!r}"
        )
    return formats


def blocks_1x4(kernel: np.ndarray) -> bool:
    """True if the input size is a multiple of 4 and every aligned group of 4 input
    weights of one output unit (axis -2) is all zero or all nonzero."""
    inputs = kernel.shape[-2]
    if inputs % 4:
        return False
    groups = (kernel != 0).reshape(*kernel.shape[:-2], inputs // 4, 4, kernel.shape[-1])
    kept = groups.sum(axis=-2)
    return bool(np.all((kept == 0) | (kept == 4)))


def _litert_shape(layer, kernel: np.ndarray) -> list:
    """The kernel's shape as LiteRT stores it: (out, in) or (out, h, w, in)."""
    if isinstance(layer, keras.layers.Conv2D):
        return [kernel.shape[3], kernel.shape[0], kernel.shape[1], kernel.shape[2]]
    return [kernel.shape[-1], kernel.shape[-2]]


def _match_storage(layers: list, kernels: list, records: list) -> list:
    """Pairs each layer with the first unused LiteRT weight record of its op and shape."""
    used = set()
    matched = []
    for layer, kernel in zip(layers, kernels):
        op = "CONV_2D" if isinstance(layer, keras.layers.Conv2D) else "FULLY_CONNECTED"
        shape = _litert_shape(layer, kernel)
        found = None
        for index, record in enumerate(records):
            if index not in used and record["op"] == op and record["shape"] == shape:
                used.add(index)
                found = record
                break
        matched.append(found)
    return matched


def layer_report(layers: list, sparse_files: dict) -> list:
    """Per Dense/Conv layer (`layers`: the baked model's `kernel_layers`): shape, sparsity,
    1x4 blocks and the LiteRT kernel verdict.

    `sparse_files` maps each exported sparse-encoded format to its flatbuffer bytes.
    """
    kernels = [np.asarray(layer.kernel.numpy()) for layer in layers]
    storage = {
        kind: _match_storage(layers, kernels, tflite_lib.weight_storage(model_bytes))
        for kind, model_bytes in sparse_files.items()
    }
    entries = []
    for index, (layer, kernel) in enumerate(zip(layers, kernels)):
        by_format = {
            kind: (matched[index] or {}).get("storage", "unknown")
            for kind, matched in storage.items()
        }
        sparse_somewhere = any(value == "sparse" for value in by_format.values())
        entries.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "kernel_shape": list(kernel.shape),
                "weights": int(kernel.size),
                "nonzero_weights": int(np.count_nonzero(kernel)),
                "sparsity": float(1.0 - np.count_nonzero(kernel) / kernel.size),
                "blocks_1x4": blocks_1x4(kernel),
                "litert_kernel": "sparse" if sparse_somewhere else "dense (densified)",
                "litert_weight_storage": by_format,
            }
        )
    return entries


# Speed-up of the sparse over the dense one-layer file at which a layer counts as run
# sparse; below it the sparse file runs at dense speed (densified at load).
MEASURED_SPARSE_SPEEDUP = 1.15
# Layers with fewer weights are dominated by invoke overhead: measured, not judged.
MIN_WEIGHTS_TO_JUDGE = 16384


def measure_layer_latencies(layers: list, num_examples: int = 200,
                            seed: int = 0) -> dict:
    """Per Dense layer: LiteRT latency of that layer alone, dense and sparse-encoded float.

    Validates the per-layer `litert_kernel` verdict by measurement (one thread, batch 1):
    a layer LiteRT runs with its sparse kernel is faster as a sparse file; a densified one
    is not. Convolutions are not measured (LiteRT has no sparse convolution kernel).
    """
    rng = np.random.default_rng(seed)
    measured = {}
    for layer in layers:
        if not isinstance(layer, keras.layers.Dense):
            continue
        kernel = np.asarray(layer.kernel.numpy())
        # image-shaped input, as the exporters expect; the reshape costs next to nothing
        single = keras.Sequential([keras.Input((kernel.shape[0], 1, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(kernel.shape[1], name=layer.name)])
        single.layers[-1].set_weights([kernel, np.zeros(kernel.shape[1], np.float32)])
        inputs = rng.uniform(size=(num_examples, kernel.shape[0], 1, 1)).astype(np.float32)
        dense_bytes = tflite_lib.convert(single, "tflite")
        sparse_bytes, info = tflite_lib.convert_with_fallback(single, "tflite_sparse")
        dense_s = tflite_lib.latency_per_example(dense_bytes, inputs, num_threads=1, repeats=3)
        sparse_s = tflite_lib.latency_per_example(sparse_bytes, inputs, num_threads=1, repeats=3)
        measured[layer.name] = {
            "latency_dense_us": 1e6 * dense_s,
            "latency_sparse_us": 1e6 * sparse_s,
            "measured_speedup": dense_s / sparse_s if sparse_s > 0 else None,
            "sparse_encoding_used": bool(info.get("sparse_encoding_used")),
        }
    return measured


def _attach_measurements(entries: list, measured: dict) -> None:
    for entry in entries:
        result = measured.get(entry["name"])
        if result is None:
            entry["measured"] = None
            entry["verdict_agrees_with_measurement"] = None
            continue
        entry["measured"] = result
        if entry["weights"] < MIN_WEIGHTS_TO_JUDGE or result["measured_speedup"] is None:
            entry["verdict_agrees_with_measurement"] = None
            continue
        runs_sparse = result["measured_speedup"] >= MEASURED_SPARSE_SPEEDUP
        entry["verdict_agrees_with_measurement"] = bool(
            runs_sparse == (entry["litert_kernel"] == "sparse"))


def weights_remaining(layers: list) -> float:
    """Fraction of nonzero kernel weights over the Dense/Conv `layers`' kernels."""
    kernels = [np.asarray(layer.kernel.numpy()) for layer in layers]
    total = sum(kernel.size for kernel in kernels)
    return float(sum(np.count_nonzero(kernel) for kernel in kernels) / max(total, 1))


def _directory_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )


def _check_images(images, input_shape: tuple, argument: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != input_shape or len(images) == 0:
        raise ValueError(
            f"{argument} must be a non-empty float array shaped "
            f"(batch, {', '.join(map(str, input_shape))}). "
            f"Received: {argument}.shape={images.shape}"
        )
    return images


def _keras_logits(model: keras.Model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return np.concatenate(
        [
            np.asarray(model(images[start : start + batch_size], training=False))
            for start in range(0, len(images), batch_size)
        ],
        axis=0,
    )


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _evaluate(logits, reference, labels, int8: bool, keras_accuracy: float) -> dict:
    accuracy = _accuracy(logits, labels)
    max_diff = float(np.max(np.abs(logits - reference)))
    if int8:
        passed = keras_accuracy - accuracy <= INT8_MAX_ACCURACY_DROP + 1e-12
        criterion = f"test accuracy drop vs Keras <= {INT8_MAX_ACCURACY_DROP * 100:g} point"
    else:
        passed = max_diff <= FLOAT_TOLERANCE
        criterion = f"max_abs_logit_diff <= {FLOAT_TOLERANCE:g}"
    return {
        "max_abs_logit_diff": max_diff,
        "argmax_agreement": float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1))),
        "test_accuracy": accuracy,
        "passed": bool(passed),
        "pass_criterion": criterion,
    }


def _representative_images(train_images, input_shape: tuple, seed: int) -> np.ndarray:
    """About 100 training images, drawn with `seed`, to calibrate int8 activations."""
    if train_images is None:
        raise ValueError(
            "int8 formats need train_images to calibrate activations. Received: train_images=None"
        )
    train_images = _check_images(train_images, input_shape, "train_images")
    count = min(NUM_REPRESENTATIVE_IMAGES, len(train_images))
    chosen = np.random.default_rng(seed).choice(len(train_images), count, replace=False)
    return train_images[np.sort(chosen)]


def _write_saved_model(plain, path, input_shape, test_images, latency_images) -> tuple:
    """Writes the SavedModel; returns its logits, size and TF latency per example."""
    saved_model_lib.write_saved_model(plain, path, input_shape)
    serve = saved_model_lib.load_signature(path)
    return (
        saved_model_lib.predict(serve, test_images),
        _directory_size(path),
        {
            "latency_per_example_s": saved_model_lib.latency_per_example(serve, latency_images),
            "latency_runtime": "TensorFlow SavedModel signature, batch 1, median",
        },
    )


def _write_tflite(plain, kind, path, representative, test_images, latency_images) -> tuple:
    """Converts (dense fallback for sparse kinds) and writes; returns logits, size, details."""
    model_bytes, info = tflite_lib.convert_with_fallback(plain, kind, representative)
    write_bytes(path, model_bytes)
    delegates = not info.get("requires_default_delegates_off", False)
    latency = tflite_lib.latency_per_example(model_bytes, latency_images, num_threads=1,
                                             repeats=1, default_delegates=delegates)
    details = {
        "latency_per_example_s": latency,
        "latency_runtime": "LiteRT (ai_edge_litert), "
        + ("default delegates" if delegates else "built-in kernels, XNNPACK off")
        + ", 1 thread, batch 1, median",
        **info,
    }
    logits = tflite_lib.run(model_bytes, test_images, num_threads=1, batch_size=250,
                            default_delegates=delegates)
    return logits, os.path.getsize(path), details, model_bytes


def _check_labels(test_labels, count: int) -> np.ndarray:
    """Integer class labels (one-hot rows turned to indices), one per test image."""
    labels = np.asarray(test_labels)
    if labels.ndim == 2:  # one-hot
        labels = np.argmax(labels, axis=-1)
    labels = labels.reshape(-1)
    if len(labels) != count:
        raise ValueError(
            f"test_labels must have one label per test image ({count}). "
            f"Received: {len(labels)} labels"
        )
    return labels


def _reference_logits(masked_model, plain, supermask_export: str, test_images) -> tuple:
    """(reference logits, max |baked - reference| or None, what the reference is)."""
    baked_logits = _keras_logits(plain, test_images)
    if supermask_export == "expected":
        with expected_supermasks(masked_model):
            reference = _keras_logits(masked_model, test_images)
        return (reference, float(np.max(np.abs(baked_logits - reference))),
                "masked Keras model, training=False, expected supermasks")
    # the masked model would draw a new mask per call
    return baked_logits, None, "baked Keras model (one recorded supermask sample)"


def _write_formats(plain, formats, out_dir, input_shape, representative, test_images,
                   latency_images, checks) -> tuple:
    """Writes and checks each format; returns ({kind: entry}, {kind: sparse-encoded bytes}).
    `checks` holds the reference logits, labels, Keras accuracy and weights remaining."""
    results, sparse_files = {}, {}
    for kind in formats:
        path = os.path.join(out_dir, FILE_NAMES[kind])
        if kind == "saved_model":
            logits, size, details = _write_saved_model(
                plain, path, input_shape, test_images, latency_images
            )
        else:
            logits, size, details, model_bytes = _write_tflite(
                plain, kind, path, representative, test_images, latency_images
            )
            if details["sparse_encoding_used"]:
                sparse_files[kind] = model_bytes
        int8 = kind in tflite_lib.INT8_KINDS
        results[kind] = {
            "file": FILE_NAMES[kind],
            "size_bytes": size,
            "weights_remaining": checks["remaining"],
            **_evaluate(logits, checks["reference"], checks["labels"], int8,
                        checks["keras_accuracy"]),
            **details,
        }
    return results, sparse_files


def export_all(
    masked_model: keras.Model,
    out_dir: str,
    formats,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    train_images: np.ndarray | None,
    input_shape,
    supermask_export: str = "expected",
    seed: int = 0,
    measure_layers: bool = True,
) -> dict:
    """Bakes `masked_model`, writes each format into `out_dir`, checks it, returns the report.

    The reference is the masked Keras model at `training=False` (with expected supermasks
    for "expected"); for "sample" it is the baked model itself, since the masked model
    samples a new mask per call. At most 2000 test images are evaluated, 200 timed.
    `train_images` supplies the int8 calibration images (100 drawn with `seed`).
    """
    formats = check_formats(formats)
    check_supermask_export(supermask_export)
    input_shape = saved_model_lib.check_input_shape(input_shape)
    test_images = _check_images(test_images, input_shape, "test_images")
    labels = _check_labels(test_labels, len(test_images))
    test_images, labels = test_images[:MAX_EVAL_EXAMPLES], labels[:MAX_EVAL_EXAMPLES]
    latency_images = test_images[:NUM_LATENCY_EXAMPLES]
    representative = None
    if any(kind in tflite_lib.INT8_KINDS for kind in formats):
        representative = _representative_images(train_images, input_shape, int(seed))

    plain = bake(masked_model, supermask_export, seed)
    reference, baked_diff, reference_name = _reference_logits(
        masked_model, plain, supermask_export, test_images)
    keras_accuracy = _accuracy(reference, labels)
    plain_layers = kernel_layers(plain)  # asked once, passed to every per-layer step
    remaining = weights_remaining(plain_layers)

    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, REPORT_NAME)
    if os.path.exists(report_path):
        # The report is written last, like a DONE marker: no stale report beside new files.
        os.remove(report_path)
    results, sparse_files = _write_formats(
        plain, formats, out_dir, input_shape, representative, test_images, latency_images,
        dict(reference=reference, labels=labels, keras_accuracy=keras_accuracy,
             remaining=remaining))
    layers = layer_report(plain_layers, sparse_files)
    if measure_layers and "tflite_sparse" in formats:
        _attach_measurements(layers, measure_layer_latencies(plain_layers, seed=int(seed)))
    report = {
        "supermask_export": supermask_export,
        "seed": int(seed),
        "input_shape": list(input_shape),
        "num_test_examples": int(len(test_images)),
        "num_latency_examples": int(len(latency_images)),
        "num_representative_images": 0 if representative is None else int(len(representative)),
        "reference": reference_name,
        "keras_test_accuracy": keras_accuracy,
        "baked_keras_max_abs_logit_diff": baked_diff,
        "weights_remaining": remaining,
        "formats": results,
        "layers": layers,
        "litert_kernel_note": LITERT_KERNEL_NOTE,
        "passed_all": bool(all(entry["passed"] for entry in results.values())),
    }
    write_json(report_path, report)
    return report
