"""`keras_learnact.explain`: units set to known shapes are explained as
those shapes, from a layer, a model and a snapshot file, checked against
NumPy; each family's exact description; the command line."""

import importlib
import json

import keras
import numpy as np
import pytest

import keras_learnact as kla
from keras_learnact import cli
from keras_learnact import snapshots as ks
from keras_learnact.callbacks import ActivationSnapshot
from keras_learnact.layers import _initial
from keras_learnact.layers import deu as deu_module
from keras_learnact.layers.base import LearnableActivation

ex = importlib.import_module("keras_learnact.explain")


def built(layer, channels=2):
    layer.build((None, channels))
    return layer


def numpy_fit(row, x):
    """The row's fit `a f(b x + c) + d`, evaluated with NumPy."""
    return row.a * ex.FUNCTIONS[row.function](row.b * x + row.c) + row.d


def set_weights(layer, **values):
    if isinstance(layer, kla.layers.DEU):  # a, b, c, c1, c2: one weight
        layer.ode_parameters.assign(np.stack([
            np.broadcast_to(np.float32(values[name]), layer.a.shape)
            for name in layer.parameter_values()]))
        return
    for weight in layer.weights:
        if weight.name in values:
            weight.assign(np.broadcast_to(
                np.asarray(values[weight.name], "float32"), weight.shape))


# -- the fit, NumPy only --

def test_named_shapes_match_the_layers_definitions():
    x = np.linspace(-6, 6, 241)
    for name in ("identity", "relu", "leaky_relu", "elu", "softplus",
                 "swish", "tanh", "sigmoid", "gelu"):
        np.testing.assert_allclose(ex.FUNCTIONS[name](x),
                                   _initial.FUNCTIONS[name](x), atol=5e-7)


def test_every_shape_is_recovered_with_its_parameters():
    rng = np.random.default_rng(0)
    x = np.linspace(-2.0, 3.0, 121)
    truths = [(name, rng.uniform(0.5, 2) * rng.choice([-1, 1]),
               rng.uniform(0.6, 1.8), rng.uniform(-0.4, 0.4),
               rng.normal()) for name in ex.SHAPES]
    y = np.stack([a * ex.FUNCTIONS[n](b * x + c) + d
                  for n, a, b, c, d in truths])
    fits = ex.fit_shapes(x, y)
    for k, (name, *_) in enumerate(truths):
        assert fits[name]["r2"][k] > 1 - 1e-9, name
        prediction = (fits[name]["a"][k] * ex.FUNCTIONS[name](
            fits[name]["b"][k] * x + fits[name]["c"][k]) + fits[name]["d"][k])
        np.testing.assert_allclose(prediction, y[k], atol=1e-5, err_msg=name)


def test_the_simplest_of_equal_fits_is_named():
    x = np.linspace(-1, 1, 41)
    fits = ex.fit_shapes(x, np.stack([2 * x + 1, np.maximum(x - 2, 0)]))
    assert ex._closest(fits, 2)[0] == "identity"  # not relu(x + 5)


# -- units set to known shapes, from a layer --

def test_pwlu_set_to_tanh_is_explained_as_tanh():
    pwlu = built(kla.layers.PWLU(initial_function="tanh"), 3)
    rows = kla.explain(pwlu)
    assert [r.channel for r in rows] == [0, 1, 2]
    x = np.linspace(-4, 4, 201)
    for row in rows:
        assert row.function == "tanh" and row.r2 > 0.999
        assert abs(row.a - 1) < 0.05 and abs(row.b - 1) < 0.05
        assert abs(row.c) < 1e-3 and abs(row.d) < 1e-3
        curve = pwlu.curve(x)[row.channel]
        assert abs(np.max(np.abs(numpy_fit(row, x) - curve))
                   - row.max_error) < 1e-4
        # The exact form: 16 intervals on [-4, 4], knots on tanh.
        assert row.description.startswith("16 intervals on [-4, 4]")
        knots = row.description.split("[")[2].split("]")[0].split(", ")
        np.testing.assert_allclose(
            [float(v) for v in knots], np.tanh(np.linspace(-4, 4, 17)),
            atol=1e-3)


def test_abu_with_gelu_weights_is_explained_as_gelu():
    abu = built(kla.layers.ABU(["gelu", "relu"], initial_weights=[1.0, 0.0]))
    row, = kla.explain(abu)
    assert row.function == "gelu" and row.r2 > 1 - 1e-9
    assert row.formula == "gelu(x)"
    assert row.description == "1 gelu + 0 relu (unrestricted)"
    # The default basis fitted to gelu: the nearest shape is gelu, or
    # swish(1.7 x) / 1.7 (which is how the blend reaches it).
    blend = built(kla.layers.ABU(initial_function="gelu",
                                 normalization="softmax"))
    row, = kla.explain(blend)
    assert row.function in ("gelu", "swish") and row.r2 > 0.999
    assert row.description.endswith("(softmax)")
    weights = [float(t.split()[0]) for t in
               row.description.split(" (")[0].split(" + ")]
    np.testing.assert_allclose(weights, blend.normalized_weights(),
                               atol=6e-3)


