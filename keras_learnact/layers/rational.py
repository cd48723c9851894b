"""Rational activations (Padé Activation Units): a learned P(x) / Q(x)."""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _initial
from keras_learnact.layers._fused import SEPARATE_KERNELS
from keras_learnact.layers._fused import fuse
from keras_learnact.layers._fused import in_chunks
from keras_learnact.layers._fused import trained
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.base import check_choice

VERSIONS = ("A", "B", "C", "D")
# The largest numerator or denominator degree accepted.
MAX_DEGREE = 16
# Version D multiplies each numerator coefficient in training by a draw
# from U(1 - NOISE, 1 + NOISE).
NOISE = 0.1
# The constant of version C's denominator, `0.1 + |R(x)|`.
C_FLOOR = 0.1
# The range a unit is fitted on by default (the reference's).
DEFAULT_RANGE = (-3.0, 3.0)
# The length of the rows a layer-granularity backward pass sums over, a
# power of two: 8 measured fastest of 8 to 64 for 128x32x32x32 (2-core
# CPU). Its partial sums take (m + 1 + n) / ROW_WIDTH times the memory of
# the chunk of the batch they are computed on (see `backward_by_rows`).
ROW_WIDTH = 8


def _row_width(x):
    """The largest power of two up to `ROW_WIDTH` that divides the size
    of `x` (a tensor when a size is unknown until run time)."""
    shape = ops.shape(x)
    if all(isinstance(dim, int) for dim in shape):
        return math.gcd(math.prod(shape), ROW_WIDTH)
    size = 1
    for dim in shape:
        size = size * ops.cast(dim, "int64")
    width = ops.convert_to_tensor(1, "int64")
    candidate = 2
    while candidate <= ROW_WIDTH:
        width = ops.where(size % candidate == 0, candidate, width)
        candidate *= 2
    return width


def _denominator_start(version):
    """Where the denominator's power series starts (`b_0` for C, `b_1`
    for the others)."""
    return 0 if version == "C" else 1


def _denominator_constant(version):
    """The constant added to the denominator's absolute value term(s)."""
    return C_FLOOR if version == "C" else 1.0


def _horner(x, coefficient, count, derivative=False):
    """`sum_{j < count} c_j x^j` by Horner's rule, and its derivative.

    Args:
        x: a tensor.
        coefficient: `coefficient(j)`, the tensor `c_j`, broadcasting with
            `x`.
        count: the number of coefficients, at least 1.
        derivative: whether to return the derivative too.

    Returns:
        The polynomial (shaped like `x`), or the pair (polynomial,
        derivative) with `derivative=True`; the derivative of a
        polynomial of degree 1 is its coefficient, which broadcasts with
        `x`.
    """
    if count == 1:
        value = coefficient(0) + ops.zeros_like(x)
        return (value, ops.zeros_like(x)) if derivative else value
    value, slope = coefficient(count - 1), None
    for j in reversed(range(count - 1)):
        if derivative:
            slope = value if slope is None else slope * x + value
        value = value * x + coefficient(j)
    return (value, slope) if derivative else value


