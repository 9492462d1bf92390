"""Shared by the examples/api_*.py scripts: data (real MNIST or synthetic) and export checks.

Real MNIST is used when TFDS_DATA_DIR holds tfds' prepared `mnist`; otherwise a learnable
synthetic stand-in of the same shape, so every example runs anywhere.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def arguments(description, **defaults):
    """Common flags: --steps (training steps per round), --out (export folder)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=defaults.get("steps", 100),
                        help="training steps per round")
    parser.add_argument("--batch_size", type=int, default=defaults.get("batch_size", 60))
    parser.add_argument("--out", default=None, help="export folder (default: a temp folder)")
    for name, value in defaults.items():
        if name not in ("steps", "batch_size"):
            parser.add_argument(f"--{name}", type=type(value), default=value)
    parser.add_argument("--random_seed", type=int, default=0, help="keras.utils.set_random_seed")
    args = parser.parse_args()
    args.out = args.out or tempfile.mkdtemp(prefix="tf_lth_example_")
    import keras

    keras.utils.set_random_seed(args.random_seed)  # initial weights, shuffling, dropout
    return args


def mnist(num_train, num_test=2000):
    """(x_train, y_train, x_test, y_test, source): images (N, 28, 28, 1) in [0, 1].

    The first `num_train` training images (MNIST's last 5,000 are validation, never used
    here) and the first `num_test` test images.
    """
    folder = os.environ.get("TFDS_DATA_DIR")
    if folder and os.path.isdir(os.path.join(folder, "mnist")):
        import tensorflow_datasets as tfds

        def split(name):
            data = tfds.as_numpy(tfds.load("mnist", split=name, data_dir=folder, batch_size=-1,
                                           download=False))
            return data["image"].astype("float32") / 255.0, data["label"].astype("int32")

        x, y = split(f"train[:{min(num_train, 55000)}]")
        x_test, y_test = split(f"test[:{num_test}]")
        return x, y, x_test, y_test, "real MNIST"
    from tf_lth.core import data

    loaded = data.synthetic((28, 28, 1), num_train=num_train, num_val=10, num_test=num_test,
                            name="synthetic_mnist")
    return (loaded.train_images, loaded.train_labels, loaded.test_images, loaded.test_labels,
            "synthetic MNIST-shaped data (set TFDS_DATA_DIR for real MNIST)")


def export_and_check(model, inputs, folder, tolerance=1e-5):
    """SavedModel and sparse LiteRT files of `model`; prints and checks max |difference|."""
    import tensorflow as tf

    import tf_lth

    expected = model(inputs, training=False)
    expected = {"": np.asarray(expected)} if not isinstance(expected, dict) else \
        {key: np.asarray(value) for key, value in expected.items()}
    saved = tf_lth.export_saved_model(model, os.path.join(folder, "saved_model"))
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    feed = inputs if isinstance(inputs, dict) else {
        next(iter(serve.structured_input_signature[1])): inputs}
    served = {key: value.numpy() for key, value in
              serve(**{k: tf.constant(v) for k, v in feed.items()}).items()}
    info = tf_lth.export_litert(model, os.path.join(folder, "model_sparse.tflite"), sparse=True)
    lite = tf_lth.run_litert(info["path"], feed)
    (reference,) = expected.values() if len(expected) == 1 else (None,)
    worst = {}
    for name, outputs in (("SavedModel", served), ("LiteRT sparse", lite)):
        worst[name] = max(float(np.abs(value - (reference if reference is not None
                                                else expected[key])).max())
                          for key, value in outputs.items())
    print(f"export: SavedModel max|diff| {worst['SavedModel']:.2e}; LiteRT "
          f"({'sparse-encoded' if info['sparse_encoding_used'] else 'dense'}, "
          f"{info['size_bytes'] / 1024:.1f} KiB) max|diff| {worst['LiteRT sparse']:.2e}")
    assert max(worst.values()) < tolerance, worst
    return worst
