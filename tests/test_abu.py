"""ABU and AdaptiveScaling: values, gradients, models, errors, contract."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_learnact as kla
from keras_learnact.layers import _basis
from keras_learnact.layers import abu
from keras_learnact.layers import adaptive_scaling

from layer_contract import LayerCase
from layer_contract import LayerContract
from numeric import analytic_gradients
from numeric import assert_gradients_match
from numeric import loss_weights

GRID = np.linspace(-5.0, 5.0, 41)


# -- independent NumPy statements of the functions --

def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NP_BASIS = {
    "relu": lambda x, b: np.maximum(x, 0.0),
    "elu": lambda x, b: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1.0),
    "tanh": lambda x, b: np.tanh(x),
    "swish": lambda x, b: x * np_sigmoid(b * x),
    "identity": lambda x, b: x,
    "selu": lambda x, b: 1.0507009873554805 * np.where(
        x > 0, x, 1.6732632423543772 * (np.exp(np.minimum(x, 0)) - 1.0)),
    "softplus": lambda x, b: np.log1p(np.exp(x)),
    "sigmoid": lambda x, b: np_sigmoid(x),
}


def np_normalize(theta, mode):
    theta = np.asarray(theta, "float64")
    if mode == "unrestricted":
        return theta
    if mode == "normalized":
        return theta / theta.sum(-1, keepdims=True)
    if mode == "absnormed":
        return theta / np.abs(theta).sum(-1, keepdims=True)
    if mode == "posnormed":
        c = np.clip(theta, 1e-4, 1e3)
        return c / c.sum(-1, keepdims=True)
    if mode == "softmax":
        e = np.exp(theta - theta.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    raise AssertionError(mode)


def np_abu(x, basis, theta, mode, beta=1.0):
    w = np_normalize(theta, mode)
    return sum(w[j] * NP_BASIS[name](x, beta) for j, name in enumerate(basis))


# -- values --

THETA = [0.7, -0.4, 1.3, 0.25, -0.9]


@pytest.mark.parametrize("mode", kla.layers.abu.NORMALIZATIONS)
def test_abu_values_every_mode(mode):
    layer = kla.ABU(normalization=mode, initial_weights=THETA)
    layer.build((None, 1))
    layer.swish_beta.assign(1.7)
    expected = np_abu(GRID, kla.layers.abu.DEFAULT_BASIS, THETA, mode, 1.7)
    np.testing.assert_allclose(
        layer.curve(GRID)[0], expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        layer.normalized_weights(), np_normalize(THETA, mode), rtol=1e-6
    )


def test_posnormed_clips_then_normalises_and_reference_quirk():
    theta = [2.0, -1.0, 0.5, 1e4, 0.0]
    intended = kla.ABU(normalization="posnormed", initial_weights=theta)
    quirk = kla.ABU(normalization="posnormed", initial_weights=theta,
                    reference_posnormed=True)
    for layer in (intended, quirk):
        layer.build((None, 3))
    clipped = np.array([2.0, 1e-4, 0.5, 1e3, 1e-4])
    np.testing.assert_allclose(
        intended.normalized_weights(), clipped / clipped.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(
        quirk.normalized_weights(), np.array(theta) / sum(theta), rtol=1e-6
    )


def test_default_blend_is_uniform_and_paper_basis_order():
    layer = kla.ABU()
    layer.build((None, 3))
    assert layer.basis == ("relu", "elu", "tanh", "swish", "identity")
    np.testing.assert_allclose(layer.normalized_weights(), [0.2] * 5)
    assert float(ops.convert_to_numpy(layer.swish_beta)) == 1.0


def test_channel_granularity_has_independent_blends():
    layer = kla.ABU(["relu", "tanh", "sigmoid"], granularity="channel")
    layer.build((None, 4, 4, 3))
    theta = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 3.0]])
    layer.blend_weights.assign(theta)
    assert layer.blend_weights.shape == (3, 3)
    curves = layer.curve(GRID)
    assert curves.shape == (3, len(GRID))
    for c in range(3):
        expected = np_abu(GRID, ["relu", "tanh", "sigmoid"], theta[c],
                          "unrestricted")
        np.testing.assert_allclose(curves[c], expected, rtol=1e-5, atol=1e-6)


def test_channels_first_axis():
    layer = kla.ABU(["relu", "identity"], granularity="channel", axis=1)
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype("float32")
    layer.build(x.shape)
    theta = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    layer.blend_weights.assign(theta)
    y = ops.convert_to_numpy(layer(x))
    for c in range(3):
        expected = theta[c, 0] * np.maximum(x[:, c], 0) + theta[c, 1] * x[:, c]
        np.testing.assert_allclose(y[:, c], expected, rtol=1e-6, atol=1e-6)


def test_any_keras_activation_in_basis():
    basis = ["selu", "softplus", "sigmoid"]
    layer = kla.ABU(basis, initial_weights=[0.5, -1.0, 2.0])
    layer.build((None, 2))
    np.testing.assert_allclose(
        layer.curve(GRID)[0],
        np_abu(GRID, basis, [0.5, -1.0, 2.0], "unrestricted"),
        rtol=1e-5, atol=1e-5,
    )


@pytest.mark.parametrize("name", ["relu", "tanh", "elu", "selu", "swish",
                                  "identity"])
def test_adaptive_scaling_values(name):
    layer = kla.AdaptiveScaling(name, granularity="channel")
    layer.build((None, 2))
    layer.alpha.assign([1.5, -0.5])
    if name == "swish":
        layer.swish_beta.assign([0.5, 2.0])
        betas = [0.5, 2.0]
    else:
        betas = [1.0, 1.0]
    curves = layer.curve(GRID)
    for c, alpha in enumerate([1.5, -0.5]):
        np.testing.assert_allclose(
            curves[c], alpha * NP_BASIS[name](GRID, betas[c]),
            rtol=1e-5, atol=1e-6,
        )


# -- gradients --

# Points kept away from the kink of relu/elu at 0.
X_GRAD = np.array([[-2.1, -0.7, 0.4, 1.9], [0.8, -1.3, 2.6, -0.2]])


@pytest.mark.parametrize("mode", kla.layers.abu.NORMALIZATIONS)
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_abu_gradients_match_finite_differences(mode, granularity):
    layer = kla.ABU(normalization=mode, initial_weights=THETA,
                    granularity=granularity, dtype="float64")
    layer.build(X_GRAD.shape)
    if mode == "posnormed":  # keep every weight inside the clip range
        layer.blend_weights.assign(
            np.abs(ops.convert_to_numpy(layer.blend_weights)) + 0.1)
    layer.swish_beta.assign(np.full(layer.swish_beta.shape, 1.3))
    assert_gradients_match(layer, X_GRAD)


def scaling_layer(name, granularity):
    layer = kla.AdaptiveScaling(name, granularity=granularity,
                                dtype="float64")
    layer.build(X_GRAD.shape)
    alpha = [1.5, -0.5, 0.7, 2.0] if granularity == "channel" else -1.3
    layer.alpha.assign(alpha)
    if name == "swish":
        layer.swish_beta.assign(np.full(layer.swish_beta.shape, 1.3))
    return layer


# Every basis function: the hand-written backward pass
# (`_basis.value_and_slopes`)
# has a closed form for each. X_GRAD keeps away from every kink (0, +-0.5,
# +-1, +-3, 6).
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", kla.layers.adaptive_scaling._basis.ALLOWED)
def test_adaptive_scaling_gradients(name, granularity):
    assert_gradients_match(scaling_layer(name, granularity), X_GRAD)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", kla.layers.adaptive_scaling._basis.ALLOWED)
def test_adaptive_scaling_backward_equals_autodiff(name, granularity,
                                                   monkeypatch):
    """The hand-written backward pass (TensorFlow runs it; see
    keras_learnact/layers/_fused.py), called on every backend, against the
    backend's autodiff of the plain forward function (float32 round-off
    apart: Keras's JAX backend computes some float64 functions, tanh
    among them, in float32)."""
    layer = scaling_layer(name, granularity)
    functions = adaptive_scaling._scale_functions(
        layer.activation, layer.layout(X_GRAD.ndim))
    # autodiff of the forward function
    monkeypatch.setattr(adaptive_scaling, "_scale_kernel",
                        lambda *key: functions[0])
    auto = analytic_gradients(layer, X_GRAD)
    params = [layer.alpha.value]
    if layer.swish_beta is not None:
        params.append(layer.swish_beta.value)
    hand = functions[1](
        ops.convert_to_tensor(loss_weights(X_GRAD.shape)),
        ops.convert_to_tensor(X_GRAD), *params)
    names = ["inputs"] + [v.name for v in layer.trainable_variables]
    for key, value in zip(names, hand, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(value), auto[key],
                                   rtol=1e-5, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_abu_backward_equals_autodiff(granularity, monkeypatch):
    """ABU's hand-written backward pass, as the AdaptiveScaling one above,
    with every normalisation's weights handed in (the normalisation itself
    is differentiated by autodiff) and swish twice in the basis."""
    layer = kla.ABU(
        basis=["relu", "elu", "tanh", "swish", "identity", "gelu", "swish"],
        initial_weights=[0.7, -0.4, 1.3, 0.25, -0.9, 0.5, 0.3],
        granularity=granularity, dtype="float64")
    layer.build(X_GRAD.shape)
    layer.swish_beta.assign(np.full(layer.swish_beta.shape, 1.3))
    functions = abu._blend_functions(tuple(layer.basis),
                                     layer.layout(X_GRAD.ndim))
    # autodiff of the forward function
    monkeypatch.setattr(abu, "_blend_kernel", lambda *key: functions[0])
    auto = analytic_gradients(layer, X_GRAD)
    hand = functions[1](
        ops.convert_to_tensor(loss_weights(X_GRAD.shape)),
        ops.convert_to_tensor(X_GRAD), layer.blend(), layer.swish_beta.value)
    names = ["inputs"] + [v.name for v in layer.trainable_variables]
    for key, value in zip(names, hand, strict=True):
        np.testing.assert_allclose(ops.convert_to_numpy(value), auto[key],
                                   rtol=1e-5, atol=1e-12, err_msg=key)


# -- extreme and integer inputs (issue #16) --

F32_MAX = float(np.finfo("float32").max)
EXTREMES = np.array([-F32_MAX, -1e30, -1e20, -1e4, -120.0, -100.0, -30.0,
                     -1.5, -1e-3, 0.0, 2e-3, 0.7, 25.0, 39.0, 41.0, 100.0,
                     120.0, 1e4, 1e20, 1e30, F32_MAX])


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="what JAX hands to XLA")
def test_swish_hands_xla_no_clamp_on_jax():
    """XLA's CPU compiler puts into its fused YNNPACK graph only operations
    YNNPACK supports, and `clamp` is not one: the clip that guards TFLite
    split the benchmark CNN with AdaptiveScaling("swish") into seven
    YNNPACK graphs (JAX's clip is a maximum and a minimum, which XLA
    makes one clamp). Off TensorFlow there is no clip, and no value changes
    (the logistic function is 0 or 1 exactly beyond the clip)."""
    x = np.array([-3e38, -1e30, -1000.5, -2.0, 0.0, 2.0, 1000.5, 1e30, 3e38],
                 "float32")
    layer = kla.layers.AdaptiveScaling("swish")
    assert "clamp(" not in compiled_inference(layer, x)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)),
                               np_stable("swish", x), rtol=1e-6)


def compiled_inference(layer, x):
    """The HLO text of `layer(x)` as XLA compiles it on JAX."""
    import jax

    layer.build(x.shape)
    return jax.jit(lambda v: layer(v)).lower(x).compile().as_text()


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="what JAX hands to XLA")
def test_default_abu_hands_xla_no_select_on_jax():
    """Keras's ELU is a select, which XLA's CPU compiler does not put into
    its fused YNNPACK graph: ABU's default basis split the benchmark CNN
    into seven graphs (`predict` 1.9x ReLU's). Its own ELU has Keras's
    values, also at the extremes and for NaN."""
    x = np.array([-3e38, -1e30, -30.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 1e30,
                  3e38, np.nan], "float32")
    text = compiled_inference(kla.layers.ABU(), x)
    assert "select(" not in text and "clamp(" not in text
    np.testing.assert_array_equal(
        ops.convert_to_numpy(_basis.elu(ops.convert_to_tensor(x))),
        ops.convert_to_numpy(keras.activations.elu(ops.convert_to_tensor(x))))


def np_stable(name, x):
    """float64 NumPy statements of the functions `_basis` computes itself,
    in forms that cannot overflow."""
    x = np.asarray(x, "float64")
    with np.errstate(over="ignore", divide="ignore"):
        sigmoid = np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                           np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))
        s = np.abs(x) * np.sqrt(1.0 + 4.0 / np.maximum(x * x, 1e-300))
        s = np.where(np.abs(x) < 1, np.sqrt(x * x + 4.0), s)
        squareplus = np.where(x >= 0, (x + s) / 2, 2.0 / (s - x))
    return {
        "sigmoid": sigmoid,
        "silu": x * sigmoid,
        "swish": x * sigmoid,
        "softplus": np.logaddexp(0.0, x),
        "log_sigmoid": -np.logaddexp(0.0, -x),
        "squareplus": squareplus,
    }[name]


@pytest.mark.parametrize("name", ["sigmoid", "silu", "swish", "softplus",
                                  "log_sigmoid", "squareplus"])
def test_basis_functions_right_for_every_finite_input(name):
    """No overflow inside: squareplus was inf for |x| > 1.8e19 (also near
    0 for large negative x); the others overflow once in TFLite (tested in
    test_robustness.py) and must keep Keras's values here."""
    layer = kla.AdaptiveScaling(name)
    layer.build((None, 1))
    out = value_of(layer(EXTREMES[:, None].astype("float32")))[:, 0]
    assert np.all(np.isfinite(out))
    expected = np_stable(name, EXTREMES.astype("float32"))
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-37)


