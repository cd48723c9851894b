"""Keras callbacks of keras-learnact."""

from keras_learnact.callbacks.pwlu_realignment import PWLURealignment

__all__ = ["PWLURealignment"]
