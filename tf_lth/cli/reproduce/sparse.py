"""Sparse training beside the lottery ticket (not in the paper): the plan's `sparse`
section, its table and its claims (docs/sparse_training.md).

At each final sparsity of the budget, 3 seeds each: native gradual magnitude pruning
(`--experiment=gradual`), tfmot's gradual pruning in its Keras 2 subprocess
(`--experiment=tfmot_baseline --final_sparsity`), RigL, SET and static random sparse
training (`--experiment=dynamic_sparse`), each trained for one lottery round's budget from
the seed's initialisation; beside them the lottery ticket (large_final, iterative) at the
round whose kept fraction is nearest, and the dense network (the baseline's round 0).
"""

from __future__ import annotations

import os

from tf_lth.core import choices
from tf_lth.cli.reproduce.claims import mean_std, pct
from tf_lth.cli.reproduce.paper import SPARSE_METHODS as METHODS
from tf_lth.cli.reproduce.plan import BASELINE, seed_names, sparse_run_name as run_name

NOISE_SIGMAS = 2.0  # "within seed noise": a gap under 2 standard deviations of the spread


def _best(results: dict | None):
    rounds = (results or {}).get("rounds") or []
    if not rounds:
        return None, None
    record = rounds[-1]
    best = (record.get("best") or {}).get("test_accuracy", record.get("test_accuracy"))
    return best, record


def method_cells(loaded: dict, method: str, sparsity: float, seeds: int) -> dict:
    """Accuracy (mean, std, n), kept fraction and examples/s of one method at one sparsity."""
    bests, kept, speeds = [], [], []
    for name in seed_names(run_name(method, sparsity), seeds):
        best, record = _best(loaded.get(name))
        if best is None:
            continue
        bests.append(best)
        kept.append(record["weights_remaining"])
        speeds.append(record.get("examples_per_second"))
    return {"accuracy": mean_std(bests), "kept": mean_std(kept)[0],
            "speed": mean_std([s for s in speeds if s])[0]}


def ticket_cells(loaded: dict, sparsity: float, seeds: int) -> dict:
    """The lottery ticket at the round whose kept fraction is nearest 1 - sparsity."""
    bests, kept, rounds = [], [], []
    for name in seed_names(BASELINE, seeds):
        records = (loaded.get(name) or {}).get("rounds") or []
        pruned = [r for r in records if r["round"] > 0]
        if not pruned:
            continue
        record = min(pruned, key=lambda r: abs(r["weights_remaining"] - (1 - sparsity)))
        bests.append((record.get("best") or {}).get("test_accuracy", record["test_accuracy"]))
        kept.append(record["weights_remaining"])
        rounds.append(record["round"])
    return {"accuracy": mean_std(bests), "kept": mean_std(kept)[0],
            "round": rounds[0] if rounds else None}


def dense_cells(loaded: dict, seeds: int) -> dict:
    values, speeds = [], []
    for name in seed_names(BASELINE, seeds):
        records = (loaded.get(name) or {}).get("rounds") or []
        if records and records[0]["round"] == 0:
            values.append((records[0].get("best") or {}).get("test_accuracy"))
            speeds.append(records[0].get("examples_per_second"))
    return {"accuracy": mean_std(values), "speed": mean_std([s for s in speeds if s])[0]}


def table_cells(loaded: dict, budget) -> dict:
    """{method: {sparsity: cells}} for every method, the ticket and dense."""
    seeds = budget.sparse_seeds
    cells = {method: {s: method_cells(loaded, method, s, seeds)
                      for s in budget.sparse_sparsities} for method in METHODS}
    cells["ticket"] = {s: ticket_cells(loaded, s, budget.seeds) for s in budget.sparse_sparsities}
    cells["dense"] = dense_cells(loaded, budget.seeds)
    return cells


def _pm(stats) -> str:
    mean, std, count = stats
    if mean is None:
        return "missing"
    text = pct(mean)
    if std is not None:
        text += f" ± {100 * std:.2f}"
    return text + (f" (n={count})" if count else "")


def _verdict(ok, reason: str) -> dict:
    if ok is None:
        return {"verdict": "not measured", "reason": reason}
    return {"verdict": "reproduced" if ok else "not reproduced", "reason": reason}


