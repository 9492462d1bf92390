"""Upgrades keep runs alive (issue 22): run directories, and a reproduction's state file,
written by the code of commit 02ef4a4 (the last commit before the structure refactoring)
are carried on by the current code with the same results.

The old code is the commit's tree, exported with `git archive` into a temporary folder and
run from there (cwd and PYTHONPATH, the same Python). Every run is the real CLI in a
subprocess on synthetic_mnist with `--deterministic`, 200 iterations per round evaluated
every 25: a 3-round lottery run (rounds 0, 1, 2), as in tests/test_reliability.py, and a
learned supermask round, as in tests/test_cluster.py.

- wave 1, old code: A (lottery) and SA (learned supermask) run to the end; B and SB, the
  same runs, are stopped by SIGTERM in the middle of round 2 and of the supermask round,
  so each leaves an in-round checkpoint written by the old code.
- wave 2, current code: B and SB resume from those checkpoints; C, a copy of A without
  round_002 (as if killed between rounds 1 and 2), trains round 2 from the old round
  files. Meanwhile the old `tf_lth.reproduce --budget=smoke` records, in its
  reproduce.json, a sub-run directory holding a copy of A (a finished 3-round lottery run
  is what its completeness check asks of that sub-run).
- B and C must equal A, and SB must equal SA: every round's .npz bitwise, and every field
  the old code wrote in record.json, metrics.jsonl and results.json's rounds (timing
  aside; fields the current code adds are allowed).
- The current `tf_lth.reproduce` reads the old reproduce.json: its budget, the finished
  sub-run (skipped by `--run`, counted by `--report_only`).
Each wave starts its runs together; about a minute on 2 idle cores.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT, metrics_lines, mid_round_2, sigterm_when
from tests.test_reliability import assert_bitwise_equal, read_json

OLD_COMMIT = "02ef4a4"
COMMON = ["--dataset=synthetic_mnist", "--arch=fc", "--iterations=200", "--eval_every=25",
          "--seed=7", "--deterministic", "--noprogress"]
FLAGS = ["--experiment=lottery", "--rounds=2", *COMMON]
SUPERMASK_FLAGS = ["--experiment=learned_supermask", *COMMON]
ROUNDS = (0, 1, 2)
TIMING = ("seconds", "examples_per_second")
REPRODUCE = ["--budget=smoke", "--dataset=synthetic_mnist"]
STAND_IN = "mask_one/reinit"  # a 3-round (rounds 0..2) lottery sub-run of the smoke budget


# ---- the old code ----------------------------------------------------------------------
def _git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, timeout=60)


def export_old_tree(target: str) -> str:
    """The tree of OLD_COMMIT under `target`; skips when the repository has no such commit."""
    try:
        found = _git("cat-file", "-e", f"{OLD_COMMIT}^{{commit}}")
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"git is not usable here ({error}): the old code cannot be exported")
    if found.returncode != 0:
        pytest.skip(f"the repository has no git history with commit {OLD_COMMIT} (the last "
                    "commit before the structure refactoring), so there is no old code to run")
    os.makedirs(target)
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", OLD_COMMIT],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", target], stdin=archive.stdout, check=True, timeout=120)
    archive.stdout.close()
    assert archive.wait(timeout=60) == 0
    return target


def _env(tree):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=tree)


def cli(tree, module, *args, timeout=600):
    """(exit status, stdout, stderr) of `python -m module args` with the code of `tree`."""
    process = subprocess.run([sys.executable, "-m", module, *args], cwd=tree, env=_env(tree),
                             capture_output=True, text=True, timeout=timeout)
    return process.returncode, process.stdout, process.stderr


def supermask_mid_round(run_dir):
    """The learned supermask round evaluated at iteration 50 (of 200) at least."""
    return metrics_lines(run_dir, 0) >= 3


def train_and_sigterm(tree, flags, run_dir, ready, deadline_s=400):
    """Starts a run with the code of `tree` and sends SIGTERM once `ready(run_dir)`; returns
    (exit status, output)."""
    return sigterm_when([sys.executable, "-m", "tf_lth.train", *flags, f"--run_dir={run_dir}"],
                        tree, _env(tree), lambda: ready(run_dir), deadline_s)


def parallel(jobs: dict, workers: int = 2) -> dict:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def link_copy(source, target):
    """A copy whose files are hard links (runs replace files, never modify them in place)."""
    shutil.copytree(source, target, copy_function=os.link)


# ---- the runs --------------------------------------------------------------------------
def stopped_at(run_dir, round_index):
    """The iteration of the old code's in-round checkpoint of a run it stopped."""
    path = os.path.join(run_dir, f"round_{round_index:03d}", "checkpoint", "state.json")
    assert os.path.exists(path), f"the old code left no in-round checkpoint in {run_dir}"
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)["iteration"]


