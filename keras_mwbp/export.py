"""Export each head of a `MultiWayModel` as a standalone model.

One MW-BP run trains K+1 classifiers of different depths. `export_submodels`
writes each chosen head, with the backbone below it, as a TensorFlow
SavedModel and as a `.keras` file, and lists them in `manifest.json`.
`add_export_arguments` and `export_command` implement `keras-mwbp export`.
"""

import argparse
import json
import math
import numbers
import os
import pathlib
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

import keras_mwbp
from keras_mwbp import flops

FORMATS = ("saved_model", "keras")
MANIFEST_FILENAME = "manifest.json"
SAVED_MODEL_DIRNAME = "saved_model"
KERAS_FILENAME = "model.keras"
MANIFEST_VERSION = 1

# File names that `keras-mwbp train` writes into a run folder.
RUN_MODEL_FILENAME = "model.keras"
RUN_RESULTS_FILENAME = "results.json"

# Keys of a `results.json` head row that the manifest computes itself, so
# they are not copied into a head's metrics.
_STRUCTURE_KEYS = ("head", "depth", "params")


def head_folder_name(index, depth):
    """Returns the folder name of one exported head, e.g. "head_2_depth_35"."""
    return f"head_{index}_depth_{depth}"


def export_submodels(
    model,
    directory,
    heads=None,
    formats=FORMATS,
    metrics=None,
    overwrite=False,
    verbose=1,
):
    """Exports the chosen heads of a `MultiWayModel` as standalone models.

    For each head i at depth L_i, writes the folder
    `directory/head_{i}_depth_{L_i}/` with the submodel from the inputs to
    head i (`model.submodel(i)`, which contains no layer of any other head):

    - `saved_model/`: a TensorFlow SavedModel written by
      `keras.Model.export`, with the endpoint `serve` and the signature
      `serving_default`. Reload it with `tf.saved_model.load(path)` and call
      `loaded.serve(images)`. It needs neither Keras nor `keras_mwbp`.
    - `model.keras`: the submodel in the Keras format. Reload it with
      `keras.models.load_model(path)` after `import keras_mwbp`, because
      ResNets built by `keras_mwbp.models.resnet_cifar` contain a custom
      shortcut layer that this import registers.

    A model with one input is exported with that input as a single tensor,
    so `serve` takes a tensor of images, not a list of one.

    Then writes `directory/manifest.json` with one entry per exported head,
    in the order given: `index`, `output_name`, `tap_layer` (the backbone
    layer an auxiliary head reads, `None` for the final head), `depth`,
    `params` (`submodel.count_params()`, BatchNormalization statistics
    included), `multiply_adds` per image (see
    `keras_mwbp.flops.count_multiply_adds`, which counts only convolutions
    and dense layers), `folder` and `files` (paths relative to `directory`)
    and `metrics`. The manifest is written last, so it lists only files
    that were written.

    Example:

    ```python
    manifest = keras_mwbp.export_submodels(
        model,
        "saved_models/run1",
        heads=[2, -1],
        metrics={"head_2": {"test_error_percent": 7.1}},
    )
    loaded = tf.saved_model.load("saved_models/run1/head_2_depth_35/saved_model")
    logits = loaded.serve(images)
    ```

    Args:
        model: `MultiWayModel`. The trained model.
        directory: String or path-like. Folder of the head folders and the
            manifest. It is created if missing.
        heads: List of ints, or `None`. Indices of the heads to export,
            0 for the shallowest; negative indices count from the final
            head. Defaults to `None`, which exports every head.
        formats: Tuple of strings. Any of `"saved_model"` and `"keras"`.
            Defaults to `("saved_model", "keras")`.
        metrics: Dict, list of dicts, or `None`. Metrics recorded with each
            head, for example its test error. Pass a list of one dict per
            head of the model (all K+1, in head order), or a dict from
            output name or head index to a dict. The values must be
            numbers, strings, booleans, lists or dicts, so that they can be
            written to JSON. Defaults to `None`.
        overwrite: Bool. Whether to replace a head folder that exists and is
            not empty. The old folder is deleted first. Defaults to `False`.
        verbose: Int. 0 is silent, 1 shows a `keras.utils.Progbar` over the
            heads. Defaults to `1`.

    Returns:
        The manifest, as a dict.

    Raises:
        ValueError: For an invalid argument, an unknown format, an invalid
            or repeated head index, metrics for an unknown head, or a head
            folder or manifest that exists while `overwrite=False`.
        OSError: If a file or folder cannot be written. Heads written before
            the failure stay on disk, but no manifest is written.
    """
    _validate_model(model)
    directory = _validate_directory(directory)
    indices = _resolve_heads(model, heads)
    formats = _validate_formats(formats)
    head_metrics = _resolve_metrics(model, metrics)
    _validate_flag("overwrite", overwrite)
    verbose = _validate_verbose(verbose)

    depths = model.head_depths
    folders = {i: directory / head_folder_name(i, depths[i]) for i in indices}
    if not overwrite:
        _check_nothing_to_overwrite(directory, folders.values())

    directory.mkdir(parents=True, exist_ok=True)
    progress = keras.utils.Progbar(len(indices), verbose=verbose, unit_name="head")
    entries = []
    for step, index in enumerate(indices, start=1):
        entry = _export_head(model, index, folders[index], directory, formats)
        entry["metrics"] = head_metrics[index]
        entries.append(entry)
        progress.update(step)

    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model_name": model.name,
        "num_heads": model.num_heads,
        "head_depths": [int(depth) for depth in depths],
        "input_shapes": [list(tensor.shape[1:]) for tensor in model.inputs],
        "formats": list(formats),
        "multiply_adds_counts": (
            "convolutions and dense layers; bias additions, normalization, "
            "activations and pooling count as zero"
        ),
        "versions": {
            "keras_mwbp": keras_mwbp.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        "heads": entries,
    }
    _write_json(directory / MANIFEST_FILENAME, manifest)
    return manifest


