"""Names of the seven backpropagation methods and their properties."""

STANDARD = "standard"
JOINT = "joint"
RELAY = "relay"
MWBP = "mwbp"
NAIVE_MWBP = "naive_mwbp"
REVERSE_MWBP = "reverse_mwbp"
NAIVE_REVERSE_MWBP = "naive_reverse_mwbp"

BACKPROP_METHODS = (
    STANDARD,
    JOINT,
    RELAY,
    MWBP,
    NAIVE_MWBP,
    REVERSE_MWBP,
    NAIVE_REVERSE_MWBP,
)

# Methods that update the parameters once per head, each head with its own
# optimizer step.
MULTIWAY_METHODS = (MWBP, NAIVE_MWBP, REVERSE_MWBP, NAIVE_REVERSE_MWBP)


def validate_backprop(backprop):
    """Returns `backprop` if it names a method, else raises `ValueError`."""
    if backprop not in BACKPROP_METHODS:
        raise ValueError(
            "Invalid value for argument `backprop`. Expected one of "
            f"{list(BACKPROP_METHODS)}. Received: backprop={backprop!r}"
        )
    return backprop


def is_naive(backprop):
    """Returns whether a method runs a new forward pass before each head."""
    return backprop in (NAIVE_MWBP, NAIVE_REVERSE_MWBP)


def head_order(backprop, num_heads):
    """Returns the order in which a multi-way method visits the heads."""
    order = list(range(num_heads))
    if backprop in (REVERSE_MWBP, NAIVE_REVERSE_MWBP):
        order.reverse()
    return order
