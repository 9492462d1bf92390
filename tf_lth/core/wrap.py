"""`tf_lth.masked`: mask the kernels of your own Keras model, any kind of model.

Core layer of tf_lth (docs/architecture.md). Layers are masked *in place*: each chosen
layer keeps its identity, name, weights and place in the model and gains mask state
(`tf_lth.core.layers.mask_layer_in_place`). That is what makes subclassed models work, where
`keras.models.clone_model` cannot. `copy=True` masks a clone instead (Sequential and
functional models only).

Also here: the names pruning uses for each masked kernel (`kernel_slots`), supermask
freezing and evaluation mode, and a per-layer summary. Semantics: docs/semantics.md.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import keras

from tf_lth.core import choices
from tf_lth.core.keras_compat import is_functional, own_variables
from tf_lth.core.layers import (
    MASK_OPTION_NAMES,
    MASKED_KINDS,
    MaskedMixin,
    mask_layer_in_place,
    masked_layers,
    walk_layers,
)

LOG = logging.getLogger("tf_lth")
SUPERMASK_MODES = choices.SUPERMASK_EXPORTS
BATCHNORM_MODES = choices.BATCHNORM_MODES


class KernelSlot(NamedTuple):
    """One masked kernel of a model: its key, its layer and its variables."""

    key: str  # layer name; "name/depthwise_kernel" for two-kernel layers; "name#2" if shared
    layer: object
    index: int  # position among the layer's masked kernels
    kernel: object
    mask: object
    frozen: object
    mask_logits: object


def kernel_slots(model) -> list:
    """Every masked kernel of `model` in model order, keyed by layer name.

    A layer with two kernels (SeparableConv2D) gives `name/depthwise_kernel` and
    `name/pointwise_kernel`; a layer name used twice gets `#2`, `#3`... on later uses.
    """
    slots, seen = [], {}
    for layer in masked_layers(model):
        count = seen.get(layer.name, 0) + 1
        seen[layer.name] = count
        base = layer.name if count == 1 else f"{layer.name}#{count}"
        states = layer.masked_kernels
        for index, state in enumerate(states):
            key = base if len(states) == 1 else f"{base}/{state.name}"
            slots.append(KernelSlot(key, layer, index, state.kernel, state.mask, state.frozen,
                                    state.mask_logits))
    return slots


def _all_layers(model) -> list:
    """Every layer inside `model` (nested models and wrappers walked through), once each."""
    return walk_layers(model)


def _has_kernel(layer) -> bool:
    return any("kernel" in variable.name or variable.name == "embeddings"
               for variable in own_variables(layer))


def _select(candidates: list, layers) -> list:
    if layers is None:
        return list(candidates)
    if callable(layers):
        return [layer for layer in candidates if layers(layer)]
    if isinstance(layers, str):
        layers = [layers]
    names = list(layers)
    by_name = {}
    for layer in candidates:
        by_name.setdefault(layer.name, []).append(layer)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"layers= names {unknown} are not maskable layers of this model. Allowed: "
            f"{', '.join(sorted(by_name)) or '(none)'}. Received: layers={names!r}"
        )
    return [layer for layer in candidates if layer.name in set(names)]


def is_graph_model(model) -> bool:
    """Sequential or functional: a model `keras.models.clone_model` can rebuild."""
    return isinstance(model, keras.Sequential) or is_functional(model)


def _clone(model):
    if not is_graph_model(model):
        raise ValueError(
            "masked(model, copy=True) needs a Sequential or functional model; a subclassed "
            f"model cannot be cloned. Mask it in place (copy=False). Received: "
            f"{type(model).__name__}"
        )
    clone = keras.models.clone_model(model, recursive=True)
    for target, source in zip(clone.variables, model.variables):
        target.assign(source)
    return clone


def masked(
    model: keras.Model,
    layers: Iterable[str] | Callable | None = None,
    supermask: bool = False,
    *,
    copy: bool = False,
    batchnorm: str = "freeze",
    **layer_options,
) -> keras.Model:
    """Masks the Dense/Conv*/DepthwiseConv2D/SeparableConv2D/EinsumDense kernels of a model.

    Works for Sequential, functional, nested and subclassed models. Each chosen layer is
    turned into its masked twin in place (same object, name and weights; masks start at
    ones), so every model holding it sees the change. Call it on a built model (one with
    a `keras.Input`, or called once on a batch) and before `compile`.

    Args:
        model: A built `keras.Model`.
        layers: Which layers to mask: None (every layer of a supported kind), layer names,
            or a predicate `layer -> bool`.
        supermask: Learn the mask (trainable logits, kernels frozen). Every other variable
            of the model is frozen too, and evaluation uses the expected mask
            `sigmoid(logits) > 0.5`; see `supermask_mode`.
        copy: Mask a clone and leave `model` alone (Sequential and functional only).
        batchnorm: With `supermask=True`: "freeze" (default) runs BatchNormalization in
            inference mode, so its moving statistics never change either; "update" freezes
            gamma and beta only, so training normalises with batch statistics and keeps
            updating the moving statistics.
        **layer_options: Options of the masked layers (`weight_transform`, `sigmoid_bias`,
            `mask_block`, `dynamic_scaling`, `seed`, ...; see `tf_lth.core.layers.MaskedDense`).

    Returns:
        The masked model (`model` itself unless `copy=True`). What was masked is logged
        on the "tf_lth" logger; `tf_lth.summary(model)` lists it.

    Raises:
        ValueError: The model is not built, `layers=` names an unknown layer, or nothing
            would be masked.

    Warns:
        UserWarning naming layers that have kernels but are left unmasked (other kinds,
        subclasses of the supported kinds, variables owned by a subclassed model itself).
    """
    _check_masked_arguments(model, batchnorm, layer_options)
    if copy:
        model = _clone(model)
    leaves = _all_layers(model)
    chosen, candidates, unbuilt = _choose_layers(model, leaves, layers, supermask)
    options = dict(layer_options, supermask=bool(supermask))
    for layer in chosen:
        if not isinstance(layer, MaskedMixin):
            mask_layer_in_place(layer, **options)
    _warn_left_alone(model, leaves, chosen, candidates, unbuilt)
    if supermask:
        _freeze_for_supermask(model, leaves, batchnorm)
        supermask_mode(model, "expected")
    _reset_compiled(model)
    slots = kernel_slots(model)
    LOG.info("tf_lth.masked: %d kernels masked in model '%s': %s", len(slots), model.name,
             ", ".join(f"{slot.key} {tuple(slot.kernel.shape)}" for slot in slots))
    return model


def _check_masked_arguments(model, batchnorm: str, layer_options: dict) -> None:
    """Raises ValueError for what `masked` cannot take (see its Raises)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"masked needs a keras.Model. Received: {type(model).__name__}")
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(
            f"Unknown batchnorm {batchnorm!r}. Allowed: {', '.join(BATCHNORM_MODES)}. "
            f"Received: batchnorm={batchnorm!r}"
        )
    unknown = sorted(set(layer_options) - set(MASK_OPTION_NAMES))
    if unknown or "supermask" in layer_options:
        allowed = ", ".join(name for name in MASK_OPTION_NAMES if name != "supermask")
        raise ValueError(f"Unknown layer options {unknown or ['supermask']}. Allowed: {allowed}.")
    if not model.built:
        raise ValueError(
            "masked(model) needs a built model: give it a keras.Input, or call it once on a "
            "batch (model(x)) before masking."
        )


