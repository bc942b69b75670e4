"""One training step of each backpropagation method.

Every function takes a `StepContext` and returns the predictions of the
step's first forward pass (one tensor per head), which the model uses for
its metrics, as `keras.Model.train_step` does.
"""

import dataclasses
from typing import Any
from typing import Callable
from typing import List
from typing import Optional

import tensorflow as tf

from keras_mwbp.backprop import engine
from keras_mwbp.backprop import methods


@dataclasses.dataclass
class StepContext:
    """The inputs of one training step, taken from the model.

    Attributes:
        graph: The model's `HeadGraph`.
        inputs: Flat list of input tensors.
        targets: One target tensor per head.
        sample_weight: Sample weights or `None`.
        head_losses: One callable per head, `(y_true, y_pred, sample_weight)`
            to a scalar loss.
        gamma: Float32 tensor of the K+1 loss weights for this step.
        optimizer: The compiled optimizer (`model.optimizer`).
        head_optimizers: The `HeadOptimizers` of the multi-way methods, or
            `None` for the single-pass methods.
        relay_span: Number of deeper losses that reach a segment (relay).
        on_nonfinite: "zero" replaces NaN gradient entries by zero, "raise"
            stops training with an error.
    """

    graph: Any
    inputs: List[Any]
    targets: List[Any]
    sample_weight: Any
    head_losses: List[Callable]
    gamma: Any
    optimizer: Any
    head_optimizers: Optional[Any]
    relay_span: int
    on_nonfinite: str


def _uses_loss_scaling(optimizer):
    return hasattr(optimizer, "inner_optimizer")


def _check_gradients(grads, variables, context, label):
    """Zeros NaN entries or raises on non-finite gradients, per `on_nonfinite`."""
    checked = []
    for grad, variable in zip(grads, variables):
        if grad is None:
            checked.append(grad)
        elif context.on_nonfinite == "raise":
            checked.append(
                tf.debugging.check_numerics(
                    grad,
                    f"Non-finite gradient for variable '{variable.path}' "
                    f"({label}); training stopped because "
                    "on_nonfinite='raise'. Lower the learning rate or check "
                    "the inputs.",
                )
            )
        else:
            checked.append(tf.where(tf.math.is_nan(grad), tf.zeros_like(grad), grad))
    return checked


def _check_loss(loss, context, label):
    if context.on_nonfinite != "raise":
        return loss
    return tf.debugging.check_numerics(
        loss,
        f"Non-finite loss ({label}); training stopped because "
        "on_nonfinite='raise'. Lower the learning rate or check the inputs.",
    )


def _regularization_loss(variables):
    """Sums the weight regularization penalties of `variables`."""
    # NOTE: only weight penalties (`kernel_regularizer` and the like) enter
    # the losses here. Activity regularizers and `add_loss` terms are logged
    # by Keras, but they do not train the heads under these methods.
    penalties = [
        tf.cast(v.regularizer(v), tf.float32)
        for v in variables
        if getattr(v, "regularizer", None) is not None
    ]
    if not penalties:
        return None
    # Per-replica losses are divided by the replica count so that the summed
    # gradients match one device; a penalty must be divided the same way.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.add_n(penalties) / float(replicas)


def _head_loss(context, head, prediction):
    loss = context.head_losses[head](
        context.targets[head], prediction, context.sample_weight
    )
    return _check_loss(tf.cast(loss, tf.float32), context, f"head {head}")


def _apply(optimizer, grads, variables, context, label):
    if not variables:
        return
    if not _uses_loss_scaling(optimizer):
        # A loss-scaling optimizer detects non-finite gradients itself.
        grads = _check_gradients(grads, variables, context, label)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    # Every update of this head waits for all of its gradients. A layer's
    # live Jacobian reads its parameters to compute the gradient of the
    # layers below it, and no data path orders that read before the layer's
    # own update. In graph mode (TensorFlow 2.21) the automatic control edge
    # between them did not hold, so the read saw the already updated value.
    with tf.control_dependencies(grads):
        optimizer.apply(grads, variables)


def _all_variables(graph):
    return graph.trainable_variables_of(range(len(graph.nodes)))


def single_pass_step(context, backprop):
    """Runs one step of standard or joint backprop (one backward pass)."""
    graph = context.graph
    num_heads = len(graph.output_keys)
    stop_gradient_inputs = {}
    if backprop == methods.STANDARD:
        for head in range(num_heads - 1):
            private = graph.head_private_nodes(head)
            for index in private:
                node = graph.nodes[index]
                stopped = {
                    key
                    for key in node.input_keys
                    if graph.producer_of(key) is None
                    or graph.producer_of(key).index not in private
                }
                stop_gradient_inputs[index] = stopped

    variables = _all_variables(graph)
    with tf.GradientTape() as tape:
        record = engine.record_forward(
            graph,
            context.inputs,
            tape,
            isolate=False,
            stop_gradient_inputs=stop_gradient_inputs,
        )
        predictions = [record.values[k] for k in graph.output_keys]
        total = 0.0
        for head in range(num_heads):
            loss = _head_loss(context, head, predictions[head])
            if backprop == methods.JOINT:
                loss = context.gamma[head] * loss
            total = total + loss
        penalty = _regularization_loss(variables)
        if penalty is not None:
            total = total + penalty
        scaled = context.optimizer.scale_loss(total)
    grads = tape.gradient(scaled, variables)
    _apply(context.optimizer, grads, variables, context, backprop)
    return predictions


def _watched_outputs(graph, record, tape):
    watched = []
    for key in graph.output_keys:
        copy = tf.stop_gradient(record.values[key])
        tape.watch(copy)
        watched.append(copy)
    return watched


