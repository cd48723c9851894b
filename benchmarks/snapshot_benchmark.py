"""The cost of `ActivationSnapshot` relative to a training epoch.

Trains the benchmark CNN of `activation_benchmark.py` with ABU after every
convolution (six layers) on a few hundred generated CIFAR-shaped samples and
measures three things:

1. one-epoch `fit` with and without the callback, alternating round by
   round (the direct overhead on this tiny epoch: two snapshots per `fit`,
   the initial one and the epoch's, against only a few batches);
2. the time of one training batch (median of `train_on_batch`);
3. the time of one snapshot (curves on the 201-point grid, parameters,
   optionally the probe histograms, and the atomic file rewrite), both with
   a fresh file and with a file already holding 100 snapshots.

A real CIFAR-10 epoch is 50 000 images, so the snapshot's share of a real
epoch is computed from (2) and (3): `snapshot / (batch * ceil(50000 /
batch_size))`. The target is at most 2 %.

Run:

    python benchmarks/snapshot_benchmark.py
    python benchmarks/snapshot_benchmark.py --samples 512 --rounds 5 --probe 256
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_learnact as kla  # noqa: E402
from keras_learnact.callbacks.snapshot import ActivationSnapshot  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402
from activation_benchmark import build_model  # noqa: E402

CIFAR_EPOCH = 50_000


def _model():
    model = build_model(lambda: kla.layers.ABU())
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(samples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(samples,))
    return x, y


def measure(samples, batch_size, rounds, probe_size, directory):
    """Measures epoch, batch and snapshot times.

    Args:
        samples: generated samples per epoch.
        batch_size: the batch size.
        rounds: alternating rounds of with/without the callback.
        probe_size: images in the probe batch (0: no histograms).
        directory: where snapshot files are written.

    Returns:
        A dict of median times in seconds.
    """
    x, y = _data(samples)
    probe = x[:probe_size] if probe_size else None
    model = _model()
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # warm up
    path = os.path.join(directory, "activations.npz")

    with_cb, without = [], []
    for r in range(rounds):
        for use in ((True, False) if r % 2 == 0 else (False, True)):
            if os.path.exists(path):
                os.remove(path)
            callbacks = [ActivationSnapshot(path, probe=probe)] if use else []
            start = time.perf_counter()
            model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0,
                      callbacks=callbacks)
            (with_cb if use else without).append(time.perf_counter() - start)

    xb, yb = x[:batch_size], y[:batch_size]
    batch = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(5):
            model.train_on_batch(xb, yb)
        batch.append((time.perf_counter() - start) / 5)

    def snapshot_times(prefill):
        if os.path.exists(path):
            os.remove(path)
        callback = ActivationSnapshot(path, probe=probe)
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        data = callback._capture()
        for epoch in range(1, prefill + 1):
            callback.snapshots.add(epoch, data)
        times = []
        for k in range(rounds):
            start = time.perf_counter()
            callback._commit(prefill + 1 + k, callback._capture())
            times.append(time.perf_counter() - start)
        return statistics.median(times), os.path.getsize(path)

    fresh, _ = snapshot_times(0)
    full, size = snapshot_times(100)
    return {
        "epoch_with": statistics.median(with_cb),
        "epoch_without": statistics.median(without),
        "batch": statistics.median(batch),
        "snapshot": fresh,
        "snapshot_100": full,
        "file_bytes_100": size,
    }


def main(argv=None):
    """Command-line entry point: prints the measurements.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe", type=int, default=0, metavar="N",
                        help="record input histograms on N images")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        t = measure(args.samples, args.batch_size, args.rounds, args.probe,
                    directory)
    steps = math.ceil(CIFAR_EPOCH / args.batch_size)
    cifar_epoch = t["batch"] * steps
    print(_machine.header("auto"))
    print(f"ABU CNN (6 layers), batch {args.batch_size}, "
          f"probe {args.probe or 'none'}, {args.rounds} rounds")
    print(f"fit, 1 epoch of {args.samples} samples: "
          f"{t['epoch_without']:.2f} s without, {t['epoch_with']:.2f} s with "
          f"the callback (2 snapshots): "
          f"{100 * (t['epoch_with'] / t['epoch_without'] - 1):+.1f}% on this "
          "tiny epoch")
    print(f"one training batch: {1e3 * t['batch']:.0f} ms; a CIFAR epoch "
          f"({CIFAR_EPOCH} images = {steps} batches): {cifar_epoch:.1f} s")
    for label, key in (("fresh file", "snapshot"),
                       ("file with 100 snapshots", "snapshot_100")):
        print(f"one snapshot, {label}: {1e3 * t[key]:.0f} ms = "
              f"{100 * t[key] / cifar_epoch:.2f}% of a CIFAR epoch "
              "(target <= 2%)")
    print(f"file with 101 snapshots: {t['file_bytes_100'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
