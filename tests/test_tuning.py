"""Tests for `keras_mwbp.tuning`: the hypermodel, its metrics and `tune`.

The searches train on a few hundred scikit-learn digits for one epoch, with
a plain 8-convolution backbone (depth 9, so K is 0 or 1) or, for the
command, ResNet-14. Expected depths, K ranges and parameter counts are
worked out by hand here, never read from the code under test.
"""

import argparse
import contextlib
import inspect
import io
import json
import math
import re

import keras
import keras_tuner
import numpy as np
import pytest

import keras_mwbp
from keras_mwbp import data
from keras_mwbp import tuning
from keras_mwbp import tuning_command

# ----------------------------------------------------------------------
# Helpers.

TINY_DEPTH = 9  # 8 convolutions and the dense layer of the final head.


def tiny_builder(num_aux, head):
    """Builds an 8-convolution backbone on 8x8x1 digits with K heads."""
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for index in range(8):
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"conv{index}")(x)
    backbone = keras.Model(inputs, x, name="tiny")
    return keras_mwbp.attach_heads(backbone, num_aux=num_aux, head=head, num_classes=10)


def tiny_hypermodel(**kwargs):
    # nu has one value, so the space is K in {0, 1} and two trials must
    # differ in K (the oracles do not repeat a set of values).
    options = {"model_builder": tiny_builder, "nu_values": [2.0], "min_aux": 0}
    options.update(kwargs)
    return tuning.MultiWayHyperModel(TINY_DEPTH, **options)


@pytest.fixture(scope="module")
def digits_subset():
    (x, y), _ = data.load_arrays("digits")
    return (x[:256], y[:256]), (x[256:384], y[256:384])


def tau(depth, num_aux):
    return math.ceil(depth / (num_aux + 1))


# ----------------------------------------------------------------------
# Range of K.


# Pairs (L, largest K) with tau(L, K) >= 5 > tau(L, K + 1), by hand:
#   L = 8:  tau(8, 1) = 4.
#   L = 9:  tau(9, 1) = 5, tau(9, 2) = 3.
#   L = 14: tau(14, 2) = 5, tau(14, 3) = 4.
#   L = 20: tau(20, 3) = 5, tau(20, 4) = 4.
#   L = 32: tau(32, 6) = ceil(32 / 7) = 5, tau(32, 7) = 4.
#   L = 56: tau(56, 12) = ceil(56 / 13) = 5, tau(56, 13) = 4.
# A depth of 4 has no room for any auxiliary head.
MAX_AUX_BY_DEPTH = [(4, 0), (8, 0), (9, 1), (14, 2), (20, 3), (32, 6), (56, 12)]


def test_max_num_aux_by_hand():
    for depth, expected in MAX_AUX_BY_DEPTH:
        assert tuning.max_num_aux(depth) == expected, f"depth={depth}"
        assert tau(depth, expected + 1) < 5, f"depth={depth}"


def test_hypermodel_k_range_respects_tau():
    for depth, expected_max in MAX_AUX_BY_DEPTH:
        if depth < 14 or (depth - 2) % 6 != 0:
            continue  # Not a ResNet depth with room for a head.
        hypermodel = tuning.MultiWayHyperModel(depth, input_shape=(8, 8, 1))
        hp = keras_tuner.HyperParameters()
        hypermodel.declare_search_space(hp)

        num_aux = hp._hps["num_aux"][0]
        assert num_aux.min_value == 1, f"depth={depth}"
        assert num_aux.max_value == expected_max, f"depth={depth}"


def test_hypermodel_default_nu_choices():
    hypermodel = tuning.MultiWayHyperModel(14, input_shape=(8, 8, 1))
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_search_space(hp)

    assert list(hp._hps["nu"][0].values) == [0.0, 1.0, 2.0, 5.0]


def test_hypermodel_nu_range_is_float():
    hypermodel = tuning.MultiWayHyperModel(14, nu_range=(0.5, 2.0))
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_search_space(hp)

    nu = hp._hps["nu"][0]
    assert isinstance(nu, keras_tuner.engine.hyperparameters.Float)
    assert (nu.min_value, nu.max_value) == (0.5, 2.0)


