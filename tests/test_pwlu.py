"""PWLU: values, gradients, the two phases, realignment, errors, contract."""

import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_learnact.callbacks import PWLURealignment
from keras_learnact.callbacks.pwlu_realignment import find_pwlu_layers
from keras_learnact.layers.pwlu import PWLU
from keras_learnact.layers.pwlu import segment_index

from layer_contract import REPO_ROOT
from layer_contract import LayerCase
from layer_contract import LayerContract
from numeric import assert_gradients_match

BACKEND = keras.backend.backend()


# -- an independent NumPy statement of the function --

def np_pwlu(x, left, right, heights, kl, kr):
    """np.interp between the bounds, straight tails outside."""
    x = np.asarray(x, "float64")
    grid = np.linspace(left, right, len(heights))
    inside = np.interp(x, grid, heights)
    return np.where(x < left, (x - left) * kl + heights[0],
                    np.where(x >= right, (x - right) * kr + heights[-1],
                             inside))


def random_parameters(layer, seed=0):
    """Random phase-II parameters; returns them per channel."""
    rng = np.random.default_rng(seed)
    shape = layer.left_bound.shape
    left = rng.uniform(-2.5, -0.5, size=shape)
    right = rng.uniform(0.5, 2.5, size=shape)
    heights = rng.normal(size=layer.heights.shape)
    kl = rng.uniform(-1.0, 1.0, size=shape)
    kr = rng.uniform(0.0, 2.0, size=shape)
    for var, value in [(layer.left_bound, left), (layer.right_bound, right),
                       (layer.heights, heights), (layer.left_slope, kl),
                       (layer.right_slope, kr)]:
        var.assign(value)
    layer.realigned.assign(1.0)
    values = [np.atleast_1d(v) for v in (left, right)]
    values.append(np.atleast_2d(heights))
    values += [np.atleast_1d(v) for v in (kl, kr)]
    return [[v[c] for v in values] for c in range(len(values[0]))]


def values(layer, x, training=False):
    return np.asarray(ops.convert_to_numpy(layer(x, training=training)))


GRID = np.linspace(-4.0, 4.0, 161)


# -- values --

@pytest.mark.parametrize("n", [2, 5, 16])
def test_values_match_numpy_at_random_parameters(n):
    layer = PWLU(num_intervals=n, granularity="channel")
    layer.build((None, 3))
    params = random_parameters(layer, seed=n)
    curves = layer.curve(GRID)
    for c in range(3):
        np.testing.assert_allclose(
            curves[c], np_pwlu(GRID, *params[c]), rtol=1e-5, atol=1e-5
        )


def test_layer_granularity_values_on_images():
    layer = PWLU(num_intervals=7, granularity="layer")
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 4)) * 2
    layer.build(x.shape)
    (params,) = random_parameters(layer, seed=3)
    np.testing.assert_allclose(
        values(layer, x.astype("float32")), np_pwlu(x, *params),
        rtol=1e-5, atol=1e-5,
    )


def test_channels_first_axis():
    layer = PWLU(num_intervals=6, granularity="channel", axis=1)
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 4)) * 2
    layer.build(x.shape)
    params = random_parameters(layer, seed=4)
    y = values(layer, x.astype("float32"))
    for c in range(3):
        np.testing.assert_allclose(
            y[:, c], np_pwlu(x[:, c], *params[c]), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("start_realigned", [False, True])
def test_initial_function_is_relu(start_realigned):
    layer = PWLU(num_intervals=16, start_realigned=start_realigned)
    x = np.random.default_rng(3).normal(size=(16, 4, 5)).astype("float32")
    x[0, 0] = [0.0, 3.0, -3.0, 1e-30, 50.0]
    np.testing.assert_allclose(
        values(layer, x), np.maximum(x, 0.0), rtol=1e-6, atol=1e-7
    )
    assert layer.is_realigned() is start_realigned


def test_odd_intervals_start_as_relu_interpolant():
    layer = PWLU(num_intervals=5, granularity="layer", start_realigned=True)
    layer.build((None, 1))
    grid = np.linspace(-3.0, 3.0, 6)
    expected = np_pwlu(GRID, -3.0, 3.0, np.maximum(grid, 0.0), 0.0, 1.0)
    np.testing.assert_allclose(layer.curve(GRID)[0], expected, atol=1e-5)
    assert np.max(np.abs(expected - np.maximum(GRID, 0.0))) > 0.1


def test_phase_one_is_exact_relu_whatever_the_parameters():
    layer = PWLU(num_intervals=4, granularity="channel")
    layer.build((None, 3))
    random_parameters(layer)
    layer.realigned.assign(0.0)
    x = np.random.default_rng(4).normal(size=(64, 3)).astype("float32") * 3
    np.testing.assert_array_equal(values(layer, x), np.maximum(x, 0.0))


def test_extreme_inputs_give_finite_outputs_and_nan_stays_nan():
    layer = PWLU(num_intervals=8, granularity="layer")
    layer.build((None, 6))
    random_parameters(layer)
    x = np.array([[1e30, -1e30, 1e37, -1e37, 0.0, np.nan]], "float32")
    y = values(layer, x)
    assert np.all(np.isfinite(y[0, :5]))
    assert np.isnan(y[0, 5])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_segment_index_is_clipped_floor(dtype):
    rng = np.random.default_rng(5)
    top = 17
    u = np.concatenate([
        rng.uniform(-5.0, top + 5.0, size=2000),
        np.arange(-3.0, top + 4.0),  # exact integers: floor is the value
        np.arange(-3.0, top + 4.0) - 1e-3,
        [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, np.inf, -np.inf],
    ]).astype(dtype)
    expected = np.clip(np.floor(u.astype("float64")), 0, top)
    got = ops.convert_to_numpy(segment_index(ops.convert_to_tensor(u), top))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    # Per-row offsets, as for a flattened per-channel table.
    rows = (np.arange(4) * (top + 1)).astype(dtype)
    grid = u[:2000].reshape(500, 4)
    got = ops.convert_to_numpy(segment_index(
        ops.convert_to_tensor(grid), top, ops.convert_to_tensor(rows)))
    np.testing.assert_array_equal(
        got, np.clip(np.floor(grid.astype("float64")), 0, top) + rows)
    nan = ops.convert_to_tensor(np.full(3, np.nan, dtype))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(segment_index(nan, top)), 0)


