"""Tiny multi-head models shared by the tests."""

import keras
import numpy as np

from keras_mwbp import MultiWayModel

LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_net(num_classes=3, dropout=None, regularizer=None, batch_norm=True):
    """Builds a two-head conv net with BatchNormalization and a residual add."""
    inputs = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(
        4,
        3,
        padding="same",
        activation="relu",
        kernel_regularizer=regularizer,
        name="conv1",
    )(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    aux = keras.layers.GlobalAveragePooling2D(name="aux_pool")(x)
    aux = keras.layers.Dense(num_classes, name="aux")(aux)
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    if dropout is not None:
        y = keras.layers.Dropout(dropout, name="dropout")(y)
    y = keras.layers.Add(name="add")([x, y])
    final = keras.layers.GlobalAveragePooling2D(name="final_pool")(y)
    final = keras.layers.Dense(num_classes, name="final")(final)
    return MultiWayModel(inputs, [aux, final], name="conv_net")


def mlp(num_classes=3, dropout=None, num_aux=1):
    """Builds an MLP with two shared layers below the first auxiliary head.

    With two shared layers, the final head back-propagates through a layer
    the auxiliary head has already moved, so MW-BP differs from joint BP.
    """
    inputs = keras.Input((5,), name="features")
    x = keras.layers.Dense(16, activation="tanh", name="hidden")(inputs)
    if dropout is not None:
        x = keras.layers.Dropout(
            dropout, noise_shape=(1, 16), seed=7, name="dropout"
        )(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden2")(x)
    heads = [keras.layers.Dense(num_classes, name="aux")(x)]
    for index in range(1, num_aux):
        x = keras.layers.Dense(8, activation="relu", name=f"middle{index}")(x)
        heads.append(keras.layers.Dense(num_classes, name=f"aux{index}")(x))
    x = keras.layers.Dense(8, activation="relu", name="deep")(x)
    heads.append(keras.layers.Dense(num_classes, name="final")(x))
    return MultiWayModel(inputs, heads, name="mlp")


def image_batch(n=16, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 6, 6, 2).astype("float32")
    y = rng.randint(0, 3, size=n)
    return x, y


def feature_batch(n=16, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 5).astype("float32")
    y = rng.randint(0, 3, size=n)
    return x, y


def weights_by_path(model):
    return {v.path: np.array(v.numpy()) for v in model.weights}
