"""Prune and rewind by hand, in your own loop: the building blocks `find_ticket` uses.

    python examples/api_prune_and_rewind.py [--steps=100] [--out=DIR]

Shows the state helpers keeping masks and weights apart: `weights_state` / `rewind`, and
the ordinary Keras idiom `initial = model.get_weights(); ...; model.set_weights(initial)`,
which is safe because masks are not weights (it never un-prunes). Then one round of late
resetting with `RewindSnapshot`, and a global prune with a criterion that needs w_init.
"""

import keras
import numpy as np

import tf_lth
from _api_common import arguments, export_and_check, mnist

args = arguments(__doc__.splitlines()[0], steps=100)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}")

model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
tf_lth.masked(model)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])

# Round 0: train, taking the weights after step 10 for late resetting.
initial = model.get_weights()  # kernels and biases only: no masks in here
snapshot = tf_lth.RewindSnapshot(step=10)
model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, callbacks=[snapshot])

# Prune half of each layer by final magnitude, then the Keras idiom: it keeps the masks.
tf_lth.prune(model, 0.5)
model.set_weights(initial)
print(f"after set_weights(initial): {100 * tf_lth.weights_remaining(model)[0]:.1f}% kept")
assert abs(tf_lth.weights_remaining(model)[0] - 0.5) < 0.01

# Round 1: rewind to step 10 (every weight; masks stay), train again.
tf_lth.rewind(model, snapshot.state, reset_optimizer=True)
model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)

# Round 2: a global prune by magnitude increase since step 10, which needs w_init.
tf_lth.prune(model, 0.5, criterion="magnitude_increase", reference=snapshot.state,
             scope="global")
tf_lth.rewind(model, snapshot.state, reset_optimizer=True)
model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
fraction, per_layer = tf_lth.weights_remaining(model)
accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
print(f"{100 * fraction:.1f}% kept ({', '.join(f'{k} {100 * v:.1f}%' for k, v in per_layer.items())}),"
      f" test accuracy {100 * accuracy:.2f}%")
plain = tf_lth.strip(model)  # a plain keras.Sequential with zeros where pruned
print(f"stripped: {np.mean(plain.layers[1].kernel.numpy() == 0):.1%} zeros in the first kernel")
export_and_check(model, x_test[:200], args.out)
