"""Compare two `model.fit` steps of every backprop method with a NumPy reference.

numpy_reference.py computes the expected weights in float64 by hand. Keras runs
in float64 here too, so the 1e-5 relative tolerance measures differences
between methods, not float32 rounding. The learning rate is large (0.5) and
nu = 2, so the methods end at clearly different weights, and the reference
self-checks below confirm that the comparison can fail.
"""

import itertools

import keras
import numpy as np
import pytest

import numpy_reference as reference

LEARNING_RATE = 0.5
NU = 2.0
NUM_SAMPLES = 8
BATCH_SIZE = 4
RTOL = 1e-5
ATOL = 1e-7

KERAS_WEIGHT_NAMES = {
    "dense": ("kernel", "bias"),
    "conv": ("kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}

GRAPHS = {
    "mlp": lambda: reference.mlp_graph(num_auxiliary=2),
    "conv": reference.conv_graph,
    "mlp_3aux": lambda: reference.mlp_graph(num_auxiliary=3),
    "mlp_single_output": lambda: reference.mlp_graph(num_auxiliary=0),
}

SEEDS = {"mlp": 11, "conv": 23, "mlp_3aux": 37, "mlp_single_output": 41}


def make_problem(model_name):
    """Return (graph, starting parameters, inputs, labels) for a test model."""
    graph = GRAPHS[model_name]()
    rng = np.random.default_rng(SEEDS[model_name])
    params = reference.init_params(graph, rng)
    input_shape = graph.nodes[0].shape
    x = rng.normal(0.0, 1.0, (NUM_SAMPLES,) + input_shape)
    labels = rng.integers(0, 3, NUM_SAMPLES)
    return graph, params, x, labels


def reference_weights(graph, params, x, labels, method, loss_weights=None, relay_span=1):
    """Return the reference parameters after one epoch of BATCH_SIZE steps."""
    if loss_weights is None:
        loss_weights = reference.head_loss_weights(graph.head_depths, NU)
    return reference.train(
        graph,
        params,
        x,
        labels,
        method,
        LEARNING_RATE,
        loss_weights,
        BATCH_SIZE,
        relay_span,
    )


# ---------------------------------------------------------------------------
# Keras models built from the reference graphs


def make_keras_layer(node):
    if node.kind == "dense":
        return keras.layers.Dense(node.units, activation=node.activation, name=node.name)
    if node.kind == "conv":
        return keras.layers.Conv2D(
            node.units,
            node.kernel_size,
            padding="same",
            activation=node.activation,
            name=node.name,
        )
    if node.kind == "bn":
        return keras.layers.BatchNormalization(
            momentum=node.momentum, epsilon=node.epsilon, name=node.name
        )
    if node.kind == "relu":
        return keras.layers.ReLU(name=node.name)
    if node.kind == "add":
        return keras.layers.Add(name=node.name)
    if node.kind == "gap":
        return keras.layers.GlobalAveragePooling2D(name=node.name)
    raise ValueError(f"no Keras layer for node kind {node.kind!r}")


def build_keras_model(graph, params, model_class):
    """Build `graph` as a functional `model_class` and load `params` into it."""
    tensors = {}
    for node in graph.nodes:
        if node.kind == "input":
            tensors[node.name] = keras.Input(shape=node.shape, name=node.name)
            continue
        layer = make_keras_layer(node)
        inputs = [tensors[name] for name in node.inputs]
        tensors[node.name] = layer(inputs if node.kind == "add" else inputs[0])

    outputs = [tensors[name] for name in graph.outputs]
    model = model_class(tensors[graph.nodes[0].name], outputs)
    for node in graph.nodes:
        if node.kind in KERAS_WEIGHT_NAMES:
            values = [params[node.name][name] for name in KERAS_WEIGHT_NAMES[node.kind]]
            model.get_layer(node.name).set_weights(values)
    return model


def read_keras_weights(graph, model):
    """Return the model's weights as {layer name: {parameter name: array}}."""
    weights = {}
    for node in graph.nodes:
        if node.kind in KERAS_WEIGHT_NAMES:
            values = model.get_layer(node.name).get_weights()
            weights[node.name] = dict(zip(KERAS_WEIGHT_NAMES[node.kind], values))
    return weights


def compile_multi_way(model, method, loss_weights=None, relay_span=1, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop=method,
        nu=NU,
        loss_weights=loss_weights,
        relay_span=relay_span,
        run_eagerly=run_eagerly,
    )


def fit_two_steps(model, x, labels):
    model.fit(x, labels, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)


def find_mismatches(expected, actual):
    """Return one line per parameter array outside RTOL/ATOL, with its max differences."""
    lines = []
    for layer, layer_weights in expected.items():
        for name, expected_value in layer_weights.items():
            actual_value = actual[layer][name]
            if actual_value.shape != expected_value.shape:
                lines.append(
                    f"{layer}/{name}: shape {actual_value.shape}, expected {expected_value.shape}"
                )
                continue
            if np.allclose(actual_value, expected_value, rtol=RTOL, atol=ATOL):
                continue
            difference = np.abs(actual_value - expected_value)
            relative = difference / np.maximum(np.abs(expected_value), ATOL)
            lines.append(
                f"{layer}/{name}: max relative difference {relative.max():.3g}, "
                f"max absolute difference {difference.max():.3g}"
            )
    return lines


def max_relative_difference(first, second):
    """Return the max elementwise |first - second| / max(|second|, ATOL) over all parameters."""
    largest = 0.0
    for layer, layer_weights in second.items():
        for name, value in layer_weights.items():
            difference = np.abs(first[layer][name] - value)
            largest = max(largest, float((difference / np.maximum(np.abs(value), ATOL)).max()))
    return largest


@pytest.fixture
def float64_keras():
    """Run Keras in float64 for the test and restore the previous floatx afterwards."""
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(previous)


@pytest.fixture
def multi_way_model_class():
    """Import MultiWayModel, so that a missing library fails the library tests only."""
    from keras_mwbp import MultiWayModel

    return MultiWayModel


# ---------------------------------------------------------------------------
# Self-checks of the reference


@pytest.mark.parametrize("model_name", ["mlp", "conv", "mlp_3aux"])
def test_reference_joint_gradient_finite_differences(model_name):
    """Check every entry of the reference joint gradient by central differences."""
    graph, params, x, labels = make_problem(model_name)
    loss_weights = reference.head_loss_weights(graph.head_depths, NU)
    gradient = reference.joint_gradient(graph, params, x, labels, loss_weights)
    step = 1e-6

    for layer in graph.parameter_layers():
        for name in reference.TRAINABLE_PARAMETERS[graph.node(layer).kind]:
            numeric = np.zeros_like(params[layer][name])
            for index in np.ndindex(numeric.shape):
                shifted = reference.copy_params(params)
                shifted[layer][name][index] += step
                upper = reference.joint_loss(graph, shifted, x, labels, loss_weights)
                shifted[layer][name][index] -= 2 * step
                lower = reference.joint_loss(graph, shifted, x, labels, loss_weights)
                numeric[index] = (upper - lower) / (2 * step)
            np.testing.assert_allclose(
                gradient[layer][name],
                numeric,
                rtol=1e-5,
                atol=1e-8,
                err_msg=f"joint gradient of {layer}/{name} on {model_name}",
            )


@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_reference_methods_differ(model_name):
    """Every pair of methods must end far apart, or a comparison could not fail."""
    graph, params, x, labels = make_problem(model_name)
    results = {
        method: reference_weights(graph, params, x, labels, method)
        for method in reference.METHODS
    }

    mwbp_vs_joint = max_relative_difference(results["mwbp"], results["joint"])
    assert mwbp_vs_joint > 1e3 * RTOL, (
        f"mwbp and joint differ by only {mwbp_vs_joint:.3g} on {model_name}"
    )
    for first, second in itertools.combinations(reference.METHODS, 2):
        difference = max_relative_difference(results[first], results[second])
        assert difference > 100 * RTOL, (
            f"{first} and {second} differ by only {difference:.3g} on {model_name}"
        )


def test_reference_single_output_methods_agree():
    """With one output (K = 0) every method is standard training."""
    graph, params, x, labels = make_problem("mlp_single_output")
    expected = reference_weights(graph, params, x, labels, "standard")
    moved = max_relative_difference(expected, params)
    assert moved > 1e3 * RTOL, f"standard training moved the weights by only {moved:.3g}"

    for method in reference.METHODS[1:]:
        actual = reference_weights(graph, params, x, labels, method)
        mismatches = find_mismatches(expected, actual)
        assert not mismatches, f"{method} differs from standard with one output: {mismatches}"


def test_reference_relay_span_limits():
    """relay_span = K equals joint, and relay_span = 2 differs from both 1 and K."""
    graph, params, x, labels = make_problem("mlp_3aux")
    joint = reference_weights(graph, params, x, labels, "joint")
    span_one = reference_weights(graph, params, x, labels, "relay", relay_span=1)
    span_two = reference_weights(graph, params, x, labels, "relay", relay_span=2)
    span_three = reference_weights(graph, params, x, labels, "relay", relay_span=3)

    assert not find_mismatches(joint, span_three)
    assert max_relative_difference(span_two, joint) > 100 * RTOL
    assert max_relative_difference(span_two, span_one) > 100 * RTOL


def test_reference_head_loss_weights():
    assert reference.head_loss_weights((2, 4, 6), 2.0) == [0.25, 1.0, 1.0]
    assert reference.head_loss_weights((2, 3, 4, 6), 2.0) == [0.25, 0.5625, 1.0, 1.0]
    assert reference.head_loss_weights((1, 20, 30), 2.0)[0] == 0.01
    assert reference.head_loss_weights((6,), 2.0) == [1.0]


@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_reference_joint_matches_keras_fit(model_name, float64_keras):
    """Check the reference layers, BatchNormalization statistics included, against plain Keras.

    A plain keras.Model with one loss per output and loss_weights = gamma takes
    one SGD step on sum_i gamma_i * xi_i, which is joint training.
    """
    graph, params, x, labels = make_problem(model_name)
    loss_weights = reference.head_loss_weights(graph.head_depths, NU)
    expected = reference_weights(graph, params, x, labels, "joint")

    model = build_keras_model(graph, params, keras.Model)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
        * len(graph.outputs),
        loss_weights=loss_weights,
    )
    model.fit(
        x,
        [labels] * len(graph.outputs),
        batch_size=BATCH_SIZE,
        epochs=1,
        shuffle=False,
        verbose=0,
    )

    mismatches = find_mismatches(expected, read_keras_weights(graph, model))
    assert not mismatches, f"plain Keras joint on {model_name}: " + "; ".join(mismatches)


# ---------------------------------------------------------------------------
# keras_mwbp against the reference


@pytest.mark.parametrize("model_name", ["mlp", "conv", "mlp_3aux", "mlp_single_output"])
def test_head_depths_and_nu(model_name, float64_keras, multi_way_model_class):
    graph, params, _, _ = make_problem(model_name)
    model = build_keras_model(graph, params, multi_way_model_class)

    assert list(model.head_depths) == list(graph.head_depths), (
        f"head_depths of {model_name}"
    )

    # keras_mwbp accepts only backprop="standard" for a model with one output.
    method = "standard" if len(graph.outputs) == 1 else "mwbp"
    compile_multi_way(model, method)
    assert float(keras.ops.convert_to_numpy(model.nu)) == NU
    assert not model.nu.trainable


# Graph mode is what users run. The eager cases of the two methods that read
# parameters moved earlier in the same step tell an ordering error inside the
# compiled step apart from an error in the method itself.
CASES = [
    pytest.param(model_name, method, None, 1, False, id=f"{method}-{model_name}")
    for model_name in ("mlp", "conv")
    for method in reference.METHODS
]
CASES += [
    pytest.param("conv", "mwbp", [0.3, 0.6, 0.9], 1, False, id="mwbp-conv-loss_weights"),
    pytest.param("mlp_3aux", "relay", None, 2, False, id="relay-mlp_3aux-relay_span_2"),
]
CASES += [
    pytest.param(model_name, method, None, 1, True, id=f"{method}-{model_name}-eager")
    for model_name in ("mlp", "conv")
    for method in ("mwbp", "reverse_mwbp")
]


@pytest.mark.parametrize("model_name, method, loss_weights, relay_span, run_eagerly", CASES)
def test_fit_matches_reference(
    model_name,
    method,
    loss_weights,
    relay_span,
    run_eagerly,
    float64_keras,
    multi_way_model_class,
):
    graph, params, x, labels = make_problem(model_name)
    expected = reference_weights(
        graph, params, x, labels, method, loss_weights, relay_span
    )

    model = build_keras_model(graph, params, multi_way_model_class)
    compile_multi_way(model, method, loss_weights, relay_span, run_eagerly)
    fit_two_steps(model, x, labels)

    mismatches = find_mismatches(expected, read_keras_weights(graph, model))
    mode = "eager" if run_eagerly else "graph"
    assert not mismatches, (
        f"{method} on {model_name} ({mode} mode, loss_weights={loss_weights}, "
        f"relay_span={relay_span}) differs from the NumPy reference at "
        f"rtol={RTOL}, atol={ATOL}:\n" + "\n".join(mismatches)
    )


def test_single_output_standard_fit_matches_reference(float64_keras, multi_way_model_class):
    graph, params, x, labels = make_problem("mlp_single_output")
    expected = reference_weights(graph, params, x, labels, "standard")

    model = build_keras_model(graph, params, multi_way_model_class)
    compile_multi_way(model, "standard")
    fit_two_steps(model, x, labels)

    mismatches = find_mismatches(expected, read_keras_weights(graph, model))
    assert not mismatches, (
        "standard on a single-output model differs from the NumPy reference:\n"
        + "\n".join(mismatches)
    )


@pytest.mark.parametrize("method", reference.METHODS[1:])
def test_single_output_rejects_other_methods(method, float64_keras, multi_way_model_class):
    """keras_mwbp raises for every method but standard on a model with one output.

    The reference trains such a model identically with every method (see
    test_reference_single_output_methods_agree), so standard is the only
    method the library needs to offer there.
    """
    graph, params, _, _ = make_problem("mlp_single_output")
    model = build_keras_model(graph, params, multi_way_model_class)

    with pytest.raises(ValueError, match="output"):
        compile_multi_way(model, method)