# ----------------------------------------------------------------------
# Argument checks.


def _validate_model(model):
    required = ("submodel", "head_depths", "num_heads", "head_graph")
    if not isinstance(model, keras.Model) or not all(hasattr(model, a) for a in required):
        raise ValueError(
            "Invalid value for argument `model`. Expected a "
            "keras_mwbp.MultiWayModel. Received an object of type "
            f"{type(model).__name__}. Wrap a model with auxiliary heads with "
            "keras_mwbp.attach_heads, or export a plain keras.Model with "
            "model.export(path)."
        )


def _validate_directory(directory):
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise ValueError(
            "Invalid value for argument `directory`. Expected the path of a "
            f"folder. Received: directory={directory!r}"
        )
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(
            f"Invalid value for argument `directory`: {directory} exists and "
            "is not a folder. Pass the path of a folder."
        )
    return directory


def _resolve_heads(model, heads):
    """Returns the chosen head indices, in the order given, as non-negative ints."""
    num_heads = model.num_heads
    if heads is None:
        return list(range(num_heads))
    if isinstance(heads, (str, bytes)) or not isinstance(heads, (list, tuple, np.ndarray)):
        raise ValueError(
            "Invalid value for argument `heads`. Expected a list of head "
            f"indices or None. Received: heads={heads!r}"
        )
    if len(heads) == 0:
        raise ValueError(
            "Invalid value for argument `heads`: the list is empty. Pass at "
            "least one head index, or heads=None for every head."
        )
    indices = []
    for head in heads:
        if isinstance(head, bool) or not isinstance(head, numbers.Integral):
            raise ValueError(
                "Invalid value for argument `heads`. Expected integer head "
                f"indices. Received: heads={heads!r}"
            )
        if not -num_heads <= head < num_heads:
            raise ValueError(
                f"Invalid head index {head} in argument `heads`. The model has "
                f"{num_heads} heads, so expected indices in "
                f"[{-num_heads}, {num_heads - 1}]. Received: heads={heads!r}"
            )
        index = int(head) % num_heads
        if index in indices:
            raise ValueError(
                f"Head {index} is listed more than once in argument `heads`. "
                f"Received: heads={heads!r}"
            )
        indices.append(index)
    return indices


