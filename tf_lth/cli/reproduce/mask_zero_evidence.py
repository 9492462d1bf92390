"""The evidence under the mask-0 claims of a paper-budget report.

CLI layer. Where a mask-0 claim does not reproduce at the paper's budget, the report does
not stop at "not the budget": it shows each seed's window means (the spread the verdict
rests on), says how the actions were checked against the authors' code
(docs/semantics.md, "Against the authors' code"), and sets beside variant 2 the sub-runs
that an earlier rule made, kept in the archive's `superseded/` folder, so the effect of
that rule on the numbers is measured, not guessed.
"""

from __future__ import annotations

import glob
import os

from tf_lth.core import run_files
from tf_lth.cli.reproduce import mask_zero_why
from tf_lth.cli.reproduce.claims import curve, markdown_table, pct, window_mean
from tf_lth.cli.reproduce.paper import MASK_ZERO_ACTIONS
from tf_lth.cli.reproduce.plan import BASELINE, seed_names

SUPERSEDED = "superseded"
EARLIER_VARIANT_2 = "variant2_first_w_init"
ACTIONS = ("zero",) + MASK_ZERO_ACTIONS  # the ticket, then the paper's mask-0 actions


def _name(action: str) -> str:
    return BASELINE if action == "zero" else f"mask_zero/{action}"


def seed_window_means(loaded: dict, action: str, seeds: int, rounds: list,
                      max_round: int) -> list:
    """[(seed, window mean or None)] of one action, seed by seed."""
    rows = []
    for seed, name in enumerate(seed_names(_name(action), seeds)):
        points = curve(loaded.get(name), max_round)
        rows.append((seed, window_mean(points, rounds) if points else None))
    return rows


def superseded_variant_2(archive_dir: str | None) -> list:
    """[(seed, results)] of the variant 2 sub-runs made by the earlier rule, if archived."""
    if not archive_dir:
        return []
    folder = os.path.join(archive_dir, SUPERSEDED, EARLIER_VARIANT_2)
    found = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        record = run_files.read_json_or_none(path) or {}
        results = record.get("results")
        if results:
            found.append((int((record.get("flags") or {}).get("seed", 0)), results))
    return found


def evidence_lines(loaded: dict, budget, archive_dir: str | None, mid: list, high: list,
                   labels: dict, mid_label: str, high_label: str,
                   out_dir: str | None = None) -> list:
    """The subsection's Markdown lines (empty when no mask-0 sub-run has results)."""
    if not mid and not high:
        return []
    max_round = budget.mask_zero_rounds
    seeds = {"zero": budget.seeds}
    seeds.update({action: budget.mask_zero_seeds for action in ACTIONS[1:]})
    width = max(seeds.values())
    header = ["mask-0 action", "window"] + [f"seed {seed}" for seed in range(width)]
    rows = []
    for action in ACTIONS:
        for window, rounds in ((mid_label, mid), (high_label, high)):
            cells = seed_window_means(loaded, action, seeds[action], rounds, max_round)
            if all(value is None for _, value in cells):
                continue
            rows.append([labels.get(action, action), window]
                        + [pct(value) if value is not None else "-" for _, value in cells]
                        + ["-"] * (width - len(cells)))
    earlier = superseded_variant_2(archive_dir)
    for seed, results in earlier:
        points = curve(results, max_round)
        for window, rounds in ((mid_label, mid), (high_label, high)):
            cells = ["-"] * width
            if seed < width:
                cells[seed] = pct(window_mean(points, rounds))
            rows.append([f"variant 2, earlier rule (seed {seed})", window] + cells)
    if not rows:
        return []
    lines = ["### What was checked under the mask-0 claims", "",
             "Each seed's mean test accuracy over the claims' windows (%):", ""]
    lines += markdown_table(header, rows) + [""]
    lines += [
        "- **Semantics.** Every mask-0 action was restated from the authors' code and "
        "checked round by round on a small case: the masks, the kernels each round starts "
        "from and the frozen values of `find_ticket` equal the authors' for zero, "
        "freeze_init and variants 1 and 2 over four rounds "
        "(`tests/test_authors_mask_zero.py`; docs/semantics.md, \"Against the authors' "
        "code\"), and the command line gives the same values as `find_ticket` "
        "(`tests/test_round_engine.py`). freeze_init and variant 1 were already equal to "
        "the authors'; `python -m tf_lth.cli.reproduce.mask_zero_check RUN_DIR` checks a "
        "finished run's round files weight by weight against the same rules.",
        "- **Variant 2's rule.** The authors compare each round's final weights with the "
        "values that round started from, so a kept weight started at 0 stays at 0; tf_lth "
        "before 2026-12-06 compared them with the first round's weights. "
        + ("The rows \"earlier rule\" above are the sub-runs made that way (archived in "
           f"`{SUPERSEDED}/{EARLIER_VARIANT_2}`); the variant 2 rows follow the authors' rule."
           if earlier else "Every variant 2 row above follows the authors' rule."),
        "- **Budget and seeds.** Every round trains the paper's "
        f"{budget.epochs_text()} with early stopping by validation loss; the ticket and each "
        "mask-0 action have "
        f"{budget.mask_zero_seeds} seeds, so a gap is read against the seed spread above.",
    ]
    return lines + why_lines(mask_zero_why.read(archive_dir, out_dir)) + [""]


