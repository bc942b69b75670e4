"""Tests for keras_mwbp.heads: head types, tap checks and automatic placement.

Expected depths, layer sequences and tap names are counted by hand from the
architectures built here (and from the published MobileNetV2 layout), never
taken from the code under test.
"""

import socket
import warnings

import keras
import numpy as np
import pytest

from keras_mwbp import _keras_private as kp
from keras_mwbp import heads
from keras_mwbp.model import MultiWayModel

NUM_CLASSES = 5

# Layer classes of each head type on a rank-4 input, written out by hand.
EXPECTED_HEAD_LAYERS_RANK4 = {
    "bn_relu_gap_fc": [
        keras.layers.BatchNormalization,
        keras.layers.ReLU,
        keras.layers.GlobalAveragePooling2D,
        keras.layers.Dense,
    ],
    "bn_relu_flatten_fc": [
        keras.layers.BatchNormalization,
        keras.layers.ReLU,
        keras.layers.Flatten,
        keras.layers.Dense,
    ],
    "gap_fc": [keras.layers.GlobalAveragePooling2D, keras.layers.Dense],
    "relu_gap_fc": [
        keras.layers.ReLU,
        keras.layers.GlobalAveragePooling2D,
        keras.layers.Dense,
    ],
}


def small_cnn():
    """Builds a chain of three convolutions at weighted depths 1, 2 and 3."""
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="block1_out")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="block2_out")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv3")(x)
    x = keras.layers.ReLU(name="features")(x)
    return keras.Model(inputs, x, name="small_cnn")


def small_residual_cnn():
    """Builds a stem and one residual block whose shortcut skips conv "a"."""
    inputs = keras.Input((8, 8, 3))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    stem = keras.layers.ReLU(name="stem_out")(stem)
    y = keras.layers.Conv2D(4, 3, padding="same", name="a")(stem)
    y = keras.layers.Conv2D(4, 3, padding="same", name="b")(y)
    y = keras.layers.Add(name="add")([y, stem])
    y = keras.layers.ReLU(name="block_out")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="c")(y)
    y = keras.layers.ReLU(name="out")(y)
    return keras.Model(inputs, y, name="small_residual_cnn")


