"""Adaptive scaling ("alpha-activations"): `y = alpha * g(x)`."""

import functools

import keras
import numpy as np
from keras import initializers
from keras import ops

from keras_learnact.layers import _basis
from keras_learnact.layers import _initial
from keras_learnact.layers._fused import fuse
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation


@functools.lru_cache(maxsize=None)
def _scale_kernel(activation, layout):
    """`_scale_functions(activation, layout)` `fuse`d; one for every layer
    with this activation and layout."""
    scale, scale_gradient = _scale_functions(activation, layout)
    # On JAX plain autodiff: its peak training memory is 1.47x ReLU's
    # (swish), and recomputing the sigmoid in the backward pass took the
    # train step from 1.04-1.09x ReLU's to 1.14-1.20x.
    return fuse(scale, gradient=xla_kernel(scale_gradient),
                torch_compile=True, recompute=False)


@functools.lru_cache(maxsize=None)
def _scale_functions(activation, layout):
    """`alpha * g(x)` for the activation named `activation`, and its
    backward pass recomputed from the input alone: `dx = upstream * alpha
    * g'(x)`, `dalpha = sum(upstream * g(x))` and, for swish, `dbeta =
    sum(upstream * alpha * x^2 s'(beta x))`, summed over every axis but
    the channel axis (all for layer granularity), for parameters laid out
    as `layout` (a `Layout`)."""

    def scale(inputs, alpha, beta=None):
        if beta is not None:
            beta = layout.broadcast(beta)
        return layout.broadcast(alpha) * _basis.apply(activation, inputs,
                                                      beta)

    def scale_gradient(upstream, inputs, alpha, beta=None):
        axes = layout.axes
        if beta is not None:
            beta = layout.broadcast(beta)
        factor = layout.broadcast(alpha)
        value, value_slope, beta_slope = _basis.value_and_slopes(
            activation, inputs, beta)
        grads = [upstream * factor * value_slope,
                 ops.sum(upstream * value, axis=axes)]
        if beta_slope is not None:
            grads.append(ops.sum(upstream * factor * beta_slope, axis=axes))
        return tuple(grads)

    return scale, scale_gradient


@keras.saving.register_keras_serializable(package="keras_learnact")
class AdaptiveScaling(LearnableActivation):
    """A fixed activation scaled by a learned factor: `y = alpha * g(x)`.

    `g` is any named elementwise Keras activation. For `"swish"`,
    `g(x) = x * sigmoid(beta * x)` with `beta` trainable as well. This is an
    Adaptive Blending Unit with a single basis function in unrestricted mode;
    the ABU paper's claim is that the learned scale helps by countering
    covariate shift during training.

    Weights: `alpha` (init 1.0) and, for swish, `swish_beta` (init 1.0), one
    value per layer or one per channel.

    Integer inputs are computed in the layer's float dtype, as
    `keras.layers.Dense` does. For every finite input the output is finite
    wherever `alpha * g(x)` is (the sigmoid family, softplus, log-sigmoid
    and squareplus are computed without intermediate overflow), also after
    conversion to TensorFlow Lite.

    Args:
        activation: the name of the activation `g`, for instance `"relu"`,
            `"tanh"`, `"elu"`, `"selu"`, `"swish"` or `"identity"`.
        granularity: `"layer"` (default, as in the paper) or `"channel"`.
        axis: the channel axis for channel granularity (default -1).
        alpha_initializer: initializer of `alpha`, default 1.0.
        alpha_regularizer: optional regularizer of `alpha`.
        **kwargs: `initial_function` and `initial_range` (see
            `LearnableActivation`: `alpha`, and swish's `beta`, fitted by
            weighted least squares; exact when the function is `g`), and
            base layer keyword arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8),
    ...     kla.layers.AdaptiveScaling("tanh"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> tuple(model.layers[1].alpha.shape)
    ()

    Reference:
        Sütfeld et al., "Adaptive Blending Units: Trainable Activation
        Functions for Deep Neural Networks", arXiv:1806.10064.
    """

    def __init__(self, activation="relu", granularity="layer", axis=-1,
                 alpha_initializer=None, alpha_regularizer=None, **kwargs):
        super().__init__(granularity=granularity, axis=axis, **kwargs)
        self.activation = _basis.check_name(activation)
        self.alpha_initializer = initializers.get(
            alpha_initializer or initializers.Constant(1.0)
        )
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)

    def build(self, input_shape):
        super().build(input_shape)
        self.alpha = self.add_weight(
            name="alpha",
            shape=self.param_shape(),
            initializer=self.alpha_initializer,
            regularizer=self.alpha_regularizer,
        )
        self.swish_beta = None
        if self.activation == _basis.PARAMETRIC:
            self.swish_beta = self.add_weight(
                name="swish_beta",
                shape=self.param_shape(),
                initializer=initializers.Constant(1.0),
            )

    def call(self, inputs, training=None):
        inputs = self.float_input(inputs)
        params = [ops.cast(self.alpha, inputs.dtype)]
        if self.swish_beta is not None:
            params.append(ops.cast(self.swish_beta, inputs.dtype))
        kernel = _scale_kernel(self.activation,
                               self.layout(len(inputs.shape)))
        return kernel(inputs, *params)

    def get_config(self):
        config = super().get_config()
        config.update({
            "activation": self.activation,
            "alpha_initializer": initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": keras.regularizers.serialize(
                self.alpha_regularizer
            ),
        })
        return config

    def _fit_parameters(self, function, x, weights):
        """`alpha` by weighted least squares; for swish also `beta`, by a
        one-dimensional search around its current value (see
        `LearnableActivation.fit_to`)."""
        target = _initial.evaluate(function, x)

        def fit(beta):
            column = _basis.values(self.activation, x, beta)
            alpha = _initial.weighted_least_squares(
                column[:, None], target, weights)[0]
            return alpha, _initial.weighted_error(
                alpha * column, target, weights)

        beta = None
        if self.swish_beta is not None:
            start = float(np.mean(self._current(self.swish_beta, 1.0)))
            beta = _initial.minimize_scalar(lambda b: fit(b)[1], start)
            self._assign(self.swish_beta, beta)
        self._assign(self.alpha, fit(beta)[0])

