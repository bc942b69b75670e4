"""The private Keras attributes `keras_mwbp` relies on still exist.

Each test names the attribute it needs, so a Keras upgrade that renames one
fails here first, with the name in the message.
"""

import keras
import numpy as np

from keras_mwbp import _keras_private as kp


def _model():
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    left = keras.layers.Dense(2, name="left")(hidden)
    right = keras.layers.Dense(2, name="right")(hidden)
    total = keras.layers.Add(name="total")([left, right])
    return keras.Model(inputs, total)


def test_nodes_in_order_respects_data_flow():
    model = _model()
    nodes = kp.nodes_in_order(model)
    names = [kp.node_operation(node).name for node in nodes]
    assert sorted(names) == ["hidden", "left", "right", "total"]
    assert names[0] == "hidden"
    assert names[-1] == "total"


def test_node_tensors_and_producers():
    model = _model()
    total = [n for n in kp.nodes_in_order(model) if kp.node_operation(n).name == "total"][0]
    producers = [kp.producing_layer(t).name for t in kp.node_input_tensors(total)]
    assert producers == ["left", "right"]
    assert len(kp.node_output_tensors(total)) == 1


def test_fill_in_node_arguments_replaces_tensors():
    model = _model()
    total = [n for n in kp.nodes_in_order(model) if kp.node_operation(n).name == "total"][0]
    first, second = kp.node_input_tensors(total)
    args, kwargs = kp.fill_in_node_arguments(total, {id(first): 1.0, id(second): 2.0})
    assert args == ([1.0, 2.0],)
    assert kwargs == {}


def test_training_argument_detection():
    assert kp.layer_call_has_training_arg(keras.layers.Dropout(0.5))
    assert not kp.layer_call_has_training_arg(keras.layers.ReLU())


def test_loss_tracker_exists_after_compile():
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    tracker = kp.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    assert tracker.name == "loss"


def test_unscale_loss_without_strategy_is_identity():
    value = kp.unscale_loss_for_distribution(np.float32(3.0))
    assert float(value) == 3.0


def test_learning_rate_source_is_the_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    optimizer = keras.optimizers.SGD(schedule)
    assert kp.optimizer_learning_rate_source(optimizer) is schedule
