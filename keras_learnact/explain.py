"""What each unit learned: the closest named activation, and the exact form.

`explain(source)` takes a model, a layer, a `Snapshots` object or a
snapshot file and gives, for every unit (channel) of every learnable
activation:

* the closest function of the affine family `a * f(b * x + c) + d`, with
  `f` among `SHAPES` (relu, leaky_relu, elu, gelu, swish, tanh, sigmoid,
  softplus, identity, abs, square, sin), fitted by weighted least squares
  over the inputs the unit really received (its recorded input range,
  each point weighted by the recorded input histogram; the whole grid,
  uniformly, when no probe batch was recorded), with the fit's R^2 and its
  largest error on that range;
* the family's own exact description: ABU its blend, AdaptiveScaling
  `alpha * g(x)`, PWLU its knots and tail slopes, SLAF its polynomial in
  `x`, DEU its ODE `a y'' + b y' + c y = H(t)` with its case named,
  Rational its `P(x) / Q(x)`. A family without a description here still
  gets the affine fit, and its parameters listed.

The fit: for fixed `(b, c)` the best `a, d` are a weighted linear
regression, so only `(b, c)` is searched, on the inputs scaled to
`[-1, 1]`: a grid of 26 scales (both signs) times 31 centres, then a
Levenberg-Marquardt refinement of the six best functions.
Everything is NumPy (about a second for a few hundred units); only a
model or layer source needs Keras, to evaluate its curves.

`keras_learnact.explain` is both this module and its function `explain`
(calling the module calls the function).

Args:
    (of `explain`) source, layers, epoch, probe, grid: see `explain`.

Returns:
    (of `explain`) an `Explanation`, a list of `UnitExplanation` rows.

Examples:

>>> import keras_learnact as kla
>>> layer = kla.layers.AdaptiveScaling("relu")
>>> layer.build((None, 2))
>>> print(kla.explain(layer))  # doctest: +NORMALIZE_WHITESPACE
layer             ch  closest named shape  R^2     max err  inputs    exact
----------------  --  -------------------  ------  -------  --------  -----
adaptive_scaling  0   relu(x)              1.0000  0        [-4, 4]*  relu(x)
* inputs not recorded: fitted uniformly on the grid (or the recorded range)
"""

import dataclasses
import math
import os
import sys
import types

import numpy as np

from keras_learnact import snapshots as snapshot_files

# The named shapes, in the order preferred when two fit equally well (the
# simpler first: the identity before a ReLU whose kink is off the range).
SHAPES = ("identity", "relu", "leaky_relu", "abs", "square", "elu",
          "softplus", "swish", "gelu", "tanh", "sigmoid", "sin")
# Two fits count as equally good when the unexplained share of one,
# 1 - R^2, is within TIE_FACTOR times the other's plus TIE (the simpler
# shape is then named).
TIE = 1e-10
TIE_FACTOR = 2.0
# A unit is fitted on the grid points in its input range (the curves'
# exact values), or on this many interpolated points where fewer lie there.
MIN_POINTS = 16
# The search grid, on inputs scaled to [-1, 1]: scales and centres.
SCALES = tuple(2.0 ** (np.arange(-4, 9) / 2))
CENTRES = tuple(np.linspace(-1.5, 1.5, 31))
REFINED = 6
REFINE_STEPS = 40


