"""Differential Equation Units: each unit is the solution of a learned ODE."""

import functools
import itertools

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _initial
from keras_learnact.layers._fused import compiled
from keras_learnact.layers._fused import compiles
from keras_learnact.layers._fused import eager_traced
from keras_learnact.layers._fused import in_chunks
from keras_learnact.layers._fused import shared
from keras_learnact.layers._fused import with_gradient
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.base import check_choice
from keras_learnact.layers.base import check_number
from keras_learnact.layers.base import cond

CRITICAL_DAMPING = ("exact", "reference")
# The surrogate gradient is estimated on this many examples of each batch.
SURROGATE_EXAMPLES = 8

# Every closed form is written in one common shape,
#
#   y(t) = K0 + K1 t + K2 t^2 + g1(t) [M1 t + MC cos(w t) + MS sin(w t)]
#          + G2 g2(t) + S / (1 + g2(t)),
#   g1(t) = E(r1 t),  g2(t) = E(r2 t),  E(z) = exp(min(z, cap)),
#
# where every coefficient X is per unit and takes the value X_P for t <= 0
# and X_P + X_Q for t > 0 (X_P: the homogeneous part, X_Q: the step
# response switched on by H(t)). `SELECTED` lists the coefficients with both
# parts; K2 only has a Q part and S only a P part.
SELECTED = ("K0", "K1", "M1", "MC", "MS", "G2")
# The phase `w t` of the cosine and sine is clipped to +-PHASE_LIMIT
# (about 10^4 periods): beyond it float32 cannot resolve the phase anyway
# (its spacing there is 0.008), and TensorFlow Lite's cosine and sine are
# wrong past about 1e8 (-4902 for cos(1e10), NaN for cos(1e20)). Past the
# limit the oscillation holds its value and passes no gradient.
PHASE_LIMIT = 65536.0
# The parameters of each unit's ODE, in the order of the rows of the
# layer's weight `ode_parameters`.
PARAMETERS = ("a", "b", "c", "c1", "c2")
COEFFICIENTS = (
    "r1", "r2", "w", "K2", "S", *(n + "P" for n in SELECTED),
    *(n + "Q" for n in SELECTED),
)


def _case_masks(a, b, c, epsilon):
    """The case of every unit (see `DEU`), as a dict from the names of
    tests/test_deu.py's `CASES` to boolean tensors shaped like `a`."""
    return _flags(a, b, c, epsilon)[1]


def _flags(a, b, c, epsilon):
    """`(big, masks)`: whether each of `a, b, c` counts as nonzero
    (`|x| >= epsilon`), and the masks of `_case_masks`."""
    big = tuple(ops.abs(v) >= epsilon for v in (a, b, c))
    big_a, big_b, big_c = big
    small_a, small_b, small_c = (
        ops.logical_not(v) for v in (big_a, big_b, big_c))
    both = ops.logical_and
    full = both(big_a, both(big_b, big_c))
    disc = b * b - 4.0 * a * c
    a_and_c = both(big_a, both(small_b, big_c))
    return big, {
        "identity": both(small_a, both(small_b, small_c)),
        "step": both(small_a, both(small_b, big_c)),
        "b": both(small_a, both(big_b, small_c)),
        "bc": both(small_a, both(big_b, big_c)),
        "a": both(big_a, both(small_b, small_c)),
        "oscillator": both(a_and_c, a * c > 0),
        "hyperbolic": both(a_and_c, a * c < 0),
        "ab": both(big_a, both(big_b, small_c)),
        "critical": both(full, ops.abs(disc) < epsilon),
        "underdamped": both(full, disc <= -epsilon),
        "overdamped": both(full, disc >= epsilon),
    }


# The coefficients of each case (`_case_masks`), each named by the
# per-unit quantity of `_quantities` it takes ("-" for its negative);
# those not listed are 0, as is every coefficient of a unit in no case
# (NaN in its discriminant). The oscillator's and the hyperbolic case's are
# the under- and overdamped cases' with b = 0 (b is small there): w =
# sqrt(ac)/a and the rates +-sqrt(-ac)/a, as signed as the spec's.
CASE_COEFFICIENTS = {
    "identity": {"K1P": "one"},
    "step": {"S": "inv_c", "r2": "minus_sigma"},
    "b": {"K0P": "c1", "K1Q": "inv_b"},
    "bc": {"r1": "bc_rate", "MCP": "c1", "K0Q": "inv_c", "MCQ": "-inv_c"},
    "a": {"K0P": "c2", "K1P": "c1", "K2": "half_inv_a"},
    "oscillator": {"w": "w", "MCP": "c1", "MSP": "c2", "K0Q": "inv_c",
                   "MCQ": "-inv_c"},
    "hyperbolic": {"r1": "r_plus", "r2": "r_minus", "MCP": "c2",
                   "G2P": "c1", "K0Q": "inv_c", "MCQ": "mcq", "G2Q": "g2q"},
    "ab": {"r1": "ab_rate", "K0P": "c2", "MCP": "ab_mcp", "K1Q": "inv_b",
           "K0Q": "-a_over_b2", "MCQ": "a_over_b2"},
    "critical": {"r1": "r_critical", "MCP": "c2", "M1P": "c1",
                 "K0Q": "inv_c_critical", "MCQ": "-inv_c_critical",
                 "M1Q": "m1q"},
    "underdamped": {"r1": "r_mid", "w": "w", "MCP": "c1", "MSP": "c2",
                    "K0Q": "inv_c", "MCQ": "-inv_c", "MSQ": "msq"},
    "overdamped": {"r1": "r_plus", "r2": "r_minus", "MCP": "c2",
                   "G2P": "c1", "K0Q": "inv_c", "MCQ": "mcq", "G2Q": "g2q"},
}
QUANTITIES = (
    "one", "c1", "c2", "minus_sigma", "inv_c", "inv_b", "half_inv_a",
    "bc_rate", "ab_rate", "ab_mcp", "a_over_b2", "r_mid", "w", "r_plus",
    "r_minus", "msq", "mcq", "g2q", "r_critical", "inv_c_critical", "m1q",
)


@functools.lru_cache(maxsize=None)
def _signed_columns():
    """`CASE_COEFFICIENTS` as one column per case, of `COUNT` entries
    (one per coefficient): `+-(i + 1)` for the `i`-th quantity of
    `QUANTITIES` or its negative, 0 for a coefficient the case does not
    use."""
    columns = {}
    for case, entries in CASE_COEFFICIENTS.items():
        column = np.zeros(COUNT, "int32")
        for name, quantity in entries.items():
            number = QUANTITIES.index(quantity.lstrip("-")) + 1
            column[COEFFICIENTS.index(name)] = (
                -number if quantity.startswith("-") else number)
        columns[case] = column
    return columns


