"""`--experiment=gradual` and `--experiment=dynamic_sparse` through the CLI
(docs/sparse_training.md), against expectations computed here by hand:

- gradual: the steps in round_000/mask_updates.jsonl are exactly the schedule's pruning
  steps (begin <= t <= end, (t - begin) % frequency == 0, step 1 the first batch), and each
  kernel's kept count there is tfmot's PolynomialDecay count, max(round(size x (1 - s_t)), 1)
  in float32; the round ends at the final sparsity's counts with pruned weights exactly 0,
  and record.json / results.json say so.
- dynamic_sparse: RigL (ERK densities) and SET (uniform) keep each kernel at its target
  count at every update step (ERK by hand from sum(shape) / prod(shape), exact fractions,
  largest remainders to the exact total); their masks moved away from the first random
  mask, by no more than the cosine-decayed drop fractions allow; static never moves it.
  SET and static train in the plain graph (--jit_compile=off), the others under XLA.
  That grown connections start at 0 with zeroed moments is checked at API level
  (tests/test_sparse_training.py, test_grown_connections_start_at_zero_with_zero_moments).
- resume: a gradual and a RigL run stopped by SIGTERM after their in-round checkpoint at
  iteration 100, then `--resume`d, equal the uninterrupted `--deterministic` runs: every
  .npz bitwise, record and metrics as parsed JSON (timing aside), mask_updates.jsonl line
  for line (none repeated, none lost).
- export: `tf_lth.export` of the gradual run passes and reports the run's weights remaining.

Every run is the real CLI in a subprocess on synthetic_mnist (fc: 784-300-100-10), 400
iterations; the `runs` fixture starts them together, each chain (stop then resume; run
then export) in one worker.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from tests.helpers import ROOT, run_cli, sigterm_when
from tests.test_reliability import NPZ_FILES, assert_bitwise_equal, read_json, without_timing

ITERATIONS = 400
COMMON = ["--dataset=synthetic_mnist", f"--iterations={ITERATIONS}", "--eval_every=100",
          "--seed=3", "--deterministic", "--noprogress", "--checkpoint_every=100"]
SHAPES = {"dense_1": (784, 300), "dense_2": (300, 100), "output": (100, 10)}  # fc's kernels
SIZES = {key: shape[0] * shape[1] for key, shape in SHAPES.items()}
TOTAL = sum(SIZES.values())
# gradual: PolynomialDecay from 0.1 to 0.8, steps 20, 70, ..., 320 (the stop lands between)
GRADUAL = dict(initial=0.1, final=0.8, begin=20, end=320, frequency=50, power=2)
DYNAMIC = {  # method: (sparsity, distribution, update_every, update_end_step, drop_fraction)
    "rigl": (0.9, "erk", 50, None, 0.3),  # end step by default 75% of 400 = 300
    "set": (0.85, "uniform", 40, 250, 0.5),
    "static": (0.95, "erk", None, None, None),
}
WORKERS = 6  # one per chain: the chains are CPU-bound, none waits for a free worker


def gradual_flags():
    g = GRADUAL
    return ["--experiment=gradual", f"--final_sparsity={g['final']}",
            f"--initial_sparsity={g['initial']}", f"--begin_step={g['begin']}",
            f"--end_step={g['end']}", f"--pruning_frequency={g['frequency']}",
            f"--pruning_power={g['power']}"]


def dynamic_flags(method):
    sparsity, distribution, every, end, fraction = DYNAMIC[method]
    flags = ["--experiment=dynamic_sparse", f"--sparse_method={method}",
             f"--final_sparsity={sparsity}", f"--sparsity_distribution={distribution}"]
    if every is not None:
        flags.append(f"--update_every={every}")
    if end is not None:
        flags.append(f"--update_end_step={end}")
    if fraction is not None:
        flags.append(f"--drop_fraction={fraction}")
    return flags


FLAGS = {"gradual": gradual_flags(), **{method: dynamic_flags(method) for method in DYNAMIC}}
# SET and static train in the plain graph (the updater outside XLA; and cheaper here), the
# others under XLA (--jit_compile=auto on one CPU replica)
for _method in ("set", "static"):
    FLAGS[_method].append("--jit_compile=off")


# ---- running the CLI -------------------------------------------------------------------
def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def _command(kind, run_dir, extra=()):
    return [sys.executable, "-m", "tf_lth.train", *COMMON, *FLAGS[kind], f"--run_dir={run_dir}",
            *extra]


def train(kind, run_dir, *extra):
    process = subprocess.run(_command(kind, run_dir, extra), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=600)
    return process.returncode, process.stdout, process.stderr


def checkpointed(run_dir):
    """The in-round checkpoint of iteration 100 is written (the round has 400)."""
    return os.path.exists(os.path.join(run_dir, "round_000", "checkpoint", "state.json"))


def train_and_stop(kind, run_dir):
    """Starts a run and sends SIGTERM once its first in-round checkpoint exists; returns
    (exit status, output)."""
    return sigterm_when(_command(kind, run_dir), ROOT, _env(), lambda: checkpointed(run_dir))


def parallel(jobs: dict) -> dict:
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted gradual (then its export, on a copy), RigL, SET and static runs,
    and the gradual and RigL runs stopped by SIGTERM (what they left noted) then resumed;
    each chain in its own worker, started together.
    {"dirs": {name: run_dir}, "outcome": {name: (rc, out, err)}, "stopped": {kind: ...}}."""
    root = tmp_path_factory.mktemp("sparse_cli")
    dirs = {name: str(root / name) for name in
            ("gradual", "rigl", "set", "static", "gradual_stopped", "rigl_stopped",
             "gradual_export")}
    outcome, stopped = {}, {}

    def gradual_then_export():
        outcome["gradual"] = train("gradual", dirs["gradual"])
        if outcome["gradual"][0] == 0:
            shutil.copytree(dirs["gradual"], dirs["gradual_export"])
            outcome["export"] = _export(dirs["gradual_export"])

    def stop_then_resume(kind):
        run_dir = dirs[f"{kind}_stopped"]
        outcome[f"{kind}_stopped"] = train_and_stop(kind, run_dir)
        folder = os.path.join(run_dir, "round_000")
        state = os.path.join(folder, "checkpoint", "state.json")
        stopped[kind] = {"state": read_json(state) if os.path.exists(state) else None,
                         "updates": _updates(run_dir),
                         "done": os.path.exists(os.path.join(folder, "DONE"))}
        outcome[f"{kind}_resumed"] = train(kind, run_dir, "--resume")

    parallel({  # the longest chains first
        "gradual_stopped": lambda: stop_then_resume("gradual"),
        "rigl_stopped": lambda: stop_then_resume("rigl"),
        "gradual": gradual_then_export,
        "rigl": lambda: train_into(outcome, "rigl", dirs["rigl"]),
        "set": lambda: train_into(outcome, "set", dirs["set"]),
        "static": lambda: train_into(outcome, "static", dirs["static"]),
    })
    return dict(dirs=dirs, outcome=outcome, stopped=stopped)


