"""A lottery ticket for a subclassed Keras model, rewound to step 20 (late resetting).

    python examples/api_ticket_subclassed.py [--steps=100] [--rounds=3] [--out=DIR]

`tf_lth.masked` masks the layers a subclassed model holds as attributes, in place (Keras
cannot clone such a model). `find_ticket` passes a `RewindSnapshot` callback to `fit`, so
every round restarts from the weights after step 20 of round 0. The model is then exported
directly (the exporters make its layers plain while tracing) and, last, stripped in place
into a plain Keras model.
"""

import keras
import numpy as np

import tf_lth
from _api_common import arguments, export_and_check, mnist


class SmallNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
        self.norm = keras.layers.BatchNormalization(momentum=0.9)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(64, activation="relu")
        self.logits = keras.layers.Dense(10)

    def call(self, images, training=False):
        x = self.norm(self.conv(images), training=training)
        return self.logits(self.hidden(self.flatten(x)))


args = arguments(__doc__.splitlines()[0], steps=100, rounds=3)
x, y, x_test, y_test, source = mnist(args.steps * args.batch_size)
print(f"data: {source}")

model = SmallNet()
model(x[:1])  # build it: masking needs the kernels to exist
tf_lth.masked(model)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])


def train(model, callbacks):
    return model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0,
                     callbacks=callbacks)


rates = {model.conv.name: 0.1, model.hidden.name: 0.2, model.logits.name: 0.1}
ticket = tf_lth.find_ticket(
    model, train, rounds=args.rounds, rate=rates, rewind_to=20, verbose=0,
    evaluate_fn=lambda model: model.evaluate(x_test, y_test, verbose=0, return_dict=True),
)
for record in ticket.records:
    print(f"round {record['round']}: {100 * record['weights_remaining']:.1f}% kept, "
          f"test accuracy {100 * record['evaluation']['accuracy']:.2f}%")

export_and_check(model, x_test[:200], args.out)
expected = model.predict(x_test[:200], verbose=0)
tf_lth.strip(model, inplace=True)  # now a plain SmallNet of stock Keras layers
assert type(model.hidden) is keras.layers.Dense
print(f"stripped in place: max|diff| "
      f"{np.abs(model.predict(x_test[:200], verbose=0) - expected).max():.2e}, "
      f"{np.mean(model.hidden.kernel.numpy() == 0):.1%} of the hidden kernel is zero")
