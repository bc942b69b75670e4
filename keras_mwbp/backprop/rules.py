"""How each layer is run forward and differentiated by the multi-way engine.

MW-BP takes every layer's local Jacobian at the layer's input stored by the
shared forward pass, but at the parameters' current values. A layer without
trainable parameters is differentiated on the shared tape (which also reuses
any random mask, such as Dropout's). A layer with parameters is re-applied to
its stored input with the current parameters under a local tape; in graph mode
the unused parts of that recomputation are pruned, so a convolution costs only
its two backward convolutions.
"""

import threading

import keras
from keras import ops

from keras_mwbp import _keras_private as kp
from keras_mwbp.graph import WEIGHTED_LAYER_TYPES

# Swapping a layer's activation is not thread safe, and MirroredStrategy
# traces each replica's step in its own thread.
_ACTIVATION_LOCK = threading.RLock()


def _has_fused_activation(layer):
    activation = getattr(layer, "activation", None)
    return (
        isinstance(layer, WEIGHTED_LAYER_TYPES)
        and activation is not None
        and activation is not keras.activations.linear
    )


def call_layer(layer, args, kwargs, training):
    """Calls a layer the way a functional model does in training or inference."""
    kwargs = dict(kwargs)
    if training is not None and kp.layer_call_has_training_arg(layer):
        kwargs["training"] = training
    return layer(*args, **kwargs)


def call_without_activation(layer, args, kwargs, training):
    """Calls a dense or convolution layer and returns its pre-activation.

    The activation fused into the layer is treated as a layer of its own, so
    its derivative can be taken at the stored pre-activation.
    """
    with _ACTIVATION_LOCK:
        activation = layer.activation
        layer.activation = keras.activations.linear
        try:
            return call_layer(layer, args, kwargs, training)
        finally:
            layer.activation = activation


def _normalization_axes(layer, ndim):
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    axes = [a % ndim for a in axes]
    return [a for a in range(ndim) if a not in axes]


def batch_norm_training_output(layer, inputs):
    """Normalizes with batch statistics without updating the moving statistics.

    Follows `keras.layers.BatchNormalization` in training mode (float32
    arithmetic for float16 inputs, biased batch variance).
    """
    compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
    x = ops.cast(inputs, compute_dtype)
    mean, variance = ops.moments(x, axes=_normalization_axes(layer, len(x.shape)))
    gamma = ops.cast(layer.gamma, compute_dtype) if layer.scale else None
    beta = ops.cast(layer.beta, compute_dtype) if layer.center else None
    outputs = ops.batch_normalization(
        x,
        mean=mean,
        variance=variance,
        axis=layer.axis,
        offset=beta,
        scale=gamma,
        epsilon=layer.epsilon,
    )
    return ops.cast(outputs, layer.compute_dtype)


def is_batch_norm_in_training(layer):
    """Returns whether a layer is a BatchNormalization that uses batch statistics."""
    return isinstance(layer, keras.layers.BatchNormalization) and layer.trainable


def forward_without_side_effects(layer, args, kwargs, training):
    """Runs a layer forward without updating its state.

    Used by the recomputed forward passes of the naive variants and by the
    live local Jacobians: BatchNormalization's moving statistics are updated
    once per step, in the shared forward pass only.
    """
    if training and is_batch_norm_in_training(layer):
        return batch_norm_training_output(layer, args[0])
    return call_layer(layer, args, kwargs, training)


def check_layer_supported(layer):
    """Raises if the multi-way engine cannot take a layer's live Jacobian.

    Args:
        layer: A layer with trainable variables.

    Raises:
        ValueError: For a layer that draws random numbers or updates state
            in training and has no dedicated rule.
    """
    if not layer.trainable_variables:
        return
    if isinstance(layer, keras.layers.BatchNormalization):
        if getattr(layer, "renorm", False):
            raise ValueError(
                f"Layer '{layer.name}' uses BatchNormalization(renorm=True), "
                "which multi-way backpropagation does not support. Use "
                "renorm=False or backprop='joint'."
            )
        return
    if isinstance(layer, WEIGHTED_LAYER_TYPES):
        return
    if layer.non_trainable_variables:
        names = [v.path for v in layer.non_trainable_variables][:3]
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has trainable "
            f"parameters and state variables ({names}). Multi-way "
            "backpropagation recomputes such a layer once per head with the "
            "current parameters, which would update its state again. "
            "Use a layer without training-time state, or backprop='joint' "
            "or 'standard'."
        )
    if getattr(layer, "seed_generator", None) is not None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has trainable "
            "parameters and draws random numbers. Multi-way backpropagation "
            "recomputes such a layer once per head, which would draw new "
            "random numbers. Split the random part into its own layer."
        )