def deu_numpy(t, a, b, c, c1, c2):
    """The overdamped DEU solution, written out in NumPy, clipped to the
    default output_clip of 10."""
    s = np.sqrt(b * b - 4 * a * c)
    r1, r2 = (s - b) / (2 * a), -(b + s) / (2 * a)
    homogeneous = c2 * np.exp(r1 * t) + c1 * np.exp(r2 * t)
    step = (1 - (b + s) / (2 * s) * np.exp(r1 * t)
            - (s - b) / (2 * s) * np.exp(r2 * t)) / c
    return np.clip(homogeneous + np.where(t > 0, step, 0.0), -10, 10)


def test_deu_with_known_parameters():
    x = np.linspace(-4, 4, 201)
    # b y' = H with c1 = 0.3: relu(x) + 0.3, exactly.
    ramp = built(kla.layers.DEU(granularity="layer"))
    set_weights(ramp, a=0.0, b=1.0, c=0.0, c1=0.3, c2=0.0)
    row, = kla.explain(ramp)
    assert row.function == "relu" and row.r2 > 1 - 1e-9
    assert row.formula == "relu(x) + 0.3"
    assert "case 'b'" in row.description
    # A y'' + 3 y' + y = H, overdamped: the curve is the NumPy solution
    # and the reported error is that of the fit against it.
    damped = built(kla.layers.DEU(granularity="layer"))
    set_weights(damped, a=1.0, b=3.0, c=1.0, c1=0.2, c2=-0.1)
    truth = deu_numpy(x, 1.0, 3.0, 1.0, 0.2, -0.1)
    np.testing.assert_allclose(damped.curve(x)[0], truth, atol=1e-5)
    row, = kla.explain(damped)
    assert row.description.startswith(
        "1 y'' + 3 y' + 1 y = H(t), c1 = 0.2, c2 = -0.1; case 'overdamped'")
    assert row.r2 > 0.99
    assert abs(np.max(np.abs(numpy_fit(row, x) - truth))
               - row.max_error) < 1e-4


@pytest.mark.parametrize("abc", [
    (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1),
    (1, 0, -1), (1, 1, 0), (1, 2, 1), (1, 1, 1), (1, 3, 1), (0.005, 1, 1)])
def test_deu_cases_are_named_as_the_layer_picks_them(abc):
    masks = deu_module._case_masks(
        *(keras.ops.convert_to_tensor([float(v)]) for v in abc), 0.01)
    picked = [name for name, mask in masks.items()
              if bool(keras.ops.convert_to_numpy(mask)[0])]
    assert picked == [ex.deu_case(*abc)]


def test_slaf_polynomial_and_scaling_descriptions():
    raw = built(kla.layers.SLAF(degree=3, normalization="none",
                                granularity="layer"))
    set_weights(raw, coefficients=[0.1, 1.0, 0.0, -0.2])
    row, = kla.explain(raw)
    assert row.description == "y = 0.1 + x - 0.2 x^3"
    # The normalised form: the statistics folded into the polynomial.
    slaf = built(kla.layers.SLAF(degree=3, initial_function="tanh",
                                 granularity="layer"))
    row, = kla.explain(slaf)
    terms = row.description[len("y = "):].replace(" - ", " + -").split(" + ")
    coefficients = np.zeros(4)
    for term in terms:
        value, _, power = term.partition(" x")
        if value in ("x", "-x"):
            value, power = value.replace("x", "1"), ""
        j = 0 if "x" not in term else int(power.lstrip("^") or 1)
        coefficients[j] = float(value)
    x = np.linspace(-4, 4, 81)
    np.testing.assert_allclose(np.polyval(coefficients[::-1], x),
                               slaf.curve(x)[0], rtol=1e-2, atol=1e-2)
    alpha = built(kla.layers.AdaptiveScaling("tanh"))
    set_weights(alpha, alpha=2.0)
    row, = kla.explain(alpha)
    assert row.description == "2 * tanh(x)" and row.formula == "2 * tanh(x)"


def test_rational_is_described_by_p_over_q():
    rational_module = pytest.importorskip("keras_learnact.layers.rational")
    rational = built(rational_module.Rational())
    row, = kla.explain(rational)
    assert row.description.startswith("P(x) / Q(x), P = ")
    assert row.description.endswith("(version A)")
    assert row.r2 > 0.99


