"""Subclassed models holding nested Sequential and functional models, two levels deep.

The whole public path on the newest Keras: `tf_lth.masked`, `tf_lth.prune`, `model.fit`,
`tf_lth.strip`, `tf_lth.export_saved_model` and `tf_lth.export_litert` (run with
`ai_edge_litert`). Layers first built inside another model's call have a nested variable
path ("net/body/deep"), which `keras.name_scope` refuses as one name; masking must give
the new mask variables the same path as their kernels.

Also: `tf_lth.core.keras_compat` is the only module of tf_lth/, trainers/ and export/ that
reads or writes a private attribute of another object (docs/architecture.md, "Core").
"""

import ast
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lth
from tf_lth.core.layers import MaskedDense, masked_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
INPUT_DIM = 7
# Kernel shapes, by hand from the layer sizes below: (inputs, units).
KERNEL_SHAPES = {"seq_dense": (7, 6), "deep_dense": (6, 5), "block_dense": (5, 4),
                 "inner_dense": (4, 4), "proj": (4, 3), "head": (3, 3)}


def _functional(input_dim, units, name, layer_name):
    inputs = keras.Input((input_dim,))
    return keras.Model(inputs, keras.layers.Dense(units, activation="tanh",
                                                  name=layer_name)(inputs), name=name)


class SideBlock(keras.layers.Layer):
    """A subclassed block holding a functional model and a Dense layer of its own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = _functional(4, 4, "inner", "inner_dense")
        self.proj = keras.layers.Dense(3, activation="tanh", name="proj")

    def call(self, x):
        return self.proj(self.inner(x))


class Net(keras.Model):
    """body: a Sequential holding a Sequential and a functional block; side: a subclassed
    block holding a functional model; head: a Dense layer of the model itself."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.Sequential([
            keras.layers.Dense(6, activation="tanh", name="seq_dense"),
            keras.Sequential([keras.layers.Dense(5, activation="tanh", name="deep_dense")],
                             name="deep"),
            _functional(5, 4, "block", "block_dense"),
        ], name="body")
        self.side = SideBlock(name="side")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.side(self.body(x)))


def _inputs(count=16):
    return RNG.uniform(-1.0, 1.0, size=(count, INPUT_DIM)).astype("float32")


def _built_net():
    keras.utils.set_random_seed(1)
    model = Net(name="net")
    model(_inputs(2))
    return model


def _layers_by_name(model):
    return {layer.name: layer for layer in masked_layers(model)}


def _effective(layer):
    return layer.effective_kernel_numpy()


# ---- masked ---------------------------------------------------------------------------
def test_masked_reaches_every_kernel_two_levels_deep_and_keeps_outputs():
    model = _built_net()
    x = _inputs()
    before = np.array(model(x))
    paths_before = [variable.path for variable in model.variables]
    # Built inside net.call, inside body, inside deep: a parent path of three names.
    assert "net/body/deep/deep_dense/kernel" in paths_before

    assert tf_lth.masked(model) is model
    layers = _layers_by_name(model)
    assert set(layers) == set(KERNEL_SHAPES)
    assert {name: tuple(layer.kernel_variable.shape) for name, layer in layers.items()} \
        == KERNEL_SHAPES
    assert all(isinstance(layer, MaskedDense) for layer in layers.values())
    np.testing.assert_array_equal(np.array(model(x)), before)  # masks start at ones
    for layer in layers.values():
        folder = os.path.dirname(layer.kernel_variable.path)
        assert layer.mask.path == f"{folder}/mask"
        assert layer.frozen.path == f"{folder}/frozen"
        np.testing.assert_array_equal(layer.mask.numpy(), np.ones(KERNEL_SHAPES[layer.name]))
    paths = [variable.path for variable in model.variables]
    assert [path for path in paths if path in paths_before] == paths_before
    assert len(paths) == len(set(paths)) == 4 * len(KERNEL_SHAPES)


def test_supermask_masking_of_nested_models_puts_its_state_beside_each_kernel():
    model = _built_net()
    tf_lth.masked(model, supermask=True, seed=3)
    layers = _layers_by_name(model)
    assert set(layers) == set(KERNEL_SHAPES)
    for layer in layers.values():
        folder = os.path.dirname(layer.kernel_variable.path)
        assert layer.mask_logits.path == f"{folder}/mask_logits"
        assert layer.mask_logits.trainable and not layer.kernel_variable.trainable
        parent = os.path.dirname(folder)
        state_path = layer.seed_generator.state.path
        assert state_path == f"{parent}/{layer.name}_seed/seed_generator_state".lstrip("/")
    assert [v.name for v in model.trainable_variables] == ["mask_logits"] * 6
    outputs = model(_inputs(4), training=True)  # a sampled mask per call
    assert outputs.shape == (4, 3)


