"""`python -m tf_lth.reproduce --preset=mnist_fc` (`make reproduce`): the paper, re-run.

CLI layer. Runs the experiments of "Deconstructing Lottery Tickets" (Zhou et al. 2019) at a
budget that fits the machine, each as its own `python -m tf_lth.train` run directory, then
writes docs/RESULTS.md: per figure of the paper, our plot and numbers beside the paper's,
the budget used, what differs from the paper's protocol, and each qualitative claim marked
reproduced or not, computed from the numbers.

- Resumable: a finished sub-run is skipped, an unfinished one continues with `--resume`
  (runs skip completed rounds). Run the same command again after an interruption.
- A sub-run that fails (e.g. the tfmot baseline where tensorflow-model-optimization is
  missing) is recorded as failed with its error, and the report says so; the rest go on.
  One none of whose files changed for 15 minutes (or its estimate, if longer) is taken as
  hung and killed, however long it has run; the next invocation resumes it.
- While it runs, a line per finished sub-run gives the elapsed time and the time left for
  the whole plan (the plan's estimates, corrected by the measured speed).
- `--report_only` regenerates RESULTS.md and the figures from the run directories.
- `--plan` prints the sub-runs and the time estimate and exits; `--plan --commands` prints
  one self-contained command per sub-run instead (for a scheduler; `--commands=1` those that
  need no other sub-run, `--commands=2` the rest), and `--report_only` collects them.

Budgets: `default` (MNIST fc: as many epochs per round as the plan's estimate fits in 90
minutes on 2 CPU cores with --jobs=2, at least 4; 3 seeds of dense and large_final),
`smoke` (a few minutes: checks the whole pipeline, numbers meaningless), `paper` (the
paper's iterations per round and rounds).
Presets: mnist_fc, and cifar10_conv2 / conv4 / conv6 where CIFAR-10 and a GPU exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import threading
import time

from tf_lth.core import preemption, run_files
from tf_lth.cli.reproduce import ROOT, archive
from tf_lth.cli.reproduce.execute import code_commit, now, run_all, scheduler_lines
from tf_lth.cli.reproduce.paper import BUDGETS, PRESETS, budget_for, budget_from_dict
from tf_lth.cli.reproduce.plan import BASELINE, SECTIONS, format_plan, plan, total_estimate
from tf_lth.cli.reproduce.report import default_page_path, report


def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _prepared(dataset: str, data_dir: str | None) -> bool:
    folder = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
        "~/tensorflow_datasets")
    return os.path.isdir(os.path.join(folder, dataset))


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m tf_lth.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = result.add_argument
    add("--preset", default="mnist_fc", choices=sorted(PRESETS))
    add("--budget", default="default", choices=list(BUDGETS))
    add("--out_dir", default=None,
        help="where the run directories go (default runs/reproduce/PRESET[_BUDGET])")
    add("--results", default=None,
        help="the Markdown report (default docs/RESULTS.md for mnist_fc at the default budget, "
             "docs/RESULTS_PRESET.md for other presets, OUT_DIR/RESULTS.md for other budgets)")
    add("--figures_dir", default=None,
        help="PNG figures (default docs/figures, or OUT_DIR/figures)")
    add("--dataset", default=None,
        help="override the preset's dataset (e.g. synthetic_mnist for a check)")
    add("--data_dir", default=None, help="tfds data (default TFDS_DATA_DIR)")
    add("--seed", type=int, default=0)
    add("--only", default="",
        help=f"comma-separated sections to run: {', '.join(SECTIONS)} (the report covers all)")
    add("--epochs", type=float, default=None,
        help="override the budget's epochs per lottery round")
    add("--jobs", type=int, default=1, help="sub-runs at once (each gets cores/jobs threads)")
    add("--plan", action="store_true", help="print the plan and exit")
    add("--commands", nargs="?", const="all", default=None, choices=("all", "1", "2"),
        help="with --plan: print one command per sub-run (1: those that need no other "
             "sub-run; 2: the rest, after 1 finished), nothing else")
    add("--run", default="", help="comma-separated sub-run names: run only these, no report "
                                  "(what --commands prints for exports)")
    add("--archive", default=None, metavar="DIR",
        help="also keep each finished sub-run's results (tens of KB, no weights) in DIR, and "
             "count a sub-run archived there with the same flags as finished: a reproduction "
             "then outlives its run directories (a new machine, a cleaned disk). The report "
             "reads archived sub-runs from DIR, and its wall time adds up every invocation "
             "recorded there")
    add("--report_only", action="store_true",
        help="regenerate the report from existing runs; train nothing")
    add("--force", action="store_true",
        help="run a CIFAR-10 preset without a GPU or prepared data")
    return result


def _paths(arguments, preset: str, budget_name: str) -> tuple:
    """(out_dir, results path, figures folder) from the flags and their defaults."""
    suffix = "" if budget_name == "default" else f"_{budget_name}"
    out_dir = os.path.abspath(arguments.out_dir or os.path.join(ROOT, "runs", "reproduce",
                                                                preset + suffix))
    if arguments.results:
        results_path = arguments.results
    elif budget_name == "default":
        results_path = default_page_path(preset)
    else:
        results_path = os.path.join(out_dir, "RESULTS.md")
    figures_dir = arguments.figures_dir or (os.path.join(ROOT, "docs", "figures")
                                            if budget_name == "default"
                                            else os.path.join(out_dir, "figures"))
    return out_dir, results_path, figures_dir


def _cifar_problems(arguments, dataset: str, gpu: bool) -> list:
    """Why a CIFAR-10 preset cannot train here (empty when it can, or when not asked to)."""
    if arguments.report_only or dataset != "cifar10" or arguments.force:
        return []
    problems = [] if gpu else ["no GPU found (nvidia-smi)"]
    if not _prepared(dataset, arguments.data_dir):
        problems.append("CIFAR-10 is not prepared in TFDS_DATA_DIR/--data_dir")
    return problems


def _unknown_sections(text: str, only: list) -> bool:
    """Says so (on stderr) when --only names a section that does not exist."""
    unknown = [item for item in only if item not in SECTIONS]
    if unknown:
        sys.stderr.write(f"error: --only={text!r}: unknown {unknown}; allowed: "
                         f"{', '.join(sorted(SECTIONS))}.\n")
    return bool(unknown)


def _bad_archive(arguments) -> bool:
    """Says so (on stderr) when --archive names something other than a folder."""
    if not arguments.archive:
        return False
    if os.path.exists(arguments.archive) and not os.path.isdir(arguments.archive):
        sys.stderr.write(f"error: --archive={arguments.archive} is a file; allowed: a folder "
                         "(created if missing) for the finished sub-runs' results.\n")
        return True
    arguments.archive = os.path.abspath(arguments.archive)
    return False


def _machine(gpu: bool) -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {'GPU' if gpu else 'no GPU'}, "
            f"Python {platform.python_version()}")


def _selected(runs: list, only: list) -> list:
    """The sub-runs of the --only sections (all when empty), the baseline, and what they need."""
    def baseline(name):  # every seed of it: the dense numbers and the ticket use them all
        return name == BASELINE or name.startswith(BASELINE + "_seed")

    selected = [run for run in runs if not only or run.figure in only or baseline(run.name)]
    needed = {dep for run in selected for dep in run.depends}
    return [run for run in runs if run in selected or run.name in needed]


def _train(arguments, runs: list, only: list, out_dir: str, state: dict,
           state_path: str) -> None:
    # SIGTERM and SIGINT are passed on to the running sub-runs, which checkpoint and stop,
    # not orphaned; the next invocation resumes them (tf_lth/cli/reproduce/execute.py).
    preemption.install()
    state.setdefault("started", now())
    state["jobs"] = arguments.jobs
    started = time.time()
    earlier_s = state.get("wall_seconds", 0.0)
    record = _invocation_recorder(arguments, out_dir, state, earlier_s, started)
    record(ended=False)
    stop = threading.Event()
    if arguments.archive:  # a sub-run can take hours: the wall time is also kept as it goes
        threading.Thread(target=_heartbeat, args=(stop, record), daemon=True).start()
    try:
        run_all(_selected(runs, only), out_dir, arguments.data_dir, state, state_path,
                arguments.jobs, archive_dir=arguments.archive,
                on_save=lambda: record(ended=False))
    finally:  # a stopped invocation's wall time counts too (the report sums them)
        stop.set()
        state["last_session_seconds"] = time.time() - started
        state["wall_seconds"] = earlier_s + state["last_session_seconds"]
        run_files.write_json(state_path, state)
        record(ended=True, seconds=state["last_session_seconds"])


INVOCATION_HEARTBEAT_S = 300.0


def _heartbeat(stop: threading.Event, record) -> None:
    """Rewrites the invocation's wall time every INVOCATION_HEARTBEAT_S until `stop`."""
    while not stop.wait(INVOCATION_HEARTBEAT_S):
        record(ended=False)


