"""Compare the heads of trained models: error, size, cost and speed.

`report` evaluates every head of one or more models on the same test data
and writes a Markdown table, a JSON file and a plot of test error against
multiply-adds. `add_report_arguments` and `report_command` implement
`keras-mwbp report`.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import keras_mwbp
from keras_mwbp import data as data_lib
from keras_mwbp import export as export_lib
from keras_mwbp import flops
from keras_mwbp._cli_types import comma_separated_names
from keras_mwbp.graph import HeadGraph

DEFAULT_OUTPUT_DIR = os.path.join("saved_models", "report")
DEFAULT_BATCH_SIZE = 128
DEFAULT_REPEATS = 5
MARKDOWN_FILENAME = "report.md"
JSON_FILENAME = "report.json"
PLOT_FILENAME = "report.png"

COLUMNS = (
    ("run", "run"),
    ("head", "head"),
    ("output_name", "output"),
    ("depth", "depth"),
    ("params", "parameters"),
    ("multiply_adds", "multiply-adds"),
    ("test_error_percent", "test error (%)"),
    ("ms_per_image", "time per image (ms)"),
)


def report(
    model_or_models,
    data,
    output_dir=DEFAULT_OUTPUT_DIR,
    batch_size=DEFAULT_BATCH_SIZE,
    repeats=DEFAULT_REPEATS,
    verbose=1,
):
    """Evaluates every head of one or more models and writes a report.

    For each head of each model (run), measures:

    - `depth`: the head's weighted depth (`MultiWayModel.head_depths`).
    - `params`: `count_params()` of the head's submodel, BatchNormalization
      statistics included.
    - `multiply_adds`: per image, from `keras_mwbp.flops.count_multiply_adds`
      on the submodel, which counts only convolutions and dense layers.
    - `test_error_percent`: the percentage of test examples whose highest
      output is not at the true label.
    - `ms_per_image`: wall-clock milliseconds per image of a compiled
      forward pass (a `tf.function` of the submodel with `training=False`)
      on one batch of `batch_size` test images: the median of `repeats`
      timed calls after one untimed call, divided by the batch size. It
      depends on the machine, its load, the thread settings and the batch
      size, so compare times only within one report.

    Writes `report.md` (a table), `report.json` (the rows and the timing
    settings) and `report.png` (test error against multiply-adds, a marker
    per head and a line per run, with the run names in the legend) to
    `output_dir`, replacing files of those names. With `verbose`, prints
    the table and shows a `keras.utils.Progbar` over the heads.

    Example:

    ```python
    rows = keras_mwbp.report(
        {"mwbp": mwbp_model, "joint": joint_model},
        (x_test, y_test),
        output_dir="saved_models/report",
    )
    ```

    Args:
        model_or_models: A `MultiWayModel`, a functional `keras.Model`
            (each output is a head), or a dict from run name to model, to
            compare several runs. Each model must have one input and
            outputs of shape `(batch, num_classes)` with 2 or more classes.
        data: Test data: a tuple `(x, y)` of arrays, or a `tf.data.Dataset`
            of `(x, y)` or `(x, y, sample_weight)` (sample weights are
            ignored), batched or not. Labels are integer classes or one-hot
            rows.
        output_dir: String or path-like. Folder of the report files. It is
            created if missing. Defaults to `"saved_models/report"`.
        batch_size: Int. Batch size for evaluating arrays or an unbatched
            dataset, and for timing. A batched dataset keeps its own batches
            and its first batch is timed. Defaults to `128`.
        repeats: Int, at least 1. Timed calls per head. Defaults to `5`.
        verbose: Int. 0 is silent, 1 prints the table and shows a progress
            bar. Defaults to `1`.

    Returns:
        List of dicts, one row per head of each run in order, with the keys
        `run`, `head` (index), `output_name`, `depth`, `params`,
        `multiply_adds`, `test_error_percent`, `test_errors`,
        `test_examples` and `ms_per_image`.

    Raises:
        ValueError: For an invalid argument, data that does not match a
            model's input shape, or labels that do not match the number of
            examples.
        OSError: If a report file cannot be written.
    """
    runs = _resolve_runs(model_or_models)
    _validate_positive_int("batch_size", batch_size)
    _validate_positive_int("repeats", repeats)
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if verbose not in (0, 1, 2):
        raise ValueError(
            "Invalid value for argument `verbose`. Expected 0 (silent), 1 or "
            f"2. Received: verbose={verbose!r}"
        )
    output_dir = pathlib.Path(output_dir)
    for name, model in runs.items():
        _check_data_matches(model, name, data)

    num_heads = sum(len(model.outputs) for model in runs.values())
    progress = keras.utils.Progbar(num_heads, verbose=verbose, unit_name="head")
    rows = []
    timing_batch_size = None
    for run_name, model in runs.items():
        heads = _heads_of(model)
        evaluation = _evaluate(model, data, batch_size)
        timing_batch = evaluation["timing_batch"]
        timing_batch_size = int(timing_batch.shape[0])
        for index, head in enumerate(heads):
            wrong = evaluation["wrong"][index]
            total = evaluation["num_examples"]
            rows.append(
                {
                    "run": run_name,
                    "head": index,
                    "output_name": head["output_name"],
                    "depth": head["depth"],
                    "params": int(head["submodel"].count_params()),
                    "multiply_adds": int(flops.count_multiply_adds(head["submodel"])),
                    "test_error_percent": 100.0 * wrong / total,
                    "test_errors": wrong,
                    "test_examples": total,
                    "ms_per_image": time_per_image(head["submodel"], timing_batch, repeats),
                }
            )
            progress.add(1)

    timing = {
        "statistic": "median",
        "repeats": repeats,
        "batch_size": timing_batch_size,
        "device": describe_device(),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(rows, timing)
    paths = {
        "markdown": output_dir / MARKDOWN_FILENAME,
        "json": output_dir / JSON_FILENAME,
        "plot": output_dir / PLOT_FILENAME,
    }
    paths["markdown"].write_text(markdown, encoding="utf-8")
    _write_json(paths["json"], rows, timing)
    plot_error_against_multiply_adds(rows, paths["plot"])
    if verbose:
        print()
        print(markdown)
        for path in paths.values():
            print(f"Wrote {path}")
    return rows


# ----------------------------------------------------------------------
# Models and heads.


def _validate_positive_int(argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an integer of "
            f"at least 1. Received: {argument}={value!r}"
        )


def _resolve_runs(model_or_models):
    """Returns a dict from run name to a model, checking each model."""
    if isinstance(model_or_models, dict):
        if not model_or_models:
            raise ValueError(
                "Invalid value for argument `model_or_models`: the dict is "
                "empty. Pass {run_name: model} with at least one model."
            )
        runs = {}
        for name, model in model_or_models.items():
            if not isinstance(name, str) or not name:
                raise ValueError(
                    "Invalid run name in argument `model_or_models`. Expected "
                    f"non-empty strings as keys. Received: {name!r}"
                )
            runs[name] = model
    else:
        model = model_or_models
        runs = {getattr(model, "name", "model"): model}
    for name, model in runs.items():
        _validate_model(name, model)
    return runs


def _validate_model(name, model):
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            f"Invalid model for run '{name}'. Expected a MultiWayModel or a "
            "functional keras.Model with a fixed input shape. Received an "
            f"object of type {type(model).__name__}."
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"The model of run '{name}' has {len(model.inputs)} inputs, but "
            "a report needs a model with exactly one input."
        )
    for output_name, output in zip(_output_names(model), model.outputs):
        shape = tuple(output.shape)
        if len(shape) != 2 or shape[-1] is None or shape[-1] < 2:
            raise ValueError(
                f"Output '{output_name}' of run '{name}' has shape {shape}, "
                "but a report needs class scores of shape (batch, "
                "num_classes) with at least 2 classes."
            )


def _output_names(model):
    """Returns the model's output names. A `Sequential` has none, so it gets its last layer's name."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    return [f"output_{index}" for index in range(len(model.outputs))]


