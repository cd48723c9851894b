"""`keras_learnact.layers._fused`: the XLA kernels TensorFlow runs and the
`torch.compile`d ones PyTorch runs.

`fuse` and `xla_kernel` exist for TensorFlow (on JAX and PyTorch `fuse`
returns the function unchanged, and every layer test covers that path), so
their tests exist only there. `trained` pairs are checked on every backend
with PyTorch's compiler on (tests/conftest.py switches it off elsewhere);
the compiler's fallback exists only on PyTorch.
"""

import logging
import os
import shutil
import warnings

import keras
import numpy as np
import pytest
from test_rational import NaiveRational
from test_rational import built
from test_rational import inputs

import keras_learnact as kla
from keras_learnact.layers import _fused
from keras_learnact.layers import abu
from keras_learnact.layers import adaptive_scaling
from keras_learnact.layers import deu
from keras_learnact.layers import pwlu
from keras_learnact.layers import rational
from keras_learnact.layers import slaf

from numeric import analytic_gradients

BACKEND = keras.backend.backend()


@pytest.fixture
def torch_compile(monkeypatch):
    """PyTorch's compiler switched on, Rational's kernels made afresh."""
    monkeypatch.setenv(_fused.TORCH_COMPILE_VARIABLE, "1")
    _clear_kernels()
    yield
    _clear_kernels()


def _clear_kernels():
    """Forgets the kernels cached per configuration (made with or without
    PyTorch's compiler, as the environment said then)."""
    rational._kernels.cache_clear()
    abu._blend_kernel.cache_clear()
    adaptive_scaling._scale_kernel.cache_clear()
    pwlu._lookup_kernel.cache_clear()
    slaf._batch_kernel.cache_clear()
    slaf._polynomial_kernel.cache_clear()
    deu._evaluation_kernel.cache_clear()
    deu._evaluate_kernel.cache_clear()


@pytest.mark.parametrize("version, granularity", [
    ("A", "layer"), ("B", "layer"), ("C", "layer"), ("A", "channel"),
])
def test_rational_trained_kernels_match_autodiff(version, granularity,
                                                 torch_compile):
    # float32 NHWC inputs as in a CNN: the training kernel (on PyTorch
    # compiled with its autodiff, elsewhere the hand-written backward
    # pass) and the inference kernel against autodiff of the plain layer.
    shape = (8, 5, 5, 3)
    layer = built(shape, version, granularity=granularity)
    naive = NaiveRational(layer)
    naive.build(shape)
    x = inputs(shape, seed=3).astype("float32")
    expected = analytic_gradients(naive, x)
    got = analytic_gradients(layer, x, training=True)
    assert sorted(got) == sorted(expected)
    for name in got:
        np.testing.assert_allclose(got[name], expected[name], rtol=2e-4,
                                   atol=2e-4, err_msg=name)
    for training in (True, False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer(x, training=training)),
            keras.ops.convert_to_numpy(naive(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    kla.layers.Rational, kla.layers.ABU,
    lambda: kla.layers.AdaptiveScaling("swish"),
    lambda: kla.layers.PWLU(start_realigned=True),
    kla.layers.SLAF,
    kla.layers.DEU,
], ids=["rational", "abu", "alpha-swish", "pwlu", "slaf", "deu"])
def test_models_train_with_their_kernels(make, torch_compile):
    # Building a model for `train_on_batch` calls each layer on shapes
    # alone (PyTorch: tensors of the "meta" device, which once made the
    # compiler fail and every later call run eagerly, with a warning): no
    # warning, and the loss falls.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = np.abs(x).sum(axis=1, keepdims=True)
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras.Sequential([
            keras.Input((4,)), keras.layers.Dense(16), make(),
            keras.layers.Dense(1),
        ])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.train_on_batch(x[:32], y[:32])  # builds on shapes first
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=10, batch_size=32, verbose=0)
        after = model.evaluate(x, y, verbose=0)
    failed = [str(w.message) for w in caught
              if "torch.compile failed" in str(w.message)]
    if BACKEND == "torch" and not shutil.which(os.environ.get("CXX")
                                               or "g++"):
        # No C++ compiler: PyTorch's compiler fails, the layer says so
        # once and trains eagerly.
        assert len(failed) == 1, failed
    else:
        assert failed == []
    assert after < 0.5 * before, (before, after)


