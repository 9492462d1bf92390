"""A few test images for the examples: from a .npy file, or tfds' test split."""

import numpy as np


def load_images(images_path=None, dataset="mnist", data_dir=None, count=8):
    """(images float32 [count, H, W, C] in [0, 1], labels or None)."""
    if images_path:
        images = np.load(images_path).astype(np.float32)[:count]
        return images, None
    import tensorflow_datasets as tfds

    test = tfds.load(dataset, split=f"test[:{count}]", data_dir=data_dir, batch_size=-1)
    test = tfds.as_numpy(test)
    return test["image"].astype(np.float32) / 255.0, test["label"]