def test_table_too_large_is_an_error_naming_the_sizes():
    layer = PWLU(num_intervals=70_000)
    with pytest.raises(ValueError, match=r"num_intervals=70000 on 128 "
                       r"channels needs 8960256 table entries.*2\^23"):
        layer.build((None, 128))


# -- gradients --

@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_gradients_match_finite_differences(granularity):
    layer = PWLU(num_intervals=4, granularity=granularity, dtype="float64")
    layer.build((None, 2, 3))
    random_parameters(layer, seed=5)
    # Points in every segment and both tails, away from the breakpoints.
    rng = np.random.default_rng(6)
    x = rng.uniform(-3.5, 3.5, size=(4, 2, 3))
    left = np.asarray(ops.convert_to_numpy(layer.left_bound))
    right = np.asarray(ops.convert_to_numpy(layer.right_bound))
    for c in np.ndindex(left.shape):
        knots = np.linspace(left[c], right[c], 5)
        xc = x[..., c[0]] if c else x
        near = np.min(np.abs(xc[..., None] - knots), axis=-1) < 0.05
        xc[near] += 0.1
    assert_gradients_match(layer, x)


def test_float32_gradients_agree_with_float64():
    # A 4-D float32 input takes the fast path (on TensorFlow, hand-written
    # XLA kernels reading the index from float bits); float64 takes plain
    # casts. Both must give the same gradients.
    from numeric import analytic_gradients

    grads = {}
    for dtype in ("float32", "float64"):
        layer = PWLU(num_intervals=16, dtype=dtype)
        layer.build((None, 3, 3, 4))
        random_parameters(layer, seed=8)
        x = np.random.default_rng(9).normal(size=(2, 3, 3, 4)) * 2.0
        grads[dtype] = analytic_gradients(layer, x.astype(dtype))
    assert grads["float32"].keys() == grads["float64"].keys()
    for name, exact in grads["float64"].items():
        scale = np.max(np.abs(exact))
        assert scale > 0, name
        np.testing.assert_allclose(grads["float32"][name], exact,
                                   rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=name)


def test_every_parameter_gets_a_gradient_in_phase_two_only():
    layer = PWLU(num_intervals=4, granularity="layer", dtype="float64")
    layer.build((None, 8))
    random_parameters(layer)
    x = np.linspace(-3.9, 3.9, 8)[None]
    from numeric import analytic_gradients

    grads = analytic_gradients(layer, x)
    for name in ["left_bound", "right_bound", "heights", "left_slope",
                 "right_slope"]:
        assert np.any(grads[name] != 0.0), name
    layer.realigned.assign(0.0)
    grads = analytic_gradients(layer, x)
    for name, g in grads.items():
        if name != "inputs":
            assert np.all(g == 0.0), name
    np.testing.assert_array_equal(grads["inputs"] != 0, x > 0)


