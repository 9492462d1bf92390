"""Reading the results back, and the paper's claims, each decided by a stated rule.

A claim's verdict is "reproduced", "not reproduced", or "not measured" (its runs are
missing); its reason gives the measured values and the rule.
"""

from __future__ import annotations

import math
import os

from tf_lth.core import run_files
from tf_lth.cli.reproduce import archive
from tf_lth.cli.reproduce.paper import CHANCE, MASK_ONE_ACTIONS, MASK_ZERO_ACTIONS, Budget
from tf_lth.cli.reproduce.plan import BASELINE, seed_names

FREEZE_INIT_CLAIM = "pruned weights must be zero, not frozen at init"


# ---- the results -------------------------------------------------------------------------

def load_results(runs: list, out_dir: str, archived: dict | None = None) -> dict:
    """{sub-run name: results.json (or export report)} for what exists on disk, and for the
    sub-runs of `archived` ({name: archive record}, `archive.load`) from their records."""
    loaded = {}
    for run in runs:
        if run.name in (archived or {}):
            results = archive.results_of(archived[run.name], run)
            if results:
                loaded[run.name] = results
            continue
        if run.kind == "export":
            report = run_files.read_json_or_none(
                os.path.join(run.run_dir(out_dir), "export", "export_report.json"))
            marker = run_files.read_json_or_none(run.export_marker(out_dir)) or {}
            if report and marker.get("round") == run.export_round:
                loaded[run.name] = report
            continue
        results = run_files.read_json_or_none(
            os.path.join(run.run_dir(out_dir), "results.json"))
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


def mean_std(values: list) -> tuple:
    """(mean, sample standard deviation (n - 1), n) of the values that are not None; std is
    None below two values, mean None with none."""
    values = [value for value in values if value is not None]
    if not values:
        return None, None, 0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), len(values)


def seed_curves(loaded: dict, name: str, seeds: int, max_round: int | None = None) -> list:
    """The curves of `name`'s seeds that have results (seed s first)."""
    found = [curve(loaded.get(seed_name), max_round) for seed_name in seed_names(name, seeds)]
    return [points for points in found if points]


def seed_stats(loaded: dict, name: str, seeds: int, max_round: int | None = None) -> list:
    """[(round, weights remaining, mean, std, n)] over `name`'s seeds, per round (each round
    over the seeds that reached it; std None with one seed)."""
    by_round = {}
    for points in seed_curves(loaded, name, seeds, max_round):
        for round_value, weights, accuracy in points:
            by_round.setdefault(round_value, (weights, []))[1].append(accuracy)
    return [(r, weights, *mean_std(values)) for r, (weights, values) in sorted(by_round.items())]


def mean_curve(loaded: dict, name: str, seeds: int, max_round: int | None = None) -> list:
    """[(round, weights remaining, mean accuracy over the seeds)]: a curve like `curve`."""
    return [(r, w, mean) for r, w, mean, _, _ in seed_stats(loaded, name, seeds, max_round)]


def window_stats(loaded: dict, name: str, seeds: int, rounds: list,
                 max_round: int | None = None) -> tuple:
    """(mean, std, n) over the seeds of each seed's mean accuracy over `rounds`."""
    return mean_std([window_mean(points, rounds)
                     for points in seed_curves(loaded, name, seeds, max_round)])


def sigmas(gap, std) -> str:
    """' (2.3 std)': how many seed standard deviations `gap` is; '' without a std."""
    if gap is None or not std:
        return ""
    return f" ({abs(gap) / std:.1f} std)"


def seed_note(label: str, stats: tuple, unit: bool = False) -> str:
    """' label over n seeds: mean ± std' for a claim's reason; '' with one seed. `unit`:
    this std is the one the reason's gaps are counted in."""
    mean, std, n = stats
    if std is None:
        return ""
    return (f" {label} over {n} seeds: {100 * mean:.2f} ± {100 * std:.2f}% (mean ± std of the "
            "window mean)" + ("; gaps in units of that std in parentheses." if unit else "."))


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


