"""Self-Learnable Activation Functions: learned polynomials of the input."""

import dataclasses
import functools
import math

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _initial
from keras_learnact.layers._fused import compiled
from keras_learnact.layers._fused import recomputed
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.base import check_choice
from keras_learnact.layers.base import check_number
from keras_learnact.layers.base import cond

BASES = ("power", "taylor")
NORMALIZATIONS = ("batch", "none")


# One batch moves the moving statistics of x^i at most as far as a batch of
# inputs OUTLIER_SCALE times as large as the running ones would (see
# `SLAF._update_statistics`).
OUTLIER_SCALE = 4.0


def _maximum(a, b):
    """Elementwise maximum that keeps float64 (Keras's torch `maximum`
    returns float32 for two float64 tensors)."""
    return ops.where(a > b, a, b)


def _minimum(a, b):
    """Elementwise minimum that keeps float64 (see `_maximum`)."""
    return ops.where(a < b, a, b)


def _rescaled(moment, scale):
    """`moment * scale`, with 0 where `moment` is 0: a scale that
    overflowed to inf must not turn an exact zero into NaN."""
    return ops.where(moment == 0, ops.zeros_like(moment), moment * scale)


def _horner(x, terms):
    """`sum_j terms[j] * x^j` by Horner's rule."""
    result = terms[-1]
    for term in reversed(terms[:-1]):
        result = result * x + term
    return result


def _columns(table, count):
    """The first `count` trailing-axis columns of a table (a static count:
    traced shapes may leave the axis unknown)."""
    return [table[..., i] for i in range(count)]


@functools.cache
def _compiled_kernels():
    def horner(q, table, size):
        return _horner(q, _columns(table, size))

    def input_gradient(upstream, q, slope, moments, sizes):
        return (upstream * _horner(q, _columns(slope, sizes[0]))
                + _horner(q, _columns(moments, sizes[1])))

    return xla_kernel(horner), xla_kernel(input_gradient)


def _horner_kernel(q, table):
    """Horner's rule in `q` with the coefficients `table[..., i]`
    (broadcast to `q` but for the trailing axis), as one XLA kernel."""
    return _compiled_kernels()[0](q, table, table.shape[-1])


def _input_gradient_kernel(upstream, q, slope, moments):
    """`upstream * slope(q) + moments(q)` for two polynomials given by
    coefficient tables, as one XLA kernel."""
    return _compiled_kernels()[1](
        upstream, q, slope, moments, (slope.shape[-1], moments.shape[-1]))


