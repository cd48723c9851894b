"""Time from building a CIFAR network to the end of its first training step.

What a user waits before training starts: building the network of
`examples/cifar_models.py`, compiling it (Adam, sparse cross-entropy on
logits) and its first training step at the batch size of its paper (256
for the smcn family, 128 for the ResNets), with tracing and graph
optimisation included. Each measurement runs in a fresh Python process
(so that no trace or compiled kernel of an earlier one is reused, as for a
user starting a script), after one tiny warm-up model that pays for the
process's first use of the backend; the activations of a network alternate
round by round, and each time is reported as a ratio to ReLU's in the same
round (only ratios measured side by side mean anything on a shared
machine).

Run:

    python benchmarks/first_step_benchmark.py                  # DEU, ReLU
    python benchmarks/first_step_benchmark.py --networks resnet32 \\
        --activations relu deu pwlu --rounds 2 --jit

Each model is compiled as Keras does by default on the backend
(`jit_compile="auto"`: XLA on JAX, none on a TensorFlow CPU) unless
`--jit` or `--no-jit` says otherwise. `--build-optimizer` builds the
optimizer right after `compile`, as the examples do, so that TensorFlow
traces the train step once rather than twice.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import _machine
from activation_benchmark import add_compile_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The measurement, run by a fresh interpreter: prints one JSON line.
CHILD = """
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, {examples!r})
import keras, numpy as np
import cifar_models
network, activation, batch, jit, build = {args!r}
warm = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
warm.compile("adam", "mse", jit_compile=jit)
warm.train_on_batch(np.ones((2, 4), "float32"), np.ones((2, 2), "float32"))
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, batch)
start = time.perf_counter()
model = cifar_models.build_model(network, activation, 10)
model.compile(
    optimizer="adam", jit_compile=jit,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
if build:
    model.optimizer.build(model.trainable_variables)
loss = float(model.train_on_batch(x, y))
first = time.perf_counter() - start
start = time.perf_counter()
model.train_on_batch(x, y)
print(json.dumps({{"first": first, "second": time.perf_counter() - start,
                   "loss": loss}}))
"""


def batch_size(network):
    """The batch size of the network's paper.

    Args:
        network: a name of `cifar_models.MODELS`.

    Returns:
        256 for the smcn family, 128 for the ResNets.

    Example:

    >>> batch_size("resnet18")
    128
    """
    return 256 if network.startswith("smcn") else 128


def measure(network, activation, jit_compile, build_optimizer=False):
    """One fresh-process measurement.

    Args:
        network: a name of `cifar_models.MODELS`.
        activation: a name of `cifar_models.ACTIVATIONS`.
        jit_compile: passed to `Model.compile`.
        build_optimizer: whether the optimizer is built right after
            `compile`, as `examples/cifar.py` does (Keras on TensorFlow
            otherwise builds it inside the first trace of the train step
            and traces the step twice).

    Returns:
        A dict with `first` (seconds to the end of the first step),
        `second` (seconds of the second step) and `loss`.

    Example:

        measure("smcn", "relu", False)["first"]
    """
    code = CHILD.format(
        examples=os.path.join(ROOT, "examples"),
        args=(network, activation, batch_size(network), jit_compile,
              build_optimizer),
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{network} with {activation} failed:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    """Measures and prints the table.

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).

    Example:

        python benchmarks/first_step_benchmark.py --networks smcn
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+",
                        default=["smcn", "resnet18", "resnet32"])
    parser.add_argument("--activations", nargs="+", default=["relu", "deu"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--build-optimizer", action="store_true",
        help="build the optimizer right after compile, as the examples "
             "do (default: Keras's plain flow)")
    add_compile_arguments(parser)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    activations = ["relu"] + [a for a in args.activations if a != "relu"]
    flow = ("optimizer built after compile" if args.build_optimizer
            else "Keras's plain flow")
    print(f"{_machine.header(args.jit)}; {args.rounds} round(s); {flow}")
    print("| network | activation | first step (s) | ratio to ReLU "
          "| second step (s) |")
    print("|---|---|---|---|---|")
    for network in args.networks:
        ratios = {name: [] for name in activations}
        times = {name: [] for name in activations}
        seconds = {name: [] for name in activations}
        for _ in range(args.rounds):
            found = {name: measure(network, name, args.jit,
                                   args.build_optimizer)
                     for name in activations}
            for name in activations:
                times[name].append(found[name]["first"])
                seconds[name].append(found[name]["second"])
                ratios[name].append(found[name]["first"]
                                    / found["relu"]["first"])
        for name in activations:
            print(f"| {network} | {name} | "
                  f"{statistics.median(times[name]):.1f} | "
                  f"{statistics.median(ratios[name]):.2f}x | "
                  f"{statistics.median(seconds[name]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
