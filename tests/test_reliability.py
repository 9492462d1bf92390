"""Reliability (issue 6): determinism, resume after SIGKILL, corrupt files, guards.

Every run here is the real CLI in a subprocess on `synthetic_mnist` (28x28x1, 2,000
training images, no download): a 3-round lottery run (rounds 0, 1, 2) of 200 iterations
per round with `--deterministic`. Runs that do not depend on each other are started
together (at most `WORKERS` at once) by two module fixtures, so the file stays short on a
2-core machine:

- `first_wave`: the reference run, a second identical run (determinism), a run killed with
  SIGKILL in the middle of round 2, and one killed in round 2 after an in-round checkpoint.
- `second_wave`: the two resumes, one corrupt file and one NaN through the CLI.
The other corrupt-file cases and the diverging learning rate run in this process (the
code path of `tf_lth.train` after flag parsing), which costs no TensorFlow start-up each.

Bitwise means: the same array names, dtypes, shapes and bytes (`ndarray.tobytes()`) in
every .npz; metrics are compared as parsed JSON, except wall-clock fields.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, metrics_lines, mid_round_2, snapshot

FLAGS = ["--experiment=lottery", "--dataset=synthetic_mnist", "--iterations=200",
         "--eval_every=25", "--rounds=2", "--seed=7", "--deterministic", "--noprogress"]
ROUNDS = (0, 1, 2)
NPZ_FILES = ("initial.npz", "final.npz", "masks.npz", "frozen.npz")
TIMING = ("seconds", "examples_per_second")
WORKERS = 4


# ---- running the CLI -------------------------------------------------------------------
def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def _command(run_dir, extra=()):
    return [sys.executable, "-m", "tf_lth.train", *FLAGS, f"--run_dir={run_dir}", *extra]


def run(run_dir, *extra, flags=None):
    command = _command(run_dir, extra) if flags is None else [
        sys.executable, "-m", "tf_lth.train", *flags, f"--run_dir={run_dir}", *extra]
    process = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)
    return process.returncode, process.stdout, process.stderr


def run_and_kill(run_dir, extra, ready, deadline_s=400):
    """Starts a run, SIGKILLs it as soon as `ready(run_dir)` holds; returns its output."""
    process = subprocess.Popen(_command(run_dir, extra), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + deadline_s
    try:
        while not ready(run_dir):
            assert process.poll() is None, "the run ended before the kill point"
            assert time.time() < deadline, "the kill point was never reached"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        output = process.communicate()[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output[-2000:]
    return output


def after_checkpoint_in_round_2(run_dir):
    """Round 2 checkpointed (its only one: iteration 100, --checkpoint_every=100) and
    evaluated after it (iteration 125), so the kill lands between iterations 125 and 200."""
    return (os.path.exists(os.path.join(run_dir, "round_002", "checkpoint", "state.json"))
            and metrics_lines(run_dir, 2) >= 6)


def parallel(jobs: dict) -> dict:
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


# ---- comparing runs --------------------------------------------------------------------
def arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def assert_bitwise_equal(path_a, path_b):
    a, b = arrays(path_a), arrays(path_b)
    assert sorted(a) == sorted(b), (path_a, path_b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, (path_b, key)
        assert a[key].tobytes() == b[key].tobytes(), f"{path_b}: {key} differs"


def without_timing(record):
    return {key: value for key, value in record.items() if key not in TIMING}


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def assert_same_run(reference, other) -> int:
    """Every round's arrays bitwise and metrics equal; returns the number of npz compared."""
    compared = 0
    for index in ROUNDS:
        folder_a = os.path.join(reference, f"round_{index:03d}")
        folder_b = os.path.join(other, f"round_{index:03d}")
        assert os.path.exists(os.path.join(folder_b, "DONE")), folder_b
        for name in NPZ_FILES:
            assert_bitwise_equal(os.path.join(folder_a, name), os.path.join(folder_b, name))
            compared += 1
        assert without_timing(read_json(os.path.join(folder_a, "record.json"))) == \
            without_timing(read_json(os.path.join(folder_b, "record.json"))), index
        with open(os.path.join(folder_a, "metrics.jsonl")) as a, \
                open(os.path.join(folder_b, "metrics.jsonl")) as b:
            assert [json.loads(line) for line in a] == [json.loads(line) for line in b], index
        assert not os.path.exists(os.path.join(folder_b, "checkpoint"))
    rounds_a = [without_timing(r) for r in read_json(os.path.join(reference, "results.json"))["rounds"]]
    rounds_b = [without_timing(r) for r in read_json(os.path.join(other, "results.json"))["rounds"]]
    assert rounds_a == rounds_b and [r["round"] for r in rounds_b] == list(ROUNDS)
    return compared


