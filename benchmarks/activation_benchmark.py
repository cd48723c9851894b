"""Training-step, inference and memory cost of each activation vs ReLU.

The model is CIFAR-shaped: three stages of two 3x3 convolutions (32, 64, 128
filters), each followed by BatchNormalization and the activation under test,
max-pooling between stages, global average pooling and dense logits; batch
128 of 32x32x3 inputs.

Two ways of training are timed (`--mode`): `batch`, `train_on_batch` and
`predict_on_batch` on one batch (SGD with momentum), and `fit`, an epoch of
`model.fit` over NumPy arrays with Adam as users train, after a warm-up
epoch, timed from its second step (the first starts the data pipeline)
and reported per step; `both` (the default) times both. Every model is
compiled as Keras compiles by default on the backend
(`jit_compile="auto"`: XLA on JAX, no XLA on a TensorFlow CPU, eager on
PyTorch) unless `--jit` or `--no-jit` says otherwise.

Timings alternate the models round by round in one process, and every time
is reported as a ratio to ReLU measured in the same round (this machine is
noisy: only ratios measured side by side mean anything). Peak memory is
that of a steady-state training step as a ratio to ReLU: on TensorFlow the
peak of its allocator in a fresh subprocess per model, on JAX what XLA's
`memory_analysis()` says the compiled step allocates beyond its arguments;
PyTorch has no such measure ("n/a"). The table is headed by the machine
and software it ran on.

Run:

    python benchmarks/activation_benchmark.py                 # everything
    python benchmarks/activation_benchmark.py --variants relu abu --rounds 3
    KERAS_BACKEND=jax python benchmarks/activation_benchmark.py --mode fit
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _machine  # noqa: E402
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
    "rational": lambda: kla.layers.Rational(),
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


def _compiled(name, jit, optimizer=None):
    model = build_model(VARIANTS[name])
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


class _SecondStepClock(keras.callbacks.Callback):
    """Notes when `fit`'s second step of the epoch starts (no batch-end
    hook, so that Keras keeps dispatching steps asynchronously)."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            self.start = time.perf_counter()


def _fit_step(model, x, y, batch_size):
    """Seconds per step of one `fit` epoch, from its second step to the
    return of `fit` (which waits for the last step's results). The first
    step, which also starts the epoch's data pipeline, is not timed."""
    clock = _SecondStepClock()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
              verbose=0, callbacks=[clock])
    return (time.perf_counter() - clock.start) / (len(x) // batch_size - 1)


def time_models(names, rounds, steps, batch_size, jit, mode="batch"):
    """Median per-round ratios to ReLU of train, predict and fit step times.

    Args:
        names: variant names; "relu" is added first if missing.
        rounds: how many alternating rounds.
        steps: timed steps per model per round (in `fit`: an epoch of
            `steps + 1`, its first step untimed).
        batch_size: the batch size.
        jit: passed to `compile(jit_compile=...)`: `"auto"`, True or False.
        mode: `"batch"` (`train_on_batch` and `predict_on_batch`, SGD with
            momentum), `"fit"` (`model.fit` over NumPy arrays with Adam,
            after a warm-up epoch) or `"both"`.

    Returns:
        A dict name -> {"train": ratio, "predict": ratio,
        "train_ms": median ms, "predict_ms": median ms} in batch mode, and
        {"fit": ratio, "fit_ms": median ms per step} in fit mode.
    """
    names = ["relu"] + [n for n in names if n != "relu"]
    timed = {"batch": ("train", "predict"), "fit": ("fit",),
             "both": ("train", "predict", "fit")}[mode]
    x, y = _data(batch_size)
    fit_x, fit_y = _data((steps + 1) * batch_size, seed=1)
    models, fitted = {}, {}
    for name in names:
        if "train" in timed:
            models[name] = _compiled(name, jit)
            for _ in range(3):  # trace and warm up
                models[name].train_on_batch(x, y)
                models[name].predict_on_batch(x)
        if "fit" in timed:
            fitted[name] = _compiled(name, jit, keras.optimizers.Adam(1e-3))
            _fit_step(fitted[name], fit_x, fit_y, batch_size)  # warm-up
    times = {key: {n: [] for n in names} for key in timed}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if "train" in timed:
                model = models[name]
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(x, y)
                times["train"][name].append(
                    (time.perf_counter() - start) / steps)
                start = time.perf_counter()
                for _ in range(steps):
                    model.predict_on_batch(x)
                times["predict"][name].append(
                    (time.perf_counter() - start) / steps)
            if "fit" in timed:
                times["fit"][name].append(
                    _fit_step(fitted[name], fit_x, fit_y, batch_size))
    results = {name: {} for name in names}
    for key, found in times.items():
        for name in names:
            results[name][key] = statistics.median(
                t / b for t, b in zip(found[name], found["relu"],
                                      strict=True))
            results[name][f"{key}_ms"] = 1e3 * statistics.median(found[name])
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


def _compiled_step_memory(name, batch_size):
    """MiB that XLA allocates for one compiled training step on JAX.

    The model takes one compiled step, which builds the optimizer and
    metric state; its `train_step` is then lowered and compiled again as
    Keras compiles it (`jax.jit`, the state donated), which JAX answers
    from its cache, and `memory_analysis()` reports the step's
    temporaries plus its outputs that do not reuse an argument's buffer:
    what the step holds beyond the weights, optimizer slots and batch.
    """
    import jax

    model = _compiled(name, True)
    x, y = _data(batch_size)
    model.train_on_batch(x, y)
    state = tuple(
        [v.value for v in variables] for variables in (
            model.trainable_variables, model.non_trainable_variables,
            model.optimizer.variables, model.metrics_variables))
    stats = jax.jit(model.train_step, donate_argnums=0).lower(
        state, (x, y, None)).compile().memory_analysis()
    return (stats.temp_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes) / 2**20


def _jit_flags(jit):
    return {True: ["--jit"], False: ["--no-jit"]}.get(jit, [])


def measure_memory(names, batch_size, jit, repeats=2, script=None):
    """Ratio to ReLU of the peak tensor memory of a training step.

    On TensorFlow each measurement runs in a fresh subprocess (see
    `_peak_training_memory`); the median over `repeats`. On JAX, once per
    model, from the compiled step (`_compiled_step_memory`), where the
    step is compiled; elsewhere (PyTorch, JAX with `--no-jit`) None.

    Args:
        names: variant names.
        batch_size: the batch size.
        jit: passed to `compile(jit_compile=...)`.
        repeats: subprocesses per variant.
        script: the script each subprocess runs with `--memory-child`
            (default: this file); a script that adds variants passes
            itself, so that its subprocesses know them.

    Returns:
        A dict name -> {"memory": ratio, "memory_mib": median MiB}, both
        None where the backend has no measure.
    """
    names = ["relu"] + [n for n in names if n != "relu"]
    backend = keras.backend.backend()
    if backend == "jax" and _machine.resolve_jit(jit):
        growth = {n: [_compiled_step_memory(n, batch_size)] for n in names}
    elif backend != "tensorflow":
        return {n: {"memory": None, "memory_mib": None} for n in names}
    else:
        growth = _tensorflow_memory(names, batch_size, jit, repeats, script)
    base = statistics.median(growth["relu"])
    return {
        n: {"memory": statistics.median(g) / base,
            "memory_mib": statistics.median(g)}
        for n, g in growth.items()
    }


def _tensorflow_memory(names, batch_size, jit, repeats, script):
    growth = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            out = subprocess.run(
                [sys.executable, script or __file__, "--memory-child", name,
                 "--batch-size", str(batch_size)] + _jit_flags(jit),
                check=True, capture_output=True, text=True,
                env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true",
                     "KERAS_BACKEND": "tensorflow"},
            ).stdout
            growth[name].append(json.loads(out.strip().splitlines()[-1]))
    return growth


