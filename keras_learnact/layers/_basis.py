"""Named elementwise activations used as ABU basis functions and by
AdaptiveScaling.

A basis is stored by name only, so it serialises as a list of strings.
`"swish"` is the one parametric member: `x * sigmoid(beta * x)` with a
trainable `beta` owned by the layer (Keras's fixed swish is `"silu"`).
`"identity"` is accepted as a synonym of Keras's `"linear"`.

Some functions are written here rather than taken from Keras, with the
same values: `elu`, so that XLA can fuse it on JAX (see `elu`), and, so
that they stay right for every finite input also once converted to
TensorFlow Lite, `sigmoid`, `silu` and `swish` (TFLite's
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
SQUAREPLUS_ROOT_B = 2.0


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
    0 or 1 on TensorFlow (see the module docstring).

    The clip changes no value (the logistic function is already exactly 0
    or 1 beyond `SIGMOID_RANGE`); it is there for TensorFlow Lite, which
    converts TensorFlow graphs only. Elsewhere it is left out: on JAX it
    becomes an HLO `clamp`, which XLA's CPU compiler does not hand to
    YNNPACK, so a clamp after a convolution splits the network's fused
    YNNPACK graph (seven graphs instead of three in the benchmark CNN with
    AdaptiveScaling("swish")).

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
    if keras.backend.backend() == "tensorflow":
        x = ops.clip(x, -SIGMOID_RANGE, SIGMOID_RANGE)
    return ops.sigmoid(x)


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
    and `s` as `|x| sqrt(1 + (sqrt(b) / x)^2)` for `|x| > 1`, so that no
    square of a large input is formed, in the value or in its autodiff
    derivative (`b / x^2` made one, and the derivative NaN, at 3.4e38).

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
                  large * ops.sqrt(1.0 + ops.square(SQUAREPLUS_ROOT_B / large)),
                  ops.sqrt(ops.square(small) + SQUAREPLUS_B))
    return ops.where(x >= 0, _maximum(x, 0.0) / 2 + s / 2,
                     SQUAREPLUS_B / (2 * (s - _minimum(x, 0.0))))


def elu(x):
    """ELU with `alpha = 1`, Keras's values, without a select on JAX.

    On JAX it is `max(x, 0) + expm1(min(x, 0))`: `x + expm1(0) = x`
    exactly for `x > 0`, `expm1(x)` (Keras's JAX value) otherwise, NaN for
    NaN. Keras's form, a select on `x > 0`, is one that XLA's CPU compiler
    does not hand to YNNPACK, so every ELU split the network's fused
    YNNPACK graph (ABU's default basis in the benchmark CNN, with
    `sigmoid`'s clip also left out: three graphs instead of seven,
    `predict` 150 -> 85 ms). Other backends keep Keras's
    ELU (TensorFlow Lite has no expm1; PyTorch's Keras `maximum` computes
    float64 in float32).

    Args:
        x: a tensor.

    Returns:
        A tensor shaped like `x`.

    Examples:

    >>> from keras import ops
    >>> y = elu(ops.convert_to_tensor([-1e30, -1.0, 0.0, 2.0]))
    >>> [round(v, 4) for v in ops.convert_to_numpy(y).tolist()]
    [-1.0, -0.6321, 0.0, 2.0]
    """
    if keras.backend.backend() != "jax":
        return keras.activations.elu(x)
    return ops.maximum(x, 0.0) + ops.expm1(ops.minimum(x, 0.0))


_OWN = {
    "elu": elu,
    "sigmoid": sigmoid,
    "silu": lambda x: x * sigmoid(x),
    "softplus": softplus,
    "log_sigmoid": lambda x: -softplus(-x),
    "squareplus": squareplus,
}


# Keras's SELU constants.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
# The defaults of Keras's activations with a parameter.
LEAKY_SLOPE = 0.2
SHRINK_THRESHOLD = 0.5
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def _inside(x, low, high):
    """1 where `low < x < high`, else 0, in the dtype of `x`."""
    return ops.cast((x > low) & (x < high), x.dtype)


def _positive(x):
    return ops.cast(x > 0, x.dtype)


def _sigmoid_slope(x):
    """`sigmoid'(x) = s (1 - s)` of the clipped logistic function (zero
    where its argument is clipped)."""
    s = sigmoid(x)
    return s * (1.0 - s) * _inside(x, -SIGMOID_RANGE, SIGMOID_RANGE)


def _gelu_slope(x):
    cdf = 0.5 * (1.0 + ops.erf(x * _SQRT_HALF))
    return cdf + x * _INV_SQRT_2PI * ops.exp(-0.5 * ops.square(x))


def _mish_slope(x):
    t = ops.tanh(softplus(x))
    return t + x * (1.0 - t * t) * sigmoid(x)


def _squareplus_slope(x):
    # (1 + x / sqrt(x^2 + b)) / 2, with x / s formed without squaring a
    # large x (as in `squareplus`).
    a = ops.abs(x)
    large = _maximum(a, 1.0)
    small = _minimum(x, 1.0)
    ratio = ops.where(
        a > 1.0,
        ops.sign(x) / ops.sqrt(1.0 + ops.square(SQUAREPLUS_ROOT_B / large)),
        small / ops.sqrt(ops.square(small) + SQUAREPLUS_B))
    return 0.5 * (1.0 + ratio)


def _hard_silu_slope(x):
    return _inside(x, -3.0, 3.0) * (x / 3.0 + 0.5) + ops.cast(x >= 3.0,
                                                               x.dtype)


_SLOPES = {
    "relu": _positive,
    "relu6": lambda x: _inside(x, 0.0, 6.0),
    "elu": lambda x: ops.where(x >= 0, 1.0, ops.exp(_minimum(x, 0.0))),
    "selu": lambda x: SELU_SCALE * ops.where(
        x >= 0, 1.0, SELU_ALPHA * ops.exp(_minimum(x, 0.0))),
    "celu": lambda x: ops.where(x >= 0, 1.0, ops.exp(_minimum(x, 0.0))),
    "gelu": _gelu_slope,
    "silu": lambda x: sigmoid(x) + x * _sigmoid_slope(x),
    "mish": _mish_slope,
    "tanh": lambda x: 1.0 - ops.square(ops.tanh(x)),
    "sigmoid": _sigmoid_slope,
    "hard_sigmoid": lambda x: _inside(x, -3.0, 3.0) / 6.0,
    "hard_silu": _hard_silu_slope,
    "hard_swish": _hard_silu_slope,
    "hard_tanh": lambda x: _inside(x, -1.0, 1.0),
    "softplus": lambda x: sigmoid(x),
    "softsign": lambda x: 1.0 / ops.square(1.0 + ops.abs(x)),
    "sparse_plus": lambda x: ops.where(
        x >= 1.0, 1.0, _inside(x, -1.0, 1.0) * 0.5 * (x + 1.0)),
    "sparse_sigmoid": lambda x: 0.5 * _inside(x, -1.0, 1.0),
    "squareplus": _squareplus_slope,
    "leaky_relu": lambda x: LEAKY_SLOPE + (1.0 - LEAKY_SLOPE) * _positive(x),
    "log_sigmoid": lambda x: sigmoid(-x),
    "exponential": ops.exp,
    "linear": ops.ones_like,
    "identity": ops.ones_like,
    "tanh_shrink": lambda x: ops.square(ops.tanh(x)),
    "soft_shrink": lambda x: 1.0 - _inside(x, -SHRINK_THRESHOLD,
                                           SHRINK_THRESHOLD),
    "hard_shrink": lambda x: 1.0 - _inside(x, -SHRINK_THRESHOLD,
                                           SHRINK_THRESHOLD),
}


def _swish_parts(x, beta):
    """Swish's value and its derivatives in `x` and `beta`, sharing one
    sigmoid. The derivatives are zero where the logistic function's
    argument is clipped, written so that no product of a large `x` and a
    zero slope (inf * 0) is formed."""
    z = beta * x
    s = sigmoid(z)
    inside = ops.abs(z) <= SIGMOID_RANGE
    ds = ops.where(inside, s * (1.0 - s), 0.0)
    return x * s, s + ops.where(inside, z, 0.0) * ds, (x * ds) * x


def _shared_parts(name, x):
    """`(g(x), g'(x))` for the functions whose two share their costly part
    (one exponential, tanh or sigmoid instead of two), or None."""
    if name in ("identity", "linear"):
        return x, ops.ones_like(x)
    if name == "relu":
        return apply(name, x), _positive(x)
    if name in ("elu", "celu", "selu"):
        e = ops.exp(_minimum(x, 0.0))
        positive = x >= 0
        value = ops.where(positive, x, e - 1.0)
        slope = ops.where(positive, 1.0, e)
        if name == "selu":
            value = SELU_SCALE * ops.where(positive, x, SELU_ALPHA * (e - 1.0))
            slope = SELU_SCALE * ops.where(positive, 1.0, SELU_ALPHA * e)
        return value, slope
    if name == "tanh":
        t = ops.tanh(x)
        return t, 1.0 - t * t
    if name == "sigmoid":
        s = sigmoid(x)
        return s, _sigmoid_slope(x)
    if name == "exponential":
        e = ops.exp(x)
        return e, e
    return None


def value_and_slopes(name, x, beta=None):
    """`g(x)`, `g'(x)` and, for swish, the derivative in `beta`, computed
    together (sharing an exponential, tanh or sigmoid where the function
    allows).

    For the hand-written backward pass of AdaptiveScaling, which
    recompute these from `x` instead of keeping the intermediates of `g`.
    The values are those of `apply`. At a kink the one-sided derivative
    that TensorFlow's autodiff takes is used (ReLU's slope at 0 is 0).

    Args:
        name: a name from `ALLOWED`.
        x: the input tensor.
        beta: the swish temperature (broadcastable to `x`); only for
            `"swish"`.

    Returns:
        `(value, slope, beta_slope)`, tensors shaped like `x`;
        `beta_slope` is None but for swish.

    Examples:

    >>> from keras import ops
    >>> g, dg, _ = value_and_slopes("tanh", ops.convert_to_tensor([1.0]))
    >>> [round(float(v[0]), 4) for v in (g, dg)]
    [0.7616, 0.42]
    """
    if name == PARAMETRIC:
        return _swish_parts(x, beta)
    shared = _shared_parts(name, x)
    if shared is None:
        shared = apply(name, x), _SLOPES[name](x)
    return (*shared, None)
