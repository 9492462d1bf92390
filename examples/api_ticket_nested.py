"""A lottery ticket for a nested model: a Sequential feature extractor inside a functional
model, pruned with one global ranking across all its kernels.

    python examples/api_ticket_nested.py [--steps=100] [--rounds=3] [--out=DIR]

The Conv2D layers inside the nested Sequential are masked like the outer Dense head.
`scope="global"` ranks every kernel's weights together (OpenLTH's default) instead of
pruning each layer by the same fraction.
"""

import keras

import tf_lth
from _api_common import arguments, export_and_check, mnist

args = arguments(__doc__.splitlines()[0], steps=100, rounds=3)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}")

features = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(16, 3, activation="relu"),
    keras.layers.MaxPooling2D(),
    keras.layers.Flatten(),
], name="features")
images = keras.Input((28, 28, 1), name="images")
logits = keras.layers.Dense(10, name="logits")(keras.layers.Dense(64, activation="relu")(
    features(images)))
model = keras.Model(images, logits)

tf_lth.masked(model)
print("masked kernels:", [slot.key for slot in tf_lth.kernel_slots(model)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
ticket = tf_lth.find_ticket(
    model, lambda model: model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
    rounds=args.rounds, rate=0.3, scope="global", verbose=0,
    evaluate_fn=lambda model: model.evaluate(x_test, y_test, verbose=0, return_dict=True),
)
for record in ticket.records:
    per_kernel = ", ".join(f"{key} {100 * kept:.0f}%" for key, kept in record["kernels"].items())
    print(f"round {record['round']}: {100 * record['weights_remaining']:.1f}% kept "
          f"({per_kernel}), test accuracy {100 * record['evaluation']['accuracy']:.2f}%")
export_and_check(model, x_test[:200], args.out)
