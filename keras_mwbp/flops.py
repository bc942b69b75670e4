"""Count the multiply-adds of one forward pass of a functional Keras model.

A multiply-add (MAdd, often called a MAC) is one multiplication of an input
element by a weight together with the addition that accumulates it. Papers on
CIFAR ResNets often report this count as "FLOPs". By this count the
ResNet-20 of `keras_mwbp.models.resnet_cifar` on 32x32x3 images has
40,551,040 multiply-adds.

Only convolutions and dense layers are counted, because they contain nearly
all the arithmetic of a convolutional network. Bias additions,
BatchNormalization, activations, pooling, residual additions and every other
layer count as zero.
"""

import math
import string
import warnings

import keras

from keras_mwbp import _keras_private as kp

# Layers without multiply-adds of their own whose weights are matrices or
# larger, so that `_warn_if_uncounted` does not report them.
_LAYERS_WITHOUT_MULTIPLY_ADDS = (keras.layers.Embedding,)


def count_multiply_adds(model):
    """Counts the multiply-adds of one forward pass of one input example.

    The count covers only the layers on the paths from the model's inputs
    to its outputs, so for `MultiWayModel.submodel(i)` it is the cost of
    head i alone. A layer called twice is counted twice, and the layers of a
    nested functional model are counted through its own graph.

    Counted layers: `Conv1D`, `Conv2D` and `Conv3D` (with `groups`),
    `DepthwiseConv1D` and `DepthwiseConv2D`, `SeparableConv1D` and
    `SeparableConv2D`, the transposed convolutions, `Dense` and
    `EinsumDense`. A convolution costs (kernel size) x (input channels /
    groups) x (output elements): zero padding counts as multiplications,
    and strides and dilation enter through the output shape only. All other
    layers (bias additions, BatchNormalization, activations, pooling,
    residual additions) count as zero. A layer that is not counted but has
    weights of rank 2 or more, such as `MultiHeadAttention` or `LSTM`,
    triggers a `UserWarning`, because its cost is then missing from the
    total.

    Example:

    ```python
    model = keras_mwbp.models.resnet_cifar(20)
    keras_mwbp.flops.count_multiply_adds(model)  # 40_551_040
    ```

    Args:
        model: A functional `keras.Model`, or a built `keras.Sequential`,
            whose input shapes are fixed except for the batch size.

    Returns:
        Int. Multiply-adds per input example.

    Raises:
        ValueError: If `model` has no functional graph (a subclassed model)
            or a counted layer has a dimension other than the batch size
            that is `None`.
    """
    return sum(multiply_adds_per_layer(model).values())


def multiply_adds_per_layer(model):
    """Counts the multiply-adds of each layer of a functional model.

    Uses the same rules as `count_multiply_adds`.

    Args:
        model: A functional `keras.Model`, or a built `keras.Sequential`.

    Returns:
        Dict from layer name to its multiply-adds per input example, in the
        order the layers run, with every counted layer and no other. A layer
        called more than once has the sum of its calls. A layer inside a
        nested model is named `"outer_model/inner_layer"`.

    Raises:
        ValueError: As for `count_multiply_adds`.
    """
    counts = {}
    _add_model_counts(model, prefix="", counts=counts)
    return counts


