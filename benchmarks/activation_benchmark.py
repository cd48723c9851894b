"""Training-step, inference and memory cost of each activation vs ReLU.

The model is CIFAR-shaped: three stages of two 3x3 convolutions (32, 64, 128
filters), each followed by BatchNormalization and the activation under test,
max-pooling between stages, global average pooling and dense logits; batch
128 of 32x32x3 inputs.

Timings alternate the models round by round in one process, and every time
is reported as a ratio to ReLU measured in the same round (this machine is
noisy: only ratios measured side by side mean anything). Peak memory is the
peak tensor memory of a steady-state training step, read from TensorFlow's
allocator statistics in a fresh subprocess per model, also as a ratio to
ReLU.

Run:

    python benchmarks/activation_benchmark.py                 # everything
    python benchmarks/activation_benchmark.py --variants relu abu --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_learnact as kla  # noqa: E402
from keras_learnact.layers._fused import fuse  # noqa: E402


class ReluPass(keras.layers.Layer):
    """ReLU as its own fused kernel: a yardstick, not a package layer.

    In `predict`, TensorFlow fuses a plain ReLU into the convolution before
    it, so it costs nothing there; any activation it does not fuse pays at
    least this one pass over memory (`_fused.fuse` of `relu`, the same
    machinery as PWLU's lookup).

    Args:
        **kwargs: base layer keyword arguments.

    Example:

        python benchmarks/activation_benchmark.py --variants relu relu-pass
    """

    def call(self, inputs):
        if not hasattr(self, "_relu"):
            self._relu = fuse(keras.ops.relu)
        return self._relu(inputs)


# name -> factory of a fresh activation layer. Families add their entries.
VARIANTS = {
    "relu": lambda: keras.layers.Activation("relu"),
    "alpha-relu": lambda: kla.layers.AdaptiveScaling("relu"),
    "alpha-swish": lambda: kla.layers.AdaptiveScaling("swish"),
    "abu": lambda: kla.layers.ABU(),
    "abu-softmax-channel": lambda: kla.layers.ABU(
        normalization="softmax", granularity="channel"
    ),
    "deu": lambda: kla.layers.DEU(),
    "slaf-batch-4": lambda: kla.layers.SLAF(degree=4),
    "slaf-raw-4": lambda: kla.layers.SLAF(degree=4, normalization="none"),
    "pwlu-4": lambda: kla.layers.PWLU(num_intervals=4, start_realigned=True),
    "pwlu-16": lambda: kla.layers.PWLU(num_intervals=16,
                                       start_realigned=True),
    "pwlu-64": lambda: kla.layers.PWLU(num_intervals=64,
                                       start_realigned=True),
    "relu-pass": ReluPass,
}


def build_model(make_activation, num_classes=10):
    """The benchmark CNN with `make_activation()` after every convolution.

    Args:
        make_activation: a callable returning a fresh activation layer.
        num_classes: the number of logits.

    Returns:
        An uncompiled `keras.Model`.
    """
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for stage, filters in enumerate((32, 64, 128)):
        for _ in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same",
                                    use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = make_activation()(x)
        if stage < 2:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def _data(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(batch_size,))
    return x, y


def _compiled(name, jit):
    model = build_model(VARIANTS[name])
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def time_models(names, rounds, steps, batch_size, jit):
    """Median per-round ratios to ReLU of train and predict step times.

    Args:
        names: variant names; "relu" is added first if missing.
        rounds: how many alternating rounds.
        steps: timed steps per model per round.
        batch_size: the batch size.
        jit: passed to `compile(jit_compile=...)`.

    Returns:
        A dict name -> {"train": ratio, "predict": ratio,
        "train_ms": median ms, "predict_ms": median ms}.
    """
    names = ["relu"] + [n for n in names if n != "relu"]
    x, y = _data(batch_size)
    models = {}
    for name in names:
        models[name] = _compiled(name, jit)
        for _ in range(3):  # trace and warm up
            models[name].train_on_batch(x, y)
            models[name].predict_on_batch(x)
    train = {n: [] for n in names}
    predict = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            model = models[name]
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)
            train[name].append((time.perf_counter() - start) / steps)
            start = time.perf_counter()
            for _ in range(steps):
                model.predict_on_batch(x)
            predict[name].append((time.perf_counter() - start) / steps)
    results = {}
    for name in names:
        results[name] = {
            "train": statistics.median(
                t / b for t, b in zip(train[name], train["relu"], strict=True)),
            "predict": statistics.median(
                t / b for t, b in zip(
                    predict[name], predict["relu"], strict=True)),
            "train_ms": 1e3 * statistics.median(train[name]),
            "predict_ms": 1e3 * statistics.median(predict[name]),
        }
    return results


def _peak_training_memory(name, batch_size, jit):
    """Peak tensor memory (MiB) of one steady-state training step.

    Runs in a child process whose TensorFlow uses the BFC allocator on the
    CPU (`TF_CPU_ALLOCATOR_USE_BFC`), so that its allocator statistics are
    exact. Two warm-up steps build everything once (traced functions, XLA
    kernels, optimizer slots); the peak of the third step above what was
    allocated before it is what the step itself holds at its peak:
    activations kept for the backward pass and temporaries.
    """
    import tensorflow as tf

    model = _compiled(name, jit)
    x, y = _data(batch_size)
    for _ in range(2):
        model.train_on_batch(x, y)
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    model.train_on_batch(x, y)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return (peak - before) / 2**20


def measure_memory(names, batch_size, jit, repeats=2, script=None):
    """Ratio to ReLU of the peak tensor memory of a training step.

    Each measurement runs in a fresh subprocess (see
    `_peak_training_memory`); the median over `repeats`. TensorFlow only.

    Args:
        names: variant names.
        batch_size: the batch size.
        jit: passed to `compile(jit_compile=...)`.
        repeats: subprocesses per variant.
        script: the script each subprocess runs with `--memory-child`
            (default: this file); a script that adds variants passes
            itself, so that its subprocesses know them.

    Returns:
        A dict name -> {"memory": ratio, "memory_mib": median MiB}.
    """
    names = ["relu"] + [n for n in names if n != "relu"]
    growth = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            out = subprocess.run(
                [sys.executable, script or __file__, "--memory-child", name,
                 "--batch-size", str(batch_size)]
                + (["--jit"] if jit else []),
                check=True, capture_output=True, text=True,
                env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true",
                     "KERAS_BACKEND": "tensorflow"},
            ).stdout
            growth[name].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(growth["relu"])
    return {
        n: {"memory": statistics.median(g) / base,
            "memory_mib": statistics.median(g)}
        for n, g in growth.items()
    }


def format_table(results):
    """A Markdown table of the results.

    Args:
        results: name -> dict of measured values.

    Returns:
        The table as a string.
    """
    cols = [("train", "train step / ReLU"), ("predict", "predict / ReLU"),
            ("memory", "peak train memory / ReLU"),
            ("memory_mib", "peak train MiB"),
            ("train_ms", "train step ms (median)")]
    cols = [c for c in cols if any(c[0] in r for r in results.values())]
    lines = ["| activation | " + " | ".join(h for _, h in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = []
        for key, _ in cols:
            value = r.get(key)
            cells.append("" if value is None else (
                f"{value:.0f}" if key.endswith(("_ms", "_mib"))
                else f"{value:.2f}x"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None, script=None):
    """Command-line entry point; prints the table and optionally saves JSON.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
        script: passed to `measure_memory`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jit", action="store_true",
                        help="compile with XLA (jit_compile=True)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_peak_training_memory(
            args.memory_child, args.batch_size, args.jit)))
        return
    results = time_models(args.variants, args.rounds, args.steps,
                          args.batch_size, args.jit)
    if not args.no_memory:
        for name, mem in measure_memory(
                args.variants, args.batch_size, args.jit,
                script=script).items():
            results[name].update(mem)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, "
          f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} "
          f"steps, jit_compile={args.jit}")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
