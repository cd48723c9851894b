"""PWLU's training-step, inference and memory cost, as ratios to ReLU.

The shared benchmark (`activation_benchmark.py`) restricted to ReLU and
PWLU in phase II (`start_realigned=True`, learning every parameter, the
phase whose cost matters) with N = 4, 16 and 64 intervals, and the
yardstick `relu-pass` (ReLU as its own fused kernel: what an activation
that TensorFlow does not fuse into the convolution pays at least in
`predict`). Extra arguments pass through, e.g.:

    python benchmarks/pwlu_benchmark.py --rounds 3 --steps 3
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import activation_benchmark  # noqa: E402

PWLU_VARIANTS = ["relu", "relu-pass", "pwlu-4", "pwlu-16", "pwlu-64"]


def main(argv=None):
    """Runs the shared benchmark on the PWLU variants.

    Args:
        argv: further arguments for `activation_benchmark.main`.

    Example:

        python benchmarks/pwlu_benchmark.py --no-memory
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    activation_benchmark.main(["--variants", *PWLU_VARIANTS, *argv])


if __name__ == "__main__":
    main()