def _erf(x):
    """erf to about 1e-7 (Abramowitz and Stegun 7.1.26), vectorised (the
    layers' `_initial.FUNCTIONS` use an exact erf, one Python call per
    point)."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (
        1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)


# The shapes with the values of the Keras activations of the same names,
# as in `keras_learnact.layers._initial.FUNCTIONS` (tests check they
# agree); written here because importing `keras_learnact.layers` imports
# Keras, and explaining a snapshot file must not.
FUNCTIONS = {
    "identity": lambda x: 1.0 * x,
    "relu": lambda x: np.maximum(x, 0.0),
    # keras.activations.leaky_relu's default negative slope.
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "swish": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    # Keras's gelu is exact (approximate=False) by default.
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "abs": np.abs,
    "square": np.square,
    "sin": np.sin,
}

__all__ = ["Explanation", "FUNCTIONS", "SHAPES", "UnitExplanation",
           "describe", "explain", "fit_shapes"]


def _num(value):
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


@dataclasses.dataclass
class UnitExplanation:
    """What one unit computes: its closest named shape and exact form.

    Args:
        (the attributes below, in order; `explain` makes the rows)

    Attributes:
        layer: the layer's name.
        layer_class: its class name (`"ABU"`, ...).
        channel: the channel (unit) index.
        epoch: the snapshot's epoch (None for a live model or layer).
        function: the closest named shape (from `SHAPES`), `"constant"`
            for a flat unit, or `"nonfinite"` for a curve with NaN or inf.
        a, b, c, d: the fit `a * function(b * x + c) + d`.
        r2: the fit's R^2 over the input range, weighted as fitted (1 is
            a perfect fit; NaN for a non-finite curve).
        max_error: the largest absolute error of the fit on the range.
        low, high: the input range the unit was fitted on.
        weighted: whether the points were weighted by an input histogram
            (False: uniformly, over the grid or the recorded range).
        description: the family's exact description of this unit.

    Examples:

    >>> row = UnitExplanation("abu", "ABU", 0, 3, "tanh", 2.0, 1.0, 0.0,
    ...                       0.0, 0.999, 0.01, -1.0, 1.0, True, "...")
    >>> row.formula
    '2 * tanh(x)'
    """

    layer: str
    layer_class: str
    channel: int
    epoch: object
    function: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    max_error: float
    low: float
    high: float
    weighted: bool
    description: str

    @property
    def formula(self):
        """The fit as text: `a * f(b * x + c) + d`, simplified."""
        if self.function == "nonfinite":
            return "non-finite"
        if self.function == "constant":
            return _num(self.d)
        if self.function == "identity":
            slope, offset = self.a * self.b, self.a * self.c + self.d
            text = "x" if _num(slope) == "1" else f"{_num(slope)} * x"
        else:
            inner = "x" if _num(self.b) == "1" else f"{_num(self.b)} * x"
            if _num(self.c) != "0":
                sign = "-" if self.c < 0 else "+"
                inner += f" {sign} {_num(abs(self.c))}"
            text = f"{self.function}({inner})"
            if _num(self.a) == "-1":
                text = "-" + text
            elif _num(self.a) != "1":
                text = f"{_num(self.a)} * {text}"
            offset = self.d
        if _num(offset) != "0":
            text += f" {'-' if offset < 0 else '+'} {_num(abs(offset))}"
        return text

    def to_dict(self):
        """The row as a plain dict (JSON-ready), with `formula` added.

        Returns:
            A dict.

        Examples:

        >>> row = UnitExplanation("abu", "ABU", 0, None, "relu", 1.0, 1.0,
        ...                       0.0, 0.0, 1.0, 0.0, -1.0, 1.0, False, "")
        >>> row.to_dict()["formula"]
        'relu(x)'
        """
        data = dataclasses.asdict(self)
        for key in ("a", "b", "c", "d", "r2", "max_error", "low", "high"):
            value = float(data[key])
            data[key] = value if math.isfinite(value) else None
        data["channel"] = int(data["channel"])
        data["formula"] = self.formula
        return data


class Explanation(list):
    """The rows of `explain`, one `UnitExplanation` per unit.

    A list, so rows can be filtered and sorted; `str()` gives a plain-text
    table, `to_markdown()` a Markdown one, `to_dicts()` JSON-ready dicts
    and `summary()` one line per layer.

    Args:
        rows: optional `UnitExplanation` rows (as for `list`).

    Examples:

    >>> import keras_learnact as kla
    >>> rows = kla.explain("activations.npz")  # doctest: +SKIP
    >>> print(rows)  # doctest: +SKIP
    >>> [r.function for r in rows if r.r2 > 0.99]  # doctest: +SKIP
    """

    HEADER = ("layer", "ch", "closest named shape", "R^2", "max err",
              "inputs", "exact")

    def _cells(self, row):
        return (row.layer, str(row.channel), row.formula,
                "-" if not math.isfinite(row.r2) else f"{row.r2:.4f}",
                _num(row.max_error),
                f"[{_num(row.low)}, {_num(row.high)}]"
                + ("" if row.weighted else "*"),
                row.description)

    def _epochs(self):
        epochs = sorted({r.epoch for r in self if r.epoch is not None})
        return ", ".join(map(str, epochs))

    def __str__(self):
        if not self:
            return "(no learnable activation units)"
        rows = [self.HEADER] + [self._cells(r) for r in self]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = []
        if self._epochs():
            lines.append(f"epoch {self._epochs()}")
        for k, cells in enumerate(rows):
            line = "  ".join(c.ljust(w) for c, w in zip(cells, widths,
                                                         strict=False))
            lines.append((line + "  " + cells[6]).rstrip())
            if k == 0:
                lines.append("  ".join("-" * w for w in widths) + "  -----")
        if any(not r.weighted for r in self):
            lines.append("* inputs not recorded: fitted uniformly on the "
                         "grid (or the recorded range)")
        return "\n".join(lines)

    def to_markdown(self, max_channels=None):
        """A Markdown table of the rows.

        Args:
            max_channels: show at most this many units per layer (None:
                all).

        Returns:
            The table as a string.

        Examples:

        >>> print(Explanation().to_markdown())
        | layer | ch | closest named shape | R^2 | max err | inputs | exact |
        |---|---|---|---|---|---|---|
        """
        lines = ["| " + " | ".join(self.HEADER) + " |",
                 "|---" * len(self.HEADER) + "|"]
        shown = {}
        for row in self:
            shown[row.layer] = shown.get(row.layer, 0) + 1
            if max_channels is not None and shown[row.layer] > max_channels:
                continue
            cells = [c.replace("|", "\\|") for c in self._cells(row)]
            cells[2] = f"`{cells[2]}`"
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dicts(self):
        """Every row as a plain dict (see `UnitExplanation.to_dict`).

        Returns:
            A list of dicts.

        Examples:

        >>> Explanation().to_dicts()
        []
        """
        return [row.to_dict() for row in self]

    def summary(self):
        """One line per layer: its units' closest shapes and their fits.

        Returns:
            A list of dicts with `layer`, `layer_class`, `units`,
            `shapes` (text such as `"tanh 20, relu 12"`), `median_r2` and
            `min_r2`.

        Examples:

        >>> Explanation().summary()
        []
        """
        result = []
        for layer in dict.fromkeys(r.layer for r in self):
            rows = [r for r in self if r.layer == layer]
            counts = {}
            for r in rows:
                counts[r.function] = counts.get(r.function, 0) + 1
            shapes = ", ".join(f"{name} {n}" for name, n in sorted(
                counts.items(), key=lambda item: -item[1]))
            r2 = np.array([r.r2 for r in rows], "float64")
            finite = r2[np.isfinite(r2)]
            result.append({
                "layer": layer, "layer_class": rows[0].layer_class,
                "units": len(rows), "shapes": shapes,
                "median_r2": float(np.median(finite)) if finite.size
                else None,
                "min_r2": float(np.min(finite)) if finite.size else None,
            })
        return result


# -- the fit ------------------------------------------------------------------


def _stats(weights, y, features):
    """Weighted variance of `y`, and for each candidate feature the
    residual variance after the best `a * feature + d`: `(U,)` and
    `(U, G)` from `(U, K)` weights and values and `(..., K)` features
    (`(G, K)` shared, or `(U, G, K)` per unit)."""
    ym = np.sum(weights * y, axis=-1)
    vy = np.sum(weights * y * y, axis=-1) - ym * ym
    if features.ndim == 2:
        fm = weights @ features.T
        fy = (weights * y) @ features.T
        ff = weights @ (features * features).T
    else:
        fm = np.einsum("uk,ugk->ug", weights, features)
        fy = np.einsum("uk,ugk->ug", weights * y, features)
        ff = np.einsum("uk,ugk->ug", weights, features * features)
    cov = fy - ym[:, None] * fm
    vf = ff - fm * fm
    scale = np.maximum(np.abs(ff), 1e-300)
    usable = vf > 1e-12 * scale
    residual = vy[:, None] - np.where(usable, cov * cov / np.where(
        usable, vf, 1.0), 0.0)
    return vy, np.maximum(residual, 0.0), (ym, fm, cov, vf, usable)


def fit_shapes(x, y, weights=None, shapes=SHAPES):
    """Fits `a * f(b * x + c) + d` to units, for every named shape `f`.

    Args:
        x: the sample points, `(units, points)` (or `(points,)`, shared);
            each unit's points should be increasing.
        y: the units' values there, `(units, points)`, finite.
        weights: optional non-negative weights shaped like `y` (default
            uniform); normalised per unit.
        shapes: the names of the shapes to try, from `FUNCTIONS`.

    Returns:
        A dict from shape name to a dict of `(units,)` arrays: `a`, `b`,
        `c`, `d`, `r2` (weighted; 1 for a constant unit fitted exactly)
        and `max_error` (unweighted, over the points). Shapes outside the
        three best of a unit after the grid search keep their grid fit.

    Examples:

    >>> x = np.linspace(-2, 2, 41)
    >>> fit = fit_shapes(x, 3 * np.tanh(0.5 * x - 0.2)[None] + 1)["tanh"]
    >>> round(fit["r2"].item(), 6)
    1.0
    >>> [round(fit[k].item(), 4) for k in "abcd"]
    [3.0, 0.5, -0.2, 1.0]
    """
    y = np.atleast_2d(np.asarray(y, "float64"))
    x = np.broadcast_to(np.asarray(x, "float64"), y.shape)
    units, points = y.shape
    if weights is None:
        weights = np.ones_like(y)
    weights = np.broadcast_to(np.asarray(weights, "float64"), y.shape)
    weights = weights / np.maximum(np.sum(weights, -1, keepdims=True),
                                   1e-300)
    low, high = x[:, :1], x[:, -1:]
    middle, half = (low + high) / 2, np.maximum((high - low) / 2, 1e-12)
    u = (x - middle) / half  # each unit's points on [-1, 1]
    shared = np.allclose(u, u[:1])
    scales = np.array([s * sign for sign in (1.0, -1.0) for s in SCALES])
    grid_b = np.repeat(scales, len(CENTRES))
    grid_k = np.tile(np.asarray(CENTRES), len(scales))

    def features(f, beta, kappa):
        """f(beta (u - kappa)): beta, kappa `(G,)` shared or `(U, G)`."""
        if beta.ndim == 1 and shared:
            return f(beta[:, None] * (u[0][None] - kappa[:, None]))
        beta = np.broadcast_to(beta, (units, beta.shape[-1]))
        kappa = np.broadcast_to(kappa, (units, kappa.shape[-1]))
        return f(beta[..., None] * (u[:, None, :] - kappa[..., None]))

    results = {}
    residuals = np.empty((len(shapes), units))
    vy = None
    for i, name in enumerate(shapes):
        f = FUNCTIONS[name]
        with np.errstate(all="ignore"):
            vy, residual, _ = _stats(weights, y, features(f, grid_b, grid_k))
        best = np.argmin(residual, axis=1)
        results[name] = (grid_b[best], grid_k[best])
        residuals[i] = residual[np.arange(units), best]
    # Refine the six best shapes of every unit by Levenberg-Marquardt on
    # all of a, beta, gamma, d (z = beta u + gamma), from the grid's best.
    order = np.argsort(residuals, axis=0, kind="stable")[:REFINED]
    for i, name in enumerate(shapes):
        chosen = np.any(order == i, axis=0)
        if not np.any(chosen):
            continue
        beta, kappa = results[name]
        beta, gamma = _refine(FUNCTIONS[name], u[chosen], y[chosen],
                              weights[chosen], beta[chosen],
                              -beta[chosen] * kappa[chosen])
        safe = np.where(np.abs(beta) > 1e-12, beta, 1e-12)
        results[name][0][chosen] = beta
        results[name][1][chosen] = -gamma / safe
    fits = {}
    for name in shapes:
        beta, kappa = results[name]
        f = FUNCTIONS[name]
        with np.errstate(all="ignore"):
            column = features(f, beta[:, None], kappa[:, None])[:, 0]
            _, residual, (ym, fm, cov, vf, usable) = _stats(
                weights, y, column[:, None, :])
        usable = usable[:, 0]
        a = np.where(usable, cov[:, 0] / np.where(usable, vf[:, 0], 1.0),
                     0.0)
        d = ym - a * fm[:, 0]
        prediction = a[:, None] * column + d[:, None]
        with np.errstate(all="ignore"):
            r2 = np.where(vy > 1e-24 * np.maximum(np.sum(
                weights * y * y, -1), 1e-300), 1.0 - residual[:, 0]
                / np.maximum(vy, 1e-300), 1.0)
        b = beta / half[:, 0]
        c = -beta * (middle[:, 0] / half[:, 0] + kappa)
        fits[name] = {"a": a, "b": b, "c": c, "d": d, "r2": r2,
                      "max_error": np.max(np.abs(prediction - y), axis=-1)}
    return fits


def _refine(f, u, y, weights, beta, gamma):
    """Levenberg-Marquardt steps on `a f(beta u + gamma) + d`, per unit
    (the shape's derivative by central differences); returns the
    improved `(beta, gamma)`."""
    units = len(y)
    h = 1e-6

    def evaluate(beta, gamma):
        z = beta[:, None] * u + gamma[:, None]
        with np.errstate(all="ignore"):
            value = f(z)
            slope = (f(z + h) - f(z - h)) / (2 * h)
        return value, slope

    def linear(value):
        """The best a, d for these values, and the residual error."""
        ym = np.sum(weights * y, -1)
        fm = np.sum(weights * value, -1)
        vf = np.sum(weights * value * value, -1) - fm * fm
        cov = np.sum(weights * value * y, -1) - fm * ym
        a = np.where(vf > 1e-15, cov / np.where(vf > 1e-15, vf, 1.0), 0.0)
        d = ym - a * fm
        return a, d

    def error(a, value, d):
        return np.sum(weights * np.square(y - a[:, None] * value
                                          - d[:, None]), -1)

    value, slope = evaluate(beta, gamma)
    a, d = linear(value)
    current = error(a, value, d)
    damping = np.full(units, 1e-3)
    for _ in range(REFINE_STEPS):
        residual = y - a[:, None] * value - d[:, None]
        jac = np.stack([value, a[:, None] * slope * u, a[:, None] * slope,
                        np.ones_like(value)], axis=-1)
        jw = jac * weights[..., None]
        normal = np.einsum("ukp,ukq->upq", jw, jac)
        gradient = np.einsum("ukp,uk->up", jw, residual)
        diagonal = np.einsum("upp->up", normal)
        system = normal + (damping[:, None] * np.maximum(diagonal, 1e-12)
                           )[..., None] * np.eye(4)
        finite = np.all(np.isfinite(system), axis=(1, 2)) & np.all(
            np.isfinite(gradient), axis=1)
        step = np.zeros((units, 4))
        try:
            step[finite] = np.linalg.solve(system[finite],
                                           gradient[finite][..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        new_beta, new_gamma = beta + step[:, 1], gamma + step[:, 2]
        new_value, new_slope = evaluate(new_beta, new_gamma)
        new_a, new_d = linear(new_value)
        trial = error(new_a, new_value, new_d)
        better = np.isfinite(trial) & (trial < current)
        beta = np.where(better, new_beta, beta)
        gamma = np.where(better, new_gamma, gamma)
        value = np.where(better[:, None], new_value, value)
        slope = np.where(better[:, None], new_slope, slope)
        a, d = np.where(better, new_a, a), np.where(better, new_d, d)
        current = np.where(better, trial, current)
        damping = np.where(better, damping / 3, damping * 4)
    return beta, gamma


# Shapes with f(s x) = s f(x) for s > 0 (and square, with s^2): their
# scale is moved into `a`, so that |b| = 1.
_HOMOGENEOUS = {"identity": 1, "relu": 1, "leaky_relu": 1, "abs": 1,
                "square": 2}


def _canonical(shape, fit, span):
    """The fit with |b| = 1 for homogeneous shapes, and an offset `c` or
    `d` below 1e-4 of the unit's scale (float32 round-off in the curves)
    set to 0."""
    fit = dict(fit)
    power = _HOMOGENEOUS.get(shape)
    if power and abs(fit["b"]) > 1e-300:
        scale = abs(fit["b"])
        fit.update(a=fit["a"] * scale ** power, b=fit["b"] / scale,
                   c=fit["c"] / scale)
    reach = max(abs(float(span[0])), abs(float(span[1])), 1e-12)
    if abs(fit["c"]) < 1e-4 * (abs(fit["b"]) * reach + 1e-12):
        fit["c"] = 0.0
    if abs(fit["d"]) < 1e-4 * (abs(fit["a"]) + 1e-12):
        fit["d"] = 0.0
    return fit


def _closest(fits, units):
    """Per unit, the shape with the best R^2, the simpler of near ties."""
    names = list(fits)
    r2 = np.stack([fits[n]["r2"] for n in names])
    unexplained = np.maximum(1.0 - r2, 0.0)
    best = np.min(unexplained, axis=0)
    choice = []
    for u in range(units):
        good = [i for i in range(len(names))
                if unexplained[i, u] <= TIE_FACTOR * best[u] + TIE]
        choice.append(names[min(good, key=lambda i: SHAPES.index(names[i])
                                if names[i] in SHAPES else len(SHAPES))])
    return choice


# -- the exact descriptions -------------------------------------------------


def _row(values, channel, total, config):
    """This channel's slice of a parameter (all of it when the parameter
    is shared by the layer)."""
    values = np.asarray(values, "float64")
    per_channel = (config.get("granularity") == "channel" if "granularity"
                   in config else total > 1)
    if per_channel and values.ndim >= 1 and values.shape[0] == total:
        return values[channel]
    return values


def _polynomial(coefficients, variable="x", reach=4.0):
    """The polynomial as text, leaving out terms below 1e-6 of the largest
    on `[-reach, reach]` (round-off)."""
    sizes = [abs(float(v)) * reach ** j for j, v in enumerate(coefficients)]
    largest = max(sizes, default=0.0)
    terms = []
    for j, value in enumerate(coefficients):
        if _num(value) == "0" or sizes[j] < 1e-6 * largest:
            continue
        power = "" if j == 0 else variable if j == 1 else f"{variable}^{j}"
        magnitude = _num(abs(value))
        if power and magnitude == "1":
            magnitude = ""
        text = (f"{magnitude} {power}" if magnitude else power) if power \
            else magnitude
        terms.append(("-" if value < 0 else "+", text))
    if not terms:
        return "0"
    first_sign, first = terms[0]
    text = ("-" if first_sign == "-" else "") + first
    for sign, term in terms[1:]:
        text += f" {sign} {term}"
    return text


def _normalize_blend(theta, mode, reference_posnormed=False):
    """ABU's `N(theta)` in NumPy (see `keras_learnact.layers.abu`)."""
    if mode == "normalized" or (mode == "posnormed" and reference_posnormed):
        return theta / np.sum(theta)
    if mode == "absnormed":
        return theta / np.sum(np.abs(theta))
    if mode == "posnormed":
        clipped = np.clip(theta, 1e-4, 1e3)
        return clipped / np.sum(clipped)
    if mode == "softmax":
        e = np.exp(theta - np.max(theta))
        return e / np.sum(e)
    return theta


