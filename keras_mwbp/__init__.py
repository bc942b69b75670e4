"""Multi-way backpropagation for Keras models with auxiliary heads."""

from keras_mwbp import callbacks
from keras_mwbp import data
from keras_mwbp import models
from keras_mwbp.backprop.methods import BACKPROP_METHODS
from keras_mwbp.export import export_submodels
from keras_mwbp.heads import HEAD_TYPES
from keras_mwbp.heads import attach_heads
from keras_mwbp.heads import build_head
from keras_mwbp.heads import find_block_outputs
from keras_mwbp.model import MultiWayModel
from keras_mwbp.report import report

__version__ = "0.1.0"
