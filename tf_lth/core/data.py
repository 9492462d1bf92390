"""tfds image classification data: decoded once, held in memory, served per epoch.

Core layer of tf_lth. Splits follow docs/semantics.md, Networks: validation examples are carved
from the end of the training split. The epoch order depends only on (seed, epoch), so a
run resumed at any iteration sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

DEFAULT_VALIDATION_SIZE = {"mnist": 5000, "cifar10": 5000, "fashion_mnist": 5000}
# The built-in synthetic datasets (--dataset=synthetic, synthetic_mnist): `synthetic`'s sizes.
SYNTHETIC_SIZES = {"num_train": 2000, "num_val": 200, "num_test": 400}


class DataError(ValueError):
    """The dataset cannot be found or read; the message names the flag to fix."""


@dataclasses.dataclass
class Data:
    """Train, validation and test arrays, images float32 in [0, 1], labels int32."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train_images) // batch_size

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The permutation of training examples for `epoch`, a function of (seed, epoch)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self.train_images))

    def batch_order(self, batch_size: int, seed: int) -> "BatchOrder":
        """Training-example indices of every iteration: batch i of epoch e is
        `epoch_order(seed, e)[i * batch_size:(i + 1) * batch_size]`, the remainder dropped."""
        return BatchOrder(self, batch_size, seed)

    def train_batches(self, batch_size: int, seed: int, start_iteration: int = 0):
        """Yields (images, labels) NumPy batches forever, starting at `start_iteration`."""
        order = self.batch_order(batch_size, seed)
        iteration = start_iteration
        while True:
            indices = order.indices(iteration, 1)[0]
            yield self.train_images[indices], self.train_labels[indices]
            iteration += 1


class BatchOrder:
    """Indices of the examples of each training iteration, one epoch permutation cached."""

    def __init__(self, data: Data, batch_size: int, seed: int):
        self.steps = data.steps_per_epoch(batch_size)
        if self.steps == 0:
            raise DataError(
                f"--batch_size={batch_size} is larger than the {len(data.train_images)} "
                "training examples; allowed: 1 to the training set size."
            )
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self._epoch, self._order = -1, None

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            order = self.data.epoch_order(self.seed, epoch)[: self.steps * self.batch_size]
            self._epoch, self._order = epoch, order.reshape(self.steps, self.batch_size)
        return self._order

    def indices(self, start_iteration: int, count: int, pad_to: int | None = None) -> np.ndarray:
        """int32 array (count, batch_size) for iterations [start, start + count), zero rows
        appended up to `pad_to` rows (a fixed shape for a compiled call)."""
        rows = []
        iteration, end = start_iteration, start_iteration + count
        while iteration < end:
            epoch, position = divmod(iteration, self.steps)
            take = min(end - iteration, self.steps - position)
            rows.append(self._epoch_batches(epoch)[position:position + take])
            iteration += take
        if pad_to is not None and pad_to > count:
            rows.append(np.zeros((pad_to - count, self.batch_size), np.int64))
        return np.concatenate(rows).astype(np.int32)


def for_config(config) -> Data:
    """The data of a run's configuration: a built-in synthetic set or a tfds dataset."""
    from tf_lth.core.config import SYNTHETIC_DATASETS

    if config.strategy in ("multi_worker", "tpu"):
        from tf_lth.core.distribute import make_strategy

        make_strategy(config.strategy)  # before tfds runs the first TensorFlow op
    if config.dataset in SYNTHETIC_DATASETS:
        shape = (28, 28, 1) if config.dataset == "synthetic_mnist" else (32, 32, 3)
        return synthetic(shape, seed=config.seed, name=config.dataset, **SYNTHETIC_SIZES)
    return load(config.dataset, config.data_dir, config.validation_size,
                download=config.download)


def _to_float(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def load(
    name: str,
    data_dir: str | None = None,
    validation_size: int | None = None,
    download: bool = True,
) -> Data:
    """Loads a tfds image classification dataset with (image, label) features.

    Reads from `data_dir` (or TFDS_DATA_DIR); downloads when allowed and missing.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    if validation_size is None:
        validation_size = DEFAULT_VALIDATION_SIZE.get(name, 5000)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises DatasetNotFoundError and others
        raise DataError(
            f"--dataset={name!r} is not a tfds dataset ({type(error).__name__}); "
            "allowed: a tfds image classification dataset such as mnist, fashion_mnist, cifar10."
        ) from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"--dataset={name!r} has no (image, label) features; allowed: a tfds image "
            "classification dataset such as mnist, fashion_mnist, cifar10."
        )
    if not _is_prepared(builder):
        if not download:
            raise DataError(
                f"--dataset={name!r} is not prepared in --data_dir={data_dir!r} and "
                "downloading is off; allowed: a folder holding tfds' prepared "
                f"{name} (e.g. DATA_DIR/{name}/VERSION)."
            )
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise DataError(
                f"--dataset={name!r} is not prepared in --data_dir={data_dir!r} and could not "
                f"be downloaded ({type(error).__name__}); allowed: a data_dir holding the "
                "prepared dataset, or a machine that can download it."
            ) from None
    train, test = _read_split(builder, "train"), _read_split(builder, "test")
    train_images, train_labels = _to_float(train["image"]), train["label"].astype(np.int32)
    if not 0 <= validation_size < len(train_images):
        raise DataError(
            f"--validation_size={validation_size} must be in [0, {len(train_images)}) for "
            f"{name}. Received: {validation_size}"
        )
    cut = len(train_images) - validation_size
    return Data(
        name=name,
        train_images=train_images[:cut],
        train_labels=train_labels[:cut],
        val_images=train_images[cut:],
        val_labels=train_labels[cut:],
        test_images=_to_float(test["image"]),
        test_labels=test["label"].astype(np.int32),
        num_classes=int(features["label"].num_classes),
    )


def _read_split(builder, split: str) -> dict:
    """The whole split as numpy arrays (batched reads; tfds mock data breaks batch_size=-1)."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=split).map(lambda item: {"image": item["image"],
                                                                "label": item["label"]})
    chunks = list(tfds.as_numpy(dataset.batch(10000)))
    if not chunks:
        raise DataError(f"--dataset={builder.name!r}: split {split!r} is empty.")
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in ("image", "label")}


def _is_prepared(builder) -> bool:
    try:
        return builder.is_prepared() if hasattr(builder, "is_prepared") else bool(
            builder.info.splits
        )
    except Exception:
        return False


def synthetic(
    image_shape=(32, 32, 3), num_classes: int = 10, num_train: int = 512,
    num_val: int = 128, num_test: int = 256, seed: int = 0, name: str = "synthetic",
) -> Data:
    """Learnable synthetic images: each class is a fixed random pattern plus noise.

    For tests and benchmarks of the convolutional networks where CIFAR-10 is absent.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.0, 1.0, size=(num_classes,) + tuple(image_shape))

    def split(count):
        labels = rng.integers(0, num_classes, size=count).astype(np.int32)
        noise = rng.normal(0.0, 0.25, size=(count,) + tuple(image_shape))
        images = np.clip(0.6 * prototypes[labels] + 0.4 * noise + 0.2, 0.0, 1.0)
        return images.astype(np.float32), labels

    train_images, train_labels = split(num_train)
    val_images, val_labels = split(num_val)
    test_images, test_labels = split(num_test)
    return Data(name, train_images, train_labels, val_images, val_labels,
                test_images, test_labels, num_classes)