def _describe_abu(p, config, channel, total):
    theta = _row(p["blend_weights"], channel, total, config)
    basis = config.get("basis")
    if not basis or len(basis) != theta.size:
        return (f"blend of raw weights [{', '.join(map(_num, theta))}] "
                "(basis not recorded)")
    weights = _normalize_blend(theta, config.get("normalization",
                                                 "unrestricted"),
                               config.get("reference_posnormed", False))
    terms = []
    for w, name in zip(weights, basis, strict=True):
        if name == "swish" and "swish_beta" in p:
            beta = float(_row(p["swish_beta"], channel, total, config))
            name = f"swish(beta={_num(beta)})"
        terms.append((w, name))
    text = ""
    for k, (w, name) in enumerate(terms):
        sign = "-" if w < 0 else "+"
        text += (("-" if w < 0 else "") if k == 0 else f" {sign} ") + (
            f"{_num(abs(w))} {name}")
    return text + f" ({config.get('normalization', 'unrestricted')})"


def _times(value, text):
    """`value * text`, without a factor of 1."""
    return text if _num(value) == "1" else f"{_num(value)} * {text}"


def _describe_scaling(p, config, channel, total):
    alpha = float(_row(p["alpha"], channel, total, config))
    g = config.get("activation", "g")
    if g == "swish" and "swish_beta" in p:
        beta = float(_row(p["swish_beta"], channel, total, config))
        return _times(alpha, f"x * sigmoid({_times(beta, 'x')})")
    return _times(alpha, f"{g}(x)")


