"""`python -m tf_lth.plot RUN_DIR [RUN_DIR ...] --out FILE.png`: the paper's figures.

CLI layer. Lottery and baseline runs: test accuracy at the best-validation point against
percent of weights remaining (log axis), one line per run, the dense baseline dashed.
Untrained-supermask runs: one line per criterion and weight treatment.
"""

from __future__ import annotations

import io
import os
import sys

from tf_lth import run_files


def run_label(results: dict) -> str:
    config = results.get("config", {})
    experiment = config.get("experiment", "?")
    if experiment == "tfmot_baseline":
        return "tfmot gradual pruning"
    if experiment == "learned_supermask":
        return f"learned supermask ({config.get('supermask_weights')})"
    label = config.get("criterion", "?")
    if config.get("mask_one_action", "none") != "none":
        label += f", mask-1 {config['mask_one_action']}"
    if config.get("mask_zero_action", "zero") != "zero":
        label += f", mask-0 {config['mask_zero_action']}"
    if config.get("mask_block", "1x1") != "1x1":
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


def plot_runs(run_dirs: list, out: str, title: str | None = None) -> str:
    """Draws the runs into `out` (PNG, written atomically); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results = [(run_dir, _load(run_dir)) for run_dir in run_dirs]
    figure, axis = plt.subplots(figsize=(8, 5))
    dense_drawn = False
    supermask_only = all(r.get("masks") and not r.get("rounds") for _, r in results)
    for run_dir, result in results:
        if result.get("masks"):
            groups = {}
            for record in result["masks"]:
                key = (record["criterion"], record["weight_treatment"])
                groups.setdefault(key, []).append(record)
            for (criterion, treatment), records in sorted(groups.items()):
                records.sort(key=lambda item: -item["weights_remaining"])
                axis.plot([100 * r["weights_remaining"] for r in records],
                          [100 * r["test_accuracy"] for r in records],
                          marker=".", label=f"{criterion} ({treatment})")
            if "dense" in result and not dense_drawn:
                axis.axhline(100 * result["dense"]["best"]["test_accuracy"], color="black",
                             linestyle="--", label="trained dense network")
                dense_drawn = True
            continue
        rounds = result.get("rounds", [])
        pruned = [r for r in rounds if r.get("weights_remaining", 1.0) < 1.0 or
                  result["config"].get("experiment") == "tfmot_baseline"]
        dense = [r for r in rounds if r.get("round") == 0 and r.get("weights_remaining") == 1.0]
        if dense and not dense_drawn:
            axis.axhline(100 * dense[0]["best"]["test_accuracy"], color="black", linestyle="--",
                         label="dense (round 0)")
            dense_drawn = True
        if pruned:
            pruned.sort(key=lambda item: -item["weights_remaining"])
            axis.plot([100 * r["weights_remaining"] for r in pruned],
                      [100 * r["best"]["test_accuracy"] for r in pruned],
                      marker="o", label=run_label(result))
    axis.set_xscale("log")
    low, high = sorted(axis.get_xlim())
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if low <= t <= high]
    axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axis.set_xlim(low, high)
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.invert_xaxis()
    axis.set_xlabel("percent of weights remaining")
    axis.set_ylabel("test accuracy (%)" if supermask_only else
                    "test accuracy at best validation loss (%)")
    axis.set_title(title or ("untrained supermasks" if supermask_only else "lottery tickets"))
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    run_files._atomic_write_bytes(out, buffer.getvalue())
    return out


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
