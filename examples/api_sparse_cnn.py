"""Gradual pruning (tfmot's schedule) or RigL on your own functional CNN, in model.fit.

    python examples/api_sparse_cnn.py [--steps=300] [--method=gradual|rigl|set] [--out=DIR]

The tensorflow-model-optimization recipe on Keras 3: `tf_lth.masked(model)` in place of
`prune_low_magnitude`, the same `PolynomialDecay`, a callback in `fit`, `tf_lth.strip` in
place of `strip_pruning`. With --method=rigl or set, dynamic sparse training at the same
final sparsity instead. Exports a SavedModel and a sparse LiteRT file and checks that their
outputs match the Keras model.
"""

import keras
import numpy as np

import tf_lth
from _api_common import arguments, export_and_check, mnist

args = arguments(__doc__.splitlines()[0], steps=300, method="gradual", sparsity=0.8)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}, {len(x)} training images, {args.steps} steps")

inputs = keras.Input((28, 28, 1), name="images")
h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Conv2D(32, 3, activation="relu")(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(64, activation="relu")(h)
outputs = keras.layers.Dense(10, name="logits")(h)
model = keras.Model(inputs, outputs)

tf_lth.masked(model)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"], steps_per_execution=10)
if args.method == "gradual":
    schedule = tf_lth.PolynomialDecay(initial_sparsity=0.0, final_sparsity=args.sparsity,
                                      begin_step=args.steps // 5, end_step=args.steps * 4 // 5,
                                      frequency=max(1, args.steps // 20))
    callback = tf_lth.GradualPruning(schedule, log_dir=f"{args.out}/logs")
else:
    callback = tf_lth.DynamicSparse(args.sparsity, method=args.method,
                                    update_every=max(1, args.steps // 10))
model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, callbacks=[callback])
_, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"{args.method}: test accuracy {100 * accuracy:.2f}%")
kept = total = 0
for key, kernel in tf_lth.summary(model)["kernels"].items():
    kept, total = kept + kernel["kept"], total + kernel["size"]
    print(f"  {key}: {kernel['kind']} {kernel['shape']}, {kernel['kept']}/{kernel['size']} kept")
print(f"sparsity {100 * (1 - kept / total):.1f}% (target {100 * args.sparsity:.0f}%)")
assert abs((1 - kept / total) - args.sparsity) < 0.01
plain = tf_lth.strip(model)  # stock Keras layers, exact zeros where pruned
np.testing.assert_allclose(plain(x_test[:50]), model(x_test[:50]), atol=1e-5)
export_and_check(model, x_test[:200], args.out)
