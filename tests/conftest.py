"""Shared fixtures and markers: `mnist` tests need real MNIST prepared by tfds."""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def mnist_dir():
    """The prepared-MNIST folder from TFDS_DATA_DIR, or None when absent."""
    folder = os.environ.get("TFDS_DATA_DIR")
    if folder and os.path.isdir(os.path.join(folder, "mnist")):
        return folder
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "mnist: needs real MNIST (TFDS_DATA_DIR with mnist/)")
    config.addinivalue_line("markers", "slow: a real training run of a minute or more")


def pytest_collection_modifyitems(config, items):
    if mnist_dir():
        return
    skip = pytest.mark.skip(
        reason="real MNIST not prepared: set TFDS_DATA_DIR to a folder holding tfds' mnist "
        "(CI points it at ../shared/tensorflow_datasets)"
    )
    for item in items:
        if "mnist" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def mnist_data_dir():
    return mnist_dir()


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST as a tf_lth Data object (loaded once per session)."""
    from tf_lth.core import data

    return data.load("mnist", mnist_dir(), download=False)
