"""Keras callbacks that set and log the loss weights gamma of a `MultiWayModel`.

`NuScheduler` and `AdaptiveNu` assign `model.nu`, the exponent from which the
model computes gamma_i = max(0.01, (L_i / L_{K-1}) ** nu) for the auxiliary
heads and 1 for the final head. `GammaScheduler` assigns explicit gammas to
`model.fixed_loss_weights`. All of them change model variables that the
compiled train step reads, so a new value takes effect at the next step
without retracing the train function.

Every callback here writes the loss weights of the epoch into the `logs` of
`on_epoch_end`, under these keys:

- `"nu"`: the value of `model.nu`, written only when gamma is computed from
  nu (that is, when the model was compiled without `loss_weights`).
- `f"{output_name}_gamma"`: the gamma of each head, one key per entry of
  `model.output_names` (for example `"aux_gamma"` and `"final_gamma"`).

So the values reach `History`, the `verbose=2` progress bar line and the
`keras.callbacks.TensorBoard` callback (as the scalars `"epoch_nu"` and
`"epoch_{output_name}_gamma"`), provided that the TensorBoard callback comes
after the writing callback in the `callbacks` list. When several of these
callbacks are used, each writes the same values to the same keys, so every
value is logged once.
"""

import inspect
import math
import warnings

import keras
import numpy as np

from keras_mwbp import _keras_private as kp

NU_LOG_KEY = "nu"
GAMMA_LOG_KEY_SUFFIX = "_gamma"

# Adaptive strategies of Guo et al., "Multi-way backpropagation for training
# compact deep neural networks", Neural Networks 2020: "Adaptive-I" starts at
# nu = 0.5 and doubles nu at each learning-rate drop, "Adaptive-II" starts at
# nu = 2 and halves it. Each mode maps to (initial nu, factor per drop).
ADAPTIVE_NU_MODES = {"I": (0.5, 2.0), "II": (2.0, 0.5)}
_MODE_ALIASES = {
    "i": "I",
    "adaptive_i": "I",
    "ii": "II",
    "adaptive_ii": "II",
}


# ----------------------------------------------------------------------
# Helpers shared by the callbacks.


def gamma_log_key(output_name):
    """Returns the `logs` key under which a head's gamma is written."""
    return f"{output_name}{GAMMA_LOG_KEY_SUFFIX}"


def _check_multiway_model(model, callback_name):
    for attribute in ("nu", "fixed_loss_weights", "loss_weights_now"):
        if not hasattr(model, attribute):
            raise TypeError(
                f"{callback_name} requires a `keras_mwbp.MultiWayModel`, "
                f"which has `{attribute}`. Received a model of type "
                f"{type(model).__name__}."
            )


def _uses_fixed_loss_weights(model):
    return bool(getattr(model, "_use_fixed_loss_weights", False))


def _read_scalar(variable):
    return float(keras.ops.convert_to_numpy(variable))


def write_loss_weights_to_logs(model, logs):
    """Writes the model's current nu and gammas into an epoch's `logs` dict.

    The `"nu"` key is written only when the model computes gamma from nu.
    Writing twice in one epoch stores the same values again, so several
    callbacks may call this for the same `logs`.

    Args:
        model: A `keras_mwbp.MultiWayModel`.
        logs: Dict or `None`. The `logs` passed to `on_epoch_end`. Nothing is
            written when it is `None`.
    """
    if logs is None:
        return
    if not _uses_fixed_loss_weights(model):
        logs[NU_LOG_KEY] = _read_scalar(model.nu)
    gammas = model.loss_weights_now()
    for name, gamma in zip(model.output_names, gammas):
        logs[gamma_log_key(name)] = float(gamma)


def _to_float(value):
    """Converts a Python, NumPy or tensor scalar to float, or returns `None`."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return None
    if array.shape != () or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array)


def _validate_nu(value, epoch, callback_name):
    nu = _to_float(value)
    if nu is None or not math.isfinite(nu) or nu < 0:
        raise ValueError(
            f"{callback_name}: invalid nu for epoch {epoch}: {value!r}. The "
            "schedule must return a finite float >= 0 (0 weighs every head "
            "equally, 2 is the usual choice)."
        )
    return nu


def _count_required_positional_parameters(function):
    """Counts the positional parameters of `function` that have no default.

    Returns `None` when the signature cannot be inspected.
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ) and parameter.default is inspect.Parameter.empty:
            count += 1
    return count


