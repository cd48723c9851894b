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
* starting as a given function (`initial_function`, `initial_range`) and
  `fit_to(function, x)`: the checks, the sample grid and the error, around
  each family's own `_fit_parameters` (the shared NumPy mathematics is in
  `_initial`);
* the config plumbing for `granularity`, `axis`, `initial_function` and
  `initial_range`.

Layers import nothing from callbacks, snapshots or plotting; those talk to the
layers only through `curve` and `parameter_values`.
"""

import dataclasses
import functools
import math

import keras
import numpy as np
from keras import ops

from keras_learnact.layers import _initial

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


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where per-channel parameters sit against an input of rank `ndim`.

    Args:
        ndim: the rank of the input.
        channel: the channel axis, or None for one parameter set per layer.
        channels: the number of channels (with `channel`).

    Example:

    >>> Layout(4, 3, 16).axes
    (0, 1, 2)
    """

    ndim: int
    channel: int | None = None
    channels: int = 1

    @property
    def axes(self):
        """The axes a per-parameter sum runs over."""
        return tuple(a for a in range(self.ndim) if a != self.channel)

    def broadcast(self, param):
        """`param` (scalar, or one value per channel) shaped to broadcast
        against the input."""
        if self.channel is None:
            return param
        shape = [1] * self.ndim
        shape[self.channel] = self.channels
        return ops.reshape(param, shape)


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
        initial_function: None (default: the family's own initialisation),
            or the name of a function the unit starts as: `"relu"`,
            `"relu6"`, `"gelu"`, `"swish"` (or `"silu"`), `"hard_swish"`
            (or `"hard_silu"`), `"tanh"`, `"elu"`, `"leaky_relu"` (negative
            slope 0.2, Keras's default), `"sigmoid"`, `"softplus"` or
            `"identity"` (or `"linear"`), with Keras's definitions. At build
            the parameters are fitted so that the unit approximates it on
            `initial_range`, each point weighted by the standard normal
            density (as a standard normal input would weigh it); every
            channel starts the same. How each family fits, and how well,
            is in docs/initial-functions.md.
        initial_range: `(low, high)`, the range the initial function is
            fitted on, two finite numbers with `low < high` (default
            `(-4, 4)`).
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Examples:

    >>> import keras_learnact as kla
    >>> layer = kla.layers.AdaptiveScaling("tanh", granularity="channel")
    >>> isinstance(layer, kla.layers.LearnableActivation)
    True
    >>> pwlu = kla.layers.PWLU(initial_function="relu6")
    >>> pwlu.build((None, 4))
    >>> pwlu.curve([-1.0, 3.0, 4.0])[0].tolist()
    [0.0, 3.0, 4.0]
    """

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls, *args, **kwargs)
        # Keras wraps `build` (name scope, `built`, locking the state);
        # the fit to `initial_function` runs after that whole build, once
        # the family's weights exist, without each family calling it.
        keras_build = obj.build

        @functools.wraps(keras_build)
        def build_and_fit(*args, **kwargs):
            keras_build(*args, **kwargs)
            obj._fit_initial_function()

        obj.build = build_and_fit
        return obj

    def __init__(self, granularity="layer", axis=-1, initial_function=None,
                 initial_range=_initial.DEFAULT_RANGE, **kwargs):
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
        self.initial_function = _initial.check_function(initial_function)
        self.initial_range = _initial.check_range(initial_range)
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
        return self.layout(ndim).broadcast(param)

    def layout(self, ndim):
        """How this layer's parameters meet an input of rank `ndim`, as a
        hashable `Layout` (for functions cached per configuration, shared
        by every layer that has it).

        Args:
            ndim: the rank of the input.

        Returns:
            A `Layout`.

        Examples:

        >>> import keras_learnact as kla
        >>> layer = kla.layers.ABU(granularity="channel")
        >>> layer.build((None, 8, 8, 3))
        >>> layer.layout(4).axes
        (0, 1, 2)
        """
        if self.granularity == "layer":
            return Layout(ndim)
        return Layout(ndim, ndim + self._axis_from_end, self.channels)

    def reduction_axes(self, ndim):
        """The axes a per-parameter sum runs over, for an input of rank
        `ndim`: every axis for layer granularity, every axis but the
        channel axis for channel granularity.

        Args:
            ndim: the rank of the input.

        Returns:
            A list of axis indices.

        Examples:

        >>> import keras_learnact as kla
        >>> layer = kla.layers.ABU(granularity="channel")
        >>> layer.build((None, 8, 8, 3))
        >>> layer.reduction_axes(4)
        [0, 1, 2]
        """
        return list(self.layout(ndim).axes)

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

    # -- starting as a given function -----------------------------------------

    def fit_to(self, function, x, weights=None):
        """Fits the unit to a function on sample points; returns the error.

        Sets the layer's weights (every channel the same) so that the unit
        approximates `function` at the points `x`, as well as the family's
        parameters allow (see docs/initial-functions.md): exactly where
        they can express it, else by weighted least squares (ABU,
        AdaptiveScaling, SLAF), interpolation at the breakpoints (PWLU) or
        a deterministic search (DEU). A PWLU is put in phase II, so that it
        computes and learns the fitted function (the statistics phase would
        compute ReLU). The layer must be built.

        Args:
            function: a function of a NumPy array returning a NumPy array of
                the same shape (NumPy in, NumPy out), or one of the names
                `initial_function` accepts.
            x: the sample points, a 1-D array-like of finite numbers with at
                least two distinct values (a PWLU's range becomes
                `[min(x), max(x)]`).
            weights: optional non-negative weights, one per point (default:
                every point the same). Pass `x` drawn from the input
                distribution, or its density as `weights`, to fit where the
                inputs are.

        Returns:
            The maximum absolute error of the layer's output (inference
            mode, as `curve`) against `function` on `x`, a float.

        Examples:

        >>> import numpy as np, keras_learnact as kla
        >>> layer = kla.layers.ABU(["relu", "tanh", "identity"])
        >>> layer.build((None, 4))
        >>> x = np.linspace(-3.0, 3.0, 61)
        >>> error = layer.fit_to(lambda v: 2.0 * np.tanh(v) - v, x)
        >>> error < 1e-5
        True
        >>> (np.round(layer.normalized_weights(), 4) + 0.0).tolist()
        [0.0, 2.0, -1.0]
        """
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet: call it on an input "
                "(or call build(input_shape)) before fit_to()."
            )
        if isinstance(function, str):
            function = _initial.function(function)
        elif not callable(function):
            raise ValueError(
                f"Invalid function={function!r}: expected a callable (NumPy "
                "in, NumPy out) or one of the names: "
                f"{', '.join(repr(n) for n in _initial.NAMES)}."
            )
        x, weights = _initial.check_samples(x, weights)
        target = _initial.evaluate(function, x)
        self._fit(function, x, weights)
        outputs = self.curve(x).astype("float64")
        return float(np.max(np.abs(outputs - target)))

    def _fit_initial_function(self):
        """Fits the unit to `initial_function` on `initial_range` (at
        build; nothing without an initial function)."""
        if self.initial_function is None:
            return
        x = _initial.sample_points(*self.initial_range)
        self._fit(_initial.function(self.initial_function), x,
                  _initial.normal_weights(x))

    def _fit(self, function, x, weights):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # A layer first built inside a traced function is fitted once,
            # eagerly, as its weights are initialised: not in the graph.
            with tf.init_scope():
                self._fit_parameters(function, x, weights)
        else:
            self._fit_parameters(function, x, weights)

    def _fit_parameters(self, function, x, weights):
        """Sets the weights so that the unit approximates `function`.

        Each family implements it (its own mathematics, in its file).

        Args:
            function: a NumPy function (float64 in, float64 out).
            x: the sample points, a 1-D float64 array.
            weights: the points' weights, float64, summing to one.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement fitting to a function "
            "(_fit_parameters)."
        )

    def _current(self, variable, default):
        """A weight's value as a float64 NumPy array, or `default` while it
        has none: a weight created inside a `tf.function` trace is given
        its value only when the function first runs."""
        value = np.asarray(ops.convert_to_numpy(variable.value), "float64")
        return default if value.size == 0 else value

    def _assign(self, variable, value):
        """Assigns a NumPy value, broadcast to every channel."""
        value = np.asarray(value, dtype="float64")
        variable.assign(np.broadcast_to(value, variable.shape).astype(
            keras.backend.standardize_dtype(variable.dtype)))

    def get_config(self):
        config = super().get_config()
        config.update({
            "granularity": self.granularity,
            "axis": self.axis,
            "initial_function": self.initial_function,
            "initial_range": list(self.initial_range),
        })
        return config
