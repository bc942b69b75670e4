"""The CIFAR training recipe of the MW-BP paper, as Keras objects.

The recipe is SGD with Nesterov momentum 0.9 and weight decay 1e-4, an initial
learning rate of 0.1 that is divided by 10 at 40 % and again at 60 % of the
training steps, and the loss-weight exponent nu = 2, as attributed to Guo et
al., "Multi-way backpropagation for training compact deep neural networks"
(Neural Networks, 2020). The functions here build those objects so that every
command trains the same way.

NOTE: these values were not rechecked against the paper's text here.
"""

import math

import keras

INITIAL_LEARNING_RATE = 0.1
MOMENTUM = 0.9
NESTEROV = True
# NOTE: Keras 3 SGD applies `weight_decay` decoupled from the gradient. Each
# step first sets w <- w - learning_rate * weight_decay * w, and momentum does
# not see that term (`BaseOptimizer._apply_weight_decay` in Keras 3.15).
# PyTorch's SGD(weight_decay=...) is coupled L2 instead: it adds
# weight_decay * w to the gradient before momentum (torch.optim.SGD docs).
# Once momentum 0.9 has built up, the coupled form shrinks weights about
# 1 / (1 - 0.9) = 10 times more per step, so 1e-4 here decays weights less
# than 1e-4 in PyTorch code.
# Keras also decays every trainable variable, BatchNormalization's gamma and
# beta included. The multi-way methods apply it through each head's optimizer
# copy, at that head's learning rate (learning_rate * gamma_i), so a backbone
# weight on the path of several heads is decayed once per head in each step.
WEIGHT_DECAY = 1e-4
# Fractions of the training steps after which the learning rate drops.
DECAY_FRACTIONS = (0.4, 0.6)
DECAY_FACTOR = 10.0
DEFAULT_NU = 2.0


def steps_per_epoch(num_examples, batch_size):
    """Return the number of batches `Model.fit` runs per epoch on NumPy arrays."""
    return math.ceil(num_examples / batch_size)


def learning_rate_schedule(initial_learning_rate, total_steps):
    """Build the step-wise learning rate schedule of the recipe.

    The first `int(0.4 * total_steps)` steps use `initial_learning_rate`,
    the steps up to `int(0.6 * total_steps)` use a tenth of it, and the
    remaining steps use a hundredth.

    Args:
        initial_learning_rate: Float. Learning rate of the first steps.
        total_steps: Int. Number of optimizer steps in the whole run
            (epochs times batches per epoch).

    Returns:
        A `keras.optimizers.schedules.PiecewiseConstantDecay`.
    """
    # The schedule reads the optimizer's 0-based `iterations` counter and
    # keeps value i while iterations <= boundaries[i], so boundary b - 1
    # makes exactly b steps use the earlier value.
    boundaries = [int(fraction * total_steps) - 1 for fraction in DECAY_FRACTIONS]
    values = [
        initial_learning_rate / DECAY_FACTOR**power
        for power in range(len(DECAY_FRACTIONS) + 1)
    ]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(initial_learning_rate, total_steps):
    """Build the SGD optimizer of the recipe with its learning rate schedule."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(initial_learning_rate, total_steps),
        momentum=MOMENTUM,
        nesterov=NESTEROV,
        weight_decay=WEIGHT_DECAY,
    )


def make_loss():
    """Build the loss of the recipe, for heads that output logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_model(model, backprop, nu, initial_learning_rate, total_steps):
    """Compile a `MultiWayModel` with the recipe's optimizer, loss and metrics.

    Args:
        model: A `keras_mwbp.MultiWayModel`.
        backprop: String. One of `keras_mwbp.BACKPROP_METHODS`.
        nu: Float. The loss-weight decay exponent.
        initial_learning_rate: Float. Learning rate of the first steps.
        total_steps: Int. Number of optimizer steps in the whole run.
    """
    model.compile(
        optimizer=make_optimizer(initial_learning_rate, total_steps),
        loss=make_loss(),
        metrics=["accuracy"],
        backprop=backprop,
        nu=nu,
    )


def describe(initial_learning_rate, total_steps):
    """Return the recipe's settings as a JSON-serializable dict."""
    schedule = learning_rate_schedule(initial_learning_rate, total_steps)
    return {
        "optimizer": "SGD",
        "momentum": MOMENTUM,
        "nesterov": NESTEROV,
        "weight_decay": WEIGHT_DECAY,
        "weight_decay_form": "decoupled (Keras 3 SGD: w -= learning_rate * weight_decay * w)",
        "learning_rate_boundaries": [int(b) for b in schedule.boundaries],
        "learning_rate_values": [float(v) for v in schedule.values],
        "total_steps": int(total_steps),
        "loss": "SparseCategoricalCrossentropy(from_logits=True)",
    }