@pytest.mark.parametrize("bounds", [(0.0, 0.0), (1.0, -1.0)])
def test_zero_or_negative_width_stays_finite(bounds):
    layer = PWLU(num_intervals=4, granularity="layer", dtype="float64")
    layer.build((None, 5))
    random_parameters(layer)
    layer.left_bound.assign(bounds[0])
    layer.right_bound.assign(bounds[1])
    x = np.array([[-2.0, bounds[0], bounds[0] + 5e-5, 0.3, 2.0]])
    from numeric import analytic_gradients

    assert np.all(np.isfinite(values(layer, x)))
    for name, g in analytic_gradients(layer, x).items():
        assert np.all(np.isfinite(g)), name


# -- statistics and realignment --

def test_statistics_follow_momentum_per_channel():
    layer = PWLU(num_intervals=4, momentum=0.8)
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(256, 3)) * [1.0, 2.0, 0.5] + [1.0, -1.0, 3.0])
    x = x.astype("float32")
    y = values(layer, x, training=True)
    np.testing.assert_array_equal(y, np.maximum(x, 0.0))
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.moving_mean), 0.2 * x.mean(0), rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.moving_std), 0.8 + 0.2 * x.std(0),
        rtol=1e-4,
    )
    values(layer, x, training=False)  # inference leaves them alone
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.moving_mean), 0.2 * x.mean(0), rtol=1e-4,
        atol=1e-6,
    )


def test_statistics_are_frozen_in_phase_two():
    layer = PWLU(num_intervals=4, granularity="layer", start_realigned=True)
    x = np.random.default_rng(8).normal(size=(32, 3)).astype("float32") + 5
    values(layer, x, training=True)
    assert float(ops.convert_to_numpy(layer.moving_mean)) == 0.0
    assert float(ops.convert_to_numpy(layer.moving_std)) == 1.0


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_realign_sets_bounds_and_relu_interpolant(granularity):
    n = 6
    layer = PWLU(num_intervals=n, granularity=granularity, momentum=0.0)
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(4096, 2)) * [0.5, 0.5] + [0.4, 0.4])
    x = x.astype("float32")
    values(layer, x, training=True)  # momentum 0: the batch statistics
    layer.realign()
    assert layer.is_realigned()
    axis = 0 if granularity == "channel" else None
    mean, std = x.mean(axis), x.std(axis)
    left = np.atleast_1d(ops.convert_to_numpy(layer.left_bound))
    right = np.atleast_1d(ops.convert_to_numpy(layer.right_bound))
    np.testing.assert_allclose(left, mean - 3 * std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(right, mean + 3 * std, rtol=1e-4, atol=1e-5)
    stats_mean = np.atleast_1d(ops.convert_to_numpy(layer.moving_mean))
    stats_std = np.atleast_1d(ops.convert_to_numpy(layer.moving_std))
    np.testing.assert_allclose(left, stats_mean - 3 * stats_std, rtol=1e-5)
    np.testing.assert_allclose(right, stats_mean + 3 * stats_std, rtol=1e-5)
    for c, curve in enumerate(layer.curve(GRID)):
        grid = np.linspace(left[c], right[c], n + 1)
        expected = np_pwlu(GRID, left[c], right[c], np.maximum(grid, 0.0),
                           0.0, 1.0)
        np.testing.assert_allclose(curve, expected, atol=1e-5)
    assert np.max(np.abs(layer.curve(GRID) - np.maximum(GRID, 0.0))) > 0.05


def test_realign_constant_channel_is_finite():
    layer = PWLU(num_intervals=4, momentum=0.0)
    x = np.full((8, 2), 1.5, "float32")
    values(layer, x, training=True)
    layer.realign()
    y = values(layer, np.linspace(-3, 3, 14, dtype="float32").reshape(7, 2))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(
        layer.curve(np.array([-2.0, 1.0, 4.0]))[0], [1.5, 1.5, 4.0],
        atol=1e-3,
    )


def _trainable_snapshot(layer):
    return {w.name: np.array(ops.convert_to_numpy(w.value))
            for w in layer.trainable_weights}


# TensorFlow compiles `fit` without XLA on a CPU unless asked; JAX always
# compiles with XLA, and PyTorch's `jit_compile=True` is another compiler.
JIT_MODES = [False, True] if BACKEND == "tensorflow" else ["auto"]


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_compiled_fit_two_phases_with_callback(jit_compile):
    rng = np.random.default_rng(10)
    x = (rng.normal(size=(128, 4)) * [1.0, 2.0, 0.5, 1.5] + [0.5, -1, 2, 0])
    x = x.astype("float32")
    y = np.abs(x).sum(axis=1, keepdims=True)
    inputs = keras.Input((4,))
    pwlu = PWLU(num_intervals=8)
    outputs = keras.layers.Dense(1)(pwlu(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse",
                  jit_compile=jit_compile)
    initial = _trainable_snapshot(pwlu)
    snapshots = []
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(
            (_trainable_snapshot(pwlu), pwlu.is_realigned())
        )
    )
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False,
              callbacks=[PWLURealignment(warmup_epochs=2), recorder])
    for params, realigned in snapshots[:2]:
        assert not realigned
        for name, value in params.items():
            np.testing.assert_array_equal(value, initial[name], err_msg=name)
    assert snapshots[2][1] and snapshots[3][1]
    moved = [name for name, value in snapshots[3][0].items()
             if not np.allclose(value, snapshots[2][0][name])]
    assert set(moved) >= {"heights"}, moved
    # 32 phase-I steps with momentum 0.9: the statistics have converged to
    # the data's (up to the residual 0.9**32 of the initial values and the
    # bias of 8-sample standard deviations).
    np.testing.assert_allclose(
        ops.convert_to_numpy(pwlu.moving_mean), x.mean(0), atol=0.25
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(pwlu.moving_std), x.std(0), rtol=0.2
    )


