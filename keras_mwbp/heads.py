"""Auxiliary classifier heads and `attach_heads`, which adds them to a backbone.

A head turns a feature tensor into class logits. `attach_heads` reads some
layers of a functional backbone (the taps), puts a head on each and returns a
`MultiWayModel` whose outputs are the heads, from the shallowest to the final
one.
"""

import difflib
import math
import numbers
import warnings

import keras

from keras_mwbp import _keras_private as kp
from keras_mwbp.graph import HeadGraph
from keras_mwbp.model import MultiWayModel

# The layers of each head type, in order. "pool" is global average pooling
# and "flatten" a Flatten layer, and `build_head` skips both for a rank-2
# input. "dense" is the output layer.
HEAD_LAYERS = {
    "bn_relu_gap_fc": ("bn", "relu", "pool", "dense"),
    "bn_relu_flatten_fc": ("bn", "relu", "flatten", "dense"),
    "gap_fc": ("pool", "dense"),
    "relu_gap_fc": ("relu", "pool", "dense"),
}
HEAD_TYPES = tuple(HEAD_LAYERS)
DEFAULT_HEAD = "bn_relu_gap_fc"

# Minimum tau (weighted layers between heads) in Guo et al. (2020), Section
# 4.1.2. In their Table 8, ResNet-56 with 10 or 25 heads had 7.36 % and
# 9.18 % CIFAR-10 error, against 5.53 % with 5 heads.
MIN_HEAD_SPACING = 5

# Moving-statistics momentum of a head's BatchNormalization: the PyTorch
# default (momentum=0.1 there), as in the CIFAR ResNets, so that the moving
# statistics follow the batch statistics within a short run.
HEAD_BATCH_NORM_MOMENTUM = 0.9

_GLOBAL_POOLING = {
    3: keras.layers.GlobalAveragePooling1D,
    4: keras.layers.GlobalAveragePooling2D,
    5: keras.layers.GlobalAveragePooling3D,
}


def validate_head_type(head, argument="head"):
    """Raises a `ValueError` unless `head` is one of `HEAD_TYPES`."""
    if head not in HEAD_LAYERS:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of "
            f"{list(HEAD_TYPES)}. Received: {argument}={head!r}"
        )


def _validate_num_classes(num_classes):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, numbers.Integral)
        or num_classes < 1
    ):
        raise ValueError(
            "Invalid value for argument `num_classes`. Expected a positive "
            f"integer. Received: num_classes={num_classes!r}"
        )


def build_head(features, num_classes, head=DEFAULT_HEAD, name="head"):
    """Builds a classifier head on a feature tensor and returns its logits.

    The head type names its layers in order: "bn" is `BatchNormalization`,
    "relu" is `ReLU`, "gap" is global average pooling, "flatten" is
    `Flatten` and "fc" is a `Dense` layer with a zero-initialised bias and no
    activation. For a rank-2 input (batch, features) the pooling or
    flattening step is skipped. The layers are named `f"{name}_bn"`,
    `f"{name}_relu"`, `f"{name}_pool"` and `f"{name}_flatten"`, and the
    `Dense` layer is named `name`, so Keras reports the head's loss and
    metrics as `f"{name}_loss"`, `f"{name}_accuracy"` and so on.

    Example:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    logits = keras_mwbp.build_head(x, 10, head="bn_relu_gap_fc", name="head_0")
    ```

    Args:
        features: Symbolic tensor of rank 2 to 5, for example the NHWC output
            of a convolution. Channels are on the last axis unless
            `keras.config.image_data_format()` is `"channels_first"`.
        num_classes: Int. Number of logits the head outputs.
        head: String. One of `HEAD_TYPES`: `"bn_relu_gap_fc"`,
            `"bn_relu_flatten_fc"`, `"gap_fc"` or `"relu_gap_fc"`. Defaults
            to `"bn_relu_gap_fc"`.
        name: String. Name of the output layer and prefix of the other
            layer names. Defaults to `"head"`.

    Returns:
        The symbolic logits tensor of shape `(batch, num_classes)`.

    Raises:
        ValueError: For an unknown head type, a non-positive `num_classes`
            or a feature tensor of rank below 2 or above 5.
    """
    validate_head_type(head)
    _validate_num_classes(num_classes)
    rank = len(features.shape)
    if rank < 2 or rank > 5:
        raise ValueError(
            f"Head '{name}' expects a feature tensor of rank 2 to 5 "
            f"(batch, ..., channels). Received a tensor of shape "
            f"{tuple(features.shape)}. Tap a layer whose output is a feature "
            "map or a feature vector."
        )

    data_format = keras.config.image_data_format()
    channel_axis = 1 if data_format == "channels_first" and rank > 2 else -1
    x = features
    for step in HEAD_LAYERS[head]:
        if step == "bn":
            x = keras.layers.BatchNormalization(
                axis=channel_axis, momentum=HEAD_BATCH_NORM_MOMENTUM, name=f"{name}_bn"
            )(x)
        elif step == "relu":
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        elif step == "pool" and rank > 2:
            pooling = _GLOBAL_POOLING[rank]
            x = pooling(data_format=data_format, name=f"{name}_pool")(x)
        elif step == "flatten" and rank > 2:
            x = keras.layers.Flatten(name=f"{name}_flatten")(x)
        elif step == "dense":
            x = keras.layers.Dense(int(num_classes), bias_initializer="zeros", name=name)(x)
    return x


