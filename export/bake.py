"""Bake masks into plain Keras layers (docs/architecture.md, deployment layer).

Each masked layer becomes its stock Keras kind (Dense, Conv1D/2D/3D, DepthwiseConv2D,
SeparableConv2D, EinsumDense) whose kernels are the layer's effective kernels, computed in
NumPy from its variables: exact zeros where pruned, frozen values where frozen, signed
constants and dynamic scaling folded in. Supermasks are fixed to one mask (the expected
mask, or one recorded sample; docs/semantics.md). Nothing of tf_lth is needed to load the
result.

Two ways to get there: `bake` returns a new plain model (Sequential and functional models,
nested ones included), and `plain_view` turns a model of any kind, subclassed ones
included, plain *in place* for the length of a `with` block and restores it afterwards
(what the exporters trace).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np

from tf_lth.core.keras_compat import child_layers, own_variables, swap_layer_class
from tf_lth.core.layers import (
    MASK_OPTION_NAMES,
    MASKED_LAYERS,
    MaskedMixin,
    masked_layers,
    plain_kind,
    walk_layers,
)

from tf_lth.core.choices import SUPERMASK_EXPORTS  # (defined once, in tf_lth.core.choices)


def check_supermask_export(supermask_export: str) -> None:
    if supermask_export not in SUPERMASK_EXPORTS:
        raise ValueError(
            f"Unknown supermask_export {supermask_export!r}. Allowed: "
            f"{', '.join(SUPERMASK_EXPORTS)}. Received: supermask_export={supermask_export!r}"
        )


def _check_masked(layer) -> None:
    if not isinstance(layer, MaskedMixin):
        raise ValueError(
            f"effective_kernel needs a tf_lth masked layer ({', '.join(c.__name__ for c in MASKED_LAYERS)}). "
            f"Received: layer={layer!r}"
        )


def export_mask(layer, supermask_export: str = "expected", rng=None, slot: int = 0) -> np.ndarray:
    """The fixed 0/1 mask an exported layer uses: `mask`, times one supermask if any.

    "expected" takes `sigmoid(logits) > 0.5`; "sample" draws one Bernoulli sample per
    logit from `rng` (a `numpy.random.Generator`), as the layer does per block.
    """
    check_supermask_export(supermask_export)
    _check_masked(layer)
    return layer.fixed_mask(slot, supermask_export, rng)


def effective_kernel(layer, supermask_export: str = "expected", rng=None,
                     slot: int = 0) -> np.ndarray:
    """`mask * kernel + (1 - mask) * frozen` of a masked layer, in NumPy, for export."""
    check_supermask_export(supermask_export)
    _check_masked(layer)
    return layer.effective_kernel_numpy(slot, supermask_export, rng)


def effective_kernels(model, supermask_export: str = "expected", seed: int = 0) -> dict:
    """{id(layer): [effective kernel per masked kernel]} in model order.

    Supermask samples ("sample") are drawn from `numpy.random.default_rng(seed)`, layer by
    layer in model order, so they do not depend on how the model is later cloned.
    """
    check_supermask_export(supermask_export)
    rng = np.random.default_rng(int(seed))
    return {
        id(layer): [layer.effective_kernel_numpy(index, supermask_export, rng)
                    for index in range(len(layer.masked_kernels))]
        for layer in masked_layers(model)
    }


def mask_state_ids(model) -> set:
    """ids of the variables that hold masks, frozen values and supermask state.

    A plain view's traced function never reads them; exporters leave them out.
    """
    ids = set()
    for layer in masked_layers(model):
        for variable in layer.mask_state_variables():
            ids.add(id(variable))
        for slot in layer.masked_kernels:
            if slot.mask_logits is not None:
                ids.add(id(slot.mask_logits))
        if layer.seed_generator is not None:
            ids.add(id(layer.seed_generator.state))
    return ids


@contextlib.contextmanager
def plain_view(model, supermask_export: str = "expected", seed: int = 0) -> Iterator:
    """Within the block, every masked layer of `model` is its stock Keras kind in place.

    Raw kernels hold the effective kernels, and `call` is the stock layer's, so a function
    traced in the block computes exactly what a baked model does. Works for every kind of
    model. On exit (also on errors) classes and raw kernels are restored.
    """
    kernels = effective_kernels(model, supermask_export, seed)
    saved = []
    try:
        for layer in masked_layers(model):
            variables = layer.raw_kernels()
            saved.append((layer, type(layer), variables,
                          [np.array(variable.numpy()) for variable in variables]))
            for variable, value in zip(variables, kernels[id(layer)]):
                variable.assign(value.astype(np.float32))
            swap_layer_class(layer, plain_kind(layer))
        yield model
    finally:
        for layer, cls, variables, raw in reversed(saved):
            swap_layer_class(layer, cls)
            for variable, value in zip(variables, raw):
                variable.assign(value)


@contextlib.contextmanager
def float32_compute(model) -> Iterator:
    """Within the block every layer of `model` computes in float32: a mixed-precision model
    traced for LiteRT, whose built-in kernels take no bfloat16 or float16. (Its variables
    are float32 already.) On exit each layer gets its own dtype policy back."""
    changed = []
    try:
        for layer in [model] + walk_layers(model):
            policy = layer.dtype_policy
            if policy.compute_dtype != "float32":
                changed.append((layer, policy))
                layer.dtype_policy = "float32"
        yield model
    finally:
        for layer, policy in reversed(changed):
            layer.dtype_policy = policy


def check_plain(model: keras.Model, argument: str = "plain_model") -> None:
    """Raises if `model` still holds tf_lth layers (it must come from `bake`)."""
    leftovers = [layer.name for layer in masked_layers(model)]
    if leftovers:
        raise ValueError(
            f"{argument} must be a plain Keras model from export.bake.bake(); it still holds "
            f"masked layers {leftovers}. Received: {argument}={model.name!r}"
        )


def _copy_own_weights(source, target) -> None:
    """Copies `source`'s own weights into `target`'s, matched by variable name."""
    by_name = {}
    for variable in own_variables(source):
        by_name.setdefault(variable.name, variable)
    for variable in own_variables(target):
        if variable.name not in by_name:
            raise ValueError(
                f"Cannot copy layer '{source.name}': it has no variable {variable.name!r}."
            )
        variable.assign(by_name[variable.name].numpy())


def _copy_weights(source, target) -> None:
    """`_copy_own_weights`, and for a layer that holds layers (MultiHeadAttention, a custom
    block) the same for each layer it holds, pairwise in the order it holds them. A nested
    model's layers are cloned, and so copied, one by one by `clone_model`."""
    _copy_own_weights(source, target)
    if isinstance(source, keras.Model):
        return
    sources, targets = child_layers(source), child_layers(target)
    if len(sources) != len(targets):
        raise ValueError(f"Cannot copy layer '{source.name}': its clone holds {len(targets)} "
                         f"layers, it holds {len(sources)}.")
    for inner_source, inner_target in zip(sources, targets):
        _copy_weights(inner_source, inner_target)