class _Dual:
    """A per-unit tensor and, unless `partials` is None, its partial
    derivatives for the parameters it depends on (a dict from their
    names), carried forward through arithmetic: each quantity of
    `_quantities` is written once, for its value (the forward pass) and
    for its derivatives (the backward pass). Python numbers count as
    constants."""

    def __init__(self, value, partials=None):
        self.value, self.partials = value, partials

    def _other(self, x):
        if isinstance(x, _Dual):
            return x
        return _Dual(x, None if self.partials is None else {})

    def _chain(self, value, *terms):
        """`value` with the partials `sum(factor * x.partials)` over the
        `(factor, x)` of `terms` (a factor of None: 1, "-": -1)."""
        if self.partials is None:
            return _Dual(value)
        out = {}
        for factor, x in terms:
            for name, p in x.partials.items():
                if isinstance(factor, str):  # "-"
                    out[name] = out[name] - p if name in out else -p
                    continue
                if factor is not None:
                    # A parameter's own partial is the number 1.
                    p = factor if isinstance(p, float) else factor * p
                out[name] = out[name] + p if name in out else p
        return _Dual(value, out)

    def __add__(self, x):
        x = self._other(x)
        return self._chain(self.value + x.value, (None, self), (None, x))

    __radd__ = __add__

    def __neg__(self):
        return self._chain(-self.value, ("-", self))

    def __sub__(self, x):
        x = self._other(x)
        return self._chain(self.value - x.value, (None, self), ("-", x))

    def __rsub__(self, x):
        return self._other(x) - self

    def __mul__(self, x):
        x = self._other(x)
        return self._chain(self.value * x.value, (x.value, self),
                           (self.value, x))

    __rmul__ = __mul__

    def __truediv__(self, x):
        x = self._other(x)
        value = self.value / x.value
        return self._chain(value, (1.0 / x.value, self),
                           (-value / x.value, x))

    def __rtruediv__(self, x):
        return self._other(x) / self

    def sqrt(self):
        value = ops.sqrt(self.value)
        return self._chain(value, (0.5 / value, self))

    def abs(self):
        return self._chain(ops.abs(self.value), (ops.sign(self.value), self))

    def sign(self):
        """The sign, a constant."""
        return _Dual(ops.sign(self.value),
                     None if self.partials is None else {})

    def where(self, mask, default):
        """`self` where `mask` holds, the constant `default` elsewhere."""
        value = ops.where(mask, self.value, default)
        if self.partials is None:
            return _Dual(value)
        return self._chain(value, (ops.cast(mask, value.dtype), self))


def _quantities(a, b, c, c1, c2, epsilon, step_sharpness, critical_damping,
                partials=False):
    """The per-unit quantities that the cases' coefficients take
    (`CASE_COEFFICIENTS`), as `_Dual`s, with their partial derivatives for
    `a, b, c, c1, c2` if `partials`.

    Each parameter enters a formula only where the case of the unit makes
    it nonzero (`|x| >= epsilon`; elsewhere a harmless 1, or 0 for b in
    the second-order formulas), so every quantity and partial is finite
    for every unit, including those whose case does not take it (their
    upstream gradient is 0, and 0 times a finite partial is 0)."""
    def param(x, name):
        return _Dual(x, {name: 1.0} if partials else None)

    (big_a, big_b, big_c), masks = _flags(a, b, c, epsilon)
    as_ = param(a, "a").where(big_a, 1.0)
    bs = param(b, "b").where(big_b, 1.0)
    cs = param(c, "c").where(big_c, 1.0)
    # The second-order cases with c: the roots of a r^2 + beta r + c,
    # beta = b, or 0 where b is small (the oscillator, the hyperbolic case).
    beta = param(b, "b").where(big_b, 0.0)
    second = functools.reduce(ops.logical_or, [masks[k] for k in (
        "oscillator", "hyperbolic", "underdamped", "overdamped")])
    root = (beta * beta - 4.0 * as_ * cs).abs().where(second, 1.0).sqrt()
    inv_c, inv_b, half_inv_a = 1.0 / cs, 1.0 / bs, 0.5 / as_
    r_mid, w = -beta * half_inv_a, root * half_inv_a
    two_root_c = 2.0 * root * cs
    q = {
        "c1": param(c1, "c1"), "c2": param(c2, "c2"),
        "inv_c": inv_c, "inv_b": inv_b, "half_inv_a": half_inv_a,
        "bc_rate": -cs * inv_b, "ab_rate": -bs / as_,
        "ab_mcp": -param(c1, "c1").where(masks["ab"], 0.0) * as_ * inv_b,
        "a_over_b2": as_ * inv_b * inv_b,
        "r_mid": r_mid, "w": w, "msq": -beta * inv_c / root,
        **_real_roots(beta, root, as_, cs, half_inv_a, two_root_c),
    }
    if critical_damping == "reference":
        # a and c snapped to sign * |b| / 2: the rate is -sign(a) sign(b).
        q["r_critical"] = -as_.sign() * bs.sign()
        q["inv_c_critical"] = cs.sign() / (0.5 * bs.abs())
    else:
        q["r_critical"], q["inv_c_critical"] = r_mid, inv_c
    q["m1q"] = q["r_critical"] * q["inv_c_critical"]
    one = ops.ones_like(a)
    for name, value in (("one", 1.0), ("minus_sigma", -step_sharpness)):
        q[name] = _Dual(value * one, {} if partials else None)
    return q, masks


def _real_roots(beta, root, a, c, half_inv_a, two_root_c):
    """The rates `r_plus, r_minus = (-beta +- root) / (2a)` of the
    overdamped and hyperbolic cases (`root^2 = beta^2 - 4ac`) and the step
    response's `mcq = -(beta + root) / (2 root c)`, `g2q = (beta - root) /
    (2 root c)`, as `_Dual`s, written without the cancellation of
    `beta - root` or `beta + root` when `4ac << beta^2`: with `far = beta
    + sign(beta) root` (no cancellation), the rate near zero is `-2c /
    far` and the differences are `4ac / far`. (In float32, a = c = 0.01,
    b = 10 put the direct forms' outputs 4e-4 off a float64 reference and
    the slow rate 0.14 % off.) Every quantity is finite wherever `root >
    0` and `far != 0`."""
    positive = ops.greater_equal(beta.value, 0.0)
    sign = ops.cast(ops.where(positive, 1.0, -1.0), beta.value.dtype)
    far = beta + root * sign
    steep, slow = -far * half_inv_a, -2.0 * c / far
    spread, narrow = far / two_root_c, 2.0 * a / (root * far)

    def pick(when_positive, otherwise):
        return (when_positive.where(positive, 0.0)
                + otherwise.where(ops.logical_not(positive), 0.0))

    return {"r_plus": pick(slow, steep), "r_minus": pick(steep, slow),
            "mcq": pick(-spread, -narrow), "g2q": pick(narrow, spread)}


def _selection(masks, like):
    """Which quantity each coefficient of every unit takes
    (`CASE_COEFFICIENTS`): `(hot, sign)`, `hot[i]` true where it takes
    the `i`-th of `QUANTITIES`, of shape `(len(QUANTITIES), COUNT,
    *like.shape)`, and `sign` its sign (0 where it takes none), of shape
    `(COUNT, *like.shape)`.

    Built from `where`s and comparisons, with no gather, stack or
    transposition: XLA fuses them into a few kernels (a gather from the
    case table and a stack of the masks made dozens of kernels to
    compile per layer)."""
    dims = (1,) * len(like.shape)
    signed = np.int32(0)
    for case, column in _signed_columns().items():
        signed = ops.where(masks[case][None], np.reshape(column, (-1, *dims)),
                           signed)
    numbers = np.arange(len(QUANTITIES), dtype="int32").reshape(
        (-1, 1, *dims))
    return (ops.abs(signed)[None] == numbers + 1,
            ops.cast(ops.sign(signed), like.dtype))