# The slope of each function far out: (x -> -inf, x -> +inf).
SLOPE_LIMITS = {
    "sigmoid": (0.0, 0.0), "silu": (0.0, 1.0), "swish": (0.0, 1.0),
    "softplus": (0.0, 1.0), "log_sigmoid": (1.0, 0.0),
    "squareplus": (0.0, 1.0), "gelu": (0.0, 1.0), "mish": (0.0, 1.0),
    "elu": (0.0, 1.0), "tanh": (0.0, 0.0),
}


@pytest.mark.parametrize("name", sorted(SLOPE_LIMITS))
def test_gradients_finite_for_every_finite_input(name):
    """The backward pass forms no product of a huge input and a zero slope
    (inf * 0 = NaN), in float32: the slope far out is its limit. (The
    parameters' gradients, sums of `g(x)`, are finite while those sums
    are: up to |x| = 1e30 here.)"""
    layer = kla.AdaptiveScaling(name)
    layer.build((None, 1))
    if name == "swish":
        layer.swish_beta.assign(0.7)
    x = EXTREMES[:, None].astype("float32")
    grads = analytic_gradients(layer, x)
    assert np.all(np.isfinite(grads["inputs"])), grads["inputs"]
    moderate = analytic_gradients(layer, x[np.abs(EXTREMES) <= 1e30])
    for key, value in moderate.items():
        assert np.all(np.isfinite(value)), (key, value)
    slope = grads["inputs"][:, 0] / loss_weights(x.shape)[:, 0]
    low, high = SLOPE_LIMITS[name]
    np.testing.assert_allclose(slope[EXTREMES <= -1e4], low, atol=1e-6)
    np.testing.assert_allclose(slope[EXTREMES >= 1e4], high, atol=1e-6)


