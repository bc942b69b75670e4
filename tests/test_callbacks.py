"""Tests of the nu and gamma callbacks, run through `model.fit`.

Expected values are closed forms written out here: the nu that each
strategy gives per epoch and gamma_i = max(0.01, (L_i / L_{K-1}) ** nu)
for the auxiliary heads, 1 for the final head.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny_models

from keras_mwbp import MultiWayModel
from keras_mwbp import callbacks as mw_callbacks

# `tiny_models.mlp(num_aux=2)` has the heads "aux" after the layers hidden
# and hidden2 (depth 2), "aux1" after middle1 (depth 3) and "final" after
# deep and the output layer (depth 5).
HEAD_NAMES = ["aux", "aux1", "final"]
HEAD_DEPTHS = [2, 3, 5]
NUM_SAMPLES = 16
BATCH_SIZE = 8
STEPS_PER_EPOCH = NUM_SAMPLES // BATCH_SIZE


def expected_gammas(nu):
    """Gammas of the three-head MLP from nu, written out for its depths."""
    deepest_auxiliary_depth = HEAD_DEPTHS[-2]
    auxiliary = [max(0.01, (depth / deepest_auxiliary_depth) ** nu) for depth in HEAD_DEPTHS[:-1]]
    return auxiliary + [1.0]


def adaptive_nu(initial, factor, drop_epochs, epochs):
    """Nu per epoch: `initial * factor ** (number of drops at epochs <= e)`."""
    return [initial * factor ** sum(1 for d in drop_epochs if d <= e) for e in range(epochs)]


class CountingModel(MultiWayModel):
    """A `MultiWayModel` that counts how often its train step is traced."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace_count = 0

    def train_step(self, data):
        # The Python body runs only while `tf.function` traces the step.
        self.trace_count += 1
        return super().train_step(data)


