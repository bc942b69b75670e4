"""The one place where `keras_mwbp` reads private Keras 3 attributes.

Keras has no public API for walking the nodes of a functional model or for
the loss tracker that `Model.train_step` updates, and MW-BP needs both. Every
private name is read here, so a Keras upgrade that renames one breaks a
single module, and `tests/test_keras_private.py` fails with a clear message.
"""

from keras import tree


def nodes_in_order(model):
    """Returns the functional model's nodes in an order that respects data flow.

    Input nodes are skipped. Each node's inputs are produced by earlier nodes
    or are model inputs.
    """
    nodes_by_depth = model._nodes_by_depth
    ordered = []
    for depth in sorted(nodes_by_depth.keys(), reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ordered.append(node)
    return ordered


def node_operation(node):
    """Returns the layer (operation) that a node calls."""
    return node.operation


def node_input_tensors(node):
    """Returns the flat list of symbolic tensors a node consumes."""
    return list(node.input_tensors)


def node_output_tensors(node):
    """Returns the flat list of symbolic tensors a node produces."""
    return list(node.outputs)


def fill_in_node_arguments(node, tensor_by_id):
    """Returns `(args, kwargs)` for calling a node on concrete tensors.

    Args:
        node: A functional node.
        tensor_by_id: Dict mapping `id(symbolic_tensor)` to the concrete
            tensor that replaces it.
    """
    return node.arguments.fill_in(tensor_by_id)


def producing_layer(symbolic_tensor):
    """Returns the layer that produced a symbolic tensor, or `None`."""
    history = getattr(symbolic_tensor, "_keras_history", None)
    if history is None:
        return None
    return history[0]


def layer_call_has_training_arg(layer):
    """Returns whether a layer's `call` accepts a `training` argument."""
    return bool(getattr(layer, "_call_has_training_arg", False))


def loss_tracker(model):
    """Returns the `Mean` metric that Keras logs as `loss`, or `None`."""
    return getattr(model, "_loss_tracker", None)


def flatten(structure):
    """Flattens a nested structure of tensors the way Keras does."""
    return tree.flatten(structure)


def unscale_loss_for_distribution(loss):
    """Undoes the division of a per-replica loss by the replica count."""
    from keras.src.losses import loss as loss_module

    return loss_module.unscale_loss_for_distribution(loss)


def optimizer_learning_rate_source(optimizer):
    """Returns what an optimizer was given as its learning rate, or `None`.

    A `LearningRateSchedule`, a variable or a callable; the public
    `learning_rate` property returns only the schedule's current value.
    """
    return getattr(optimizer, "_learning_rate", None)
