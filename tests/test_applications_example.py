"""Tests of examples/applications.py: a keras.applications network with its
activations replaced, trained on `--synthetic` data (offline, a few steps).

Under TensorFlow the smoke run trains eagerly (`--run-eagerly`): tracing a
MobileNetV2 train step costs far more than the step itself.
"""

import contextlib
import io
import json
import os
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import applications  # noqa: E402

import keras_learnact as kla  # noqa: E402

# Building a keras.applications network takes JAX 15-35 s (every weight
# initialiser is compiled on first use), TensorFlow and PyTorch 1-3 s.
APPLICATION_SCALE = (
    pytest.mark.slow if keras.backend.backend() == "jax"
    else pytest.mark.skipif(False, reason="fast on this backend"))
EAGER = ["--run-eagerly"] if keras.backend.backend() == "tensorflow" else []
SMOKE = ["--synthetic", "--synthetic-size", "16", "--synthetic-eval-size",
         "8", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "1",
         "--eval-steps", "1", "--verbose", "0", *EAGER]


@APPLICATION_SCALE
def test_synthetic_smoke_run(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = applications.main([
            "--model", "mobilenetv2", "--alpha", "0.35", "--activation",
            "adaptive-scaling", "--output", str(tmp_path), *SMOKE,
        ])
    assert result["replaced"] == {"relu6": 35}
    # alpha starts at 1: the converted network is the original.
    assert result["conversion_difference"] == pytest.approx(0.0, abs=1e-5)
    assert result["params"] == result["params_original"] + 35
    assert np.isfinite(result["test_loss"])
    run = tmp_path / "synthetic-mobilenetv2-adaptive-scaling-s0"
    assert json.loads((run / "result.json").read_text()) == result
    assert (run / "final.weights.h5").exists()
    assert len(kla.snapshots.load(str(run / "snapshots.npz")).layers) == 35
    out = printed.getvalue()
    assert "mobilenetv2 with adaptive-scaling on synthetic" in out
    assert "replaced: 35 relu6" in out


@APPLICATION_SCALE
def test_default_targets_leave_the_gates():
    original, converted = applications.convert(
        "mobilenetv3small", "abu", num_classes=3, alpha=0.75)
    counts = {}
    for replacement in converted.replaced_activations:
        counts[replacement.activation] = counts.get(
            replacement.activation, 0) + 1
    assert counts == {"relu": 14, "hard_swish": 19}  # not the 9 relu6 gates
    assert all(isinstance(converted.get_layer(r.unit), kla.ABU)
               for r in converted.replaced_activations)
    same, kept = applications.convert("resnet50", "original", num_classes=3)
    assert same is kept


@pytest.mark.parametrize("family", sorted(applications.FAMILIES))
def test_every_family_makes_its_units(family):
    unit = applications.make_factory(family)("relu")
    assert type(unit).__name__ == applications.FAMILIES[family]
    if family == "adaptive-scaling" or applications.starts_as_original(
            family):
        # Started as ReLU: near it (a degree-4 SLAF polynomial is within
        # 0.15 on this range), where a default unit is off by up to 3.
        probe = np.linspace(-3, 3, 13).astype("float32")[:, None]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(unit(probe, training=False)),
            np.maximum(probe, 0), atol=0.25)


def test_bad_targets_are_refused(capsys):
    with pytest.raises(SystemExit):
        applications.parse_args(["--targets", "relu,relu7"])
    assert "Unknown target 'relu7'" in capsys.readouterr().err
    assert applications.parse_args(["--targets", "all"]).targets == ["all"]


@APPLICATION_SCALE
def test_weights_of_the_original_are_loaded_before_the_conversion(tmp_path):
    # --weights: fine-tuning starts from the original's saved weights, and
    # the converted network (PWLU started as ReLU6 on (-4, 4), exact there
    # and slope 1 beyond) computes what the original computed, up to the
    # rare pre-activation above 4 (0.0015 at most on PyTorch).
    keras.utils.set_random_seed(3)
    trained = applications.APPLICATIONS["mobilenetv2"](10, alpha=0.35)
    path = str(tmp_path / "original.weights.h5")
    trained.save_weights(path)
    keras.utils.set_random_seed(4)  # the fresh build draws other weights
    original, converted = applications.convert(
        "mobilenetv2", "pwlu", num_classes=10, weights=path, alpha=0.35)
    for saved, loaded in zip(trained.weights, original.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(loaded))
    x = np.random.default_rng(5).normal(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(converted(x, training=False)),
        keras.ops.convert_to_numpy(trained(x, training=False)),
        atol=5e-3)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = applications.main([
            "--model", "mobilenetv2", "--alpha", "0.35", "--activation",
            "pwlu", "--weights", path, "--output", str(tmp_path), *SMOKE,
        ])
    assert result["weights"] == path
    assert result["conversion_difference"] == pytest.approx(0.0, abs=5e-3)