class Probe(keras.callbacks.Callback):
    """Records the model's variables at each epoch start, after earlier callbacks."""

    def __init__(self):
        super().__init__()
        self.nu = {}
        self.fixed_loss_weights = {}
        self.learning_rate = {}
        self.trace_count_after_first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.nu[epoch] = float(self.model.nu.numpy())
        self.fixed_loss_weights[epoch] = self.model.fixed_loss_weights.numpy().tolist()
        self.learning_rate[epoch] = float(np.asarray(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if self.trace_count_after_first_epoch is None:
            self.trace_count_after_first_epoch = getattr(self.model, "trace_count", None)


class ConstantMetric(keras.callbacks.Callback):
    """Writes a constant into the epoch logs, so ReduceLROnPlateau detects a plateau."""

    def on_epoch_end(self, epoch, logs=None):
        logs["plateau_metric"] = 1.0


class RaiseAtEpoch(keras.callbacks.Callback):
    """Stops training with an error at the start of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"interrupted at epoch {epoch}")


class LowerLearningRateAfterEpoch(keras.callbacks.Callback):
    """Divides the learning-rate variable by 10 at the end of one epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            learning_rate = float(np.asarray(self.model.optimizer.learning_rate))
            self.model.optimizer.learning_rate = learning_rate / 10


def compiled_mlp(learning_rate=0.05, model_class=MultiWayModel, **compile_kwargs):
    base = tiny_models.mlp(num_aux=2)
    model = base if model_class is MultiWayModel else model_class(base.inputs, base.outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss=tiny_models.LOGITS_LOSS,
        **compile_kwargs,
    )
    return model


def fit(model, callbacks, epochs, initial_epoch=0, verbose=0):
    x, y = tiny_models.feature_batch(NUM_SAMPLES)
    return model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        callbacks=callbacks,
        verbose=verbose,
    )


def test_mlp_head_depths_match_constants():
    model = tiny_models.mlp(num_aux=2)
    assert model.output_names == HEAD_NAMES
    assert model.head_depths == HEAD_DEPTHS


# ----------------------------------------------------------------------
# NuScheduler.


def test_nu_scheduler_sets_and_logs_nu():
    values = [2.0, 0.5, 20.0]
    probe = Probe()
    model = compiled_mlp()

    history = fit(model, [mw_callbacks.NuScheduler(lambda epoch: values[epoch]), probe], epochs=3)

    assert [probe.nu[e] for e in range(3)] == values
    assert history.history["nu"] == pytest.approx(values)
    for index, name in enumerate(HEAD_NAMES):
        expected = [expected_gammas(nu)[index] for nu in values]
        assert history.history[f"{name}_gamma"] == pytest.approx(expected, rel=1e-5)
    # (2/3) ** 20 is below the floor, so the shallowest head gets 0.01.
    assert history.history["aux_gamma"][2] == pytest.approx(0.01)


def test_nu_scheduler_passes_current_nu():
    model = compiled_mlp(nu=2.0)
    scheduler = mw_callbacks.NuScheduler(lambda epoch, nu: nu / 2)
    scheduler.set_model(model)
    scheduler.on_train_begin()

    seen = []
    for epoch in range(3):
        scheduler.on_epoch_begin(epoch)
        seen.append(float(model.nu.numpy()))

    assert seen == [1.0, 0.5, 0.25]

    # A second parameter with a default value is left to its default.
    scheduler = mw_callbacks.NuScheduler(lambda epoch, scale=3.0: scale * epoch)
    scheduler.set_model(model)
    scheduler.on_epoch_begin(2)
    assert float(model.nu.numpy()) == 6.0


def test_nu_scheduler_rejects_invalid_nu():
    model = compiled_mlp()
    for value in [-1.0, float("nan"), float("inf"), "2", [1.0, 2.0], None]:
        # `value` is a default, so the scheduler calls this with the epoch only.
        scheduler = mw_callbacks.NuScheduler(
            lambda epoch, value=value: 1.0 if epoch == 0 else value
        )
        scheduler.set_model(model)
        scheduler.on_train_begin()
        scheduler.on_epoch_begin(0)

        with pytest.raises(ValueError, match="invalid nu for epoch 1") as error:
            scheduler.on_epoch_begin(1)
        assert repr(value) in str(error.value)
        assert "finite float >= 0" in str(error.value)


def test_nu_scheduler_error_through_fit():
    model = compiled_mlp()
    scheduler = mw_callbacks.NuScheduler(lambda epoch: -0.5)

    with pytest.raises(ValueError, match=r"invalid nu for epoch 0: -0\.5"):
        fit(model, [scheduler], epochs=1)


def test_nu_scheduler_rejects_fixed_weights():
    model = compiled_mlp(loss_weights=[0.5, 1.0, 1.0])

    with pytest.raises(ValueError, match="compiled with `loss_weights=`"):
        fit(model, [mw_callbacks.NuScheduler(lambda epoch: 1.0)], epochs=1)


def test_nu_scheduler_rejects_non_callable():
    with pytest.raises(TypeError, match="Expected a callable"):
        mw_callbacks.NuScheduler(2.0)


# ----------------------------------------------------------------------
# AdaptiveNu.


def test_adaptive_nu_drop_epochs_without_retrace():
    model = compiled_mlp(model_class=CountingModel)

    # Adaptive-I, then Adaptive-II on the same compiled model, then a run
    # resumed at epoch 2: nu changes at every drop and the step is traced
    # only during the first epoch.
    probe = Probe()
    history = fit(model, [mw_callbacks.AdaptiveNu("I", drop_epochs=[1, 3]), probe], epochs=5)
    expected = adaptive_nu(0.5, 2.0, [1, 3], 5)
    assert [probe.nu[e] for e in range(5)] == expected
    assert history.history["nu"] == pytest.approx(expected)
    assert history.history["aux_gamma"] == pytest.approx(
        [expected_gammas(nu)[0] for nu in expected], rel=1e-5
    )
    trace_count_after_first_epoch = probe.trace_count_after_first_epoch
    assert trace_count_after_first_epoch >= 1
    assert model.trace_count == trace_count_after_first_epoch

    probe = Probe()
    adaptive = mw_callbacks.AdaptiveNu("adaptive_ii", drop_epochs=[1, 3])
    history = fit(model, [adaptive, probe], epochs=5)
    expected = adaptive_nu(2.0, 0.5, [1, 3], 5)
    assert [probe.nu[e] for e in range(5)] == expected
    assert history.history["nu"] == pytest.approx(expected)

    probe = Probe()
    fit(model, [mw_callbacks.AdaptiveNu("I", drop_epochs=[1, 3]), probe], epochs=5, initial_epoch=2)
    assert sorted(probe.nu) == [2, 3, 4]
    assert [probe.nu[e] for e in (2, 3, 4)] == [1.0, 2.0, 2.0]

    assert model.trace_count == trace_count_after_first_epoch


def test_adaptive_nu_detects_piecewise_drops():
    # Epoch k starts at step 2k. The rate switches after steps 3 and 5, so
    # epochs 2 (step 4) and 3 (step 6) are the first with the lower rates.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[3, 5], values=[0.1, 0.01, 0.001]
    )
    probe = Probe()
    model = compiled_mlp(learning_rate=schedule)

    fit(model, [mw_callbacks.AdaptiveNu("i"), probe], epochs=5)

    assert [probe.learning_rate[e] for e in range(5)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.001]
    )
    assert [probe.nu[e] for e in range(5)] == adaptive_nu(0.5, 2.0, [2, 3], 5)

    # Resume at epoch 2 with the step count that a restored optimizer has
    # after epochs 0 and 1. Epoch 2 already has one drop behind it.
    probe = Probe()
    model.optimizer.iterations.assign(2 * STEPS_PER_EPOCH)
    fit(model, [mw_callbacks.AdaptiveNu("II"), probe], epochs=5, initial_epoch=2)

    assert [probe.learning_rate[e] for e in (2, 3, 4)] == pytest.approx([0.01, 0.001, 0.001])
    assert [probe.nu[e] for e in (2, 3, 4)] == [1.0, 0.5, 0.5]


