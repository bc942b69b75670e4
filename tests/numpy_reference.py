"""Float64 NumPy reference for one training step of each backprop method.

The reference is written by hand, independently of keras_mwbp, so the tests can
compare the library's weights after `model.fit` with its results. It supports the
layer kinds the test models use: Dense and Conv2D (stride 1, odd kernel,
"same" padding, optional fused ReLU), BatchNormalization in training mode,
ReLU, Add and GlobalAveragePooling2D, all channels-last as in Keras.

Every method uses plain SGD (no momentum, no weight decay), and each loss is the
batch mean of softmax cross-entropy on logits. Outputs are ordered from the
shallowest auxiliary head to the final head, so output K is the final one.
"""

import copy
import dataclasses

import numpy as np

METHODS = (
    "standard",
    "joint",
    "relay",
    "mwbp",
    "reverse_mwbp",
    "naive_mwbp",
    "naive_reverse_mwbp",
)

MULTI_WAY_METHODS = METHODS[3:]

TRAINABLE_PARAMETERS = {
    "dense": ("kernel", "bias"),
    "conv": ("kernel", "bias"),
    "bn": ("gamma", "beta"),
}


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer of a functional model.

    kind is one of "input", "dense", "conv", "bn", "relu", "add" and "gap".
    units is the output width of a dense layer or the filter count of a conv.
    activation "relu" is a fused activation of a dense or conv layer.
    """

    name: str
    kind: str
    inputs: tuple = ()
    units: int = 0
    kernel_size: int = 3
    activation: str | None = None
    momentum: float = 0.99
    epsilon: float = 1e-3
    shape: tuple = ()


@dataclasses.dataclass(frozen=True)
class Graph:
    """A model as nodes in topological order plus its outputs, shallow to deep.

    head_depths contains the depth L_i of each head, counted by hand. L_i is the
    number of Dense or Conv layers on the longest path from the input to the
    head's tap, and for the final head, to its output.
    """

    nodes: tuple
    outputs: tuple
    head_depths: tuple

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"node {name!r} not found")

    def ancestors(self, name):
        """Return the names of `name` and every node it reads, directly or not."""
        found = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current in found:
                continue
            found.add(current)
            pending.extend(self.node(current).inputs)
        return found

    def parameter_layers(self):
        return [node.name for node in self.nodes if node.kind in TRAINABLE_PARAMETERS]

    def path_layers(self, output_index):
        """Return the layers with parameters that output `output_index` depends on."""
        ancestors = self.ancestors(self.outputs[output_index])
        return [name for name in self.parameter_layers() if name in ancestors]

    def own_layers(self, output_index):
        """Return the layers with parameters that belong to an auxiliary head alone.

        These are the layers output `output_index` depends on and the final
        output does not.
        """
        final_ancestors = self.ancestors(self.outputs[-1])
        return [
            name
            for name in self.path_layers(output_index)
            if name not in final_ancestors
        ]

    def segment(self, layer_name):
        """Return the index of the shallowest output that depends on the layer."""
        for index, output in enumerate(self.outputs):
            if layer_name in self.ancestors(output):
                return index
        raise ValueError(f"layer {layer_name!r} feeds no output")


def head_loss_weights(head_depths, nu):
    """Return gamma_i = max(0.01, (L_i / L_{K-1}) ** nu) for auxiliary heads, 1 for the final head."""
    num_auxiliary = len(head_depths) - 1
    if num_auxiliary == 0:
        return [1.0]
    deepest_auxiliary = head_depths[num_auxiliary - 1]
    weights = [
        max(0.01, (depth / deepest_auxiliary) ** nu)
        for depth in head_depths[:num_auxiliary]
    ]
    return weights + [1.0]


# ---------------------------------------------------------------------------
# Parameters


def channel_counts(graph):
    """Return the size of the last axis of every node's output."""
    channels = {}
    for node in graph.nodes:
        if node.kind == "input":
            channels[node.name] = node.shape[-1]
        elif node.kind in ("dense", "conv"):
            channels[node.name] = node.units
        else:
            channels[node.name] = channels[node.inputs[0]]
    return channels