def train_into(outcome, kind, run_dir):
    outcome[kind] = train(kind, run_dir)


def _export(run_dir):
    process = run_cli("tf_lth.export", f"--run_dir={run_dir}",
                      "--formats=saved_model,tflite_sparse")
    return process.returncode, process.stdout, process.stderr


def _finished(runs, name, run_dir=None):
    """The run directory of run `name` (`run_dir`: where it ran), which exited with 0."""
    assert name in runs["outcome"], f"{name} did not run"
    returncode, stdout, stderr = runs["outcome"][name]
    assert returncode == 0, (stdout[-2000:], stderr[-3000:])
    return run_dir or runs["dirs"][name]


# ---- reading a run ---------------------------------------------------------------------
def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _updates(run_dir):
    path = os.path.join(run_dir, "round_000", "mask_updates.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _round(run_dir):
    folder = os.path.join(run_dir, "round_000")
    masks = _arrays(os.path.join(folder, "masks.npz"))
    final = _arrays(os.path.join(folder, "final.npz"))
    initial = _arrays(os.path.join(folder, "initial.npz"))
    return dict(masks=masks, final=final, initial=initial,
                record=read_json(os.path.join(folder, "record.json")),
                results=read_json(os.path.join(run_dir, "results.json")))


def _check_round_files(run_dir, kept, kept_are_nonzero=False):
    """The finished round holds `kept` ({kernel: count}) in masks.npz and final.npz, pruned
    weights exactly 0, and record.json / results.json / summary.csv say the same.
    `kept_are_nonzero`: every kept weight is nonzero too (magnitude pruning keeps the largest;
    a connection SET grows on an input that is always 0 would stay at its starting 0)."""
    files = _round(run_dir)
    assert os.path.exists(os.path.join(run_dir, "round_000", "DONE"))
    assert not os.path.exists(os.path.join(run_dir, "round_000", "checkpoint"))
    assert sorted(files["masks"]) == sorted(SHAPES)
    for key, shape in SHAPES.items():
        mask = files["masks"][key]
        assert mask.shape == shape and set(np.unique(mask)) <= {0.0, 1.0}, key
        assert int(mask.sum()) == kept[key], key
        np.testing.assert_array_equal(files["final"][f"fc/{key}/mask"], mask)
        kernel = files["final"][f"fc/{key}/kernel"]
        assert np.all(kernel[mask == 0] == 0), f"{key}: a pruned weight is not 0"
        if kept_are_nonzero:
            assert np.count_nonzero(kernel[mask == 1]) == kept[key], key
    record = files["record"]
    remaining = sum(kept.values()) / TOTAL
    assert record["weights_remaining"] == pytest.approx(remaining, abs=1e-12)
    for key in SHAPES:
        assert record["layers"][key] == pytest.approx(kept[key] / SIZES[key], abs=1e-7), key
    assert record["iterations"] == ITERATIONS and record["round"] == 0
    assert [r["weights_remaining"] for r in files["results"]["rounds"]] == \
        [record["weights_remaining"]]
    with open(os.path.join(run_dir, "summary.csv"), encoding="utf-8") as stream:
        rows = [line.split(",") for line in stream.read().splitlines()]
    assert len(rows) == 2 and float(rows[1][rows[0].index("weights_remaining")]) == \
        pytest.approx(remaining, abs=1e-12)
    return files


# ---- expectations by hand --------------------------------------------------------------
def tfmot_kept(size, sparsity):
    """tfmot's count: max(round(size x (1 - sparsity)), 1), float32, half to even."""
    return max(int(np.round(np.float32(size) * (np.float32(1) - np.float32(sparsity)))), 1)


def polynomial_sparsity(step):
    """PolynomialDecay at `step` as tfmot computes it (float32)."""
    g = GRADUAL
    progress = np.float32(step - g["begin"]) / np.float32(g["end"] - g["begin"])
    progress = min(np.float32(1), max(np.float32(0), progress))
    return np.float32(g["initial"] - g["final"]) * (np.float32(1) - progress) ** np.float32(
        g["power"]) + np.float32(g["final"])


def gradual_steps():
    g = GRADUAL
    return [t for t in range(1, ITERATIONS + 1)
            if g["begin"] <= t <= g["end"] and (t - g["begin"]) % g["frequency"] == 0]


def target_counts(sparsity, distribution):
    """Kept weights per kernel: uniform densities 1 - S, or ERK (density_l proportional to
    (n_in + n_out) / (n_in x n_out), scaled so the kept total is (1 - S) x all weights;
    kernels that would exceed density 1 dense, the rest rescaled), in exact fractions;
    floor(density x size), then the largest remainders up to round((1 - S) x all)."""
    keep = 1 - Fraction(str(sparsity))
    wanted_total = keep * TOTAL
    if distribution == "uniform":
        wanted = {key: keep * size for key, size in SIZES.items()}
    else:
        dense = set()
        while True:
            rest = [key for key in SHAPES if key not in dense]
            budget = wanted_total - sum(SIZES[key] for key in dense)
            # density x size = epsilon x (n_in + n_out) / (n_in x n_out) x size
            epsilon = budget / sum(sum(SHAPES[key]) for key in rest)
            over = {key for key in rest if epsilon * sum(SHAPES[key]) > SIZES[key]}
            if not over:
                break
            dense |= over
        wanted = {key: Fraction(SIZES[key]) if key in dense else epsilon * sum(SHAPES[key])
                  for key in SHAPES}
    counts = {key: math.floor(value) for key, value in wanted.items()}
    missing = round(wanted_total) - sum(counts.values())
    for key in sorted(SHAPES, key=lambda key: -(wanted[key] - math.floor(wanted[key]))):
        if missing > 0 and counts[key] < SIZES[key]:
            counts[key] += 1
            missing -= 1
    assert sum(counts.values()) == round(wanted_total)
    return counts


def update_steps(method):
    _, _, every, end, _ = DYNAMIC[method]
    end = int(0.75 * ITERATIONS) if end is None else end
    return [t for t in range(1, ITERATIONS + 1) if t % every == 0 and t <= end], end


# ---- gradual ---------------------------------------------------------------------------
def test_gradual_prunes_at_the_schedules_steps_to_polynomial_decay_counts(runs):
    run_dir = _finished(runs, "gradual")
    updates = _updates(run_dir)
    steps = gradual_steps()
    assert steps == [20, 70, 120, 170, 220, 270, 320]
    assert [line["iteration"] for line in updates] == steps
    for line in updates:
        expected = {key: tfmot_kept(size, polynomial_sparsity(line["iteration"]))
                    for key, size in SIZES.items()}
        assert line["kept"] == expected, line
    assert updates[0]["kept"]["dense_1"] == round(0.9 * SIZES["dense_1"])  # initial 0.1
    assert updates[-1]["kept"] == {key: tfmot_kept(size, GRADUAL["final"])
                                   for key, size in SIZES.items()}
    # the kept counts only shrink, and something is pruned at every step
    for before, after in zip(updates, updates[1:]):
        assert all(after["kept"][key] < before["kept"][key] for key in SIZES)


def test_gradual_ends_at_the_final_sparsity_with_pruned_weights_zero(runs):
    run_dir = _finished(runs, "gradual")
    final = {key: tfmot_kept(size, GRADUAL["final"]) for key, size in SIZES.items()}
    assert final == {"dense_1": 47040, "dense_2": 6000, "output": 200}
    files = _check_round_files(run_dir, final, kept_are_nonzero=True)
    record = files["record"]
    assert record["weights_remaining"] == pytest.approx(0.2, abs=1e-12)
    assert record["criterion"] == "gradual_magnitude"
    info = record["sparse_training"]
    assert info["method"] == "gradual_magnitude" and info["scope"] == "layer"
    assert info["update_steps"] == len(gradual_steps())
    g = GRADUAL
    assert info["schedule"]["class_name"] == "PolynomialDecay"
    assert info["schedule"]["config"] == {
        "initial_sparsity": g["initial"], "final_sparsity": g["final"], "power": g["power"],
        "begin_step": g["begin"], "end_step": g["end"], "frequency": g["frequency"]}
    assert files["results"]["sparse_training"] == info
    for key in SHAPES:  # the round started dense
        assert files["initial"][f"fc/{key}/mask"].min() == 1.0, key


# ---- dynamic sparse training -----------------------------------------------------------
@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dynamic_sparse_holds_the_target_counts_at_every_update_and_moves_connections(
        runs, method):
    run_dir = _finished(runs, method)
    sparsity, distribution, _, _, fraction = DYNAMIC[method]
    targets = target_counts(sparsity, distribution)
    steps, end_step = update_steps(method)
    updates = _updates(run_dir)
    assert [line["iteration"] for line in updates] == steps
    for line in updates:
        assert line["kept"] == targets, line
    files = _check_round_files(run_dir, targets)
    info = files["record"]["sparse_training"]
    assert (info["method"], info["distribution"], info["end_step"], info["update_steps"]) == \
        (method, distribution, end_step, len(steps))
    for key in SHAPES:
        assert info["densities"][key] == pytest.approx(
            1 - sparsity if distribution == "uniform" else
            float(Fraction(targets[key], SIZES[key])), abs=1e-4), key
    moved_any = False
    for key in SHAPES:
        first = files["initial"][f"fc/{key}/mask"]
        last = files["masks"][key]
        assert int(first.sum()) == targets[key], key  # the first random mask: same counts
        grown = int(((last == 1) & (first == 0)).sum())
        # each update moves floor(f(t) x kept) connections at most (cosine-decayed f)
        bound = sum(math.floor(fraction / 2 * (1 + math.cos(math.pi * t / end_step))
                               * targets[key]) for t in steps)
        assert grown <= bound, (key, grown, bound)
        if targets[key] < SIZES[key]:
            assert grown > 0, f"{key}: no connection moved"
            moved_any = True
    assert moved_any


def test_static_sparse_training_keeps_its_first_random_mask(runs):
    run_dir = _finished(runs, "static")
    sparsity, distribution, _, _, _ = DYNAMIC["static"]
    targets = target_counts(sparsity, distribution)
    files = _check_round_files(run_dir, targets)
    for key in SHAPES:
        np.testing.assert_array_equal(files["masks"][key], files["initial"][f"fc/{key}/mask"])
    assert _updates(run_dir) == []
    info = files["record"]["sparse_training"]
    assert info["method"] == "static" and info["update_every"] == 0
    assert info["update_steps"] == 0


def test_the_first_dynamic_mask_is_at_the_target_counts_with_pruned_weights_zero(runs):
    """RigL's first (random) mask already holds the ERK counts, and initial.npz's kernels are
    0 where it is 0; the hand-computed targets themselves, spelled out."""
    rigl = _round(_finished(runs, "rigl"))["initial"]
    for key, count in target_counts(0.9, "erk").items():
        assert int(rigl[f"fc/{key}/mask"].sum()) == count
        assert np.all(rigl[f"fc/{key}/kernel"][rigl[f"fc/{key}/mask"] == 0] == 0), key
    assert target_counts(0.9, "erk") == {"dense_1": 18714, "dense_2": 6906, "output": 1000}
    assert target_counts(0.85, "uniform") == {"dense_1": 35280, "dense_2": 4500,
                                              "output": 150}


# ---- stop and resume -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gradual", "rigl"])
def test_sigterm_mid_round_then_resume_equals_the_uninterrupted_run(runs, kind):
    reference = _finished(runs, kind)
    returncode, output = runs["outcome"][f"{kind}_stopped"]
    assert returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "stopped by SIGTERM at round 0, iteration" in output
    stopped = runs["stopped"][kind]
    assert not stopped["done"] and stopped["state"] is not None
    iteration = stopped["state"]["iteration"]
    assert 100 <= iteration < ITERATIONS
    steps = gradual_steps() if kind == "gradual" else update_steps(kind)[0]
    # the stopped run had recorded exactly the updates up to its checkpoint
    assert [line["iteration"] for line in stopped["updates"]] == \
        [step for step in steps if step <= iteration]
    assert any(step > iteration for step in steps), "no mask update left after the stop"

    resumed = _finished(runs, f"{kind}_resumed", runs["dirs"][f"{kind}_stopped"])
    assert f"round 0: resuming at iteration {iteration}" in runs["outcome"][
        f"{kind}_resumed"][1]
    folder_a, folder_b = (os.path.join(path, "round_000") for path in (reference, resumed))
    for name in NPZ_FILES:
        assert_bitwise_equal(os.path.join(folder_a, name), os.path.join(folder_b, name))
    assert _updates(resumed) == _updates(reference)
    assert [line["iteration"] for line in _updates(resumed)] == steps  # none twice
    assert without_timing(read_json(os.path.join(folder_a, "record.json"))) == \
        without_timing(read_json(os.path.join(folder_b, "record.json")))
    with open(os.path.join(folder_a, "metrics.jsonl")) as a, \
            open(os.path.join(folder_b, "metrics.jsonl")) as b:
        assert [json.loads(line) for line in a] == [json.loads(line) for line in b]
    assert not os.path.exists(os.path.join(folder_b, "checkpoint"))


# ---- export ----------------------------------------------------------------------------
def test_export_of_a_gradual_run_reports_its_weights_remaining(runs):
    run_dir = _finished(runs, "export", runs["dirs"]["gradual_export"])
    report = read_json(os.path.join(run_dir, "export", "export_report.json"))
    assert report["passed_all"] is True
    assert set(report["formats"]) == {"saved_model", "tflite_sparse"}
    remaining = read_json(os.path.join(run_dir, "round_000", "record.json"))[
        "weights_remaining"]
    assert remaining == pytest.approx(0.2, abs=1e-12)
    assert report["weights_remaining"] == pytest.approx(remaining, abs=1e-12)
    for name, entry in report["formats"].items():
        assert entry["weights_remaining"] == pytest.approx(remaining, abs=1e-12), name
        assert os.path.exists(os.path.join(run_dir, "export", entry["file"])), name


# ---- the default window ----------------------------------------------------------------
def test_a_default_end_step_is_a_pruning_step_inside_the_round():
    """--end_step not given: the default span (50% of the round in whole periods) from the
    begin step, cut back to the last pruning step the round holds, so the schedule reaches
    --final_sparsity; with no pruning step after the begin step, the run is refused."""
    from tf_lth.core import config as config_lib

    def window(iterations, **flags):
        config = config_lib.make(experiment="gradual", final_sparsity=0.9,
                                 dataset="synthetic_mnist", run_dir="/tmp/unused", **flags)
        return config_lib.gradual_window(config, iterations)

    assert window(400) == (0, 200, 100)  # 10%..60% of the round, in periods of 100
    assert window(1000) == (100, 600, 100)
    assert window(400, pruning_frequency=30) == (30, 210, 30)
    assert window(400, begin_step=50) == (50, 250, 100)
    # from 250 the default span ends at 450, past the round: the last pruning step inside
    # it, 350 (an end of min(450, 400) = 400 is no pruning step: 350 would stop short of 0.9)
    assert window(400, begin_step=250) == (250, 350, 100)
    assert window(400, begin_step=320, pruning_frequency=30) == (320, 380, 30)
    assert window(400, begin_step=10, end_step=310) == (10, 310, 100)  # given: as given
    for iterations, flags, named in (
            (50, dict(), "--pruning_frequency=100"),  # no step of period 100 in 50
            (400, dict(begin_step=350), "--pruning_frequency=100"),  # only 350, at 0
            (50, dict(begin_step=60), "--begin_step=60"),
            (50, dict(end_step=40, pruning_frequency=45), "--pruning_frequency=45")):
        with pytest.raises(config_lib.ConfigError, match=named):
            window(iterations, **flags)
