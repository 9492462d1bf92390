"""Running the plan: each sub-run as a `tf_lth.train` / `tf_lth.export` subprocess.

Resumable: a complete sub-run is skipped, an unfinished one continues with `--resume`.
A failed sub-run is recorded with its error and the rest go on. After each sub-run a line
gives the progress of the whole plan and the time left (`Progress`). Once the CLI has
installed `tf_lth.core.preemption`, SIGTERM or SIGINT is passed on to the running sub-runs,
which checkpoint and stop; no further sub-run starts, and the command exits with 143 or
130 (the next invocation resumes).
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import threading
import time

from tf_lth.core import preemption, run_files
from tf_lth.cli.reproduce import ROOT, archive
from tf_lth.cli.reproduce.plan import SubRun, duration, minutes, total_estimate


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def command(run: SubRun, out_dir: str, data_dir: str | None, resume: bool | None = None,
            python: str = sys.executable) -> list:
    """The sub-run's command line; `--resume` where its run directory exists (or always,
    with resume=True: a fresh directory accepts it too)."""
    flags = {key: (value.format(out_dir=out_dir) if isinstance(value, str) else value)
             for key, value in run.flags.items()}
    if run.kind == "export":
        return [python, "-m", "tf_lth.export"] + [
            f"--{key}={value}" for key, value in flags.items()]
    run_dir = run.run_dir(out_dir)
    args = [python, "-m", "tf_lth.train"] + [_flag(k, v) for k, v in flags.items()]
    args += [f"--run_dir={run_dir}", "--noprogress"]
    if data_dir:
        args.append(f"--data_dir={data_dir}")
    if resume or (resume is None and os.path.exists(os.path.join(run_dir, "config.json"))):
        args.append("--resume")
    return args


def scheduler_lines(runs: list, out_dir: str, data_dir: str | None, stage: str,
                    reproduce_args: list) -> list:
    """One self-contained shell line per sub-run, for a scheduler (a Slurm job array):
    `python -m tf_lth.train ... --resume` for training sub-runs; an export runs through
    `python -m tf_lth.reproduce REPRODUCE_ARGS --run=NAME`, which also records it for the
    report. stage "1": sub-runs that need no other; "2": those that need stage 1; "all"."""
    lines = []
    for run in runs:
        if stage == "1" and run.depends or stage == "2" and not run.depends:
            continue
        if run.kind == "export":
            args = ["python", "-m", "tf_lth.reproduce"] + reproduce_args + [f"--run={run.name}"]
        else:
            args = command(run, out_dir, data_dir, resume=True, python="python")
        lines.append(shlex.join(args))
    return lines


def is_complete(run: SubRun, out_dir: str) -> bool:
    run_dir = run.run_dir(out_dir)
    done = os.path.join(run_dir, f"round_{run.rounds:03d}", "DONE")
    results = os.path.join(run_dir, "results.json")
    if run.kind == "lottery":
        return os.path.exists(done)
    if run.kind in ("learned", "tfmot", "sparse"):  # learned and sparse: round 0
        return os.path.exists(done) and os.path.exists(results)
    if run.kind == "untrained":
        masks = (run_files.read_json_or_none(results) or {}).get("masks") or []
        expected = 1
        for flag in ("prune_levels", "criterion", "weight_treatments"):
            expected *= len(run.flags[flag].split(","))
        return len(masks) >= expected
    if run.kind == "export":
        marker = run_files.read_json_or_none(run.export_marker(out_dir)) or {}
        report = os.path.join(run_dir, "export", "export_report.json")
        return marker.get("round") == run.export_round and os.path.exists(report)
    raise ValueError(run.kind)


def _chatter(text: str) -> bool:
    """TensorFlow's and absl's start-up lines (oneDNN, CUDA, log initialisation)."""
    return text[:5] in ("I0000", "W0000", "E0000") or text.startswith("WARNING")


def _worth_showing(text: str) -> bool:
    """The child's per-round results and errors, not TensorFlow's start-up chatter."""
    if not text or _chatter(text):
        return False
    return (text.startswith("round ") and "test accuracy" in text) or \
        text.startswith(("learned supermask:", "error", "level ", "untrained supermasks:",
                         "tflite", "exporting", "saved_model")) or "level 24:" in text


def _tail(path: str, lines: int = 6, limit: int = 600) -> str:
    """The last lines the latest invocation in the sub-run's log wrote (its errors if any),
    whole lines only, at most `limit` characters."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            content = [line.rstrip() for line in stream]
    except OSError:
        return ""
    starts = [index for index, line in enumerate(content) if line.startswith("$ ")]
    content = [line for line in content[starts[-1] + 1 if starts else 0:]
               if line.strip() and not _chatter(line.strip())]
    errors = [line for line in content if line.startswith("error")]
    picked = errors[-2:] if errors else content[-lines:]
    while len(picked) > 1 and len(" | ".join(picked)) > limit:
        picked = picked[1:]
    return " | ".join(picked)[-limit:]


