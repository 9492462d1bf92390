"""Use an exported SavedModel inside a Keras 3 model through `keras.layers.TFSMLayer`.

    python examples/keras_tfsmlayer.py --export_dir=RUN_DIR/export [--data_dir=...]
"""

import argparse
import os

import keras
import numpy as np

from _images import load_images


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export_dir", required=True)
    parser.add_argument("--images", default=None, help=".npy of images (else tfds test split)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data_dir", default=None)
    arguments = parser.parse_args()
    images, labels = load_images(arguments.images, arguments.dataset, arguments.data_dir)
    layer = keras.layers.TFSMLayer(os.path.join(arguments.export_dir, "saved_model"),
                                   call_endpoint="serving_default")
    outputs = layer(images)
    predictions = np.argmax(np.asarray(outputs["logits"]), axis=-1)
    print("predictions:", predictions.tolist())
    if labels is not None:
        print("labels:     ", labels.tolist())


if __name__ == "__main__":
    main()
