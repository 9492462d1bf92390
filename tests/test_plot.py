"""tf_lth.plot: what the figures show (their series and pixels) and the one tick convention.

Fast: results.json files are written by hand; nothing is trained.
"""

import json
import os

import numpy as np
import pytest

from tf_lth.cli import plot
from tf_lth.core import run_files


def _run(folder, results):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    return str(folder)


def _lottery(rounds, accuracy, **config):
    return {"config": {"experiment": "lottery", "criterion": "large_final", **config},
            "rounds": [{"round": r, "weights_remaining": 0.8 ** r,
                        "best": {"test_accuracy": accuracy(r)}} for r in range(rounds + 1)]}


def _untrained():
    masks = [{"criterion": c, "weight_treatment": t, "prune_level": level,
              "weights_remaining": 0.8 ** level, "test_accuracy": 0.1 + 0.01 * level}
             for c in ("large_final", "random") for t in ("init", "signed_constant")
             for level in (0, 3, 6)]
    return {"config": {"experiment": "untrained_supermask"}, "masks": masks,
            "dense": {"best": {"test_accuracy": 0.97}}}


def _pixels_of(image, color, tolerance=0.05):
    from matplotlib.colors import to_rgb

    return int((np.abs(image - np.array(to_rgb(color))).max(axis=-1) < tolerance).sum())


def test_run_series_holds_each_runs_numbers():
    lottery = _lottery(4, lambda r: 0.98 - 0.01 * r)
    one_x_four = _lottery(2, lambda r: 0.9, mask_block="1x4", mask_one_action="reinit")
    series, dense = plot.run_series([lottery, one_x_four])
    assert [s.label for s in series] == ["large_final", "large_final, mask-1 reinit, 1x4 blocks"]
    assert series[0].x == pytest.approx([100 * 0.8 ** r for r in range(1, 5)])
    assert series[0].y == pytest.approx([100 * (0.98 - 0.01 * r) for r in range(1, 5)])
    assert dense.label == "dense (round 0)" and dense.y == [pytest.approx(98.0)]
    series, dense = plot.run_series([_untrained()])
    labels = [s.label for s in series]
    assert labels == ["large_final (init)", "large_final (signed_constant)", "random (init)",
                      "random (signed_constant)"]
    assert series[0].y == pytest.approx([10.0, 13.0, 16.0])  # denser first (level 0)
    assert dense.y == [pytest.approx(97.0)]


def test_plot_runs_draws_one_curve_per_run_and_the_dense_line(tmp_path):
    from matplotlib.image import imread

    runs = [_run(tmp_path / "a", _lottery(6, lambda r: 0.98 - 0.02 * r)),
            _run(tmp_path / "b", _lottery(6, lambda r: 0.97 - 0.05 * r, criterion="random"))]
    out = plot.plot_runs(runs, str(tmp_path / "figure.png"), title="two runs")
    image = imread(out)[..., :3]
    assert image.shape[:2] == (600, 960)  # 8 x 5 inches at 120 dpi
    assert _pixels_of(image, "C0") > 100 and _pixels_of(image, "C1") > 100  # two curves
    assert _pixels_of(image, "C2") == 0 and _pixels_of(image, "C3") == 0  # and no third
    assert _pixels_of(image, "black") > 100  # the dense line, axes and text
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]


def test_every_percent_axis_gets_the_same_ticks(tmp_path):
    plt = plot._pyplot()
    figure, axis = plt.subplots()
    axis.set_xscale("log")
    axis.plot([100, 0.4], [1, 2])
    plot.percent_ticks(axis)
    assert list(axis.get_xticks()) == [100, 50, 20, 10, 5, 2, 1, 0.5]
    labels = [axis.xaxis.get_major_formatter()(tick, 0) for tick in (100, 0.5)]
    assert labels == ["100", "0.5"]
    assert len(axis.xaxis.get_minorticklocs()) == 0
    axis.set_xlim(30, 40)  # no tick of TICKS inside: four evenly spaced ones
    plot.percent_ticks(axis)
    assert len(axis.get_xticks()) == 4
    plt.close(figure)


def test_figures_with_nothing_to_draw_write_nothing(tmp_path):
    path = str(tmp_path / "none.png")
    assert plot.curves_figure([plot.Series("empty", [], [])], path, "t") is None
    assert plot.bars_figure([("missing", None)], path, "t") is None
    assert plot.panels_figure({"a": [plot.Series("empty", [], [])]}, path) is None
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="no results.json"):
        plot.plot_runs([str(tmp_path)], path)


def test_cli_reports_a_corrupt_run_in_one_line(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text("{not json", encoding="utf-8")
    assert plot.main([str(folder), f"--out={tmp_path / 'x.png'}"]) == 2
    assert "corrupt" in capsys.readouterr().err
    run_files.write_json(str(folder / "results.json"), _lottery(2, lambda r: 0.9))
    assert plot.main([str(folder), f"--out={tmp_path / 'x.png'}"]) == 0
