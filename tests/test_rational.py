"""Rational (Padé Activation Units): values of every version against NumPy,
hand-written gradients against finite differences and autodiff, the
initial fit against an independent least squares, large inputs, version
D's noise, refusals, and the layer contract."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_learnact as kla
from keras_learnact.layers import _initial
from keras_learnact.layers.rational import VERSIONS
from keras_learnact.layers.rational import Rational

from layer_contract import LayerCase
from layer_contract import LayerContract
from numeric import analytic_gradients
from numeric import assert_gradients_match

# -- independent NumPy statements of the function --

def np_rational(x, a, b, version, axis=-1):
    """`P(x) / Q(x)` with explicit powers, per channel on `axis` (`a`,
    `b` of shape `(m + 1,)`, `(n,)` or `(channels, ...)`)."""
    x = np.moveaxis(np.asarray(x, "float64"), axis, -1)[..., None]
    a = np.asarray(a, "float64")
    b = np.asarray(b, "float64")
    p = np.sum(a * x ** np.arange(a.shape[-1]), axis=-1)
    if b.shape[-1] == 0:
        q = 1.0
    elif version == "A":
        k = np.arange(1, b.shape[-1] + 1)
        q = 1.0 + np.sum(np.abs(b * x ** k), axis=-1)
    elif version in ("B", "D"):
        k = np.arange(1, b.shape[-1] + 1)
        q = 1.0 + np.abs(np.sum(b * x ** k, axis=-1))
    else:
        k = np.arange(b.shape[-1])
        q = 0.1 + np.abs(np.sum(b * x ** k, axis=-1))
    return np.moveaxis(p / q, -1, axis)


def value(v):
    return np.asarray(ops.convert_to_numpy(v), "float64")


def inputs(shape, seed=0, gap=0.1):
    """Normal inputs kept `gap` away from 0 (the kink of |x|)."""
    x = np.random.default_rng(seed).normal(size=shape)
    return np.where(x < 0, x - gap, x + gap)


# Coefficients whose denominator polynomial R has no real root but 0, so
# that finite differences never straddle a kink of |R| (away from x = 0).
COEFFICIENTS = {
    "A": ([0.1, 0.9, -0.4, 0.3], [0.5, -0.3, 0.2]),
    "B": ([0.1, 0.9, -0.4, 0.3], [0.6, -0.3, 0.5]),   # x (0.6 - 0.3x + 0.5x^2)
    "C": ([0.1, 0.9, -0.4, 0.3], [-1.0, 0.3, -0.8]),  # R < 0 everywhere
    "D": ([0.1, 0.9, -0.4, 0.3], [0.6, -0.3, 0.5]),
}


def built(shape, version, dtype=None, seed=1, **kwargs):
    """A (3, 3) unit of `version` with `COEFFICIENTS`, varied per channel."""
    layer = Rational(3, 3, version=version, dtype=dtype, **kwargs)
    layer.build(shape)
    a, b = (np.asarray(c) for c in COEFFICIENTS[version])
    rng = np.random.default_rng(seed)
    scale = 1.0 + 0.1 * rng.uniform(-1, 1, size=layer.numerator.shape[:-1])
    layer.numerator.assign(a * scale[..., None])
    layer.denominator.assign(b * scale[..., None])
    return layer


def fixed_noise(layer, seed=5):
    """Replaces version D's draws by fixed factors; returns them."""
    noise = np.random.default_rng(seed).uniform(
        0.9, 1.1, size=layer.numerator.shape)
    dtype = layer._dtype()
    layer._numerator_noise = lambda: ops.convert_to_tensor(noise, dtype)
    return noise


CASES = [
    ("layer", (6, 5), -1),
    ("channel", (4, 3, 5), -1),
    ("channel", (4, 3, 2, 2), 1),
]


# -- values --

@pytest.mark.parametrize("granularity, shape, axis", CASES,
                         ids=["layer", "channel", "channels-first"])
