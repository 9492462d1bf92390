"""The paper's networks (docs/semantics.md, "Networks") and bringing your own model."""

import keras
import numpy as np
import pytest

from tf_lth.core import models
from tf_lth.core.layers import MaskedConv2D, MaskedDense, masked_layers


def _kernel_count(model):
    return sum(int(np.prod(layer.kernel_variable.shape)) for layer in masked_layers(model))


def test_fc_has_266200_kernel_weights():
    # 784*300 + 300*100 + 100*10
    assert _kernel_count(models.build("fc", (28, 28, 1), 10)) == 266_200


@pytest.mark.parametrize("arch, convs, dense_in", [
    ("conv2", [(3, 64), (64, 64)], 16 * 16 * 64),
    ("conv4", [(3, 64), (64, 64), (64, 128), (128, 128)], 8 * 8 * 128),
    ("conv6", [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)], 4 * 4 * 256),
])
def test_conv_networks_match_spec_layer_by_layer(arch, convs, dense_in):
    model = models.build(arch, (32, 32, 3), 10)
    layers = masked_layers(model)
    conv_layers = [layer for layer in layers if isinstance(layer, MaskedConv2D)]
    dense_layers = [layer for layer in layers if isinstance(layer, MaskedDense)]
    assert [tuple(layer.kernel_variable.shape) for layer in conv_layers] == [(3, 3, i, o) for i, o in convs]
    assert [tuple(layer.kernel_variable.shape) for layer in dense_layers] == [
        (dense_in, 256), (256, 256), (256, 10)]
    expected = sum(9 * i * o for i, o in convs) + dense_in * 256 + 256 * 256 + 2560
    assert _kernel_count(model) == expected
    assert all(layer.padding == "same" and layer.strides == (1, 1) for layer in conv_layers)
    groups = [models.layer_group(model, layer) for layer in layers]
    assert groups == ["conv"] * len(convs) + ["dense", "dense", "output"]


def test_initialisation_is_glorot_normal_with_zero_biases():
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    first = masked_layers(model)[0]
    kernel = np.array(first.kernel_variable)
    expected_std = np.sqrt(2.0 / (784 + 300))
    # keras' GlorotNormal is a truncated normal with that standard deviation
    assert abs(kernel.std() - expected_std) / expected_std < 0.05
    assert np.all(np.array(first.bias) == 0)


def test_same_seed_same_initial_weights():
    a = models.build("fc", seed=3)
    b = models.build("fc", seed=3)
    c = models.build("fc", seed=4)
    for va, vb, vc in zip(a.variables, b.variables, c.variables):
        np.testing.assert_array_equal(np.array(va), np.array(vb))
    assert not np.array_equal(np.array(a.variables[0]), np.array(c.variables[0]))


def test_unknown_arch_and_too_small_images_raise_value_error():
    with pytest.raises(ValueError, match="Allowed: fc, conv2, conv4, conv6"):
        models.build("lenet")
    with pytest.raises(ValueError, match="at least 8x8"):
        models.build("conv6", (4, 4, 3))


def test_masked_converts_user_models_keeping_weights():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    branch = keras.layers.Dense(5, activation="relu")(x)
    outputs = keras.layers.Dense(4)(keras.layers.Concatenate()([x, branch]))
    model = keras.Model(inputs, outputs)
    converted = models.masked(model)
    kinds = [type(layer).__name__ for layer in converted.layers]
    assert kinds.count("MaskedConv2D") == 1 and kinds.count("MaskedDense") == 2
    assert "Dense" not in kinds and "Conv2D" not in kinds
    x = np.random.default_rng(0).uniform(size=(3, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(np.array(converted(x)), np.array(model(x)), atol=1e-6)
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert isinstance(models.masked(sequential).layers[0], MaskedDense)