def relay_step(context):
    """Runs one step of relay backprop.

    Loss j reaches the layers whose segment s satisfies j - c <= s <= j,
    where c is `relay_span` and a layer's segment is the index of the
    shallowest head that depends on it.
    """
    graph = context.graph
    num_heads = len(graph.output_keys)
    snapshot = engine.take_snapshot(_all_variables(graph))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([value for _, value in snapshot])
        record = engine.record_forward(
            graph, context.inputs, tape, isolate=True, snapshot=snapshot
        )
        predictions = [record.values[k] for k in graph.output_keys]
        watched = _watched_outputs(graph, record, tape)
        scaled_losses = [
            context.optimizer.scale_loss(
                context.gamma[j] * _head_loss(context, j, watched[j])
            )
            for j in range(num_heads)
        ]

    totals = {}
    for j in range(num_heads):
        allowed = {
            index
            for index in graph.ancestors[j]
            if graph.segments[index] >= j - context.relay_span
        }
        seed = tape.gradient(scaled_losses[j], watched[j])
        grads = engine.backward(
            graph,
            record,
            tape,
            {graph.output_keys[j]: seed},
            allowed=allowed,
            live=False,
        )
        for key, (variable, grad) in grads.items():
            if key in totals:
                totals[key] = (variable, totals[key][1] + grad)
            else:
                totals[key] = (variable, grad)
    del tape

    variables = _all_variables(graph)
    grads = _add_regularization(
        [totals.get(id(v), (v, None))[1] for v in variables],
        variables,
        context.optimizer,
    )
    _apply(context.optimizer, grads, variables, context, "relay")
    return predictions


def _add_regularization(grads, variables, optimizer):
    """Adds the gradients of weight penalties, at the current values."""
    regularized = [v for v in variables if getattr(v, "regularizer", None)]
    if not regularized:
        return grads
    with tf.GradientTape() as tape:
        penalty = optimizer.scale_loss(_regularization_loss(regularized))
    penalty_grads = dict(
        zip([id(v) for v in regularized], tape.gradient(penalty, regularized))
    )
    combined = []
    for grad, variable in zip(grads, variables):
        extra = penalty_grads.get(id(variable))
        if extra is None:
            combined.append(grad)
        elif grad is None:
            combined.append(extra)
        else:
            combined.append(grad + tf.cast(extra, grad.dtype))
    return combined


def _head_optimizer(context, head):
    return context.head_optimizers.for_head(head)


def multiway_step(context, backprop):
    """Runs one step of MW-BP or its reverse variant (Algorithm 1).

    One forward pass is shared by every head. Each head's gradient takes
    every layer's Jacobian at the stored input and at the current parameters,
    which the earlier heads of this step have already moved.
    """
    graph = context.graph
    num_heads = len(graph.output_keys)
    order = methods.head_order(backprop, num_heads)
    snapshot = engine.take_snapshot(_all_variables(graph))
    with tf.GradientTape(persistent=True) as tape:
        record = engine.record_forward(
            graph, context.inputs, tape, isolate=True, snapshot=snapshot
        )
        predictions = [record.values[k] for k in graph.output_keys]
        watched = _watched_outputs(graph, record, tape)
        scaled_losses = [
            _head_optimizer(context, i).scale_loss(_head_loss(context, i, watched[i]))
            for i in range(num_heads)
        ]

    for head in order:
        optimizer = _head_optimizer(context, head)
        seed = tape.gradient(scaled_losses[head], watched[head])
        grads = engine.backward(
            graph,
            record,
            tape,
            {graph.output_keys[head]: seed},
            allowed=graph.ancestors[head],
            live=True,
        )
        variables = graph.trainable_variables_of(graph.ancestors[head])
        head_grads = _add_regularization(
            [grads.get(id(v), (v, None))[1] for v in variables], variables, optimizer
        )
        _apply(optimizer, head_grads, variables, context, f"head {head}")
    del tape
    context.optimizer.iterations.assign_add(1)
    return predictions


def naive_multiway_step(context, backprop):
    """Runs one step of naive MW-BP: a new forward pass before each head.

    The first forward pass runs the whole model and is the only one that
    updates layer state (BatchNormalization's moving statistics). Each later
    pass runs only the layers on the path of the head it serves.
    """
    graph = context.graph
    num_heads = len(graph.output_keys)
    order = methods.head_order(backprop, num_heads)
    predictions = None
    for position, head in enumerate(order):
        optimizer = _head_optimizer(context, head)
        variables = graph.trainable_variables_of(graph.ancestors[head])
        first = position == 0
        with tf.GradientTape() as tape:
            record = engine.record_forward(
                graph,
                context.inputs,
                tape,
                isolate=False,
                update_state=first,
                node_subset=None if first else graph.ancestors[head],
            )
            if first:
                predictions = [record.values[k] for k in graph.output_keys]
            output = record.values[graph.output_keys[head]]
            loss = _head_loss(context, head, output)
            penalty = _regularization_loss(variables)
            if penalty is not None:
                loss = loss + penalty
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        _apply(optimizer, grads, variables, context, f"head {head}")
    context.optimizer.iterations.assign_add(1)
    return predictions


def run_step(context, backprop):
    """Dispatches one training step to the method named `backprop`."""
    if backprop in (methods.STANDARD, methods.JOINT):
        return single_pass_step(context, backprop)
    if backprop == methods.RELAY:
        return relay_step(context)
    if methods.is_naive(backprop):
        return naive_multiway_step(context, backprop)
    return multiway_step(context, backprop)
