"""The plan: every sub-run of a reproduction, its flags, dependencies and time estimate."""

from __future__ import annotations

import dataclasses
import os

from tf_lth.core import choices, data
from tf_lth.cli.reproduce.paper import (DEFAULT_JOBS, DEFAULT_MINUTES, LEARNED_RUNS, MIN_EPOCHS,
                                    PRESETS, SPARSE_METHODS, Budget, default_fc_budget)

BASELINE = "criteria/large_final"  # the lottery ticket every figure compares against
# The report's sections, one per figure; --only picks among them.
SECTIONS = ("criteria", "mask_one", "mask_zero", "untrained", "learned", "tfmot", "blocks",
            "sparse")
# Not the paper's: the 90-minute default budget is fitted without them (they add their own).
EXTRA_SECTIONS = ("sparse",)

# Seconds on 2 CPU cores with nothing else running (`duration` doubles the training part
# for --jobs=2). fc, measured through the CLI with two runs at once, one thread each (as
# `execute` runs them): a lottery round of 1832 steps with 20 evaluations took 5.1-5.3 s,
# i.e. 2 x (1832 x 1.2 ms + 20 x 30 ms) within 10%; start-up, plots and final writes of a
# 2-round run took about 20 s. A learned supermask ran 2000 steps at batch 250 in 12 s.
# tfmot runs legacy Keras in its own worker (unchanged). Conv: rough, from bench.
SPEEDS = {
    "fc": dict(step=0.0012, step_learned=0.0030, eval=0.03, between=1.0, startup=18.0,
               sweep_eval=0.04, tfmot_step=0.006, tfmot_startup=12.0, export=35.0),
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
    figure: str               # its section (SECTIONS)
    kind: str                 # lottery, untrained, learned, tfmot, export
    flags: dict
    depends: tuple = ()
    rounds: int = 0           # the last round (lottery), or tfmot level
    estimate_s: float = 0.0
    export_round: int = 0
    fixed_s: float = 0.0      # of estimate_s: start-up and between rounds (one thread anyway)

    def run_dir(self, out_dir: str) -> str:
        """The run directory (for an export: the exported run's directory)."""
        if self.kind == "export":
            return self.flags["run_dir"].format(out_dir=out_dir)
        return os.path.join(out_dir, *self.name.split("/"))

    def export_marker(self, out_dir: str) -> str:
        return os.path.join(self.run_dir(out_dir), "export", "reproduce_export.json")


def steps_per_epoch(preset: str, batch: int, dataset: str) -> int:
    size = data.SYNTHETIC_SIZES["num_train"] if dataset.startswith("synthetic") else \
        PRESETS[preset].train_size
    return max(1, size // batch)


def iterations(budget: Budget, steps: int, learned: bool = False) -> int:
    """Training iterations of a lottery round (or of a learned supermask) under `budget`."""
    epochs = budget.learned_epochs if learned else budget.epochs
    fixed = budget.learned_iterations if learned else budget.iterations
    return int(fixed) if fixed else max(1, int(round(epochs * steps)))


def _speed(arch: str, gpu: bool) -> dict:
    speed = dict(SPEEDS[arch])
    if gpu and arch != "fc":
        for key in ("step", "step_learned", "eval", "sweep_eval", "tfmot_step"):
            speed[key] /= GPU_SPEEDUP
    return speed


def plan(preset: str, budget: Budget, dataset: str | None = None, seed: int = 0,
         gpu: bool = False) -> list:
    """The sub-runs of a reproduction, in run order, each with its time estimate."""
    info = PRESETS[preset]
    dataset = dataset or info.dataset
    speed = _speed(info.arch, gpu)
    common = dict(dataset=dataset, arch=info.arch, seed=seed, optimizer="adam",
                  learning_rate=info.learning_rate, batch_size=60,
                  eval_every=budget.eval_every, prune_rates=info.prune_rates)
    if budget.epochs:
        common["epochs"] = budget.epochs
    else:
        common["iterations"] = budget.iterations
    steps = iterations(budget, steps_per_epoch(preset, 60, dataset))
    evals = 2 + steps // budget.eval_every
    round_s = steps * speed["step"] + evals * speed["eval"] + speed["between"]
    runs = _lottery_runs(budget, common, lambda rounds: speed["startup"] + (rounds + 1) * round_s,
                         lambda rounds: speed["startup"] + (rounds + 1) * speed["between"])
    # Run order: the open claims first. The learned supermasks (one sitting each), then the
    # baseline and mask-0 runs seed by seed, then the criteria and the rest.
    runs[0:0] = _learned_runs(budget, common, speed, preset, dataset)
    runs.append(_untrained_run(budget, common, speed))
    for level in budget.tfmot_levels:
        runs.append(SubRun(
            f"tfmot/level_{level:02d}", "tfmot", "tfmot",
            {**common, "experiment": "tfmot_baseline", "rounds": level, "one_shot": True},
            rounds=level, fixed_s=speed["startup"] + speed["tfmot_startup"],
            estimate_s=speed["startup"] + speed["tfmot_startup"]
            + steps * speed["tfmot_step"] + evals * speed["eval"]))
    for source in (BASELINE, "blocks/large_final_1x4"):
        runs.append(SubRun(
            f"export/{source.split('/')[-1]}", "blocks", "export",
            {"run_dir": "{out_dir}/" + source, "round": budget.export_round,
             "formats": "tflite,tflite_sparse"},
            depends=(source,), export_round=budget.export_round,
            fixed_s=speed["startup"] + speed["export"],
            estimate_s=speed["startup"] + speed["export"]))
    runs += _sparse_runs(budget, common, speed, steps, evals)
    return after_sources(runs)


def after_sources(runs: list) -> list:
    """The runs in order, each that needs another's weights (the untrained sweep, an export)
    moved to just after its source: both then finish in one sitting, and an archive keeps
    results, not weights (`tf_lth.cli.reproduce.archive`)."""
    ordered = [run for run in runs if not run.depends]
    for run in runs:
        if not run.depends:
            continue
        names = [item.name for item in ordered]
        index = max(names.index(dep) for dep in run.depends if dep in names) + 1
        while index < len(ordered) and set(ordered[index].depends) & set(run.depends):
            index += 1  # after the source's earlier dependents, in plan order
        ordered.insert(index, run)
    return ordered


def sparse_run_name(method: str, sparsity: float) -> str:
    """sparse/rigl_95: a sparse-training sub-run (docs/sparse_training.md)."""
    return f"sparse/{method}_{round(100 * sparsity)}"


def _sparse_runs(budget: Budget, common: dict, speed: dict, steps: int, evals: int) -> list:
    """The sparse section: method x sparsity x seed, each one lottery round's `steps`."""
    runs = []
    period = {}  # a short budget (smoke) still prunes and updates about ten times
    if steps < 1000:
        period = {"pruning_frequency": max(1, steps // 10), "update_every": max(1, steps // 10)}
    for sparsity in budget.sparse_sparsities:
        for method, (_, flags) in SPARSE_METHODS.items():
            tfmot = method == "tfmot"
            step_s = speed["tfmot_step"] if tfmot else speed["step"]
            fixed = speed["startup"] + (speed["tfmot_startup"] if tfmot else 0.0)
            for index, name in enumerate(seed_names(sparse_run_name(method, sparsity),
                                                    budget.sparse_seeds)):
                runs.append(SubRun(
                    name, "sparse", "sparse",
                    {**common, **flags, "final_sparsity": sparsity,
                     "seed": common["seed"] + index,
                     **{key: value for key, value in period.items()
                        if (key == "update_every") == (flags["experiment"] == "dynamic_sparse")}},
                    fixed_s=fixed, estimate_s=fixed + steps * step_s + evals * speed["eval"]))
    return runs


def seed_names(name: str, seeds: int) -> list:
    """The sub-runs of `name` with `seeds` seeds: NAME (--seed=s), NAME_seed1 (s+1), ..."""
    return [name] + [f"{name}_seed{index}" for index in range(1, seeds)]


def _lottery_runs(budget: Budget, common: dict, estimate, fixed) -> list:
    """The baseline and mask-0 runs (seed by seed), criteria, mask-1 and 1x4-block runs, in
    that order: the runs behind the open claims come first."""
    runs = []

    def lottery(name, figure, rounds, **flags):
        runs.append(SubRun(name, figure, "lottery",
                           {**common, "experiment": "lottery", "rounds": rounds,
                            "criterion": "large_final", "mask_one_action": "none",
                            "mask_zero_action": "zero", **flags},
                           rounds=rounds, estimate_s=estimate(rounds), fixed_s=fixed(rounds)))

    deepest = max(budget.criteria_rounds, budget.mask_one_rounds, budget.mask_zero_rounds,
                  budget.block_rounds, budget.export_round)
    # Seed by seed: the ticket, then each mask-0 action, so that an interrupted run already
    # holds every mask-0 comparison at the seeds it finished.
    baselines = seed_names(BASELINE, budget.seeds)
    zero_runs = {action: seed_names(f"mask_zero/{action}", budget.mask_zero_seeds)
                 for action in budget.mask_zero_actions}
    for index in range(max(budget.seeds, budget.mask_zero_seeds)):
        if index < len(baselines):
            lottery(baselines[index], "criteria", deepest, seed=common["seed"] + index)
        for action, names in zero_runs.items():
            if index < len(names):
                lottery(names[index], "mask_zero", budget.mask_zero_rounds,
                        mask_zero_action=action, seed=common["seed"] + index)
    for criterion in budget.criteria:
        if criterion != "large_final":
            lottery(f"criteria/{criterion}", "criteria", budget.criteria_rounds,
                    criterion=criterion)
    for action in budget.mask_one_actions:
        lottery(f"mask_one/{action}", "mask_one", budget.mask_one_rounds,
                mask_one_action=action)
    lottery("blocks/large_final_1x4", "blocks", budget.block_rounds, mask_block="1x4")
    return runs


def untrained_levels(budget: Budget) -> tuple:
    return budget.untrained_levels or tuple(range(25))


def _untrained_run(budget: Budget, common: dict, speed: dict) -> SubRun:
    """One sweep: every criterion of `choices.CRITERIA` x prune level x weight treatment."""
    levels = untrained_levels(budget)
    evaluations = len(choices.CRITERIA) * len(levels) * len(choices.WEIGHT_TREATMENTS)
    return SubRun(
        "untrained/all_criteria", "untrained", "untrained",
        {**common, "experiment": "untrained_supermask", "criterion": ",".join(choices.CRITERIA),
         "source_run": "{out_dir}/" + BASELINE,
         "prune_levels": ",".join(map(str, levels)),
         "weight_treatments": ",".join(choices.WEIGHT_TREATMENTS)},
        depends=(BASELINE,), fixed_s=speed["startup"],
        estimate_s=speed["startup"] + evaluations * speed["sweep_eval"])


def _learned_runs(budget: Budget, common: dict, speed: dict, preset: str, dataset: str) -> list:
    steps = iterations(budget, steps_per_epoch(preset, 250, dataset), True)
    runs = []
    for name, extra in budget.learned_runs:
        flags = {**common, "experiment": "learned_supermask", "optimizer": "sgd",
                 "momentum": 0.9, "learning_rate": 100.0, "batch_size": 250,
                 "eval_every": budget.learned_eval_every, "sigmoid_bias": 0.0,
                 "mask_sampling": "bernoulli", "eval_samples": budget.eval_samples, **extra}
        for key in ("epochs", "iterations", "prune_rates"):
            flags.pop(key, None)
        flags["iterations"] = steps
        evals = 2 + steps // budget.learned_eval_every + budget.eval_samples
        runs.append(SubRun(f"learned/{name}", "learned", "learned", flags,
                           fixed_s=speed["startup"], estimate_s=speed["startup"] + steps * speed["step_learned"]
                           + evals * speed["eval"]))
    return runs


def total_estimate(runs: list) -> float:
    """Seconds of the whole machine: the sum of the sub-runs' estimates (one at a time)."""
    return sum(run.estimate_s for run in runs)


def duration(run: SubRun, jobs: int, cores: int = 2) -> float:
    """A sub-run's estimated seconds with `jobs` at once on `cores` cores. Its start-up and
    between-round work is single-threaded and takes as long; its training and evaluation get
    cores // jobs threads (as `execute` sets them) instead of `cores`, and are taken to slow
    down in proportion (conservative: the fc network's small matrices scale less than
    linearly with threads)."""
    slowdown = cores / max(1, cores // max(1, jobs))
    return run.fixed_s + (run.estimate_s - run.fixed_s) * slowdown


def wall_estimate(runs: list, jobs: int = 1, cores: int = 2) -> float:
    """Wall seconds of the plan with `jobs` sub-runs at once, scheduled as `execute` does (in
    plan order, each once its dependencies have finished)."""
    jobs = max(1, jobs)
    finished, free_at, names = {}, [0.0] * jobs, {run.name for run in runs}
    for run in runs:
        ready = max([finished[dep] for dep in run.depends if dep in names] or [0.0])
        slot = min(range(jobs), key=lambda index: free_at[index])
        start = max(free_at[slot], ready)
        finished[run.name] = free_at[slot] = start + duration(run, jobs, cores)
    return max(finished.values(), default=0.0)


def default_epochs(preset: str = "mnist_fc", jobs: int = DEFAULT_JOBS,
                   minutes: float = DEFAULT_MINUTES, dataset: str | None = None,
                   budget: Budget | None = None) -> int:
    """Whole epochs per lottery round such that the plan's wall estimate with `jobs` fits
    `minutes`; at least MIN_EPOCHS (then the estimate may exceed `minutes`). For mnist_fc
    with the defaults this is paper.DEFAULT_FC_EPOCHS, the default budget's epochs."""
    if budget is None:
        budget = default_fc_budget(LEARNED_RUNS)

    def fits(epochs):
        runs = plan(preset, dataclasses.replace(budget, epochs=epochs, iterations=None),
                    dataset)
        return wall_estimate(paper_runs(runs), jobs) <= 60 * minutes

    epochs = MIN_EPOCHS
    while fits(epochs + 1) and epochs < PRESETS[preset].paper_epochs:
        epochs += 1
    return epochs


def paper_runs(runs: list) -> list:
    """The sub-runs of the paper's sections (not `EXTRA_SECTIONS`)."""
    return [run for run in runs if run.figure not in EXTRA_SECTIONS]


def minutes(seconds: float) -> str:
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
                     f"~{minutes(run.estimate_s)}")
    walls = ", ".join(f"{minutes(wall_estimate(runs, jobs))} with --jobs={jobs}"
                      for jobs in (1, 2))
    lines.append(f"estimated total: {minutes(total_estimate(runs))} of machine time; wall "
                 f"{walls} (2 CPU cores, nothing else running" +
                 (")" if PRESETS[preset].arch == "fc" else "; conv estimates are rough)"))
    extra = [run for run in runs if run.figure in EXTRA_SECTIONS]
    if extra:
        lines.append(f"of which sections {', '.join(EXTRA_SECTIONS)} (not the paper's): "
                     f"{len(extra)} sub-runs, {minutes(wall_estimate(extra, 2))} with --jobs=2; "
                     f"the paper's sections alone: "
                     f"{minutes(wall_estimate(paper_runs(runs), 2))} with --jobs=2")
    return "\n".join(lines)