def deu_coefficients(a, b, c, c1, c2, epsilon=0.01, step_sharpness=100.0,
                     critical_damping="exact"):
    """Per-unit rates and coefficients of the common form of every case.

    Each unit's case is chosen from its parameters: `A = |a| >= eps`,
    `B = |b| >= eps`, `C = |c| >= eps`, `D = b^2 - 4ac`. The formulas
    see a parameter only where the unit's case makes it nonzero (a
    harmless constant elsewhere), so no other case's formula produces inf
    or NaN, in the values or in the gradients, and a unit that falls in
    no case (NaN in `D`) has every coefficient 0.

    Args:
        a, b, c, c1, c2: tensors of the same shape (one entry per unit).
        epsilon: the threshold below which a coefficient counts as zero.
        step_sharpness: `sigma` of the smoothed step `1 / (1 + E(-sigma t))`
            of the case `c y = H`.
        critical_damping: `"exact"` for the true critically damped solution
            or `"reference"` for the reference code's version (`a` and `c`
            snapped to `sign * |b| / 2`, so that the rate is `+-1`).

    Returns:
        A dict from the names in `COEFFICIENTS` to tensors shaped like `a`,
        plus `"used"`: a dict from the same names to boolean tensors shaped
        like `a`, true for the units whose case uses that coefficient, and
        `"live"`: the same reduced to scalars, true where at least one
        unit uses it. A live coefficient can be 0 (`c1` and `c2` start at 0)
        and still needs its gradient; `deu_evaluate` skips only the terms
        that are not live.

    Examples:

    >>> from keras import ops
    >>> k = deu_coefficients(*ops.convert_to_tensor(
    ...     [[1.0], [3.0], [1.0], [0.0], [0.0]], "float32"))
    >>> round(float(k["K0Q"][0]), 3)  # overdamped: the step response -> 1/c
    1.0
    """
    rows, used = _coefficient_rows(a, b, c, c1, c2, epsilon, step_sharpness,
                                   critical_damping)
    out = dict(zip(COEFFICIENTS, ops.unstack(rows, COUNT), strict=True))
    out["used"] = dict(zip(COEFFICIENTS, ops.unstack(used > 0.5, COUNT),
                           strict=True))
    out["live"] = {name: ops.any(u) for name, u in out["used"].items()}
    return out


def _coefficient_rows(a, b, c, c1, c2, epsilon, step_sharpness,
                      critical_damping):
    """`deu_coefficients` as two tensors, the coefficients and their `used`
    masks (0 or 1 in the parameters' dtype), each stacked in the order of
    `COEFFICIENTS` on a new first axis: every unit's coefficients are
    the quantities of `_quantities` that its case names
    (`CASE_COEFFICIENTS`)."""
    q, masks = _quantities(a, b, c, c1, c2, epsilon, step_sharpness,
                           critical_damping)
    hot, sign = _selection(masks, a)
    values = ops.stack([q[name].value for name in QUANTITIES])
    rows = ops.sum(ops.where(hot, values[:, None], 0.0), axis=0)
    return rows * sign, ops.abs(sign)


def deu_coefficient_gradient(upstream, a, b, c, c1, c2, epsilon=0.01,
                             critical_damping="exact"):
    """The backward pass of `deu_coefficients`, in closed form.

    Each coefficient of a unit is one of the quantities of `_quantities`
    (or its negative), simple closed forms in `a, b, c, c1, c2`; this sums,
    for every unit, the upstream of the coefficients that take each
    quantity, times the quantity's partial derivatives (carried forward
    with its value by `_Dual`; the coefficients do not depend on
    `step_sharpness`). It is a fraction of what a framework's autodiff of
    `deu_coefficients` builds (TensorFlow's was four times its size, and a
    train step optimised it several times over).

    Args:
        upstream: a dict from the names in `COEFFICIENTS` to the gradients
            of the loss for them, each shaped like `a`.
        a, b, c, c1, c2: the parameters, as for `deu_coefficients`.
        epsilon: as for `deu_coefficients`.
        critical_damping: as for `deu_coefficients`.

    Returns:
        `(da, db, dc, dc1, dc2)`, each shaped like `a`.

    Examples:

    >>> from keras import ops
    >>> p = ops.convert_to_tensor([[0.0], [2.0], [0.0], [0.0], [0.0]])
    >>> up = {n: ops.zeros((1,)) for n in COEFFICIENTS}
    >>> up["K1Q"] = ops.ones((1,))       # case B only: K1Q = 1 / b
    >>> [float(g[0]) for g in deu_coefficient_gradient(up, *p)]
    [0.0, -0.25, 0.0, 0.0, 0.0]
    """
    q, masks = _quantities(a, b, c, c1, c2, epsilon, 0.0, critical_damping,
                           partials=True)
    hot, sign = _selection(masks, a)
    # The upstream of each quantity: the sum over the coefficients that
    # take it (`where`, not a product: the upstream of a coefficient that
    # the unit's case does not use may be anything).
    g = ops.stack([upstream[name] for name in COEFFICIENTS]) * sign
    per_quantity = ops.unstack(ops.sum(ops.where(hot, g[None], 0.0), axis=1),
                               len(QUANTITIES))
    grads = dict.fromkeys(PARAMETERS, 0.0)
    for name, up in zip(QUANTITIES, per_quantity, strict=True):
        for parameter, partial in q[name].partials.items():
            term = up if isinstance(partial, float) else up * partial
            grads[parameter] = grads[parameter] + term
    zero = ops.zeros_like(a)
    return tuple(zero + grads[name] for name in PARAMETERS)


def _phase(w, t):
    """`w t` clipped to +-PHASE_LIMIT, and 1 where it is not clipped (the
    phase's derivative), else 0."""
    angle = w * t
    limit = ops.cast(PHASE_LIMIT, angle.dtype)
    inside = ops.cast(ops.abs(angle) <= limit, angle.dtype)
    return ops.clip(angle, -limit, limit), inside


def _capped_exp(z, cap):
    # A typed cap: with a Python float, PyTorch's backend returns float32
    # for a float64 `z`.
    return ops.exp(ops.minimum(z, ops.cast(cap, z.dtype)))


def deu_evaluate(t, k, exponent_cap=14.0, expand=None):
    """Evaluates the common form at `t` for coefficients `k`.

    A term whose coefficients no unit's case uses is skipped (by
    `ops.cond`), which saves its passes over `t` forward and backward: a
    layer of damped oscillators, say, never evaluates `K1 t` or `K2 t^2`.

    Args:
        t: the input tensor.
        k: a dict from `deu_coefficients`. Without its `"live"` entry
            every term is evaluated.
        exponent_cap: the cap of every exponent.
        expand: a function lining a per-unit coefficient up with `t`
            (default: none, the coefficients already broadcast).

    Returns:
        `y(t)`, unclipped, shaped like `t`.

    Examples:

    >>> from keras import ops
    >>> k = deu_coefficients(*ops.convert_to_tensor([0.0] * 5, "float32"))
    >>> float(deu_evaluate(ops.convert_to_tensor(2.5), k))  # the identity
    2.5
    """
    expand = expand or (lambda x: x)
    live = k.get("live")
    positive = t > 0
    step = ops.cast(positive, t.dtype)

    def pick(name):
        return expand(k[name + "P"]) + step * expand(k[name + "Q"])

    def plus(y, names, term):
        """`y + term()` where a unit uses one of `names`, else `y`."""
        if live is None:
            return y + term()
        flag = ops.any(ops.stack([live[n] for n in names]))
        return cond(flag, lambda: y + term(), lambda: y)

    def g2():
        return _capped_exp(expand(k["r2"]) * t, exponent_cap)

    def oscillation():
        angle, _ = _phase(expand(k["w"]), t)
        return pick("MC") * ops.cos(angle) + pick("MS") * ops.sin(angle)

    # Where no unit oscillates (w = 0), cos(w t) = 1 and sin(w t) = 0.
    if live is None:
        inner = oscillation()
    else:
        inner = cond(live["w"], oscillation, lambda: pick("MC"))
    inner = plus(inner, ("M1P", "M1Q"), lambda: pick("M1") * t)
    y = _capped_exp(expand(k["r1"]) * t, exponent_cap) * inner
    y = plus(y, ("K0P",), lambda: expand(k["K0P"]))
    y = plus(y, ("K0Q",), lambda: step * expand(k["K0Q"]))
    y = plus(y, ("K1P", "K1Q"), lambda: pick("K1") * t)
    y = plus(y, ("K2",),
             lambda: ops.where(positive, expand(k["K2"]), 0.0) * t * t)
    y = plus(y, ("G2P", "G2Q"), lambda: pick("G2") * g2())
    return plus(y, ("S",), lambda: expand(k["S"]) / (1.0 + g2()))


