"""Masking and unmasking a live Keras layer in place, by changing its class.

`mask_layer_in_place` turns a built stock layer into its masked twin without copying it:
the same object, name, weights and place in every model holding it, which is how
`tf_lth.masked` reaches the layers of subclassed models. `unmask_layer_in_place` is the
inverse (`tf_lth.strip(model, inplace=True)`). The Keras internals this needs (the
layer's tracker, its cached call signature, its name scope, its seed generators) are
reached through `tf_lth.core.keras_compat` only.
"""

from __future__ import annotations

from tf_lth.core.keras_compat import remove_seed_generator, swap_layer_class, unlocked
from tf_lth.core.layers.kinds import MASKED_KINDS
from tf_lth.core.layers.mixin import MASK_OPTION_NAMES
from tf_lth.core.layers.walk import plain_kind


def mask_layer_in_place(layer, **options):
    """Turns a built stock Keras layer into its masked twin, in place; returns it.

    The layer keeps its identity, name, weights and place in every model holding it; it
    gains a mask of ones, zero frozen values and, with `supermask=True`, mask logits,
    with the variable paths they would have had at build time (under nested models too).
    This works for every kind of model, subclassed ones included. Raises ValueError for a
    layer of another kind, or one that is not built yet.
    """
    masked_cls = MASKED_KINDS.get(type(layer))
    if masked_cls is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not a kind tf_lth masks. "
            f"Allowed: {', '.join(cls.__name__ for cls in MASKED_KINDS)}."
        )
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' is not built. Build the model first (call it on a batch, "
            "or give it a keras.Input)."
        )
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer '{layer.name}': masked layers do not support quantization or LoRA."
        )
    swap_layer_class(layer, masked_cls)
    with unlocked(layer):
        layer.init_mask_options(**options)
        layer.build_mask_state()
    return layer


def _state_attribute_names(layer) -> list:
    """Attribute names of `layer` that hold its mask state or mask options."""
    state = layer.mask_state_variables()
    names = [name for name in vars(layer) if any(
        getattr(layer, name) is variable for variable in state)]
    for prefix in layer.SLOT_PREFIXES:
        if getattr(layer, prefix + "mask_logits", None) is not None:
            names.append(prefix + "mask_logits")
    return names


def unmask_layer_in_place(layer, kernels: list) -> None:
    """The inverse of `mask_layer_in_place`: back to the stock class, raw kernels set to
    `kernels` (NumPy arrays, e.g. the effective kernels), mask state removed."""
    cls = plain_kind(layer)
    for variable, value in zip(layer.raw_kernels(), kernels):
        variable.assign(value)
        variable.trainable = True
    if getattr(layer, "bias", None) is not None:
        layer.bias.trainable = True
    names = _state_attribute_names(layer)
    generator = layer.seed_generator
    for name in names:
        delattr(layer, name)
    if generator is not None:
        remove_seed_generator(layer, generator)
    for name in MASK_OPTION_NAMES + ("seed_generator", "use_expected_mask") + tuple(
            prefix + suffix for prefix in layer.SLOT_PREFIXES
            for suffix in ("mask", "frozen", "mask_logits")):
        if name in vars(layer):
            object.__delattr__(layer, name)
    swap_layer_class(layer, cls)
