"""Runs that survive clusters (issue 16): signals, one process per run directory, a full disk.

Every run is the real CLI in a subprocess, with the flags of tests/test_reliability.py (a
3-round `--deterministic` lottery run on synthetic_mnist, 200 iterations per round) or a
learned supermask run of the same size, and is compared with an uninterrupted run of the
same flags: every .npz bitwise, metrics and records as parsed JSON (timing aside).

- SIGTERM in the middle of round 2 and SIGINT in the middle of a learned supermask round:
  exit 143 / 130 within 5 seconds of the signal, one line, an in-round checkpoint holding
  every evaluation logged before the signal; `--resume` then equals the uninterrupted run.
- Two signals back to back are one request (a scheduler signals every process and a parent
  forwards it too): one clean, checkpointed stop.
- A second signal 1.2 s after the first (while round 0 still compiles, so the first is
  still pending) exits at once; every file left is whole and `--resume` still equals the
  uninterrupted run.
- SIGTERM in an untrained supermask sweep stops between two evaluations; `--resume`
  gives the same masks.jsonl, byte for byte, as an uninterrupted sweep.
- A second process on a live run directory (its first process stopped with SIGSTOP, so
  the check does not race the clock): `--resume`, `--overwrite` and export are refused
  with exit 2 naming the holder's pid, and nothing in the folder changes. The holder is
  then SIGKILLed: its stale lock file blocks nothing, and `--resume` completes the run.
- A real full disk: a small tmpfs mounted here, filled with a ballast file while round 2
  trains. Exit 3 and one line naming the file; no partial or temporary file; after the
  filesystem is made larger, `--resume` equals the uninterrupted run.

The runs are started together (at most WORKERS at once) by the `waves` fixture.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, metrics_lines, snapshot
from tests.test_reliability import (FLAGS, NPZ_FILES, _command, _env,
                                    assert_bitwise_equal, assert_every_file_readable,
                                    assert_same_run, last_error_line, mid_round_2, read_json,
                                    run, without_timing)

SUPERMASK_FLAGS = ["--experiment=learned_supermask", "--dataset=synthetic_mnist",
                   "--iterations=200", "--eval_every=25", "--seed=7", "--deterministic",
                   "--noprogress"]
WORKERS = 3
SIGNAL_TO_EXIT_S = 5.0  # the bound
TEMPORARY_PREFIXES = (".tmp-", ".checkpoint-", ".removing-", ".write-probe-")


# ---- helpers ---------------------------------------------------------------------------
def _train_command(run_dir, flags, extra=()):
    if flags is None:
        return _command(run_dir, extra)
    return [sys.executable, "-m", "tf_lth.train", *flags, f"--run_dir={run_dir}", *extra]


def _last_iteration(run_dir, round_index):
    path = os.path.join(run_dir, f"round_{round_index:03d}", "metrics.jsonl")
    with open(path, encoding="utf-8") as stream:
        return max(json.loads(line)["iteration"] for line in stream if line.strip())


def run_and_signal(run_dir, ready, round_index, signals=(signal.SIGTERM,), flags=None,
                   apart_s=0.0):
    """Starts a run and sends `signals`, `apart_s` seconds apart, once `ready(run_dir)`.

    Returns (exit status, output, seconds from the last signal to the exit, the last
    iteration evaluated in `round_index` before the signal, or None; whether the run was
    still alive when the last signal was sent)."""
    process = subprocess.Popen(_train_command(run_dir, flags), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    try:
        while not ready(run_dir):
            assert process.poll() is None, "the run ended before the signal"
            assert time.time() < deadline, "the signal point was never reached"
            time.sleep(0.005)
        seen = _last_iteration(run_dir, round_index) if metrics_lines(
            run_dir, round_index) else None
        for index, number in enumerate(signals):
            if index:
                time.sleep(apart_s)
            alive = process.poll() is None
            sent = time.monotonic()
            process.send_signal(number)
        process.wait(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
    return process.returncode, output, seconds, seen, alive


def round_0_started(run_dir):
    """Round 0 began (its initial weights saved); its first calls are still compiling."""
    return os.path.exists(os.path.join(run_dir, "round_000", "initial.npz"))


def supermask_mid_round(run_dir):
    """The supermask round compiled and evaluated at iteration 50 (of 200) at least."""
    return metrics_lines(run_dir, 0) >= 3


def temporaries(run_dir):
    found = []
    for parent, folders, files in os.walk(run_dir):
        found += [os.path.join(parent, name) for name in folders + files
                  if name.startswith(TEMPORARY_PREFIXES)]
    return found


def assert_same_round(reference, other, round_index=0):
    """One round's arrays bitwise, its record and metrics, and results.json's rounds."""
    folder_a = os.path.join(reference, f"round_{round_index:03d}")
    folder_b = os.path.join(other, f"round_{round_index:03d}")
    assert os.path.exists(os.path.join(folder_b, "DONE")), folder_b
    for name in NPZ_FILES:
        assert_bitwise_equal(os.path.join(folder_a, name), os.path.join(folder_b, name))
    assert without_timing(read_json(os.path.join(folder_a, "record.json"))) == \
        without_timing(read_json(os.path.join(folder_b, "record.json")))
    with open(os.path.join(folder_a, "metrics.jsonl")) as a, \
            open(os.path.join(folder_b, "metrics.jsonl")) as b:
        assert [json.loads(line) for line in a] == [json.loads(line) for line in b]
    rounds_a = [without_timing(r) for r in read_json(os.path.join(reference, "results.json"))["rounds"]]
    rounds_b = [without_timing(r) for r in read_json(os.path.join(other, "results.json"))["rounds"]]
    assert rounds_a == rounds_b and len(rounds_b) == 1


def _cli(*command):
    process = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    return process.returncode, process.stdout, process.stderr


# ---- a second process on a live run directory ------------------------------------------
def second_process_on_a_live_run(run_dir):
    """Stops a live run with SIGSTOP (it keeps its lock), tries the writing commands on its
    folder, then SIGKILLs it (its lock file stays behind) and resumes."""
    process = subprocess.Popen(_train_command(run_dir, None), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    try:
        while metrics_lines(run_dir, 0) < 1:  # training: the folder is the run's
            assert process.poll() is None, "the run ended too early"
            assert time.time() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        before = snapshot(run_dir)
        refused = {
            "resume": _cli("tf_lth.train", *FLAGS, f"--run_dir={run_dir}", "--resume"),
            "overwrite": _cli("tf_lth.train", *FLAGS, f"--run_dir={run_dir}", "--overwrite"),
            "export": _cli("tf_lth.export", f"--run_dir={run_dir}", "--formats=saved_model"),
        }
        after = snapshot(run_dir)
        with open(os.path.join(run_dir, ".lock"), encoding="ascii") as stream:
            lock_text = stream.read()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    stale = os.path.exists(os.path.join(run_dir, ".lock"))
    resumed = run(run_dir, "--resume")
    return dict(pid=process.pid, refused=refused, unchanged=before == after,
                lock_text=lock_text, stale_lock_left=stale, resumed=resumed)


# ---- a full disk ------------------------------------------------------------------------
def fill(mount_point):
    """Writes a ballast file until the filesystem is full."""
    chunk = b"\0" * (1 << 20)
    with open(os.path.join(mount_point, "ballast"), "wb", buffering=0) as stream:
        while True:
            try:
                stream.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                break
    return True


def full_disk_in_round_2(mount_point):
    run_dir = os.path.join(mount_point, "run")
    extra = ["--checkpoint_every=50"]
    process = subprocess.Popen(_command(run_dir, extra), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    try:
        while not mid_round_2(run_dir):
            assert process.poll() is None, "the run ended before the disk was filled"
            assert time.time() < deadline
            time.sleep(0.005)
        fill(mount_point)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    left = dict(returncode=process.returncode, stdout=stdout, stderr=stderr,
                temporaries=temporaries(run_dir),
                round_1_done=os.path.exists(os.path.join(run_dir, "round_001", "DONE")),
                round_2_done=os.path.exists(os.path.join(run_dir, "round_002", "DONE")))
    try:
        assert_every_file_readable(run_dir)
        left["readable"] = True
    except Exception as error:  # reported by the test, after the resume
        left["readable"] = f"{type(error).__name__}: {error}"
    subprocess.run(["mount", "-o", "remount,size=256m", mount_point], check=True)
    left["resumed"] = run(run_dir, "--resume", *extra)
    left["run_dir"] = run_dir
    return left


@pytest.fixture(scope="module")
def small_tmpfs(tmp_path_factory):
    """A 64 MiB tmpfs (a run needs about 20); skipped where mounting is not permitted."""
    mount_point = str(tmp_path_factory.mktemp("tmpfs"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mount_point],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})")
    yield mount_point
    subprocess.run(["umount", "-l", mount_point], capture_output=True)


# ---- the runs --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def waves(tmp_path_factory, small_tmpfs):
    root = tmp_path_factory.mktemp("cluster")
    d = {name: str(root / name) for name in (
        "reference", "sigterm", "supermask_reference", "sigint_supermask", "twice", "second",
        "live")}
    jobs = {
        "reference": lambda: run(d["reference"]),
        "supermask_reference": lambda: run(d["supermask_reference"], flags=SUPERMASK_FLAGS),
        "sigterm": lambda: run_and_signal(d["sigterm"], mid_round_2, 2),
        "sigint_supermask": lambda: run_and_signal(
            d["sigint_supermask"], supermask_mid_round, 0, (signal.SIGINT,), SUPERMASK_FLAGS),
        "twice": lambda: run_and_signal(d["twice"], mid_round_2, 2,
                                        (signal.SIGTERM, signal.SIGTERM)),
        "second": lambda: run_and_signal(d["second"], round_0_started, 0,
                                         (signal.SIGTERM, signal.SIGTERM), apart_s=1.2),
        "live": lambda: second_process_on_a_live_run(d["live"]),
        "full_disk": lambda: full_disk_in_round_2(small_tmpfs),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        first = {name: future.result() for name, future in futures.items()}
    for name in ("reference", "supermask_reference"):
        assert first[name][0] == 0, first[name][2][-3000:]
    stopped = {}  # what the signals left, before the resumes change it
    for name, round_index in (("sigterm", 2), ("sigint_supermask", 0), ("twice", 2),
                              ("second", 0)):
        folder = os.path.join(d[name], f"round_{round_index:03d}")
        state_path = os.path.join(folder, "checkpoint", "state.json")
        stopped[name] = dict(
            state=read_json(state_path) if os.path.exists(state_path) else None,
            metrics=[json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))
                     if line.strip()] if metrics_lines(d[name], round_index) else [],
            done=os.path.exists(os.path.join(folder, "DONE")),
            temporaries=temporaries(d[name]))
        try:
            assert_every_file_readable(d[name])
            stopped[name]["readable"] = True
        except Exception as error:
            stopped[name]["readable"] = f"{type(error).__name__}: {error}"
    resumes = {
        "sigterm": lambda: run(d["sigterm"], "--resume"),
        "sigint_supermask": lambda: run(d["sigint_supermask"], "--resume",
                                        flags=SUPERMASK_FLAGS),
        "second": lambda: run(d["second"], "--resume"),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(job) for name, job in resumes.items()}
        second = {name: future.result() for name, future in futures.items()}
    return dict(dirs=d, first=first, stopped=stopped, resumed=second)


# ---- 1. signals ------------------------------------------------------------------------
def _check_stopped(waves, name, status, round_index):
    returncode, output, seconds, seen, _ = waves["first"][name]
    assert "Traceback" not in output, output[-3000:]
    assert returncode == status, (returncode, output[-3000:])
    assert seconds < SIGNAL_TO_EXIT_S, f"{seconds:.1f} s from the signal to the exit"
    stopped = waves["stopped"][name]
    assert not stopped["done"] and stopped["readable"] is True, stopped
    state = stopped["state"]
    assert state is not None, "no in-round checkpoint was written"
    iteration = state["iteration"]
    # Nothing evaluated before the signal was lost (at most the compiled call in progress
    # when it arrived, which the loop finishes and keeps), and the round was not over.
    assert seen <= iteration < 200, (seen, iteration)
    assert [record["iteration"] for record in stopped["metrics"]] == \
        [record["iteration"] for record in state["history"]]
    assert stopped["metrics"][-1]["iteration"] <= iteration
    print(f"{name}: exit {returncode} {seconds:.2f} s after the signal; last evaluation "
          f"seen at iteration {seen}, checkpoint at iteration {iteration}")
    lines = [line for line in output.splitlines() if line.startswith("stopped by")]
    expected = f"stopped by {signal.Signals(status - 128).name} at round {round_index}, " \
               f"iteration {iteration}; resume with --resume"
    assert lines == [expected], output[-2000:]
    return iteration


def test_sigterm_in_round_2_checkpoints_exits_143_and_resume_is_bitwise_equal(waves):
    iteration = _check_stopped(waves, "sigterm", 143, 2)
    returncode, stdout, stderr = waves["resumed"]["sigterm"]
    assert returncode == 0, stderr[-3000:]
    assert "round 1: already complete, skipped" in stdout
    assert f"round 2: resuming at iteration {iteration}" in stdout
    dirs = waves["dirs"]
    assert assert_same_run(dirs["reference"], dirs["sigterm"]) == 12
    assert temporaries(dirs["sigterm"]) == []


def test_sigint_in_a_learned_supermask_round_exits_130_and_resume_is_bitwise_equal(waves):
    iteration = _check_stopped(waves, "sigint_supermask", 130, 0)
    returncode, stdout, stderr = waves["resumed"]["sigint_supermask"]
    assert returncode == 0, stderr[-3000:]
    assert f"round 0: resuming at iteration {iteration}" in stdout
    dirs = waves["dirs"]
    assert_same_round(dirs["supermask_reference"], dirs["sigint_supermask"])
    record = read_json(os.path.join(dirs["sigint_supermask"], "round_000", "record.json"))
    assert "test_accuracy_expected_mask" in record  # a learned supermask round, finished


def test_two_signals_back_to_back_are_one_request_and_one_checkpointed_stop(waves):
    iteration = _check_stopped(waves, "twice", 143, 2)
    assert iteration >= 25


def test_a_second_signal_exits_at_once_and_leaves_whole_files(waves):
    returncode, output, seconds, _, alive = waves["first"]["second"]
    if not alive:
        pytest.skip("round 0 compiled within 1.2 s, so the first signal already stopped it")
    assert returncode == 143, output[-3000:]
    print(f"second signal: exit {returncode} {seconds:.2f} s after it")
    assert seconds < 2.0, f"{seconds:.1f} s from the second signal to the exit"
    assert "stopped by" not in output  # no checkpoint: it did not wait for the call
    stopped = waves["stopped"]["second"]
    assert not stopped["done"] and stopped["readable"] is True, stopped
    returncode, stdout, stderr = waves["resumed"]["second"]
    assert returncode == 0, stderr[-3000:]
    dirs = waves["dirs"]
    assert assert_same_run(dirs["reference"], dirs["second"]) == 12
    assert temporaries(dirs["second"]) == []  # whatever the exit cut short is cleaned up


def _sweep_flags(source_run):
    return ["--experiment=untrained_supermask", "--dataset=synthetic_mnist",
            f"--source_run={source_run}", "--criterion=large_final,random",
            "--prune_levels=0,1,2,3,4,5,6,7", "--seed=7", "--deterministic", "--noprogress"]


def _masks_lines(run_dir):
    path = os.path.join(run_dir, "masks.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as stream:
        return sum(1 for line in stream if line.strip())


@pytest.fixture(scope="module")
def sweep(waves, tmp_path_factory):
    """An untrained sweep (48 evaluations on the reference run's weights) uninterrupted,
    and one stopped by SIGTERM after 10 records, then resumed."""
    root = tmp_path_factory.mktemp("sweep")
    flags = _sweep_flags(waves["dirs"]["reference"])
    reference, stopped = str(root / "reference"), str(root / "stopped")
    jobs = {"reference": lambda: run(reference, flags=flags),
            "stopped": lambda: _signal_sweep(stopped, flags)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        outcome = {name: future.result() for name, future in futures.items()}
    assert outcome["reference"][0] == 0, outcome["reference"][2][-3000:]
    with open(os.path.join(stopped, "masks.jsonl"), encoding="utf-8") as stream:
        left = stream.read()
    outcome["resumed"] = run(stopped, "--resume", flags=flags)
    return dict(reference=reference, stopped=stopped, outcome=outcome, left=left)


def _signal_sweep(run_dir, flags):
    process = subprocess.Popen(_train_command(run_dir, flags), cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 400
    try:
        while _masks_lines(run_dir) < 10:
            assert process.poll() is None, "the sweep ended before the signal"
            assert time.time() < deadline
            time.sleep(0.005)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0].decode(errors="replace")
    return process.returncode, output, seconds


def test_sigterm_in_an_untrained_sweep_stops_between_records_and_resume_gives_the_same(sweep):
    returncode, output, seconds = sweep["outcome"]["stopped"]
    assert returncode == 143 and seconds < SIGNAL_TO_EXIT_S, (returncode, seconds, output[-2000:])
    lines = [line for line in output.splitlines() if line.startswith("stopped by")]
    records = [json.loads(line) for line in sweep["left"].splitlines()]  # every line whole
    assert 10 <= len(records) < 48
    assert lines == [f"stopped by SIGTERM at untrained sweep evaluation {len(records) + 1} "
                     "of 48; resume with --resume"], output[-2000:]
    returncode, stdout, stderr = sweep["outcome"]["resumed"]
    assert returncode == 0, stderr[-3000:]
    with open(os.path.join(sweep["reference"], "masks.jsonl"), "rb") as a, \
            open(os.path.join(sweep["stopped"], "masks.jsonl"), "rb") as b:
        assert a.read() == b.read()
    masks = read_json(os.path.join(sweep["stopped"], "results.json"))["masks"]
    assert len(masks) == 48 and masks == read_json(
        os.path.join(sweep["reference"], "results.json"))["masks"]


# ---- 2. one process per run directory --------------------------------------------------
def test_a_second_process_on_a_live_run_is_refused_naming_the_pid(waves):
    live = waves["first"]["live"]
    pid = live["pid"]
    assert live["lock_text"].strip() == str(pid)
    for name, (returncode, stdout, stderr) in live["refused"].items():
        assert "Traceback" not in stderr, (name, stderr[-3000:])
        assert returncode == 2, (name, returncode, stderr[-2000:])
        line = last_error_line(stderr)
        assert line.startswith("error: ") and f"in use by process {pid}" in line, (name, line)
    assert live["unchanged"], "a refused command changed the live run's folder"


def test_a_stale_lock_of_a_killed_run_never_blocks_and_the_run_completes(waves):
    live = waves["first"]["live"]
    assert live["stale_lock_left"]  # SIGKILL left the lock file; the kernel let go of it
    returncode, stdout, stderr = live["resumed"]
    assert returncode == 0, stderr[-3000:]
    dirs = waves["dirs"]
    assert assert_same_run(dirs["reference"], dirs["live"]) == 12
    assert not os.path.exists(os.path.join(dirs["live"], ".lock"))  # removed at a clean exit


# ---- 3. a full disk --------------------------------------------------------------------
def test_a_full_disk_in_round_2_exits_3_naming_the_file_and_resume_is_bitwise_equal(waves):
    left = waves["first"]["full_disk"]
    run_dir = left["run_dir"]
    assert "Traceback" not in left["stderr"], left["stderr"][-3000:]
    assert left["returncode"] == 3, (left["returncode"], left["stderr"][-3000:])
    line = last_error_line(left["stderr"])
    match = re.match(r"error: disk full: writing (\S+) failed \(No space left on device\)",
                     line)
    assert match and match.group(1).startswith(run_dir + os.sep), line
    assert left["round_1_done"] and not left["round_2_done"]  # it filled during round 2
    assert left["readable"] is True, left["readable"]
    assert left["temporaries"] == []
    returncode, stdout, stderr = left["resumed"]
    assert returncode == 0, stderr[-3000:]
    assert "round 1: already complete, skipped" in stdout
    assert assert_same_run(waves["dirs"]["reference"], run_dir) == 12
    assert temporaries(run_dir) == []


# ---- the pieces, in this process ---------------------------------------------------------
def test_preempted_names_the_signal_round_and_iteration_and_its_exit_status():
    from tf_lth.core import preemption

    error = preemption.Preempted(signal.SIGTERM, round_index=2, iteration=340)
    assert (error.signum, error.exit_code) == (15, 143)
    assert str(error) == "stopped by SIGTERM at round 2, iteration 340; resume with --resume"
    assert preemption.Preempted(signal.SIGINT).exit_code == 130


def test_a_failed_write_on_a_full_disk_names_the_target_and_leaves_no_temporary(
        tmp_path, monkeypatch):
    from tf_lth.core import run_files

    path = str(tmp_path / "record.json")
    run_files.write_json(path, {"a": 1})

    def full(_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(run_files.DiskFullError) as caught:
        run_files.write_json(path, {"a": 2})
    assert caught.value.filename == path
    assert run_files.disk_full(caught.value) == (path, os.strerror(errno.ENOSPC))
    assert os.listdir(tmp_path) == ["record.json"] and run_files.read_json(path) == {"a": 1}


def test_the_lock_is_refused_to_a_second_process_and_released_at_its_exit(tmp_path):
    from tf_lth.core import run_lock

    run_dir = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from tf_lth.core import run_lock; "
         f"run_lock.acquire({run_dir!r}); print('held', flush=True); time.sleep(600)"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_lock.holder(run_dir) == holder.pid
        with pytest.raises(run_lock.RunInUseError, match=f"in use by process {holder.pid}"):
            run_lock.acquire(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert run_lock.holder(run_dir) is None  # killed: the kernel released its lock
    run_lock.acquire(run_dir)
    try:
        assert run_lock.holds(run_dir)
        with open(os.path.join(run_dir, ".lock")) as stream:
            assert stream.read().strip() == str(os.getpid())
    finally:
        run_lock.release(run_dir)
    assert os.listdir(run_dir) == []
