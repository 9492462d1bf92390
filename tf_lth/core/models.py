"""The paper's networks built from masked layers (docs/semantics.md, "Networks").

Core layer of tf_lth. Every layer is named so that prune-rate groups (conv, dense,
output) and saved files stay stable across runs.
"""

from __future__ import annotations

import keras

from tf_lth.core import choices
from tf_lth.core.layers import (
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

ARCHS = choices.ARCHS

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


def masked(model: keras.Model, **layer_options) -> keras.Model:
    """A masked copy of a Sequential or functional model (`tf_lth.masked(copy=True)`).

    Kept for existing callers; `tf_lth.masked` also masks subclassed models in place.
    """
    from tf_lth.core.wrap import masked as masked_model

    return masked_model(model, copy=True, **layer_options)


def for_config(config, data):
    """A function building the network of a run's configuration for `data`'s images.

    Lottery runs with the mask-0 action `zero` skip the frozen term; learned supermasks
    get their options, and signed-constant kernels set once (the kernel never trains).
    """
    import functools

    options = {"mask_block": config.block_size,
               "frozen_values": config.mask_zero_action != "zero"}
    use_signed_constants = False
    if config.experiment == "learned_supermask":
        use_signed_constants = config.supermask_weights == "signed_constant"
        options.update(supermask=True, frozen_values=False,
                       dynamic_scaling=config.dynamic_scaling,
                       sigmoid_bias=config.sigmoid_bias, mask_sampling=config.mask_sampling,
                       keep_fraction=config.keep_fraction)
    build_it = functools.partial(build, config.arch, data.image_shape, data.num_classes,
                                 seed=config.seed, **options)
    if not use_signed_constants:
        return build_it

    def build_with_signed_constants():
        model = build_it()
        set_signed_constants(model, config.constant_multiplier)
        return model

    return build_with_signed_constants


def set_signed_constants(model, multiplier: float = 1.0) -> None:
    """Sets each masked kernel to `std(w) * multiplier * sign(w)` (docs/semantics.md,
    "Signed constants"), once: the one definition of the signed-constant kernel."""
    import numpy as np

    from tf_lth.core.actions import signed_constant

    for layer in masked_layers(model):
        kernel = np.array(layer.kernel_variable)
        layer.kernel_variable.assign(
            signed_constant(kernel, multiplier).astype(np.float32))


def check_compatible(config, data) -> None:
    """The network must take the dataset's images (raises ConfigError naming both flags)."""
    from tf_lth.core.config import ConfigError

    shape = data.image_shape
    if len(shape) != 3:
        raise ConfigError(
            f"--dataset={config.dataset!r} has images of shape {shape}; allowed: "
            "(height, width, channels) images."
        )
    if config.arch != "fc":
        pools = len(_CONV_ARCHS[config.arch][0])
        if min(shape[:2]) < 2 ** pools:
            raise ConfigError(
                f"--arch={config.arch!r} cannot take --dataset={config.dataset!r} images of "
                f"shape {shape}; allowed: images of at least {2 ** pools}x{2 ** pools}."
            )
    if config.batch_size > len(data.train_images):
        raise ConfigError(
            f"--batch_size={config.batch_size} is larger than the {len(data.train_images)} "
            "training examples; allowed: 1 to the training set size."
        )
    if config.experiment == "gradual":  # the schedule must fit in the round
        from tf_lth.core.config import gradual_window

        gradual_window(config, config.train_iterations(data.steps_per_epoch(config.batch_size)))
    if config.experiment == "dynamic_sparse":
        _check_dynamic_updates(config, config.train_iterations(
            data.steps_per_epoch(config.batch_size)))
    if config.rewind_iteration > 0:
        iterations = config.train_iterations(data.steps_per_epoch(config.batch_size))
        if config.rewind_iteration >= iterations:
            raise ConfigError(
                f"--rewind_iteration={config.rewind_iteration} is beyond the training length "
                f"of {iterations} iterations; allowed: 0 <= rewind_iteration < {iterations}."
            )


def _check_dynamic_updates(config, iterations: int) -> None:
    """RigL and SET need at least one update step inside the round (else they are static
    sparse training under another name)."""
    from tf_lth.core.config import ConfigError

    if config.update_end_step and config.update_end_step > iterations:
        raise ConfigError(
            f"--update_end_step={config.update_end_step} is beyond the round's {iterations} "
            f"iterations; allowed: 1 to {iterations}.")
    if config.sparse_method == "static" or not config.update_every:
        return
    last = config.update_end_step or max(1, int(0.75 * iterations))
    if config.update_every > last:
        raise ConfigError(
            f"--update_every={config.update_every} leaves no update step up to step {last} "
            f"({'--update_end_step' if config.update_end_step else '75% of the round'}), so "
            f"--sparse_method={config.sparse_method} would never move a connection; allowed: "
            f"--update_every <= {last}, or --sparse_method=static.")


def model_state(model) -> dict:
    """Every variable of the model (masks, frozen values and seed states too) by path, as
    NumPy arrays: what a run directory's `.npz` files hold (a sync point).

    The same snapshot as `tf_lth.core.ticket.weights_state`, over all variables rather than
    the weights (`tf_lth.core.ticket.state_of`).
    """
    from tf_lth.core.ticket import state_of

    return state_of(model.variables)


def set_model_state(model, state: dict, source: str = "state") -> None:
    """Assigns every variable from `state` (by path; keys of no variable are ignored).

    Raises CorruptFileError naming `source` when a variable is missing or a shape differs;
    nothing is assigned then (`tf_lth.core.ticket.assign_state`).
    """
    from tf_lth.core.run_files import CorruptFileError
    from tf_lth.core.ticket import assign_state

    assign_state(model.variables, state, source=source, error=CorruptFileError,
                 allow_unknown=True)
