"""Training-step cost of DEU against ReLU and a naive eleven-branch DEU.

The naive yardstick (`NaiveDEU`) evaluates every one of the eleven closed
forms for every element, each with its own mask and sanitised parameters,
and adds them up; `keras_learnact.layers.DEU` evaluates one common form
whose per-unit coefficients encode the case. The model and the timing are
those of `activation_benchmark.py` (the CIFAR-shaped CNN, ratios to ReLU
measured side by side).

Run:

    python benchmarks/deu_benchmark.py --rounds 3 --steps 3
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
from keras import ops  # noqa: E402

from keras_learnact.layers.deu import DEU  # noqa: E402


class NaiveDEU(DEU):
    """DEU written the straightforward way: all eleven branches everywhere.

    Same weights, cases and constants as `DEU` (no surrogate gradient); for
    timing only.

    Args:
        **kwargs: as for `DEU`.

    Example:

    >>> layer = NaiveDEU()
    >>> layer.surrogate_gradient
    False
    """

    def __init__(self, **kwargs):
        kwargs["surrogate_gradient"] = False
        super().__init__(**kwargs)

    def call(self, inputs, training=None):
        t = ops.cast(inputs, self._dtype())
        ndim = len(t.shape)
        params = ops.cast(self.ode_parameters, self._dtype())
        a, b, c, c1, c2 = (self.broadcast(params[i], ndim) for i in range(5))
        eps, cap = self.epsilon, self.exponent_cap
        one = ops.ones_like(a)
        step = ops.cast(t > 0, t.dtype)

        def exp(z):
            return ops.exp(ops.minimum(z, cap))

        def safe(mask, x, value):
            return ops.where(mask, x, value * one)

        big_a, big_b, big_c = (ops.abs(x) >= eps for x in (a, b, c))
        na, nb, nc = (ops.logical_not(m) for m in (big_a, big_b, big_c))
        both = ops.logical_and
        y = ops.zeros_like(t)

        def put(mask, value):
            return y + ops.where(mask, value, 0.0)

        y = put(both(na, both(nb, nc)), t)
        m = both(na, both(nb, big_c))
        cs = safe(m, c, 1.0)
        y = put(m, 1.0 / (cs * (1.0 + exp(-self.step_sharpness * t))))
        m = both(na, both(big_b, nc))
        y = put(m, step * t / safe(m, b, 1.0) + c1)
        m = both(na, both(big_b, big_c))
        bs, cs = safe(m, b, 1.0), safe(m, c, 1.0)
        y = put(m, c1 * exp(-cs * t / bs)
                + step * (1.0 - exp(-cs * t / bs)) / cs)
        m = both(big_a, both(nb, nc))
        y = put(m, step * t * t / (2.0 * safe(m, a, 1.0)) + c1 * t + c2)
        m = both(big_a, both(nb, big_c))
        mp = both(m, a * c > 0)
        as_, cs = safe(mp, a, 1.0), safe(mp, c, 1.0)
        w = ops.sqrt(as_ * cs) / as_
        kk = ops.sqrt(cs / as_)
        y = put(mp, c1 * ops.cos(w * t) + c2 * ops.sin(w * t)
                + step * (1.0 - ops.cos(kk * t)) / cs)
        mn = both(m, a * c < 0)
        as_, cs = safe(mn, a, 1.0), safe(mn, c, -1.0)
        ll = ops.sqrt(-as_ * cs) / as_
        kk = ops.sqrt(-cs / as_)
        y = put(mn, c1 * exp(-ll * t) + c2 * exp(ll * t) - step * (
            exp(kk * t) - 2.0 + exp(-kk * t)) / (2.0 * cs))
        m = both(big_a, both(big_b, nc))
        as_, bs = safe(m, a, 1.0), safe(m, b, 1.0)
        e = exp(-bs * t / as_)
        y = put(m, c2 - c1 * as_ / bs * e + step * (
            t / bs - as_ / (bs * bs) * (1.0 - e)))
        full = both(big_a, both(big_b, big_c))
        disc = b * b - 4.0 * a * c
        m = both(full, ops.abs(disc) < eps)
        as_, bs, cs = safe(m, a, 1.0), safe(m, b, 2.0), safe(m, c, 1.0)
        r = -bs / (2.0 * as_)
        e = exp(r * t)
        y = put(m, c2 * e + c1 * t * e + step * (1.0 - e * (1.0 - r * t)) / cs)
        m = both(full, disc <= -eps)
        as_, bs, cs = safe(m, a, 1.0), safe(m, b, 0.0), safe(m, c, 1.0)
        root = ops.sqrt(4.0 * as_ * cs - bs * bs)
        e = exp(-bs / (2.0 * as_) * t)
        om = root / (2.0 * as_) * t
        y = put(m, e * (c1 * ops.cos(om) + c2 * ops.sin(om)) + step / cs * (
            1.0 - e * (ops.cos(om) + bs / root * ops.sin(om))))
        m = both(full, disc >= eps)
        as_, bs, cs = safe(m, a, 1.0), safe(m, b, 3.0), safe(m, c, 1.0)
        s = ops.sqrt(bs * bs - 4.0 * as_ * cs)
        e1 = exp((s - bs) / (2.0 * as_) * t)
        e2 = exp(-(bs + s) / (2.0 * as_) * t)
        y = put(m, c1 * e2 + c2 * e1 + step / cs * (
            1.0 - (bs + s) / (2.0 * s) * e1 - (s - bs) / (2.0 * s) * e2))
        y = ops.clip(y, -self.output_clip, self.output_clip)
        return ops.cast(y, self.compute_dtype)


VARIANTS.update({
    "deu": lambda: DEU(),
    "deu-no-surrogate": lambda: DEU(surrogate_gradient=False),
    "deu-naive": lambda: NaiveDEU(),
})


def main(argv=None):
    """Prints the timing table of ReLU, DEU and the naive DEU.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+",
                        default=["deu", "deu-naive"], choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    add_compile_arguments(parser)
    args = parser.parse_args(argv)
    results = time_models(args.variants, args.rounds, args.steps,
                          args.batch_size, args.jit)
    print(heading(_machine.describe(args.jit), args.batch_size, args.rounds,
                  args.steps))
    print(format_table(results))


if __name__ == "__main__":
    main()
