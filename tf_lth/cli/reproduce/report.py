"""RESULTS.md: per figure of the paper, our plot and numbers beside the paper's, the budget,
what differs from the paper's protocol, and each claim's verdict; one function a section.

The figures are drawn by `tf_lth.plot` from the series built here (`lottery_series`, ...).
"""

from __future__ import annotations

import dataclasses
import os
import platform

from tf_lth.core import choices, run_files, run_lock
from tf_lth.cli.plot import Series, bars_figure, curves_figure, panels_figure
from tf_lth.cli.reproduce import ROOT, archive, mask_zero_why
from tf_lth.cli.reproduce.claims import markdown_table as _table
from tf_lth.cli.reproduce.claims import (FREEZE_INIT_CLAIM, at_round, block_claim,
                                     criteria_claims, curve, load_results, mask_one_claims,
                                     mask_zero_claims, mean_curve, pct, seed_stats,
                                     untrained_claims, untrained_table, weights_label)
from tf_lth.cli.reproduce.execute import is_complete, now
from tf_lth.cli.reproduce.mask_zero_evidence import evidence_lines, why_summary
from tf_lth.cli.reproduce.paper import (CHANCE, FIGURE_CRITERIA, MASK_ONE_ACTIONS, MASK_ZERO_ACTIONS,
                                    PAPER, PAPER_LEARNED_EPOCHS, PAPER_ROUNDS, PRESETS,
                                    Budget)
from tf_lth.cli.reproduce.sparse import sparse_section, splice
from tf_lth.cli.reproduce.plan import (BASELINE, duration, minutes, total_estimate,
                                   untrained_levels, wall_estimate)

MASK_ZERO_NAMES = {"zero": "zero (lottery ticket)", "freeze_init": "freeze_init",
                   "freeze_init_zero_mask": "variant 1 (freeze_init_zero_mask)",
                   "freeze_init_zero_all": "variant 2 (freeze_init_zero_all)"}
CLAIMS_HEADING = "Claims of the paper:"


# ---- what the figures show --------------------------------------------------------------
def points_series(points: list, label: str, **style) -> Series:
    """A lottery curve's pruned rounds [(round, weights remaining, accuracy)] in percent."""
    points = [p for p in points if p[0] > 0]
    return Series(label, [100 * w for _, w, _ in points], [100 * a for _, _, a in points],
                  style)


def lottery_series(loaded: dict, names: list, labels: dict, max_round: int,
                   styles: dict | None = None, seeds: int = 1,
                   seeded: dict | None = None) -> list:
    """One Series per sub-run with results (its rounds up to max_round); the baseline (and
    each sub-run `seeded` names: {name: seeds}) is the mean over its seeds with a band of
    ± one standard deviation."""
    seeded = {BASELINE: seeds, **(seeded or {})}
    series = []
    for name in names:
        if seeded.get(name, 1) > 1:
            stats = [p for p in seed_stats(loaded, name, seeded[name], max_round) if p[0] > 0]
            if stats:
                count = max(p[4] for p in stats)
                label = labels.get(name, name) + (f", mean ± std of {count} seeds"
                                                   if count > 1 else "")
                series.append(Series(label, [100 * p[1] for p in stats],
                                      [100 * p[2] for p in stats],
                                      dict((styles or {}).get(name, {})),
                                      spread=[100 * (p[3] or 0.0) for p in stats]))
        elif curve(loaded.get(name), max_round):
            series.append(points_series(curve(loaded.get(name), max_round),
                                        labels.get(name, name), **(styles or {}).get(name, {})))
    return series


def dense_stats(loaded: dict, seeds: int = 1) -> tuple:
    """(mean, std, n) of the trained dense network (the baseline's round 0) over its seeds."""
    stats = [p for p in seed_stats(loaded, BASELINE, seeds, 0) if p[0] == 0]
    return tuple(stats[0][2:]) if stats else (None, None, 0)


def dense_lines(loaded: dict, seeds: int = 1) -> tuple:
    """The trained dense network (the baseline's round 0) as a horizontal line, if run."""
    mean, _, count = dense_stats(loaded, seeds)
    if mean is None:
        return ()
    label = "dense (round 0" + (f", mean of {count} seeds)" if count > 1 else ")")
    return (Series(label, [], [100 * mean],
                   {"color": "black", "linestyle": ":", "linewidth": 1}),)


def pm(stats, digits: int = 2) -> str:
    """'98.21 ± 0.05' (percent) from (mean, std, n); the mean alone with one value."""
    mean, std = stats[0], stats[1]
    if mean is None:
        return "-"
    return pct(mean, digits) + ("" if std is None else f" ± {100 * std:.{digits}f}")


def baseline_cells(loaded: dict, seeds: int, max_round: int, shown: list,
                   name: str = BASELINE) -> list:
    """The accuracy of `name` (the baseline) per shown round, mean ± std over its seeds."""
    stats = {p[0]: p[2:] for p in seed_stats(loaded, name, seeds, max_round)}
    return [pm(stats.get(r, (None, None, 0))) for r in shown]


def untrained_panels(results: dict | None) -> dict:
    """{panel title: one Series per criterion of the paper's figure} per weight treatment."""
    panels = {}
    for treatment in choices.WEIGHT_TREATMENTS:
        series = []
        for criterion in FIGURE_CRITERIA:
            records = sorted((r for r in (results or {}).get("masks") or []
                              if r["criterion"] == criterion
                              and r["weight_treatment"] == treatment),
                             key=lambda r: -r["weights_remaining"])
            series.append(Series(criterion, [100 * r["weights_remaining"] for r in records],
                                 [100 * r["test_accuracy"] for r in records],
                                 {"markersize": 3}))
        panels[f"untrained, {treatment} weights"] = series
    return panels


# ---- the page -----------------------------------------------------------------------------
@dataclasses.dataclass
class Page:
    """What every section needs: the runs, their results and status, where files go."""

    preset: str
    budget: Budget
    runs: list
    out_dir: str
    results_path: str
    figures_dir: str
    state: dict
    loaded: dict
    claims: list = dataclasses.field(default_factory=list)  # (section, (title, verdict))

    @property
    def fc(self) -> bool:
        return self.preset == "mnist_fc"

    @property
    def arch(self) -> str:
        return PRESETS[self.preset].arch

    @property
    def paper(self) -> dict:
        return PAPER["mnist_fc"] if self.fc else PAPER["cifar10"]

    def figure(self, name: str) -> str:
        prefix = "" if self.fc and self.budget.name == "default" else f"{self.preset}_"
        return os.path.join(self.figures_dir, f"{prefix}{name}.png")

    def image(self, path: str | None, alt: str) -> list:
        if not path:
            return ["*No figure: the runs of this section are missing.*", ""]
        rel = os.path.relpath(path, os.path.dirname(os.path.abspath(self.results_path)))
        return [f"![{alt}]({rel.replace(os.sep, '/')})", ""]

    def running_note(self, name: str):
        """'**running** now (process N); k of M rounds finished' when a live process holds
        sub-run `name`'s run directory, else None."""
        run = next((run for run in self.runs if run.name == name), None)
        if run is None or run.kind == "export":
            return None
        run_dir = run.run_dir(self.out_dir)
        pid = run_lock.holder(run_dir)
        if pid is None:
            return None
        results = run_files.read_json_or_none(os.path.join(run_dir, "results.json")) or {}
        finished = len(results.get("rounds") or [])
        return ("**running** now" + (f" (process {pid})" if pid else "")
                + (f"; {finished} of {run.rounds + 1} rounds finished"
                   if run.kind == "lottery" and finished else ""))

    def status_note(self, names: list) -> list:
        """A line per sub-run of `names` that is not complete: not run, failed, skipped."""
        notes = []
        for name in names:
            record = self.state.get("sub_runs", {}).get(name)
            if self.state["_complete"].get(name):
                continue
            running = self.running_note(name)
            if running:
                notes.append(f"- `{name}`: {running}")
            elif record is None:
                notes.append(f"- `{name}`: not run yet.")
            elif record.get("status") != "done":
                notes.append(f"- `{name}`: **{record.get('status')}** — "
                             f"{record.get('error', '')}")
        return notes

    def add_claims(self, section: str, claims: list) -> list:
        """Records the section's claims for the summary; returns their lines. A claim that
        does not reproduce also gets what differs from the paper's protocol and whether a
        larger budget was tried."""
        self.claims += [(section, claim) for claim in claims]
        lines = []
        for title, verdict in claims:
            reason = verdict["reason"]
            if reason.split(" ", 1)[0].isalpha():  # a sentence, not a name like large_final
                reason = reason[:1].upper() + reason[1:]
            lines.append(f"- **{verdict['verdict']}**: {title}. {reason}")
            if verdict["verdict"] == "not reproduced":
                evidence = " The subsection \"What was checked under the mask-0 claims\" " \
                    "below gives each seed and how the actions were checked against the " \
                    "authors' code." if section == "mask-0" and self.budget.name == "paper" \
                    else ""
                if evidence and title.startswith(FREEZE_INIT_CLAIM):
                    measured = why_summary(mask_zero_why.read(self.state.get("_archive"),
                                                              self.out_dir))
                    evidence += f" {measured}" if measured else ""
                parts = (self.protocol_gap(), self.larger_budget(), evidence.strip())
                lines.append("  - What could explain it: "
                             + " ".join(part for part in parts if part))
        return lines

    def protocol_gap(self) -> str:
        """One sentence: how this budget's training differs from the paper's."""
        if self.budget.name == "paper":
            return (f"not the budget: every round trains the paper's "
                    f"{self.budget.epochs_text()}; {self.seeds_text().lower()}.")
        return (f"each round trains {self.budget.epochs_text()} where the paper trains "
                f"{PRESETS[self.preset].paper_epochs} epochs, so every ticket starts the next "
                f"round from weights further from convergence; {self.seeds_text().lower()}.")

    def larger_budget(self) -> str:
        """Whether `--budget=paper` sub-runs exist beside this reproduction's folder."""
        if self.budget.name == "paper":
            return ""
        from tf_lth.cli.reproduce.paper import budget_for
        from tf_lth.cli.reproduce.plan import plan

        paper_dir = os.path.join(os.path.dirname(os.path.abspath(self.out_dir)),
                                 f"{self.preset}_paper")
        budget = budget_for(self.preset, "paper")
        runs = plan(self.preset, budget)
        done = [run.name for run in runs if is_complete(run, paper_dir)]
        if done:
            return (f"A larger budget was tried: `--budget=paper` completed "
                    f"{', '.join(f'`{name}`' for name in done)} in `{_rel(paper_dir)}` "
                    "(its own RESULTS.md is there).")
        return (f"A larger budget was not tried on this machine: `--budget=paper` "
                f"({budget.epochs_text()} per round) is estimated at "
                f"{wall_estimate(runs, 2) / 3600:.1f} h here with --jobs=2 (`--plan`); "
                "`--plan --commands` splits it across machines.")

    def seeds_text(self) -> str:
        """'3 seeds (0, 1, 2) of the dense network and the large_final ticket, one of the
        others, instead of the repro's five' (or one seed)."""
        seeds = self.budget.seeds
        if seeds <= 1:
            return f"One seed ({self.state.get('seed', 0)}) instead of the repro's five"
        first = self.state.get("seed", 0)
        listed = ", ".join(str(first + index) for index in range(seeds))
        mask_zero = getattr(self.budget, "mask_zero_seeds", 1) or 1
        also = " and of every mask-0 action" if mask_zero >= seeds else ""
        return (f"{seeds} seeds ({listed}) of the dense network and the large_final lottery "
                f"ticket{also} (mean ± std), one of every other run, instead of the repro's "
                "five")

    def deviations(self) -> list:
        """The differences from the paper's protocol that every lottery section shares."""
        paper_epochs = PRESETS[self.preset].paper_epochs
        at_paper = self.budget.epochs == paper_epochs
        return [
            (f"- {self.budget.epochs_text()} per round, the paper's ({paper_epochs} epochs at "
             "batch 60 round its iterations up to whole epochs); " if at_paper else
             f"- {self.budget.epochs_text()} per round instead of the paper's "
             f"{paper_epochs} epochs; ") + (
                "evaluation every 100 iterations, as in the paper." if self.budget.eval_every
                <= 100 else f"evaluation every {self.budget.eval_every} iterations instead "
                "of 100 (the best-validation-loss point is chosen among fewer evaluations)."),
            f"- {self.seeds_text()}; differences under about half a point are "
            "within seed noise.",
        ]