def _validate_formats(formats):
    if isinstance(formats, str):
        formats = (formats,)
    if not isinstance(formats, (list, tuple)) or len(formats) == 0:
        raise ValueError(
            f"Invalid value for argument `formats`. Expected a non-empty "
            f"list of formats from {list(FORMATS)}. Received: formats={formats!r}"
        )
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"Unknown export format(s) {unknown} in argument `formats`. "
            f"Expected formats from {list(FORMATS)}. Received: formats={formats!r}"
        )
    if len(set(formats)) != len(formats):
        raise ValueError(
            "A format is listed more than once in argument `formats`. "
            f"Received: formats={formats!r}"
        )
    return tuple(formats)


def _resolve_metrics(model, metrics):
    """Returns one JSON-ready metrics dict per head index."""
    num_heads = model.num_heads
    names = list(model.output_names)
    per_head = [{} for _ in range(num_heads)]
    if metrics is None:
        return per_head
    if isinstance(metrics, (list, tuple)):
        if len(metrics) != num_heads:
            raise ValueError(
                "Invalid value for argument `metrics`. A list must contain "
                f"one dict per head of the model ({num_heads}, for outputs "
                f"{names}). Received {len(metrics)} items."
            )
        items = list(enumerate(metrics))
    elif isinstance(metrics, dict):
        items = [(_metrics_key_to_index(key, names), value) for key, value in metrics.items()]
    else:
        raise ValueError(
            "Invalid value for argument `metrics`. Expected a dict keyed by "
            "output name or head index, a list of one dict per head, or None. "
            f"Received an object of type {type(metrics).__name__}."
        )
    for index, value in items:
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValueError(
                f"Invalid metrics for head {index} ('{names[index]}'). Expected "
                f"a dict such as {{'test_error_percent': 7.1}}. Received: {value!r}"
            )
        per_head[index] = _to_json_value(value, f"metrics of head {index}")
    return per_head


def _metrics_key_to_index(key, names):
    if isinstance(key, str):
        if key not in names:
            raise ValueError(
                f"Invalid key '{key}' in argument `metrics`: the model has no "
                f"output of that name. Expected output names from {names} or "
                "head indices."
            )
        return names.index(key)
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not -len(names) <= key < len(names):
            raise ValueError(
                f"Invalid head index {key} in argument `metrics`. Expected "
                f"indices in [{-len(names)}, {len(names) - 1}]."
            )
        return int(key) % len(names)
    raise ValueError(
        f"Invalid key {key!r} in argument `metrics`. Expected output names "
        f"from {names} or head indices."
    )


def _to_json_value(value, where):
    """Converts NumPy scalars and arrays to Python values, and checks the rest."""
    if isinstance(value, dict):
        return {str(key): _to_json_value(item, where) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item, where) for item in value]
    if isinstance(value, np.ndarray):
        return _to_json_value(value.tolist(), where)
    if isinstance(value, np.generic):
        return _to_json_value(value.item(), where)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN or infinity, and `json.dump` would write invalid JSON.
        return value if math.isfinite(value) else None
    raise ValueError(
        f"Invalid value in the {where}: {value!r} of type "
        f"{type(value).__name__} cannot be written to JSON. Use numbers, "
        "strings, booleans, lists or dicts."
    )


def _validate_flag(argument, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected True or "
            f"False. Received: {argument}={value!r}"
        )


def _validate_verbose(verbose):
    if isinstance(verbose, bool):
        return int(verbose)
    if verbose not in (0, 1, 2):
        raise ValueError(
            "Invalid value for argument `verbose`. Expected 0 (silent), 1 or "
            f"2 (progress bar). Received: verbose={verbose!r}"
        )
    return verbose


def _check_nothing_to_overwrite(directory, folders):
    existing = [
        str(folder)
        for folder in folders
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    ]
    manifest = directory / MANIFEST_FILENAME
    if manifest.exists():
        existing.append(str(manifest))
    if existing:
        raise ValueError(
            f"Cannot export to {directory}: {', '.join(existing)} already "
            "exist(s) and would be replaced. Pass overwrite=True to replace "
            "them, or choose another directory."
        )


