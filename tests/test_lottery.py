"""Lottery rounds end to end: schedules, actions in the loop, one-shot, rewinding."""

import os

import numpy as np
import pytest

import trainers
from tf_lth.core import actions, masks, run_files
from tf_lth.core import config as config_lib
from tests.helpers import assert_plot_shows_rounds


def _run(tmp_path, name, **values):
    options = dict(experiment="lottery", dataset="synthetic_mnist", iterations=20,
                   eval_every=10, batch_size=50, run_dir=str(tmp_path / name), progress=False)
    options.update(values)
    config = config_lib.make(**options)
    trainers.run(config, log=lambda *_: None)
    return config.run_dir


def _arrays(run_dir, round_index, name):
    return run_files.load_arrays(os.path.join(run_files.round_dir(run_dir, round_index), name))


def _kernel(state, layer):
    return next(value for key, value in state.items() if key.endswith(f"{layer}/kernel"))


def test_iterative_rounds_keep_exactly_the_floor_schedule_per_layer(tmp_path):
    run_dir = _run(tmp_path, "schedule", rounds=3)
    sizes = {"dense_1": 784 * 300, "dense_2": 300 * 100, "output": 100 * 10}
    rates = {"dense_1": 0.2, "dense_2": 0.2, "output": 0.1}
    previous = None
    for round_index in range(4):
        layer_masks = _arrays(run_dir, round_index, "masks.npz")
        for name, size in sizes.items():
            kept = size
            for _ in range(round_index):
                kept -= int(np.floor(rates[name] * kept + 1e-9))
            assert int(layer_masks[name].sum()) == kept, (round_index, name)
            if previous is not None:
                assert np.all(layer_masks[name] <= previous[name])  # pruned stays pruned
        previous = layer_masks
    record = run_files.read_json(os.path.join(run_dir, "results.json"))["rounds"][3]
    assert record["layers"]["dense_1"] == pytest.approx(0.8 ** 3, abs=1e-4)
    assert record["layers"]["output"] == pytest.approx(0.9 ** 3, abs=2e-3)


def test_lottery_ticket_resets_kept_weights_to_init_and_pruned_to_zero(tmp_path):
    run_dir = _run(tmp_path, "ticket", rounds=1)
    init = _kernel(_arrays(run_dir, 0, "initial.npz"), "dense_1")
    final = _kernel(_arrays(run_dir, 0, "final.npz"), "dense_1")
    start = _kernel(_arrays(run_dir, 1, "initial.npz"), "dense_1")
    mask = _arrays(run_dir, 1, "masks.npz")["dense_1"]
    np.testing.assert_array_equal(start[mask == 1], init[mask == 1])
    assert np.all(_arrays(run_dir, 1, "frozen.npz")["dense_1"] == 0)
    # large_final: every pruned |w_f| is at most every kept |w_f|
    assert np.abs(final[mask == 0]).max() <= np.abs(final[mask == 1]).min()


def test_one_shot_prunes_straight_to_the_level_of_rounds(tmp_path):
    run_dir = _run(tmp_path, "oneshot", rounds=3, one_shot=True)
    assert run_files.completed_rounds(run_dir) == [0, 1]
    layer_masks = _arrays(run_dir, 1, "masks.npz")
    assert int(layer_masks["dense_1"].sum()) == masks.kept_count(784 * 300, 0.2, 3)
    record = run_files.read_json(os.path.join(run_dir, "results.json"))["rounds"][1]
    assert record["prune_level"] == 3


def test_rewinding_resets_to_the_weights_of_the_rewind_iteration(tmp_path):
    run_dir = _run(tmp_path, "rewind", rounds=1, rewind_iteration=5)
    rewind = _kernel(_arrays(run_dir, 0, "rewind.npz"), "dense_1")
    init = _kernel(_arrays(run_dir, 0, "initial.npz"), "dense_1")
    start = _kernel(_arrays(run_dir, 1, "initial.npz"), "dense_1")
    mask = _arrays(run_dir, 1, "masks.npz")["dense_1"]
    assert not np.array_equal(rewind, init)
    np.testing.assert_array_equal(start[mask == 1], rewind[mask == 1])


