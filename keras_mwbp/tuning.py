"""Search nu and the number of auxiliary heads with KerasTuner.

`MultiWayHyperModel` builds and compiles one `MultiWayModel` per trial, with
the loss-weight exponent nu, the number of auxiliary heads K and optionally
the backprop method and the head type chosen by the tuner. Models with
different K name their heads differently ("head_0" ... "head_K"), so their
per-head metrics cannot serve as a tuner objective. `HeadSummaryCallback`
therefore adds metrics with the same names for every K to the epoch logs
(see `summarize_head_accuracies`), and `objective_for` returns the
`keras_tuner.Objective` for each of them.

`keras_mwbp.tuning_command` runs such a search from the command line
(`keras-mwbp tune`).

Guo et al. (2020) below is Y. Guo, J. Chen, Q. Du, A. van den Hengel, Q. Shi
and M. Tan, "Multi-way backpropagation for training compact deep neural
networks", Neural Networks 126 (2020).
"""

import math
import numbers

import keras
import keras_tuner

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
