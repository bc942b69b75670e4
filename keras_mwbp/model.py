"""`MultiWayModel`: a functional Keras model with one output per head."""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mwbp import _keras_private as kp
from keras_mwbp import gamma as gamma_lib
from keras_mwbp.backprop import methods
from keras_mwbp.backprop import rules
from keras_mwbp.backprop import steps
from keras_mwbp.graph import HeadGraph
from keras_mwbp.head_optimizers import HeadOptimizers
from keras_mwbp.head_optimizers import make_loading_strict

NONFINITE_POLICIES = ("zero", "raise")


class _FunctionLoss(keras.losses.Loss):
    """Wraps a plain loss function so it reduces like a Keras `Loss`."""

    def __init__(self, fn, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _resolve_loss(identifier, argument):
    loss = keras.losses.get(identifier)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return _FunctionLoss(loss)
    raise ValueError(
        f"Invalid value for argument `{argument}`. Expected a loss name, "
        f"a `keras.losses.Loss` or a callable. Received: {argument}={identifier!r}"
    )


def _clone_metric(metric):
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    return metric


@keras.saving.register_keras_serializable(package="keras_mwbp")
class MultiWayModel(keras.Model):
    """A functional model with auxiliary heads, trained by multi-way backprop.

    Build it like a functional `keras.Model`, with one output per head,
    ordered from the shallowest head to the final one. Each head together
    with the backbone below it is a complete classifier, so one training run
    yields K+1 models of different depths. `compile(backprop=...)` chooses
    how the heads' losses train the shared layers. The default, "mwbp",
    shares one forward pass and then updates the parameters once per head,
    from the shallowest to the deepest. Each backward pass uses the
    parameters the earlier heads already moved (multi-way backpropagation,
    Guo et al., Neural Networks 2020).

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    aux = keras.layers.Dense(10, name="aux")(keras.layers.Flatten()(x))
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    final = keras.layers.Dense(10, name="final")(keras.layers.Flatten()(x))
    model = keras_mwbp.MultiWayModel(inputs, [aux, final])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        backprop="mwbp",
        nu=2.0,
    )
    model.fit(x_train, y_train)  # One label array trains every head.
    ```

    Args:
        inputs: The model's input tensor(s), as for `keras.Model`.
        outputs: List of head output tensors, ordered from the shallowest
            auxiliary head to the final head.
        name: String or `None`. The model's name.
        **kwargs: Passed to `keras.Model` (for example `trainable`).

    Attributes:
        head_depths: List of K+1 depths L_i, the weighted layers
            (convolution or dense) on the longest path from the input to each
            head's tap; for the final head, the depth of the whole model.
        nu: Non-trainable scalar variable, the loss-weight decay exponent.
            Assigning it (for example from a callback) takes effect at the
            next step without retracing.
        num_heads: K+1.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        # The signature matches `keras.Model`'s functional constructor, which
        # is what lets Keras serialize this class as a functional model.
        super().__init__(inputs, outputs, name=name, **kwargs)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        self._head_graph = HeadGraph(self)
        self._validate_heads()
        self.nu = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(2.0),
            trainable=False,
            name="nu",
        )
        self.fixed_loss_weights = self.add_weight(
            shape=(self.num_heads,),
            initializer="ones",
            trainable=False,
            name="fixed_loss_weights",
        )
        self._backprop = methods.MWBP
        self._use_fixed_loss_weights = False
        self._relay_span = 1
        self._share_optimizer_state = False
        self._on_nonfinite = "zero"
        self._head_losses = None
        self._head_optimizers = None
        self._multiway_compile_config = {}

    # ------------------------------------------------------------------
    # Structure.

    @property
    def num_heads(self):
        return len(self._head_graph.output_keys)

    @property
    def head_depths(self):
        return list(self._head_graph.head_depths)

    @property
    def head_graph(self):
        """The `HeadGraph`: paths, taps and depths of the heads."""
        return self._head_graph

    @property
    def backprop(self):
        """Name of the compiled backpropagation method."""
        return self._backprop

    def _validate_heads(self):
        graph = self._head_graph
        names = self.output_names
        for i, ancestors in enumerate(graph.ancestors):
            if not ancestors:
                raise ValueError(
                    f"Output {i} ('{names[i]}') is not computed by any layer "
                    "from the inputs. Every head must be connected to the "
                    "input through the backbone."
                )
        for i in range(self.num_heads - 1):
            if graph.tap_nodes[i] is None or graph.head_depths[i] < 1:
                raise ValueError(
                    f"Auxiliary head {i} ('{names[i]}') shares no weighted "
                    "layer (convolution or dense) with the final head "
                    f"('{names[-1]}'). Each auxiliary head must read the "
                    "backbone of the final head after at least one weighted "
                    "layer, and the final head must be the last output."
                )
        depths = graph.head_depths
        for i in range(1, self.num_heads):
            if depths[i] < depths[i - 1]:
                raise ValueError(
                    "The outputs must be ordered from the shallowest head to "
                    f"the deepest. Received head depths {depths} for outputs "
                    f"{names}. Reorder the `outputs` list so that the depths "
                    "do not decrease and the final head comes last."
                )

    def submodel(self, head=-1, name=None):
        """Returns a standalone `keras.Model` from the inputs to one head.

        The submodel shares its layers (and so its weights) with this model
        and contains no layer of any other head, so it costs what that head
        costs at inference.

        Args:
            head: Int. Head index, 0 for the shallowest; negative indices
                count from the final head. Defaults to `-1`.
            name: String or `None`. The submodel's name. Defaults to
                `f"{self.name}_head_{index}"`.

        Returns:
            A functional `keras.Model` with a single output.

        Raises:
            ValueError: If `head` is not a valid head index.
        """
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)):
            raise ValueError(
                "Invalid value for argument `head`. Expected an integer head "
                f"index. Received: head={head!r}"
            )
        if not -self.num_heads <= head < self.num_heads:
            raise ValueError(
                f"Invalid value for argument `head`. The model has "
                f"{self.num_heads} heads, so expected an index in "
                f"[{-self.num_heads}, {self.num_heads - 1}]. Received: head={head}"
            )
        index = head % self.num_heads
        # A single input is passed unwrapped so the submodel (and its exported
        # serving signature) takes a plain tensor, not a one-element list.
        inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        return keras.Model(
            inputs,
            self.outputs[index],
            name=name or f"{self.name}_head_{index}",
        )

    def loss_weights_now(self):
        """Returns the K+1 loss weights gamma the next step will use, as NumPy."""
        if self._use_fixed_loss_weights:
            return np.asarray(keras.ops.convert_to_numpy(self.fixed_loss_weights))
        nu = float(keras.ops.convert_to_numpy(self.nu))
        return gamma_lib.gamma_from_nu_numpy(self.head_depths, nu)

    def _gamma_tensor(self):
        if self._use_fixed_loss_weights:
            return tf.cast(tf.convert_to_tensor(self.fixed_loss_weights), tf.float32)
        return gamma_lib.gamma_from_nu(self.head_depths, self.nu)

    # ------------------------------------------------------------------
    # Compile.

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        backprop="mwbp",
        nu=2.0,
        relay_span=1,
        share_optimizer_state=False,
        on_nonfinite="zero",
        **kwargs,
    ):
        """Configures the model for training with a backpropagation method.

        Args:
            optimizer: Optimizer name or instance, as for `keras.Model`. The
                multi-way methods copy it once per head.
            loss: One loss for every head, or a list (one per head) or a
                dict keyed by output name.
            loss_weights: `None` to derive gamma from `nu` and the head
                depths, or a list of K+1 non-negative floats used as gamma.
            metrics: Metrics as for `keras.Model`. A flat list is applied to
                every head.
            backprop: String. One of "standard" (the final loss trains the
                backbone; each auxiliary head trains on gradient-stopped
                features with its own unweighted loss), "joint" (one
                backward pass on the gamma-weighted sum of losses), "relay"
                (each loss reaches its own segment and `relay_span` segments
                below), "mwbp" (one update per head, shallow to deep, on
                one shared forward pass), "naive_mwbp" (a new forward pass
                before each head), "reverse_mwbp" and "naive_reverse_mwbp"
                (heads from deep to shallow). Defaults to `"mwbp"`.
            nu: Float, non-negative. The loss-weight decay exponent:
                gamma_i = max(0.01, (L_i / L_{K-1}) ** nu) for auxiliary
                heads, 1 for the final head. Defaults to `2.0`.
            relay_span: Int, at least 1. For "relay", the number of deeper
                losses besides its own that reach each segment. Defaults to
                `1`.
            share_optimizer_state: Bool. For the multi-way methods, whether
                every head updates through one optimizer state instead of a
                copy per head. Defaults to `False`.
            on_nonfinite: String. "zero" sets NaN gradient entries to zero
                before each update; "raise" stops training with an error on
                a non-finite loss or gradient. Defaults to `"zero"`.
            **kwargs: Passed to `keras.Model.compile` (for example
                `jit_compile`, `steps_per_execution`).

        Raises:
            ValueError: For an invalid argument, with the value received.
        """
        methods.validate_backprop(backprop)
        self._validate_compile_arguments(
            backprop, nu, loss_weights, relay_span, share_optimizer_state, on_nonfinite
        )
        if backprop in methods.MULTIWAY_METHODS or backprop == methods.RELAY:
            for node in self._head_graph.nodes:
                rules.check_layer_supported(node.layer)

        if isinstance(metrics, (list, tuple)) and self.num_heads > 1:
            flat = all(
                not isinstance(m, (list, tuple, dict)) and m is not None for m in metrics
            )
            if flat:
                metrics = [[_clone_metric(m) for m in metrics] for _ in range(self.num_heads)]

        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

        self._backprop = backprop
        self._relay_span = int(relay_span)
        self._share_optimizer_state = bool(share_optimizer_state)
        self._on_nonfinite = on_nonfinite
        self.nu.assign(float(nu))
        if loss_weights is None:
            self._use_fixed_loss_weights = False
        else:
            self._use_fixed_loss_weights = True
            self.fixed_loss_weights.assign(np.asarray(loss_weights, dtype="float32"))
        self._head_losses = self._resolve_head_losses(loss)
        self._multiway_compile_config = {
            "backprop": backprop,
            "nu": float(nu),
            "loss_weights": None if loss_weights is None else [float(w) for w in loss_weights],
            "relay_span": int(relay_span),
            "share_optimizer_state": bool(share_optimizer_state),
            "on_nonfinite": on_nonfinite,
        }
        self._build_head_optimizers()

    def _validate_compile_arguments(
        self, backprop, nu, loss_weights, relay_span, share_optimizer_state, on_nonfinite
    ):
        if backprop != methods.STANDARD and self.num_heads < 2:
            raise ValueError(
                f"backprop={backprop!r} trains auxiliary heads, but the model "
                f"has {self.num_heads} output. Add at least one auxiliary "
                "head (see `keras_mwbp.attach_heads`) or use "
                "backprop='standard'."
            )
        if isinstance(nu, bool) or not isinstance(nu, (int, float, np.number)):
            raise ValueError(
                "Invalid value for argument `nu`. Expected a non-negative "
                f"float. Received: nu={nu!r}"
            )
        if not math.isfinite(float(nu)) or float(nu) < 0:
            raise ValueError(
                "Invalid value for argument `nu`. Expected a finite, "
                f"non-negative float (0 weighs every head equally, 2 is the "
                f"usual choice). Received: nu={nu!r}"
            )
        if loss_weights is not None:
            if isinstance(loss_weights, dict):
                raise ValueError(
                    "Invalid value for argument `loss_weights`. Expected a "
                    f"list of {self.num_heads} floats, one per head in output "
                    f"order. Received a dict: loss_weights={loss_weights!r}"
                )
            weights = list(loss_weights)
            if len(weights) != self.num_heads:
                raise ValueError(
                    "Invalid value for argument `loss_weights`. Expected "
                    f"{self.num_heads} values (one per head: "
                    f"{self.output_names}). Received {len(weights)}: "
                    f"loss_weights={loss_weights!r}"
                )
            for weight in weights:
                if not isinstance(weight, (int, float, np.number)) or not (
                    math.isfinite(float(weight)) and float(weight) >= 0
                ):
                    raise ValueError(
                        "Invalid value for argument `loss_weights`. Expected "
                        "finite, non-negative floats. Received: "
                        f"loss_weights={loss_weights!r}"
                    )
        if isinstance(relay_span, bool) or not isinstance(relay_span, (int, np.integer)):
            raise ValueError(
                "Invalid value for argument `relay_span`. Expected an integer "
                f"of at least 1. Received: relay_span={relay_span!r}"
            )
        if relay_span < 1:
            raise ValueError(
                "Invalid value for argument `relay_span`. Expected an integer "
                f"of at least 1 (1 is relay backprop as usually defined). "
                f"Received: relay_span={relay_span!r}"
            )
        if not isinstance(share_optimizer_state, bool):
            raise ValueError(
                "Invalid value for argument `share_optimizer_state`. Expected "
                f"a bool. Received: share_optimizer_state={share_optimizer_state!r}"
            )
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                "Invalid value for argument `on_nonfinite`. Expected one of "
                f"{list(NONFINITE_POLICIES)}. Received: on_nonfinite={on_nonfinite!r}"
            )

    def _resolve_head_losses(self, loss):
        names = self.output_names
        if loss is None:
            raise ValueError(
                "Missing argument `loss` in `compile()`. Pass one loss for "
                "every head, for example "
                "loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)."
            )
        if isinstance(loss, dict):
            missing = [n for n in names if n not in loss]
            if missing:
                raise ValueError(
                    "Invalid value for argument `loss`. A dict must have one "
                    f"entry per output name {names}; missing {missing}. "
                    f"Received keys: {list(loss)}"
                )
            return [_resolve_loss(loss[n], "loss") for n in names]
        if isinstance(loss, (list, tuple)):
            if len(loss) != self.num_heads:
                raise ValueError(
                    "Invalid value for argument `loss`. A list must have one "
                    f"loss per head ({self.num_heads}). Received "
                    f"{len(loss)}: loss={loss!r}"
                )
            return [_resolve_loss(item, "loss") for item in loss]
        return [_resolve_loss(loss, "loss") for _ in names]

    def _build_head_optimizers(self):
        make_loading_strict(self.optimizer)
        if self._backprop not in methods.MULTIWAY_METHODS:
            self._head_optimizers = None
            if not self.optimizer.built:
                # Built here, not inside the first traced step, so that the
                # step creates no variables (XLA cannot lift them out).
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return
        graph = self._head_graph
        variables_per_head = [
            graph.trainable_variables_of(graph.ancestors[i]) for i in range(self.num_heads)
        ]
        with self.distribute_strategy.scope():
            self._head_optimizers = HeadOptimizers(
                self.optimizer,
                variables_per_head,
                self._gamma_tensor,
                self._share_optimizer_state,
            )
            if not self.optimizer.built:
                # The compiled optimizer only schedules the learning rate and
                # counts steps here; the heads' copies hold the slots.
                self.optimizer.build([])

    @property
    def head_optimizers(self):
        """The optimizers of the heads (multi-way methods), else `None`."""
        if self._head_optimizers is None:
            return None
        return list(self._head_optimizers.optimizers)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self._multiway_compile_config:
            config = dict(config)
            config["multiway"] = dict(self._multiway_compile_config)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        multiway = config.pop("multiway", {})
        config = keras.saving.deserialize_keras_object(config)
        # Keras records loss_weights too; the multi-way config has the value
        # this model was compiled with.
        config.pop("loss_weights", None)
        self.compile(**config, **multiway)
        if self.built and self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------
    # Training and evaluation.

    def expand_targets(self, y):
        """Returns one target per head: the same labels for every head by default."""
        if isinstance(y, dict):
            return [y[name] for name in self.output_names]
        if isinstance(y, (list, tuple)) and len(y) == self.num_heads:
            return list(y)
        return [y] * self.num_heads

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        targets = self.expand_targets(y)
        context = steps.StepContext(
            graph=self._head_graph,
            inputs=kp.flatten(x),
            targets=targets,
            sample_weight=sample_weight,
            head_losses=self._head_losses,
            gamma=self._gamma_tensor(),
            optimizer=self.optimizer,
            head_optimizers=self._head_optimizers,
            relay_span=self._relay_span,
            on_nonfinite=self._on_nonfinite,
        )
        predictions = steps.run_step(context, self._backprop)
        loss = self.compute_loss(
            x=x, y=targets, y_pred=predictions, sample_weight=sample_weight
        )
        tracker = kp.loss_tracker(self)
        if tracker is not None:
            batch_size = tf.shape(kp.flatten(x)[0])[0]
            tracker.update_state(
                kp.unscale_loss_for_distribution(loss), sample_weight=batch_size
            )
        return self.compute_metrics(x, targets, predictions, sample_weight=sample_weight)

    def _check_label_range(self, y):
        """Raises if integer class labels do not fit a head's output width.

        Only arrays and tensors are checked; labels inside a `tf.data`
        pipeline or a generator are seen only when training runs.
        """
        if y is None or isinstance(y, (tf.data.Dataset,)):
            return
        targets = self.expand_targets(y)
        for head, target in enumerate(targets):
            if not isinstance(target, (np.ndarray, tf.Tensor)):
                continue
            labels = np.asarray(target)
            if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
                continue
            if labels.ndim > 1 and labels.shape[-1] != 1:
                continue
            width = self.outputs[head].shape[-1]
            if width is None or width < 2:
                continue
            low, high = int(labels.min()), int(labels.max())
            if low < 0:
                raise ValueError(
                    f"Labels out of range for head {head} "
                    f"('{self.output_names[head]}'): class labels must be "
                    f"integers in [0, {width - 1}], received a minimum of "
                    f"{low}. Remap the labels to start at 0."
                )
            if high >= width:
                raise ValueError(
                    f"Labels out of range for head {head} "
                    f"('{self.output_names[head]}'), which has {width} "
                    f"classes: expected integers in [0, {width - 1}], "
                    f"received labels up to {high}. Build the heads with "
                    f"{high + 1} output units (for example num_classes={high + 1} "
                    "in resnet_cifar or attach_heads) or remap the labels."
                )

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_label_range(y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_label_range(y)
        return super().evaluate(x, y, *args, **kwargs)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return super().compute_loss(
            x=x,
            y=self.expand_targets(y),
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(
            x, self.expand_targets(y), y_pred, sample_weight=sample_weight
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        data = keras.utils.pack_x_y_sample_weight(
            x, tuple(self.expand_targets(y)), sample_weight
        )
        return super().test_step(data)
