"""SLAF: values, statistics, gradients, stability, a real model, errors."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_learnact.layers.slaf import SLAF

from layer_contract import LayerCase
from layer_contract import LayerContract
from numeric import analytic_gradients
from numeric import assert_gradients_match

EPS = 1e-8


# -- independent NumPy statements of the functions --

def np_powers(x, degree):
    return np.stack([x ** i for i in range(1, degree + 1)], axis=-1)


def np_channels_last(x, axis):
    """Moves the channel axis to the end (returns a view)."""
    return np.moveaxis(np.asarray(x, "float64"), axis, -1)


def np_train(x, w, b, degree, gate=1.0, axis=-1):
    """Batch-normalised powers, weighted per channel, plus bias."""
    xc = np_channels_last(x, axis)
    p = np_powers(xc, degree)  # (..., C, degree)
    flat = p.reshape(-1, *p.shape[-2:])
    mu, var = flat.mean(axis=0), flat.var(axis=0)
    y = (gate * np.asarray(w) * (p - mu) / np.sqrt(var + EPS)).sum(-1) + b
    return np.moveaxis(y, -1, axis), mu, var


def np_infer(x, w, b, mean, var, degree, gate=1.0, axis=-1):
    p = np_powers(np_channels_last(x, axis), degree)
    y = (gate * np.asarray(w) * (p - mean) / np.sqrt(var + EPS)).sum(-1) + b
    return np.moveaxis(y, -1, axis)


def np_raw(x, a, taylor=False):
    """`sum_j a[..., j] x^j (/ j!)` per channel (channels last)."""
    a = np.asarray(a, "float64")
    x = np.asarray(x, "float64")[..., None]
    j = np.arange(a.shape[-1])
    scale = np.array([1.0 / math.factorial(k) for k in j]) if taylor else 1.0
    return (a * scale * x ** j).sum(-1)


def value(v):
    return np.asarray(ops.convert_to_numpy(v), "float64")


def sample(shape, scale=1.0, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale + shift).astype("float32")


def built(shape, **kwargs):
    layer = SLAF(**kwargs)
    layer.build(shape)
    return layer


def set_coefficients(layer, seed=1):
    w = np.random.default_rng(seed).normal(size=layer.coefficients.shape)
    layer.coefficients.assign(w)
    return w


# -- values in training and inference --

@pytest.mark.parametrize("kwargs, shape, axis", [
    ({}, (16, 4, 4, 3), -1),
    ({"degree": 2}, (32, 5), -1),
    ({"axis": 1, "degree": 3}, (8, 3, 4, 4), 1),
])
def test_training_values_match_numpy(kwargs, shape, axis):
    layer = built(shape, **kwargs)
    w = set_coefficients(layer)
    b = np.linspace(-0.5, 0.5, layer.stat_channels)
    layer.bias.assign(b)
    x = sample(shape, scale=1.5, shift=0.3)
    expected, _, _ = np_train(x, w, b, layer.degree, axis=axis)
    got = value(layer(x, training=True))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_layer_coefficients_with_gate_training_and_inference():
    layer = built((None, 5), granularity="layer", gate=True, degree=3)
    assert layer.coefficients.shape == (3,)
    assert layer.bias.shape == (5,)
    assert layer.moving_mean.shape == (5, 3)
    w = set_coefficients(layer)
    layer.gate_logit.assign(0.7)
    g = 1.0 / (1.0 + math.exp(-0.7))
    x = sample((64, 5), scale=2.0)
    expected, mu, var = np_train(x, w, 0.1, 3, gate=g)
    np.testing.assert_allclose(
        value(layer(x, training=True)), expected, rtol=2e-4, atol=2e-4
    )
    # One warm-started update: the statistics are this batch's.
    xi = sample((10, 5), seed=3)
    np.testing.assert_allclose(
        value(layer(xi, training=False)),
        np_infer(xi, w, 0.1, mu, var, 3, gate=g), rtol=2e-4, atol=2e-4,
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_inference_uses_moving_statistics(axis):
    shape = (6, 3, 4, 4) if axis == 1 else (6, 4, 4, 3)
    layer = built(shape, axis=axis)
    w = set_coefficients(layer)
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(3, 4))
    var = rng.uniform(0.5, 20.0, size=(3, 4))
    layer.moving_mean.assign(mean)
    layer.moving_variance.assign(var)
    x = sample(shape, scale=1.5)
    expected = np_infer(x, w, 0.1, mean, var, 4, axis=axis)
    before = layer.parameter_values()
    for training in (None, False):
        np.testing.assert_allclose(
            value(layer(x, training=training)), expected,
            rtol=1e-4, atol=1e-4,
        )
    after = layer.parameter_values()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


def test_frozen_layer_behaves_as_in_inference():
    layer = built((None, 3))
    layer.trainable = False
    x = sample((8, 3), scale=2.0)
    np.testing.assert_allclose(
        value(layer(x, training=True)), value(layer(x, training=False))
    )
    assert value(layer.moving_count) == 0.0


@pytest.mark.parametrize("taylor", [False, True])
@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_raw_polynomial_values(taylor, granularity):
    layer = built(
        (None, 3), normalization="none", basis="taylor" if taylor else "power",
        degree=4, granularity=granularity,
    )
    assert [w.name for w in layer.weights] == ["coefficients"]
    a = set_coefficients(layer)
    assert a.shape[-1] == 5  # a_0 .. a_4
    x = sample((7, 3), scale=2.0)
    expected = np_raw(x, a, taylor) if granularity == "channel" else (
        np_raw(x[..., None], a, taylor)[..., 0]
    )
    for training in (True, False):
        np.testing.assert_allclose(
            value(layer(x, training=training)), expected,
            rtol=1e-5, atol=1e-4,
        )


def test_identity_offset_and_default_initial_values():
    zeros = {"coefficient_initializer": "zeros"}
    layer = built((None, 3), **zeros)
    np.testing.assert_array_equal(
        value(layer.coefficients), [[1.0, 0.0, 0.0, 0.0]] * 3
    )
    np.testing.assert_allclose(value(layer.bias), [0.1] * 3, rtol=1e-7)
    np.testing.assert_array_equal(value(layer.moving_mean), 0.0)
    np.testing.assert_array_equal(value(layer.moving_variance), 1.0)
    # Fresh statistics (mean 0, var 1): the unit is x / sqrt(1 + eps) + 0.1.
    grid = np.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(layer.curve(grid), [grid + 0.1] * 3,
                               rtol=1e-6, atol=1e-6)
    raw = built((None, 2), normalization="none", identity_offset=2.0,
                degree=2, **zeros)
    np.testing.assert_array_equal(value(raw.coefficients), [[0, 2, 0]] * 2)
    plain = built((None, 2), identity_offset=0.0, **zeros)
    np.testing.assert_array_equal(value(plain.coefficients), 0.0)
    # The reference's N(0, 1) coefficients.
    wide = built((None, 256), identity_offset=0.0)
    assert 0.85 < value(wide.coefficients).std() < 1.15


def test_curve_shapes_and_layer_curve_is_channel_mean():
    grid = np.linspace(-2.0, 2.0, 9)
    channel = built((None, 4, 4, 5))
    assert channel.curve(grid).shape == (5, 9)
    first = built((None, 5, 4, 4), axis=1)
    assert first.curve(grid).shape == (5, 9)
    layer = built((None, 4, 4, 5), granularity="layer", gate=True)
    layer(sample((8, 4, 4, 5), scale=2.0, shift=0.5), training=True)
    per_channel = layer.channel_curves(grid)
    assert per_channel.shape == (5, 9)
    assert np.ptp(per_channel[:, -1]) > 1e-3  # channels do differ
    np.testing.assert_allclose(
        layer.curve(grid), per_channel.mean(axis=0, keepdims=True),
        rtol=1e-6,
    )
    for c in range(5):
        x = np.zeros((9, 4, 4, 5), "float32")
        x[..., c] = grid[:, None, None]
        np.testing.assert_allclose(
            per_channel[c], value(layer(x))[:, 0, 0, c], rtol=1e-5, atol=1e-5
        )
    raw = built((None, 3), normalization="none", granularity="layer")
    assert raw.curve(grid).shape == (1, 9)


# -- moving statistics --

def batch_moments(x, degree):
    p = np_powers(np.asarray(x, "float64"), degree).reshape(
        -1, x.shape[-1], degree
    )
    return p.mean(axis=0), p.var(axis=0)


def test_warm_start_first_batch_then_cumulative_then_ema():
    layer = built((None, 2, 3), momentum=0.5, degree=3)
    batches = [sample((16, 2, 3), scale=s, seed=s) for s in (1, 2, 3, 4)]
    mean, var = np.zeros((3, 3)), np.ones((3, 3))
    for t, x in enumerate(batches, start=1):
        layer(x, training=True)
        weight = max(1.0 - 0.5, 1.0 / t)  # 1, 0.5, 0.5, 0.5
        bm, bv = batch_moments(x, 3)
        mean, var = mean + weight * (bm - mean), var + weight * (bv - var)
        if t == 1:
            np.testing.assert_allclose(mean, bm)
        np.testing.assert_allclose(value(layer.moving_mean), mean, rtol=1e-4)
        np.testing.assert_allclose(
            value(layer.moving_variance), var, rtol=1e-4
        )
        assert value(layer.moving_count) == t


def test_warm_start_is_cumulative_average_for_first_steps():
    layer = built((None, 2), degree=4)  # momentum 0.99: 100 warm steps
    batches = [sample((32, 2), scale=1.0 + 0.3 * s, seed=s)
               for s in range(6)]
    for x in batches:
        layer(x, training=True)
    moments = [batch_moments(x, 4) for x in batches]
    np.testing.assert_allclose(
        value(layer.moving_mean), np.mean([m for m, _ in moments], axis=0),
        rtol=1e-4, atol=1e-6,
    )
    np.testing.assert_allclose(
        value(layer.moving_variance),
        np.mean([v for _, v in moments], axis=0), rtol=1e-4,
    )


def test_reference_moving_average_without_warm_start():
    layer = built((None, 3), warm_start_statistics=False, degree=2)
    assert [w.name for w in layer.non_trainable_weights] == [
        "moving_mean", "moving_variance"
    ]
    mean, var = np.zeros((3, 2)), np.ones((3, 2))
    for seed in range(3):
        x = sample((20, 3), scale=2.0, seed=seed)
        layer(x, training=True)
        bm, bv = batch_moments(x, 2)
        mean, var = 0.99 * mean + 0.01 * bm, 0.99 * var + 0.01 * bv
    np.testing.assert_allclose(value(layer.moving_mean), mean, rtol=1e-4)
    np.testing.assert_allclose(value(layer.moving_variance), var, rtol=1e-4)


def test_reset_statistics():
    layer = built((None, 3))
    layer(sample((8, 3), scale=3.0), training=True)
    layer.reset_statistics()
    np.testing.assert_array_equal(value(layer.moving_mean), 0.0)
    np.testing.assert_array_equal(value(layer.moving_variance), 1.0)
    assert value(layer.moving_count) == 0.0
    x = sample((8, 3), seed=4)
    layer(x, training=True)
    np.testing.assert_allclose(
        value(layer.moving_mean), batch_moments(x, 4)[0], rtol=1e-4,
        atol=1e-6,
    )


def test_statistics_update_in_compiled_fit():
    model = keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(4), SLAF(degree=3),
        keras.layers.Dense(1),
    ])
    slaf = model.layers[1]
    model.compile(optimizer="sgd", loss="mse")
    x = sample((48, 6))
    model.fit(x, np.zeros((48, 1)), batch_size=16, epochs=2, verbose=0)
    assert value(slaf.moving_count) == 6.0
    assert not np.allclose(value(slaf.moving_mean), 0.0)
    assert not np.allclose(value(slaf.moving_variance), 1.0)


# -- gradients --

def grad_layer(shape, seed=2, **kwargs):
    layer = SLAF(dtype="float64", **kwargs)
    layer.build(shape)
    rng = np.random.default_rng(seed)
    layer.coefficients.assign(rng.normal(size=layer.coefficients.shape))
    if layer.bias is not None:
        layer.bias.assign(rng.normal(size=layer.bias.shape))
        layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
        layer.moving_variance.assign(
            rng.uniform(0.5, 3.0, size=layer.moving_variance.shape)
        )
    if layer.gate_logit is not None:
        layer.gate_logit.assign(0.3)
    return layer


GRADIENT_CASES = [
    ({}, (6, 2, 3)),
    ({"granularity": "layer", "gate": True, "degree": 3}, (5, 4)),
    ({"axis": 1, "degree": 2}, (4, 2, 3)),
]


@pytest.mark.parametrize("kwargs, shape", GRADIENT_CASES)
def test_gradients_inference_mode(kwargs, shape):
    layer = grad_layer(shape, **kwargs)
    x = np.random.default_rng(0).normal(size=shape)
    assert_gradients_match(layer, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, shape", GRADIENT_CASES)
def test_gradients_training_mode(kwargs, shape):
    layer = grad_layer(shape, **kwargs)
    x = np.random.default_rng(1).normal(size=shape) * 1.3
    assert_gradients_match(layer, x, rtol=1e-4, atol=1e-6, training=True)


RAW_GRADIENT_CASES = [
    ({"basis": "power"}, (5, 3)),
    ({"basis": "taylor"}, (5, 3)),
    ({"granularity": "layer", "gate": True, "degree": 3}, (5, 4)),
    ({"axis": 1, "degree": 2, "gate": True}, (4, 2, 3)),
]


@pytest.mark.parametrize("kwargs, shape", RAW_GRADIENT_CASES)
def test_gradients_raw(kwargs, shape):
    # On TensorFlow the raw form has a hand-written gradient.
    layer = grad_layer(shape, normalization="none", **kwargs)
    x = np.random.default_rng(3).normal(size=shape)
    assert_gradients_match(layer, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, shape", RAW_GRADIENT_CASES[2:])
def test_raw_float32_gradients_agree_with_float64(kwargs, shape):
    # float32 takes TensorFlow's fused kernels; float64 is checked above
    # against finite differences.
    exact = grad_layer(shape, normalization="none", **kwargs)
    fast = SLAF(normalization="none", **kwargs)
    fast.build(shape)
    for source, target in zip(exact.weights, fast.weights, strict=True):
        target.assign(ops.cast(source, "float32"))
    x = np.random.default_rng(4).normal(size=shape)
    expected = analytic_gradients(exact, x)
    got = analytic_gradients(fast, x.astype("float32"))
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4,
                                   atol=1e-5, err_msg=name)


# -- stability --

@pytest.mark.parametrize("degree", [4, 5])
@pytest.mark.parametrize("training", [True, False])
def test_normalised_form_finite_for_inputs_up_to_1e3(degree, training):
    layer = built((None, 3), degree=degree, gate=True)
    x = np.array([[1e3, -1e3, 0.5], [-1e3, 999.0, -2.0],
                  [3.0, 1e-3, 1e3], [0.0, -500.0, -1e3]], "float32")
    layer(x, training=True)  # statistics of these large inputs
    out = value(layer(x, training=training))
    assert np.all(np.isfinite(out))
    grads = analytic_gradients(layer, x, training=training)
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
    assert np.any(grads["inputs"] != 0.0)
    if training:  # normalised: each term is O(1), whatever the scale
        assert np.abs(out).max() < 10 * np.abs(
            value(layer.coefficients)).sum()


def test_float16_does_not_overflow_in_the_powers():
    layer = SLAF(degree=5, dtype="mixed_float16", normalization="none",
                 coefficient_initializer="ones", identity_offset=0.0)
    x = np.full((2, 3), 7.0, "float32")  # 7^5 = 16807; sum ~ 19608 < 65504
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    expected = sum(7.0 ** j for j in range(6))
    np.testing.assert_allclose(value(out), expected, rtol=1e-3)
    norm = SLAF(degree=5, dtype="mixed_float16")
    big = sample((64, 4), scale=12.0)  # x^5 overflows float16 at |x| > 9.2
    assert np.all(np.isfinite(value(norm(big, training=True))))
    assert np.all(np.isfinite(value(norm(big))))


# -- a real model --

def digits_accuracy(make_activation):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1347], order[1347:]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    h = make_activation()(h)
    h = keras.layers.Conv2D(32, 3, padding="same")(h)
    h = make_activation()(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3, clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x[train], y[train], batch_size=32, epochs=5,
                        verbose=0)
    _, accuracy = model.evaluate(x[test], y[test], verbose=0)
    return history.history["loss"], accuracy


def test_cnn_on_digits_matches_relu():
    """~210 steps: the short run where the plain moving average fails."""
    relu_loss, relu_accuracy = digits_accuracy(keras.layers.ReLU)
    slaf_loss, slaf_accuracy = digits_accuracy(SLAF)
    assert np.all(np.isfinite(relu_loss)) and np.all(np.isfinite(slaf_loss))
    assert relu_accuracy > 0.9
    assert slaf_accuracy >= relu_accuracy - 0.02, (
        slaf_accuracy, relu_accuracy)


# -- statistics that one batch cannot spoil (issue #16) --

F32_MAX = float(np.finfo("float32").max)


def np_bounded_update(mean, var, steps, x, momentum=0.99, warm=True,
                      eps=EPS, scale=4.0):
    """The documented update of the moving statistics, in float64: one
    batch `x` (channels last) moves `(mean, var)` after `steps` updates.

    Returns the new `(mean, var, steps)`."""
    x = np.asarray(x, "float64")
    flat = np_powers(x, mean.shape[-1]).reshape(-1, *mean.shape)
    n = len(flat)
    if n == 0:
        return mean, var, steps
    with np.errstate(all="ignore"):
        bm, bv = flat.mean(axis=0), flat.var(axis=0)
    if n == 1:
        bv = (bm - mean) ** 2
    weight = max(1.0 - momentum, 1.0 / (steps + 1)) if warm else (
        1.0 - momentum)
    first = warm and steps == 0
    if first:
        if n == 1:
            bv = var
    else:
        g = scale ** np.arange(1, mean.shape[-1] + 1)
        run = var + mean ** 2 + eps
        bv = np.minimum(bv, g ** 2 * run)
        bm = np.clip(bm, mean - (g - 1) * np.sqrt(run),
                     mean + (g - 1) * np.sqrt(run))
    with np.errstate(all="ignore"):
        new_mean = mean + weight * (bm - mean)
        new_var = var + weight * (bv - var)
    # Only what float32 holds enters, and only from channels of finite
    # inputs.
    usable = np.all(np.isfinite(x.reshape(n, -1)), axis=0)[:, None]
    keep = usable & (np.abs(new_mean) <= F32_MAX) & (new_var <= F32_MAX)
    advanced = steps + 1 if usable.any() else steps
    return (np.where(keep, new_mean, mean), np.where(keep, new_var, var),
            advanced)


def statistics(layer):
    return (value(layer.moving_mean), value(layer.moving_variance),
            int(value(layer.moving_count)))


def assert_statistics(layer, mean, var, steps, rtol=1e-4):
    got_mean, got_var, got_steps = statistics(layer)
    np.testing.assert_allclose(got_mean, mean, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(got_var, var, rtol=rtol, atol=1e-6)
    assert got_steps == steps


def warmed(shape=(None, 3), batches=4, momentum=0.9, degree=4, **kwargs):
    """A layer after `batches` clean training batches, and its statistics
    as the NumPy reference computes them."""
    layer = built(shape, momentum=momentum, degree=degree, **kwargs)
    channels = shape[-1]
    mean, var, steps = np.zeros((channels, degree)), np.ones(
        (channels, degree)), 0
    for seed in range(batches):
        x = sample((32, channels), seed=10 + seed)
        layer(x, training=True)
        mean, var, steps = np_bounded_update(mean, var, steps, x,
                                             momentum=momentum)
    assert_statistics(layer, mean, var, steps)
    return layer, (mean, var, steps)


@pytest.mark.parametrize("degree, outlier", [
    (4, 1e6), (4, 1e5), (5, 1e4), (7, 2e3), (4, F32_MAX),
])
def test_one_bad_value_in_one_batch_leaves_predictions_finite(degree,
                                                              outlier):
    """Issue #16, 1: the report's model; the thresholds it saw."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = rng.normal(size=(256, 1)).astype("float32")
    x[17, 0] = outlier
    model = keras.Sequential([keras.Input((4,)), SLAF(degree=degree),
                              keras.layers.Dense(1)])
    model.compile("adam", "mse")
    loss = model.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(loss))
    slaf = model.layers[0]
    assert np.all(np.isfinite(value(slaf.moving_mean)))
    assert np.all(np.isfinite(value(slaf.moving_variance)))
    predictions = model.predict(rng.normal(size=(4, 4)), verbose=0)
    assert np.all(np.isfinite(predictions))


