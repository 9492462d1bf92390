"""NumPy views of a masked layer's state, for export and summaries.

What `MaskedMixin.fixed_mask` and `MaskedMixin.effective_kernel_numpy` compute: the one
0/1 mask an exported layer uses, and its effective kernel with that mask (exact zeros or
frozen values where pruned, signed constants and dynamic scaling folded in;
docs/semantics.md, "Masked layers" and "Supermasks").
"""

from __future__ import annotations

import numpy as np

from tf_lth.core.actions import signed_constant
from tf_lth.core.choices import SUPERMASK_EXPORTS


def expand_blocks_numpy(values, kernel_shape, block: int):
    """NumPy twin of `MaskedMixin._expand_blocks`: per-block values to the kernel's shape."""
    if block == 1 or len(kernel_shape) < 2:
        return values
    n = kernel_shape[-2]
    num_blocks = n // block
    axis = len(kernel_shape) - 2
    head = np.repeat(np.take(values, np.arange(num_blocks), axis=axis), block, axis=axis)
    tail = np.take(values, np.arange(num_blocks, values.shape[axis]), axis=axis)
    return np.concatenate([head, tail], axis=axis)


def _check_export(supermask_export: str) -> None:
    if supermask_export not in SUPERMASK_EXPORTS:
        raise ValueError(
            f"Unknown supermask_export {supermask_export!r}. Allowed: "
            f"{', '.join(SUPERMASK_EXPORTS)}. Received: supermask_export={supermask_export!r}"
        )


def fixed_mask(layer, slot: int = 0, supermask_export: str = "expected", rng=None):
    """The 0/1 mask of `layer`'s kernel `slot`: `mask`, times one supermask if any.

    "expected" takes `sigmoid(logits) > 0.5`; "sample" draws one Bernoulli sample per
    logit from `rng` (a `numpy.random.Generator`); topk (edge-popup) layers take the same
    top-k as the layer.
    """
    _check_export(supermask_export)
    state = layer.masked_kernels[slot]
    mask = np.asarray(state.mask.numpy(), dtype=np.float32)
    if not layer.supermask:
        return mask
    logits = np.asarray(state.mask_logits.numpy(), dtype=np.float32)
    if layer.mask_sampling == "topk":  # deterministic: the same top-k as the layer
        order = np.argsort(-np.abs(logits).ravel(), kind="stable")
        chosen = np.zeros(logits.size, np.float32)
        chosen[order[:layer.topk_count(slot)]] = 1.0
        return mask * expand_blocks_numpy(chosen.reshape(logits.shape), mask.shape,
                                          layer.mask_block)
    # The tanh form cannot overflow for large negative logits, unlike 1 / (1 + exp(-x)).
    probabilities = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
    if supermask_export == "expected":
        chosen = probabilities > 0.5
    else:
        if rng is None:
            raise ValueError(
                "fixed_mask needs rng (a numpy.random.Generator) when "
                "supermask_export='sample'. Received: rng=None"
            )
        chosen = rng.random(probabilities.shape, dtype=np.float32) < probabilities
    return mask * expand_blocks_numpy(chosen.astype(np.float32), mask.shape, layer.mask_block)


def effective_kernel_numpy(layer, slot: int = 0, supermask_export: str = "expected",
                           rng=None):
    """`mask * kernel + (1 - mask) * frozen` of `layer`'s kernel `slot` with a fixed mask."""
    state = layer.masked_kernels[slot]
    mask = fixed_mask(layer, slot, supermask_export, rng)
    kernel = np.asarray(state.kernel.numpy(), dtype=np.float32)
    if layer.weight_transform == "signed_constant":
        kernel = signed_constant(kernel, layer.constant_multiplier).astype(np.float32)
    frozen = np.asarray(state.frozen.numpy(), dtype=np.float32)
    if not layer.frozen_values:  # the layer ignores `frozen`: zeros
        frozen = np.zeros_like(frozen)
    # where() rather than arithmetic: pruned positions get exactly the frozen value.
    baked = np.where(mask > 0, kernel, frozen).astype(np.float32)
    if layer.dynamic_scaling:
        baked = baked * np.float32(mask.size / max(float(mask.sum()), 1.0))
    return baked
