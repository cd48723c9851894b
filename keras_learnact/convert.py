"""Replacing the fixed activations of an existing Keras model.

`replace_activations(model, factory)` rebuilds a Sequential or functional
model (nested ones included) with every fixed elementwise activation
replaced by a layer that `factory(name)` makes, and every weight carried
over. What counts as a fixed activation, and its name:

* an `Activation` layer whose function is a Keras activation;
* `ReLU` (`"relu"`; `"relu6"` with `max_value=6`; `"leaky_relu"` with
  `negative_slope=0.2`), `LeakyReLU` with `negative_slope=0.2`
  (`"leaky_relu"`) and `ELU` with `alpha=1` (`"elu"`) layers;
* the `activation=` of `Dense`, `EinsumDense` and every convolution
  (`Conv1D/2D/3D`, their `Transpose` versions, `DepthwiseConv1D/2D`,
  `SeparableConv1D/2D`): the layer keeps its weights, gets a linear
  activation, and the new unit is called on its output.

Names are Keras's, with one spelling per function: `"swish"` for
`silu`/`swish` and `"hard_swish"` for `hard_silu`/`hard_swish`
(`ACTIVATION_NAMES` lists them all). Softmax, log-softmax and the other
activations that mix elements, `"linear"`, `PReLU` and the layers of this
package are not fixed elementwise activations and are left as they are;
so are the activations inside recurrent layers, which are applied inside
the recurrence. An activation that no Keras name describes (`LeakyReLU`
with its default slope 0.3, a `ReLU` with a threshold, a custom function)
is left unchanged too, with a warning naming it: no unit made from a name
would compute it.

The module sits above the layers (see STYLE.md) and imports none of them:
the factory decides what replaces what.
"""

import contextlib
import types
import warnings
from typing import NamedTuple

import keras

# Also public: `Replacement`, the type of `replaced_activations`'s items.
__all__ = ["ACTIVATION_NAMES", "replace_activations"]

# Keras's elementwise activations, in the spelling used here. Softmax,
# log_softmax, glu and sparsemax mix elements; "threshold" needs arguments;
# "linear" is no activation at all.
_ELEMENTWISE = (
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "swish",
    "mish", "hard_swish", "tanh", "hard_tanh", "sigmoid", "hard_sigmoid",
    "log_sigmoid", "sparse_sigmoid", "softplus", "softsign", "sparse_plus",
    "squareplus", "exponential", "tanh_shrink", "soft_shrink", "hard_shrink",
)
ACTIVATION_NAMES = tuple(
    name for name in _ELEMENTWISE if hasattr(keras.activations, name)
)
# Other spellings Keras accepts for the same function.
ALIASES = {"silu": "swish", "hard_silu": "hard_swish"}
# Activations that are deliberately left alone, without a warning.
_NOT_ELEMENTWISE = ("linear", "softmax", "log_softmax", "glu", "sparsemax")

_LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default
# Layers that are an activation, replaced by the unit as a whole.
_SWAPPED = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU,
            keras.layers.ELU)


def _functions():
    """Maps each Keras activation function (by identity) to its name."""
    found = {}
    for name in ACTIVATION_NAMES + tuple(ALIASES):
        found.setdefault(id(keras.activations.get(name)), ALIASES.get(name,
                                                                      name))
    for name in _NOT_ELEMENTWISE:
        if hasattr(keras.activations, name):
            found[id(keras.activations.get(name))] = None
    return found


def _with_activation_argument():
    """The layer classes whose `activation=` is applied to their output."""
    names = (
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D",
        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
        "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
        "SeparableConv2D",
    )
    return tuple(
        getattr(keras.layers, name) for name in names
        if hasattr(keras.layers, name)
    )


class Replacement(NamedTuple):
    """One activation that `replace_activations` replaced.

    Paths name a layer inside nested models as `"outer/inner/layer"`; a
    top-level layer is just its name.

    Attributes:
        layer: the path of the layer in the original model that held the
            activation: an activation layer, or a `Dense`/convolution whose
            `activation=` it was.
        activation: the activation's name, as passed to the factory.
        unit: the path of the new layer in the converted model.

    Examples:

    >>> Replacement("dense", "relu", "dense_relu").activation
    'relu'
    """

    layer: str
    activation: str
    unit: str


