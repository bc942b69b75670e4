"""XLA compilation and mixed precision for every backprop method."""

import keras
import numpy as np
import pytest

import tiny_models
from keras_mwbp import BACKPROP_METHODS
from keras_mwbp import data
from keras_mwbp.models import resnet_cifar


def _train(backprop, jit_compile):
    keras.utils.set_random_seed(3)
    model = tiny_models.conv_net()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=tiny_models.LOGITS_LOSS,
        backprop=backprop,
        jit_compile=jit_compile,
    )
    x, y = tiny_models.image_batch(n=16)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return tiny_models.weights_by_path(model)


@pytest.mark.parametrize("backprop", BACKPROP_METHODS)
def test_xla_step_matches_graph_step(backprop):
    graph = _train(backprop, jit_compile=False)
    xla = _train(backprop, jit_compile=True)
    for path in graph:
        np.testing.assert_allclose(xla[path], graph[path], rtol=1e-5, atol=1e-6, err_msg=path)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _digit_accuracies(epochs=3):
    (x_train, y_train), (x_test, y_test) = data.load_arrays("digits")
    keras.utils.set_random_seed(0)
    model = resnet_cifar(8, num_aux=1, input_shape=(8, 8, 1), num_classes=10)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    logs = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    return model, [logs[f"{name}_accuracy"] for name in model.output_names]


def test_mixed_precision_gives_loss_scaling_per_head(mixed_precision):
    model = resnet_cifar(8, num_aux=1, input_shape=(8, 8, 1), num_classes=10)
    model.compile(optimizer="sgd", loss=tiny_models.LOGITS_LOSS)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    for optimizer in model.head_optimizers:
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def test_mixed_precision_accuracy_close_to_float32(mixed_precision):
    # NOTE: on CPU, float16 matmuls run through emulation; speed and the
    # numerics of real float16 hardware can only be checked on a GPU.
    _, mixed = _digit_accuracies()
    keras.mixed_precision.set_global_policy("float32")
    _, single = _digit_accuracies()
    for head, (a, b) in enumerate(zip(mixed, single)):
        assert abs(a - b) < 0.1, f"head {head}: mixed {a:.3f} vs float32 {b:.3f}"
        assert a > 0.4, f"head {head} did not learn under mixed precision: {a:.3f}"


def test_auto_jit_compile_follows_keras_rule():
    # Keras turns XLA on under jit_compile="auto" only where a non-CPU
    # device is present; the multi-way step must not change that rule.
    import tensorflow as tf

    has_accelerator = any(
        device.device_type != "CPU" for device in tf.config.list_physical_devices()
    )
    model = tiny_models.conv_net()
    model.compile(optimizer="sgd", loss=tiny_models.LOGITS_LOSS, jit_compile="auto")
    assert model.jit_compile == has_accelerator
