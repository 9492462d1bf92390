"""tfds loading (mock data), splits, scaling and per-epoch order."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_lth.core import data as data_lib


def test_mock_mnist_splits_scaling_and_validation_carved_from_the_end():
    with tfds.testing.mock_data(num_examples=120):
        data = data_lib.load("mnist", validation_size=20)
    assert data.train_images.shape == (100, 28, 28, 1)
    assert data.val_images.shape == (20, 28, 28, 1)
    assert data.test_images.dtype == np.float32
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert data.num_classes == 10


def test_mock_cifar10_shapes():
    with tfds.testing.mock_data(num_examples=60):
        data = data_lib.load("cifar10", validation_size=10)
    assert data.image_shape == (32, 32, 3)
    assert len(data.train_images) == 50


def test_epoch_order_is_a_function_of_seed_and_epoch():
    data = data_lib.synthetic((4, 4, 1), num_train=50)
    a, b = data.epoch_order(1, 0), data.epoch_order(1, 0)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, data.epoch_order(1, 1))
    assert not np.array_equal(a, data.epoch_order(2, 0))


def test_train_batches_resume_mid_epoch_equals_uninterrupted_stream():
    data = data_lib.synthetic((4, 4, 1), num_train=50)
    full = data.train_batches(10, seed=3)
    stream = [np.asarray(next(full)[1]) for _ in range(12)]  # 5 steps per epoch
    resumed = data.train_batches(10, seed=3, start_iteration=7)
    for expected in stream[7:]:
        np.testing.assert_array_equal(np.asarray(next(resumed)[1]), expected)


def test_batch_indices_follow_each_epochs_permutation_and_pad_to_a_fixed_shape():
    data = data_lib.synthetic((4, 4, 1), num_train=53)  # 5 steps of 10, 3 examples dropped
    order = data.batch_order(10, seed=3)
    rows = order.indices(3, 4, pad_to=6)  # iterations 3, 4 (epoch 0) and 5, 6 (epoch 1)
    assert rows.shape == (6, 10) and rows.dtype == np.int32
    epoch0, epoch1 = data.epoch_order(3, 0), data.epoch_order(3, 1)
    np.testing.assert_array_equal(rows[0], epoch0[30:40])
    np.testing.assert_array_equal(rows[1], epoch0[40:50])
    np.testing.assert_array_equal(rows[2], epoch1[0:10])
    np.testing.assert_array_equal(rows[3], epoch1[10:20])
    assert not rows[4:].any()


def test_missing_dataset_offline_names_the_flag(tmp_path):
    with pytest.raises(data_lib.DataError, match="--dataset='mnist' is not prepared"):
        data_lib.load("mnist", str(tmp_path), download=False)
