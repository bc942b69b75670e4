"""Tests for the `keras-mwbp` command line.

Training runs in-process on the scikit-learn digits with ResNet-8 and one
auxiliary head, so a run takes seconds. Head depths and parameter counts are
worked out by hand from the architecture, never read from the CLI's output.
"""

import contextlib
import io
import json
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_mwbp import cli
from keras_mwbp import data
from keras_mwbp import training_recipe
from keras_mwbp.model import MultiWayModel

TINY_TRAIN_ARGS = [
    "train",
    "--dataset", "digits",
    "--depth", "8",
    "--num-aux", "1",
    "--epochs", "1",
    "--batch-size", "64",
    "--verbose", "0",
]
DEFAULT_RUN_NAME = "resnet8_digits_mwbp_seed0"
# ResNet-8 has n = 1 block per stage, so N = 3 blocks. One auxiliary head reads
# block r + s with s = floor(3 / 2) = 1 and r = 3 - 2 * 1 = 1, that is block 2,
# after 1 + 2 * 2 = 5 weighted layers. The final head is at depth 8.
EXPECTED_DEPTHS = [5, 8]


def conv3x3_params(c_in, c_out):
    return 9 * c_in * c_out


def batch_norm_params(channels):
    # gamma, beta, moving mean and moving variance
    return 4 * channels


def dense_params(c_in, c_out):
    return c_in * c_out + c_out


def expected_head_params():
    """Count the parameters of both ResNet-8 heads on 8x8x1 digits by hand."""
    stem = conv3x3_params(1, 16) + batch_norm_params(16)
    block1 = 2 * conv3x3_params(16, 16) + 2 * batch_norm_params(16)
    block2 = conv3x3_params(16, 32) + conv3x3_params(32, 32) + 2 * batch_norm_params(32)
    block3 = conv3x3_params(32, 64) + conv3x3_params(64, 64) + 2 * batch_norm_params(64)
    # The auxiliary head is BN-ReLU-global average pooling-dense on block 2's
    # 32 channels. The final head is global average pooling-dense.
    aux_head = batch_norm_params(32) + dense_params(32, 10)
    final_head = dense_params(64, 10)
    return [
        stem + block1 + block2 + aux_head,
        stem + block1 + block2 + block3 + final_head,
    ]


def parse_head_table(output):
    """Return the rows of the printed head table as dicts."""
    lines = output.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("head ") and "test error (%)" in line
    )
    rows = []
    for line in lines[start + 2:]:
        fields = line.split()
        if len(fields) != 4 or not fields[0].startswith("head_"):
            break
        rows.append(
            {
                "head": fields[0],
                "depth": int(fields[1]),
                "params": int(fields[2].replace(",", "")),
                "test_error_percent": float(fields[3]),
            }
        )
    return rows


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Seed the generators without the `clear_session` of conftest.py's fixture.

    With the module-scoped models below alive, `clear_session` took about 1 s
    before and after every test, more than half of this file's run time. Each
    CLI run here builds its own model with explicit layer names, so it does
    not depend on the cleared state.
    """
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Run the tiny training once and keep its output, exit code and model.

    pytest's `capsys` is function-scoped, so this module-scoped run captures
    stdout with `redirect_stdout`. A wrapper around `MultiWayModel.save`
    keeps the trained model, so that the tests can compare it with the file.
    """
    output_dir = tmp_path_factory.mktemp("runs")
    saved_models = []
    original_save = MultiWayModel.save

    def save_and_keep(model, *args, **kwargs):
        saved_models.append(model)
        return original_save(model, *args, **kwargs)

    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        # ResNet-8 with one auxiliary head is deliberately below the
        # recommended head spacing, and resnet_cifar warns about it.
        warnings.filterwarnings("ignore", message="num_aux=1 puts a head", category=UserWarning)
        patch.setattr(MultiWayModel, "save", save_and_keep)
        with contextlib.redirect_stdout(stdout):
            exit_code = cli.main([*TINY_TRAIN_ARGS, "--output-dir", str(output_dir)])

    return {
        "exit_code": exit_code,
        "output": stdout.getvalue(),
        "run_dir": output_dir / DEFAULT_RUN_NAME,
        "saved_models": saved_models,
    }


@pytest.fixture(scope="module")
def digits_test_split():
    _, (x_test, y_test) = data.load_arrays("digits")
    return x_test, y_test


@pytest.fixture(scope="module")
def reloaded_model(trained_run):
    return keras.models.load_model(trained_run["run_dir"] / cli.MODEL_FILENAME)


# --- The trained run ---


def test_train_returns_zero(trained_run):
    assert trained_run["exit_code"] == 0