def deu_value_and_slope(t, k, exponent_cap=14.0):
    """`y(t)` and `y'(t)` of the common form, for per-unit `t`.

    Used to fit the neighbouring solution of the surrogate gradient.

    Args:
        t: a tensor shaped like the coefficients (one point per unit).
        k: a dict from `deu_coefficients`.
        exponent_cap: the cap of every exponent.

    Returns:
        `(value, slope)`, tensors shaped like `t`.

    Examples:

    >>> from keras import ops
    >>> k = deu_coefficients(*ops.convert_to_tensor([0.0] * 5, "float32"))
    >>> [float(v) for v in deu_value_and_slope(ops.convert_to_tensor(3.0), k)]
    [3.0, 1.0]
    """
    positive = t > 0

    def pick(name):
        return ops.where(positive, k[name + "P"] + k[name + "Q"],
                         k[name + "P"])

    def exp_and_slope(rate):
        z = rate * t
        e = _capped_exp(z, exponent_cap)
        return e, ops.where(z < exponent_cap, rate * e, 0.0)

    g1, dg1 = exp_and_slope(k["r1"])
    g2, dg2 = exp_and_slope(k["r2"])
    angle, turning = _phase(k["w"], t)
    w = k["w"] * turning
    cos, sin = ops.cos(angle), ops.sin(angle)
    k0, k1, k2 = pick("K0"), pick("K1"), ops.where(positive, k["K2"], 0.0)
    m1, mc, ms, g2c = pick("M1"), pick("MC"), pick("MS"), pick("G2")
    inner = m1 * t + mc * cos + ms * sin
    d_inner = m1 - mc * w * sin + ms * w * cos
    value = (k0 + k1 * t + k2 * t * t + g1 * inner + g2c * g2
             + k["S"] / (1.0 + g2))
    slope = (k1 + 2.0 * k2 * t + dg1 * inner + g1 * d_inner + g2c * dg2
             - k["S"] * dg2 / ((1.0 + g2) * (1.0 + g2)))
    return value, slope


def deu_gradient(upstream, t, k, exponent_cap=14.0, limit=None,
                 axes=None, output=None, skip=True):
    """The backward pass of `deu_evaluate`, in closed form.

    With `H = [t > 0]`, `X = X_P + H X_Q`, `g1 = E(r1 t)`, `g2 = E(r2 t)`,
    `e_i = g_i` where the exponent is under its cap (else 0, as the cap is
    flat), `inner = M1 t + MC cos(w t) + MS sin(w t)`:

        dy/dt  = K1 + 2 K2 H t + r1 e1 inner
                 + g1 (M1 + w (MS cos(w t) - MC sin(w t)))
                 + r2 e2 (G2 - S / (1 + g2)^2)
        dy/dr1 = t e1 inner          dy/dw  = t g1 (MS cos - MC sin)
        dy/dr2 = t e2 (G2 - S / (1 + g2)^2)
        dy/dX_P = b_X,  dy/dX_Q = H b_X,  with the bases
        b_K0 = 1, b_K1 = t, b_M1 = g1 t, b_MC = g1 cos, b_MS = g1 sin,
        b_G2 = g2;  dy/dK2 = H t^2,  dy/dS = 1 / (1 + g2).

    Each coefficient's gradient is the sum of `upstream * dy/dX` over the
    axes where the coefficient has size 1. Everything is recomputed from
    `t`, so training keeps only `t`; the terms that `deu_evaluate` skips
    are skipped here too (their coefficients' gradients are 0: no unit's
    case uses them, so nothing upstream depends on them).

    Args:
        upstream: the gradient of the loss for the output, shaped like `t`.
        t: the input tensor.
        k: a dict from `deu_coefficients`, each coefficient already
            broadcasting against `t`. Without its `"live"` entry every
            term is computed.
        exponent_cap: the cap of every exponent.
        limit: the output clip, or None: where `|y| > limit` the output is
            clipped and no gradient passes.
        axes: the axes of `t` to sum each coefficient's gradient over
            (default: those where the coefficients' static shape is 1).
        output: the clipped output of the forward pass, if at hand: where
            `|output| < limit` no clip acted (else `y` is recomputed).
        skip: whether the terms no unit uses are skipped by conditionals
            (default), or every term is computed (for small inputs, where
            the conditionals would cost more than the terms).

    Returns:
        `(dt, grads)`: the input gradient, shaped like `t`, and a dict from
        the names in `COEFFICIENTS` to gradients shaped like each
        coefficient.

    Examples:

    >>> from keras import ops
    >>> k = deu_coefficients(*ops.convert_to_tensor(
    ...     [[0.0]] * 5, "float32"))
    >>> dt, grads = deu_gradient(ops.ones((3, 1)), ops.ones((3, 1)), k)
    >>> ops.convert_to_numpy(dt).ravel().tolist()  # the identity: slope 1
    [1.0, 1.0, 1.0]
    >>> ops.convert_to_numpy(grads["K1P"]).ravel().tolist()  # sum of t
    [3.0]
    """
    live = k.get("live")
    skip = skip and live is not None
    dtype = t.dtype

    def cond_(names, true_fn, false_fn):
        """`true_fn()` where a unit uses one of `names` (all of them
        when not skipping), else `false_fn()`."""
        if not skip:
            return true_fn()
        return cond(ops.any(ops.stack([live[n] for n in names])), true_fn,
                    false_fn)
    if limit is not None:
        limit = ops.cast(limit, dtype)
        if output is None:
            unclipped = ops.abs(deu_evaluate(t, k, exponent_cap)) <= limit
        else:
            unclipped = ops.abs(output) < limit
        upstream = ops.where(unclipped, upstream, ops.zeros_like(upstream))
    if axes is None:
        axes = [i for i, size in enumerate(k["r1"].shape) if size == 1]
    positive = t > 0
    step = ops.cast(positive, dtype)
    u, uh = upstream, upstream * step
    zero = ops.zeros_like(k["r1"])

    def total(v):
        return ops.sum(v, axis=axes, keepdims=True) if axes else v

    def split(basis):
        return total(u * basis), total(uh * basis)

    def pick(name):
        return k[name + "P"] + step * k[name + "Q"]

    def capped(rate):
        z = rate * t
        g = _capped_exp(z, exponent_cap)
        return g, ops.where(z < ops.cast(exponent_cap, dtype), g,
                            ops.zeros_like(g))

    g1, e1 = capped(k["r1"])

    def oscillating():
        angle, turning = _phase(k["w"], t)
        cos, sin = ops.cos(angle), ops.sin(angle)
        mc, ms = pick("MC"), pick("MS")
        turn = (ms * cos - mc * sin) * turning
        return (mc * cos + ms * sin, k["w"] * turn, *split(g1 * cos),
                *split(g1 * sin), total(u * g1 * t * turn))

    def still():
        return (pick("MC"), ops.zeros_like(t), *split(g1), zero, zero, zero)

    inner, d_inner, dmcp, dmcq, dmsp, dmsq, dw = cond_(
        ("w",), oscillating, still)
    grads = {"w": dw, "MCP": dmcp, "MCQ": dmcq, "MSP": dmsp, "MSQ": dmsq}

    def ramp():
        m1 = pick("M1")
        return (inner + m1 * t, d_inner + m1, *split(g1 * t))

    inner, d_inner, grads["M1P"], grads["M1Q"] = cond_(
        ("M1P", "M1Q"), ramp, lambda: (inner, d_inner, zero, zero))
    slope = k["r1"] * e1 * inner + g1 * d_inner
    grads["r1"] = total(u * e1 * t * inner)

    grads["K0P"] = cond_(("K0P",), lambda: total(u), lambda: zero)
    grads["K0Q"] = cond_(("K0Q",), lambda: total(uh), lambda: zero)

    def linear():
        return (slope + pick("K1"), *split(t))

    slope, grads["K1P"], grads["K1Q"] = cond_(
        ("K1P", "K1Q"), linear, lambda: (slope, zero, zero))

    def quadratic():
        return (slope + 2.0 * k["K2"] * step * t, total(uh * t * t))

    slope, grads["K2"] = cond_(("K2",), quadratic, lambda: (slope, zero))

    def second():
        g2, e2 = capped(k["r2"])
        q = 1.0 / (1.0 + g2)
        weight = pick("G2") - k["S"] * q * q
        dg2p, dg2q = split(g2)
        return (slope + k["r2"] * e2 * weight, dg2p, dg2q, total(u * q),
                total(u * e2 * t * weight))

    slope, grads["G2P"], grads["G2Q"], grads["S"], grads["r2"] = cond_(
        ("G2P", "G2Q", "S"), second,
        lambda: (slope, zero, zero, zero, zero))
    return u * slope, grads


