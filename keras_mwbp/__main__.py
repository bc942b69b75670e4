"""Run the `keras-mwbp` command line as `python -m keras_mwbp`."""

import sys

from keras_mwbp.cli import main

if __name__ == "__main__":
    sys.exit(main())
