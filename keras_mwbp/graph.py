"""The head graph: which layers feed which head, at what depth.

MW-BP needs three facts about a functional model with several outputs: the
nodes on each head's path (the parameters that head updates), the tap where
each auxiliary head leaves the backbone, and the depth of that tap counted in
weighted layers (convolutions and dense layers), which sets the loss weights.
"""

import keras

from keras_mwbp import _keras_private as kp

# Layers that count toward depth. Depth is counted in convolutions and dense
# layers, so ResNet-56 has 55 convolutions and 1 dense layer.
WEIGHTED_LAYER_TYPES = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def is_weighted_layer(layer):
    """Returns whether a layer counts toward depth (a convolution or dense)."""
    return isinstance(layer, WEIGHTED_LAYER_TYPES)


class GraphNode:
    """One call of a layer in the functional graph.

    Attributes:
        index: Position in the topological order.
        node: The Keras node.
        layer: The layer the node calls.
        input_keys: Unique ids of the symbolic tensors the node consumes.
        output_keys: Ids of the symbolic tensors the node produces.
        depth: Weighted layers on the longest path from the input up to and
            including this node.
    """

    def __init__(self, index, node, input_keys, output_keys, depth):
        self.index = index
        self.node = node
        self.layer = kp.node_operation(node)
        self.input_keys = input_keys
        self.output_keys = output_keys
        self.depth = depth


class HeadGraph:
    """The nodes of a multi-output functional model, grouped by head.

    Args:
        model: A built functional `keras.Model` whose outputs are the heads,
            ordered from the shallowest to the deepest.

    Attributes:
        nodes: `GraphNode`s in topological order.
        input_keys: Ids of the model's symbolic inputs.
        output_keys: Ids of the model's symbolic outputs (one per head).
        ancestors: For each head, the set of node indices on its path.
        segments: For each node index, the index of the shallowest head whose
            output depends on it.
        head_depths: For each head, the depth L_i of its tap (for the last
            head, the depth of the whole model).
        tap_nodes: For each head, the `GraphNode` of its tap (`None` for a
            head that shares no layer with the final head).
    """

    def __init__(self, model):
        self.input_keys = [id(t) for t in model.inputs]
        self.output_keys = [id(t) for t in model.outputs]
        self.nodes = []
        producer = {}
        for index, node in enumerate(kp.nodes_in_order(model)):
            input_keys = []
            for tensor in kp.node_input_tensors(node):
                if id(tensor) not in input_keys:
                    input_keys.append(id(tensor))
            output_keys = [id(t) for t in kp.node_output_tensors(node)]
            depth = max(
                (self.nodes[producer[k]].depth for k in input_keys if k in producer),
                default=0,
            )
            layer = kp.node_operation(node)
            if is_weighted_layer(layer):
                depth += 1
            self.nodes.append(GraphNode(index, node, input_keys, output_keys, depth))
            for key in output_keys:
                producer[key] = index
        self._producer = producer

        self.ancestors = [self._ancestors_of(key) for key in self.output_keys]
        num_heads = len(self.output_keys)
        self.segments = {}
        for node in self.nodes:
            heads = [i for i in range(num_heads) if node.index in self.ancestors[i]]
            self.segments[node.index] = min(heads) if heads else num_heads
        self.tap_nodes = [self._tap_of(i) for i in range(num_heads)]
        self.head_depths = []
        for i, key in enumerate(self.output_keys):
            if i == num_heads - 1:
                self.head_depths.append(self.output_depth(key))
            elif self.tap_nodes[i] is None:
                self.head_depths.append(0)
            else:
                self.head_depths.append(self.tap_nodes[i].depth)

    def producer_of(self, key):
        """Returns the `GraphNode` producing a symbolic tensor id, or `None`."""
        index = self._producer.get(key)
        return None if index is None else self.nodes[index]

    def output_depth(self, key):
        """Returns the weighted depth at a symbolic tensor id."""
        node = self.producer_of(key)
        return 0 if node is None else node.depth

    def _ancestors_of(self, key):
        found = set()
        stack = [key]
        while stack:
            node = self.producer_of(stack.pop())
            if node is None or node.index in found:
                continue
            found.add(node.index)
            stack.extend(node.input_keys)
        return found

    def _tap_of(self, head):
        """Finds the deepest node that head `head` shares with the final head."""
        shared = self.ancestors[head] & self.ancestors[-1]
        if not shared:
            return None
        return max(
            (self.nodes[i] for i in shared), key=lambda n: (n.depth, n.index)
        )

    def head_private_nodes(self, head):
        """Returns the node indices on head `head`'s path only (its own layers)."""
        others = set()
        for i, ancestors in enumerate(self.ancestors):
            if i != head:
                others |= ancestors
        return self.ancestors[head] - others

    def trainable_variables_of(self, node_indices):
        """Returns the trainable variables of the given nodes, without repeats."""
        seen = set()
        variables = []
        for index in sorted(node_indices):
            for variable in self.nodes[index].layer.trainable_variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables
