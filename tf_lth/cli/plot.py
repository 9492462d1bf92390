"""`python -m tf_lth.plot RUN_DIR [RUN_DIR ...] --out FILE.png`: the paper's figures.

CLI layer, and the figures of `python -m tf_lth.reproduce`. Lottery and baseline runs: test
accuracy at the best-validation point against percent of weights remaining (log axis,
sparser to the right), one line per run, the dense baseline dashed, a run's `--controls`
(random mask, reinitialised ticket) dashed beside it. Untrained-supermask
runs: one line per criterion and weight treatment.

Every figure here takes plain data (`Series`: a label, x and y in percent, a matplotlib
style), so what is drawn can be checked without reading pixels; every weights-remaining
axis gets the same ticks (`percent_ticks`); every PNG is written atomically.
Matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys

from tf_lth.core import config as config_lib
from tf_lth.core import run_files

# Weights-remaining ticks, in percent: plain numbers at 1-2-5 steps.
TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
ACCURACY_LABEL = "test accuracy at best validation loss (%)"


@dataclasses.dataclass
class Series:
    """One line: x = percent of weights remaining, y = accuracy in percent."""

    label: str
    x: list
    y: list
    style: dict = dataclasses.field(default_factory=dict)
    spread: list | None = None  # y's standard deviation over seeds: a band y ± spread


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _percent_axis(axis, title: str, ylabel: str = ACCURACY_LABEL) -> None:
    """A log weights-remaining axis, 100% at the left."""
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel("weights remaining (%)")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(True, which="both", alpha=0.3)


def percent_ticks(axis) -> None:
    """The one tick convention of every weights-remaining axis: `TICKS` within the drawn
    range, written as plain percentages; four evenly spaced (on the log axis) values when
    fewer than two fall in a narrow range. No minor ticks."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    low, high = sorted(axis.get_xlim())
    ticks = [tick for tick in TICKS if low <= tick <= high]
    if len(ticks) < 2:
        ticks = [low * (high / low) ** (i / 3) for i in range(4)]
    axis.xaxis.set_major_locator(FixedLocator(ticks))
    axis.xaxis.set_major_formatter(lambda value, _: f"{value:.3g}")
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_minor_formatter(NullFormatter())


def save(figure, path: str, dpi: int = 90) -> str:
    """Ticks every log axis, writes the PNG atomically, closes the figure; returns path."""
    plt = _pyplot()
    for axis in figure.axes:
        if axis.get_xscale() == "log":
            percent_ticks(axis)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    run_files.atomic_write_bytes(path, buffer.getvalue())
    return path


def _draw(axis, series: Series, marker: str = "o", markersize: float = 3) -> None:
    style = {"marker": marker, "markersize": markersize, **series.style}
    (line,) = axis.plot(series.x, series.y, label=series.label, **style)
    if series.spread:  # mean ± std over seeds, in the line's color
        axis.fill_between(series.x, [y - s for y, s in zip(series.y, series.spread)],
                          [y + s for y, s in zip(series.y, series.spread)],
                          color=line.get_color(), alpha=0.2, linewidth=0)


def curves_figure(series: list, path: str, title: str, hlines: tuple = (), ylim=None,
                  ylabel: str = ACCURACY_LABEL, legend: dict | None = None,
                  figsize=(7.5, 4.6), dpi: int = 90) -> str | None:
    """Accuracy against weights remaining, one line per non-empty series, plus horizontal
    lines (Series whose y holds one value, e.g. the dense network). None (nothing
    written) when there is nothing to draw."""
    series = [item for item in series if item.x]
    if not series and not hlines:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=figsize)
    _percent_axis(axis, title, ylabel)
    for item in series:
        _draw(axis, item)
    for line in hlines:
        axis.axhline(line.y[0], label=line.label, **line.style)
    if ylim:
        axis.set_ylim(*ylim)
    axis.legend(**(legend or {"fontsize": 7, "loc": "lower left"}))
    return save(figure, path, dpi)


def panels_figure(panels: dict, path: str, hline: Series | None = None,
                  ylabel: str = "test accuracy, no training (%)") -> str | None:
    """Side by side panels {title: [Series]} sharing the y axis (untrained supermasks)."""
    if not any(item.x for series in panels.values() for item in series):
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(13, 4.4), sharey=True, squeeze=False)
    for axis, (title, series) in zip(axes[0], panels.items()):
        for item in series:
            if item.x:
                _draw(axis, item, marker=".")
        if hline is not None:
            axis.axhline(hline.y[0], label=hline.label, **hline.style)
        _percent_axis(axis, title, ylabel="")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=6, loc="upper left")
    return save(figure, path)


def bars_figure(items: list, path: str, title: str) -> str | None:
    """Horizontal bars [(label, accuracy in [0, 1] or None)]; None values are left out."""
    items = [(label, value) for label, value in items if value is not None]
    if not items:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(items) + 1.2))
    values = [100 * value for _, value in items]
    axis.barh(range(len(items)), values, color="tab:blue")
    axis.set_yticks(range(len(items)), [label for label, _ in items], fontsize=8)
    axis.invert_yaxis()
    for index, value in enumerate(values):
        axis.text(value + 0.5, index, f"{value:.1f}%", va="center", fontsize=8)
    axis.set_xlim(0, 110)
    axis.set_xlabel("test accuracy (%)")
    axis.set_title(title, fontsize=10)
    return save(figure, path)