# ----------------------------------------------------------------------
# Finding layers in the backbone.


def _as_functional(backbone):
    """Validates the backbone and returns a functional model over its layers.

    The functional model shares the backbone's layers and weights.
    """
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            "Invalid value for argument `backbone`. Expected a functional "
            f"`keras.Model`. Received: backbone={backbone!r}"
        )
    try:
        inputs = backbone.inputs
        outputs = backbone.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            "Invalid value for argument `backbone`. Expected a functional "
            "`keras.Model` (or a built `keras.Sequential`) with symbolic "
            f"inputs and outputs. Received: backbone={backbone.name!r} of "
            f"type {type(backbone).__name__} without them. Build it with "
            "`keras.Input` and the functional API."
        )
    if len(outputs) != 1:
        raise ValueError(
            "Invalid value for argument `backbone`. Expected a model with "
            f"one output. Received: backbone={backbone.name!r} with "
            f"{len(outputs)} outputs. Pass a model whose output is the "
            "backbone's last feature map or its classifier logits."
        )
    try:
        # Keeps a dict or nested input structure of a functional backbone.
        input_structure = backbone.input
    except AttributeError:
        # A Sequential model built on `keras.Input` has `inputs` but no `input`.
        input_structure = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(input_structure, outputs, name=backbone.name)


def _nodes_by_layer_name(graph):
    nodes = {}
    for node in graph.nodes:
        nodes.setdefault(node.layer.name, []).append(node)
    return nodes


def _output_tensor(node):
    outputs = kp.node_output_tensors(node.node)
    return outputs[0] if len(outputs) == 1 else None


def _cut_node_indices(graph):
    """Returns the indices of the nodes that every input-to-output path crosses.

    In a topological order, a path moves forward one edge at a time, so it
    can skip node m only along an edge from a node before m to a node after
    m. Node m is a cut point when no such edge exists. Model inputs count as
    produced before the first node. Every node of a single-output functional
    model lies on a path from an input to the output, so the test is exact.
    """
    farthest_consumer = {}
    for node in graph.nodes:
        for key in node.input_keys:
            producer = graph.producer_of(key)
            start = -1 if producer is None else producer.index
            farthest_consumer[start] = max(farthest_consumer.get(start, -1), node.index)

    cuts = []
    reach = farthest_consumer.get(-1, -1)
    for node in graph.nodes:
        if reach <= node.index:
            cuts.append(node.index)
        reach = max(reach, farthest_consumer.get(node.index, -1))
    return cuts


def find_block_outputs(backbone):
    """Finds the block outputs of a backbone, where automatic heads may go.

    A block output is a layer that every path from the inputs to the output
    goes through, such as the output of a residual block (a convolution
    inside a block is skipped by the shortcut, so it is not one). Only
    layers called once, with one output of rank 3 or more (a feature map),
    at a depth between 1 and the depth of the backbone's output (exclusive)
    count. Where several such layers have the same depth, as in
    Conv2D -> BatchNormalization -> ReLU, the last one is kept.

    Example:

    ```python
    backbone = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    for name, depth in keras_mwbp.find_block_outputs(backbone):
        print(name, depth)
    ```

    Args:
        backbone: A functional `keras.Model` with one output.

    Returns:
        List of `(layer_name, depth)` tuples ordered by depth, where depth is
        the number of convolution and dense layers on the longest path from
        the input up to and including the layer.

    Raises:
        ValueError: If `backbone` is not a functional model with one output.
    """
    functional = _as_functional(backbone)
    return _block_output_candidates(functional, HeadGraph(functional))