def _activation_name(layer, functions, with_argument):
    """What a layer's fixed activation is.

    Returns:
        `(kind, name, reason)`: kind is `"swap"` (the layer is the
        activation), `"append"` (its `activation=` is) or None (nothing to
        replace); name is the activation's name, or None with a reason
        when no Keras name describes it.
    """
    layers = keras.layers
    if isinstance(layer, layers.Activation):
        if id(layer.activation) in functions:
            name = functions[id(layer.activation)]
            return ("swap", name, None) if name else (None, None, None)
        what = getattr(layer.activation, "__name__", repr(layer.activation))
        return "swap", None, f"Activation with {what}, not a Keras activation"
    if isinstance(layer, layers.ReLU):
        slope = float(layer.negative_slope)
        high = None if layer.max_value is None else float(layer.max_value)
        if float(layer.threshold) == 0.0:
            if slope == 0.0 and high is None:
                return "swap", "relu", None
            if slope == 0.0 and high == 6.0:
                return "swap", "relu6", None
            if slope == _LEAKY_SLOPE and high is None:
                return "swap", "leaky_relu", None
        return "swap", None, (
            f"ReLU with max_value={layer.max_value}, negative_slope="
            f"{layer.negative_slope}, threshold={layer.threshold}: only relu, "
            "relu6 (max_value=6) and leaky_relu (negative_slope=0.2) have "
            "Keras names"
        )
    if isinstance(layer, layers.LeakyReLU):
        if float(layer.negative_slope) == _LEAKY_SLOPE:
            return "swap", "leaky_relu", None
        return "swap", None, (
            f"LeakyReLU with negative_slope={layer.negative_slope}: "
            "Keras's leaky_relu has 0.2"
        )
    if isinstance(layer, layers.ELU):
        if float(layer.alpha) == 1.0:
            return "swap", "elu", None
        return "swap", None, f"ELU with alpha={layer.alpha}: Keras's elu has 1"
    if isinstance(layer, with_argument):
        function = getattr(layer, "activation", None)
        if function is None or id(function) in functions:
            name = functions.get(id(function)) if function else None
            return ("append", name, None) if name else (None, None, None)
        what = getattr(function, "__name__", repr(function))
        return "append", None, (
            f"{type(layer).__name__} with activation={what}, not a Keras "
            "activation"
        )
    return None, None, None


def _plain_policy(layer):
    """The layer's float dtype policy (a quantised layer computes in its
    compute dtype like any other)."""
    policy = layer.dtype_policy
    compute, variable = policy.compute_dtype, policy.variable_dtype
    if compute == variable:
        return keras.DTypePolicy(compute)
    return keras.DTypePolicy(f"mixed_{compute}")