def test_one_bad_value_barely_changes_the_trained_model():
    """The outlier's model predicts the clean data about as well as a
    model trained on the same data without it (same seed, same batches)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = np.sin(x).sum(axis=1, keepdims=True)
    clean = np.arange(256) != 17
    errors = []
    for outlier in (None, 1e6, 1e30):
        keras.utils.set_random_seed(2)
        bad = x.copy()
        if outlier is not None:
            bad[17, 0] = outlier
        model = keras.Sequential([keras.Input((4,)), SLAF(degree=4),
                                  keras.layers.Dense(1)])
        model.compile("adam", "mse")
        model.fit(bad, y, epochs=2, verbose=0)
        errors.append(model.evaluate(x[clean], y[clean], verbose=0))
    assert errors[1] < 1.2 * errors[0] and errors[2] < 1.2 * errors[0], (
        errors)


@pytest.mark.parametrize("outlier", [1e6, 1e30, F32_MAX, -F32_MAX])
def test_one_outlier_moves_the_statistics_boundedly(outlier):
    layer, (mean, var, steps) = warmed()
    run = var[1] + mean[1] ** 2 + EPS  # channel 1's running mean square
    weight = 1.0 / (steps + 1)  # still averaging cumulatively
    x = sample((32, 3), seed=20)
    x[5, 1] = outlier
    layer(x, training=True)
    expected_variance = (1 - weight) * var[1] + weight * (
        4.0 ** np.arange(2, 9, 2) * run)
    mean, var, steps = np_bounded_update(mean, var, steps, x, momentum=0.9)
    assert_statistics(layer, mean, var, steps)
    # The bound: channel 1 moved as a batch 4 times the running scale
    # would have moved it, whatever the outlier's size.
    np.testing.assert_allclose(value(layer.moving_variance)[1],
                               expected_variance, rtol=1e-4)


def test_first_update_takes_what_float32_holds():
    """Warm start: the first batch sets the statistics, except those of
    powers that leave float32 (x^2 and up of 1e30): those keep theirs."""
    layer = built((None, 3), degree=4)
    x = sample((16, 3), seed=1)
    x[0, 2] = 1e30
    layer(x, training=True)
    mean, var, steps = np_bounded_update(
        np.zeros((3, 4)), np.ones((3, 4)), 0, x)
    assert_statistics(layer, mean, var, steps)
    np.testing.assert_array_equal(value(layer.moving_variance)[2], 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_never_enter_the_statistics(bad):
    layer, (mean, var, steps) = warmed()
    before = statistics(layer)
    x = sample((32, 3), seed=21)
    x[3, 0] = bad
    out = value(layer(x, training=True))
    assert np.all(np.isfinite(out[:, 1:]))  # the clean channels
    mean, var, steps = np_bounded_update(mean, var, steps, x, momentum=0.9)
    assert_statistics(layer, mean, var, steps)
    # Channel 0 kept its statistics; the others moved.
    after = statistics(layer)
    for old, new in zip(before[:2], after[:2], strict=True):
        np.testing.assert_array_equal(new[0], old[0])
        assert not np.allclose(new[1:], old[1:])
    everything_bad = np.full((8, 3), bad, "float32")
    layer(everything_bad, training=True)
    assert_statistics(layer, mean, var, steps)  # count did not advance
    # Inference: each finite entry's output is finite.
    out = value(layer(x, training=False))
    assert np.all(np.isfinite(np.delete(out.ravel(), 3 * 3)))


def test_empty_batch_changes_nothing():
    layer, _ = warmed()
    before = statistics(layer)
    for training in (True, False):
        out = layer(np.zeros((0, 3), "float32"), training=training)
        assert tuple(out.shape) == (0, 3)
    after = statistics(layer)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old)


if keras.backend.backend() == "tensorflow":
    # Keras's JAX and PyTorch trainers cannot differentiate the loss of an
    # empty batch; tests/test_robustness.py traces empty calls everywhere.

    def test_empty_batch_changes_nothing_in_train_on_batch():
        """Issue #16, 3: `train_on_batch` of an empty batch left NaN in the
        statistics; as the first step, and in a traced step (sizes 8, then
        5: the batch size becomes unknown)."""
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                                  SLAF(degree=3), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        empty_x, empty_y = np.zeros((0, 4), "float32"), np.zeros((0, 1))
        before = [value(w) for w in model.weights]
        model.train_on_batch(empty_x, empty_y)
        for w, b in zip(model.weights, before, strict=True):
            np.testing.assert_array_equal(value(w), b, err_msg=w.path)
        for n in (8, 5):
            model.train_on_batch(sample((n, 4), seed=n), sample((n, 1)))
        before = [value(w) for w in model.weights]
        model.train_on_batch(empty_x, empty_y)
        for w, b in zip(model.weights, before, strict=True):
            np.testing.assert_array_equal(value(w), b, err_msg=w.path)
        assert value(model.layers[1].moving_count) == 2


def test_batch_of_one_is_normalised_by_the_moving_statistics():
    """One element per channel has no variance: the training output is the
    inference output, and its squared deviation from the moving mean
    stands for the variance (the first one sets only the mean)."""
    layer = built((None, 3), degree=3, momentum=0.9)
    mean, var, steps = np.zeros((3, 3)), np.ones((3, 3)), 0
    for seed in range(4):
        x = sample((1, 3), seed=seed, scale=2.0)
        expected = value(layer(x, training=False))
        np.testing.assert_allclose(value(layer(x, training=True)), expected,
                                   rtol=1e-6)
        mean, var, steps = np_bounded_update(mean, var, steps, x,
                                             momentum=0.9)
        assert_statistics(layer, mean, var, steps)


def test_batch_of_one_in_a_traced_step_matches_the_rule():
    """Batches of 16, 16 and 1: the last runs in a step traced for an
    unknown batch size (where the layer chooses at run time)."""
    model = keras.Sequential([keras.Input((3,)), SLAF(degree=3,
                                                      momentum=0.9)])
    slaf = model.layers[0]
    model.compile("sgd", "mse")
    x = sample((33, 3), seed=4)
    model.fit(x, np.zeros((33, 3)), batch_size=16, shuffle=False,
              epochs=1, verbose=0)
    mean, var, steps = np.zeros((3, 3)), np.ones((3, 3)), 0
    for batch in (x[:16], x[16:32], x[32:]):
        mean, var, steps = np_bounded_update(mean, var, steps, batch,
                                             momentum=0.9)
    assert_statistics(slaf, mean, var, steps)


def test_batch_size_one_trains_and_evaluates_alike():
    """Issue #16, 1: `Dense(8) -> SLAF() -> Dense(1)` with `batch_size=1`
    kept a flat training loss and evaluated to an MSE of 4.4e10."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = np.sin(x).sum(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              SLAF(), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    loss = model.fit(x, y, batch_size=1, epochs=3, verbose=0).history["loss"]
    assert loss[-1] < 0.6 * loss[0], loss
    evaluated = model.evaluate(x, y, verbose=0)
    assert evaluated < 1.5 * loss[-1], (evaluated, loss)


