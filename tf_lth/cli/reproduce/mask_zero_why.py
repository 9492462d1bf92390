"""What freeze_init's frozen weights do: a measured explanation for the mask-0 claim.

`python -m tf_lth.cli.reproduce.mask_zero_why --preset=mnist_fc --budget=paper
--out_dir=DIR [--archive=ARCHIVE] [--jobs=2]`

CLI layer. The paper says pruned weights must be zero, not frozen at their initial values.
Where that claim does not reproduce, this measures one explanation instead of guessing it:
at the mask-0 section's last level a freeze_init network is the whole initial network with
a few weights trained, so its frozen weights may act as fixed random features. Four
one-shot lottery runs of `python -m tf_lth.train` at that level, with the ticket's budget
and seed, {large_final, random} mask x {zero, freeze_init}, show what the frozen weights
are worth with and without a good mask; each freeze_init run is then evaluated again with
its frozen weights set to 0 after training, which shows whether the trained weights use
them. The numbers go to ARCHIVE/mask_zero_why.json (else DIR/mask_zero_why.json), which
the report's mask-0 subsection reads (docs/semantics.md, "Why freeze_init is not below the
ticket").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from tf_lth.core import preemption, run_files
from tf_lth.cli.reproduce.execute import code_commit, is_complete, run_all
from tf_lth.cli.reproduce.paper import BUDGETS, budget_for
from tf_lth.cli.reproduce.plan import BASELINE, PRESETS, SubRun, plan

CASES = (("large_final", "zero"), ("large_final", "freeze_init"),
         ("random", "zero"), ("random", "freeze_init"))
FILE = "mask_zero_why.json"
FOLDER = "mask_zero_why"  # the runs, under --out_dir


def run_name(criterion: str, action: str) -> str:
    return f"{FOLDER}/{criterion}_{action}"


def sub_runs(preset: str, budget, dataset: str | None = None) -> list:
    """The four one-shot runs: the ticket's flags (budget, seed), pruned in one step to the
    mask-0 section's last level."""
    ticket = next(run for run in plan(preset, budget, dataset) if run.name == BASELINE)
    per_round = (ticket.estimate_s - ticket.fixed_s) / (ticket.rounds + 1)
    fixed = ticket.fixed_s / (ticket.rounds + 1) * 2
    return [SubRun(run_name(criterion, action), "mask_zero", "lottery",
                   {**ticket.flags, "rounds": budget.mask_zero_rounds, "one_shot": True,
                    "criterion": criterion, "mask_zero_action": action},
                   rounds=1, estimate_s=fixed + 2 * per_round, fixed_s=fixed)
            for criterion, action in CASES]


