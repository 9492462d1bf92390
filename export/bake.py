"""Bake masks into a plain Keras model (DESIGN.md, deployment layer).

Each masked layer becomes a stock `keras.layers.Dense` or `Conv2D` whose kernel is the
layer's effective kernel, computed in NumPy from its variables: exact zeros where pruned,
frozen values where frozen, signed constants and dynamic scaling folded in. Supermasks
are fixed to one mask (SPEC.md section 7). Nothing of tf_lth is needed to load the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np

from tf_lth.layers import MASKED_LAYERS, MaskedDense, masked_layers

SUPERMASK_EXPORTS = ("expected", "sample")

# Options of masked layers that stock Dense/Conv2D do not take.
_MASK_OPTIONS = (
    "supermask",
    "weight_transform",
    "constant_multiplier",
    "dynamic_scaling",
    "sigmoid_bias",
    "mask_sampling",
    "mask_block",
    "frozen_values",
    "seed",
)


def check_supermask_export(supermask_export: str) -> None:
    if supermask_export not in SUPERMASK_EXPORTS:
        raise ValueError(
            f"Unknown supermask_export {supermask_export!r}. Allowed: "
            f"{', '.join(SUPERMASK_EXPORTS)}. Received: supermask_export={supermask_export!r}"
        )


def _expand_blocks(values: np.ndarray, kernel_shape: tuple, block: int) -> np.ndarray:
    """NumPy twin of `MaskedMixin._expand_blocks`: per-block values to the kernel's shape."""
    if block == 1:
        return values
    n = kernel_shape[-2]
    num_blocks = n // block
    axis = len(kernel_shape) - 2
    head = np.repeat(np.take(values, np.arange(num_blocks), axis=axis), block, axis=axis)
    tail = np.take(values, np.arange(num_blocks, values.shape[axis]), axis=axis)
    return np.concatenate([head, tail], axis=axis)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    # The tanh form cannot overflow for large negative logits, unlike 1 / (1 + exp(-x)).
    return (0.5 * (1.0 + np.tanh(0.5 * values))).astype(np.float32)


def export_mask(layer, supermask_export: str = "expected", rng=None) -> np.ndarray:
    """The fixed 0/1 mask an exported layer uses: `mask`, times one supermask if any.

    "expected" takes `sigmoid(logits) > 0.5`; "sample" draws one Bernoulli sample per
    logit from `rng` (a `numpy.random.Generator`), as the layer does per block.
    """
    check_supermask_export(supermask_export)
    mask = np.asarray(layer.mask.numpy(), dtype=np.float32)
    if not layer.supermask:
        return mask
    kernel_shape = tuple(mask.shape)
    probabilities = _sigmoid(np.asarray(layer.mask_logits.numpy(), dtype=np.float32))
    if supermask_export == "expected":
        chosen = probabilities > 0.5
    else:
        if rng is None:
            raise ValueError(
                "export_mask needs rng (a numpy.random.Generator) when "
                "supermask_export='sample'. Received: rng=None"
            )
        chosen = rng.random(probabilities.shape, dtype=np.float32) < probabilities
    return mask * _expand_blocks(chosen.astype(np.float32), kernel_shape, layer.mask_block)


def effective_kernel(layer, supermask_export: str = "expected", rng=None) -> np.ndarray:
    """`mask * kernel + (1 - mask) * frozen` of a masked layer, in NumPy, for export."""
    if not isinstance(layer, MASKED_LAYERS):
        raise ValueError(
            f"effective_kernel needs a MaskedDense or MaskedConv2D layer. "
            f"Received: layer={layer!r}"
        )
    mask = export_mask(layer, supermask_export, rng)
    kernel = np.asarray(layer._kernel.numpy(), dtype=np.float32)
    if layer.weight_transform == "signed_constant":
        scale = np.float32(np.std(kernel) * layer.constant_multiplier)
        kernel = np.sign(kernel) * scale
    frozen = np.asarray(layer.frozen.numpy(), dtype=np.float32)
    if not getattr(layer, "frozen_values", True):  # the layer ignores `frozen`: zeros
        frozen = np.zeros_like(frozen)
    # where() rather than arithmetic: pruned positions get exactly the frozen value.
    baked = np.where(mask > 0, kernel, frozen).astype(np.float32)
    if layer.dynamic_scaling:
        baked = baked * np.float32(mask.size / max(float(mask.sum()), 1.0))
    return baked


def check_plain(model: keras.Model, argument: str = "plain_model") -> None:
    """Raises if `model` still holds tf_lth layers (it must come from `bake`)."""
    leftovers = [layer.name for layer in masked_layers(model)]
    if leftovers:
        raise ValueError(
            f"{argument} must be a plain Keras model from export.bake.bake(); it still holds "
            f"masked layers {leftovers}. Received: {argument}={model.name!r}"
        )


def _plain_twin(layer):
    config = layer.get_config()
    if isinstance(layer, MASKED_LAYERS):
        cls = keras.layers.Dense if isinstance(layer, MaskedDense) else keras.layers.Conv2D
        return cls.from_config({k: v for k, v in config.items() if k not in _MASK_OPTIONS})
    return layer.__class__.from_config(config)


def bake(model: keras.Model, supermask_export: str = "expected", seed: int = 0) -> keras.Model:
    """A stock Keras model (same layer names) whose kernels are the effective kernels.

    Works for Sequential and functional models, nested ones included. For supermask layers,
    "expected" uses `sigmoid(logits) > 0.5` and "sample" one Bernoulli sample drawn with
    `numpy.random.default_rng(seed)`, layer by layer in model order.
    """
    check_supermask_export(supermask_export)
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"bake needs a built keras.Model. Received: model={model!r}")
    rng = np.random.default_rng(int(seed))
    # Kernels first, in model order, so a sampled supermask does not depend on clone order.
    kernels = {
        id(layer): effective_kernel(layer, supermask_export, rng) for layer in masked_layers(model)
    }
    pairs = []

    def clone(layer):
        twin = _plain_twin(layer)
        pairs.append((layer, twin))
        return twin

    try:
        plain = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ValueError as error:
        raise ValueError(
            "bake supports Sequential and functional models (subclassed models cannot be "
            f"cloned). Received: model={type(model).__name__} ({error})"
        ) from None
    for old, new in pairs:
        if id(old) in kernels:
            new.kernel.assign(kernels[id(old)].astype(new.kernel.dtype))
            if old.bias is not None:
                new.bias.assign(old.bias.numpy())
        elif old.weights:
            new.set_weights(old.get_weights())
    check_plain(plain, "bake(model)")
    return plain


@contextlib.contextmanager
def expected_supermasks(model: keras.Model) -> Iterator[keras.Model]:
    """Within the block, every supermask layer evaluates with its expected mask."""
    layers = [layer for layer in masked_layers(model) if layer.supermask]
    previous = [float(layer.use_expected_mask.numpy()) for layer in layers]
    for layer in layers:
        layer.use_expected_mask.assign(1.0)
    try:
        yield model
    finally:
        for layer, value in zip(layers, previous):
            layer.use_expected_mask.assign(value)


def kernel_layers(model: keras.Model) -> list:
    """The Dense and Conv2D layers of a plain (baked) model, in order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]