# ---- the CLI: runs from their results.json ------------------------------------------------
def _non_default(config: dict, name: str):
    """`config[name]` where it differs from the setting's declared default, else None (a
    results.json older than the setting has no entry: the run had the default)."""
    value = config.get(name, config_lib.default(name))
    return None if value == config_lib.default(name) else value


def run_label(results: dict) -> str:
    config = results.get("config", {})
    experiment = config.get("experiment", "?")
    if experiment == "tfmot_baseline":
        return "tfmot gradual pruning"
    if experiment == "learned_supermask":
        return f"learned supermask ({config.get('supermask_weights')})"
    label = config.get("criterion", "?")
    if _non_default(config, "mask_one_action"):
        label += f", mask-1 {config['mask_one_action']}"
    if _non_default(config, "mask_zero_action"):
        label += f", mask-0 {config['mask_zero_action']}"
    if _non_default(config, "mask_block"):
        label += f", {config['mask_block']} blocks"
    if config.get("one_shot"):
        label += ", one-shot"
    if config.get("rewind_iteration"):
        label += f", rewind {config['rewind_iteration']}"
    return label


def _load(run_dir: str) -> dict:
    path = os.path.join(run_dir, "results.json")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir}: no results.json; allowed: a tf_lth run directory.")
    return run_files.read_json(path)


def _by_weights(records: list, accuracy) -> tuple:
    records = sorted(records, key=lambda item: -item["weights_remaining"])
    return [100 * r["weights_remaining"] for r in records], [100 * accuracy(r) for r in records]


def run_series(results: list) -> tuple:
    """(lines, the dense network's line or None) of the runs' results.json."""
    series, dense = [], None
    for result in results:
        if result.get("masks"):
            groups = {}
            for record in result["masks"]:
                groups.setdefault((record["criterion"], record["weight_treatment"]),
                                  []).append(record)
            for (criterion, treatment), records in sorted(groups.items()):
                x, y = _by_weights(records, lambda r: r["test_accuracy"])
                series.append(Series(f"{criterion} ({treatment})", x, y,
                                     {"marker": ".", "markersize": 6}))
            if "dense" in result and dense is None:
                dense = Series("trained dense network",
                               [], [100 * result["dense"]["best"]["test_accuracy"]])
            continue
        rounds = result.get("rounds", [])
        pruned = [r for r in rounds if r.get("weights_remaining", 1.0) < 1.0 or
                  result["config"].get("experiment") == "tfmot_baseline"]
        first = [r for r in rounds if r.get("round") == 0 and r.get("weights_remaining") == 1.0]
        if first and dense is None:
            dense = Series("dense (round 0)", [], [100 * first[0]["best"]["test_accuracy"]])
        if pruned:
            x, y = _by_weights(pruned, lambda r: r["best"]["test_accuracy"])
            series.append(Series(run_label(result), x, y, {"markersize": 6}))
            series += control_series(run_label(result), pruned)
    if dense is not None:
        dense.style = {"color": "black", "linestyle": "--"}
    return series, dense


def control_series(label: str, pruned: list) -> list:
    """Dashed lines of a lottery run's `--controls`, at the ticket's weights remaining
    (same kept counts), test accuracy at each control's best validation loss."""
    kinds = []
    for record in pruned:
        kinds += [kind for kind in record.get("controls", {}) if kind not in kinds]
    lines = []
    for kind in kinds:
        records = [r for r in pruned if kind in r.get("controls", {})]
        x, y = _by_weights(records, lambda r: r["controls"][kind]["best"]["test_accuracy"])
        lines.append(Series(f"{label}: {kind} control", x, y,
                            {"linestyle": "--", "markersize": 4}))
    return lines


def plot_runs(run_dirs: list, out: str, title: str | None = None) -> str:
    """Draws the runs into `out` (PNG, written atomically); returns the path."""
    results = [_load(run_dir) for run_dir in run_dirs]
    supermask_only = all(r.get("masks") and not r.get("rounds") for r in results)
    series, dense = run_series(results)
    title = title or ("untrained supermasks" if supermask_only else "lottery tickets")
    ylabel = "test accuracy (%)" if supermask_only else ACCURACY_LABEL
    path = curves_figure(series, out, title, hlines=(dense,) if dense else (), ylabel=ylabel,
                         legend={"fontsize": 7, "loc": "best"}, figsize=(8, 5), dpi=120)
    if path is None:
        raise ValueError(f"{', '.join(run_dirs)}: nothing to plot (no rounds or masks); "
                         "allowed: tf_lth run directories with results.")
    return path


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tf_lth.plot", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", help="run directories with results.json")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--title", default=None)
    arguments = parser.parse_args(argv)
    try:
        path = plot_runs(arguments.run_dirs, arguments.out, arguments.title)
    except (ValueError, run_files.CorruptFileError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
