"""Offline demo: a small CNN on scikit-learn's handwritten digits, trained
with ReLU and with each learnable activation of keras-learnact.

The digits (1 797 real 8x8 images, 10 classes) install with scikit-learn, so
nothing is downloaded. For every activation the demo snapshots the learned
shapes each epoch and writes, into the output folder:

- `results.md` and `results.csv`: test accuracy, parameter count and seconds
  per epoch per activation;
- `explain.md`: what each layer's units learned (`keras_learnact.explain`):
  per layer the closest named shapes, and the first units' fits and exact
  forms;
- `health.md`: the health findings the snapshot callback recorded (NaN,
  dead units, clipped outputs, ...), per activation;
- `snapshots/<activation>.npz`: the snapshot files
  (`keras_learnact.snapshots.load`);
- `figures/evolution_<activation>.png`: how each layer's shape evolved,
  and `figures/final_<activation>.png`: the last shapes.

Seeds are fixed (and TensorFlow's ops made deterministic), so reruns give the
same table apart from the timings.

    python examples/demo.py                   # the full run, a few minutes
    python examples/demo.py --quick           # a smoke run in seconds
"""

import argparse
import csv
import os
import time

# Level 3 hides TensorFlow 2.21's harmless tf.data "NodeDef mentions
# attribute use_unbounded_threadpool" lines; Python errors still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402

import keras_learnact as kla  # noqa: E402
from keras_learnact import plotting  # noqa: E402
from keras_learnact.callbacks import ActivationSnapshot  # noqa: E402

PWLU_WARMUP_EPOCHS = 3


def _activations():
    table = {
        "relu": lambda: keras.layers.Activation("relu"),
        "alpha-relu": lambda: kla.layers.AdaptiveScaling("relu"),
        "alpha-swish": lambda: kla.layers.AdaptiveScaling("swish"),
        "abu": lambda: kla.layers.ABU(),
        "abu-softmax": lambda: kla.layers.ABU(normalization="softmax"),
    }
    optional = {
        "deu": "DEU",
        "slaf": "SLAF",
        "pwlu": "PWLU",
        "rational": "Rational",
    }
    for name, cls in optional.items():
        if hasattr(kla.layers, cls):
            table[name] = getattr(kla.layers, cls)
    return table


ACTIVATIONS = _activations()


def load_digits(seed=0, test_fraction=0.25):
    """The digits as (x_train, y_train, x_test, y_test), images in [0, 1].

    Args:
        seed: the seed of the stratified train/test split.
        test_fraction: the share of images held out for testing.

    Returns:
        Four NumPy arrays; images have shape (n, 8, 8, 1).

    Example:

    >>> x_train, y_train, x_test, y_test = load_digits()
    >>> x_train.shape, x_test.shape
    ((1347, 8, 8, 1), (450, 8, 8, 1))
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    data = sk_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=test_fraction, random_state=seed,
        stratify=data.target,
    )
    return x_train, y_train, x_test, y_test


def build_cnn(make_activation):
    """Two 3x3 convolutions and a dense layer, each followed by the
    activation, then the logits.

    Args:
        make_activation: a callable returning a fresh activation layer.

    Returns:
        An uncompiled `keras.Sequential`.

    Example:

    >>> model = build_cnn(lambda: keras.layers.Activation("relu"))
    >>> model.output_shape
    (None, 10)
    """
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same"),
        make_activation(),
        keras.layers.Conv2D(32, 3, padding="same"),
        make_activation(),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64),
        make_activation(),
        keras.layers.Dense(10),
    ])


class _Progress(keras.callbacks.Callback):
    """Advances one progress bar shared by every run, an epoch a step."""

    def __init__(self, bar, label):
        super().__init__()
        self.bar, self.label = bar, label

    def on_epoch_end(self, epoch, logs=None):
        self.bar.add(1, values=[("loss", logs["loss"])])


def run(name, data, epochs, seed, output, bar=None):
    """Trains one model with snapshots; returns its row of the table.

    Args:
        name: a key of `ACTIVATIONS`.
        data: the output of `load_digits`.
        epochs: the number of epochs.
        seed: the random seed.
        output: the output folder, or None for no snapshots and figures.
        bar: an optional `keras.utils.Progbar` advanced once per epoch.

    Returns:
        A dict: activation, test accuracy, parameters, seconds per epoch.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_test, y_test = data
    model = build_cnn(ACTIVATIONS[name])
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The optimizer and the metrics built now rather than inside the first
    # trace of the train step, which TensorFlow would then trace twice
    # (see `build_training_state` in examples/cifar.py); the metrics on
    # two examples, then reset.
    model.optimizer.build(model.trainable_variables)
    model.compute_metrics(x_train[:2], y_train[:2], model(x_train[:2]), None)
    model.reset_metrics()
    callbacks = [_Progress(bar, name)] if bar is not None else []
    learnable = name != "relu" and output is not None
    if learnable:
        callbacks.append(ActivationSnapshot(
            os.path.join(output, "snapshots", f"{name}.npz"),
            probe=x_train[:256],
            overwrite=True,  # a rerun replaces the demo's earlier output
        ))
    if name == "pwlu":
        from keras_learnact.callbacks import PWLURealignment

        callbacks.append(PWLURealignment(
            warmup_epochs=min(PWLU_WARMUP_EPOCHS, max(epochs - 1, 0))))
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0,
              callbacks=callbacks)
    seconds = (time.perf_counter() - start) / epochs
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    if learnable:
        path = os.path.join(output, "snapshots", f"{name}.npz")
        figure = plotting.plot_evolution(path)
        figure.savefig(
            os.path.join(output, "figures", f"evolution_{name}.png"), dpi=90)
        plotting.plot_final(path).savefig(
            os.path.join(output, "figures", f"final_{name}.png"), dpi=90)
    return {"activation": name, "test_accuracy": round(float(accuracy), 4),
            "parameters": model.count_params(),
            "seconds_per_epoch": round(seconds, 3)}