def _describe_pwlu(p, config, channel, total):
    if float(np.max(p.get("realigned", 1.0))) < 0.5:
        mean = float(_row(p["moving_mean"], channel, total, config))
        std = float(_row(p["moving_std"], channel, total, config))
        return (f"phase I (statistics): relu(x); running mean {_num(mean)},"
                f" std {_num(std)}")
    left = float(_row(p["left_bound"], channel, total, config))
    right = float(_row(p["right_bound"], channel, total, config))
    heights = _row(p["heights"], channel, total, config)
    kl = float(_row(p["left_slope"], channel, total, config))
    kr = float(_row(p["right_slope"], channel, total, config))
    return (f"{heights.size - 1} intervals on [{_num(left)}, {_num(right)}],"
            f" knot heights [{', '.join(map(_num, heights))}]; tail slopes"
            f" {_num(kl)} (left), {_num(kr)} (right)")


def _describe_slaf(p, config, channel, total):
    coefficients = _row(p["coefficients"], channel, total, config)
    gate = 1.0
    if "gate" in p:
        gate = 1.0 / (1.0 + math.exp(-float(p["gate"])))
    if "moving_mean" in p:  # the normalised form, statistics folded in
        mean = np.atleast_2d(np.asarray(p["moving_mean"], "float64"))
        variance = np.atleast_2d(np.asarray(p["moving_variance"], "float64"))
        bias = np.atleast_1d(np.asarray(p["bias"], "float64"))
        row = channel if channel < mean.shape[0] else 0
        epsilon = float(config.get("epsilon", 1e-8))
        scale = gate * coefficients / np.sqrt(variance[row] + epsilon)
        table = [bias[row] - float(np.sum(scale * mean[row])), *scale]
    else:
        table = gate * coefficients
        if config.get("basis") == "taylor":
            table = table / np.array([math.factorial(j)
                                      for j in range(table.size)])
    return "y = " + _polynomial(table)