def test_adaptive_nu_detects_reduce_lr_on_plateau():
    # The monitored value never improves, so with patience 1 the rate drops
    # at the end of epochs 1 and 2 and then stays at min_lr.
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="plateau_metric", mode="min", factor=0.1, patience=1, min_lr=0.001
    )
    probe = Probe()
    model = compiled_mlp(learning_rate=0.1)

    fit(model, [mw_callbacks.AdaptiveNu("II"), ConstantMetric(), plateau, probe], epochs=5)

    assert [probe.learning_rate[e] for e in range(5)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.001]
    )
    assert [probe.nu[e] for e in range(5)] == adaptive_nu(2.0, 0.5, [2, 3], 5)


def test_adaptive_nu_resumes_from_backup(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = compiled_mlp(learning_rate=0.1)
    first_callbacks = [
        mw_callbacks.AdaptiveNu("I"),
        LowerLearningRateAfterEpoch(0),
        RaiseAtEpoch(2),
        keras.callbacks.BackupAndRestore(backup_dir),
    ]
    with pytest.raises(RuntimeError, match="interrupted at epoch 2"):
        fit(model, first_callbacks, epochs=4)
    assert float(model.nu.numpy()) == 1.0

    # Adaptive-I reaches nu = 2 only after two drops, so nu = 1 at epoch 2
    # shows that the backup, saved after epoch 1 with one drop, was restored.
    model.nu.assign(2.0)
    probe = Probe()
    second_callbacks = [
        mw_callbacks.AdaptiveNu("I"),
        keras.callbacks.BackupAndRestore(backup_dir),
        probe,
    ]
    fit(model, second_callbacks, epochs=4)

    assert sorted(probe.nu) == [2, 3]
    assert [probe.nu[e] for e in (2, 3)] == [1.0, 1.0]


def test_adaptive_nu_warns_on_unknown_nu():
    model = compiled_mlp(learning_rate=0.1, nu=0.3)
    callback = mw_callbacks.AdaptiveNu("I")
    callback.set_model(model)
    callback.set_params({"epochs": 5, "steps": STEPS_PER_EPOCH, "verbose": 0})
    callback.on_train_begin()

    with pytest.warns(UserWarning, match=r"model\.nu = 0\.3"):
        callback.on_epoch_begin(3)
    assert float(model.nu.numpy()) == 0.5


def test_adaptive_nu_mode_aliases():
    aliases = {"I": "I", "i": "I", "Adaptive_I": "I", "adaptive-ii": "II", "II": "II", " ii ": "II"}
    for mode, expected in aliases.items():
        assert mw_callbacks.AdaptiveNu(mode).mode == expected


def test_adaptive_nu_rejects_invalid_mode():
    for mode in ["III", "", None, 1]:
        with pytest.raises(ValueError, match="Invalid value for argument `mode`") as error:
            mw_callbacks.AdaptiveNu(mode)
        for valid in ("'i'", "'ii'", "'adaptive_i'", "'adaptive_ii'"):
            assert valid in str(error.value)
        assert f"Received: mode={mode!r}" in str(error.value)


def test_adaptive_nu_rejects_invalid_drop_epochs():
    for drop_epochs in [[0], [2, 2], [1.5], "3", 3]:
        with pytest.raises(ValueError, match="Invalid value for argument `drop_epochs`"):
            mw_callbacks.AdaptiveNu("I", drop_epochs=drop_epochs)


def test_adaptive_nu_rejects_fixed_weights():
    model = compiled_mlp(loss_weights=[0.5, 1.0, 1.0])

    with pytest.raises(ValueError, match="AdaptiveNu sets `model.nu`"):
        fit(model, [mw_callbacks.AdaptiveNu("I")], epochs=1)


def test_schedule_drop_epochs_piecewise():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[1600, 2400, 3000], values=[0.1, 0.01, 0.001, 0.01]
    )
    # The value changes after step b, so the drop epoch is b // 100 + 1. The
    # rise after step 3000 is not a drop.
    assert mw_callbacks.schedule_drop_epochs(schedule, steps_per_epoch=100, epochs=40) == [
        1600 // 100 + 1,
        2400 // 100 + 1,
    ]