def _block_output_candidates(functional, graph):
    output_depth = graph.output_depth(graph.output_keys[0])
    calls_per_layer = _nodes_by_layer_name(graph)
    last_at_depth = {}
    for index in _cut_node_indices(graph):
        node = graph.nodes[index]
        tensor = _output_tensor(node)
        if tensor is None or len(tensor.shape) < 3:
            continue
        if len(calls_per_layer[node.layer.name]) != 1:
            continue
        if not 1 <= node.depth < output_depth:
            continue
        last_at_depth[node.depth] = node.layer.name
    return [(last_at_depth[d], d) for d in sorted(last_at_depth)]


# ----------------------------------------------------------------------
# Choosing the taps.


def head_spacing(total_depth, num_aux):
    """Returns tau = ceil(L / (K + 1)), the target distance between heads.

    Args:
        total_depth: Int. L, the weighted depth of the whole model.
        num_aux: Int. K, the number of auxiliary heads.
    """
    return math.ceil(total_depth / (num_aux + 1))


def warn_if_heads_too_close(total_depth, num_aux, stacklevel):
    """Warns when tau = ceil(L / (K + 1)) is below `MIN_HEAD_SPACING`."""
    if num_aux < 1:
        return
    tau = head_spacing(total_depth, num_aux)
    if tau >= MIN_HEAD_SPACING:
        return
    max_num_aux = 0
    while head_spacing(total_depth, max_num_aux + 1) >= MIN_HEAD_SPACING:
        max_num_aux += 1
    warnings.warn(
        f"num_aux={num_aux} puts a head every tau={tau} weighted layers "
        f"(model depth {total_depth}). Heads closer than "
        f"{MIN_HEAD_SPACING} weighted layers apart tend to lower the "
        "accuracy of the final head. "
        + (
            f"Use num_aux <= {max_num_aux} for this depth."
            if max_num_aux > 0
            else "Use num_aux=0 (no auxiliary head) for this depth, or a deeper model."
        ),
        stacklevel=stacklevel + 1,
    )


def _pick_evenly_spaced(candidates, num_aux, tau):
    """Picks K candidates with depths closest to tau, 2 tau, ..., K tau.

    Each pick is deeper than the previous one and leaves enough deeper
    candidates for the remaining heads. Ties go to the shallower candidate.
    """
    picked = []
    start = 0
    for k in range(1, num_aux + 1):
        stop = len(candidates) - (num_aux - k)
        best = min(
            range(start, stop),
            key=lambda i: (abs(candidates[i][1] - k * tau), candidates[i][1]),
        )
        picked.append(candidates[best][0])
        start = best + 1
    return picked


def _validate_num_aux(num_aux):
    if isinstance(num_aux, bool) or not isinstance(num_aux, numbers.Integral) or num_aux < 0:
        raise ValueError(
            "Invalid value for argument `num_aux`. Expected a non-negative "
            f"integer (the number of auxiliary heads). Received: num_aux={num_aux!r}"
        )


def _describe_valid_names(name, valid_names):
    close = difflib.get_close_matches(name, valid_names, n=3, cutoff=0.6)
    if close:
        return f"Did you mean {' or '.join(repr(c) for c in close)}?"
    listed_names = ", ".join(repr(n) for n in valid_names[:8])
    more = f" and {len(valid_names) - 8} more" if len(valid_names) > 8 else ""
    return (
        f"Valid layer names include {listed_names}{more}. "
        "`[layer.name for layer in backbone.layers]` lists them all."
    )


def _resolve_taps(taps, graph, output_key):
    """Validates the tap names and returns the `GraphNode` of each."""
    if isinstance(taps, str) or not isinstance(taps, (list, tuple)):
        raise ValueError(
            "Invalid value for argument `taps`. Expected a list of layer "
            f"names. Received: taps={taps!r}. For one tap, pass taps=[name]."
        )
    calls_per_layer = _nodes_by_layer_name(graph)
    valid_names = list(calls_per_layer)
    nodes = []
    for tap in taps:
        if not isinstance(tap, str):
            raise ValueError(
                "Invalid value for argument `taps`. Expected layer names "
                f"(strings). Received: taps={list(taps)!r}, which contains {tap!r}."
            )
        if list(taps).count(tap) > 1:
            raise ValueError(
                "Invalid value for argument `taps`. Expected distinct layer "
                f"names. Received: taps={list(taps)!r}, which names {tap!r} "
                "more than once. Remove the repeats."
            )
        if tap not in calls_per_layer:
            raise ValueError(
                f"Invalid value for argument `taps`: layer {tap!r} was not "
                f"found in the backbone. Received: taps={list(taps)!r}. "
                + _describe_valid_names(tap, valid_names)
            )
        calls = calls_per_layer[tap]
        if len(calls) != 1:
            raise ValueError(
                f"Invalid value for argument `taps`: layer {tap!r} is called "
                f"{len(calls)} times in the backbone, so its output is "
                f"ambiguous. Received: taps={list(taps)!r}. Tap a layer that "
                "is called once, for example one that follows the shared layer."
            )
        node = calls[0]
        if output_key in node.output_keys:
            raise ValueError(
                f"Invalid value for argument `taps`: layer {tap!r} produces "
                "the backbone's output, which feeds the final head. Received: "
                f"taps={list(taps)!r}. Tap an earlier layer, because the "
                "final head is added without a tap."
            )
        if _output_tensor(node) is None:
            raise ValueError(
                f"Invalid value for argument `taps`: layer {tap!r} has "
                f"{len(node.output_keys)} outputs, and a head reads one "
                f"tensor. Received: taps={list(taps)!r}. Tap a layer with "
                "one output."
            )
        if node.depth < 1:
            raise ValueError(
                f"Invalid value for argument `taps`: layer {tap!r} comes "
                "before the first convolution or dense layer, so a head "
                "there would share no weights with the backbone. Received: "
                f"taps={list(taps)!r}. Tap a layer after the first "
                "convolution or dense layer."
            )
        nodes.append(node)
    return nodes


# ----------------------------------------------------------------------
# The final head.


def _final_head(output, num_classes, final_head, head_name):
    """Builds the final head and returns `(logits, num_classes)`.

    A rank-2 backbone output is returned unchanged as the final head.
    """
    rank = len(output.shape)
    if rank == 2:
        width = output.shape[-1]
        if num_classes is not None and num_classes != width:
            raise ValueError(
                "Invalid value for argument `num_classes`. The backbone's "
                f"output has rank 2 and {width} units, so it is used as the "
                f"final head and num_classes must be {width} or None. "
                f"Received: num_classes={num_classes!r}. Pass a backbone "
                "without its classifier (for example include_top=False) to "
                "get a new final head, or change its last layer."
            )
        _warn_if_softmax(output)
        return output, width

    if num_classes is None:
        raise ValueError(
            "Missing argument `num_classes`. The backbone's output has shape "
            f"{tuple(output.shape)}, so a final head is added and needs the "
            "number of classes. Received: num_classes=None. Pass, for "
            "example, num_classes=10."
        )
    _validate_num_classes(num_classes)
    return build_head(output, num_classes, head=final_head, name=head_name), num_classes


def _warn_if_softmax(output):
    layer = kp.producing_layer(output)
    activation = getattr(layer, "activation", None)
    is_softmax = isinstance(layer, keras.layers.Softmax) or (
        activation is keras.activations.softmax
    )
    if is_softmax:
        warnings.warn(
            f"The backbone's output layer '{layer.name}' applies softmax, "
            "so the final head outputs probabilities while the auxiliary "
            "heads output logits. Build the backbone without the softmax "
            "(for keras.applications, classifier_activation=None) and use "
            "a loss with from_logits=True.",
            stacklevel=4,
        )


# ----------------------------------------------------------------------
# attach_heads.


