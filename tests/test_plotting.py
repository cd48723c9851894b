"""Plots, animations and the command line, from snapshot data."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_learnact import cli
from keras_learnact import snapshots as ks

matplotlib = pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = [0, 1, 2, 4]


def make_snapshots():
    """Three layers (one without histogram, one with 6 of 10 channels)."""
    grid = np.linspace(-4, 4, 41)
    edges = np.linspace(-4, 4, 11).astype("float32")
    snaps = ks.Snapshots(grid, info={"package_version": "0.1.0",
                                     "keras_version": "3", "backend": "jax"})
    rng = np.random.default_rng(0)
    for e in EPOCHS:
        counts = rng.integers(0, 20, size=10)
        snaps.add(e, {
            "abu": {"class": "ABU", "curves": np.tanh(grid)[None] * (1 + e),
                    "params": {"blend_weights": np.full(5, 0.2 * e),
                               "swish_beta": np.float32(1.0)},
                    "hist_edges": edges, "hist_counts": counts,
                    "hist_outside": np.array([1, e])},
            "alpha": {"class": "AdaptiveScaling",
                      "curves": np.maximum(grid, 0)[None] * e,
                      "params": {"alpha": np.float32(e)}},
            "wide": {"class": "AdaptiveScaling",
                     "curves": np.stack([np.sin(grid + c) * e
                                         for c in range(6)]),
                     "channels": np.array([0, 2, 3, 5, 8, 9]),
                     "total_channels": 10,
                     "params": {"alpha": np.arange(10.0) * e},
                     "hist_edges": edges, "hist_counts": counts,
                     "hist_outside": np.array([0, 0])},
        })
    return snaps


@pytest.fixture
def saved(tmp_path):
    path = str(tmp_path / "activations.npz")
    ks.save(path, make_snapshots())
    return path


def panels(figure):
    return [a for a in figure.axes if a.get_label().startswith("layer:")]


def test_plot_evolution_one_panel_per_layer(saved):
    from keras_learnact import plotting

    figure = plotting.plot_evolution(saved)
    assert [a.get_label() for a in panels(figure)] == [
        "layer:abu", "layer:alpha", "layer:wide"]
    # one line per epoch and recorded channel, coloured by epoch
    abu, alpha, wide = panels(figure)
    assert len(abu.get_lines()) == len(EPOCHS)
    # at most 4 channels per panel by default, those that changed most
    # on the inputs' range, told apart by line style and named in a legend
    assert len(wide.get_lines()) == len(EPOCHS) * 4
    named = [t.get_text() for t in wide.get_legend().get_texts()]
    snaps = ks.load(saved)
    change = plotting._change(snaps.curves("wide"), snaps.grid,
                              wide.get_xlim())
    most = np.sort(np.argsort(-change)[:4])
    assert named == [f"channel {c}" for c in snaps.channels("wide")[most]]
    assert len({line.get_linestyle() for line in wide.get_lines()}) == 4
    colours = {tuple(line.get_color()) for line in abu.get_lines()}
    assert len(colours) == len(EPOCHS)
    labels = [a.get_label() for a in figure.axes]
    assert labels.count("colorbar") == 1
    assert sorted(n for n in labels if n.startswith("histogram:")) == [
        "histogram:abu", "histogram:wide"]
    assert "channels " + ", ".join(n.split()[1] for n in named) + " of 10" \
        in wide.get_title()
    # the notes sit under the panel, never on the curves
    assert not abu.texts
    assert "grey: inputs at epoch 4" in abu.get_xlabel()


def test_plot_evolution_selections(saved):
    from keras_learnact import plotting

    snaps = ks.load(saved)
    figure = plotting.plot_evolution(snaps, layers=["wide"], channels=[3, 9],
                                     histogram=False)
    (wide,) = panels(figure)
    assert len(wide.get_lines()) == len(EPOCHS) * 2
    assert not any(a.get_label().startswith("histogram:")
                   for a in figure.axes)
    np.testing.assert_allclose(wide.get_lines()[-1].get_ydata(),
                               snaps.curves("wide")[-1, 5])
    figure = plotting.plot_evolution(snaps, channels=2)
    assert len(panels(figure)[2].get_lines()) == len(EPOCHS) * 2
    figure = plotting.plot_evolution(snaps, layers="wide", max_channels=None)
    assert len(panels(figure)[0].get_lines()) == len(EPOCHS) * 6
    with pytest.raises(ValueError, match="recorded channels"):
        plotting.plot_evolution(snaps, channels=[1])
    with pytest.raises(ValueError, match="abu, alpha, wide"):
        plotting.plot_evolution(snaps, layers=["nope"])


def test_plot_final_and_png(saved, tmp_path):
    from keras_learnact import plotting

    figure = plotting.plot_final(saved)
    final = panels(figure)
    assert len(final) == 3
    # the last shape, and the first one dashed
    np.testing.assert_allclose(final[0].get_lines()[0].get_ydata(),
                               ks.load(saved).curves("abu")[-1, 0])
    assert final[0].get_lines()[1].get_linestyle() == "--"
    # every panel keeps a legend: the channels, and the dashed start
    for axis in final:
        labels = [t.get_text() for t in axis.get_legend().get_texts()]
        assert labels[-1] == "epoch 0"
    legend = [t.get_text() for t in final[2].get_legend().get_texts()]
    assert len(legend) == 5 and legend[0].startswith("channel ")
    out = tmp_path / "final.png"
    figure.savefig(out)
    with PIL_Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]


def ranged_snapshots(nan=False):
    """A layer whose inputs covered [-0.5, 0.5] of a [-4, 4] grid, where
    its curves explode outside; channel 3 changes most."""
    grid = np.linspace(-4, 4, 81)
    snaps = ks.Snapshots(grid)
    for e in (0, 1, 2):
        curves = np.stack([grid + 0.01 * e * c * grid ** 6 for c in range(4)])
        curves[3] += e * np.sin(grid)
        if nan and e == 2:
            curves[1, :] = np.nan
        snaps.add(e, {"slaf": {
            "class": "SLAF", "curves": curves, "params": {},
            "hist_edges": np.linspace(-4, 4, 21).astype("float32"),
            "hist_counts": np.r_[np.zeros(9), [30, 30], np.zeros(9)],
            "hist_outside": np.array([0, 0]),
            "input_range": np.tile([-0.45, 0.5], (4, 1))}})
    return snaps


def test_ranges_follow_the_inputs_and_the_curves_there(tmp_path):
    from keras_learnact import plotting

    snaps = ranged_snapshots()
    (axis,) = panels(plotting.plot_evolution(snaps))
    low, high = axis.get_xlim()
    assert -0.7 < low < -0.45 and 0.5 < high < 0.75
    bottom, top = axis.get_ylim()  # the curves on the inputs' range
    inside = (snaps.grid >= low) & (snaps.grid <= high)
    assert bottom < snaps.curves("slaf")[..., inside].min() < -0.5
    assert top < 2.5  # not the 0.02 * 4^6 = 82 of the grid's edges
    (axis,) = panels(plotting.plot_evolution(snaps, xlim="grid",
                                             ylim=(-5, 90)))
    assert axis.get_xlim() == (-4.0, 4.0) and axis.get_ylim() == (-5, 90)
    (axis,) = panels(plotting.plot_final(snaps, xlim=(-1, 2)))
    assert axis.get_xlim() == (-1.0, 2.0)
    # the changed-most channel is among those drawn
    (axis,) = panels(plotting.plot_evolution(snaps, max_channels=1))
    assert [t.get_text() for t in axis.get_legend().get_texts()] == [
        "channel 3"]
    with pytest.raises(ValueError, match=r"xlim=\(1, 0\)"):
        plotting.plot_evolution(snaps, xlim=(1, 0))
    with pytest.raises(ValueError, match="ylim='grid'"):
        plotting.plot_final(snaps, ylim="grid")
    # The command line's --xlim/--ylim/--max-channels.
    path = str(tmp_path / "s.npz")
    snaps.save(path)
    assert cli.main(["plot", path, "-o", str(tmp_path / "e.png"),
                     "--xlim", "grid", "--ylim", "-1", "1",
                     "--max-channels", "2"]) == 0
    for bad in (["--xlim", "1"], ["--xlim", "2", "1"], ["--ylim", "3", "3"],
                ["--max-channels", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["plot", path, "-o", str(tmp_path / "x.png"), *bad])
    assert not (tmp_path / "x.png").exists()


def test_nan_curves_are_marked(tmp_path):
    from keras_learnact import plotting

    snaps = ranged_snapshots(nan=True)
    (axis,) = panels(plotting.plot_evolution(snaps))
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert "channel 1 (NaN)" in labels  # drawn: a NaN counts as a change
    assert "channel 1: NaN from epoch 2" in axis.get_xlabel()
    (axis,) = panels(plotting.plot_final(snaps))
    assert "channel 1 (NaN)" in [t.get_text()
                                 for t in axis.get_legend().get_texts()]
    # every curve NaN: the empty panel says so
    grid = np.linspace(-1, 1, 5)
    empty = ks.Snapshots(grid)
    empty.add(0, {"a": {"class": "ABU", "curves": np.full((1, 5), np.nan),
                        "params": {}}})
    (axis,) = panels(plotting.plot_evolution(empty))
    assert any("every curve is NaN" in t.get_text() for t in axis.texts)
    plotting.plot_final(empty).savefig(tmp_path / "f.png")


def test_gif_has_one_frame_per_snapshot(saved, tmp_path):
    from keras_learnact import plotting

    out = str(tmp_path / "evolution.gif")
    assert plotting.animate_evolution(saved, out, fps=5, dpi=40) == out
    with PIL_Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == len(EPOCHS)
        sizes = set()
        for k in range(gif.n_frames):
            gif.seek(k)
            sizes.add(gif.size)
        assert len(sizes) == 1


def test_mp4_needs_ffmpeg_and_other_suffixes_are_refused(saved, tmp_path):
    from keras_learnact import plotting

    out = str(tmp_path / "evolution.mp4")
    if shutil.which("ffmpeg") is None:
        with pytest.raises(RuntimeError, match="ffmpeg"):
            plotting.animate_evolution(saved, out, dpi=40)
    else:
        plotting.animate_evolution(saved, out, dpi=40)
        assert os.path.getsize(out) > 0
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        plotting.animate_evolution(saved, str(tmp_path / "x.avi"))


def test_missing_matplotlib_gives_the_install_hint(saved, monkeypatch):
    from keras_learnact import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"keras-learnact\[plot\]"):
        plotting.plot_evolution(saved)


def test_figure_to_array(saved):
    from keras_learnact import plotting

    image = plotting.figure_to_array(plotting.plot_final(saved))
    assert image.dtype == np.uint8 and image.ndim == 3
    assert image.shape[2] == 4


# -- command line --

def run_cli(*args):
    # The fresh process inherits the backend of the test run: Keras's numpy
    # backend would be quicker to import but needs JAX, which the tf
    # environment does not install.
    return subprocess.run(
        [sys.executable, "-m", "keras_learnact", *args], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": REPO_ROOT})


def test_cli_plot_and_info_in_a_subprocess(saved, tmp_path):
    png, gif = str(tmp_path / "evolution.png"), str(tmp_path / "e.gif")
    done = run_cli("plot", saved, "-o", png, "--gif", gif,
                   "--layers", "abu", "wide", "--channels", "3")
    assert done.returncode == 0, done.stderr
    with PIL_Image.open(png) as image:
        assert image.format == "PNG"
    with PIL_Image.open(gif) as image:
        assert image.n_frames == len(EPOCHS)
    done = run_cli("info", saved)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "epochs: 4 snapshots: 0, 1, 2, 4" in lines
    assert "grid: 41 points on [-4, 4]" in lines
    table = {line.split()[0]: line.split()[1:] for line in lines
             if line.split() and line.split()[0] in ("abu", "alpha", "wide")}
    assert table["abu"][:2] == ["ABU", "1"]
    assert table["wide"][:2] == ["AdaptiveScaling", "6/10"]
    assert table["abu"][-1] == "yes" and table["alpha"][-1] == "no"
    assert "blend_weights(5,)," in table["abu"]


def test_cli_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a snapshot")
    assert cli.main(["info", str(bad)]) == 1
    assert "bad.npz" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "missing.npz"), "-o",
                     str(tmp_path / "x.png")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit):
        cli.main(["plot", str(bad)])  # -o is required


def test_cli_unknown_layer(saved, tmp_path, capsys):
    assert cli.main(["plot", saved, "-o", str(tmp_path / "x.png"),
                     "--layers", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
