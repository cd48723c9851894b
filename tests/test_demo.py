"""The offline demo (the README's main job) runs in its quick mode."""

import csv
import os
import sys

import keras
import numpy as np

from keras_learnact import snapshots

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import demo  # noqa: E402


def test_quick_demo_writes_tables_snapshots_and_figures(tmp_path):
    # The README runs the demo on TensorFlow: every activation there; on
    # the other backends (CI time: 140 s on JAX) the baseline, ABU and
    # DEU, whose snapshots, figures and explanation go through every part
    # of the demo that the others do.
    names = list(demo.ACTIVATIONS)
    if keras.backend.backend() != "tensorflow":
        names = ["relu", "abu", "deu"]
    rows = demo.main(["--quick", "--epochs", "1", "--output", str(tmp_path),
                      "--activations", *names])
    assert [r["activation"] for r in rows] == names
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["activation"] for r in table] == names
    for row in table:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
        assert int(row["parameters"]) > 0
    markdown = (tmp_path / "results.md").read_text()
    assert all(f"| {name} |" in markdown for name in names)
    for name in names[1:]:  # every learnable activation
        snaps = snapshots.load(str(tmp_path / "snapshots" / f"{name}.npz"))
        assert snaps.epochs.tolist() == [0, 1]
        assert all(np.isfinite(snaps.curves(layer)).all()
                   for layer in snaps.layers)
        for kind in ("evolution", "final"):
            figure = tmp_path / "figures" / f"{kind}_{name}.png"
            assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "snapshots" / "relu.npz").exists()
    # What the units learned, and what the health checks found.
    explained = (tmp_path / "explain.md").read_text()
    assert all(f"## {name} (epoch 1)" in explained for name in names[1:])
    assert "| layer | ch | closest named shape |" in explained
    assert "case '" in explained  # DEU's ODE, with its case
    findings = (tmp_path / "health.md").read_text()
    assert all(f"## {name}" in findings for name in names[1:])


def test_demo_is_reproducible():
    data = demo.load_digits(seed=0)
    small = (data[0][:128], data[1][:128], data[2][:64], data[3][:64])
    first = demo.run("abu", small, 1, 3, output=None)
    second = demo.run("abu", small, 1, 3, output=None)
    assert first["test_accuracy"] == second["test_accuracy"]
