"""Adaptive Blending Units: a learned blend of fixed activations."""

import functools
import itertools

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _basis
from keras_learnact.layers import _initial
from keras_learnact.layers._fused import fuse
from keras_learnact.layers._fused import xla_kernel
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.base import check_choice

DEFAULT_BASIS = ("relu", "elu", "tanh", "swish", "identity")
NORMALIZATIONS = (
    "unrestricted", "normalized", "absnormed", "posnormed", "softmax"
)
POSNORM_MIN = 1e-4
POSNORM_MAX = 1e3
# A blend fitted in "softmax" mode gives a basis function that it leaves out
# the weight SOFTMAX_FLOOR (its raw weight is log(SOFTMAX_FLOOR)).
SOFTMAX_FLOOR = 1e-7
# "absnormed" fits try every sign pattern of the weights up to this many
# basis functions (2^n patterns).
SIGN_PATTERNS_UP_TO = 10


def normalize_blend(theta, mode, reference_posnormed=False):
    """Maps raw blend weights `theta` to the weights ABU applies.

    Works on the last axis, so `theta` may be `(n,)` or `(channels, n)`.

    Args:
        theta: the raw weights, a tensor.
        mode: one of `NORMALIZATIONS`:
            `"unrestricted"`: `w = theta`;
            `"normalized"`: `w = theta / sum(theta)` (no epsilon: the sum can
            cross zero, which flips signs and blows up, as in the paper);
            `"absnormed"`: `w = theta / sum(|theta|)`;
            `"posnormed"`: `c = clip(theta, 1e-4, 1e3); w = c / sum(c)`;
            `"softmax"`: `w = softmax(theta)`.
        reference_posnormed: reproduce the released reference code, in which
            posnormed computed `theta / sum(theta)` (the same as normalized).

    Returns:
        A tensor shaped like `theta`.

    Examples:

    >>> import numpy as np
    >>> w = normalize_blend(np.array([1.0, 3.0], "float32"), "normalized")
    >>> np.asarray(w).tolist()
    [0.25, 0.75]
    """
    if mode == "unrestricted":
        return theta
    if mode == "normalized" or (mode == "posnormed" and reference_posnormed):
        return theta / ops.sum(theta, axis=-1, keepdims=True)
    if mode == "absnormed":
        return theta / ops.sum(ops.abs(theta), axis=-1, keepdims=True)
    if mode == "posnormed":
        clipped = ops.clip(theta, POSNORM_MIN, POSNORM_MAX)
        return clipped / ops.sum(clipped, axis=-1, keepdims=True)
    if mode == "softmax":
        return ops.softmax(theta, axis=-1)
    raise ValueError(
        f"Unknown normalization {mode!r}. Allowed: {', '.join(NORMALIZATIONS)}."
    )


@functools.lru_cache(maxsize=None)
def _blend_kernel(basis, layout):
    """`_blend_functions(basis, layout)` `fuse`d; one for every layer with
    this basis and layout."""
    blend, blend_gradient = _blend_functions(basis, layout)
    # One weight set per layer: its backward kernel runs in chunks of the
    # batch on TensorFlow (peak training memory 1.85x -> 1.39x ReLU's, the
    # same speed); per channel, the chunks' per-channel sums took longer
    # (train step 1.75x -> 2.0x), so the kernel runs whole.
    return fuse(blend, gradient=xla_kernel(blend_gradient),
                torch_compile=True, chunks=layout.channel is None)