def _unwrap_optimizer(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _learning_rate_schedule(optimizer):
    """Returns the optimizer's `LearningRateSchedule`, or `None` if it has none."""
    # Keras 3.15 has no public accessor for the schedule object
    # (`learning_rate` returns its value at the current step).
    learning_rate = kp.optimizer_learning_rate_source(_unwrap_optimizer(optimizer))
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        return learning_rate
    return None


def _current_learning_rate(optimizer):
    """Returns the learning rate that the next step uses, as a float."""
    # For a schedule, Keras evaluates it at the optimizer's `iterations`.
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _evaluate_schedule(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _decrease_indices(values):
    """Returns the indices `k >= 1` where `values[k] < values[k - 1]`."""
    return [k for k in range(1, len(values)) if values[k] < values[k - 1]]


def schedule_drop_epochs(schedule, steps_per_epoch, epochs):
    """Computes the epochs that start with a lower learning rate than the previous one.

    Epoch `k` is taken to start at step `k * steps_per_epoch`, and the drop
    epochs are those `k` in `[1, epochs)` where the schedule's value at the
    start of epoch `k` is lower than at the start of epoch `k - 1`. For a
    `keras.optimizers.schedules.PiecewiseConstantDecay` with a decreasing
    value after step `b`, the drop epoch is `b // steps_per_epoch + 1`,
    because that schedule switches value after the boundary step. The result
    can be passed as `AdaptiveNu(drop_epochs=...)`.

    A schedule that decays at every step (cosine, exponential without
    `staircase`) lowers the rate at every epoch, so every epoch is returned.

    Example:

    ```python
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[1600, 2400], values=[0.1, 0.01, 0.001]
    )
    schedule_drop_epochs(schedule, steps_per_epoch=100, epochs=40)  # [17, 25]
    ```

    Args:
        schedule: `keras.optimizers.schedules.LearningRateSchedule` or a
            callable that maps a step to a learning rate.
        steps_per_epoch: Int, at least 1. Training steps per epoch.
        epochs: Int, at least 0. Number of epochs to check.

    Returns:
        A sorted list of ints, the drop epochs.
    """
    if not callable(schedule):
        raise TypeError(
            "Invalid value for argument `schedule`. Expected a "
            "`keras.optimizers.schedules.LearningRateSchedule` or a callable. "
            f"Received: schedule={schedule!r}"
        )
    if isinstance(steps_per_epoch, bool) or not isinstance(
        steps_per_epoch, (int, np.integer)
    ) or steps_per_epoch < 1:
        raise ValueError(
            "Invalid value for argument `steps_per_epoch`. Expected an integer "
            f"of at least 1. Received: steps_per_epoch={steps_per_epoch!r}"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(
            "Invalid value for argument `epochs`. Expected a non-negative "
            f"integer. Received: epochs={epochs!r}"
        )
    rates = [_evaluate_schedule(schedule, k * int(steps_per_epoch)) for k in range(epochs)]
    return _decrease_indices(rates)


class _LossWeightCallback(keras.callbacks.Callback):
    """Base class: checks the model and writes nu and gamma into epoch logs."""

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        _check_multiway_model(self.model, type(self).__name__)

    def on_epoch_end(self, epoch, logs=None):
        write_loss_weights_to_logs(self.model, logs)

    def _print(self, epoch, message):
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {type(self).__name__} {message}")

    def get_config(self):
        return {"verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _require_nu_weights(model, callback_name):
    if _uses_fixed_loss_weights(model):
        raise ValueError(
            f"{callback_name} sets `model.nu`, but the model was compiled with "
            "`loss_weights=`, so its gammas are fixed and nu is not used. "
            "Compile without `loss_weights` to use nu, or use "
            "`keras_mwbp.callbacks.GammaScheduler` to change fixed gammas."
        )


# ----------------------------------------------------------------------
# Callbacks.


@keras.saving.register_keras_serializable(package="keras_mwbp")
class LossWeightLogger(_LossWeightCallback):
    """Writes nu and each head's gamma into the logs of every epoch.

    At `on_epoch_end` the callback writes the current `model.nu` under the
    key `"nu"` (only when the model computes gamma from nu) and each head's
    gamma under `f"{output_name}_gamma"`. The values then appear in
    `History` and in the `verbose=2` progress bar line. A
    `keras.callbacks.TensorBoard` callback placed after this one in the
    `callbacks` list writes them as scalars. `NuScheduler`, `AdaptiveNu` and
    `GammaScheduler` write the same keys, so this callback is needed only
    when none of them is used.

    Example:

    ```python
    history = model.fit(
        x,
        y,
        epochs=3,
        callbacks=[
            keras_mwbp.callbacks.LossWeightLogger(),
            keras.callbacks.TensorBoard("logs"),
        ],
    )
    history.history["nu"]  # One value per epoch.
    ```
    """

    def __init__(self):
        super().__init__(verbose=0)

    def get_config(self):
        return {}


class _ScheduleConfig:
    """Serializes the `schedule` argument of a scheduling callback."""

    def get_config(self):
        config = super().get_config()
        config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_mwbp")
class NuScheduler(_ScheduleConfig, _LossWeightCallback):
    """Sets the loss-weight exponent nu at the start of every epoch.

    At `on_epoch_begin` the callback calls `schedule` and assigns the result
    to `model.nu`. If `schedule` has two or more positional parameters
    without a default value, it is called as `schedule(epoch, nu)` with the
    current nu, otherwise as `schedule(epoch)`. Epochs count from 0, and on
    a resumed run the first epoch is `initial_epoch`. The model must compute
    gamma from nu, that is, be compiled without `loss_weights`.

    Example:

    ```python
    def schedule(epoch):
        return 2.0 if epoch < 10 else 1.0

    model.fit(x, y, epochs=20, callbacks=[keras_mwbp.callbacks.NuScheduler(schedule)])
    ```

    Args:
        schedule: Callable. Takes the epoch index (int, from 0) and
            optionally the current nu (float), and returns the nu for that
            epoch: a finite float >= 0.
        verbose: Int. 0 prints nothing, 1 prints the nu set at each epoch.
            Defaults to `0`.

    Raises:
        ValueError: At the start of training, if the model was compiled with
            `loss_weights`. At the start of an epoch, if `schedule` returns a
            value that is not a finite float >= 0.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__(verbose=verbose)
        if not callable(schedule):
            raise TypeError(
                "Invalid value for argument `schedule`. Expected a callable "
                f"that returns nu for an epoch. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        required = _count_required_positional_parameters(schedule)
        self._passes_nu = required is not None and required >= 2

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _require_nu_weights(self.model, type(self).__name__)

    def on_epoch_begin(self, epoch, logs=None):
        if self._passes_nu:
            value = self.schedule(epoch, _read_scalar(self.model.nu))
        else:
            value = self.schedule(epoch)
        nu = _validate_nu(value, epoch, type(self).__name__)
        self.model.nu.assign(nu)
        self._print(epoch, f"setting nu to {nu}.")



def _normalize_mode(mode):
    key = mode.strip().lower().replace("-", "_") if isinstance(mode, str) else None
    if key not in _MODE_ALIASES:
        raise ValueError(
            "Invalid value for argument `mode`. Expected one of "
            f"{sorted(_MODE_ALIASES)} (case-insensitive): 'I' starts at "
            "nu=0.5 and doubles it at each learning-rate drop, 'II' starts at "
            f"nu=2 and halves it. Received: mode={mode!r}"
        )
    return _MODE_ALIASES[key]


def _validate_drop_epochs(drop_epochs):
    if drop_epochs is None:
        return None
    try:
        epochs = list(drop_epochs)
    except TypeError:
        raise ValueError(
            "Invalid value for argument `drop_epochs`. Expected a list of "
            f"epoch indices. Received: drop_epochs={drop_epochs!r}"
        ) from None
    for epoch in epochs:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
            raise ValueError(
                "Invalid value for argument `drop_epochs`. Expected integers "
                ">= 1, each the first epoch (counted from 0) trained with the "
                f"lower learning rate. Received: drop_epochs={drop_epochs!r}"
            )
    if len(set(epochs)) != len(epochs):
        raise ValueError(
            "Invalid value for argument `drop_epochs`. Expected distinct "
            f"epochs. Received: drop_epochs={drop_epochs!r}"
        )
    return sorted(int(epoch) for epoch in epochs)


@keras.saving.register_keras_serializable(package="keras_mwbp")
class AdaptiveNu(_LossWeightCallback):
    """Changes nu at every learning-rate drop: Adaptive-I or Adaptive-II.

    These are the adaptive strategies of Guo et al., "Multi-way
    backpropagation for training compact deep neural networks" (Neural
    Networks, 2020). Mode "I" starts at nu = 0.5 and doubles nu at each
    learning-rate drop, so training first weighs the auxiliary heads almost
    like the final one and later favours the final head. Mode "II" starts at
    nu = 2 and halves nu at each drop. In epoch `e`, nu is the starting value
    times the factor to the power of the number of drops at epochs <= `e`.

    The drops are `drop_epochs` when given. Otherwise the callback reads the
    learning rate at each epoch start and counts an epoch as a drop when its
    rate is lower than that of the previous epoch. The rate read is a
    `LearningRateSchedule` evaluated at `model.optimizer.iterations`, or the
    learning-rate variable that callbacks such as
    `keras.callbacks.ReduceLROnPlateau` set.
    This suits step schedules such as `PiecewiseConstantDecay`, which keeps
    `values[i]` up to and including step `boundaries[i]`, so a boundary at
    step `b` makes epoch `b // steps + 1` the drop epoch (`steps` being the
    steps per epoch). A schedule that decays at every step lowers the rate
    at every epoch, so pass `drop_epochs` with such schedules.

    On a resumed run (`initial_epoch > 0`, or a `keras.callbacks.BackupAndRestore`
    that restored an epoch), the first epoch gets the nu that the drops
    before it give, so the run does not restart from the initial nu:

    - With `drop_epochs`, the drops are known.
    - With a `LearningRateSchedule`, the callback evaluates the schedule at
      the start of every earlier epoch. Epoch `k` is taken to start at step
      `iterations - (initial_epoch - k) * steps`, or 0 if that is negative.
      Here `steps` is the number of steps per epoch that `fit` passes to
      callbacks.
    - With a learning-rate variable, earlier rates are not stored anywhere,
      so the callback keeps the restored `model.nu` and continues counting
      from it. Restore the model (`BackupAndRestore`,
      `keras.models.load_model`) before resuming. A rate lowered at the end
      of the last saved epoch is then not counted as a drop.

    Example:

    ```python
    # The rate drops in epochs 160 and 240, which gives nu = 0.5, 1 and 2.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[160 * steps - 1, 240 * steps - 1], values=[0.1, 0.01, 0.001]
    )
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss=loss)
    model.fit(x, y, epochs=400, callbacks=[keras_mwbp.callbacks.AdaptiveNu("I")])
    ```

    Args:
        mode: String. "I" (also "adaptive_i") or "II" (also "adaptive_ii"),
            case-insensitive.
        drop_epochs: List of ints or `None`. The epochs (counted from 0) that
            are the first to train with a lower learning rate; each must be
            at least 1. `None` detects the drops from the optimizer. Defaults
            to `None`.
        verbose: Int. 0 prints nothing, 1 prints the nu set at the first
            epoch and at each drop. Defaults to `0`.

    Raises:
        ValueError: For an invalid `mode` or `drop_epochs`, and at the start
            of training if the model was compiled with `loss_weights`.
    """

    def __init__(self, mode, drop_epochs=None, verbose=0):
        super().__init__(verbose=verbose)
        self.mode = _normalize_mode(mode)
        self.drop_epochs = _validate_drop_epochs(drop_epochs)
        self.initial_nu, self.factor = ADAPTIVE_NU_MODES[self.mode]
        self._drop_count = 0
        self._run_started = False
        self._previous_learning_rate = None

    def nu_after_drops(self, drop_count):
        """Returns the nu of this mode after `drop_count` learning-rate drops."""
        return self.initial_nu * self.factor**drop_count

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        _require_nu_weights(self.model, type(self).__name__)
        # The first epoch of a run is handled in `on_epoch_begin`, because a
        # `BackupAndRestore` placed after this callback restores the epoch
        # and the variables only in its own `on_train_begin`.
        self._run_started = False
        self._previous_learning_rate = None

    def on_epoch_begin(self, epoch, logs=None):
        first_epoch_of_run = not self._run_started
        self._run_started = True
        if self.drop_epochs is not None:
            drop_count = sum(1 for drop in self.drop_epochs if drop <= epoch)
        else:
            learning_rate = _current_learning_rate(self.model.optimizer)
            if first_epoch_of_run:
                drop_count = self._drops_before_run(epoch)
            elif learning_rate < self._previous_learning_rate:
                drop_count = self._drop_count + 1
            else:
                drop_count = self._drop_count
            self._previous_learning_rate = learning_rate

        changed = drop_count != self._drop_count
        self._drop_count = drop_count
        nu = self.nu_after_drops(drop_count)
        self.model.nu.assign(nu)
        if first_epoch_of_run or changed:
            self._print(epoch, f"setting nu to {nu} after {drop_count} learning-rate drop(s).")

    def _drops_before_run(self, epoch):
        """Counts the drops at epochs <= `epoch` when a run starts at `epoch`."""
        if epoch == 0:
            return 0
        optimizer = self.model.optimizer
        schedule = _learning_rate_schedule(optimizer)
        steps = self.params.get("steps") if self.params else None
        if schedule is not None and steps:
            iterations = int(keras.ops.convert_to_numpy(optimizer.iterations))
            starts = [max(0, iterations - (epoch - k) * int(steps)) for k in range(epoch + 1)]
            rates = [_evaluate_schedule(schedule, step) for step in starts]
            return len(_decrease_indices(rates))
        return self._drops_from_restored_nu(epoch)

    def _drops_from_restored_nu(self, epoch):
        # NOTE: with a learning-rate variable, a drop at `epoch` itself (a rate
        # lowered at the end of the last saved epoch) is not seen, because
        # the earlier rate is not saved.
        nu = _read_scalar(self.model.nu)
        if nu > 0:
            exponent = math.log(nu / self.initial_nu) / math.log(self.factor)
            drop_count = round(exponent)
            if drop_count >= 0 and abs(exponent - drop_count) < 1e-4:
                return drop_count
        warnings.warn(
            f"AdaptiveNu (mode {self.mode!r}) resumes at epoch {epoch} but "
            f"model.nu = {nu} is not a value this mode reaches "
            f"({self.initial_nu} times {self.factor} ** drops), and the drops "
            "before this epoch cannot be computed from a learning-rate "
            "variable. Starting again from nu = "
            f"{self.initial_nu}. Restore the model saved by the earlier run, "
            "or pass `drop_epochs=`.",
            stacklevel=2,
        )
        return 0

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        config["drop_epochs"] = None if self.drop_epochs is None else list(self.drop_epochs)
        return config


def _validate_gammas(value, epoch, model, callback_name):
    num_heads = model.num_heads
    names = list(model.output_names)
    expected = (
        f"{num_heads} gammas (one per head: {names}) or {num_heads - 1} "
        "auxiliary gammas (the final head then gets 1)"
    )
    try:
        gammas = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
    except (TypeError, ValueError):
        raise ValueError(
            f"{callback_name}: invalid gammas for epoch {epoch}: {value!r}. "
            f"Expected {expected}."
        ) from None
    if gammas.ndim != 1 or len(gammas) not in (num_heads, num_heads - 1):
        raise ValueError(
            f"{callback_name}: invalid gammas for epoch {epoch}: {value!r} "
            f"has shape {gammas.shape}. Expected {expected}."
        )
    if not np.all(np.isfinite(gammas)) or np.any(gammas < 0):
        raise ValueError(
            f"{callback_name}: invalid gammas for epoch {epoch}: {value!r}. "
            "Every gamma must be a finite float >= 0."
        )
    if len(gammas) == num_heads - 1:
        gammas = np.concatenate([gammas, [1.0]])
    return gammas


@keras.saving.register_keras_serializable(package="keras_mwbp")
class GammaScheduler(_ScheduleConfig, _LossWeightCallback):
    """Sets explicit loss weights gamma at the start of every epoch.

    At `on_epoch_begin` the callback calls `schedule(epoch)` and assigns the
    result to `model.fixed_loss_weights`. The schedule returns either K+1
    gammas, one per head in output order, or the K gammas of the auxiliary
    heads, in which case the final head gets 1. `dsn_decay` builds a
    schedule that lowers the auxiliary gammas linearly to 0.

    The model must be compiled with `loss_weights=[...]`. Whether the train
    step reads the fixed gammas or computes them from nu is decided when the
    step is traced, so this callback cannot switch a model that was compiled
    without `loss_weights` and raises instead.

    Example:

    ```python
    schedule = keras_mwbp.callbacks.dsn_decay(model.num_heads, decay_epochs=10)
    model.compile(optimizer="sgd", loss=loss, loss_weights=schedule(0))
    model.fit(x, y, epochs=20, callbacks=[keras_mwbp.callbacks.GammaScheduler(schedule)])
    ```

    Args:
        schedule: Callable. Takes the epoch index (int, from 0) and returns
            K+1 or K finite gammas >= 0, as a list or array.
        verbose: Int. 0 prints nothing, 1 prints the gammas set at each
            epoch. Defaults to `0`.

    Raises:
        ValueError: At the start of training, if the model was compiled
            without `loss_weights`. At the start of an epoch, if `schedule`
            returns gammas of the wrong length or a gamma that is not a
            finite float >= 0.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__(verbose=verbose)
        if not callable(schedule):
            raise TypeError(
                "Invalid value for argument `schedule`. Expected a callable "
                "that returns the gammas for an epoch. Received: "
                f"schedule={schedule!r}"
            )
        self.schedule = schedule

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not _uses_fixed_loss_weights(self.model):
            raise ValueError(
                "GammaScheduler sets `model.fixed_loss_weights`, which the "
                "model uses only when it was compiled with `loss_weights=`. "
                "This model computes gamma from nu, and that choice is fixed "
                "when the train step is traced. Pass `loss_weights=` to "
                "`compile()`, for example the schedule's gammas for the first "
                "epoch."
            )

    def on_epoch_begin(self, epoch, logs=None):
        gammas = _validate_gammas(self.schedule(epoch), epoch, self.model, type(self).__name__)
        self.model.fixed_loss_weights.assign(gammas.astype("float32"))
        self._print(epoch, f"setting gammas to {gammas.tolist()}.")



@keras.saving.register_keras_serializable(package="keras_mwbp", name="DSNDecay")
class _DSNDecay:
    """Gamma schedule: auxiliary weights fall linearly from `initial_weight` to 0."""

    def __init__(self, num_heads, decay_epochs, initial_weight=1.0):
        self.num_heads = num_heads
        self.decay_epochs = decay_epochs
        self.initial_weight = initial_weight

    def __call__(self, epoch):
        remaining = max(0.0, 1.0 - epoch / self.decay_epochs)
        auxiliary = [self.initial_weight * remaining] * (self.num_heads - 1)
        return auxiliary + [1.0]

    def get_config(self):
        return {
            "num_heads": self.num_heads,
            "decay_epochs": self.decay_epochs,
            "initial_weight": self.initial_weight,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def dsn_decay(num_heads, decay_epochs, initial_weight=1.0):
    """Builds a gamma schedule that lowers the auxiliary weights linearly to 0.

    The auxiliary heads' gamma in epoch `e` is
    `initial_weight * max(0, 1 - e / decay_epochs)`, so it reaches 0 at epoch
    `decay_epochs` and stays there, and the final head's gamma is always 1.
    Deeply-Supervised Nets decay the weights of their companion (auxiliary)
    losses in a similar way. The returned schedule is meant for `GammaScheduler` and can
    be serialized with it.

    Example:

    ```python
    schedule = keras_mwbp.callbacks.dsn_decay(num_heads=3, decay_epochs=4)
    schedule(0)  # [1.0, 1.0, 1.0]
    schedule(1)  # [0.75, 0.75, 1.0]
    schedule(4)  # [0.0, 0.0, 1.0]
    ```

    Args:
        num_heads: Int, at least 2. K+1, the number of heads including the
            final one (`model.num_heads`).
        decay_epochs: Int, at least 1. The first epoch at which the auxiliary
            gammas are 0.
        initial_weight: Float, finite and >= 0. The auxiliary gammas in epoch
            0. Defaults to `1.0`.

    Returns:
        A callable that maps an epoch index to a list of `num_heads` floats.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 2:
        raise ValueError(
            "Invalid value for argument `num_heads`. Expected an integer of "
            "at least 2 (the final head and at least one auxiliary head). "
            f"Received: num_heads={num_heads!r}"
        )
    if isinstance(decay_epochs, bool) or not isinstance(
        decay_epochs, (int, np.integer)
    ) or decay_epochs < 1:
        raise ValueError(
            "Invalid value for argument `decay_epochs`. Expected an integer "
            f"of at least 1. Received: decay_epochs={decay_epochs!r}"
        )
    weight = _to_float(initial_weight)
    if weight is None or not math.isfinite(weight) or weight < 0:
        raise ValueError(
            "Invalid value for argument `initial_weight`. Expected a finite "
            f"float >= 0. Received: initial_weight={initial_weight!r}"
        )
    return _DSNDecay(int(num_heads), int(decay_epochs), weight)
