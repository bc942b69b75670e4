"""`.keras` save and load of a compiled and trained MultiWayModel."""

import keras
import numpy as np
import pytest

import tiny_models
from keras_mwbp import MultiWayModel


def _trained(tmp_path, **compile_kwargs):
    model = tiny_models.conv_net()
    x, y = tiny_models.image_batch(n=16)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=tiny_models.LOGITS_LOSS,
        metrics=["accuracy"],
        **compile_kwargs,
    )
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    return model, keras.models.load_model(path), x, y


def test_round_trip_predictions(tmp_path):
    model, restored, x, _ = _trained(tmp_path)
    assert isinstance(restored, MultiWayModel)
    for expected, actual in zip(model.predict(x, verbose=0), restored.predict(x, verbose=0)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


def test_round_trip_compile_settings(tmp_path):
    _, restored, _, _ = _trained(
        tmp_path, backprop="naive_reverse_mwbp", nu=1.5, relay_span=2, on_nonfinite="raise"
    )
    assert restored.backprop == "naive_reverse_mwbp"
    assert float(restored.nu.numpy()) == 1.5
    assert restored._relay_span == 2
    assert restored._on_nonfinite == "raise"
    assert restored.head_depths == [1, 3]


def test_round_trip_loss_weights(tmp_path):
    _, restored, _, _ = _trained(tmp_path, loss_weights=[0.3, 1.0])
    np.testing.assert_allclose(restored.loss_weights_now(), [0.3, 1.0], rtol=1e-6)


@pytest.mark.parametrize("share", [False, True], ids=["per_head", "shared"])
def test_round_trip_head_optimizer_state(tmp_path, share):
    model, restored, _, _ = _trained(tmp_path, share_optimizer_state=share)
    assert len(restored.head_optimizers) == len(model.head_optimizers)
    for original, loaded in zip(model.head_optimizers, restored.head_optimizers):
        assert len(loaded.variables) == len(original.variables)
        for a, b in zip(original.variables, loaded.variables):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=a.path)


def test_restored_model_keeps_training(tmp_path):
    _, restored, x, y = _trained(tmp_path)
    before = restored.get_layer("conv1").kernel.numpy().copy()
    restored.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.max(np.abs(restored.get_layer("conv1").kernel.numpy() - before)) > 0


def test_submodel_shares_weights():
    model = tiny_models.conv_net()
    x, _ = tiny_models.image_batch(n=4)
    for head in (0, 1, -1):
        sub = model.submodel(head)
        np.testing.assert_allclose(
            sub.predict(x, verbose=0),
            model.predict(x, verbose=0)[head],
            rtol=1e-6,
            atol=1e-6,
        )
    assert "aux" not in [layer.name for layer in model.submodel(-1).layers]


def test_mismatched_optimizer_state_is_an_error(tmp_path):
    model, _, _, _ = _trained(tmp_path)
    weights = tmp_path / "trained.weights.h5"
    model.save_weights(weights)
    other = tiny_models.conv_net()
    other.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=tiny_models.LOGITS_LOSS,
        share_optimizer_state=True,
    )
    with pytest.raises(ValueError, match="Failed to restore the state of optimizer"):
        other.load_weights(weights)