DEU_CASES = {
    "identity": "a, b, c ~0: y = t",
    "step": "a, b ~0: a smoothed step of height 1/c",
    "b": "a, c ~0: a ramp t/b for t > 0, plus c1",
    "bc": "a ~0: first order, one exponential",
    "a": "b, c ~0: a half parabola t^2/(2a)",
    "oscillator": "b ~0, ac > 0: an undamped oscillation",
    "hyperbolic": "b ~0, ac < 0: growing and decaying exponentials",
    "ab": "c ~0: a ramp and an exponential",
    "critical": "b^2 ~ 4ac: critically damped",
    "underdamped": "b^2 < 4ac: a damped oscillation",
    "overdamped": "b^2 > 4ac: two exponentials",
}


def deu_case(a, b, c, epsilon=0.01):
    """The case of a DEU unit, named as `keras_learnact.layers.deu` names
    it (`"overdamped"`, `"oscillator"`, ...).

    Args:
        a, b, c: the unit's ODE coefficients.
        epsilon: the layer's `epsilon` (below it a coefficient counts as
            zero).

    Returns:
        A key of `DEU_CASES`.

    Examples:

    >>> deu_case(1.0, 3.0, 1.0)
    'overdamped'
    >>> deu_case(0.0, 1.0, 0.0)
    'b'
    """
    big_a, big_b, big_c = (abs(v) >= epsilon for v in (a, b, c))
    if not big_a:
        return {(False, False): "identity", (False, True): "step",
                (True, False): "b", (True, True): "bc"}[(big_b, big_c)]
    if not big_b and not big_c:
        return "a"
    if not big_b:
        return "oscillator" if a * c > 0 else "hyperbolic"
    if not big_c:
        return "ab"
    disc = b * b - 4.0 * a * c
    if abs(disc) < epsilon:
        return "critical"
    return "underdamped" if disc <= -epsilon else "overdamped"


