"""Compare backprop methods, nu and the number of heads on one CIFAR ResNet.

Trains the CIFAR-style ResNet of `keras_mwbp.models.resnet_cifar` with
auxiliary heads on one dataset, with the same seeds for every setting, and
writes the results in the shape of Tables 6, 7 and 8 and Fig. 3 of Guo et
al., "Multi-way backpropagation for training compact deep neural networks"
(Neural Networks 126, 2020):

- section "methods": per-head test error of each backprop method, plus PNG
  plots of the test error per epoch of the final and the shallowest head;
- section "nu": per-head test error of MW-BP for several fixed nu and the
  Adaptive-I and Adaptive-II schedules;
- section "heads": test error of MW-BP for several numbers of auxiliary
  heads K.

Each finished run (one setting and one seed) goes to a JSON cache at once,
so an interrupted study resumes where it stopped. A run that several
sections need (MW-BP with the default nu and K) is trained once.
The script rewrites only the lines between `START_MARKER` and `END_MARKER`
of the Markdown output and keeps the rest of that file unchanged.

Usage:

    python benchmarks/compare_backprop.py                 # the full study
    python benchmarks/compare_backprop.py --sections methods --seeds 0
    python benchmarks/compare_backprop.py --dataset cifar10 --data-dir DIR \\
        --depth 56 --epochs 160
    python benchmarks/compare_backprop.py --report-only   # Markdown from cache

Runs of one method and K share one model and one traced train function.
Before each run, the weights are set to those of a new model built with the
run's seed, and the optimizer variables get back their values from right
after `compile`. Then `model.nu` is assigned. The nu settings of one K
therefore cost one trace, not one per setting and seed.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mwbp import callbacks as mwbp_callbacks  # noqa: E402
from keras_mwbp import data as mwbp_data  # noqa: E402
from keras_mwbp import training_recipe  # noqa: E402
from keras_mwbp.backprop import methods as backprop_methods  # noqa: E402
from keras_mwbp.heads import MIN_HEAD_SPACING, head_spacing  # noqa: E402
from keras_mwbp.models import resnet_cifar  # noqa: E402
from keras_mwbp.models.resnet_cifar import num_blocks_for_depth  # noqa: E402

LOGGER = logging.getLogger("compare_backprop")

START_MARKER = "<!-- compare_backprop:start -->"
END_MARKER = "<!-- compare_backprop:end -->"

SECTIONS = ("methods", "nu", "heads")
DATASETS = ("mnist", "digits", "cifar10", "cifar100")
ADAPTIVE_SCHEDULES = ("I", "II")

DEFAULT_OUTPUT = "docs/benchmarks.md"
DEFAULT_PLOT_DIR = "docs/study"
DEFAULT_CACHE = "saved_models/compare_backprop/results.json"
# The defaults are sized so that the whole study (16 settings times 3 seeds,
# 11 traced train steps) takes about an hour on a 2-core CPU shared with
# other jobs. Depth 26 is the smallest 6n + 2 depth at which K = 4 keeps
# tau = ceil(L / (K + 1)) >= 5.
DEFAULT_DEPTH = 26
DEFAULT_NUM_AUX = 4
DEFAULT_SEEDS = "0,1,2"
DEFAULT_EPOCHS = 4
DEFAULT_BATCH_SIZE = 128
DEFAULT_NU_VALUES = "0,1,2,5"
# MNIST is downsampled from 28x28 to 7x7 by default, because 14x14 leaves too
# few steps for the hour. Measured on a 2-core AMD EPYC under load from other
# jobs, an MW-BP step of the 5-head ResNet-26 (batch 128) took about 0.5 s at
# 7x7 and 1.1 s at 14x14.
DEFAULT_MNIST_IMAGE_SIZE = 7
# PyTorch's default BatchNorm momentum of 0.1 is 0.9 in Keras terms (the
# weight of the old moving statistic). The Keras default of 0.99 needs
# several hundred steps before the moving statistics fit the data, longer
# than the default runs here, and the test error would then measure stale
# statistics instead of the heads.
DEFAULT_BN_MOMENTUM = 0.9
# The paper's Table 8 shows 25 losses on ResNet-56, a head every
# ceil(56 / 25) = 3 layers, as the setting that hurts most. The default
# "too many heads" setting is the smallest K whose spacing tau is this small.
CROWDED_HEAD_SPACING = 3

CACHE_FORMAT = 1

# Test error in % (mean over seeds) reported by Guo et al. (2020) for
# ResNet-56-5 on CIFAR-10 in their Table 6, heads after layers 15, 25, 35, 45
# and 56.
PAPER_TABLE6 = {
    "standard": (63.01, 45.07, 34.01, 13.71, 6.08),
    "joint": (61.37, 40.11, 28.92, 11.56, 5.83),
    "relay": (58.93, 39.47, 27.64, 10.21, 5.77),
    "mwbp": (50.35, 18.94, 9.23, 5.67, 5.53),
}
# Final-head test error in % of MW-BP on ResNet-56 and CIFAR-10 for 2, 5, 10
# and 25 losses (K + 1), from Table 8 of the same paper.
PAPER_TABLE8 = {2: 5.77, 5: 5.53, 10: 7.36, 25: 9.18}

METHOD_LABELS = {
    "standard": "standard BP",
    "joint": "joint BP",
    "relay": "relay BP",
    "mwbp": "MW-BP",
    "naive_mwbp": "naive MW-BP",
    "reverse_mwbp": "reverse MW-BP",
    "naive_reverse_mwbp": "naive reverse MW-BP",
}


# ----------------------------------------------------------------------
# Settings and the plan of runs.


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a setting of the study and a seed.

    Attributes:
        method: String, one of `keras_mwbp.BACKPROP_METHODS`.
        num_aux: Int. K, the number of auxiliary heads.
        nu: Float. The fixed nu, or the starting nu of an adaptive schedule.
        schedule: String or `None`. "I" or "II" for Adaptive-I or -II.
        seed: Int. Seed of the weights and of the example order.
    """

    method: str
    num_aux: int
    nu: float
    schedule: object
    seed: int

    @property
    def setting(self):
        """The spec without its seed, as a hashable tuple."""
        return (self.method, self.num_aux, self.nu, self.schedule)