def deu_pack(k):
    """The coefficients of `deu_coefficients` as two tensors.

    Args:
        k: a dict from `deu_coefficients`.

    Returns:
        `(coefficients, used)`: the coefficients and their `"used"` masks
        (as 0 or 1 in the coefficients' dtype), each stacked in the order
        of `COEFFICIENTS` on a new first axis.

    Examples:

    >>> from keras import ops
    >>> k = deu_coefficients(*ops.convert_to_tensor([[0.0]] * 5, "float32"))
    >>> packed, used = deu_pack(k)
    >>> tuple(packed.shape), tuple(used.shape)
    ((17, 1), (17, 1))
    """
    coefficients = ops.stack([k[n] for n in COEFFICIENTS])
    used = ops.stack([ops.cast(k["used"][n], coefficients.dtype)
                      for n in COEFFICIENTS])
    return coefficients, used


COUNT = len(COEFFICIENTS)


def _neighbour_fits(k, t0, exponent_cap, limit):
    """`c1, c2` of the neighbouring solutions, fitted so that value and
    slope match the units' own at `t0`.

    `k` holds the coefficients of four rows (a first axis of 4): the
    units' own and the neighbours' with `(c1, c2)` set to `(0, 0)`,
    `(1, 0)` and `(0, 1)`. Returns the fitted `(c1, c2)` stacked on a new
    first axis."""
    values, slopes = deu_value_and_slope(t0, k, exponent_cap)
    (value, v0, v1, v2), (slope, s0, s1, s2) = (
        ops.unstack(v, 4) for v in (values, slopes))
    zero, one = ops.zeros_like(value), ops.ones_like(value)
    det = (v1 - v0) * (s2 - s0) - (v2 - v0) * (s1 - s0)
    solvable = ops.logical_and(ops.abs(det) > 1e-12, ops.isfinite(det))
    det = ops.where(solvable, det, one)
    rv, rs = value - v0, slope - s0
    found = (((s2 - s0) * rv - (v2 - v0) * rs) / det,
             ((v1 - v0) * rs - (s1 - s0) * rv) / det)
    limit = ops.cast(limit, one.dtype)
    return ops.stack([
        ops.clip(ops.where(ops.logical_and(solvable, ops.isfinite(f)), f,
                           zero), -limit, limit)
        for f in found])


@functools.lru_cache(maxsize=None)
def _coefficient_kernel(epsilon, step_sharpness, critical_damping,
                        exponent_cap, output_clip, surrogate):
    """The coefficients of every unit, with the closed-form backward pass
    of `deu_coefficient_gradient`; one function for every layer with these
    settings.

    It takes the five parameters stacked on the first axis and, with
    `surrogate`, a sixth row: the mean input `t0` of each unit on the head
    of the batch. It returns, concatenated on the first axis, the
    coefficients and their `used` masks of `deu_pack`; with `surrogate`,
    also those of the neighbouring solutions (the small ones of `a, b, c`
    moved to `+-epsilon`, `c1, c2` refitted so that value and slope match
    at `t0`), a 0/1 row, 1 for a degenerate unit, and the neighbours' five
    parameters (read back by the backward pass, not refitted there). The
    gradient the neighbours' coefficients receive (from
    `_evaluation_kernel`) is passed on to the small coefficients only
    (the refitted `c1, c2` and `t0` get none)."""
    def coefficients(*params):
        return _coefficient_rows(*params, epsilon, step_sharpness,
                                 critical_damping)

    def small(params):
        return ops.abs(params[:3]) < epsilon

    def forward(params):
        if not surrogate:
            return ops.concatenate(coefficients(*ops.unstack(params, 5)),
                                   axis=0)
        # One evaluation of the coefficients, on four rows: the units' own
        # and the neighbours' (the small ones of a, b, c moved to
        # +-epsilon) with (c1, c2) = (0, 0), (1, 0), (0, 1). The
        # coefficients are linear in c1 and c2 for given a, b, c (and
        # which are used does not depend on them), so those of the
        # neighbours with the fitted c1, c2 follow from the last three.
        abc = params[:3]
        ones = ops.ones_like(abc)
        moved = ops.where(small(params),
                          epsilon * ops.where(abc < 0, -ones, ones), abc)
        # Five (parameter) by four (solution) rows, one value per unit.
        unit_c = ops.reshape(
            ops.convert_to_tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                                  params.dtype),
            (2, 3) + (1,) * (len(params.shape) - 1))
        rows = ops.concatenate([
            params[:5, None],
            ops.concatenate([ops.repeat(moved[:, None], 3, axis=1),
                             unit_c * ops.ones_like(params[3:5, None])],
                            axis=0)], axis=1)
        values, used = coefficients(*ops.unstack(rows, 5))
        fits = _neighbour_fits(
            dict(zip(COEFFICIENTS, ops.unstack(values, COUNT), strict=True)),
            params[5], exponent_cap, output_clip)
        base = values[:, 1]
        near = (base + fits[0] * (values[:, 2] - base)
                + fits[1] * (values[:, 3] - base))
        packed = [values[:, 0], used[:, 0], near, used[:, 1],
                  ops.cast(ops.any(small(params), axis=0),
                           params.dtype)[None],
                  # The neighbours' parameters last, for the backward pass.
                  moved, fits]
        return ops.concatenate(packed, axis=0)

    def backward(upstream, packed, params):
        # The masks' upstream is ignored: they are piecewise constant.
        # With `surrogate`, the units' own coefficients and the
        # neighbours' (their upstream from row `2 * COUNT`, their
        # parameters from row `4 * COUNT + 1`) are differentiated
        # together, as two columns.
        solutions = [params[:5]]
        firsts = [0]
        if surrogate:
            solutions.append(packed[4 * COUNT + 1:])
            firsts.append(2 * COUNT)
        both = ops.stack(solutions, axis=1)
        grads = ops.stack([upstream[first:first + COUNT] for first in firsts],
                          axis=1)
        grads = dict(zip(COEFFICIENTS, ops.unstack(grads, COUNT),
                         strict=True))
        grads = ops.stack(deu_coefficient_gradient(
            grads, *ops.unstack(both, 5), epsilon, critical_damping))
        if not surrogate:
            return (grads[:, 0],)
        near = ops.where(small(params), grads[:3, 1],
                         ops.zeros_like(grads[:3, 1]))
        return (ops.concatenate(
            [grads[:3, 0] + near, grads[3:, 0], ops.zeros_like(params[5:])],
            axis=0),)

    rows = 4 * COUNT + 6 if surrogate else 2 * COUNT
    return with_gradient(forward, backward,
                         lambda shape: (rows, *shape[1:]))


@functools.lru_cache(maxsize=None)
def _fit_outputs(epsilon, step_sharpness, critical_damping, exponent_cap):
    """`outputs(params, t)`: the unclipped output on `t` (shape `(1, n)`)
    of the units whose five parameters are stacked on the first axis of
    `params` (shape `(5, units, 1)`), for the initial-function search,
    which calls it about forty times: one traced function (`shared`), not
    hundreds of separate operations per call."""
    def outputs(params, t):
        k = deu_coefficients(*ops.unstack(params, 5), epsilon,
                             step_sharpness, critical_damping)
        return deu_evaluate(t, k, exponent_cap)

    return shared(outputs)