def init_params(graph, rng):
    """Draw random parameters, including moving statistics, for every layer.

    Returns {layer name: {parameter name: array}}. The BatchNormalization
    gamma, beta and moving statistics are drawn away from their default values so
    that a method which ignores them shows up in the comparison.
    """
    channels = channel_counts(graph)
    params = {}
    for node in graph.nodes:
        if node.kind == "dense":
            fan_in = channels[node.inputs[0]]
            params[node.name] = {
                "kernel": rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, node.units)),
                "bias": rng.normal(0.0, 0.1, node.units),
            }
        elif node.kind == "conv":
            fan_in = channels[node.inputs[0]]
            size = node.kernel_size
            scale = 1.0 / np.sqrt(fan_in * size * size)
            params[node.name] = {
                "kernel": rng.normal(0.0, scale, (size, size, fan_in, node.units)),
                "bias": rng.normal(0.0, 0.1, node.units),
            }
        elif node.kind == "bn":
            width = channels[node.name]
            params[node.name] = {
                "gamma": 1.0 + rng.normal(0.0, 0.2, width),
                "beta": rng.normal(0.0, 0.1, width),
                "moving_mean": rng.normal(0.0, 0.3, width),
                "moving_variance": rng.uniform(0.5, 1.5, width),
            }
    return params


def copy_params(params):
    return copy.deepcopy(params)


# ---------------------------------------------------------------------------
# Layer operations


def conv2d_same(x, kernel, bias):
    """Compute a stride-1 "same" cross-correlation, as Keras Conv2D does."""
    size = kernel.shape[0]
    if size % 2 != 1 or kernel.shape[1] != size:
        raise ValueError(f"only square odd kernels are supported, got {kernel.shape[:2]}")
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    output = np.zeros(x.shape[:3] + (kernel.shape[3],))
    for row in range(size):
        for col in range(size):
            output += padded[:, row : row + height, col : col + width, :] @ kernel[row, col]
    return output + bias


def conv2d_same_backward(x, kernel, grad_output):
    """Return (d input, d kernel, d bias) of conv2d_same at input x."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    grad_padded = np.zeros_like(padded)
    grad_kernel = np.zeros_like(kernel)
    for row in range(size):
        for col in range(size):
            window = padded[:, row : row + height, col : col + width, :]
            grad_kernel[row, col] = np.einsum("nhwc,nhwo->co", window, grad_output)
            grad_padded[:, row : row + height, col : col + width, :] += (
                grad_output @ kernel[row, col].T
            )
    grad_input = grad_padded[:, pad : pad + height, pad : pad + width, :]
    grad_bias = grad_output.sum(axis=tuple(range(grad_output.ndim - 1)))
    return grad_input, grad_kernel, grad_bias


def batch_moments(x):
    """Return the per-channel batch mean and biased variance.

    Keras 3.15 BatchNormalization computes them with tf.nn.moments on the
    TensorFlow backend and uses the same biased variance for its moving variance.
    """
    axes = tuple(range(x.ndim - 1))
    return x.mean(axis=axes), x.var(axis=axes)


def softmax_cross_entropy(logits, labels):
    """Return the batch-mean loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    batch = np.arange(len(labels))
    log_probabilities = shifted - np.log(exp.sum(axis=1, keepdims=True))
    loss = -log_probabilities[batch, labels].mean()
    grad = probabilities.copy()
    grad[batch, labels] -= 1.0
    return loss, grad / len(labels)


# ---------------------------------------------------------------------------
# Forward and backward passes


def forward(graph, params, x):
    """Run a training-mode forward pass and return the stored features.

    The result maps "values" to every node's output, "pre_activations" to the
    linear output of each layer with a fused ReLU, and "batch_stats" to the
    (mean, variance) of every BatchNormalization layer's input.
    """
    values = {}
    pre_activations = {}
    batch_stats = {}
    for node in graph.nodes:
        inputs = [values[name] for name in node.inputs]
        if node.kind == "input":
            output = x
        elif node.kind in ("dense", "conv"):
            layer = params[node.name]
            if node.kind == "dense":
                output = inputs[0] @ layer["kernel"] + layer["bias"]
            else:
                output = conv2d_same(inputs[0], layer["kernel"], layer["bias"])
            if node.activation == "relu":
                pre_activations[node.name] = output
                output = np.maximum(output, 0.0)
            elif node.activation is not None:
                raise ValueError(f"unsupported activation {node.activation!r}")
        elif node.kind == "bn":
            layer = params[node.name]
            mean, variance = batch_moments(inputs[0])
            batch_stats[node.name] = (mean, variance)
            normalized = (inputs[0] - mean) / np.sqrt(variance + node.epsilon)
            output = layer["gamma"] * normalized + layer["beta"]
        elif node.kind == "relu":
            output = np.maximum(inputs[0], 0.0)
        elif node.kind == "add":
            output = sum(inputs)
        elif node.kind == "gap":
            output = inputs[0].mean(axis=(1, 2))
        else:
            raise ValueError(f"unsupported node kind {node.kind!r}")
        values[node.name] = output
    return {
        "values": values,
        "pre_activations": pre_activations,
        "batch_stats": batch_stats,
    }