def _case(content: dict, criterion: str, action: str) -> dict | None:
    return content["cases"].get(mask_zero_why.run_name(criterion, action))


def why_summary(content: dict | None) -> str:
    """One sentence for the claim's "What could explain it" (empty until measured)."""
    verdict = mask_zero_why.explain(content) if content else None
    if verdict is None:
        return ""
    if verdict.is_explained:
        return ("Measured: at the last level freeze_init trains a few weights inside the "
                "whole initial network, whose frozen weights the trained ones use as random "
                f"features (worth {verdict.features_worth:+.1f} points with a random mask); "
                "see \"What the frozen weights do\" below.")
    return ("What the frozen weights contribute was measured, and by its rules they do not "
            "explain it as random features; see \"What the frozen weights do\" below.")


def why_lines(content: dict | None) -> list:
    """The bullet and table of `mask_zero_why`'s measurements (empty until measured)."""
    if not content:
        return []
    header = ["mask", "mask-0 action", "weights kept", "trained kernel weights",
              "test accuracy at the lowest validation loss", "at the end of training",
              "at the end, frozen weights set to 0"]
    rows = []
    for criterion, action in mask_zero_why.CASES:
        case = _case(content, criterion, action)
        if not case:
            rows.append([criterion, action] + ["not run yet"] + ["-"] * 4)
            continue
        zeroed = case.get("frozen_zeroed_test_accuracy")
        rows.append([criterion, action, f"{pct(case['weights_remaining'], 2)}%",
                     f"{case['kept_kernel_weights']:,} of {case['kernel_weights']:,}",
                     pct(case["test_accuracy"]), pct(case["end_test_accuracy"]),
                     pct(zeroed) if zeroed is not None else "- (already 0)"])
    lines = [
        "- **What the frozen weights do.** One-shot runs to the last level (round "
        f"{content['level']}, the ticket's budget and seed; "
        "`python -m tf_lth.cli.reproduce.mask_zero_why`), each with a large_final or a "
        "random mask, and each freeze_init network evaluated again after training with its "
        "frozen weights set to 0:",
        "",
    ] + ["  " + line for line in markdown_table(header, rows)] + [""]
    verdict = mask_zero_why.explain(content)
    if verdict is None:
        return lines
    freeze, drops = _case(content, "large_final", "freeze_init"), verdict.drops
    rules = (f"Rules: the trained weights use the frozen ones when setting those to 0 costs "
             f"at least {mask_zero_why.USES_POINTS:.0f} points (here {drops['large_final']:.1f} "
             f"with large_final, {drops['random']:.1f} with random); they are features when, "
             f"with a random mask, freeze_init beats zero by at least "
             f"{mask_zero_why.FEATURES_POINTS:.0f} points (here "
             f"{verdict.features_worth:+.1f}).")
    if verdict.is_explained:
        lines.append(
            f"  So at this level freeze_init is not a sparse network: it is the whole initial "
            f"network with {freeze['kept_kernel_weights']:,} of its "
            f"{freeze['kernel_weights']:,} kernel weights trained, and the trained weights "
            "build on the frozen ones as fixed random features. The paper's reason for zeros "
            "(pruned weights were heading to zero, so a frozen non-zero value is in the way) "
            "is outweighed on this network by what the frozen random layers already compute, "
            "which the ticket, with only its kept weights, does not have. " + rules + " Whether "
            "the same holds for the conv networks is not measured here (no CIFAR-10 on this "
            "machine).")
    else:
        lines.append("  These measurements do not show the frozen weights acting as random "
                     "features, so they do not explain the verdict. " + rules)
    return lines