def conv_chain(num_convs):
    """Builds a chain of conv + ReLU pairs, with "relu_i" at weighted depth i."""
    inputs = keras.Input((4, 4, 2))
    x = inputs
    for i in range(1, num_convs + 1):
        x = keras.layers.Conv2D(2, 3, padding="same", name=f"conv_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
    return keras.Model(inputs, x, name="conv_chain")


def head_input_layer_name(model, head_name):
    """Returns the name of the layer whose output feeds a head's first layer."""
    first_layer = _first_layer_of_head(model, head_name)
    return kp.producing_layer(first_layer.input).name


def _first_layer_of_head(model, head_name):
    for suffix in ("_bn", "_relu", "_pool", "_flatten", ""):
        try:
            return model.get_layer(head_name + suffix)
        except ValueError:
            continue
    raise AssertionError(f"no layer of head {head_name!r} in {model.name}")


@pytest.fixture
def no_network(monkeypatch):
    """Makes any socket connection fail, so a download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ----------------------------------------------------------------------
# build_head


@pytest.mark.parametrize("head_type", sorted(EXPECTED_HEAD_LAYERS_RANK4))
def test_head_layer_sequence_rank4(head_type):
    inputs = keras.Input((6, 6, 4))
    logits = heads.build_head(inputs, NUM_CLASSES, head=head_type, name="aux")
    model = keras.Model(inputs, logits)

    layer_types = [type(layer) for layer in model.layers[1:]]
    assert layer_types == EXPECTED_HEAD_LAYERS_RANK4[head_type]
    assert model.layers[-1].name == "aux"
    assert tuple(logits.shape) == (None, NUM_CLASSES)


@pytest.mark.parametrize("head_type", sorted(EXPECTED_HEAD_LAYERS_RANK4))
def test_head_layer_names(head_type):
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, heads.build_head(inputs, 3, head=head_type, name="aux"))

    names = [layer.name for layer in model.layers[1:]]
    expected_suffix = {
        keras.layers.BatchNormalization: "aux_bn",
        keras.layers.ReLU: "aux_relu",
        keras.layers.GlobalAveragePooling2D: "aux_pool",
        keras.layers.Flatten: "aux_flatten",
        keras.layers.Dense: "aux",
    }
    assert names == [expected_suffix[t] for t in EXPECTED_HEAD_LAYERS_RANK4[head_type]]


@pytest.mark.parametrize("head_type", sorted(EXPECTED_HEAD_LAYERS_RANK4))
def test_head_rank2_skips_pooling(head_type):
    inputs = keras.Input((7,))
    model = keras.Model(inputs, heads.build_head(inputs, 3, head=head_type, name="aux"))

    expected = [
        t
        for t in EXPECTED_HEAD_LAYERS_RANK4[head_type]
        if t not in (keras.layers.GlobalAveragePooling2D, keras.layers.Flatten)
    ]
    assert [type(layer) for layer in model.layers[1:]] == expected
    assert tuple(model.output.shape) == (None, 3)


def test_head_rank3_pools_over_time():
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, heads.build_head(inputs, 3, name="aux"))

    assert isinstance(model.get_layer("aux_pool"), keras.layers.GlobalAveragePooling1D)
    assert tuple(model.output.shape) == (None, 3)


def test_head_flatten_keeps_all_positions():
    inputs = keras.Input((2, 3, 4))
    model = keras.Model(inputs, heads.build_head(inputs, 3, head="bn_relu_flatten_fc"))

    # 2 * 3 * 4 = 24 inputs to the dense layer.
    assert model.get_layer("head").kernel.shape == (24, 3)


def test_head_dense_zero_bias_logits():
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, heads.build_head(inputs, 3, name="aux"))
    dense = model.get_layer("aux")

    assert dense.activation is keras.activations.linear
    np.testing.assert_array_equal(dense.bias.numpy(), np.zeros(3))


def test_head_unknown_type_lists_valid():
    inputs = keras.Input((6, 6, 4))
    with pytest.raises(ValueError) as error:
        heads.build_head(inputs, 3, head="gap_softmax")

    message = str(error.value)
    assert "gap_softmax" in message
    for head_type in EXPECTED_HEAD_LAYERS_RANK4:
        assert head_type in message


def test_head_rejects_rank1_features():
    inputs = keras.Input((4,), batch_size=2)
    flat = keras.layers.Lambda(lambda t: keras.ops.sum(t, axis=-1))(inputs)
    with pytest.raises(ValueError, match="rank 2 to 5"):
        heads.build_head(flat, 3)


# ----------------------------------------------------------------------
# attach_heads with named taps


def test_attach_named_taps_depths():
    model = heads.attach_heads(
        small_cnn(), taps=["block2_out", "block1_out"], num_classes=NUM_CLASSES
    )

    assert isinstance(model, MultiWayModel)
    # block1_out follows conv1 (depth 1) and block2_out conv2 (depth 2). The
    # final head adds a dense layer after conv3: 3 + 1 = 4.
    assert model.head_depths == [1, 2, 4]
    assert model.output_names == ["head_0", "head_1", "head_2"]


def test_attach_named_taps_order_by_depth():
    model = heads.attach_heads(
        small_cnn(), taps=["block2_out", "block1_out"], num_classes=NUM_CLASSES
    )

    assert head_input_layer_name(model, "head_0") == "block1_out"
    assert head_input_layer_name(model, "head_1") == "block2_out"
    assert head_input_layer_name(model, "head_2") == "features"


def test_attach_output_shapes():
    model = heads.attach_heads(small_cnn(), taps=["block1_out"], num_classes=NUM_CLASSES)
    outputs = model.predict(np.zeros((2, 8, 8, 3), "float32"), verbose=0)

    assert len(outputs) == 2
    for output in outputs:
        assert output.shape == (2, NUM_CLASSES)


def test_attach_head_and_final_head_types():
    model = heads.attach_heads(
        small_cnn(),
        taps=["block1_out"],
        head="relu_gap_fc",
        final_head="bn_relu_flatten_fc",
        num_classes=NUM_CLASSES,
    )
    layer_names = [layer.name for layer in model.layers]

    assert "head_0_relu" in layer_names
    assert "head_0_bn" not in layer_names
    assert "head_1_bn" in layer_names
    assert "head_1_flatten" in layer_names


def test_attach_shares_backbone_weights():
    backbone = small_cnn()
    model = heads.attach_heads(backbone, taps=["block1_out"], num_classes=NUM_CLASSES)

    assert model.get_layer("conv1") is backbone.get_layer("conv1")


def test_attach_empty_taps_single_head():
    model = heads.attach_heads(small_cnn(), taps=[], num_classes=NUM_CLASSES)

    assert model.head_depths == [4]
    assert model.output_names == ["head_0"]


def test_attach_sequential_backbone():
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.ReLU(name="r1"),
            keras.layers.Conv2D(4, 3, name="c2"),
        ]
    )
    model = heads.attach_heads(backbone, taps=["r1"], num_classes=NUM_CLASSES)

    assert model.head_depths == [1, 3]


def test_attach_rank2_output_is_final_head():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="classifier")(x)
    backbone = keras.Model(inputs, logits)

    model = heads.attach_heads(backbone, taps=["relu"])

    assert model.output_names == ["head_0", "classifier"]
    assert model.head_depths == [1, 2]
    assert tuple(model.outputs[0].shape) == (None, NUM_CLASSES)


def test_attach_rank2_output_wrong_num_classes():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    backbone = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))

    with pytest.raises(ValueError) as error:
        heads.attach_heads(backbone, taps=["conv"], num_classes=NUM_CLASSES + 1)

    message = str(error.value)
    assert "num_classes" in message
    assert f"num_classes={NUM_CLASSES + 1}" in message
    assert str(NUM_CLASSES) in message


def test_attach_softmax_output_warns():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    probabilities = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    backbone = keras.Model(inputs, probabilities)

    with pytest.warns(UserWarning, match="softmax"):
        heads.attach_heads(backbone, taps=["conv"])


# ----------------------------------------------------------------------
# Errors


def test_tap_typo_suggests_close_name():
    with pytest.raises(ValueError) as error:
        heads.attach_heads(small_cnn(), taps=["block1_ot"], num_classes=NUM_CLASSES)

    message = str(error.value)
    assert "'block1_ot'" in message
    assert "taps" in message
    assert "'block1_out'" in message


def test_tap_unknown_lists_valid_names():
    with pytest.raises(ValueError) as error:
        heads.attach_heads(small_cnn(), taps=["zzzz"], num_classes=NUM_CLASSES)

    message = str(error.value)
    assert "'zzzz'" in message
    assert "'conv1'" in message


def test_tap_at_final_output_rejected():
    with pytest.raises(ValueError, match="'features'.*output"):
        heads.attach_heads(small_cnn(), taps=["features"], num_classes=NUM_CLASSES)


def test_tap_before_first_conv_rejected():
    with pytest.raises(ValueError, match="'image'|first convolution"):
        heads.attach_heads(small_cnn(), taps=["image"], num_classes=NUM_CLASSES)


def test_tap_repeated_rejected():
    with pytest.raises(ValueError, match="more than once"):
        heads.attach_heads(
            small_cnn(), taps=["block1_out", "block1_out"], num_classes=NUM_CLASSES
        )


def test_tap_string_not_list_rejected():
    with pytest.raises(ValueError, match=r"taps=\[name\]"):
        heads.attach_heads(small_cnn(), taps="block1_out", num_classes=NUM_CLASSES)


@pytest.mark.parametrize(
    "arguments",
    [{}, {"taps": ["block1_out"], "num_aux": 1}],
    ids=["neither", "both"],
)
def test_taps_and_num_aux_exclusive(arguments):
    with pytest.raises(ValueError) as error:
        heads.attach_heads(small_cnn(), num_classes=NUM_CLASSES, **arguments)

    message = str(error.value)
    assert "`taps`" in message
    assert "`num_aux`" in message
    assert "Received:" in message


def test_num_aux_too_large():
    # small_cnn's block outputs below the output depth: block1_out (1) and
    # block2_out (2).
    with pytest.raises(ValueError) as error:
        heads.attach_heads(small_cnn(), num_aux=3, num_classes=NUM_CLASSES)

    message = str(error.value)
    assert "at most 2" in message
    assert "num_aux=3" in message


@pytest.mark.parametrize("num_aux", [-1, 1.5, True])
def test_num_aux_invalid_value(num_aux):
    with pytest.raises(ValueError, match="num_aux"):
        heads.attach_heads(small_cnn(), num_aux=num_aux, num_classes=NUM_CLASSES)


def test_unknown_head_type_in_attach():
    with pytest.raises(ValueError) as error:
        heads.attach_heads(
            small_cnn(), taps=["block1_out"], head="mlp", num_classes=NUM_CLASSES
        )

    message = str(error.value)
    assert "head='mlp'" in message
    assert "bn_relu_gap_fc" in message


def test_unknown_final_head_type():
    with pytest.raises(ValueError, match="final_head='x'"):
        heads.attach_heads(
            small_cnn(), taps=["block1_out"], final_head="x", num_classes=NUM_CLASSES
        )


def test_num_classes_missing_for_feature_map():
    with pytest.raises(ValueError) as error:
        heads.attach_heads(small_cnn(), taps=["block1_out"])

    message = str(error.value)
    assert "num_classes" in message
    assert "Received: num_classes=None" in message


def test_head_name_clash_rejected():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="head_0")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    backbone = keras.Model(inputs, x)

    with pytest.raises(ValueError, match="head_0"):
        heads.attach_heads(backbone, taps=["head_0"], num_classes=NUM_CLASSES)


def test_multi_output_backbone_rejected():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3)(inputs)
    b = keras.layers.Conv2D(4, 3)(a)
    with pytest.raises(ValueError, match="one output"):
        heads.attach_heads(keras.Model(inputs, [a, b]), num_aux=0, num_classes=3)


# ----------------------------------------------------------------------
# Block outputs and automatic placement


def test_block_outputs_skip_inside_residual_block():
    candidates = heads.find_block_outputs(small_residual_cnn())

    # The shortcut from stem_out bypasses "a" (depth 2). The add and
    # block_out share depth 3, and the later one, block_out, is kept. "c"
    # and "out" are at the output depth 4, so they are excluded.
    assert candidates == [("stem_out", 1), ("block_out", 3)]


def test_block_outputs_of_chain():
    candidates = heads.find_block_outputs(conv_chain(4))

    assert candidates == [("relu_1", 1), ("relu_2", 2), ("relu_3", 3)]


def test_block_outputs_second_input_late():
    # The second input enters at the add, so every node before the add can
    # be bypassed along the path from that input.
    image = keras.Input((4, 4, 2))
    bias = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(2, 3, padding="same", name="c1")(image)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Add(name="add")([x, bias])
    x = keras.layers.Conv2D(2, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Conv2D(2, 3, padding="same", name="c3")(x)
    candidates = heads.find_block_outputs(keras.Model([image, bias], x))

    assert candidates == [("add", 1), ("r2", 2)]


def test_num_aux_evenly_spaced():
    # 12 convolutions + the final dense layer: L = 13, tau = ceil(13 / 3) = 5,
    # so the heads go to depths 5 and 10.
    model = heads.attach_heads(conv_chain(12), num_aux=2, num_classes=NUM_CLASSES)

    assert model.head_depths == [5, 10, 13]
    assert head_input_layer_name(model, "head_0") == "relu_5"
    assert head_input_layer_name(model, "head_1") == "relu_10"


def test_num_aux_residual_skips_inner_conv():
    # L = 4 + 1 = 5, tau = ceil(5 / 2) = 3: block_out (depth 3), not "a".
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = heads.attach_heads(small_residual_cnn(), num_aux=1, num_classes=3)

    assert model.head_depths == [3, 5]
    assert head_input_layer_name(model, "head_0") == "block_out"


def test_num_aux_zero_single_head():
    model = heads.attach_heads(small_cnn(), num_aux=0, num_classes=NUM_CLASSES)

    assert model.head_depths == [4]


def test_close_heads_warn_at_caller():
    # L = 3 + 1 = 4, tau = ceil(4 / 2) = 2 < 5.
    with pytest.warns(UserWarning, match="tau=2") as record:
        heads.attach_heads(small_cnn(), num_aux=1, num_classes=NUM_CLASSES)

    assert record[0].filename == __file__


def test_spaced_heads_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # tau = 5, the smallest spacing without a warning.
        heads.attach_heads(conv_chain(12), num_aux=2, num_classes=NUM_CLASSES)


def test_head_spacing_formula():
    assert heads.head_spacing(56, 4) == 12
    assert heads.head_spacing(20, 3) == 5
    assert heads.head_spacing(20, 4) == 4


# ----------------------------------------------------------------------
# MobileNetV2


def test_mobilenetv2_num_aux_without_network(no_network):
    backbone = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    model = heads.attach_heads(backbone, num_aux=2, num_classes=10)

    # MobileNetV2 (Sandler et al., 2018) starts with Conv1 (depth 1) and a
    # bottleneck without expansion (depthwise and projection, depths 2 and
    # 3). Bottleneck blocks 1 to 16 have three convs each, so block b
    # projects at depth 3 + 3b. Conv_1 is at 52 and the final dense head at
    # 53. tau = ceil(53 / 3) = 18, so the heads read blocks 5 and 11, which
    # end in a residual add.
    assert model.head_depths == [18, 36, 53]
    assert head_input_layer_name(model, "head_0") == "block_5_add"
    assert head_input_layer_name(model, "head_1") == "block_11_add"
    for output in model.outputs:
        assert tuple(output.shape) == (None, 10)


# ----------------------------------------------------------------------
# Training


def test_fit_one_mwbp_step():
    model = heads.attach_heads(
        small_cnn(), taps=["block1_out", "block2_out"], num_classes=NUM_CLASSES
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop="mwbp",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(4,))
    kernel_before = model.get_layer("conv1").kernel.numpy().copy()

    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)

    for name in ("head_0_loss", "head_1_loss", "head_2_loss", "loss"):
        assert name in history.history
        assert np.isfinite(history.history[name][0])
    kernel_after = model.get_layer("conv1").kernel.numpy()
    assert not np.allclose(kernel_before, kernel_after)