def layer_backward(node, params, features, grad_output):
    """Back-propagate through one node and return (input gradients, parameter gradients).

    Each local Jacobian is evaluated at the node's input stored in `features`
    and at the parameters in `params`, which need not be the parameters that
    produced `features`. A fused ReLU's derivative uses the stored
    pre-activation, and BatchNormalization uses the batch statistics of the
    stored input with the current gamma.
    """
    values = features["values"]
    inputs = [values[name] for name in node.inputs]

    if node.kind in ("dense", "conv"):
        layer = params[node.name]
        grad_linear = grad_output
        if node.activation == "relu":
            grad_linear = grad_output * (features["pre_activations"][node.name] > 0.0)
        if node.kind == "dense":
            grad_input = grad_linear @ layer["kernel"].T
            grad_kernel = inputs[0].T @ grad_linear
            grad_bias = grad_linear.sum(axis=0)
        else:
            grad_input, grad_kernel, grad_bias = conv2d_same_backward(
                inputs[0], layer["kernel"], grad_linear
            )
        return [grad_input], {"kernel": grad_kernel, "bias": grad_bias}

    if node.kind == "bn":
        gamma = params[node.name]["gamma"]
        mean, variance = features["batch_stats"][node.name]
        inverse_std = 1.0 / np.sqrt(variance + node.epsilon)
        normalized = (inputs[0] - mean) * inverse_std
        axes = tuple(range(grad_output.ndim - 1))
        grad_gamma = (grad_output * normalized).sum(axis=axes)
        grad_beta = grad_output.sum(axis=axes)
        # Full batch-norm backward: the batch mean and variance depend on every
        # sample, so the gradient of each sample subtracts two batch averages.
        grad_normalized = grad_output * gamma
        grad_input = inverse_std * (
            grad_normalized
            - grad_normalized.mean(axis=axes)
            - normalized * (grad_normalized * normalized).mean(axis=axes)
        )
        return [grad_input], {"gamma": grad_gamma, "beta": grad_beta}

    if node.kind == "relu":
        return [grad_output * (inputs[0] > 0.0)], {}

    if node.kind == "add":
        return [grad_output for _ in inputs], {}

    if node.kind == "gap":
        height, width = inputs[0].shape[1:3]
        grad_input = np.broadcast_to(
            grad_output[:, None, None, :] / (height * width), inputs[0].shape
        )
        return [grad_input.copy()], {}

    raise ValueError(f"cannot back-propagate through node kind {node.kind!r}")


def backward(graph, params, features, output_index, grad_logits):
    """Back-propagate one output's logit gradient to every parameter it depends on.

    Returns {layer name: {parameter name: gradient}} for the trainable
    parameters on the output's path. Local Jacobians follow layer_backward.
    """
    upstream = {graph.outputs[output_index]: grad_logits}
    grads = {}
    for node in reversed(graph.nodes):
        if node.name not in upstream or node.kind == "input":
            continue
        input_grads, param_grads = layer_backward(
            node, params, features, upstream.pop(node.name)
        )
        if param_grads:
            grads[node.name] = param_grads
        for name, grad in zip(node.inputs, input_grads):
            if name in upstream:
                upstream[name] = upstream[name] + grad
            else:
                upstream[name] = grad
    return grads


def head_losses(graph, features, labels):
    """Return the list of (loss, logit gradient) of every output in `features`."""
    return [
        softmax_cross_entropy(features["values"][output], labels)
        for output in graph.outputs
    ]


def joint_loss(graph, params, x, labels, loss_weights):
    """Return sum_i gamma_i * xi_i of a training-mode forward pass."""
    features = forward(graph, params, x)
    losses = head_losses(graph, features, labels)
    return sum(weight * loss for weight, (loss, _) in zip(loss_weights, losses))


def joint_gradient(graph, params, x, labels, loss_weights):
    """Return the gradient of joint_loss for every trainable parameter."""
    features = forward(graph, params, x)
    total = {}
    for index, (_, grad_logits) in enumerate(head_losses(graph, features, labels)):
        grads = backward(graph, params, features, index, grad_logits)
        add_scaled(total, grads, loss_weights[index])
    return total