def rational_denominator(x, denominator, version, count, derivative=False):
    """`Q(x)` of a rational unit, by Horner's rule (no tensor of powers).

    Version A's `Q` is `1 + sum_k |b_k| |x|^k` (`|b_k x^k| = |b_k|
    |x|^k`), a polynomial in `|x|`; that of B, C and D is the constant
    plus `|R(x)|`, `R` a polynomial in `x`.

    Args:
        x: the inputs.
        denominator: `denominator(k)`, the `k`-th coefficient (`b_{k+1}`,
            or `b_k` for version C) lined up with `x`.
        version: `"A"`, `"B"`, `"C"` or `"D"`.
        count: the number of coefficients `n`, at least 1.
        derivative: whether to return `Q'` too.

    Returns:
        `(Q, R)`, or with `derivative=True` `(Q, Q', R)`, where `R` is
        `R(x)` (None for version A), whose sign the denominator's gradient
        needs.

    Examples:

    >>> from keras import ops
    >>> x = ops.convert_to_tensor([-2.0, 2.0])
    >>> q, _ = rational_denominator(x, lambda k: [0.5][k], "A", 1)
    >>> ops.convert_to_numpy(q).tolist()
    [2.0, 2.0]
    """
    constant = _denominator_constant(version)
    if version == "A":
        z = ops.abs(x)

        def absolute(k):
            return ops.abs(denominator(k))

        r = _horner(z, absolute, count, derivative)
        if not derivative:
            return constant + r * z, None
        r, dr = r
        # d/dx of |x| r(|x|): sign(x) (r + |x| r'(|x|)).
        return constant + r * z, ops.sign(x) * (r + z * dr), None
    r = _horner(x, denominator, count, derivative)
    r, dr = r if derivative else (r, None)
    if _denominator_start(version) == 1:
        # R = x (b_1 + b_2 x + ...): R' = r + x r'.
        dr = r + x * dr if derivative else None
        r = r * x
    q = constant + ops.abs(r)
    return (q, ops.sign(r) * dr, r) if derivative else (q, r)


