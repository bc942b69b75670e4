"""Tests of `keras_mwbp.report`.

The hand-built models copy chosen input features to their logits, so each
head's test error follows from the inputs by a NumPy expression, and their
sizes and multiply-adds are small enough to count by hand.
"""

import argparse
import json
import math
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

import keras_mwbp
from keras_mwbp import MultiWayModel
from keras_mwbp.models import resnet_cifar
# Imported by name, because `keras_mwbp.report` may also name the function
# once the package exports it, and then hides the module of the same name.
from keras_mwbp.report import add_report_arguments
from keras_mwbp.report import plot_error_against_multiply_adds
from keras_mwbp.report import report
from keras_mwbp.report import report_command

NUM_EXAMPLES = 50

# Hand counts for `copying_model`: "hidden" and "deep" are 4x4 kernels,
# the heads 4x2 kernels, none with bias. Head 0 is hidden + aux, head 1 is
# hidden + deep + final, and a dense layer costs (inputs x units) per image.
HEAD_DEPTHS = [1, 3]
HEAD_PARAMS = [16 + 8, 16 + 16 + 8]
HEAD_MULTIPLY_ADDS = [4 * 4 + 4 * 2, 4 * 4 + 4 * 4 + 4 * 2]


def selector(columns):
    """A 4x2 kernel whose logits are features `columns[0]` and `columns[1]`."""
    kernel = np.zeros((4, 2), dtype="float32")
    kernel[columns[0], 0] = 1.0
    kernel[columns[1], 1] = 1.0
    return kernel


def copying_model(aux_columns=(0, 1), name="copying"):
    """A two-head model: the auxiliary head outputs two chosen features, the final head features 2 and 3."""
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(4, use_bias=False, name="hidden")
    aux = keras.layers.Dense(2, use_bias=False, name="aux")
    deep = keras.layers.Dense(4, use_bias=False, name="deep")
    final = keras.layers.Dense(2, use_bias=False, name="final")
    x = hidden(inputs)
    model = MultiWayModel(inputs, [aux(x), final(deep(x))], name=name)
    hidden.set_weights([np.eye(4, dtype="float32")])
    deep.set_weights([np.eye(4, dtype="float32")])
    aux.set_weights([selector(aux_columns)])
    final.set_weights([selector((2, 3))])
    return model


def features_and_labels(seed=0):
    x = np.random.RandomState(seed).randn(NUM_EXAMPLES, 4).astype("float32")
    y = np.argmax(x[:, 2:4], axis=-1).astype("int32")
    return x, y


