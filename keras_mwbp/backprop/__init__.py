"""The seven backpropagation methods and the engine that runs them."""

from keras_mwbp.backprop.methods import BACKPROP_METHODS
from keras_mwbp.backprop.methods import MULTIWAY_METHODS
