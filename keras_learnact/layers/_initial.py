"""Fitting a unit to a given function: the shared mathematics (NumPy only).

Every family can start as an approximation of a named function
(`initial_function=`, on `initial_range=`) or be fitted to any function
later (`LearnableActivation.fit_to`). How a unit's parameters are fitted is
its family's own mathematics, in its file; what the families share is here:

* the named functions, written in NumPy (float64) with the values of the
  Keras activations of the same names (`FUNCTIONS`, with the aliases
  `ALIASES`);
* the sample grid on the range (`sample_points`) and the weight a standard
  normal input gives each point (`normal_weights`);
* weighted least squares: plain, with the coefficients summing to one, on
  the simplex (non-negative and summing to one), and a one-dimensional
  minimiser for a parameter such as swish's `beta`.

It imports nothing from Keras, so that it can be used (and tested) on
NumPy arrays alone.
"""

import math

import numpy as np

# The range a unit is fitted on when none is given, and the number of
# sample points on it.
DEFAULT_RANGE = (-4.0, 4.0)
SAMPLES = 801
# `keras.activations.leaky_relu`'s default `negative_slope`.
LEAKY_RELU_SLOPE = 0.2

_erf = np.vectorize(math.erf, otypes=[float])


def _sigmoid(x):
    # 1 / (1 + exp(-x)) without overflow for any x.
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


FUNCTIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": _relu6,
    # Keras's `gelu` is exact (`approximate=False`) by default.
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "swish": lambda x: x * _sigmoid(x),
    "hard_swish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "leaky_relu": lambda x: np.where(x >= 0, x, LEAKY_RELU_SLOPE * x),
    "sigmoid": _sigmoid,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "identity": lambda x: 1.0 * x,
}
ALIASES = {"silu": "swish", "hard_silu": "hard_swish", "linear": "identity"}
NAMES = (*FUNCTIONS, *ALIASES)


def check_function(value):
    """Validates an `initial_function` argument; returns it.

    Args:
        value: None, or one of `NAMES`.

    Returns:
        `value`, unchanged.

    Raises:
        ValueError: naming the value and listing the allowed names.

    Examples:

    >>> check_function("gelu")
    'gelu'
    >>> check_function("mish")
    Traceback (most recent call last):
    ...
    ValueError: Invalid initial_function='mish'. Allowed: None or one of ...
    """
    if value is None or (isinstance(value, str) and value in NAMES):
        return value
    raise ValueError(
        f"Invalid initial_function={value!r}. Allowed: None or one of "
        f"{', '.join(repr(n) for n in NAMES)}."
    )


def check_range(value, name="initial_range"):
    """Validates a `(low, high)` range; returns it as two floats.

    Args:
        value: a pair of finite numbers with `low < high`.
        name: the argument's name, for the message.

    Returns:
        `(float(low), float(high))`.

    Raises:
        ValueError: naming the value and what is allowed.

    Examples:

    >>> check_range([-3, 3])
    (-3.0, 3.0)
    >>> check_range((2.0, 1.0))
    Traceback (most recent call last):
    ...
    ValueError: Invalid initial_range=(2.0, 1.0): expected (low, high), ...
    """
    try:
        low, high = value
        pair = [float(low), float(high)]
        ok = not any(isinstance(v, (bool, str)) for v in (low, high))
    except (TypeError, ValueError):
        ok = False
    if not ok or not all(math.isfinite(v) for v in pair) or (
            not pair[0] < pair[1]):
        raise ValueError(
            f"Invalid {name}={value!r}: expected (low, high), two finite "
            "numbers with low < high."
        )
    return tuple(pair)


def function(name):
    """The NumPy function of a name from `NAMES` (aliases resolved).

    Args:
        name: a name from `NAMES`.

    Returns:
        A function from a float64 array to a float64 array of its shape.

    Examples:

    >>> function("leaky_relu")(np.array([-1.0, 2.0])).tolist()
    [-0.2, 2.0]
    """
    return FUNCTIONS[ALIASES.get(check_function(name), name)]


