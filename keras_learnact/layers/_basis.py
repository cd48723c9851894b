"""Named elementwise activations used as ABU basis functions and by
AdaptiveScaling.

A basis is stored by name only, so it serialises as a list of strings.
`"swish"` is the one parametric member: `x * sigmoid(beta * x)` with a
trainable `beta` owned by the layer (Keras's fixed swish is `"silu"`).
`"identity"` is accepted as a synonym of Keras's `"linear"`.
"""

import keras
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
        return x * ops.sigmoid(beta * x)
    return keras.activations.get(name)(x)