def nu_label(nu, schedule):
    """Returns the row label of a nu setting, e.g. "nu = 2" or "Adaptive-I"."""
    if schedule is not None:
        return f"Adaptive-{schedule}"
    return f"nu = {nu:g}"


def max_num_aux_keeping_spacing(depth, num_blocks):
    """Returns the largest K with tau = ceil(L / (K + 1)) >= MIN_HEAD_SPACING."""
    num_aux = 0
    while num_aux + 1 < num_blocks and head_spacing(depth, num_aux + 1) >= MIN_HEAD_SPACING:
        num_aux += 1
    return num_aux


def crowded_num_aux(depth, num_blocks):
    """Returns the smallest K with tau <= CROWDED_HEAD_SPACING, at most N - 1."""
    for num_aux in range(1, num_blocks):
        if head_spacing(depth, num_aux) <= CROWDED_HEAD_SPACING:
            return num_aux
    return num_blocks - 1


def default_num_aux_values(depth, num_aux):
    """Returns K in {1, 2, num_aux, the largest K with tau >= 5, a crowded K}."""
    num_blocks = 3 * num_blocks_for_depth(depth)
    values = {1, 2, num_aux}
    values.add(max_num_aux_keeping_spacing(depth, num_blocks))
    values.add(crowded_num_aux(depth, num_blocks))
    return sorted(k for k in values if 1 <= k < num_blocks)


def plan_runs(args):
    """Returns the specs each requested section needs, keyed by section."""
    plan = {}
    seeds = args.seeds
    if "methods" in args.sections:
        plan["methods"] = [
            RunSpec(method, args.num_aux, args.nu, None, seed)
            for method in args.methods
            for seed in seeds
        ]
    if "nu" in args.sections:
        specs = [
            RunSpec("mwbp", args.num_aux, nu, None, seed)
            for nu in args.nu_values
            for seed in seeds
        ]
        for schedule in args.adaptive:
            start_nu = mwbp_callbacks.ADAPTIVE_NU_MODES[schedule][0]
            specs += [RunSpec("mwbp", args.num_aux, start_nu, schedule, seed) for seed in seeds]
        plan["nu"] = specs
    if "heads" in args.sections:
        plan["heads"] = [
            RunSpec("mwbp", num_aux, args.nu, None, seed)
            for num_aux in args.num_aux_values
            for seed in seeds
        ]
    return plan


def unique_specs(plan):
    """Returns every spec of the plan once, grouped by (method, K)."""
    seen = set()
    ordered = []
    for specs in plan.values():
        for spec in specs:
            if spec not in seen:
                seen.add(spec)
                ordered.append(spec)
    groups = {}
    for spec in ordered:
        groups.setdefault((spec.method, spec.num_aux), []).append(spec)
    return groups


def shared_settings(args):
    """Returns the settings that every run of the study has in common."""
    return {
        "dataset": args.dataset,
        "image_size": args.image_size,
        "depth": args.depth,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "bn_momentum": args.bn_momentum,
    }


def cache_key(settings, spec):
    """Returns the cache key of a run: its settings and spec as sorted JSON."""
    fields = dict(settings)
    fields.update(dataclasses.asdict(spec))
    return json.dumps(fields, sort_keys=True)


# ----------------------------------------------------------------------
# The JSON cache.


def load_cache(path):
    """Reads the cache file, or returns an empty cache if there is none."""
    if not os.path.exists(path):
        return {"format": CACHE_FORMAT, "runs": {}, "invocations": []}
    with open(path, encoding="utf-8") as file:
        cache = json.load(file)
    if cache.get("format") != CACHE_FORMAT:
        raise ValueError(
            f"The cache {path} has format {cache.get('format')!r}, expected "
            f"{CACHE_FORMAT}. Pass another --cache path or delete the file."
        )
    return cache