def _describe_deu(p, config, channel, total):
    a, b, c, c1, c2 = (float(_row(p[n], channel, total, config))
                       for n in ("a", "b", "c", "c1", "c2"))
    case = deu_case(a, b, c, float(config.get("epsilon", 0.01)))
    ode = _ode(a, b, c)
    clip = config.get("output_clip")
    text = (f"{ode} = H(t), c1 = {_num(c1)}, c2 = {_num(c2)}; case "
            f"'{case}' ({DEU_CASES[case]})")
    if clip is not None:
        text += f"; clipped to +-{_num(clip)}"
    return text


def _ode(a, b, c):
    terms = [(a, "y''"), (b, "y'"), (c, "y")]
    text = ""
    for k, (value, name) in enumerate(terms):
        sign = "-" if value < 0 else "+"
        part = f"{_num(abs(value))} {name}"
        text += (("-" if value < 0 else "") + part if k == 0
                 else f" {sign} {part}")
    return text


def _describe_rational(p, config, channel, total):
    numerator = _row(p["numerator"], channel, total, config)
    text = f"P(x) / Q(x), P = {_polynomial(numerator)}"
    if "denominator" not in p:
        return text + ", Q = 1"
    b = _row(p["denominator"], channel, total, config)
    version = config.get("version", "A")
    if version == "A":
        terms = " + ".join(
            f"|{_num(v)} x{'' if k == 1 else f'^{k}'}|"
            for k, v in enumerate(b, start=1))
        return text + f", Q = 1 + {terms} (version A)"
    if version == "C":
        return text + f", Q = 0.1 + |{_polynomial(b)}| (version C)"
    return text + (f", Q = 1 + |{_polynomial([0.0, *b])}| "
                   f"(version {version})")


DESCRIPTIONS = {
    "ABU": _describe_abu,
    "AdaptiveScaling": _describe_scaling,
    "PWLU": _describe_pwlu,
    "SLAF": _describe_slaf,
    "DEU": _describe_deu,
    "Rational": _describe_rational,
}


def describe(layer_class, params, config, channel, total_channels):
    """The exact description of one unit, from its parameters.

    Args:
        layer_class: the class name (`"ABU"`, `"DEU"`, ...).
        params: the layer's parameters (a dict of arrays, as recorded).
        config: the layer's recorded configuration (may be empty).
        channel: the unit's channel index.
        total_channels: the layer's number of channels.

    Returns:
        A string; for a family without a description here (or missing
        parameters), its parameters for this unit.

    Examples:

    >>> describe("AdaptiveScaling", {"alpha": np.float32(1.5)},
    ...          {"activation": "tanh"}, 0, 1)
    '1.5 * tanh(x)'
    >>> describe("DEU", {"a": 1.0, "b": 3.0, "c": 1.0, "c1": 0.0,
    ...                  "c2": 0.0}, {}, 0, 1)[:40]
    "1 y'' + 3 y' + 1 y = H(t), c1 = 0, c2 = "
    """
    params = {k: np.asarray(v) for k, v in params.items()}
    config = config or {}
    function = DESCRIPTIONS.get(layer_class)
    if function is not None:
        try:
            with np.errstate(all="ignore"):
                return function(params, config, int(channel),
                                int(total_channels))
        except (KeyError, IndexError, ValueError, TypeError):
            pass
    parts = []
    for name, value in params.items():
        row = _row(value, channel, total_channels, config).ravel()
        shown = ", ".join(map(_num, row[:6])) + (", ..." if row.size > 6
                                                  else "")
        parts.append(f"{name}={shown if row.size == 1 else f'[{shown}]'}")
    return f"{layer_class}: " + ("; ".join(parts) or "no parameters")


