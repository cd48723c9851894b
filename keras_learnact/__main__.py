"""`python -m keras_learnact`: the `keras-learnact` command line."""

import sys

from keras_learnact.cli import main

if __name__ == "__main__":
    sys.exit(main())
