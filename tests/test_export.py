"""export/: baking masks, SavedModel, LiteRT conversion and the export report (parity tests).

Synthetic images and hand-set masks only; no dataset. Module-scoped fixtures keep the
number of conversions (about 0.3 s each on 2 cores) small.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from export import report as report_lib
from export import saved_model as saved_model_lib
from export import tflite as tflite_lib
from export.bake import bake, effective_kernel, expected_supermasks, kernel_layers
from tf_lth.core import models
from tf_lth.core.layers import MaskedDense, masked_layers

INPUT_SHAPE = (28, 28, 1)


def _images(count, seed=0):
    return np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)


def _logits(model, images):
    return np.asarray(model(images, training=False))


def _prune(model, density, block=1, seed=0):
    """Sets every mask to keep about `density` of the weights, in 1 x `block` groups."""
    rng = np.random.default_rng(seed)
    for layer in masked_layers(model):
        inputs, outputs = layer.mask.shape
        kept = (rng.random((inputs // block, outputs)) < density).astype("float32")
        layer.mask.assign(np.repeat(kept, block, axis=0))
    return model


@pytest.fixture(scope="module")
def block_sparse():
    """fc at 95% sparsity in 1x4 blocks, and its baked twin."""
    model = _prune(models.build("fc", INPUT_SHAPE, 10, seed=0), 0.05, block=4)
    return model, bake(model)


@pytest.fixture(scope="module")
def unstructured_sparse():
    """fc at 95% unstructured sparsity, and its baked twin."""
    model = _prune(models.build("fc", INPUT_SHAPE, 10, seed=2), 0.05, block=1, seed=2)
    return model, bake(model)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, block_sparse):
    path = str(tmp_path_factory.mktemp("export") / "saved_model")
    saved_model_lib.write_saved_model(block_sparse[1], path, INPUT_SHAPE)
    return path


# --- bake -----------------------------------------------------------------------------


def test_bake_kernel_is_zero_where_pruned_frozen_where_frozen_kernel_where_kept():
    model = models.build("fc", INPUT_SHAPE, 10, seed=3)
    rng = np.random.default_rng(3)
    for layer in masked_layers(model):
        mask = (rng.random(layer.mask.shape) < 0.3).astype("float32")
        shape = layer.mask.shape
        frozen = np.where(rng.random(shape) < 0.5, rng.normal(size=shape), 0.0)
        layer.mask.assign(mask)
        layer.frozen.assign(frozen.astype("float32"))
    plain = bake(model)
    images = _images(16)

    for masked, baked in zip(masked_layers(model), kernel_layers(plain)):
        assert type(baked) is keras.layers.Dense and baked.name == masked.name
        mask, frozen = masked.mask.numpy(), masked.frozen.numpy()
        kernel, raw = baked.kernel.numpy(), masked.kernel_variable.numpy()
        pruned = mask == 0
        assert np.all(kernel[pruned & (frozen == 0)] == 0.0)  # exact zeros
        frozen_at = pruned & (frozen != 0)
        np.testing.assert_array_equal(kernel[frozen_at], frozen[frozen_at])
        np.testing.assert_array_equal(kernel[~pruned], raw[~pruned])
        np.testing.assert_array_equal(baked.bias.numpy(), masked.bias.numpy())
    assert not any(type(layer).__module__.startswith("tf_lth") for layer in plain._flatten_layers())
    np.testing.assert_allclose(_logits(plain, images), _logits(model, images), atol=1e-5)


def test_bake_supermask_signed_constant_uses_expected_mask():
    model = models.build(
        "fc", INPUT_SHAPE, 10, seed=1, supermask=True, weight_transform="signed_constant"
    )
    rng = np.random.default_rng(1)
    for layer in masked_layers(model):
        layer.mask_logits.assign(rng.normal(size=layer.mask_logits.shape).astype("float32"))
    plain = bake(model, supermask_export="expected")
    images = _images(16)

    for masked, baked in zip(masked_layers(model), kernel_layers(plain)):
        kernel, raw = baked.kernel.numpy(), masked.kernel_variable.numpy()
        std = np.std(raw)
        kept = masked.mask_logits.numpy() > 0  # sigmoid(s) > 0.5
        assert np.all(kernel[~kept] == 0.0)
        np.testing.assert_allclose(np.abs(kernel[kept]), std, rtol=1e-6)
        np.testing.assert_array_equal(np.sign(kernel[kept]), np.sign(raw[kept]))
    with expected_supermasks(model):
        expected = _logits(model, images)
    assert all(float(layer.use_expected_mask.numpy()) == 0.0 for layer in masked_layers(model))
    np.testing.assert_allclose(_logits(plain, images), expected, atol=1e-5)


def test_bake_sample_is_reproducible_from_its_seed():
    model = models.build("fc", INPUT_SHAPE, 10, seed=4, supermask=True)
    first, again, other = (bake(model, "sample", seed) for seed in (7, 7, 8))
    kernels = [[layer.kernel.numpy() for layer in kernel_layers(m)] for m in (first, again, other)]
    np.testing.assert_array_equal(kernels[0][0], kernels[1][0])
    assert not np.array_equal(kernels[0][0], kernels[2][0])
    # sigmoid(0) = 0.5: a sample keeps about half of the weights.
    assert 0.45 < np.count_nonzero(kernels[0][0]) / kernels[0][0].size < 0.55


def test_bake_functional_model_with_dynamic_scaling():
    inputs = keras.Input((8,), name="features")
    hidden = MaskedDense(8, activation="relu", dynamic_scaling=True, name="hidden")(inputs)
    outputs = MaskedDense(3, name="head")(keras.layers.Dropout(0.1, name="drop")(hidden))
    model = keras.Model(inputs, outputs, name="functional")
    model.get_layer("hidden").mask.assign(np.tile([[1.0], [0.0]], (4, 8)).astype("float32"))
    plain = bake(model)
    features = np.random.default_rng(5).random((6, 8), dtype=np.float32)

    assert [layer.name for layer in plain.layers] == ["features", "hidden", "drop", "head"]
    # Half the weights kept: dynamic scaling doubles them.
    hidden_kernel = plain.get_layer("hidden").kernel.numpy()
    raw = model.get_layer("hidden").kernel_variable.numpy()
    np.testing.assert_allclose(hidden_kernel[0::2], 2.0 * raw[0::2], rtol=1e-6)
    np.testing.assert_allclose(_logits(plain, features), _logits(model, features), atol=1e-5)


def test_bake_rejects_unknown_supermask_export():
    model = models.build("fc", INPUT_SHAPE, 10, seed=0)
    with pytest.raises(ValueError, match="supermask_export='mean'"):
        bake(model, supermask_export="mean")
    with pytest.raises(ValueError, match="rng"):
        effective_kernel(models.build("fc", INPUT_SHAPE, 10, supermask=True).layers[1], "sample")


# --- SavedModel -----------------------------------------------------------------------


def test_saved_model_loads_in_a_fresh_process_without_tf_lth(
    tmp_path, block_sparse, saved_model_dir
):
    images = _images(8, seed=9)
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import numpy as np
            import tensorflow as tf

            serve = tf.saved_model.load({saved_model_dir!r}).signatures["serving_default"]
            outputs = serve(images=tf.constant(np.load("images.npy")))
            np.save("logits.npy", outputs["logits"].numpy())
            np.save("probabilities.npy", outputs["probabilities"].numpy())
            assert "tf_lth" not in sys.modules and "export" not in sys.modules
            """
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = _logits(block_sparse[0], images)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-5)
    probabilities = np.load(tmp_path / "probabilities.npy")
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_saved_model_cli_lists_the_serving_signature(saved_model_dir):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cli = cli if os.path.exists(cli) else shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not installed beside this Python")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [cli, "show", "--dir", saved_model_dir, "--all"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in ("signature_def['serving_default']", "inputs['images']", "outputs['logits']",
                 "outputs['probabilities']", "(-1, 28, 28, 1)"):
        assert text in done.stdout


