"""Shared test setup: quiet TensorFlow logs and two logical CPU devices.

The logical devices must be configured before TensorFlow initializes its
devices, so this runs when pytest imports the conftest, before any test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _CPUS[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Clears Keras's global state and seeds every generator for each test."""
    # free_memory=False skips a full garbage collection, which took most of
    # a second per test on a busy 2-core machine.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