# ----------------------------------------------------------------------
# Writing.


def _standalone_submodel(model, index):
    """Returns `model.submodel(index)`, with a single input as a bare tensor.

    `MultiWayModel.submodel` keeps the model's list of inputs, so its export
    would take `[images]`. Rebuilding it from the same tensors shares the
    layers and lets `serve` take `images`.
    """
    submodel = model.submodel(index)
    if len(submodel.inputs) == 1:
        submodel = keras.Model(submodel.inputs[0], submodel.outputs[0], name=submodel.name)
    return submodel


def _export_head(model, index, folder, directory, formats):
    """Writes one head's files and returns its manifest entry without metrics."""
    submodel = _standalone_submodel(model, index)
    # A head folder that exists here is empty, or overwrite=True.
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    folder.mkdir(parents=True)

    files = {}
    if "saved_model" in formats:
        path = folder / SAVED_MODEL_DIRNAME
        submodel.export(str(path), format="tf_saved_model", verbose=False)
        _check_written(path / "saved_model.pb", index)
        files["saved_model"] = path.relative_to(directory).as_posix()
    if "keras" in formats:
        path = folder / KERAS_FILENAME
        submodel.save(str(path))
        _check_written(path, index)
        files["keras"] = path.relative_to(directory).as_posix()

    tap_node = model.head_graph.tap_nodes[index]
    is_final = index == model.num_heads - 1
    return {
        "index": index,
        "output_name": model.output_names[index],
        "tap_layer": None if is_final or tap_node is None else tap_node.layer.name,
        "depth": int(model.head_depths[index]),
        "params": int(submodel.count_params()),
        "multiply_adds": int(flops.count_multiply_adds(submodel)),
        "folder": folder.relative_to(directory).as_posix(),
        "files": files,
    }


def _check_written(path, index):
    if not path.exists():
        raise OSError(f"Exporting head {index} failed: {path} was not written.")


def _write_json(path, content):
    """Writes JSON through a temporary file, so a failed write leaves no partial file."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2, allow_nan=False)
        file.write("\n")
    os.replace(temporary, path)


# ----------------------------------------------------------------------
# Command line: `keras-mwbp export`.


def _head_indices(text):
    """Parses a comma-separated list of head indices such as "0,2" or "-1"."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integer head indices such as 0,2 or -1, received {text!r}"
        ) from None


def _format_list(text):
    formats = [part.strip() for part in text.split(",")]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown)}: expected a comma-separated "
            f"list of {', '.join(FORMATS)}"
        )
    return formats


def add_export_arguments(parser):
    """Adds the arguments of `keras-mwbp export` to an `argparse` parser.

    Args:
        parser: `argparse.ArgumentParser`. Usually the `export` subparser.
            Its description is set unless it already has one.

    Returns:
        The same parser.
    """
    if parser.description is None:
        parser.description = (
            "Export heads of a trained model as standalone models: one folder "
            "head_<i>_depth_<L> per head with a TensorFlow SavedModel and a "
            ".keras file, and a manifest.json that lists them with their depth, "
            "parameters, multiply-adds and test metrics."
        )
    parser.add_argument(
        "source",
        type=pathlib.Path,
        metavar="RUN_DIR_OR_MODEL",
        help=(
            f"a run folder written by `keras-mwbp train` (it reads "
            f"{RUN_MODEL_FILENAME} and, if present, {RUN_RESULTS_FILENAME} "
            "there), or the path of a .keras model file"
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=pathlib.Path,
        default=None,
        help="folder of the exported heads (default: the folder of the model file)",
    )
    parser.add_argument(
        "--heads",
        type=_head_indices,
        default=None,
        metavar="INDICES",
        help=(
            "comma-separated head indices to export, 0 for the shallowest; "
            "negative indices count from the final head, as in 0,-1 "
            "(default: every head)"
        ),
    )
    parser.add_argument(
        "--formats",
        type=_format_list,
        default=list(FORMATS),
        metavar="FORMATS",
        help=f"comma-separated formats from {', '.join(FORMATS)} (default: both)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace head folders and a manifest.json that already exist",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1),
        default=1,
        help="0 is silent, 1 shows a progress bar over the heads (default: %(default)s)",
    )
    return parser