def _accuracy(model, images, labels) -> float:
    import numpy as np

    logits = model.predict(images, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def measure(run_dir: str) -> dict:
    """The pruned round of one run: test accuracy at the lowest validation loss (as the
    report reads it), at the end of training, and at the end with the frozen pruned weights
    set to 0; the weights kept and the kept (trained) kernel weights."""
    import numpy as np

    from tf_lth.cli.export import load_round_model
    from tf_lth.core.wrap import kernel_slots

    config, data, model, round_index = load_round_model(run_dir)
    results = run_files.read_json(os.path.join(run_dir, "results.json"))
    record = next(entry for entry in results["rounds"] if entry["round"] == round_index)
    slots = kernel_slots(model)
    measured = {
        "criterion": config.criterion, "mask_zero_action": config.mask_zero_action,
        "prune_level": record["prune_level"], "weights_remaining": record["weights_remaining"],
        "kept_kernel_weights": int(sum(np.sum(slot.mask.numpy()) for slot in slots)),
        "kernel_weights": int(sum(np.size(slot.mask.numpy()) for slot in slots)),
        "test_accuracy": record["best"]["test_accuracy"],
        "end_test_accuracy": _accuracy(model, data.test_images, data.test_labels),
    }
    if config.mask_zero_action != "zero":
        for slot in slots:
            slot.frozen.assign(np.zeros_like(slot.frozen.numpy()))
        measured["frozen_zeroed_test_accuracy"] = _accuracy(model, data.test_images,
                                                            data.test_labels)
    return measured


def write(path: str, runs: list, out_dir: str, budget, commit: str) -> dict:
    """Measures every finished run and writes the file atomically; returns its content."""
    cases = {}
    for run in runs:
        if is_complete(run, out_dir):
            cases[run.name] = {**measure(run.run_dir(out_dir)), "flags": run.flags}
    content = {"level": budget.mask_zero_rounds, "budget": budget.name, "commit": commit,
               "cases": cases}
    run_files.write_json(path, content)
    return content


def read(*folders) -> dict | None:
    """The measurements from the first of `folders` that holds them."""
    for folder in folders:
        if folder:
            found = run_files.read_json_or_none(os.path.join(folder, FILE))
            if found and found.get("cases"):
                return found
    return None


@dataclasses.dataclass
class Verdict:
    """What the measurements say, by the rules of `explain`."""

    drops: dict             # {mask: points lost when the frozen weights are set to 0}
    uses_frozen: bool       # every drop >= USES_POINTS
    features_worth: float   # random mask: freeze_init minus zero, in points
    is_explained: bool      # both rules hold


USES_POINTS = 10.0     # the trained weights rely on the frozen ones
FEATURES_POINTS = 10.0  # with a random mask, the frozen weights add at least this


def explain(content: dict) -> Verdict | None:
    """The verdict, or None while a case is missing."""
    cases = {(case["criterion"], case["mask_zero_action"]): case
             for case in content.get("cases", {}).values()}
    if any(key not in cases for key in CASES):
        return None
    drops = {criterion: 100 * (cases[(criterion, "freeze_init")]["end_test_accuracy"]
                               - cases[(criterion, "freeze_init")]["frozen_zeroed_test_accuracy"])
             for criterion in ("large_final", "random")}
    worth = 100 * (cases[("random", "freeze_init")]["test_accuracy"]
                   - cases[("random", "zero")]["test_accuracy"])
    uses = all(drop >= USES_POINTS for drop in drops.values())
    return Verdict(drops, uses, worth, uses and worth >= FEATURES_POINTS)


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="python -m tf_lth.cli.reproduce.mask_zero_why",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mnist_fc", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--budget", default="paper", help=f"one of {', '.join(BUDGETS)}")
    parser.add_argument("--out_dir", required=True, help="the reproduction's run folder")
    parser.add_argument("--archive", default=None, help="where the measurements are kept")
    parser.add_argument("--dataset", default=None,
                        help="override the preset's dataset (synthetic_mnist for a check)")
    parser.add_argument("--data_dir", default=None, help="tfds data (else TFDS_DATA_DIR)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    arguments = parser.parse_args(argv)
    for flag, value, allowed in (("--preset", arguments.preset, PRESETS),
                                 ("--budget", arguments.budget, BUDGETS)):
        if value not in allowed:
            sys.stderr.write(f"{flag}={value!r} is not allowed; allowed: "
                             f"{', '.join(allowed)}.\n")
            return 2
    if arguments.jobs < 1:
        sys.stderr.write(f"--jobs={arguments.jobs} is not allowed; allowed: 1 or more.\n")
        return 2
    if arguments.archive and os.path.isfile(arguments.archive):
        sys.stderr.write(f"--archive={arguments.archive!r} is a file; allowed: a folder.\n")
        return 2
    budget = budget_for(arguments.preset, arguments.budget)
    runs = sub_runs(arguments.preset, budget, arguments.dataset)
    out_dir = os.path.abspath(arguments.out_dir)
    state_path = os.path.join(out_dir, FOLDER, "state.json")
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    state = run_files.read_json_or_none(state_path) or {}
    preemption.install()
    status = run_all(runs, out_dir, arguments.data_dir, state, state_path, arguments.jobs)
    target = os.path.join(arguments.archive or out_dir, FILE)
    content = write(target, runs, out_dir, budget, code_commit())
    for name, case in content["cases"].items():
        zeroed = case.get("frozen_zeroed_test_accuracy")
        print(f"{name}: {100 * case['test_accuracy']:.2f}% at the lowest validation loss, "
              f"{100 * case['end_test_accuracy']:.2f}% at the end"
              + (f", {100 * zeroed:.2f}% with the frozen weights set to 0" if zeroed is not None
                 else ""))
    print(f"measurements: {target}")
    return 0 if all(status.get(run.name, {}).get("status") == "done" for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