def _choose_layers(model, leaves: list, layers, supermask: bool) -> tuple:
    """(chosen, candidates, unbuilt): the layers `masked` masks (already masked ones
    included), the built layers of a supported kind, and those never built.

    Raises ValueError when `layers=` names a never-built layer, when `supermask=True` meets
    a layer already masked without one, or when nothing would be masked.
    """
    already = [layer for layer in leaves if isinstance(layer, MaskedMixin)]
    unbuilt = [layer for layer in leaves if type(layer) in MASKED_KINDS and not layer.built]
    candidates = [layer for layer in leaves if type(layer) in MASKED_KINDS and layer.built]
    if layers is not None and not callable(layers):
        named = {layers} if isinstance(layers, str) else set(layers)
        never = sorted(layer.name for layer in unbuilt if layer.name in named)
        if never:
            raise ValueError(
                f"layers= names {never}, which were never built (the model never called "
                "them); call the model on a batch first."
            )
    chosen = _select(candidates + already, layers)
    if supermask:
        fixed = [layer.name for layer in chosen
                 if isinstance(layer, MaskedMixin) and not layer.supermask]
        if fixed:
            raise ValueError(
                f"Layers {fixed} are already masked without a supermask; supermask=True "
                "needs unmasked layers (mask a fresh model)."
            )
    if not chosen:
        kinds = ", ".join(cls.__name__ for cls in MASKED_KINDS)
        raise ValueError(
            f"Nothing to mask in model '{model.name}': it has no layer of a supported kind "
            f"({kinds}){' selected by layers=' if layers is not None else ''}."
        )
    return chosen, candidates, unbuilt


