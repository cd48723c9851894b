"""The callback that moves every PWLU of a model from phase I to phase II."""

import keras

from keras_learnact.layers.pwlu import PWLU


def find_pwlu_layers(model):
    """Every `PWLU` layer in `model`, nested models and layers included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of the `PWLU` layers, each once, in the model's order.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> inner = keras.Sequential([keras.Input((4,)), kla.layers.PWLU()])
    >>> outer = keras.Sequential([keras.Input((4,)), inner,
    ...                           kla.layers.PWLU(granularity="layer")])
    >>> len(find_pwlu_layers(outer))
    2
    """
    return [
        layer for layer in model._flatten_layers(include_self=True)
        if isinstance(layer, PWLU)
    ]


class PWLURealignment(keras.callbacks.Callback):
    """Realigns every PWLU of the model once its warm-up epochs are over.

    During the first `warmup_epochs` epochs, the PWLU layers are in phase I:
    they compute ReLU and collect running statistics of their inputs. At the
    start of epoch `warmup_epochs` (counting from 0) the callback calls
    `realign()` on every PWLU of the model, nested models included, which
    sets each unit's bounds to `mean +- 3 std` and its function to the ReLU
    interpolant, and starts phase II, in which the units learn.

    `warmup_epochs=0` realigns before the first epoch, from the statistics
    the layers hold then: the initial ones (mean 0, std 1, so the bounds
    become `+-3`) unless they were collected earlier or loaded. Layers that
    are already realigned (a model resumed in phase II) are left alone, and
    resuming with `initial_epoch` past the warm-up realigns at once those
    still in phase I, from their saved statistics.

    The phase is a weight read inside the layer, so the already-compiled
    train step (TensorFlow graph or XLA, JAX `jit`) switches to phase II
    without retracing.

    Args:
        warmup_epochs: the number of phase-I epochs, an integer >= 0
            (default 5, the paper's).

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8), kla.layers.PWLU(),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile("adam", "mse")
    >>> history = model.fit(
    ...     np.ones((8, 4)), np.ones((8, 1)), epochs=2, verbose=0,
    ...     callbacks=[kla.callbacks.PWLURealignment(warmup_epochs=1)])
    >>> model.layers[1].is_realigned()
    True
    """

    def __init__(self, warmup_epochs=5):
        super().__init__()
        if (not isinstance(warmup_epochs, int)
                or isinstance(warmup_epochs, bool) or warmup_epochs < 0):
            raise ValueError(
                f"Invalid warmup_epochs={warmup_epochs!r}: expected an "
                "integer >= 0."
            )
        self.warmup_epochs = warmup_epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.warmup_epochs:
            return
        for layer in find_pwlu_layers(self.model):
            if layer.built and not layer.is_realigned():
                layer.realign()