def test_schedule_drop_epochs_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        mw_callbacks.schedule_drop_epochs(lambda step: 0.1, steps_per_epoch=0, epochs=3)


# ----------------------------------------------------------------------
# Logging.


def read_scalars(log_dir):
    """Returns `{tag: [values in event order]}` from the event files under `log_dir`."""
    scalars = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return scalars


def test_logger_writes_history_tensorboard_progbar(tmp_path, capsys):
    log_dir = str(tmp_path / "logs")
    model = compiled_mlp(nu=1.0)
    # AdaptiveNu and LossWeightLogger both write the same keys.
    callbacks = [
        mw_callbacks.AdaptiveNu("I", drop_epochs=[1]),
        mw_callbacks.LossWeightLogger(),
        keras.callbacks.TensorBoard(log_dir),
    ]

    history = fit(model, callbacks, epochs=2, verbose=2)

    expected_nu = [0.5, 1.0]
    assert history.history["nu"] == pytest.approx(expected_nu)
    for index, name in enumerate(HEAD_NAMES):
        expected = [expected_gammas(nu)[index] for nu in expected_nu]
        assert history.history[f"{name}_gamma"] == pytest.approx(expected, rel=1e-5)

    scalars = read_scalars(os.path.join(log_dir, "train"))
    assert scalars["epoch_nu"] == pytest.approx(expected_nu)
    for index, name in enumerate(HEAD_NAMES):
        expected = [expected_gammas(nu)[index] for nu in expected_nu]
        assert scalars[f"epoch_{name}_gamma"] == pytest.approx(expected, rel=1e-5)

    output = capsys.readouterr().out
    assert "nu: 0.5000" in output
    assert "aux_gamma:" in output
    assert "final_gamma: 1.0000" in output


def test_logger_with_fixed_weights_skips_nu():
    model = compiled_mlp(loss_weights=[0.25, 0.5, 1.0])
    logger = mw_callbacks.LossWeightLogger()
    logger.set_model(model)
    logger.on_train_begin()
    logs = {"loss": 1.0}

    logger.on_epoch_end(0, logs)

    assert logs == pytest.approx(
        {"loss": 1.0, "aux_gamma": 0.25, "aux1_gamma": 0.5, "final_gamma": 1.0}
    )


def test_logger_rejects_plain_model():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="sgd", loss=tiny_models.LOGITS_LOSS)

    with pytest.raises(TypeError, match="requires a `keras_mwbp.MultiWayModel`"):
        fit(model, [mw_callbacks.LossWeightLogger()], epochs=1)


# ----------------------------------------------------------------------
# GammaScheduler.


def test_dsn_decay_values():
    schedule = mw_callbacks.dsn_decay(3, decay_epochs=4, initial_weight=0.8)

    for epoch in range(7):
        auxiliary = 0.8 * max(0.0, 1.0 - epoch / 4)
        assert schedule(epoch) == pytest.approx([auxiliary, auxiliary, 1.0])
    assert schedule(4) == [0.0, 0.0, 1.0]


def test_dsn_decay_rejects_invalid_arguments():
    cases = [
        ({"num_heads": 1, "decay_epochs": 3}, "num_heads"),
        ({"num_heads": 3, "decay_epochs": 0}, "decay_epochs"),
        ({"num_heads": 3, "decay_epochs": 2.5}, "decay_epochs"),
        ({"num_heads": 3, "decay_epochs": 2, "initial_weight": -1.0}, "initial_weight"),
    ]
    for kwargs, argument in cases:
        with pytest.raises(ValueError, match=f"argument `{argument}`"):
            mw_callbacks.dsn_decay(**kwargs)


