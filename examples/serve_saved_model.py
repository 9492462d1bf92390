"""Classify a few test images with an exported SavedModel, without tf_lth installed.

    python examples/serve_saved_model.py --export_dir=RUN_DIR/export [--data_dir=...]

Uses only TensorFlow: `tf.saved_model.load` and the `serving_default` signature, which
takes float32 `images` [batch, H, W, C] in [0, 1] and returns `logits` and `probabilities`.
"""

import os

import numpy as np
import tensorflow as tf

from _images import parse_arguments


def main():
    arguments, images, labels = parse_arguments(__doc__)
    model = tf.saved_model.load(os.path.join(arguments.export_dir, "saved_model"))
    serve = model.signatures["serving_default"]
    outputs = serve(images=tf.constant(images))
    predictions = np.argmax(outputs["probabilities"].numpy(), axis=-1)
    for index, prediction in enumerate(predictions):
        truth = "" if labels is None else f" (label {labels[index]})"
        confidence = outputs["probabilities"].numpy()[index, prediction]
        print(f"image {index}: class {prediction}, p={confidence:.3f}{truth}")


if __name__ == "__main__":
    main()
