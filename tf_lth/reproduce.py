"""`python -m tf_lth.reproduce --preset=mnist_fc` (`make reproduce`): the paper, re-run.

CLI layer. Runs the experiments of "Deconstructing Lottery Tickets" (Zhou et al. 2019) at a
budget that fits the machine, each as its own `python -m tf_lth.train` run directory, then
writes docs/RESULTS.md: per figure of the paper, our plot and numbers beside SPEC.md
section 8's, the budget used, what differs from the paper's protocol, and each qualitative
claim marked reproduced or not, computed from the numbers.

- Resumable: a finished sub-run is skipped, an unfinished one continues with `--resume`
  (runs skip completed rounds). Run the same command again after an interruption.
- A sub-run that fails (e.g. the tfmot baseline where tensorflow-model-optimization is
  missing) is recorded as failed with its error, and the report says so; the rest go on.
- `--report_only` regenerates RESULTS.md and the figures from the run directories.
- `--plan` prints the sub-runs and the time estimate and exits.

Budgets: `default` (MNIST fc: under 90 minutes on 2 CPU cores), `smoke` (a few minutes:
checks the whole pipeline, numbers meaningless), `paper` (the paper's epochs and rounds).
Presets: mnist_fc, and cifar10_conv2 / conv4 / conv6 where CIFAR-10 and a GPU exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# SPEC.md section 4, in the order of tf_lth.masks.CRITERIA (not imported: no NumPy/TF here
# until the report is drawn).
ALL_CRITERIA = (
    "large_final", "small_final", "large_init", "small_init", "large_init_large_final",
    "small_init_small_final", "magnitude_increase", "movement", "random",
    "large_final_same_sign", "large_final_diff_sign", "magnitude_increase_same_sign",
    "magnitude_increase_diff_sign", "snip", "grad",
)
# The paper's criteria figure, and SPEC.md section 8's 24-round list.
FIGURE_CRITERIA = (
    "large_final", "magnitude_increase", "large_final_same_sign", "movement",
    "large_init_large_final", "large_init", "random", "small_init", "small_final",
)
MASK_ONE_ACTIONS = ("reinit", "reshuffle", "constant",
                    "signed_reinit", "signed_reshuffle", "signed_constant")
MASK_ZERO_ACTIONS = ("freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all")
MASK_ZERO_NAMES = {"zero": "zero (lottery ticket)", "freeze_init": "freeze_init",
                   "freeze_init_zero_mask": "variant 1 (freeze_init_zero_mask)",
                   "freeze_init_zero_all": "variant 2 (freeze_init_zero_all)"}
BASELINE = "criteria/large_final"

# ---- the paper's numbers (SPEC.md section 8) -----------------------------------------------
PAPER = {
    "mnist_fc": {
        "dense": (97.9, "trained dense fc, test accuracy at the minimum validation loss (repro)"),
        "lottery": {  # weights remaining % -> test accuracy % (repro, large_final, iterative)
            51.3: 98.24, 16.9: 98.37, 7.0: 98.23, 3.6: 98.00, 1.9: 97.57},
        "criteria_24": {  # after 24 rounds, 0.5% remaining (repro)
            "magnitude_increase": 94.4, "large_final_same_sign": 95.0, "movement": 93.4,
            "large_init_large_final": 59.8, "large_init": 45.4, "random": 35.9,
            "small_init": 29.5, "small_final": 11.4},
        "untrained_signed_constant": (86.0, "abstract: large_final_same_sign mask, signed "
                                            "constants, best prune level"),
        "untrained_init": (80.0, "secondary, approx. (repro: 76.3% at 32.9% remaining)"),
        "learned_supermask": (95.3, "secondary (three write-ups)"),
    },
    "cifar10": {
        "untrained_signed_constant": (41.0, "abstract: best of conv2/4/6"),
        "untrained_init": (24.0, "secondary, approx."),
        "learned_supermask": {"conv4": (65.4, "secondary")},
        "learned_dynamic": {"conv2": (66.0, 69.2), "conv4": (72.5, 75.4),
                            "conv6": (76.5, 78.3)},
    },
}
CHANCE = 0.1  # ten classes in MNIST and CIFAR-10

# ---- presets, budgets and speeds -----------------------------------------------------------
PRESETS = {
    "mnist_fc": dict(dataset="mnist", arch="fc", learning_rate=1.2e-3, paper_epochs=55,
                     prune_rates="dense=0.2,output=0.1", train_size=55000),
    "cifar10_conv2": dict(dataset="cifar10", arch="conv2", learning_rate=2e-4, paper_epochs=27,
                          prune_rates="conv=0.1,dense=0.2,output=0.1", train_size=45000),
    "cifar10_conv4": dict(dataset="cifar10", arch="conv4", learning_rate=3e-4, paper_epochs=34,
                          prune_rates="conv=0.1,dense=0.2,output=0.1", train_size=45000),
    "cifar10_conv6": dict(dataset="cifar10", arch="conv6", learning_rate=3e-4, paper_epochs=40,
                          prune_rates="conv=0.15,dense=0.2,output=0.1", train_size=45000),
}
SYNTHETIC_TRAIN_SIZE = 2000  # trainers.load_data's synthetic datasets


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of the paper's protocol one reproduction runs."""

    name: str
    epochs: float | None          # per lottery round (None: iterations)
    iterations: int | None
    eval_every: int
    criteria: tuple
    criteria_rounds: int
    mask_one_rounds: int
    mask_zero_rounds: int
    block_rounds: int
    export_round: int             # the round whose 1x1 and 1x4 tickets are exported
    untrained_levels: tuple       # () = 0..24
    learned_epochs: float | None
    learned_iterations: int | None
    learned_eval_every: int
    learned_runs: tuple           # (name, extra flags)
    tfmot_levels: tuple
    eval_samples: int = 10
    mask_one_actions: tuple = MASK_ONE_ACTIONS
    mask_zero_actions: tuple = MASK_ZERO_ACTIONS

    def describe(self) -> str:
        per_round = (f"{self.epochs:g} epochs" if self.epochs else f"{self.iterations} iterations")
        return (f"{per_round} per round, evaluation every {self.eval_every} iterations; "
                f"criteria to {self.criteria_rounds} rounds, mask-1 actions to "
                f"{self.mask_one_rounds}, mask-0 actions to {self.mask_zero_rounds}, 1x4 blocks "
                f"to {self.block_rounds}; learned supermasks "
                + (f"{self.learned_epochs:g} epochs" if self.learned_epochs
                   else f"{self.learned_iterations} iterations")
                + f"; tfmot levels {', '.join(map(str, self.tfmot_levels))}")


def budget_from_dict(detail) -> Budget | None:
    """The Budget saved in reproduce.json (lists back to tuples), or None if unreadable."""
    if not isinstance(detail, dict):
        return None
    try:
        values = {key: tuple(tuple(v) if isinstance(v, list) else v for v in value)
                  if isinstance(value, list) else value for key, value in detail.items()}
        return Budget(**values)
    except TypeError:
        return None


LEARNED_RUNS = (("signed_constant", {"supermask_weights": "signed_constant"}),
                ("init", {"supermask_weights": "init"}))
LEARNED_RUNS_CIFAR = (("signed_constant", {"supermask_weights": "signed_constant"}),
                      ("signed_constant_dynamic", {"supermask_weights": "signed_constant",
                                                   "dynamic_scaling": True}))


def budget_for(preset: str, name: str) -> Budget:
    cifar = preset != "mnist_fc"
    learned = LEARNED_RUNS_CIFAR if cifar else LEARNED_RUNS
    if name == "smoke":  # every kind of sub-run once or twice; the numbers mean nothing
        return Budget("smoke", None, 40, 20, ("large_final", "magnitude_increase", "random"),
                      3, 2, 3, 2, 2, (0, 3, 6, 12), None, 40, 20, learned[:1], (2,),
                      eval_samples=2, mask_one_actions=("reinit", "signed_reinit"),
                      mask_zero_actions=("freeze_init_zero_all",))
    if name == "paper":
        epochs = PRESETS[preset]["paper_epochs"]
        return Budget("paper", epochs, None, 100, FIGURE_CRITERIA, 24, 24, 24, 24, 12, (),
                      epochs, None, 500, learned, (3, 7, 12, 15, 18, 24))
    if name != "default":
        raise ValueError(f"--budget={name!r}; allowed: default, smoke, paper.")
    if cifar:  # a GPU budget: a fifth of the paper's epochs, fewer rounds
        epochs = max(1, round(PRESETS[preset]["paper_epochs"] / 5))
        return Budget("default", epochs, None, 500, FIGURE_CRITERIA, 15, 10, 12, 12, 10, (),
                      epochs * 2, None, 500, learned, (3, 7, 10))
    # MNIST fc on 2 CPU cores, under 90 minutes (see estimate()).
    return Budget("default", 2, None, 500, FIGURE_CRITERIA, 24, 12, 15, 15, 12, (),
                  30, None, 500, learned, (3, 7, 12, 15))