def attach_heads(
    backbone,
    taps=None,
    num_aux=None,
    head=DEFAULT_HEAD,
    num_classes=None,
    final_head="gap_fc",
    name=None,
):
    """Adds auxiliary classifier heads to a backbone and returns a `MultiWayModel`.

    Each auxiliary head reads the output of one backbone layer (its tap).
    Name the taps with `taps`, or let `num_aux` place K heads at block
    outputs spaced evenly in depth (see `find_block_outputs`): with L the
    weighted depth of the whole model and tau = ceil(L / (K + 1)), head k
    (k = 1 ... K) goes to the block output whose depth is closest to k * tau.
    A backbone output of rank 2 is used as the final head unchanged. On an
    output of higher rank, a final head of type `final_head` is added. The
    returned model shares its layers and weights with `backbone`.

    The auxiliary heads are named "head_0" (the shallowest) to
    "head_{K-1}", and an added final head "head_{K}", so Keras reports
    metrics such as "head_0_loss". A rank-2 backbone output keeps the name
    of the layer that produces it.

    Example:

    ```python
    backbone = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    model = keras_mwbp.attach_heads(backbone, num_aux=2, num_classes=10)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop="mwbp",
    )
    print(model.head_depths)
    ```

    Args:
        backbone: A functional `keras.Model` (or a built `keras.Sequential`)
            with one output: a feature map, or the classifier's logits.
        taps: List of layer names. Each auxiliary head reads the output of
            one of these layers. Give either `taps` or `num_aux`. Defaults
            to `None`.
        num_aux: Int. Number of auxiliary heads K to place automatically.
            Defaults to `None`.
        head: String. Type of the auxiliary heads, one of `HEAD_TYPES`.
            Defaults to `"bn_relu_gap_fc"`.
        num_classes: Int. Number of classes. Required unless the backbone's
            output has rank 2, in which case it defaults to that output's
            width and must equal it. Defaults to `None`.
        final_head: String. Type of the final head added on a backbone
            output of rank 3 or more, one of `HEAD_TYPES`. Defaults to
            `"gap_fc"`.
        name: String. Name of the returned model. Defaults to `None`, which
            reuses the backbone's name.

    Returns:
        A `MultiWayModel` with K + 1 outputs ordered by depth, the final
        head last.

    Raises:
        ValueError: For an invalid argument, with the value received. The
            checks cover both or neither of `taps` and `num_aux`, a tap that
            is not found, is called more than once or produces the
            backbone's output, and a `num_aux` above the number of block
            outputs. They also cover an unknown head type, a missing or
            mismatched `num_classes`, and head layer names that the backbone
            already uses.
    """
    if (taps is None) == (num_aux is None):
        raise ValueError(
            "Expected exactly one of the arguments `taps` and `num_aux`. "
            f"Received: taps={taps!r}, num_aux={num_aux!r}. Pass taps=[layer "
            "names] to choose the layers, or num_aux=K to place K heads "
            "automatically (num_aux=0 for no auxiliary head)."
        )
    validate_head_type(head, "head")
    validate_head_type(final_head, "final_head")
    if num_classes is not None:
        _validate_num_classes(num_classes)
    if num_aux is not None:
        _validate_num_aux(num_aux)

    functional = _as_functional(backbone)
    graph = HeadGraph(functional)
    output_key = graph.output_keys[0]
    output = functional.outputs[0]
    output_depth = graph.output_depth(output_key)
    adds_final_head = len(output.shape) != 2

    if num_aux is not None:
        # Every head type ends in one dense layer, which adds 1 to the depth.
        total_depth = output_depth + (1 if adds_final_head else 0)
        taps = _place_taps(functional, graph, int(num_aux), total_depth)
    tap_nodes = _resolve_taps(taps, graph, output_key)
    tap_nodes = sorted(tap_nodes, key=lambda node: (node.depth, node.index))
    num_heads = len(tap_nodes) + 1
    _check_head_names_unused(functional, num_heads, adds_final_head)

    final_logits, num_classes = _final_head(
        output, num_classes, final_head, head_name=f"head_{num_heads - 1}"
    )
    outputs = [
        build_head(_output_tensor(node), num_classes, head=head, name=f"head_{i}")
        for i, node in enumerate(tap_nodes)
    ]
    outputs.append(final_logits)
    return MultiWayModel(
        functional.input, outputs, name=name if name is not None else backbone.name
    )


def _place_taps(functional, graph, num_aux, total_depth):
    candidates = _block_output_candidates(functional, graph)
    if num_aux > len(candidates):
        raise ValueError(
            f"Invalid value for argument `num_aux`. Expected at most "
            f"{len(candidates)}, the number of block outputs in backbone "
            f"{functional.name!r} (layers that every path from the input to "
            f"the output goes through). Received: num_aux={num_aux}. Use a "
            "smaller num_aux, or name the layers with taps=[...]."
        )
    warn_if_heads_too_close(total_depth, num_aux, stacklevel=3)
    tau = head_spacing(total_depth, num_aux)
    return _pick_evenly_spaced(candidates, num_aux, tau)


def _check_head_names_unused(functional, num_heads, adds_final_head):
    used = {layer.name for layer in functional.layers}
    prefixes = [f"head_{i}" for i in range(num_heads - 1)]
    if adds_final_head:
        prefixes.append(f"head_{num_heads - 1}")
    clashes = []
    for prefix in prefixes:
        for suffix in ("", "_bn", "_relu", "_pool", "_flatten"):
            if prefix + suffix in used:
                clashes.append(prefix + suffix)
    if clashes:
        raise ValueError(
            f"The backbone already has layers named {clashes}, which the "
            "heads would use, and Keras requires unique layer names. Rename "
            "those backbone layers."
        )