def test_values_of_every_version_match_numpy(granularity, shape, axis):
    x = inputs(shape).astype("float32") * 1.5
    for version in VERSIONS:
        layer = built((None, *shape[1:]), version, granularity=granularity,
                      axis=axis)
        a, b = value(layer.numerator), value(layer.denominator)
        for training in (False, True):
            noise = fixed_noise(layer) if (
                version == "D" and training) else 1.0
            np.testing.assert_allclose(
                value(layer(x, training=training)),
                np_rational(x, a * noise, b, version, axis),
                rtol=1e-5, atol=1e-6, err_msg=f"{version}, {training}")


def test_small_degrees():
    for m, n in [(0, 0), (4, 0), (0, 2), (1, 1)]:
        layer = Rational(m, n, initial_function="tanh")
        layer.build((None, 3))
        assert layer.numerator.shape == (m + 1,)
        assert (layer.denominator is None) == (n == 0)
        assert len(layer.weights) == 1 + (n > 0)
        x = inputs((4, 3)).astype("float32")
        b = value(layer.denominator) if n else np.zeros(0)
        for training in (False, True):
            np.testing.assert_allclose(
                value(layer(x, training=training)),
                np_rational(x, value(layer.numerator), b, "A"),
                rtol=1e-5, atol=1e-6, err_msg=f"{m, n, training}")


def test_integer_inputs_and_curve_shape():
    layer = Rational(granularity="channel")
    layer.build((None, 4))
    x = np.array([[-2, -1, 1, 3]], "int32")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(value(out), value(layer(x.astype("float32"))))
    assert layer.curve(np.linspace(-1.0, 1.0, 5)).shape == (4, 5)


# -- gradients --

