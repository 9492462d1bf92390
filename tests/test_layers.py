"""Masked layers: effective kernel, gradients, supermask straight-through, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lth.core.layers import MaskedConv2D, MaskedDense


def _dense(units=3, input_dim=4, **options):
    layer = MaskedDense(units, kernel_initializer="glorot_normal", **options)
    layer.build((None, input_dim))
    return layer


def test_effective_kernel_is_mask_times_kernel_plus_frozen_by_hand():
    layer = _dense(2, 2, use_bias=False)
    layer.kernel_variable.assign([[1.0, 2.0], [3.0, 4.0]])
    layer.mask.assign([[1.0, 0.0], [0.0, 1.0]])
    layer.frozen.assign([[9.0, 7.0], [5.0, 9.0]])
    # kernel [[1, 7], [5, 4]]; x = [1, 1] -> [1 + 5, 7 + 4]
    output = layer(np.array([[1.0, 1.0]], np.float32))
    np.testing.assert_allclose(np.array(output), [[6.0, 11.0]])


def test_gradients_reach_kept_weights_only():
    layer = _dense(3, 4)
    mask = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)
    layer.mask.assign(mask)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 4)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad_kernel, grad_bias = tape.gradient(loss, [layer.kernel_variable, layer.bias])
    grad_kernel = np.array(grad_kernel)
    assert np.all(grad_kernel[mask == 0] == 0.0)
    assert np.all(grad_kernel[mask == 1] != 0.0)
    assert np.all(np.array(grad_bias) != 0.0)  # biases are never masked


def test_conv_gradients_zero_at_pruned_positions():
    layer = MaskedConv2D(2, 3, padding="same")
    layer.build((None, 5, 5, 3))
    rng = np.random.default_rng(1)
    mask = (rng.uniform(size=layer.mask.shape) > 0.5).astype(np.float32)
    layer.mask.assign(mask)
    x = tf.constant(rng.normal(size=(2, 5, 5, 3)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad = np.array(tape.gradient(loss, layer.kernel_variable))
    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) > 0.9 * mask.sum()


def test_supermask_straight_through_gradient_is_upstream_times_sigmoid_derivative():
    layer = _dense(3, 4, supermask=True, use_bias=False, seed=3)
    logits = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    layer.mask_logits.assign(logits)
    kernel = np.array(layer.kernel_variable)
    x = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    upstream = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        output = layer(x, training=True)
        loss = tf.reduce_sum(output * upstream)
    grad_logits = np.array(tape.gradient(loss, layer.mask_logits))
    # d loss / d effective_kernel = x^T upstream; d kernel_eff / d m = kernel;
    # straight-through: d m / d s = sigmoid'(s) = p (1 - p).
    p = 1.0 / (1.0 + np.exp(-logits))
    expected = (x.T @ upstream) * kernel * p * (1.0 - p)
    np.testing.assert_allclose(grad_logits, expected, rtol=1e-4, atol=1e-6)


def test_supermask_kernel_and_bias_get_no_gradient_and_are_not_trainable():
    layer = _dense(3, 4, supermask=True, seed=1)
    assert [v.name for v in layer.trainable_variables] == ["mask_logits"]
    kernel_before, bias_before = np.array(layer.kernel_variable), np.array(layer.bias)
    x = tf.constant(np.ones((2, 4), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) ** 2)
    gradients = tape.gradient(loss, layer.trainable_variables)
    assert gradients[0] is not None and np.any(np.array(gradients[0]) != 0)
    keras.optimizers.SGD(1.0).apply(gradients, layer.trainable_variables)
    np.testing.assert_array_equal(np.array(layer.kernel_variable), kernel_before)
    np.testing.assert_array_equal(np.array(layer.bias), bias_before)


def test_supermask_forward_uses_zero_one_samples_with_sampling_rate_near_p():
    layer = _dense(200, 200, supermask=True, use_bias=False, seed=5, sigmoid_bias=1.0)
    layer.kernel_variable.assign(np.eye(200, dtype=np.float32))
    kept = np.array(layer.effective_kernel(training=True)).diagonal()
    assert set(np.unique(kept)).issubset({0.0, 1.0})
    p = 1.0 / (1.0 + np.exp(-1.0))
    assert abs(kept.mean() - p) < 0.1  # 200 Bernoulli(0.73) draws


def test_expected_mask_flag_gives_threshold_mask_at_evaluation():
    layer = _dense(2, 2, supermask=True, use_bias=False, seed=0)
    layer.kernel_variable.assign(np.ones((2, 2), np.float32))
    layer.mask_logits.assign([[2.0, -2.0], [-0.5, 0.5]])
    layer.use_expected_mask.assign(1.0)
    np.testing.assert_array_equal(np.array(layer.effective_kernel(training=False)),
                                  [[1.0, 0.0], [0.0, 1.0]])


def test_signed_constant_transform_and_dynamic_scaling_by_hand():
    layer = _dense(2, 2, supermask=True, use_bias=False, weight_transform="signed_constant",
                   dynamic_scaling=True, seed=0)
    kernel = np.array([[1.0, -3.0], [-1.0, 3.0]], np.float32)
    layer.kernel_variable.assign(kernel)
    layer.mask_logits.assign([[5.0, -5.0], [5.0, 5.0]])
    layer.use_expected_mask.assign(1.0)
    std = kernel.std()  # sqrt(5)
    # expected mask keeps 3 of 4: scale 4/3
    expected = np.sign(kernel) * std * np.array([[1, 0], [1, 1]]) * (4.0 / 3.0)
    np.testing.assert_allclose(np.array(layer.effective_kernel(training=False)), expected,
                               rtol=1e-6)
    compiled = tf.function(lambda: layer.effective_kernel(training=False))  # graph mode too
    np.testing.assert_allclose(np.array(compiled()), expected, rtol=1e-6)


def test_block_logits_share_one_sample_per_1x4_block():
    layer = _dense(3, 10, supermask=True, use_bias=False, mask_block=4, seed=2)
    assert tuple(layer.mask_logits.shape) == (2 + 2, 3)  # two 4-blocks, two single rows
    layer.kernel_variable.assign(np.ones((10, 3), np.float32))
    kernel = np.array(layer.effective_kernel(training=True))
    for column in range(3):
        for start in (0, 4):
            block = kernel[start:start + 4, column]
            assert len(set(block.tolist())) == 1


def test_invalid_options_raise_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="weight_transform"):
        MaskedDense(3, weight_transform="sign")
    with pytest.raises(ValueError, match="mask_block"):
        MaskedDense(3, mask_block=3)


@pytest.mark.parametrize("options", [
    {},
    {"supermask": True, "weight_transform": "signed_constant", "dynamic_scaling": True,
     "mask_sampling": "round", "sigmoid_bias": 0.5, "mask_block": 4, "seed": 7},
])
def test_config_round_trip_and_keras_file_keeps_every_raw_variable(tmp_path, options):
    inputs = keras.Input((8, 8, 2))
    x = MaskedConv2D(4, 3, padding="same", name="conv", **options)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = MaskedDense(3, name="dense", **options)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("conv"), model.get_layer("dense")):
        layer.mask.assign((rng.uniform(size=layer.mask.shape) > 0.3).astype(np.float32))
        layer.frozen.assign(rng.normal(size=layer.frozen.shape).astype(np.float32))
        if layer.supermask:
            layer.mask_logits.assign(rng.normal(size=layer.mask_logits.shape).astype(np.float32))
            layer.use_expected_mask.assign(1.0)
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for original, restored in zip(model.variables, loaded.variables):
        assert original.path.split("/")[-1] == restored.path.split("/")[-1]
        np.testing.assert_array_equal(np.array(original), np.array(restored))
    x = rng.uniform(size=(2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(np.array(model(x)), np.array(loaded(x)), atol=1e-6)


def test_frozen_values_off_treats_pruned_weights_as_zero_with_the_same_gradients():
    with_frozen = _dense(3, 4, use_bias=False)
    without = _dense(3, 4, use_bias=False, frozen_values=False)
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3) - 5.0
    mask = (np.arange(12).reshape(4, 3) % 3 != 0).astype(np.float32)
    for layer in (with_frozen, without):
        layer.kernel_variable.assign(kernel)
        layer.mask.assign(mask)
    without.frozen.assign(np.full((4, 3), 7.0, np.float32))  # ignored when frozen_values=False
    np.testing.assert_array_equal(np.array(without.effective_kernel()), kernel * mask)
    np.testing.assert_array_equal(np.array(with_frozen.effective_kernel()), kernel * mask)
    x = tf.constant(np.ones((2, 4), np.float32))
    gradients = []
    for layer in (with_frozen, without):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x) ** 2)
        gradients.append(np.array(tape.gradient(loss, layer.kernel_variable)))
    np.testing.assert_array_equal(gradients[0], gradients[1])
    assert without.get_config()["frozen_values"] is False


def _lowbias32_numpy(x):
    """Wellons' lowbias32 mixer, written again in NumPy (uint32 arithmetic wraps)."""
    x = np.asarray(x, np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = (x * np.uint32(0x7FEB352D)).astype(np.uint32)
    x = x ^ (x >> np.uint32(15))
    x = (x * np.uint32(0x846CA68B)).astype(np.uint32)
    return x ^ (x >> np.uint32(16))


def test_hash_uniform_is_the_keyed_mixer_of_each_position_in_24_bit_steps():
    from tf_lth.core.layers import hash_uniform

    seed = np.array([7, 3], np.int64)
    with np.errstate(over="ignore"):
        k1 = _lowbias32_numpy(np.uint32(7) ^ np.uint32(0x9E3779B9))
        k2 = _lowbias32_numpy(np.uint32(3) + k1)
        positions = np.arange(12, dtype=np.uint32)
        bits = _lowbias32_numpy(_lowbias32_numpy(positions ^ k1) + k2)
    expected = (bits >> np.uint32(8)).astype(np.float32) / np.float32(2 ** 24)
    noise = np.array(hash_uniform((3, 4), tf.constant(seed)))
    np.testing.assert_array_equal(noise, expected.reshape(3, 4))


def test_hash_uniform_is_uniform_and_independent_across_seeds_with_and_without_xla():
    from tf_lth.core.layers import hash_uniform

    shape, n = (784, 300), 784 * 300
    draw = tf.function(lambda seed: hash_uniform(shape, seed), jit_compile=True)
    first = np.array(draw(tf.constant([5, 0])))
    np.testing.assert_array_equal(first, np.array(hash_uniform(shape, tf.constant([5, 0]))))
    assert first.min() >= 0.0 and first.max() < 1.0
    # mean 1/2 and variance 1/12, each within 5 standard errors of n samples
    assert abs(first.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(first.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)  # var of (u - 1/2)^2 = 1/180
    counts = np.bincount((first * 16).astype(int).ravel(), minlength=16)
    chi2 = ((counts - n / 16) ** 2 / (n / 16)).sum()
    assert chi2 < 45.0  # 15 degrees of freedom: P(chi2 > 45) ~ 1e-4
    for seed in ([5, 1], [6, 0]):  # the next step, another layer
        other = np.array(draw(tf.constant(seed)))
        assert abs(np.corrcoef(first.ravel(), other.ravel())[0, 1]) < 5 / np.sqrt(n)
    neighbours = np.corrcoef(first.ravel()[:-1], first.ravel()[1:])[0, 1]
    assert abs(neighbours) < 5 / np.sqrt(n)