def test_tfsmlayer_loads_the_saved_model(block_sparse, saved_model_dir):
    layer = keras.layers.TFSMLayer(saved_model_dir, call_endpoint="serving_default")
    images = _images(4, seed=10)
    outputs = layer(images)
    assert set(outputs) == {"logits", "probabilities"}
    expected = _logits(block_sparse[0], images)
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected, atol=1e-5)


def test_write_saved_model_rejects_a_masked_model_and_a_bad_shape(tmp_path, block_sparse):
    with pytest.raises(ValueError, match="plain_model"):
        saved_model_lib.write_saved_model(block_sparse[0], str(tmp_path / "sm"), INPUT_SHAPE)
    with pytest.raises(ValueError, match="input_shape"):
        saved_model_lib.write_saved_model(block_sparse[1], str(tmp_path / "sm"), (28, 28))
    assert not os.listdir(tmp_path)


# --- LiteRT ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", tflite_lib.KINDS)
def test_every_kind_converts_to_builtin_ops_and_matches_keras(kind, block_sparse):
    model, plain = block_sparse
    images = _images(64, seed=11)
    model_bytes = tflite_lib.convert(plain, kind, representative_images=_images(100, seed=12))

    names = {item["op"] for item in tflite_lib.operators(model_bytes)}
    assert "FULLY_CONNECTED" in names
    assert names <= tflite_lib._BUILTIN_NAMES  # no custom or Flex ops
    assert tflite_lib.runs_in_default_interpreter(model_bytes) is None
    logits = tflite_lib.run(model_bytes, images, num_threads=1, batch_size=32)
    expected = _logits(model, images)
    assert logits.shape == expected.shape
    if kind in tflite_lib.INT8_KINDS:
        agreement = np.mean(np.argmax(logits, -1) == np.argmax(expected, -1))
        assert agreement >= 0.9, agreement
    else:
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_run_reads_a_path_and_batch_sizes_agree(tmp_path, block_sparse):
    model_bytes = tflite_lib.convert(block_sparse[1], "tflite")
    path = tmp_path / "model.tflite"
    path.write_bytes(model_bytes)
    images = _images(10, seed=13)
    one = tflite_lib.run(str(path), images, batch_size=1)
    np.testing.assert_allclose(tflite_lib.run(model_bytes, images, batch_size=4), one, atol=1e-6)
    assert tflite_lib.latency_per_example(model_bytes, images, num_threads=1, repeats=2) > 0.0


