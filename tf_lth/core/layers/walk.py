"""Walking a model's layers: every layer once, its masked layers, a masked layer's kind."""

from __future__ import annotations

from tf_lth.core.keras_compat import child_layers
from tf_lth.core.layers.kinds import PLAIN_KINDS
from tf_lth.core.layers.mixin import MaskedMixin


def walk_layers(model) -> list:
    """Every layer inside `model`, depth first in the order each holds them, once each.

    Nested Sequential, functional and subclassed models (and layers holding layers) are
    walked through and listed themselves too. (Keras' own `_flatten_layers` lists a
    nested model's layers in reverse order.)
    """
    found, seen = [], {id(model)}
    stack = [iter(child_layers(model))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif id(child) not in seen:
            seen.add(id(child))
            found.append(child)
            stack.append(iter(child_layers(child)))
    return found


def masked_layers(model) -> list:
    """The masked layers of a model (any kind of model, nested ones included), in order."""
    return [layer for layer in walk_layers(model) if isinstance(layer, MaskedMixin)]


def plain_kind(layer) -> type:
    """The stock Keras class a masked layer twins (Dense for MaskedDense, ...)."""
    for cls in type(layer).__mro__:
        if cls in PLAIN_KINDS:
            return PLAIN_KINDS[cls]
    raise ValueError(f"{layer!r} is not a tf_lth masked layer.")
