"""Forward passes that record every layer's input, and backward sweeps over them.

The multi-way methods need to back-propagate one loss at a time through a
forward pass that was run once. `record_forward` runs the functional graph
node by node and, in isolated mode, cuts the tape between nodes with
`stop_gradient` and watches each node's inputs again. Each node is then a
separate piece of the tape, so `backward` can differentiate node by node,
choose which nodes a loss may reach, and swap in a live Jacobian for layers
with parameters.
"""

import keras
import tensorflow as tf

from keras_mwbp import _keras_private as kp
from keras_mwbp.backprop import rules


class ForwardRecord:
    """Tensors stored by one forward pass.

    Attributes:
        values: Dict from symbolic tensor id to the concrete tensor.
        node_calls: Dict from node index to the `(args, kwargs)` it ran with.
        node_inputs: Dict from node index to `{tensor id: input tensor}`.
        node_outputs: Dict from node index to its list of output tensors.
        pre_activations: Dict from node index to `(z, z_watched)` for layers
            whose fused activation is treated as a layer of its own.
        batch_norms: Dict from node index to `(x_hat, x_hat_watched)` for
            BatchNormalization layers that use batch statistics.
    """

    def __init__(self):
        self.values = {}
        self.node_calls = {}
        self.node_inputs = {}
        self.node_outputs = {}
        self.pre_activations = {}
        self.batch_norms = {}
        self.snapshot_values = {}


def _is_float(tensor):
    return tf.is_tensor(tensor) and tensor.dtype.is_floating


def _watched_copy(tape, tensor):
    if not _is_float(tensor):
        return tensor
    copy = tf.stop_gradient(tensor)
    tape.watch(copy)
    return copy


def record_forward(
    graph,
    inputs,
    tape,
    *,
    isolate,
    update_state=True,
    node_subset=None,
    stop_gradient_inputs=None,
    snapshot=None,
):
    """Runs the functional graph in training mode and records its tensors.

    Call it inside the `tape` context.

    Args:
        graph: The model's `HeadGraph`.
        inputs: Flat list of input tensors, one per model input.
        tape: The `tf.GradientTape` recording the pass.
        isolate: Whether to cut the tape between nodes (multi-way engine).
        update_state: Whether layers may update their state, which only the
            first forward pass of a step does.
        node_subset: Node indices to run, or `None` for all.
        stop_gradient_inputs: Dict from node index to the input tensor ids
            that pass through `stop_gradient` there (where the auxiliary
            heads of standard backprop read the backbone).

        snapshot: `None`, or a list of `(variable, value)` pairs: the pass
            then reads these values instead of the variables (see
            `take_snapshot`), and state updates made by layers are written
            back to their variables afterwards.

    Returns:
        A `ForwardRecord`.
    """
    if snapshot is None:
        return _record_forward(
            graph, inputs, tape, isolate, update_state, node_subset, stop_gradient_inputs
        )
    with keras.StatelessScope(state_mapping=list(snapshot)) as scope:
        record = _record_forward(
            graph, inputs, tape, isolate, update_state, node_subset, stop_gradient_inputs
        )
    record.snapshot_values = {id(v): value for v, value in snapshot}
    mapped = {id(v) for v, _ in snapshot}
    for node in graph.nodes:
        for variable in node.layer.non_trainable_variables:
            if id(variable) in mapped:
                continue
            value = scope.get_current_value(variable)
            if value is not None:
                variable.assign(value)
    return record


def take_snapshot(variables):
    """Reads the variables' values at the start of a multi-way step.

    The forward pass of MW-BP must see the parameters as they were before
    any head's update. A deep layer's forward read is not a data input of a
    shallow head's update, so inside `tf.function` only a control edge
    orders the two. Such edges were seen not to hold for the live reads (see
    `steps._apply`), so the forward pass reads these values instead: tensors
    taken once, which later writes cannot change.

    Returns:
        A list of `(variable, value)` pairs.
    """
    return [(v, _ordered_read(v)) for v in variables]