@functools.lru_cache(maxsize=None)
def _blend_functions(basis, layout):
    """`sum_j w_j g_j(x)` for the basis names `basis` (a tuple) and
    normalised weights `w`, and its hand-written backward pass, for
    parameters laid out as `layout` (a `Layout`).

    The backward pass recomputes from the input alone: `dx = upstream *
    sum_j w_j g_j'(x)`, `dw_j = sum(upstream * g_j(x))` and, for swish,
    `dbeta = sum(upstream * w_swish * x^2 s'(beta x))`, summed over every
    axis but the channel axis (all for layer granularity). TensorFlow's
    autodiff of the parameters' gradients kept each basis function's
    intermediates until the backward pass (peak training memory 3.8x
    ReLU's in the model benchmark); this keeps only `x`. PyTorch compiles
    the blend with its own autodiff (`fuse(torch_compile=True)`).
    """

    def blend(inputs, weights, beta=None):
        if beta is not None:
            beta = layout.broadcast(beta)
        outputs = None
        for j, name in enumerate(basis):
            # `+ 0.0`: each basis function's weights as a tensor of their
            # own; PyTorch's compiled kernels read a strided column of
            # the (channels, k) weights element by element (ABU per
            # channel, 128x32x32x32 on 2 cores: 95 ms forward and
            # backward against 29 ms, 70 ms inference against 10 ms).
            term = layout.broadcast(weights[..., j] + 0.0) * _basis.apply(
                name, inputs, beta)
            outputs = term if outputs is None else outputs + term
        return outputs

    def blend_gradient(upstream, inputs, weights, beta=None):
        axes = layout.axes
        if beta is not None:
            beta = layout.broadcast(beta)
        slope, d_weights, d_beta = None, [], None
        for j, name in enumerate(basis):
            w = layout.broadcast(weights[..., j])
            value, value_slope, beta_slope = _basis.value_and_slopes(
                name, inputs, beta)
            d_weights.append(ops.sum(upstream * value, axis=axes))
            term = w * value_slope
            slope = term if slope is None else slope + term
            if beta_slope is not None:
                part = ops.sum(upstream * w * beta_slope, axis=axes)
                d_beta = part if d_beta is None else d_beta + part
        grads = [upstream * slope, ops.stack(d_weights, axis=-1)]
        if d_beta is not None:
            grads.append(d_beta)
        return tuple(grads)

    return blend, blend_gradient


