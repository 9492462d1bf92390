"""The shared training loop: one trace across rounds, optimizer reset, evaluation."""

import numpy as np
import pytest

from tf_lth.core import data as data_lib
from tf_lth.core import models
from tf_lth.core.layers import masked_layers
from trainers.loop import Schedule, Trainer, due


@pytest.fixture(scope="module")
def tiny_data():
    return data_lib.synthetic((28, 28, 1), num_train=240, num_val=60, num_test=60, seed=1)


def test_due_fires_at_multiples_and_at_the_end():
    assert [i for i in range(1, 11) if due(i, 4, 10)] == [4, 8, 10]


def test_step_is_traced_once_across_mask_and_learning_rate_changes(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    trainer = Trainer(model, "adam", 1e-3)
    trainer.fit(tiny_data, Schedule(5, 20, seed=0, eval_every=5, progress=False))
    traced = trainer.train_tracing_count
    assert traced == 1
    rng = np.random.default_rng(0)
    for round_index in range(3):
        for layer in masked_layers(model):
            layer.mask.assign((rng.uniform(size=layer.mask.shape) > 0.2 * round_index)
                              .astype(np.float32))
        trainer.set_learning_rate(1e-3 / (round_index + 1))
        trainer.reset_optimizer()
        trainer.fit(tiny_data, Schedule(5, 20, seed=round_index, eval_every=5, progress=False))
    assert trainer.train_tracing_count == traced


def test_reset_optimizer_zeroes_state_but_keeps_learning_rate(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    trainer = Trainer(model, "adam", 2e-3)
    trainer.fit(tiny_data, Schedule(3, 20, seed=0, eval_every=3, progress=False))
    assert int(trainer.optimizer.iterations) == 3
    trainer.reset_optimizer()
    assert int(trainer.optimizer.iterations) == 0
    assert all(not np.any(np.array(v)) for v in trainer.optimizer.variables
               if v.path != trainer.optimizer.learning_rate.path)
    assert float(trainer.optimizer.learning_rate) == pytest.approx(2e-3)


def test_pruned_weights_do_not_move_during_training(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    layer = masked_layers(model)[0]
    mask = (np.random.default_rng(1).uniform(size=layer.mask.shape) > 0.5).astype(np.float32)
    layer.mask.assign(mask)
    before = np.array(layer.kernel_variable)
    Trainer(model, "adam", 1e-2).fit(tiny_data, Schedule(10, 20, seed=0, eval_every=10, progress=False))
    after = np.array(layer.kernel_variable)
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert np.mean(after[mask == 1] != before[mask == 1]) > 0.5


def test_fit_learns_and_reports_best_by_validation_loss(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    metrics = Trainer(model, "adam", 1e-3).fit(tiny_data, Schedule(60, 20, seed=0, eval_every=20, progress=False))
    history = metrics["history"]
    assert [record["iteration"] for record in history] == [0, 20, 40, 60]
    best = min(history, key=lambda record: record["val_loss"])
    assert metrics["best"]["iteration"] == best["iteration"]
    assert metrics["test_accuracy"] > 0.5  # prototypes plus noise: far above 10% chance


def test_one_training_and_one_evaluation_trace_serve_every_round_and_call_length(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    trainer = Trainer(model, "adam", 1e-3, steps_per_call=4)
    # 7 iterations, evaluation every 3: calls of 3, 3 and 1 steps (padded to 4 rows each)
    metrics = trainer.fit(tiny_data, Schedule(7, 20, seed=0, eval_every=3, progress=False))
    assert [record["iteration"] for record in metrics["history"]] == [0, 3, 6, 7]
    assert int(trainer.optimizer.iterations) == 7
    trainer.fit(tiny_data, Schedule(9, 20, seed=1, eval_every=2, progress=False))
    assert (trainer.train_tracing_count, trainer.eval_tracing_count) == (1, 1)


def test_schedule_boundaries_include_evaluations_checkpoints_snapshots_and_the_end():
    schedule = Schedule(250, 60, seed=0, eval_every=100, checkpoint_every=30, snapshot_at=(45,))
    boundaries, iteration = [], 0
    while iteration < 250:
        iteration = schedule.next_boundary(iteration)
        boundaries.append(iteration)
    assert boundaries == [30, 45, 60, 90, 100, 120, 150, 180, 200, 210, 240, 250]


def test_training_in_calls_matches_one_step_per_call_bitwise(tiny_data):
    """Steps inside one compiled call are the same computation as steps in separate calls,
    and calls of different lengths share one trace (the step count is a runtime value)."""
    states = []
    for steps_per_call in (1, 8):
        model = models.build("fc", (28, 28, 1), 10, seed=0)
        Trainer(model, "adam", 1e-3, steps_per_call=steps_per_call).fit(
            tiny_data, Schedule(16, 20, seed=0, eval_every=16, progress=False))
        states.append([np.array(v) for v in model.trainable_variables])
    for left, right in zip(*states):
        np.testing.assert_array_equal(left, right)


def _model_xla_cannot_compile():
    import keras
    import tensorflow as tf

    inputs = keras.Input((28, 28, 1))
    # numpy_function runs Python on the host: XLA refuses to compile it
    def on_host(x):
        return tf.ensure_shape(tf.numpy_function(lambda a: a, [x], tf.float32), x.shape)

    host = keras.layers.Lambda(on_host, output_shape=(28, 28, 1))
    hidden = keras.layers.Flatten()(host(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def test_auto_falls_back_to_the_plain_graph_once_and_says_so(tiny_data):
    lines = []
    model = _model_xla_cannot_compile()
    trainer = Trainer(model, "sgd", 0.01, jit_compile="auto", log=lines.append)
    metrics = trainer.fit(tiny_data, Schedule(4, 20, seed=0, eval_every=2, progress=False))
    assert metrics["xla"] is False and int(trainer.optimizer.iterations) == 4
    assert len([line for line in lines if "XLA could not compile" in line]) == 1


def test_jit_compile_on_refuses_what_xla_cannot_compile(tiny_data):
    import tensorflow as tf

    trainer = Trainer(_model_xla_cannot_compile(), "sgd", 0.01, jit_compile="on")
    with pytest.raises(tf.errors.OpError):
        trainer.fit(tiny_data, Schedule(2, 20, seed=0, eval_every=2, progress=False))


def test_a_cosine_schedule_restarts_with_each_round(tiny_data):
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    trainer = Trainer(model, "sgd", 0.1, cosine_steps=4, weight_decay=1e-4)
    trainer.set_learning_rate(0.5)  # the schedule owns the rate: ignored
    trainer.fit(tiny_data, Schedule(4, 20, seed=0, eval_every=4, progress=False))
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)  # cos(pi)
    trainer.reset_optimizer()
    assert int(trainer.optimizer.iterations) == 0
    assert float(trainer.optimizer.learning_rate) == pytest.approx(0.1)


def test_auto_keeps_xla_for_dense_and_bernoulli_supermasks_and_the_plain_graph_for_cpu_conv():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("a GPU is present: auto uses XLA for convolutions there")
    lines = []
    dense = Trainer(models.build("fc", (28, 28, 1), 10, seed=0), "adam", 1e-3,
                    log=lines.append)
    conv = Trainer(models.build("conv2", (8, 8, 3), 10, seed=0), "adam", 1e-3,
                   log=lines.append)
    forced = Trainer(models.build("conv2", (8, 8, 3), 10, seed=0), "adam", 1e-3,
                     jit_compile="on", log=lines.append)
    supermask = Trainer(models.build("fc", (28, 28, 1), 10, seed=0, supermask=True), "sgd",
                        1.0, log=lines.append)
    edge_popup = Trainer(models.build("fc", (28, 28, 1), 10, seed=0, supermask=True,
                                      mask_sampling="topk", keep_fraction=0.5), "sgd",
                         1.0, log=lines.append)
    assert (dense.jit, conv.jit, forced.jit, supermask.jit, edge_popup.jit) == (
        True, False, True, True, False)
    assert len([line for line in lines if "convolutional network on CPU" in line]) == 1
    assert len([line for line in lines if "edge-popup's top-k on CPU" in line]) == 1


@pytest.mark.parametrize("max_images, chunks", [(10_000, 1), (40, 3), (7, 14)])
def test_evaluation_in_chunks_matches_the_whole_split_at_once(monkeypatch, max_images, chunks):
    """Splits of 60 and 37 images scored in one chunk, or cut into equal padded chunks,
    give the mean loss and accuracy of the model's own forward pass over each split."""
    import trainers.loop as loop

    monkeypatch.setattr(loop, "EVAL_CHUNK_IMAGES", max_images)
    monkeypatch.setattr(loop, "EVAL_CHUNK_VALUES", max_images * 784)
    data = data_lib.synthetic((28, 28, 1), num_train=60, num_val=60, num_test=37, seed=3)
    model = models.build("fc", (28, 28, 1), 10, seed=0)
    for layer in masked_layers(model):  # a mask with zeros, so it must be applied too
        layer.mask.assign((np.arange(np.prod(layer.mask.shape)) % 3 != 0)
                          .reshape(layer.mask.shape).astype(np.float32))
    trainer = Trainer(model, "sgd", 0.1, log=lambda message: None)
    images, _, _, _ = trainer.device_data(data).eval_set(("validation", "test"))
    # 97 images: 1 chunk of 97; 3 of 33 (2 padding); 14 of 7 (1 padding)
    assert images.shape[0] == chunks and 0 <= chunks * images.shape[1] - 97 < chunks
    results = trainer.evaluate(data, ("validation", "test"))
    for (loss, accuracy), x, y in zip(results, (data.val_images, data.test_images),
                                      (data.val_labels, data.test_labels)):
        logits = np.array(model(x, training=False), np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        assert loss == pytest.approx(-log_softmax[np.arange(len(y)), y].mean(), rel=1e-5)
        assert accuracy == pytest.approx((logits.argmax(axis=1) == y).mean())


def test_calls_end_just_before_every_mask_update_step():
    """Step t's update runs between calls, so a call ends after step t - 1 (step 1's
    before the first call)."""
    updates = (1, 150, 151, 400, 999)
    schedule = Schedule(iterations=1000, batch_size=8, seed=0, eval_every=300,
                        mask_update_at=updates)
    iteration, ends = 0, []
    while iteration < 1000:
        iteration = min(schedule.next_boundary(iteration), iteration + 100)  # <= 100 a call
        ends.append(iteration)
    assert {149, 150, 399, 998} <= set(ends)
    assert {300, 600, 900, 1000} <= set(ends)
    assert ends == sorted(set(ends))
