"""Per-head copies of the compiled optimizer.

MW-BP updates the parameters once per head. By default each head has its own
copy of the compiled optimizer, covering the parameters on that head's path,
so momentum and other slots are kept per head. Each copy reads its learning
rate from the compiled optimizer (so schedules and callbacks that set
`model.optimizer.learning_rate` reach every head) times the head's gamma (so
gamma weighs the update itself, also for adaptive optimizers such as Adam,
where scaling the loss would cancel out).
"""

import threading

import keras
from keras import ops


def _copy_optimizer(optimizer, learning_rate, name):
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    config["name"] = name
    return optimizer.__class__.from_config(config)


def _check_copyable(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return
    try:
        config = optimizer.get_config()
    except NotImplementedError as error:
        raise ValueError(
            f"The optimizer {type(optimizer).__name__} does not implement "
            "`get_config()`, so multi-way backpropagation cannot make a copy "
            "per head. Implement `get_config()` or pass "
            "share_optimizer_state=True."
        ) from error
    if "learning_rate" not in config:
        raise ValueError(
            f"The optimizer {type(optimizer).__name__} has no `learning_rate` "
            "in its config, so the heads cannot scale it by gamma."
        )


def make_loading_strict(optimizer):
    """Makes a saved state that does not fit `optimizer` an error.

    Keras 3.15 warns and keeps the fresh state when the saved optimizer has
    a different number of variables, which would silently reset momentum
    and step counts on resume. The check is set on the instance, because the
    optimizer's class is the user's.
    """
    load_state = optimizer.load_own_variables

    def load_own_variables(store):
        saved = len(store.keys())
        expected = len(optimizer.variables)
        if saved != expected:
            raise ValueError(
                f"Failed to restore the state of optimizer '{optimizer.name}': "
                f"the saved state has {saved} variables, but this optimizer "
                f"has {expected}. The model was probably compiled with other "
                "settings (backprop method, share_optimizer_state or "
                "optimizer) than the saved one. Compile it as it was saved, or "
                "load with `compile=False` to drop the optimizer state."
            )
        load_state(store)

    object.__setattr__(optimizer, "load_own_variables", load_own_variables)
    return optimizer


class HeadOptimizers:
    """The optimizers that apply each head's update.

    Args:
        optimizer: The compiled optimizer.
        variables_per_head: One list of trainable variables per head.
        gamma_fn: Callable returning the K+1 gammas as a tensor.
        share_state: Whether all heads share one optimizer state.
    """

    def __init__(self, optimizer, variables_per_head, gamma_fn, share_state):
        self._base = optimizer
        self._gamma_fn = gamma_fn
        self._active = threading.local()
        self.share_state = share_state
        num_heads = len(variables_per_head)
        inner = optimizer
        wrap_loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if wrap_loss_scaling:
            inner = optimizer.inner_optimizer
        _check_copyable(inner)

        def make(learning_rate, name):
            copy = _copy_optimizer(inner, learning_rate, name)
            if wrap_loss_scaling:
                copy = keras.optimizers.LossScaleOptimizer(copy, name=f"{name}_scaled")
            return copy

        if share_state:
            shared = make(self._shared_learning_rate, f"{inner.name}_heads")
            seen = {}
            for variables in variables_per_head:
                for variable in variables:
                    seen[id(variable)] = variable
            shared.build(list(seen.values()))
            self.optimizers = [make_loading_strict(shared)]
        else:
            self.optimizers = []
            for head in range(num_heads):
                copy = make(self._head_learning_rate(head), f"{inner.name}_head_{head}")
                copy.build(variables_per_head[head])
                self.optimizers.append(make_loading_strict(copy))

    def _base_learning_rate(self):
        return ops.cast(self._base.learning_rate, "float32")

    def _head_learning_rate(self, head):
        def learning_rate():
            return self._base_learning_rate() * self._gamma_fn()[head]

        return learning_rate

    def _shared_learning_rate(self):
        head = getattr(self._active, "head", 0)
        return self._base_learning_rate() * self._gamma_fn()[head]

    def for_head(self, head):
        """Returns the optimizer that applies head `head`'s update."""
        if self.share_state:
            self._active.head = head
            return self.optimizers[0]
        return self.optimizers[head]
