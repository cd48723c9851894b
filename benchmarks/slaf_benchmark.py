"""Training-step and inference cost of SLAF versus ReLU.

Uses the package benchmark's CNN and timing loop
(`benchmarks/activation_benchmark.py`): every time is a ratio to ReLU
measured side by side in the same round. Targets (TensorFlow, CPU):
normalised degree 4 <= 1.8x ReLU per training step, raw degree 4 evaluated
by Horner's rule <= 1.3x.

Run:

    python benchmarks/slaf_benchmark.py --rounds 3 --steps 3
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _machine  # noqa: E402
from activation_benchmark import VARIANTS  # noqa: E402
from activation_benchmark import add_compile_arguments  # noqa: E402
from activation_benchmark import format_table  # noqa: E402
from activation_benchmark import heading  # noqa: E402
from activation_benchmark import time_models  # noqa: E402

from keras_learnact.layers.slaf import SLAF  # noqa: E402

SLAF_VARIANTS = {
    "slaf-batch-4": lambda: SLAF(degree=4),
    "slaf-raw-4": lambda: SLAF(degree=4, normalization="none"),
}


def main(argv=None):
    """Prints the ratio table for ReLU and the SLAF variants.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).

    Example:

        python benchmarks/slaf_benchmark.py --rounds 3 --steps 3 --jit
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    add_compile_arguments(parser)
    args = parser.parse_args(argv)
    VARIANTS.update(SLAF_VARIANTS)
    results = time_models(list(SLAF_VARIANTS), args.rounds, args.steps,
                          args.batch_size, args.jit)
    print(heading(_machine.describe(args.jit), args.batch_size, args.rounds,
                  args.steps))
    print(format_table(results))


if __name__ == "__main__":
    main()