def _rounds_header(first: str, weights: dict, rounds: list) -> list:
    return [first] + [f"round {r} ({pct(weights.get(r), 1)}%)" for r in rounds]


def _rel(path: str) -> str:
    """A path as the page names it: relative inside the checkout, else from the home folder."""
    try:
        relative = os.path.relpath(path, ROOT)
    except ValueError:
        relative = os.pardir
    if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
        return relative
    absolute, home = os.path.abspath(path), os.path.expanduser("~")
    if home not in ("", os.sep) and absolute.startswith(home.rstrip(os.sep) + os.sep):
        return "~" + absolute[len(home.rstrip(os.sep)):]
    return absolute


# ---- the sections ---------------------------------------------------------------------------
def header_section(page: Page) -> list:
    preset, budget, runs, state = page.preset, page.budget, page.runs, page.state
    planned = {run.name for run in runs}
    seconds = sum(_time_taken(record) or 0.0 for name, record
                  in state.get("sub_runs", {}).items() if name in planned)
    done = sum(1 for run in runs if state["_complete"][run.name])
    jobs = int(state.get("jobs") or 1)
    wall = state.get("wall_seconds")
    unrecorded = any(entry.get("seconds") is None
                     for entry in archive.invocations(state.get("_archive")))
    wall_text = (f"wall time {minutes(wall)} over the recorded invocations"
                 + (" (and some that were not recorded, named at the bottom)" if unrecorded
                    else "") + f" against the plan's {minutes(wall_estimate(runs, jobs))} "
                 f"for the whole plan with --jobs={jobs}; " if wall else "")
    lines = [f"# Results: \"Deconstructing Lottery Tickets\" reproduced ({preset}, "
             f"budget {budget.name})", "",
             f"Generated by `python -m tf_lth.reproduce --preset={preset} --budget="
             f"{budget.name}` (`make reproduce` for mnist_fc) from the run directories under "
             f"`{_rel(page.out_dir)}`; run it again to resume or to regenerate this page "
             "(`--report_only` redraws without training). Paper numbers come from the paper's "
             "abstract and text, secondary sources, and an independent 5-seed reproduction "
             "(\"repro\").", "",
             f"- Machine: {state.get('machine', platform.platform())}.",
             f"- Data: {state.get('dataset', PRESETS[preset].dataset)}.",
             f"- Budget: {budget.describe()}. {page.seeds_text()}.",
             f"- Sub-runs: {done} of {len(runs)} complete; {wall_text}the finished "
             f"sub-runs' own times add up to {minutes(seconds)} (sub-runs run at once each "
             f"take longer; one at a time the plan expects "
             f"{minutes(total_estimate(runs))} for all); last update "
             f"{state.get('updated', now())}." + (
                 f" The latest invocation took {minutes(state['last_session_seconds'])} of wall "
                 "time." if state.get("last_session_seconds") else ""), ""]
    archived = [name for name, record in state.get("sub_runs", {}).items()
                if name in planned and record.get("archived")]
    if state.get("_archive"):
        lines[-1:-1] = [f"- Archive: `{_rel(state['_archive'])}` keeps every finished "
                        f"sub-run's results (`--archive`); {len(archived)} of the complete "
                        "sub-runs are read from it, their run directories gone with the "
                        "machine that ran them."]
    failures = page.status_note([run.name for run in runs])
    if failures:
        lines += ["Sub-runs not complete:", ""] + failures + [""]
    return lines


def criteria_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    claims, scores, rounds = criteria_claims(loaded, budget)
    names = [BASELINE] + [f"criteria/{c}" for c in budget.criteria if c != "large_final"]
    path = curves_figure(
        lottery_series(loaded, names, {n: n.split("/")[-1] for n in names},
                       budget.criteria_rounds, seeds=budget.seeds),
        page.figure("criteria"), f"{page.arch}: mask criteria, iterative pruning, rewind to init",
        hlines=dense_lines(loaded, budget.seeds))
    lines = ["## 1. Mask criteria (the paper's Figure 2)", ""] + page.image(path, "criteria")
    base_curve = mean_curve(loaded, BASELINE, budget.seeds, budget.criteria_rounds)
    shown = [r for r in (3, 7, 12, 15, 18, 24) if r <= budget.criteria_rounds] or \
        sorted({r for r, _, _ in base_curve if r > 0})[-3:]
    weights = {r: w for r, w, _ in base_curve}
    header = _rounds_header("criterion", weights, shown) + ["high-sparsity mean (ours)"]
    if page.fc:
        header += [f"paper, {PAPER_ROUNDS} rounds (repro)"]
    rows = []
    for criterion in sorted(budget.criteria, key=lambda c: -(scores.get(c) or -1)):
        name = BASELINE if criterion == "large_final" else f"criteria/{criterion}"
        points = curve(loaded.get(name), budget.criteria_rounds)
        cells = baseline_cells(loaded, budget.seeds, budget.criteria_rounds, shown) \
            if name == BASELINE else [pct(at_round(points, r)) for r in shown]
        row = [criterion] + cells + [pct(scores.get(criterion))]
        if page.fc:
            value = page.paper["criteria_24"].get(criterion)
            row.append("-" if value is None else f"{value:.1f}")
        rows.append(row)
    lines += _table(header, rows) + [""]
    lines += [f"Test accuracy (%) at the best validation loss of each round. The high-sparsity "
              f"mean averages {weights_label(base_curve, rounds)}; the claims use it.", ""]
    lines += [CLAIMS_HEADING, ""] + page.add_claims("criteria", claims) + [""]
    lines += ["Differences from the paper's protocol:", ""] + page.deviations()
    lines += ["- The paper's Figure 2 plots the criteria up to about 0.5% remaining "
              f"({PAPER_ROUNDS} rounds); we run {budget.criteria_rounds} rounds."
              if budget.criteria_rounds < PAPER_ROUNDS else
              f"- Same {PAPER_ROUNDS} rounds as the paper.", ""]
    lines += page.status_note(names) + [""]
    if page.fc:
        lines += lottery_vs_repro_section(page, base_curve)
    return lines