# Seconds on 2 CPU cores with nothing else running (fc measured; conv rough, from bench).
SPEEDS = {
    "fc": dict(step=0.0040, step_learned=0.0095, eval=0.1, between=0.4, startup=9.0,
               sweep_eval=0.09, tfmot_step=0.006, tfmot_startup=12.0, export=35.0),
    "conv2": dict(step=0.3, step_learned=1.1, eval=12.0, between=1.0, startup=12.0,
                  sweep_eval=8.0, tfmot_step=0.4, tfmot_startup=15.0, export=60.0),
    "conv4": dict(step=0.4, step_learned=1.5, eval=16.0, between=1.0, startup=12.0,
                  sweep_eval=10.0, tfmot_step=0.5, tfmot_startup=15.0, export=60.0),
    "conv6": dict(step=0.5, step_learned=1.9, eval=20.0, between=1.0, startup=12.0,
                  sweep_eval=12.0, tfmot_step=0.6, tfmot_startup=15.0, export=60.0),
}
GPU_SPEEDUP = 25.0  # rough: conv steps and evaluations on one GPU vs 2 CPU cores


@dataclasses.dataclass
class SubRun:
    """One `tf_lth.train` run (or one export) of the reproduction."""

    name: str                 # also its folder under --out_dir
    figure: str
    kind: str                 # lottery, untrained, learned, tfmot, export
    flags: dict
    depends: tuple = ()
    rounds: int = 0           # the last round (lottery), or tfmot level
    estimate_s: float = 0.0
    export_round: int = 0

    def run_dir(self, out_dir: str) -> str:
        """The run directory (for an export: the exported run's directory)."""
        if self.kind == "export":
            return self.flags["run_dir"].format(out_dir=out_dir)
        return os.path.join(out_dir, *self.name.split("/"))

    def export_marker(self, out_dir: str) -> str:
        return os.path.join(self.run_dir(out_dir), "export", "reproduce_export.json")