def value_of(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), "float64")


INT_INPUT = np.array([[-2, -1, 1, 3], [0, 2, -3, 1]], "int32")


@pytest.mark.parametrize("make", [
    lambda: kla.ABU(),
    lambda: kla.ABU(granularity="channel", normalization="softmax"),
    lambda: kla.AdaptiveScaling("swish"),
    lambda: kla.AdaptiveScaling("relu", granularity="channel"),
], ids=["abu", "abu-channel-softmax", "alpha-swish", "alpha-relu-channel"])
def test_integer_inputs_compute_in_float(make):
    """Issue #16, 3: ABU and AdaptiveScaling("swish") raised TensorFlow
    errors on integer inputs; now they compute as `Dense` does."""
    layer = make()
    out = layer(INT_INPUT)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    floats = make()
    floats.build(INT_INPUT.shape)
    floats.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        value_of(out), value_of(floats(INT_INPUT.astype("float32"))),
        rtol=1e-6)
    if isinstance(layer, kla.ABU) and layer.normalization == "unrestricted":
        np.testing.assert_allclose(
            value_of(out),
            np_abu(INT_INPUT, kla.layers.abu.DEFAULT_BASIS, [0.2] * 5,
                   "unrestricted"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"normalization": "normalized", "initial_weights": [1, -1, 0, 0, 0]},
     "sum(initial_weights) is 0"),
    ({"normalization": "normalized",
      "initial_weights": [0.1, 0.2, -0.3, 0.0, 0.0]},
     "sum(initial_weights) is"),
    ({"normalization": "absnormed", "initial_weights": [0, 0, 0, 0, 0]},
     "sum(abs(initial_weights)) is 0"),
    ({"normalization": "posnormed", "reference_posnormed": True,
      "initial_weights": [2, -2, 0, 0, 0]}, "sum(initial_weights) is 0"),
])
def test_abu_refuses_a_start_that_divides_by_zero(kwargs, fragment):
    """Issue #16, 3: `normalized` with weights summing to zero was accepted
    and output NaN at once."""
    with pytest.raises(ValueError) as info:
        kla.ABU(**kwargs)
    message = str(info.value)
    assert fragment in message
    assert f"normalization={kwargs['normalization']!r}" in message
    assert "initial_weights=" in message