def assert_every_file_readable(run_dir):
    """What a kill left behind: every run file whole (atomic writes), temporaries aside."""
    from tf_lth.core import run_files

    checked = 0
    for parent, folders, files in os.walk(run_dir):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            path = os.path.join(parent, name)
            if name.startswith("."):
                continue
            if name.endswith(".npz"):
                run_files.load_arrays(path)
            elif name.endswith(".json"):
                run_files.read_json(path)
            elif name.endswith(".jsonl"):
                run_files.read_jsonl(path)
            else:
                continue
            checked += 1
    assert checked > 0


def last_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


# ---- the runs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_wave(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    dirs = {name: str(root / name) for name in ("reference", "repeat", "killed", "killed_ckpt")}
    outcome = parallel({
        "reference": lambda: run(dirs["reference"]),
        "repeat": lambda: run(dirs["repeat"]),
        "killed": lambda: run_and_kill(dirs["killed"], [], mid_round_2),
        "killed_ckpt": lambda: run_and_kill(dirs["killed_ckpt"], ["--checkpoint_every=100"],
                                            after_checkpoint_in_round_2),
    })
    for name in ("reference", "repeat"):
        returncode, _, stderr = outcome[name]
        assert returncode == 0, stderr[-3000:]
    for name in ("killed", "killed_ckpt"):  # pristine copies of what the kill left
        link_copy(dirs[name], str(root / f"{name}_pristine"))
        dirs[f"{name}_pristine"] = str(root / f"{name}_pristine")
    return dict(root=str(root), dirs=dirs, outcome=outcome)


def link_copy(source, target):
    """A copy of a run whose files are hard links: cheap, and safe because runs only ever
    replace files (temporary file, then rename) and the corruptions below write new files.
    Were a run to modify a file in place, the reference would change and comparisons fail."""
    shutil.copytree(source, target, copy_function=os.link)


def _rewrite(path, data):
    os.unlink(path)  # a new file, not the hard-linked one
    with open(path, "wb") as stream:
        stream.write(data)


def _truncate(path, keep=0.5):
    with open(path, "rb") as stream:
        data = stream.read()
    _rewrite(path, data[:int(len(data) * keep)])


def _flip_byte(path, where=0.5):
    with open(path, "rb") as stream:
        data = bytearray(stream.read())
    data[int(len(data) * where)] ^= 0xFF
    _rewrite(path, bytes(data))


def _ckpt_data(run_dir):
    folder = os.path.join(run_dir, "round_002", "checkpoint")
    return os.path.join(folder, [n for n in os.listdir(folder) if n.startswith("ckpt.data")][0])


# (case, source run, corruption, path the error must name, relative to the run)
CORRUPTIONS = [
    ("final_weights_truncated", "reference",
     lambda d: _truncate(os.path.join(d, "round_001", "final.npz")), "round_001/final.npz"),
    ("initial_weights_emptied", "reference",
     lambda d: _truncate(os.path.join(d, "round_000", "initial.npz"), 0.0),
     "round_000/initial.npz"),
    ("masks_bit_flipped", "reference",
     lambda d: _flip_byte(os.path.join(d, "round_001", "masks.npz")), "round_001/masks.npz"),
    ("record_truncated", "reference",
     lambda d: _truncate(os.path.join(d, "round_000", "record.json")), "round_000/record.json"),
    ("results_truncated", "reference",
     lambda d: _truncate(os.path.join(d, "results.json")), "results.json"),
    ("checkpoint_data_truncated", "killed_ckpt", lambda d: _truncate(_ckpt_data(d)),
     "round_002/checkpoint"),
    ("checkpoint_data_bit_flipped", "killed_ckpt", lambda d: _flip_byte(_ckpt_data(d), 0.3),
     "round_002/checkpoint"),
    ("checkpoint_index_truncated", "killed_ckpt",
     lambda d: _truncate(os.path.join(d, "round_002", "checkpoint", "ckpt.index")),
     "round_002/checkpoint"),
    ("checkpoint_state_truncated", "killed_ckpt",
     lambda d: _truncate(os.path.join(d, "round_002", "checkpoint", "state.json")),
     "round_002/checkpoint/state.json"),
]


def _scale_initial_kernels(run_dir, factor=1e25):
    """A valid initial.npz whose kernels overflow float32 in the first forward pass."""
    from tf_lth.core import run_files

    path = os.path.join(run_dir, "round_000", "initial.npz")
    state = arrays(path)
    for key in state:
        if key.endswith("/kernel"):
            state[key] = (state[key].astype(np.float64) * factor).astype(np.float32)
    run_files.save_arrays(path, state)


