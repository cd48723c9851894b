"""Every family through the inputs of issue #16: NaN and inf entries,
+-1e30 and the float32 maximum, empty batches, batches of one and integer
inputs, in training and in inference, and through TensorFlow Lite.

What must hold, for every family and both granularities:

- the running state stays finite whatever a batch holds: a non-finite
  batch statistic never enters it, and one outlier moves it boundedly (an
  outlier at the float32 maximum moves it no further than one at 1e8);
  batches of one keep it meaningful (the running scale of the input stays
  near the data's), and an empty batch changes nothing;
- for a finite input the output is never NaN, and inf only where the
  mathematics leaves float32 (where the same layer in float64 does);
- integer inputs compute in the layer's float dtype, as `keras.layers.Dense`
  does;
- gradients are finite for inputs up to 1e4;
- on TensorFlow, every family converts to TFLite (float, float16 and
  dynamic-range models) and the interpreter agrees with Keras, +-1e30
  included (a float16 model with Keras on the same weights rounded to
  float16, within float16's precision).

Each family's own test module checks its values against NumPy; here only
these properties are checked, on the same footing for all five.
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

import keras_learnact as kla

from numeric import analytic_gradients

F32_MAX = float(np.finfo("float32").max)
CHANNELS = 4

CASES = {
    "abu-layer": lambda: kla.ABU(),
    "abu-channel-softmax": lambda: kla.ABU(granularity="channel",
                                           normalization="softmax"),
    "alpha-swish": lambda: kla.AdaptiveScaling("swish"),
    "alpha-tanh-channel": lambda: kla.AdaptiveScaling(
        "tanh", granularity="channel"),
    "deu-channel": lambda: kla.DEU(),
    "deu-layer": lambda: kla.DEU(granularity="layer"),
    "pwlu-channel": lambda: kla.PWLU(),
    "pwlu-layer-realigned": lambda: kla.PWLU(granularity="layer",
                                             start_realigned=True),
    "slaf-channel": lambda: kla.SLAF(),
    "slaf-layer-gate": lambda: kla.SLAF(granularity="layer", gate=True,
                                        degree=3),
    "slaf-raw": lambda: kla.SLAF(normalization="none", degree=3),
}
# The families with running statistics, and the running scale (standard
# deviation) of the input that each keeps.
SCALES = {
    "pwlu-channel": lambda layer: value(layer.moving_std),
    "slaf-channel": lambda layer: np.sqrt(value(layer.moving_variance)[:, 0]),
    "slaf-layer-gate": lambda layer: np.sqrt(
        value(layer.moving_variance)[:, 0]),
}
STATEFUL = sorted(SCALES)


def value(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), "float64")


def clean(batch=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, CHANNELS)).astype("float32")


def prepared(name):
    """The case's layer, built, with its trainable weights moved off their
    initial values (a non-trivial function) and its running statistics
    taken from three clean batches."""
    layer = CASES[name]()
    layer.build((None, CHANNELS))
    rng = np.random.default_rng(7)
    for w in layer.trainable_weights:
        w.assign(value(w) + rng.normal(scale=0.1, size=w.shape))
    for seed in range(3):
        layer(clean(seed=seed), training=True)
    return layer


def copy_of(layer, dtype="float32"):
    """A new layer of the same configuration and weights, in `dtype`."""
    config = layer.get_config()
    config["dtype"] = dtype
    twin = type(layer).from_config(config)
    twin.build((None, CHANNELS))
    twin.set_weights(layer.get_weights())
    return twin


def state(layer):
    return [value(w) for w in layer.non_trainable_weights]


def everything(layer):
    return [value(w) for w in layer.weights]


def assert_same(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(new, old)


def assert_finite_state(layer):
    for w in layer.non_trainable_weights:
        assert np.all(np.isfinite(value(w))), (w.name, value(w))


def assert_overflow_only_where_mathematics_does(layer, x, training):
    """No NaN; inf only where the same layer in float64 (same weights, same
    state) leaves the float32 range."""
    exact = copy_of(layer, "float64")
    out = value(layer(x, training=training))
    reference = value(exact(x.astype("float64"), training=training))
    assert not np.any(np.isnan(out)), out
    overflow = ~np.isfinite(out)
    assert np.all(np.abs(reference[overflow]) > F32_MAX), (
        out[overflow], reference[overflow])
    representable = np.abs(reference) <= F32_MAX
    assert np.all(np.isfinite(out[representable])), (out, reference)


# -- non-finite entries ------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_entries_never_enter_the_state(name, training):
    layer = prepared(name)
    for bad in (np.nan, np.inf, -np.inf):
        before = state(layer)
        x = clean(seed=3)
        x[3, 1] = bad
        out = value(layer(x, training=training))
        assert_finite_state(layer)
        if not training:
            assert_same(before, state(layer))
            # Elementwise: every finite entry's output is a number.
            assert not np.any(np.isnan(np.delete(out.ravel(), 3 * 4 + 1)))
        # The channels without the bad entry are untouched by it.
        assert not np.any(np.isnan(np.delete(out, 1, axis=1)))
    # Clean data afterwards: finite state, finite inference.
    layer(clean(seed=4), training=True)
    assert_finite_state(layer)
    assert np.all(np.isfinite(value(layer(clean(seed=5), training=False))))


# -- outliers up to the float32 maximum ----------------------------------

EXTREME = np.array([
    [1e30, -1e30, F32_MAX, -F32_MAX],
    [-1e4, 1e4, 0.5, -2.0],
    [3.0, 0.0, -1e20, 1e20],
    [0.1, -0.7, 1.3, 2.2],
], "float32")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_of_extreme_inputs_overflow_only_where_mathematics_does(
        name, training):
    layer = prepared(name)
    assert_overflow_only_where_mathematics_does(layer, EXTREME, training)
    assert_finite_state(layer)
    one_outlier = clean(seed=6)
    one_outlier[9, 2] = -F32_MAX
    assert_overflow_only_where_mathematics_does(layer, one_outlier, training)
    assert_finite_state(layer)


@pytest.mark.parametrize("name", STATEFUL)
def test_one_outlier_moves_the_state_boundedly(name):
    """However large one outlier is, it moves the running state no further
    than an outlier of 1e8 does, and the state stays finite."""
    layer = prepared(name)
    moved = {}
    for size in (1e8, 1e30, F32_MAX, -1e8, -F32_MAX):
        twin = copy_of(layer)
        x = clean(seed=8)
        x[11, 2] = size
        twin(x, training=True)
        assert_finite_state(twin)
        moved[size] = state(twin)
    for size in (1e30, F32_MAX):
        for a, b in zip(moved[1e8], moved[size], strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, err_msg=str(size))
    for a, b in zip(moved[-1e8], moved[-F32_MAX], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5)


# -- empty batches ---------------------------------------------------------

def traced_training_step(layer):
    """`layer(x, training=True)` as a compiled train step runs it: on
    TensorFlow a graph traced for an unknown batch size, on JAX a `jit`
    function (its new state assigned back), on PyTorch eagerly.

    Returns:
        A function of `x` returning the outputs and the gradient of
        `sum(outputs)` with respect to each trainable weight.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec((None, CHANNELS))])
        def traced(x):
            with tf.GradientTape() as tape:
                out = layer(x, training=True)
                total = tf.reduce_sum(out)
            return out, tape.gradient(
                total, layer.trainable_variables,
                unconnected_gradients=tf.UnconnectedGradients.ZERO)

        def step(x):
            out, grads = traced(x)
            return value(out), [value(g) for g in grads]

        return step
    if backend == "jax":
        import jax

        def loss(trainable, non_trainable, x):
            out, new = layer.stateless_call(trainable, non_trainable, x,
                                            training=True)
            return out.sum(), (out, new)

        gradient = jax.jit(jax.grad(loss, has_aux=True))

        def step(x):
            grads, (out, new) = gradient(
                [v.value for v in layer.trainable_variables],
                [v.value for v in layer.non_trainable_variables], x)
            for variable, new_value in zip(layer.non_trainable_variables,
                                           new, strict=True):
                variable.assign(new_value)
            return value(out), [value(g) for g in grads]

        return step
    import torch

    def step(x):
        out = layer(torch.as_tensor(x), training=True)
        weights = [v.value for v in layer.trainable_variables]
        grads = [None] * len(weights)
        if out.requires_grad:  # PWLU's phase I reaches no weight
            grads = torch.autograd.grad(out.sum(), weights,
                                        allow_unused=True)
        return value(out), [np.zeros(w.shape) if g is None else value(g)
                            for w, g in zip(weights, grads, strict=True)]

    return step