def evaluate(fn, x):
    """`fn(x)` as a float64 array shaped like `x`, checked finite.

    Args:
        fn: a function of a NumPy array (NumPy in, NumPy out).
        x: a 1-D float64 array.

    Returns:
        A float64 array shaped like `x`.

    Examples:

    >>> evaluate(np.square, np.array([1.0, 3.0])).tolist()
    [1.0, 9.0]
    """
    values = np.asarray(fn(x), dtype="float64")
    if values.shape != x.shape:
        values = np.broadcast_to(values, x.shape).astype("float64")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "The function to fit returned non-finite values at the sample "
            "points; expected finite values everywhere on them."
        )
    return values


def sample_points(low, high, num=SAMPLES):
    """The sample grid of a range: `num` evenly spaced points, both ends
    included.

    Args:
        low: the range's lower end.
        high: the range's upper end.
        num: the number of points (default `SAMPLES`).

    Returns:
        A float64 array of shape `(num,)`.

    Examples:

    >>> sample_points(-4.0, 4.0, 5).tolist()
    [-4.0, -2.0, 0.0, 2.0, 4.0]
    """
    return np.linspace(float(low), float(high), int(num))


def normal_weights(x):
    """The weight a standard normal input gives each sample point: its
    density there, scaled to sum to one.

    Args:
        x: a 1-D array of sample points.

    Returns:
        A float64 array shaped like `x`, summing to one.

    Examples:

    >>> w = normal_weights(np.array([-1.0, 0.0, 1.0]))
    >>> [round(v, 3) for v in w.tolist()]
    [0.274, 0.452, 0.274]
    """
    density = np.exp(-0.5 * np.square(np.asarray(x, "float64")))
    return density / np.sum(density)


