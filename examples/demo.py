"""Offline demo: a small CNN on scikit-learn's handwritten digits, with ReLU
and with each learnable activation of keras-learnact.

The digits (1 797 real 8x8 images, 10 classes) install with scikit-learn, so
nothing is downloaded. Prints a table of test accuracy, parameter count and
seconds per epoch per activation, and writes it as Markdown and CSV.

    python examples/demo.py                    # full run
    python examples/demo.py --epochs 2 --quick # a smoke run
"""

import argparse
import csv
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_learnact as kla  # noqa: E402

ACTIVATIONS = {
    "relu": lambda: keras.layers.Activation("relu"),
    "alpha-relu": lambda: kla.AdaptiveScaling("relu"),
    "alpha-swish": lambda: kla.AdaptiveScaling("swish"),
    "abu": lambda: kla.ABU(),
    "abu-softmax": lambda: kla.ABU(normalization="softmax"),
}


def load_digits(seed=0, test_fraction=0.25):
    """The digits as (x_train, y_train, x_test, y_test), images in [0, 1].

    Args:
        seed: the seed of the train/test split.
        test_fraction: the share of images held out for testing.

    Returns:
        Four NumPy arrays; images have shape (n, 8, 8, 1).
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
    """Two 3x3 convolution blocks and a dense head, activation after each.

    Args:
        make_activation: a callable returning a fresh activation layer.

    Returns:
        An uncompiled `keras.Sequential`.
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


def run(name, data, epochs, seed):
    """Trains one model; returns its row of the results table.

    Args:
        name: a key of `ACTIVATIONS`.
        data: the output of `load_digits`.
        epochs: the number of epochs.
        seed: the random seed.

    Returns:
        A dict with the activation, test accuracy, parameters and seconds
        per epoch.
    """
    keras.utils.set_random_seed(seed)
    x_train, y_train, x_test, y_test = data
    model = build_cnn(ACTIVATIONS[name])
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    seconds = (time.perf_counter() - start) / epochs
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"activation": name, "test_accuracy": round(float(accuracy), 4),
            "parameters": model.count_params(),
            "seconds_per_epoch": round(seconds, 3)}


def main(argv=None):
    """Runs the demo and writes `results.md` and `results.csv`.

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--activations", nargs="+", default=list(ACTIVATIONS),
                        choices=list(ACTIVATIONS))
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    data = load_digits(args.seed)
    rows = []
    for name in args.activations:
        rows.append(run(name, data, args.epochs, args.seed))
        print(f"{name:>14}: test accuracy {rows[-1]['test_accuracy']:.4f}")
    with open(os.path.join(args.output, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = ["| " + " | ".join(rows[0]) + " |", "|---" * len(rows[0]) + "|"]
    table += ["| " + " | ".join(str(v) for v in r.values()) + " |"
              for r in rows]
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"written to {args.output}/")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