# ----------------------------------------------------------------------
# Summary metrics.


def test_summary_prefers_shallow_head_within_delta():
    summary = tuning.summarize_head_accuracies([0.90, 0.95, 0.96], [5, 9, 14], delta=0.01)

    assert summary["final_accuracy"] == pytest.approx(0.96)
    assert summary["best_head_accuracy"] == pytest.approx(0.96)
    assert summary["best_head_depth"] == 14
    assert summary["shallowest_within_accuracy"] == pytest.approx(0.95)
    assert summary["shallowest_within_depth"] == 9
    assert summary["compact_score"] == pytest.approx(0.95 - 0.01 * 9 / 14)


def test_summary_best_head_below_final():
    summary = tuning.summarize_head_accuracies([0.97, 0.80, 0.93], [5, 9, 14], delta=0.05)

    assert summary["final_accuracy"] == pytest.approx(0.93)
    assert summary["best_head_accuracy"] == pytest.approx(0.97)
    assert summary["best_head_depth"] == 5
    assert summary["shallowest_within_depth"] == 5
    assert summary["compact_score"] == pytest.approx(0.97 - 0.05 * 5 / 14)


def test_summary_zero_delta_and_ties():
    # Two heads tie for the best accuracy, and the shallower one is chosen.
    summary = tuning.summarize_head_accuracies([0.5, 0.9, 0.9], [5, 9, 14], delta=0.0)

    assert summary["best_head_depth"] == 9
    assert summary["shallowest_within_depth"] == 9
    assert summary["compact_score"] == pytest.approx(0.9)


def test_summary_single_head():
    summary = tuning.summarize_head_accuracies([0.7], [8], delta=0.01)

    assert summary["final_accuracy"] == pytest.approx(0.7)
    assert summary["shallowest_within_depth"] == 8
    assert summary["compact_score"] == pytest.approx(0.7 - 0.01)


def test_summary_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="one accuracy and one depth per head"):
        tuning.summarize_head_accuracies([0.5, 0.6], [5])


def test_callback_writes_train_and_val_keys():
    model = tiny_builder(1, "bn_relu_gap_fc")
    callback = tuning.HeadSummaryCallback(delta=0.1)
    callback.set_model(model)
    logs = {
        "head_0_accuracy": 0.85,
        "head_1_accuracy": 0.9,
        "val_head_0_accuracy": 0.7,
        "val_head_1_accuracy": 0.9,
    }

    callback.on_epoch_end(0, logs)

    assert logs["final_accuracy"] == pytest.approx(0.9)
    assert logs["shallowest_within_depth"] == model.head_depths[0]
    assert logs["val_final_accuracy"] == pytest.approx(0.9)
    assert logs["val_shallowest_within_depth"] == model.head_depths[1]
    assert set(tuning.SUMMARY_METRICS) <= set(logs)


def test_callback_single_head_reads_accuracy():
    model = tiny_builder(0, "bn_relu_gap_fc")
    callback = tuning.HeadSummaryCallback()
    callback.set_model(model)
    logs = {"accuracy": 0.6, "loss": 1.0}

    callback.on_epoch_end(0, logs)

    assert logs["best_head_accuracy"] == pytest.approx(0.6)
    assert "val_final_accuracy" not in logs


def test_callback_without_accuracy_raises():
    model = tiny_builder(1, "bn_relu_gap_fc")
    callback = tuning.HeadSummaryCallback()
    callback.set_model(model)

    with pytest.raises(ValueError, match=r'metrics=\["accuracy"\]'):
        callback.on_epoch_end(0, {"loss": 1.0})


def test_objective_for_names():
    metrics = {
        "final": "val_final_accuracy",
        "best_head": "val_best_head_accuracy",
        "compact": "val_compact_score",
    }
    for name, metric in metrics.items():
        objective = tuning.objective_for(name)

        assert objective.name == metric
        assert objective.direction == "max"


def test_objective_for_training_metric():
    assert tuning.objective_for("final", validation=False).name == "final_accuracy"


# ----------------------------------------------------------------------
# Building one trial's model.


