"""Argument types shared by the `keras-mwbp` subcommands."""

import argparse


def comma_separated_names(kind):
    """Returns an argparse type that splits a comma-separated list of names.

    Args:
        kind: String. What the names are ("layer", "run"), for the message.
    """

    def parse(text):
        names = [name.strip() for name in text.split(",")]
        if any(not name for name in names):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind} names with no empty entry, "
                f"received {text!r}"
            )
        return names

    return parse
