"""The paper's networks built from masked layers (docs/semantics.md, "Networks").

Core layer of tf_lth. Every layer is named so that prune-rate groups (conv, dense,
output) and saved files stay stable across runs.
"""

from __future__ import annotations

import keras

from tf_lth.layers import (
    MaskedConv1D,
    MaskedConv2D,
    MaskedConv3D,
    MaskedDense,
    MaskedDepthwiseConv2D,
    MaskedSeparableConv2D,
    masked_layers,
)

_CONV_KINDS = (MaskedConv1D, MaskedConv2D, MaskedConv3D, MaskedDepthwiseConv2D,
               MaskedSeparableConv2D)

ARCHS = ("fc", "conv2", "conv4", "conv6")

# (conv filters per block, dense units before the output layer)
_CONV_ARCHS = {
    "conv2": ([[64, 64]], [256, 256]),
    "conv4": ([[64, 64], [128, 128]], [256, 256]),
    "conv6": ([[64, 64], [128, 128], [256, 256]], [256, 256]),
}


def build(
    arch: str,
    input_shape=(28, 28, 1),
    num_classes: int = 10,
    seed: int | None = None,
    **layer_options,
) -> keras.Model:
    """Builds `arch` with Glorot-normal kernels, zero biases, ReLU and logits out.

    `layer_options` go to every masked layer (supermask, weight_transform, ...).
    """
    if arch not in ARCHS:
        raise ValueError(
            f"Unknown arch {arch!r}. Allowed: {', '.join(ARCHS)}. Received: arch={arch!r}"
        )
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels). Received: input_shape={input_shape}"
        )
    counter = iter(range(1_000_000))

    def options():
        index = next(counter)
        return dict(
            kernel_initializer=keras.initializers.GlorotNormal(
                seed=None if seed is None else seed * 1000 + index
            ),
            bias_initializer="zeros",
            seed=None if seed is None else seed * 1000 + 500 + index,
            **layer_options,
        )

    layers = [keras.Input(shape=input_shape, name="images")]
    if arch == "fc":
        layers += [
            keras.layers.Flatten(name="flatten"),
            MaskedDense(300, activation="relu", name="dense_1", **options()),
            MaskedDense(100, activation="relu", name="dense_2", **options()),
        ]
    else:
        conv_blocks, dense_units = _CONV_ARCHS[arch]
        if input_shape[0] < 2 ** len(conv_blocks) or input_shape[1] < 2 ** len(conv_blocks):
            raise ValueError(
                f"arch {arch!r} pools {len(conv_blocks)} times and needs images of at least "
                f"{2 ** len(conv_blocks)}x{2 ** len(conv_blocks)}. Received: input_shape={input_shape}"
            )
        conv_index = 0
        for block, filters_list in enumerate(conv_blocks, start=1):
            for filters in filters_list:
                conv_index += 1
                layers.append(
                    MaskedConv2D(
                        filters, 3, padding="same", activation="relu",
                        name=f"conv_{conv_index}", **options(),
                    )
                )
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{block}"))
        layers.append(keras.layers.Flatten(name="flatten"))
        for index, units in enumerate(dense_units, start=1):
            layers.append(
                MaskedDense(units, activation="relu", name=f"dense_{index}", **options())
            )
    layers.append(MaskedDense(num_classes, name="output", **options()))
    return keras.Sequential(layers, name=arch)


def layer_group(model: keras.Model, layer) -> str:
    """'conv', 'dense' or 'output' (the last masked Dense): the prune-rate group."""
    if isinstance(layer, _CONV_KINDS):
        return "conv"
    dense = [item for item in masked_layers(model) if isinstance(item, MaskedDense)]
    return "output" if dense and layer is dense[-1] else "dense"


def kernel_weight_count(model: keras.Model) -> int:
    """Weights in the masked kernels of `model`."""
    return int(sum(_size(slot.kernel.shape) for layer in masked_layers(model)
                   for slot in layer.masked_kernels))


def _size(shape) -> int:
    size = 1
    for dim in shape:
        size *= int(dim)
    return size


def masked(model: keras.Model, **layer_options) -> keras.Model:
    """A masked copy of a Sequential or functional model (`tf_lth.masked(copy=True)`).

    Kept for existing callers; `tf_lth.masked` also masks subclassed models in place.
    """
    from tf_lth.wrap import masked as masked_model

    return masked_model(model, copy=True, **layer_options)
