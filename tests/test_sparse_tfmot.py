"""tf_lth.GradualPruning against tensorflow-model-optimization itself: the same network,
initial weights, data order and schedule; the per-layer kept counts after every training
step must be equal (tfmot runs in its own legacy-Keras process)."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if importlib.util.find_spec("tensorflow_model_optimization") is None:  # never imported here:
    pytest.skip("tfmot is the reference here", allow_module_level=True)  # it turns tf.keras to 2

import tf_lth  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEDULE = dict(initial_sparsity=0.1, final_sparsity=0.85, begin_step=3, end_step=27,
                power=3, frequency=4)


def _native_counts(x, y, initial):
    inputs = keras.Input((x.shape[1],))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    for layer in model.layers[1:]:
        layer.kernel.assign(initial[f"{layer.name}/kernel"])
        layer.bias.assign(initial[f"{layer.name}/bias"])
    tf_lth.masked(model)
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    counts = []

    class Counts(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append({slot.key: int(np.sum(slot.mask.numpy()))
                           for slot in tf_lth.kernel_slots(model)})

    model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
              callbacks=[tf_lth.GradualPruning(tf_lth.PolynomialDecay(**SCHEDULE)), Counts()])
    return counts


def test_kept_counts_equal_tfmots_at_every_step(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(256, 20)).astype("float32")
    y = rng.integers(0, 3, 256)
    initial = {"hidden/kernel": rng.normal(0, 0.3, (20, 16)).astype("float32"),
               "hidden/bias": np.zeros(16, "float32"),
               "out/kernel": rng.normal(0, 0.3, (16, 3)).astype("float32"),
               "out/bias": np.zeros(3, "float32")}
    np.savez(tmp_path / "arrays.npz", x=x, y=y, **initial)
    spec = {"arrays": str(tmp_path / "arrays.npz"), "schedule": SCHEDULE, "batch_size": 32,
            "epochs": 4, "out": str(tmp_path / "tfmot_counts.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    environment = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, os.path.join(HERE, "tfmot_gradual_worker.py"),
                           str(tmp_path / "spec.json")], env=environment, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads((tmp_path / "tfmot_counts.json").read_text())
    native = _native_counts(x, y, initial)
    assert len(native) == len(reference) == 32  # 8 steps an epoch, 4 epochs
    pruning_steps = [t for t in range(1, 33) if 3 <= t <= 27 and (t - 3) % 4 == 0]
    assert [reference[t - 1] != reference[t - 2] for t in pruning_steps[1:]].count(True) >= 4
    assert native == reference  # every step: the same per-layer kept counts
    # and at the end, tfmot's count by hand: max(round(size x (1 - 0.85)), 1)
    assert native[-1] == {"hidden": round(320 * 0.15), "out": round(48 * 0.15)} == \
        {"hidden": 48, "out": 7}