def _nearest(points: list, target_percent: float):
    """The (round, weights, accuracy) nearest `target_percent` remaining, within 25%."""
    nearest = min(points, key=lambda p: abs(100 * p[1] - target_percent), default=None)
    if nearest is None or abs(100 * nearest[1] - target_percent) > 0.25 * target_percent:
        return None
    return nearest


def lottery_vs_repro_section(page: Page, base_curve: list) -> list:
    """The large_final lottery ticket at the repro's sparsities (mnist_fc only)."""
    paper = page.paper
    stats = {p[0]: p[2:] for p in seed_stats(page.loaded, BASELINE, page.budget.seeds,
                                             page.budget.criteria_rounds)}
    rows = [["100 (dense)", pm(stats.get(0, (None, None, 0))), f"{paper['dense'][0]:.1f}",
             "round 0"]]
    for target, value in paper["lottery"].items():
        nearest = _nearest(base_curve, target)
        if nearest is None:
            rows.append([f"{target}", "-", f"{value:.2f}", "not reached"])
        else:
            rows.append([f"{target}", pm(stats[nearest[0]]), f"{value:.2f}",
                         f"round {nearest[0]} ({100 * nearest[1]:.1f}%)"])
    return (["### The lottery ticket (large_final) against the repro", ""]
            + _table(["weights remaining (%)", "ours", "repro", "our round"], rows) + [""])


def mask_one_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    claims, gaps, rounds = mask_one_claims(loaded, budget)
    names = [BASELINE] + [f"mask_one/{a}" for a in budget.mask_one_actions]
    colors = {"reinit": "tab:red", "reshuffle": "tab:green", "constant": "tab:purple"}
    styles = {BASELINE: {"color": "black"}}
    for action in MASK_ONE_ACTIONS:
        styles[f"mask_one/{action}"] = {"color": colors[action.replace("signed_", "")],
                                        "linestyle": "-" if action.startswith("signed") else "--"}
    labels = {BASELINE: "none (lottery ticket)"}
    labels.update({f"mask_one/{a}": a for a in MASK_ONE_ACTIONS})
    path = curves_figure(
        lottery_series(loaded, names, labels, budget.mask_one_rounds, styles, budget.seeds),
        page.figure("mask_one"), f"{page.arch}: mask-1 actions (dashed: unsigned, solid: signed)",
        hlines=dense_lines(loaded, budget.seeds))
    lines = ["## 2. Mask-1 actions: the starting values of kept weights (the paper's Figure 3)",
             ""] + page.image(path, "mask-1 actions")
    shown = [r for r in (3, 7, 10, 12, 15) if r <= budget.mask_one_rounds] or \
        [budget.mask_one_rounds]
    base_points = mean_curve(loaded, BASELINE, budget.seeds, budget.mask_one_rounds)
    weights = {r: w for r, w, _ in base_points}
    header = _rounds_header("mask-1 action", weights, shown) + \
        ["vs lottery ticket (points, window mean)"]
    rows = [["none (lottery ticket)"] + baseline_cells(loaded, budget.seeds,
                                                       budget.mask_one_rounds, shown) + ["0"]]
    for action in budget.mask_one_actions:
        points = curve(loaded.get(f"mask_one/{action}"), budget.mask_one_rounds)
        gap = gaps.get(action)
        rows.append([action] + [pct(at_round(points, r)) for r in shown] +
                    ["-" if gap is None else f"{-100 * gap:+.2f}"])
    lines += _table(header, rows) + [""]
    lines += [f"Window for the claims: {weights_label(base_points, rounds)}. The paper shows "
              "these as curves without numbers and states the qualitative result only.", ""]
    lines += [CLAIMS_HEADING, ""] + page.add_claims("mask-1", claims) + [""]
    lines += ["Differences from the paper's protocol:", ""] + page.deviations()
    lines += [f"- Run to {budget.mask_one_rounds} rounds "
              f"({pct(weights.get(budget.mask_one_rounds), 1)}% remaining); the paper's figure "
              "continues to higher sparsity.", ""]
    return lines + page.status_note(names) + [""]


