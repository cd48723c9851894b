"""DEU against ReLU on scikit-learn's diabetes regression set.

The paper's real-data regression check: 442 patients, 10 features, a
disease-progression target. Features and target are standardised (on each
training fold), and the same small MLP is trained with DEU and with ReLU
under 3-fold cross-validation with fixed seeds. Prints the mean and standard
deviation of the test MSE (in standardised target units) and writes the
table to docs/results/diabetes.md.

    python examples/diabetes_deu.py
    python examples/diabetes_deu.py --epochs 20   # a quick smoke run
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402

from keras_learnact.layers import DEU  # noqa: E402

ACTIVATIONS = {
    "DEU": lambda: DEU(),
    "ReLU": lambda: keras.layers.Activation("relu"),
}


def make_model(make_activation, features):
    """The MLP: Dense(16) - activation - Dense(16) - activation - Dense(1).

    Args:
        make_activation: a callable returning a fresh activation layer.
        features: the number of input features.

    Returns:
        A compiled `keras.Model`.
    """
    model = keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(16), make_activation(),
        keras.layers.Dense(16), make_activation(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def cross_validate(make_activation, x, y, epochs, folds=3, seed=0):
    """Test MSE of each fold.

    Args:
        make_activation: a callable returning a fresh activation layer.
        x: the features.
        y: the target.
        epochs: training epochs per fold.
        folds: the number of folds.
        seed: the seed of the split and of the weights.

    Returns:
        A list of `folds` test MSEs, in standardised target units.
    """
    scores = []
    for fold, (train, test) in enumerate(
            KFold(folds, shuffle=True, random_state=seed).split(x)):
        mean, std = x[train].mean(0), x[train].std(0)
        y_mean, y_std = y[train].mean(), y[train].std()
        xs = ((x - mean) / std).astype("float32")
        ys = ((y - y_mean) / y_std).astype("float32")[:, None]
        keras.utils.set_random_seed(seed + fold)
        model = make_model(make_activation, x.shape[1])
        model.fit(xs[train], ys[train], batch_size=32, epochs=epochs,
                  verbose=0)
        scores.append(float(model.evaluate(xs[test], ys[test], verbose=0)))
    return scores


def main(argv=None):
    """Runs the comparison, prints and writes the table.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(__file__), "..", "docs", "results", "diabetes.md"))
    args = parser.parse_args(argv)
    x, y = load_diabetes(return_X_y=True)
    lines = [
        "# Diabetes regression: DEU vs ReLU",
        "",
        "`examples/diabetes_deu.py`: `sklearn.datasets.load_diabetes`, "
        "standardised features and target, 3-fold CV (KFold seed 0), "
        "MLP Dense(16)-act-Dense(16)-act-Dense(1), Adam 1e-2, batch 32, "
        f"{args.epochs} epochs. Test MSE in standardised target units "
        "(lower is better).",
        "",
        "| activation | mean MSE | std | folds |",
        "|---|---|---|---|",
    ]
    for name, make in ACTIVATIONS.items():
        scores = cross_validate(make, x, y, args.epochs)
        lines.append(f"| {name} | {np.mean(scores):.4f} | "
                     f"{np.std(scores):.4f} | "
                     f"{', '.join(f'{s:.4f}' for s in scores)} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