def test_sparse_encoding_shrinks_a_95_percent_sparse_file(unstructured_sparse):
    plain = unstructured_sparse[1]
    dense = tflite_lib.convert(plain, "tflite")
    sparse = tflite_lib.convert(plain, "tflite_sparse")
    # CSR-like encoding stores each kept weight (4-byte float) plus its column index (at most
    # 4 bytes) and one offset per row: at 5% density that is about 0.05 * 8 / 4 = 10% of the
    # dense bytes, so well under a quarter whatever the index width.
    assert len(sparse) / len(dense) < 0.25, (len(sparse), len(dense))
    # Unstructured zeros are densified at load time; 1x4 blocks stay sparse.
    assert {record["storage"] for record in tflite_lib.weight_storage(sparse)} == {"densified"}


def test_block_sparse_weights_stay_sparse_in_litert(block_sparse):
    sparse = tflite_lib.convert(block_sparse[1], "tflite_sparse")
    records = tflite_lib.weight_storage(sparse)
    assert [record["storage"] for record in records] == ["sparse"] * 3
    assert [record["shape"] for record in records] == [[300, 784], [100, 300], [10, 100]]
    assert all(record["block"] == [1, 4] for record in records)


def test_dense_model_falls_back_to_dense_encoding():
    plain = bake(models.build("fc", INPUT_SHAPE, 10, seed=6))  # 0% sparsity
    model_bytes, info = tflite_lib.convert_with_fallback(plain, "tflite_sparse")
    assert info["sparse_encoding_used"] is False
    assert "not smaller" in info["sparse_encoding_reason"]
    dense = tflite_lib.convert(plain, "tflite")
    assert len(model_bytes) == info["dense_encoded_size_bytes"] == len(dense)
    # every named attempt is recorded in order; only the last (dense) holds
    assert [a["attempt"] for a in info["attempts"]] == [
        "csr_reencoded", "sparse_default_interpreter", "sparse_builtin_kernels", "dense"]
    assert [a["accepted"] for a in info["attempts"]] == [False, False, False, True]


def test_sparse_int8_export_runs_and_says_which_kernels_it_needs(unstructured_sparse):
    # LiteRT 2.3's XNNPACK delegate cannot run int8 weights behind a DENSIFY op; LiteRT's
    # built-in kernels can. The exporter keeps the smaller sparse file and records that it
    # needs XNNPACK off; whatever it keeps must run in the interpreter it names.
    model_bytes, info = tflite_lib.convert_with_fallback(
        unstructured_sparse[1], "tflite_sparse_int8", representative_images=_images(50, seed=14)
    )
    delegates = not info.get("requires_default_delegates_off", False)
    assert tflite_lib.runs_in_default_interpreter(model_bytes, default_delegates=delegates) is None
    if info["sparse_encoding_used"]:
        assert len(model_bytes) < info["dense_encoded_size_bytes"]
    else:
        assert info["sparse_encoding_reason"].endswith("kept the dense file")
    logits = tflite_lib.run(model_bytes, _images(4, seed=15), default_delegates=delegates)
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))


def test_convert_rejects_bad_arguments(block_sparse):
    with pytest.raises(ValueError, match="kind='tflite_fp16'"):
        tflite_lib.convert(block_sparse[1], "tflite_fp16")
    with pytest.raises(ValueError, match="representative_images"):
        tflite_lib.convert(block_sparse[1], "tflite_int8")
    with pytest.raises(ValueError, match="plain_model"):
        tflite_lib.convert(block_sparse[0], "tflite")


# --- export_all -----------------------------------------------------------------------