def test_gamma_scheduler_dsn_decay_changes_training():
    decay_epochs = 2
    epochs = 4
    model = compiled_mlp(loss_weights=[1.0, 1.0, 1.0])
    initial_weights = model.get_weights()

    # Reference run with constant gammas, then the DSN run from the same
    # initial weights. Plain SGD keeps no state that could differ.
    fit(model, [], epochs=epochs)
    hidden_constant = model.get_layer("hidden").kernel.numpy()
    model.set_weights(initial_weights)

    class AuxiliaryWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == decay_epochs:
                self.at_decay = [w.numpy().copy() for w in self.model.get_layer("aux").weights]

    probe = Probe()
    auxiliary_weights = AuxiliaryWeights()
    schedule = mw_callbacks.dsn_decay(3, decay_epochs)
    history = fit(
        model,
        [mw_callbacks.GammaScheduler(schedule), probe, auxiliary_weights],
        epochs=epochs,
    )

    for epoch in range(epochs):
        auxiliary = max(0.0, 1.0 - epoch / decay_epochs)
        assert probe.fixed_loss_weights[epoch] == pytest.approx([auxiliary, auxiliary, 1.0])
    assert history.history["aux_gamma"] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert history.history["aux1_gamma"] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert history.history["final_gamma"] == pytest.approx([1.0] * epochs)
    assert "nu" not in history.history

    # With gamma 0, plain SGD leaves the auxiliary head's own weights as they are.
    for before, after in zip(auxiliary_weights.at_decay, model.get_layer("aux").weights):
        np.testing.assert_array_equal(before, after.numpy())
    # The first layer is trained by every head, so smaller auxiliary gammas
    # change where it ends up.
    hidden_decayed = model.get_layer("hidden").kernel.numpy()
    assert np.max(np.abs(hidden_decayed - hidden_constant)) > 1e-4


def test_gamma_scheduler_accepts_auxiliary_gammas():
    model = compiled_mlp(loss_weights=[1.0, 1.0, 1.0])
    scheduler = mw_callbacks.GammaScheduler(lambda epoch: [0.3, 0.2])
    scheduler.set_model(model)
    scheduler.on_train_begin()

    scheduler.on_epoch_begin(0)

    assert model.fixed_loss_weights.numpy().tolist() == pytest.approx([0.3, 0.2, 1.0])


def test_gamma_scheduler_requires_loss_weights():
    model = compiled_mlp()
    scheduler = mw_callbacks.GammaScheduler(mw_callbacks.dsn_decay(3, 2))

    with pytest.raises(ValueError, match="Pass `loss_weights=` to `compile\\(\\)`"):
        fit(model, [scheduler], epochs=1)


def test_gamma_scheduler_rejects_invalid_gammas():
    cases = [
        ([1.0], r"has shape \(1,\)"),
        ([1.0, 1.0, 1.0, 1.0], r"has shape \(4,\)"),
        ([[1.0, 1.0, 1.0]], r"has shape \(1, 3\)"),
        ([0.5, -0.1, 1.0], "finite float >= 0"),
        ([0.5, float("nan"), 1.0], "finite float >= 0"),
        (["a", "b", "c"], "Expected 3 gammas"),
    ]
    model = compiled_mlp(loss_weights=[1.0, 1.0, 1.0])
    for value, message in cases:
        scheduler = mw_callbacks.GammaScheduler(lambda epoch, value=value: value)

        with pytest.raises(ValueError, match="invalid gammas for epoch 0") as error:
            fit(model, [scheduler], epochs=1)
        assert error.match(message)
        if "shape" in message:
            assert "Expected 3 gammas (one per head: ['aux', 'aux1', 'final'])" in str(error.value)


# ----------------------------------------------------------------------
# Serialization.


def test_callbacks_round_trip_config():
    original = mw_callbacks.AdaptiveNu("adaptive_ii", [3, 5], verbose=1)
    adaptive = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(original)
    )
    assert isinstance(adaptive, mw_callbacks.AdaptiveNu)
    assert adaptive.mode == "II"
    assert adaptive.drop_epochs == [3, 5]
    assert adaptive.verbose == 1

    scheduler = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(
            mw_callbacks.GammaScheduler(mw_callbacks.dsn_decay(3, 4))
        )
    )
    assert isinstance(scheduler, mw_callbacks.GammaScheduler)
    assert scheduler.schedule(1) == pytest.approx([0.75, 0.75, 1.0])

    logger = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(mw_callbacks.LossWeightLogger())
    )
    assert isinstance(logger, mw_callbacks.LossWeightLogger)
