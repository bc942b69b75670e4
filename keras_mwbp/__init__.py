"""Multi-way backpropagation for Keras models with auxiliary heads."""

from keras_mwbp.backprop.methods import BACKPROP_METHODS
from keras_mwbp.model import MultiWayModel

__version__ = "0.1.0"