def save_cache(path, cache):
    """Writes the cache through a temporary file, so a crash leaves the old one."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(cache, file, indent=1, sort_keys=True)
    os.replace(temporary, path)


# ----------------------------------------------------------------------
# Data.


@dataclasses.dataclass
class StudyData:
    """The training and test data of the study.

    For the bundled datasets `train` and `test` are `(images, labels)` NumPy
    pairs. For CIFAR they are `None`, and `fit_inputs` loads batched
    `tf.data.Dataset` objects per seed.
    """

    name: str
    input_shape: tuple
    num_classes: int
    num_train: int
    num_test: int
    native_shape: tuple = None
    train: object = None
    test: object = None
    data_dir: object = None
    image_size: object = None

    def fit_inputs(self, seed, batch_size):
        """Returns the `fit` arguments (x, y, batch_size, validation_data)."""
        # NOTE: the CIFAR branch below was never run to the end, because no
        # prepared CIFAR data was available where this script was written.
        if self.train is not None:
            return {
                "x": self.train[0],
                "y": self.train[1],
                "batch_size": batch_size,
                "validation_data": self.test,
            }
        size = None if self.image_size is None else (self.image_size, self.image_size)
        train = mwbp_data.load(
            self.name, split="train", batch_size=batch_size, seed=seed,
            data_dir=self.data_dir, image_size=size,
        )
        test = mwbp_data.load(
            self.name, split="test", batch_size=batch_size, shuffle=False,
            data_dir=self.data_dir, image_size=size,
        )
        return {"x": train, "validation_data": test}


def _resize_images(images, image_size):
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    # Area interpolation averages whole pixel blocks, so 28 -> 14 is the
    # mean of each 2x2 block.
    resized = tf.image.resize(images, (image_size, image_size), method="area")
    return resized.numpy().astype("float32")


def load_study_data(args):
    """Loads the dataset named by `--dataset`, resized to `--image-size`."""
    if args.dataset in mwbp_data.ARRAY_DATASETS:
        (x_train, y_train), (x_test, y_test) = mwbp_data.load_arrays(args.dataset)
        native_shape = tuple(x_train.shape[1:])
        x_train = _resize_images(x_train, args.image_size)
        x_test = _resize_images(x_test, args.image_size)
        return StudyData(
            name=args.dataset,
            input_shape=tuple(x_train.shape[1:]),
            num_classes=int(max(y_train.max(), y_test.max())) + 1,
            num_train=len(x_train),
            num_test=len(x_test),
            native_shape=native_shape,
            train=(x_train, y_train),
            test=(x_test, y_test),
        )

    size = None if args.image_size is None else (args.image_size, args.image_size)
    info = mwbp_data.dataset_info(args.dataset, image_size=size)
    # Loading both splits once checks that the prepared data is there before
    # any training starts; `DatasetNotAvailableError` explains the fix.
    counts = []
    for split in ("train", "test"):
        dataset = mwbp_data.load(
            args.dataset, split=split, batch_size=1, shuffle=False,
            data_dir=args.data_dir, image_size=size,
        )
        count = int(dataset.cardinality())
        if count < 0:
            count = sum(1 for _ in dataset)
        counts.append(count)
    return StudyData(
        name=args.dataset,
        input_shape=tuple(info.input_shape),
        num_classes=info.num_classes,
        num_train=counts[0],
        num_test=counts[1],
        data_dir=args.data_dir,
        image_size=args.image_size,
    )


# ----------------------------------------------------------------------
# Training.


def build_model(args, study_data, num_aux):
    """Builds the ResNet with the study's BatchNormalization momentum.

    The warning of `resnet_cifar` about heads closer than tau = 5 layers is
    silenced, because section "heads" builds such a model on purpose.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"num_aux=\d+ puts a head every")
        model = resnet_cifar(
            args.depth,
            num_aux=num_aux,
            num_classes=study_data.num_classes,
            input_shape=study_data.input_shape,
        )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = args.bn_momentum
    return model


def _optimizer_variables(model):
    optimizers = [model.optimizer] + list(model.head_optimizers or [])
    variables = []
    for optimizer in optimizers:
        variables.extend(optimizer.variables)
    return variables


class ReusableModel:
    """A compiled model whose weights and optimizer are reset for each run.

    Tracing the multi-way train step of the 5-head ResNet-26 took 80 to 140 s
    on a shared 2-core CPU, so one model serves every run of one method and
    K. `reset` makes a run start as if from a new model: the weights come
    from a model built after `keras.utils.set_random_seed(seed)`, and every
    optimizer variable (step counter, momentum) gets its value from right
    after `compile`.
    """

    def __init__(self, args, study_data, method, num_aux, total_steps):
        self.args = args
        self.study_data = study_data
        self.num_aux = num_aux
        self.model = build_model(args, study_data, num_aux)
        training_recipe.compile_model(
            self.model, method, args.nu, args.learning_rate, total_steps
        )
        self._initial_optimizer_values = {
            id(variable): np.array(variable.numpy())
            for variable in _optimizer_variables(self.model)
        }

    def reset(self, seed, nu):
        """Sets the weights of `seed`, the initial optimizer state and nu."""
        keras.utils.set_random_seed(seed)
        fresh = build_model(self.args, self.study_data, self.num_aux)
        self.model.set_weights(fresh.get_weights())
        del fresh
        for variable in _optimizer_variables(self.model):
            initial = self._initial_optimizer_values.get(id(variable))
            if initial is None:
                # A variable created after compile starts at zero, as the
                # slots of SGD do.
                initial = np.zeros(variable.shape, dtype=variable.dtype)
            variable.assign(initial)
        self.model.nu.assign(float(nu))


def adaptive_drop_epochs(args, total_steps, steps_per_epoch):
    """Returns the epochs that start with a lower learning rate than the one before."""
    schedule = training_recipe.learning_rate_schedule(args.learning_rate, total_steps)
    return mwbp_callbacks.schedule_drop_epochs(schedule, steps_per_epoch, args.epochs)