# ---------------------------------------------------------------------------
# Training steps


def add_scaled(total, grads, scale, layers=None):
    """Add scale * grads into total, restricted to `layers` when given."""
    for layer, layer_grads in grads.items():
        if layers is not None and layer not in layers:
            continue
        target = total.setdefault(layer, {})
        for name, grad in layer_grads.items():
            if name in target:
                target[name] = target[name] + scale * grad
            else:
                target[name] = scale * grad


def apply_sgd(params, grads, learning_rate, layers=None):
    """Subtract learning_rate * grad in place, restricted to `layers` when given."""
    for layer, layer_grads in grads.items():
        if layers is not None and layer not in layers:
            continue
        for name, grad in layer_grads.items():
            params[layer][name] = params[layer][name] - learning_rate * grad


def update_moving_statistics(graph, params, features):
    """Move every BatchNormalization layer's moving statistics towards the batch statistics."""
    for node in graph.nodes:
        if node.kind != "bn":
            continue
        mean, variance = features["batch_stats"][node.name]
        layer = params[node.name]
        layer["moving_mean"] = layer["moving_mean"] * node.momentum + mean * (
            1.0 - node.momentum
        )
        layer["moving_variance"] = layer[
            "moving_variance"
        ] * node.momentum + variance * (1.0 - node.momentum)


def per_head_gradients(graph, params, features, labels):
    """Return each output's own loss gradient, all taken at the same parameters."""
    losses = head_losses(graph, features, labels)
    return [
        backward(graph, params, features, index, grad_logits)
        for index, (_, grad_logits) in enumerate(losses)
    ]