@pytest.mark.parametrize("mode", ["unrestricted", "posnormed", "softmax"])
def test_zero_sum_start_is_fine_where_nothing_divides_by_it(mode):
    layer = kla.ABU(normalization=mode, initial_weights=[1, -1, 0, 0, 0])
    out = value_of(layer(np.linspace(-3, 3, 8)[:, None].astype("float32")))
    assert np.all(np.isfinite(out))


# -- use in the three kinds of model --

def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    return x, np.sin(x).sum(axis=1, keepdims=True)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16)
        self.act = kla.ABU(granularity="channel")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.act(self.hidden(x)))


def _sequential():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16),
                             kla.ABU(), keras.layers.Dense(1)])


def _functional():
    inputs = keras.Input((4,))
    h = kla.AdaptiveScaling("swish")(keras.layers.Dense(16)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(h))


@pytest.mark.parametrize("build", [_sequential, _functional, SubclassedNet])
def test_trains_in_every_kind_of_model(build):
    x, y = _regression_data()
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


# -- bad input --

@pytest.mark.parametrize("kwargs, fragment", [
    ({"normalization": "l2"}, "'l2'"),
    ({"basis": ["relu", "nope"]}, "'nope'"),
    ({"basis": []}, "non-empty"),
    ({"basis": "relu"}, "non-empty list"),
    ({"basis": ["softmax"]}, "'softmax'"),
    ({"granularity": "neuron"}, "'neuron'"),
    ({"initial_weights": [1.0, 2.0]}, "5 numbers"),
    ({"initial_weights": [1, 1, 1, 1, float("nan")]}, "finite"),
    ({"axis": 0}, "batch axis"),
])
def test_abu_rejects_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        kla.ABU(**kwargs)
    assert fragment in str(info.value)


