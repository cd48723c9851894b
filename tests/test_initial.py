"""Starting a unit as a given function (`initial_function`, `initial_range`)
and `fit_to`: the errors each family reaches, checked against NumPy; the
configuration, the refusals, training and saving."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_learnact as kla
from keras_learnact.layers import _initial

# The errors are measured here, on 1601 points of (-4, 4): every sample
# point of the fit and the midpoints between them.
GRID = np.linspace(-4.0, 4.0, 1601)
EXACT = 1e-5
NAMES = tuple(_initial.FUNCTIONS)

# The maximum absolute error on (-4, 4) that each family reaches in its
# default configuration (docs/initial-functions.md, measured on the three
# backends, plus a fifth), or EXACT where its parameters express the
# function (ReLU6 is ReLU on (-4, 4)).
CEILINGS = {
    "ABU": (kla.layers.ABU, {}, {
        "relu": EXACT, "relu6": EXACT, "gelu": 0.014, "swish": EXACT,
        "hard_swish": 0.43, "tanh": EXACT, "elu": EXACT,
        "leaky_relu": EXACT, "sigmoid": 0.74, "softplus": 0.87,
        "identity": EXACT}),
    "AdaptiveScaling-relu": (kla.layers.AdaptiveScaling, {}, {
        "relu": EXACT, "relu6": EXACT, "gelu": 0.44, "swish": 0.82,
        "hard_swish": 1.2, "tanh": 1.8, "elu": 1.2, "leaky_relu": 0.96,
        "sigmoid": 1.8, "softplus": 1.1, "identity": 4.8}),
    "AdaptiveScaling-swish": (kla.layers.AdaptiveScaling,
                              {"activation": "swish"}, {
        "relu": 0.017, "relu6": 0.017, "gelu": 0.026, "swish": EXACT,
        "hard_swish": 0.32, "tanh": 2.0, "elu": 1.3, "leaky_relu": 0.93,
        "sigmoid": 1.8, "softplus": 1.1, "identity": 0.49}),
    "DEU": (kla.layers.DEU, {}, {
        "relu": EXACT, "relu6": EXACT, "gelu": 1.1, "swish": 0.91,
        "hard_swish": 0.33, "tanh": 1.8, "elu": EXACT, "leaky_relu": 0.71,
        "sigmoid": 0.13, "softplus": 0.48, "identity": EXACT}),
    "SLAF": (kla.layers.SLAF, {}, {
        "relu": 1.9, "relu6": 1.9, "gelu": 1.4, "swish": 0.52,
        "hard_swish": 0.46, "tanh": 2.2, "elu": 1.3, "leaky_relu": 1.6,
        "sigmoid": 0.25, "softplus": 0.13, "identity": EXACT}),
    "PWLU": (kla.layers.PWLU, {}, {
        "relu": EXACT, "relu6": EXACT, "gelu": 0.028, "swish": 0.019,
        "hard_swish": 0.013, "tanh": 0.028, "elu": 0.03,
        "leaky_relu": EXACT, "sigmoid": 0.0036, "softplus": 0.0093,
        "identity": EXACT}),
}


def built(cls, shape=(None, 3), **kwargs):
    layer = cls(**kwargs)
    layer.build(shape)
    return layer


def max_error(layer, fn, x=GRID):
    curves = layer.curve(x).astype("float64")
    return float(np.max(np.abs(curves - fn(x))))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", sorted(CEILINGS))
def test_fit_error_against_numpy(family, name):
    cls, kwargs, ceilings = CEILINGS[family]
    layer = built(cls, initial_function=name, **kwargs)
    curves = layer.curve(GRID).astype("float64")
    assert np.all(curves == curves[:1]), "channels differ"
    error = max_error(layer, _initial.function(name))
    assert error <= ceilings[name], (family, name, error)


@pytest.mark.parametrize("alias, name", sorted(_initial.ALIASES.items()))
def test_aliases_fit_the_same_function(alias, name):
    first = built(kla.layers.PWLU, initial_function=alias)
    second = built(kla.layers.PWLU, initial_function=name)
    np.testing.assert_array_equal(first.curve(GRID), second.curve(GRID))


def test_numpy_functions_match_keras():
    x = np.linspace(-7.0, 7.0, 281)
    keras_names = {"identity": "linear", "swish": "silu"}
    for name, fn in _initial.FUNCTIONS.items():
        expected = keras.activations.get(keras_names.get(name, name))(
            ops.convert_to_tensor(x, "float32"))
        np.testing.assert_allclose(
            fn(x), ops.convert_to_numpy(expected), atol=2e-6, rtol=2e-6,
            err_msg=name)


@pytest.mark.parametrize("normalization", [
    "unrestricted", "normalized", "absnormed", "posnormed", "softmax"])
@pytest.mark.parametrize("name", [
    "relu", "elu", "leaky_relu", "tanh", "swish", "identity"])
def test_abu_exact_in_every_normalization(normalization, name):
    layer = built(kla.layers.ABU, normalization=normalization,
                  initial_function=name)
    assert max_error(layer, _initial.function(name)) <= EXACT
    if normalization == "normalized":
        assert abs(float(np.sum(layer.parameter_values()[
            "blend_weights"])) - 1.0) < 1e-5


def test_abu_reference_posnormed_and_channels():
    layer = built(kla.layers.ABU, shape=(None, 4, 5),
                  normalization="posnormed", reference_posnormed=True,
                  granularity="channel", initial_function="leaky_relu")
    assert layer.parameter_values()["blend_weights"].shape == (5, 5)
    assert max_error(layer, _initial.function("leaky_relu")) <= EXACT


def test_abu_fits_beta_of_its_swish():
    # gelu(x) is close to x sigmoid(1.702 x): the search moves beta there.
    layer = built(kla.layers.ABU, basis=["swish"], initial_function="gelu")
    beta = float(layer.parameter_values()["swish_beta"])
    assert 1.5 < beta < 1.9, beta
    assert max_error(layer, _initial.function("gelu")) < 0.025


@pytest.mark.parametrize("name", NAMES)
def test_adaptive_scaling_exact_on_its_own_function(name):
    activation = {"identity": "identity", "swish": "silu"}.get(name, name)
    layer = built(kla.layers.AdaptiveScaling, activation=activation,
                  initial_function=name)
    assert max_error(layer, _initial.function(name)) <= EXACT
    np.testing.assert_allclose(layer.parameter_values()["alpha"], 1.0,
                               atol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {}, {"normalization": "none"}, {"granularity": "layer", "gate": True},
    {"normalization": "none", "basis": "taylor", "gate": True},
    {"degree": 6, "axis": 1},
], ids=["batch", "raw", "layer-gate", "taylor-gate", "degree6-axis1"])
def test_slaf_is_the_weighted_least_squares_polynomial(kwargs):
    degree = kwargs.get("degree", 4)
    layer = built(kla.layers.SLAF, initial_function="gelu", **kwargs)
    x = _initial.sample_points(-4.0, 4.0)
    weights = _initial.normal_weights(x)
    fn = _initial.function("gelu")
    coefficients = np.polynomial.polynomial.polyfit(
        x, fn(x), degree, w=np.sqrt(weights))
    expected = np.polynomial.polynomial.polyval(GRID, coefficients)
    np.testing.assert_allclose(layer.curve(GRID)[0], expected, atol=2e-4)


def test_slaf_normalized_statistics_are_the_stated_moments():
    layer = built(kla.layers.SLAF, degree=3, initial_function="tanh")
    x = _initial.sample_points(-4.0, 4.0)
    weights = _initial.normal_weights(x)
    values = layer.parameter_values()
    # The standard normal's moments, truncated to (-4, 4): E[x^2] ~ 1.
    np.testing.assert_allclose(values["moving_mean"][0],
                               [weights @ x, weights @ x**2, weights @ x**3],
                               atol=1e-6)
    assert abs(values["moving_variance"][0, 0] - 1.0) < 0.01
    # Training on data with those moments computes the same function.
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20000, 3))
    data = ((data - data.mean(axis=0)) / data.std(axis=0)).astype("float32")
    trained = ops.convert_to_numpy(layer(data, training=True))
    inferred = ops.convert_to_numpy(layer(data, training=False))
    inside = np.abs(data) < 3
    assert np.max(np.abs(trained - inferred)[inside]) < 0.05


def test_pwlu_heights_are_the_function_at_the_breakpoints():
    layer = built(kla.layers.PWLU, num_intervals=8,
                  initial_function="softplus", initial_range=(-2.0, 6.0))
    values = layer.parameter_values()
    assert layer.is_realigned()
    np.testing.assert_allclose(values["left_bound"], -2.0)
    np.testing.assert_allclose(values["right_bound"], 6.0)
    breakpoints = np.linspace(-2.0, 6.0, 9)
    softplus = _initial.function("softplus")
    np.testing.assert_allclose(values["heights"][0], softplus(breakpoints),
                               rtol=1e-6)
    # Inside the range: the piecewise-linear interpolant; outside: lines
    # with the function's slopes at the bounds.
    x = np.linspace(-2.0, 6.0, 401)
    np.testing.assert_allclose(
        layer.curve(x)[0], np.interp(x, breakpoints, softplus(breakpoints)),
        atol=2e-6)
    slope_left = 1.0 / (1.0 + math.exp(2.0))
    np.testing.assert_allclose(values["left_slope"], slope_left, rtol=1e-5)
    np.testing.assert_allclose(values["right_slope"], 1.0 / (
        1.0 + math.exp(-6.0)), rtol=1e-5)


def test_pwlu_hard_swish_exact_on_the_grid():
    layer = built(kla.layers.PWLU, initial_function="hard_swish")
    breakpoints = np.linspace(-4.0, 4.0, 17)
    assert max_error(layer, _initial.function("hard_swish"),
                     breakpoints) <= EXACT


def test_pwlu_tails_continue_with_the_function_s_slopes():
    x = np.linspace(-30.0, 30.0, 601)
    for name in ("relu", "leaky_relu", "identity"):
        layer = built(kla.layers.PWLU, initial_function=name)
        assert max_error(layer, _initial.function(name), x) <= EXACT, name


def test_pwlu_relu6_exact_with_its_kink_on_the_grid():
    layer = built(kla.layers.PWLU, initial_function="relu6",
                  initial_range=(-8.0, 8.0))
    x = np.linspace(-20.0, 20.0, 801)
    assert max_error(layer, _initial.function("relu6"), x) <= EXACT


def test_pwlu_started_from_a_function_skips_the_statistics_phase():
    layer = kla.layers.PWLU(initial_function="swish")
    model = keras.Sequential([keras.Input((3,)), layer])
    assert layer.is_realigned()
    before = layer.parameter_values()
    callback = kla.callbacks.PWLURealignment(warmup_epochs=0)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    after = layer.parameter_values()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    # realign() resets to the initial function on the statistics' grid.
    layer.realign()
    values = layer.parameter_values()
    np.testing.assert_allclose(values["left_bound"], -3.0)
    swish = _initial.function("swish")
    np.testing.assert_allclose(
        values["heights"][0], swish(np.linspace(-3.0, 3.0, 17)), atol=1e-6)


def test_pwlu_without_initial_function_is_unchanged():
    layer = built(kla.layers.PWLU)
    assert not layer.is_realigned()
    np.testing.assert_allclose(layer.parameter_values()["left_bound"], -3.0)


def test_config_round_trip():
    for cls in (kla.layers.ABU, kla.layers.AdaptiveScaling, kla.layers.DEU,
                kla.layers.SLAF, kla.layers.PWLU):
        layer = cls(initial_function="gelu", initial_range=(-3, 2.5))
        config = layer.get_config()
        assert config["initial_function"] == "gelu"
        assert config["initial_range"] == [-3.0, 2.5]
        rebuilt = cls.from_config(config)
        assert rebuilt.get_config() == config
        assert cls().get_config()["initial_function"] is None
        assert cls().get_config()["initial_range"] == [-4.0, 4.0]
        if cls is not kla.layers.SLAF:  # SLAF's other weights are random
            layer.build((None, 3))
            rebuilt.build((None, 3))
            np.testing.assert_allclose(rebuilt.curve(GRID),
                                       layer.curve(GRID))


@pytest.mark.parametrize("cls", [
    kla.layers.ABU, kla.layers.AdaptiveScaling, kla.layers.DEU,
    kla.layers.SLAF, kla.layers.PWLU])
def test_fit_to_a_custom_function_returns_the_real_error(cls):
    layer = built(cls)
    x = np.random.default_rng(0).normal(size=300) * 1.5

    def bumpy(v):
        return np.abs(v) + 0.3 * np.sin(2.0 * v)

    error = layer.fit_to(bumpy, x)
    measured = float(np.max(np.abs(
        layer.curve(x).astype("float64") - bumpy(x))))
    assert error == pytest.approx(measured, rel=1e-6, abs=1e-7)
    assert 0 < error < 5


def test_fit_to_exact_functions_and_weights():
    pwlu = built(kla.layers.PWLU, num_intervals=4)
    x = np.linspace(-2.0, 2.0, 9)
    assert pwlu.fit_to(np.abs, x) <= EXACT
    assert pwlu.is_realigned()
    np.testing.assert_allclose(pwlu.parameter_values()["right_bound"], 2.0)
    abu = built(kla.layers.ABU, basis=["relu", "tanh", "identity"])
    error = abu.fit_to(lambda v: 2.0 * np.tanh(v) - 0.5 * v, x)
    assert error <= EXACT
    # A name works too, and weights matter: all of it on x >= 0 fits the
    # identity there, at any cost on x < 0.
    scaling = built(kla.layers.AdaptiveScaling, activation="relu")
    scaling.fit_to("identity", x, weights=(x >= 0).astype(float))
    np.testing.assert_allclose(scaling.parameter_values()["alpha"], 1.0,
                               atol=1e-6)
    assert scaling.fit_to("identity", x) > 0.5


def test_fit_to_refusals():
    layer = kla.layers.ABU()
    with pytest.raises(ValueError, match="not built"):
        layer.fit_to(np.tanh, GRID)
    layer.build((None, 3))
    with pytest.raises(ValueError, match="'cosh'"):
        layer.fit_to("cosh", GRID)
    with pytest.raises(ValueError, match="callable"):
        layer.fit_to(3.0, GRID)
    with pytest.raises(ValueError, match="sample points"):
        layer.fit_to(np.tanh, [1.0, 1.0])
    with pytest.raises(ValueError, match="sample points"):
        layer.fit_to(np.tanh, [0.0, np.nan])
    with pytest.raises(ValueError, match="weights"):
        layer.fit_to(np.tanh, [0.0, 1.0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="non-finite"):
        layer.fit_to(np.log, [0.0, 1.0])


@pytest.mark.parametrize("cls", [
    kla.layers.ABU, kla.layers.AdaptiveScaling, kla.layers.DEU,
    kla.layers.SLAF, kla.layers.PWLU])
def test_bad_names_and_ranges_are_refused(cls):
    for bad in ("mish", "RELU", "", 3, keras.activations.relu):
        with pytest.raises(ValueError) as info:
            cls(initial_function=bad)
        message = str(info.value)
        assert repr(bad) in message
        assert "'hard_swish'" in message and "'linear'" in message
    for bad in ((1.0, 1.0), (2.0, -2.0), (0.0, math.inf), (math.nan, 1.0),
                (1.0,), (0.0, 1.0, 2.0), "ab", None, (True, 2.0),
                ("0", "1")):
        with pytest.raises(ValueError, match="initial_range") as info:
            cls(initial_function="relu", initial_range=bad)
        assert repr(bad) in str(info.value)


def test_abu_refuses_initial_weights_with_a_function():
    with pytest.raises(ValueError, match="initial_weights"):
        kla.layers.ABU(["relu", "tanh"], initial_weights=[1.0, 2.0],
                       initial_function="relu")


@pytest.mark.parametrize("cls, kwargs", [
    (kla.layers.ABU, {}), (kla.layers.AdaptiveScaling, {}),
    (kla.layers.DEU, {}), (kla.layers.SLAF, {}), (kla.layers.PWLU, {}),
], ids=["ABU", "AdaptiveScaling", "DEU", "SLAF", "PWLU"])
def test_started_as_relu_trains_and_saves(cls, kwargs, tmp_path):
    layer = cls(initial_function="relu", **kwargs)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8), layer,
        keras.layers.Dense(1)])
    x = np.random.default_rng(0).normal(size=(128, 4)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True))
    # The model computes ReLU at the start.
    hidden = ops.convert_to_numpy(model.layers[0](x))
    start = ops.convert_to_numpy(layer(hidden, training=False))
    inside = np.abs(hidden) < 4
    ceiling = CEILINGS["SLAF" if cls is kla.layers.SLAF else "PWLU"][2]
    assert np.max(np.abs(start - np.maximum(hidden, 0.0))[inside]) <= (
        ceiling["relu"])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-6)
    assert loaded.layers[1].initial_function == "relu"


def test_mixed_precision_keeps_float32_weights():
    layer = kla.layers.PWLU(initial_function="gelu", dtype="mixed_float16")
    layer.build((None, 3))
    assert all(w.dtype == "float32" for w in layer.weights)
    reference = built(kla.layers.PWLU, initial_function="gelu")
    for w, r in zip(layer.get_weights(), reference.get_weights(),
                    strict=True):
        np.testing.assert_array_equal(w, r)


if keras.backend.backend() == "tensorflow":

    def test_built_inside_a_traced_function_fits_once():
        import tensorflow as tf

        layer = kla.layers.AdaptiveScaling(
            "swish", initial_function="gelu")

        @tf.function
        def step(x):
            return layer(x)

        step(tf.zeros((2, 3)))
        fitted = layer.parameter_values()
        layer.alpha.assign(5.0)
        step(tf.zeros((2, 3)))  # the fit is not part of the graph
        assert float(layer.parameter_values()["alpha"]) == 5.0
        assert float(fitted["swish_beta"]) > 1.2