def mask_zero_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    claims, means, mid_rounds, high_rounds = mask_zero_claims(loaded, budget)
    names = [BASELINE] + [f"mask_zero/{a}" for a in budget.mask_zero_actions]
    labels = {BASELINE: MASK_ZERO_NAMES["zero"]}
    labels.update({f"mask_zero/{a}": MASK_ZERO_NAMES[a] for a in MASK_ZERO_ACTIONS})
    seeded = {f"mask_zero/{a}": budget.mask_zero_seeds for a in budget.mask_zero_actions}
    path = curves_figure(lottery_series(loaded, names, labels, budget.mask_zero_rounds,
                                        seeds=budget.seeds, seeded=seeded),
                         page.figure("mask_zero"), f"{page.arch}: mask-0 actions",
                         hlines=dense_lines(loaded, budget.seeds))
    lines = ["## 3. Mask-0 actions: what pruned weights are (the paper's Figure 4)", ""]
    lines += page.image(path, "mask-0 actions")
    base_points = mean_curve(loaded, BASELINE, budget.seeds, budget.mask_zero_rounds)
    weights = {r: w for r, w, _ in base_points}
    shown = [r for r in (3, 7, 12, 15) if r <= budget.mask_zero_rounds] or \
        [budget.mask_zero_rounds]
    header = _rounds_header("mask-0 action", weights, shown) + \
        [f"mean, {weights_label(base_points, mid_rounds)}",
         f"mean, {weights_label(base_points, high_rounds)}"]
    rows = []
    for action in ("zero",) + tuple(budget.mask_zero_actions):
        name = BASELINE if action == "zero" else f"mask_zero/{action}"
        points = curve(loaded.get(name), budget.mask_zero_rounds)
        mid, high = means.get(action, (None, None))
        seeds = budget.seeds if name == BASELINE else budget.mask_zero_seeds
        cells = baseline_cells(loaded, seeds, budget.mask_zero_rounds, shown, name) \
            if seeds > 1 else [pct(at_round(points, r)) for r in shown]
        rows.append([MASK_ZERO_NAMES[action]] + cells + [pct(mid), pct(high)])
    lines += _table(header, rows) + [""]
    lines += [CLAIMS_HEADING, ""] + page.add_claims("mask-0", claims) + [""]
    if budget.name == "paper":
        lines += evidence_lines(loaded, budget, page.state.get("_archive"), mid_rounds,
                                high_rounds, MASK_ZERO_NAMES,
                                weights_label(base_points, mid_rounds),
                                weights_label(base_points, high_rounds), page.out_dir)
    lines += ["Differences from the paper's protocol:", ""] + page.deviations()
    lines += [f"- Run to {budget.mask_zero_rounds} rounds "
              f"({pct(weights.get(budget.mask_zero_rounds), 1)}% remaining).", ""]
    return lines + page.status_note(names) + [""]


def untrained_section(page: Page) -> list:
    budget, paper = page.budget, page.paper
    claims, table = untrained_claims(page.loaded)
    results = page.loaded.get("untrained/all_criteria")
    path = None
    if results and results.get("masks"):
        path = panels_figure(untrained_panels(results), page.figure("untrained"),
                             hline=Series("chance", [], [100 * CHANCE],
                                          {"color": "grey", "linestyle": ":", "linewidth": 1}))
    lines = ["## 4. Untrained supermasks (the paper's Figure 5 and supermask table)", ""]
    lines += page.image(path, "untrained supermasks")
    rows = []
    for criterion in choices.CRITERIA:
        cells = [criterion]
        for treatment in choices.WEIGHT_TREATMENTS:
            value = table.get((criterion, treatment))
            cells.append("-" if value is None else f"{pct(value[0])} ({pct(value[1], 1)}%)")
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
    lines += [CLAIMS_HEADING, ""] + page.add_claims("untrained", claims) + [""]
    levels = ("0-24 (as the paper)" if not budget.untrained_levels
              else ", ".join(map(str, untrained_levels(budget))))
    source = (f"- The masks come from the dense network of `{BASELINE}` round 0, trained "
              f"{budget.epochs_text()}, as the paper's.") if budget.name == "paper" else (
        f"- The masks come from the dense network of `{BASELINE}` round 0, trained "
        f"{budget.epochs_text()} (paper: {PRESETS[page.preset].paper_epochs} epochs), so "
        "w_f is less far from w_i than in the paper.")
    lines += ["Differences from the paper's protocol:", "", source,
              f"- Prune levels {levels}; masks from seed {page.state.get('seed', 0)}'s dense "
              "network only.", ""]
    return lines + page.status_note(["untrained/all_criteria"]) + [""]


def _learned_paper_value(page: Page, name: str) -> str:
    paper, arch = page.paper, page.arch
    if page.fc and name == "signed_constant":
        return f"{paper['learned_supermask'][0]:.1f}"
    if not page.fc and name == "signed_constant" and arch in paper["learned_supermask"]:
        return f"{paper['learned_supermask'][arch][0]:.1f}"
    if not page.fc and name.endswith("dynamic") and arch in paper["learned_dynamic"]:
        learned, dense = paper["learned_dynamic"][arch]
        return f"{learned:.1f} (dense {dense:.1f})"
    return "-"


def learned_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    items = [("trained dense network", dense_stats(loaded, budget.seeds)[0])]
    sc = untrained_table(loaded.get("untrained/all_criteria")).get(
        ("large_final_same_sign", "signed_constant"))
    if sc is not None:
        items.append(("untrained supermask (best, signed constant)", sc[0]))
    rows = []
    for name, _ in budget.learned_runs:
        record = ((loaded.get(f"learned/{name}") or {}).get("rounds") or [None])[0]
        if record is None:
            rows.append([name, "-", "-", "-", "-"])
            continue
        expected = record.get("test_accuracy_expected_mask")
        sampled = record.get("test_accuracy_sampled")
        std = record.get("test_accuracy_sampled_std", 0.0)
        items.append((f"learned supermask, {name} (expected mask)", expected))
        items.append((f"learned supermask, {name} (sampled)", sampled))
        rows.append([name, pct(expected), f"{pct(sampled)} ± {100 * std:.2f}",
                     pct(record.get("weights_remaining"), 1), _learned_paper_value(page, name)])
    lines = ["## 5. Learned supermasks (the paper's supermask table)", ""]
    lines += page.image(bars_figure(items, page.figure("learned"),
                                    f"{page.arch}: learned supermasks"), "learned supermasks")
    lines += _table(["kernel weights", "expected mask (%)", "sampled masks, mean ± std (%)",
                     "weights kept (%)", "paper (%)"], rows) + [""]
    at_paper = (budget.learned_epochs or 0) >= PAPER_LEARNED_EPOCHS
    lines += ["Differences from the paper's protocol:" if not at_paper else "Protocol:", "",
              f"- {budget.learned_text()} of SGD (momentum 0.9, learning rate 100, batch 250; "
              + ("the authors' own settings, `--num_epochs 2000` in their README)."
                 if at_paper else f"the paper's preset); the authors train "
                 f"{PAPER_LEARNED_EPOCHS:,} epochs."),
              f"- Accuracy of the expected mask (sigmoid(s) > 0.5) and the mean over "
              f"{budget.eval_samples} sampled masks; the paper reports one number.", ""]
    return lines + page.status_note([f"learned/{n}" for n, _ in budget.learned_runs]) + [""]