@pytest.mark.parametrize("kwargs", [{}, {"normalization": "none"}])
@pytest.mark.parametrize("training", [True, False])
def test_integer_inputs_compute_in_float(kwargs, training):
    """Issue #16, 3: integer inputs returned int32, truncated."""
    as_int = built((None, 4), **kwargs)
    set_coefficients(as_int)
    as_float = built((None, 4), **kwargs)
    as_float.set_weights(as_int.get_weights())
    x = np.array([[-2, -1, 1, 3], [0, 2, -3, 1], [1, 1, 4, -2]], "int32")
    out = as_int(x, training=training)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    expected = value(as_float(x.astype("float32"), training=training))
    np.testing.assert_allclose(value(out), expected, rtol=1e-6)
    if kwargs:  # the raw polynomial, against NumPy
        np.testing.assert_allclose(
            value(out), np_raw(x, value(as_int.coefficients)), rtol=1e-5)


def test_inference_of_a_constant_channel_is_never_nan():
    """A channel constant at 1e9 has variance 0 and mean(x^4) = 1e36:
    folded into the polynomial, the constant term overflowed to -inf and
    met +inf (inf - inf = NaN); the coefficients are kept finite."""
    layer = built((None, 2), degree=4)
    x = np.full((16, 2), 1e9, "float32")
    x[:, 1] = np.linspace(-1.0, 1.0, 16)
    layer(x, training=True)
    probe = np.array([[1e9, 0.5], [2e9, 1.0], [0.0, 0.0], [-1e9, -1.0]],
                     "float32")
    out = value(layer(probe, training=False))
    assert not np.any(np.isnan(out)), out
    assert np.all(np.isfinite(out[:, 1]))