def test_build_without_heads_uses_standard():
    hypermodel = tiny_hypermodel(backprop=["mwbp", "joint"])
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_aux", 0)

    model = hypermodel.build(hp)

    assert model.num_heads == 1
    assert model.backprop == "standard"
    # "backprop" is conditional on K >= 1, so it is inactive here.
    assert not hp.is_active(hp._hps["backprop"][0])


def test_build_with_heads_sets_nu_and_method():
    hypermodel = tiny_hypermodel(nu_values=[1.0, 5.0], backprop=["joint", "mwbp"])
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_aux", 1)
    hp.Fixed("nu", 5.0)
    hp.Fixed("backprop", "joint")

    model = hypermodel.build(hp)

    assert model.num_heads == 2
    assert model.backprop == "joint"
    assert float(model.nu.numpy()) == 5.0
    # gamma_0 = max(0.01, (L_0 / L_0) ** 5) = 1 for the only auxiliary head.
    np.testing.assert_allclose(model.loss_weights_now(), [1.0, 1.0])
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov
    assert optimizer.momentum == pytest.approx(0.9)


def test_build_resnet_default():
    hypermodel = tuning.MultiWayHyperModel(14, input_shape=(8, 8, 1), num_classes=10)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_aux", 2)

    model = hypermodel.build(hp)

    # ResNet-14 has N = 6 blocks. K = 2 puts heads on blocks 2 and 4
    # (s = 2, r = 0), after 1 + 2 * 2 = 5 and 1 + 2 * 4 = 9 layers.
    assert model.head_depths == [5, 9, 14]
    assert model.output_names == ["head_0", "head_1", "head_2"]


def test_build_rejects_builder_with_wrong_depth():
    hypermodel = tuning.MultiWayHyperModel(10, model_builder=tiny_builder, min_aux=0, max_aux=0)
    hp = keras_tuner.HyperParameters()

    with pytest.raises(ValueError, match=r"final head at depth=10"):
        hypermodel.build(hp)


def test_optimizer_instance_is_copied_per_trial():
    optimizer = keras.optimizers.Adam(learning_rate=0.003)
    hypermodel = tiny_hypermodel(optimizer=optimizer)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_aux", 1)

    model = hypermodel.build(hp)

    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.optimizer is not optimizer
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)


