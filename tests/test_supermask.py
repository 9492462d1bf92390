"""Supermasks: untrained masks by every criterion, and learned masks (docs/semantics.md, Supermasks)."""

import os

import numpy as np
import pytest

import trainers
from tf_lth.core import config as config_lib
from tf_lth.core import masks, run_files
from trainers.supermask import treated_kernel


def _run(tmp_path, name, **values):
    options = dict(dataset="synthetic_mnist", iterations=20, eval_every=10, batch_size=50,
                   run_dir=str(tmp_path / name), progress=False)
    options.update(values)
    config = config_lib.make(**options)
    trainers.run(config, log=lambda *_: None)
    return config.run_dir, run_files.read_json(os.path.join(config.run_dir, "results.json"))


def test_weight_treatments_by_hand():
    w = np.array([[3.0, -1.0], [-3.0, 1.0]])
    mask = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(treated_kernel("init", w, mask), w)
    np.testing.assert_allclose(treated_kernel("signed_constant", w, mask),
                               np.sign(w) * np.sqrt(5.0))  # std of (3, -1, -3, 1)
    np.testing.assert_allclose(treated_kernel("rescaled", w, mask), w * 4.0 / 3.0)


def test_untrained_sweep_records_every_combination_and_resumes(tmp_path):
    criteria = "large_final,random,large_init_large_final,snip"
    run_dir, result = _run(tmp_path, "sweep", experiment="untrained_supermask",
                           criterion=criteria, prune_levels="0,3,7",
                           weight_treatments="init,signed_constant")
    records = result["masks"]
    assert len(records) == 4 * 3 * 2
    keys = {(r["criterion"], r["weight_treatment"], r["prune_level"]) for r in records}
    assert len(keys) == len(records)
    level_7 = [r for r in records if r["prune_level"] == 7]
    expected = sum(masks.kept_count(size, rate, 7) for size, rate in
                   ((784 * 300, 0.2), (300 * 100, 0.2), (100 * 10, 0.1))) / 266_200
    assert all(r["weights_remaining"] == pytest.approx(expected) for r in level_7)
    assert all(r["weights_remaining"] == 1.0 for r in records if r["prune_level"] == 0)
    # its figure is drawn by the CLI: tests/test_lottery.py::test_the_cli_draws_a_finished_runs_plot
    # a second invocation finds every record done and evaluates nothing new
    lines_before = open(os.path.join(run_dir, "masks.jsonl")).read()
    config = config_lib.make(experiment="untrained_supermask", dataset="synthetic_mnist",
                             iterations=20, eval_every=10, batch_size=50, run_dir=run_dir,
                             criterion=criteria, prune_levels="0,3,7", resume=True,
                             weight_treatments="init,signed_constant", progress=False)
    trainers.run(config, log=lambda *_: None)
    assert open(os.path.join(run_dir, "masks.jsonl")).read() == lines_before


def test_learned_supermask_trains_only_mask_logits_and_reports_both_accuracies(tmp_path):
    run_dir, result = _run(tmp_path, "learned", experiment="learned_supermask",
                           supermask_weights="signed_constant", iterations=30,
                           eval_samples=3, learning_rate=10.0)
    record = result["rounds"][0]
    for key in ("test_accuracy_expected_mask", "test_accuracy_sampled", "weights_remaining",
                "layers"):
        assert key in record
    initial = run_files.load_arrays(os.path.join(run_dir, "round_000", "initial.npz"))
    final = run_files.load_arrays(os.path.join(run_dir, "round_000", "final.npz"))
    for key in initial:
        changed = not np.array_equal(initial[key], final[key])
        if key.endswith("mask_logits") or key.endswith("seed_generator_state"):
            assert changed, key
        elif key.endswith("/kernel") or key.endswith("/bias"):
            assert not changed, key  # frozen weights
    expected_masks = run_files.load_arrays(os.path.join(run_dir, "round_000", "masks.npz"))
    kept = sum(m.sum() for m in expected_masks.values()) / 266_200
    assert record["weights_remaining"] == pytest.approx(kept)
    assert 0.0 < record["weights_remaining"] < 1.0


@pytest.mark.mnist
def test_real_mnist_untrained_supermasks_match_the_paper(tmp_path, mnist_data_dir):
    """the paper's numbers (docs/RESULTS.md): >= 86% with signed constants, >= 80% with init, random < 20%."""
    _, result = _run(tmp_path, "mnist", experiment="untrained_supermask", dataset="mnist",
                     data_dir=mnist_data_dir, epochs=5, iterations=None, batch_size=60,
                     eval_every=1000, criterion="large_final_same_sign,random",
                     weight_treatments="init,signed_constant")
    assert result["dense"]["test_accuracy"] > 0.97  # the source network trained 5 epochs

    def best(criterion, treatment):
        return max(r["test_accuracy"] for r in result["masks"]
                   if r["criterion"] == criterion and r["weight_treatment"] == treatment)

    assert best("large_final_same_sign", "signed_constant") >= 0.86
    assert best("large_final_same_sign", "init") >= 0.80
    assert best("random", "init") < 0.20 and best("random", "signed_constant") < 0.20


def test_weight_treatments_on_the_device_equal_the_numpy_ones_bitwise():
    from trainers.supermask import TreatedKernels

    rng = np.random.default_rng(0)
    w = {"a": rng.normal(0, 0.05, (784, 300)).astype(np.float32),
         "b": rng.normal(0, 0.1, (30, 10)).astype(np.float32)}
    treated = TreatedKernels(w)
    for name, kernel in w.items():
        for kept in (1.0, 0.37, 0.0):
            mask = (rng.random(kernel.shape) < kept).astype(np.float32)
            for treatment in ("init", "signed_constant", "rescaled"):
                np.testing.assert_array_equal(
                    np.array(treated.kernel(treatment, name, mask)),
                    treated_kernel(treatment, kernel, mask).astype(np.float32))


def test_a_signal_between_treatments_of_one_level_keeps_every_evaluated_record(tmp_path,
                                                                              monkeypatch):
    """The sweep checks for a signal before each evaluation; one that arrives after the
    first treatment of a level must still find that record on disk, and the stop line must
    name the next evaluation (records written + 1)."""
    from tf_lth.core import preemption
    from trainers import supermask

    source, _ = _run(tmp_path, "source", experiment="lottery", rounds=0)
    checks = {"count": 0}

    def requested():  # the 6th check: levels 0 and 3 done (4 records), level 7's first done
        checks["count"] += 1
        return 15 if checks["count"] == 6 else None

    monkeypatch.setattr(supermask.preemption, "requested", requested)
    config = config_lib.make(experiment="untrained_supermask", dataset="synthetic_mnist",
                             iterations=20, eval_every=10, batch_size=50, progress=False,
                             run_dir=str(tmp_path / "sweep"), source_run=source,
                             criterion="large_final", prune_levels="0,3,7",
                             weight_treatments="init,signed_constant")
    with pytest.raises(preemption.Preempted) as stopped:
        trainers.run(config, log=lambda *_: None)
    written = run_files.read_jsonl(os.path.join(config.run_dir, "masks.jsonl"))
    assert [(r["prune_level"], r["weight_treatment"]) for r in written] == [
        (0, "init"), (0, "signed_constant"), (3, "init"), (3, "signed_constant"),
        (7, "init")]
    assert "untrained sweep evaluation 6 of 6" in str(stopped.value)