def _invocation_recorder(arguments, out_dir: str, state: dict, earlier_s: float,
                         started: float):
    """A function that writes this invocation's wall time so far into the archive (nothing
    without --archive): at the start, whenever a sub-run ends, and at the end. The first
    invocation there also brings the wall time of this out_dir's earlier invocations (run
    before --archive was given)."""
    if not arguments.archive:
        return lambda ended, seconds=None: None
    earlier = []
    if earlier_s and not archive.invocations(arguments.archive):
        earlier.append({"seconds": earlier_s, "out_dir": out_dir,
                        "what": "earlier invocations on this out_dir, before the archive"})
    identity = f"{platform.node() or 'unknown'}:{os.getpid()}:{started:.3f}"
    lock = threading.Lock()  # the heartbeat and the sub-runs' threads both record

    def record(ended: bool, seconds: float | None = None) -> None:
        with lock:
            _record(ended, seconds)

    def _record(ended: bool, seconds: float | None) -> None:
        entry = {"id": identity,
                 "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                 "seconds": time.time() - started if seconds is None else seconds,
                 "ended": ended, "jobs": arguments.jobs, "commit": code_commit(),
                 "machine": state.get("machine"), "out_dir": out_dir}
        try:
            while earlier:
                archive.add_invocation(arguments.archive, earlier.pop(0))
            archive.add_invocation(arguments.archive, entry)
        except OSError as error:
            sys.stderr.write(f"warning: --archive={arguments.archive}: the wall time was not "
                             f"recorded ({error.strerror or error})\n")
    return record


