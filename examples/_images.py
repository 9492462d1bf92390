"""Shared by the examples: their flags, and a few test images (.npy file or tfds)."""

import argparse

import numpy as np


def parse_arguments(description):
    """(arguments, images, labels) from --export_dir, --images, --dataset, --data_dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--export_dir", required=True, help="RUN_DIR/export")
    parser.add_argument("--images", default=None, help=".npy of images (else tfds test split)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data_dir", default=None)
    arguments = parser.parse_args()
    images, labels = load_images(arguments.images, arguments.dataset, arguments.data_dir)
    return arguments, images, labels


def load_images(images_path=None, dataset="mnist", data_dir=None, count=8):
    """(images float32 [count, H, W, C] in [0, 1], labels or None)."""
    if images_path:
        images = np.load(images_path).astype(np.float32)[:count]
        return images, None
    import tensorflow_datasets as tfds

    test = tfds.load(dataset, split=f"test[:{count}]", data_dir=data_dir, batch_size=-1)
    test = tfds.as_numpy(test)
    return test["image"].astype(np.float32) / 255.0, test["label"]
