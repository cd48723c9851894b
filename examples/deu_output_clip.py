"""DEU's output clip, measured: a toy regression, the digits demo and the
diabetes example, DEU with several clips against ReLU over several seeds.

The measurements behind DEU's default `output_clip` (docs/layers/deu.md).
Each task prints a Markdown table, one column per seed:

    python examples/deu_output_clip.py toy
    python examples/deu_output_clip.py digits
    python examples/deu_output_clip.py diabetes
    python examples/deu_output_clip.py toy --seeds 0 --clips 1000 3  # quick

- `toy`: `x ~ N(0, scale^2)` of shape (examples, 4), `y = 2 sin(x0) +
  x1 x2 + 0.5 x3^2 + 0.1 noise`; Dense(8) - activation - Dense(1), MSE,
  Adam, batch 32. Reports the last epoch's training loss and the MSE on as
  many fresh examples.
- `digits`: `examples/demo.py`'s CNN on scikit-learn's digits, its split,
  optimiser and epochs; reports test accuracy.
- `diabetes`: `examples/diabetes_deu.py`'s 3-fold cross-validation (the
  seed sets the folds and the weights); reports the mean test MSE.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_learnact.layers import DEU  # noqa: E402

CLIPS = {"toy": (1000.0, 30.0, 10.0, 5.0, 3.0),
         "digits": (1000.0, 10.0, 5.0, 3.0),
         "diabetes": (1000.0, 10.0, 5.0, 3.0)}
SEEDS = {"toy": (0, 1, 2, 3, 4), "digits": (0, 1, 2), "diabetes": (0, 1, 2)}


def relu():
    """A ReLU layer, the yardstick."""
    return keras.layers.Activation("relu")


def deu_with_clip(clip):
    """A function making a DEU with the given `output_clip`."""
    return lambda: DEU(output_clip=clip)


def toy_data(seed, examples=2048, scale=2.0):
    """Training and test sets of the toy regression.

    Args:
        seed: the seed of the draw.
        examples: the size of each set.
        scale: the standard deviation of the inputs.

    Returns:
        `(x_train, y_train, x_test, y_test)`, float32; `y` has shape
        `(examples, 1)`.

    Example:

    >>> x, y, x_test, y_test = toy_data(0, examples=16)
    >>> x.shape, y.shape, x_test.shape
    ((16, 4), (16, 1), (16, 4))
    """
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(2 * examples, 4))
    y = (2.0 * np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2
         + 0.1 * rng.normal(size=2 * examples))[:, None]
    x, y = x.astype("float32"), y.astype("float32")
    return x[:examples], y[:examples], x[examples:], y[examples:]


def toy_run(make_activation, seed, examples=2048, scale=2.0, epochs=10,
            learning_rate=1e-2):
    """Trains Dense(8) - activation - Dense(1) on the toy regression.

    Args:
        make_activation: a callable returning a fresh activation layer.
        seed: the seed of the data and of the weights.
        examples: the number of training (and of test) examples.
        scale: the standard deviation of the inputs.
        epochs: the number of epochs.
        learning_rate: Adam's learning rate.

    Returns:
        `(losses, test_mse)`: each epoch's mean training loss, a list, and
        the MSE on fresh examples.
    """
    x, y, x_test, y_test = toy_data(seed, examples, scale)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8), make_activation(),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return ([float(v) for v in history.history["loss"]],
            float(model.evaluate(x_test, y_test, verbose=0)))


def digits_run(make_activation, seed, epochs=15):
    """Test accuracy of `examples/demo.py`'s CNN with one activation.

    Args:
        make_activation: a callable returning a fresh activation layer.
        seed: the seed of the split and of the weights.
        epochs: the number of epochs (the demo's 15).

    Returns:
        The test accuracy.
    """
    import demo

    name = "output-clip-sweep"
    demo.ACTIVATIONS[name] = make_activation
    try:
        row = demo.run(name, demo.load_digits(seed), epochs, seed, None)
    finally:
        del demo.ACTIVATIONS[name]
    return row["test_accuracy"]


def diabetes_run(make_activation, seed, epochs=400):
    """Mean test MSE of `examples/diabetes_deu.py`'s cross-validation.

    Args:
        make_activation: a callable returning a fresh activation layer.
        seed: the seed of the folds and of the weights.
        epochs: the most epochs per fold (early stopping ends sooner).

    Returns:
        The mean of the three folds' test MSEs (standardised units).
    """
    import diabetes_deu
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return float(np.mean(diabetes_deu.cross_validate(
        make_activation, x, y, epochs, seed=seed)))


def _cell(value):
    if isinstance(value, tuple):
        return " / ".join(f"{v:.3g}" for v in value)
    return f"{value:.4g}"


def main(argv=None):
    """Runs one task over its clips and seeds and prints the table.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).

    Returns:
        A dict from the row label to the list of per-seed results.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(CLIPS))
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--clips", type=float, nargs="+")
    parser.add_argument("--epochs", type=int,
                        help="default: toy 10, digits 15, diabetes 400")
    parser.add_argument("--examples", type=int, default=2048,
                        help="toy: training (and test) examples")
    parser.add_argument("--scale", type=float, default=2.0,
                        help="toy: standard deviation of the inputs")
    parser.add_argument("--learning-rate", type=float, default=1e-2,
                        help="toy: Adam's learning rate")
    args = parser.parse_args(argv)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    seeds = args.seeds or SEEDS[args.task]
    clips = args.clips or CLIPS[args.task]
    epochs = {"toy": 10, "digits": 15, "diabetes": 400}[args.task]
    epochs = args.epochs or epochs
    if args.task == "toy":
        def measure(make, seed):
            losses, test_mse = toy_run(make, seed, args.examples,
                                       args.scale, epochs,
                                       args.learning_rate)
            return losses[-1], test_mse
        what = "training loss / test MSE"
    elif args.task == "digits":
        def measure(make, seed):
            return digits_run(make, seed, epochs)
        what = "test accuracy"
    else:
        def measure(make, seed):
            return diabetes_run(make, seed, epochs)
        what = "mean test MSE of 3 folds"
    variants = {"ReLU": relu}
    variants.update({f"DEU, output_clip={c:g}": deu_with_clip(c)
                     for c in clips})
    print(f"{args.task} ({what}), {epochs} epochs, "
          f"backend {keras.backend.backend()}")
    print("| activation | " + " | ".join(f"seed {s}" for s in seeds)
          + " | seconds |")
    print("|---" * (len(seeds) + 2) + "|")
    results = {}
    for label, make in variants.items():
        start = time.perf_counter()
        results[label] = [measure(make, seed) for seed in seeds]
        seconds = time.perf_counter() - start
        print(f"| {label} | "
              + " | ".join(_cell(v) for v in results[label])
              + f" | {seconds:.0f} |", flush=True)
    return results


if __name__ == "__main__":
    main()