def train_run(reusable, spec, args, study_data):
    """Trains one run and returns its record for the cache."""
    steps_per_epoch = training_recipe.steps_per_epoch(study_data.num_train, args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    reusable.reset(spec.seed, spec.nu)
    run_callbacks = []
    if spec.schedule is not None:
        drops = adaptive_drop_epochs(args, total_steps, steps_per_epoch)
        run_callbacks.append(mwbp_callbacks.AdaptiveNu(spec.schedule, drop_epochs=drops))

    # Seeded again so that the example order depends only on the seed, not
    # on how many random ops building the fresh weights used.
    keras.utils.set_random_seed(spec.seed)
    start = time.perf_counter()
    history = reusable.model.fit(
        epochs=args.epochs,
        callbacks=run_callbacks,
        verbose=0,
        **study_data.fit_inputs(spec.seed, args.batch_size),
    )
    seconds = time.perf_counter() - start

    num_heads = reusable.num_aux + 1
    test_error = []
    train_error = []
    for head in range(num_heads):
        test_accuracy = history.history[f"val_head_{head}_accuracy"]
        train_accuracy = history.history[f"head_{head}_accuracy"]
        test_error.append([100.0 * (1.0 - float(a)) for a in test_accuracy])
        train_error.append([100.0 * (1.0 - float(a)) for a in train_accuracy])
    return {
        "head_depths": [int(d) for d in reusable.model.head_depths],
        "test_error_per_epoch": test_error,
        "train_error_per_epoch": train_error,
        "nu_per_epoch": [float(v) for v in history.history.get("nu", [])],
        "seconds": seconds,
        "machine": describe_machine(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def format_errors(errors):
    return " ".join(f"{e:5.2f}" for e in errors)


def run_study(args, study_data, plan, cache):
    """Trains every run of the plan that the cache does not contain."""
    settings = shared_settings(args)
    groups = unique_specs(plan)
    total = sum(len(specs) for specs in groups.values())
    pending = sum(
        1 for specs in groups.values() for spec in specs
        if cache_key(settings, spec) not in cache["runs"]
    )
    LOGGER.info("%d runs in the plan, %d in the cache, %d to train", total, total - pending, pending)
    steps_per_epoch = training_recipe.steps_per_epoch(study_data.num_train, args.batch_size)
    total_steps = steps_per_epoch * args.epochs

    done = 0
    for (method, num_aux), specs in groups.items():
        missing = [s for s in specs if cache_key(settings, s) not in cache["runs"]]
        if not missing:
            continue
        keras.backend.clear_session()
        reusable = ReusableModel(args, study_data, method, num_aux, total_steps)
        for spec in missing:
            record = train_run(reusable, spec, args, study_data)
            cache["runs"][cache_key(settings, spec)] = record
            save_cache(args.cache, cache)
            done += 1
            final_errors = [errors[-1] for errors in record["test_error_per_epoch"]]
            LOGGER.info(
                "run %d/%d done in %.0f s: %s K=%d %s seed=%d, test error %% per head "
                "(depths %s): %s",
                done, pending, record["seconds"], method, num_aux,
                nu_label(spec.nu, spec.schedule), spec.seed,
                ",".join(str(d) for d in record["head_depths"]), format_errors(final_errors),
            )
        del reusable


# ----------------------------------------------------------------------
# Summaries.


def describe_machine():
    """Returns the CPU model, core count, GPU count and TF/Keras versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{cpu}, {os.cpu_count()} CPU cores, {gpus} GPUs, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


@dataclasses.dataclass
class SettingResult:
    """Results of one setting over its seeds; errors are in %."""

    head_depths: list
    final_errors: np.ndarray  # Shape (seeds, heads): error after the last epoch.
    curves: np.ndarray  # Shape (seeds, heads, epochs).
    seconds: list

    @property
    def num_seeds(self):
        return self.final_errors.shape[0]

    def mean(self):
        return self.final_errors.mean(axis=0)

    def std(self):
        if self.num_seeds < 2:
            return np.zeros(self.final_errors.shape[1])
        return self.final_errors.std(axis=0, ddof=1)


def collect(cache, settings, specs):
    """Groups the cached runs of `specs` by setting; missing runs are skipped."""
    by_setting = {}
    for spec in specs:
        record = cache["runs"].get(cache_key(settings, spec))
        if record is not None:
            by_setting.setdefault(spec.setting, []).append(record)
    results = {}
    for setting, records in by_setting.items():
        results[setting] = SettingResult(
            head_depths=records[0]["head_depths"],
            final_errors=np.array([[e[-1] for e in r["test_error_per_epoch"]] for r in records]),
            curves=np.array([r["test_error_per_epoch"] for r in records]),
            seconds=[r["seconds"] for r in records],
        )
    return results


def settings_in_order(specs):
    ordered = []
    for spec in specs:
        if spec.setting not in ordered:
            ordered.append(spec.setting)
    return ordered


def format_cell(result, head):
    if result is None:
        return "not run"
    mean = result.mean()[head]
    if result.num_seeds < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {result.std()[head]:.2f}"


def compare_words(a_mean, a_std, b_mean, b_std):
    """Returns "lower", "higher" or "within the seed spread" for a vs b."""
    if abs(a_mean - b_mean) <= a_std + b_std:
        return "within the seed spread of"
    return "lower than" if a_mean < b_mean else "higher than"


def per_head_table(row_labels, results_in_order, head_depths):
    """Returns Markdown lines: one row per setting, one column per head."""
    header = ["setting"] + [f"head {i} (depth {d})" for i, d in enumerate(head_depths)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(head_depths)) + "|",
    ]
    for label, result in zip(row_labels, results_in_order):
        cells = [format_cell(result, head) for head in range(len(head_depths))]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return lines


def mean_seconds(result):
    return statistics.mean(result.seconds) if result is not None else float("nan")


# ----------------------------------------------------------------------
# Sections of the Markdown report.


def methods_section(args, cache, specs, plot_links):
    settings = shared_settings(args)
    results = collect(cache, settings, specs)
    ordered = settings_in_order(specs)
    available = [results.get(s) for s in ordered]
    lines = ["### Backprop methods (shape of the paper's Table 6)", ""]
    if not any(available):
        return lines + ["No run of this section is in the cache yet.", ""]
    depths = next(r for r in available if r is not None).head_depths
    labels = [METHOD_LABELS[s[0]] for s in ordered]
    lines += [
        f"Test error in % after the last epoch, mean ± sample standard deviation over "
        f"seeds {args.seed_text}; K = {args.num_aux}, nu = {args.nu:g}. The last column "
        "is the final head. Under standard BP only the final loss trains the "
        "backbone, and the auxiliary heads learn at the same time on features that "
        "pass no gradient back. The paper instead trains those heads afterwards on "
        "the frozen backbone.",
        "",
    ]
    lines += per_head_table(labels, available, depths)
    lines += ["", "Mean training time per run (fit, including the first trace of the "
              "method's train step in its first run):", ""]
    lines += [
        ", ".join(
            f"{METHOD_LABELS[s[0]]} {mean_seconds(r):.0f} s" for s, r in zip(ordered, available)
            if r is not None
        ),
        "",
    ]
    lines += methods_comparison(results, ordered)
    for caption, link in plot_links:
        lines += [f"![{caption}]({link})", ""]
    return lines


def methods_comparison(results, ordered):
    """Returns sentences that compare MW-BP with standard, joint and relay BP."""
    by_method = {s[0]: results.get(s) for s in ordered}
    mwbp = by_method.get("mwbp")
    baselines = {m: by_method.get(m) for m in ("standard", "joint", "relay") if by_method.get(m)}
    if mwbp is None or not baselines:
        return []
    lines = [
        "Comparison with the paper. Guo et al. report for ResNet-56 with 4 auxiliary "
        "heads on CIFAR-10 that every MW-BP head has a lower test error than the same "
        "head under standard, joint and relay BP, by a wide margin for the shallow "
        "heads (layer 15: 50.35 % against 58.93-63.01 %, layer 25: 18.94 % against "
        "39.47-45.07 %) and by 0.24-0.55 points for the final head (5.53 % against "
        "5.77-6.08 %). Differences below the sum of the two standard deviations are "
        "called within the seed spread here. The baselines are "
        + ", ".join(METHOD_LABELS[m] for m in baselines)
        + ".",
        "",
    ]
    mean, std = mwbp.mean(), mwbp.std()
    wins = 0
    for head, depth in enumerate(mwbp.head_depths):
        best_name = min(baselines, key=lambda m: baselines[m].mean()[head])
        best = baselines[best_name]
        words = compare_words(mean[head], std[head], best.mean()[head], best.std()[head])
        if words == "lower than":
            wins += 1
        lines.append(
            f"- Head {head} (depth {depth}): MW-BP {mean[head]:.2f} % is {words} the "
            f"lowest baseline, {METHOD_LABELS[best_name]} with {best.mean()[head]:.2f} %."
        )
    num_heads = len(mwbp.head_depths)
    agreement = "agrees with" if wins == num_heads else "differs from"
    lines += [
        "",
        f"MW-BP is clearly lower on {wins} of {num_heads} heads, which {agreement} "
        "the paper's result of lower error on every head.",
        "",
    ]
    return lines


def nu_section(args, cache, specs):
    settings = shared_settings(args)
    results = collect(cache, settings, specs)
    ordered = settings_in_order(specs)
    available = [results.get(s) for s in ordered]
    lines = ["### Loss-weight exponent nu (shape of the paper's Table 7)", ""]
    if not any(available):
        return lines + ["No run of this section is in the cache yet.", ""]
    depths = next(r for r in available if r is not None).head_depths
    labels = [nu_label(s[2], s[3]) for s in ordered]
    lines += [
        f"MW-BP, K = {args.num_aux}; test error in % after the last epoch, mean ± "
        f"sample standard deviation over seeds {args.seed_text}. gamma_i = "
        "max(0.01, (L_i / L_{K-1})^nu) for the auxiliary heads and 1 for the final "
        "head. Adaptive-I starts at nu = 0.5 and doubles it at each learning-rate "
        "drop, Adaptive-II starts at 2 and halves it.",
        "",
    ]
    lines += per_head_table(labels, available, depths)
    lines += [""] + nu_comparison(results, ordered, args.nu)
    return lines


def nu_comparison(results, ordered, default_nu):
    fixed = [(s, results[s]) for s in ordered if s[3] is None and s in results]
    reference_key = next((s for s, _ in fixed if s[2] == default_nu), None)
    if len(fixed) < 2:
        return []
    lines = [
        "Comparison with the paper. Guo et al. use nu = 2 by default, suggest nu in "
        "[0.5, 2], and report that both adaptive schedules give a slightly higher "
        "final-head error but lower intermediate-head errors than nu = 2.",
        "",
    ]
    num_heads = len(fixed[0][1].head_depths)
    for head in (0, num_heads - 1):
        means = {nu_label(s[2], None): r.mean()[head] for s, r in fixed}
        best = min(means, key=means.get)
        worst = max(means, key=means.get)
        lines.append(
            f"- Head {head} (depth {fixed[0][1].head_depths[head]}): fixed nu gives "
            f"{means[best]:.2f} % ({best}) to {means[worst]:.2f} % ({worst})."
        )
    if reference_key is not None:
        reference = results[reference_key]
        for schedule in ADAPTIVE_SCHEDULES:
            adaptive = next((results[s] for s in ordered if s[3] == schedule and s in results), None)
            if adaptive is None:
                continue
            parts = []
            for head in range(num_heads):
                words = compare_words(
                    adaptive.mean()[head], adaptive.std()[head],
                    reference.mean()[head], reference.std()[head],
                )
                parts.append(f"head {head} {words} nu = {default_nu:g}")
            lines.append(f"- Adaptive-{schedule}: " + "; ".join(parts) + ".")
    lines.append("")
    return lines


def heads_section(args, cache, specs):
    settings = shared_settings(args)
    results = collect(cache, settings, specs)
    ordered = settings_in_order(specs)
    lines = ["### Number of auxiliary heads (shape of the paper's Table 8)", ""]
    if not any(s in results for s in ordered):
        return lines + ["No run of this section is in the cache yet.", ""]
    lines += [
        f"MW-BP, nu = {args.nu:g}; test error in % after the last epoch, mean ± "
        f"sample standard deviation over seeds {args.seed_text}. tau = ceil(L / (K + 1)) "
        f"with L = {args.depth}; the paper advises tau >= {MIN_HEAD_SPACING}. The "
        "heads differ between rows, so the last column lists every head as "
        "depth: error.",
        "",
        "| K | losses | tau | final head (depth "
        f"{args.depth}) | shallowest head | all heads, depth: error |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for setting in ordered:
        num_aux = setting[1]
        result = results.get(setting)
        tau = head_spacing(args.depth, num_aux)
        if result is None:
            lines.append(f"| {num_aux} | {num_aux + 1} | {tau} | not run | not run | |")
            continue
        every_head = ", ".join(
            f"{d}: {m:.2f}" for d, m in zip(result.head_depths, result.mean())
        )
        lines.append(
            f"| {num_aux} | {num_aux + 1} | {tau} | {format_cell(result, num_aux)} | "
            f"{format_cell(result, 0)} (depth {result.head_depths[0]}) | {every_head} |"
        )
    lines += [""] + heads_comparison(results, ordered, args)
    return lines


def heads_comparison(results, ordered, args):
    rows = [(s[1], results[s]) for s in ordered if s in results]
    if len(rows) < 2:
        return []
    lines = [
        "Comparison with the paper. Guo et al. report final-head errors of MW-BP on "
        "ResNet-56 and CIFAR-10 of "
        + ", ".join(f"{e:.2f} % with {n} losses" for n, e in PAPER_TABLE8.items())
        + ": up to 5 losses help, and 10 or 25 losses hurt.",
        "",
    ]
    best_k, best = min(rows, key=lambda row: row[1].mean()[-1])
    for num_aux, result in rows:
        if num_aux == best_k:
            continue
        words = compare_words(
            result.mean()[-1], result.std()[-1], best.mean()[-1], best.std()[-1]
        )
        tau = head_spacing(args.depth, num_aux)
        lines.append(
            f"- K = {num_aux} (tau = {tau}): final head {result.mean()[-1]:.2f} % is "
            f"{words} the lowest, {best.mean()[-1]:.2f} % with K = {best_k}."
        )
    crowded = [(k, r) for k, r in rows if head_spacing(args.depth, k) < MIN_HEAD_SPACING]
    spaced = [(k, r) for k, r in rows if head_spacing(args.depth, k) >= MIN_HEAD_SPACING]
    if crowded and spaced:
        best_spaced = min(r.mean()[-1] for _, r in spaced)
        hurt = [k for k, r in crowded if r.mean()[-1] > best_spaced + r.std()[-1]]
        if hurt:
            verdict = (
                f"K = {', '.join(map(str, hurt))} (tau < {MIN_HEAD_SPACING}) has a higher "
                "final-head error than the best spaced setting, as in the paper."
            )
        else:
            verdict = (
                f"No K with tau < {MIN_HEAD_SPACING} is clearly worse than the best "
                "spaced setting here, unlike in the paper."
            )
        lines += ["", verdict]
    lines.append("")
    return lines


# ----------------------------------------------------------------------
# Plots.


def write_plots(args, cache, specs):
    """Writes the error-per-epoch plots of the methods section; returns their links."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    settings = shared_settings(args)
    results = collect(cache, settings, specs)
    ordered = [s for s in settings_in_order(specs) if s in results]
    if not ordered:
        return []
    os.makedirs(args.plot_dir, exist_ok=True)
    output_dir = os.path.dirname(os.path.abspath(args.output))
    links = []
    depths = results[ordered[0]].head_depths
    for head, name, title in (
        (len(depths) - 1, "final_head_test_error.png", "final head"),
        (0, "shallowest_head_test_error.png", "shallowest head"),
    ):
        figure, axis = pyplot.subplots(figsize=(6.4, 4.0))
        for setting in ordered:
            curve = results[setting].curves[:, head, :].mean(axis=0)
            epochs = np.arange(1, len(curve) + 1)
            axis.plot(epochs, curve, marker="o", markersize=3, label=METHOD_LABELS[setting[0]])
        axis.set_xlabel("epoch")
        axis.set_ylabel("test error (%), mean over seeds")
        axis.set_title(
            f"{title} (depth {depths[head]}), ResNet-{args.depth}, K = {args.num_aux}, "
            f"{args.dataset}"
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = os.path.join(args.plot_dir, name)
        figure.savefig(path, dpi=100)
        pyplot.close(figure)
        link = os.path.relpath(os.path.abspath(path), output_dir).replace(os.sep, "/")
        links.append((f"Test error per epoch of the {title}, one curve per method", link))
    return links


# ----------------------------------------------------------------------
# The Markdown region.


def replace_region(text, region_lines):
    """Returns `text` with the lines between the markers replaced.

    The markers are appended at the end of `text` when it has none. Text
    outside the markers is kept byte for byte.
    """
    body = START_MARKER + "\n" + "\n".join(region_lines).rstrip("\n") + "\n" + END_MARKER
    start = text.find(START_MARKER)
    end = text.find(END_MARKER)
    if start == -1 and end == -1:
        # One blank line between the old text and the new region.
        if text == "" or text.endswith("\n\n"):
            separator = ""
        elif text.endswith("\n"):
            separator = "\n"
        else:
            separator = "\n\n"
        return text + separator + body + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError(
            f"The Markdown output has only one of the markers {START_MARKER!r} and "
            f"{END_MARKER!r}, or they are in the wrong order. Fix or remove them."
        )
    return text[:start] + body + text[end + len(END_MARKER):]


def write_markdown(path, region_lines):
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8", newline="") as file:
            text = file.read()
    new_text = replace_region(text, region_lines)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write(new_text)


def report_header(args, study_data, cache, plan, command):
    settings = shared_settings(args)
    keys = {cache_key(settings, s) for specs in plan.values() for s in specs}
    records = [cache["runs"][k] for k in keys if k in cache["runs"]]
    machines = sorted({r["machine"] for r in records}) or [describe_machine()]
    training_seconds = sum(r["seconds"] for r in records)
    wall_seconds = sum(i["seconds"] for i in cache.get("invocations", []))
    steps_per_epoch = training_recipe.steps_per_epoch(study_data.num_train, args.batch_size)
    boundaries = training_recipe.learning_rate_schedule(
        args.learning_rate, steps_per_epoch * args.epochs
    ).boundaries
    shape = "x".join(str(s) for s in study_data.input_shape)
    resized = ""
    native = study_data.native_shape
    if native is not None and tuple(native) != tuple(study_data.input_shape):
        native_text = "x".join(str(s) for s in native[:2])
        resized = f", downsampled from {native_text} with area interpolation"
    # The cache lists every invocation that trained; a --report-only call
    # adds none, so the commands shown are those that produced the numbers.
    commands = []
    for invocation in cache.get("invocations", []):
        if invocation["command"] not in commands:
            commands.append(invocation["command"])
    if not commands:
        commands = [command]
    command_text = ", then ".join(f"`{c}`" for c in commands)

    lines = [
        "## Backprop methods compared (Tables 6-8 and Fig. 3 of Guo et al. 2020)",
        "",
        "Generated by `benchmarks/compare_backprop.py`; the lines between the "
        "compare_backprop markers are rewritten on every run of the script. The "
        "paper's numbers come from Guo et al., \"Multi-way backpropagation for "
        "training compact deep neural networks\", Neural Networks 126 (2020), "
        "ResNet-56 on CIFAR-10 with 400 epochs, a far larger setting than this one.",
        "",
        f"- Command: {command_text}",
        f"- Machine: {'; '.join(machines)}",
        f"- Time: {wall_seconds / 60:.1f} min wall time over "
        f"{len(cache.get('invocations', []))} invocation(s) of the script that "
        f"share the cache, {training_seconds / 60:.1f} min of it in `fit` for "
        f"{len(records)} runs",
        f"- Data: {args.dataset}, {study_data.num_train} training and "
        f"{study_data.num_test} test images of shape {shape}{resized}. The test "
        "error per epoch is measured on the test set, which is used for nothing "
        "else (no early stopping, no tuning).",
        f"- Model: ResNet-{args.depth} of `keras_mwbp.models.resnet_cifar`, "
        f"auxiliary heads BN-ReLU-GAP-dense at the default block positions, "
        f"K = {args.num_aux} unless varied",
        f"- Recipe: SGD with Nesterov momentum {training_recipe.MOMENTUM}, weight "
        f"decay {training_recipe.WEIGHT_DECAY:g} (decoupled, through the Keras "
        f"optimizer), batch {args.batch_size}, {args.epochs} epochs of "
        f"{steps_per_epoch} steps, learning rate {args.learning_rate:g} divided by "
        f"10 after steps {boundaries[0] + 1} and {boundaries[1] + 1} (40 % and 60 %), "
        f"nu = {args.nu:g} unless varied, seeds {args.seed_text}, BatchNormalization "
        f"momentum {args.bn_momentum:g} (Keras meaning; PyTorch's default); no augmentation"
        + (" except CIFAR's pad-crop-flip" if args.dataset.startswith("cifar") else ""),
        "",
    ]
    return lines


def build_report(args, study_data, cache, plan, command):
    lines = report_header(args, study_data, cache, plan, command)
    if "methods" in plan:
        links = write_plots(args, cache, plan["methods"])
        lines += methods_section(args, cache, plan["methods"], links)
    if "nu" in plan:
        lines += nu_section(args, cache, plan["nu"])
    if "heads" in plan:
        lines += heads_section(args, cache, plan["heads"])
    return lines


# ----------------------------------------------------------------------
# Command line.


def _int_list(text):
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid list of integers: {text!r}; expected e.g. 0,1,2"
        ) from None


def _float_list(text):
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid list of numbers: {text!r}; expected e.g. 0,1,2,5"
        ) from None


def _name_list(choices):
    def parse(text):
        names = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"invalid value(s) {unknown}; expected a comma-separated subset of {list(choices)}"
            )
        return names

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=DATASETS, default="mnist",
                        help="Dataset. CIFAR needs --data-dir with prepared tfds data.")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets folder with prepared CIFAR data.")
    parser.add_argument("--image-size", type=int, default=None,
                        help="Resize images to this height and width in pixels. "
                             f"Default: {DEFAULT_MNIST_IMAGE_SIZE} for mnist, the "
                             "native size otherwise; 0 keeps the native size.")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                        help="ResNet depth in weighted layers, 6n + 2.")
    parser.add_argument("--num-aux", type=int, default=DEFAULT_NUM_AUX,
                        help="K, the number of auxiliary heads, except in section 'heads'.")
    parser.add_argument("--seeds", type=_int_list, default=_int_list(DEFAULT_SEEDS),
                        help="Comma-separated seeds; every setting runs once per seed.")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="Epochs per run.")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="Images per training step.")
    parser.add_argument("--learning-rate", type=float,
                        default=training_recipe.INITIAL_LEARNING_RATE,
                        help="Initial learning rate, divided by 10 at 40 %% and 60 %% of the steps.")
    parser.add_argument("--bn-momentum", type=float, default=DEFAULT_BN_MOMENTUM,
                        help="Momentum of every BatchNormalization layer (Keras meaning: "
                             "weight of the old moving statistic).")
    parser.add_argument("--nu", type=float, default=training_recipe.DEFAULT_NU,
                        help="nu of every run that does not vary it.")
    parser.add_argument("--sections", type=_name_list(SECTIONS), default=list(SECTIONS),
                        help=f"Comma-separated sections to run and report: {','.join(SECTIONS)}.")
    parser.add_argument("--methods", type=_name_list(backprop_methods.BACKPROP_METHODS),
                        default=list(backprop_methods.BACKPROP_METHODS),
                        help="Comma-separated methods of section 'methods'.")
    parser.add_argument("--nu-values", type=_float_list, default=_float_list(DEFAULT_NU_VALUES),
                        help="Comma-separated fixed nu of section 'nu'.")
    parser.add_argument("--adaptive", type=_name_list(ADAPTIVE_SCHEDULES),
                        default=list(ADAPTIVE_SCHEDULES),
                        help="Comma-separated adaptive nu schedules of section 'nu' "
                             "(I, II); an empty string runs none.")
    parser.add_argument("--num-aux-values", type=_int_list, default=None,
                        help="Comma-separated K of section 'heads'. Default: 1, 2, "
                             "--num-aux, the largest K with tau >= 5 and the smallest "
                             f"K with tau <= {CROWDED_HEAD_SPACING}.")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="Markdown file whose compare_backprop region is rewritten.")
    parser.add_argument("--plot-dir", default=DEFAULT_PLOT_DIR, help="Folder of the PNG plots.")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="JSON file of finished runs.")
    parser.add_argument("--report-only", action="store_true",
                        help="Train nothing; write the Markdown and plots from the cache.")
    args = parser.parse_args(argv)
    return finish_args(parser, args)