def corrupted_copy(first_wave, case, name=None):
    """A copy of the case's source run with its corruption applied."""
    _, source, corrupt, _ = next(item for item in CORRUPTIONS if item[0] == case)
    source = source + ("_pristine" if source.startswith("killed") else "")
    target = os.path.join(first_wave["root"], name or case)
    link_copy(first_wave["dirs"][source], target)
    if source == "reference":  # as if killed between rounds 1 and 2
        shutil.rmtree(os.path.join(target, "round_002"))
    corrupt(target)
    return target


@pytest.fixture(scope="module")
def second_wave(first_wave):
    """The two resumes, a corrupt file and a NaN through the CLI, run together."""
    root, dirs = first_wave["root"], first_wave["dirs"]
    jobs, prepared = {}, {}

    def copy(source, name):
        target = os.path.join(root, name)
        link_copy(dirs[source], target)
        return target

    resumed = copy("killed_pristine", "resumed")
    jobs["resumed"] = lambda: run(resumed, "--resume")
    resumed_ckpt = copy("killed_ckpt_pristine", "resumed_ckpt")
    jobs["resumed_ckpt"] = lambda: run(resumed_ckpt, "--resume", "--checkpoint_every=100")
    corrupt = corrupted_copy(first_wave, "final_weights_truncated", "cli_corrupt")
    prepared["cli_corrupt"] = snapshot(corrupt)
    jobs["cli_corrupt"] = lambda: run(corrupt, "--resume")
    nan_resume = copy("reference", "nan_in_round_2")
    shutil.rmtree(os.path.join(nan_resume, "round_002"))
    _scale_initial_kernels(nan_resume)
    prepared["nan_in_round_2"] = snapshot(nan_resume)
    jobs["nan_in_round_2"] = lambda: run(nan_resume, "--resume")
    outcome = parallel(jobs)
    return dict(outcome=outcome, prepared=prepared, root=root, dirs=dirs)


def in_process_config(run_dir, **overrides):
    """The Config of FLAGS (without --deterministic: op determinism is process-global)."""
    from tf_lth.core import config as config_lib

    values = dict(experiment="lottery", dataset="synthetic_mnist", iterations=200,
                  eval_every=25, rounds=2, seed=7, progress=False, run_dir=run_dir)
    values.update(overrides)
    return config_lib.make(**values)


def resume_in_process(run_dir):
    """What `tf_lth.train --resume` does after parsing flags, in this process."""
    import trainers
    from tf_lth.core import data as data_lib
    from tf_lth.core import models, run_files

    config = in_process_config(run_dir, resume=True)
    run_files.check_run_dir(config)
    data = data_lib.for_config(config)
    models.check_compatible(config, data)
    return trainers.run(config, data=data, log=lambda *_: None)


# ---- 1. determinism --------------------------------------------------------------------
def test_two_deterministic_runs_are_bitwise_identical(first_wave):
    dirs = first_wave["dirs"]
    compared = assert_same_run(dirs["reference"], dirs["repeat"])
    assert compared == len(ROUNDS) * len(NPZ_FILES)
    # masks really pruned: round 2 keeps 0.8^2 of dense weights
    masks = arrays(os.path.join(dirs["repeat"], "round_002", "masks.npz"))
    assert float(masks["dense_1"].mean()) == pytest.approx(0.64, abs=1e-3)


# ---- 2. resume after SIGKILL -----------------------------------------------------------
def test_sigkill_in_the_middle_of_round_2_then_resume_equals_the_uninterrupted_run(
        first_wave, second_wave):
    dirs = first_wave["dirs"]
    killed = dirs["killed_pristine"]
    # the kill landed in round 2: rounds 0 and 1 done, round 2 started but not done
    assert os.path.exists(os.path.join(killed, "round_001", "DONE"))
    assert os.path.isdir(os.path.join(killed, "round_002"))
    assert not os.path.exists(os.path.join(killed, "round_002", "DONE"))
    assert metrics_lines(killed, 2) >= 2  # evaluated at iteration 25 (of 200) at least
    assert_every_file_readable(killed)
    returncode, stdout, stderr = second_wave["outcome"]["resumed"]
    assert returncode == 0, stderr[-3000:]
    assert "round 0: already complete, skipped" in stdout
    assert "round 1: already complete, skipped" in stdout
    assert "round 2: resuming" not in stdout  # no checkpoint: round 2 starts again
    assert assert_same_run(dirs["reference"], second_wave["root"] + "/resumed") == 12