@functools.lru_cache(maxsize=None)
def _kernels(version, count_a, count_b, channel_axes):
    """`P(x) / Q(x)` for training and for inference; one pair for every
    layer with these settings and input rank (`channel_axes`: None for
    layer granularity, else a bool per axis of the input, true on the
    channel axis), whatever its size.

    The forward pass is `fuse`d (one XLA kernel on TensorFlow); for
    training it is joined to the closed-form backward pass of the spec
    (`trained`), which recomputes what it needs from `x` and the
    coefficients (it does not read the output; on PyTorch, `torch.compile`
    derives the same recomputing backward pass as one kernel):

        dx    = upstream (P' - F Q') / Q
        da_j  = sum g x^j,                          g = upstream / Q
        db_k  = -sum h_A |x|^(k-1) sign(b_k),       h_A = upstream P |x| / Q^2
        db_k  = -sum h x^(k-1),  h = upstream P sign(R) x / Q^2    (B, D)
        db_k  = -sum h x^k,      h = upstream P sign(R) / Q^2      (C)

    `dx`, `g` and `h` are each one fused elementwise function of `x`
    and `upstream`; the sums run over every axis but the channel axis
    (every axis for layer granularity), the powers formed by running
    multiplication, one at a time. For layer granularity on TensorFlow,
    one XLA kernel makes `dx` and the sums' partial sums over short rows
    (`backward_by_rows`).
    """
    if channel_axes is None:
        layout, axes = None, None
    else:
        layout = tuple(-1 if channel else 1 for channel in channel_axes)
        axes = tuple(i for i, channel in enumerate(channel_axes)
                     if not channel)

    def lined_up(coefficients):
        def column(j):
            value = coefficients[..., j]
            return value if layout is None else ops.reshape(value, layout)
        return column

    def numerator_of(x, numerator, derivative=False):
        return _horner(x, lined_up(numerator), count_a, derivative)

    def denominator_of(x, denominator, derivative=False):
        return rational_denominator(x, lined_up(denominator), version,
                                    count_b, derivative)

    def forward(x, numerator, *denominator):
        p = numerator_of(x, numerator)
        if not denominator:
            return p
        return p / denominator_of(x, denominator[0])[0]

    def elementwise(x, upstream, numerator, *denominator):
        """`dx`, `g` and `h` (None without a denominator) of the spec's
        closed forms, each shaped like `x`."""
        p, dp = numerator_of(x, numerator, derivative=True)
        if not denominator:
            return upstream * dp, upstream, None
        q, dq, r = denominator_of(x, denominator[0], derivative=True)
        g = upstream / q
        f = p / q
        # h from F / Q, not P / Q^2: Q^2 leaves float32 from |x| ~ 1e5.
        h = g * f
        if version == "A":
            h = h * ops.abs(x)
        else:
            h = h * ops.sign(r)
            h = h * x if _denominator_start(version) == 1 else h
        return g * (dp - f * dq), g, h

    def input_gradient(x, upstream, numerator, *denominator):
        return elementwise(x, upstream, numerator, *denominator)[0]

    def numerator_term(x, upstream, numerator, denominator):
        return elementwise(x, upstream, numerator, denominator)[1]

    def denominator_term(x, upstream, numerator, denominator):
        return elementwise(x, upstream, numerator, denominator)[2]

    def power_sums(term, x, count):
        """`[sum term x^0, ..., sum term x^(count - 1)]`, stacked on the
        last axis."""
        sums = []
        for j in range(count):
            if j:
                term = term * x
            sums.append(ops.sum(term, axis=axes))
        return ops.stack(sums, axis=-1)

    def row_sums(x, upstream, numerator, *denominator):
        """The input gradient and, per row of `x` (shaped `(rows,
        width)`), the sums of every coefficient's gradient."""
        dx, g, h = elementwise(x, upstream, numerator, *denominator)
        sums = [g]
        for _ in range(count_a - 1):
            sums.append(sums[-1] * x)
        if denominator:
            base = ops.abs(x) if version == "A" else x
            sums.append(h)
            for _ in range(count_b - 1):
                sums.append(sums[-1] * base)
        return dx, ops.stack([ops.sum(term, axis=1) for term in sums],
                             axis=-1)

    fused = {fn.__name__: fuse(fn) for fn in (
        input_gradient, numerator_term, denominator_term)}
    fused_row_sums = xla_kernel(row_sums)

    def backward_by_rows(upstream, x, numerator, *denominator):
        """Layer granularity on TensorFlow: every sum is over the whole
        tensor. One XLA kernel reads `x` and `upstream` once, writes `dx`
        and sums each term over rows of `ROW_WIDTH` elements (a short,
        vectorised loop for XLA's CPU compiler, which sums a whole tensor
        slowly); 128x32x32x32 on a 2-core CPU: 15 ms against 24 ms for
        three elementwise kernels and the sums of `power_sums`. It runs
        on chunks of the batch in turn (`in_chunks`), so that the rows'
        partial sums take a chunk's memory, not 1.25x the input's."""
        def part(upstream, x):
            width = _row_width(x)
            dx, sums = fused_row_sums(ops.reshape(x, (-1, width)),
                                      ops.reshape(upstream, (-1, width)),
                                      numerator, *denominator)
            return ops.reshape(dx, ops.shape(x)), ops.sum(sums, axis=0)

        terms = count_a + (count_b if denominator else 0)
        dx, sums = in_chunks(part, (upstream, x), ops.zeros((terms,), x.dtype))
        grads = [dx, sums[:count_a]]
        if denominator:
            db = sums[count_a:]
            if version == "A":
                db = ops.sign(denominator[0]) * db
            grads.append(-db)
        return tuple(grads)

    def backward(upstream, y, x, numerator, *denominator):
        del y  # recomputed from x: the backward pass keeps only the input
        if axes is None and SEPARATE_KERNELS:
            # On JAX the compiled step fuses power_sums as well (by rows
            # there: train step 1.36x ReLU's against 1.15x).
            return backward_by_rows(upstream, x, numerator, *denominator)
        dx = fused["input_gradient"](x, upstream, numerator, *denominator)
        if not denominator:
            return dx, power_sums(upstream, x, count_a)
        g = fused["numerator_term"](x, upstream, numerator, *denominator)
        h = fused["denominator_term"](x, upstream, numerator, *denominator)
        if version == "A":
            db = ops.sign(denominator[0]) * power_sums(h, ops.abs(x),
                                                       count_b)
        else:
            db = power_sums(h, x, count_b)
        return dx, power_sums(g, x, count_a), -db

    return trained(forward, backward)


