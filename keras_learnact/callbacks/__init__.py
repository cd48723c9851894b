"""Callbacks that watch or adjust learnable activations during training."""

from keras_learnact.callbacks.pwlu_realignment import PWLURealignment
from keras_learnact.callbacks.snapshot import ActivationSnapshot

__all__ = ["ActivationSnapshot", "PWLURealignment"]