def _reproduce_args(arguments, out_dir: str) -> list:
    """The flags that make another `tf_lth.reproduce` invocation plan the same sub-runs."""
    args = [f"--preset={arguments.preset}", f"--budget={arguments.budget}",
            f"--out_dir={out_dir}", f"--seed={arguments.seed}"]
    for name in ("dataset", "data_dir", "epochs"):
        if getattr(arguments, name):
            args.append(f"--{name}={getattr(arguments, name)}")
    return args


def main(argv=None) -> int:
    arguments = parser().parse_args(argv)
    preset = arguments.preset
    budget = budget_for(preset, arguments.budget)
    if arguments.epochs:
        if not arguments.epochs > 0:
            sys.stderr.write(f"error: --epochs={arguments.epochs}; allowed: a positive number.\n")
            return 2
        budget = dataclasses.replace(budget, epochs=arguments.epochs, iterations=None)
    dataset = arguments.dataset or PRESETS[preset].dataset
    gpu = _has_gpu()
    out_dir, results_path, figures_dir = _paths(arguments, preset, budget.name)
    runs = plan(preset, budget, dataset, arguments.seed, gpu)
    only = [item for item in arguments.only.split(",") if item]
    if _unknown_sections(arguments.only, only) or _bad_archive(arguments):
        return 2
    if arguments.plan and arguments.commands:
        print("\n".join(scheduler_lines(runs, out_dir, arguments.data_dir, arguments.commands,
                                         _reproduce_args(arguments, out_dir))))
        return 0
    print(format_plan(preset, budget, runs, out_dir), flush=True)
    if arguments.plan:
        return 0
    problems = _cifar_problems(arguments, dataset, gpu)
    if problems:
        sys.stderr.write(f"error: --preset={preset} needs CIFAR-10 and a GPU: "
                         f"{'; '.join(problems)}. Pass --force to run anyway (tfds downloads "
                         "CIFAR-10 where the network allows), or --dataset=synthetic for a "
                         "pipeline check.\n")
        return 2
    os.makedirs(out_dir, exist_ok=True)
    state_path = os.path.join(out_dir, "reproduce.json")
    state = run_files.read_json_or_none(state_path) or {}
    if arguments.report_only and not arguments.epochs and state.get("budget") == budget.name:
        budget = budget_from_dict(state.get("budget_detail")) or budget  # as it was run
        runs = plan(preset, budget, dataset, arguments.seed, gpu)
    tfds = " (tfds)" if dataset in ("mnist", "cifar10") else ""
    state.update(preset=preset, budget=budget.name, budget_detail=dataclasses.asdict(budget),
                 seed=arguments.seed, dataset=dataset + tfds, machine=_machine(gpu),
                 plan_estimate_s=total_estimate(runs))
    if arguments.run:
        names = [name for name in arguments.run.split(",") if name]
        unknown = [name for name in names if name not in {run.name for run in runs}]
        if unknown:
            sys.stderr.write(f"error: --run: unknown sub-runs {unknown}; allowed: the names "
                             "--plan prints.\n")
            return 2
        preemption.install()
        chosen = [run for run in runs if run.name in names or any(
            run.name in other.depends for other in runs if other.name in names)]
        status = run_all(chosen, out_dir, arguments.data_dir, state, state_path, 1,
                         archive_dir=arguments.archive)
        return 0 if all(status.get(name, {}).get("status") == "done" for name in names) else 1
    if not arguments.report_only:
        _train(arguments, runs, only, out_dir, state, state_path)
    report(preset, budget, runs, out_dir, results_path, figures_dir, state, tuple(only),
           archive_dir=arguments.archive)
    archived, _ = archive.load(arguments.archive, runs)
    failed = [name for name, record in state.get("sub_runs", {}).items()
              if record.get("status") != "done" and name not in archived]
    print(f"report: {results_path}" + (f" ({len(failed)} sub-runs not complete: "
                                       f"{', '.join(failed)})" if failed else ""))
    return 0