def test_sigkill_after_an_in_round_checkpoint_resumes_from_it_with_optimizer_and_data_order(
        first_wave, second_wave):
    dirs = first_wave["dirs"]
    killed = dirs["killed_ckpt_pristine"]
    assert not os.path.exists(os.path.join(killed, "round_002", "DONE"))
    state = read_json(os.path.join(killed, "round_002", "checkpoint", "state.json"))
    assert state["iteration"] == 100
    # evaluations after the checkpoint were logged before the kill; resuming drops them
    assert metrics_lines(killed, 2) > len(state["history"])
    assert_every_file_readable(killed)
    returncode, stdout, stderr = second_wave["outcome"]["resumed_ckpt"]
    assert returncode == 0, stderr[-3000:]
    assert f"round 2: resuming at iteration {state['iteration']}" in stdout
    assert assert_same_run(dirs["reference"], second_wave["root"] + "/resumed_ckpt") == 12
    leftovers = [name for name in os.listdir(os.path.join(second_wave["root"], "resumed_ckpt",
                                                          "round_002"))
                 if "checkpoint" in name]
    assert leftovers == []


# ---- 3. corrupt files ------------------------------------------------------------------
def _contents(snapshot):
    """Files and bytes, TensorBoard events aside (a run opens its event file first)."""
    return {key: value[0] for key, value in snapshot.items() if not key.startswith("tb/")}


def test_a_corrupt_file_stops_the_cli_with_exit_2_and_one_line_naming_it(second_wave):
    returncode, stdout, stderr = second_wave["outcome"]["cli_corrupt"]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert returncode == 2, (stdout[-1500:], stderr[-3000:])
    line = last_error_line(stderr)
    assert line.startswith("error: ") and "round_001/final.npz" in line, line
    assert "round 2:" not in stdout  # round 2 never started training
    run_dir = os.path.join(second_wave["root"], "cli_corrupt")
    assert _contents(snapshot(run_dir)) == _contents(second_wave["prepared"]["cli_corrupt"])


@pytest.mark.parametrize("case,source,corrupt,named", CORRUPTIONS,
                         ids=[item[0] for item in CORRUPTIONS])
def test_a_corrupt_file_is_reported_by_name_and_never_used(first_wave, case, source,
                                                           corrupt, named):
    from tf_lth.core.config import ConfigError
    from tf_lth.core.run_files import CorruptFileError

    run_dir = corrupted_copy(first_wave, case)
    before = snapshot(run_dir)
    with pytest.raises((CorruptFileError, ConfigError)) as caught:
        resume_in_process(run_dir)
    message = str(caught.value)
    assert named in message and "\n" not in message, message
    # nothing was trained on it, nothing overwritten: the folder is exactly as corrupted
    assert _contents(snapshot(run_dir)) == _contents(before)


# ---- 4. guards -------------------------------------------------------------------------
def test_a_nan_loss_stops_the_run_naming_round_and_iteration_and_keeps_completed_rounds(
        first_wave, second_wave):
    returncode, stdout, stderr = second_wave["outcome"]["nan_in_round_2"]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert returncode not in (0, 2) and returncode > 0, stderr[-3000:]
    line = last_error_line(stderr)
    assert re.match(r"error: round 2, iteration 1: .*(NaN|infinite)", line), line
    run_dir = os.path.join(second_wave["root"], "nan_in_round_2")
    assert not os.path.exists(os.path.join(run_dir, "round_002", "DONE"))
    before = second_wave["prepared"]["nan_in_round_2"]
    after = snapshot(run_dir)
    for key, (payload, mtime) in before.items():
        if key.startswith(("round_000/", "round_001/")):
            assert after[key] == (payload, mtime), f"completed round file {key} changed"
    assert after["results.json"] == before["results.json"]  # no record of the failed round


def test_a_diverging_learning_rate_stops_round_0_and_overwrite_replaced_the_old_run(
        first_wave):
    import trainers
    from trainers import runs
    from trainers.loop import NonFiniteLossError

    run_dir = os.path.join(first_wave["root"], "nan_learning_rate")
    link_copy(first_wave["dirs"]["reference"], run_dir)
    config = in_process_config(run_dir, overwrite=True, learning_rate=1e30)
    runs.prepare(config, "--learning_rate=1e30\n")
    with pytest.raises(NonFiniteLossError) as caught:
        trainers.run(config, log=lambda *_: None)
    match = re.match(r"round 0, iteration (\d+): ", str(caught.value))
    assert match and 1 <= int(match.group(1)) <= 25, str(caught.value)
    assert read_json(os.path.join(run_dir, "config.json"))["learning_rate"] == 1e30
    assert not os.path.exists(os.path.join(run_dir, "round_001"))  # the old run is gone
    assert not os.path.exists(os.path.join(run_dir, "round_000", "DONE"))


