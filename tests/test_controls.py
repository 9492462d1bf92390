"""`--controls=random,reinit`: every pruned round of a lottery run against its controls
(docs/semantics.md, "One round engine")."""

import os

import numpy as np
import pytest

import tf_lth
import trainers
from tf_lth.core import config as config_lib
from tf_lth.core import run_files
from trainers import lottery


def _kernel(state, layer):
    return next(value for key, value in state.items() if key.endswith(f"{layer}/kernel"))


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    """A 2-round run with both controls; the model state each control starts from."""
    seen = []
    original = lottery.RoundTrainer.train_control

    def train_control(self, kind, round_index):
        seen.append((kind, round_index,
                     {slot.key: (np.array(slot.mask), np.array(slot.kernel))
                      for slot in tf_lth.kernel_slots(self.model)}))
        return original(self, kind, round_index)

    lottery.RoundTrainer.train_control = train_control
    try:
        config = config_lib.make(
            experiment="lottery", dataset="synthetic_mnist", iterations=20, eval_every=10,
            batch_size=50, rounds=2, controls="random,reinit",
            run_dir=str(tmp_path_factory.mktemp("controls") / "run"), progress=False)
        lines = []
        trainers.run(config, log=lines.append)
    finally:
        lottery.RoundTrainer.train_control = original
    return config.run_dir, seen, lines


def _arrays(run_dir, round_index, name):
    return run_files.load_arrays(os.path.join(run_files.round_dir(run_dir, round_index), name))


def test_random_control_keeps_the_ticket_counts_per_layer_at_other_positions(controlled):
    run_dir, seen, _ = controlled
    randoms = [(r, state) for kind, r, state in seen if kind == "random"]
    assert [r for r, _ in randoms] == [1, 2]
    for round_index, state in randoms:
        ticket = _arrays(run_dir, round_index, "masks.npz")
        for name, (mask, _) in state.items():
            assert int(mask.sum()) == int(ticket[name].sum()), (round_index, name)
            assert not np.array_equal(mask, ticket[name])
            assert set(np.unique(mask)) <= {0.0, 1.0}


def test_reinit_control_has_the_ticket_mask_and_new_initial_weights(controlled):
    run_dir, seen, _ = controlled
    for kind, round_index, state in seen:
        if kind != "reinit":
            continue
        ticket_mask = _arrays(run_dir, round_index, "masks.npz")
        ticket_start = _arrays(run_dir, round_index, "initial.npz")
        for name, (mask, kernel) in state.items():
            np.testing.assert_array_equal(mask, ticket_mask[name])
            start = _kernel(ticket_start, name)
            kept = mask == 1
            assert not np.allclose(kernel[kept], start[kept])
            assert np.all(kernel[~kept] == 0)  # mask-0 action zero, as the ticket's
            # the same initializer: a similar spread
            assert np.std(kernel[kept]) == pytest.approx(np.std(start[kept]), rel=0.2)


def test_records_hold_both_controls_and_the_verdict_matches_them(controlled):
    run_dir, _, lines = controlled
    results = run_files.read_json(os.path.join(run_dir, "results.json"))
    rounds = results["rounds"]
    assert "controls" not in rounds[0]
    for record in rounds[1:]:
        assert set(record["controls"]) == {"random", "reinit"}
        ticket = record["best"]["test_accuracy"]
        verdict = record["ticket_beats_controls"]
        for kind in ("random", "reinit"):
            control = record["controls"][kind]
            assert control["iterations"] == record["iterations"]
            assert control["weights_remaining"] == pytest.approx(record["weights_remaining"])
            assert verdict[kind] == pytest.approx(
                100 * (ticket - control["best"]["test_accuracy"]))
        assert verdict["beats_both"] == (verdict["random"] > 0 and verdict["reinit"] > 0)
        on_disk = run_files.read_json(
            os.path.join(run_files.round_dir(run_dir, record["round"]), "record.json"))
        assert on_disk["ticket_beats_controls"] == verdict
    summary = results["controls_summary"]
    assert summary["rounds_checked"] == [1, 2]
    assert summary["rounds_ticket_beats_all"] == [
        r["round"] for r in rounds[1:] if r["ticket_beats_controls"]["beats_both"]]
    verdict_lines = [line for line in lines if " vs random " in line]
    assert len(verdict_lines) == 2 and verdict_lines[0].startswith("round 1 (")


def test_plot_draws_each_control_dashed(controlled):
    from tf_lth.cli import plot

    run_dir, _, _ = controlled
    series, _ = plot.run_series([run_files.read_json(os.path.join(run_dir, "results.json"))])
    labels = [item.label for item in series]
    assert any(label.endswith("random control") for label in labels)
    assert any(label.endswith("reinit control") for label in labels)
    for item in series:
        if "control" in item.label:
            assert item.style["linestyle"] == "--" and len(item.x) == 2


def test_controls_flag_is_validated():
    with pytest.raises(config_lib.ConfigError, match="--controls"):
        config_lib.make(experiment="lottery", dataset="synthetic_mnist", controls="random,x",
                        run_dir="/tmp/x")
    with pytest.raises(config_lib.ConfigError, match="--controls"):
        config_lib.make(experiment="dense", dataset="synthetic_mnist", controls="random",
                        run_dir="/tmp/x")