def clone_plain(model: keras.Model) -> keras.Model:
    """A clone of a Sequential or functional model, nested ones included, with its weights.

    Run it inside `plain_view` to get a model without tf_lth layers.
    """
    pairs = []

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, MaskedMixin):
            config = {key: value for key, value in config.items()
                      if key not in MASK_OPTION_NAMES}
        twin = layer.__class__.from_config(config)
        if isinstance(layer, keras.layers.Layer):  # not an operation such as `a + b`
            pairs.append((layer, twin))
        return twin

    try:
        plain = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as error:
        raise ValueError(
            "bake supports Sequential and functional models (subclassed models cannot be "
            f"cloned). Received: model={type(model).__name__} ({error})"
        ) from None
    for old, new in pairs:
        _copy_weights(old, new)
    return plain


def bake(model: keras.Model, supermask_export: str = "expected", seed: int = 0) -> keras.Model:
    """A stock Keras model (same layer names) whose kernels are the effective kernels.

    Works for Sequential and functional models, nested ones included. For supermask layers,
    "expected" uses `sigmoid(logits) > 0.5` and "sample" one Bernoulli sample drawn with
    `numpy.random.default_rng(seed)`, layer by layer in model order. A subclassed model
    cannot be cloned: use `plain_view` (or `tf_lth.strip(model, inplace=True)`).
    """
    check_supermask_export(supermask_export)
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"bake needs a built keras.Model. Received: model={model!r}")
    with plain_view(model, supermask_export, seed):
        plain = clone_plain(model)
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
        for layer in walk_layers(model)
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    ]