@functools.lru_cache(maxsize=None)
def _inference_rows(epsilon, step_sharpness, critical_damping):
    """The coefficients and `used` masks of `_coefficient_rows`,
    concatenated, of the five parameters stacked on the first axis, for
    inference; traced once for eager calls (`eager_traced`: a snapshot's
    probe and `curve` call every DEU eagerly, which on TensorFlow ran its
    hundreds of per-unit operations one at a time, about 10 ms a call on a
    2-core CPU), inline in a graph."""
    def rows(params):
        return ops.concatenate(_coefficient_rows(
            *ops.unstack(params, 5), epsilon, step_sharpness,
            critical_damping), axis=0)

    return eager_traced(rows)


def _skips_terms():
    """Whether DEU's backward pass skips the terms no unit uses, by
    conditionals: everywhere but compiled PyTorch, where a conditional
    would split the compiled graph. (On JAX, computing every term took the
    benchmark CNN's train step from 2.06x ReLU's to 2.78x and its memory
    from 2.35x to 4.30x.)"""
    return not compiles()


def _unpack(packed, first, layout, live):
    """The coefficients at rows `first...` of `packed` (see
    `_coefficient_kernel`) as `deu_evaluate` takes them, reshaped to
    `layout`; with `live`, the flags of the terms some unit uses (from the
    `used` rows that follow them)."""
    rows = ops.reshape(packed[first:first + COUNT], (COUNT, *layout))
    k = dict(zip(COEFFICIENTS, ops.unstack(rows, COUNT), strict=True))
    if live:
        used = ops.reshape(packed[first + COUNT:first + 2 * COUNT],
                           (COUNT, -1))
        k["live"] = dict(zip(COEFFICIENTS, ops.unstack(
            ops.max(used, axis=1) > 0.5, COUNT), strict=True))
    return k


def _canonical_shape(dims, channel):
    """The shape of the view in which DEU evaluates an input of shape
    `dims` (its sizes, ints or, where unknown, scalar tensors):
    `(batch, positions before the channel axis, channels)`, and where the
    channel axis is not the last, the positions after it as a fourth axis.
    `channel` is the channel axis, or None for one unit per layer. Every
    channels-last input then takes the same kernels and backward pass,
    each traced once per process whatever the input's rank (a CIFAR
    network of convolutions and dense layers traced both twice). A
    trailing axis of size 1 is not added: TensorFlow's kernels took 15 %
    longer on a 256x32x32x64 input viewed as 256x1024x64x1.
    """
    def product(sizes):
        return functools.reduce(lambda x, y: x * y, sizes, 1)

    if channel is None:
        return (dims[0], product(dims[1:]), 1)
    after = product(dims[channel + 1:])
    shape = (dims[0], product(dims[1:channel]), dims[channel])
    return shape if isinstance(after, int) and after == 1 else (*shape, after)


def _layout(rank):
    """How a per-unit row lines up with the view of `_canonical_shape`,
    and the axes that a per-unit gradient sums over."""
    return (1, 1, -1, 1)[:rank], [0, 1, 3][:rank - 1]


def _evaluation(exponent_cap, output_clip, rank, training):
    """`_evaluate_kernel` for training or inference: one function for both
    but on JAX, where they differ (see there)."""
    jax_training = training and keras.backend.backend() == "jax"
    return _evaluate_kernel(exponent_cap, output_clip, rank, jax_training)


@functools.lru_cache(maxsize=None)
def _evaluate_kernel(exponent_cap, output_clip, rank, jax_training):
    """`evaluate(t, packed)`: the clipped common form of `t` (the view of
    `_canonical_shape`, of rank `rank`) for the coefficients and `used` masks
    packed as `deu_pack` does (rows `0..2 * COUNT`); one function for
    every layer with these settings, whatever its input.

    On TensorFlow it is one XLA kernel that computes every term (about
    0.15 s to compile per input shape; on a 128x32x32x32 input 18 ms
    against 40 ms for the skipping form in TensorFlow's own kernels); on
    PyTorch, `torch.compile`'s kernel, every term too. JAX computes every
    term in inference (the benchmark CNN's predict 2.51x -> 2.16x ReLU's)
    and skips the unused ones in training (every term there: train step
    2.06x -> 2.82x); uncompiled PyTorch skips them."""
    layout, _ = _layout(rank)
    backend = keras.backend.backend()
    live = jax_training or (backend == "torch" and not compiles())

    def evaluate(t, packed):
        y = deu_evaluate(t, _unpack(packed, 0, layout, live), exponent_cap)
        limit = ops.cast(output_clip, y.dtype)
        return ops.clip(y, -limit, limit)

    if backend == "tensorflow":
        return xla_kernel(evaluate)
    return compiled(evaluate)


@functools.lru_cache(maxsize=None)
def _evaluation_kernel(exponent_cap, output_clip, rank, surrogate):
    """`_evaluation` with the closed-form backward pass of `deu_gradient`,
    for the coefficients that `_coefficient_kernel` packs.

    With `surrogate`, the backward pass also returns the gradient of the
    neighbouring solutions' coefficients: theirs on the head of the batch
    (`SURROGATE_EXAMPLES` examples) for the degenerate units, scaled up to
    the batch size (see `DEU`). Their value is not evaluated."""
    layout, axes = _layout(rank)
    skip = _skips_terms()

    def stacked(grads, like):
        """Per-coefficient gradients as rows shaped like `like`'s."""
        return ops.reshape(ops.stack([grads[n] for n in COEFFICIENTS]),
                           ops.shape(like))

    def backward(upstream, y, t, packed):
        k = _unpack(packed, 0, layout, skip)

        def own(upstream, t, y):
            dt, grads = deu_gradient(upstream, t, k, exponent_cap,
                                     output_clip, axes, y)
            return dt, stacked(grads, packed[:COUNT])

        # In chunks of the batch on TensorFlow (`in_chunks`): the 17 sums'
        # passes then run in the CPU's cache.
        dt, grads = in_chunks(own, (upstream, t, y),
                              ops.zeros_like(packed[:COUNT]))
        rows = [grads, ops.zeros_like(packed[COUNT:2 * COUNT])]
        if surrogate:
            head = t[:SURROGATE_EXAMPLES]
            scale = ops.cast(ops.shape(t)[0], t.dtype) / ops.cast(
                ops.shape(head)[0], t.dtype)
            degenerate = ops.reshape(packed[4 * COUNT], layout)
            _, near = deu_gradient(
                upstream[:SURROGATE_EXAMPLES] * (scale * degenerate), head,
                _unpack(packed, 2 * COUNT, layout, False), exponent_cap,
                output_clip, axes)
            rows += [stacked(near, packed[:COUNT]),
                     ops.zeros_like(packed[3 * COUNT:])]
        return dt, ops.concatenate(rows, axis=0)

    return with_gradient(
        _evaluation(exponent_cap, output_clip, rank, True),
        compiled(backward))


def _row_view(index, name):
    """A read-only property: row `index` (the parameter `name`) of a DEU's
    `ode_parameters`."""
    return property(lambda layer: layer.ode_parameters[index],
                    doc=f"Row `{name}` of `ode_parameters` (a tensor).")


