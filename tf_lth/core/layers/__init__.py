"""Masked Keras 3 layers: the core layer of tf_lth (docs/architecture.md, "Core").

A masked layer holds its raw kernel, a 0/1 `mask`, the `frozen` values that pruned
positions take, and, for learned supermasks, trainable `mask_logits`. Layers only apply
masks; `tf_lth.core.masks` and the trainers (or `tf_lth.prune`) decide them. The exact
semantics are in docs/semantics.md ("Masked layers", "Supermasks").

Masks and frozen values are *not weights*: `layer.weights` and `layer.get_weights()` /
`set_weights()` (and so `model.get_weights()` / `set_weights()`) hold kernels, biases and
supermask logits only, so the usual Keras rewind idiom never resets a mask. They are still
part of `layer.variables`, `.keras` files, `.weights.h5` files and checkpoints.

Supported kinds: Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv2D, SeparableConv2D (both
kernels masked) and EinsumDense. `mask_layer_in_place` turns an existing, built Keras
layer of one of these kinds into its masked twin without copying it (how
`tf_lth.masked` reaches layers of subclassed models).

The package, one module per job:

- `hashing`: `hash_uniform`, the counter-based noise of supermask samples;
- `mixin`: `MaskedMixin`, the mask state and effective-kernel math of every kind;
- `numpy_views`: the fixed masks and effective kernels in NumPy, for export;
- `kinds`: the eight `Masked*` classes and the stock kind -> masked twin maps;
- `walk`: `walk_layers`, `masked_layers`, `plain_kind`;
- `inplace`: `mask_layer_in_place`, `unmask_layer_in_place`.
"""

from tf_lth.core.layers.hashing import hash_uniform, shape_size
from tf_lth.core.layers.inplace import mask_layer_in_place, unmask_layer_in_place
from tf_lth.core.layers.kinds import (
    MASKED_KINDS,
    MASKED_LAYERS,
    PLAIN_KINDS,
    MaskedConv1D,
    MaskedConv2D,
    MaskedConv3D,
    MaskedDense,
    MaskedDepthwiseConv2D,
    MaskedEinsumDense,
    MaskedEmbedding,
    MaskedSeparableConv2D,
)
from tf_lth.core.layers.mixin import (
    MASK_OPTION_NAMES,
    MASK_SAMPLINGS,
    WEIGHT_TRANSFORMS,
    MaskedMixin,
    MaskSlot,
    check_mask_options,
    split_mask_options,
)
from tf_lth.core.layers.numpy_views import expand_blocks_numpy
from tf_lth.core.layers.walk import masked_layers, plain_kind, walk_layers

__all__ = [
    "MASKED_KINDS",
    "MASKED_LAYERS",
    "MASK_OPTION_NAMES",
    "MASK_SAMPLINGS",
    "PLAIN_KINDS",
    "WEIGHT_TRANSFORMS",
    "MaskSlot",
    "MaskedConv1D",
    "MaskedConv2D",
    "MaskedConv3D",
    "MaskedDense",
    "MaskedDepthwiseConv2D",
    "MaskedEinsumDense",
    "MaskedEmbedding",
    "MaskedMixin",
    "MaskedSeparableConv2D",
    "check_mask_options",
    "expand_blocks_numpy",
    "hash_uniform",
    "mask_layer_in_place",
    "masked_layers",
    "plain_kind",
    "shape_size",
    "split_mask_options",
    "unmask_layer_in_place",
    "walk_layers",
]