@keras.saving.register_keras_serializable(package="keras_learnact")
class Rational(LearnableActivation):
    """Padé Activation Unit: a learned ratio of two polynomials.

        F(x) = P(x) / Q(x),    P(x) = a_0 + a_1 x + ... + a_m x^m

    with `m = numerator_degree`, `n = denominator_degree` and one of four
    denominators (`version`, as in the reference code):

        A (default, the paper's "safe PAU"):
            Q(x) = 1 + |b_1 x| + |b_2 x^2| + ... + |b_n x^n|
        B:  Q(x) = 1 + |b_1 x + b_2 x^2 + ... + b_n x^n|
        C:  Q(x) = 0.1 + |b_0 + b_1 x + ... + b_{n-1} x^{n-1}|
        D:  as B; in training each numerator coefficient is multiplied
            by an independent draw from U(0.9, 1.1) (none at inference)

    A, B and D have `Q >= 1`: no pole, `F` is finite wherever `P` is, and
    grows like `x^(m - n)` for large `|x|`. C has `Q >= 0.1` and can come
    close to a pole. With `n = 0` the denominator is 1 (C needs `n >= 1`).

    Weights: `numerator` (`a_0..a_m`, shape `(m + 1,)`, or
    `(channels, m + 1)` for channel granularity) and `denominator`
    (`b_1..b_n`, or `b_0..b_{n-1}` for C, shape `(n,)` or
    `(channels, n)`; absent when `n = 0`). Version D also holds a
    `keras.random.SeedGenerator` (its state is a non-trainable variable,
    not a weight), so its noise is drawn afresh in every compiled step.

    Start. The unit starts as the weighted least-squares fit of
    `initial_function` (default `"leaky_relu"`) on `initial_range`
    (default `(-3, 3)`, the reference's), each point weighted by the
    standard normal density as in every family: a linearised least
    squares (`P(x) - f(x) Q(x) ~ 0`), refined on the true error by
    Levenberg-Marquardt steps (see `fit_rational`). The reference's
    default start is leaky ReLU with slope 0.01; here `"leaky_relu"` means
    what it means everywhere in this package, `keras.activations.leaky_relu`
    (slope 0.2), so that a model's leaky ReLU converted by
    `replace_activations` starts as that function. For the reference's
    start, call `fit_to` with a slope-0.01 leaky ReLU after building (see
    docs/layers/rational.md). `initial_function=None` is refused: a
    rational unit has no start of its own.

    Numerics. Computed in float32 (float64 for float64 inputs; integer
    inputs in the layer's compute dtype) and cast back, so mixed precision
    keeps float32 coefficients and float32 arithmetic. `P` and `Q` are
    evaluated by Horner's rule (version A's `Q` as a polynomial in `|x|`),
    with no tensor of powers. In training the backward pass is the closed
    form of the spec, computed from the input and the coefficients only
    (the derivative of `|.|` at 0 is taken as 0, as in the reference). At
    the default degrees the output and its gradients are finite for
    `|x|` up to about 1e7 (beyond, `x^5` leaves float32).

    Args:
        numerator_degree: `m`, an integer in [0, 16] (default 5).
        denominator_degree: `n`, an integer in [0, 16] (default 4; at
            least 1 for version C).
        version: `"A"` (default), `"B"`, `"C"` or `"D"` (lower case
            accepted).
        initial_function: the function the unit starts as (default
            `"leaky_relu"`, Keras's, slope 0.2); any name that
            `LearnableActivation` accepts.
        initial_range: `(low, high)`, where the initial function is fitted
            (default `(-3, 3)`).
        granularity: `"layer"` (default, the paper's: one set of
            coefficients) or `"channel"` (one set per channel of `axis`).
        axis: the channel axis for channel granularity (default -1).
        seed: the seed of version D's noise (an integer or None).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(4),
    ...     kla.layers.Rational(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> unit = model.layers[1]
    >>> print(", ".join(f"{w.name} {tuple(w.shape)}" for w in unit.weights))
    numerator (6,), denominator (4,)
    >>> curve = unit.curve(np.array([-2.0, 0.0, 2.0]))[0]
    >>> print(", ".join(f"{v:.1f}" for v in curve))
    -0.4, 0.0, 2.0

    Reference:
        Molina, Schramowski, Kersting, "Padé Activation Units: End-to-end
        Learning of Flexible Activation Functions in Deep Networks",
        ICLR 2020, arXiv:1907.06732.
    """

    def __init__(self, numerator_degree=5, denominator_degree=4,
                 version="A", initial_function="leaky_relu",
                 initial_range=DEFAULT_RANGE, granularity="layer", axis=-1,
                 seed=None, **kwargs):
        if initial_function is None:
            raise ValueError(
                "Invalid initial_function=None: a Rational unit starts as "
                "the fit of a named function. Allowed: one of "
                f"{', '.join(repr(n) for n in _initial.NAMES)}."
            )
        super().__init__(granularity=granularity, axis=axis,
                         initial_function=initial_function,
                         initial_range=initial_range, **kwargs)
        self.numerator_degree = _check_degree(
            "numerator_degree", numerator_degree)
        self.denominator_degree = _check_degree(
            "denominator_degree", denominator_degree)
        if isinstance(version, str) and version.upper() in VERSIONS:
            version = version.upper()
        self.version = check_choice("version", version, VERSIONS)
        if self.version == "C" and self.denominator_degree == 0:
            raise ValueError(
                "Invalid denominator_degree=0 with version='C': its "
                "denominator 0.1 + |b_0 + ... + b_{n-1} x^{n-1}| needs at "
                "least one coefficient. Use denominator_degree >= 1, or "
                "version 'A' or 'B'."
            )
        if seed is not None and (not isinstance(seed, (int, np.integer))
                                 or isinstance(seed, bool)):
            raise ValueError(
                f"Invalid seed={seed!r}: expected an integer or None."
            )
        self.seed = None if seed is None else int(seed)
        self.seed_generator = None
        if self.version == "D":
            self.seed_generator = keras.random.SeedGenerator(self.seed)

    def build(self, input_shape):
        super().build(input_shape)
        # Placeholders: the fit to `initial_function` sets both right
        # after build.
        self.numerator = self.add_weight(
            name="numerator",
            shape=self.param_shape(self.numerator_degree + 1),
            initializer="zeros")
        self.denominator = None
        if self.denominator_degree:
            self.denominator = self.add_weight(
                name="denominator",
                shape=self.param_shape(self.denominator_degree),
                initializer="ones")

    def _dtype(self):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        return "float64" if dtype == "float64" else "float32"

    def _numerator_noise(self):
        """Version D's factors: one draw from `U(1 - NOISE, 1 + NOISE)` per
        numerator coefficient."""
        return keras.random.uniform(
            self.numerator.shape, 1.0 - NOISE, 1.0 + NOISE,
            dtype=self._dtype(), seed=self.seed_generator)

    def _coefficients(self, training):
        """The coefficients the unit computes with, in its compute dtype:
        the numerator (noisy for version D in training) and, if any, the
        denominator."""
        dtype = self._dtype()
        numerator = ops.cast(self.numerator, dtype)
        if self.version == "D" and training:
            numerator = numerator * self._numerator_noise()
        if self.denominator is None:
            return [numerator]
        return [numerator, ops.cast(self.denominator, dtype)]

    def call(self, inputs, training=None):
        x = ops.cast(self.float_input(inputs), self._dtype())
        ndim = len(x.shape)
        channel_axes = None
        if self.granularity == "channel":
            channel = ndim + self._axis_from_end
            channel_axes = tuple(i == channel for i in range(ndim))
        train, infer = _kernels(self.version, self.numerator_degree + 1,
                                self.denominator_degree, channel_axes)
        kernel = train if training else infer
        y = kernel(x, *self._coefficients(training))
        return ops.cast(y, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "numerator_degree": self.numerator_degree,
            "denominator_degree": self.denominator_degree,
            "version": self.version,
            "seed": self.seed,
        })
        return config

    # -- fitting to a function (LearnableActivation.fit_to) -----------------

    # The fits to the named functions, by settings and samples: every unit
    # of a converted model (or of a model being loaded) is fitted once.
    _fitted = {}

    def _fit_parameters(self, function, x, weights):
        """The coefficients of `fit_rational` (every channel the same)."""
        settings = (self.numerator_degree, self.denominator_degree,
                    self.version)
        key = None
        if any(function is f for f in _initial.FUNCTIONS.values()):
            key = (function, x.tobytes(), weights.tobytes(), *settings)
        found = self._fitted.get(key) if key else None
        if found is None:
            found = fit_rational(x, _initial.evaluate(function, x), weights,
                                 *settings)
            if key:
                if len(self._fitted) >= 64:
                    self._fitted.clear()
                self._fitted[key] = found
        numerator, denominator = found
        self._assign(self.numerator, numerator)
        if self.denominator is not None:
            self._assign(self.denominator, denominator)