def _heads_of(model):
    """Returns, for each output, its name, depth and a single-input submodel."""
    heads = []
    multiway = hasattr(model, "head_depths") and hasattr(model, "submodel")
    for index, output in enumerate(model.outputs):
        submodel = keras.Model(model.inputs[0], output, name=f"{model.name}_head_{index}")
        if multiway:
            depth = model.head_depths[index]
        else:
            # The weighted layers on the longest path to this output, which
            # is how `MultiWayModel.head_depths` counts the final head.
            depth = HeadGraph(submodel).head_depths[-1]
        heads.append(
            {
                "output_name": _output_names(model)[index],
                "depth": int(depth),
                "submodel": submodel,
            }
        )
    return heads


# ----------------------------------------------------------------------
# Data and evaluation.


def _check_data_matches(model, run_name, data):
    expected = tuple(model.inputs[0].shape[1:])
    if isinstance(data, tf.data.Dataset):
        x_spec = data.element_spec[0] if isinstance(data.element_spec, tuple) else None
        if x_spec is None or not hasattr(x_spec, "shape"):
            raise ValueError(
                "Invalid value for argument `data`. Expected a tf.data.Dataset "
                "of (x, y) tuples with a single tensor x. Received a dataset "
                f"with element_spec={data.element_spec}"
            )
        shape = tuple(x_spec.shape)
        if len(shape) == len(expected):
            shape = (None, *shape)
        found = shape[1:]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        x_shape, y_shape = np.shape(x), np.shape(y)
        if len(x_shape) == 0 or len(y_shape) == 0 or x_shape[0] != y_shape[0]:
            raise ValueError(
                "Invalid value for argument `data`. Expected arrays x and y "
                f"with the same number of examples. Received x of shape "
                f"{x_shape} and y of shape {y_shape}."
            )
        if x_shape[0] == 0:
            raise ValueError("Invalid value for argument `data`: x and y contain no example.")
        found = tuple(x_shape[1:])
    else:
        raise ValueError(
            "Invalid value for argument `data`. Expected a tuple (x, y) of "
            "arrays or a tf.data.Dataset. Received an object of type "
            f"{type(data).__name__}."
        )
    compatible = len(found) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(found, expected)
    )
    if not compatible:
        raise ValueError(
            f"The test examples have shape {found}, but the model of run "
            f"'{run_name}' expects inputs of shape {expected}. Pass the test "
            "split of the dataset the model was trained on."
        )


