"""The one module of tf_lth that reads or writes Keras private attributes.

Keras 3 keeps some state that tf_lth needs (a layer's child layers and own variable
lists, its tracker and cached call signature, a model's build shapes, a functional
model's input structure, the optimizer's learning-rate variable) behind underscore names
with no public accessor. Every such touch lives here, behind a small documented function,
so that a Keras upgrade that moves one of them breaks this module only, and
tests/test_nested_models.py checks that no other module of tf_lth, trainers or export
touches one. Written against Keras 3.15 (docs/architecture.md, "Core").
"""

from __future__ import annotations

import contextlib
import inspect

import keras


def learning_rate_variable(optimizer):
    """The optimizer's learning-rate variable, or None.

    Keras 3 stores a constant learning rate as a variable in `optimizer._learning_rate`;
    a schedule or a callable is stored there as itself (no variable). Returns None for
    those, for an optimizer without one, and for `optimizer=None`.
    """
    if optimizer is None:
        return None
    value = getattr(optimizer, "_learning_rate", None)
    if isinstance(value, keras.Variable):
        return value
    return None


def child_layers(layer) -> list:
    """The layers `layer` tracks directly, in the order it holds them (`layer._layers`).

    Unlike `model.layers` this works for plain layers holding layers too, and unlike
    `_flatten_layers` it keeps a nested model's order; a functional model's InputLayers
    are included.
    """
    return list(getattr(layer, "_layers", None) or [])


def own_variables(layer) -> list:
    """The variables `layer` created itself, not those of layers it holds: trainable
    first, then non-trainable (`_trainable_variables`, `_non_trainable_variables`)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def is_functional(model) -> bool:
    """Whether `model` is a functional model (Keras' `Functional` class, which has no
    public name; a `keras.Sequential` is not one)."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def functional_graph(model):
    """The functional graph that runs `model`: the model itself if functional, the graph a
    built `keras.Sequential` runs (`_functional`), else None (subclassed models)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if is_functional(model) else None


def functional_inputs(model):
    """The `keras.Input`s of a functional or built Sequential model, in the structure
    the model takes them (one tensor, a list or a dict: `_inputs_struct`); else None."""
    graph = functional_graph(model)
    return None if graph is None else getattr(graph, "_inputs_struct", None)


def build_shapes(model) -> dict:
    """{build argument name: shape} recorded when `model` was built (`_build_shapes_dict`,
    e.g. `{"input_shape": (None, 6)}`); {} if it never was."""
    return dict(getattr(model, "_build_shapes_dict", None) or {})


def swap_layer_class(layer, cls) -> None:
    """Changes a built layer's class to `cls`, keeping Keras' cached view of `call`
    (`_call_signature`, `_call_has_training_arg`, `_call_has_mask_arg`,
    `_call_has_context_arg`) consistent with the new class's `call`."""
    layer.__class__ = cls
    signature = inspect.signature(layer.call)
    layer._call_signature = signature
    layer.call_signature_parameters = [p.name for p in signature.parameters.values()]
    layer._call_has_training_arg = "training" in layer.call_signature_parameters
    layer._call_has_mask_arg = "mask" in layer.call_signature_parameters
    layer._call_has_context_arg = {
        arg: arg in layer.call_signature_parameters for arg in layer._call_context_args
    }


def parent_path(layer) -> str:
    """The variable path of the scope `layer` was first built or called in (`_parent_path`,
    e.g. "net/sequential" for a layer of a Sequential held by subclassed model "net"); ""
    at the top level."""
    return getattr(layer, "_parent_path", None) or ""


@contextlib.contextmanager
def unlocked(layer):
    """Lets a built layer gain variables (`_tracker.unlock`), under the name scope it was
    built in, so new variables (`add_weight`, a `keras.random.SeedGenerator`) get the
    paths they would have had at build time, whatever scope the caller is in.

    `keras.name_scope` takes one path component (a name with "/" raises ValueError), so a
    nested parent path such as "net/body" is opened as the scope "body" whose
    `override_parent` is "net".
    """
    path = parent_path(layer)
    if path:
        *parents, last = path.split("/")
        scope = keras.name_scope(last, override_parent="/".join(parents))
    else:
        scope = contextlib.nullcontext()
    layer._tracker.unlock()
    try:
        with scope:
            yield layer
    finally:
        layer._tracker.lock()


def remove_seed_generator(layer, generator) -> None:
    """Stops `layer` tracking `generator` (a `keras.random.SeedGenerator` it holds, in
    `_seed_generators`), so its state is no longer one of the layer's variables."""
    generators = getattr(layer, "_seed_generators", None)
    if generators is not None and generator in generators:
        generators.remove(generator)