# -- sources ----------------------------------------------------------------


def _from_live(source, probe, grid):
    """A one-epoch `Snapshots` of a live model or layer."""
    from keras_learnact.callbacks import snapshot as snapshot_callback
    from keras_learnact.layers.base import LearnableActivation

    if isinstance(source, LearnableActivation):
        layers = [(source.name, source)]
    else:
        layers = snapshot_callback.find_learnable_activations(source)
    for name, layer in layers:
        if not layer.built:
            raise ValueError(
                f"explain: layer '{name}' is not built; build the model "
                "first (give it a keras.Input or call it on a batch).")
    if grid is None:
        grid = snapshot_callback.DEFAULT_GRID
        if probe is not None and layers:
            _, live = snapshot_callback.capture(source, layers, np.asarray(
                grid, "float32"), probe, stacklevel=4)
            ranges = np.concatenate([v["input_range"] for v in
                                     live.values()])
            ranges = ranges[np.all(np.isfinite(ranges), axis=1)]
            if ranges.size:
                low, high = float(ranges.min()), float(ranges.max())
                pad = 0.05 * max(high - low, 1e-3)
                grid = np.linspace(low - pad, high + pad, 401)
    grid = np.asarray(grid, "float32")
    snaps = snapshot_files.Snapshots(grid)
    if layers:
        data, _ = snapshot_callback.capture(source, layers, grid, probe,
                                            stacklevel=4)
        snaps.add(0, data)
    return snaps


def _as_snapshots(source, probe, grid):
    if isinstance(source, snapshot_files.Snapshots):
        return source, True
    if isinstance(source, (str, os.PathLike)):
        return snapshot_files.load(source), True
    if hasattr(source, "weights") and hasattr(source, "get_config"):
        return _from_live(source, probe, grid), False
    raise TypeError(
        "explain() takes a Keras model, a keras_learnact layer, a "
        "keras_learnact.snapshots.Snapshots object or the path of a "
        f"snapshot file; got {type(source).__name__}.")


def _epoch_index(snaps, epoch):
    epochs = snaps.epochs.tolist()
    if not epochs:
        raise ValueError("explain: the snapshots hold no epoch.")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise ValueError(
            f"Invalid epoch={epoch!r}: expected an integer (a recorded "
            "epoch, or -1 for the last).")
    if epoch < 0:
        if -epoch > len(epochs):
            raise ValueError(
                f"Invalid epoch={epoch}: only {len(epochs)} snapshots.")
        return len(epochs) + int(epoch)
    if int(epoch) not in epochs:
        raise ValueError(
            f"Invalid epoch={epoch}: the recorded epochs are "
            f"{', '.join(map(str, epochs))} (or -1 for the last).")
    return epochs.index(int(epoch))


def _unit_ranges(snaps, name, index):
    """`(channels, 2)` input ranges and whether they come from the data."""
    grid = snaps.grid.astype("float64")
    channels = snaps.channels(name).size
    whole = np.tile([grid[0], grid[-1]], (channels, 1))
    ranges = snaps.input_ranges(name)
    if ranges is not None:
        found = ranges[index].astype("float64")
        known = np.all(np.isfinite(found), axis=1)
        return np.where(known[:, None], found, whole), known
    histograms = snaps.histograms(name)
    if histograms is not None:
        edges, counts, outside = histograms
        nonzero = np.flatnonzero(counts[index])
        if nonzero.size:
            low = grid[0] if outside[index][0] else edges[nonzero[0]]
            high = grid[-1] if outside[index][1] else edges[nonzero[-1] + 1]
            return np.tile([low, high], (channels, 1)), np.ones(channels,
                                                                bool)
    return whole, np.zeros(channels, bool)


def _samples(grid, curves, ranges):
    """Each unit's sample points and values: the grid points in its range
    (exact curve values), or where fewer than `MIN_POINTS` lie there,
    `MIN_POINTS` points across it, interpolated. Units are padded to the
    same count by repeating their last point; returns `(x, y, padding)`,
    padding true on the repeats."""
    xs, ys = [], []
    for curve, (low, high) in zip(curves, ranges, strict=True):
        inside = (grid >= low) & (grid <= high)
        if np.count_nonzero(inside) >= MIN_POINTS:
            xs.append(grid[inside])
            ys.append(curve[inside])
        else:
            points = np.linspace(low, high, MIN_POINTS)
            xs.append(points)
            ys.append(np.interp(points, grid, curve))
    count = max(len(v) for v in xs)
    padding = np.zeros((len(xs), count), bool)
    for k in range(len(xs)):
        extra = count - len(xs[k])
        padding[k, len(xs[k]):] = True
        xs[k] = np.concatenate([xs[k], np.repeat(xs[k][-1:], extra)])
        ys[k] = np.concatenate([ys[k], np.repeat(ys[k][-1:], extra)])
    return np.stack(xs), np.stack(ys), padding