def _batches(data, batch_size, input_rank):
    """Yields `(x, y)` NumPy batches from arrays or a dataset."""
    if isinstance(data, tf.data.Dataset):
        if len(data.element_spec[0].shape) == input_rank - 1:
            data = data.batch(batch_size)
        for element in data.as_numpy_iterator():
            x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
            yield x, y
        return
    x, y = data
    for start in range(0, len(x), batch_size):
        yield np.asarray(x[start : start + batch_size]), np.asarray(y[start : start + batch_size])


def _label_indices(y, num_classes):
    """Converts integer labels or one-hot rows to a vector of class indices."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[-1] == num_classes:
        return np.argmax(y, axis=-1)
    if y.ndim != 1:
        raise ValueError(
            f"Invalid labels of shape {y.shape}. Expected integer class "
            f"labels of shape (n,) or one-hot rows of shape (n, {num_classes})."
        )
    return y.astype("int64")


def _evaluate(model, data, batch_size):
    """Counts the wrong predictions of every head in one pass over the data.

    Returns:
        Dict with `wrong` (list of ints, one per head), `num_examples` and
        `timing_batch` (the first `batch_size` images, or the first batch of
        a batched dataset).
    """
    all_heads = keras.Model(model.inputs[0], list(model.outputs))
    input_dtype = model.inputs[0].dtype
    # A batch axis of unknown size lets the last, smaller batch reuse the trace.
    signature = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), input_dtype)]
    forward = tf.function(
        lambda images: all_heads(images, training=False), input_signature=signature
    )
    wrong = np.zeros(len(model.outputs), dtype="int64")
    num_examples = 0
    timing_batch = None
    for x, y in _batches(data, batch_size, len(model.inputs[0].shape)):
        x = tf.convert_to_tensor(x, dtype=input_dtype)
        if timing_batch is None:
            timing_batch = x
        outputs = forward(x)
        if not isinstance(outputs, (list, tuple)):
            # Keras returns a bare tensor for a model with one output.
            outputs = [outputs]
        for index, logits in enumerate(outputs):
            logits = np.asarray(logits)
            labels = _label_indices(y, logits.shape[-1])
            if len(labels) != len(logits):
                raise ValueError(
                    f"A batch has {len(logits)} examples but {len(labels)} "
                    "labels. Pass one label per example."
                )
            wrong[index] += int(np.sum(np.argmax(logits, axis=-1) != labels))
        num_examples += int(x.shape[0])
    if num_examples == 0:
        raise ValueError("Invalid value for argument `data`: the dataset yielded no example.")
    return {
        "wrong": [int(count) for count in wrong],
        "num_examples": num_examples,
        "timing_batch": timing_batch,
    }


def time_per_image(model, batch, repeats=DEFAULT_REPEATS):
    """Measures the inference time per image of a compiled forward pass.

    Calls a `tf.function` of the model with `training=False` once untimed
    (tracing and warm-up), then `repeats` times, each time waiting for the
    result. The time depends on the machine, its load and the batch size.

    Args:
        model: A single-input `keras.Model`.
        batch: Tensor or array. One batch of inputs.
        repeats: Int. Timed calls. Defaults to `5`.

    Returns:
        Float. The median time of one call in milliseconds, divided by the
        batch size.
    """
    forward = tf.function(lambda images: model(images, training=False))
    batch = tf.convert_to_tensor(batch)
    np.asarray(forward(batch))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(forward(batch))
        seconds.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(seconds) / int(batch.shape[0])


def describe_device():
    """Returns a one-line description of the machine that ran the timings."""
    gpus = tf.config.list_physical_devices("GPU")
    cores = os.cpu_count()
    text = f"{platform.machine()} {platform.system()}, {cores} CPU cores"
    if gpus:
        text += f", {len(gpus)} GPU(s) visible to TensorFlow"
    return f"{text}, TensorFlow {tf.__version__}"


# ----------------------------------------------------------------------
# Output files.


def _format_cell(key, value):
    if key in ("params", "multiply_adds"):
        return f"{value:,}"
    if key == "test_error_percent":
        return f"{value:.2f}"
    if key == "ms_per_image":
        return f"{value:.4f}"
    return str(value)


def format_markdown(rows, timing):
    """Formats report rows as a Markdown document with one table.

    Args:
        rows: List of dicts, as returned by `report`.
        timing: Dict with `repeats`, `batch_size` and `device`.

    Returns:
        String. The Markdown text, ending in a newline.
    """
    examples = sorted({row["test_examples"] for row in rows})
    lines = [
        "# Heads report",
        "",
        f"Test examples: {', '.join(str(n) for n in examples)}. Multiply-adds "
        "are per image and count convolutions and dense layers only.",
        "",
        f"Time per image: median of {timing['repeats']} timed calls of a "
        f"compiled forward pass on a batch of {timing['batch_size']} images, "
        f"divided by the batch size, on {timing['device']}. Times depend on "
        "the machine and its load, so compare them only within this report.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" if key in ("run", "output_name") else "---:" for key, _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [_format_cell(key, row[key]) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_json(path, rows, timing):
    content = {
        "rows": rows,
        "timing": timing,
        "multiply_adds_counts": (
            "convolutions and dense layers; bias additions, normalization, "
            "activations and pooling count as zero"
        ),
        "versions": {
            "keras_mwbp": keras_mwbp.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2, allow_nan=False)
        file.write("\n")


def plot_error_against_multiply_adds(rows, path):
    """Draws test error against multiply-adds, one line per run, as a PNG.

    Uses matplotlib's Agg canvas directly, so it works without a display and
    leaves the pyplot backend of the caller unchanged.

    Args:
        rows: List of dicts, as returned by `report`.
        path: String or path-like. The PNG file to write.

    Returns:
        The `matplotlib.figure.Figure` that was saved.
    """
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    runs = list(dict.fromkeys(row["run"] for row in rows))
    for run in runs:
        run_rows = sorted(
            (row for row in rows if row["run"] == run), key=lambda row: row["multiply_adds"]
        )
        madds = [row["multiply_adds"] / 1e6 for row in run_rows]
        errors = [row["test_error_percent"] for row in run_rows]
        (line,) = axes.plot(madds, errors, marker="o", label=run)
        for row, x, y in zip(run_rows, madds, errors):
            axes.annotate(
                f"L={row['depth']}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=line.get_color(),
            )
    axes.set_xlabel("Multiply-adds per image (millions)")
    axes.set_ylabel("Test error (%)")
    axes.set_title("Test error of each head against its cost")
    # Room for the depth labels right of and above the last points.
    axes.margins(x=0.12, y=0.08)
    axes.grid(True, alpha=0.3)
    axes.legend(title="run")
    figure.tight_layout()
    figure.savefig(path, dpi=matplotlib.rcParams["figure.dpi"], format="png")
    return figure


# ----------------------------------------------------------------------
# Command line: `keras-mwbp report`.


_run_names = comma_separated_names("run")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, received {value}")
    return value


def add_report_arguments(parser):
    """Adds the arguments of `keras-mwbp report` to an `argparse` parser.

    Args:
        parser: `argparse.ArgumentParser`. Usually the `report` subparser.
            Its description is set unless it already has one.

    Returns:
        The same parser.
    """
    if parser.description is None:
        parser.description = (
            "Evaluate every head of one or more trained models on a dataset's "
            "test split and write report.md, report.json and report.png (test "
            "error against multiply-adds, one line per model)."
        )
    parser.add_argument(
        "models",
        nargs="+",
        type=pathlib.Path,
        metavar="MODEL",
        help="a .keras model file, or a run folder written by `keras-mwbp train`",
    )
    parser.add_argument(
        "--dataset",
        choices=data_lib.ARRAY_DATASETS,
        default=None,
        help=(
            "dataset whose test split is evaluated, the same split as in "
            "`keras-mwbp train` (default: the dataset named in the "
            "results.json next to each model)"
        ),
    )
    parser.add_argument(
        "--names",
        type=_run_names,
        default=None,
        help=(
            "comma-separated run names for the legend and the table, one per "
            "model (default: the name of each model's run folder)"
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=pathlib.Path(DEFAULT_OUTPUT_DIR),
        help="folder of the report files (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per evaluation batch and per timed batch (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=DEFAULT_REPEATS,
        help="timed calls per head; the report gives the median (default: %(default)s)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1),
        default=1,
        help="0 prints only the file paths, 1 also the table and a progress bar (default: %(default)s)",
    )
    return parser


def report_command(args):
    """Runs `keras-mwbp report` with parsed arguments.

    Args:
        args: `argparse.Namespace` from a parser set up by
            `add_report_arguments`.

    Returns:
        Int exit code: 0 on success, 2 for an invalid argument or a missing
        file (with a message on stderr), 1 if writing failed.
    """
    try:
        sources = [export_lib.resolve_run_files(path) for path in args.models]
        names = _resolve_run_names(args.names, [model_path for model_path, _ in sources])
        dataset = _resolve_dataset(args.dataset, sources)
        _, (x_test, y_test) = data_lib.load_arrays(dataset)
        models = {
            name: keras.models.load_model(model_path, compile=False)
            for name, (model_path, _) in zip(names, sources)
        }
        report(
            models,
            (x_test, y_test),
            output_dir=args.output_dir,
            batch_size=args.batch_size,
            repeats=args.repeats,
            verbose=args.verbose,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"keras-mwbp report: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"keras-mwbp report: error: writing failed: {error}", file=sys.stderr)
        return 1
    if not args.verbose:
        for filename in (MARKDOWN_FILENAME, JSON_FILENAME, PLOT_FILENAME):
            print(f"Wrote {args.output_dir / filename}")
    return 0


def _resolve_run_names(names, model_paths):
    if names is not None:
        if len(names) != len(model_paths):
            raise ValueError(
                f"--names lists {len(names)} name(s) for {len(model_paths)} "
                "model(s). Give one name per model."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"--names contains a name more than once: {','.join(names)}")
        return names
    defaults = []
    for path in model_paths:
        is_run_file = path.name == export_lib.RUN_MODEL_FILENAME and path.parent.name
        defaults.append(path.parent.name if is_run_file else path.stem)
    if len(set(defaults)) != len(defaults):
        raise ValueError(
            f"The models would get the same run name ({', '.join(defaults)}). "
            "Pass --names with one distinct name per model."
        )
    return defaults


def _resolve_dataset(dataset, sources):
    if dataset is not None:
        return dataset
    found = set()
    for model_path, results_path in sources:
        recorded = _recorded_dataset(results_path)
        if recorded is None:
            raise ValueError(
                f"No dataset is recorded for {model_path}, because there is no "
                "results.json with settings.dataset next to it. Pass --dataset."
            )
        found.add(recorded)
    if len(found) > 1:
        raise ValueError(
            f"The models were trained on different datasets ({', '.join(sorted(found))}). "
            "Pass --dataset to choose the test split."
        )
    (dataset,) = found
    if dataset not in data_lib.ARRAY_DATASETS:
        raise ValueError(
            f"The recorded dataset {dataset!r} is not one of "
            f"{', '.join(data_lib.ARRAY_DATASETS)}. Pass --dataset."
        )
    return dataset


def _recorded_dataset(results_path):
    if results_path is None:
        return None
    try:
        with open(results_path, encoding="utf-8") as file:
            results = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{results_path} is not valid JSON: {error}") from None
    settings = results.get("settings") if isinstance(results, dict) else None
    return settings.get("dataset") if isinstance(settings, dict) else None