@dataclasses.dataclass(frozen=True)
class Statistics:
    """The batch-normalised form's per-channel mathematics, as functions of
    tensors: one object per configuration, shared by every layer with it.

    On PyTorch, `batch` runs compiled (`_batch_kernel`); the compiler
    guards on the object it is called on, so the object must not be a
    layer (it would compile again for each) and must not hold a channel
    count (it would compile again for each width). Reshapes to the
    channels use -1.

    Args:
        degree: the polynomial's degree (powers `1..degree` are normalised).
        epsilon: added to each power's variance.
        axis: the statistics' channel axis, counted from the end (< 0).

    Examples:

    >>> from keras import ops
    >>> stats = Statistics(degree=2, epsilon=1e-3, axis=-1)
    >>> stats.orders()
    [1, 2, 4]
    >>> x = ops.convert_to_tensor([[1.0, -2.0], [3.0, 2.0]])
    >>> r, q, sums = stats.power_sums(x)
    >>> [round(float(v), 6) for v in ops.convert_to_numpy(sums)[:, 0]]
    [0.666667, 0.0]
    """

    degree: int
    epsilon: float
    axis: int

    def orders(self):
        """The orders j of the power sums S_j the moments use: 1..k and
        the even ones up to 2k (the odd ones above k are never needed)."""
        degrees = range(1, self.degree + 1)
        return sorted(set(degrees) | {2 * i for i in degrees})

    def reduction_axes(self, ndim):
        """Every axis of a rank-`ndim` input but the channel axis."""
        channel = ndim + self.axis
        return [a for a in range(ndim) if a != channel]

    def count(self, x):
        """The number of elements per channel: a Python int where the
        shape is known, else a scalar tensor."""
        count = 1
        for a in self.reduction_axes(len(x.shape)):
            count = count * ops.shape(x)[a]
        return count

    def broadcast(self, param, ndim):
        """Reshapes a `(channels, ...)` tensor to meet a rank-`ndim` input,
        trailing axes kept last."""
        shape = [1] * ndim + list(param.shape[1:])
        shape[ndim + self.axis] = -1
        return ops.reshape(param, shape)

    def terms(self, table, ndim):
        """The columns of a per-channel table, each broadcast to rank
        `ndim`."""
        return [self.broadcast(table[:, i], ndim)
                for i in range(table.shape[-1])]

    def scale(self, r):
        """The per-channel scale `r` of `power_sums`, `(channels, 1)`."""
        return ops.reshape(r, (-1, 1))

    def moments(self, sums):
        """`mean(q^i)` and `mean(q^2i)`, `i = 1..degree`, from the power
        sums, each `(channels, degree)`."""
        degrees = range(1, self.degree + 1)
        column = {j: sums[:, k:k + 1] for k, j in enumerate(self.orders())}
        mean = ops.concatenate([column[i] for i in degrees], axis=-1)
        second = ops.concatenate([column[2 * i] for i in degrees], axis=-1)
        return mean, second

    def power_sums(self, x, single=False):
        """`r`, `q = x / r` and the power sums `S_j = mean(q^j)` per channel,
        shape `(channels, len(orders()))`.

        `r` is a per-channel scale that keeps every power of `q` in
        [-1, 1] (in [-4^j, 4^j] for inputs beyond 2^126). The normalised
        powers do not depend on it (epsilon is rescaled to match), so it
        carries no gradient. The power sums give every moment: mean(q^i) =
        S_i, var(q^i) = S_2i - S_i^2 (|q| <= 1 keeps the cancellation at
        float32 round-off of the O(1) sums). No tensor of powers is
        stacked. Sums over a count, not ops.mean: some backends' mean
        accumulates float64 in float32.

        Args:
            x: the input.
            single: True (or a boolean tensor) where the batch has at most
                one element per channel; then `r = 1` (and `q = x`), as the
                output is the inference polynomial in `x`.
        """
        ndim = len(x.shape)
        axes = self.reduction_axes(ndim)
        one = ops.cast(1.0, x.dtype)
        if single is True:
            shape = [1] * ndim
            shape[ndim + self.axis] = ops.shape(x)[ndim + self.axis]
            r = ops.ones(shape, x.dtype)
        else:
            # At most 1 / tiny (2^126 in float32): XLA divides by
            # multiplying with the reciprocal, and a subnormal reciprocal
            # is flushed to zero. |q| <= 4 then, whatever x holds.
            # (`amax`: Keras's PyTorch `max` over an axis breaks a
            # compiled graph.)
            name = keras.backend.standardize_dtype(x.dtype)
            largest = ops.cast(1.0 / np.finfo(name).tiny, x.dtype)
            r = ops.stop_gradient(_minimum(_maximum(
                ops.amax(ops.abs(x), axis=axes, keepdims=True), one),
                largest))
            if single is not False:
                r = ops.where(single, one, r)
        q = x / r
        count = ops.cast(self.count(x), x.dtype)
        orders = self.orders()
        sums = []
        power = q
        for j in range(1, orders[-1] + 1):
            if j > 1:
                power = power * q
            if j in orders:
                sums.append(ops.reshape(ops.sum(power, axis=axes) / count,
                                        (-1, 1)))
        return r, q, ops.concatenate(sums, axis=-1)

    def table(self, sums, r, coefficients, bias, gate_logit=None):
        """Per channel: the polynomial in `q` and the moments of `x`.

        Args:
            sums: `(channels, J)` power sums from `power_sums`.
            r: the scale from `power_sums`.
            coefficients, bias, gate_logit: the layer's parameters.

        Returns:
            `(table, mean, variance)`: `table[:, i]` is the coefficient of
            `q^i` (`i = 0..degree`); `mean`, `variance` are the batch
            moments of the powers of `q = x / r`, `(channels, degree)`
            (those of `x^i` are `r^i` and `r^2i` times them).
        """
        dtype = sums.dtype
        mean, second = self.moments(sums)
        # Clamped at 0 against round-off; a NaN (from a non-finite input)
        # stays NaN, so that the update can tell it apart.
        spread = second - ops.square(mean)
        variance = ops.where(spread < 0, ops.zeros_like(spread), spread)
        r_powers = self.scale(r) ** ops.arange(1, self.degree + 1,
                                               dtype=dtype)
        r_squared = ops.square(r_powers)
        # var(x^i) + eps = r^(2i) * (var(q^i) + eps / r^(2i)); floored at the
        # smallest normal number so that an underflow cannot divide by zero.
        tiny = float(np.finfo(keras.backend.standardize_dtype(dtype)).tiny)
        denominator = ops.sqrt(_maximum(
            variance + self.epsilon / r_squared, ops.full_like(variance, tiny)
        ))
        if gate_logit is not None:
            coefficients = ops.sigmoid(gate_logit) * coefficients
        scale = coefficients / denominator
        constant = bias - ops.sum(scale * mean, axis=-1)
        table = ops.concatenate([constant[:, None], scale], axis=-1)
        return table, mean, variance

    def batch(self, x, *params):
        """Normalised by the batch: `(outputs, mean, variance, r)` for the
        layer's parameters `params` (coefficients, bias, gate logit)."""
        r, q, sums = self.power_sums(x)
        table, mean, variance = self.table(sums, r, *params)
        outputs = _horner(q, self.terms(table, len(x.shape)))
        return outputs, mean, variance, self.scale(r)


@functools.lru_cache(maxsize=None)
def _polynomial_kernel(axis):
    """`polynomial(x, table)`: Horner's rule in `x` with the coefficients
    `table[..., j]`, one row of `table` per channel of `axis` (counted
    from the end), or one row for the whole tensor (`axis=None`); compiled
    on PyTorch, where eagerly it is two passes per degree and autograd
    keeps each partial polynomial."""
    def polynomial(x, table):
        if axis is None:
            return _horner(x, _columns(table, table.shape[-1]))
        ndim = len(x.shape)
        shape = [1] * ndim
        shape[ndim + axis] = -1
        return _horner(x, [ops.reshape(column, shape) for column
                           in _columns(table, table.shape[-1])])

    if keras.backend.backend() == "torch":
        return compiled(polynomial)
    return polynomial


@functools.lru_cache(maxsize=None)
def _batch_kernel(statistics):
    """`statistics.batch`, compiled on PyTorch (one kernel each way, as
    `_fused.compiled` describes; eagerly it is about 20 passes over the
    input forward and more backward); on JAX with its backward pass
    recomputed from `x` (`_fused.recomputed`: autodiff kept the powers of
    `x`, peak training memory 2.28x ReLU's in the benchmark CNN, 1.09x
    recomputed); as it is on TensorFlow."""
    if keras.backend.backend() == "torch":
        return compiled(statistics.batch)
    if keras.backend.backend() == "jax":
        return recomputed(statistics.batch)
    return statistics.batch