def finish_args(parser, args):
    """Checks the arguments and fills in the defaults that depend on others."""
    try:
        num_blocks = 3 * num_blocks_for_depth(args.depth)
    except ValueError as error:
        parser.error(str(error))
    if not 1 <= args.num_aux < num_blocks:
        parser.error(
            f"invalid --num-aux {args.num_aux}: expected 1 to {num_blocks - 1} "
            f"for depth {args.depth} ({num_blocks} blocks)"
        )
    if args.num_aux_values is None:
        args.num_aux_values = default_num_aux_values(args.depth, args.num_aux)
    bad = [k for k in args.num_aux_values if not 1 <= k < num_blocks]
    if bad:
        parser.error(f"invalid --num-aux-values {bad}: expected 1 to {num_blocks - 1}")

    if not args.seeds or any(s < 0 for s in args.seeds):
        parser.error("invalid --seeds: expected one or more non-negative integers")
    for name in ("seeds", "nu_values", "num_aux_values", "methods", "adaptive"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            parser.error(f"invalid --{name.replace('_', '-')} {values}: expected distinct values")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"invalid --{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    if not 0 <= args.bn_momentum < 1:
        parser.error(f"invalid --bn-momentum {args.bn_momentum}: expected a value in [0, 1)")
    if args.nu < 0 or any(nu < 0 for nu in args.nu_values):
        parser.error("invalid nu: expected values >= 0")

    if args.image_size is None:
        args.image_size = DEFAULT_MNIST_IMAGE_SIZE if args.dataset == "mnist" else None
    elif args.image_size == 0:
        args.image_size = None
    elif args.image_size < 0:
        parser.error(f"invalid --image-size {args.image_size}: expected >= 0")
    if args.dataset.startswith("cifar") and args.data_dir is None:
        parser.error(
            f"--dataset {args.dataset} needs --data-dir, the tensorflow-datasets folder "
            "with the prepared data (this script never downloads data)"
        )

    args.seed_text = ", ".join(str(s) for s in args.seeds)
    return args


def main(argv=None):
    """Runs the study and rewrites the Markdown region; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    raw_argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw_argv)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/compare_backprop.py"] + raw_argv)
    start = time.perf_counter()
    LOGGER.info("start: %s on %s", command, describe_machine())

    try:
        study_data = load_study_data(args)
    except mwbp_data.DatasetNotAvailableError as error:
        LOGGER.error("failed to load %s: %s", args.dataset, error)
        return 2
    plan = plan_runs(args)
    cache = load_cache(args.cache)
    if not args.report_only:
        try:
            run_study(args, study_data, plan, cache)
        finally:
            cache.setdefault("invocations", []).append({
                "command": command,
                "seconds": time.perf_counter() - start,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            })
            save_cache(args.cache, cache)

    region = build_report(args, study_data, cache, plan, command)
    write_markdown(args.output, region)
    LOGGER.info("wrote %s and plots in %s after %.0f s", args.output, args.plot_dir,
                time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