@pytest.mark.parametrize("name", sorted(CASES))
def test_empty_batch_changes_nothing(name):
    """Issue #16, 3: an empty training batch left NaN statistics."""
    layer = prepared(name)
    before = everything(layer)
    empty = np.zeros((0, CHANNELS), "float32")
    for training in (True, False):
        out = layer(empty, training=training)
        assert tuple(out.shape) == (0, CHANNELS)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert_same(before, everything(layer))
    # In a compiled step, after a batch of 8.
    step = traced_training_step(layer)
    step(clean(batch=8, seed=9))
    before = everything(layer)
    out, grads = step(empty)
    assert out.shape == (0, CHANNELS)
    assert_same(before, everything(layer))
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


# -- batches of one ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_batches_of_one(name):
    """Issue #16, 1 and 3: one example per batch, in training (eager and
    compiled) and inference. Its spread is 0, which must not become the
    running scale: that made SLAF's inference divide by sqrt(epsilon)."""
    layer = prepared(name)
    probe = clean(seed=11)
    before = value(layer(probe, training=False))
    step = traced_training_step(layer)
    rng = np.random.default_rng(10)
    for number in range(16):
        x = rng.normal(size=(1, CHANNELS)).astype("float32")
        if number % 2:
            out, grads = step(x)
            assert all(np.all(np.isfinite(g)) for g in grads)
        else:
            out = value(layer(x, training=True))
        assert np.all(np.isfinite(out))
        assert_finite_state(layer)
        assert np.all(np.isfinite(value(layer(x, training=False))))
    if name in SCALES:
        scale = SCALES[name](layer)
        assert np.all((scale > 0.5) & (scale < 2.0)), scale
    # The same data, so about the same function (SLAF's was 1e10 off).
    after = value(layer(probe, training=False))
    assert np.all(np.isfinite(after))
    assert np.abs(after - before).max() < 10 * (1 + np.abs(before).max()), (
        before, after)