def ordering_claim(cells: dict, budget) -> tuple:
    """RigL > SET > static at high sparsity (the RigL paper's MNIST/CIFAR finding)."""
    high = [s for s in budget.sparse_sparsities if s >= 0.95] or list(budget.sparse_sparsities)
    parts, holds = [], []
    for sparsity in high:
        means = {m: cells[m][sparsity]["accuracy"][0] for m in choices.SPARSE_METHODS}
        if any(value is None for value in means.values()):
            return ("RigL beats SET, which beats static sparse training, at high sparsity",
                    _verdict(None, f"runs missing at {pct(sparsity, 0)}% sparsity."))
        holds.append(means["rigl"] > means["set"] > means["static"])
        parts.append(f"at {100 * sparsity:g}% sparsity RigL {pct(means['rigl'])}%, SET "
                     f"{pct(means['set'])}%, static {pct(means['static'])}%")
    rule = ("Rule: the 3-seed means are ordered RigL > SET > static at every sparsity of "
            f"{', '.join(f'{100 * s:g}%' for s in high)}.")
    return ("RigL beats SET, which beats static sparse training, at high sparsity",
            _verdict(all(holds), ("; ".join(parts) + ". ").capitalize()[:1]
                     + ("; ".join(parts) + ". ")[1:] + rule))


def parity_claim(cells: dict, budget) -> tuple:
    """Native gradual pruning is tfmot's: the same accuracy within seed noise."""
    title = "native gradual pruning matches tfmot's gradual pruning within seed noise"
    parts, holds = [], []
    for sparsity in budget.sparse_sparsities:
        native, tfmot = cells["gradual"][sparsity]["accuracy"], cells["tfmot"][sparsity]["accuracy"]
        if native[0] is None or tfmot[0] is None:
            return title, _verdict(None, f"runs missing at {100 * sparsity:g}% sparsity.")
        spread = max(native[1] or 0.0, tfmot[1] or 0.0, 0.0005)
        gap = native[0] - tfmot[0]
        holds.append(abs(gap) <= NOISE_SIGMAS * spread)
        parts.append(f"{100 * sparsity:g}%: {pct(native[0])} vs {pct(tfmot[0])} "
                     f"({100 * gap:+.2f} points, spread {100 * spread:.2f})")
    rule = (f"Rule: at every sparsity |native - tfmot| <= {NOISE_SIGMAS:g} x the larger "
            "seed standard deviation (at least 0.05 points).")
    return title, _verdict(all(holds), "; ".join(parts) + ". " + rule)


def speed_claim(bench: dict | None) -> tuple:
    """Native gradual pruning against the tfmot subprocess, from `make bench` (quiet,
    alternated, evaluation only at the end): the runs above share the machine two at a
    time and spend most of their loop on evaluations every 100 steps."""
    title = "native gradual pruning trains at least 3x as fast as tfmot's (examples/s)"
    sparse = (bench or {}).get("sparse")
    if not sparse:
        return title, _verdict(None, "`make bench` (section sparse) has not been run here: "
                                     "bench/results.json holds no `sparse` entry.")
    rates = {name: entry["examples_per_second"] for name, entry in sparse["rates"].items()}
    ratio = sparse["gradual_vs_tfmot"]
    return title, _verdict(ratio >= 3.0, (
        f"`make bench`: {rates['gradual']:,.0f} against {rates['tfmot_gradual']:,.0f} "
        f"examples/s in the training loop through `python -m tf_lth.train` ({sparse['length']}"
        f", {100 * sparse['sparsity']:g}% sparsity, alternated), {ratio:.1f}x; the whole "
        f"command, start-up included: {sparse['gradual_vs_tfmot_command']:.1f}x. Rule: the "
        "ratio of the loop's examples/s is at least 3."))


# ---- the section ------------------------------------------------------------------------
HEADING = "## 8. Sparse training beside the lottery ticket (not in the paper)"


def _figure(cells: dict, budget, path: str, arch: str, dense) -> str | None:
    from tf_lth.cli.plot import Series, curves_figure

    series = []
    for method in ("ticket",) + tuple(METHODS):
        label = "lottery ticket (large_final)" if method == "ticket" else METHODS[method][0]
        points = [(100 * cells[method][s]["kept"], 100 * cells[method][s]["accuracy"][0])
                  for s in budget.sparse_sparsities
                  if cells[method][s]["accuracy"][0] is not None]
        if points:
            series.append(Series(label, [p[0] for p in points], [p[1] for p in points],
                                 {"marker": "o", "markersize": 4}))
    hlines = ()
    if dense[0] is not None:
        hlines = (Series("dense", [], [100 * dense[0]],
                         {"color": "black", "linestyle": ":", "linewidth": 1}),)
    return curves_figure(series, path, f"{arch}: sparse training at the same final sparsity",
                         hlines=hlines)