def tfmot_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    levels = {level: [p for p in curve(loaded.get(f"tfmot/level_{level:02d}")) if p[0] == level]
              for level in budget.tfmot_levels}
    tfmot_points = sorted(p for points in levels.values() for p in points)
    base_points = curve(loaded.get(BASELINE), max(budget.tfmot_levels or (0,)))
    seed = next((run.flags.get("seed") for run in page.runs if run.name == BASELINE), None)
    which = "" if seed is None else f", seed {seed}"  # one seed each, the same one
    series = [points_series(base_points, f"lottery ticket (large_final, iterative{which})",
                            color="black")]
    if tfmot_points:
        series.append(points_series(tfmot_points, "tfmot prune_low_magnitude (one round's "
                                                  f"budget{which})", color="tab:orange",
                                    marker="s"))
    path = None
    if tfmot_points or base_points:
        path = curves_figure(series, page.figure("tfmot"),
                             f"{page.arch}: lottery ticket vs tfmot gradual pruning",
                             hlines=dense_lines(loaded, budget.seeds))
    lines = ["## 6. Baseline: gradual magnitude pruning (tensorflow-model-optimization)", ""]
    lines += page.image(path, "tfmot baseline")
    base_weights = {r: w for r, w, _ in base_points}
    rows = []
    for level, points in levels.items():
        remaining = points[0][1] if points else base_weights.get(level)
        rows.append([level, pct(remaining, 1), pct(at_round(base_points, level)),
                     pct(points[0][2]) if points else "missing"])
    lines += _table(["level (rounds)", "weights remaining (%)", f"lottery ticket{which} (%)",
                     f"tfmot gradual pruning{which} (%)"], rows) + [""]
    lines += ["Not in the paper: a standard pruning baseline for context. Each tfmot level "
              f"trains from the same initialisation for one round's budget "
              f"({budget.epochs_text()}), pruning gradually to the level's per-layer sparsity; "
              "the lottery ticket at level r has had r + 1 rounds of training.", ""]
    names = [f"tfmot/level_{level:02d}" for level in budget.tfmot_levels]
    return lines + page.status_note(names) + [""]


def _speed_rows(speed: dict) -> list:
    rows = []
    for name, label in (("export/large_final", "1x1"), ("export/large_final_1x4", "1x4")):
        if name not in speed:
            rows.append([label, "-", "-", "-", "-", "missing"])
            continue
        ratio, dense_latency, sparse_latency, entry, layers = speed[name]
        kernels = ", ".join(f"{layer['name']}: {layer['litert_kernel']}" for layer in layers)
        rows.append([label, f"{1e6 * dense_latency:.1f}", f"{1e6 * sparse_latency:.1f}",
                     f"{ratio:.2f}x", f"{entry.get('size_bytes', 0) / 1024:.0f}", kernels])
    return rows


def blocks_section(page: Page) -> list:
    budget, loaded = page.budget, page.loaded
    claims, speed = block_claim(loaded, budget)
    names = [BASELINE, "blocks/large_final_1x4"]
    labels = {BASELINE: "1x1 (the paper)", "blocks/large_final_1x4": "1x4 blocks"}
    path = curves_figure(lottery_series(loaded, names, labels, budget.block_rounds,
                                        seeds=budget.seeds),
                         page.figure("blocks"),
                         f"{page.arch}: large_final lottery tickets, 1x1 vs 1x4",
                         hlines=dense_lines(loaded, budget.seeds))
    lines = ["## 7. 1x1 vs 1x4 mask blocks (LiteRT's sparse kernel; not in the paper)", ""]
    lines += page.image(path, "1x1 vs 1x4")
    shown = [r for r in (3, 7, 12, 15) if r <= budget.block_rounds] or [budget.block_rounds]
    rows = [["1x1"] + baseline_cells(loaded, budget.seeds, budget.block_rounds, shown),
            ["1x4"] + [pct(at_round(curve(loaded.get("blocks/large_final_1x4"),
                                          budget.block_rounds), r)) for r in shown]]
    weights = {r: w for r, w, _ in curve(loaded.get(BASELINE), budget.block_rounds)}
    lines += _table(_rounds_header("blocks", weights, shown), rows) + [""]
    lines += _table(["ticket", "dense file, us/example", "sparse file, us/example", "speed-up",
                     "sparse file KiB", "LiteRT kernel per layer"], _speed_rows(speed)) + [""]
    lines += [f"Exports of round {budget.export_round} "
              f"({pct(weights.get(budget.export_round), 1)}% remaining) with "
              "`python -m tf_lth.export --formats=tflite,tflite_sparse`; latency: LiteRT, one "
              "thread, batch 1, median over 200 test images.", ""]
    lines += ["Claim (issue 9, not the paper's):", ""] + page.add_claims("blocks", claims) + [""]
    lines += page.status_note(names[1:] + ["export/large_final", "export/large_final_1x4"])
    return lines + [""]


SECTIONS = (criteria_section, mask_one_section, mask_zero_section, untrained_section,
            learned_section, tfmot_section, blocks_section, sparse_section)