def expected_error_percent(x, y, columns):
    return 100.0 * np.mean(np.argmax(x[:, list(columns)], axis=-1) != y)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Reports two runs whose auxiliary heads read different features, once per module."""
    x, y = features_and_labels()
    models = {
        "mwbp": copying_model((0, 1), name="first"),
        "joint": copying_model((1, 2), name="second"),
    }
    output_dir = tmp_path_factory.mktemp("report")
    rows = report(models, (x, y), output_dir=output_dir, batch_size=16, repeats=3, verbose=0)
    return rows, output_dir, x, y


def test_report_rows(two_runs):
    rows, _, x, y = two_runs
    assert [(row["run"], row["head"]) for row in rows] == [
        ("mwbp", 0),
        ("mwbp", 1),
        ("joint", 0),
        ("joint", 1),
    ]
    assert [row["output_name"] for row in rows] == ["aux", "final"] * 2
    assert [row["depth"] for row in rows] == HEAD_DEPTHS * 2
    assert [row["params"] for row in rows] == HEAD_PARAMS * 2
    assert [row["multiply_adds"] for row in rows] == HEAD_MULTIPLY_ADDS * 2
    assert [row["test_examples"] for row in rows] == [NUM_EXAMPLES] * 4

    expected_errors = [
        expected_error_percent(x, y, (0, 1)),
        0.0,
        expected_error_percent(x, y, (1, 2)),
        0.0,
    ]
    # The random features must make the auxiliary heads wrong sometimes.
    assert 0 < expected_errors[0] < 100
    assert 0 < expected_errors[2] < 100
    for row, expected in zip(rows, expected_errors):
        assert row["test_error_percent"] == pytest.approx(expected)
        assert row["test_errors"] == round(expected * NUM_EXAMPLES / 100)

    for row in rows:
        assert math.isfinite(row["ms_per_image"])
        assert row["ms_per_image"] > 0


def test_report_files(two_runs):
    rows, output_dir, _, _ = two_runs
    assert sorted(p.name for p in output_dir.iterdir()) == ["report.json", "report.md", "report.png"]

    markdown = (output_dir / "report.md").read_text()
    assert "| run | head | output | depth | parameters | multiply-adds | test error (%) | time per image (ms) |" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("| mwbp") or line.startswith("| joint")]
    assert len(table_rows) == 4
    assert table_rows[1].startswith("| mwbp | 1 | final | 3 | 40 | 40 | 0.00 |")
    assert "median of 3 timed calls" in markdown
    assert "batch of 16 images" in markdown

    content = json.loads((output_dir / "report.json").read_text())
    assert content["rows"] == rows
    assert content["timing"]["repeats"] == 3
    assert content["timing"]["batch_size"] == 16
    assert content["timing"]["statistic"] == "median"

    png_path = output_dir / "report.png"
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png_path)
    assert image.ndim == 3
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    # A blank canvas would have a single color.
    assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10


def test_report_plot_lines_and_legend(two_runs, tmp_path):
    rows, _, _, _ = two_runs
    figure = plot_error_against_multiply_adds(rows, tmp_path / "plot.png")
    axes = figure.axes[0]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["mwbp", "joint"]
    assert len(axes.get_lines()) == 2
    for line, run in zip(axes.get_lines(), ["mwbp", "joint"]):
        run_rows = [row for row in rows if row["run"] == run]
        np.testing.assert_allclose(line.get_xdata(), [m / 1e6 for m in HEAD_MULTIPLY_ADDS])
        np.testing.assert_allclose(line.get_ydata(), [r["test_error_percent"] for r in run_rows])
        assert line.get_marker() == "o"
    assert axes.get_xlabel() == "Multiply-adds per image (millions)"
    assert axes.get_ylabel() == "Test error (%)"


def test_report_dataset_and_one_hot(tmp_path):
    model = copying_model()
    x, y = features_and_labels(seed=3)
    expected = [expected_error_percent(x, y, (0, 1)), 0.0]
    one_hot = np.eye(2, dtype="float32")[y]
    sources = {
        "batched dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(7),
        "unbatched dataset": tf.data.Dataset.from_tensor_slices((x, y)),
        "one-hot labels": (x, one_hot),
        "with sample weights": tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(y)))).batch(8),
    }
    for label, data in sources.items():
        rows = report(model, data, output_dir=tmp_path / "out", repeats=1, verbose=0)
        errors = [row["test_error_percent"] for row in rows]
        assert errors == pytest.approx(expected), label
        assert [row["test_examples"] for row in rows] == [NUM_EXAMPLES] * 2, label


def test_report_single_model_and_progress(tmp_path, capsys):
    model = copying_model(name="solo")
    x, y = features_and_labels()
    rows = report(model, (x, y), output_dir=tmp_path, repeats=1, verbose=1)
    assert [row["run"] for row in rows] == ["solo", "solo"]
    output = capsys.readouterr().out
    assert "2/2" in output
    assert "| solo | 1 | final |" in output
    assert str(tmp_path / "report.png") in output

    report(model, (x, y), output_dir=tmp_path, repeats=1, verbose=0)
    assert capsys.readouterr().out == ""

    # A plain functional model counts as one head per output.
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    plain = keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden), name="plain")
    (row,) = report(plain, (x, y), output_dir=tmp_path, repeats=1, verbose=0)
    assert row["depth"] == 2
    assert row["params"] == 4 * 3 + 3 + 3 * 2 + 2
    assert row["multiply_adds"] == 4 * 3 + 3 * 2


def test_report_invalid_arguments(tmp_path):
    model = copying_model()
    x, y = features_and_labels()
    inputs = [keras.Input((4,)), keras.Input((4,))]
    two_inputs = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()(inputs)))
    cases = [
        ((model, (x[:, :3], y)), {}, r"shape \(3,\).*expects inputs of shape \(4,\)"),
        ((model, (x, y[:10])), {}, "same number of examples"),
        ((model, (x[:0], y[:0])), {}, "no example"),
        ((model, x), {}, "tuple"),
        (({}, (x, y)), {}, "dict is empty"),
        (({"": model}, (x, y)), {}, "non-empty strings"),
        ((two_inputs, (x, y)), {}, "exactly one input"),
        ((model, (x, y)), {"repeats": 0}, "repeats"),
        ((model, (x, y)), {"batch_size": 2.5}, "batch_size"),
        ((model, (x, y)), {"verbose": 5}, "verbose"),
        ((model, (x, np.zeros((NUM_EXAMPLES, 3)))), {}, "labels of shape"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            report(*args, output_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------
# Command line.


def parse_report_args(argv):
    parser = argparse.ArgumentParser(prog="keras-mwbp report")
    add_report_arguments(parser)
    return parser.parse_args(argv)


def save_run(run_dir, model, dataset="digits"):
    run_dir.mkdir(parents=True)
    model.save(run_dir / "model.keras")
    if dataset is not None:
        results = {"heads": [], "settings": {"dataset": dataset}}
        (run_dir / "results.json").write_text(json.dumps(results))


def tiny_resnet():
    with warnings.catch_warnings():
        # resnet_cifar warns that heads 3 layers apart are close together.
        warnings.simplefilter("ignore", UserWarning)
        return resnet_cifar(8, num_aux=1, input_shape=(8, 8, 1))


def test_report_command_end_to_end(tmp_path, capsys):
    first = tiny_resnet()
    second = tiny_resnet()
    save_run(tmp_path / "run_a", first)
    save_run(tmp_path / "run_b", second)
    output_dir = tmp_path / "report"
    args = parse_report_args(
        [
            str(tmp_path / "run_a" / "model.keras"),
            str(tmp_path / "run_b"),
            "--names",
            "mwbp,joint",
            "--output-dir",
            str(output_dir),
            "--repeats",
            "2",
            "--verbose",
            "0",
        ]
    )
    assert report_command(args) == 0
    output = capsys.readouterr().out
    for filename in ("report.md", "report.json", "report.png"):
        assert (output_dir / filename).is_file()
        assert str(output_dir / filename) in output

    rows = json.loads((output_dir / "report.json").read_text())["rows"]
    assert [(row["run"], row["depth"]) for row in rows] == [("mwbp", 5), ("mwbp", 8), ("joint", 5), ("joint", 8)]

    # The dataset is read from results.json. The reference errors come from
    # Keras's own predict on the same test split.
    _, (x_test, y_test) = keras_mwbp.data.load_arrays("digits")
    for model, run_rows in ((first, rows[:2]), (second, rows[2:])):
        predictions = model.predict(x_test, verbose=0)
        for logits, row in zip(predictions, run_rows):
            expected = 100.0 * np.mean(np.argmax(logits, axis=-1) != y_test)
            assert row["test_error_percent"] == pytest.approx(expected)
            assert row["test_examples"] == len(y_test)


def test_report_command_errors(tmp_path, capsys):
    model = copying_model()
    save_run(tmp_path / "no_results", model, dataset=None)
    save_run(tmp_path / "mnist_run", copying_model(), dataset="mnist")
    save_run(tmp_path / "digits_run", copying_model(), dataset="digits")

    cases = [
        ([str(tmp_path / "missing.keras")], "was not found"),
        ([str(tmp_path / "no_results")], "Pass --dataset"),
        ([str(tmp_path / "mnist_run"), str(tmp_path / "digits_run")], "different datasets"),
        ([str(tmp_path / "digits_run"), "--names", "a,b"], "one name per model"),
        ([str(tmp_path / "digits_run"), str(tmp_path / "digits_run" / "model.keras")], "same run name"),
        # The copying model reads 4 features, not 8x8 digit images.
        ([str(tmp_path / "digits_run")], "expects inputs of shape"),
    ]
    for argv, message in cases:
        args = parse_report_args([*argv, "--output-dir", str(tmp_path / "out"), "--verbose", "0"])
        assert report_command(args) == 2, argv
        assert message in capsys.readouterr().err, argv

    with pytest.raises(SystemExit):
        parse_report_args([str(tmp_path / "digits_run"), "--dataset", "cifar10"])