def _check_degree(name, value):
    """`value` as an int if it is an integer in [0, MAX_DEGREE]."""
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
            or not 0 <= value <= MAX_DEGREE):
        raise ValueError(
            f"Invalid {name}={value!r}: expected an integer in "
            f"[0, {MAX_DEGREE}]."
        )
    return int(value)


# -- the fit, in NumPy float64 ----------------------------------------------

def fit_rational(x, target, weights, numerator_degree, denominator_degree,
                 version, iterations=100):
    """The coefficients of a rational unit closest to `target` on `x`.

    Minimises the weighted squared error `sum_i w_i (F(x_i) - t_i)^2`
    (deterministically) in two stages:

    1. linearised least squares: `P(x) - t Q(x) ~ 0` is linear in the
       coefficients once the absolute values are resolved, so it is
       solved by weighted least squares with the denominator's polynomial
       taken as positive on the points (version A: `Q` is linear in
       `|b_k|`); for B and D also with `R(x) = x S(x)`, `S` positive
       (`|R| = |x| S`: `R`'s usual sign change at 0);
    2. Levenberg-Marquardt steps on the true error over the denominator's
       coefficients, the numerator's being for each denominator the
       weighted least squares solution (`F` is linear in them: variable
       projection, with Kaufman's Jacobian), from each of those solutions
       and from denominator coefficients 1e-3 (the least-squares
       polynomial; 0 would get no gradient through `|.|`); the best
       result is returned.

    A local method: a function of the family whose denominator polynomial
    changes sign elsewhere on the points may be missed, but every named
    function reaches the minimum that `scipy.optimize.least_squares`
    finds from the result.

    Args:
        x: the sample points, a 1-D float64 array.
        target: the function's values there.
        weights: the points' non-negative weights.
        numerator_degree: `m`.
        denominator_degree: `n`.
        version: `"A"`, `"B"`, `"C"` or `"D"`.
        iterations: the most Levenberg-Marquardt steps from each start.

    Returns:
        `(numerator, denominator)`, float64 arrays of sizes `m + 1` and
        `n`.

    Examples:

    >>> x = np.linspace(-3.0, 3.0, 61)
    >>> a, b = fit_rational(x, x / (1.0 + 0.5 * x * x), np.ones(61), 1, 2,
    ...                     "B")
    >>> (np.round(a, 6) + 0.0).tolist(), (np.round(b, 6) + 0.0).tolist()
    ([0.0, 1.0], [0.0, 0.5])
    """
    x = np.asarray(x, "float64")
    target = np.asarray(target, "float64")
    weights = np.asarray(weights, "float64")
    count_a, count_b = numerator_degree + 1, denominator_degree
    numerator_powers = x[:, None] ** np.arange(count_a)
    if count_b == 0:
        return _initial.weighted_least_squares(
            numerator_powers, target, weights), np.zeros(0)
    exponents = np.arange(count_b) + _denominator_start(version)
    powers = (np.abs(x) if version == "A" else x)[:, None] ** exponents
    # P - t (constant + sum b_k x^k) = 0  <=>  P - t sum b_k x^k = t c:
    # the denominator's polynomial taken as positive on the points.
    constant = _denominator_constant(version)
    starts = [_linearised(numerator_powers, powers, target, weights,
                          constant)]
    if version in ("B", "D"):
        # R = x S(x) with S of one sign on the points: |R| = |x| |S|.
        starts.append(_linearised(numerator_powers,
                                  np.abs(x)[:, None] * powers / np.where(
                                      x == 0, 1.0, x)[:, None],
                                  target, weights, constant))
    small = np.full(count_b, 1e-3)
    if version == "C":
        # Q = 0.1 + |0.9 + ...| = 1 + ...: the polynomial again.
        small[0] = 1.0 - C_FLOOR
    projection = _Projection(numerator_powers, powers, target, weights,
                             version)
    best, best_error = None, np.inf
    for start in (*starts, small):
        found, error = _levenberg_marquardt(projection, start, iterations)
        if error < best_error:
            best, best_error = found, error
    return projection.numerator(best), best


