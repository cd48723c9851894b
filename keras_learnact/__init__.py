"""keras-learnact: learnable activation functions for Keras 3.

Examples:

>>> import keras, keras_learnact as kla
>>> model = keras.Sequential([
...     keras.Input((16,)), keras.layers.Dense(8), kla.ABU(),
...     keras.layers.Dense(1),
... ])
>>> sorted(kla.custom_objects())[:2]
['ABU', 'AdaptiveScaling']
"""

from keras_learnact import callbacks
from keras_learnact import layers
from keras_learnact import plotting
from keras_learnact import snapshots
from keras_learnact.layers import ABU
from keras_learnact.layers import DEU
from keras_learnact.layers import PWLU
from keras_learnact.layers import SLAF
from keras_learnact.layers import AdaptiveScaling
from keras_learnact.layers import LearnableActivation

__version__ = "0.1.0"

__all__ = [
    "ABU",
    "DEU",
    "PWLU",
    "SLAF",
    "AdaptiveScaling",
    "LearnableActivation",
    "callbacks",
    "custom_objects",
    "layers",
    "plotting",
    "snapshots",
]


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
    found = {}
    for name in layers.__all__:
        cls = getattr(layers, name)
        registered = keras.saving.get_registered_name(cls)
        if registered != cls.__name__:
            found[cls.__name__] = cls
            found[registered] = cls
    return found


import keras  # noqa: E402  (used by custom_objects; imported after the API)
