"""Use an exported SavedModel inside a Keras 3 model through `keras.layers.TFSMLayer`.

    python examples/keras_tfsmlayer.py --export_dir=RUN_DIR/export [--data_dir=...]
"""

import os

import keras
import numpy as np

from _images import parse_arguments


def main():
    arguments, images, labels = parse_arguments(__doc__)
    layer = keras.layers.TFSMLayer(os.path.join(arguments.export_dir, "saved_model"),
                                   call_endpoint="serving_default")
    outputs = layer(images)
    predictions = np.argmax(np.asarray(outputs["logits"]), axis=-1)
    print("predictions:", predictions.tolist())
    if labels is not None:
        print("labels:     ", labels.tolist())


if __name__ == "__main__":
    main()