@contextlib.contextmanager
def _global_policy(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _is_functional(layer):
    """A functional model, whose graph can be run again on new layers (with
    `_run_through_graph`, as `keras.models.clone_model` does)."""
    return isinstance(layer, keras.Model) and hasattr(
        layer, "_run_through_graph") and not isinstance(
            layer, keras.Sequential)


class _Converter:
    """One conversion: the clones made so far, the units, the names."""

    def __init__(self, factory, targets, model):
        self.factory = factory
        self.targets = targets
        self.functions = _functions()
        self.with_argument = _with_activation_argument()
        self.clones = {}  # id(original layer) -> its clone
        self.units = {}  # (id(original layer), input shape) -> unit
        self.unit_count = {}  # id(original layer) -> units made for it
        self.made = set()  # ids of every unit the factory returned
        self.pairs = []  # (original, clone): weights to copy
        self.replaced = []
        self.skipped = {}  # path -> reason
        self.found = set()  # names of the activations seen
        self.taken = set()
        for layer in model._flatten_layers(include_self=True, recursive=True):
            self.taken.add(layer.name)
            for operation in getattr(layer, "operations", ()):
                self.taken.add(operation.name)

    # -- what to do with one layer ------------------------------------

    def plan(self, layer, path):
        """Returns `(kind, name)` for a layer, noting what is skipped."""
        kind, name, reason = _activation_name(
            layer, self.functions, self.with_argument)
        if kind is None:
            return None, None
        if name is None:
            self.skipped[path] = reason
            return None, None
        self.found.add(name)
        if self.targets is not None and name not in self.targets:
            return None, None
        return kind, name

    def unit(self, layer, name, path, shape):
        """The unit replacing `layer`'s activation for inputs of `shape`
        (one per layer and shape: a shared layer keeps one shared unit)."""
        key = (id(layer), shape)
        if key in self.units:
            return self.units[key]
        with _global_policy(_plain_policy(layer)):
            unit = self.factory(name)
        if not isinstance(unit, keras.layers.Layer):
            raise TypeError(
                f"replace_activations: factory({name!r}) returned "
                f"{unit!r} (of type {type(unit).__name__}); it must return a "
                "Keras layer, such as keras_learnact.PWLU() or "
                f"keras.layers.Activation({name!r})."
            )
        if id(unit) in self.made or unit._inbound_nodes:
            raise ValueError(
                f"replace_activations: factory({name!r}) returned the layer "
                f"'{unit.name}', which is already in use or was returned "
                "before; the factory must make a new layer on every call."
            )
        self.made.add(id(unit))
        count = self.unit_count.get(id(layer), 0)
        self.unit_count[id(layer)] = count + 1
        base = layer.name if isinstance(layer, _SWAPPED) else (
            f"{layer.name}_{name}")
        if isinstance(layer, _SWAPPED) and count == 0:
            unit.name = base  # the replaced layer's own name is now free
        else:
            unit.name = self.fresh(base)
        self.taken.add(unit.name)
        self.units[key] = unit
        parent = path.rpartition("/")[0]
        self.replaced.append(Replacement(
            path, name, f"{parent}/{unit.name}" if parent else unit.name))
        return unit

    def fresh(self, base):
        name, number = base, 1
        while name in self.taken:
            number += 1
            name = f"{base}_{number}"
        return name

    def clone(self, layer, path, linear=False):
        """A copy of a layer (its weights copied once the model is built);
        with `linear`, its `activation=` is set to linear."""
        if id(layer) in self.clones:
            return self.clones[id(layer)]
        if isinstance(layer, keras.Sequential):
            new = self.sequential(layer, path)
        elif _is_functional(layer):
            new = self.functional(layer, path)
        else:
            self.note_hidden(layer, path)
            config = layer.get_config()
            if linear:
                config["activation"] = "linear"
            # Functions the layer holds (a custom activation) resolve to
            # themselves, registered or not.
            functions = {
                value.__name__: value for value in vars(layer).values()
                if isinstance(value, types.FunctionType)
            }
            try:
                with keras.saving.custom_object_scope(functions):
                    new = layer.__class__.from_config(config)
            except Exception as error:
                raise ValueError(
                    f"replace_activations could not copy layer '{path}' "
                    f"(a {type(layer).__name__}) from its config: "
                    f"{type(error).__name__}: {error}. A layer must "
                    "implement get_config/from_config to be copied."
                ) from error
            self.pairs.append((layer, new, path))
        self.clones[id(layer)] = new
        return new

    def note_hidden(self, layer, path):
        """Warns about activations inside a layer that cannot be rebuilt."""
        for inner in layer._flatten_layers(include_self=False,
                                           recursive=True):
            kind, name, _ = _activation_name(
                inner, self.functions, self.with_argument)
            if kind is not None and (self.targets is None or name is None
                                     or name in self.targets):
                self.skipped[f"{path}/{inner.name}"] = (
                    f"inside {type(layer).__name__} '{path}', whose inner "
                    "connections are not known (only Sequential and "
                    "functional models are rebuilt)"
                )

    # -- models --------------------------------------------------------

    def sequential(self, model, path):
        layers = []
        for layer in model.layers:
            here = f"{path}/{layer.name}" if path else layer.name
            kind, name = self.plan(layer, here)
            if kind == "swap":
                layers.append(self.unit(layer, name, here, None))
            elif kind == "append":
                layers.append(self.clone(layer, here, linear=True))
                layers.append(self.unit(layer, name, here, None))
            else:
                layers.append(self.clone(layer, here))
        first = model._layers[0] if model._layers else None
        if isinstance(first, keras.layers.InputLayer):
            layers.insert(0, keras.Input(
                batch_shape=first.batch_shape, dtype=first.dtype,
                name=first.name, sparse=first.sparse))
        new = keras.Sequential(layers, name=model.name)
        if not model.trainable:
            new.trainable = False
        return new

    def functional(self, model, path):
        inputs = keras.tree.map_structure(
            lambda x: keras.Input(batch_shape=x.shape, dtype=x.dtype,
                                  sparse=x.sparse, name=x.name),
            model.input,
        )
        steps = {}

        def step_for(operation):
            if id(operation) not in steps:
                steps[id(operation)] = self.step(operation, path)
            return steps[id(operation)]

        outputs = model._run_through_graph(inputs, operation_fn=step_for)
        new = keras.Model(inputs, outputs, name=model.name)
        if not model.trainable:
            new.trainable = False
        return new

    def step(self, operation, path):
        """A callable that computes one operation of the new graph."""
        if not isinstance(operation, keras.layers.Layer):
            return operation  # a keras.ops operation: stateless, reused
        here = f"{path}/{operation.name}" if path else operation.name
        kind, name = self.plan(operation, here)

        def shape(x):
            return tuple(getattr(x, "shape", ()))[1:]

        if kind == "swap":
            def swap(x, *args, **kwargs):
                return self.unit(operation, name, here, shape(x))(x)
            return swap
        clone = self.clone(operation, here, linear=kind == "append")
        if kind is None:
            return clone

        def append(*args, **kwargs):
            y = clone(*args, **kwargs)
            return self.unit(operation, name, here, shape(y))(y)
        return append

    def copy_weights(self):
        for layer, new, path in self.pairs:
            if not layer.weights:
                continue
            if not new.built:
                raise ValueError(
                    f"replace_activations: the copy of layer '{path}' was "
                    "not built with the new model, so its weights cannot be "
                    "copied. Build the original model on a keras.Input "
                    "first."
                )
            new.set_weights(layer.get_weights())


def _targets(targets):
    """Validates `targets`; returns a set of names in this module's spelling,
    or None for every name."""
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = [targets]
    try:
        targets = list(targets)
    except TypeError:
        raise ValueError(
            f"Invalid targets={targets!r}: expected None or a list of "
            f"activation names from: {', '.join(ACTIVATION_NAMES)}."
        ) from None
    if not targets:
        raise ValueError(
            "Invalid targets=[]: it would replace nothing. Pass None to "
            "replace every fixed activation, or a list of names from: "
            f"{', '.join(ACTIVATION_NAMES)}."
        )
    chosen = set()
    for name in targets:
        name = ALIASES.get(name, name) if isinstance(name, str) else name
        if name not in ACTIVATION_NAMES:
            why = (" (it mixes elements or is no activation, and is never "
                   "replaced)" if name in _NOT_ELEMENTWISE else "")
            raise ValueError(
                f"Unknown target {name!r}{why}. Allowed names: "
                f"{', '.join(ACTIVATION_NAMES)} (and the aliases "
                f"{', '.join(sorted(ALIASES))})."
            )
        chosen.add(name)
    return chosen


def replace_activations(model, factory, targets=None):
    """A copy of a model with its fixed activations replaced by new layers.

    Every fixed elementwise activation of the model (module docstring:
    activation layers, `ReLU`/`LeakyReLU`/`ELU` with a Keras name, and the
    `activation=` of `Dense` and the convolutions) is replaced by the layer
    `factory(name)` returns, `name` being the activation's Keras name
    (`"relu"`, `"relu6"`, `"swish"`, ...; see `ACTIVATION_NAMES`). The
    original model is not changed: every layer is copied, with its weights,
    and a layer whose `activation=` is replaced keeps its weights, gets a
    linear activation and is followed by the new unit.

    * Sequential and functional models are rebuilt, and so are models
      nested in them (a model used as a layer). A subclassed model cannot
      be rebuilt (its connections are not known) and is refused at the top
      level; nested, it is copied unchanged, with a warning naming any
      activation inside it.
    * A layer called at several places (a shared layer) is copied once, and
      its activation gets one unit shared by every call, as the original
      shared its function; calls on inputs of different shapes (batch
      aside) get one unit per shape, since a per-channel unit fits only one.
    * Each unit is named after what it replaces: an activation layer's
      unit takes that layer's name, the unit after a `Dense` or convolution
      `"<layer name>_<activation name>"` (with `_2`, `_3`, ... where that
      name is taken).
    * The factory is called under the dtype policy of the layer it replaces
      (mixed precision is kept); a unit it makes with an explicit `dtype`
      keeps that.
    * Activations that no Keras name describes (`LeakyReLU` with its
      default slope 0.3, `ReLU` with a threshold, custom functions) are left
      as they are, with one warning listing them. Softmax and the other
      activations that mix elements, and `"linear"`, are never replaced.

    The returned model is not compiled. It has the attribute
    `replaced_activations`, a tuple of `Replacement(layer, activation,
    unit)`, one per unit made, in the order in which the new model computes
    them (an attribute of this object only: it is not saved).

    Args:
        model: a built Sequential or functional Keras model.
        factory: a callable that takes an activation name and returns a new,
            unbuilt Keras layer, such as
            `lambda name: keras_learnact.AdaptiveScaling(name)`. It is called
            once per replaced activation (once per shape for a shared one)
            and must return a new layer each time.
        targets: None (replace every fixed activation) or a list of the
            names to replace, such as `["relu", "relu6"]`; aliases
            (`"silu"`, `"hard_silu"`) are accepted. A known name that the
            model does not use gets a warning; when none of them is used
            (nothing would be replaced), a `ValueError` lists the ones it
            has.

    Returns:
        A new Keras model (functional or Sequential, as the original).

    Raises:
        TypeError: `model` is not a Keras model, `factory` is not callable,
            or the factory returned something other than a Keras layer.
        ValueError: a subclassed model, an unknown target name, targets
            that match none of the model's activations, or a factory that
            returns the same layer twice (or one already in use).

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="hidden"),
    ...     keras.layers.Dense(8, name="features"),
    ...     keras.layers.Activation("tanh", name="squash"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> new = kla.replace_activations(
    ...     model, lambda name: kla.AdaptiveScaling(name))
    >>> print(*(type(layer).__name__ for layer in new.layers))
    Dense AdaptiveScaling Dense AdaptiveScaling Dense
    >>> for replacement in new.replaced_activations:
    ...     print(replacement)
    Replacement(layer='hidden', activation='relu', unit='hidden_relu')
    Replacement(layer='squash', activation='tanh', unit='squash')
    >>> x = np.random.default_rng(0).normal(size=(3, 4))
    >>> before, after = (keras.ops.convert_to_numpy(m(x)) for m in (model, new))
    >>> bool(np.allclose(before, after, atol=1e-6))  # alpha starts at 1
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"replace_activations needs a Keras model; got {model!r} (of "
            f"type {type(model).__name__})."
        )
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(
            f"replace_activations cannot rebuild '{model.name}', a "
            f"subclassed model ({type(model).__name__}): its layers' "
            "connections are only known for Sequential and functional "
            "models. Build the model with the functional API, or replace "
            "the activations in its code."
        )
    if not callable(factory):
        raise TypeError(
            f"Invalid factory={factory!r}: expected a callable that takes "
            "an activation name and returns a new Keras layer, such as "
            "`lambda name: keras_learnact.AdaptiveScaling(name)`."
        )
    targets = _targets(targets)
    converter = _Converter(factory, targets, model)
    if isinstance(model, keras.Sequential):
        new = converter.sequential(model, "")
    else:
        new = converter.functional(model, "")
    converter.copy_weights()
    if converter.skipped:
        listed = "; ".join(
            f"'{path}' ({reason})" for path, reason in converter.skipped.items()
        )
        warnings.warn(
            f"replace_activations left {len(converter.skipped)} "
            f"activation(s) unchanged, which no Keras activation name "
            f"describes: {listed}.",
            stacklevel=2,
        )
    if targets is not None and not targets & converter.found:
        used = ", ".join(repr(n) for n in sorted(converter.found)) or "none"
        raise ValueError(
            f"replace_activations: targets={sorted(targets)} match no "
            f"activation of '{model.name}', so nothing would be replaced. "
            f"The activations it has: {used}."
        )
    if targets is not None and targets - converter.found:
        warnings.warn(
            "replace_activations: no activation of the model is "
            + ", ".join(repr(n) for n in sorted(targets - converter.found))
            + "; those targets replaced nothing.",
            stacklevel=2,
        )
    new.replaced_activations = tuple(converter.replaced)
    return new
