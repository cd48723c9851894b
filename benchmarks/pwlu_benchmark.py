"""PWLU's training-step, inference and memory cost, as ratios to ReLU.

The shared benchmark (`activation_benchmark.py`) restricted to ReLU and
PWLU in phase II (`start_realigned=True`, learning every parameter, the
phase whose cost matters) with N = 4, 16 and 64 intervals, and the
yardstick `relu-pass` (ReLU as its own fused kernel: what an activation
that TensorFlow does not fuse into the convolution pays at least in
`predict`) and `pwlu-no-lookup` (PWLU's kernel with its table lookup taken
out: the floor of any lookup on this machine, see `PWLUWithoutLookup`).
Extra arguments pass through, e.g.:

    python benchmarks/pwlu_benchmark.py --rounds 3 --steps 3
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import activation_benchmark  # noqa: E402
from keras import ops  # noqa: E402

from keras_learnact.layers import PWLU  # noqa: E402
from keras_learnact.layers._fused import fuse  # noqa: E402
from keras_learnact.layers.pwlu import segments  # noqa: E402


class PWLUWithoutLookup(PWLU):
    """PWLU-16's kernel with the table lookup taken out: a yardstick.

    It computes PWLU's segment index exactly as PWLU does, keeps it alive,
    and then reads one slope and one offset per channel instead of the
    index's table entries. So it does all of PWLU's per-element work except
    the two gathers, and its `predict` ratio is what any lookup, however
    fast, would cost at least in this benchmark. Not a PWLU: its values are
    those of one linear function per channel, and its gradients are XLA's
    (for timing only).

    Args:
        **kwargs: as for `PWLU`.

    Example:

        python benchmarks/pwlu_benchmark.py --no-memory
    """

    def __init__(self, **kwargs):
        super().__init__(num_intervals=16, start_realigned=True, **kwargs)
        self._kernels = {}

    def _lookup_kernel(self, ndim):
        if ndim not in self._kernels:
            layout = self.layout(ndim)

            def lookup(x, start, inverse_step, slopes, offsets):
                index = segments(layout, self.num_intervals, x, start,
                                 inverse_step)
                # `* 0` keeps the index computed: XLA does not fold a
                # float product with zero (it would change inf and NaN).
                kept = ops.cast(index, x.dtype) * 0.0
                return (x * layout.broadcast(slopes[:, -1])
                        + layout.broadcast(offsets[:, -1]) + kept)

            self._kernels[ndim] = fuse(lookup)
        return self._kernels[ndim]


activation_benchmark.VARIANTS["pwlu-no-lookup"] = PWLUWithoutLookup
PWLU_VARIANTS = ["relu", "relu-pass", "pwlu-no-lookup", "pwlu-4", "pwlu-16",
                 "pwlu-64"]


def main(argv=None):
    """Runs the shared benchmark on the PWLU variants.

    Args:
        argv: further arguments for `activation_benchmark.main`.

    Example:

        python benchmarks/pwlu_benchmark.py --no-memory
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    activation_benchmark.main(["--variants", *PWLU_VARIANTS, *argv],
                              script=__file__)


if __name__ == "__main__":
    main()