def resume(run_dir, flags):
    return lambda: cli(ROOT, "tf_lth.train", *flags, f"--run_dir={run_dir}", "--resume")


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory):
    root = tmp_path_factory.mktemp("upgrade")
    old = export_old_tree(str(root / "old"))
    dirs = {name: str(root / name) for name in ("A", "B", "C", "SA", "SB", "reproduce")}
    wave_1 = parallel({
        "A": lambda: cli(old, "tf_lth.train", *FLAGS, f"--run_dir={dirs['A']}"),
        "B": lambda: train_and_sigterm(old, FLAGS, dirs["B"], mid_round_2),
        "SA": lambda: cli(old, "tf_lth.train", *SUPERMASK_FLAGS, f"--run_dir={dirs['SA']}"),
        "SB": lambda: train_and_sigterm(old, SUPERMASK_FLAGS, dirs["SB"], supermask_mid_round),
    }, workers=4)
    for name in ("A", "SA"):
        assert wave_1[name][0] == 0, wave_1[name][2][-3000:]
    for name in ("B", "SB"):
        assert wave_1[name][0] == 128 + signal.SIGTERM, wave_1[name][1][-3000:]
    stops = {"B": stopped_at(dirs["B"], 2), "SB": stopped_at(dirs["SB"], 0)}
    link_copy(dirs["A"], dirs["C"])
    shutil.rmtree(os.path.join(dirs["C"], "round_002"))
    shutil.rmtree(os.path.join(dirs["C"], "plots"))  # the current CLI draws it again
    link_copy(dirs["A"], os.path.join(dirs["reproduce"], *STAND_IN.split("/")))
    wave_2 = parallel({
        "reproduce": lambda: cli(old, "tf_lth.reproduce", *REPRODUCE,
                                 f"--out_dir={dirs['reproduce']}", f"--run={STAND_IN}",
                                 timeout=120),
        "B": resume(dirs["B"], FLAGS), "C": resume(dirs["C"], FLAGS),
        "SB": resume(dirs["SB"], SUPERMASK_FLAGS),
    }, workers=4)  # the reproduce command trains nothing
    return dict(old=old, dirs=dirs, wave_2=wave_2, stops=stops)


# ---- comparing runs --------------------------------------------------------------------
def read_jsonl(path):
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def assert_keeps_old_fields(old: dict, new: dict, where: str):
    """Every field the old code wrote (timing aside) is in `new` with the same value."""
    fields = [key for key in old if key not in TIMING]
    assert not [key for key in fields if key not in new], (where, set(fields) - set(new))
    assert {key: new[key] for key in fields} == {key: old[key] for key in fields}, where


def assert_same_results(reference, other, rounds=ROUNDS):
    """The run `other` equals the reference run: every round's .npz bitwise, the fields of
    its record and metrics, and results.json's rounds."""
    for index in rounds:
        folder_a = os.path.join(reference, f"round_{index:03d}")
        folder_b = os.path.join(other, f"round_{index:03d}")
        assert os.path.exists(os.path.join(folder_b, "DONE")), folder_b
        assert not os.path.exists(os.path.join(folder_b, "checkpoint")), folder_b
        npz = sorted(name for name in os.listdir(folder_a) if name.endswith(".npz"))
        assert len(npz) >= 3, npz
        assert npz == sorted(name for name in os.listdir(folder_b) if name.endswith(".npz"))
        for name in npz:
            assert_bitwise_equal(os.path.join(folder_a, name), os.path.join(folder_b, name))
        assert_keeps_old_fields(read_json(os.path.join(folder_a, "record.json")),
                                read_json(os.path.join(folder_b, "record.json")),
                                f"{folder_b}/record.json")
        metrics_a = read_jsonl(os.path.join(folder_a, "metrics.jsonl"))
        metrics_b = read_jsonl(os.path.join(folder_b, "metrics.jsonl"))
        assert len(metrics_a) == len(metrics_b) == 9, folder_b  # iterations 0, 25, .., 200
        for line_a, line_b in zip(metrics_a, metrics_b):
            assert_keeps_old_fields(line_a, line_b, f"{folder_b}/metrics.jsonl")
    rounds_a = read_json(os.path.join(reference, "results.json"))["rounds"]
    rounds_b = read_json(os.path.join(other, "results.json"))["rounds"]
    assert [r["round"] for r in rounds_b] == list(rounds)
    for record_a, record_b in zip(rounds_a, rounds_b):
        assert_keeps_old_fields(record_a, record_b, f"{other}/results.json")