class NaiveRational(keras.layers.Layer):
    """The same function written plainly (a tensor of powers, autodiff),
    channels last, with the weights of a `Rational` copied in."""

    def __init__(self, source):
        super().__init__(dtype=source.dtype_policy)
        self.version = source.version
        self.start = {name: value(getattr(source, name))
                      for name in ("numerator", "denominator")}

    def build(self, input_shape):
        for name, start in self.start.items():
            setattr(self, name, self.add_weight(
                name=name, shape=start.shape,
                initializer=keras.initializers.Constant(start)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        x = x[..., None]

        def powers(base, count, first):
            terms, term = [], ops.ones_like(base)
            for k in range(first + count):
                if k >= first:
                    terms.append(term)
                term = term * base
            return ops.concatenate(terms, axis=-1)

        a, b = self.numerator, self.denominator
        p = ops.sum(a * powers(x, a.shape[-1], 0), axis=-1)
        first = 0 if self.version == "C" else 1
        terms = b * powers(x, b.shape[-1], first)
        if self.version == "A":
            return p / (1.0 + ops.sum(ops.abs(terms), axis=-1))
        constant = 0.1 if self.version == "C" else 1.0
        return p / (constant + ops.abs(ops.sum(terms, axis=-1)))


@pytest.mark.parametrize("version", VERSIONS)
def test_gradients_match_finite_differences_and_autodiff(version):
    # training=True: the hand-written backward pass (D with fixed noise).
    for granularity, shape in [("layer", (4, 3)), ("channel", (2, 2, 3))]:
        layer = built(shape, version, dtype="float64",
                      granularity=granularity)
        noise = fixed_noise(layer) if version == "D" else 1.0
        x = inputs(shape, seed=2)
        assert_gradients_match(layer, x, rtol=1e-5, atol=1e-7,
                               training=True)
        hand = analytic_gradients(layer, x, training=True)
        naive = NaiveRational(layer)
        naive.build(shape)
        naive.numerator.assign(value(layer.numerator) * noise)
        auto = analytic_gradients(naive, x)
        auto["numerator"] = auto["numerator"] * noise  # d(a u)/da = u
        for name in hand:
            np.testing.assert_allclose(hand[name], auto[name], rtol=1e-9,
                                       atol=1e-10,
                                       err_msg=f"{granularity}: {name}")


@pytest.mark.parametrize("shape", [(7, 1), (3, 2, 1), (4, 3), (3, 8, 1)])
def test_layer_gradients_for_every_row_width(shape):
    # A layer-granularity backward pass sums over rows of up to 8
    # elements, the largest power of two that divides the input's size:
    # widths 1, 2, 4 and 8 here.
    layer = built(shape, "B", dtype="float64")
    naive = NaiveRational(layer)
    naive.build(shape)
    x = inputs(shape, seed=6)
    hand = analytic_gradients(layer, x, training=True)
    auto = analytic_gradients(naive, x)
    for name in hand:
        np.testing.assert_allclose(hand[name], auto[name], rtol=1e-9,
                                   atol=1e-10, err_msg=name)


@pytest.mark.parametrize("version", ["A", "C"])
def test_inference_gradients_match_finite_differences(version):
    layer = built((4, 3), version, dtype="float64")
    assert_gradients_match(layer, inputs((4, 3), seed=3), rtol=1e-5,
                           atol=1e-7)


def test_gradients_without_a_denominator():
    layer = Rational(3, 0, dtype="float64", granularity="channel")
    layer.build((4, 2))
    layer.numerator.assign(np.random.default_rng(0).normal(size=(2, 4)))
    assert_gradients_match(layer, inputs((4, 2), seed=4), training=True)


# -- large inputs --

@pytest.mark.parametrize("version", ["A", "B", "D"])
def test_finite_for_inputs_up_to_1e4(version):
    layer = Rational(version=version, granularity="channel")
    layer.build((None, 3))
    x = np.array([[1e4, -1e4, 0.5], [-3e3, 9999.0, -2.0],
                  [3.0, 1e-3, 1e4], [0.0, -5e3, -1e4]], "float32")
    for training in (False, True):
        out = value(layer(x, training=training))
        assert np.all(np.isfinite(out)), (training, out)
        grads = analytic_gradients(layer, x, training=training)
        for name, g in grads.items():
            assert np.all(np.isfinite(g)), (training, name)
        assert np.any(grads["inputs"] != 0.0)


@pytest.mark.parametrize("version", ["A", "B"])
def test_float32_gradients_match_float64_up_to_1e6(version):
    # Q^2 leaves float32 from |x| ~ 1e5: the backward pass must not form it.
    fast = Rational(version=version)
    fast.build((None, 4))
    exact = Rational(version=version, dtype="float64")
    exact.build((None, 4))
    exact.set_weights(fast.get_weights())
    x = np.array([[1e6, -1e6, 2e5, 0.7], [-3e4, 1e5, -1.5, 30.0]])
    got = analytic_gradients(fast, x.astype("float32"), training=True)
    expected = analytic_gradients(exact, x, training=True)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4,
                                   err_msg=name)


def test_mixed_precision_computes_in_float32():
    layer = Rational(version="B", dtype="mixed_float16")
    x = np.array([[60.0, -60.0, 2.0]], "float32")  # x^5 > float16 max
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)
    reference = Rational(version="B")
    reference.build(x.shape)
    expected = value(reference(x))
    np.testing.assert_allclose(value(ops.cast(out, "float32")), expected,
                               rtol=2e-3)


# -- version D's noise --

def test_noise_in_training_only_and_within_its_bounds():
    layer = Rational(version="D", granularity="channel", seed=3)
    layer.build((None, 4))
    x = inputs((16, 4), seed=5).astype("float32")
    a, b = value(layer.numerator), value(layer.denominator)
    clean = np_rational(x, a, b, "B")
    np.testing.assert_allclose(value(layer(x)), clean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value(layer(x, training=False)), clean,
                               rtol=1e-5, atol=1e-6)
    first = value(layer(x, training=True))
    second = value(layer(x, training=True))
    assert not np.allclose(first, clean, atol=1e-4)
    assert not np.allclose(first, second, atol=1e-4)
    # |P_noisy - P| <= 0.1 sum |a_j x^j|, so the same bound over Q.
    bound = np_rational(np.abs(x), np.abs(a), np.zeros((4, 0)), "B")
    q = np_rational(x, np.ones((4, 1)), b, "B")
    assert np.all(np.abs(first - clean) <= 0.1 * bound * q + 1e-5)


