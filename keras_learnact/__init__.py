"""keras-learnact: learnable activation functions for Keras 3.

The submodules and layer classes load on first use (PEP 562), so that
reading a snapshot file (`keras_learnact.snapshots`, the `keras-learnact`
command line) never imports Keras or a deep-learning backend. The layers
are still registered for `keras.saving.load_model` as soon as both
`keras_learnact` and `keras` are imported, in either order: with Keras
already imported they are imported here, otherwise right after Keras.

Examples:

>>> import keras, keras_learnact as kla
>>> model = keras.Sequential([
...     keras.Input((16,)), keras.layers.Dense(8), kla.ABU(),
...     keras.layers.Dense(1),
... ])
>>> sorted(kla.custom_objects())[:2]
['ABU', 'AdaptiveScaling']
"""

import importlib
import importlib.abc
import sys
import warnings

__version__ = "0.1.0"

_SUBMODULES = ("callbacks", "convert", "health", "layers", "plotting",
               "snapshots")
_LAYERS = ("ABU", "DEU", "PWLU", "SLAF", "AdaptiveScaling",
           "LearnableActivation", "Rational")
# Functions of the workflow modules, by the submodule that holds them.
_FUNCTIONS = {"replace_activations": "convert", "explain": "explain"}

__all__ = [
    "ABU",
    "DEU",
    "PWLU",
    "SLAF",
    "AdaptiveScaling",
    "LearnableActivation",
    "Rational",
    "callbacks",
    "convert",
    "custom_objects",
    "explain",
    "health",
    "layers",
    "plotting",
    "replace_activations",
    "snapshots",
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAYERS:
        value = getattr(importlib.import_module(f"{__name__}.layers"), name)
        globals()[name] = value
        return value
    if name in _FUNCTIONS:
        module = importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def custom_objects():
    """Every serialisable class of the package, for `load_model`.

    Loading needs nothing once `keras_learnact` is imported (the classes are
    registered), but this dict helps where registration cannot be relied on.

    Returns:
        A dict mapping both the plain class name (`"ABU"`) and the registered
        name (`"keras_learnact>ABU"`) to the class.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> kla.custom_objects()["keras_learnact>ABU"] is kla.ABU
    True
    """
    import keras

    from keras_learnact import layers

    found = {}
    for name in layers.__all__:
        cls = getattr(layers, name)
        registered = keras.saving.get_registered_name(cls)
        if registered != cls.__name__:
            found[cls.__name__] = cls
            found[registered] = cls
    return found


def _register_layers():
    """Imports the layers, which registers them with Keras."""
    for finder in list(sys.meta_path):
        if isinstance(finder, _RegisterAfterKeras):
            sys.meta_path.remove(finder)
    try:
        importlib.import_module(f"{__name__}.layers")
    except Exception as error:  # keras itself is fine: do not break it
        warnings.warn(
            f"keras_learnact could not register its layers with Keras "
            f"({type(error).__name__}: {error}); `keras.saving.load_model` "
            "will not find them.",
            stacklevel=2,
        )


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs Keras's own loader, then registers the layers."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # Keras sees its own loader, as if this one were not there.
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register_layers()


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Finds `keras` with the other finders and wraps its loader, so that
    the layers register themselves the moment Keras has been imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _LoaderThenRegister(spec.loader)
                return spec
        return None


if sys.modules.get("keras") is not None:
    importlib.import_module(f"{__name__}.layers")  # registers the layers
elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())