@keras.saving.register_keras_serializable(package="keras_learnact")
class DEU(LearnableActivation):
    """Differential Equation Unit: the learned step response of an ODE.

    Each unit learns the solution of

        a y''(t) + b y'(t) + c y(t) = H(t),     H(t) = 1 if t > 0 else 0,

    with the pre-activation `t` as time:

        y(t) = c1 phi1(t) + c2 phi2(t) + H(t) yp(t),

    where `phi1, phi2` span the homogeneous solutions, `yp` is the step
    response with `yp(0) = yp'(0) = 0`, and `a, b, c, c1, c2` are learned
    (the rows of the weight `ode_parameters`, `a`, `b`, `c` initialised
    `U(0, 1)`, `c1`, `c2` zeros; `layer.a` and so on read them). With
    `E(z) = exp(min(z, exponent_cap))` and `A = |a| >= eps`,
    `B = |b| >= eps`, `C = |c| >= eps`, `D = b^2 - 4ac`, each unit is in one
    of eleven cases chosen from its current parameters:

    | case | closed form |
    |---|---|
    | A=B=C=0 | `t` |
    | C only | `1 / (c (1 + E(-sigma t)))` |
    | B only | `H t / b + c1` |
    | B, C | `c1 E(-ct/b) + H (1 - E(-ct/b)) / c` |
    | A only | `H t^2 / (2a) + c1 t + c2` |
    | A, C, ac > 0 | `c1 cos(wt) + c2 sin(wt) + H (1 - cos(kt)) / c` |
    | A, C, ac < 0 | `c1 E(-lt) + c2 E(lt) - H (E(kt) - 2 + E(-kt)) / (2c)` |
    | A, B | `c2 - c1 (a/b) E(-bt/a) + H [t/b - (a/b^2)(1 - E(-bt/a))]` |
    | A, B, C, abs(D) < eps | critically damped, rate `r = -b/(2a)` |
    | A, B, C, D < 0 | underdamped |
    | A, B, C, D > 0 | overdamped |

    (`k = sqrt(|c/a|)`, `w = sign(a) k`, `l = sign(a) k`; the damped forms
    are in docs/layers/deu.md.) The output is clipped to
    `[-output_clip, output_clip]`, and the phase `w t` of the oscillating
    cases to `+-PHASE_LIMIT` (65536, about 10^4 periods, past which float32
    cannot resolve the phase; TensorFlow Lite's cosine fails there).

    Every case is written in one common form (two capped exponentials, a
    cosine and a sine of per-unit rates, a quadratic and a smoothed step,
    with per-unit coefficients), so the whole tensor is evaluated at once,
    whatever mix of cases the units are in, at the cost of about one case.

    Degenerate cases (any of `|a|, |b|, |c|` below `epsilon`) do not depend
    on the small coefficient, so it would get no gradient and stay stuck.
    With `surrogate_gradient=True` (default, as in the reference) its
    gradient is taken from the neighbouring non-degenerate solution: the
    small coefficients moved to `+-epsilon`, `c1, c2` refitted so that value
    and slope match the degenerate solution at the mean input of the first
    8 examples of the batch, on which the neighbour's gradient is taken and
    scaled up to the batch size; the forward value is unchanged. It is
    applied whenever `training` is not False.

    Args:
        granularity: `"channel"` (default: one ODE per unit after a `Dense`
            layer, per channel after a convolution) or `"layer"`.
        axis: the channel axis for channel granularity (default -1).
        epsilon: a coefficient with `|x| < epsilon` counts as zero (0.01).
        step_sharpness: `sigma` of the smoothed step of the case `c y = H`
            (100).
        exponent_cap: every exponent is capped at this value (14).
        output_clip: the output is clipped to `[-output_clip, output_clip]`
            (default 10; no gradient passes where it is clipped).
            `output_clip=1000.0` reproduces the reference, whose loose clip
            lets a unit that has learned a growing exponential spike the
            loss: Dense(8)-DEU-Dense(1) on a toy regression
            (`python examples/deu_output_clip.py toy`, seeds 0-4) ended
            1.5-7 times above ReLU's loss on four seeds with 1000, and
            below it on every seed with 10; 30, 5 and 3 each failed a seed
            in one of the toy's variants. With 10, DEU kept its accuracy on
            the digits demo, and its test MSE in the diabetes example was
            0.61-0.80 where 1000 gave 700-3800 (tables in
            docs/layers/deu.md).
        critical_damping: `"exact"` (default) for the true critically damped
            solution, or `"reference"` for the reference code's version,
            which snaps `a` and `c` to `sign * |b| / 2` (rate `+-1`).
        surrogate_gradient: whether degenerate coefficients get the
            neighbouring solution's gradient (default True).
        **kwargs: `initial_function` and `initial_range` (see
            `LearnableActivation`; the five parameters are fitted by a
            deterministic search, see `_fit_parameters`), and base layer
            keyword arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.Dense(4),
    ...     kla.layers.DEU(),
    ...     keras.layers.Dense(2),
    ... ])
    >>> layer = model.layers[1]
    >>> print(", ".join(w.name for w in layer.weights),
    ...       tuple(layer.ode_parameters.shape))
    ode_parameters (5, 4)
    >>> print(", ".join(layer.parameter_values()))
    a, b, c, c1, c2
    >>> tuple(layer.a.shape)  # a view of row 0
    (4,)

    Reference:
        Torkamani, Shankar, Rooshenas, Wallis, "Differential Equation
        Units: Learning Functional Forms of Activation Functions from Data",
        AAAI 2020, arXiv:1909.03069.
    """

    def __init__(self, granularity="channel", axis=-1, epsilon=0.01,
                 step_sharpness=100.0, exponent_cap=14.0, output_clip=10.0,
                 critical_damping="exact", surrogate_gradient=True, **kwargs):
        super().__init__(granularity=granularity, axis=axis, **kwargs)
        self.epsilon = check_number("epsilon", epsilon, 0.0, low_open=True)
        self.step_sharpness = check_number(
            "step_sharpness", step_sharpness, 0.0, low_open=True
        )
        self.exponent_cap = check_number(
            "exponent_cap", exponent_cap, 0.0, 80.0, low_open=True
        )
        self.output_clip = check_number(
            "output_clip", output_clip, 0.0, 1e30, low_open=True
        )
        self.critical_damping = check_choice(
            "critical_damping", critical_damping, CRITICAL_DAMPING
        )
        if not isinstance(surrogate_gradient, bool):
            raise ValueError(
                f"Invalid surrogate_gradient={surrogate_gradient!r}: "
                "expected True or False."
            )
        self.surrogate_gradient = surrogate_gradient

    def build(self, input_shape):
        super().build(input_shape)
        unit = self.param_shape()

        def initial(shape, dtype=None):
            # One draw each for a, b, c (a = b = c would make every unit
            # underdamped, D = -3a^2), in the order of the five weights
            # this layer had before they were one; c1, c2 zeros.
            draws = [keras.initializers.RandomUniform(0.0, 1.0)(unit, dtype)
                     for _ in range(3)]
            return ops.stack([*draws, *[ops.zeros(unit, dtype)] * 2])

        # One weight for the five parameters: an optimizer's work per
        # training step and per trace grows with the number of variables
        # (Keras's Adam on TensorFlow traced 44 variables in 2.1 s, 20 in
        # 0.9 s before a first step), and DEU's kernels take them stacked.
        self.ode_parameters = self.add_weight(
            name="ode_parameters", shape=(len(PARAMETERS), *unit),
            initializer=initial)

    # `layer.a` ... `layer.c2`: read-only views of the rows (assign to
    # `ode_parameters` to set them).
    a, b, c, c1, c2 = (_row_view(i, name) for i, name in enumerate(PARAMETERS))

    def parameter_values(self):
        """The five parameters as NumPy arrays.

        Returns:
            A dict from `"a"`, `"b"`, `"c"`, `"c1"`, `"c2"` to arrays of
            one value per unit (the rows of `ode_parameters`), as
            snapshots, `explain` and `health` read them.

        Examples:

        >>> import keras_learnact as kla
        >>> layer = kla.layers.DEU(granularity="layer")
        >>> layer.build((None, 3))
        >>> float(layer.parameter_values()["c1"])
        0.0
        """
        values = ops.convert_to_numpy(self.ode_parameters.value)
        return {name: np.asarray(values[i])
                for i, name in enumerate(PARAMETERS)}

    def load_own_variables(self, store):
        """Loads the layer's weight, also from files saved when the five
        parameters were five weights (`a, b, c, c1, c2`, in this order).

        Args:
            store: the saved variables, by position (`"0"`, `"1"`, ...).
        """
        if len(store.keys()) == len(PARAMETERS):
            self.ode_parameters.assign(np.stack(
                [np.asarray(store[str(i)]) for i in range(len(PARAMETERS))]))
            return
        super().load_own_variables(store)

    def _dtype(self):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        return "float64" if dtype == "float64" else "float32"

    def call(self, inputs, training=None):
        dims = ops.shape(inputs)
        channel = len(dims) + self._axis_from_end if (
            self.granularity == "channel") else None
        # Integer inputs are computed in the float dtype, as in Dense.
        t = ops.reshape(ops.cast(inputs, self._dtype()),
                        _canonical_shape(dims, channel))
        y = self._evaluate(t, training)
        return ops.reshape(ops.cast(y, self.compute_dtype), dims)

    def _evaluate(self, t, training):
        """The output for the view `t` of the input (`_canonical_shape`)."""
        params = ops.cast(self.ode_parameters, self._dtype())
        settings = (self.epsilon, self.step_sharpness, self.critical_damping)
        clip = (self.exponent_cap, self.output_clip)
        rank = len(t.shape)
        if training is False:
            # Inference: the coefficients (`_inference_rows`), then the
            # evaluation kernel; there is no backward pass to share.
            packed = _inference_rows(*settings)(params)
            return _evaluation(*clip, rank, False)(t, packed)
        surrogate = self.surrogate_gradient
        if surrogate:
            # For the neighbouring solutions of the degenerate units (see
            # `_coefficient_kernel`): the mean input of each unit on the
            # head of the batch, where their gradient is estimated.
            t0 = ops.mean(ops.stop_gradient(t[:SURROGATE_EXAMPLES]),
                          axis=_layout(rank)[1])
            params = ops.concatenate(
                [params, ops.reshape(t0, (1, *params.shape[1:]))], axis=0)
        packed = _coefficient_kernel(*settings, *clip, surrogate)(params)
        return _evaluation_kernel(*clip, rank, surrogate)(t, packed)

    def get_config(self):
        config = super().get_config()
        config.update({
            "epsilon": self.epsilon,
            "step_sharpness": self.step_sharpness,
            "exponent_cap": self.exponent_cap,
            "output_clip": self.output_clip,
            "critical_damping": self.critical_damping,
            "surrogate_gradient": self.surrogate_gradient,
        })
        return config

    # -- fitting to a function (LearnableActivation.fit_to) --------------------

    # The fits to the named functions, by settings and samples: every DEU
    # of a converted model starts from the same search.
    _fitted = {}
    # The grid of (a, b, c) that the search starts from, and how many of
    # its best points it refines.
    FIT_GRID = (-2.0, -1.0, -0.5, -0.2, -0.05, 0.0, 0.05, 0.2, 0.5, 1.0, 2.0)
    FIT_STARTS = 8
    FIT_ITERATIONS = 40
    FIT_SEARCH_SAMPLES = 200

    def _fit_parameters(self, function, x, weights):
        """The five parameters by a deterministic search.

        `y` is linear in `c1, c2` (`y = y0 + c1 phi1 + c2 phi2` before the
        output clip, `y0, phi1, phi2` depending on `a, b, c`), so for any
        `a, b, c` the best `c1, c2` come from a 2x2 weighted least squares
        problem, and only `(a, b, c)` is searched: every point of the grid
        `FIT_GRID`^3 (the degenerate cases included, so ReLU
        `(0, 1, 0, 0, 0)`, the identity and ELU are found exactly), then a
        pattern search from the `FIT_STARTS` best, polling the 26
        neighbours of each point at two step sizes, doubling a step that
        improved and halving one that did not. The error is the weighted
        squared error of the clipped output; the search runs on at most
        `FIT_SEARCH_SAMPLES` of the points, the final `c1, c2` on all.
        """
        key = None
        if any(function is f for f in _initial.FUNCTIONS.values()):
            key = (function, x.tobytes(), weights.tobytes(), self.epsilon,
                   self.step_sharpness, self.exponent_cap, self.output_clip,
                   self.critical_damping, self._dtype())
        found = self._fitted.get(key) if key else None
        if found is None:
            found = self._fit_search(_initial.evaluate(function, x), x,
                                     weights)
            if key:
                if len(self._fitted) >= 64:
                    self._fitted.clear()
                self._fitted[key] = found
        shape = (len(PARAMETERS),) + (1,) * (len(self.ode_parameters.shape) - 1)
        self._assign(self.ode_parameters, np.reshape(found, shape))

    def _fit_search(self, target, x, weights):
        """The search of `_fit_parameters`; returns `(a, b, c, c1, c2)`."""
        every = max(1, len(x) // self.FIT_SEARCH_SAMPLES)
        sample = (x[::every], target[::every], weights[::every])
        grid = np.asarray(self.FIT_GRID)
        points = np.array(list(itertools.product(grid, grid, grid)))
        _, errors = self._fit_linear(points, *sample)
        best = np.argsort(errors, kind="stable")[:self.FIT_STARTS]
        points, errors = points[best], errors[best]
        cube = np.array([m for m in itertools.product((-1.0, 0.0, 1.0),
                                                      repeat=3) if any(m)])
        moves = np.concatenate([cube, 0.2 * cube])
        steps = np.full(len(points), 0.1)
        starts = np.arange(len(points))
        for _ in range(self.FIT_ITERATIONS):
            trials = points[:, None, :] + steps[:, None, None] * moves
            _, trial_errors = self._fit_linear(trials.reshape(-1, 3),
                                               *sample)
            trial_errors = trial_errors.reshape(len(points), len(moves))
            choice = np.argmin(trial_errors, axis=1)
            better = trial_errors[starts, choice] < errors * (1 - 1e-9)
            points = np.where(better[:, None], trials[starts, choice],
                              points)
            errors = np.where(better, trial_errors[starts, choice], errors)
            steps = np.where(better, np.minimum(2.0 * steps, 1.0),
                             0.5 * steps)
            if np.all(steps < 1e-4):
                break
        linear, errors = self._fit_linear(points, x, target, weights)
        best = int(np.argmin(errors))
        return (*points[best], *linear[best])

    def _fit_linear(self, abc, x, target, weights):
        """For each row `(a, b, c)` of `abc`: the best `(c1, c2)` and the
        weighted squared error of the clipped output with them."""
        count = len(abc)
        units = np.concatenate([
            np.repeat(abc, 3, axis=0),
            np.tile([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], (count, 1))],
            axis=1)
        dtype = self._dtype()
        outputs = _fit_outputs(self.epsilon, self.step_sharpness,
                               self.critical_damping, self.exponent_cap)
        y = outputs(ops.convert_to_tensor(units.T[:, :, None], dtype),
                    ops.convert_to_tensor(x[None, :], dtype))
        y = np.asarray(ops.convert_to_numpy(y), "float64").reshape(
            count, 3, len(x))
        base = y[:, 0]
        basis = y[:, 1:] - base[:, None]
        basis = np.where(np.isfinite(basis), basis, 0.0)
        gram = np.einsum("pim,pjm,m->pij", basis, basis, weights)
        moment = np.einsum("pim,pm,m->pi", basis, target - base, weights)
        linear = np.einsum("pij,pj->pi", np.linalg.pinv(gram, rcond=1e-10),
                           moment)
        linear = np.clip(linear, -100.0 * self.output_clip,
                         100.0 * self.output_clip)
        outputs = np.clip(base + np.einsum("pi,pim->pm", linear, basis),
                          -self.output_clip, self.output_clip)
        errors = _initial.weighted_error(outputs, target, weights)
        return linear, np.where(np.isfinite(errors), errors, np.inf)