METHODS = {
    "batch": "train_on_batch and predict_on_batch (SGD with momentum)",
    "fit": ("model.fit over NumPy arrays (Adam), per step after a warm-up "
            "epoch"),
}
MEMORY = {
    "tensorflow": ("peak of TensorFlow's allocator in a training step, "
                   "fresh process per model"),
    "jax": ("XLA memory_analysis() of the compiled training step (n/a "
            "with --no-jit)"),
}


def heading(machine, batch_size, rounds, steps, mode="batch",
            memory=False):
    """The lines above a table: the machine, the software and the method.

    Args:
        machine: a dict from `_machine.describe`.
        batch_size, rounds, steps: as for `time_models`.
        mode: as for `time_models`.
        memory: whether the table has the memory columns.

    Returns:
        The lines as one string.
    """
    methods = [METHODS[m] for m in ("batch", "fit") if mode in (m, "both")]
    lines = [_machine.header(machine=machine),
             f"batch {batch_size}, {rounds} rounds x {steps} steps; "
             + "; ".join(methods)]
    if memory:
        lines.append("memory: " + MEMORY.get(
            machine["backend"], f"n/a on {machine['backend']}"))
    return "\n".join(lines)


def format_table(results):
    """A Markdown table of the results.

    Args:
        results: name -> dict of measured values; a value of None (memory
            on PyTorch) is printed as "n/a".

    Returns:
        The table as a string.
    """
    cols = [("train", "train step / ReLU"), ("predict", "predict / ReLU"),
            ("fit", "fit step / ReLU"),
            ("memory", "peak train memory / ReLU"),
            ("memory_mib", "peak train MiB"),
            ("train_ms", "train step ms (median)"),
            ("fit_ms", "fit step ms (median)")]
    cols = [c for c in cols if any(c[0] in r for r in results.values())]
    lines = ["| activation | " + " | ".join(h for _, h in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = []
        for key, _ in cols:
            value = r.get(key)
            cells.append(
                "" if key not in r else "n/a" if value is None else (
                    f"{value:.0f}" if key.endswith(("_ms", "_mib"))
                    else f"{value:.2f}x"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_compile_arguments(parser):
    """Adds `--jit` and `--no-jit`; `args.jit` is then "auto" (Keras's
    default), True or False, for `compile(jit_compile=...)`.

    Args:
        parser: an `argparse.ArgumentParser`.
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--jit", dest="jit", action="store_const", const=True,
                       default="auto",
                       help="jit_compile=True (default: Keras's 'auto')")
    group.add_argument("--no-jit", dest="jit", action="store_const",
                       const=False, help="jit_compile=False")


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
    parser.add_argument("--mode", choices=["batch", "fit", "both"],
                        default="both",
                        help="train_on_batch/predict_on_batch, model.fit, "
                        "or both (default)")
    add_compile_arguments(parser)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_peak_training_memory(
            args.memory_child, args.batch_size, args.jit)))
        return
    results = time_models(args.variants, args.rounds, args.steps,
                          args.batch_size, args.jit, args.mode)
    if not args.no_memory:
        for name, mem in measure_memory(
                args.variants, args.batch_size, args.jit,
                script=script).items():
            results[name].update(mem)
    machine = _machine.describe(args.jit)
    print(heading(machine, args.batch_size, args.rounds, args.steps,
                  args.mode, memory=not args.no_memory))
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine,
                       "settings": {k: v for k, v in vars(args).items()
                                    if k not in ("json", "memory_child")},
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
