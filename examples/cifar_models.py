"""CIFAR networks and the activation registry shared by the CIFAR scripts.

Networks (input 32x32x3, logits out, no softmax):

* `smcn`, `smcnLin`, `smcnDeep`, `smcnBN`: the ABU paper's networks, with
  its initialisation (convolution kernels truncated normal with stddev
  `sqrt(2 / fan_in)`, dense kernels `sqrt(2 / (fan_in * fan_out))`, biases
  0.1, the first convolution's bias 0.0). In `smcnBN` an ABU additionally
  batch-normalises each basis output before blending (`BNBlendABU`).
* `resnet18`: the standard (post-activation) CIFAR ResNet-18 of He et al.
  (2016): a 3x3 stem without max pooling, four stages of two basic blocks
  (64, 128, 256, 512 filters), 1x1 projection shortcuts where the shape
  changes; 11.2 M parameters.
* `resnet32`: He et al.'s CIFAR design with 6n+2 layers, n = 5: three stages
  of five basic blocks (16, 32, 64 filters) and parameter-free shortcuts
  (option A: subsample and zero-pad the channels); 0.46 M parameters.

The ResNets use He-normal kernels, no convolution biases (each convolution
is followed by BatchNormalization) and the activation under test in place of
every ReLU, the one after each residual addition included.

Activations are named (`ACTIVATIONS`): the fixed `relu`, `identity`, `tanh`,
`elu`, `selu`, `swish` (Keras's fixed swish, `x * sigmoid(x)`), their
`alpha-` versions (`AdaptiveScaling`; `alpha-swish` learns beta as well), the
five ABU modes (`abu`, `abu-normalized`, `abu-absnormed`, `abu-posnormed`,
`abu-softmax`), and `deu`, `slaf`, `pwlu`, `rational` (the Padé Activation
Unit, version A) when the installed keras_learnact has those layers.

Example:

>>> import cifar_models
>>> model = cifar_models.build_model("smcn", "abu-softmax", num_classes=10)
>>> model.output_shape
(None, 10)
"""

import functools
import itertools
import math

import keras
import numpy as np
from keras import ops

import keras_learnact as kla
from keras_learnact.layers.abu import normalize_blend

FIXED = ("identity", "relu", "tanh", "elu", "selu", "swish")
ABU_MODES = {
    "abu": "unrestricted",
    "abu-normalized": "normalized",
    "abu-absnormed": "absnormed",
    "abu-posnormed": "posnormed",
    "abu-softmax": "softmax",
}
# Layers that other parts of the package add; registered only when present.
OPTIONAL = {
    "deu": "DEU", "slaf": "SLAF", "pwlu": "PWLU", "rational": "Rational",
}

# The ABU paper's 17 activation specs, in its order of presentation.
ABU_PAPER_SPECS = (
    *FIXED, *(f"alpha-{name}" for name in FIXED), *ABU_MODES,
)

MODELS = ("smcn", "smcnLin", "smcnDeep", "smcnBN", "resnet18", "resnet32")


def _registry():
    found = {}
    for name in FIXED:
        keras_name = "linear" if name == "identity" else name
        found[name] = functools.partial(keras.layers.Activation, keras_name)
    for name in FIXED:
        found[f"alpha-{name}"] = functools.partial(
            kla.layers.AdaptiveScaling, name
        )
    for name, mode in ABU_MODES.items():
        found[name] = functools.partial(kla.layers.ABU, normalization=mode)
    for name, cls in OPTIONAL.items():
        if hasattr(kla.layers, cls):
            found[name] = getattr(kla.layers, cls)
    return found


# Name -> a callable returning a fresh activation layer.
ACTIVATIONS = _registry()


def make_activation(name):
    """A fresh activation layer for a registry name.

    Args:
        name: a key of `ACTIVATIONS` (for example `"relu"`, `"alpha-tanh"`,
            `"abu-softmax"`, `"pwlu"`).

    Returns:
        A new Keras layer.

    Raises:
        ValueError: if the name is unknown, or names a layer (deu, slaf,
            pwlu, rational) that the installed keras_learnact does not have.

    Example:

    >>> type(make_activation("alpha-relu")).__name__
    'AdaptiveScaling'
    """
    if name in ACTIVATIONS:
        return ACTIVATIONS[name]()
    if name in OPTIONAL:
        raise ValueError(
            f"Activation {name!r} needs keras_learnact.layers."
            f"{OPTIONAL[name]}, which this installation of keras_learnact "
            f"does not have. Available: {', '.join(ACTIVATIONS)}."
        )
    raise ValueError(
        f"Unknown activation {name!r}. Available: {', '.join(ACTIVATIONS)}."
    )