if BACKEND == "jax":

    def test_eager_deu_calls_compile_a_few_programs_not_each_operation():
        # Outside `fit` and `predict` (a layer called on its own, `curve`,
        # the snapshot callback) JAX runs eagerly and compiled each of
        # DEU's hundreds of small operations for its shapes: 83 programs
        # for an inference call, 138 for a training call, 196 for its
        # gradient. `compiled` and `with_gradient` jit each kernel: 5, 5
        # and 10.
        import jax

        compiles = []

        class Count(logging.Handler):
            def emit(self, record):
                if "Compiling" in record.getMessage():
                    compiles.append(record.getMessage())

        handler = Count(logging.WARNING)
        logger = logging.getLogger("jax")
        logger.addHandler(handler)
        layer = kla.layers.DEU()
        layer.build((None, 7))
        x = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
        counts = []
        try:
            with jax.log_compiles(True):
                for training in (False, True):
                    layer(x, training=training)
                    counts.append(len(compiles))
                analytic_gradients(layer, x, training=True)
                counts.append(len(compiles))
        finally:
            logger.removeHandler(handler)
        per_call = np.diff([0, *counts])
        assert np.all(per_call <= 20), per_call


    def chain_gradient(fn, x, w, a):
        """The jitted gradient of four layers, each a matrix product and
        `fn`, and the temporary bytes XLA allocates for it."""
        import jax

        def loss(x, w, a):
            for _ in range(4):
                x = fn(keras.ops.matmul(x, w), a)
            return keras.ops.sum(x)

        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        temp = step.lower(x, w, a).compile().memory_analysis(
        ).temp_size_in_bytes
        return step(x, w, a), temp

    def chain_inputs(seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(4096, 256)).astype("float32")
        w = (rng.normal(size=(256, 256)) / 16).astype("float32")
        return x, w, np.float32(0.7)

    def assert_same_gradients(got, want):
        # float32 round-off, summed over 4096 rows through four layers:
        # relative to each gradient's largest entry.
        for g, w in zip(got, want, strict=True):
            w = np.asarray(w)
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4,
                                       atol=1e-5 * np.abs(w).max())

    def curvy(x, a):
        """An elementwise function whose autodiff saves three tensors."""
        ops = keras.ops
        return a * ops.tanh(x) * ops.sigmoid(x) + ops.exp(-x * x)

    def test_recomputed_backward_is_autodiff_and_keeps_less():
        # `recomputed` differentiates `fn` again in the backward pass: the
        # gradients of autodiff, and the step no longer keeps each layer's
        # tanh, sigmoid and exponential (ABU's basis values: the benchmark
        # CNN's peak training memory 2.52x ReLU's, 1.04x recomputed).
        # Measured: 68 MiB of temporaries plain, 32 MiB recomputed.
        x, w, a = chain_inputs(0)
        plain, plain_temp = chain_gradient(curvy, x, w, a)
        again, again_temp = chain_gradient(_fused.recomputed(curvy), x, w, a)
        assert_same_gradients(again, plain)
        assert again_temp < 0.75 * plain_temp, (again_temp, plain_temp)

    def test_backward_pass_after_its_upstream_keeps_less(monkeypatch):
        # A hand-written backward pass that recomputes from `x`: XLA's CPU
        # scheduler computed the recomputation in the forward pass and
        # kept it (DEU: peak training memory 2.29x ReLU's, 1.24x with
        # `after`), optimisation barriers notwithstanding. Measured: 36 MiB
        # of temporaries with `after`, 72 MiB without.
        ops = keras.ops

        def backward(upstream, y, x, a):
            del y
            t, s = ops.tanh(x), ops.sigmoid(x)
            e = ops.exp(-x * x)
            slope = a * (t * s * (1.0 - s) + (1.0 - t * t) * s) \
                - 2.0 * x * e
            return upstream * slope, ops.sum(upstream * t * s)

        x, w, a = chain_inputs(1)
        want, _ = chain_gradient(curvy, x, w, a)
        ordered, ordered_temp = chain_gradient(
            _fused.with_gradient(curvy, backward), x, w, a)
        assert_same_gradients(ordered, want)
        monkeypatch.setattr(_fused, "after", lambda x, upstream: x)
        _, early_temp = chain_gradient(
            _fused.with_gradient(curvy, backward), x, w, a)
        assert ordered_temp < 0.75 * early_temp, (ordered_temp, early_temp)

    def test_after_is_the_identity():
        values = np.array([-0.0, 0.0, -np.inf, np.inf, np.nan, -3e38,
                           1.5e-38], "float32")
        for upstream in (np.ones(3, "float32"),
                         np.array([np.nan, np.inf], "float32"),
                         np.array([-np.inf], "float32")):
            got = np.asarray(_fused.after(values, upstream))
            assert got.tobytes() == values.tobytes()
        # An empty upstream (a batch of none) has no element to wait for.
        assert _fused.after(values, np.zeros((0, 3), "float32")) is values