def fidelity_rows(preset: str, budget: Budget, loaded: dict) -> list:
    """One row per number of the paper (or the repro) this preset checks: {what, source,
    ours: (mean, std, n) in [0, 1], paper: percent, difference: points or None}."""
    rows = []

    def add(what, source, ours, paper_value):
        ours = tuple(ours) if ours else (None, None, 0)
        difference = None if ours[0] is None else 100 * ours[0] - paper_value
        rows.append({"what": what, "source": source, "ours": ours, "paper": paper_value,
                     "difference": difference})

    seeds = budget.seeds
    sweep = untrained_table(loaded.get("untrained/all_criteria"))
    arch = PRESETS[preset].arch
    if preset == "mnist_fc":
        paper = PAPER["mnist_fc"]
        stats = seed_stats(loaded, BASELINE, seeds, budget.criteria_rounds)
        by_round = {p[0]: p[2:] for p in stats}
        add("dense network (round 0)", paper["dense"][1], by_round.get(0), paper["dense"][0])
        for target, value in paper["lottery"].items():
            nearest = _nearest([(p[0], p[1], p[2]) for p in stats], target)
            add(f"large_final lottery ticket, {target}% remaining"
                + (f" (our round {nearest[0]}, {100 * nearest[1]:.1f}%)" if nearest else ""),
                "repro", by_round.get(nearest[0]) if nearest else None, value)
        for criterion, value in paper["criteria_24"].items():
            points = curve(loaded.get(f"criteria/{criterion}"), PAPER_ROUNDS)
            ours = at_round(points, PAPER_ROUNDS)
            add(f"{criterion}, round {PAPER_ROUNDS}", "repro",
                None if ours is None else (ours, None, 1), value)
        for key, treatment in (("untrained_signed_constant", "signed_constant"),
                               ("untrained_init", "init")):
            found = sweep.get(("large_final_same_sign", treatment))
            add(f"untrained supermask, large_final_same_sign, {treatment} weights, best level",
                paper[key][1], None if found is None else (found[0], None, 1), paper[key][0])
        learned = _learned_accuracy(loaded, "signed_constant")
        add("learned supermask, signed constants (expected mask)",
            paper["learned_supermask"][1], learned, paper["learned_supermask"][0])
        return rows
    paper = PAPER["cifar10"]
    if arch in paper["learned_supermask"]:
        value, source = paper["learned_supermask"][arch]
        add(f"{arch} learned supermask, signed constants", source,
            _learned_accuracy(loaded, "signed_constant"), value)
    if arch in paper["learned_dynamic"]:
        add(f"{arch} learned supermask, dynamic scaling", "secondary",
            _learned_accuracy(loaded, "signed_constant_dynamic"), paper["learned_dynamic"][arch][0])
    found = sweep.get(("large_final_same_sign", "signed_constant"))
    add(f"{arch} untrained supermask, signed constants, best level",
        paper["untrained_signed_constant"][1], None if found is None else (found[0], None, 1),
        paper["untrained_signed_constant"][0])
    return rows


def _learned_accuracy(loaded: dict, name: str):
    record = ((loaded.get(f"learned/{name}") or {}).get("rounds") or [None])[0]
    value = (record or {}).get("test_accuracy_expected_mask")
    return None if value is None else (value, None, 1)


def default_page_path(preset: str) -> str:
    """Where `--budget=default` writes its report for `preset` (docs/RESULTS.md for fc)."""
    return os.path.join(ROOT, "docs", "RESULTS.md" if preset == "mnist_fc"
                        else f"RESULTS_{preset}.md")