def _rows(cells: dict, budget) -> list:
    sparsities = budget.sparse_sparsities
    rows = []
    for method in ("ticket",) + tuple(METHODS):
        if method == "ticket":
            label = "lottery ticket (large_final, iterative; round nearest)"
            extra = [f"round {cells['ticket'][s]['round']}, {pct(cells['ticket'][s]['kept'], 1)}%"
                     f" kept" if cells["ticket"][s]["round"] is not None else "-"
                     for s in sparsities]
            speed = "-"
        else:
            label, extra = METHODS[method][0], []
            speeds = [cells[method][s]["speed"] for s in sparsities if cells[method][s]["speed"]]
            speed = f"{sum(speeds) / len(speeds):,.0f}" if speeds else "-"
        accuracy = [_pm(cells[method][s]["accuracy"]) for s in sparsities]
        if extra:
            accuracy = [f"{a} ({e})" for a, e in zip(accuracy, extra)]
        rows.append([label] + accuracy + [speed])
    dense = cells["dense"]
    rows.append(["dense (round 0 of the ticket's runs)"] + [_pm(dense["accuracy"])] * len(
        sparsities) + [f"{dense['speed']:,.0f}" if dense["speed"] else "-"])
    return rows


def sparse_section(page) -> list:
    """The table (3 seeds, mean ± std), its figure and claims, through `page` (report.Page)."""
    budget, loaded = page.budget, page.loaded
    if not budget.sparse_sparsities:
        return []
    cells = table_cells(loaded, budget)
    path = _figure(cells, budget, page.figure("sparse"), page.arch, cells["dense"]["accuracy"])
    header = ["method"] + [f"{100 * s:g}% sparse" for s in budget.sparse_sparsities] + [
        "examples/s"]
    rows = _rows(cells, budget)
    lines = [HEADING, ""] + page.image(path, "sparse training") + [
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]
    lines += [
        f"Test accuracy (%) at the lowest validation loss, mean ± std over "
        f"{budget.sparse_seeds} seeds. Every method but the ticket trains once, for one "
        f"lottery round's budget ({budget.epochs_text()}), from the seed's initialisation: "
        "gradual pruning (native and tfmot: PolynomialDecay from 0, power 3, every 100 "
        "steps over 10%..60% of the round, every layer to the same sparsity; the best "
        "evaluation is chosen among those at the final sparsity) and RigL, SET and static "
        "(ERK layer densities, updates every 100 steps to 75% of the round, drop fraction "
        "0.3 with cosine decay). The ticket at the round whose kept fraction is nearest has "
        "had that many rounds of training more. examples/s: the training loop's, read from "
        "each run's record (evaluations every 100 steps included), two sub-runs at once "
        "(--jobs=2); the training cost alone, quiet and alternated, is `make bench`'s.", "",
        "Claims (issue 23, not the paper's):", ""]
    from tf_lth.core import run_files

    bench = run_files.read_json_or_none(bench_results_path())
    claims = [ordering_claim(cells, budget), parity_claim(cells, budget), speed_claim(bench)]
    lines += page.add_claims("sparse", claims) + [""]
    names = [name for s in budget.sparse_sparsities for m in METHODS
             for name in seed_names(run_name(m, s), budget.sparse_seeds)]
    return lines + page.status_note(names) + [""]


def bench_results_path() -> str:
    """`make bench`'s results.json, where the speed claim's figures come from."""
    from tf_lth.cli.reproduce import ROOT

    return os.path.join(ROOT, "bench", "results.json")


def splice(existing: str, section: list, claim_rows: list) -> str:
    """`existing` RESULTS.md with this section replaced (or put before the sub-run table)
    and its rows of the claims table replaced: a report of `--only=sparse` updates its own
    part of a page whose other sections came from other runs."""
    lines = existing.rstrip("\n").split("\n")
    if HEADING in lines:
        start = lines.index(HEADING)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
    else:
        start = end = next((i for i, line in enumerate(lines)
                            if line.startswith("## Sub-runs")), len(lines))
    lines[start:end] = section
    glance = [i for i, line in enumerate(lines) if line.startswith("| sparse |")]
    for index in reversed(glance):
        del lines[index]
    if "## Claims at a glance" in lines:
        table = lines.index("## Claims at a glance") + 2
        while table < len(lines) and lines[table].startswith("|"):
            table += 1
        lines[table:table] = claim_rows
    return "\n".join(lines) + "\n"