def _weights(snaps, name, index, x):
    """The recorded input density at the points `x`, or None."""
    histograms = snaps.histograms(name)
    if histograms is None:
        return None
    edges, counts, _ = histograms
    density = counts[index] / np.diff(edges)
    if density.sum() <= 0:
        return None
    bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0,
                   density.size - 1)
    inside = (x >= edges[0]) & (x <= edges[-1])
    weights = np.where(inside, density[bins], 0.0)
    # A small floor: a point between populated bins still counts a bit.
    return weights + 1e-3 * np.max(density)


def explain(source, layers=None, epoch=-1, probe=None, grid=None):
    """What each unit learned: its closest named shape and exact form.

    Args:
        source: a Keras model, a keras_learnact layer (built), a
            `keras_learnact.snapshots.Snapshots` object or the path of a
            snapshot file.
        layers: layer names to explain (a name or a list; default all).
        epoch: for snapshots, the recorded epoch to explain, or a negative
            index (-1, the default: the last).
        probe: for a model or layer, an optional batch of its inputs: each
            unit is then fitted over the range of inputs it receives on
            the probe, weighted by their histogram (without one, uniformly
            over the grid).
        grid: for a model or layer, the points its curves are evaluated
            at (default: 201 points on [-4, 4], or with a probe 401 points
            over the inputs' range).

    Returns:
        An `Explanation`: a list of `UnitExplanation` rows, one per
        recorded unit, printable as a text table.

    Raises:
        ValueError: for an unknown layer or epoch, naming what exists.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> layer = kla.layers.AdaptiveScaling("tanh")
    >>> layer.build((None, 4))
    >>> rows = kla.explain(layer)
    >>> rows[0].function, rows[0].description
    ('tanh', 'tanh(x)')
    >>> print(kla.explain("activations.npz", epoch=3))  # doctest: +SKIP
    """
    snaps, recorded = _as_snapshots(source, probe, grid)
    names = snaps.layers
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in wanted if n not in names]
        if unknown or not wanted:
            raise ValueError(
                f"explain: unknown layers {unknown or wanted!r}; the "
                f"layers are: {', '.join(names) or '(none)'}.")
        names = wanted
    result = Explanation()
    if not names:
        return result
    index = _epoch_index(snaps, epoch)
    epoch_value = int(snaps.epochs[index]) if recorded else None
    grid_x = snaps.grid.astype("float64")
    for name in names:
        curves = snaps.curves(name)[index].astype("float64")
        ranges, measured = _unit_ranges(snaps, name, index)
        ranges[:, 0] = np.maximum(ranges[:, 0], grid_x[0])
        ranges[:, 1] = np.minimum(ranges[:, 1], grid_x[-1])
        # Inputs wholly beyond the grid: the curve is known on the grid
        # only, so the unit is fitted there (unweighted, marked `*`).
        beyond = ranges[:, 1] < ranges[:, 0]
        ranges[beyond] = [grid_x[0], grid_x[-1]]
        measured = measured & ~beyond
        narrow = ranges[:, 1] - ranges[:, 0] < 1e-6
        ranges[narrow] += np.array([-1e-3, 1e-3])
        ranges[:, 0] = np.maximum(ranges[:, 0], grid_x[0])
        ranges[:, 1] = np.minimum(ranges[:, 1], grid_x[-1])
        x, y, padding = _samples(grid_x, curves, ranges)
        weights = _weights(snaps, name, index, x)
        weighted = np.zeros(len(curves), bool) if weights is None else (
            measured.copy())
        if weights is not None:
            weights = np.where(measured[:, None], weights, 1.0)
        if weights is not None:
            weights = np.where(padding, 0.0, weights)
        elif np.any(padding):
            weights = np.where(padding, 0.0, 1.0)
        finite = np.all(np.isfinite(y), axis=1)
        fits = None
        if np.any(finite):
            fits = fit_shapes(x[finite], y[finite],
                              None if weights is None else weights[finite])
            choice = _closest(fits, int(finite.sum()))
        params = {k: v[index] for k, v in snaps.params(name).items()}
        config = snaps.config(name)
        cls = snaps.layer_class(name)
        total = snaps.total_channels(name)
        position = 0
        for k, channel in enumerate(snaps.channels(name)):
            description = describe(cls, params, config, int(channel), total)
            if not finite[k]:
                values = dict(function="nonfinite", a=math.nan, b=math.nan,
                              c=math.nan, d=math.nan, r2=math.nan,
                              max_error=math.nan)
            else:
                shape = choice[position]
                fit = {key: float(v[position])
                       for key, v in fits[shape].items()}
                if np.ptp(y[k]) <= 1e-9 * max(1.0, np.max(np.abs(y[k]))):
                    shape = "constant"
                    fit = dict(a=0.0, b=0.0, c=0.0, d=float(np.mean(y[k])),
                               r2=1.0, max_error=float(np.ptp(y[k]) / 2))
                values = dict(function=shape, **_canonical(shape, fit,
                                                          ranges[k]))
                position += 1
            result.append(UnitExplanation(
                layer=name, layer_class=cls, channel=int(channel),
                epoch=epoch_value, low=float(ranges[k, 0]),
                high=float(ranges[k, 1]), weighted=bool(weighted[k]),
                description=description, **values))
    return result


class _CallableModule(types.ModuleType):
    """`keras_learnact.explain` is both this module and the function
    `explain`: importing the module (`import keras_learnact.explain`) makes
    it the package's attribute, so the module calls the function."""

    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