# -- integer inputs --------------------------------------------------------

INTEGERS = np.array([[-2, -1, 1, 3], [0, 2, -3, 1], [4, -4, 0, 1]], "int32")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_inputs_compute_in_float(name, training):
    """Issue #16, 3: integer inputs came back int32 and truncated (SLAF,
    PWLU), as float32 from the wrong path (DEU), or raised (ABU, swish)."""
    layer = prepared(name)
    twin = copy_of(layer)
    out = layer(INTEGERS, training=training)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    expected = value(twin(INTEGERS.astype("float32"), training=training))
    np.testing.assert_allclose(value(out), expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(state(layer), state(twin), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# -- gradients -----------------------------------------------------------

LARGE = np.array([[1e4, -1e4, 0.5, -2.0], [-3e3, 9999.0, 1e-3, 1e4],
                  [0.0, -5e3, -1e4, 7.0], [1.5, 2.5, -0.5, -1e4]], "float32")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_finite_for_inputs_up_to_1e4(name, training):
    layer = prepared(name)
    grads = analytic_gradients(layer, LARGE, training=training)
    for key, g in grads.items():
        assert np.all(np.isfinite(g)), (key, g)
    assert_finite_state(layer)


# -- TensorFlow Lite -------------------------------------------------------

if keras.backend.backend() == "tensorflow":
    # Issue #16, 4: ABU, AdaptiveScaling and DEU gave NaN in TFLite for
    # +-1e30 where Keras gave finite values.
    TFLITE_INPUT = np.array([
        [1e30, -1e30, 0.5, -2.0],
        [3.0, -1e4, 1e4, 0.0],
        [-0.3, 1.7, -1e30, 1e30],
        [0.1, -0.9, 2.2, -4.0],
    ], "float32")
    MODES = ("float", "float16", "dynamic-range")

    @functools.cache
    def tflite_outputs(name, mode):
        """Keras's and the TFLite interpreter's outputs for the case's
        layer in a model, converted in `mode`. For `"float16"`, which
        stores every weight in float16, Keras's are those of the model
        with its weights rounded to float16: the function the converted
        model computes (at 1e4 an oscillating DEU unit's phase moves by
        radians with that rounding)."""
        import tensorflow as tf

        keras.utils.set_random_seed(1234)
        inputs = keras.Input((CHANNELS,))
        model = keras.Model(inputs, prepared(name)(inputs))
        weights = model.get_weights()
        if mode == "float16":
            model.set_weights([w.astype("float16").astype(w.dtype)
                               for w in weights])
        expected = model.predict(TFLITE_INPUT, verbose=0)
        model.set_weights(weights)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "float":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
        runner = interpreter.get_signature_runner()
        (input_name,) = runner.get_input_details()
        (got,) = runner(**{input_name: TFLITE_INPUT}).values()
        return expected, np.asarray(got)

    @pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("name", sorted(CASES))
    def test_tflite_agrees_with_keras(name, mode):
        expected, got = tflite_outputs(name, mode)
        assert got.shape == expected.shape
        assert not np.any(np.isnan(got)), got
        # float16 also rounds the constants computed from the weights.
        tolerance = 2e-3 if mode == "float16" else 1e-5
        np.testing.assert_allclose(got, expected, rtol=tolerance,
                                   atol=tolerance)