def layer_multiply_adds(layer, input_shape, output_shape):
    """Counts the multiply-adds of one call of a layer on one input example.

    Args:
        layer: A Keras layer.
        input_shape: Tuple. Shape of the layer's input, batch axis first.
        output_shape: Tuple. Shape of the layer's output, batch axis first.

    Returns:
        Int. Multiply-adds per input example, 0 for a layer that is not
        counted (see `count_multiply_adds`).

    Raises:
        ValueError: If a dimension other than the batch axis is `None`.
    """
    input_shape = tuple(input_shape)
    output_shape = tuple(output_shape)
    if not _is_counted(layer):
        return 0
    for shape in (input_shape, output_shape):
        if any(size is None for size in shape[1:]):
            raise ValueError(
                f"Cannot count the multiply-adds of layer '{layer.name}' "
                f"({type(layer).__name__}), because its input shape "
                f"{input_shape} or output shape {output_shape} has an unknown "
                "dimension besides the batch axis. Build the model with a "
                "fixed input shape, for example keras.Input((32, 32, 3))."
            )

    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_dense_multiply_adds(layer, input_shape, output_shape)
    if isinstance(layer, keras.layers.Dense):
        # A dense layer maps the last axis and keeps the others.
        return math.prod(output_shape[1:]) * input_shape[-1]

    in_channels, in_spatial = _channels_and_spatial(layer, input_shape)
    out_channels, out_spatial = _channels_and_spatial(layer, output_shape)
    kernel_elements = math.prod(layer.kernel_size)
    if isinstance(layer, _separable_types()):
        depthwise_channels = in_channels * layer.depth_multiplier
        depthwise = math.prod(out_spatial) * depthwise_channels * kernel_elements
        pointwise = math.prod(out_spatial) * depthwise_channels * out_channels
        return depthwise + pointwise
    if isinstance(layer, _depthwise_types()):
        return math.prod(out_spatial) * out_channels * kernel_elements
    if isinstance(layer, _transpose_types()):
        # Each input element is multiplied by a whole kernel slice.
        return math.prod(in_spatial) * in_channels * kernel_elements * out_channels
    groups = getattr(layer, "groups", 1)
    return math.prod(out_spatial) * out_channels * kernel_elements * (in_channels // groups)


def _conv_types():
    layers = keras.layers
    return (layers.Conv1D, layers.Conv2D, layers.Conv3D)


def _depthwise_types():
    return (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _separable_types():
    return (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def _transpose_types():
    layers = keras.layers
    return (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)


def _is_counted(layer):
    counted = (
        keras.layers.Dense,
        keras.layers.EinsumDense,
        *_conv_types(),
        *_depthwise_types(),
        *_separable_types(),
        *_transpose_types(),
    )
    return isinstance(layer, counted)


def _channels_and_spatial(layer, shape):
    """Splits a batched shape into its channel count and spatial sizes."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return shape[1], shape[2:]
    return shape[-1], shape[1:-1]


def _einsum_dense_multiply_adds(layer, input_shape, output_shape):
    """Counts (output elements) x (sizes of the summed-over indices).

    An index is summed over when it appears in the input or kernel spec of
    the equation but not in the output spec.
    """
    equation = layer.equation.replace(" ", "")
    inputs_spec, output_spec = equation.split("->")
    input_spec, kernel_spec = inputs_spec.split(",")
    sizes = dict(zip(kernel_spec, layer.kernel.shape))
    sizes.update(_index_sizes(input_spec, input_shape))
    summed = set(input_spec + kernel_spec) - set(output_spec) - {"."}
    per_output_element = math.prod(sizes[index] for index in summed)
    return math.prod(output_shape[1:]) * per_output_element


def _index_sizes(spec, shape):
    """Maps each letter of an einsum operand spec to its size in `shape`.

    Letters before an ellipsis match the leading axes and letters after it
    the trailing axes.
    """
    if "..." in spec:
        head, tail = spec.split("...")
    else:
        head, tail = spec, ""
    sizes = dict(zip(head, shape[: len(head)]))
    if tail:
        sizes.update(zip(tail, shape[len(shape) - len(tail) :]))
    return {
        letter: size
        for letter, size in sizes.items()
        if letter in string.ascii_letters
    }


def _functional_graph(model):
    """Returns a model whose nodes `kp.nodes_in_order` can walk."""
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Cannot count the multiply-adds of the Sequential model "
                f"'{model.name}', because it has no input shape. Start it "
                "with keras.Input(shape) or call model.build(input_shape)."
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "Expected a functional keras.Model or a built keras.Sequential, "
            f"because multiply-adds are read from the layer graph. Received "
            f"an object of type {type(model).__name__}. Rebuild a subclassed "
            "model with the functional API to count its multiply-adds."
        )
    return model


def _add_model_counts(model, prefix, counts):
    graph = _functional_graph(model)
    for node in kp.nodes_in_order(graph):
        layer = kp.node_operation(node)
        name = prefix + layer.name
        if isinstance(layer, keras.Model):
            # NOTE: a nested model is counted with the shapes of its own
            # graph, so one built with `None` spatial sizes raises even when
            # the outer model fixes them.
            _add_model_counts(layer, prefix=name + "/", counts=counts)
            continue
        if not _is_counted(layer):
            _warn_if_uncounted(layer)
            continue
        inputs = kp.node_input_tensors(node)
        outputs = kp.node_output_tensors(node)
        count = layer_multiply_adds(layer, inputs[0].shape, outputs[0].shape)
        counts[name] = counts.get(name, 0) + count


def _warn_if_uncounted(layer):
    if isinstance(layer, _LAYERS_WITHOUT_MULTIPLY_ADDS):
        return
    if any(len(weight.shape) >= 2 for weight in layer.weights):
        warnings.warn(
            f"Layer '{layer.name}' ({type(layer).__name__}) has weight "
            "matrices, but its multiply-adds are not counted, so the total "
            "is too low. Only convolutions, Dense and EinsumDense are "
            "counted.",
            stacklevel=4,
        )