def test_train_table_has_one_row_per_head(trained_run):
    rows = parse_head_table(trained_run["output"])

    assert [row["head"] for row in rows] == ["head_0", "head_1"]
    assert [row["depth"] for row in rows] == EXPECTED_DEPTHS


def test_train_table_params_match_hand_count(trained_run):
    rows = parse_head_table(trained_run["output"])

    assert [row["params"] for row in rows] == expected_head_params()


def test_train_table_params_match_reloaded_submodels(trained_run, reloaded_model):
    rows = parse_head_table(trained_run["output"])
    submodel_params = [reloaded_model.submodel(i).count_params() for i in range(2)]

    assert [row["params"] for row in rows] == submodel_params


def test_train_table_errors_match_reloaded_model(trained_run, reloaded_model, digits_test_split):
    x_test, y_test = digits_test_split
    rows = parse_head_table(trained_run["output"])
    predictions = reloaded_model.predict(x_test, verbose=0)

    for row, logits in zip(rows, predictions, strict=True):
        error = 100.0 * np.mean(np.argmax(logits, axis=-1) != y_test)
        assert row["test_error_percent"] == pytest.approx(error, abs=0.005)


def test_train_prints_saved_model_path(trained_run):
    model_path = trained_run["run_dir"] / cli.MODEL_FILENAME

    assert f"Saved the model to {model_path}" in trained_run["output"]


def test_train_saves_keras_file_once(trained_run):
    assert (trained_run["run_dir"] / cli.MODEL_FILENAME).is_file()
    assert len(trained_run["saved_models"]) == 1


def test_saved_model_reloads_as_multiway_model(reloaded_model):
    assert isinstance(reloaded_model, MultiWayModel)
    assert reloaded_model.head_depths == EXPECTED_DEPTHS


def test_saved_model_gives_same_predictions(trained_run, reloaded_model, digits_test_split):
    x_test, _ = digits_test_split
    trained_model = trained_run["saved_models"][0]

    expected = trained_model.predict(x_test, verbose=0)
    actual = reloaded_model.predict(x_test, verbose=0)

    assert len(actual) == len(expected) == 2
    for head in range(2):
        np.testing.assert_allclose(actual[head], expected[head], rtol=1e-5, atol=1e-5)


def test_results_json_matches_table(trained_run):
    results = json.loads((trained_run["run_dir"] / cli.RESULTS_FILENAME).read_text())
    rows = parse_head_table(trained_run["output"])

    assert [row["head"] for row in results["heads"]] == [row["head"] for row in rows]
    assert [row["depth"] for row in results["heads"]] == EXPECTED_DEPTHS
    assert [row["params"] for row in results["heads"]] == expected_head_params()
    for saved, printed in zip(results["heads"], rows, strict=True):
        expected_error = pytest.approx(printed["test_error_percent"], abs=0.005)
        assert saved["test_error_percent"] == expected_error
        assert saved["test_examples"] == 360


def test_results_json_records_settings(trained_run):
    results = json.loads((trained_run["run_dir"] / cli.RESULTS_FILENAME).read_text())
    settings = results["settings"]

    assert results["model_file"] == cli.MODEL_FILENAME
    assert settings["dataset"] == "digits"
    assert settings["depth"] == 8
    assert settings["num_aux"] == 1
    assert settings["backprop"] == "mwbp"
    assert settings["nu"] == 2.0
    assert settings["epochs"] == 1
    assert settings["batch_size"] == 64
    assert settings["seed"] == 0
    assert settings["run_name"] == DEFAULT_RUN_NAME
    # 1,437 training digits in batches of 64 give 23 steps.
    assert settings["recipe"]["total_steps"] == 23
    assert settings["recipe"]["weight_decay"] == 1e-4
    assert settings["recipe"]["momentum"] == 0.9
    assert settings["recipe"]["nesterov"] is True


# --- Help and usage errors ---