def test_abu_error_lists_allowed_values():
    with pytest.raises(ValueError) as info:
        kla.ABU(normalization="l2")
    for mode in kla.layers.abu.NORMALIZATIONS:
        assert mode in str(info.value)


def test_adaptive_scaling_rejects_unknown_activation():
    with pytest.raises(ValueError, match="'foo'.*Allowed names: .*relu"):
        kla.AdaptiveScaling("foo")


def test_channel_axis_the_input_lacks_fails_at_build():
    layer = kla.ABU(granularity="channel", axis=3)
    with pytest.raises(ValueError, match="axis=3 is not a channel axis"):
        layer(np.zeros((2, 5), "float32"))


def test_curve_rejects_bad_grid_and_unbuilt_layer():
    layer = kla.ABU()
    with pytest.raises(ValueError, match="not built"):
        layer.curve(GRID)
    layer.build((None, 2))
    with pytest.raises(ValueError, match="1-D"):
        layer.curve(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        layer.curve([0.0, np.inf])


# -- the shared contract --

class TestABUContract(LayerContract):
    cases = [
        LayerCase("abu-layer", kla.ABU, {}, (6, 6, 3), trainable=2),
        LayerCase("abu-channel-softmax", kla.ABU,
                  {"granularity": "channel", "normalization": "softmax"},
                  (6, 6, 3), trainable=2),
        LayerCase("abu-posnormed-custom-basis", kla.ABU,
                  {"basis": ["relu", "selu", "identity"],
                   "normalization": "posnormed",
                   "initial_weights": [0.5, 0.3, 0.2]},
                  (5,), trainable=1),
        LayerCase("abu-frozen-blend", kla.ABU,
                  {"blend_weights_trainable": False}, (5,),
                  trainable=1, non_trainable=1),
    ]


class TestAdaptiveScalingContract(LayerContract):
    cases = [
        LayerCase("alpha-relu", kla.AdaptiveScaling, {"activation": "relu"},
                  (6, 6, 3), trainable=1),
        LayerCase("alpha-swish-channel", kla.AdaptiveScaling,
                  {"activation": "swish", "granularity": "channel"},
                  (6, 6, 3), trainable=2),
        LayerCase("alpha-tanh-channels-first", kla.AdaptiveScaling,
                  {"activation": "tanh", "granularity": "channel", "axis": 1},
                  (3, 4, 4), trainable=1),
    ]


@pytest.mark.parametrize("make", [
    lambda: kla.ABU(granularity="channel"),
    lambda: kla.PWLU(start_realigned=True),
])
def test_inputs_of_several_ranks_and_batch_sizes(make):
    """A conv layer's activation is also called on a rank-2 grid by
    `curve()` (the snapshot callback does so between epochs); the fused
    TensorFlow path must handle every rank and batch size in turn."""
    layer = make()
    rng = np.random.default_rng(0)
    x4 = rng.normal(size=(4, 3, 3, 5)).astype("float32")
    first = ops.convert_to_numpy(layer(x4))
    curve = layer.curve(np.linspace(-2, 2, 9))
    assert curve.shape == (5, 9)
    for c in range(5):  # the curve is the layer's own function
        np.testing.assert_allclose(
            ops.convert_to_numpy(layer(np.full((1, 1, 1, 5), 0.5, "float32"))
                                 )[0, 0, 0, c],
            layer.curve(np.array([0.5]))[c, 0], rtol=1e-6)
    again = ops.convert_to_numpy(layer(x4[:2]))
    np.testing.assert_allclose(again, first[:2], rtol=1e-6, atol=1e-7)