def _record_forward(
    graph, inputs, tape, isolate, update_state, node_subset, stop_gradient_inputs
):
    record = ForwardRecord()
    stop_gradient_inputs = stop_gradient_inputs or {}
    for key, tensor in zip(graph.input_keys, inputs):
        record.values[key] = tensor

    for node in graph.nodes:
        if node_subset is not None and node.index not in node_subset:
            continue
        local = {}
        for key in node.input_keys:
            tensor = record.values[key]
            if isolate:
                tensor = _watched_copy(tape, tensor)
            elif key in stop_gradient_inputs.get(node.index, ()) and _is_float(
                tensor
            ):
                tensor = tf.stop_gradient(tensor)
            local[key] = tensor
        args, kwargs = kp.fill_in_node_arguments(node.node, local)
        layer = node.layer

        if isolate and rules.is_batch_norm_in_training(layer):
            x_hat, affine = rules.batch_norm_normalize(layer, args[0], update_state)
            watched = _watched_copy(tape, x_hat)
            outputs = affine(watched)
            record.batch_norms[node.index] = (x_hat, watched)
        elif isolate and rules._has_fused_activation(layer):
            pre_activation = rules.call_without_activation(layer, args, kwargs, True)
            watched = _watched_copy(tape, pre_activation)
            outputs = layer.activation(watched)
            record.pre_activations[node.index] = (pre_activation, watched)
        elif update_state:
            outputs = rules.call_layer(layer, args, kwargs, True)
        else:
            outputs = rules.forward_without_side_effects(layer, args, kwargs, True)

        outputs = kp.flatten(outputs)
        record.node_calls[node.index] = (args, kwargs)
        record.node_inputs[node.index] = local
        record.node_outputs[node.index] = outputs
        for key, tensor in zip(node.output_keys, outputs):
            record.values[key] = tensor
    return record


def _ordered_read(variable):
    """Reads a variable's current value for a live Jacobian.

    A plain read is ordered after the previous head's update only by a
    control edge, and Grappler's dependency optimizer (TensorFlow 2.21) was
    seen to let such reads see the old value inside `tf.function`. Adding
    zero is a write, so the value it returns is ordered after every earlier
    write to the variable.
    """
    # `assign_add(read_value=True)` returns a lazy read inside tf.function;
    # `tf.identity` turns it into one tensor that every use shares.
    return tf.identity(
        variable.value.assign_add(
            tf.zeros(variable.shape, variable.dtype), read_value=True
        )
    )


def _accumulate(store, key, value):
    if value is None:
        return
    if isinstance(value, tf.IndexedSlices):
        value = tf.convert_to_tensor(value)
    if key in store:
        store[key] = store[key] + value
    else:
        store[key] = value


def _node_vjp(node, record, tape, output_cotangents, live):
    """Returns `(input_grads, variable_grads)` of one node.

    `input_grads` maps input tensor ids to cotangents; `variable_grads` lists
    `(variable, grad)` pairs.
    """
    layer = node.layer
    index = node.index
    inputs = record.node_inputs[index]
    float_keys = [k for k in node.input_keys if _is_float(inputs[k])]
    float_inputs = [inputs[k] for k in float_keys]
    variables = list(layer.trainable_variables)
    outputs = record.node_outputs[index]

    if not variables:
        if not float_inputs:
            return {}, []
        grads = tape.gradient(
            outputs, float_inputs, output_gradients=output_cotangents
        )
        return dict(zip(float_keys, grads)), []

    if index in record.batch_norms:
        return _batch_norm_vjp(node, record, tape, output_cotangents[0], live)

    # Layers with parameters: first step back through a fused activation at
    # the stored pre-activation, then through the layer itself.
    if index in record.pre_activations:
        _, watched = record.pre_activations[index]
        cotangent = tape.gradient(
            outputs[0], watched, output_gradients=output_cotangents[0]
        )
        target_cotangents = [cotangent]
    else:
        target_cotangents = output_cotangents

    if live:
        args, kwargs = record.node_calls[index]
        values = [_ordered_read(v) for v in variables]
        with tf.GradientTape() as local_tape:
            local_tape.watch(float_inputs + values)
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                if index in record.pre_activations:
                    targets = [
                        rules.call_without_activation(layer, args, kwargs, True)
                    ]
                else:
                    targets = kp.flatten(
                        rules.forward_without_side_effects(layer, args, kwargs, True)
                    )
        grads = local_tape.gradient(
            targets, float_inputs + values, output_gradients=target_cotangents
        )
    else:
        if index in record.pre_activations:
            targets = [record.pre_activations[index][0]]
        else:
            targets = outputs
        sources = [record.snapshot_values.get(id(v), v) for v in variables]
        grads = tape.gradient(
            targets, float_inputs + sources, output_gradients=target_cotangents
        )
    input_grads = dict(zip(float_keys, grads[: len(float_inputs)]))
    variable_grads = list(zip(variables, grads[len(float_inputs) :]))
    return input_grads, variable_grads