def train_step(
    graph, params, x, labels, method, learning_rate, loss_weights, relay_span=1
):
    """Return the parameters after one training step of `method` on one batch.

    loss_weights is the list gamma_0 ... gamma_K. The moving statistics of every
    BatchNormalization layer are updated once, from the first forward pass of
    the step, for every method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    params = copy_params(params)
    num_outputs = len(graph.outputs)
    final_index = num_outputs - 1
    first_features = forward(graph, params, x)

    if method == "joint":
        grads = {}
        for index, head_grads in enumerate(
            per_head_gradients(graph, params, first_features, labels)
        ):
            add_scaled(grads, head_grads, loss_weights[index])
        apply_sgd(params, grads, learning_rate)

    elif method == "standard":
        # Auxiliary heads read the backbone through a stop-gradient: their
        # unweighted loss trains only their own layers, and the backbone learns
        # from the final loss alone.
        head_grads = per_head_gradients(graph, params, first_features, labels)
        grads = {}
        add_scaled(grads, head_grads[final_index], 1.0)
        for index in range(final_index):
            add_scaled(grads, head_grads[index], 1.0, layers=graph.own_layers(index))
        apply_sgd(params, grads, learning_rate)

    elif method == "relay":
        # A layer in segment s learns from the losses s ... min(s + c, K).
        head_grads = per_head_gradients(graph, params, first_features, labels)
        grads = {}
        for layer in graph.parameter_layers():
            segment = graph.segment(layer)
            last = min(segment + relay_span, final_index)
            for index in range(segment, last + 1):
                add_scaled(grads, head_grads[index], loss_weights[index], layers=[layer])
        apply_sgd(params, grads, learning_rate)

    else:
        order = list(range(num_outputs))
        if "reverse" in method:
            order.reverse()
        naive = method.startswith("naive")
        for position, index in enumerate(order):
            if naive and position > 0:
                features = forward(graph, params, x)
            else:
                # mwbp reuses the shared first pass for every head, while the
                # parameters read in backward() have been moved by earlier heads.
                features = first_features
            _, grad_logits = softmax_cross_entropy(
                features["values"][graph.outputs[index]], labels
            )
            grads = backward(graph, params, features, index, grad_logits)
            apply_sgd(
                params,
                grads,
                learning_rate * loss_weights[index],
                layers=graph.path_layers(index),
            )

    update_moving_statistics(graph, params, first_features)
    return params


def train(
    graph,
    params,
    x,
    labels,
    method,
    learning_rate,
    loss_weights,
    batch_size,
    relay_span=1,
):
    """Return the parameters after one epoch over x in order, one step per batch."""
    for start in range(0, len(x), batch_size):
        params = train_step(
            graph,
            params,
            x[start : start + batch_size],
            labels[start : start + batch_size],
            method,
            learning_rate,
            loss_weights,
            relay_span,
        )
    return params


# ---------------------------------------------------------------------------
# Test models


def mlp_graph(num_auxiliary):
    """Return a residual MLP on 5 features with 3 classes and 0, 2 or 3 auxiliary heads.

    Backbone depths: d1 1, d2 2, add1 2, d3 3, d4 4, add2 4, d5 5 and final 6.
    The heads tap add1 (L = 2), d3 (L = 3, only with 3 heads) and add2 (L = 4).
    Head 0 has two Dense layers of its own, the other heads one.
    """
    if num_auxiliary not in (0, 2, 3):
        raise ValueError(f"num_auxiliary must be 0, 2 or 3, got {num_auxiliary}")
    backbone = [
        Node("x", "input", shape=(5,)),
        Node("d1", "dense", ("x",), units=6, activation="relu"),
        Node("d2", "dense", ("d1",), units=6, activation="relu"),
        Node("add1", "add", ("d1", "d2")),
        Node("d3", "dense", ("add1",), units=6, activation="relu"),
        Node("d4", "dense", ("d3",), units=6, activation="relu"),
        Node("add2", "add", ("d3", "d4")),
        Node("d5", "dense", ("add2",), units=6, activation="relu"),
        Node("final", "dense", ("d5",), units=3),
    ]
    taps = {0: [], 2: ["add1", "add2"], 3: ["add1", "d3", "add2"]}[num_auxiliary]
    tap_depths = {"add1": 2, "d3": 3, "add2": 4}
    heads = []
    outputs = []
    for index, tap in enumerate(taps):
        if index == 0:
            heads.append(
                Node("aux0_hidden", "dense", (tap,), units=4, activation="relu")
            )
            heads.append(Node("aux0_logits", "dense", ("aux0_hidden",), units=3))
        else:
            heads.append(Node(f"aux{index}_logits", "dense", (tap,), units=3))
        outputs.append(f"aux{index}_logits")
    return Graph(
        nodes=tuple(backbone + heads),
        outputs=tuple(outputs + ["final"]),
        head_depths=tuple([tap_depths[tap] for tap in taps] + [6]),
    )


def conv_graph():
    """Return a residual conv net on 6x6x2 inputs with 3 classes and 2 auxiliary heads.

    Backbone depths: c1 1, c2 2 (tap of head 0 at relu2), c3 3 (tap of head 1
    at relu3), c4 4 and the final Dense 5. Each auxiliary head is
    BN -> ReLU -> GlobalAveragePooling2D -> Dense, and the final head is
    GlobalAveragePooling2D -> Dense.
    """
    bn = dict(momentum=0.8, epsilon=1e-3)
    nodes = [
        Node("x", "input", shape=(6, 6, 2)),
        Node("c1", "conv", ("x",), units=4),
        Node("bn1", "bn", ("c1",), **bn),
        Node("relu1", "relu", ("bn1",)),
        Node("c2", "conv", ("relu1",), units=4),
        Node("bn2", "bn", ("c2",), **bn),
        Node("add1", "add", ("relu1", "bn2")),
        Node("relu2", "relu", ("add1",)),
        Node("c3", "conv", ("relu2",), units=4),
        Node("bn3", "bn", ("c3",), **bn),
        Node("relu3", "relu", ("bn3",)),
        Node("c4", "conv", ("relu3",), units=4),
        Node("bn4", "bn", ("c4",), **bn),
        Node("add2", "add", ("relu3", "bn4")),
        Node("relu4", "relu", ("add2",)),
        Node("gap", "gap", ("relu4",)),
        Node("final", "dense", ("gap",), units=3),
    ]
    for index, tap in enumerate(["relu2", "relu3"]):
        prefix = f"aux{index}"
        nodes += [
            Node(f"{prefix}_bn", "bn", (tap,), **bn),
            Node(f"{prefix}_relu", "relu", (f"{prefix}_bn",)),
            Node(f"{prefix}_gap", "gap", (f"{prefix}_relu",)),
            Node(f"{prefix}_logits", "dense", (f"{prefix}_gap",), units=3),
        ]
    return Graph(
        nodes=tuple(nodes),
        outputs=("aux0_logits", "aux1_logits", "final"),
        head_depths=(2, 3, 5),
    )