def _identity_offset_initializer(initializer, offset, index):
    """Wraps `initializer`, adding `offset` to entry `index` of the last axis.

    Args:
        initializer: a Keras initializer.
        offset: the amount added to the coefficient of `x^1`.
        index: the position of that coefficient on the last axis.

    Returns:
        An initializer callable `(shape, dtype=None) -> tensor`.
    """
    def initialize(shape, dtype=None):
        values = initializer(shape, dtype=dtype)
        if offset == 0.0:
            return values
        one_hot = np.zeros(shape[-1], dtype="float64")
        one_hot[index] = offset
        return values + ops.cast(one_hot, values.dtype)

    return initialize


@keras.saving.register_keras_serializable(package="keras_learnact")
class SLAF(LearnableActivation):
    """Self-Learnable Activation Function: a learned polynomial of the input.

    Two forms. The **normalised** form (`normalization="batch"`, default, the
    reference code's) standardises every power of the input per channel, like
    batch normalisation without its affine, and learns a weighted sum:

        P_i   = x^i                                    i = 1..degree
        P^_i  = (P_i - mu_i) / sqrt(var_i + epsilon)    per channel, per power
        y_c   = g * sum_i W_{c,i} * P^_{c,i} + b_c,      g = sigmoid(s)

    In training `mu_i` and `var_i` are the batch moments over every axis but
    the channel axis; at inference they are the moving statistics (weights
    `moving_mean` and `moving_variance`, shape `(channels, degree)`, always
    per channel). `g` is an optional per-layer gate (`gate=True`, weight
    `gate` holding the logit `s`); without it `g = 1`.

    The **raw** form (`normalization="none"`) is the paper's polynomial,

        y = sum_{j=0}^{degree} a_j * x^j          (basis="power")
        y = sum_{j=0}^{degree} a_j * x^j / j!     (basis="taylor")

    evaluated by Horner's rule, with no power tensor. It has no statistics
    and no bias (`a_0` is the constant); train it with gradient clipping
    (e.g. `clipnorm=5`) and an L2 `coefficient_regularizer`, as the reference
    does: high powers of unnormalised inputs explode.

    `degree` is the polynomial's degree in both forms, so both have
    `degree + 1` parameters per channel (the paper's `k` is `degree + 1`).

    Weights: `coefficients` (`W`, shape `(channels, degree)` for channel
    granularity or `(degree,)` for layer granularity; `degree + 1` entries
    per set in the raw form), `bias` (`(channels,)`, normalised form only,
    initialised to 0.1), `gate` (scalar, only with `gate=True`).

    Short training runs. With decay 0.99 the reference's moving statistics
    start at mean 0, variance 1 and need hundreds of steps to forget that
    start, and the statistics of high powers are far from it (for `x` of
    standard deviation 2, `x^4` has variance ~2.5e4): after a few hundred
    steps inference (which uses them) can be much worse than training.
    `warm_start_statistics=True` (default) fixes the start: a non-trainable
    step counter (weight `moving_count`) makes update `t` use the weight
    `max(1 - momentum, 1 / t)`, so the first batch sets the statistics
    outright, the first `1 / (1 - momentum)` updates are their cumulative
    average, and only after that does the usual exponential average take
    over. The statistics therefore never carry the arbitrary initial values.
    The statistics still trail weights that change quickly (large learning
    rates, fine-tuning) by about `1 / (1 - momentum)` steps. To re-estimate
    them for the final weights, call `reset_statistics()` on every SLAF
    layer and run a few batches through `model(x, training=True)` without
    an optimizer step: the first batch replaces the statistics and the next
    ones average in. `warm_start_statistics=False` is the reference's plain
    moving average.

    Statistics that one batch cannot spoil. The moving statistics are
    updated per channel and power `i` from the batch moments `(mu, var)`
    of `x^i` with the weight `w` of "Short training runs" (`max(1 -
    momentum, 1 / t)`, or `1 - momentum` without warm start), by these
    rules:

    * a channel that holds a NaN or an infinite input keeps its
      statistics (its training outputs in that batch are NaN, as with
      BatchNormalization); an empty batch changes nothing, not even the
      step counter;
    * one outlier moves them boundedly: except on the first update of a
      warm start (which sets them, having nothing to compare with), what
      enters the average is limited to what a batch `OUTLIER_SCALE = 4`
      times the running scale could bring. With `s^2 = moving_variance +
      moving_mean^2 + epsilon` (the running mean square of `x^i`), `var`
      enters as at most `16^i s^2` and `mu` as at most `(4^i - 1) s` away
      from the moving mean. So one batch moves `moving_variance` by at
      most `w (16^i s^2 - moving_variance)`, whatever it holds (up to the
      float32 maximum); clean batches, even of inputs a few times larger
      than the running ones, are not limited;
    * a value beyond the float32 range never enters: such an entry (power
      and channel) keeps its mean and variance. Statistics of `x^i` leave
      float32 for `|x|^(2i)` beyond ~3e38 (`|x| > 1e3` at degree 7);
    * a batch with one element per channel (batch size 1 after a `Dense`
      layer) has no spread to normalise by (its variance is 0; normalised
      by it, every output was the bias, and the zero in the average made
      inference divide by `sqrt(epsilon)`). It is normalised by the moving
      statistics, as in inference, and its squared deviation from the
      moving mean, `(x^i - moving_mean)^2`, takes the place of the
      variance (on the first update of a warm start the variance stays).

    On clean data these rules change nothing: the statistics are those of
    the reference's moving average (or of the warm start).

    Numerics. Everything is computed in float32 (float64 for float64
    inputs; integer inputs in the layer's compute dtype, as
    `keras.layers.Dense` does) and cast back to the compute dtype, so
    mixed precision cannot overflow in the powers. In training the powers
    are taken of `q = x / r`, `r` the per-channel batch maximum of `|x|`
    (at least 1, at most 2^126, no gradient); the result is the same
    function, but batch moments and their gradients stay finite for every
    finite input. The batch moments come from the power sums `mean(q^j)`,
    `j = 1..2 * degree`, and the output is a Horner polynomial in `q`: no
    tensor of stacked powers is built. At inference the normalisation is
    folded into the coefficients and the polynomial is evaluated by
    Horner's rule, so for a finite input the output is finite, or +-inf
    where the polynomial itself leaves float32 (never NaN). Masks pass
    through but are not used by the statistics.

    Args:
        degree: the polynomial degree, an integer >= 1 (default 4).
        basis: `"power"` (`x^j`, default) or `"taylor"` (`x^j / j!`, raw
            form only: per-power normalisation removes the `1/j!` scale).
        normalization: `"batch"` (default) for the normalised form, `"none"`
            for the raw polynomial.
        granularity: `"channel"` (default) for one coefficient set per
            channel of `axis`, `"layer"` for one shared set (the reference's
            dense layers); statistics and bias stay per channel.
        axis: the channel axis, -1 (channels_last, default) or 1
            (channels_first). Also the statistics' axis.
        momentum: decay of the moving statistics, in [0, 1) (default 0.99).
        epsilon: added to the variance, > 0 (default 1e-8).
        gate: whether to learn the per-layer gate `g = sigmoid(s)`.
        identity_offset: added to the coefficient of `x^1` at
            initialisation (default 1.0, so with the normalised form the
            unit starts near the identity plus noise; 0 for none).
        warm_start_statistics: see "Short training runs" (default True).
        coefficient_initializer: initializer of the coefficients (default
            `RandomNormal(0, 1)`, the reference's).
        bias_initializer: initializer of `bias` (default `Constant(0.1)`).
        gate_initializer: initializer of the gate logit (default
            `RandomNormal(0, 1)`).
        coefficient_regularizer: optional regularizer of the coefficients.
        **kwargs: `initial_function` and `initial_range` (see
            `LearnableActivation`), and base layer keyword arguments, such
            as `name` and `dtype`. The unit starts as the weighted least
            squares polynomial of `degree`; in the normalised form the
            moving statistics are set to the moments of `x^i` under the
            stated input distribution (the standard normal, on the range),
            so inference computes that polynomial exactly, and training,
            which normalises by the batch, computes it for batches with
            those moments.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3),
    ...     kla.layers.SLAF(degree=4),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> print(", ".join(w.name for w in model.layers[1].weights))
    coefficients, bias, moving_mean, moving_variance, moving_count
    >>> tuple(model.layers[1].moving_mean.shape)
    (4, 4)

    Reference:
        Goyal, Goyal, Lall, "Learning Activation Functions: A new paradigm
        for understanding Neural Networks", arXiv:1906.09529 (2019).
    """

    def __init__(self, degree=4, basis="power", normalization="batch",
                 granularity="channel", axis=-1, momentum=0.99, epsilon=1e-8,
                 gate=False, identity_offset=1.0, warm_start_statistics=True,
                 coefficient_initializer=None, bias_initializer=None,
                 gate_initializer=None, coefficient_regularizer=None,
                 **kwargs):
        super().__init__(granularity=granularity, axis=axis, **kwargs)
        if (not isinstance(degree, (int, np.integer))
                or isinstance(degree, bool) or degree < 1):
            raise ValueError(
                f"Invalid degree={degree!r}: expected an integer >= 1."
            )
        self.degree = int(degree)
        self.basis = check_choice("basis", basis, BASES)
        self.normalization = check_choice(
            "normalization", normalization, NORMALIZATIONS
        )
        if self.basis == "taylor" and self.normalization == "batch":
            raise ValueError(
                "Invalid basis='taylor' with normalization='batch': per-power "
                "normalisation cancels the 1/j! scale, so it equals "
                "basis='power'. Use basis='taylor' with normalization='none'."
            )
        self.momentum = check_number(
            "momentum", momentum, 0.0, 1.0, high_open=True
        )
        self.epsilon = check_number("epsilon", epsilon, 0.0, low_open=True)
        self.gate = bool(gate)
        self.identity_offset = check_number("identity_offset", identity_offset)
        self.warm_start_statistics = bool(warm_start_statistics)
        self.coefficient_initializer = keras.initializers.get(
            coefficient_initializer
            or keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.bias_initializer = keras.initializers.get(
            bias_initializer or keras.initializers.Constant(0.1)
        )
        self.gate_initializer = keras.initializers.get(
            gate_initializer or keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.coefficient_regularizer = keras.regularizers.get(
            coefficient_regularizer
        )
        self.stat_channels = None
        self._stat_axis_from_end = None
        self._statistics = None

    @property
    def normalized(self):
        """Whether this is the normalised form (`normalization="batch"`)."""
        return self.normalization == "batch"

    # -- build -------------------------------------------------------------

    def _resolve_stat_axis(self, input_shape):
        """The statistics' channel count and axis (counted from the end)."""
        if self.granularity == "channel":
            return self.channels, self._axis_from_end
        rank = len(input_shape)
        axis = self.axis + rank if self.axis < 0 else self.axis
        if not 1 <= axis < rank or input_shape[axis] is None:
            raise ValueError(
                f"SLAF '{self.name}': normalization='batch' keeps statistics "
                f"per channel of axis={self.axis}, which input shape "
                f"{tuple(input_shape)} does not have with a known size; "
                "allowed: a known axis other than the batch axis, or "
                "normalization='none'."
            )
        return int(input_shape[axis]), axis - rank

    def build(self, input_shape):
        super().build(input_shape)
        terms = self.degree if self.normalized else self.degree + 1
        # The x^1 coefficient is first in the normalised form (powers 1..d)
        # and second in the raw form (powers 0..d).
        linear = 0 if self.normalized else 1
        self.coefficients = self.add_weight(
            name="coefficients",
            shape=self.param_shape(terms),
            initializer=_identity_offset_initializer(
                self.coefficient_initializer, self.identity_offset, linear
            ),
            regularizer=self.coefficient_regularizer,
            autocast=False,
        )
        self.bias = None
        self.gate_logit = None
        self.moving_mean = None
        self.moving_variance = None
        self.moving_count = None
        if self.normalized:
            self.stat_channels, self._stat_axis_from_end = (
                self._resolve_stat_axis(input_shape)
            )
            self._statistics = Statistics(
                self.degree, self.epsilon, self._stat_axis_from_end)
            self.bias = self.add_weight(
                name="bias", shape=(self.stat_channels,),
                initializer=self.bias_initializer, autocast=False,
            )
        if self.gate:
            self.gate_logit = self.add_weight(
                name="gate", shape=(), initializer=self.gate_initializer,
                autocast=False,
            )
        if self.normalized:
            stat_shape = (self.stat_channels, self.degree)
            self.moving_mean = self.add_weight(
                name="moving_mean", shape=stat_shape, initializer="zeros",
                trainable=False, autocast=False,
            )
            self.moving_variance = self.add_weight(
                name="moving_variance", shape=stat_shape, initializer="ones",
                trainable=False, autocast=False,
            )
            if self.warm_start_statistics:
                self.moving_count = self.add_weight(
                    name="moving_count", shape=(), initializer="zeros",
                    trainable=False, autocast=False,
                )

    # -- computation ---------------------------------------------------------

    def _raw_table(self, coefficients, gate_logit=None):
        """The coefficients of `x^0 .. x^degree` of the raw form, shape
        `param_shape(degree + 1)`: the weights, times `1 / j!` for the
        Taylor basis, times the gate."""
        if self.basis == "taylor":
            inverse_factorials = np.array(
                [1.0 / math.factorial(j) for j in range(self.degree + 1)]
            )
            coefficients = coefficients * ops.cast(
                inverse_factorials, coefficients.dtype)
        if gate_logit is not None:
            coefficients = ops.sigmoid(gate_logit) * coefficients
        return coefficients

    def _table_broadcast(self, table, ndim):
        """Reshapes a `param_shape(k)` table to meet a rank-`ndim` input,
        its trailing axis kept last."""
        if self.granularity == "layer":
            return table
        shape = [1] * ndim + [table.shape[-1]]
        shape[ndim + self._axis_from_end] = self.channels
        return ops.reshape(table, shape)

    def _raw(self, x):
        params = [ops.cast(self.coefficients, x.dtype)]
        if self.gate_logit is not None:
            params.append(ops.cast(self.gate_logit, x.dtype))
        if keras.backend.backend() == "tensorflow":
            return self._raw_tensorflow(x, params)
        axis = self._axis_from_end if self.granularity == "channel" else None
        return _polynomial_kernel(axis)(x, self._raw_table(*params))

    def _raw_tensorflow(self, x, params):
        """`_raw` as one XLA kernel, with a hand-written gradient.

        TensorFlow's autodiff of Horner's rule keeps every intermediate
        polynomial and takes about four passes over the tensor per degree.
        The gradient here takes the `degree + 1` weighted sums
        `T_j = sum(dy x^j)` (the gradient of the table, differentiated on
        to the parameters by TensorFlow) and one elementwise polynomial for
        the input, `dx = dy P'(x)`.
        """
        import tensorflow as tf

        ndim = len(x.shape)
        axes = [a for a in range(ndim) if self.granularity == "layer"
                or a != ndim + self._axis_from_end]
        # Read the variables outside the custom gradient.
        params = [tf.identity(p) for p in params]

        @tf.custom_gradient
        def raw(x, *params):
            table = self._raw_table(*params)
            outputs = _horner_kernel(x, self._table_broadcast(table, ndim))

            def gradient(upstream):
                totals, power = [], upstream
                for j in range(self.degree + 1):
                    if j:
                        power = power * x
                    totals.append(tf.reduce_sum(power, axis=axes))
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    again = self._raw_table(*params)
                d_params = tape.gradient(
                    again, params, output_gradients=tf.stack(totals, -1),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
                # dy * P'(x): the derivative's coefficients j * table_j.
                slope = table[..., 1:] * tf.cast(
                    tf.range(1, self.degree + 1), x.dtype)
                d_x = _input_gradient_kernel(
                    upstream, x, self._table_broadcast(slope, ndim),
                    self._table_broadcast(tf.zeros_like(table[..., :1]),
                                          ndim))
                return (d_x, *d_params)

            return outputs, gradient

        return raw(x, *params)

    def _inference(self, x, moving=None):
        """Moving statistics (`moving`, default the layer's) folded into a
        Horner polynomial."""
        ndim = len(x.shape)
        if moving is None:
            moving = self._moving(x.dtype)
        table = self._folded_table(self._params(x.dtype), moving)
        if keras.backend.backend() == "tensorflow":
            return _horner_kernel(x, self._statistics.broadcast(table, ndim))
        return _polynomial_kernel(self._stat_axis_from_end)(x, table)

    def _params(self, dtype):
        """The coefficients, the bias and (with a gate) the gate logit,
        as tensors of `dtype`."""
        params = [ops.cast(self.coefficients, dtype),
                  ops.cast(self.bias, dtype)]
        if self.gate_logit is not None:
            params.append(ops.cast(self.gate_logit, dtype))
        return params

    def _moving(self, dtype):
        """The moving mean and variance as tensors of `dtype`."""
        return [ops.cast(self.moving_mean, dtype),
                ops.cast(self.moving_variance, dtype)]

    def _folded_table(self, params, moving):
        """The coefficients of `x^0 .. x^degree` per channel, the moving
        statistics folded in, `(stat_channels, degree + 1)`.

        Args:
            params: `_params(dtype)`.
            moving: `_moving(dtype)`.
        """
        coefficients, bias, *gate_logit = params
        moving_mean, moving_variance = moving
        scale = coefficients
        if gate_logit:
            scale = ops.sigmoid(gate_logit[0]) * scale
        scale = scale / ops.sqrt(moving_variance + self.epsilon)
        constant = bias - ops.sum(scale * moving_mean, axis=-1)
        table = ops.concatenate([constant[:, None], scale], axis=-1)
        # Finite coefficients: Horner's rule in a finite x then gives a
        # number or +-inf, never inf - inf. (Only a channel whose mean is
        # huge next to its spread, such as a constant 1e9, comes near.)
        name = keras.backend.standardize_dtype(table.dtype)
        largest = ops.cast(np.finfo(name).max, table.dtype)
        return _maximum(_minimum(table, largest), -largest)

    def _training(self, x):
        """Batch moments of the powers of `x / r`; updates moving stats.

        A batch with one element per channel has no spread to normalise
        by: it is normalised by the moving statistics, as in inference
        (see "Statistics that one batch cannot spoil" in the class
        docstring), and an empty one changes nothing.
        """
        params = self._params(x.dtype)
        count = self._statistics.count(x)
        if not isinstance(count, (int, np.integer)):
            if keras.backend.backend() == "tensorflow":
                # The batch size is known only when the graph runs.
                stats = self._training_tensorflow(
                    x, params, single=count <= 1)
            else:
                stats = cond(count > 1,
                             lambda: self._batch_training(x, params),
                             lambda: self._single_training(x))
        elif count == 0:
            return self._inference(x)
        elif count == 1:
            stats = self._single_training(x)
        else:
            stats = self._batch_training(x, params)
        outputs, mean, variance, r = stats
        self._update_statistics(
            ops.stop_gradient(mean), ops.stop_gradient(variance),
            ops.stop_gradient(r), count)
        return outputs

    def _batch_training(self, x, params):
        """Normalised by the batch: `(outputs, mean, variance, r)`."""
        if keras.backend.backend() == "tensorflow":
            return self._training_tensorflow(x, params)
        return _batch_kernel(self._statistics)(x, *params)

    def _single_training(self, x):
        """One element per channel, normalised by the moving statistics:
        `(outputs, mean, variance, r)` as from `_batch_training`."""
        r, _, sums = self._statistics.power_sums(x, single=True)
        mean, second = self._statistics.moments(sums)
        # Copies: the update that follows writes the variables in place
        # (PyTorch's autodiff would find its saved values changed).
        moving = [ops.copy(m) for m in self._moving(x.dtype)]
        return (self._inference(x, moving), mean, second - ops.square(mean),
                self._statistics.scale(r))

    def _training_tensorflow(self, x, params, single=None):
        """`_batch_training` with a hand-written gradient.

        TensorFlow without XLA runs every operation as a pass over the
        tensor, and its autodiff of the power sums and of Horner's rule
        takes dozens. The gradient here takes `degree + 1` weighted sums
        `T_i = sum(dy q^i)` for the parameters (through the per-channel
        mathematics, differentiated by TensorFlow) and one elementwise
        polynomial for the input: `dq = dy P'(q) + sum_j dS_j j q^(j-1) / n`,
        where `P` is the output polynomial and `dS_j` the gradient reaching
        the power sum `S_j = mean(q^j)` over its `n` elements.

        Args:
            x: the input.
            params: `_params(x.dtype)`.
            single: None, or a boolean tensor, true where the batch has at
                most one element per channel (known only when the graph
                runs); then the table is the inference one (`_single_training`)
                and `q = x`.

        Returns:
            `(outputs, mean, variance, r)` as from `_batch_training`.
        """
        import tensorflow as tf

        ndim = len(x.shape)
        stats = self._statistics
        axes = stats.reduction_axes(ndim)
        orders = stats.orders()
        # Read the variables outside the custom gradient.
        params = [tf.identity(p) for p in params]
        moving = [tf.identity(m) for m in self._moving(x.dtype)]

        def table_of(sums, r, params):
            if single is None:
                return stats.table(sums, r, *params)[0]
            # The batch table from zeros for a single element, so that its
            # unused branch has finite gradients.
            batch_sums = tf.where(single, tf.zeros_like(sums), sums)
            batch = stats.table(batch_sums, r, *params)[0]
            return tf.where(single, self._folded_table(params, moving),
                            batch)

        @tf.custom_gradient
        def normalized(x, *params):
            r, q, sums = stats.power_sums(
                x, False if single is None else single)
            _, mean, variance = stats.table(sums, r, *params)
            table = table_of(sums, r, params)
            outputs = _horner_kernel(q, stats.broadcast(table, ndim))
            scale = stats.scale(r)

            def gradient(upstream, *unused):
                totals, power = [], upstream
                for i in range(self.degree + 1):
                    if i:
                        power = power * q
                    totals.append(tf.reduce_sum(power, axis=axes))
                totals = tf.stack(totals, axis=-1)
                sources = [sums, *params]
                with tf.GradientTape() as tape:
                    tape.watch(sources)
                    again = table_of(sums, r, params)
                grads = tape.gradient(
                    again, sources, output_gradients=totals,
                    unconnected_gradients=tf.UnconnectedGradients.ZERO)
                d_sums, d_params = grads[0], grads[1:]
                count = tf.cast(tf.size(x), x.dtype) / tf.cast(
                    self.stat_channels, x.dtype)
                # dy * P'(q): the derivative's coefficients i * table_i.
                slope = table[:, 1:] * tf.cast(
                    tf.range(1, self.degree + 1), x.dtype)
                # sum_j dS_j j q^(j-1) / n, as coefficients of q^0..q^(J-1).
                moments = [tf.zeros_like(d_sums[:, 0])] * orders[-1]
                for k, j in enumerate(orders):
                    moments[j - 1] = d_sums[:, k] * (j / count)
                moments = tf.stack(moments, axis=-1)
                d_q = _input_gradient_kernel(
                    upstream, q, stats.broadcast(slope, ndim),
                    stats.broadcast(moments, ndim))
                return (d_q / r, *d_params)

            return (outputs, mean, variance, scale), gradient

        return normalized(x, *params)

    def _update_statistics(self, mean, variance, r, count):
        """Moves the moving statistics towards this batch's, boundedly.

        Args:
            mean, variance: the batch moments of the powers of `q = x / r`,
                `(stat_channels, degree)`; NaN in a channel that held a
                non-finite input.
            r: the per-channel scale, `(stat_channels, 1)`.
            count: the number of elements per channel.

        See "Statistics that one batch cannot spoil" in the class
        docstring for the rules.
        """
        dtype = mean.dtype
        old_mean = ops.cast(self.moving_mean, dtype)
        old_variance = ops.cast(self.moving_variance, dtype)
        exponents = ops.cast(np.arange(1, self.degree + 1), dtype)
        r_powers = r ** exponents  # inf where x^i leaves the dtype's range
        batch_mean = _rescaled(mean, r_powers)
        batch_variance = _rescaled(variance, ops.square(r_powers))
        count = ops.cast(count, dtype)
        # One element per channel has no spread: its squared deviation
        # from the moving mean stands for the variance.
        batch_variance = ops.where(
            count == 1, ops.square(batch_mean - old_mean), batch_variance)
        finite = ops.logical_and(ops.isfinite(mean), ops.isfinite(variance))
        usable = ops.logical_and(
            ops.all(finite, axis=-1, keepdims=True), count >= 1)

        # Bounded: at most what a batch OUTLIER_SCALE times larger would
        # enter, relative to the running root mean square of each power.
        growth = OUTLIER_SCALE ** exponents
        running = old_variance + ops.square(old_mean) + self.epsilon
        bounded_variance = _minimum(
            batch_variance, ops.square(growth) * running)
        step = (growth - 1.0) * ops.sqrt(running)
        bounded_mean = _maximum(
            _minimum(batch_mean, old_mean + step), old_mean - step)

        weight = ops.cast(1.0 - self.momentum, dtype)
        if self.moving_count is not None:
            steps = ops.cast(self.moving_count, dtype)
            weight = _maximum(weight, 1.0 / (steps + 1.0))
            # The first update sets the statistics: nothing to bound by;
            # but one element's deviation from the initial mean says
            # nothing of the spread, so then the variance stays.
            first = steps == 0
            bounded_variance = ops.where(
                first,
                ops.where(count == 1, old_variance, batch_variance),
                bounded_variance)
            bounded_mean = ops.where(first, batch_mean, bounded_mean)
            advanced = ops.cast(ops.any(usable), dtype)
            self.moving_count.assign(ops.cast(
                steps + advanced, self.moving_count.dtype))
        new_mean = old_mean + weight * (bounded_mean - old_mean)
        new_variance = old_variance + weight * (
            bounded_variance - old_variance)
        keep = ops.logical_and(usable, ops.logical_and(
            ops.isfinite(new_mean), ops.isfinite(new_variance)))
        self.moving_mean.assign(ops.cast(
            ops.where(keep, new_mean, old_mean), self.moving_mean.dtype))
        self.moving_variance.assign(ops.cast(
            ops.where(keep, new_variance, old_variance),
            self.moving_variance.dtype))

    def call(self, inputs, training=None):
        inputs = self.float_input(inputs)
        # float64 stays float64; everything narrower computes in float32.
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        compute = "float64" if dtype == "float64" else "float32"
        x = ops.cast(inputs, compute)
        if not self.normalized:
            outputs = self._raw(x)
        elif training and self.trainable:
            outputs = self._training(x)
        else:
            outputs = self._inference(x)
        return ops.cast(outputs, inputs.dtype)

    def reset_statistics(self):
        """Resets the moving statistics to mean 0, variance 1.

        With `warm_start_statistics=True` the step counter is reset too, so
        the next training-mode batch sets the statistics outright and the
        following ones are averaged in: a quick re-estimate for the current
        weights after a short run or fine-tuning.

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.SLAF(degree=2)
        >>> x = np.random.default_rng(0).normal(size=(64, 3))
        >>> _ = layer(x.astype("float32"), training=True)
        >>> layer.reset_statistics()
        >>> layer.parameter_values()["moving_variance"].tolist()
        [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
        """
        if not self.normalized or not self.built:
            return
        shape = self.moving_mean.shape
        dtype = self.moving_mean.dtype
        self.moving_mean.assign(ops.zeros(shape, dtype))
        self.moving_variance.assign(ops.ones(shape, dtype))
        if self.moving_count is not None:
            self.moving_count.assign(ops.zeros((), self.moving_count.dtype))

    # -- what callbacks and plots use --------------------------------------

    def curve(self, x):
        """Evaluates the learned function on a 1-D grid, inference mode.

        For the normalised form with layer granularity (shared coefficients,
        per-channel statistics and bias) each channel computes a slightly
        different function; the layer's curve is their mean over channels.
        `channel_curves(x)` gives each one.

        Args:
            x: a 1-D array-like of finite input values.

        Returns:
            A float32 NumPy array of shape `(channels, len(x))`, with
            `channels == 1` for layer granularity.

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.SLAF(degree=2, granularity="layer")
        >>> layer.build((None, 3))
        >>> layer.curve(np.linspace(-1.0, 1.0, 5)).shape
        (1, 5)
        """
        if self.granularity == "layer" and self.normalized and self.built:
            return self.channel_curves(x).mean(axis=0, keepdims=True)
        return super().curve(x)

    def channel_curves(self, x):
        """Each statistics channel's function on a 1-D grid, inference mode.

        Args:
            x: a 1-D array-like of finite input values.

        Returns:
            A float32 NumPy array of shape `(channels, len(x))`: one row per
            channel of the statistics (per channel of `axis` in the
            normalised form, one row in the raw form with layer granularity).

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.SLAF(degree=3, granularity="layer")
        >>> layer.build((None, 6))
        >>> layer.channel_curves(np.zeros(4)).shape
        (6, 4)
        """
        if not (self.granularity == "layer" and self.normalized):
            return super().curve(x)
        grid = np.asarray(x, dtype="float32")
        if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
            raise ValueError(
                "channel_curves() needs a non-empty 1-D grid of finite "
                f"values; got an array of shape {grid.shape}."
            )
        ndim = max(2, 1 - self._stat_axis_from_end)
        shape = [grid.size] + [1] * (ndim - 1)
        shape[ndim + self._stat_axis_from_end] = self.stat_channels
        probe = np.broadcast_to(
            grid.reshape([grid.size] + [1] * (ndim - 1)), shape
        ).copy()
        out = np.asarray(
            ops.convert_to_numpy(self(probe, training=False)), "float32"
        )
        return np.ascontiguousarray(out.reshape(grid.size, -1).T)

    def get_config(self):
        config = super().get_config()
        config.update({
            "degree": self.degree,
            "basis": self.basis,
            "normalization": self.normalization,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "gate": self.gate,
            "identity_offset": self.identity_offset,
            "warm_start_statistics": self.warm_start_statistics,
            "coefficient_initializer": keras.initializers.serialize(
                self.coefficient_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "gate_initializer": keras.initializers.serialize(
                self.gate_initializer
            ),
            "coefficient_regularizer": keras.regularizers.serialize(
                self.coefficient_regularizer
            ),
        })
        return config

    def _fit_parameters(self, function, x, weights):
        """The weighted least squares polynomial of `degree`, in the raw
        form; in the normalised form with the moving statistics set to the
        moments of the powers under `weights` (see
        `LearnableActivation.fit_to`)."""
        target = _initial.evaluate(function, x)
        orders = np.arange(self.degree + 1)
        polynomial = _initial.weighted_least_squares(
            x[:, None] ** orders, target, weights)
        gate = 1.0
        if self.gate_logit is not None:
            logit = self._current(self.gate_logit, None)
            if logit is None:  # not drawn yet: start the gate at 1/2
                logit = 0.0
                self._assign(self.gate_logit, logit)
            gate = 0.5 + 0.5 * math.tanh(0.5 * float(logit))  # sigmoid
        if not self.normalized:
            if self.basis == "taylor":
                polynomial = polynomial * np.array(
                    [math.factorial(j) for j in orders], "float64")
            self._assign(self.coefficients, polynomial / gate)
            return
        # y = sum_i W_i (x^i - mu_i) / sqrt(var_i + eps) + b, folded:
        # W_i = a_i sqrt(var_i + eps), b = a_0 + sum_i a_i mu_i.
        powers = x[:, None] ** orders[1:]
        mean = weights @ powers
        variance = np.maximum(weights @ np.square(powers) - mean**2, 0.0)
        self._assign(self.moving_mean, mean)
        self._assign(self.moving_variance, variance)
        self._assign(self.coefficients, polynomial[1:] * np.sqrt(
            variance + self.epsilon) / gate)
        self._assign(self.bias, polynomial[0] + polynomial[1:] @ mean)