@keras.saving.register_keras_serializable(package="keras_learnact_examples")
class BNBlendABU(kla.layers.LearnableActivation):
    """An ABU that batch-normalises each basis output before blending.

    Formula:

        y = sum_j w_j * BN_j(g_j(x)),     w = N(theta)

    with the ABU basis `g_j` (by default ReLU, ELU, tanh, Swish with a
    trainable beta, identity), one `BatchNormalization` `BN_j` per basis
    function (per channel of the last axis, with its own gamma, beta and
    moving statistics) and the ABU normalisation `N` of the raw blend weights
    `theta` (init `1/n`). This is the ABU paper's variant for its smcnBN
    network. Because every `BN_j` works per channel, the learned function
    differs per channel even with one `theta` per layer, so `curve(x)`
    returns one curve per channel.

    Args:
        basis: basis function names: `"swish"` (trainable beta),
            `"identity"` or any elementwise Keras activation name.
        normalization: the ABU mode: `"unrestricted"`, `"normalized"`,
            `"absnormed"`, `"posnormed"` or `"softmax"`.
        granularity: `"layer"` (one `theta`, as in the paper) or
            `"channel"` (one `theta` per channel).
        momentum: momentum of the moving statistics of each `BN_j`.
        epsilon: the variance epsilon of each `BN_j`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import numpy as np
    >>> layer = BNBlendABU(normalization="softmax")
    >>> layer(np.ones((2, 4, 4, 8), "float32")).shape
    (2, 4, 4, 8)

    Reference:
        Sütfeld et al., "Adaptive Blending Units: Trainable Activation
        Functions for Deep Neural Networks", arXiv:1806.10064.
    """

    def __init__(self, basis=("relu", "elu", "tanh", "swish", "identity"),
                 normalization="unrestricted", granularity="layer",
                 momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(granularity=granularity, axis=-1, **kwargs)
        kla.layers.ABU(basis=basis, normalization=normalization)  # validates
        self.basis = tuple(basis)
        self.normalization = normalization
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.norms = [
            keras.layers.BatchNormalization(
                momentum=self.momentum, epsilon=self.epsilon,
                dtype=self.dtype_policy, name=f"bn_{j}_{b}",
            )
            for j, b in enumerate(self.basis)
        ]

    def build(self, input_shape):
        super().build(input_shape)
        n = len(self.basis)
        self.blend_weights = self.add_weight(
            name="blend_weights", shape=self.param_shape(n),
            initializer=keras.initializers.Constant(1.0 / n),
        )
        self.swish_beta = None
        if "swish" in self.basis:
            self.swish_beta = self.add_weight(
                name="swish_beta", shape=self.param_shape(),
                initializer=keras.initializers.Constant(1.0),
            )
        for norm in self.norms:
            norm.build((None, input_shape[-1]))

    def _basis(self, name, x):
        if name == "identity":
            return x
        if name == "swish":
            beta = ops.cast(self.swish_beta, x.dtype)
            if self.granularity == "channel":
                beta = ops.reshape(beta, (1, -1))
            return x * ops.sigmoid(beta * x)
        return keras.activations.get(name)(x)

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        flat = ops.reshape(inputs, (-1, shape[-1]))
        weights = ops.cast(
            normalize_blend(self.blend_weights, self.normalization),
            flat.dtype,
        )
        outputs = None
        pairs = zip(self.basis, self.norms, strict=True)
        for j, (name, norm) in enumerate(pairs):
            w = weights[..., j]
            if self.granularity == "channel":
                w = ops.reshape(w, (1, -1))
            term = w * norm(self._basis(name, flat), training=training)
            outputs = term if outputs is None else outputs + term
        return ops.reshape(outputs, shape)

    def curve(self, x):
        """The learned function per channel, in inference mode.

        Args:
            x: a 1-D array-like of finite input values.

        Returns:
            A float32 array of shape `(channels, len(x))`.

        Example:

        >>> layer = BNBlendABU()
        >>> layer.build((None, 8, 8, 3))
        >>> layer.curve([-1.0, 0.0, 1.0]).shape
        (3, 3)
        """
        grid = np.asarray(x, dtype="float32")
        if grid.ndim != 1 or grid.size == 0 or not self.built:
            raise ValueError(
                "curve() needs a built layer and a non-empty 1-D grid; got "
                f"an array of shape {grid.shape}."
            )
        channels = self.norms[0].moving_mean.shape[0]
        probe = np.repeat(grid[:, None], channels, axis=1)
        out = ops.convert_to_numpy(self(probe, training=False))
        return np.ascontiguousarray(np.asarray(out, "float32").T)

    def parameter_values(self):
        """Every weight, the batch normalisations' prefixed by their basis.

        Returns:
            A dict from names such as `blend_weights` or `bn_0_relu/gamma` to
            NumPy arrays.

        Example:

        >>> layer = BNBlendABU(basis=("relu", "tanh"))
        >>> layer.build((None, 4))
        >>> sorted(layer.parameter_values())[:2]
        ['blend_weights', 'bn_0_relu/beta']
        """
        values = {"blend_weights": ops.convert_to_numpy(self.blend_weights)}
        if self.swish_beta is not None:
            values["swish_beta"] = ops.convert_to_numpy(self.swish_beta)
        for norm in self.norms:
            for w in norm.weights:
                values[f"{norm.name}/{w.name}"] = ops.convert_to_numpy(w)
        return values

    def get_config(self):
        config = super().get_config()
        config.pop("axis")
        config.update({
            "basis": list(self.basis),
            "normalization": self.normalization,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_learnact_examples")
class ShortcutPad(keras.layers.Layer):
    """He et al.'s parameter-free shortcut (option A) for a strided block.

    Takes every second row and column and zero-pads the channels to
    `filters`, half before and half after.

    Args:
        filters: the number of output channels.
        **kwargs: base layer keyword arguments.

    Example:

    >>> import numpy as np
    >>> ShortcutPad(32)(np.ones((1, 8, 8, 16), "float32")).shape
    (1, 4, 4, 32)
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)

    def call(self, inputs):
        extra = self.filters - inputs.shape[-1]
        strided = inputs[:, ::2, ::2, :]
        return ops.pad(
            strided, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]]
        )

    def compute_output_shape(self, input_shape):
        rows, cols = input_shape[1], input_shape[2]
        half = [None if s is None else (s + 1) // 2 for s in (rows, cols)]
        return (input_shape[0], *half, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _l2(weight_decay):
    # Decoupled decay d on w equals an L2 loss of d/2 * |w|^2 under SGD.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def _abu_conv(x, filters, size, weight_decay, bias=0.1):
    fan_in = size * size * x.shape[-1]
    return keras.layers.Conv2D(
        filters, size, padding="same",
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=math.sqrt(2.0 / fan_in)
        ),
        bias_initializer=keras.initializers.Constant(bias),
        kernel_regularizer=_l2(weight_decay),
    )(x)


def _abu_dense(x, units, weight_decay, dtype=None):
    fan_in = x.shape[-1]
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.TruncatedNormal(
            stddev=math.sqrt(2.0 / (fan_in * units))
        ),
        bias_initializer=keras.initializers.Constant(0.1),
        kernel_regularizer=_l2(weight_decay), dtype=dtype,
    )(x)


def _smcn(variant, names, label, num_classes, input_shape, weight_decay):
    bn = variant == "smcnBN"
    dropout = variant in ("smcn", "smcnDeep")

    def act(x):
        name = next(names)
        if bn:
            x = keras.layers.BatchNormalization()(x)
            if name in ABU_MODES:
                return BNBlendABU(normalization=ABU_MODES[name])(x)
        return make_activation(name)(x)

    def drop(x):
        return keras.layers.Dropout(0.5)(x) if dropout else x

    def pool(x):
        if variant == "smcnLin":
            return keras.layers.AveragePooling2D(2, 2)(x)
        return keras.layers.MaxPooling2D(3, 2, padding="same")(x)

    inputs = keras.Input(input_shape)
    x = drop(act(_abu_conv(inputs, 64, 5, weight_decay, bias=0.0)))
    x = pool(act(_abu_conv(x, 64, 3, weight_decay)))
    repeats = 3 if variant == "smcnDeep" else 1
    for _ in range(repeats):
        x = drop(act(_abu_conv(x, 64, 1, weight_decay)))
        x = act(_abu_conv(x, 64, 5, weight_decay))
    x = keras.layers.Flatten()(pool(x))
    x = drop(act(_abu_dense(x, 384, weight_decay)))
    x = act(_abu_dense(x, 192, weight_decay))
    # Logits in float32, so mixed precision keeps a float32 loss.
    outputs = _abu_dense(x, num_classes, weight_decay, dtype="float32")
    return keras.Model(inputs, outputs, name=f"{variant}_{label}")


def _res_conv(x, filters, size, strides, weight_decay):
    return keras.layers.Conv2D(
        filters, size, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=_l2(weight_decay),
    )(x)


def _basic_block(x, filters, strides, names, weight_decay, shortcut):
    y = _res_conv(x, filters, 3, strides, weight_decay)
    y = make_activation(next(names))(keras.layers.BatchNormalization()(y))
    y = _res_conv(y, filters, 3, 1, weight_decay)
    y = keras.layers.BatchNormalization()(y)
    if strides != 1 or x.shape[-1] != filters:
        if shortcut == "pad":
            x = ShortcutPad(filters)(x)
        else:
            x = _res_conv(x, filters, 1, strides, weight_decay)
            x = keras.layers.BatchNormalization()(x)
    return make_activation(next(names))(keras.layers.Add()([x, y]))


def _resnet(name, widths, blocks, shortcut, names, label, num_classes,
            input_shape, weight_decay):
    inputs = keras.Input(input_shape)
    x = _res_conv(inputs, widths[0], 3, 1, weight_decay)
    x = make_activation(next(names))(keras.layers.BatchNormalization()(x))
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(
                x, filters, strides, names, weight_decay, shortcut
            )
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_regularizer=_l2(weight_decay), dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=f"{name}_{label}")


def build_model(name, activation="relu", num_classes=10,
                input_shape=(32, 32, 3), weight_decay=0.0, n=5, width=64):
    """Builds one of the CIFAR networks with the named activation.

    Args:
        name: one of `MODELS`: `"smcn"`, `"smcnLin"`, `"smcnDeep"`,
            `"smcnBN"`, `"resnet18"`, `"resnet32"`.
        activation: a key of `ACTIVATIONS`, used in place of every
            activation of the network (never on the logits); or a list of
            keys, used in turn from the input side (cycling when the
            network has more activations), to mix activations.
        num_classes: 10 for CIFAR-10, 100 for CIFAR-100.
        input_shape: the image shape, channels last.
        weight_decay: decoupled-equivalent weight decay of every kernel,
            applied as an L2 penalty of `weight_decay / 2`; 0 for none.
        n: blocks per stage of `resnet32`, which has 6n+2 layers (5: the
            ResNet-32; 3, 7, 9 give He et al.'s ResNet-20, -44, -56).
        width: filters of the first stage of `resnet18` (64; the stages
            double it), for narrower variants in quick tests.

    Returns:
        An uncompiled functional `keras.Model` whose outputs are float32
        logits.

    Example:

    >>> model = build_model("resnet32", "alpha-relu", num_classes=100)
    >>> model.count_params() > 400_000
    True
    """
    if name not in MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Available: {', '.join(MODELS)}."
        )
    chosen = [activation] if isinstance(activation, str) else activation
    chosen = list(chosen)
    if not chosen:
        raise ValueError("activation: expected a name or a non-empty list.")
    for each in chosen:
        make_activation(each)  # fails early with a clear message
    label = "-".join(chosen) if len(chosen) > 1 else chosen[0]
    names = itertools.cycle(chosen)
    if name.startswith("smcn"):
        return _smcn(name, names, label, num_classes, input_shape,
                     weight_decay)
    if name == "resnet18":
        widths = tuple(width * 2**i for i in range(4))
        return _resnet(name, widths, 2, "projection", names, label,
                       num_classes, input_shape, weight_decay)
    return _resnet(f"resnet{6 * n + 2}", (16, 32, 64), n, "pad", names,
                   label, num_classes, input_shape, weight_decay)
