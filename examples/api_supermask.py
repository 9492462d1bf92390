"""A learned supermask on a model with BatchNorm: only the mask learns.

    python examples/api_supermask.py [--steps=150] [--out=DIR]

`tf_lth.masked(model, supermask=True)` freezes every kernel and bias and every other
variable (BatchNorm's gamma, beta and, with the default `batchnorm="freeze"`, its moving
statistics); only the mask logits train, here with the paper's SGD at learning rate 100.
Evaluation uses the expected mask `sigmoid(logits) > 0.5`, so it is deterministic;
`tf_lth.supermask_mode(model, "sample")` opts into a fresh sample per call.
"""

import keras
import numpy as np

import tf_lth
from _api_common import arguments, export_and_check, mnist

args = arguments(__doc__.splitlines()[0], steps=150, batch_size=100)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}")

inputs = keras.Input((28, 28, 1), name="images")
h = keras.layers.Flatten()(inputs)
h = keras.layers.Dense(300, activation="relu")(h)
h = keras.layers.BatchNormalization(name="norm")(h)
h = keras.layers.Dense(100, activation="relu")(h)
outputs = keras.layers.Dense(10, name="logits")(h)
model = keras.Model(inputs, outputs)

tf_lth.masked(model, supermask=True, seed=0)
print("trainable:", [variable.path for variable in model.trainable_variables])
norm = model.get_layer("norm")
before = {variable.name: variable.numpy() for variable in norm.variables}
model.compile(keras.optimizers.SGD(100.0, momentum=0.9),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)

changed = {name: float(np.abs(variable.numpy() - before[variable.name]).max())
           for name, variable in ((v.name, v) for v in norm.variables)}
print("BatchNorm max change per variable:", changed)
assert not any(changed.values())
first = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
second = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
assert first == second
print(f"expected mask: test accuracy {100 * first['accuracy']:.2f}% (twice the same), "
      f"{100 * tf_lth.summary(model)['weights_remaining']:.1f}% of the weights kept")
tf_lth.supermask_mode(model, "sample")
sampled = [model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
           for _ in range(3)]
print("sampled masks:", ", ".join(f"{100 * value:.2f}%" for value in sampled))
tf_lth.supermask_mode(model, "expected")
export_and_check(model, x_test[:200], args.out)  # exports bake in the expected mask
