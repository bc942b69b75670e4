"""The CIFAR ResNets of He et al. (2016), with optional auxiliary heads.

"Deep Residual Learning for Image Recognition" (CVPR 2016) builds its CIFAR
networks from a 3x3 convolution with 16 filters, three stages of n basic
blocks with 16, 32 and 64 filters, global average pooling and a dense
classifier. The depth is 6n + 2 weighted layers (6n + 1 convolutions and 1
dense layer). Where a stage halves the feature map and doubles the channels,
the shortcut subsamples and pads the new channels with zeros (option A in
that paper), so the network has no 1x1 projection convolutions.
"""

import numbers

import keras
from keras import ops

from keras_mwbp import heads as heads_lib

STAGE_FILTERS = (16, 32, 64)
EXAMPLE_DEPTHS = (20, 32, 44, 56, 110)

# Moving-statistics momentum of every BatchNormalization layer. 0.9 is the
# PyTorch default (its momentum=0.1 weighs the new batch by 0.1), which the
# MW-BP authors' ResNets use. Keras's default of 0.99 left the moving
# statistics far from the batch statistics after runs of a few dozen steps,
# and test error near chance.
BATCH_NORM_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_mwbp")
class SubsampleZeroPadShortcut(keras.layers.Layer):
    """A parameter-free shortcut that subsamples and zero-pads channels.

    Keeps every `strides`-th row and column of an NHWC tensor, starting at
    the first, and appends `extra_channels` channels of zeros. This matches
    the output shape of a 3x3 convolution with `padding="same"` and the same
    stride (ceil(size / strides) rows and columns).

    Args:
        strides: Int. Step between the kept rows and columns.
        extra_channels: Int. Number of zero channels appended.
        **kwargs: Passed to `keras.layers.Layer` (for example `name`).
    """

    def __init__(self, strides, extra_channels, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)
        self.extra_channels = int(extra_channels)

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape

        def subsampled(size):
            return None if size is None else -(-size // self.strides)

        return (batch, subsampled(height), subsampled(width), channels + self.extra_channels)

    def get_config(self):
        config = super().get_config()
        config.update({"strides": self.strides, "extra_channels": self.extra_channels})
        return config


def num_blocks_for_depth(depth):
    """Returns n, the number of blocks per stage, for depth = 6n + 2.

    Raises:
        ValueError: If `depth` is not 6n + 2 for an integer n >= 1.
    """
    if (
        isinstance(depth, bool)
        or not isinstance(depth, numbers.Integral)
        or depth < 8
        or (depth - 2) % 6 != 0
    ):
        examples = ", ".join(str(d) for d in EXAMPLE_DEPTHS)
        raise ValueError(
            "Invalid value for argument `depth`. Expected 6n + 2 for an "
            f"integer n >= 1 (for example {examples}), because the network "
            "has three stages of n blocks with two convolutions each, plus "
            f"the first convolution and the dense classifier. Received: depth={depth!r}"
        )
    return (int(depth) - 2) // 6


def default_tap_blocks(num_blocks, num_aux):
    """Returns the 1-based indices of the blocks the auxiliary heads read.

    With N blocks, s = floor(N / (K + 1)) and r = N - (K + 1) * s, the heads
    read blocks r + s, r + 2s, ..., r + Ks. The final head reads block N, so
    the heads are s blocks apart and the remainder r goes to the first head.
    For ResNet-56 (N = 27) and K = 4 this is blocks 7, 12, 17 and 22, at
    weighted depths 15, 25, 35 and 45.

    Args:
        num_blocks: Int. N, the number of residual blocks (3n).
        num_aux: Int. K, the number of auxiliary heads, at most N - 1.
    """
    spacing = num_blocks // (num_aux + 1)
    remainder = num_blocks - (num_aux + 1) * spacing
    return [remainder + k * spacing for k in range(1, num_aux + 1)]


def block_output_name(stage, block):
    """Returns the layer name of a block's output, e.g. "stage2_block3_out".

    Args:
        stage: Int, 1 to 3.
        block: Int, 1 to n, the block's position within its stage.
    """
    return f"stage{stage}_block{block}_out"


def _conv3x3(filters, strides, name):
    return keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _basic_block(x, filters, strides, prefix):
    """Adds conv3x3-BN-ReLU-conv3x3-BN, the shortcut, and the closing ReLU."""
    shortcut = x
    in_channels = x.shape[-1]
    if strides != 1 or in_channels != filters:
        shortcut = SubsampleZeroPadShortcut(
            strides, filters - in_channels, name=f"{prefix}_shortcut"
        )(x)

    y = _conv3x3(filters, strides, f"{prefix}_conv1")(x)
    y = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv3x3(filters, 1, f"{prefix}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"{prefix}_bn2")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _build_backbone(num_blocks_per_stage, input_shape):
    """Builds the ResNet without its classifier and returns it with its block output names."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = _conv3x3(STAGE_FILTERS[0], 1, "stem_conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)

    block_names = []
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, num_blocks_per_stage + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            prefix = f"stage{stage}_block{block}"
            x = _basic_block(x, filters, strides, prefix)
            block_names.append(block_output_name(stage, block))
    return keras.Model(inputs, x, name="resnet_backbone"), block_names


def _validate_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or shape[-1] is None:
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, "
            "width, channels) with a known number of channels, for example "
            f"(32, 32, 3). Received: input_shape={input_shape!r}"
        )
    return shape


def resnet_cifar(
    depth,
    num_aux=None,
    taps=None,
    num_classes=10,
    input_shape=(32, 32, 3),
    head="bn_relu_gap_fc",
    name=None,
):
    """Builds a CIFAR ResNet of He et al. (2016) with auxiliary heads.

    The network is a 3x3 convolution with 16 filters, BatchNormalization
    and ReLU, then three stages of n basic blocks (16, 32 and 64 filters),
    with depth = 6n + 2. A basic block is conv3x3-BN-ReLU-conv3x3-BN, plus
    the shortcut, then ReLU. The first block of stages 2 and 3 has stride 2,
    and its shortcut subsamples and zero-pads the channels, so there are no
    parameters on any shortcut. Convolutions use He normal initialisation
    and no bias. The final head is global average pooling and a dense layer
    that outputs logits.

    Each block's output is a layer named `f"stage{s}_block{b}_out"`, the
    output of its closing ReLU, at weighted depth 1 + 2 * (its index among
    all 3n blocks). With `num_aux=K`, N = 3n blocks, s = floor(N / (K + 1))
    and r = N - (K + 1) * s, the auxiliary heads read blocks r + s, r + 2s,
    ..., r + Ks (counting blocks 1 to N across the stages). For depth 56 and
    K = 4 those are blocks 7, 12, 17 and 22, after weighted layers 15, 25,
    35 and 45, as in MwResNet-56-5 of Guo et al. (2020).

    Example:

    ```python
    model = keras_mwbp.models.resnet_cifar(56, num_aux=4)
    print(model.head_depths)  # [15, 25, 35, 45, 56]
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        backprop="mwbp",
    )
    ```

    Args:
        depth: Int. Total weighted depth, 6n + 2 (20, 32, 44, 56, 110, ...).
        num_aux: Int. Number of auxiliary heads K, placed by the rule above,
            at most 3n - 1. Give at most one of `num_aux` and `taps`.
            Defaults to `None`, which means no auxiliary head unless `taps`
            is given.
        taps: List of layer names for the auxiliary heads, usually block
            outputs such as `"stage2_block3_out"`. Defaults to `None`.
        num_classes: Int. Number of classes. Defaults to `10`.
        input_shape: Tuple. Shape of one NHWC image. Defaults to
            `(32, 32, 3)`.
        head: String. Type of the auxiliary heads, one of
            `keras_mwbp.heads.HEAD_TYPES`. Defaults to `"bn_relu_gap_fc"`.
        name: String. Name of the model. Defaults to `None`, which gives
            `f"resnet{depth}"`, or `f"mwresnet{depth}_{K + 1}"` with K > 0
            auxiliary heads.

    Returns:
        A `MultiWayModel` whose outputs are the auxiliary heads
        `"head_0"` ... `"head_{K-1}"` ordered by depth and the final head
        `"head_{K}"`.

    Raises:
        ValueError: For a depth that is not 6n + 2, both `num_aux` and
            `taps`, a `num_aux` above 3n - 1, an unknown tap or head type,
            or an invalid `num_classes` or `input_shape`.
    """
    num_blocks_per_stage = num_blocks_for_depth(depth)
    input_shape = _validate_input_shape(input_shape)
    heads_lib.validate_head_type(head)
    if num_aux is not None and taps is not None:
        raise ValueError(
            "Expected at most one of the arguments `num_aux` and `taps`. "
            f"Received: num_aux={num_aux!r}, taps={taps!r}. Pass num_aux=K "
            "for the default placement or taps=[block output names]."
        )

    backbone, block_names = _build_backbone(num_blocks_per_stage, input_shape)
    if taps is None:
        num_aux = 0 if num_aux is None else num_aux
        num_blocks = len(block_names)
        if (
            isinstance(num_aux, bool)
            or not isinstance(num_aux, numbers.Integral)
            or not 0 <= num_aux < num_blocks
        ):
            raise ValueError(
                "Invalid value for argument `num_aux`. Expected an integer "
                f"from 0 to {num_blocks - 1}, because ResNet-{depth} has "
                f"{num_blocks} blocks and the final head reads the last one. "
                f"Received: num_aux={num_aux!r}"
            )
        num_aux = int(num_aux)
        heads_lib.warn_if_heads_too_close(depth, num_aux, stacklevel=2)
        taps = [block_names[b - 1] for b in default_tap_blocks(num_blocks, num_aux)]

    if name is None:
        num_taps = len(taps) if isinstance(taps, (list, tuple)) else 0
        num_heads = num_taps + 1
        name = f"resnet{depth}" if num_heads == 1 else f"mwresnet{depth}_{num_heads}"
    return heads_lib.attach_heads(
        backbone,
        taps=taps,
        head=head,
        num_classes=num_classes,
        final_head="gap_fc",
        name=name,
    )