class Scaled(LearnableActivation):
    """A family explain has no description for: w * tanh(x)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.w = self.add_weight(name="w", shape=self.param_shape(),
                                 initializer=keras.initializers.Constant(3.0))

    def call(self, inputs, training=None):
        return self.w * keras.ops.tanh(inputs)


def test_a_family_without_a_description_gets_the_fit():
    row, = kla.explain(built(Scaled()))
    assert row.function == "tanh" and abs(row.a - 3) < 1e-4
    assert row.description == "Scaled: w=3"


# -- from a model and from a file --

def test_model_probe_and_snapshot_file_agree(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3),
        kla.layers.PWLU(initial_function="tanh", num_intervals=32),
        keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(128, 4)).astype("float32")
    live = kla.explain(model, probe=x)
    assert [r.function for r in live] == ["tanh"] * 3
    assert all(r.weighted and r.epoch is None for r in live)
    # The range each unit is fitted on is that of its inputs on the probe.
    dense = model.layers[0](x)
    inputs = keras.ops.convert_to_numpy(dense)
    for row in live:
        low, high = np.quantile(inputs[:, row.channel], [0.005, 0.995])
        assert abs(row.low - low) < 1e-3 and abs(row.high - high) < 1e-3
    model.compile(keras.optimizers.SGD(0.0), "mse")
    path = str(tmp_path / "acts.npz")
    model.fit(x, np.zeros((128, 1)), epochs=1, verbose=0,
              callbacks=[ActivationSnapshot(path, probe=x)])
    recorded = kla.explain(path)
    assert [r.function for r in recorded] == ["tanh"] * 3
    assert [r.epoch for r in recorded] == [1] * 3
    for a, b in zip(live, recorded, strict=True):
        assert abs(a.r2 - b.r2) < 1e-3 and abs(a.b - b.b) < 0.02
    assert kla.explain(ks.load(path), epoch=0)[0].epoch == 0
    text = str(recorded)
    assert "tanh(" in text and "32 intervals" in text
    # The command line: a table, and JSON rows.
    assert cli.main(["explain", path, "--layer", "pwlu"]) == 0
    assert "tanh(" in capsys.readouterr().out
    assert cli.main(["explain", path, "--epoch", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["function"] for r in rows] == ["tanh"] * 3
    assert rows[0]["epoch"] == 0 and "formula" in rows[0]


def test_nonfinite_and_constant_units_and_bad_arguments(tmp_path, capsys):
    grid = np.linspace(-2, 2, 41)
    snaps = ks.Snapshots(grid)
    snaps.add(0, {"act": {"class": "ABU", "params": {},
                          "curves": np.stack([np.full(41, np.nan),
                                              np.full(41, 0.5),
                                              np.tanh(grid)])}})
    rows = kla.explain(snaps)
    assert [r.function for r in rows] == ["nonfinite", "constant", "tanh"]
    assert rows[1].formula == "0.5" and rows[0].to_dict()["r2"] is None
    assert "non-finite" in str(rows)
    with pytest.raises(ValueError, match="unknown layers \\['nope'\\].*act"):
        kla.explain(snaps, layers="nope")
    with pytest.raises(ValueError, match="recorded epochs are 0"):
        kla.explain(snaps, epoch=3)
    with pytest.raises(TypeError, match="got int"):
        kla.explain(3)
    path = str(tmp_path / "s.npz")
    snaps.save(path)
    assert cli.main(["explain", path, "--epoch", "7"]) == 1
    assert "recorded epochs are 0" in capsys.readouterr().err


def test_units_whose_inputs_missed_the_grid_are_fitted_on_it():
    grid = np.linspace(-2, 2, 41)
    snaps = ks.Snapshots(grid)
    snaps.add(0, {"act": {
        "class": "ABU", "params": {},
        "curves": np.stack([np.tanh(grid), np.tanh(grid), np.tanh(grid)]),
        "hist_edges": np.linspace(-2, 2, 9), "hist_counts": np.ones(8),
        "hist_outside": np.array([0, 5]),
        "input_range": [[5.0, 9.0], [-0.5, 0.5], [2.0, 2.0]]}})
    beyond, inside, edge = kla.explain(snaps)
    assert (beyond.low, beyond.high, beyond.weighted) == (-2, 2, False)
    assert (inside.low, inside.high, inside.weighted) == (-0.5, 0.5, True)
    assert edge.high == 2 and edge.low < 2  # a sliver at the edge: linear
    assert beyond.function == inside.function == "tanh"
    assert edge.function == "identity" and edge.r2 > 0.999
