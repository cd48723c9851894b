"""The shared helpers of `keras_learnact.layers.base`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_learnact.layers.base import cond


def _never():
    raise AssertionError("the branch not taken was evaluated")


@pytest.mark.parametrize("flag", [True, False])
def test_cond_with_a_known_predicate_runs_only_its_branch(flag):
    # JAX's lax.cond traces both branches (and compiles them again on every
    # eager call); with a concrete predicate `cond` must not.
    x = ops.convert_to_tensor([1.0, -2.0])
    pred = ops.convert_to_tensor(flag)
    if flag:
        y = cond(pred, lambda: x * 2.0, _never)
        expected = [2.0, -4.0]
    else:
        y = cond(pred, _never, lambda: x - 1.0)
        expected = [0.0, -3.0]
    np.testing.assert_array_equal(ops.convert_to_numpy(y), expected)


def test_cond_inside_a_compiled_model_follows_the_runtime_value():
    class Switch(keras.layers.Layer):
        def build(self, shape):
            self.on = self.add_weight(shape=(), initializer="zeros",
                                      trainable=False)

        def call(self, x):
            on = ops.convert_to_tensor(self.on.value) > 0.5
            return cond(on, lambda: x * 3.0, lambda: x)

    inputs = keras.Input((2,))
    switch = Switch()
    model = keras.Model(inputs, switch(inputs))
    x = np.array([[1.0, 2.0]], "float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    switch.on.assign(1.0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), 3 * x)
