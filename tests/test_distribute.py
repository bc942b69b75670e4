"""MirroredStrategy on two logical CPU devices matches one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny_models

# One strategy for the whole module: collective ops of separate
# MirroredStrategy objects over the same devices can collide in one process.
_STRATEGY = None


def _strategy():
    global _STRATEGY
    if _STRATEGY is None:
        _STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    return _STRATEGY


def _train(backprop, strategy):
    keras.utils.set_random_seed(99)
    with strategy.scope():
        # Without BatchNormalization: each replica normalizes with its own
        # batch statistics, which legitimately differ from one device's.
        model = tiny_models.conv_net(
            regularizer=keras.regularizers.L2(1e-3), batch_norm=False
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=tiny_models.LOGITS_LOSS,
            backprop=backprop,
        )
    x, y = tiny_models.image_batch(n=16, seed=4)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return tiny_models.weights_by_path(model)


@pytest.mark.parametrize("backprop", ["mwbp", "naive_reverse_mwbp", "relay", "joint"])
def test_two_replicas_match_one_device(backprop):
    strategy = _strategy()
    assert strategy.num_replicas_in_sync == 2
    single = _train(backprop, tf.distribute.get_strategy())
    mirrored = _train(backprop, strategy)
    assert set(single) == set(mirrored)
    for path in single:
        np.testing.assert_allclose(
            mirrored[path], single[path], rtol=1e-4, atol=1e-5, err_msg=path
        )
