"""Tests for keras_mwbp.models.resnet_cifar.

Layer counts, parameter counts and head depths are computed here from the
architecture of He et al. (2016) by closed forms or by hand, never read from
the model under test.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_mwbp import _keras_private as kp
from keras_mwbp.model import MultiWayModel
from keras_mwbp.models import resnet_cifar
from keras_mwbp.models.resnet_cifar import SubsampleZeroPadShortcut


def expected_resnet_params(n, num_classes, in_channels=3):
    """Counts ResNet-(6n+2) parameters, BatchNormalization statistics included.

    A 3x3 conv without bias has 9 * c_in * c_out weights, and a
    BatchNormalization over c channels has 4c (gamma, beta, moving mean and
    moving variance). Option A shortcuts have none.
    """

    def conv(c_in, c_out):
        return 9 * c_in * c_out

    def bn(c):
        return 4 * c

    total = conv(in_channels, 16) + bn(16)
    c_in = 16
    for filters in (16, 32, 64):
        for _ in range(n):
            total += conv(c_in, filters) + bn(filters) + conv(filters, filters) + bn(filters)
            c_in = filters
    return total + 64 * num_classes + num_classes


def layer_params(model):
    """Counts the layers' parameters, without the model's `nu` and loss-weight variables."""
    return sum(layer.count_params() for layer in model.layers)


def head_input_layer_name(model, head_name):
    return kp.producing_layer(model.get_layer(f"{head_name}_bn").input).name


def test_resnet20_layer_counts():
    model = resnet_cifar(20)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]

    # 6n + 1 = 19 convolutions for n = 3, and one dense classifier.
    assert len(convs) == 19
    assert len(denses) == 1
    for layer in convs:
        assert layer.kernel_size == (3, 3)
        assert not layer.use_bias
        assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal)


def test_resnet20_parameter_count():
    model = resnet_cifar(20)
    expected = expected_resnet_params(n=3, num_classes=10)

    assert layer_params(model) == expected
    # He et al. (2016) report 0.27M parameters for ResNet-20.
    assert abs(expected - 0.27e6) / 0.27e6 < 0.03


def test_resnet56_parameter_count():
    assert layer_params(resnet_cifar(56)) == expected_resnet_params(n=9, num_classes=10)


def test_resnet56_aux4_head_depths():
    model = resnet_cifar(56, num_aux=4)

    assert isinstance(model, MultiWayModel)
    assert model.head_depths == [15, 25, 35, 45, 56]


def test_resnet56_aux4_tap_blocks():
    model = resnet_cifar(56, num_aux=4)

    # Blocks 7, 12, 17 and 22 of 27, with 9 blocks per stage.
    expected = [
        "stage1_block7_out",
        "stage2_block3_out",
        "stage2_block8_out",
        "stage3_block4_out",
    ]
    actual = [head_input_layer_name(model, f"head_{i}") for i in range(4)]
    assert actual == expected


def test_resnet20_aux2_head_depths():
    # N = 9 blocks, s = floor(9 / 3) = 3, r = 9 - 3 * 3 = 0: blocks 3 and 6,
    # at depths 1 + 2 * 3 = 7 and 1 + 2 * 6 = 13.
    model = resnet_cifar(20, num_aux=2)

    assert model.head_depths == [7, 13, 20]


def test_resnet32_aux2_uses_remainder():
    # N = 15, s = floor(15 / 3) = 5, r = 0: blocks 5 and 10 (depths 11, 21).
    # With K = 3: s = 3, r = 15 - 12 = 3, blocks 6, 9, 12 (depths 13, 19, 25).
    assert resnet_cifar(32, num_aux=2).head_depths == [11, 21, 32]
    assert resnet_cifar(32, num_aux=3).head_depths == [13, 19, 25, 32]


def test_resnet_default_has_one_head():
    model = resnet_cifar(20)

    assert model.head_depths == [20]
    assert model.output_names == ["head_0"]
    assert model.name == "resnet20"


def test_resnet_output_shapes():
    model = resnet_cifar(20, num_aux=2, num_classes=7)
    outputs = model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0)

    assert len(outputs) == 3
    for output in outputs:
        assert output.shape == (2, 7)


def test_resnet_stage_shapes():
    model = resnet_cifar(20)

    assert tuple(model.get_layer("stage1_block3_out").output.shape) == (None, 32, 32, 16)
    assert tuple(model.get_layer("stage2_block1_out").output.shape) == (None, 16, 16, 32)
    assert tuple(model.get_layer("stage3_block3_out").output.shape) == (None, 8, 8, 64)


def test_resnet_named_taps():
    # stage2_block1 is block 4 (depth 1 + 8 = 9), and stage3_block1 is block
    # 7 (depth 15).
    model = resnet_cifar(20, taps=["stage3_block1_out", "stage2_block1_out"])

    assert model.head_depths == [9, 15, 20]


@pytest.mark.parametrize("depth", [18, 21, 2, 0, 56.0, "56"])
def test_resnet_invalid_depth(depth):
    with pytest.raises(ValueError) as error:
        resnet_cifar(depth)

    message = str(error.value)
    assert "6n + 2" in message
    assert f"depth={depth!r}" in message


def test_resnet_num_aux_too_large():
    # ResNet-20 has 9 blocks, and the final head reads block 9.
    with pytest.raises(ValueError, match="from 0 to 8"):
        resnet_cifar(20, num_aux=9)


def test_resnet_num_aux_and_taps_rejected():
    with pytest.raises(ValueError, match="num_aux.*taps"):
        resnet_cifar(20, num_aux=1, taps=["stage1_block1_out"])


def test_resnet_unknown_tap_named():
    with pytest.raises(ValueError, match="'stage4_block1_out'"):
        resnet_cifar(20, taps=["stage4_block1_out"])


def test_resnet_close_heads_warn():
    # tau = ceil(20 / 5) = 4 < 5.
    with pytest.warns(UserWarning, match="tau=4") as record:
        resnet_cifar(20, num_aux=4)

    assert record[0].filename == __file__


def test_resnet_spaced_heads_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resnet_cifar(20, num_aux=3)  # tau = ceil(20 / 4) = 5


def test_resnet_head_type():
    model = resnet_cifar(20, num_aux=1, head="gap_fc")
    names = [layer.name for layer in model.layers]

    assert "head_0_pool" in names
    assert "head_0_bn" not in names


def test_shortcut_subsamples_and_pads():
    layer = SubsampleZeroPadShortcut(2, 3)
    x = np.arange(2 * 5 * 4 * 2, dtype="float32").reshape(2, 5, 4, 2)

    y = keras.ops.convert_to_numpy(layer(x))

    # The output keeps rows 0, 2, 4 and columns 0, 2. Channels 2 to 4 are zero.
    assert y.shape == (2, 3, 2, 5)
    np.testing.assert_array_equal(y[..., :2], x[:, [0, 2, 4]][:, :, [0, 2]])
    np.testing.assert_array_equal(y[..., 2:], np.zeros((2, 3, 2, 3)))
    assert layer.compute_output_shape((None, 5, 4, 2)) == (None, 3, 2, 5)


def test_shortcut_config_round_trip():
    layer = SubsampleZeroPadShortcut(2, 16, name="s")
    restored = SubsampleZeroPadShortcut.from_config(layer.get_config())

    assert restored.strides == 2
    assert restored.extra_channels == 16
    assert restored.name == "s"


def test_resnet_fit_one_mwbp_step():
    model = resnet_cifar(20, num_aux=2, input_shape=(8, 8, 3), num_classes=3)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        backprop="mwbp",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, size=(4,))

    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)

    for name in ("head_0_loss", "head_1_loss", "head_2_loss"):
        assert np.isfinite(history.history[name][0])
