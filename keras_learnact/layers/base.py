"""The shared base of every learnable activation in keras-learnact.

`LearnableActivation` owns what all five families have in common:

* the parameter *granularity*: one parameter set for the whole layer
  (`"layer"`) or one per channel of `axis` (`"channel"`);
* resolving the channel axis against the input at build time, with a clear
  error when the input cannot have it;
* broadcasting a per-channel parameter against an input of any rank;
* `curve(x)`: the learned function, in inference behaviour, evaluated on a
  1-D grid and returned as a NumPy array of shape `(channels, len(x))`;
* `parameter_values()`: every weight of the layer as NumPy arrays;
* the config plumbing for `granularity` and `axis`.

Layers import nothing from callbacks, snapshots or plotting; those talk to the
layers only through `curve` and `parameter_values`.
"""

import math

import keras
import numpy as np
from keras import ops

GRANULARITIES = ("layer", "channel")


def cond(pred, true_fn, false_fn):
    """`ops.cond(pred, true_fn, false_fn)`, run as a Python `if` when `pred`
    has a value.

    Inside a compiled function (a TensorFlow graph, JAX `jit`) this is
    `ops.cond`. Outside one, JAX's `lax.cond` traces and compiles both
    branches again on every call, because the branch closures are new
    each time (measured: 60 ms for a two-line branch on a 2-core CPU, so a
    model run eagerly on JAX took seconds per batch); a concrete `pred`
    instead picks its branch in Python, as TensorFlow's eager `cond` and
    PyTorch's already do.

    Args:
        pred: a scalar boolean tensor.
        true_fn: a function of no arguments, called when `pred` is true.
        false_fn: a function of no arguments with the same output
            structure, called otherwise.

    Returns:
        The chosen function's output.

    Examples:

    >>> from keras import ops
    >>> x = ops.convert_to_tensor([1.0, -2.0])
    >>> y = cond(ops.all(x > 0), lambda: x, lambda: -x)
    >>> ops.convert_to_numpy(y).tolist()
    [-1.0, 2.0]
    """
    if keras.backend.backend() == "jax":
        import jax

        if not isinstance(pred, jax.core.Tracer):
            return true_fn() if bool(pred) else false_fn()
    return ops.cond(pred, true_fn, false_fn)


def check_choice(name, value, allowed):
    """Returns `value` if it is one of `allowed`, else raises `ValueError`.

    Args:
        name: the argument's name, used in the message.
        value: the value given.
        allowed: the allowed values.

    Returns:
        `value`, unchanged.

    Examples:

    >>> check_choice("granularity", "layer", GRANULARITIES)
    'layer'
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"Invalid {name}={value!r}. Allowed values: "
            f"{', '.join(repr(a) for a in allowed)}."
        )
    return value


def check_number(name, value, low=None, high=None, low_open=False,
                 high_open=False):
    """Returns `value` as a float if it lies in the given range.

    Raises `ValueError` naming the value and the allowed range otherwise
    (non-numbers, NaN and infinities included).

    Args:
        name: the argument's name, used in the message.
        value: the value given.
        low: the lower bound, or None for none.
        high: the upper bound, or None for none.
        low_open: whether `low` itself is excluded.
        high_open: whether `high` itself is excluded.

    Returns:
        `float(value)`.

    Examples:

    >>> check_number("momentum", 0.9, 0.0, 1.0, high_open=True)
    0.9
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    allowed = (
        f"{left}{'-inf' if low is None else low}, "
        f"{'inf' if high is None else high}{right}"
    )
    ok = isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    )
    if ok:
        value = float(value)
        ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(
            f"Invalid {name}={value!r}: expected a finite number in {allowed}."
        )
    return value


