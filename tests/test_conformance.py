"""Conformance battery: every zoo model with every backprop method.

Each case builds the model, trains two steps through `model.fit` in graph
mode, checks that the second call did not retrace, saves and reloads the
model, and checks the reloaded predictions.
"""

import keras
import numpy as np
import pytest

from keras_mwbp import BACKPROP_METHODS
from keras_mwbp import MultiWayModel
from keras_mwbp import attach_heads
from keras_mwbp.models import resnet_cifar


class _CountingModel(MultiWayModel):
    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


def _resnet():
    return resnet_cifar(8, num_aux=1, input_shape=(8, 8, 3), num_classes=4)


def _mobilenet():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35
    )
    return attach_heads(backbone, num_aux=2, num_classes=4)


ZOO = {"resnet_cifar_8": (_resnet, (8, 8, 3)), "mobilenet_v2": (_mobilenet, (32, 32, 3))}

# MobileNetV2 costs a minute per case on 2 CPU cores, so it runs one
# multi-way method here; test_heads.py trains it one step as well.
CASES = [("resnet_cifar_8", method) for method in BACKPROP_METHODS] + [
    ("mobilenet_v2", "mwbp"),
]


@pytest.mark.parametrize("zoo_name,backprop", CASES)
def test_zoo_model_trains_and_round_trips(tmp_path, zoo_name, backprop):
    builder, input_shape = ZOO[zoo_name]
    source = builder()
    model = _CountingModel(source.inputs, source.outputs, name="counting")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop=backprop,
    )
    rng = np.random.RandomState(0)
    x = rng.rand(8, *input_shape).astype("float32")
    y = rng.randint(0, 4, size=8)

    _CountingModel.traces = 0
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    traces_after_first_epoch = _CountingModel.traces
    before = [np.array(w) for w in model.get_weights()]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert _CountingModel.traces == traces_after_first_epoch
    changed = [not np.array_equal(a, np.array(b)) for a, b in zip(before, model.get_weights())]
    assert any(changed)

    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path, custom_objects={"_CountingModel": _CountingModel})
    assert restored.backprop == backprop
    for expected, actual in zip(model.predict(x, verbose=0), restored.predict(x, verbose=0)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
