"""Tests of `keras_mwbp.export` and of the multiply-add counts in `keras_mwbp.flops`.

The expected depths, parameter counts and multiply-adds are computed here by
hand from the layer shapes, not read back from the code under test.
"""

import argparse
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mwbp import MultiWayModel
from keras_mwbp import export
from keras_mwbp import flops
from keras_mwbp.models import resnet_cifar

IMAGE_SHAPE = (8, 8, 1)


def conv_multiply_adds(out_height, out_width, out_channels, kernel, in_channels):
    """Multiply-adds of a square 2D convolution: output elements x kernel x input channels."""
    return out_height * out_width * out_channels * kernel * kernel * in_channels


def tiny_resnet():
    """ResNet-8 on 8x8x1 images with one auxiliary head after stage 2."""
    with warnings.catch_warnings():
        # resnet_cifar warns that heads 3 layers apart are close together.
        warnings.simplefilter("ignore", UserWarning)
        return resnet_cifar(8, num_aux=1, input_shape=IMAGE_SHAPE)


# Hand-computed sizes of `tiny_resnet()`. The stem and stage 1 run at 8x8
# with 16 channels, stage 2 at 4x4 with 32, stage 3 at 2x2 with 64. Each
# BatchNormalization has 4 weights per channel, the convolutions have no
# bias, and each classifier is a Dense layer with bias to 10 classes.
_STEM = 3 * 3 * 1 * 16 + 4 * 16
_STAGE1 = 2 * (3 * 3 * 16 * 16 + 4 * 16)
_STAGE2 = 3 * 3 * 16 * 32 + 3 * 3 * 32 * 32 + 2 * 4 * 32
_STAGE3 = 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64 + 2 * 4 * 64
# The auxiliary head is BatchNormalization, ReLU, pooling and Dense.
HEAD0_PARAMS = _STEM + _STAGE1 + _STAGE2 + 4 * 32 + (32 * 10 + 10)
HEAD1_PARAMS = _STEM + _STAGE1 + _STAGE2 + _STAGE3 + (64 * 10 + 10)

_BACKBONE_TO_STAGE2 = (
    conv_multiply_adds(8, 8, 16, 3, 1)
    + 2 * conv_multiply_adds(8, 8, 16, 3, 16)
    + conv_multiply_adds(4, 4, 32, 3, 16)
    + conv_multiply_adds(4, 4, 32, 3, 32)
)
HEAD0_MULTIPLY_ADDS = _BACKBONE_TO_STAGE2 + 32 * 10
HEAD1_MULTIPLY_ADDS = (
    _BACKBONE_TO_STAGE2
    + conv_multiply_adds(2, 2, 64, 3, 32)
    + conv_multiply_adds(2, 2, 64, 3, 64)
    + 64 * 10
)