if BACKEND == "tensorflow":

    def test_eager_deu_inference_traces_its_coefficients_once(monkeypatch):
        # A snapshot's probe and `curve` call DEU eagerly, where its
        # per-unit coefficients (hundreds of small operations) ran one
        # operation at a time on every call; they are now one traced
        # function, with the values of the inline form that a graph (and
        # TensorFlow Lite) gets.
        import tensorflow as tf

        built = []
        original = deu._coefficient_rows

        def counting(*args):
            built.append(tf.executing_eagerly())
            return original(*args)

        monkeypatch.setattr(deu, "_coefficient_rows", counting)
        # Settings of their own: the traced function is made afresh.
        layer = kla.layers.DEU(epsilon=0.0123)
        layer.build((None, 7))
        x = np.random.default_rng(0).normal(size=(5, 7)).astype("float32")
        eager = [keras.ops.convert_to_numpy(layer(x, training=False))
                 for _ in range(3)]
        assert built == [False], built  # traced once, then reused
        in_graph = tf.function(lambda v: layer(v, training=False))(x)
        assert built[-1] is False and len(built) == 2  # inline in a graph
        for y in eager:
            np.testing.assert_allclose(y, in_graph.numpy(), rtol=1e-6,
                                       atol=1e-6)

    @pytest.mark.parametrize("rows", [0, 1, 10, 11])
    @pytest.mark.parametrize("jit", [False, True])
    def test_in_chunks_is_the_whole_computation(rows, jit):
        # Chunks of 2 rows (6 values of 3 columns): the chunks' rows are
        # concatenated and their sums added, the last chunk shorter when
        # the rows do not divide; the body is traced once. XLA compiles
        # the function whole: there it is one call.
        import tensorflow as tf

        traced = []

        def fn(x, w):
            traced.append(x.shape)
            return 2.0 * x * w, keras.ops.sum(x * w, axis=0)

        x = np.arange(3.0 * rows, dtype="float32").reshape(rows, 3) - 4.0
        w = np.linspace(-1, 1, 3 * rows, dtype="float32").reshape(rows, 3)
        whole, total = tf.function(lambda x, w: _fused.in_chunks(
            fn, (x, w), tf.zeros((3,)), elements=6), jit_compile=jit)(x, w)
        np.testing.assert_array_equal(whole.numpy(), 2.0 * x * w)
        np.testing.assert_allclose(total.numpy(), np.sum(x * w, axis=0),
                                   rtol=1e-6)
        assert len(traced) == 1
        assert traced[0][0] == (rows if jit else None)

    def in_chunks_and_whole(monkeypatch, module, kernels, make_layer, x,
                            jit=False):
        """The float64 gradients of `sum(sin(layer(x)))` for the input and
        every weight, with `module`'s `in_chunks` and with it replaced by
        one pass (`kernels`: the cached kernels to make afresh)."""
        import tensorflow as tf

        def gradients():
            kernels.cache_clear()
            layer = make_layer()

            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(tf.sin(layer(x, training=True)))
                return tape.gradient(
                    loss, [x] + [w.value for w in layer.trainable_weights])

            return [g.numpy() for g in tf.function(step, jit_compile=jit)(
                tf.constant(x))]

        chunked = gradients()
        monkeypatch.setattr(module, "in_chunks",
                            lambda fn, tensors, zero: fn(*tensors))
        whole = gradients()
        kernels.cache_clear()
        assert len(whole) >= 2
        for a, b in zip(chunked, whole, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)

    # 70 examples of 64 x 80 values are two chunks of about
    # CHUNK_ELEMENTS values (51 and 19 examples).
    CHUNKED_INPUT = np.random.default_rng(1).normal(size=(70, 64, 80)) * 2

    @pytest.mark.parametrize("jit", [False, True])
    def test_deu_backward_in_chunks_matches_one_pass(monkeypatch, jit):
        # DEU's backward pass runs on chunks of the batch on TensorFlow;
        # the gradients must be those of one pass (float64: only the sums'
        # order differs), with the model compiled by XLA too, where the
        # pass is one.
        def make():
            layer = kla.layers.DEU(dtype="float64")
            layer.build((None, 64, 80))
            layer.ode_parameters.assign(np.random.default_rng(2).normal(
                size=(5, 80)) * 0.6)
            return layer

        in_chunks_and_whole(monkeypatch, deu, deu._evaluation_kernel, make,
                            CHUNKED_INPUT, jit)

    def test_abu_backward_in_chunks_matches_one_pass(monkeypatch):
        # With one weight set per layer, ABU's backward kernel runs on
        # chunks of the batch (fuse(chunks=True)).
        in_chunks_and_whole(
            monkeypatch, _fused, abu._blend_kernel,
            lambda: kla.layers.ABU(dtype="float64"), CHUNKED_INPUT)

    @pytest.mark.parametrize("version", ["A", "B"])
    def test_rational_backward_in_chunks_matches_one_pass(monkeypatch,
                                                          version):
        # Rational with one set of coefficients per layer sums its
        # gradients over rows in chunks of the batch.
        in_chunks_and_whole(
            monkeypatch, rational, rational._kernels,
            lambda: kla.layers.Rational(version=version, dtype="float64"),
            CHUNKED_INPUT)