def _batch_norm_vjp(node, record, tape, cotangent, live):
    """Differentiates a split BatchNormalization node.

    The normalization's Jacobian is taken on the tape at the stored input.
    The scale gamma is the current value when `live`, else the value the
    forward pass read.
    """
    layer = node.layer
    x_hat, watched = record.batch_norms[node.index]
    cotangent = tf.cast(cotangent, x_hat.dtype)
    ndim = len(x_hat.shape)
    reduction = [a for a, size in enumerate(rules._channel_shape(layer, ndim)) if size == 1]
    variable_grads = []
    normalized_cotangent = cotangent
    if layer.scale:
        if live:
            gamma = _ordered_read(layer.gamma)
        else:
            gamma = record.snapshot_values.get(id(layer.gamma), layer.gamma)
        shape = rules._channel_shape(layer, ndim)
        normalized_cotangent = cotangent * tf.reshape(tf.cast(gamma, x_hat.dtype), shape)
        grad = tf.reduce_sum(cotangent * watched, axis=reduction)
        variable_grads.append((layer.gamma, tf.cast(grad, layer.gamma.dtype)))
    if layer.center:
        grad = tf.reduce_sum(cotangent, axis=reduction)
        variable_grads.append((layer.beta, tf.cast(grad, layer.beta.dtype)))

    inputs = record.node_inputs[node.index]
    float_keys = [k for k in node.input_keys if _is_float(inputs[k])]
    if not float_keys:
        return {}, variable_grads
    grads = tape.gradient(
        x_hat, [inputs[k] for k in float_keys], output_gradients=normalized_cotangent
    )
    return dict(zip(float_keys, grads)), variable_grads


def backward(graph, record, tape, seeds, *, allowed, live):
    """Back-propagates cotangents through the recorded nodes.

    Args:
        graph: The model's `HeadGraph`.
        record: The `ForwardRecord` of an isolated forward pass.
        tape: The persistent tape of that pass.
        seeds: Dict from output tensor id to its cotangent.
        allowed: Set of node indices the cotangents may reach.
        live: Whether layers with parameters use the parameters' current
            values (MW-BP) or the values read by the forward pass.

    Returns:
        Dict from `id(variable)` to `(variable, grad)`.
    """
    cotangents = dict(seeds)
    variable_grads = {}
    for node in reversed(graph.nodes):
        if node.index not in allowed:
            continue
        outputs = record.node_outputs[node.index]
        output_cotangents = [cotangents.get(k) for k in node.output_keys]
        if all(c is None for c in output_cotangents):
            continue
        output_cotangents = [
            tf.zeros_like(o) if c is None else tf.cast(c, o.dtype)
            for o, c in zip(outputs, output_cotangents)
        ]
        input_grads, grads = _node_vjp(node, record, tape, output_cotangents, live)
        for key, grad in input_grads.items():
            _accumulate(cotangents, key, grad)
        for variable, grad in grads:
            if grad is None:
                continue
            if isinstance(grad, tf.IndexedSlices):
                grad = tf.convert_to_tensor(grad)
            if id(variable) in variable_grads:
                previous = variable_grads[id(variable)][1]
                variable_grads[id(variable)] = (variable, previous + grad)
            else:
                variable_grads[id(variable)] = (variable, grad)
    return variable_grads
