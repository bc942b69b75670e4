"""Behaviour of `MultiWayModel.fit` beyond the step equations.

The step equations themselves are checked against a NumPy reference in
`test_reference_methods.py`; here: state updates, masks, retracing,
optimizer copies, learning-rate plumbing and non-finite values.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny_models
from keras_mwbp import BACKPROP_METHODS
from keras_mwbp import MultiWayModel

MULTI_HEAD_METHODS = [m for m in BACKPROP_METHODS]


@pytest.mark.parametrize("backprop", MULTI_HEAD_METHODS)
def test_batch_norm_statistics_updated_once_per_step(backprop):
    model = tiny_models.conv_net()
    x, y = tiny_models.image_batch(n=8)
    conv1 = keras.Model(model.inputs, model.get_layer("conv1").output)
    features = np.asarray(conv1.predict(x, verbose=0), dtype=np.float64)
    batch_mean = features.mean(axis=(0, 1, 2))
    batch_variance = features.var(axis=(0, 1, 2))

    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=tiny_models.LOGITS_LOSS,
        backprop=backprop,
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)

    bn = model.get_layer("bn1")
    momentum = bn.momentum
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), (1 - momentum) * batch_mean, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(),
        momentum * 1.0 + (1 - momentum) * batch_variance,
        rtol=1e-4,
        atol=1e-6,
    )


def _changed_hidden_columns(backprop):
    keras.utils.set_random_seed(7)
    model = tiny_models.mlp(dropout=0.5)
    before = model.get_layer("hidden").kernel.numpy().copy()
    x, y = tiny_models.feature_batch(n=8)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=tiny_models.LOGITS_LOSS,
        backprop=backprop,
    )
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    change = np.abs(model.get_layer("hidden").kernel.numpy() - before).sum(axis=0)
    return set(np.nonzero(change > 0)[0].tolist())


def test_dropout_mask_shared_by_every_head():
    # The hidden kernel column of a dropped unit gets no gradient. Joint BP
    # runs one forward pass, so its changed columns are the kept units of the
    # first mask; MW-BP must change exactly those columns too.
    joint = _changed_hidden_columns("joint")
    mwbp = _changed_hidden_columns("mwbp")
    assert 0 < len(joint) < 16
    assert mwbp == joint


def test_dropout_mask_redrawn_by_naive_variant():
    # Control for the test above: the naive variant runs a new forward pass
    # per head, draws a new mask, and so changes more columns.
    joint = _changed_hidden_columns("joint")
    naive = _changed_hidden_columns("naive_mwbp")
    assert naive != joint


class _TraceCountingModel(MultiWayModel):
    traces = 0

    def train_step(self, data):
        # The Python body runs only while `tf.function` traces.
        type(self).traces += 1
        return super().train_step(data)


class _SetNu(keras.callbacks.Callback):
    def __init__(self, nu):
        super().__init__()
        self.nu = nu
        self.traces_per_epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.traces_per_epoch.append(_TraceCountingModel.traces)
        self.model.nu.assign(self.nu)


def _trace_counting_mlp():
    source = tiny_models.mlp()
    return _TraceCountingModel(source.inputs, source.outputs)


def test_changing_nu_does_not_retrace():
    x, y = tiny_models.feature_batch(n=16)
    _TraceCountingModel.traces = 0
    model = _trace_counting_mlp()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=tiny_models.LOGITS_LOSS, nu=2.0
    )
    callback = _SetNu(0.0)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    # Tracing happens during the first epoch only (tf.function may trace
    # twice there); the nu assignments after epochs 1 and 2 add none.
    assert callback.traces_per_epoch[0] >= 1
    assert callback.traces_per_epoch == [callback.traces_per_epoch[0]] * 3
    assert float(model.nu.numpy()) == 0.0


def test_changing_nu_changes_training():
    x, y = tiny_models.feature_batch(n=16)
    results = []
    for callbacks in ([], [_SetNu(0.0)]):
        keras.utils.set_random_seed(3)
        # With one auxiliary head gamma is 1 for every nu, so use two.
        model = tiny_models.mlp(num_aux=2)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1), loss=tiny_models.LOGITS_LOSS, nu=5.0
        )
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
        results.append(model.get_layer("hidden").kernel.numpy())
    assert np.max(np.abs(results[0] - results[1])) > 1e-4


def test_multiway_differs_from_joint():
    x, y = tiny_models.feature_batch(n=16)
    kernels = {}
    for backprop in ("joint", "mwbp"):
        keras.utils.set_random_seed(5)
        model = tiny_models.mlp()
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=tiny_models.LOGITS_LOSS,
            backprop=backprop,
        )
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        kernels[backprop] = model.get_layer("hidden").kernel.numpy()
    assert np.max(np.abs(kernels["joint"] - kernels["mwbp"])) > 1e-4


@pytest.mark.parametrize("share", [False, True], ids=["per_head", "shared"])
def test_gamma_scales_adam_update(share):
    # Adam divides by the gradient's scale, so a loss weight applied to the
    # loss would cancel out; gamma must scale the update itself.
    x, y = tiny_models.feature_batch(n=8)
    moves = []
    for aux_gamma in (0.01, 1.0):
        keras.utils.set_random_seed(11)
        model = tiny_models.mlp()
        before = model.get_layer("hidden").kernel.numpy().copy()
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=tiny_models.LOGITS_LOSS,
            loss_weights=[aux_gamma, 0.0],
            share_optimizer_state=share,
        )
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        moves.append(np.abs(model.get_layer("hidden").kernel.numpy() - before).sum())
    assert moves[1] > 0
    assert moves[0] / moves[1] < 0.05


class _StopLearningAfterFirstBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.snapshot = tiny_models.weights_by_path(self.model)
            self.model.optimizer.learning_rate = 0.0


@pytest.mark.parametrize("share", [False, True], ids=["per_head", "shared"])
def test_learning_rate_callback_reaches_every_head(share):
    x, y = tiny_models.feature_batch(n=24)
    model = tiny_models.mlp()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.0),
        loss=tiny_models.LOGITS_LOSS,
        share_optimizer_state=share,
    )
    callback = _StopLearningAfterFirstBatch()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    after = tiny_models.weights_by_path(model)
    for path, value in callback.snapshot.items():
        if "kernel" in path or "bias" in path:
            np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_learning_rate_schedule_reaches_every_head():
    x, y = tiny_models.feature_batch(n=24)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.0])
    model = tiny_models.mlp()
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=tiny_models.LOGITS_LOSS)
    initial = tiny_models.weights_by_path(model)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
    after_one = tiny_models.weights_by_path(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after_four = tiny_models.weights_by_path(model)
    kernel = "mlp/hidden/kernel" if "mlp/hidden/kernel" in initial else next(
        p for p in initial if p.endswith("hidden/kernel")
    )
    assert np.max(np.abs(after_one[kernel] - initial[kernel])) > 0
    np.testing.assert_array_equal(after_four[kernel], after_one[kernel])
    assert int(model.optimizer.iterations.numpy()) == 4


@pytest.mark.parametrize(
    "optimizer_name,share",
    [("sgd_momentum", False), ("sgd_momentum", True), ("adam", False), ("adam", True)],
)
def test_graph_mode_matches_eager(optimizer_name, share):
    # One Keras optimizer applied to a different variable subset per call
    # has given wrong updates inside tf.function while eager was right.
    x, y = tiny_models.image_batch(n=16)
    results = []
    for run_eagerly in (True, False):
        keras.utils.set_random_seed(21)
        model = tiny_models.conv_net()
        if optimizer_name == "adam":
            optimizer = keras.optimizers.Adam(0.01)
        else:
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
        model.compile(
            optimizer=optimizer,
            loss=tiny_models.LOGITS_LOSS,
            share_optimizer_state=share,
            run_eagerly=run_eagerly,
        )
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        results.append(tiny_models.weights_by_path(model))
    for path in results[0]:
        np.testing.assert_allclose(
            results[1][path], results[0][path], rtol=1e-5, atol=1e-6, err_msg=path
        )


def test_single_head_equals_keras_training():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="final")(hidden)
    plain = keras.Model(inputs, outputs)
    single = MultiWayModel(inputs, [outputs])
    start = plain.get_weights()
    x, y = tiny_models.feature_batch(n=16)

    plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=tiny_models.LOGITS_LOSS)
    plain.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    trained_plain = [w.copy() for w in plain.get_weights()]

    for layer in ("hidden", "final"):
        single.get_layer(layer).set_weights(
            [w for w in start if w.shape in [v.shape for v in single.get_layer(layer).weights]]
        )
    single.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=tiny_models.LOGITS_LOSS,
        backprop="standard",
    )
    single.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for expected, layer_weight in zip(
        trained_plain,
        single.get_layer("hidden").get_weights() + single.get_layer("final").get_weights(),
    ):
        np.testing.assert_allclose(layer_weight, expected, rtol=1e-6, atol=1e-7)


def _nan_batch():
    x, y = tiny_models.feature_batch(n=8)
    x[3, 2] = np.nan
    return x, y


def test_nan_gradients_zeroed_by_default():
    x, y = _nan_batch()
    model = tiny_models.mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=tiny_models.LOGITS_LOSS)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(variable.numpy())), variable.path


def test_nan_loss_stops_training_when_asked():
    x, y = _nan_batch()
    model = tiny_models.mlp()
    before = tiny_models.weights_by_path(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=tiny_models.LOGITS_LOSS,
        on_nonfinite="raise",
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="on_nonfinite='raise'"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = tiny_models.weights_by_path(model)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_per_head_metrics_logged():
    x, y = tiny_models.feature_batch(n=16)
    model = tiny_models.mlp()
    model.compile(
        optimizer="sgd", loss=tiny_models.LOGITS_LOSS, metrics=["accuracy"]
    )
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for key in ("loss", "aux_loss", "final_loss", "aux_accuracy", "final_accuracy"):
        assert key in history.history, sorted(history.history)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["aux_loss"] + logs["final_loss"], rtol=1e-5)