def markdown_table(header: list, rows: list) -> list:
    """A Markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


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


# ---- the claims --------------------------------------------------------------------------
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
    if "large_final" in curves:  # the baseline: the mean over its seeds
        curves["large_final"] = mean_curve(loaded, BASELINE, budget.seeds, budget.criteria_rounds)
    present = [name for name in names if curves[name]]
    missing = [name for name in names if not curves[name]]
    short = [name for name in present if curves[name][-1][0] < budget.criteria_rounds]
    # The window and the scores come from the criteria that reached the last round: a
    # criterion part-way has no score yet, and does not shrink everyone's window.
    complete = [name for name in present if name not in short]
    rounds = common_rounds([curves[n] for n in complete], 0.036, budget.criteria_rounds)
    scores = {name: window_mean(curves[name], rounds) for name in complete}
    scores = {name: value for name, value in scores.items() if value is not None}
    ranking = sorted(scores, key=lambda name: -scores[name])
    where = weights_label(curves[complete[0]], rounds) if complete else "-"
    listing = ", ".join(f"{name} {pct(scores[name], 1)}" for name in ranking)
    claims = []
    if missing or short or len(scores) < 4:  # a ranking needs every criterion to the end
        claims.append(("large_final and magnitude_increase are the best criteria",
                       _verdict(None, f"criteria runs missing or incomplete: "
                                      f"{', '.join(missing + short) or 'too few rounds'}")))
        claims.append(("small_* and random are the worst criteria",
                       _verdict(None, "criteria runs missing or incomplete")))
        return claims, scores, rounds
    best = scores[ranking[0]]
    top = ranking[:3]
    stats = window_stats(loaded, BASELINE, budget.seeds, rounds, budget.criteria_rounds)
    spread = ""
    if stats[1]:
        spread = (f" large_final over {stats[2]} seeds: {100 * stats[0]:.2f} ± "
                  f"{100 * stats[1]:.2f}% (mean ± std of the window mean); magnitude_increase "
                  f"is {100 * (scores['magnitude_increase'] - stats[0]):+.2f} points from it"
                  f"{sigmas(scores['magnitude_increase'] - stats[0], stats[1])}; the "
                  f"best is {100 * (best - stats[0]):+.2f}{sigmas(best - stats[0], stats[1])}.")
    ok = all(name in top or best - scores[name] <= CLOSE_TO_BEST
             for name in ("large_final", "magnitude_increase"))
    place = {name: ranking.index(name) + 1 for name in ranking}
    claims.append(("large_final and magnitude_increase are the best criteria", _verdict(
        ok, f"mean test accuracy over {where}: {listing}. Rule: each in the top 3 or within "
            f"{100 * CLOSE_TO_BEST:g} point of the best; large_final is #{place['large_final']}, "
            f"magnitude_increase #{place['magnitude_increase']} of {len(ranking)}.{spread}")))
    worst_group = [name for name in ("small_final", "small_init", "random") if name in scores]
    bottom = ranking[-len(worst_group):]
    ok = set(bottom) == set(worst_group)
    above = [name for name in ranking if name not in worst_group]
    margin = ""
    if above and stats[1]:
        lowest = scores[above[-1]] - max(scores[name] for name in worst_group)
        margin = (f" The lowest other criterion ({above[-1]}) is {100 * lowest:+.2f} points "
                  f"above the best of them{sigmas(lowest, stats[1])} (std: large_final's over "
                  f"{stats[2]} seeds).")
    intruders = [name for name in bottom if name not in worst_group]
    claims.append(("small_* and random are the worst criteria", _verdict(
        ok, f"the bottom {len(worst_group)} over {where} are {', '.join(bottom)}"
            + ("" if ok else f" ({', '.join(intruders)} among them; "
               + ", ".join(f"{n} is #{ranking.index(n) + 1}" for n in worst_group) + ")")
            + "." + margin)))
    return claims, scores, rounds


def mask_one_claims(loaded: dict, budget: Budget) -> tuple:
    base = mean_curve(loaded, BASELINE, budget.seeds, budget.mask_one_rounds)
    curves = {action: curve(loaded.get(f"mask_one/{action}"), budget.mask_one_rounds)
              for action in MASK_ONE_ACTIONS}
    # Only actions that reached the last round count (a part-way run would shrink the window).
    present = [a for a, c in curves.items() if c and c[-1][0] >= budget.mask_one_rounds]
    rounds = common_rounds([base] + [curves[a] for a in present], 0.211,
                           budget.mask_one_rounds) if base else []
    lt = window_mean(base, rounds) if rounds else None
    stats = window_stats(loaded, BASELINE, budget.seeds, rounds, budget.mask_one_rounds) \
        if rounds else (None, None, 0)
    note = seed_note("the lottery ticket", stats, unit=True)
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
        text = ", ".join(f"{a} {-100 * gaps[a]:+.2f}{sigmas(gaps[a], stats[1])}"
                         for a in unsigned)
        claims.append((title, _verdict(
            all(gaps[a] >= FAIL_GAP for a in unsigned),
            f"points against the lottery ticket ({pct(lt)}%) in mean test accuracy over "
            f"{where}: {text}. Rule: an action fails when at least {100 * FAIL_GAP:g} point "
            "below." + note)))
    title = "keeping the sign of w_i rescues all three"
    missing = [a for a in MASK_ONE_ACTIONS if a not in gaps] + ([] if base else ["lottery ticket"])
    if missing:
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        rescued = {a: gaps[a] > 0 and gaps[f"signed_{a}"] <= 0.5 * gaps[a] for a in unsigned}
        text = ", ".join(f"signed_{a} {-100 * gaps['signed_' + a]:+.2f}"
                         f"{sigmas(gaps['signed_' + a], stats[1])} (unsigned "
                         f"{-100 * gaps[a]:+.2f})" for a in unsigned)
        claims.append((title, _verdict(
            all(rescued.values()),
            f"points against the lottery ticket over {where}: {text}. Rule: rescued when the "
            "signed version closes at least half of the unsigned version's gap." + note)))
    return claims, gaps, rounds


def mask_zero_claims(loaded: dict, budget: Budget) -> tuple:
    base = mean_curve(loaded, BASELINE, budget.seeds, budget.mask_zero_rounds)
    seeds = getattr(budget, "mask_zero_seeds", 1)
    curves = {a: mean_curve(loaded, f"mask_zero/{a}", seeds, budget.mask_zero_rounds)
              for a in MASK_ZERO_ACTIONS}
    present = [a for a, c in curves.items() if c]
    group = [base] + [curves[a] for a in present]
    mid = common_rounds(group, 0.211, budget.mask_zero_rounds) if base else []
    high = common_rounds(group, 0.07, budget.mask_zero_rounds) if base else []
    means = {"zero": (window_mean(base, mid), window_mean(base, high))} if base else {}
    for action in present:
        means[action] = (window_mean(curves[action], mid), window_mean(curves[action], high))
    claims = []
    std_mid = window_stats(loaded, BASELINE, budget.seeds, mid, budget.mask_zero_rounds) \
        if mid else (None, None, 0)
    std_high = window_stats(loaded, BASELINE, budget.seeds, high, budget.mask_zero_rounds) \
        if high else (None, None, 0)

    def spread(action, rounds) -> str:  # each action's own seed spread, with several seeds
        stats = window_stats(loaded, f"mask_zero/{action}", seeds, rounds,
                             budget.mask_zero_rounds) if rounds and seeds > 1 else (None, None, 0)
        return seed_note(action, stats)
    title = FREEZE_INIT_CLAIM
    if not base or "freeze_init" not in means:
        missing = ["freeze_init"] if "freeze_init" not in means else ["lottery ticket"]
        claims.append((title, _verdict(None, f"runs missing or incomplete: {', '.join(missing)}")))
    else:
        lt_mid, freeze_mid = means["zero"][0], means["freeze_init"][0]
        claims.append((title, _verdict(
            lt_mid - freeze_mid >= FAIL_GAP,
            f"mean test accuracy over {weights_label(base, mid)}: zero {pct(lt_mid)}%, "
            f"freeze_init {pct(freeze_mid)}% ({100 * (freeze_mid - lt_mid):+.2f} points"
            f"{sigmas(freeze_mid - lt_mid, std_mid[1]).replace(' (', ', ').rstrip(')')}). Rule: "
            f"freeze_init at least {100 * FAIL_GAP:g} point below."
            + seed_note("zero (the lottery ticket)", std_mid, unit=True)
            + spread("freeze_init", mid))))
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
            f"variant 1 {pct(v1)}%, lottery ticket {pct(lt_high)}%." + (
                f" Variant 2 leads variant 1 by {100 * (v2 - v1):+.2f} points"
                f"{sigmas(v2 - v1, std_high[1])} and variant 1 the lottery ticket by "
                f"{100 * (v1 - lt_high):+.2f}{sigmas(v1 - lt_high, std_high[1])}; std: the "
                f"lottery ticket's window mean over {std_high[2]} seeds."
                if std_high[1] else "") + spread("freeze_init_zero_mask", high)
            + spread("freeze_init_zero_all", high))))
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


