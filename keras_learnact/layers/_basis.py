"""Named elementwise activations used as ABU basis functions and by
AdaptiveScaling.

A basis is stored by name only, so it serialises as a list of strings.
`"swish"` is the one parametric member: `x * sigmoid(beta * x)` with a
trainable `beta` owned by the layer (Keras's fixed swish is `"silu"`).
`"identity"` is accepted as a synonym of Keras's `"linear"`.

Five functions are written here rather than taken from Keras, with the
same values, so that they stay right for every finite input, also once
converted to TensorFlow Lite: `sigmoid`, `silu` and `swish` (TFLite's
logistic kernel returns NaN for arguments beyond about 1e19, so the
argument is clipped to `[-SIGMOID_RANGE, SIGMOID_RANGE]`, where the
logistic function is already exactly 0 or 1 in every float dtype),
`softplus` and `log_sigmoid` (TFLite computes `log(1 + exp(x))`, which
overflows to inf from x = 89; above `SOFTPLUS_LINEAR` softplus is `x` to
float64 precision) and `squareplus` (Keras's `(x + sqrt(x^2 + 4)) / 2`
overflows to inf for |x| beyond 1.8e19, also for large negative x, where
the value is near 0).
"""

import keras
import numpy as np
from keras import ops

# Elementwise Keras activations (softmax, glu and friends mix elements and so
# cannot act as a per-element basis; "threshold" needs extra arguments).
_ELEMENTWISE = (
    "relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "swish", "mish",
    "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh",
    "softplus", "softsign", "sparse_plus", "sparse_sigmoid", "squareplus",
    "leaky_relu", "log_sigmoid", "exponential", "linear", "identity",
    "tanh_shrink", "soft_shrink", "hard_shrink",
)

ALLOWED = tuple(
    name for name in _ELEMENTWISE
    if name in ("identity", "swish") or hasattr(keras.activations, name)
)

PARAMETRIC = "swish"

# exp(-1000) underflows float64: sigmoid is exactly 0 or 1 beyond this, in
# every float dtype, and TFLite's logistic is exact up to here (1e4 tested).
SIGMOID_RANGE = 1000.0
# softplus(x) = x + log1p(exp(-x)) rounds to x from here, in float64 too.
SOFTPLUS_LINEAR = 40.0
# Keras's squareplus default.
SQUAREPLUS_B = 4.0


def check_name(name, argument="activation"):
    """Validates one basis function name; returns it.

    Args:
        name: a name from `ALLOWED`.
        argument: the argument's name, for the error message.

    Returns:
        `name`, unchanged.
    """
    if not isinstance(name, str) or name not in ALLOWED:
        raise ValueError(
            f"Unknown {argument} {name!r}. Allowed names: "
            f"{', '.join(ALLOWED)}."
        )
    return name


def apply(name, x, beta=None):
    """Applies the named basis function to `x`.

    Args:
        name: a name from `ALLOWED`.
        x: the input tensor.
        beta: the swish temperature (a tensor broadcastable to `x`); only
            used, and required, for `"swish"`.

    Returns:
        A tensor shaped like `x`.
    """
    if name in ("identity", "linear"):
        return x
    if name == PARAMETRIC:
        return x * sigmoid(beta * x)
    if name in _OWN:
        return _OWN[name](x)
    return keras.activations.get(name)(x)


def values(name, x, beta=None):
    """The basis function `name` at the points `x`, as float64 NumPy.

    Computed by `apply`, so with the layers' own definitions (in float32
    where the backend has no float64, as JAX by default). Used to fit a
    unit to a function.

    Args:
        name: a name from `ALLOWED`.
        x: a NumPy array of points.
        beta: the swish temperature, a number; only for `"swish"`.

    Returns:
        A float64 NumPy array shaped like `x`.

    Examples:

    >>> import numpy as np
    >>> values("relu6", np.array([-1.0, 3.0, 8.0])).tolist()
    [0.0, 3.0, 6.0]
    """
    dtype = "float64"
    result = apply(
        name, ops.convert_to_tensor(x, dtype),
        None if beta is None else ops.convert_to_tensor(beta, dtype))
    return np.asarray(ops.convert_to_numpy(result), "float64")


def _maximum(x, bound):
    """`maximum(x, bound)` in the dtype of `x` (Keras's PyTorch `maximum`
    and `minimum` compute float64 in float32)."""
    return ops.where(x > bound, x, bound)


def _minimum(x, bound):
    """`minimum(x, bound)` in the dtype of `x` (see `_maximum`)."""
    return ops.where(x < bound, x, bound)


def sigmoid(x):
    """The logistic function, its argument clipped to where it is exactly
    0 or 1 (see the module docstring).

    Args:
        x: a tensor.

    Returns:
        `1 / (1 + exp(-x))`, shaped like `x`.

    Examples:

    >>> from keras import ops
    >>> y = sigmoid(ops.convert_to_tensor([-1e30, 0.0, 1e30]))
    >>> ops.convert_to_numpy(y).tolist()
    [0.0, 0.5, 1.0]
    """
    return ops.sigmoid(ops.clip(x, -SIGMOID_RANGE, SIGMOID_RANGE))


def softplus(x):
    """`log(1 + exp(x))`, equal to `x` beyond `SOFTPLUS_LINEAR` (see the
    module docstring).

    Args:
        x: a tensor.

    Returns:
        A tensor shaped like `x`.

    Examples:

    >>> from keras import ops
    >>> y = softplus(ops.convert_to_tensor([-1e30, 0.0, 1e4]))
    >>> [round(v, 4) for v in ops.convert_to_numpy(y).tolist()]
    [0.0, 0.6931, 10000.0]
    """
    return ops.where(x > SOFTPLUS_LINEAR, x,
                     ops.softplus(_minimum(x, SOFTPLUS_LINEAR)))


def squareplus(x):
    """`(x + sqrt(x^2 + b)) / 2` with `b = 4`, without overflow.

    For `x < 0` it is computed as `b / (2 (s - x))`, `s = sqrt(x^2 + b)`,
    and `s` as `|x| sqrt(1 + b / x^2)` for `|x| > 1`, so that no square of
    a large input is formed.

    Args:
        x: a tensor.

    Returns:
        A tensor shaped like `x`.

    Examples:

    >>> from keras import ops
    >>> y = squareplus(ops.convert_to_tensor([-1e4, 0.0, 1e30]))
    >>> ["%.3g" % v for v in ops.convert_to_numpy(y).tolist()]
    ['0.0001', '1', '1e+30']
    """
    a = ops.abs(x)
    large = _maximum(a, 1.0)
    small = _minimum(a, 1.0)
    s = ops.where(a > 1.0,
                  large * ops.sqrt(1.0 + SQUAREPLUS_B / ops.square(large)),
                  ops.sqrt(ops.square(small) + SQUAREPLUS_B))
    return ops.where(x >= 0, _maximum(x, 0.0) / 2 + s / 2,
                     SQUAREPLUS_B / (2 * (s - _minimum(x, 0.0))))


_OWN = {
    "sigmoid": sigmoid,
    "silu": lambda x: x * sigmoid(x),
    "softplus": softplus,
    "log_sigmoid": lambda x: -softplus(-x),
    "squareplus": squareplus,
}