def test_python_m_train_help_exits_zero():
    completed = subprocess.run(
        [sys.executable, "-m", "keras_mwbp", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "usage: keras-mwbp train" in completed.stdout
    options = ("--dataset", "--depth", "--num-aux", "--taps", "--nu", "--epochs", "--output-dir")
    for option in options:
        assert option in completed.stdout
    assert "decoupled" in completed.stdout


def test_main_help_returns_zero(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "--batch-size" in capsys.readouterr().out


def test_main_without_command_returns_two(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_train_rejects_depth_21(capsys, tmp_path):
    output_dir = tmp_path / "out"

    exit_code = cli.main(["train", "--depth", "21", "--output-dir", str(output_dir)])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "argument --depth" in error
    assert "6n + 2" in error
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "arguments, option",
    [
        (["--depth", "2"], "--depth"),
        (["--depth", "twenty"], "--depth"),
        (["--nu", "-1"], "--nu"),
        (["--nu", "nan"], "--nu"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "-8"], "--batch-size"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--seed", "-1"], "--seed"),
        (["--verbose", "3"], "--verbose"),
        (["--dataset", "cifar10"], "--dataset"),
        (["--backprop", "sideways"], "--backprop"),
        (["--run-name", "../elsewhere"], "--run-name"),
        (["--taps", "stage1_block1_out,"], "--taps"),
        (["--num-aux", "1", "--taps", "stage1_block1_out"], "--taps"),
        (["--depth", "8", "--num-aux", "3"], "--num-aux"),
        (["--num-aux", "0"], "--backprop"),
    ],
)
def test_train_rejects_invalid_value(capsys, tmp_path, arguments, option):
    output_dir = tmp_path / "out"

    exit_code = cli.main(["train", *arguments, "--output-dir", str(output_dir)])

    assert exit_code == 2
    assert f"argument {option}" in capsys.readouterr().err
    assert not output_dir.exists()


def test_train_rejects_unknown_tap(capsys, tmp_path):
    arguments = ["train", "--dataset", "digits", "--depth", "8", "--taps", "stage9_block1_out"]

    exit_code = cli.main([*arguments, "--output-dir", str(tmp_path)])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "argument --taps" in error
    assert "stage9_block1_out" in error
    assert not (tmp_path / DEFAULT_RUN_NAME).exists()


def test_train_rejects_existing_run_without_overwrite(capsys, tmp_path):
    run_dir = tmp_path / DEFAULT_RUN_NAME
    run_dir.mkdir()
    (run_dir / cli.MODEL_FILENAME).write_bytes(b"earlier run")

    exit_code = cli.main([*TINY_TRAIN_ARGS, "--output-dir", str(tmp_path)])

    assert exit_code == 2
    error = capsys.readouterr().err
    assert "argument --run-name" in error
    assert "--overwrite" in error
    assert (run_dir / cli.MODEL_FILENAME).read_bytes() == b"earlier run"


def test_train_overwrite_replaces_earlier_run(monkeypatch, tmp_path):
    run_dir = tmp_path / DEFAULT_RUN_NAME
    run_dir.mkdir()
    (run_dir / cli.MODEL_FILENAME).write_bytes(b"earlier run")
    (run_dir / cli.RESULTS_FILENAME).write_text("{}")
    # Training is skipped because only the saving step matters here.
    monkeypatch.setattr(MultiWayModel, "fit", lambda model, *args, **kwargs: None)
    arguments = [*TINY_TRAIN_ARGS, "--overwrite", "--output-dir", str(tmp_path)]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="num_aux=1 puts a head", category=UserWarning)
        exit_code = cli.main(arguments)

    assert exit_code == 0
    assert (run_dir / cli.MODEL_FILENAME).read_bytes() != b"earlier run"
    results = json.loads((run_dir / cli.RESULTS_FILENAME).read_text())
    assert len(results["heads"]) == 2


def test_train_save_failure_raises(monkeypatch, tmp_path):
    run_dir = tmp_path / DEFAULT_RUN_NAME
    run_dir.mkdir()
    (run_dir / cli.RESULTS_FILENAME).write_text("{}")

    def fail_save(model, *args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(MultiWayModel, "fit", lambda model, *args, **kwargs: None)
    monkeypatch.setattr(MultiWayModel, "save", fail_save)
    arguments = [*TINY_TRAIN_ARGS, "--overwrite", "--output-dir", str(tmp_path)]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="num_aux=1 puts a head", category=UserWarning)
        with pytest.raises(OSError, match="disk full"):
            cli.main(arguments)

    # The earlier run's results must not survive next to a model that was
    # not saved.
    assert not (run_dir / cli.RESULTS_FILENAME).exists()


# --- The training recipe ---


def test_learning_rate_drops_at_40_and_60_percent():
    schedule = training_recipe.learning_rate_schedule(0.1, total_steps=100)

    def rate(step):
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert rate(0) == pytest.approx(0.1)
    assert rate(39) == pytest.approx(0.1)
    assert rate(40) == pytest.approx(0.01)
    assert rate(59) == pytest.approx(0.01)
    assert rate(60) == pytest.approx(0.001)
    assert rate(99) == pytest.approx(0.001)


def test_recipe_optimizer_settings():
    optimizer = training_recipe.make_optimizer(0.1, total_steps=100)

    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.momentum == pytest.approx(0.9)
    assert optimizer.nesterov is True
    assert optimizer.weight_decay == pytest.approx(1e-4)