def images(n=6, seed=0):
    return np.random.RandomState(seed).rand(n, *IMAGE_SHAPE).astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports both heads of one tiny ResNet in both formats, once per module."""
    model = tiny_resnet()
    directory = tmp_path_factory.mktemp("export") / "run"
    metrics = {"head_0": {"test_error_percent": np.float32(12.5)}, "head_1": {"test_errors": 3}}
    manifest = export.export_submodels(model, directory, metrics=metrics, verbose=0)
    return model, directory, manifest


# ----------------------------------------------------------------------
# Multiply-adds.


def test_flops_small_conv_net_by_layer():
    inputs = keras.Input((9, 9, 4))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="strided")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(6, 3, groups=2, padding="valid", name="grouped")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = keras.layers.SeparableConv2D(5, 1, depth_multiplier=3, name="separable")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="transpose")(x)
    x = keras.layers.Dense(7, name="dense")(x)
    x = keras.layers.Reshape((4, 7), name="reshape")(x)
    x = keras.layers.Conv1D(3, 2, name="conv1d")(x)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(3, 8), name="einsum")(x)
    model = keras.Model(inputs, x)

    # 9x9 with stride 2 and "same" padding gives 5x5; "valid" then gives 3x3.
    expected = {
        "strided": 5 * 5 * 6 * 9 * 4,
        "grouped": 3 * 3 * 6 * 9 * (6 // 2),
        "depthwise": 3 * 3 * 12 * 9,
        "separable": 3 * 3 * 36 * 1 + 3 * 3 * 36 * 5,
        # Pooling gives 1x1x5; each input element meets a 2x2x2 kernel.
        "transpose": 1 * 1 * 5 * 4 * 2,
        "dense": 2 * 2 * 7 * 2,
        "conv1d": 3 * 3 * 2 * 7,
        "einsum": 3 * 8 * 3,
    }
    assert flops.multiply_adds_per_layer(model) == expected
    assert flops.count_multiply_adds(model) == sum(expected.values())


def test_flops_resnet20_closed_form():
    # The CIFAR ResNet-20 of `resnet_cifar` on 32x32x3: a 16-filter stem, then
    # three stages of 3 blocks of two 3x3 convolutions at 32x32x16,
    # 16x16x32 and 8x8x64, and a 64 -> 10 dense layer. The first convolution
    # of stages 2 and 3 reads half as many channels.
    n = 3
    stem = conv_multiply_adds(32, 32, 16, 3, 3)
    stage1 = 2 * n * conv_multiply_adds(32, 32, 16, 3, 16)
    stage2 = conv_multiply_adds(16, 16, 32, 3, 16) + (2 * n - 1) * conv_multiply_adds(
        16, 16, 32, 3, 32
    )
    stage3 = conv_multiply_adds(8, 8, 64, 3, 32) + (2 * n - 1) * conv_multiply_adds(
        8, 8, 64, 3, 64
    )
    expected = stem + stage1 + stage2 + stage3 + 64 * 10
    assert expected == 40_551_040

    model = resnet_cifar(20)
    assert flops.count_multiply_adds(model) == expected


def test_flops_nested_shared_and_sequential():
    inner_input = keras.Input((3,))
    inner_output = keras.layers.Dense(4, name="inner_dense")(inner_input)
    inner = keras.Model(inner_input, inner_output, name="inner")
    inputs = keras.Input((3,))
    shared = keras.layers.Dense(3, name="shared")
    outputs = inner(shared(shared(inputs)))
    nested = keras.Model(inputs, outputs)
    assert flops.multiply_adds_per_layer(nested) == {"shared": 2 * 3 * 3, "inner/inner_dense": 3 * 4}

    sequential = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3), keras.layers.Dense(2)]
    )
    assert flops.count_multiply_adds(sequential) == 5 * 3 + 3 * 2

    channels_first = keras.layers.Conv2D(5, 3, data_format="channels_first")
    count = flops.layer_multiply_adds(channels_first, (None, 2, 7, 7), (None, 5, 5, 5))
    assert count == 5 * 5 * 5 * 9 * 2


def test_flops_warnings_and_errors():
    inputs = keras.Input((4, 8))
    outputs = keras.layers.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
    with pytest.warns(UserWarning, match="'attention'"):
        count = flops.count_multiply_adds(keras.Model(inputs, outputs))
    assert count == 0

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match="'conv'.*fixed input shape"):
        flops.count_multiply_adds(model)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        flops.count_multiply_adds(Subclassed())


# ----------------------------------------------------------------------
# Exported files.


def test_export_saved_model_matches_live_submodel(exported):
    model, directory, manifest = exported
    x = images()
    for entry in manifest["heads"]:
        expected = model.submodel(entry["index"]).predict(x, verbose=0)
        loaded = tf.saved_model.load(str(directory / entry["files"]["saved_model"]))
        assert "serve" in loaded.signatures
        actual = loaded.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_export_keras_file_matches_live_submodel(exported):
    model, directory, manifest = exported
    x = images()
    for entry in manifest["heads"]:
        expected = model.submodel(entry["index"]).predict(x, verbose=0)
        loaded = keras.models.load_model(directory / entry["files"]["keras"])
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def test_export_manifest_contents(exported):
    model, directory, manifest = exported
    assert sorted(p.name for p in directory.iterdir()) == [
        "head_0_depth_5",
        "head_1_depth_8",
        "manifest.json",
    ]
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk == manifest

    heads = manifest["heads"]
    assert [h["index"] for h in heads] == [0, 1]
    assert [h["output_name"] for h in heads] == ["head_0", "head_1"]
    assert [h["tap_layer"] for h in heads] == ["stage2_block1_out", None]
    assert [h["depth"] for h in heads] == [5, 8]
    assert [h["params"] for h in heads] == [HEAD0_PARAMS, HEAD1_PARAMS]
    assert [h["params"] for h in heads] == [model.submodel(i).count_params() for i in range(2)]
    assert [h["multiply_adds"] for h in heads] == [HEAD0_MULTIPLY_ADDS, HEAD1_MULTIPLY_ADDS]
    assert heads[0]["metrics"] == {"test_error_percent": 12.5}
    assert heads[1]["metrics"] == {"test_errors": 3}
    assert manifest["num_heads"] == 2
    assert manifest["input_shapes"] == [list(IMAGE_SHAPE)]

    assert heads[0]["files"] == {
        "saved_model": "head_0_depth_5/saved_model",
        "keras": "head_0_depth_5/model.keras",
    }
    for entry in heads:
        assert (directory / entry["files"]["saved_model"] / "saved_model.pb").is_file()
        assert (directory / entry["files"]["keras"]).is_file()


def test_export_subset_negative_index(tmp_path):
    model = tiny_resnet()
    metrics = [{"error": 1.0}, {"error": 2.0}]
    manifest = export.export_submodels(
        model, tmp_path, heads=[-1], formats=("keras",), metrics=metrics, verbose=0
    )
    assert [h["index"] for h in manifest["heads"]] == [1]
    assert manifest["heads"][0]["metrics"] == {"error": 2.0}
    assert manifest["heads"][0]["files"] == {"keras": "head_1_depth_8/model.keras"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_1_depth_8", "manifest.json"]
    assert sorted(p.name for p in (tmp_path / "head_1_depth_8").iterdir()) == ["model.keras"]


def test_export_metrics_by_head_index(tmp_path):
    model = tiny_resnet()
    manifest = export.export_submodels(
        model, tmp_path, formats=("keras",), metrics={-2: {"a": np.arange(2)}}, verbose=0
    )
    assert manifest["heads"][0]["metrics"] == {"a": [0, 1]}
    assert manifest["heads"][1]["metrics"] == {}


def test_export_progress_bar(tmp_path, capsys):
    model = tiny_resnet()
    export.export_submodels(model, tmp_path / "loud", formats=("keras",), verbose=1)
    assert "2/2" in capsys.readouterr().out
    export.export_submodels(model, tmp_path / "quiet", formats=("keras",), verbose=0)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------
# Errors.


INVALID_ARGUMENTS = [
    ({"formats": ("onnx",)}, "Unknown export format"),
    ({"formats": ()}, "non-empty"),
    ({"formats": ("keras", "keras")}, "more than once"),
    ({"heads": [2]}, r"Invalid head index 2.*\[-2, 1\]"),
    ({"heads": [-3]}, "Invalid head index -3"),
    ({"heads": [1, -1]}, "Head 1 is listed more than once"),
    ({"heads": [True]}, "integer head indices"),
    ({"heads": 0}, "list of head indices"),
    ({"heads": []}, "empty"),
    ({"metrics": {"head_7": {}}}, "no output of that name"),
    ({"metrics": [{}]}, "one dict per head"),
    ({"metrics": {"head_0": 3.0}}, "Expected a dict"),
    ({"metrics": {"head_0": {"when": object()}}}, "cannot be written to JSON"),
    ({"overwrite": "yes"}, "True or False"),
    ({"verbose": 3}, "verbose"),
]


def test_export_invalid_arguments(tmp_path):
    model = tiny_resnet()
    for kwargs, message in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=message):
            export.export_submodels(model, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()

    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="MultiWayModel"):
        export.export_submodels(plain, tmp_path / "out")


def test_export_overwrite_rules(tmp_path):
    model = tiny_resnet()
    stale = tmp_path / "head_1_depth_8" / "stale.txt"
    stale.parent.mkdir()
    stale.write_text("old")
    with pytest.raises(ValueError, match="head_1_depth_8.*overwrite=True"):
        export.export_submodels(model, tmp_path, formats=("keras",), verbose=0)
    assert not (tmp_path / "head_0_depth_5").exists()
    assert not (tmp_path / "manifest.json").exists()

    export.export_submodels(model, tmp_path, formats=("keras",), overwrite=True, verbose=0)
    assert not stale.exists()
    assert (tmp_path / "head_1_depth_8" / "model.keras").is_file()

    # The manifest of the export above now blocks a second export.
    with pytest.raises(ValueError, match="manifest.json"):
        export.export_submodels(model, tmp_path, heads=[0], formats=("keras",), verbose=0)

    # An empty head folder is not in the way.
    empty_target = tmp_path / "second"
    (empty_target / "head_0_depth_5").mkdir(parents=True)
    manifest = export.export_submodels(model, empty_target, formats=("keras",), verbose=0)
    assert len(manifest["heads"]) == 2


def test_export_write_failures_raise(tmp_path, monkeypatch):
    model = tiny_resnet()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        export.export_submodels(model, blocker / "out", formats=("keras",), verbose=0)

    def failing_save(self, filepath, *args, **kwargs):
        raise OSError(f"No space left on device: {filepath}")

    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save", failing_save)
        with pytest.raises(OSError, match="No space left"):
            export.export_submodels(model, tmp_path / "a", formats=("keras",), verbose=0)
    assert not (tmp_path / "a" / "manifest.json").exists()

    # An export that returns without writing must not pass silently.
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "export", lambda self, filepath, **kwargs: None)
        with pytest.raises(OSError, match="saved_model.pb was not written"):
            export.export_submodels(model, tmp_path / "b", formats=("saved_model",), verbose=0)
    assert not (tmp_path / "b" / "manifest.json").exists()


# ----------------------------------------------------------------------
# Command line.


def parse_export_args(argv):
    parser = argparse.ArgumentParser(prog="keras-mwbp export")
    export.add_export_arguments(parser)
    return parser.parse_args(argv)


def write_run(run_dir, model):
    """Writes a run folder as `keras-mwbp train` does: model and results."""
    run_dir.mkdir(parents=True)
    model.save(run_dir / "model.keras")
    results = {
        "heads": [
            {"head": "head_0", "depth": 5, "params": 1, "test_error_percent": 40.0, "test_errors": 4, "test_examples": 10},
            {"head": "head_1", "depth": 8, "params": 1, "test_error_percent": 20.0, "test_errors": 2, "test_examples": 10},
        ],
        "train_seconds": 1.0,
        "model_file": "model.keras",
        "settings": {"dataset": "digits"},
    }
    (run_dir / "results.json").write_text(json.dumps(results))


def test_export_command_run_folder(tmp_path, capsys):
    model = tiny_resnet()
    run_dir = tmp_path / "run"
    write_run(run_dir, model)
    args = parse_export_args([str(run_dir), "--heads", "0,-1", "--formats", "keras", "--verbose", "0"])

    assert export.export_command(args) == 0
    output = capsys.readouterr().out
    assert str(run_dir / "head_1_depth_8") in output
    assert str(run_dir / "manifest.json") in output

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [h["index"] for h in manifest["heads"]] == [0, 1]
    assert manifest["heads"][0]["metrics"] == {
        "test_error_percent": 40.0,
        "test_errors": 4,
        "test_examples": 10,
        "dataset": "digits",
    }
    assert manifest["heads"][1]["params"] == HEAD1_PARAMS
    loaded = keras.models.load_model(run_dir / "head_0_depth_5" / "model.keras")
    x = images()
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.submodel(0).predict(x, verbose=0), atol=1e-5
    )


def test_export_command_model_file_and_output_dir(tmp_path):
    model = tiny_resnet()
    model_path = tmp_path / "my_model.keras"
    model.save(model_path)
    out = tmp_path / "exported"
    args = parse_export_args([str(model_path), "--output-dir", str(out), "--heads", "1", "--verbose", "0"])
    assert export.export_command(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["heads"][0]["metrics"] == {}
    assert (out / "head_1_depth_8" / "saved_model" / "saved_model.pb").is_file()


def test_export_command_errors(tmp_path, capsys):
    args = parse_export_args([str(tmp_path / "missing")])
    assert export.export_command(args) == 2
    assert "was not found" in capsys.readouterr().err

    model = tiny_resnet()
    write_run(tmp_path / "run", model)
    args = parse_export_args([str(tmp_path / "run"), "--heads", "5", "--verbose", "0"])
    assert export.export_command(args) == 2
    assert "Invalid head index 5" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        parse_export_args([str(tmp_path / "run"), "--formats", "onnx"])
    with pytest.raises(SystemExit):
        parse_export_args([str(tmp_path / "run"), "--heads", "0,x"])


def test_export_tiny_dense_model(tmp_path):
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    aux = keras.layers.Dense(2, name="aux")(hidden)
    deep = keras.layers.Dense(3, name="deep")(hidden)
    final = keras.layers.Dense(2, name="final")(deep)
    model = MultiWayModel(inputs, [aux, final])

    manifest = export.export_submodels(model, tmp_path, verbose=0)
    assert [h["folder"] for h in manifest["heads"]] == ["head_0_depth_1", "head_1_depth_3"]
    assert [h["tap_layer"] for h in manifest["heads"]] == ["hidden", None]
    assert [h["params"] for h in manifest["heads"]] == [4 * 3 + 3 + 3 * 2 + 2, 4 * 3 + 3 + 3 * 3 + 3 + 3 * 2 + 2]
    assert [h["multiply_adds"] for h in manifest["heads"]] == [4 * 3 + 3 * 2, 4 * 3 + 3 * 3 + 3 * 2]

    x = np.random.RandomState(1).randn(5, 4).astype("float32")
    loaded = tf.saved_model.load(str(tmp_path / "head_1_depth_3" / "saved_model"))
    expected = model.submodel(1).predict(x, verbose=0)
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-5)
