"""Bad input raises a clear error before training starts."""

import keras
import numpy as np
import pytest

import tiny_models
from keras_mwbp import MultiWayModel


def _compile(model, **kwargs):
    arguments = dict(optimizer="sgd", loss=tiny_models.LOGITS_LOSS)
    arguments.update(kwargs)
    model.compile(**arguments)


def test_single_output_rejects_multi_head_method():
    inputs = keras.Input((5,))
    model = MultiWayModel(inputs, [keras.layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match="at least one auxiliary head"):
        _compile(model, backprop="mwbp")


def test_outputs_not_ordered_by_depth():
    inputs = keras.Input((5,))
    shallow = keras.layers.Dense(4, name="h1")(inputs)
    aux = keras.layers.Dense(3, name="aux")(shallow)
    deep = keras.layers.Dense(4, name="h2")(shallow)
    deeper = keras.layers.Dense(4, name="h3")(deep)
    middle = keras.layers.Dense(3, name="middle")(deep)
    final = keras.layers.Dense(3, name="final")(deeper)
    with pytest.raises(ValueError, match="ordered from the shallowest"):
        MultiWayModel(inputs, [middle, aux, final])


def test_auxiliary_head_without_shared_layer():
    inputs = keras.Input((5,))
    aux = keras.layers.Dense(3, name="aux")(inputs)
    final = keras.layers.Dense(3, name="final")(keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match="shares no weighted layer"):
        MultiWayModel(inputs, [aux, final])


def test_disconnected_output():
    inputs = keras.Input((5,))
    other = keras.Input((5,))
    final = keras.layers.Dense(3)(inputs)
    with pytest.raises(ValueError):
        MultiWayModel(inputs, [keras.layers.Dense(3)(other), final])


def test_unknown_backprop():
    with pytest.raises(ValueError, match=r"backprop='mw-bp'"):
        _compile(tiny_models.mlp(), backprop="mw-bp")


@pytest.mark.parametrize("nu", [-1.0, float("nan"), "two", True])
def test_invalid_nu(nu):
    with pytest.raises(ValueError, match="Invalid value for argument `nu`"):
        _compile(tiny_models.mlp(), nu=nu)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [1.0, -0.5], {"aux": 1.0}])
def test_invalid_loss_weights(weights):
    with pytest.raises(ValueError, match="loss_weights"):
        _compile(tiny_models.mlp(), loss_weights=weights)


@pytest.mark.parametrize("span", [0, -1, 1.5, True])
def test_invalid_relay_span(span):
    with pytest.raises(ValueError, match="relay_span"):
        _compile(tiny_models.mlp(), backprop="relay", relay_span=span)


def test_invalid_nonfinite_policy():
    with pytest.raises(ValueError, match="on_nonfinite"):
        _compile(tiny_models.mlp(), on_nonfinite="ignore")


def test_missing_loss():
    with pytest.raises(ValueError, match="Missing argument `loss`"):
        tiny_models.mlp().compile(optimizer="sgd")


def test_loss_list_of_wrong_length():
    with pytest.raises(ValueError, match="one loss per head"):
        _compile(tiny_models.mlp(), loss=[tiny_models.LOGITS_LOSS])


def test_labels_out_of_range():
    model = tiny_models.mlp()
    _compile(model)
    x, _ = tiny_models.feature_batch(n=8)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"Labels out of range for head 0 \('aux'\)"):
        model.fit(x, labels, verbose=0)


def test_synchronized_batch_norm_rejected():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    aux = keras.layers.Dense(3, name="aux")(pooled)
    final = keras.layers.Dense(3, name="final")(keras.layers.Dense(4)(pooled))
    model = MultiWayModel(inputs, [aux, final])
    with pytest.raises(ValueError, match="synchronized=True"):
        _compile(model, backprop="mwbp")


def test_invalid_submodel_index():
    with pytest.raises(ValueError, match="has 2 heads"):
        tiny_models.mlp().submodel(2)
