"""Checks a lottery run's mask-0 action weight by weight against its definition.

`python -m tf_lth.cli.reproduce.mask_zero_check RUN_DIR...` reads the round files of
finished lottery runs (`round_NNN/initial.npz`, `final.npz`) and, for every round after the
first and every masked kernel, recomputes from the definitions in docs/semantics.md
("Mask-0 actions", "Mask-1 actions") what the round must start from, independently of the
code that made it:

- the mask: only weights kept last round stay kept, and they are the largest abs(w_f) of
  last round's kept weights (large_final; ties aside);
- the weights pruned this round: 0 or `w_i` by the action's rule, where "shrank" is
  abs(w_f) < abs(w_i), w_i the run's initial weights (for variant 2 after round 1: the
  values last round started from, as in the authors' code) and w_f last round's final
  weights;
- the weights pruned earlier: what they were given then;
- the kept weights: their own `w_i` (0 for variant 2's kept weights that shrank);
- during the round: the masks and frozen values do not change, and kept weights train.

Each check counts the weights that break it (0 expected). A claim about mask-0 actions that
does not reproduce is then not explained by the actions being done differently from how the
docs define them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SHRANK_ZERO = {"zero": None, "freeze_init": "none", "freeze_init_zero_mask": "shrank",
               "freeze_init_zero_all": "shrank", "freeze_init_zero_rev": "grew",
               "freeze_init_zero_reshuffle": "count"}


def _load(path: str) -> dict:
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _layers(state: dict) -> list:
    return sorted(key[:-len("/mask")] for key in state if key.endswith("/mask"))


def _round_dirs(run_dir: str) -> list:
    names = sorted(name for name in os.listdir(run_dir) if name.startswith("round_")
                   and os.path.exists(os.path.join(run_dir, name, "DONE")))
    return [os.path.join(run_dir, name) for name in names]


def check_transition(action: str, w_init: np.ndarray, w_final: np.ndarray,
                     prev: dict, start: dict, end: dict, mask_one: str = "none") -> dict:
    """Counts of weights breaking each rule for one kernel from one round to the next.

    `prev` is last round's {"mask", "frozen"} at its start; `start` and `end` this round's
    {"kernel", "mask", "frozen"} at its start and end."""
    m_prev, m = prev["mask"] > 0.5, start["mask"] > 0.5
    newly = m_prev & ~m
    earlier = ~m_prev
    shrank = np.abs(w_final) < np.abs(w_init)
    counts = {"pruned_now": int(newly.sum()), "kept": int(m.sum())}
    counts["revived"] = int((m & ~m_prev).sum())
    kept_mag, dropped_mag = np.abs(w_final[m]), np.abs(w_final[newly])
    counts["criterion"] = int((dropped_mag > kept_mag.min()).sum()) \
        if kept_mag.size and dropped_mag.size else 0
    rule = SHRANK_ZERO[action]
    frozen = start["frozen"]
    zeroed = newly & (frozen == 0)
    at_init = newly & (frozen == w_init)
    counts["zeroed"], counts["frozen_at_init"] = int(zeroed.sum()), int(at_init.sum())
    counts["neither"] = int((newly & ~zeroed & ~at_init).sum())
    if rule is None:  # zero: every pruned weight is 0
        wrong = newly & ~zeroed
    elif rule == "none":
        wrong = newly & ~at_init
    elif rule == "shrank":
        wrong = newly & ~np.where(shrank, zeroed, at_init)
    elif rule == "grew":
        wrong = newly & ~np.where(shrank, at_init, zeroed)
    else:  # the reshuffle control: variant 1's number of zeros, the rest at w_i
        wrong = newly & ~zeroed & ~at_init
        counts["zero_count_off"] = abs(int(zeroed.sum()) - int((newly & shrank).sum()))
    counts["pruned_now_wrong"] = int(wrong.sum())
    counts["earlier_changed"] = int((earlier & (frozen != prev["frozen"])).sum())
    effective = np.where(m, start["kernel"], frozen)
    expected_kept = np.where(shrank, 0.0, w_init) if action == "freeze_init_zero_all" \
        else w_init
    counts["kept_start_wrong"] = int((m & (effective != expected_kept)).sum()) \
        if mask_one == "none" else 0
    counts["variant2_zero_starts"] = int((m & (effective == 0) & (w_init != 0)).sum())
    counts["mask_moved_in_training"] = int((end["mask"] != start["mask"]).sum())
    counts["frozen_moved_in_training"] = int((~m & (end["frozen"] != frozen)).sum())
    counts["kept_trained"] = int((m & (end["kernel"] != start["kernel"])).sum())
    return counts


VIOLATIONS = ("revived", "criterion", "pruned_now_wrong", "earlier_changed", "kept_start_wrong",
              "mask_moved_in_training", "frozen_moved_in_training", "zero_count_off")


def check_run(run_dir: str) -> dict:
    """{"action", "rounds": [{"round", "layers": {layer: counts}}], "violations": total}."""
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as stream:
        config = json.load(stream)
    action = config.get("mask_zero_action", "zero")
    mask_one = config.get("mask_one_action", "none")
    rounds = _round_dirs(run_dir)
    if len(rounds) < 2:
        raise ValueError(f"{run_dir}: fewer than two finished rounds; nothing to check")
    first = _load(os.path.join(rounds[0], "initial.npz"))
    layers = _layers(first)
    report, previous = [], None
    for index, folder in enumerate(rounds):
        start = _load(os.path.join(folder, "initial.npz"))
        end = _load(os.path.join(folder, "final.npz"))
        if previous is not None:
            # variant 2's w_i is the previous round's start (the kernel alone is the
            # effective kernel at a round's start); every other action's is the first
            reference = previous[0] if action == "freeze_init_zero_all" and index > 1 \
                else first
            per_layer = {}
            for layer in layers:
                per_layer[layer.split("/")[-1]] = check_transition(
                    action, reference[f"{layer}/kernel"], previous[1][f"{layer}/kernel"],
                    {"mask": previous[0][f"{layer}/mask"],
                     "frozen": previous[0][f"{layer}/frozen"]},
                    {key: start[f"{layer}/{key}"] for key in ("kernel", "mask", "frozen")},
                    {key: end[f"{layer}/{key}"] for key in ("kernel", "mask", "frozen")},
                    mask_one)
            report.append({"round": int(os.path.basename(folder)[6:]), "layers": per_layer})
        previous = (start, end)
    total = sum(counts.get(key, 0) for entry in report for counts in entry["layers"].values()
                for key in VIOLATIONS)
    return {"run_dir": run_dir, "action": action, "rounds": report, "violations": total}


def summary_line(result: dict) -> str:
    """'freeze_init: 24 rounds x 3 kernels, 212,000 pruned weights checked, 0 violations'."""
    rounds = result["rounds"]
    pruned = sum(c["pruned_now"] for entry in rounds for c in entry["layers"].values())
    zeroed = sum(c["zeroed"] for entry in rounds for c in entry["layers"].values())
    kept_trained = all(c["kept_trained"] > 0 for entry in rounds
                       for c in entry["layers"].values() if c["kept"])
    return (f"{result['action']}: rounds {rounds[0]['round']}-{rounds[-1]['round']} x "
            f"{len(rounds[0]['layers'])} kernels, {pruned:,} weights pruned ({zeroed:,} of "
            f"them to 0), {result['violations']} breaking a rule; kept weights trained in "
            f"every round: {'yes' if kept_trained else 'no'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tf_lth.cli.reproduce.mask_zero_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", help="finished lottery run directories")
    parser.add_argument("--json", default=None, help="also write every count to this file")
    arguments = parser.parse_args(argv)
    results = []
    for run_dir in arguments.run_dirs:
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            sys.stderr.write(f"error: {run_dir}: no config.json; allowed: a tf_lth lottery "
                             "run directory.\n")
            return 2
        try:
            results.append(check_run(run_dir))
        except (ValueError, OSError, KeyError) as error:
            sys.stderr.write(f"error: {run_dir}: {error}\n")
            return 2
        print(summary_line(results[-1]), flush=True)
    if arguments.json:
        from tf_lth.core import run_files
        run_files.write_json(arguments.json, results)
    return 1 if any(result["violations"] for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