if BACKEND == "torch":

    def test_compiler_failure_warns_once_and_runs_eagerly(torch_compile,
                                                          monkeypatch):
        import torch

        def failing_compile(fn, **kwargs):
            def call(*args):
                raise RuntimeError("no C++ compiler")
            return call

        monkeypatch.setattr(torch, "compile", failing_compile)
        double = _fused.compiled(lambda x, a: a * x)
        x = torch.ones(3)
        with pytest.warns(RuntimeWarning, match="no C.. compiler"):
            y = double(x, torch.tensor(2.0))
        np.testing.assert_array_equal(y.numpy(), [2.0, 2.0, 2.0])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(
                double(x, torch.tensor(3.0)).numpy(), [3.0, 3.0, 3.0])

    @pytest.mark.parametrize("make", [
        lambda: kla.layers.ABU(),
        lambda: kla.layers.ABU(normalization="softmax",
                               granularity="channel"),
        lambda: kla.layers.AdaptiveScaling("swish", granularity="channel"),
        lambda: kla.layers.PWLU(num_intervals=4, start_realigned=True,
                                granularity="layer"),
        lambda: kla.layers.PWLU(num_intervals=4, start_realigned=True),
        lambda: kla.layers.SLAF(granularity="layer", gate=True),
        lambda: kla.layers.SLAF(degree=3),
        lambda: kla.layers.SLAF(normalization="none", granularity="channel"),
        lambda: kla.layers.DEU(granularity="layer"),
        lambda: kla.layers.DEU(),
    ], ids=["abu", "abu-softmax-channel", "alpha-swish-channel",
            "pwlu-layer", "pwlu-channel", "slaf-layer-gated",
            "slaf-channel", "slaf-raw-channel", "deu-layer",
            "deu-channel"])
    def test_compiled_layers_match_eager(make, torch_compile, monkeypatch):
        # ABU, AdaptiveScaling, PWLU and SLAF compiled by torch.compile
        # (the blend, lookup or polynomial, batch-normalised or raw, and
        # its compiled autodiff) against the same layer run eagerly;
        # PWLU's inputs reach both tails and every segment of its grid
        # [-3, 3]. DEU compiles its closed forms with every term (eagerly
        # it skips the terms no unit uses), here for units in three cases
        # (a degenerate one, with the surrogate gradient, an oscillator and
        # an overdamped one), in training and in inference.
        x = np.random.default_rng(4).normal(size=(8, 5, 5, 3)) * 2.5
        x = x.astype("float32")
        layer = make()
        layer.build(x.shape)
        if isinstance(layer, kla.layers.PWLU):
            layer.heights.assign(np.random.default_rng(5).normal(
                size=layer.heights.shape).astype("float32"))
        if isinstance(layer, kla.layers.DEU) and layer.channels == 3:
            # Rows a, b, c, c1, c2; one unit per column.
            layer.ode_parameters.assign(np.float32([
                [0.0, 0.5, 0.3], [0.5, 0.0, 1.5], [0.0, 2.0, 0.4],
                [0.1, 0.2, -0.1], [0.3, 0.0, 0.2]]))
        # In one piece: a graph break (PWLU's index once had one per call)
        # splits the kernel and recompiles its pieces.
        from torch._dynamo.utils import counters

        counters.clear()
        compiled_run = analytic_gradients(layer, x, training=True)
        compiled_run["inference"] = keras.ops.convert_to_numpy(
            layer(x, training=False))
        assert not counters["graph_break"], dict(counters["graph_break"])
        monkeypatch.setenv(_fused.TORCH_COMPILE_VARIABLE, "0")
        _clear_kernels()
        eager_run = analytic_gradients(layer, x, training=True)
        eager_run["inference"] = keras.ops.convert_to_numpy(
            layer(x, training=False))
        assert sorted(compiled_run) == sorted(eager_run)
        # float32 sums in another order: DEU's surrogate gradient of its
        # degenerate c is about -300, summed over 200 elements.
        rtol = 5e-4 if isinstance(layer, kla.layers.DEU) else 1e-4
        for name in eager_run:
            np.testing.assert_allclose(compiled_run[name], eager_run[name],
                                       rtol=rtol, atol=1e-5, err_msg=name)

    def test_every_configuration_has_its_own_recompilations(torch_compile):
        # PyTorch's compiler allows 8 recompilations per code object; the
        # blends of six bases, trained and evaluated, are 12 versions of
        # one function, which used to exhaust it and run eagerly.
        import torch

        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        handler = Keep(logging.WARNING)
        logger = logging.getLogger("torch._dynamo")
        logger.addHandler(handler)
        torch._dynamo.reset()
        try:
            stack = [keras.Input((4,))]
            for basis in (("relu", "tanh"), ("relu", "elu"), ("tanh", "elu"),
                          ("relu", "swish"), ("elu", "swish"),
                          ("tanh", "swish")):
                stack += [keras.layers.Dense(4), kla.layers.ABU(basis=basis)]
            model = keras.Sequential([*stack, keras.layers.Dense(1)])
            model.compile("adam", "mse")
            x = np.random.default_rng(0).normal(size=(16, 4))
            x = x.astype("float32")
            for _ in range(2):
                model.train_on_batch(x, x[:, :1])
                model.predict_on_batch(x)
        finally:
            logger.removeHandler(handler)
        assert not [r for r in records if "recompile_limit" in r], records

    @pytest.mark.parametrize("value", ["false", "no", "2", "on"])
    def test_unknown_switch_value_is_refused(value, monkeypatch):
        monkeypatch.setenv(_fused.TORCH_COMPILE_VARIABLE, value)
        with pytest.raises(ValueError, match=f"'{value}'.*use 1 .* or 0"):
            _fused.compiled(lambda x: x)

    def test_switched_off_by_the_environment_variable(monkeypatch):
        monkeypatch.setenv(_fused.TORCH_COMPILE_VARIABLE, "0")

        def fn(x):
            return x

        assert _fused.compiled(fn) is fn

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    from keras_learnact.layers._fused import xla_kernel

    class _Messages(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    @pytest.fixture
    def tf_log():
        """The messages TensorFlow logs during the test."""
        handler = _Messages()
        tf.get_logger().addHandler(handler)
        yield handler.messages
        tf.get_logger().removeHandler(handler)

    def _retracing(messages):
        return [m for m in messages if "triggered tf.function retracing" in m]

    @pytest.mark.parametrize("make", [
        lambda: kla.layers.PWLU(start_realigned=True),
        lambda: kla.layers.ABU(),
        lambda: kla.layers.SLAF(normalization="none"),
    ], ids=["pwlu", "abu", "slaf-raw"])
    def test_layers_of_one_class_called_eagerly_do_not_warn(make, tf_log):
        # Each layer's kernel is traced once; TensorFlow counts tracing per
        # code object, and six layers of one class used to read as one
        # function retraced six times (the demo printed the warning).
        x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
        for _ in range(6):
            y = make()(x)
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(y)))
        assert _retracing(tf_log) == []

    def test_a_kernel_really_retraced_still_warns(tf_log):
        # A Python number is part of the trace signature: every new value
        # traces again, which is what the warning is for.
        scale = xla_kernel(lambda x, k: x * k)
        for k in range(6):
            y = scale(tf.ones((2,)), float(k))
            np.testing.assert_array_equal(y.numpy(), [k, k])
        assert _retracing(tf_log)