@pytest.mark.parametrize("degree", [4, 7])
@pytest.mark.parametrize("training", [True, False])
def test_gradients_finite_for_inputs_up_to_1e4(degree, training):
    layer = built((None, 3), degree=degree, gate=True)
    x = np.array([[1e4, -1e4, 0.5], [-3e3, 9999.0, -2.0],
                  [3.0, 1e-3, 1e4], [0.0, -5e3, -1e4]], "float32")
    layer(x, training=True)
    grads = analytic_gradients(layer, x, training=training)
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
    assert np.any(grads["inputs"] != 0.0)


# -- bad input --

@pytest.mark.parametrize("kwargs, match", [
    ({"degree": 0}, "degree=0"),
    ({"degree": -2}, "degree=-2"),
    ({"degree": 2.5}, "degree=2.5"),
    ({"degree": True}, "degree=True"),
    ({"basis": "chebyshev"}, "basis='chebyshev'"),
    ({"normalization": "layer"}, "normalization='layer'"),
    ({"normalization": None}, "normalization=None"),
    ({"momentum": 1.0}, r"momentum=1.0.*\[0.0, 1.0\)"),
    ({"momentum": -0.1}, "momentum=-0.1"),
    ({"momentum": float("nan")}, "momentum=nan"),
    ({"epsilon": 0.0}, "epsilon=0.0"),
    ({"basis": "taylor"}, "basis='taylor' with normalization='batch'"),
    ({"granularity": "neuron"}, "granularity='neuron'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SLAF(**kwargs)


def test_statistics_need_a_known_channel_axis():
    with pytest.raises(ValueError, match="statistics per channel"):
        SLAF(granularity="layer").build((None,))
    with pytest.raises(ValueError, match="unknown size"):
        SLAF().build((None, None))
    SLAF(granularity="layer", normalization="none").build((None,))


# -- the shared layer contract --

class TestSLAFContract(LayerContract):
    cases = [
        LayerCase("slaf-channel", SLAF, {}, (6, 6, 3),
                  trainable=2, non_trainable=3),
        LayerCase("slaf-layer-gate", SLAF,
                  {"granularity": "layer", "gate": True, "degree": 3},
                  (8,), trainable=3, non_trainable=3),
        LayerCase("slaf-raw-horner", SLAF,
                  {"normalization": "none", "degree": 3,
                   "coefficient_regularizer": "l2"},
                  (8,), trainable=1),
        LayerCase("slaf-taylor", SLAF,
                  {"normalization": "none", "basis": "taylor", "degree": 5,
                   "granularity": "layer"},
                  (4, 4), trainable=1),
        LayerCase("slaf-channels-first", SLAF, {"axis": 1, "degree": 3},
                  (3, 5, 5), trainable=2, non_trainable=3),
    ]