def test_blocks_1x4_on_hand_made_kernels():
    kernel = np.zeros((8, 2), dtype=np.float32)
    kernel[0:4, 0] = 1.0
    kernel[4:8, 1] = 2.0
    assert report_lib.blocks_1x4(kernel)
    kernel[5, 1] = 0.0  # a zero inside a kept block
    assert not report_lib.blocks_1x4(kernel)
    assert not report_lib.blocks_1x4(np.ones((6, 2)))  # input size not a multiple of 4


def test_export_all_writes_every_format_and_a_passing_report(tmp_path, block_sparse):
    model = block_sparse[0]
    candidates = _images(1000, seed=15)
    logits = _logits(model, candidates)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    # Confidently classified images, so int8 rounding cannot flip a label by chance.
    confident = np.argsort(top2[:, 1] - top2[:, 0])[-200:]
    test_images = candidates[confident]
    test_labels = np.argmax(logits[confident], axis=-1)
    out_dir = tmp_path / "export"

    report = report_lib.export_all(
        model, str(out_dir), list(report_lib.FORMATS), test_images, test_labels,
        train_images=_images(300, seed=16), input_shape=INPUT_SHAPE,
    )

    assert report["passed_all"] is True
    expected_files = list(report_lib.FILE_NAMES.values()) + ["export_report.json"]
    assert sorted(os.listdir(out_dir)) == sorted(expected_files)  # no temporary files left
    with open(out_dir / "export_report.json") as stream:
        assert json.load(stream) == json.loads(json.dumps(report))
    for kind, entry in report["formats"].items():
        for field in ("file", "size_bytes", "weights_remaining", "max_abs_logit_diff",
                      "test_accuracy", "latency_per_example_s", "passed"):
            assert field in entry, (kind, field)
        assert entry["passed"] is True
        assert entry["weights_remaining"] == pytest.approx(0.05, abs=0.01)
    formats = report["formats"]
    assert formats["tflite_sparse"]["sparse_encoding_used"] is True
    assert formats["tflite_sparse"]["size_bytes"] < formats["tflite"]["size_bytes"] / 4
    assert formats["tflite"]["size_bytes"] == os.path.getsize(out_dir / "model.tflite")
    assert [layer["name"] for layer in report["layers"]] == ["dense_1", "dense_2", "output"]
    for layer in report["layers"]:
        assert layer["blocks_1x4"] is True and layer["litert_kernel"] == "sparse"
        assert 0.9 < layer["sparsity"] < 1.0
    assert "latency" in report["litert_kernel_note"]


def test_export_all_rejects_unknown_formats_and_missing_calibration(tmp_path, block_sparse):
    model, out_dir = block_sparse[0], str(tmp_path)
    images, labels = _images(4), np.zeros(4, dtype=np.int32)
    with pytest.raises(ValueError, match="formats"):
        report_lib.export_all(model, out_dir, ["onnx"], images, labels, images, INPUT_SHAPE)
    with pytest.raises(ValueError, match="train_images"):
        report_lib.export_all(model, out_dir, ["tflite_int8"], images, labels, None, INPUT_SHAPE)
    with pytest.raises(ValueError, match="test_labels"):
        report_lib.export_all(model, out_dir, ["tflite"], images, labels[:3], None, INPUT_SHAPE)
    assert not os.listdir(tmp_path)


def test_partly_filled_blocks_are_re_encoded_as_smaller_csr():
    # One kept weight in 2% of the aligned 1x4 blocks: LiteRT's converter picks its block
    # encoding (whole blocks stored: 4 floats per kept weight); CSR needs 1 float + 1 index.
    model = models.build("fc", INPUT_SHAPE, 10, seed=21)
    rng = np.random.default_rng(21)
    for layer in model.layers:
        if hasattr(layer, "mask"):
            rows, columns = layer.mask.shape
            mask = np.zeros((rows, columns), np.float32)
            blocks = rng.uniform(size=(rows // 4, columns)) < 0.02
            offsets = rng.integers(0, 4, size=blocks.shape)
            block_rows, block_columns = np.nonzero(blocks)
            mask[block_rows * 4 + offsets[blocks], block_columns] = 1.0
            layer.mask.assign(mask)
    plain = bake(model)
    model_bytes, info = tflite_lib.convert_with_fallback(plain, "tflite_sparse")
    assert info.get("reencoded_as_csr") is True
    assert len(model_bytes) < info["block_encoded_size_bytes"]
    assert [(a["attempt"], a["accepted"]) for a in info["attempts"]] == [("csr_reencoded", True)]
    assert info["attempts"][0]["size_bytes"] == len(model_bytes)
    images = _images(6, seed=22)
    np.testing.assert_allclose(tflite_lib.run(model_bytes, images), plain(images).numpy(),
                               atol=1e-5)