# ---- prune ----------------------------------------------------------------------------
def test_prune_removes_floor_of_fraction_of_kept_weights_in_every_nested_kernel():
    model = tf_lth.masked(_built_net())
    masks = tf_lth.prune(model, 0.25)
    # floor(0.25 x size): 42 -> 10, 30 -> 7, 20 -> 5, 16 -> 4, 12 -> 3, 9 -> 2 pruned.
    first = {"seq_dense": 32, "deep_dense": 23, "block_dense": 15, "inner_dense": 12,
             "proj": 9, "head": 7}
    assert {key: int(mask.sum()) for key, mask in masks.items()} == first
    layers = _layers_by_name(model)
    for name, layer in layers.items():
        mask = layer.mask.numpy()
        np.testing.assert_array_equal(mask, masks[name])
        magnitude = np.abs(layer.kernel_variable.numpy())
        assert magnitude[mask == 0].max() <= magnitude[mask == 1].min()  # smallest go
    # Round 2 prunes floor(0.25 x kept): 32 -> 8, 23 -> 5, 15 -> 3, 12 -> 3, 9 -> 2, 7 -> 1.
    second = tf_lth.prune(model, 0.25)
    assert {key: int(mask.sum()) for key, mask in second.items()} == {
        "seq_dense": 24, "deep_dense": 18, "block_dense": 12, "inner_dense": 9, "proj": 7,
        "head": 6}
    for name, layer in layers.items():
        assert np.all(second[name] <= masks[name])  # pruned weights stay pruned


def _pruned_and_trained():
    model = tf_lth.masked(_built_net())
    tf_lth.prune(model, 0.25)
    before = {name: np.array(layer.kernel_variable.numpy())
              for name, layer in _layers_by_name(model).items()}
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x = _inputs(64)
    y = RNG.normal(size=(64, 3)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model, before


def test_fit_keeps_pruned_weights_zero_and_frozen_and_trains_kept_ones():
    model, before = _pruned_and_trained()
    for name, layer in _layers_by_name(model).items():
        mask = layer.mask.numpy()
        after = layer.kernel_variable.numpy()
        np.testing.assert_array_equal(after[mask == 0], before[name][mask == 0])
        assert np.all(_effective(layer)[mask == 0] == 0.0)
        changed = after[mask == 1] != before[name][mask == 1]
        assert changed.mean() > 0.9, name


# ---- strip and export -----------------------------------------------------------------
def _litert(path, x):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interpreter.get_signature_runner()
    (name,), = [list(runner.get_input_details())]
    outputs = runner(**{name: x})
    assert len(outputs) == 1
    return next(iter(outputs.values()))


def test_export_and_strip_of_the_nested_model_match_the_masked_model(tmp_path):
    model, _ = _pruned_and_trained()
    x = _inputs(10)
    expected = np.array(model(x))

    path = tf_lth.export_saved_model(model, os.path.join(tmp_path, "saved"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (argument,) = serve.structured_input_signature[1]
    served = serve(**{argument: tf.constant(x)})
    assert len(served) == 1
    np.testing.assert_allclose(next(iter(served.values())).numpy(), expected, atol=1e-5)

    info = tf_lth.export_litert(model, os.path.join(tmp_path, "net.tflite"))
    np.testing.assert_allclose(_litert(info["path"], x), expected, atol=1e-4)
    assert len(masked_layers(model)) == 6  # still masked after tracing

    effective = {name: _effective(layer) for name, layer in _layers_by_name(model).items()}
    assert tf_lth.strip(model, inplace=True) is model
    assert masked_layers(model) == []
    np.testing.assert_allclose(np.array(model(x)), expected, atol=1e-6)
    dense = [layer for layer in tf_lth.core.layers.walk_layers(model)
             if isinstance(layer, keras.layers.Dense)]
    assert {layer.name for layer in dense} == set(KERNEL_SHAPES)
    for layer in dense:
        assert type(layer) is keras.layers.Dense
        np.testing.assert_array_equal(layer.kernel.numpy(), effective[layer.name])
    assert not [v.path for v in model.variables if v.name in ("mask", "frozen")]


# ---- private attributes ---------------------------------------------------------------
# Underscore names that are public API: namedtuple's methods.
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
COMPAT = "tf_lth/core/keras_compat.py"


def _is_private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in PUBLIC_UNDERSCORE


def _stdlib_aliases(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in sys.stdlib_module_names:
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def _owner_is_exempt(owner, stdlib: set) -> bool:
    """self/cls, super(), and standard-library modules (os._exit, sys._getframe)."""
    if isinstance(owner, ast.Name):
        return owner.id in ("self", "cls") or owner.id in stdlib
    return (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name)
            and owner.func.id == "super")


def private_touches(source: str) -> list:
    """`X._name` and `getattr(X, "_name")` (also set/has/delattr) where X is not exempt,
    and imports of `keras.src`; as "line: text"."""
    tree = ast.parse(source)
    stdlib = _stdlib_aliases(tree)
    found = []
    for node in ast.walk(tree):
        owner = name = None
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner, name = node.value, node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)):
            owner, name = node.args[0], node.args[1].value
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""])
            found += [f"{node.lineno}: import {module}" for module in modules
                      if module == "keras.src" or module.startswith("keras.src.")]
        if owner is not None and not _owner_is_exempt(owner, stdlib):
            found.append(f"{node.lineno}: {ast.unparse(owner)}.{name}")
    return found


