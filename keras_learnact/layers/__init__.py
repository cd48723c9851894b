"""Learnable activation layers.

Every layer here subclasses `LearnableActivation` and is registered for
serialisation under the package name `keras_learnact`.
"""

from keras_learnact.layers.abu import ABU
from keras_learnact.layers.adaptive_scaling import AdaptiveScaling
from keras_learnact.layers.base import LearnableActivation
from keras_learnact.layers.deu import DEU
from keras_learnact.layers.pwlu import PWLU
from keras_learnact.layers.rational import Rational
from keras_learnact.layers.slaf import SLAF

__all__ = [
    "ABU",
    "DEU",
    "PWLU",
    "SLAF",
    "AdaptiveScaling",
    "LearnableActivation",
    "Rational",
]
