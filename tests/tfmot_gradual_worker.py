"""tfmot's gradual pruning of a small dense network, for tests/test_sparse_tfmot.py.

Run as `TF_USE_LEGACY_KERAS=1 python tests/tfmot_gradual_worker.py SPEC.json`: legacy Keras 2
and tensorflow-model-optimization in their own process (they never share one with Keras 3).
SPEC names an npz with the data and the initial weights, the schedule's arguments, and
where to write the per-step kept counts (JSON: one {layer: kept} per training step).
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402


def main(spec_path):
    with open(spec_path, encoding="utf-8") as stream:
        spec = json.load(stream)
    arrays = np.load(spec["arrays"])
    schedule = tfmot.sparsity.keras.PolynomialDecay(**spec["schedule"])
    prune = tfmot.sparsity.keras.prune_low_magnitude
    model = tf_keras.Sequential([
        tf_keras.Input((arrays["x"].shape[1],)),
        prune(tf_keras.layers.Dense(16, activation="relu", name="hidden"),
              pruning_schedule=schedule),
        prune(tf_keras.layers.Dense(3, name="out"), pruning_schedule=schedule),
    ])
    wrappers = {layer.layer.name: layer for layer in model.layers}
    for name, wrapper in wrappers.items():
        wrapper.layer.kernel.assign(arrays[f"{name}/kernel"])
        wrapper.layer.bias.assign(arrays[f"{name}/bias"])
    model.compile(tf_keras.optimizers.Adam(0.01),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    counts = []

    class Counts(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append({name: int(np.sum(wrapper.pruning_vars[0][1].numpy()))
                           for name, wrapper in wrappers.items()})

    model.fit(arrays["x"], arrays["y"], batch_size=spec["batch_size"], epochs=spec["epochs"],
              shuffle=False, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), Counts()])
    with open(spec["out"], "w", encoding="utf-8") as stream:
        json.dump(counts, stream)


if __name__ == "__main__":
    main(sys.argv[1])