def test_noise_is_drawn_afresh_in_every_compiled_step():
    layer = Rational(version="D", seed=4)
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = inputs((8, 3), seed=6).astype("float32")
    y = np.zeros((8, 3), "float32")
    losses = [model.train_on_batch(x, y) for _ in range(3)]
    assert len(set(np.round(losses, 7))) == 3, losses
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        np_rational(x, value(layer.numerator), value(layer.denominator),
                    "B"), rtol=1e-5, atol=1e-6)


# -- the initial fit --

def np_fit_error(x, f, w, a, b, version):
    return float(np.sum(w * (np_rational(x, a, b, version) - f) ** 2))


def np_reference_fit(x, f, w, m, n, version, start=None, iterations=30):
    """An independent least squares: from `start`, or else from the
    linearised solution (by `np.linalg.lstsq`), damped Gauss-Newton steps
    on every coefficient with a finite-difference Jacobian."""
    root = np.sqrt(w)
    params = start
    if params is None:
        first = 0 if version == "C" else 1
        z = np.abs(x) if version == "A" else x
        design = np.concatenate(
            [x[:, None] ** np.arange(m + 1),
             -f[:, None] * z[:, None] ** np.arange(first, first + n)], axis=1)
        constant = 0.1 if version == "C" else 1.0
        params = np.linalg.lstsq(design * root[:, None], constant * f * root,
                                 rcond=None)[0]

    def residual(p):
        return root * (np_rational(x, p[:m + 1], p[m + 1:], version) - f)

    r, damping = residual(params), 1e-3
    for _ in range(iterations):
        jacobian = np.stack([
            (residual(params + h) - residual(params - h)) / 2e-7
            for h in np.eye(len(params)) * 1e-7], axis=1)
        normal = jacobian.T @ jacobian
        step = np.linalg.solve(
            normal + damping * np.diag(np.diag(normal) + 1e-12),
            -jacobian.T @ r)
        trial = residual(params + step)
        if trial @ trial < r @ r:
            params, r, damping = params + step, trial, damping / 3
        else:
            damping *= 4
    return params[:m + 1], params[m + 1:]


@pytest.mark.parametrize("version", ["A", "B", "C"])
def test_initial_fit_is_a_least_squares_minimum(version):
    layer = Rational(version=version)
    layer.build((None, 2))
    x = _initial.sample_points(-3.0, 3.0)
    w = _initial.normal_weights(x)
    f = _initial.function("leaky_relu")(x)
    a, b = value(layer.numerator), value(layer.denominator)
    error = np_fit_error(x, f, w, a, b, version)
    # At least as good as the independent fit from the linearised start,
    reference = np_fit_error(x, f, w, *np_reference_fit(x, f, w, 5, 4,
                                                        version), version)
    assert error <= reference * 1.001, (error, reference)
    # and a minimum: steps from it gain nothing beyond float32 round-off.
    polished = np_fit_error(x, f, w, *np_reference_fit(
        x, f, w, 5, 4, version, start=np.concatenate([a, b]),
        iterations=10), version)
    assert polished >= error * 0.999, (polished, error)
    # The layer computes that function (float32), within 0.06 of leaky
    # ReLU (slope 0.2) on the range (most at its ends, where the normal
    # weights are small).
    curve = layer.curve(x)[0]
    np.testing.assert_allclose(curve, np_rational(x, a, b, version),
                               atol=2e-5)
    assert np.max(np.abs(curve - f)) < 0.06