# ---- 1. a lottery run ------------------------------------------------------------------
def test_the_old_code_is_what_ran(upgrade):
    """The exported tree, not this checkout, is imported by the old runs."""
    process = subprocess.run([sys.executable, "-c", "import tf_lth.train as t; print(t.__file__)"],
                             cwd=upgrade["old"], env=_env(upgrade["old"]), capture_output=True,
                             text=True, timeout=120)
    assert process.stdout.strip() == os.path.join(upgrade["old"], "tf_lth", "train.py")
    with open(os.path.join(upgrade["dirs"]["A"], "results.json"), encoding="utf-8") as stream:
        rounds = json.load(stream)["rounds"]
    # the reference pruned: round 2 keeps 0.8^2 of the dense layers' weights
    assert rounds[2]["layers"]["dense_1"] == pytest.approx(0.64, abs=1e-3)


def test_a_run_stopped_by_the_old_code_resumes_from_its_checkpoint_with_the_same_results(
        upgrade):
    status, stdout, stderr = upgrade["wave_2"]["B"]
    assert status == 0, stderr[-3000:]
    assert "round 0: already complete, skipped" in stdout
    assert "round 1: already complete, skipped" in stdout
    assert f"round 2: resuming at iteration {upgrade['stops']['B']}" in stdout
    assert 0 < upgrade["stops"]["B"] < 200
    assert_same_results(upgrade["dirs"]["A"], upgrade["dirs"]["B"])


def test_a_run_of_the_old_code_trains_its_next_round_with_the_same_results(upgrade):
    status, stdout, stderr = upgrade["wave_2"]["C"]
    assert status == 0, stderr[-3000:]
    assert "round 1: already complete, skipped" in stdout
    assert "round 2: resuming" not in stdout  # no checkpoint: round 2 from its start
    assert_same_results(upgrade["dirs"]["A"], upgrade["dirs"]["C"])
    assert os.path.getsize(os.path.join(upgrade["dirs"]["C"], "plots", "lottery.png")) > 0


# ---- 2. a learned supermask run ---------------------------------------------------------
def test_a_learned_supermask_stopped_by_the_old_code_resumes_with_the_same_results(upgrade):
    status, stdout, stderr = upgrade["wave_2"]["SB"]
    assert status == 0, stderr[-3000:]
    assert f"round 0: resuming at iteration {upgrade['stops']['SB']}" in stdout
    assert 0 < upgrade["stops"]["SB"] < 200
    assert_same_results(upgrade["dirs"]["SA"], upgrade["dirs"]["SB"], rounds=(0,))
    record = read_json(os.path.join(upgrade["dirs"]["SB"], "round_000", "record.json"))
    assert "test_accuracy_expected_mask" in record  # a learned supermask round, finished


# ---- 3. a reproduction's state ---------------------------------------------------------
def test_the_old_reproduction_state_is_read_by_the_current_code(upgrade):
    from tf_lth.cli.reproduce import paper, plan

    status, stdout, stderr = upgrade["wave_2"]["reproduce"]
    assert status == 0, stderr[-3000:]
    assert f"{STAND_IN}: already complete, skipped" in stdout
    out_dir = upgrade["dirs"]["reproduce"]
    state_path = os.path.join(out_dir, "reproduce.json")
    old_state = read_json(state_path)
    assert old_state["budget"] == "smoke"
    assert old_state["sub_runs"][STAND_IN]["status"] == "done"
    # the budget the old code recorded is the current smoke budget, field for field; the
    # fields added since (the sparse-training section, issue 23) are new sub-runs of the plan
    recorded = old_state["budget_detail"]
    budget = paper.budget_from_dict(recorded)
    current = dataclasses.asdict(paper.budget_for("mnist_fc", "smoke"))
    assert {key: dataclasses.asdict(budget)[key] for key in recorded} == {
        key: current[key] for key in recorded}
    assert set(current) - set(recorded) <= {"sparse_sparsities", "sparse_seeds"}

    again, stdout, stderr = cli(ROOT, "tf_lth.reproduce", *REPRODUCE, f"--out_dir={out_dir}",
                                f"--run={STAND_IN}", timeout=120)
    assert again == 0, stderr[-3000:]
    assert f"{STAND_IN}: already complete, skipped" in stdout  # nothing trained again
    state = read_json(state_path)
    for key in ("preset", "budget", "seed", "dataset"):
        assert state[key] == old_state[key], key
    assert {key: state["budget_detail"][key] for key in recorded} == recorded
    assert state["sub_runs"][STAND_IN]["status"] == "done"

    results = os.path.join(out_dir, "RESULTS.md")
    report, stdout, stderr = cli(ROOT, "tf_lth.reproduce", *REPRODUCE, f"--out_dir={out_dir}",
                                 "--report_only", f"--results={results}", timeout=300)
    assert report == 0, stderr[-3000:]
    with open(results, encoding="utf-8") as stream:
        text = stream.read()
    # the report plans the budget the state holds now: the recorded one and the new sections
    runs = plan.plan("mnist_fc", paper.budget_from_dict(state["budget_detail"]),
                     "synthetic_mnist")
    assert STAND_IN in {run.name for run in runs}
    assert f"1 of {len(runs)} complete" in text