def check_samples(x, weights=None):
    """Validates the sample points (and weights) given to `fit_to`.

    Args:
        x: a 1-D array-like of finite numbers, at least two of them
            distinct.
        weights: None (every point weighs the same), or an array-like of
            finite, non-negative numbers shaped like `x`, not all zero.

    Returns:
        `(x, weights)` as float64 arrays, `weights` scaled to sum to one.

    Examples:

    >>> x, w = check_samples([0.0, 1.0, 2.0, 3.0])
    >>> w.tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    points = np.asarray(x, dtype="float64")
    if points.ndim != 1 or np.unique(points).size < 2 or not np.all(
            np.isfinite(points)):
        raise ValueError(
            f"Invalid sample points x of shape {points.shape}: expected a "
            "1-D array of finite numbers with at least two distinct values."
        )
    if weights is None:
        return points, np.full(points.shape, 1.0 / points.size)
    values = np.asarray(weights, dtype="float64")
    if (values.shape != points.shape or not np.all(np.isfinite(values))
            or np.any(values < 0) or not np.sum(values) > 0):
        raise ValueError(
            f"Invalid weights of shape {values.shape}: expected finite, "
            f"non-negative numbers, not all zero, one per sample point "
            f"(shape {points.shape})."
        )
    return points, values / np.sum(values)


def outward_slopes(fn, low, high, step=None):
    """The slopes of `fn` just outside `[low, high]`: left of `low` and
    right of `high`.

    One-sided second-order differences, taken outward, so that a function
    that is linear beyond a bound (ReLU, ReLU6, hard swish, leaky ReLU)
    gets its exact slope there even when it has a kink at the bound.

    Args:
        fn: a function of a NumPy array.
        low: the lower bound (a number or an array).
        high: the upper bound, shaped like `low`.
        step: the difference step (default `1e-4 * max(1, high - low)`).

    Returns:
        `(left_slope, right_slope)`, float64 arrays shaped like `low`.

    Examples:

    >>> slopes = outward_slopes(FUNCTIONS["leaky_relu"], -1.0, 1.0)
    >>> [round(float(s), 6) for s in slopes]
    [0.2, 1.0]
    """
    low = np.asarray(low, "float64")
    high = np.asarray(high, "float64")
    if step is None:
        step = 1e-4 * np.maximum(1.0, high - low)

    def value(at):
        return evaluate(fn, np.ravel(at)).reshape(np.shape(at))

    def slope(at, h):
        return (3.0 * value(at) - 4.0 * value(at - h)
                + value(at - 2.0 * h)) / (2.0 * h)

    return slope(low, step), slope(high, -step)


def weighted_least_squares(design, target, weights, total=None):
    """Coefficients `c` minimising `sum_k weights_k (design c - target)_k^2`.

    The columns are scaled to unit norm before the solve (polynomial bases
    differ by orders of magnitude); a rank-deficient design gets the
    minimum-norm solution.

    Args:
        design: a `(samples, n)` array, one column per basis function.
        target: a `(samples,)` array.
        weights: a `(samples,)` array of non-negative weights.
        total: None, or a number: then the coefficients are constrained to
            sum to `total`.

    Returns:
        A float64 array of shape `(n,)`.

    Examples:

    >>> x = np.linspace(-1.0, 1.0, 5)
    >>> design = np.stack([np.ones_like(x), x], axis=1)
    >>> c = weighted_least_squares(design, 2.0 + 3.0 * x, np.ones(5))
    >>> np.round(c, 6).tolist()
    [2.0, 3.0]
    >>> c = weighted_least_squares(design, 2.0 + 3.0 * x, np.ones(5), 1.0)
    >>> np.round(c, 6).tolist()
    [0.666667, 0.333333]
    """
    design = np.asarray(design, "float64")
    target = np.asarray(target, "float64")
    if total is not None:
        # c_n = total - sum(c_1..c_{n-1}): an unconstrained problem in the
        # first n - 1 coefficients.
        last = design[:, -1]
        rest = weighted_least_squares(
            design[:, :-1] - last[:, None], target - total * last, weights)
        return np.append(rest, total - np.sum(rest))
    root = np.sqrt(np.asarray(weights, "float64"))
    scaled = design * root[:, None]
    norms = np.linalg.norm(scaled, axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    solution = np.linalg.lstsq(scaled / norms, target * root, rcond=None)[0]
    return solution / norms


def nonnegative_least_squares(design, target):
    """`c >= 0` minimising `|design c - target|^2` (Lawson and Hanson's
    active-set method, deterministic).

    Args:
        design: a `(samples, n)` array.
        target: a `(samples,)` array.

    Returns:
        A float64 array of shape `(n,)`, every entry >= 0.

    Examples:

    >>> design = np.eye(3)
    >>> nonnegative_least_squares(design, np.array([1.0, -2.0, 3.0])).tolist()
    [1.0, 0.0, 3.0]
    """
    design = np.asarray(design, "float64")
    target = np.asarray(target, "float64")
    n = design.shape[1]
    active = np.zeros(n, bool)
    c = np.zeros(n)
    tolerance = 10 * np.finfo("float64").eps * max(design.shape) * max(
        np.abs(design).sum(axis=0).max(), 1.0)
    for _ in range(3 * n + 10):
        gradient = design.T @ (target - design @ c)
        if active.all() or np.max(np.where(active, -np.inf, gradient)) <= (
                tolerance):
            break
        active[np.argmax(np.where(active, -np.inf, gradient))] = True
        while True:
            trial = np.zeros(n)
            trial[active] = np.linalg.lstsq(
                design[:, active], target, rcond=None)[0]
            if np.all(trial[active] > 0):
                break
            blocked = active & (trial <= 0)
            # c >= 0 >= trial there: a step in [0, 1] (0 where both are 0).
            gap = c[blocked] - trial[blocked]
            step = np.min(np.where(gap > 0, c[blocked] / np.where(
                gap > 0, gap, 1.0), 0.0))
            c = c + step * (trial - c)
            active &= c > tolerance
            c[~active] = 0.0
        c = trial
    return c


def simplex_least_squares(design, target, weights):
    """Weighted least squares over non-negative coefficients summing to one.

    The sum is imposed by a heavily weighted extra row, and the result is
    scaled to sum exactly to one.

    Args:
        design: a `(samples, n)` array.
        target: a `(samples,)` array.
        weights: a `(samples,)` array of non-negative weights.

    Returns:
        A float64 array of shape `(n,)`: non-negative, summing to one.

    Examples:

    >>> x = np.linspace(-1.0, 1.0, 9)
    >>> design = np.stack([x, np.abs(x), np.ones_like(x)], axis=1)
    >>> target = 0.25 * x + 0.75 * np.abs(x)
    >>> np.round(simplex_least_squares(design, target, np.ones(9)), 6).tolist()
    [0.25, 0.75, 0.0]
    """
    root = np.sqrt(np.asarray(weights, "float64"))
    scaled = np.asarray(design, "float64") * root[:, None]
    heavy = 1e4 * max(float(np.linalg.norm(scaled, axis=0).max()), 1.0)
    augmented = np.vstack([scaled, np.full((1, scaled.shape[1]), heavy)])
    c = nonnegative_least_squares(
        augmented, np.append(np.asarray(target, "float64") * root, heavy))
    if not np.sum(c) > 0:
        c = np.full(scaled.shape[1], 1.0)
    return c / np.sum(c)


def compress(design, target, weights):
    """An equivalent small least-squares problem: `(R, z)` with
    `|R c - z|^2 = weighted_error(design @ c, target, weights) - rest`
    for every `c`, `R` square (a QR decomposition of the weighted design).

    For fits that solve many problems on the same design (ABU's sign
    patterns and its search over swish's `beta`).

    Args:
        design: a `(samples, n)` array, `samples >= n`.
        target: a `(samples,)` array.
        weights: a `(samples,)` array of non-negative weights.

    Returns:
        `(R, z)`: an `(n, n)` array and an `(n,)` array; solve on them
        with unit weights.

    Examples:

    >>> x = np.linspace(-1.0, 1.0, 7)
    >>> design = np.stack([np.ones_like(x), x], axis=1)
    >>> r, z = compress(design, 1.0 + x, np.full(7, 1.0 / 7))
    >>> np.round(weighted_least_squares(r, z, np.ones(2)), 6).tolist()
    [1.0, 1.0]
    """
    root = np.sqrt(np.asarray(weights, "float64"))
    q, r = np.linalg.qr(np.asarray(design, "float64") * root[:, None])
    return r, q.T @ (np.asarray(target, "float64") * root)


def weighted_error(prediction, target, weights):
    """`sum_k weights_k (prediction - target)_k^2`, along the last axis.

    Args:
        prediction: an array of predictions, the samples on the last axis.
        target: the target values, broadcasting with `prediction`.
        weights: the sample weights, broadcasting with `prediction`.

    Returns:
        The weighted squared error (an array over the leading axes).

    Examples:

    >>> float(weighted_error(np.array([1.0, 2.0]), np.zeros(2),
    ...                      np.array([0.5, 0.5])))
    2.5
    """
    return np.sum(weights * np.square(prediction - target), axis=-1)


def minimize_scalar(objective, start, low=0.05, high=20.0, grid=41):
    """A deterministic one-dimensional minimiser on a positive range.

    The objective is evaluated at `start` and on `grid` log-spaced points
    in `[low, high]`; the best bracket is then narrowed by golden-section
    search. `start` is kept unless something is clearly better, so an
    exact start stays exact.

    Args:
        objective: a function of a positive float, returning a float.
        start: the current value.
        low: the lower end of the range searched.
        high: the upper end of the range searched.
        grid: the number of grid points.

    Returns:
        The best value found.

    Examples:

    >>> round(minimize_scalar(lambda b: (np.log(b) - 1.0) ** 2, 1.0), 4)
    2.7183
    """
    points = np.geomspace(low, high, grid)
    values = [objective(float(p)) for p in points]
    best = int(np.argmin(values))
    a = math.log(points[max(best - 1, 0)])
    b = math.log(points[min(best + 1, grid - 1)])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    left, right = b - ratio * (b - a), a + ratio * (b - a)
    f_left, f_right = objective(math.exp(left)), objective(math.exp(right))
    for _ in range(30):
        if f_left <= f_right:
            b, right, f_right = right, left, f_left
            left = b - ratio * (b - a)
            f_left = objective(math.exp(left))
        else:
            a, left, f_left = left, right, f_right
            right = a + ratio * (b - a)
            f_right = objective(math.exp(right))
    found, f_found = (left, f_left) if f_left <= f_right else (
        right, f_right)
    found = math.exp(found)
    if values[best] < f_found:
        found, f_found = float(points[best]), values[best]
    start_value = objective(float(start))
    if start_value <= f_found + 1e-12 * max(abs(start_value), 1e-300):
        return float(start)
    return found