class LearnableActivation(keras.layers.Layer):
    """Base class of the learnable activations of keras-learnact.

    Subclasses create their weights in `build` with shapes from
    `param_shape(...)` after calling `super().build(input_shape)`, and write
    `call` with `keras.ops` only, using `broadcast(param, ndim)` to line a
    per-channel parameter up with the input.

    Args:
        granularity: `"layer"` for one parameter set shared by every element,
            or `"channel"` for one set per channel of `axis` (per unit after a
            `Dense` layer), shared over batch and spatial positions.
        axis: the channel axis, `-1` for channels_last (default) or `1` for
            channels_first inputs. Only used with `granularity="channel"`,
            and never the batch axis.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras_learnact as kla
    >>> layer = kla.layers.AdaptiveScaling("tanh", granularity="channel")
    >>> isinstance(layer, kla.layers.LearnableActivation)
    True
    """

    def __init__(self, granularity="layer", axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.granularity = check_choice(
            "granularity", granularity, GRANULARITIES
        )
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise ValueError(
                f"Invalid axis={axis!r}: expected an integer such as -1 "
                "(channels_last) or 1 (channels_first)."
            )
        if int(axis) == 0:
            raise ValueError(
                "Invalid axis=0: that is the batch axis. Use -1 "
                "(channels_last) or 1 (channels_first)."
            )
        self.axis = int(axis)
        self.supports_masking = True
        self.channels = None
        self._axis_from_end = None

    # -- build-time shape plumbing ---------------------------------------

    def build(self, input_shape):
        """Resolves the channel axis and the number of channels.

        Args:
            input_shape: the input's shape, batch axis included.
        """
        rank = len(input_shape)
        if rank < 1:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs an input with a "
                f"batch axis; got a scalar input shape {input_shape}."
            )
        if self.granularity == "layer":
            self.channels = 1
            return
        axis = self.axis + rank if self.axis < 0 else self.axis
        if not 1 <= axis < rank:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': axis={self.axis} is not "
                f"a channel axis of an input of shape {tuple(input_shape)} "
                f"(rank {rank}); allowed: 1..{rank - 1} or "
                f"-{rank - 1}..-1, or use granularity='layer'."
            )
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the channel axis "
                f"{self.axis} of input shape {tuple(input_shape)} has an "
                "unknown size; granularity='channel' needs it known."
            )
        self.channels = int(channels)
        self._axis_from_end = axis - rank

    def param_shape(self, *trailing):
        """The shape of a parameter: `trailing`, preceded by the channels.

        Args:
            *trailing: sizes of the parameter's own axes (for instance the
                number of basis functions).

        Returns:
            `(channels, *trailing)` for channel granularity, `trailing`
            for layer granularity.
        """
        if self.granularity == "channel":
            return (self.channels, *trailing)
        return tuple(trailing)

    def broadcast(self, param, ndim):
        """Reshapes a per-channel parameter to broadcast against an input.

        Args:
            param: a tensor of shape `param_shape()` (scalar for layer
                granularity, `(channels,)` for channel granularity).
            ndim: the rank of the input it will meet.

        Returns:
            `param` itself for layer granularity; otherwise `param` reshaped
            to rank `ndim` with the channels on the channel axis.
        """
        if self.granularity == "layer":
            return param
        shape = [1] * ndim
        shape[ndim + self._axis_from_end] = self.channels
        return ops.reshape(param, shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def float_input(self, inputs):
        """`inputs` as a floating tensor, the way `keras.layers.Dense`
        computes on them.

        Keras casts floating inputs to the layer's compute dtype before
        `call` but passes integer and boolean ones through, and a layer
        that casts its float weights to the input's dtype would then
        truncate them (or fail). Those inputs are cast to the compute
        dtype here, so an integer input gives the same floating output as
        the same values given as floats; floating inputs are returned
        unchanged.

        Args:
            inputs: the tensor given to `call`.

        Returns:
            `inputs`, cast to `self.compute_dtype` if it is not floating.

        Examples:

        >>> import keras, numpy as np, keras_learnact as kla
        >>> layer = kla.layers.AdaptiveScaling("relu")
        >>> x = layer.float_input(np.array([[-2, 3]], "int32"))
        >>> keras.backend.standardize_dtype(x.dtype)
        'float32'
        """
        inputs = ops.convert_to_tensor(inputs)
        if keras.backend.is_float_dtype(inputs.dtype):
            return inputs
        return ops.cast(inputs, self.compute_dtype)

    # -- what callbacks and plots use --------------------------------------

    def curve(self, x):
        """Evaluates the learned function on a 1-D grid.

        The layer is called in inference mode (`training=False`), so the
        curve is what the layer computes at test time.

        Args:
            x: a 1-D array-like of finite input values.

        Returns:
            A float32 NumPy array of shape `(channels, len(x))`, with
            `channels == 1` for layer granularity.

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.AdaptiveScaling("relu")
        >>> layer.build((None, 8))
        >>> layer.curve(np.array([-1.0, 0.0, 2.0])).tolist()
        [[0.0, 0.0, 2.0]]
        """
        grid = np.asarray(x, dtype="float32")
        if grid.ndim != 1 or grid.size == 0:
            raise ValueError(
                f"curve() needs a non-empty 1-D grid; got an array of shape "
                f"{grid.shape}."
            )
        if not np.all(np.isfinite(grid)):
            raise ValueError("curve() needs a grid of finite values.")
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet: call it on an input "
                "(or call build(input_shape)) before curve()."
            )
        ndim = self._curve_rank()
        channels = self.channels if self.granularity == "channel" else 1
        shape = [grid.size] + [1] * (ndim - 1)
        channel_axis = 1
        if self.granularity == "channel":
            channel_axis = ndim + self._axis_from_end
            shape[channel_axis] = channels
        probe = np.broadcast_to(
            grid.reshape([grid.size] + [1] * (ndim - 1)), shape
        ).copy()
        out = ops.convert_to_numpy(self(probe, training=False))
        out = np.asarray(out, dtype="float32").reshape(grid.size, -1)
        return np.ascontiguousarray(out.T[:channels])

    def _curve_rank(self):
        if self.granularity == "channel":
            return max(2, -self._axis_from_end + 1)
        return 2

    def parameter_values(self):
        """Every weight of the layer, trainable or not, as NumPy arrays.

        Returns:
            A dict from the weight's name (`blend_weights`, `alpha`, ...) to a
            NumPy array holding its current value.

        Examples:

        >>> import keras_learnact as kla
        >>> layer = kla.layers.AdaptiveScaling("relu")
        >>> layer.build((None, 4))
        >>> layer.parameter_values()
        {'alpha': array(1., dtype=float32)}
        """
        return {
            w.name: np.asarray(ops.convert_to_numpy(w.value))
            for w in self.weights
        }

    def get_config(self):
        config = super().get_config()
        config.update({"granularity": self.granularity, "axis": self.axis})
        return config