def export_command(args):
    """Runs `keras-mwbp export` with parsed arguments.

    Args:
        args: `argparse.Namespace` from a parser set up by
            `add_export_arguments`.

    Returns:
        Int exit code: 0 on success, 2 for an invalid argument or a missing
        file (with a message on stderr), 1 if writing failed.
    """
    try:
        model_path, results_path = resolve_run_files(args.source)
        metrics = read_results_metrics(results_path) if results_path else None
        model = keras.models.load_model(model_path, compile=False)
        output_dir = args.output_dir if args.output_dir is not None else model_path.parent
        manifest = export_submodels(
            model,
            output_dir,
            heads=args.heads,
            formats=tuple(args.formats),
            metrics=metrics,
            overwrite=args.overwrite,
            verbose=args.verbose,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"keras-mwbp export: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"keras-mwbp export: error: writing failed: {error}", file=sys.stderr)
        return 1

    for entry in manifest["heads"]:
        folder = output_dir / entry["folder"]
        print(f"Exported head {entry['index']} (depth {entry['depth']}) to {folder}")
    print(f"Wrote the manifest to {output_dir / MANIFEST_FILENAME}")
    return 0


def resolve_run_files(source):
    """Returns the model file and the results file (or `None`) of a run.

    Args:
        source: Path-like. A run folder with `model.keras`, or a `.keras`
            file. The results file is `results.json` next to the model.

    Returns:
        Tuple `(model_path, results_path)` of `pathlib.Path`, where
        `results_path` is `None` when there is no results file.

    Raises:
        FileNotFoundError: If there is no model file.
        ValueError: If `source` is a file whose name does not end in
            `.keras`.
    """
    source = pathlib.Path(source)
    if source.is_dir():
        model_path = source / RUN_MODEL_FILENAME
        if not model_path.is_file():
            raise FileNotFoundError(
                f"{model_path} was not found. Pass a run folder written by "
                "`keras-mwbp train` or the path of a .keras file."
            )
    elif source.is_file():
        if source.suffix != ".keras":
            raise ValueError(
                f"{source} is not a .keras file. Pass a run folder or the "
                "path of a model saved with model.save('model.keras')."
            )
        model_path = source
    else:
        raise FileNotFoundError(
            f"{source} was not found. Pass a run folder written by "
            "`keras-mwbp train` or the path of a .keras file."
        )
    results_path = model_path.parent / RUN_RESULTS_FILENAME
    return model_path, (results_path if results_path.is_file() else None)


def read_results_metrics(path):
    """Reads the per-head metrics of a `results.json` written by `keras-mwbp train`.

    Args:
        path: Path-like. The results file.

    Returns:
        Dict from output name to a dict of that head's metrics (for example
        `test_error_percent`, `test_errors`, `test_examples`). Depth and
        parameter count are left out, because the manifest computes them
        from the model. Each dict also has `dataset` when the results name
        one.

    Raises:
        ValueError: If the file is not valid JSON or has no list of heads.
    """
    try:
        with open(path, encoding="utf-8") as file:
            results = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    rows = results.get("heads") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(row, dict) and isinstance(row.get("head"), str) for row in rows
    ):
        raise ValueError(
            f"{path} has no list of heads with output names under 'heads'. "
            "Expected the results.json that `keras-mwbp train` writes, or "
            "remove the file to export without metrics."
        )
    settings = results.get("settings")
    dataset = settings.get("dataset") if isinstance(settings, dict) else None
    metrics = {}
    for row in rows:
        head_metrics = {key: value for key, value in row.items() if key not in _STRUCTURE_KEYS}
        if dataset is not None:
            head_metrics["dataset"] = dataset
        metrics[row["head"]] = head_metrics
    return metrics