@pytest.mark.parametrize("jit_compile", JIT_MODES)
@pytest.mark.parametrize("start_realigned", [False, True])
def test_compiled_predict_agrees_with_numpy_in_both_phases(
        jit_compile, start_realigned):
    # The phase is a `cond` on a weight; under XLA its branches' tables
    # are computed once, outside the per-element loop.
    layer = PWLU(num_intervals=6, start_realigned=start_realigned)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layer(inputs))
    model.compile(jit_compile=jit_compile)
    params = random_parameters(layer, seed=4)
    x = np.random.default_rng(5).normal(size=(64, 3)).astype("float32") * 4
    if start_realigned:
        expected = np.stack(
            [np_pwlu(x[:, c], *params[c]) for c in range(3)], axis=1
        )
    else:  # phase I is ReLU whatever the parameters
        layer.realigned.assign(0.0)
        expected = np.maximum(x, 0.0)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5
    )


def test_callback_finds_nested_layers_and_skips_realigned():
    inner = keras.Sequential([keras.Input((4,)), PWLU(num_intervals=4)])
    done = PWLU(num_intervals=4, granularity="layer", start_realigned=True)
    model = keras.Sequential([keras.Input((4,)), inner, done,
                              keras.layers.Dense(1)])
    found = find_pwlu_layers(model)
    assert len(found) == 2 and done in found
    done.left_bound.assign(-1.0)
    callback = PWLURealignment(warmup_epochs=0)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    assert all(layer.is_realigned() for layer in found)
    assert float(ops.convert_to_numpy(done.left_bound)) == -1.0


def test_callback_waits_for_warmup():
    layer = PWLU(num_intervals=4)
    model = keras.Sequential([keras.Input((4,)), layer])
    callback = PWLURealignment(warmup_epochs=3)
    callback.set_model(model)
    callback.on_epoch_begin(2)
    assert not layer.is_realigned()
    callback.on_epoch_begin(5)  # resumed past the warm-up
    assert layer.is_realigned()


