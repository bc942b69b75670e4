"""Trains a tiny MultiWayModel in a child process for the resume test.

Usage: python resume_worker.py MODE BACKUP_DIR OUTPUT_NPZ BACKPROP SHARE

MODE "straight" trains 3 epochs. MODE "crash" trains with the same
settings but exits the process abruptly after the first epoch's backup, and
MODE "resume" runs the same `fit` again, which BackupAndRestore resumes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import tiny_models  # noqa: E402


class _NuByEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.nu.assign([2.0, 1.0, 0.5][epoch])


class _CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os._exit(17)


def main():
    mode, backup_dir, output, backprop, share = sys.argv[1:6]
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    model = tiny_models.mlp(num_aux=2)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.1, 0.02])
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=tiny_models.LOGITS_LOSS,
        backprop=backprop,
        share_optimizer_state=share == "shared",
    )
    x, y = tiny_models.feature_batch(n=32, seed=5)
    callbacks = [_NuByEpoch(), keras.callbacks.BackupAndRestore(backup_dir)]
    if mode == "crash":
        callbacks.append(_CrashAfterFirstEpoch())
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
    values = {v.path: np.asarray(v.numpy()) for v in model.weights}
    if model.head_optimizers:
        for index, optimizer in enumerate(model.head_optimizers):
            for variable in optimizer.variables:
                values[f"head_optimizer_{index}/{variable.path}"] = np.asarray(variable.numpy())
    values["main_iterations"] = np.asarray(model.optimizer.iterations.numpy())
    np.savez(output, **values)


if __name__ == "__main__":
    main()