def test_an_existing_run_directory_is_refused_without_resume_or_overwrite(first_wave):
    run_dir = first_wave["dirs"]["reference"]
    before = snapshot(run_dir)
    returncode, stdout, stderr = run(run_dir)
    assert returncode == 2 and "Traceback" not in stderr
    line = last_error_line(stderr)
    assert line.startswith("error: --run_dir=") and "--resume" in line and "--overwrite" in line
    assert snapshot(run_dir) == before


def test_a_run_dir_below_a_regular_file_is_reported_before_training(tmp_path):
    """Works for root too: no permission bits involved, the path itself cannot exist."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    returncode, stdout, stderr = run(str(blocker / "run"))
    assert returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    line = last_error_line(stderr)
    assert line.startswith("error: --run_dir=") and "not writable" in line, line
    assert "round 0" not in stdout and blocker.read_text() == "x"


def test_a_run_dir_on_a_read_only_place_is_reported_before_training():
    """/sys refuses new files even to root (CI runs as root, so permission bits would not)."""
    import tempfile

    try:
        handle, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:
        os.close(handle)
        os.unlink(probe)
        pytest.skip("/sys is writable here")
    returncode, stdout, stderr = run("/sys/tf_lth_reliability_run")
    assert returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    line = last_error_line(stderr)
    assert line.startswith("error: --run_dir=") and "not writable" in line, line
    assert "round 0" not in stdout


def test_a_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    """Simulated: the write probe's fsync fails with ENOSPC (no real disk is filled)."""
    from tf_lth.core import config as config_lib
    from tf_lth.core import run_files

    def full(_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    config = config_lib.make(experiment="lottery", dataset="synthetic_mnist", iterations=10,
                             run_dir=str(tmp_path / "run"))
    with pytest.raises(config_lib.ConfigError, match=r"--run_dir=.*No space left on device"):
        run_files.check_run_dir(config)
    assert os.listdir(tmp_path) == []  # the probe is gone, nothing created


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from tf_lth.core import run_files

    path = str(tmp_path / "masks.npz")
    run_files.save_arrays(path, {"a": np.ones(3, np.float32)})

    def crash(*_):
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        run_files.save_arrays(path, {"a": np.zeros(3, np.float32)})
    assert os.listdir(tmp_path) == ["masks.npz"]
    assert run_files.load_arrays(path)["a"].tolist() == [1.0, 1.0, 1.0]


def test_an_in_round_checkpoint_restores_the_supermask_sampling_state(tmp_path):
    """Learned supermasks sample Bernoulli masks from Keras seed generators, which Keras
    leaves out of tf.train's object graph: the checkpoint must still carry their state, or a
    resumed round would sample other masks than the uninterrupted one."""
    from tf_lth.core import models
    from trainers.loop import Trainer

    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    first = models.build("fc", (28, 28, 1), 10, seed=1, supermask=True)
    trainer = Trainer(first, "sgd", 0.1)
    for _ in range(3):
        first(images, training=True)  # advances the seed generators
    path = trainer.checkpoint().write(str(tmp_path / "ckpt"))
    restored = models.build("fc", (28, 28, 1), 10, seed=1, supermask=True)
    Trainer(restored, "sgd", 0.1).checkpoint().read(path).assert_consumed()
    fresh = models.build("fc", (28, 28, 1), 10, seed=1, supermask=True)
    expected = np.array(first(images, training=True))
    assert np.array_equal(np.array(restored(images, training=True)), expected)
    assert not np.array_equal(np.array(fresh(images, training=True)), expected)


def test_records_are_appended_all_or_none(tmp_path, monkeypatch):
    from tf_lth.core import run_files

    path = str(tmp_path / "masks.jsonl")
    run_files.extend_jsonl(path, [])
    assert not os.path.exists(path)  # nothing to add: no file
    run_files.append_jsonl(path, {"level": 0})
    run_files.extend_jsonl(path, [{"level": 1}, {"level": 2}])
    assert [r["level"] for r in run_files.read_jsonl(path)] == [0, 1, 2]

    def crash(*_):
        raise OSError(errno.ENOSPC, "simulated full disk before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        run_files.extend_jsonl(path, [{"level": 3}, {"level": 4}])
    assert [r["level"] for r in run_files.read_jsonl(path)] == [0, 1, 2]
    assert os.listdir(tmp_path) == ["masks.jsonl"]