def _warn_left_alone(model, leaves: list, chosen: list, candidates: list,
                     unbuilt: list) -> None:
    """Warns naming the kernels `masked` left unmasked that the caller did not exclude."""
    chosen_ids = {id(layer) for layer in chosen}
    candidate_ids = {id(layer) for layer in candidates}
    left_alone = []
    for layer in leaves:
        if isinstance(layer, MaskedMixin) or not _has_kernel(layer):
            continue
        if id(layer) in candidate_ids and id(layer) not in chosen_ids:
            continue  # the caller's choice, not a surprise
        reason = (f"a subclass of {type(layer).__mro__[1].__name__}"
                  if any(isinstance(layer, cls) for cls in MASKED_KINDS)
                  else "not a kind tf_lth masks")
        left_alone.append(f"{layer.name} ({type(layer).__name__}: {reason})")
    for layer in unbuilt:
        left_alone.append(f"{layer.name} ({type(layer).__name__}: never built, so it has no "
                          "kernel yet)")
    own = [v.path for v in own_variables(model)]
    if own:
        left_alone.append(f"variables of the model itself: {', '.join(own)}")
    if left_alone:
        warnings.warn(
            "tf_lth.masked left these kernels unmasked: " + "; ".join(left_alone) + ".",
            UserWarning, stacklevel=3,
        )


def _freeze_for_supermask(model, leaves, batchnorm) -> None:
    logits = {id(slot.mask_logits) for slot in kernel_slots(model) if slot.mask_logits is not None}
    for layer in leaves:
        if isinstance(layer, keras.layers.BatchNormalization) and batchnorm == "freeze":
            layer.trainable = False  # inference mode: moving statistics stay as they are
    for variable in model.variables:
        if variable.trainable and id(variable) not in logits:
            variable.trainable = False


def _reset_compiled(model) -> None:
    """Drops traced train/test/predict functions: the next call traces the masked model."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        warnings.warn(
            "tf_lth.masked: the model's optimizer was already built for the old variables; "
            "call model.compile(...) again before training.", UserWarning, stacklevel=3)


def supermask_mode(model, mode: str) -> str:
    """Sets how supermask layers evaluate; returns the previous mode.

    "expected" (what `masked(..., supermask=True)` sets): `sigmoid(logits) > 0.5`, so
    `evaluate` and `predict` are deterministic. "sample": a fresh Bernoulli sample per call,
    as in training. Training always samples. Returns "mixed" if layers differed before.
    """
    if mode not in SUPERMASK_MODES:
        raise ValueError(
            f"Unknown supermask mode {mode!r}. Allowed: {', '.join(SUPERMASK_MODES)}. "
            f"Received: mode={mode!r}"
        )
    layers = [layer for layer in masked_layers(model) if layer.supermask]
    if not layers:
        raise ValueError(f"Model '{model.name}' has no supermask layers.")
    previous = {"expected" if float(layer.use_expected_mask.numpy()) > 0.5 else "sample"
                for layer in layers}
    for layer in layers:
        layer.use_expected_mask.assign(1.0 if mode == "expected" else 0.0)
    return previous.pop() if len(previous) == 1 else "mixed"


def summary(model) -> dict:
    """Weights remaining overall and per masked kernel (expected supermasks included).

    Returns `{"weights_remaining": float, "kernels": {key: {"kind", "shape", "kept",
    "size", "supermask"}}}`, where `kept` counts the weights the layer uses at evaluation.
    """
    kernels, kept_total, size_total = {}, 0, 0
    for slot in kernel_slots(model):
        mask = slot.layer.fixed_mask(slot.index, "expected")
        kept = int(mask.sum())
        kernels[slot.key] = {"kind": type(slot.layer).__name__, "shape": tuple(mask.shape),
                             "kept": kept, "size": int(mask.size),
                             "supermask": slot.mask_logits is not None}
        kept_total += kept
        size_total += int(mask.size)
    return {"weights_remaining": kept_total / size_total if size_total else 1.0,
            "kernels": kernels}