def test_a_rational_function_of_the_family_is_fitted_exactly():
    x = np.linspace(-2.0, 2.0, 81)
    for version, function, m, n in [
        ("A", lambda v: (v + 0.5 * v ** 3) / (
            1 + 0.2 * v * v + np.abs(0.1 * v ** 3)), 3, 3),
        ("B", lambda v: (1 - v + v ** 2) / (
            1 + np.abs(0.5 * v + 0.1 * v ** 2)), 2, 2),
        ("C", lambda v: v / (0.1 + np.abs(1.0 + 0.25 * v * v)), 1, 3),
        ("D", lambda v: v ** 3 / (1 + np.abs(0.4 * v * v)), 3, 2),
    ]:
        layer = Rational(m, n, version=version)
        layer.build((None, 1))
        assert layer.fit_to(function, x) < 1e-5, version


def test_default_start_is_keras_leaky_relu_on_the_reference_range():
    layer = Rational()
    assert layer.initial_function == "leaky_relu"
    assert layer.initial_range == (-3.0, 3.0)
    layer.build((None, 2))
    curve = layer.curve(np.array([-2.0, 2.0]))[0]
    np.testing.assert_allclose(curve, [-0.4, 2.0], atol=0.03)
    # The reference's slope 0.01, by fit_to.
    x = _initial.sample_points(-3.0, 3.0)
    layer.fit_to(lambda v: np.where(v >= 0, v, 0.01 * v), x,
                 weights=_initial.normal_weights(x))
    np.testing.assert_allclose(layer.curve(np.array([-2.0, 2.0]))[0],
                               [-0.02, 2.0], atol=0.03)


def test_replace_activations_starts_as_the_model_s_activation():
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(6, activation="gelu"),
        keras.layers.Dense(1)])
    converted = kla.replace_activations(
        model, lambda name: Rational(initial_function=name))
    units = [layer for layer in converted.layers
             if isinstance(layer, Rational)]
    assert len(units) == 1 and units[0].initial_function == "gelu"
    x = inputs((16, 4), seed=7).astype("float32") * 0.5
    np.testing.assert_allclose(converted.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=2e-3)


# -- bad input --

BAD_ARGUMENTS = [
    ({"numerator_degree": -1}, "numerator_degree=-1"),
    ({"numerator_degree": 17}, "numerator_degree=17"),
    ({"numerator_degree": 2.5}, "numerator_degree=2.5"),
    ({"denominator_degree": True}, "denominator_degree=True"),
    ({"denominator_degree": 20}, "denominator_degree=20"),
    ({"version": "E"}, "version='E'"),
    ({"version": None}, "version=None"),
    ({"version": "C", "denominator_degree": 0},
     "denominator_degree=0 with version='C'"),
    ({"initial_function": "mish"}, "initial_function='mish'"),
    ({"initial_function": None}, "initial_function=None"),
    ({"initial_range": (3.0, -3.0)}, "initial_range"),
    ({"seed": "7"}, "seed='7'"),
    ({"granularity": "neuron"}, "granularity='neuron'"),
]


def test_bad_arguments_are_refused_naming_the_value():
    for kwargs, match in BAD_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            Rational(**kwargs)


def test_config_round_trip_and_lower_case_version():
    layer = Rational(3, 2, version="d", seed=9, initial_function="tanh",
                     granularity="channel")
    config = layer.get_config()
    assert config["version"] == "D" and config["seed"] == 9
    assert Rational.from_config(config).get_config() == config


# -- the shared layer contract --

class TestRationalContract(LayerContract):
    cases = [
        LayerCase("rational-layer", Rational, {}, (8,), trainable=2),
        LayerCase("rational-d-channel", Rational,
                  {"version": "D", "granularity": "channel",
                   "numerator_degree": 3, "denominator_degree": 2,
                   "seed": 1},
                  (4, 3), trainable=2),
    ]
