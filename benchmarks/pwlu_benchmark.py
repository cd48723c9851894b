"""PWLU's training-step, inference and memory cost, as ratios to ReLU.

Uses the shared benchmark model and timing of `activation_benchmark.py`
with PWLU variants added, in phase II (`start_realigned=True`: learning
every parameter, the phase whose cost matters) with N = 4, 16 and 64
intervals, channel granularity. Peak memory is measured in a fresh
subprocess of this script per variant (the shared script's subprocesses
would not know the PWLU variants).

Run:

    python benchmarks/pwlu_benchmark.py --rounds 3 --steps 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import activation_benchmark  # noqa: E402
from activation_benchmark import VARIANTS  # noqa: E402
from activation_benchmark import format_table  # noqa: E402
from activation_benchmark import time_models  # noqa: E402

from keras_learnact.layers.pwlu import PWLU  # noqa: E402

PWLU_VARIANTS = {
    f"pwlu-{n}": (lambda n=n: PWLU(num_intervals=n, start_realigned=True))
    for n in (4, 16, 64)
}
VARIANTS.update(PWLU_VARIANTS)


def measure_memory(names, batch_size, jit, repeats=2):
    """Ratio to ReLU of peak training memory growth, one subprocess each.

    Like `activation_benchmark.measure_memory`, but the subprocesses run
    this script, so they know the PWLU variants.

    Args:
        names: variant names.
        batch_size: the batch size.
        jit: passed to `compile(jit_compile=...)`.
        repeats: subprocesses per variant.

    Returns:
        A dict name -> {"memory": ratio, "memory_mib": median MiB}.
    """
    names = ["relu"] + [n for n in names if n != "relu"]
    growth = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", name,
                 "--batch-size", str(batch_size)]
                + (["--jit"] if jit else []),
                check=True, capture_output=True, text=True,
            ).stdout
            growth[name].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(growth["relu"])
    return {
        n: {"memory": statistics.median(g) / base,
            "memory_mib": statistics.median(g)}
        for n, g in growth.items()
    }


def main(argv=None):
    """Prints the table of PWLU variants against ReLU.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+",
                        default=["relu", *PWLU_VARIANTS],
                        choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-repeats", type=int, default=1)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(activation_benchmark._peak_rss_growth(
            args.memory_child, args.batch_size, 3, args.jit)))
        return
    results = time_models(args.variants, args.rounds, args.steps,
                          args.batch_size, args.jit)
    if not args.no_memory:
        for name, mem in measure_memory(
                args.variants, args.batch_size, args.jit,
                args.memory_repeats).items():
            results[name].update(mem)
    print(f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} "
          f"steps, jit_compile={args.jit}")
    print(format_table(results))


if __name__ == "__main__":
    main()