# ---- the plan ------------------------------------------------------------------------------
def _steps_per_epoch(preset: str, batch: int, dataset: str) -> int:
    size = SYNTHETIC_TRAIN_SIZE if dataset.startswith("synthetic") else \
        PRESETS[preset]["train_size"]
    return max(1, size // batch)


def _iterations(budget: Budget, steps_per_epoch: int, learned: bool = False) -> int:
    epochs = budget.learned_epochs if learned else budget.epochs
    fixed = budget.learned_iterations if learned else budget.iterations
    return int(fixed) if fixed else max(1, int(round(epochs * steps_per_epoch)))


def plan(preset: str, budget: Budget, dataset: str | None = None, seed: int = 0,
         gpu: bool = False) -> list:
    """The sub-runs of a reproduction, in run order, each with its time estimate."""
    info = PRESETS[preset]
    dataset = dataset or info["dataset"]
    arch = info["arch"]
    speed = dict(SPEEDS[arch])
    if gpu and arch != "fc":
        for key in ("step", "step_learned", "eval", "sweep_eval", "tfmot_step"):
            speed[key] /= GPU_SPEEDUP
    common = dict(dataset=dataset, arch=arch, seed=seed, optimizer="adam",
                  learning_rate=info["learning_rate"], batch_size=60,
                  eval_every=budget.eval_every, prune_rates=info["prune_rates"])
    if budget.epochs:
        common["epochs"] = budget.epochs
    else:
        common["iterations"] = budget.iterations
    iterations = _iterations(budget, _steps_per_epoch(preset, 60, dataset))
    evals = 2 + iterations // budget.eval_every

    def lottery_estimate(rounds):
        per_round = iterations * speed["step"] + evals * speed["eval"] + speed["between"]
        return speed["startup"] + (rounds + 1) * per_round

    runs = []
    baseline_rounds = max(budget.criteria_rounds, budget.mask_one_rounds,
                          budget.mask_zero_rounds, budget.block_rounds, budget.export_round)

    def lottery(name, figure, rounds, **flags):
        run = SubRun(name, figure, "lottery",
                     {**common, "experiment": "lottery", "rounds": rounds,
                      "criterion": "large_final", "mask_one_action": "none",
                      "mask_zero_action": "zero", **flags},
                     rounds=rounds, estimate_s=lottery_estimate(rounds))
        runs.append(run)
        return run

    criteria = list(budget.criteria)
    if "large_final" in criteria:
        criteria.remove("large_final")
    lottery(BASELINE, "criteria", baseline_rounds)
    for criterion in criteria:
        lottery(f"criteria/{criterion}", "criteria", budget.criteria_rounds, criterion=criterion)
    for action in budget.mask_one_actions:
        lottery(f"mask_one/{action}", "mask_one", budget.mask_one_rounds,
                mask_one_action=action)
    for action in budget.mask_zero_actions:
        lottery(f"mask_zero/{action}", "mask_zero", budget.mask_zero_rounds,
                mask_zero_action=action)
    lottery("blocks/large_final_1x4", "blocks", budget.block_rounds, mask_block="1x4")
    levels = budget.untrained_levels or tuple(range(25))
    evaluations = len(ALL_CRITERIA) * len(levels) * 3
    runs.append(SubRun(
        "untrained/all_criteria", "untrained", "untrained",
        {**common, "experiment": "untrained_supermask", "criterion": ",".join(ALL_CRITERIA),
         "source_run": "{out_dir}/" + BASELINE,
         "prune_levels": ",".join(map(str, levels)),
         "weight_treatments": "init,signed_constant,rescaled"},
        depends=(BASELINE,), estimate_s=speed["startup"] + evaluations * speed["sweep_eval"]))
    learned_iterations = _iterations(budget, _steps_per_epoch(preset, 250, dataset), True)
    for name, extra in budget.learned_runs:
        flags = {**common, "experiment": "learned_supermask", "optimizer": "sgd",
                 "momentum": 0.9, "learning_rate": 100.0, "batch_size": 250,
                 "eval_every": budget.learned_eval_every, "sigmoid_bias": 0.0,
                 "mask_sampling": "bernoulli", "eval_samples": budget.eval_samples, **extra}
        flags.pop("epochs", None)
        flags.pop("iterations", None)
        flags.pop("prune_rates", None)
        flags["iterations"] = learned_iterations
        evals_learned = 2 + learned_iterations // budget.learned_eval_every + budget.eval_samples
        runs.append(SubRun(f"learned/{name}", "learned", "learned", flags,
                           estimate_s=speed["startup"] + learned_iterations * speed["step_learned"]
                           + evals_learned * speed["eval"]))
    for level in budget.tfmot_levels:
        runs.append(SubRun(
            f"tfmot/level_{level:02d}", "tfmot", "tfmot",
            {**common, "experiment": "tfmot_baseline", "rounds": level, "one_shot": True},
            rounds=level,
            estimate_s=speed["startup"] + speed["tfmot_startup"]
            + iterations * speed["tfmot_step"] + evals * speed["eval"]))
    for source in (BASELINE, "blocks/large_final_1x4"):
        runs.append(SubRun(
            f"export/{source.split('/')[-1]}", "blocks", "export",
            {"run_dir": "{out_dir}/" + source, "round": budget.export_round,
             "formats": "tflite,tflite_sparse"},
            depends=(source,), export_round=budget.export_round,
            estimate_s=speed["startup"] + speed["export"]))
    return runs


def total_estimate(runs: list) -> float:
    return sum(run.estimate_s for run in runs)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def format_plan(preset: str, budget: Budget, runs: list, out_dir: str) -> str:
    lines = [f"reproduce --preset={preset} --budget={budget.name}: {len(runs)} sub-runs in "
             f"{out_dir}", f"budget: {budget.describe()}", ""]
    for index, run in enumerate(runs, 1):
        detail = ""
        if run.kind == "lottery":
            detail = f"{run.rounds + 1} rounds"
        elif run.kind == "export":
            detail = f"round {run.export_round}"
        lines.append(f"  [{index:2d}] {run.name:38s} {run.kind:9s} {detail:10s} "
                     f"~{_minutes(run.estimate_s)}")
    lines.append(f"estimated total: {_minutes(total_estimate(runs))} (2 CPU cores, nothing "
                 "else running" + (")" if PRESETS[preset]["arch"] == "fc" else
                                   "; conv estimates are rough)"))
    return "\n".join(lines)


# ---- running -------------------------------------------------------------------------------
def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def command(run: SubRun, out_dir: str, data_dir: str | None) -> list:
    flags = {key: (value.format(out_dir=out_dir) if isinstance(value, str) else value)
             for key, value in run.flags.items()}
    if run.kind == "export":
        return [sys.executable, "-m", "tf_lth.export"] + [
            f"--{key}={value}" for key, value in flags.items()]
    run_dir = run.run_dir(out_dir)
    args = [sys.executable, "-m", "tf_lth.train"] + [_flag(k, v) for k, v in flags.items()]
    args += [f"--run_dir={run_dir}", "--noprogress"]
    if data_dir:
        args.append(f"--data_dir={data_dir}")
    if os.path.exists(os.path.join(run_dir, "config.json")):
        args.append("--resume")
    return args


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def is_complete(run: SubRun, out_dir: str) -> bool:
    run_dir = run.run_dir(out_dir)
    if run.kind == "lottery":
        return os.path.exists(os.path.join(run_dir, f"round_{run.rounds:03d}", "DONE"))
    if run.kind == "learned":
        return os.path.exists(os.path.join(run_dir, "round_000", "DONE")) and \
            os.path.exists(os.path.join(run_dir, "results.json"))
    if run.kind == "tfmot":
        return os.path.exists(os.path.join(run_dir, f"round_{run.rounds:03d}", "DONE")) and \
            os.path.exists(os.path.join(run_dir, "results.json"))
    if run.kind == "untrained":
        results = _read_json(os.path.join(run_dir, "results.json")) or {}
        levels = run.flags["prune_levels"].split(",")
        expected = len(run.flags["criterion"].split(",")) * len(levels) * 3
        return len(results.get("masks") or []) >= expected
    if run.kind == "export":
        marker = _read_json(run.export_marker(out_dir)) or {}
        report = os.path.join(run_dir, "export", "export_report.json")
        return marker.get("round") == run.export_round and os.path.exists(report)
    raise ValueError(run.kind)


def _worth_showing(text: str) -> bool:
    """The child's per-round results and errors, not TensorFlow's start-up chatter."""
    if not text or text[:5] in ("I0000", "W0000", "E0000") or text.startswith("WARNING"):
        return False
    return (text.startswith("round ") and "test accuracy" in text) or \
        text.startswith(("learned supermask:", "error", "level ", "untrained supermasks:",
                         "tflite", "exporting")) or \
        ("level 24:" in text) or text.startswith(("tflite", "saved_model"))


def _tail(path: str, lines: int = 6) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            content = [line.rstrip() for line in stream if line.strip()]
    except OSError:
        return ""
    errors = [line for line in content if line.startswith("error")]
    picked = errors[-2:] if errors else content[-lines:]
    return " | ".join(picked)[-600:]


def execute(run: SubRun, out_dir: str, data_dir: str | None, log, threads: int | None,
            timeout: float) -> dict:
    """Runs one sub-run in a subprocess; returns its status record."""
    run_dir = run.run_dir(out_dir)
    if run.kind == "export":
        log_path = os.path.join(out_dir, "export", f"{run.name.split('/')[-1]}.log")
    else:
        log_path = run_dir + ".log"
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    if threads:
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    args = command(run, out_dir, data_dir)
    started = time.time()
    with open(log_path, "a", encoding="utf-8") as stream:
        stream.write(f"\n$ {' '.join(args)}\n")
        stream.flush()
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            for line in process.stdout:
                stream.write(line)
                text = line.strip()
                if _worth_showing(text):
                    log(f"    {run.name}: {text}")
            returncode = process.wait()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the child too
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        finally:
            timer.cancel()
    seconds = time.time() - started
    record = {"status": "done" if returncode == 0 else "failed", "returncode": returncode,
              "seconds": seconds, "log": os.path.relpath(log_path, out_dir),
              "estimate_s": run.estimate_s}
    if returncode == 0 and run.kind == "export":
        _write_json(run.export_marker(out_dir), {"round": run.export_round})
    if returncode != 0:
        record["error"] = ("timed out after " if seconds >= timeout - 1 else "") + \
            (_tail(log_path) or f"exit status {returncode}")
    return record


def _write_json(path: str, value) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(value, stream, indent=2, default=str)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def run_all(runs: list, out_dir: str, data_dir: str | None, state: dict, state_path: str,
            jobs: int = 1, log=print) -> dict:
    """Runs every pending sub-run (dependencies first); returns the status per sub-run."""
    status = state.setdefault("sub_runs", {})
    lock = threading.Lock()
    total = total_estimate(runs)
    started = time.time()
    done_estimate = [0.0]
    pending = []
    for run in runs:
        if is_complete(run, out_dir):
            previous = status.get(run.name, {})
            status[run.name] = {**previous, "status": "done"}
            status[run.name].pop("error", None)
            done_estimate[0] += run.estimate_s
            log(f"  {run.name}: already complete, skipped")
        else:
            pending.append(run)
    threads = None if jobs <= 1 else max(1, (os.cpu_count() or 2) // jobs)
    position = {run.name: index for index, run in enumerate(runs, 1)}

    def save():
        state["updated"] = _now()
        _write_json(state_path, state)

    def blocked(run):
        return [dep for dep in run.depends if status.get(dep, {}).get("status") != "done"]

    def work(run):
        missing = blocked(run)
        if missing:
            record = {"status": "skipped", "error": f"needs {', '.join(missing)}, which did "
                      "not complete", "estimate_s": run.estimate_s}
        else:
            log(f"[{position[run.name]}/{len(runs)}] {run.name}: starting "
                f"(estimate {_minutes(run.estimate_s)})")
            timeout = max(900.0, 5 * run.estimate_s)
            try:
                record = execute(run, out_dir, data_dir, log, threads, timeout)
            except OSError as error:
                record = {"status": "failed", "error": f"could not start: {error}"}
        with lock:
            status[run.name] = record
            done_estimate[0] += run.estimate_s
            save()
            elapsed = time.time() - started
            note = f" ({record.get('error')})" if record["status"] != "done" else ""
            log(f"[{position[run.name]}/{len(runs)}] {run.name}: {record['status']} in "
                f"{_minutes(record.get('seconds', 0.0))}{note}; elapsed {_minutes(elapsed)}, "
                f"planned work done {100 * done_estimate[0] / max(total, 1e-9):.0f}%")

    if jobs <= 1:
        for run in pending:
            work(run)
    else:
        remaining = list(pending)
        active = []
        while remaining or active:
            active = [thread for thread in active if thread.is_alive()]
            names_active = {thread.name for thread in active}
            for run in list(remaining):
                if len(active) >= jobs:
                    break
                waiting = [dep for dep in run.depends
                           if dep in names_active or dep in {r.name for r in remaining}]
                if waiting:
                    continue
                remaining.remove(run)
                thread = threading.Thread(target=work, args=(run,), name=run.name, daemon=True)
                thread.start()
                active.append(thread)
            time.sleep(0.5)
    save()
    return status


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---- reading results -----------------------------------------------------------------------
def load_results(runs: list, out_dir: str) -> dict:
    """{sub-run name: results.json (or export report)} for what exists on disk."""
    loaded = {}
    for run in runs:
        if run.kind == "export":
            report = _read_json(os.path.join(run.run_dir(out_dir), "export",
                                             "export_report.json"))
            marker = _read_json(run.export_marker(out_dir)) or {}
            if report and marker.get("round") == run.export_round:
                loaded[run.name] = report
            continue
        results = _read_json(os.path.join(run.run_dir(out_dir), "results.json"))
        if results:
            loaded[run.name] = results
    return loaded


def curve(results: dict | None, max_round: int | None = None) -> list:
    """[(round, weights_remaining, best test accuracy)] of a lottery or tfmot run."""
    if not results:
        return []
    points = []
    for record in results.get("rounds") or []:
        if max_round is not None and record["round"] > max_round:
            continue
        best = (record.get("best") or {}).get("test_accuracy", record.get("test_accuracy"))
        points.append((record["round"], record["weights_remaining"], best))
    return sorted(points)


def at_round(points: list, round_index: int):
    for round_value, _, accuracy in points:
        if round_value == round_index:
            return accuracy
    return None


def window_mean(points: list, rounds: list):
    values = [at_round(points, r) for r in rounds]
    if not rounds or any(value is None for value in values):
        return None
    return sum(values) / len(values)


def common_rounds(curves: list, max_weights: float, upto: int) -> list:
    """Rounds present in every curve, <= upto, with weights remaining <= max_weights;
    the deepest common round when none is that sparse."""
    sets = [{r for r, _, _ in points if r <= upto} for points in curves if points]
    if not sets or len(sets) < len(curves):
        return []
    shared = sorted(set.intersection(*sets))
    if not shared:
        return []
    weights = {r: w for r, w, _ in curves[0]}
    sparse = [r for r in shared if weights.get(r, 1.0) <= max_weights + 1e-9 and r > 0]
    return sparse or [shared[-1]]


def pct(value, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def weights_label(points: list, rounds: list) -> str:
    weights = {r: w for r, w, _ in points}
    if not rounds:
        return "-"
    if len(rounds) == 1:
        return f"round {rounds[0]} ({100 * weights.get(rounds[0], float('nan')):.1f}% remaining)"
    return (f"rounds {rounds[0]}-{rounds[-1]} ({100 * weights.get(rounds[0], 0):.1f}% to "
            f"{100 * weights.get(rounds[-1], 0):.1f}% remaining)")


# ---- the claims ----------------------------------------------------------------------------
FAIL_GAP = 0.01       # an action "fails" when it is at least 1 point below the lottery ticket
CLOSE_TO_BEST = 0.01  # a criterion is "among the best" within 1 point of the best, or top 3


def _verdict(ok, reason: str) -> dict:
    if ok is None:
        return {"verdict": "not measured", "reason": reason}
    return {"verdict": "reproduced" if ok else "not reproduced", "reason": reason}


def criteria_claims(loaded: dict, budget: Budget) -> tuple:
    names = list(budget.criteria)
    curves = {name: curve(loaded.get(f"criteria/{name}"), budget.criteria_rounds)
              for name in names}
    present = [name for name in names if curves[name]]
    missing = [name for name in names if not curves[name]]
    rounds = common_rounds([curves[n] for n in present], 0.036, budget.criteria_rounds)
    scores = {name: window_mean(curves[name], rounds) for name in present}
    scores = {name: value for name, value in scores.items() if value is not None}
    ranking = sorted(scores, key=lambda name: -scores[name])
    where = weights_label(curves[present[0]], rounds) if present else "-"
    listing = ", ".join(f"{name} {pct(scores[name], 1)}" for name in ranking)
    claims = []
    if not {"large_final", "magnitude_increase"} <= set(scores) or len(scores) < 4:
        claims.append(("large_final and magnitude_increase are the best criteria",
                       _verdict(None, f"criteria runs missing or incomplete: "
                                      f"{', '.join(missing) or 'too few rounds'}")))
        claims.append(("small_* and random are the worst criteria",
                       _verdict(None, "criteria runs missing or incomplete")))
        return claims, scores, rounds
    best = scores[ranking[0]]
    top = ranking[:3]
    ok = all(name in top or best - scores[name] <= CLOSE_TO_BEST
             for name in ("large_final", "magnitude_increase"))
    claims.append(("large_final and magnitude_increase are the best criteria", _verdict(
        ok, f"mean test accuracy over {where}: {listing}. Rule: each in the top 3 or within "
            f"{100 * CLOSE_TO_BEST:g} point of the best; large_final is #{ranking.index('large_final') + 1}, "
            f"magnitude_increase #{ranking.index('magnitude_increase') + 1} of {len(ranking)}.")))
    worst_group = [name for name in ("small_final", "small_init", "random") if name in scores]
    bottom = ranking[-len(worst_group):]
    ok = set(bottom) == set(worst_group)
    intruders = [name for name in bottom if name not in worst_group]
    claims.append(("small_* and random are the worst criteria", _verdict(
        ok, f"the bottom {len(worst_group)} over {where} are {', '.join(bottom)}"
            + ("" if ok else f" ({', '.join(intruders)} among them; "
               + ", ".join(f"{n} is #{ranking.index(n) + 1}" for n in worst_group) + ")")
            + ".")))
    return claims, scores, rounds


def mask_one_claims(loaded: dict, budget: Budget) -> tuple:
    base = curve(loaded.get(BASELINE), budget.mask_one_rounds)
    curves = {action: curve(loaded.get(f"mask_one/{action}"), budget.mask_one_rounds)
              for action in MASK_ONE_ACTIONS}
    present = [a for a, c in curves.items() if c]
    rounds = common_rounds([base] + [curves[a] for a in present], 0.211,
                           budget.mask_one_rounds) if base else []
    lt = window_mean(base, rounds) if rounds else None
    gaps = {}
    for action in present:
        value = window_mean(curves[action], rounds) if lt is not None else None
        if value is not None:
            gaps[action] = lt - value
    where = weights_label(base, rounds)
    unsigned = ("reinit", "reshuffle", "constant")
    claims = []
    missing = [a for a in unsigned if a not in gaps] + ([] if base else ["lottery ticket"])
    title = "reinit, reshuffle and constant fail as mask-1 actions"
    if missing:
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        text = ", ".join(f"{a} {-100 * gaps[a]:+.2f}" for a in unsigned)
        claims.append((title, _verdict(
            all(gaps[a] >= FAIL_GAP for a in unsigned),
            f"points against the lottery ticket ({pct(lt)}%) in mean test accuracy over "
            f"{where}: {text}. Rule: an action fails when at least {100 * FAIL_GAP:g} point "
            "below.")))
    title = "keeping the sign of w_i rescues all three"
    missing = [a for a in MASK_ONE_ACTIONS if a not in gaps] + ([] if base else ["lottery ticket"])
    if missing:
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        rescued = {a: gaps[a] > 0 and gaps[f"signed_{a}"] <= 0.5 * gaps[a] for a in unsigned}
        text = ", ".join(f"signed_{a} {-100 * gaps['signed_' + a]:+.2f} (unsigned "
                         f"{-100 * gaps[a]:+.2f})" for a in unsigned)
        claims.append((title, _verdict(
            all(rescued.values()),
            f"points against the lottery ticket over {where}: {text}. Rule: rescued when the "
            "signed version closes at least half of the unsigned version's gap.")))
    return claims, gaps, rounds


def mask_zero_claims(loaded: dict, budget: Budget) -> tuple:
    base = curve(loaded.get(BASELINE), budget.mask_zero_rounds)
    curves = {a: curve(loaded.get(f"mask_zero/{a}"), budget.mask_zero_rounds)
              for a in MASK_ZERO_ACTIONS}
    present = [a for a, c in curves.items() if c]
    group = [base] + [curves[a] for a in present]
    mid = common_rounds(group, 0.211, budget.mask_zero_rounds) if base else []
    high = common_rounds(group, 0.07, budget.mask_zero_rounds) if base else []
    means = {"zero": (window_mean(base, mid), window_mean(base, high))} if base else {}
    for action in present:
        means[action] = (window_mean(curves[action], mid), window_mean(curves[action], high))
    claims = []
    title = "pruned weights must be zero, not frozen at init"
    if not base or "freeze_init" not in means:
        missing = ["freeze_init"] if "freeze_init" not in means else ["lottery ticket"]
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        lt_mid, freeze_mid = means["zero"][0], means["freeze_init"][0]
        claims.append((title, _verdict(
            lt_mid - freeze_mid >= FAIL_GAP,
            f"mean test accuracy over {weights_label(base, mid)}: zero {pct(lt_mid)}%, "
            f"freeze_init {pct(freeze_mid)}% ({100 * (freeze_mid - lt_mid):+.2f} points). Rule: "
            f"freeze_init at least {100 * FAIL_GAP:g} point below.")))
    title = "variant 2 beats variant 1, which beats the lottery ticket at high sparsity"
    needed = ("freeze_init_zero_mask", "freeze_init_zero_all")
    if not base or any(a not in means for a in needed):
        missing = [a for a in needed if a not in means] + ([] if base else ["lottery ticket"])
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        lt_high = means["zero"][1]
        v1, v2 = means["freeze_init_zero_mask"][1], means["freeze_init_zero_all"][1]
        claims.append((title, _verdict(
            v2 > v1 > lt_high,
            f"mean test accuracy over {weights_label(base, high)}: variant 2 {pct(v2)}%, "
            f"variant 1 {pct(v1)}%, lottery ticket {pct(lt_high)}%.")))
    return claims, means, mid, high


def untrained_table(results: dict | None) -> dict:
    """{(criterion, treatment): (best accuracy, its weights remaining, level)}."""
    table = {}
    for record in (results or {}).get("masks") or []:
        key = (record["criterion"], record["weight_treatment"])
        value = (record["test_accuracy"], record["weights_remaining"], record["prune_level"])
        if key not in table or value[0] > table[key][0]:
            table[key] = value
    return table


def untrained_claims(loaded: dict) -> tuple:
    table = untrained_table(loaded.get("untrained/all_criteria"))
    key_init = ("large_final_same_sign", "init")
    key_sc = ("large_final_same_sign", "signed_constant")
    if key_init not in table or key_sc not in table:
        reason = "untrained supermask sweep missing or incomplete"
        return ([("untrained masked networks are far above chance", _verdict(None, reason)),
                 ("signed constants raise them further", _verdict(None, reason))], table)
    init, sc = table[key_init], table[key_sc]
    best_init = max((v for (c, t), v in table.items() if t == "init"), key=lambda v: v[0])
    claims = [("untrained masked networks are far above chance", _verdict(
        init[0] >= 3 * CHANCE,
        f"large_final_same_sign masks on the initial weights reach {pct(init[0])}% at "
        f"{pct(init[1], 1)}% remaining (best of any criterion: {pct(best_init[0])}%); chance is "
        f"{100 * CHANCE:g}%. Rule: at least 3x chance."))]
    claims.append(("signed constants raise them further", _verdict(
        sc[0] > init[0],
        f"large_final_same_sign, best prune level: signed constants {pct(sc[0])}% "
        f"({pct(sc[1], 1)}% remaining) vs initial weights {pct(init[0])}% "
        f"({pct(init[1], 1)}% remaining).")))
    return claims, table


def block_claim(loaded: dict, budget: Budget) -> tuple:
    """Issue 9's claim: the 1x4 ticket is >= 1.3x faster in LiteRT than dense; 1x1 is not."""
    speed = {}
    for name in ("export/large_final", "export/large_final_1x4"):
        report = loaded.get(name)
        if not report:
            continue
        formats = report.get("formats", {})
        dense = (formats.get("tflite") or {}).get("latency_per_example_s")
        sparse = (formats.get("tflite_sparse") or {}).get("latency_per_example_s")
        if dense and sparse:
            speed[name] = (dense / sparse, dense, sparse, formats["tflite_sparse"],
                           report.get("layers", []))
    title = (f"a 1x4-block ticket runs at least 1.3x faster than dense in LiteRT; a 1x1 ticket "
             f"does not (round {budget.export_round})")
    if len(speed) < 2:
        return [(title, _verdict(None, "export sub-runs missing or failed"))], speed
    one, four = speed["export/large_final"][0], speed["export/large_final_1x4"][0]
    return [(title, _verdict(
        four >= 1.3 and one < 1.3,
        f"LiteRT, 1 thread, latency per example of the sparse file vs the dense file of the same "
        f"ticket: 1x4 {four:.2f}x faster, 1x1 {one:.2f}x."))], speed


# ---- figures -------------------------------------------------------------------------------
def _axes(title: str, ylabel: str = "test accuracy at best validation loss (%)"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.6))
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel("weights remaining (%)")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    return figure, axis


TICKS = (100, 51.3, 21.1, 7.0, 3.6, 1.9, 1.0, 0.5, 0.2)


def _percent_ticks(axis) -> None:
    """Ticks at the fc schedule's landmark levels, written as plain percentages."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    low, high = sorted(axis.get_xlim())
    ticks = [t for t in TICKS if low <= t <= high]
    if len(ticks) < 2:  # a narrow range: a few evenly spaced (on the log axis) values
        ticks = [low * (high / low) ** (i / 3) for i in range(4)]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_major_formatter(lambda value, _: f"{value:.3g}")
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_minor_formatter(NullFormatter())


def _save(figure, path: str) -> str:
    import matplotlib.pyplot as plt

    for axis in figure.axes:
        if axis.get_xscale() == "log":
            _percent_ticks(axis)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path + ".tmp.png", dpi=90)
    plt.close(figure)
    os.replace(path + ".tmp.png", path)
    return path


def _plot_curve(axis, points, label, **style):
    points = [p for p in points if p[0] > 0]
    if points:
        axis.plot([100 * w for _, w, _ in points], [100 * a for _, _, a in points],
                  label=label, marker=style.pop("marker", "o"), markersize=3, **style)


def _dense_line(axis, loaded):
    dense = curve(loaded.get(BASELINE), 0)
    if dense:
        axis.axhline(100 * dense[0][2], color="black", linestyle=":", linewidth=1,
                     label="dense (round 0)")


def figure_lottery(loaded: dict, names: list, labels: dict, path: str, title: str,
                   max_round: int, styles: dict | None = None, ylim=None) -> str | None:
    figure, axis = _axes(title)
    drawn = 0
    for name in names:
        points = curve(loaded.get(name), max_round)
        if points:
            _plot_curve(axis, points, labels.get(name, name), **(styles or {}).get(name, {}))
            drawn += 1
    _dense_line(axis, loaded)
    if ylim:
        axis.set_ylim(*ylim)
    axis.legend(fontsize=7, loc="lower left")
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(figure)
        return None
    return _save(figure, path)


def figure_untrained(results: dict | None, path: str) -> str | None:
    if not results or not results.get("masks"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    treatments = ("init", "signed_constant", "rescaled")
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.4), sharey=True)
    shown = ("large_final_same_sign", "large_final", "magnitude_increase", "movement",
             "large_init_large_final", "large_init", "random", "small_final")
    for axis, treatment in zip(axes, treatments):
        for criterion in shown:
            records = sorted((r for r in results["masks"] if r["criterion"] == criterion and
                              r["weight_treatment"] == treatment),
                             key=lambda r: -r["weights_remaining"])
            if records:
                axis.plot([100 * r["weights_remaining"] for r in records],
                          [100 * r["test_accuracy"] for r in records], marker=".",
                          markersize=3, label=criterion)
        axis.axhline(100 * CHANCE, color="grey", linestyle=":", linewidth=1, label="chance")
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.set_title(f"untrained, {treatment} weights", fontsize=10)
        axis.set_xlabel("weights remaining (%)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy, no training (%)")
    axes[0].legend(fontsize=6, loc="upper left")
    return _save(figure, path)


def figure_bars(items: list, path: str, title: str) -> str | None:
    items = [(label, value) for label, value in items if value is not None]
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(items) + 1.2))
    labels = [label for label, _ in items]
    values = [100 * value for _, value in items]
    axis.barh(range(len(items)), values, color="tab:blue")
    axis.set_yticks(range(len(items)), labels, fontsize=8)
    axis.invert_yaxis()
    for index, value in enumerate(values):
        axis.text(value + 0.5, index, f"{value:.1f}%", va="center", fontsize=8)
    axis.set_xlim(0, 110)
    axis.set_xlabel("test accuracy (%)")
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


# ---- the report ----------------------------------------------------------------------------
def _table(header: list, rows: list) -> list:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _image(lines: list, path: str | None, results_path: str, alt: str) -> None:
    if path:
        rel = os.path.relpath(path, os.path.dirname(os.path.abspath(results_path)))
        lines += [f"![{alt}]({rel.replace(os.sep, '/')})", ""]
    else:
        lines += ["*No figure: the runs of this section are missing.*", ""]


def _status_note(names: list, state: dict) -> list:
    notes = []
    complete = state.get("_complete", {})
    for name in names:
        record = state.get("sub_runs", {}).get(name)
        if complete.get(name):
            continue
        if record is None:
            notes.append(f"- `{name}`: not run yet.")
        elif record.get("status") != "done":
            notes.append(f"- `{name}`: **{record.get('status')}** — {record.get('error', '')}")
    return notes


def _claim_lines(claims: list) -> list:
    lines = []
    for title, verdict in claims:
        lines.append(f"- **{verdict['verdict']}**: {title}. {verdict['reason']}")
    return lines


def report(preset: str, budget: Budget, runs: list, out_dir: str, results_path: str,
           figures_dir: str, state: dict) -> str:
    """Writes RESULTS.md (and its figures) from the run directories; returns the text."""
    loaded = load_results(runs, out_dir)
    state = {**state, "_complete": {run.name: is_complete(run, out_dir) for run in runs}}
    fc = preset == "mnist_fc"
    paper = PAPER["mnist_fc"] if fc else PAPER["cifar10"]
    arch = PRESETS[preset]["arch"]
    prefix = "" if fc and budget.name == "default" else f"{preset}_"
    fig = lambda name: os.path.join(figures_dir, f"{prefix}{name}.png")  # noqa: E731
    all_claims = []
    lines = [f"# Results: \"Deconstructing Lottery Tickets\" reproduced ({preset}, "
             f"budget {budget.name})", ""]
    lines += [
        f"Generated by `python -m tf_lth.reproduce --preset={preset} --budget={budget.name}` "
        f"(`make reproduce` for mnist_fc) from the run directories under `{_rel(out_dir)}`; "
        "run it again to resume or to regenerate this page (`--report_only` redraws without "
        "training). Paper numbers are those of SPEC.md section 8 (the paper's abstract and "
        "text; secondary sources and an independent 5-seed reproduction, \"repro\").", ""]
    planned = {run.name for run in runs}
    records = [r for name, r in state.get("sub_runs", {}).items() if name in planned]
    seconds = sum(r.get("seconds", 0.0) for r in records)
    done = sum(1 for run in runs if state["_complete"][run.name])
    lines += [
        f"- Machine: {state.get('machine', platform.platform())}.",
        f"- Data: {state.get('dataset', PRESETS[preset]['dataset'])}.",
        f"- Budget: {budget.describe()}. One seed ({state.get('seed', 0)}).",
        f"- Sub-runs: {done} of {len(runs)} complete; {_minutes(seconds)} of compute recorded "
        f"(plan estimate {_minutes(total_estimate(runs))}); last update {state.get('updated', _now())}.",
        ""]
    failures = _status_note([r.name for r in runs], state)
    if failures:
        lines += ["Sub-runs not complete:", ""] + failures + [""]

    deviations_common = [
        f"{_epochs_text(budget)} per round instead of the paper's "
        f"{PRESETS[preset]['paper_epochs']} epochs; evaluation every {budget.eval_every} "
        "iterations instead of 100 (the best-validation-loss point is chosen among fewer "
        "evaluations).",
        "One seed instead of the repro's five; differences under about half a point are "
        "within seed noise.",
    ]

    # --- criteria
    claims, scores, crit_rounds = criteria_claims(loaded, budget)
    all_claims += [("criteria", c) for c in claims]
    lines += ["## 1. Mask criteria (the paper's Figure 2)", ""]
    names = [BASELINE] + [f"criteria/{c}" for c in budget.criteria if c != "large_final"]
    path = figure_lottery(loaded, names, {n: n.split("/")[-1] for n in names}, fig("criteria"),
                          f"{arch}: mask criteria, iterative pruning, rewind to init",
                          budget.criteria_rounds)
    _image(lines, path, results_path, "criteria")
    base_curve = curve(loaded.get(BASELINE), budget.criteria_rounds)
    shown_rounds = [r for r in (3, 7, 12, 15, 18, 24) if r <= budget.criteria_rounds] or \
        sorted({r for r, _, _ in base_curve if r > 0})[-3:]
    weights = {r: w for r, w, _ in base_curve}
    header = ["criterion"] + [f"round {r} ({pct(weights.get(r), 1)}%)" for r in shown_rounds]
    header += ["high-sparsity mean (ours)"]
    if fc:
        header += ["paper, 24 rounds (repro)"]
    rows = []
    for criterion in sorted(budget.criteria, key=lambda c: -(scores.get(c) or -1)):
        name = BASELINE if criterion == "large_final" else f"criteria/{criterion}"
        points = curve(loaded.get(name), budget.criteria_rounds)
        row = [criterion] + [pct(at_round(points, r)) for r in shown_rounds]
        row.append(pct(scores.get(criterion)))
        if fc:
            value = paper["criteria_24"].get(criterion)
            row.append("-" if value is None else f"{value:.1f}")
        rows.append(row)
    lines += _table(header, rows) + [""]
    lines += [f"Test accuracy (%) at the best validation loss of each round. The high-sparsity "
              f"mean averages {weights_label(base_curve, crit_rounds)}; the claims use it.", ""]
    lines += ["Claims (SPEC.md section 8):", ""] + _claim_lines(claims) + [""]
    lines += ["Differences from the paper's protocol:", ""] + [f"- {d}" for d in deviations_common]
    lines += ["- The paper's Figure 2 plots the criteria up to about 0.5% remaining (24 rounds); "
              f"we run {budget.criteria_rounds} rounds." if budget.criteria_rounds < 24 else
              "- Same 24 rounds as the paper.", ""]
    lines += _status_note(names, state) + [""]

    if fc:
        lines += ["### The lottery ticket (large_final) against the repro", ""]
        rows = []
        dense = at_round(base_curve, 0)
        rows.append(["100 (dense)", pct(dense), f"{paper['dense'][0]:.1f}", "round 0"])
        for target, value in paper["lottery"].items():
            nearest = min(base_curve, key=lambda p: abs(100 * p[1] - target), default=None)
            if nearest is None or abs(100 * nearest[1] - target) > 0.25 * target:
                rows.append([f"{target}", "-", f"{value:.2f}", "not reached"])
            else:
                rows.append([f"{target}", pct(nearest[2]), f"{value:.2f}",
                             f"round {nearest[0]} ({100 * nearest[1]:.1f}%)"])
        lines += _table(["weights remaining (%)", "ours", "repro", "our round"], rows) + [""]

    # --- mask-1 actions
    claims, gaps, m1_rounds = mask_one_claims(loaded, budget)
    all_claims += [("mask-1", c) for c in claims]
    lines += ["## 2. Mask-1 actions: the starting values of kept weights (the paper's Figure 3)",
              ""]
    names = [BASELINE] + [f"mask_one/{a}" for a in budget.mask_one_actions]
    colors = {"reinit": "tab:red", "reshuffle": "tab:green", "constant": "tab:purple"}
    styles = {BASELINE: {"color": "black"}}
    for action in MASK_ONE_ACTIONS:
        base_name = action.replace("signed_", "")
        styles[f"mask_one/{action}"] = {"color": colors[base_name],
                                        "linestyle": "-" if action.startswith("signed") else "--"}
    labels = {BASELINE: "none (lottery ticket)"}
    labels.update({f"mask_one/{a}": a for a in MASK_ONE_ACTIONS})
    path = figure_lottery(loaded, names, labels, fig("mask_one"),
                          f"{arch}: mask-1 actions (dashed: unsigned, solid: signed)",
                          budget.mask_one_rounds, styles)
    _image(lines, path, results_path, "mask-1 actions")
    shown = [r for r in (3, 7, 10, 12, 15) if r <= budget.mask_one_rounds] or \
        [budget.mask_one_rounds]
    base_points = curve(loaded.get(BASELINE), budget.mask_one_rounds)
    weights = {r: w for r, w, _ in base_points}
    header = ["mask-1 action"] + [f"round {r} ({pct(weights.get(r), 1)}%)" for r in shown] + \
        ["vs lottery ticket (points, window mean)"]
    rows = [["none (lottery ticket)"] + [pct(at_round(base_points, r)) for r in shown] + ["0"]]
    for action in budget.mask_one_actions:
        points = curve(loaded.get(f"mask_one/{action}"), budget.mask_one_rounds)
        gap = gaps.get(action)
        rows.append([action] + [pct(at_round(points, r)) for r in shown] +
                    ["-" if gap is None else f"{-100 * gap:+.2f}"])
    lines += _table(header, rows) + [""]
    lines += [f"Window for the claims: {weights_label(base_points, m1_rounds)}. The paper shows "
              "these as curves without numbers; SPEC.md section 8 states the qualitative "
              "result only.", ""]
    lines += ["Claims (SPEC.md section 8):", ""] + _claim_lines(claims) + [""]
    lines += ["Differences from the paper's protocol:", ""] + [f"- {d}" for d in deviations_common]
    lines += [f"- Run to {budget.mask_one_rounds} rounds "
              f"({pct(weights.get(budget.mask_one_rounds), 1)}% remaining); the paper's figure "
              "continues to higher sparsity.", ""]
    lines += _status_note(names, state) + [""]

    # --- mask-0 actions
    claims, means, m0_mid, m0_high = mask_zero_claims(loaded, budget)
    all_claims += [("mask-0", c) for c in claims]
    lines += ["## 3. Mask-0 actions: what pruned weights are (the paper's Figure 4)", ""]
    names = [BASELINE] + [f"mask_zero/{a}" for a in budget.mask_zero_actions]
    labels = {BASELINE: MASK_ZERO_NAMES["zero"]}
    labels.update({f"mask_zero/{a}": MASK_ZERO_NAMES[a] for a in MASK_ZERO_ACTIONS})
    path = figure_lottery(loaded, names, labels, fig("mask_zero"),
                          f"{arch}: mask-0 actions", budget.mask_zero_rounds)
    _image(lines, path, results_path, "mask-0 actions")
    base_points = curve(loaded.get(BASELINE), budget.mask_zero_rounds)
    weights = {r: w for r, w, _ in base_points}
    shown = [r for r in (3, 7, 12, 15) if r <= budget.mask_zero_rounds] or \
        [budget.mask_zero_rounds]
    header = ["mask-0 action"] + [f"round {r} ({pct(weights.get(r), 1)}%)" for r in shown] + \
        [f"mean, {weights_label(base_points, m0_mid)}",
         f"mean, {weights_label(base_points, m0_high)}"]
    rows = []
    for action in ("zero",) + tuple(budget.mask_zero_actions):
        name = BASELINE if action == "zero" else f"mask_zero/{action}"
        points = curve(loaded.get(name), budget.mask_zero_rounds)
        mid, high = means.get(action, (None, None))
        rows.append([MASK_ZERO_NAMES[action]] + [pct(at_round(points, r)) for r in shown] +
                    [pct(mid), pct(high)])
    lines += _table(header, rows) + [""]
    lines += ["Claims (SPEC.md section 8):", ""] + _claim_lines(claims) + [""]
    lines += ["Differences from the paper's protocol:", ""] + [f"- {d}" for d in deviations_common]
    lines += [f"- Run to {budget.mask_zero_rounds} rounds "
              f"({pct(weights.get(budget.mask_zero_rounds), 1)}% remaining).", ""]
    lines += _status_note(names, state) + [""]

    # --- untrained supermasks
    claims, table = untrained_claims(loaded)
    all_claims += [("untrained", c) for c in claims]
    untrained = loaded.get("untrained/all_criteria")
    lines += ["## 4. Untrained supermasks (the paper's Figure 5 and supermask table)", ""]
    _image(lines, figure_untrained(untrained, fig("untrained")), results_path,
           "untrained supermasks")
    rows = []
    for criterion in ALL_CRITERIA:
        cells = [criterion]
        for treatment in ("init", "signed_constant", "rescaled"):
            value = table.get((criterion, treatment))
            cells.append("-" if value is None else
                         f"{pct(value[0])} ({pct(value[1], 1)}%)")
        rows.append(cells)
    rows.sort(key=lambda row: -float(row[2].split()[0]) if row[2] != "-" else 1)
    lines += _table(["criterion", "init weights", "signed constant", "rescaled"], rows) + [""]
    lines += ["Best test accuracy over prune levels, no training (weights remaining at that "
              "level in parentheses).", ""]
    sc = table.get(("large_final_same_sign", "signed_constant"))
    init = table.get(("large_final_same_sign", "init"))
    rows = [["large_final_same_sign, signed constants, best level",
             "-" if sc is None else pct(sc[0]), f"{paper['untrained_signed_constant'][0]:.0f}",
             paper["untrained_signed_constant"][1]],
            ["large_final_same_sign, initial weights, best level",
             "-" if init is None else pct(init[0]), f"about {paper['untrained_init'][0]:.0f}",
             paper["untrained_init"][1]]]
    lines += _table(["what", "ours (%)", "paper (%)", "source"], rows) + [""]
    lines += ["Claims (SPEC.md section 8):", ""] + _claim_lines(claims) + [""]
    dense_epochs = _epochs_text(budget)
    lines += ["Differences from the paper's protocol:", "",
              f"- The masks come from the dense network of `{BASELINE}` round 0, trained "
              f"{dense_epochs} (paper: {PRESETS[preset]['paper_epochs']} epochs), so w_f is less "
              "far from w_i than in the paper.",
              "- Prune levels "
              + (", ".join(map(str, budget.untrained_levels)) if budget.untrained_levels
                 else "0-24 (as the paper)") + "; one seed.", ""]
    lines += _status_note(["untrained/all_criteria"], state) + [""]

    # --- learned supermasks
    lines += ["## 5. Learned supermasks (the paper's supermask table)", ""]
    items, rows = [], []
    dense = at_round(curve(loaded.get(BASELINE), 0), 0)
    items.append(("trained dense network", dense))
    if sc is not None:
        items.append(("untrained supermask (best, signed constant)", sc[0]))
    for name, extra in budget.learned_runs:
        results = loaded.get(f"learned/{name}")
        record = ((results or {}).get("rounds") or [None])[0]
        if record is None:
            rows.append([name, "-", "-", "-", "-"])
            continue
        expected = record.get("test_accuracy_expected_mask")
        sampled = record.get("test_accuracy_sampled")
        std = record.get("test_accuracy_sampled_std", 0.0)
        items.append((f"learned supermask, {name} (expected mask)", expected))
        items.append((f"learned supermask, {name} (sampled)", sampled))
        if fc and name == "signed_constant":
            paper_value = f"{paper['learned_supermask'][0]:.1f}"
        elif not fc and name == "signed_constant" and arch in paper["learned_supermask"]:
            paper_value = f"{paper['learned_supermask'][arch][0]:.1f}"
        elif not fc and name.endswith("dynamic") and arch in paper["learned_dynamic"]:
            paper_value = f"{paper['learned_dynamic'][arch][0]:.1f} (dense {paper['learned_dynamic'][arch][1]:.1f})"
        else:
            paper_value = "-"
        rows.append([name, pct(expected), f"{pct(sampled)} ± {100 * std:.2f}",
                     pct(record.get("weights_remaining"), 1), paper_value])
    _image(lines, figure_bars(items, fig("learned"), f"{arch}: learned supermasks"),
           results_path, "learned supermasks")
    lines += _table(["kernel weights", "expected mask (%)", "sampled masks, mean ± std (%)",
                     "weights kept (%)", "paper (%)"], rows) + [""]
    learned_epochs = (f"{budget.learned_epochs:g} epochs" if budget.learned_epochs
                      else f"{budget.learned_iterations} iterations")
    lines += ["Differences from the paper's protocol:", "",
              f"- {learned_epochs} of SGD (momentum 0.9, learning rate 100, batch 250; the "
              "paper's preset); the paper trains longer.",
              f"- Accuracy of the expected mask (sigmoid(s) > 0.5) and the mean over "
              f"{budget.eval_samples} sampled masks; the paper reports one number.", ""]
    lines += _status_note([f"learned/{n}" for n, _ in budget.learned_runs], state) + [""]

    # --- tfmot baseline
    lines += ["## 6. Baseline: gradual magnitude pruning (tensorflow-model-optimization)", ""]
    names = [BASELINE] + [f"tfmot/level_{level:02d}" for level in budget.tfmot_levels]
    tfmot_points = []
    for level in budget.tfmot_levels:
        points = curve(loaded.get(f"tfmot/level_{level:02d}"))
        tfmot_points += [p for p in points if p[0] == level]
    figure_path = None
    base_points = curve(loaded.get(BASELINE), max(budget.tfmot_levels or (0,)))
    if tfmot_points or base_points:
        figure, axis = _axes(f"{arch}: lottery ticket vs tfmot gradual pruning")
        _plot_curve(axis, base_points, "lottery ticket (large_final, iterative)", color="black")
        if tfmot_points:
            _plot_curve(axis, sorted(tfmot_points), "tfmot prune_low_magnitude (one round's "
                                                    "budget)", color="tab:orange", marker="s")
        _dense_line(axis, loaded)
        axis.legend(fontsize=7, loc="lower left")
        figure_path = _save(figure, fig("tfmot"))
    _image(lines, figure_path, results_path, "tfmot baseline")
    rows = []
    base_weights = {r: w for r, w, _ in base_points}
    for level in budget.tfmot_levels:
        points = [p for p in curve(loaded.get(f"tfmot/level_{level:02d}")) if p[0] == level]
        remaining = points[0][1] if points else base_weights.get(level)
        rows.append([level, pct(remaining, 1), pct(at_round(base_points, level)),
                     pct(points[0][2]) if points else "missing"])
    lines += _table(["level (rounds)", "weights remaining (%)", "lottery ticket (%)",
                     "tfmot gradual pruning (%)"], rows) + [""]
    lines += ["Not in the paper: a standard pruning baseline for context. Each tfmot level "
              f"trains from the same initialisation for one round's budget ({_epochs_text(budget)}"
              "), pruning gradually to the level's per-layer sparsity; the lottery ticket at "
              "level r has had r + 1 rounds of training.", ""]
    lines += _status_note(names[1:], state) + [""]

    # --- blocks
    claims, speed = block_claim(loaded, budget)
    all_claims += [("blocks", c) for c in claims]
    lines += ["## 7. 1x1 vs 1x4 mask blocks (LiteRT's sparse kernel; not in the paper)", ""]
    names = [BASELINE, "blocks/large_final_1x4"]
    path = figure_lottery(loaded, names, {BASELINE: "1x1 (the paper)",
                                          "blocks/large_final_1x4": "1x4 blocks"},
                          fig("blocks"), f"{arch}: large_final lottery tickets, 1x1 vs 1x4",
                          budget.block_rounds)
    _image(lines, path, results_path, "1x1 vs 1x4")
    shown = [r for r in (3, 7, 12, 15) if r <= budget.block_rounds] or [budget.block_rounds]
    rows = []
    for name, label in ((BASELINE, "1x1"), ("blocks/large_final_1x4", "1x4")):
        points = curve(loaded.get(name), budget.block_rounds)
        rows.append([label] + [pct(at_round(points, r)) for r in shown])
    base_points = curve(loaded.get(BASELINE), budget.block_rounds)
    weights = {r: w for r, w, _ in base_points}
    lines += _table(["blocks"] + [f"round {r} ({pct(weights.get(r), 1)}%)" for r in shown],
                    rows) + [""]
    rows = []
    for name, label in (("export/large_final", "1x1"), ("export/large_final_1x4", "1x4")):
        if name not in speed:
            rows.append([label, "-", "-", "-", "-", "missing"])
            continue
        ratio, dense_latency, sparse_latency, entry, layers = speed[name]
        kernels = ", ".join(f"{layer['name']}: {layer['litert_kernel']}" for layer in layers)
        rows.append([label, f"{1e6 * dense_latency:.1f}", f"{1e6 * sparse_latency:.1f}",
                     f"{ratio:.2f}x", f"{entry.get('size_bytes', 0) / 1024:.0f}", kernels])
    lines += _table(["ticket", "dense file, us/example", "sparse file, us/example", "speed-up",
                     "sparse file KiB", "LiteRT kernel per layer"], rows) + [""]
    lines += [f"Exports of round {budget.export_round} "
              f"({pct(weights.get(budget.export_round), 1)}% remaining) with "
              "`python -m tf_lth.export --formats=tflite,tflite_sparse`; latency: LiteRT, one "
              "thread, batch 1, median over 200 test images.", ""]
    lines += ["Claim (issue 9, not the paper's):", ""] + _claim_lines(claims) + [""]
    lines += _status_note(names[1:] + ["export/large_final", "export/large_final_1x4"], state)
    lines += [""]

    # --- summary at the top
    summary = ["## Claims at a glance", ""]
    summary += _table(["section", "claim", "verdict"],
                      [[section, title, f"**{verdict['verdict']}**"]
                       for section, (title, verdict) in all_claims]) + [""]
    summary += ["Each verdict is computed from the numbers below by a stated rule; the reason "
                "beside each claim gives the measured values.", ""]
    insert_at = lines.index("## 1. Mask criteria (the paper's Figure 2)")
    lines = lines[:insert_at] + summary + lines[insert_at:]
    text = "\n".join(lines).rstrip() + "\n"
    _write_text(results_path, text)
    return text


def _epochs_text(budget: Budget) -> str:
    return f"{budget.epochs:g} epochs" if budget.epochs else f"{budget.iterations} iterations"


def _rel(path: str) -> str:
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return path


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temporary, path)


# ---- the command ---------------------------------------------------------------------------
def _has_gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _prepared(dataset: str, data_dir: str | None) -> bool:
    folder = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
        "~/tensorflow_datasets")
    return os.path.isdir(os.path.join(folder, dataset))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf_lth.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist_fc", choices=sorted(PRESETS))
    parser.add_argument("--budget", default="default", choices=["default", "smoke", "paper"])
    parser.add_argument("--out_dir", default=None,
                        help="where the run directories go (default runs/reproduce/PRESET"
                             "[_BUDGET])")
    parser.add_argument("--results", default=None,
                        help="the Markdown report (default docs/RESULTS.md for mnist_fc at the "
                             "default budget, docs/RESULTS_PRESET.md for other presets, "
                             "OUT_DIR/RESULTS.md for other budgets)")
    parser.add_argument("--figures_dir", default=None,
                        help="PNG figures (default docs/figures, or OUT_DIR/figures)")
    parser.add_argument("--dataset", default=None,
                        help="override the preset's dataset (e.g. synthetic_mnist for a check)")
    parser.add_argument("--data_dir", default=None, help="tfds data (default TFDS_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="",
                        help="comma-separated sections to run: criteria, mask_one, mask_zero, "
                             "untrained, learned, tfmot, blocks (the report covers all)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="override the budget's epochs per lottery round")
    parser.add_argument("--jobs", type=int, default=1,
                        help="sub-runs at once (each gets cores/jobs threads)")
    parser.add_argument("--plan", action="store_true", help="print the plan and exit")
    parser.add_argument("--report_only", action="store_true",
                        help="regenerate the report from existing runs; train nothing")
    parser.add_argument("--force", action="store_true",
                        help="run a CIFAR-10 preset without a GPU or prepared data")
    arguments = parser.parse_args(argv)

    preset = arguments.preset
    budget = budget_for(preset, arguments.budget)
    if arguments.epochs:
        if not arguments.epochs > 0:
            sys.stderr.write(f"error: --epochs={arguments.epochs}; allowed: a positive number.\n")
            return 2
        budget = dataclasses.replace(budget, epochs=arguments.epochs, iterations=None)
    dataset = arguments.dataset or PRESETS[preset]["dataset"]
    gpu = _has_gpu()
    suffix = "" if budget.name == "default" else f"_{budget.name}"
    out_dir = os.path.abspath(arguments.out_dir or os.path.join(ROOT, "runs", "reproduce",
                                                                preset + suffix))
    if arguments.results:
        results_path = arguments.results
    elif budget.name == "default":
        results_path = os.path.join(ROOT, "docs", "RESULTS.md" if preset == "mnist_fc"
                                    else f"RESULTS_{preset}.md")
    else:
        results_path = os.path.join(out_dir, "RESULTS.md")
    figures_dir = arguments.figures_dir or (os.path.join(ROOT, "docs", "figures")
                                            if budget.name == "default"
                                            else os.path.join(out_dir, "figures"))
    runs = plan(preset, budget, dataset, arguments.seed, gpu)
    only = [item for item in arguments.only.split(",") if item]
    sections = {"criteria", "mask_one", "mask_zero", "untrained", "learned", "tfmot", "blocks"}
    unknown = [item for item in only if item not in sections]
    if unknown:
        sys.stderr.write(f"error: --only={arguments.only!r}: unknown {unknown}; allowed: "
                         f"{', '.join(sorted(sections))}.\n")
        return 2
    print(format_plan(preset, budget, runs, out_dir), flush=True)
    if arguments.plan:
        return 0
    if not arguments.report_only and dataset == "cifar10" and not arguments.force:
        problems = []
        if not gpu:
            problems.append("no GPU found (nvidia-smi)")
        if not _prepared(dataset, arguments.data_dir):
            problems.append("CIFAR-10 is not prepared in TFDS_DATA_DIR/--data_dir")
        if problems:
            sys.stderr.write(f"error: --preset={preset} needs CIFAR-10 and a GPU: "
                             f"{'; '.join(problems)}. Pass --force to run anyway (tfds "
                             "downloads CIFAR-10 where the network allows), or "
                             "--dataset=synthetic for a pipeline check.\n")
            return 2
    os.makedirs(out_dir, exist_ok=True)
    state_path = os.path.join(out_dir, "reproduce.json")
    state = _read_json(state_path) or {}
    if arguments.report_only and not arguments.epochs and state.get("budget") == budget.name:
        budget = budget_from_dict(state.get("budget_detail")) or budget  # as it was run
        runs = plan(preset, budget, dataset, arguments.seed, gpu)
    state.update(preset=preset, budget=budget.name, budget_detail=dataclasses.asdict(budget),
                 seed=arguments.seed, dataset=dataset + (" (tfds)" if dataset in ("mnist", "cifar10") else ""),
                 machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"{'GPU' if gpu else 'no GPU'}, Python {platform.python_version()}",
                 plan_estimate_s=total_estimate(runs))
    if not arguments.report_only:
        # SIGTERM unwinds like Ctrl-C, so the running sub-run is stopped, not orphaned; its
        # completed rounds stay and the next invocation resumes it.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        selected = [run for run in runs if not only or run.figure in only or
                    (run.name == BASELINE)]
        # dependencies of what was selected run too
        needed = {dep for run in selected for dep in run.depends}
        selected = [run for run in runs if run in selected or run.name in needed]
        state.setdefault("started", _now())
        started = time.time()
        run_all(selected, out_dir, arguments.data_dir, state, state_path, arguments.jobs)
        state["last_session_seconds"] = time.time() - started
        _write_json(state_path, state)
    report(preset, budget, runs, out_dir, results_path, figures_dir, state)
    failed = [name for name, record in state.get("sub_runs", {}).items()
              if record.get("status") != "done"]
    print(f"report: {results_path}" + (f" ({len(failed)} sub-runs not complete: "
                                       f"{', '.join(failed)})" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
