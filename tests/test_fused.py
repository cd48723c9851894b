"""`keras_learnact.layers._fused`: the XLA kernels TensorFlow runs.

`fuse` and `xla_kernel` exist for TensorFlow (on JAX and PyTorch `fuse`
returns the function unchanged, and every layer test covers that path), so
these tests exist only there.
"""

import logging

import keras
import numpy as np
import pytest

import keras_learnact as kla

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
