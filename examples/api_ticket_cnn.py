"""A lottery ticket for your own functional CNN (BatchNorm, Dropout, softmax head).

    python examples/api_ticket_cnn.py [--steps=100] [--rounds=3] [--out=DIR]

Masks the model's Conv2D and Dense kernels, finds a ticket by iterative pruning with
rewinding around plain `model.fit` (20% per round), and exports it as a SavedModel and a
sparse LiteRT file whose outputs match the Keras model (max |difference| < 1e-5).
"""

import keras

import tf_lth
from _api_common import arguments, export_and_check, mnist

args = arguments(__doc__.splitlines()[0], steps=100, rounds=3)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}, {len(x)} training images per round")

inputs = keras.Input((28, 28, 1), name="images")
h = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
h = keras.layers.BatchNormalization(momentum=0.9)(h)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dropout(0.25)(h)
h = keras.layers.Dense(64, activation="relu")(h)
outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(h)
model = keras.Model(inputs, outputs)

tf_lth.masked(model)  # in place; Conv2D and both Dense kernels now carry masks
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

ticket = tf_lth.find_ticket(
    model,
    lambda model: model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
    rounds=args.rounds,
    rate=0.2,
    evaluate_fn=lambda model: model.evaluate(x_test, y_test, verbose=0, return_dict=True),
    verbose=0,
)
for record in ticket.records:
    print(f"round {record['round']}: {100 * record['weights_remaining']:.1f}% kept, "
          f"test accuracy {100 * record['evaluation']['accuracy']:.2f}%")
for key, kernel in tf_lth.summary(model)["kernels"].items():
    print(f"  {key}: {kernel['kind']} {kernel['shape']}, {kernel['kept']}/{kernel['size']} kept")
export_and_check(model, x_test[:200], args.out)
