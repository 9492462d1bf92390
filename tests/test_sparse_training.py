"""Gradual pruning and dynamic sparse training in model.fit (tf_lth.core.sparse_training),
against the rules of docs/sparse_training.md: the step a mask changes at, the counts it
keeps, what grown weights start at."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tf_lth  # noqa: E402
from tf_lth.core import sparsity  # noqa: E402
from tf_lth.core.schedules import ConstantSparsity, PolynomialDecay  # noqa: E402
from tf_lth.core.sparse_training import DynamicSparse, GradualPruning  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=256):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 20)).astype("float32"), rng.integers(0, 3, n)


def _model(seed=0, spe=1, jit=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    tf_lth.masked(model)
    model.compile(keras.optimizers.Adam(0.01), LOSS, steps_per_execution=spe, jit_compile=jit)
    return model


class MaskLog(keras.callbacks.Callback):
    """The masks and kernels after every batch (steps_per_execution=1: after every step)."""

    def __init__(self):
        super().__init__()
        self.masks, self.kernels = [], []

    def on_train_batch_end(self, batch, logs=None):
        slots = tf_lth.kernel_slots(self.model)
        self.masks.append({s.key: s.mask.numpy().copy() for s in slots})
        self.kernels.append({s.key: s.kernel.numpy().copy() for s in slots})


def test_gradual_pruning_updates_at_the_schedules_steps_with_tfmots_counts():
    x, y = _data()
    model = _model()
    schedule = PolynomialDecay(0.0, 0.75, begin_step=3, end_step=15, power=3, frequency=4)
    log = MaskLog()
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
              callbacks=[GradualPruning(schedule), log])  # 16 steps
    sizes = {"hidden": 320, "out": 48}
    for step in range(1, 17):
        masks = log.masks[step - 1]
        prune = step >= 3 and step <= 15 and (step - 3) % 4 == 0
        previous = log.masks[step - 2] if step > 1 else {
                k: np.ones_like(m) for k, m in masks.items()}
        changed = any(not np.array_equal(masks[k], previous[k]) for k in sizes)
        assert changed == (prune and step > 3), step  # step 3 prunes to sparsity 0: no change
        last_pruned = max([s for s in range(3, step + 1) if (s - 3) % 4 == 0] or [0])
        if last_pruned:
            p = min(1.0, max(0.0, (last_pruned - 3) / 12))
            target = 0.75 - 0.75 * (1 - p) ** 3
            for key, size in sizes.items():
                assert masks[key].sum() == max(round(size * (1 - np.float32(target))), 1)
    for slot in tf_lth.kernel_slots(model):  # zeroed at the end of training
        assert np.all(slot.kernel.numpy()[slot.mask.numpy() == 0] == 0)


def test_gradual_pruning_is_the_same_with_several_steps_per_call_and_xla():
    x, y = _data()
    results = []
    for spe, jit in ((1, False), (4, False), (5, True)):
        model = _model(spe=spe, jit=jit)
        schedule = ConstantSparsity(0.6, begin_step=2, frequency=3)
        model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
                  callbacks=[GradualPruning(schedule)])
        results.append({s.key: (s.mask.numpy(), s.kernel.numpy())
                        for s in tf_lth.kernel_slots(model)})
    for other in results[1:]:
        for key, (mask, kernel) in results[0].items():
            np.testing.assert_array_equal(other[key][0], mask)
            np.testing.assert_allclose(other[key][1], kernel, atol=1e-5)


def test_a_schedule_that_can_never_prune_warns_and_the_model_stays_dense():
    # begin 0, frequency 100, end 8: pruning steps are 100, 200, ... (batches count from 1),
    # none of them within 1..8, so 16 batches leave every mask whole
    with pytest.warns(UserWarning, match=r"never prunes.*frequency"):
        callback = GradualPruning(PolynomialDecay(0.0, 0.8, begin_step=0, end_step=8))
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    assert all(slot.mask.numpy().all() for slot in tf_lth.kernel_slots(model))


@pytest.mark.parametrize("schedule", [
    PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100),  # prunes at step 100
    PolynomialDecay(0.0, 0.8, begin_step=5, end_step=5),    # prunes at step 5
    ConstantSparsity(0.5, begin_step=0, end_step=-1),       # until training ends
])
def test_a_schedule_that_prunes_somewhere_does_not_warn(schedule, recwarn):
    GradualPruning(schedule)
    assert not [w for w in recwarn if "never prunes" in str(w.message)]


def test_global_block_and_m_by_n_gradual_pruning():
    x, y = _data()
    model = _model()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[
        GradualPruning(ConstantSparsity(0.5, begin_step=1, frequency=100), scope="global")])
    kept = {s.key: s.mask.numpy().sum() for s in tf_lth.kernel_slots(model)}
    assert sum(kept.values()) == round(368 * 0.5) and kept["hidden"] != 160  # one threshold
    model = _model()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[
        GradualPruning(ConstantSparsity(0.5, begin_step=1, frequency=100), block="1x4")])
    for slot in tf_lth.kernel_slots(model):
        mask = slot.mask.numpy()
        blocks = mask[: mask.shape[0] // 4 * 4].reshape(-1, 4, mask.shape[1])
        assert np.all(blocks.min(axis=1) == blocks.max(axis=1))  # whole blocks of 4 inputs
    model = _model()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[
        GradualPruning(ConstantSparsity(0.5, begin_step=1), sparsity_m_by_n=(2, 4))])
    for slot in tf_lth.kernel_slots(model):
        groups = slot.mask.numpy().reshape(-1, 4, slot.mask.shape[1])
        assert np.all(groups.sum(axis=1) == 2)


def _moments(model, slot):
    prefix = slot.kernel.path.replace("/", "_") + "_"
    return [v for v in model.optimizer.variables if v.name.startswith(prefix)]


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dynamic_sparse_holds_the_target_and_changes_masks_at_update_steps_only(method):
    x, y = _data()
    model = _model()
    log = MaskLog()
    callback = DynamicSparse(0.8, method=method, distribution="erk", update_every=3,
                             drop_fraction=0.5)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[callback, log])
    end_step = int(0.75 * 16)
    assert int(callback.updater.end_step.numpy()) == end_step
    targets = sparsity.kept_counts({"hidden": (20, 16), "out": (16, 3)},
                                   sparsity.erk_densities({"hidden": (20, 16), "out": (16, 3)},
                                                          0.8))
    assert sum(targets.values()) == round(0.2 * 368)
    changes = []
    for step in range(1, 17):
        for key in targets:
            assert log.masks[step - 1][key].sum() == targets[key]  # exactly, every step
        if step > 1:
            changes.append(any(not np.array_equal(log.masks[step - 1][k], log.masks[step - 2][k])
                               for k in targets))
    # an update at step t moves floor(f(t) x active) weights; f(end_step) = 0 moves none
    updates = [step for step in range(2, 17) if step % 3 == 0 and step <= end_step
               and any(np.floor(sparsity.drop_fraction(step, 0.5, end_step) * kept) > 0
                       for kept in targets.values())]
    assert updates == [3, 6, 9]
    assert [step for step, changed in zip(range(2, 17), changes) if changed] == updates
    for slot in tf_lth.kernel_slots(model):  # pruned weights are zero
        assert np.all(slot.kernel.numpy()[slot.mask.numpy() == 0] == 0)


def test_grown_connections_start_at_zero_with_zero_moments():
    x, y = _data(64)
    model = _model()
    callback = DynamicSparse(0.7, method="rigl", update_every=4, drop_fraction=0.5,
                             end_step=100)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    updater = callback.updater  # 2 steps done; the next update is step 4
    slots = updater.slots
    updater.step.assign(3)
    before = {s.key: (s.mask.numpy().copy(), s.kernel.numpy().copy(),
                      [m.numpy().copy() for m in _moments(model, s)]) for s in slots}
    assert all(len(moments) == 2 for _, _, moments in before.values())  # Adam m and v

    def loss_fn(inputs, labels):
        return model.compute_loss(x=inputs, y=labels, y_pred=model(inputs, training=False))

    # the dense gradient of the loss on the batch, computed here from the effective kernels
    hidden, out = (tf.Variable(before[k][0] * before[k][1]) for k in ("hidden", "out"))
    layer = {s.key: s.layer for s in slots}
    with tf.GradientTape() as tape:
        h = tf.nn.relu(x[:32] @ hidden + layer["hidden"].bias)
        loss = tf.reduce_mean(LOSS(y[:32], h @ out + layer["out"].bias))
    dense = dict(zip(("hidden", "out"), tape.gradient(loss, [hidden, out])))
    tf.function(lambda: updater.before_step(x[:32], y[:32], loss_fn))()
    fraction = sparsity.drop_fraction(4, 0.5, 100)
    for slot in slots:
        mask, kernel, moments = before[slot.key]
        new = slot.mask.numpy()
        expected, _ = sparsity.drop_and_grow(mask, kernel, fraction,
                                             np.abs(dense[slot.key].numpy()))
        np.testing.assert_array_equal(new, expected)
        grown = (new == 1) & (mask == 0)
        kept = (new == 1) & (mask == 1)
        assert 0 < grown.sum() <= np.floor(fraction * mask.sum())
        assert np.all(slot.kernel.numpy()[grown] == 0)
        np.testing.assert_array_equal(slot.kernel.numpy()[kept], kernel[kept])
        for moment, old in zip(_moments(model, slot), moments):
            assert np.all(moment.numpy()[grown] == 0)
            np.testing.assert_array_equal(moment.numpy()[kept], old[kept])


def test_static_sparse_training_never_moves_its_mask():
    x, y = _data()
    model = _model()
    callback = DynamicSparse(0.9, method="static", distribution="uniform")
    log = MaskLog()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[callback, log])
    for masks in log.masks:
        for key, mask in masks.items():
            np.testing.assert_array_equal(mask, log.masks[0][key])
    assert {k: int(m.sum()) for k, m in log.masks[0].items()} == {"hidden": 32, "out": 5}


@pytest.mark.parametrize("make, message", [
    (lambda: DynamicSparse(1.0), "sparsity must be in"),
    (lambda: DynamicSparse(-0.2), "sparsity must be in"),
    (lambda: DynamicSparse(0.5, method="magic"), "method must be one of rigl, set, static"),
    (lambda: DynamicSparse(0.5, distribution="normal"), "distribution must be one of"),
    (lambda: DynamicSparse(0.5, update_every=-1), "update_every must be"),
    (lambda: DynamicSparse(0.5, drop_fraction=0.0), "drop_fraction must be in"),
    (lambda: DynamicSparse(0.5, end_step=0), "end_step must be"),
    (lambda: GradualPruning("poly"), "schedule must be"),
    (lambda: GradualPruning(ConstantSparsity(0.5, 0), scope="net"), "scope must be one of"),
    (lambda: GradualPruning(ConstantSparsity(0.5, 0), block="2x2"), "block must be"),
    (lambda: GradualPruning(ConstantSparsity(0.5, 0), sparsity_m_by_n=(4, 2)), "0 < m < n"),
    # the public names: sparsity outside [0, 1), begin after end (tfmot's messages)
    (lambda: tf_lth.DynamicSparse(0.5, drop_fraction=1.5), "drop_fraction must be in"),
    (lambda: tf_lth.ConstantSparsity(1.0, 0), "target_sparsity must be in range"),
    (lambda: tf_lth.ConstantSparsity(-0.1, 0), "target_sparsity must be in range"),
    (lambda: tf_lth.ConstantSparsity(0.5, begin_step=20, end_step=10),
     "begin_step should be <= end_step"),
    (lambda: tf_lth.PolynomialDecay(0.0, -0.1, 0, 10), "final_sparsity must be in range"),
    (lambda: tf_lth.PolynomialDecay(1.0, 0.5, 0, 10), "initial_sparsity must be in range"),
    (lambda: tf_lth.PolynomialDecay(0.0, 0.5, begin_step=20, end_step=10),
     "begin_step should be <= end_step"),
    (lambda: tf_lth.GradualPruning(tf_lth.ConstantSparsity(0.5, 0), scope="net"),
     "scope must be one of"),
    (lambda: tf_lth.DynamicSparse(0.5, method="magic"), "method must be one of"),
    (lambda: tf_lth.DynamicSparse(0.5, distribution="normal"), "distribution must be one of"),
])
def test_bad_arguments_raise_one_clear_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kind", ["gradual", "rigl", "set"])
def test_update_between_calls_equals_the_update_inside_the_step(kind):
    """tf_lth's loop runs step t's update on t's batch before the step (`update_next`), the
    step only counting (`count_step`); model.fit runs it inside the step (`before_step`).
    Step by step, with the same weight changes in between, both give the same masks and
    kernels."""
    from tf_lth.core.sparse_training import DynamicUpdater, GradualUpdater

    x, y = _data(192)
    models, updaters = [], []
    for _ in range(2):
        model = _model(seed=3)
        model.optimizer.build(model.trainable_variables)
        models.append(model)
        if kind == "gradual":
            updaters.append(GradualUpdater(model, PolynomialDecay(0.0, 0.8, 2, 10, frequency=2)))
        else:
            updaters.append(DynamicUpdater(model, 0.7, method=kind, update_every=3,
                                           drop_fraction=0.5, end_step=10, seed=1))
    inside, between = updaters
    assert between.update_steps(12), "the case updates no mask"

    def loss_fn(model):
        return lambda a, b: model.compute_loss(x=a, y=b, y_pred=model(a, training=False))

    step_inside = tf.function(lambda a, b: inside.before_step(a, b, loss_fn(models[0])))
    update_next = tf.function(lambda a, b: between.update_next(a, b, loss_fn(models[1])))
    count = tf.function(between.count_step)
    rng = np.random.default_rng(5)
    for step in range(1, 13):
        batch = slice(16 * (step - 1), 16 * step)
        step_inside(x[batch], y[batch])
        if step in between.update_steps(12):
            update_next(x[batch], y[batch])
        count()
        for a, b in zip(inside.slots, between.slots):
            np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
            np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
        for a, b in zip(inside.slots, between.slots):  # the same "training" on both
            change = rng.normal(size=a.kernel.shape).astype("float32") * 0.1
            a.kernel.assign_add(change)
            b.kernel.assign_add(change)
    assert int(inside.step.numpy()) == int(between.step.numpy()) == 12
    assert any(not np.all(s.mask.numpy() == 1) for s in between.slots)
