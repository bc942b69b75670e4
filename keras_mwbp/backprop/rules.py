"""How each layer is run forward and differentiated by the multi-way engine.

MW-BP takes every layer's local Jacobian at the layer's input stored by the
shared forward pass, but at the parameters' current values. A layer without
trainable parameters is differentiated on the shared tape (which also reuses
any random mask, such as Dropout's). A layer with parameters is re-applied to
its stored input with the current parameters under a local tape. In graph mode
the unused parts of that recomputation are pruned, so a convolution costs only
its two backward convolutions. BatchNormalization is split instead: its stored
normalization is reused, and only the scale and shift use current values.
"""

import threading

import keras
from keras import ops

from keras_mwbp import _keras_private as kp
from keras_mwbp.graph import WEIGHTED_LAYER_TYPES

# Linear views of layers with a fused activation, keyed by `id(layer)`. The
# view is a shallow copy that shares the layer's variables but has a linear
# activation. Swapping the activation on the layer itself is not an option:
# MirroredStrategy traces each replica's step in its own thread, and the other
# threads would see the swapped activation.
_LINEAR_VIEWS = {}
_LINEAR_VIEWS_LOCK = threading.Lock()


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


def _linear_view(layer):
    with _LINEAR_VIEWS_LOCK:
        entry = _LINEAR_VIEWS.get(id(layer))
        if entry is None or entry[0] is not layer:
            # A plain attribute copy: `copy.copy` goes through Keras's
            # pickling hooks, which fail inside `tf.function`. Setting the
            # attribute with `object.__setattr__` bypasses Keras tracking, so
            # nothing is registered on the shared layer.
            view = object.__new__(type(layer))
            view.__dict__.update(layer.__dict__)
            object.__setattr__(view, "activation", keras.activations.linear)
            entry = (layer, view)
            _LINEAR_VIEWS[id(layer)] = entry
        return entry[1]


def call_without_activation(layer, args, kwargs, training):
    """Calls a dense or convolution layer and returns its pre-activation.

    The activation fused into the layer is treated as a layer of its own, so
    its derivative can be taken at the stored pre-activation.
    """
    return call_layer(_linear_view(layer), args, kwargs, training)


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


def _channel_shape(layer, ndim):
    """Returns the shape that broadcasts per-channel values against inputs."""
    reduction = set(_normalization_axes(layer, ndim))
    return [1 if axis in reduction else -1 for axis in range(ndim)]


def batch_norm_normalize(layer, inputs, update_state):
    """Normalizes with batch statistics and returns `(x_hat, affine)`.

    The multi-way engine records the parameter-free normalization on its
    tape and applies `affine(x_hat)` (scale by gamma, shift by beta) as a
    separate step, so each head's backward pass reuses the stored x_hat and
    batch statistics instead of recomputing them. When `update_state`, the
    moving statistics are updated the way `keras.layers.BatchNormalization`
    documents: `moving = moving * momentum + batch_statistic * (1 - momentum)`
    with the biased batch variance.
    """
    compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
    x = ops.cast(inputs, compute_dtype)
    ndim = len(x.shape)
    axes = _normalization_axes(layer, ndim)
    mean, variance = ops.moments(x, axes=axes, keepdims=True)
    x_hat = (x - mean) * ops.rsqrt(variance + layer.epsilon)
    if update_state:
        momentum = layer.momentum
        batch_mean = ops.reshape(mean, layer.moving_mean.shape)
        batch_variance = ops.reshape(variance, layer.moving_variance.shape)
        moving_mean = ops.cast(layer.moving_mean, compute_dtype)
        moving_variance = ops.cast(layer.moving_variance, compute_dtype)
        layer.moving_mean.assign(moving_mean * momentum + batch_mean * (1.0 - momentum))
        layer.moving_variance.assign(
            moving_variance * momentum + batch_variance * (1.0 - momentum)
        )

    def affine(normalized, gamma=None, beta=None):
        shape = _channel_shape(layer, ndim)
        outputs = normalized
        if layer.scale:
            gamma = layer.gamma if gamma is None else gamma
            outputs = outputs * ops.reshape(ops.cast(gamma, compute_dtype), shape)
        if layer.center:
            beta = layer.beta if beta is None else beta
            outputs = outputs + ops.reshape(ops.cast(beta, compute_dtype), shape)
        return ops.cast(outputs, layer.compute_dtype)

    return x_hat, affine


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
        if getattr(layer, "synchronized", False):
            raise ValueError(
                f"Layer '{layer.name}' uses BatchNormalization("
                "synchronized=True). Multi-way backpropagation recomputes "
                "batch statistics per replica, so it does not support "
                "synchronized batch statistics. Use synchronized=False or "
                "backprop='joint'."
            )
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
