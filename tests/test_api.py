"""The public API on users' own models: masked, prune, state, supermasks, strip, export."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lth
from tf_lth.core.layers import MaskedDense, MaskedMixin, masked_layers

RNG = np.random.default_rng(0)


def _functional_cnn():
    inputs = keras.Input((12, 12, 1), name="images")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.bn = keras.layers.BatchNormalization()
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.head(self.flatten(self.bn(self.conv(x), training=training)))


def _images(count=8, shape=(12, 12, 1)):
    return RNG.uniform(size=(count, *shape)).astype("float32")


def _nested():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu",
                                                                   name="inner_dense")],
                             name="inner")
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(2, name="outer_dense")(inner(inputs)))


# ---- masked -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, x", [
    (_functional_cnn, _images()),
    (lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                               keras.layers.Dense(2)]), RNG.uniform(size=(3, 6)).astype("f")),
    (_nested, RNG.uniform(size=(3, 6)).astype("f")),
])
def test_masked_graph_models_in_place_keep_outputs_and_weights(make, x):
    model = make()
    before = np.array(model(x))
    weights = [np.array(w) for w in model.get_weights()]
    assert tf_lth.masked(model) is model
    assert masked_layers(model)
    np.testing.assert_allclose(np.array(model(x)), before, atol=1e-6)
    for a, b in zip(model.get_weights(), weights):  # same weights, masks not among them
        np.testing.assert_array_equal(a, b)


def test_masked_nested_model_masks_the_inner_dense():
    model = _nested()
    tf_lth.masked(model)
    assert [slot.key for slot in tf_lth.kernel_slots(model)] == ["inner_dense", "outer_dense"]


def test_masked_subclassed_model_in_place_and_training_respects_masks():
    model = Subclassed()
    x, y = _images(32), RNG.integers(0, 3, 32)
    model(x[:1])
    before = np.array(model(x))
    tf_lth.masked(model)
    assert isinstance(model.conv, MaskedMixin) and isinstance(model.head, MaskedDense)
    np.testing.assert_allclose(np.array(model(x)), before, atol=1e-6)
    tf_lth.prune(model, 0.5)
    pruned = np.array(model.head.mask) == 0
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    effective = np.array(model.head.effective_kernel())
    assert np.all(effective[pruned] == 0.0)


@pytest.mark.parametrize("layer, shape, keys", [
    (keras.layers.Conv1D(3, 3, padding="causal"), (10, 2), ["layer"]),
    (keras.layers.Conv2D(3, 3), (6, 6, 2), ["layer"]),
    (keras.layers.Conv3D(3, 2), (4, 4, 4, 2), ["layer"]),
    (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 2), ["layer"]),
    (keras.layers.SeparableConv2D(3, 3), (6, 6, 2),
     ["layer/depthwise_kernel", "layer/pointwise_kernel"]),
    (keras.layers.EinsumDense("abc,cd->abd", output_shape=(5, 4), bias_axes="d"), (5, 3),
     ["layer"]),
])
def test_every_layer_kind_is_masked_and_its_mask_acts(layer, shape, keys):
    layer.name = "layer"  # noqa: keras allows renaming before use
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layer(inputs))
    x = RNG.uniform(size=(2, *shape)).astype("float32")
    before = np.array(model(x))
    tf_lth.masked(model)
    assert [slot.key for slot in tf_lth.kernel_slots(model)] == keys
    np.testing.assert_allclose(np.array(model(x)), before, atol=1e-5)
    tf_lth.set_masks(model, {key: np.zeros(tf_lth.get_masks(model)[key].shape)
                             for key in keys})
    bias = np.array(layer.bias)
    np.testing.assert_allclose(np.array(model(x)), np.broadcast_to(bias, before.shape),
                               atol=1e-6)


def test_an_embedding_table_is_masked_like_a_kernel(tmp_path):
    """A pruned table entry looks up as 0, takes no gradient, and stays pruned through a
    .keras file, the SavedModel and LiteRT (checked against NumPy lookups)."""
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    table = keras.layers.Embedding(7, 3, name="table")
    model = tf_lth.masked(keras.Model(tokens, keras.layers.Flatten()(table(tokens))))
    assert [slot.key for slot in tf_lth.kernel_slots(model)] == ["table"]
    mask = np.ones((7, 3), "float32")
    mask[2] = 0.0  # token 2 is pruned entirely
    mask[4, 1] = 0.0
    tf_lth.set_masks(model, {"table": mask})
    x = np.array([[2, 4, 0, 6, 2], [1, 4, 3, 5, 0]], "int32")

    def lookups(m):
        raw = np.array(m.get_layer("table").embeddings)
        return (raw * mask)[x].reshape(2, 15)

    np.testing.assert_allclose(np.array(model(x)), lookups(model), atol=1e-7)
    assert np.all(np.array(model(x))[0, :3] == 0.0)
    before = np.array(table.embeddings)
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(x, np.ones((2, 15), "float32"), epochs=2, verbose=0)
    after = np.array(table.embeddings)
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert not np.allclose(after[x.ravel()][mask[x.ravel()] == 1],
                           before[x.ravel()][mask[x.ravel()] == 1])
    expected = lookups(model)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(tf_lth.get_masks(loaded)["table"], mask)
    np.testing.assert_allclose(np.array(loaded(x)), expected, atol=1e-6)
    serve = tf.saved_model.load(tf_lth.export_saved_model(
        model, os.path.join(tmp_path, "saved"))).signatures["serving_default"]
    (served,) = serve(tokens=tf.constant(x)).values()
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-6)
    info = tf_lth.export_litert(model, os.path.join(tmp_path, "model.tflite"))
    (lite,) = tf_lth.run_litert(info["path"], x).values()
    np.testing.assert_allclose(lite, expected, atol=1e-6)


def test_layers_argument_names_or_predicate_and_clear_errors():
    model = _functional_cnn()
    tf_lth.masked(model, layers=["head"])
    assert [layer.name for layer in masked_layers(model)] == ["head"]
    model = _functional_cnn()
    tf_lth.masked(model, layers=lambda layer: isinstance(layer, keras.layers.Conv2D))
    assert [layer.name for layer in masked_layers(model)] == ["conv"]
    with pytest.raises(ValueError, match="not maskable layers.*Allowed: conv, head"):
        tf_lth.masked(_functional_cnn(), layers=["nope"])
    flat = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="Nothing to mask"):
        tf_lth.masked(flat)
    with pytest.raises(ValueError, match="needs a built model"):
        tf_lth.masked(Subclassed())
    with pytest.raises(ValueError, match=r"Unknown layer options \['mask_blok'\]"):
        tf_lth.masked(_functional_cnn(), mask_blok=4)


def test_layers_with_kernels_left_alone_are_named_in_a_warning():
    class MyDense(keras.layers.Dense):
        pass

    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2DTranspose(2, 3, name="up")(inputs)
    x = keras.layers.Flatten()(x)
    x = MyDense(3, name="custom")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.warns(UserWarning) as caught:
        tf_lth.masked(model)
    message = str(caught[0].message)
    assert "up (Conv2DTranspose: not a kind tf_lth masks)" in message
    assert "custom (MyDense: a subclass of Dense)" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layers left out by the caller's choice: no warning
        tf_lth.masked(_functional_cnn(), layers=["head"])


def test_copy_true_leaves_the_original_alone():
    model = _functional_cnn()
    copy = tf_lth.masked(model, copy=True)
    assert copy is not model and not masked_layers(model) and masked_layers(copy)
    x = _images()
    np.testing.assert_allclose(np.array(copy(x)), np.array(model(x)), atol=1e-6)
    model = Subclassed()
    model(_images(1))
    with pytest.raises(ValueError, match="subclassed model cannot be cloned"):
        tf_lth.masked(model, copy=True)


def test_keras_file_round_trip_of_a_masked_functional_model(tmp_path):
    model = tf_lth.masked(_functional_cnn())
    tf_lth.prune(model, 0.5)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for key, mask in tf_lth.get_masks(model).items():
        np.testing.assert_array_equal(tf_lth.get_masks(loaded)[key], mask)
    x = _images()
    np.testing.assert_allclose(np.array(loaded(x)), np.array(model(x)), atol=1e-6)


@pytest.mark.parametrize("kind", ["subclassed", "attention"])
def test_layers_built_by_model_code_reload_into_a_re_masked_copy(tmp_path, kind):
    """docs/api.md, Saving and loading: layers the model's own code creates come back plain
    from a .keras file, so the weights and masks load into a rebuilt, re-masked model."""
    def build():
        if kind == "subclassed":
            model = Subclassed()
            model(_images(1))
            return model
        tokens = keras.Input((6, 8))
        attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(tokens, tokens)
        return keras.Model(tokens, keras.layers.Dense(3)(keras.layers.Flatten()(attended)))

    x = _images() if kind == "subclassed" else RNG.uniform(size=(4, 6, 8)).astype("float32")
    model = tf_lth.masked(build())
    tf_lth.prune(model, 0.5)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    rebuilt = tf_lth.masked(build())
    assert all(mask.all() for mask in tf_lth.get_masks(rebuilt).values())
    rebuilt.load_weights(path)
    masks = tf_lth.get_masks(model)
    assert [key.split("_")[0] for key in tf_lth.get_masks(rebuilt)] == \
        [key.split("_")[0] for key in masks]
    for saved, loaded in zip(masks.values(), tf_lth.get_masks(rebuilt).values()):
        assert saved.mean() == pytest.approx(0.5, abs=0.05)
        np.testing.assert_array_equal(loaded, saved)
    np.testing.assert_allclose(np.array(rebuilt(x)), np.array(model(x)), atol=1e-6)


# ---- the get_weights / set_weights trap ---------------------------------------------------
def test_keras_rewind_idiom_never_resets_a_mask():
    model = _functional_cnn()
    plain_count = len(model.get_weights())
    tf_lth.masked(model)
    initial = model.get_weights()
    assert len(initial) == plain_count  # kernels and biases; masks are not weights
    new_masks = tf_lth.prune(model, 0.5)
    model.set_weights(initial)
    for key, mask in tf_lth.get_masks(model).items():
        np.testing.assert_array_equal(mask, new_masks[key])
        assert mask.mean() == pytest.approx(0.5, abs=0.01)
    # the same holds for lists saved before masking
    fresh = _functional_cnn()
    before = fresh.get_weights()
    tf_lth.masked(fresh)
    tf_lth.prune(fresh, 0.5)
    fresh.set_weights(before)
    assert tf_lth.weights_remaining(fresh)[0] == pytest.approx(0.5, abs=0.01)


# ---- state, prune, find_ticket -------------------------------------------------------------
def test_weights_state_excludes_masks_and_rewind_restores_weights_only():
    model = tf_lth.masked(_functional_cnn())
    state = tf_lth.weights_state(model)
    assert not any(key.endswith(("/mask", "/frozen")) for key in state)
    assert "bn/moving_mean" in state and "conv/kernel" in state
    tf_lth.prune(model, 0.5)
    for variable in model.weights:
        variable.assign(np.ones(variable.shape, "float32"))
    tf_lth.rewind(model, state)
    for key, value in tf_lth.weights_state(model).items():
        np.testing.assert_array_equal(value, state[key])
    assert tf_lth.weights_remaining(model)[0] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="does not match this model's weights"):
        tf_lth.rewind(model, {"conv/kernel": state["conv/kernel"]})


def test_prune_per_layer_rates_global_scope_and_reference_criteria():
    model = tf_lth.masked(_functional_cnn())
    reference = tf_lth.weights_state(model)
    result = tf_lth.prune(model, {"head": 0.5})
    assert result["conv"].mean() == 1.0 and result["head"].mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="needs reference"):
        tf_lth.prune(model, 0.2, criterion="magnitude_increase")
    tf_lth.prune(model, 0.2, criterion="magnitude_increase", reference=reference)
    with pytest.raises(ValueError, match="unknown layers"):
        tf_lth.prune(model, {"nope": 0.2})
    model = tf_lth.masked(_functional_cnn())
    kept = {key: mask.sum() for key, mask in tf_lth.get_masks(model).items()}
    tf_lth.prune(model, 0.5, scope="global")
    masks_now = tf_lth.get_masks(model)
    total = sum(kept.values())
    assert sum(mask.sum() for mask in masks_now.values()) == total - int(0.5 * total)
    # one ranking: every kept |w| is at least every pruned |w|
    kernels = {slot.key: np.abs(np.array(slot.kernel)) for slot in tf_lth.kernel_slots(model)}
    kept_min = min(kernels[k][masks_now[k] == 1].min() for k in kernels)
    pruned_max = max(kernels[k][masks_now[k] == 0].max() for k in kernels)
    assert kept_min >= pruned_max


def test_prune_snip_computes_gradients_from_data():
    model = tf_lth.masked(_functional_cnn())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference = tf_lth.weights_state(model)
    x, y = _images(16), RNG.integers(0, 3, 16)
    result = tf_lth.prune(model, 0.3, criterion="snip", reference=reference, data=(x, y))
    assert result["head"].mean() == pytest.approx(0.7, abs=0.01)


def test_find_ticket_rewinds_to_step_k_with_the_snapshot_callback():
    model = tf_lth.masked(_functional_cnn())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _images(40), RNG.integers(0, 3, 40)
    starts = []

    def train(model, callbacks, round_index):
        starts.append(np.array(model.get_layer("head").kernel_variable))
        return model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=callbacks)

    ticket = tf_lth.find_ticket(model, train, rounds=2, rate=0.5, rewind_to=2, verbose=0)
    assert [round(r["weights_remaining"], 2) for r in ticket.records] == [1.0, 0.5, 0.25]
    assert "loss" in ticket.records[0]["train"]
    # rounds 1 and 2 start from the step-2 weights of round 0, on the kept positions
    kept = ticket.masks["head"] == 1
    np.testing.assert_array_equal(starts[2][kept], ticket.start_state["head/kernel"][kept])
    assert not np.array_equal(starts[1], starts[0])
    with pytest.raises(ValueError, match="needs train_fn\\(model, callbacks\\)"):
        tf_lth.find_ticket(model, lambda m: None, rounds=1, rate=0.2, rewind_to=3)
    reset = ticket.reset(tf_lth.masked(_functional_cnn()))
    np.testing.assert_array_equal(tf_lth.get_masks(reset)["head"], ticket.masks["head"])


# ---- supermasks ------------------------------------------------------------------------------
def test_learned_supermask_changes_no_batchnorm_variable_and_evaluates_deterministically():
    model = _functional_cnn()
    model(_images(1))
    tf_lth.masked(model, supermask=True)
    trainable = [variable.name for variable in model.trainable_variables]
    assert trainable == ["mask_logits", "mask_logits"]
    bn = model.get_layer("bn")
    before = [np.array(variable) for variable in bn.variables]
    model.compile(keras.optimizers.SGD(100.0, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _images(64), RNG.integers(0, 3, 64)
    logits_before = np.array(model.get_layer("head").mask_logits)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert not np.array_equal(np.array(model.get_layer("head").mask_logits), logits_before)
    for value, variable in zip(before, bn.variables):
        np.testing.assert_array_equal(np.array(variable), value)  # gamma, beta, moving stats
    first, second = model.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0)
    assert first == second
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert tf_lth.supermask_mode(model, "sample") == "expected"
    samples = [model.predict(x, verbose=0) for _ in range(2)]
    assert not np.array_equal(samples[0], samples[1])


def test_weights_remaining_of_a_supermask_counts_its_expected_mask():
    """weights_remaining counts what evaluation uses: sigmoid(logits) > 0.5, times the fixed
    mask; logits set by hand to known signs give a known fraction."""
    model = tf_lth.masked(keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)]),
                          supermask=True)
    layer = model.layers[0]
    logits = np.where(np.arange(20).reshape(4, 5) < 6, 1.0, -1.0).astype("float32")  # 6 kept
    layer.mask_logits.assign(logits)
    key = layer.name
    assert tf_lth.weights_remaining(model) == (pytest.approx(6 / 20), {key: pytest.approx(0.3)})
    fixed = np.ones((4, 5), "float32")
    fixed[0, :2] = 0.0  # two of the six the supermask keeps are pruned for good
    tf_lth.set_masks(model, {key: fixed})
    assert tf_lth.weights_remaining(model)[0] == pytest.approx(4 / 20)
    assert tf_lth.get_masks(model)[key].sum() == 18  # the fixed mask alone


def test_supermask_batchnorm_update_keeps_gamma_beta_and_updates_statistics():
    model = _functional_cnn()
    model(_images(1))
    tf_lth.masked(model, supermask=True, batchnorm="update")
    bn = model.get_layer("bn")
    gamma, mean = np.array(bn.gamma), np.array(bn.moving_mean)
    model.compile(keras.optimizers.SGD(100.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_images(32), RNG.integers(0, 3, 32), epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(bn.gamma), gamma)
    assert not np.array_equal(np.array(bn.moving_mean), mean)


# ---- strip and export -----------------------------------------------------------------------
def test_strip_returns_a_plain_model_and_inplace_works_for_subclassed():
    model = tf_lth.masked(_functional_cnn())
    tf_lth.prune(model, 0.6)
    x = _images()
    plain = tf_lth.strip(model)
    assert not masked_layers(plain) and masked_layers(model)
    np.testing.assert_allclose(np.array(plain(x)), np.array(model(x)), atol=1e-6)
    assert np.mean(np.array(plain.get_layer("head").kernel) == 0) == pytest.approx(0.6, abs=0.01)
    sub = Subclassed()
    sub(x[:1])
    tf_lth.masked(sub)
    tf_lth.prune(sub, 0.5)
    expected = np.array(sub(x))
    with pytest.raises(ValueError, match="inplace=True"):
        tf_lth.strip(sub)
    assert tf_lth.strip(sub, inplace=True) is sub
    assert type(sub.head) is keras.layers.Dense and not masked_layers(sub)
    assert not any("mask" in variable.path for variable in sub.variables)
    np.testing.assert_allclose(np.array(sub(x)), expected, atol=1e-6)


def test_strip_keeps_operations_between_layers_and_attention_sublayers():
    """A functional graph with an operation node (`a + b` is a Keras op, not a layer) and a
    MultiHeadAttention (its EinsumDense sublayers are masked) strips to a plain model with
    the same outputs and exact zeros where pruned."""
    tokens = keras.Input((6, 8), name="tokens")
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(tokens, tokens)
    summed = keras.layers.LayerNormalization()(tokens + attended)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(summed))
    model = tf_lth.masked(keras.Model(tokens, outputs))
    assert len(masked_layers(model)) == 5  # query, key, value, attention_output, head
    tf_lth.prune(model, 0.5)
    x = RNG.uniform(size=(4, 6, 8)).astype("float32")
    plain = tf_lth.strip(model)
    assert not masked_layers(plain)
    np.testing.assert_allclose(np.array(plain(x)), np.array(model(x)), atol=1e-5)
    assert np.mean(np.array(plain.get_layer("head").kernel) == 0) == pytest.approx(0.5, abs=0.02)


def _two_input_softmax_model():
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(image))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4)(extra)])
    outputs = keras.layers.Dense(5, activation="softmax", name="probs")(x)
    return keras.Model({"image": image, "extra": extra}, outputs)


def test_export_takes_the_models_own_signature_and_outputs(tmp_path):
    model = tf_lth.masked(_two_input_softmax_model())
    tf_lth.prune(model, 0.5)
    inputs = {"image": _images(6, (8, 8, 1)), "extra": RNG.uniform(size=(6, 3)).astype("f")}
    expected = np.array(model(inputs))
    path = tf_lth.export_saved_model(model, os.path.join(tmp_path, "saved"))
    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs = serve(**{k: tf.constant(v) for k, v in inputs.items()})
    assert list(outputs) == ["probs"]
    np.testing.assert_allclose(outputs["probs"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)  # softmax once
    info = tf_lth.export_litert(model, os.path.join(tmp_path, "model.tflite"))
    assert info["inputs"] == ["extra", "image"] and info["outputs"] == ["probs"]
    lite = tf_lth.run_litert(info["path"], inputs)["probs"]
    np.testing.assert_allclose(lite, expected, atol=1e-5)
    assert masked_layers(model)  # the model is masked again after tracing


def test_a_recurrent_loop_litert_cannot_express_is_one_clear_error_and_unroll_converts(
        tmp_path):
    """LiteRT's built-in ops have no TensorList ops (an LSTM's while loop): the error says
    so and what converts instead; the same model unrolled exports and matches Keras."""
    def recurrent(unroll):
        inputs = keras.Input((6, 4), name="seq")
        hidden = keras.layers.LSTM(5, unroll=unroll)(keras.layers.Dense(8)(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(hidden))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the LSTM's own kernels stay unmasked
        looped, unrolled = tf_lth.masked(recurrent(False)), tf_lth.masked(recurrent(True))
    path = os.path.join(tmp_path, "looped.tflite")
    with pytest.raises(ValueError, match=r"recurrent loop .*unroll=True.*export_saved_model"):
        tf_lth.export_litert(looped, path)
    assert not os.path.exists(path) and os.listdir(tmp_path) == []
    tf_lth.prune(unrolled, 0.5)
    x = RNG.uniform(size=(2, 6, 4)).astype("float32")
    info = tf_lth.export_litert(unrolled, os.path.join(tmp_path, "unrolled.tflite"))
    (values,) = tf_lth.run_litert(info["path"], x).values()
    np.testing.assert_allclose(values, np.array(unrolled(x)), atol=1e-5)


def test_a_mixed_precision_model_exports_to_litert_in_float32(tmp_path):
    """LiteRT's built-in kernels take no bfloat16: the export computes in float32 (checked
    against a NumPy forward pass of the masked weights) and the model keeps its policy."""
    model = tf_lth.masked(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu", dtype="mixed_bfloat16"),
        keras.layers.Dense(3, dtype="float32")]))
    tf_lth.prune(model, 0.5)
    hidden, head = model.layers
    info = tf_lth.export_litert(model, os.path.join(tmp_path, "mixed.tflite"), sparse=False)
    assert hidden.compute_dtype == "bfloat16"
    masks = list(tf_lth.get_masks(model).values())
    x = RNG.uniform(size=(5, 6)).astype("float32")
    h = np.maximum(x @ (np.array(hidden.kernel) * masks[0]) + np.array(hidden.bias), 0.0)
    expected = h @ (np.array(head.kernel) * masks[1]) + np.array(head.bias)
    (values,) = tf_lth.run_litert(info["path"], x).values()
    np.testing.assert_allclose(values, expected, atol=1e-5)


def test_export_flat_mlp_and_int8(tmp_path):
    model = tf_lth.masked(keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, "relu"),
                                            keras.layers.Dense(4)]))
    tf_lth.prune(model, 0.7)
    x = RNG.uniform(size=(30, 20)).astype("float32")
    info = tf_lth.export_litert(model, os.path.join(tmp_path, "mlp.tflite"), int8=True,
                                representative_data=x)
    assert info["kind"] == "tflite_sparse_int8"
    result = tf_lth.run_litert(info["path"], x)
    (name, values), = result.items()
    assert values.shape == (30, 4)
    assert np.abs(values - np.array(model(x))).max() < 0.2


def test_config_prune_scope_flag_is_validated():
    from tf_lth.core import config as config_lib

    config = config_lib.make(run_dir="/tmp/x", prune_scope="global", experiment="lottery")
    assert config.prune_scope == "global"
    with pytest.raises(config_lib.ConfigError, match="--prune_scope='rows' is not allowed"):
        config_lib.make(run_dir="/tmp/x", prune_scope="rows")


def test_unbuilt_layers_are_left_alone_with_a_warning_and_supermask_needs_fresh_layers():
    class WithSpare(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.used = keras.layers.Dense(3)
            self.spare = keras.layers.Dense(3)  # never called

        def call(self, x):
            return self.used(x)

    model = WithSpare()
    model(np.ones((1, 4), "float32"))
    with pytest.warns(UserWarning, match="never built"):
        tf_lth.masked(model)
    assert [layer.name for layer in masked_layers(model)] == [model.used.name]
    with pytest.raises(ValueError, match="already masked without a supermask"):
        tf_lth.masked(model, supermask=True)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_takes_every_criterion_in_both_scopes_and_1x4_blocks(scope):
    from tf_lth.core import masks

    model = tf_lth.masked(keras.Sequential([keras.Input((8,)), keras.layers.Dense(8),
                                            keras.layers.Dense(4)]))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference = tf_lth.weights_state(model)
    for variable in model.trainable_variables:  # "training" moves every weight
        variable.assign(variable + RNG.normal(scale=0.1, size=variable.shape).astype("f"))
    data = (RNG.uniform(size=(16, 8)).astype("f"), RNG.integers(0, 4, 16))
    for criterion in masks.CRITERIA:
        fresh = {key: np.ones_like(mask) for key, mask in tf_lth.get_masks(model).items()}
        tf_lth.set_masks(model, fresh)
        result = tf_lth.prune(model, 0.5, criterion=criterion, reference=reference,
                              scope=scope, data=data, block="1x4")
        assert sum(m.sum() for m in result.values()) == 48, criterion  # 96 - floor(0.5 x 96)
        assert all(masks.is_block_structured(m, 4) for m in result.values()), criterion