def test_freeze_init_keeps_pruned_weights_at_init_through_training(tmp_path):
    run_dir = _run(tmp_path, "freeze", rounds=1, mask_zero_action="freeze_init")
    init = _kernel(_arrays(run_dir, 0, "initial.npz"), "dense_1")
    mask = _arrays(run_dir, 1, "masks.npz")["dense_1"]
    frozen = _arrays(run_dir, 1, "frozen.npz")["dense_1"]
    np.testing.assert_array_equal(frozen[mask == 0], init[mask == 0])
    assert np.all(frozen[mask == 1] == 0)


def test_variant_2_starts_shrunken_kept_weights_at_zero(tmp_path):
    run_dir = _run(tmp_path, "variant2", rounds=1, mask_zero_action="freeze_init_zero_all")
    init = _kernel(_arrays(run_dir, 0, "initial.npz"), "dense_1")
    final = _kernel(_arrays(run_dir, 0, "final.npz"), "dense_1")
    start = _kernel(_arrays(run_dir, 1, "initial.npz"), "dense_1")
    mask = _arrays(run_dir, 1, "masks.npz")["dense_1"]
    shrunk = (np.abs(final) < np.abs(init)) & (mask == 1)
    assert shrunk.any()
    assert np.all(start[shrunk] == 0)
    grew = (np.abs(final) >= np.abs(init)) & (mask == 1)
    np.testing.assert_array_equal(start[grew], init[grew])


@pytest.mark.parametrize("action", [a for a in actions.MASK_ONE_ACTIONS if a != "none"])
def test_every_mask_one_action_runs_a_round(tmp_path, action):
    run_dir = _run(tmp_path, action, rounds=1, iterations=4, eval_every=4, mask_one_action=action)
    init = _kernel(_arrays(run_dir, 0, "initial.npz"), "dense_2")
    start = _kernel(_arrays(run_dir, 1, "initial.npz"), "dense_2")
    mask = _arrays(run_dir, 1, "masks.npz")["dense_2"]
    if action.startswith("signed"):
        assert np.all(np.sign(start[mask == 1]) == np.sign(init[mask == 1]))
    assert not np.array_equal(start[mask == 1], init[mask == 1])


@pytest.mark.parametrize("action", list(actions.MASK_ZERO_ACTIONS))
def test_every_mask_zero_action_runs_a_round(tmp_path, action):
    run_dir = _run(tmp_path, action, rounds=1, iterations=4, eval_every=4,
                   mask_zero_action=action)
    record = run_files.read_json(os.path.join(run_dir, "results.json"))["rounds"][1]
    assert record["mask_zero_action"] == action
    assert np.isfinite(record["test_loss"])


@pytest.mark.parametrize("experiment", ["lottery", "untrained_supermask"])
def test_the_cli_draws_a_finished_runs_plot(tmp_path, experiment):
    """tf_lth.train draws the figure after the experiment (experiments import no CLI)."""
    from tests.helpers import run_cli

    run_dir = str(tmp_path / "plot")
    extra = (["--rounds=1"] if experiment == "lottery" else
             ["--prune_levels=0,3", "--criterion=large_final", "--weight_treatments=init"])
    done = run_cli("tf_lth.train", f"--experiment={experiment}", "--dataset=synthetic_mnist",
                   "--iterations=4", "--eval_every=4", "--batch_size=50", *extra,
                   f"--run_dir={run_dir}", "--noprogress")
    assert done.returncode == 0, done.stderr[-3000:]
    png = os.path.join(run_dir, "plots", f"{experiment}.png")
    if experiment == "lottery":
        assert_plot_shows_rounds(png, run_dir)
    else:
        assert os.path.getsize(png) > 0


@pytest.mark.mnist
def test_real_mnist_large_final_beats_random_at_21_percent(tmp_path, mnist_data_dir):
    common = dict(dataset="mnist", data_dir=mnist_data_dir, epochs=2, iterations=None,
                  batch_size=60, eval_every=400, rounds=7, one_shot=True, seed=0)
    good = run_files.read_json(os.path.join(_run(tmp_path, "lf", **common), "results.json"))
    bad = run_files.read_json(os.path.join(
        _run(tmp_path, "random", criterion="random", **common), "results.json"))
    dense, ticket = good["rounds"]
    random_ticket = bad["rounds"][1]
    assert ticket["weights_remaining"] == pytest.approx(0.211, abs=1e-3)
    assert ticket["best"]["test_accuracy"] >= dense["best"]["test_accuracy"] - 0.005
    assert random_ticket["best"]["test_accuracy"] < ticket["best"]["test_accuracy"] - 0.01
