"""`--experiment=gradual` (native, Keras 3) against `--experiment=tfmot_baseline` with
`--final_sparsity` (tfmot's own prune_low_magnitude, in its legacy-Keras worker process),
both through the CLI with the same flags.

At every pruning step, round_000/mask_updates.jsonl of both runs must list the same steps
and the same per-layer kept counts, and both must equal the counts worked out here from
tfmot 0.8's formulas (pruning_schedule.py, `PolynomialDecay.__call__` and
`_should_prune_in_step`; pruning_impl.py, `_update_mask`), in float32 as tfmot computes them:
    prunes at t  iff  begin <= t <= end and (t - begin) % frequency == 0   (t = 1: 1st batch)
    p = clip((t - begin) / (end - begin), 0, 1)
    sparsity = final + (initial - final) * (1 - p) ** power
    kept = max(round(size * (1 - sparsity)), 1)       (tf.math.round: half to even)
tfmot is never imported in this process (it turns tf.keras into Keras 2): the four CLI runs
are subprocesses, started together so the file stays short.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

for _module in ("tensorflow_model_optimization", "tf_keras"):  # found, never imported here
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed: tfmot is the reference here",
                    allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"dense_1": 784 * 300, "dense_2": 300 * 100, "output": 100 * 10}  # fc's kernels
COMMON = ["--dataset=synthetic_mnist", "--arch=fc", "--seed=0", "--iterations=300",
          "--eval_every=150", "--final_sparsity=0.9", "--noprogress"]
# case: (initial, power, begin, end, frequency); "lifted" starts above 0 with power 1, from
# begin_step 0 (step 0 is never a training step, so the first pruning step is 50), and its
# end_step is not a pruning step (the last one, 200, stops short of the final sparsity).
CASES = {"cubic": (0.0, 3, 20, 220, 40), "lifted": (0.3, 1, 0, 230, 50)}
EXPERIMENTS = ("gradual", "tfmot_baseline")


def _flags(case):
    initial, power, begin, end, frequency = CASES[case]
    flags = [f"--begin_step={begin}", f"--end_step={end}", f"--pruning_frequency={frequency}"]
    if initial:
        flags.append(f"--initial_sparsity={initial}")
    if power != 3:
        flags.append(f"--pruning_power={power}")
    return COMMON + flags


def expected_updates(case, iterations=300, final=0.9):
    """[{"iteration": t, "kept": {layer: count}}] by hand, from tfmot's formulas."""
    initial, power, begin, end, frequency = CASES[case]
    updates = []
    for step in range(1, iterations + 1):
        if not (begin <= step <= end and (step - begin) % frequency == 0):
            continue
        progress = np.float32(step - begin) / np.float32(end - begin)
        progress = min(np.float32(1.0), max(np.float32(0.0), progress))
        sparsity = (np.float32(initial - final) * np.power(np.float32(1.0) - progress,
                                                           np.float32(power))
                    + np.float32(final))
        kept = {name: int(max(np.round(np.float32(size) * (np.float32(1.0) - sparsity)), 1))
                for name, size in SIZES.items()}
        updates.append({"iteration": step, "kept": kept})
    return updates


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{(case, experiment): run folder}, the four CLI runs trained side by side."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    base = tmp_path_factory.mktemp("sparse_cli_tfmot")
    started = {}
    for case in CASES:
        for experiment in EXPERIMENTS:
            run_dir = base / f"{case}_{experiment}"
            log = open(base / f"{case}_{experiment}.log", "w+")
            process = subprocess.Popen(
                [sys.executable, "-m", "tf_lth.train", f"--experiment={experiment}",
                 *_flags(case), f"--run_dir={run_dir}"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            started[case, experiment] = (process, log, run_dir)
    try:
        for key, (process, log, _) in started.items():
            status = process.wait(timeout=300)
            log.seek(0)
            assert status == 0, f"{key}: exit {status}\n{log.read()[-3000:]}"
    finally:
        for process, log, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return {key: run_dir for key, (_, _, run_dir) in started.items()}


def _updates(run_dir):
    with open(run_dir / "round_000" / "mask_updates.jsonl", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _record(run_dir):
    with open(run_dir / "round_000" / "record.json", encoding="utf-8") as stream:
        return json.load(stream)


def test_hand_expectation_is_tfmots_schedule():
    """The hand-worked counts themselves: the steps, the start at initial_sparsity, the end."""
    cubic, lifted = expected_updates("cubic"), expected_updates("lifted")
    assert [item["iteration"] for item in cubic] == [20, 60, 100, 140, 180, 220]
    assert cubic[0]["kept"] == SIZES  # sparsity 0 at begin_step
    assert cubic[-1]["kept"] == {"dense_1": 23520, "dense_2": 3000, "output": 100}
    assert [item["iteration"] for item in lifted] == [50, 100, 150, 200]
    # begin 0, power 1: sparsity 0.9 - 0.6 (1 - 50/230) at step 50, 0.9 - 0.6 (30/230) at 200
    assert lifted[0]["kept"]["dense_1"] == round(235200 * (1 - (0.9 - 0.6 * 180 / 230)))
    assert lifted[-1]["kept"]["output"] == 178  # 1000 x (1 - (0.9 - 0.6 x 30/230)) = 178.26


@pytest.mark.parametrize("case", list(CASES))
def test_kept_counts_equal_tfmots_and_the_hand_formula_at_every_pruning_step(runs, case):
    native = _updates(runs[case, "gradual"])
    tfmot = _updates(runs[case, "tfmot_baseline"])
    expected = expected_updates(case)
    assert [item["iteration"] for item in native] == [item["iteration"] for item in tfmot] \
        == [item["iteration"] for item in expected]
    for ours, theirs, by_hand in zip(native, tfmot, expected):
        assert ours == theirs == by_hand, (ours, theirs, by_hand)
    assert len({item["kept"]["dense_1"] for item in expected}) == len(expected)  # all prune


@pytest.mark.parametrize("case", list(CASES))
def test_both_runs_end_at_the_same_sparsity_and_learn(runs, case):
    native, tfmot = _record(runs[case, "gradual"]), _record(runs[case, "tfmot_baseline"])
    last = expected_updates(case)[-1]["kept"]
    remaining = sum(last.values()) / sum(SIZES.values())
    for record in (native, tfmot):
        assert record["round"] == record["prune_level"] == 0
        assert record["iterations"] == 300
        assert abs(record["weights_remaining"] - remaining) < 1e-9, record["weights_remaining"]
        for name, size in SIZES.items():
            assert abs(record["layers"][name] - last[name] / size) < 1e-6, name
        assert record["test_accuracy"] > 0.9, record["test_accuracy"]  # synthetic_mnist is easy
    initial, power, begin, end, frequency = CASES[case]
    assert tfmot["pruning_schedule"] == {
        "kind": "PolynomialDecay", "initial_sparsity": initial, "power": power,
        "begin_step": begin, "end_step": end, "frequency": frequency, "final_sparsity": 0.9}
    print(f"{case}: kept at the last pruning step {last}; test accuracy native "
          f"{native['test_accuracy']:.4f}, tfmot {tfmot['test_accuracy']:.4f}; examples/s "
          f"native {native['examples_per_second']:.0f}, tfmot "
          f"{tfmot['examples_per_second']:.0f}")


@pytest.mark.parametrize("setting", [dict(rounds=2), dict(one_shot=True),
                                     dict(prune_scope="global"), dict(mask_block="1x4")])
def test_uniform_mode_refuses_lottery_levels_and_native_only_masks(tmp_path, setting):
    """Levels have no meaning in the one-run mode, and the worker prunes each layer on its
    own and single weights: a global scope or 1x4 blocks would silently differ. Refused with
    the configuration, before anything is written."""
    from tf_lth.core import config as config_lib

    name = next(iter(setting))
    with pytest.raises(config_lib.ConfigError, match=f"--{name}="):
        config_lib.make(experiment="tfmot_baseline", dataset="synthetic_mnist",
                        final_sparsity=0.9, run_dir=str(tmp_path / "run"), **setting)
    assert not (tmp_path / "run").exists()