def write_tables(rows, output):
    """Writes `results.csv` and `results.md`; returns the Markdown.

    Args:
        rows: the rows returned by `run`.
        output: the output folder.

    Returns:
        The Markdown table as a string.
    """
    with open(os.path.join(output, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |"
              for r in rows]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(table)
    return table


def write_explanations(names, output, units=4):
    """Writes `explain.md` and `health.md` from the snapshot files.

    Args:
        names: the learnable activations that were run.
        output: the output folder (with `snapshots/<name>.npz`).
        units: how many units per layer to show in full.

    Returns:
        The text of `explain.md`.
    """
    from keras_learnact import health

    explained = ["# What the units learned", "",
                 "Per unit, the closest named activation `a * f(b * x + c) "
                 "+ d` over the inputs it received on the probe batch "
                 "(weighted by their histogram), its R^2 and largest error "
                 "there, and the family's exact form; from "
                 "`keras_learnact.explain` on the last snapshot.", ""]
    findings = ["# Health findings", "",
                "What `ActivationSnapshot`'s health checks recorded "
                "(`keras-learnact info FILE` lists them too).", ""]
    for name in names:
        snaps = kla.snapshots.load(
            os.path.join(output, "snapshots", f"{name}.npz"))
        rows = kla.explain(snaps)
        explained += [f"## {name} (epoch {int(snaps.epochs[-1])})", "",
                      "| layer | units | closest shapes | median R^2 | "
                      "lowest R^2 |", "|---|---|---|---|---|"]
        for line in rows.summary():
            explained.append(
                f"| {line['layer']} | {line['units']} | {line['shapes']} | "
                f"{_r2(line['median_r2'])} | {_r2(line['min_r2'])} |")
        explained += ["", f"The first {units} units of each layer:", "",
                      rows.to_markdown(max_channels=units), ""]
        findings += [f"## {name}", ""]
        lines = health.summarize(snaps.findings)
        findings += ["- " + line for line in lines] or ["None."]
        findings.append("")
    text = "\n".join(explained)
    with open(os.path.join(output, "explain.md"), "w") as f:
        f.write(text)
    with open(os.path.join(output, "health.md"), "w") as f:
        f.write("\n".join(findings))
    return text


def _r2(value):
    return "-" if value is None else f"{value:.4f}"


def main(argv=None):
    """Runs the demo.

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The rows of the results table.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS),
                        choices=list(ACTIVATIONS))
    parser.add_argument("--quick", action="store_true",
                        help="2 epochs on 300 images: a smoke run")
    args = parser.parse_args(argv)
    for folder in ("snapshots", "figures"):
        os.makedirs(os.path.join(args.output, folder), exist_ok=True)
    data = load_digits(args.seed)
    epochs = args.epochs
    if args.quick:
        epochs = min(epochs, 2)
        data = (data[0][:300], data[1][:300], data[2], data[3])
    print(f"Training {len(args.activations)} models x {epochs} epochs on "
          f"{len(data[0])} digits (backend {keras.backend.backend()}):")
    bar = keras.utils.Progbar(len(args.activations) * epochs, unit_name="epoch")
    rows = [run(name, data, epochs, args.seed, args.output, bar)
            for name in args.activations]
    print()
    print(write_tables(rows, args.output))
    write_explanations([n for n in args.activations if n != "relu"],
                       args.output)
    print(f"Written to {args.output}/: results.md, results.csv, "
          "explain.md, health.md, snapshots/*.npz, figures/evolution_*.png, "
          "figures/final_*.png")
    return rows


if __name__ == "__main__":
    main()
