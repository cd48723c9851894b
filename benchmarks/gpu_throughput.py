"""Training throughput of the CIFAR networks per activation, as ratios to ReLU.

Builds `examples/cifar_models.py` networks with each activation, trains them
on generated CIFAR-shaped data with `model.fit` and reports training images
per second and the ratio to ReLU measured in the same round. Unlike
`examples/cifar.py` it needs no TensorFlow: it runs on any Keras backend
(the JAX backend compiles the train step with XLA; the PyTorch backend runs
it eagerly), which is how it is run on a GPU machine that has JAX and
PyTorch but no TensorFlow. Models are timed in alternating rounds in one
process, so only side-by-side ratios are compared.

Run:

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py --mixed-precision
    KERAS_BACKEND=torch python benchmarks/gpu_throughput.py --model smcn \\
        --activations relu abu pwlu --steps 20
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import _machine  # noqa: E402
import cifar_models  # noqa: E402

import keras_learnact as kla  # noqa: E402

# PWLU times phase II (the learned function); its phase I acts as ReLU.
cifar_models.ACTIVATIONS["pwlu"] = functools.partial(
    kla.layers.PWLU, start_realigned=True)

DEFAULT_ACTIVATIONS = ("relu", "alpha-relu", "abu", "abu-softmax", "deu",
                       "slaf", "pwlu")


def _compiled(model_name, activation, jit):
    model = cifar_models.build_model(model_name, activation)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def measure(model_name, activations, batch_size, steps, rounds, jit="auto"):
    """Training images per second per activation, and ratios to ReLU.

    Args:
        model_name: a `cifar_models.MODELS` name.
        activations: `cifar_models.ACTIVATIONS` names; "relu" is added first
            if missing.
        batch_size: images per step.
        steps: timed steps per model per round.
        rounds: alternating rounds; the ratio reported is the median of the
            per-round ratios.
        jit: passed to `compile(jit_compile=...)`.

    Returns:
        A dict name -> {"images_per_s": median, "ratio": median ratio of
        images per second to ReLU's in the same round}.

    Example:

    >>> results = measure("smcn", ["relu", "alpha-relu"], 8, 2, 1)
    >>> results["relu"]["ratio"]
    1.0
    """
    names = ["relu"] + [n for n in activations if n != "relu"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(steps * batch_size,))
    models = {}
    for name in names:
        models[name] = _compiled(model_name, name, jit)
        # compiles and warms up
        models[name].fit(x[:2 * batch_size], y[:2 * batch_size],
                         batch_size=batch_size, epochs=1, verbose=0)
    speed = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            models[name].fit(x, y, batch_size=batch_size, epochs=1,
                             verbose=0, shuffle=False)
            speed[name].append(len(x) / (time.perf_counter() - start))
    return {
        name: {
            "images_per_s": statistics.median(speed[name]),
            "ratio": statistics.median(
                s / b for s, b in zip(speed[name], speed["relu"],
                                      strict=True)),
        }
        for name in names
    }


def main(argv=None):
    """Command-line entry point: prints a Markdown table, optionally JSON.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18",
                        choices=cifar_models.MODELS)
    parser.add_argument("--activations", nargs="+",
                        default=list(DEFAULT_ACTIVATIONS),
                        choices=sorted(cifar_models.ACTIVATIONS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mixed-precision", action="store_true",
                        help="the mixed_float16 policy")
    parser.add_argument("--no-jit", action="store_true",
                        help="compile(jit_compile=False)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    jit = False if args.no_jit else "auto"
    results = measure(args.model, args.activations, args.batch_size,
                      args.steps, args.rounds, jit)
    machine = _machine.describe(jit)
    header = (f"{args.model}, batch {args.batch_size}, policy "
              f"{keras.mixed_precision.global_policy().name}, "
              f"{args.rounds} rounds x {args.steps} steps")
    print(_machine.header(machine=machine))
    print(header)
    print("| activation | images/s | vs ReLU |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['images_per_s']:.0f} | {r['ratio']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "setup": header,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