def _project_files() -> list:
    paths = []
    for folder in ("tf_lth", "trainers", "export"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            paths += [os.path.relpath(os.path.join(directory, name), ROOT)
                      for name in files if name.endswith(".py")]
    return sorted(paths)


def test_private_attribute_check_flags_other_objects_only():
    source = "\n".join([
        "import os, sys",
        "import keras.src.models as km",
        "from keras.src.models.functional import Functional",
        "def f(self, layer, model):",
        "    self._x, super()._y, os._exit, sys._getframe, layer.__class__",
        "    point._replace(x=1)",
        "    layer._layers",
        "    getattr(model, '_functional', None)",
        "    getattr(self, '_own', None)",
    ])
    assert private_touches(source) == [
        "2: import keras.src.models",
        "3: import keras.src.models.functional",
        "7: layer._layers",
        "8: model._functional",
    ]


def test_only_keras_compat_touches_private_attributes_of_other_objects():
    files = _project_files()
    assert COMPAT in files and "tf_lth/core/layers/inplace.py" in files
    with open(os.path.join(ROOT, COMPAT), encoding="utf-8") as stream:
        assert private_touches(stream.read())  # the check sees what it must allow there
    problems = []
    for path in files:
        if path == COMPAT:
            continue
        with open(os.path.join(ROOT, path), encoding="utf-8") as stream:
            problems += [f"{path}:{hit}" for hit in private_touches(stream.read())]
    assert not problems, "private attributes touched outside tf_lth/core/keras_compat.py:\n" + \
        "\n".join(problems)


# ---- the compat functions --------------------------------------------------------------
def test_keras_compat_reads_what_keras_holds():
    from tf_lth.core import keras_compat

    model = _built_net()
    assert keras_compat.child_layers(model) == [model.body, model.side, model.head]
    body = keras_compat.child_layers(model.body)  # built on a batch: an InputLayer first
    assert isinstance(body[0], keras.layers.InputLayer)
    assert body[1:] == model.body.layers
    assert keras_compat.child_layers(model.head) == []
    assert [v.path for v in keras_compat.own_variables(model.head)] == [
        "net/head/kernel", "net/head/bias"]
    assert keras_compat.own_variables(model) == []  # its layers own them
    assert keras_compat.build_shapes(model) == {"input_shape": (2, INPUT_DIM)}
    assert keras_compat.functional_inputs(model) is None  # subclassed
    block = model.body.layers[2]
    assert keras_compat.functional_inputs(block).shape == (None, 5)
    assert keras_compat.is_functional(block) and not keras_compat.is_functional(model.body)
    assert keras_compat.functional_inputs(model.body).shape == (2, INPUT_DIM)  # its batch
    assert keras_compat.functional_inputs(keras.Sequential([keras.layers.Dense(2)])) is None
    assert keras_compat.parent_path(model.body.layers[1].layers[0]) == "net/body/deep"


def test_learning_rate_variable_is_the_optimizers_variable_or_none():
    from tf_lth.core.keras_compat import learning_rate_variable

    adam = keras.optimizers.Adam(0.003)
    variable = learning_rate_variable(adam)
    assert variable is not None and variable.path.endswith("learning_rate")
    np.testing.assert_allclose(variable.numpy(), 0.003)
    variable.assign(0.5)
    np.testing.assert_allclose(float(adam.learning_rate), 0.5)  # the optimizer's own
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert learning_rate_variable(keras.optimizers.SGD(schedule)) is None
    assert learning_rate_variable(None) is None


def test_unlocked_opens_a_nested_parent_path_whatever_the_callers_scope():
    from tf_lth.core.keras_compat import unlocked

    layer = _built_net().body.layers[1].layers[0]  # deep_dense, parent "net/body/deep"
    with pytest.raises(ValueError, match="cannot contain character"):
        keras.name_scope("net/body/deep")  # the bug: one name per scope
    with keras.name_scope("caller"), unlocked(layer):
        extra = layer.add_weight(name="extra", shape=(2,), initializer="zeros")
        generator = keras.random.SeedGenerator(0, name="gen")
    assert extra.path == "net/body/deep/deep_dense/extra"
    assert generator.state.path == "net/body/deep/gen/seed_generator_state"
    with pytest.raises(ValueError):  # locked again
        layer.add_weight(name="late", shape=(1,))