def _environment(threads: int | None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    if threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def code_commit(root: str = ROOT) -> str:
    """The git commit of the code that runs the sub-runs ('unknown' outside a checkout),
    with '+changes' when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--",
                                "tf_lth", "trainers", "export"], capture_output=True,
                               text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip()[:12] + ("+changes" if dirty.stdout.strip() else "")


def _log_path(run: SubRun, out_dir: str) -> str:
    if run.kind == "export":
        return os.path.join(out_dir, "export", f"{run.name.split('/')[-1]}.log")
    return run.run_dir(out_dir) + ".log"


def _stream(process, stream, run: SubRun, log) -> int:
    """Copies the child's output to its log file, shows the lines worth showing, waits."""
    try:
        for line in process.stdout:
            stream.write(line)
            if _worth_showing(line.strip()):
                log(f"    {run.name}: {line.strip()}")
        return process.wait()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the child too
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


def latest_change(paths) -> float:
    """The newest modification time of the files at or under `paths` (0 when none)."""
    latest = 0.0
    for path in paths:
        found = [path] if os.path.isfile(path) else (
            os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names)
        for name in found:
            try:
                latest = max(latest, os.path.getmtime(name))
            except OSError:  # removed meanwhile (an atomic rename's temp file)
                pass
    return latest


class Watchdog:
    """Kills a sub-run none of whose files (its run directory, its log) changed for
    `stall_s` seconds: hung, not merely slow on a shared machine. Every sub-run writes an
    evaluation line, a record or a checkpoint within minutes of its own work; a wall-clock
    limit would instead kill a healthy paper-budget run that other work slowed down."""

    def __init__(self, process, paths, stall_s: float, poll_s: float = 30.0,
                 clock=time.time):
        self.process, self.paths, self.stall_s = process, list(paths), stall_s
        self.poll_s, self.clock = poll_s, clock
        self.started = clock()
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def quiet_s(self) -> float:
        return self.clock() - max(self.started, latest_change(self.paths))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.quiet_s() > self.stall_s:
                self.fired = True
                self.process.kill()  # resumable: the run directory's checkpoint stays
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def execute(run: SubRun, out_dir: str, data_dir: str | None, log, threads: int | None,
            stall_s: float) -> dict:
    """Runs one sub-run in a subprocess; returns its status record."""
    log_path = _log_path(run, out_dir)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    args = command(run, out_dir, data_dir)
    started = time.time()
    with open(log_path, "a", encoding="utf-8") as stream:
        stream.write(f"\n$ {' '.join(args)}\n")
        stream.flush()
        process = subprocess.Popen(args, cwd=ROOT, env=_environment(threads),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1)
        with Watchdog(process, [run.run_dir(out_dir), log_path], stall_s) as watchdog:
            with preemption.forwarding(process.pid):  # the sub-run checkpoints and stops
                returncode = _stream(process, stream, run, log)
    seconds = time.time() - started
    stopped = returncode != 0 and preemption.requested()
    record = {"status": "done" if returncode == 0 else "stopped" if stopped else "failed",
              "returncode": returncode,
              "seconds": seconds, "log": os.path.relpath(log_path, out_dir),
              "estimate_s": run.estimate_s}
    if returncode == 0 and run.kind == "export":
        run_files.write_json(run.export_marker(out_dir), {"round": run.export_round})
    if returncode != 0:
        record["error"] = (f"stalled: no file of it changed for {minutes(stall_s)}, killed; "
                           if watchdog.fired else "") + \
            (_tail(log_path) or f"exit status {returncode}")
    return record


class Progress:
    """Progress of the whole plan and the time left.

    The time left is the plan's wall estimate for the sub-runs not yet finished (each as long
    as `duration` says with `jobs` sharing the cores), scaled by how long the sub-runs finished
    in this session took against those estimates (1 until one has finished), divided by the
    sub-runs running at once.
    """

    def __init__(self, runs: list, pending: list, jobs: int = 1, clock=time.time):
        self.total = len(runs)
        self.finished = len(runs) - len(pending)
        self.jobs = max(1, jobs)
        self.left_estimate_s = total_estimate(pending)
        self.left_wall_s = sum(duration(run, self.jobs) for run in pending)
        self.plan_estimate_s = total_estimate(runs)
        self.measured_s = 0.0
        self.measured_estimate_s = 0.0
        self.clock = clock
        self.started = clock()

    def finish(self, run: SubRun, record: dict) -> None:
        self.finished += 1
        self.left_estimate_s = max(0.0, self.left_estimate_s - run.estimate_s)
        self.left_wall_s = max(0.0, self.left_wall_s - duration(run, self.jobs))
        if record.get("status") == "done" and record.get("seconds") and run.estimate_s:
            self.measured_s += record["seconds"]
            self.measured_estimate_s += duration(run, self.jobs)

    def speed_factor(self) -> float:
        """Measured seconds per estimated second so far (1 before anything finished)."""
        return self.measured_s / self.measured_estimate_s if self.measured_estimate_s else 1.0

    def left_s(self) -> float:
        return self.speed_factor() * self.left_wall_s / self.jobs

    def summary(self) -> str:
        """Elapsed time, time left, and the share of the plan's estimated work done."""
        done = 1.0 - self.left_estimate_s / max(self.plan_estimate_s, 1e-9)
        return (f"elapsed {minutes(self.clock() - self.started)}, about "
                f"{minutes(self.left_s())} left (planned work done {100 * done:.0f}%)")

    def line(self, run: SubRun, record: dict) -> str:
        """'[12/28] NAME: done in 0.4 min; elapsed 14.0 min, about 31.0 min left (...)'."""
        note = f" ({record.get('error')})" if record.get("status") != "done" else ""
        return (f"[{self.finished}/{self.total}] {run.name}: {record.get('status')} in "
                f"{minutes(record.get('seconds', 0.0))}{note}; {self.summary()}")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _split_complete(runs: list, out_dir: str, status: dict, log,
                    archive_dir: str | None = None) -> list:
    """Marks complete sub-runs done (archiving those the archive lacks) and archived ones
    done, unless a sub-run they depend on runs again; returns the pending ones in plan
    order."""
    archived, stale = archive.load(archive_dir, runs)
    for name in stale:
        log(f"  {name}: its archived record has other flags than the plan's; it runs again")
    pending = []
    for run in runs:
        if is_complete(run, out_dir):
            status[run.name] = {**status.get(run.name, {}), "status": "done"}
            status[run.name].pop("error", None)
            status[run.name].pop("archived", None)
            if archive_dir and run.name not in archived:
                _archive(archive_dir, run, out_dir, status[run.name], log)
            log(f"  {run.name}: already complete, skipped")
        elif run.name in archived and not set(run.depends) & {item.name for item in pending}:
            status[run.name] = {**archived[run.name].get("status", {}), "status": "done",
                                "archived": True}
            log(f"  {run.name}: finished earlier, its results are in {archive_dir}; skipped")
        else:
            pending.append(run)
    return pending


def _archive(archive_dir: str, run: SubRun, out_dir: str, record: dict, log) -> None:
    try:
        if not archive.save(archive_dir, run, out_dir, record):
            log(f"  {run.name}: not archived: its results are missing from {out_dir}")
    except OSError as error:  # the run itself is fine; the next invocation tries again
        log(f"  {run.name}: not archived ({archive_dir}: {error.strerror or error})")


def whole_line_printer(stream=None):
    """A `log` that writes each message and its newline in one call under a lock, so that
    parallel jobs' lines never run into each other (print writes the two separately)."""
    lock = threading.Lock()

    def log(message: str) -> None:
        out = stream or sys.stdout
        with lock:
            out.write(f"{message}\n")
            out.flush()
    return log


def run_all(runs: list, out_dir: str, data_dir: str | None, state: dict, state_path: str,
            jobs: int = 1, log=None, archive_dir: str | None = None,
            on_save=None) -> dict:
    """Runs every pending sub-run (dependencies first); returns the status per sub-run.
    With `archive_dir`, each finished sub-run is archived there, and an archived one counts
    as finished (`tf_lth.cli.reproduce.archive`). `on_save` is called whenever the state
    is written (a sub-run ended)."""
    status = state.setdefault("sub_runs", {})
    lock = threading.Lock()
    log = log or whole_line_printer()
    pending = _split_complete(runs, out_dir, status, log, archive_dir)
    by_name = {run.name: run for run in runs}
    progress = Progress(runs, pending, jobs)
    log(f"{len(pending)} of {len(runs)} sub-runs to run, about "
        f"{minutes(progress.left_s())} by the plan's estimate")
    threads = None if jobs <= 1 else max(1, (os.cpu_count() or 2) // jobs)
    position = {run.name: index for index, run in enumerate(runs, 1)}

    def save():
        state["updated"] = now()
        run_files.write_json(state_path, state)
        if on_save:
            on_save()

    def work(run):
        if preemption.requested():
            return  # stopping: the sub-run stays pending for the next invocation
        missing = [dep for dep in run.depends if status.get(dep, {}).get("status") != "done"]
        weightless = [dep for dep in run.depends if status.get(dep, {}).get("archived")
                      and dep in by_name and not is_complete(by_name[dep], out_dir)]
        if missing:
            record = {"status": "skipped", "error": f"needs {', '.join(missing)}, which did "
                      "not complete", "estimate_s": run.estimate_s}
        elif weightless:
            record = {"status": "skipped", "estimate_s": run.estimate_s,
                      "error": f"needs the weights of {', '.join(weightless)}, whose run "
                      "directory is gone (only its results are archived); remove its record "
                      f"from {archive_dir} to train it again"}
        else:
            log(f"[{position[run.name]}/{len(runs)}] {run.name}: starting "
                f"(estimate {minutes(duration(run, jobs))} at --jobs={jobs})")
            try:
                record = execute(run, out_dir, data_dir, log, threads,
                                 max(900.0, run.estimate_s))
            except OSError as error:
                record = {"status": "failed", "error": f"could not start: {error}"}
            _carry_history(status.get(run.name, {}), record)
            record["jobs"] = jobs  # its estimate in the report is at the --jobs it ran with
            if archive_dir and record.get("status") == "done":
                _archive(archive_dir, run, out_dir, record, log)
        with lock:
            status[run.name] = record
            save()
            progress.finish(run, record)
            log(progress.line(run, record))

    if jobs <= 1:
        for run in pending:
            work(run)
    else:
        _run_parallel(pending, jobs, work)
    save()
    signum = preemption.requested()
    if signum:
        sys.stderr.write(f"stopped by {preemption.signal_name(signum)}: the running sub-runs "
                         "checkpointed; run the same command again to resume\n")
        raise SystemExit(128 + signum)
    return status


def _carry_history(earlier: dict, record: dict, commit: str | None = None) -> None:
    """Adds to a sub-run's new record the code commits it ran from (earlier invocations'
    and this one's, in order) and the seconds earlier invocations spent on it."""
    commits = list(earlier.get("commits", ()))
    commit = commit or code_commit()
    record["commits"] = commits + ([commit] if commit not in commits else [])
    if earlier.get("status") in ("stopped", "failed", "timed out"):
        record["seconds_before"] = earlier.get("seconds", 0.0) + \
            earlier.get("seconds_before", 0.0)


def _run_parallel(pending: list, jobs: int, work) -> None:
    """Up to `jobs` sub-runs at once, each started once its dependencies have finished."""
    remaining = list(pending)
    active = []
    while remaining or active:
        active = [thread for thread in active if thread.is_alive()]
        names_active = {thread.name for thread in active}
        for run in list(remaining):
            if len(active) >= jobs:
                break
            if any(dep in names_active or dep in {r.name for r in remaining}
                   for dep in run.depends):
                continue
            remaining.remove(run)
            thread = threading.Thread(target=work, args=(run,), name=run.name, daemon=True)
            thread.start()
            active.append(thread)
            names_active.add(run.name)  # a sub-run started now holds back its dependants
        time.sleep(0.5)