class LogKeysRecorder(keras.callbacks.Callback):
    """Records the log keys that a callback sees at each epoch end."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def on_epoch_end(self, epoch, logs=None):
        self.keys.append(set(logs))


def test_fit_runs_summary_callback_first(digits_subset):
    (x, y), validation = digits_subset
    hypermodel = tiny_hypermodel()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("num_aux", 1)
    model = hypermodel.build(hp)
    recorder = LogKeysRecorder()

    history = hypermodel.fit(
        hp, model, x, y, validation_data=validation, epochs=1, callbacks=[recorder], verbose=0
    )

    # The tuner's callbacks come after the caller's, so a caller's callback
    # that sees the summary metrics means the tuner's callbacks see them too.
    assert len(recorder.keys) == 1
    assert "val_compact_score" in recorder.keys[0]
    assert "val_final_accuracy" in history.history


# ----------------------------------------------------------------------
# Invalid arguments.


# (keyword arguments, the argument the message names, a fragment of the fix).
INVALID_HYPERMODEL_ARGUMENTS = [
    ({"depth": 14, "max_aux": 3}, "max_aux", "Pass max_aux <= 2"),
    ({"depth": 8}, "min_aux", "Lower min_aux"),
    ({"depth": 14, "min_aux": -1}, "min_aux", "integer of at least 0"),
    ({"depth": 15}, "depth", "6n + 2"),
    ({"depth": 14, "nu_values": [1.0, -2.0]}, "nu_values", "non-negative"),
    ({"depth": 14, "nu_values": [1.0, 1.0]}, "nu_values", "Remove the repeats"),
    ({"depth": 14, "nu_range": (2.0, 1.0)}, "nu_range", "min < max"),
    ({"depth": 14, "backprop": "mwpb"}, "backprop", "'mwbp'"),
    ({"depth": 14, "head": ["gap_fc", "fc"]}, "head", "'bn_relu_gap_fc'"),
    ({"depth": 14, "delta": 2.0}, "delta", "[0, 1]"),
    ({"depth": 14, "learning_rate": -0.1}, "learning_rate", "positive float"),
    ({"depth": 14, "optimizer": 3}, "optimizer", "callable"),
    ({"depth": 14, "num_classes": 1}, "num_classes", "integer of at least 2"),
    ({"depth": 14, "input_shape": (8, 8)}, "input_shape", "(height, width, channels)"),
    (
        {"depth": 14, "nu_values": [1.0], "nu_range": (0.5, 2.0)},
        "nu_values",
        "Pass nu_values=[...] for a choice",
    ),
    (
        {"depth": 14, "optimizer": "adam", "learning_rate": 0.1},
        "learning_rate",
        "Set the learning rate in the optimizer",
    ),
    (
        {"depth": 9, "model_builder": tiny_builder, "input_shape": (8, 8, 1)},
        "input_shape",
        "Let `model_builder` set the input_shape",
    ),
]


def test_hypermodel_invalid_arguments():
    for kwargs, argument, fix in INVALID_HYPERMODEL_ARGUMENTS:
        with pytest.raises(ValueError) as info:
            tuning.MultiWayHyperModel(**kwargs)

        message = str(info.value)
        assert f"`{argument}`" in message, kwargs
        assert "Received:" in message, kwargs
        assert fix in message, kwargs


def test_objective_for_unknown_name():
    with pytest.raises(ValueError, match=r"`name`.*'compact'.*Received: name='smallest'"):
        tuning.objective_for("smallest")


# ----------------------------------------------------------------------
# Searches with each tuner.


def assert_trials_report_objective(tuner, objective_name):
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 2
    for trial in trials:
        assert trial.status == "COMPLETED"
        assert trial.metrics.exists(objective_name)
        assert trial.score is not None
    num_aux_values = sorted(trial.hyperparameters.get("num_aux") for trial in trials)
    assert num_aux_values == [0, 1]

    best = tuner.get_best_hyperparameters()[0]
    assert best.get("nu") == 2.0
    assert best.get("num_aux") in (0, 1)


def test_random_search_mixed_k(tmp_path, digits_subset):
    (x, y), validation = digits_subset
    objective = tuning.objective_for("compact")
    tuner = keras_tuner.RandomSearch(
        tiny_hypermodel(),
        objective=objective,
        max_trials=2,
        seed=1,
        directory=str(tmp_path),
        project_name="random",
    )

    tuner.search(x, y, validation_data=validation, epochs=1, batch_size=64, verbose=0)

    assert_trials_report_objective(tuner, objective.name)
    best_model = tuner.get_best_models(1)[0]
    assert best_model.num_heads == tuner.get_best_hyperparameters()[0].get("num_aux") + 1


def test_bayesian_search_mixed_k(tmp_path, digits_subset):
    (x, y), validation = digits_subset
    objective = tuning.objective_for("best_head")
    tuner = keras_tuner.BayesianOptimization(
        tiny_hypermodel(),
        objective=objective,
        max_trials=2,
        seed=2,
        directory=str(tmp_path),
        project_name="bayesian",
    )

    tuner.search(x, y, validation_data=validation, epochs=1, batch_size=64, verbose=0)

    assert_trials_report_objective(tuner, objective.name)


def test_hyperband_search_mixed_k(tmp_path, digits_subset):
    (x, y), validation = digits_subset
    objective = tuning.objective_for("final")
    # With max_epochs=1 each Hyperband iteration is one trial of one epoch.
    tuner = keras_tuner.Hyperband(
        tiny_hypermodel(),
        objective=objective,
        max_epochs=1,
        hyperband_iterations=2,
        seed=3,
        directory=str(tmp_path),
        project_name="hyperband",
    )

    tuner.search(x, y, validation_data=validation, batch_size=64, verbose=0)

    assert_trials_report_objective(tuner, objective.name)


# ----------------------------------------------------------------------
# The `tune` command.


def conv3x3_params(c_in, c_out):
    return 9 * c_in * c_out


def batch_norm_params(channels):
    # gamma, beta, moving mean and moving variance
    return 4 * channels


def dense_params(c_in, c_out):
    return c_in * c_out + c_out


def resnet14_digits_head_params():
    """Counts the parameters of every ResNet-14 head on 8x8x1 digits by hand.

    Returns a dict from K to the list of (depth, params) of each head.
    """
    stem = conv3x3_params(1, 16) + batch_norm_params(16)
    identity_16 = 2 * conv3x3_params(16, 16) + 2 * batch_norm_params(16)
    down_32 = conv3x3_params(16, 32) + conv3x3_params(32, 32) + 2 * batch_norm_params(32)
    identity_32 = 2 * conv3x3_params(32, 32) + 2 * batch_norm_params(32)
    down_64 = conv3x3_params(32, 64) + conv3x3_params(64, 64) + 2 * batch_norm_params(64)
    identity_64 = 2 * conv3x3_params(64, 64) + 2 * batch_norm_params(64)
    # Cumulative backbone parameters after blocks 1 ... 6.
    blocks = [identity_16, identity_16, down_32, identity_32, down_64, identity_64]
    after_block = np.cumsum([stem + blocks[0], *blocks[1:]])
    channels = [16, 16, 32, 32, 64, 64]

    def aux_head(block):
        width = channels[block - 1]
        return int(after_block[block - 1]) + batch_norm_params(width) + dense_params(width, 10)

    final = (14, int(after_block[-1]) + dense_params(64, 10))
    # K = 1: the head reads block 3 (s = 3, r = 0), at depth 1 + 2 * 3 = 7.
    # K = 2: the heads read blocks 2 and 4 (s = 2, r = 0), at depths 5 and 9.
    return {
        1: [(7, aux_head(3)), final],
        2: [(5, aux_head(2)), (9, aux_head(4)), final],
    }


def make_tune_parser():
    parser = argparse.ArgumentParser(prog="keras-mwbp tune", description=tuning_command.TUNE_DESCRIPTION)
    return tuning_command.add_tune_arguments(parser)


def run_tune(argv):
    """Runs `tune_command` and returns (exit code, stdout, stderr)."""
    args = make_tune_parser().parse_args(argv)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = args.run(args)
    return code, stdout.getvalue(), stderr.getvalue()


def parse_head_table(output):
    lines = output.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("head ") and "validation error (%)" in line
    )
    rows = []
    for line in lines[start + 2 :]:
        fields = line.split()
        if len(fields) != 5 or not fields[0].startswith("head_"):
            break
        rows.append(
            {
                "head": fields[0],
                "depth": int(fields[1]),
                "params": int(fields[2].replace(",", "")),
                "validation": float(fields[3]),
                "test": float(fields[4]),
            }
        )
    return rows


def test_tune_prints_table_per_head(tmp_path):
    output_dir = tmp_path / "search"
    # Both trials have K = 1, so the table of the best model is known.
    code, stdout, stderr = run_tune(
        [
            "--depth", "14",
            "--max-trials", "2",
            "--epochs", "1",
            "--nu-values", "1,2",
            "--max-aux", "1",
            "--objective", "best_head",
            "--output-dir", str(output_dir),
            "--verbose", "0",
        ]
    )

    assert code == 0, stderr
    best = re.search(r"Best trial \S+: nu=(\S+), K=(\d+) auxiliary", stdout)
    assert best is not None, stdout
    assert float(best.group(1)) in (1.0, 2.0)
    assert int(best.group(2)) == 1

    rows = parse_head_table(stdout)
    assert [row["head"] for row in rows] == ["head_0", "head_1"]
    expected = resnet14_digits_head_params()[1]
    assert [(row["depth"], row["params"]) for row in rows] == expected
    for row in rows:
        assert 0.0 <= row["validation"] <= 100.0
        assert 0.0 <= row["test"] <= 100.0

    # 20 % of the 1,437 training digits are held out, and 360 are for testing.
    assert "1149 training and 288 validation images" in stdout
    assert "288 validation and 360 test digits images" in stdout

    results = json.loads((output_dir / tuning_command.RESULTS_FILENAME).read_text())
    assert results["best_hyperparameters"]["num_aux"] == 1
    assert results["best_hyperparameters"]["nu"] == float(best.group(1))
    assert len(results["heads"]) == 2
    assert results["objective"] == "val_best_head_accuracy"
    assert (output_dir / tuning_command.MODEL_FILENAME).exists()
    oracle = json.loads((output_dir / "oracle.json").read_text())
    assert len(oracle["tried_so_far"]) == 2


def test_tune_max_aux_above_tau_limit(tmp_path):
    code, stdout, stderr = run_tune(
        ["--depth", "14", "--max-aux", "3", "--output-dir", str(tmp_path / "out")]
    )

    assert code == 2
    assert "argument --max-aux: invalid value 3 for --depth 14" in stderr
    assert "Use --max-aux 2 or less" in stderr
    assert not (tmp_path / "out").exists()


def test_tune_depth_without_room_for_heads(tmp_path):
    code, _, stderr = run_tune(["--depth", "8", "--output-dir", str(tmp_path / "out")])

    assert code == 2
    assert "argument --min-aux: invalid value 1" in stderr
    assert "expected at most 0" in stderr


def test_tune_rejects_changed_settings(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    earlier = {"dataset": "digits", "depth": 20}
    (output_dir / tuning_command.SETTINGS_FILENAME).write_text(json.dumps(earlier))

    code, _, stderr = run_tune(["--output-dir", str(output_dir)])

    assert code == 2
    assert "contains a search with other settings" in stderr
    assert "depth: 20 -> 14" in stderr
    assert "Pass --overwrite" in stderr


def test_tune_parser_rejects():
    cases = [
        (["--depth", "9"], "expected 6n + 2"),
        (["--nu-values", "1,x"], "comma-separated numbers"),
        (["--nu-values", "1,1"], "distinct numbers"),
        (["--nu-range", "2,1"], "MIN < MAX"),
        (["--nu-values", "1", "--nu-range", "0,1"], "not allowed with argument"),
        (["--backprop", "mwbp,fast"], "distinct comma-separated names"),
        (["--tuner", "grid"], "invalid choice"),
        (["--delta", "1.5"], "in [0, 1]"),
        (["--learning-rate", "0"], "above 0"),
    ]
    for argv, message in cases:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
            make_tune_parser().parse_args(argv)

        assert info.value.code == 2, argv
        assert message in stderr.getvalue(), argv


def test_tune_parser_defaults():
    args = make_tune_parser().parse_args([])

    assert args.dataset == "digits"
    assert args.tuner == "random"
    assert args.objective == "final"
    assert args.run is tuning_command.tune_command
    assert tuning_command._resolve_output_dir(args).as_posix() == (
        "saved_models/tune_digits_resnet14_random_final_seed0"
    )


# ----------------------------------------------------------------------
# Docstrings.


DOCUMENTED_FUNCTIONS = [
    tuning.MultiWayHyperModel,
    tuning.HeadSummaryCallback,
    tuning.max_num_aux,
    tuning.summarize_head_accuracies,
    tuning.objective_for,
    tuning_command.evaluate_head_errors,
    tuning_command.format_head_error_table,
    tuning_command.add_tune_arguments,
    tuning_command.tune_command,
]


def documented_arguments(function):
    """Returns the names in the `Args:` section of a docstring."""
    doc = inspect.getdoc(function)
    section = doc.split("Args:\n", 1)[1]
    # The section ends at the next line without indentation ("Returns:").
    section = re.split(r"\n(?=\S)", section, maxsplit=1)[0]
    documented = re.findall(r"^    (\*{0,2}\w+):", section, flags=re.MULTILINE)
    return [name.lstrip("*") for name in documented]


def test_docstring_args_match_signature():
    for function in DOCUMENTED_FUNCTIONS:
        target = function.__init__ if inspect.isclass(function) else function
        parameters = [name for name in inspect.signature(target).parameters if name != "self"]

        assert documented_arguments(function) == parameters, function.__name__