_RESUME = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from keras import ops
    import keras_learnact
    from keras_learnact.callbacks import PWLURealignment
    model = keras.models.load_model(sys.argv[1])
    layer = [l for l in model.layers if type(l).__name__ == "PWLU"][0]
    assert not layer.is_realigned()
    mean = ops.convert_to_numpy(layer.moving_mean).copy()
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32") + 3
    model.fit(x, x[:, :1], epochs=1, verbose=0,
              callbacks=[PWLURealignment(warmup_epochs=1)])
    after = ops.convert_to_numpy(layer.moving_mean)
    assert not layer.is_realigned()
    assert not np.allclose(after, mean)  # phase I continued
    saved_std = ops.convert_to_numpy(layer.moving_std)
    layer.realign()
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.left_bound), after - 3 * saved_std,
        rtol=1e-5)
    print("RESUMED-OK")
    """
)


def test_phase_one_model_resumes_in_fresh_process(tmp_path):
    layer = PWLU(num_intervals=4)
    model = keras.Sequential([keras.Input((4,)), layer,
                              keras.layers.Dense(1)])
    model.compile("adam", "mse")
    x = np.random.default_rng(11).normal(size=(32, 4)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    assert not layer.is_realigned()
    assert not np.allclose(ops.convert_to_numpy(layer.moving_std), 1.0)
    path = str(tmp_path / "phase1.keras")
    model.save(path)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    out = subprocess.run(
        [sys.executable, "-c", _RESUME, path], env=env, cwd=str(tmp_path),
        capture_output=True, text=True, timeout=600,
    )
    assert "RESUMED-OK" in out.stdout, out.stderr[-3000:]


if BACKEND == "tensorflow":

    _MIRRORED = textwrap.dedent(
        """
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from keras import ops
        from keras_learnact.layers.pwlu import PWLU

        rng = np.random.default_rng(0)
        x = (rng.normal(size=(64, 3)) * [1.0, 3.0, 0.2] + [2.0, 0.0, -1.0])
        x = x.astype("float32")
        # Replicas see different halves: their own statistics differ.
        x[:32] += 1.0

        def statistics(strategy):
            with strategy.scope():
                layer = PWLU(num_intervals=4, momentum=0.0)
                model = keras.Sequential([keras.Input((3,)), layer])
                model.compile("sgd", "mse")
            model.fit(x, x, batch_size=64, epochs=1, verbose=0,
                      shuffle=False)
            return [ops.convert_to_numpy(layer.moving_mean),
                    ops.convert_to_numpy(layer.moving_std)]

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert mirrored.num_replicas_in_sync == 2
        two = statistics(mirrored)
        one = statistics(tf.distribute.get_strategy())
        np.testing.assert_allclose(two[0], x.mean(0), rtol=1e-4)
        np.testing.assert_allclose(two[1], x.std(0), rtol=1e-4)
        for a, b in zip(one, two):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print("MIRRORED-OK")
        """
    )

    def test_mirrored_strategy_uses_global_batch_statistics():
        env = {**os.environ, "PYTHONPATH": REPO_ROOT}
        out = subprocess.run(
            [sys.executable, "-c", _MIRRORED], env=env, capture_output=True,
            text=True, timeout=600,
        )
        assert "MIRRORED-OK" in out.stdout, out.stderr[-3000:]


# -- statistics that one batch cannot spoil (issue #16) --

def np_statistics_update(mean, std, batch, momentum=0.9, bound=4.0):
    """The documented update of one channel's running statistics, in
    float64: the finite entries' moments (the mean summed exactly, so
    that no entry is lost to another's magnitude), bounded by `bound`
    reference scales `max(|mean| + std, 1e-4)` before the moving average."""
    finite = np.asarray(batch, "float64")
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return mean, std
    if finite.size == 1:
        batch_mean, batch_std = finite[0], abs(finite[0] - mean)
    else:
        batch_mean = math.fsum(finite) / finite.size
        batch_std = np.sqrt(np.mean(np.square(finite - batch_mean)))
    reach = bound * max(abs(mean) + std, 1e-4)
    batch_mean = np.clip(batch_mean, mean - reach, mean + reach)
    batch_std = min(batch_std, reach)
    return (momentum * mean + (1 - momentum) * batch_mean,
            momentum * std + (1 - momentum) * batch_std)


def statistics(layer):
    return [np.atleast_1d(ops.convert_to_numpy(v)).astype("float64")
            for v in (layer.moving_mean, layer.moving_std)]


def channel_columns(layer, x):
    """The entries that each running statistic summarises."""
    return [x.ravel()] if layer.granularity == "layer" else [
        x[..., c].ravel() for c in range(x.shape[-1])]


def expected_statistics(layer, x, before):
    """`np_statistics_update` per channel of the last axis (or over all of
    `x` for layer granularity), from the statistics `before`."""
    updates = [np_statistics_update(mean, std, column, layer.momentum)
               for mean, std, column in zip(
                   *before, channel_columns(layer, x), strict=True)]
    return [np.array(v) for v in zip(*updates, strict=True)]


def mean_rounding_bound(layer, x, before, bound=4.0):
    """How far a float32 sum may put each new running mean from the exact
    one: a sum of n terms errs by up to about n * eps * sum|terms|, so the
    batch mean by n * eps * mean|x| (3.4e38 and -3.4e38 in one batch
    leave nothing of the other entries), never more than the clip's
    reach, and the moving average passes on (1 - momentum) of it."""
    eps = float(np.finfo("float32").eps)
    bounds = []
    for mean, std, column in zip(*before, channel_columns(layer, x),
                                 strict=True):
        finite = np.abs(column[np.isfinite(column)].astype("float64"))
        spread = finite.size * eps * (finite.mean() if finite.size else 0.0)
        reach = bound * max(abs(mean) + std, 1e-4)
        bounds.append((1 - layer.momentum) * min(spread, 2 * reach))
    return np.array(bounds)


BAD_ENTRIES = {
    "outlier-1e20": [1e20],
    "outlier-float32-max": [3e38],
    "outliers-both-signs": [3.4e38, -3.4e38],
    "nan": [np.nan],
    "inf": [np.inf, -np.inf],
    "nan-and-outlier": [np.nan, -1e20],
}


@pytest.mark.parametrize("granularity", ["channel", "layer"])
@pytest.mark.parametrize("bad", list(BAD_ENTRIES), ids=list(BAD_ENTRIES))
def test_one_bad_batch_moves_statistics_boundedly(bad, granularity):
    # Issue #16, 2: one entry of 1e20 (or one NaN) in one phase-I batch
    # made moving_std inf/NaN and, after realign(), the channel NaN.
    layer = PWLU(num_intervals=8, granularity=granularity)
    rng = np.random.default_rng(12)
    clean = (rng.normal(size=(32, 3)) * [1.0, 2.0, 0.5] + [0.5, -1.0, 2.0])
    clean = clean.astype("float32")
    values(layer, clean, training=True)
    before = statistics(layer)
    x = clean.copy()
    x[3:3 + len(BAD_ENTRIES[bad]), 1] = BAD_ENTRIES[bad]
    values(layer, x, training=True)
    after = statistics(layer)
    expected = expected_statistics(layer, x, before)
    slack = mean_rounding_bound(layer, x, before)
    error = np.abs(after[0] - expected[0])
    assert np.all(error <= 1e-6 + 1e-5 * np.abs(expected[0]) + slack), (
        after[0], expected[0], slack)
    np.testing.assert_allclose(after[1], expected[1], rtol=1e-5, atol=1e-6)
    # Bounded: at most 0.4 reference scales from where they were.
    reach = 0.4 * np.maximum(np.abs(before[0]) + before[1], 1e-4)
    assert np.all(np.abs(after[0] - before[0]) <= reach * (1 + 1e-6))
    assert np.all(np.abs(after[1] - before[1]) <= reach * (1 + 1e-6))
    layer.realign()
    for name, value in layer.parameter_values().items():
        assert np.all(np.isfinite(value)), name
    probe = np.concatenate([clean, [[3e38, -3e38, 1e30]]]).astype("float32")
    assert not np.any(np.isnan(values(layer, probe)))


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_compiled_fit_statistics_survive_a_bad_batch(jit_compile):
    # Compiled by XLA, the scaled moments must not lose the batch either
    # (on JAX, XLA divided by a broadcast scale through its reciprocal,
    # which it flushes to 0 when subnormal: 1 / 3e38).
    layer = PWLU(num_intervals=4)
    # A Dense layer after it: in phase I nothing of PWLU's is trained, and
    # Keras's PyTorch trainer cannot step a model without a gradient.
    model = keras.Sequential([keras.Input((3,)), layer, keras.layers.Dense(3)])
    model.compile("sgd", "mse", jit_compile=jit_compile)
    x = np.random.default_rng(19).normal(size=(32, 3)).astype("float32")
    x[20, 1], x[21, 1], x[22, 2] = 3e38, -np.inf, np.nan
    expected = [np.zeros(3), np.ones(3)]
    for batch in (x[:16], x[16:]):
        expected = expected_statistics(layer, batch, expected)
    model.fit(x, np.zeros_like(x), batch_size=16, epochs=1, verbose=0,
              shuffle=False)
    for got, want in zip(statistics(layer), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_statistics_leave_non_finite_entries_out():
    # A channel with some NaN and infinite entries has the statistics of
    # its finite entries; the others are untouched by them.
    layer = PWLU(num_intervals=4, momentum=0.0)
    x = np.random.default_rng(13).normal(size=(64, 2)).astype("float32")
    x[::4, 0] = np.nan
    x[1::4, 0] = np.inf
    values(layer, x, training=True)
    mean, std = statistics(layer)
    finite = x[np.isfinite(x[:, 0]), 0].astype("float64")
    np.testing.assert_allclose(mean, [finite.mean(), x[:, 1].mean()],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, [finite.std(), x[:, 1].std()],
                               rtol=1e-5)


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_empty_batch_changes_nothing(granularity):
    # Issue #16, 3: an empty training batch left NaN statistics.
    layer = PWLU(num_intervals=4, granularity=granularity)
    x = np.random.default_rng(14).normal(size=(16, 4)).astype("float32")
    values(layer, x, training=True)
    before = statistics(layer)
    y = values(layer, np.zeros((0, 4), "float32"), training=True)
    assert y.shape == (0, 4)
    for got, want in zip(statistics(layer), before, strict=True):
        np.testing.assert_array_equal(got, want)
    if BACKEND == "tensorflow":
        # As reported. (Keras's JAX trainer cannot take a step on an empty
        # batch at all: its loss is then not a scalar.)
        model = keras.Sequential([keras.Input((4,)), layer,
                                  keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.train_on_batch(np.zeros((0, 4), "float32"),
                             np.zeros((0, 1), "float32"))
        for got, want in zip(statistics(layer), before, strict=True):
            np.testing.assert_array_equal(got, want)


def test_batches_of_one_keep_a_meaningful_range():
    # Issue #16, 3: with one element per channel the batch standard
    # deviation is 0, and a phase I of batches of one shrank sigma towards
    # 0 (the realigned range collapsed to 1e-4). The element's distance
    # from the running mean stands for it.
    layer = PWLU(num_intervals=8)
    layer.build((None, 2))
    rng = np.random.default_rng(15)
    data = (rng.normal(size=(300, 1, 2)) * [1.5, 0.2] + [2.0, -1.0])
    data = data.astype("float32")
    expected = statistics(layer)
    for x in data:
        values(layer, x, training=True)
        expected = expected_statistics(layer, x, expected)
    mean, std = statistics(layer)
    np.testing.assert_allclose(mean, expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, expected[1], rtol=1e-4, atol=1e-5)
    # The mean of |x - mu| of a normal variable is 0.8 sigma.
    np.testing.assert_allclose(std, [1.2, 0.16], rtol=0.35)
    np.testing.assert_allclose(mean, [2.0, -1.0], atol=0.6)


def test_realign_from_huge_statistics_stays_finite():
    # Statistics near the float32 maximum (data that large, for long)
    # put the bounds at +-inf; they are kept within a quarter of the range.
    layer = PWLU(num_intervals=8)
    layer.build((None, 3))
    layer.moving_mean.assign([0.0, 3e38, -1e38])
    layer.moving_std.assign([1e38, 3e38, 0.0])
    layer.realign()
    for name, value in layer.parameter_values().items():
        assert np.all(np.isfinite(value)), name
    x = np.array([[0.0, 3e38, -3e38], [1e30, -1e30, 5.0],
                  [-1e38, 1e38, -1e38]], "float32")
    assert not np.any(np.isnan(values(layer, x)))


# -- inputs of other dtypes --

@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
def test_integer_inputs_compute_in_float_like_dense(dtype):
    # Issue #16, 3: PWLU returned int32 and truncated.
    layer = PWLU(num_intervals=5, granularity="layer")
    layer.build((None, 7))
    (params,) = random_parameters(layer, seed=16)
    x = np.array([[-3, -2, -1, 0, 1, 2, 3]]).astype(dtype)
    if dtype == "uint8":
        x = np.abs(x.astype("int32")).astype(dtype)
    y = layer(x)
    dense = keras.layers.Dense(2)(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert y.dtype == dense.dtype
    np.testing.assert_allclose(ops.convert_to_numpy(y),
                               np_pwlu(x.astype("float64"), *params),
                               rtol=1e-5, atol=1e-5)


# -- TensorFlow Lite (issue #16, 4) --

def tflite_outputs(model, x, mode):
    """The outputs of `model` converted to TensorFlow Lite in `mode`
    (`"float"`, `"float16"` or `"dynamic"` range quantisation)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    (entry,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(entry["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], x)
    interpreter.invoke()
    (result,) = interpreter.get_output_details()
    return interpreter.get_tensor(result["index"])


TFLITE_CASES = {
    # 64 channels: 1152 table entries, above the 1024 from which dynamic
    # range quantisation stores a constant as int8.
    "phase1-channel": ("channel", False),
    "phase2-channel": ("channel", True),
    "phase2-layer": ("layer", True),
}


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="TensorFlow Lite converts TensorFlow models")
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
@pytest.mark.parametrize("mode", ["float", "float16", "dynamic"])
@pytest.mark.parametrize("case", list(TFLITE_CASES), ids=list(TFLITE_CASES))
def test_tflite_outputs_match_keras(case, mode):
    # float16 crashed ("gather index out of bounds": 2^23 stored as
    # float16); dynamic range stored the tables as int8.
    granularity, learned = TFLITE_CASES[case]
    channels = 64
    layer = PWLU(num_intervals=16, granularity=granularity)
    model = keras.Sequential([keras.Input((channels,)), layer])
    params = random_parameters(layer, seed=17) if learned else None
    if not learned:
        layer.realigned.assign(0.0)
    rng = np.random.default_rng(18)
    x = (rng.normal(size=(32, channels)) * 2.0).astype("float32")
    x[0, :8] = [1e30, -1e30, 3e38, -3e38, 0.0, 1e-3, -1e-3, 1e10]
    x[1, :2] = [1e-6, -1e-6]
    keras_y = ops.convert_to_numpy(model(x))
    if learned:
        per_channel = params * channels if granularity == "layer" else params
        expected = np.stack([np_pwlu(x[:, c], *per_channel[c])
                             for c in range(channels)], axis=1)
        moderate = np.abs(x) < 100
        np.testing.assert_allclose(keras_y[moderate], expected[moderate],
                                   rtol=1e-5, atol=1e-5)
    else:
        expected = np.maximum(x, 0.0)
        np.testing.assert_array_equal(keras_y, expected)
    got = tflite_outputs(model, x, mode)
    assert not np.any(np.isnan(got))
    if mode != "float16":
        np.testing.assert_allclose(got, keras_y, rtol=1e-6, atol=1e-6)
        return
    # Float16 stores the bounds, `BL - d` and `1 / d`, with a relative
    # error up to 2^-11, which moves a breakpoint near `x` by at most
    # `2^-11 (|BL - d| + |x - BL + d|)`; the output then moves by that
    # times the change of slope there. Far outside the bounds (|x| >= 100)
    # the segment is the tail either way and the tables are exact.
    tails = np.abs(x) >= 100
    np.testing.assert_allclose(got[tails], keras_y[tails], rtol=1e-6)
    if learned:
        per_channel = params * channels if granularity == "layer" else params
        start, jump = [], []
        for left, right, heights, kl, kr in per_channel:
            step = (right - left) / 16
            slopes = np.concatenate([[kl], np.diff(heights) / step, [kr]])
            start.append(left - step)
            jump.append(np.max(np.abs(np.diff(slopes))))
        start, jump = np.array(start), np.array(jump)
    else:
        start, jump = np.zeros(channels), np.ones(channels)
    shift = 2.0**-11 * (np.abs(start) + np.abs(x - start)) * 1.01
    # Phase I's `1 / d = 2^126` saturates to 65504: inputs below 1 / 65504
    # give 0.
    tolerance = shift * jump + 1.0 / 65504
    error = np.abs(got.astype("float64") - keras_y)
    assert np.all(error[~tails] <= tolerance[~tails]), np.max(
        error[~tails] / tolerance[~tails])


# -- bad input --

@pytest.mark.parametrize("kwargs, pattern", [
    ({"num_intervals": 1}, r"num_intervals=1.*>= 2"),
    ({"num_intervals": 4.0}, r"num_intervals=4.0.*integer >= 2"),
    ({"initial_bounds": (1.0, 1.0)}, r"BL < BR.*BL=1.0 >= BR=1.0"),
    ({"initial_bounds": (2.0, -1.0)}, r"BL < BR"),
    ({"initial_bounds": (0.0, np.inf)}, r"initial_bounds\[1\]=inf"),
    ({"initial_bounds": 3.0}, r"initial_bounds=3.0.*pair"),
    ({"momentum": 1.0}, r"momentum=1.0.*\[0.0, 1.0\)"),
    ({"momentum": -0.1}, r"momentum=-0.1.*\[0.0, 1.0\)"),
    ({"bound_sigmas": 0.0}, r"bound_sigmas=0.0.*\(0.0, inf\]"),
    ({"granularity": "pixel"}, r"granularity='pixel'"),
])
def test_bad_arguments_name_value_and_range(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PWLU(**kwargs)


@pytest.mark.parametrize("warmup", [-1, 1.5, True])
def test_bad_warmup(warmup):
    with pytest.raises(ValueError, match=r"warmup_epochs=.*integer >= 0"):
        PWLURealignment(warmup_epochs=warmup)


def test_realign_before_build_is_an_error():
    with pytest.raises(ValueError, match="not built"):
        PWLU().realign()


# -- the benchmark's yardstick --

def test_benchmark_lookup_free_yardstick_reads_one_segment_per_channel():
    # benchmarks/pwlu_benchmark.py's `pwlu-no-lookup` stands for PWLU's
    # kernel without its gathers: it must run through PWLU's own index code
    # and give one linear function per channel, its right tail (y = x at
    # the ReLU initialisation), whatever segment the index finds.
    path = os.path.join(REPO_ROOT, "benchmarks", "pwlu_benchmark.py")
    spec = importlib.util.spec_from_file_location("pwlu_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layer = module.PWLUWithoutLookup()
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype("float32")
    x[0, 0] = [-1e4, 0.0, 1e4]
    got = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, x, rtol=1e-6)
    pwlu = ops.convert_to_numpy(
        PWLU(num_intervals=16, start_realigned=True)(x))
    np.testing.assert_allclose(pwlu, np.maximum(x, 0.0), rtol=1e-6,
                               atol=1e-6)


# -- the shared contract (phase II: the trainable weights must move) --

class TestPWLUContract(LayerContract):
    cases = [
        LayerCase("pwlu-layer", PWLU,
                  {"granularity": "layer", "num_intervals": 8,
                   "start_realigned": True},
                  (6, 6, 3), trainable=5, non_trainable=3),
        LayerCase("pwlu-channel", PWLU,
                  {"num_intervals": 16, "start_realigned": True,
                   "initial_bounds": [-2.0, 2.0]},
                  (6, 6, 3), trainable=5, non_trainable=3),
        LayerCase("pwlu-channels-first", PWLU,
                  {"granularity": "channel", "axis": 1, "num_intervals": 5,
                   "start_realigned": True, "momentum": 0.5},
                  (3, 4, 4), trainable=5, non_trainable=3),
    ]
