"""A lottery ticket for a Conv1D sequence classifier (synthetic signals).

    python examples/api_ticket_conv1d.py [--steps=100] [--rounds=3] [--out=DIR]

Three classes of noisy waves (different frequencies), 64 steps long. Causal Conv1D layers
and the Dense head are masked; the ticket is exported to a SavedModel and sparse LiteRT.
"""

import keras
import numpy as np

import tf_lth
from _api_common import arguments, export_and_check

args = arguments(__doc__.splitlines()[0], steps=100, rounds=3)


def waves(count, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    time = np.arange(64)[None, :]
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    signal = np.sin(2 * np.pi * (labels[:, None] + 1) * time / 32 + phase)
    noisy = signal + 0.5 * rng.normal(size=signal.shape)
    return noisy[..., None].astype("float32"), labels.astype("int32")


x, y = waves(args.steps * args.batch_size, 0)
x_test, y_test = waves(1000, 1)

inputs = keras.Input((64, 1), name="signal")
h = keras.layers.Conv1D(16, 5, padding="causal", activation="relu")(inputs)
h = keras.layers.Conv1D(16, 5, dilation_rate=2, padding="causal", activation="relu")(h)
h = keras.layers.GlobalAveragePooling1D()(h)
outputs = keras.layers.Dense(3, name="logits")(h)
model = keras.Model(inputs, outputs)

tf_lth.masked(model)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
ticket = tf_lth.find_ticket(
    model, lambda model: model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0),
    rounds=args.rounds, rate=0.2, verbose=0,
    evaluate_fn=lambda model: model.evaluate(x_test, y_test, verbose=0, return_dict=True),
)
for record in ticket.records:
    print(f"round {record['round']}: {100 * record['weights_remaining']:.1f}% kept, "
          f"test accuracy {100 * record['evaluation']['accuracy']:.2f}%")
export_and_check(model, x_test[:200], args.out)