@keras.saving.register_keras_serializable(package="keras_learnact")
class ABU(LearnableActivation):
    """Adaptive Blending Unit: a learned weighted sum of fixed activations.

    Formula:

        ABU(x) = sum_j w_j * g_j(x),     w = N(theta)

    where `g_j` are the basis functions, `theta` the trainable raw blend
    weights (weight `blend_weights`, initialised to `1/n` each) and `N` the
    normalisation mode. The default basis is the paper's, in its order:
    ReLU, ELU, tanh, Swish `x * sigmoid(beta * x)` with a trainable `beta`
    (weight `swish_beta`, init 1.0) and the identity.

    Normalisation modes (`normalization`):

    | mode | weights |
    |---|---|
    | `unrestricted` (default, the paper's best) | `theta` |
    | `normalized` | `theta / sum(theta)` |
    | `absnormed` | `theta / sum(abs(theta))` |
    | `posnormed` | `c / sum(c)`, `c = clip(theta, 1e-4, 1e3)` |
    | `softmax` | `softmax(theta)` |

    `normalized` divides by a sum that can cross zero; like the paper, no
    epsilon is added, so watch for sign flips with it. A start at zero is
    refused: `initial_weights` whose sum is zero (`normalized`, and
    `posnormed` with `reference_posnormed=True`) or all zero (`absnormed`)
    raise `ValueError`.

    Integer inputs are computed in the layer's float dtype, as
    `keras.layers.Dense` does. The basis functions stay finite for every
    finite input (Swish's and the sigmoid's arguments are clipped where the
    logistic function is exactly 0 or 1), also after conversion to
    TensorFlow Lite.

    With `granularity="layer"` (the paper) `theta` has shape `(n,)` and
    `beta` is a scalar; with `"channel"` each channel of `axis` has its own
    `theta` (shape `(channels, n)`) and `beta` (shape `(channels,)`).

    Args:
        basis: names of the basis functions, any elementwise Keras activation
            (`"relu"`, `"elu"`, `"tanh"`, `"selu"`, `"softplus"`, ...),
            `"swish"` (with trainable beta) or `"identity"`. Default: the
            paper's `("relu", "elu", "tanh", "swish", "identity")`.
        normalization: one of `"unrestricted"`, `"normalized"`,
            `"absnormed"`, `"posnormed"`, `"softmax"`.
        initial_weights: optional raw blend weights, one per basis function;
            default `1/n` each. Finite, and with a non-zero normaliser
            (see above).
        blend_weights_trainable: whether `theta` is learned (default True).
            `False` keeps the initial blend, as in the paper's frozen
            ablation; `beta` stays trainable.
        granularity: `"layer"` (default) or `"channel"`.
        axis: the channel axis for channel granularity (default -1).
        reference_posnormed: if True, `posnormed` behaves as the released
            reference code did (identical to `normalized`). Default False:
            the intended clip-then-normalise semantics.
        **kwargs: `initial_function` and `initial_range` (see
            `LearnableActivation`; not together with `initial_weights`),
            and base layer keyword arguments, such as `name` and `dtype`.
            The blend is fitted by weighted least squares over the weights
            the normalisation allows (summing to one for `normalized`,
            absolute values summing to one for `absnormed`, non-negative
            and summing to one for `posnormed` and `softmax`, where a left
            out function keeps a weight of about 1e-7), and swish's `beta`
            by a one-dimensional search; exact when the function is in the
            basis' reach (ReLU, ELU, tanh, swish, identity and leaky ReLU
            with the default basis and normalisation).

    Examples:

    >>> import keras, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(16, 3),
    ...     kla.layers.ABU(normalization="softmax"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> tuple(round(float(w), 2) for w in model.layers[1].normalized_weights())
    (0.2, 0.2, 0.2, 0.2, 0.2)

    Reference:
        Sütfeld, Brieger, Finger, Füllhase, Pipa, "Adaptive Blending Units:
        Trainable Activation Functions for Deep Neural Networks",
        arXiv:1806.10064.
    """

    def __init__(self, basis=DEFAULT_BASIS, normalization="unrestricted",
                 initial_weights=None, blend_weights_trainable=True,
                 granularity="layer", axis=-1, reference_posnormed=False,
                 **kwargs):
        super().__init__(granularity=granularity, axis=axis, **kwargs)
        if isinstance(basis, str) or not basis:
            raise ValueError(
                f"Invalid basis={basis!r}: expected a non-empty list of "
                f"activation names from: {', '.join(_basis.ALLOWED)}."
            )
        self.basis = tuple(
            _basis.check_name(n, "basis function") for n in basis
        )
        self.normalization = check_choice(
            "normalization", normalization, NORMALIZATIONS
        )
        if initial_weights is not None:
            values = np.asarray(initial_weights, dtype="float64")
            if values.shape != (len(self.basis),):
                raise ValueError(
                    f"Invalid initial_weights={initial_weights!r}: expected "
                    f"{len(self.basis)} numbers, one per basis function "
                    f"{list(self.basis)}."
                )
            if not np.all(np.isfinite(values)):
                raise ValueError(
                    f"Invalid initial_weights={initial_weights!r}: every "
                    "weight must be finite."
                )
            initial_weights = [float(v) for v in values]
            self._check_start(initial_weights, reference_posnormed)
            if self.initial_function is not None:
                raise ValueError(
                    f"Invalid initial_weights={initial_weights!r} with "
                    f"initial_function={self.initial_function!r}: the "
                    "blend is fitted to the initial function. Allowed: one "
                    "of the two."
                )
        self.initial_weights = initial_weights
        self.blend_weights_trainable = bool(blend_weights_trainable)
        self.reference_posnormed = bool(reference_posnormed)

    def _check_start(self, weights, reference_posnormed):
        """Refuses initial weights whose normaliser is zero.

        `normalized` (and `posnormed` with `reference_posnormed=True`)
        divides by `sum(theta)` and `absnormed` by `sum(|theta|)`; a start
        where that is zero at float32 precision (the weights' dtype) would
        output NaN or inf at once. Training may still cross zero later
        (see the class docstring); only the start is checked.
        """
        values = np.asarray(weights, "float32").astype("float64")
        size = float(np.sum(np.abs(values)))
        if self.normalization == "normalized" or (
                self.normalization == "posnormed" and reference_posnormed):
            total, what = float(np.sum(values)), "sum(initial_weights)"
        elif self.normalization == "absnormed":
            total, what = size, "sum(abs(initial_weights))"
        else:
            return
        # Within the round-off of a float32 sum of these weights: zero.
        if abs(total) <= len(values) * np.finfo("float32").eps * size:
            raise ValueError(
                f"Invalid initial_weights={list(weights)!r} with "
                f"normalization={self.normalization!r}: {what} is "
                f"{total:g}, and the blend divides by it. Allowed: weights "
                "whose sum is clearly non-zero (the default 1/n each), or "
                "another normalization."
            )

    def build(self, input_shape):
        super().build(input_shape)
        n = len(self.basis)
        start = self.initial_weights or [1.0 / n] * n
        self.blend_weights = self.add_weight(
            name="blend_weights",
            shape=self.param_shape(n),
            initializer=lambda shape, dtype=None: ops.convert_to_tensor(
                np.broadcast_to(np.asarray(start, "float32"), shape).copy(),
                dtype=dtype,
            ),
            trainable=self.blend_weights_trainable,
        )
        self.swish_beta = None
        if _basis.PARAMETRIC in self.basis:
            self.swish_beta = self.add_weight(
                name="swish_beta",
                shape=self.param_shape(),
                initializer=keras.initializers.Constant(1.0),
            )

    def blend(self):
        """The normalised blend weights `w = N(theta)` as a tensor.

        Returns:
            A float32 tensor of shape `(n,)` or `(channels, n)`.
        """
        return normalize_blend(
            self.blend_weights, self.normalization, self.reference_posnormed
        )

    def normalized_weights(self):
        """The normalised blend weights `w = N(theta)` as a NumPy array.

        Returns:
            A float32 array of shape `(n,)` (layer granularity) or
            `(channels, n)` (channel granularity), in the order of `basis`.

        Examples:

        >>> import keras_learnact as kla
        >>> abu = kla.layers.ABU(["relu", "tanh"], normalization="normalized",
        ...                      initial_weights=[3.0, 1.0])
        >>> abu.build((None, 4))
        >>> abu.normalized_weights().tolist()
        [0.75, 0.25]
        """
        return np.asarray(ops.convert_to_numpy(self.blend()), dtype="float32")

    def call(self, inputs, training=None):
        inputs = self.float_input(inputs)
        params = [ops.cast(self.blend(), inputs.dtype)]
        if self.swish_beta is not None:
            params.append(ops.cast(self.swish_beta, inputs.dtype))
        kernel = _blend_kernel(tuple(self.basis),
                               self.layout(len(inputs.shape)))
        return kernel(inputs, *params)

    def get_config(self):
        config = super().get_config()
        config.update({
            "basis": list(self.basis),
            "normalization": self.normalization,
            "initial_weights": self.initial_weights,
            "blend_weights_trainable": self.blend_weights_trainable,
            "reference_posnormed": self.reference_posnormed,
        })
        return config

    def _fit_parameters(self, function, x, weights):
        """The blend by weighted least squares over the weights that the
        normalisation allows, and swish's `beta` by a one-dimensional
        search around its current value (see `LearnableActivation.fit_to`
        and the class docstring)."""
        target = _initial.evaluate(function, x)
        fixed = {name: _basis.values(name, x) for name in set(self.basis)
                 if name != _basis.PARAMETRIC}

        def fit(beta):
            design = np.stack([
                _basis.values(name, x, beta) if name == _basis.PARAMETRIC
                else fixed[name] for name in self.basis], axis=1)
            blend = self._fit_blend(
                *_initial.compress(design, target, weights))
            return blend, _initial.weighted_error(
                design @ blend, target, weights)

        beta = None
        if self.swish_beta is not None:
            start = float(np.mean(self._current(self.swish_beta, 1.0)))
            beta = _initial.minimize_scalar(lambda b: fit(b)[1], start)
            self._assign(self.swish_beta, beta)
        blend = fit(beta)[0]
        mode = self.normalization
        if mode == "posnormed" and not self.reference_posnormed:
            theta = np.clip(blend * (POSNORM_MAX / np.max(blend)),
                            POSNORM_MIN, POSNORM_MAX)
        elif mode == "softmax":
            theta = np.log(np.maximum(blend, SOFTMAX_FLOOR))
        else:
            theta = blend
        self._assign(self.blend_weights, theta)

    def _fit_blend(self, design, target):
        """The applied blend weights `w` that fit best (in least squares)
        among those the normalisation can produce."""
        mode = self.normalization
        weights = np.ones(len(target))
        if mode == "unrestricted":
            return _initial.weighted_least_squares(design, target, weights)
        if mode == "normalized" or (
                mode == "posnormed" and self.reference_posnormed):
            return _initial.weighted_least_squares(
                design, target, weights, total=1.0)
        if mode != "absnormed":  # posnormed, softmax: on the simplex
            return _initial.simplex_least_squares(design, target, weights)
        # absnormed: sum(|w|) = 1, not convex; for each sign pattern s the
        # best w with s . w = 1, scaled onto sum(|w|) = 1, and the best of
        # those.
        n = design.shape[1]
        free = _initial.weighted_least_squares(design, target, weights)
        candidates = [free]
        if n <= SIGN_PATTERNS_UP_TO:
            for signs in itertools.product((1.0, -1.0), repeat=n):
                signs = np.asarray(signs)
                candidates.append(signs * _initial.weighted_least_squares(
                    design * signs, target, weights, total=1.0))
        candidates = [c / np.sum(np.abs(c)) for c in candidates
                      if np.sum(np.abs(c)) > 0] or [np.full(n, 1.0 / n)]
        errors = [_initial.weighted_error(design @ c, target, weights)
                  for c in candidates]
        return candidates[int(np.argmin(errors))]
