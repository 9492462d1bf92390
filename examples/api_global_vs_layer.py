"""Global against per-layer pruning on the paper's fc network (large_final, MNIST).

    nice -n 10 python examples/api_global_vs_layer.py --epochs=2 --rounds=15

Both runs start from the same initial weights and prune the same number of weights per
round (per-layer: 20% of each hidden layer and 10% of the output layer; global: that
total, chosen by one ranking of |w| across the three layers), so they reach 7.0% kept
after 12 rounds and 3.6% after 15. Each round trains `--epochs` with `model.fit` (Adam,
1.2e-3, batch 60) and rewinds to the initial weights. Prints test accuracy side by side
and writes results.json to --out.
"""

import json
import os

import keras

import tf_lth
from _api_common import arguments, mnist
from tf_lth.core import choices, models

args = arguments(__doc__.splitlines()[0], epochs=2.0, rounds=15, seed=0)
x, y, x_test, y_test, source = mnist(55000, num_test=10000)
print(f"data: {source}, {len(x)} training images, {args.epochs} epochs per round")
RATES = {"dense_1": 0.2, "dense_2": 0.2, "output": 0.1}
steps = max(1, int(args.epochs * len(x) / args.batch_size))


def train(model, round_index):
    keras.utils.set_random_seed(args.seed * 1000 + round_index)  # same batches for both
    epochs = max(1, int(round(args.epochs)))
    return model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=0,
                     steps_per_epoch=max(1, steps // epochs) if args.epochs < 1 else None)


results = {}
for scope in choices.PRUNE_SCOPES:
    model = models.build("fc", (28, 28, 1), 10, seed=args.seed)  # masked already
    model.compile(keras.optimizers.Adam(1.2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    ticket = tf_lth.find_ticket(
        model, train, rounds=args.rounds, rate=RATES, criterion="large_final", scope=scope,
        seed=args.seed, verbose=0,
        evaluate_fn=lambda model: model.evaluate(x_test, y_test, verbose=0,
                                                 return_dict=True)["accuracy"])
    results[scope] = ticket.records
    print(f"{scope}: done ({len(ticket.records)} rounds)")

print("round | weights kept | per-layer accuracy | global accuracy | global kept per layer")
for per_layer, global_ in zip(results["layer"], results["global"]):
    kept = ", ".join(f"{k} {100 * v:.1f}%" for k, v in global_["kernels"].items())
    print(f"{per_layer['round']:5d} | {100 * per_layer['weights_remaining']:11.2f}% | "
          f"{100 * per_layer['evaluation']:17.2f}% | {100 * global_['evaluation']:14.2f}% | {kept}")
    assert abs(per_layer["weights_remaining"] - global_["weights_remaining"]) < 1e-6
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as stream:
    json.dump({"epochs": args.epochs, "source": source, "records": results}, stream, indent=1)
print(f"results: {os.path.join(args.out, 'results.json')}")