def default_budget_numbers(path: str) -> tuple:
    """(budget words such as "7 epochs", {fidelity row label: our number}) read back from
    a default-budget page's fidelity table; ("", {}) when there is none."""
    if not os.path.isfile(path):
        return "", {}
    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    budget = ""
    for line in text.splitlines():
        if line.startswith("- Budget: ") and " per round" in line:
            budget = line[len("- Budget: "):line.index(" per round")]
            break
    if "## Fidelity" not in text:
        return budget, {}
    table = text[text.index("## Fidelity"):].split("\n## ", 1)[0]
    numbers = {}
    for line in table.splitlines()[3:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 2:
            numbers[cells[0]] = cells[1]
    return budget, numbers


def fidelity_section(page: Page) -> list:
    """The table at the top: each number of the paper this preset checks, ours beside it;
    at the paper's budget also the default budget's number (from its page), so the effect
    of the budget is read off one row."""
    rows = []
    default_budget, default_numbers = ("", {}) if page.budget.name != "paper" else \
        default_budget_numbers(default_page_path(page.preset))
    for row in fidelity_rows(page.preset, page.budget, page.loaded):
        mean, std, count = row["ours"]
        ours = "not run" if mean is None else pm(row["ours"]) + (
            f" ({count} seeds)" if count > 1 else "")
        cells = [row["what"], ours, f"{row['paper']:g}", row["source"],
                 "-" if row["difference"] is None else f"{row['difference']:+.2f}"]
        if default_numbers:
            cells.insert(1, default_numbers.get(row["what"], "-"))
        rows.append(cells)
    header = ["number", "ours (%)", "paper (%)", "source", "ours - paper (points)"]
    note = ""
    if default_numbers:
        header[1:2] = [f"ours, {default_budget} per round (%)",
                       f"ours, {page.budget.epochs_text()} per round (%)"]
        page_dir = os.path.dirname(os.path.abspath(page.results_path))
        source = os.path.relpath(default_page_path(page.preset), page_dir)
        note = (f" The {default_budget}-per-round column is read from [{source}]({source}) "
                "(`make reproduce`, the budget a user re-runs in about 90 minutes).")
    return (["## Fidelity: our numbers against the paper's", ""]
            + _table(header, rows)
            + ["", f"Test accuracy at the best validation loss. Ours at this budget "
               f"({page.budget.epochs_text()} per round); mean ± std (sample std) where "
               "seeds exist. \"repro\" is the independent 5-seed reproduction the paper's "
               f"numbers are quoted from.{note}", ""])


def summary_section(page: Page) -> list:
    """Every claim and its verdict, for the top of the page (after the sections ran)."""
    rows = [[section, title, f"**{verdict['verdict']}**"]
            for section, (title, verdict) in page.claims]
    return (["## Claims at a glance", ""] + _table(["section", "claim", "verdict"], rows)
            + ["", "Each verdict is computed from the numbers below by a stated rule; the "
               "reason beside each claim gives the measured values.", ""])


def _time_taken(record: dict) -> float | None:
    """A finished sub-run's seconds over every invocation that ran it; None unfinished."""
    if record.get("status") != "done":
        return None
    return record.get("seconds", 0.0) + record.get("seconds_before", 0.0)


def timing_section(page: Page) -> list:
    """Per sub-run: the plan's estimate beside the time it took (all invocations), and the
    code commits it ran from (a sub-run resumed across a code change names both)."""
    rows, estimated, taken = [], 0.0, 0.0
    for run in page.runs:
        record = page.state.get("sub_runs", {}).get(run.name) or {}
        seconds = _time_taken(record)
        estimate_s = duration(run, int(record.get("jobs") or page.state.get("jobs") or 1))
        if seconds is not None:
            estimated, taken = estimated + estimate_s, taken + seconds
        status = record.get("status", "not run")
        if status != "done" and page.running_note(run.name):
            status = "running"  # its record is the last invocation's, a live one holds it
        rows.append([f"`{run.name}`", status + (" (archived)" if record.get("archived") else ""),
                     f"{estimate_s / 60:.1f}",
                     "-" if seconds is None else f"{seconds / 60:.1f}",
                     ", ".join(record.get("commits", [])) or "-"])
    jobs = int(page.state.get("jobs") or 1)
    ratio = f"; the finished sub-runs took {taken / estimated:.2f}x their estimate" \
        if estimated else ""
    wall = page.state.get("wall_seconds")
    total = (f" All invocations together took {minutes(wall)} of wall time with --jobs={jobs}, "
             f"against the plan's {minutes(wall_estimate(page.runs, jobs))} for the whole plan"
             + ("" if all(page.state.get("_complete", {}).values()) else
                " (not all sub-runs are complete)") + "." if wall else "")
    unrecorded = [entry.get("what", "an invocation") + _lost_sub_runs_time(page, entry)
                  for entry in archive.invocations(page.state.get("_archive"))
                  if entry.get("seconds") is None]
    if unrecorded:
        total += f" Not in that total: {'; '.join(unrecorded)}."
    return ["", "## Sub-runs: estimate, time taken and code", "",
            f"Minutes per sub-run: the plan's estimate at the --jobs it ran with (--jobs={jobs} "
            "where its record does not say; 2 CPU cores, nothing else running, that many at "
            "once sharing them) and the time it took, summed "
            f"over the invocations that ran it{ratio}.{total} `commits` are the code versions "
            "that ran it, in order.", ""] + _table(
        ["sub-run", "status", "estimate (min)", "took (min)", "commits"], rows) + [""]


def _lost_sub_runs_time(page: Page, entry: dict) -> str:
    """For invocations whose wall time was lost, the own time of the finished sub-runs that
    ran only from their `commits` (prefixes): with two sub-runs at once, their wall time was
    at least half of it."""
    commits = tuple(entry.get("commits") or ())
    if not commits:
        return ""
    seconds = [_time_taken(record) for record in page.state.get("sub_runs", {}).values()
               if _time_taken(record) is not None and record.get("commits")
               and all(commit.startswith(commits) for commit in record["commits"])]
    if not seconds:
        return ""
    return (f"; the {len(seconds)} sub-runs that ran only from those commits took "
            f"{minutes(sum(seconds))} of their own time (with two at once, at least "
            f"{minutes(sum(seconds) / 2)} of wall time)")


def report(preset: str, budget: Budget, runs: list, out_dir: str, results_path: str,
           figures_dir: str, state: dict, only: tuple = (),
           archive_dir: str | None = None) -> str:
    """Writes RESULTS.md (and its figures) from the run directories; returns the text.

    With `archive_dir`, a sub-run whose run directory is gone is read from its archived
    record, and the wall time is that of every archived invocation. With `only` naming just
    the sparse section and RESULTS.md already there, only that section (and its rows of the
    claims table) is replaced: its runs may live elsewhere than the paper sections'
    (`sparse.splice`)."""
    by_name = {run.name: run for run in runs}
    archived, _ = archive.load(archive_dir, runs)
    archived = {name: record for name, record in archived.items()
                if not is_complete(by_name[name], out_dir)}
    sub_runs = dict(state.get("sub_runs", {}))
    for name, record in archived.items():
        sub_runs[name] = {**record.get("status", {}), "status": "done", "archived": True}
    state = {**state, "sub_runs": sub_runs,
             "_complete": {run.name: is_complete(run, out_dir) or run.name in archived
                           for run in runs}}
    if archive_dir:
        state["_archive"] = archive_dir
        state["wall_seconds"] = archive.wall_seconds(archive_dir) or state.get("wall_seconds")
    page = Page(preset, budget, runs, out_dir, results_path, figures_dir, state,
                load_results(runs, out_dir, archived))
    if only and set(only) <= {"sparse"} and os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as stream:
            existing = stream.read()
        section = sparse_section(page)
        rows = _table(["section", "claim", "verdict"],
                      [[name, title, f"**{verdict['verdict']}**"]
                       for name, (title, verdict) in page.claims])[2:]
        text = splice(existing, section, rows)
        run_files.write_text(results_path, text)
        return text
    body = [line for section in SECTIONS for line in section(page)]
    lines = header_section(page) + fidelity_section(page) + summary_section(page) + body + \
        timing_section(page)
    text = "\n".join(lines).rstrip() + "\n"
    run_files.write_text(results_path, text)
    return text