def _linearised(numerator_powers, powers, target, weights, constant):
    """The denominator coefficients of the weighted least squares solution
    of `P(x) - t (constant + sum_k b_k powers_k) = 0`."""
    design = np.concatenate([numerator_powers, -target[:, None] * powers],
                            axis=1)
    return _initial.weighted_least_squares(
        design, constant * target, weights)[numerator_powers.shape[1]:]


class _Projection:
    """The error of a rational unit as a function of its denominator
    alone, the numerator solved for by weighted least squares (variable
    projection)."""

    def __init__(self, numerator_powers, powers, target, weights, version):
        self.root = np.sqrt(weights)
        self.numerator_powers = numerator_powers
        self.powers = powers
        self.target = self.root * target
        self.version = version

    def _denominator(self, b):
        """`Q` and its derivatives with respect to `b` (columns)."""
        if self.version == "A":
            return 1.0 + self.powers @ np.abs(b), self.powers * np.sign(b)
        r = self.powers @ b
        return (_denominator_constant(self.version) + np.abs(r),
                self.powers * np.sign(r)[:, None])

    def _solve(self, q, right):
        """Least squares on the numerator's weighted design for each
        column of `right`; returns the solutions and the design."""
        design = self.root[:, None] * self.numerator_powers / q[:, None]
        norms = np.linalg.norm(design, axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        solution = np.linalg.lstsq(design / norms, right, rcond=None)[0]
        return solution / norms[:, None], design

    def numerator(self, b):
        """The best numerator for the denominator `b`."""
        q, _ = self._denominator(b)
        return self._solve(q, self.target[:, None])[0][:, 0]

    def evaluate(self, b):
        """`(error, residual, jacobian)` at the denominator `b`."""
        with np.errstate(all="ignore"):
            q, dq = self._denominator(b)
            solution, design = self._solve(q, self.target[:, None])
            fitted = design @ solution[:, 0]
            residual = fitted - self.target
            # d(fitted)/db_k with the numerator held, projected off the
            # numerator's columns (Kaufman).
            jacobian = -(fitted / q)[:, None] * dq
            jacobian = jacobian - design @ self._solve(q, jacobian)[0]
        error = float(residual @ residual)
        if not (np.isfinite(error) and np.all(np.isfinite(jacobian))):
            return np.inf, None, None
        return error, residual, jacobian


def _levenberg_marquardt(projection, start, iterations):
    """Levenberg-Marquardt steps on `projection`'s error from the
    denominator `start`; returns the denominator and its error."""
    params = np.asarray(start, "float64")
    error, residual, jacobian = projection.evaluate(params)
    damping = 1e-3
    for _ in range(iterations):
        if not np.isfinite(error) or error == 0.0:
            break
        gradient = jacobian.T @ residual
        normal = jacobian.T @ jacobian
        scale = np.diag(normal) + 1e-12 * (1.0 + np.max(np.diag(normal)))
        improved = False
        while damping < 1e12:
            try:
                step = np.linalg.solve(normal + damping * np.diag(scale),
                                       -gradient)
            except np.linalg.LinAlgError:
                damping *= 10.0
                continue
            trial = projection.evaluate(params + step)
            if trial[0] < error:
                improved = error - trial[0] > 1e-13 * error
                params = params + step
                error, residual, jacobian = trial
                damping = max(damping / 3.0, 1e-12)
                break
            damping *= 4.0
        if not improved:
            break
    return params, error
