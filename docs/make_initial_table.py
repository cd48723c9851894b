"""Computes the fit-error table of docs/initial-functions.md.

    python docs/make_initial_table.py            # prints the Markdown tables
    python docs/make_initial_table.py --json     # the numbers, for tests

Builds every family's default configuration (and a few variants) with each
`initial_function` on the default range (-4, 4) and measures, against the
NumPy function, the maximum absolute error of the layer's output on 1601
evenly spaced points of (-4, 4) and its root mean square error weighted by
the standard normal density (the weighting the fit itself uses).
"""

import argparse
import json

import numpy as np

import keras_learnact as kla
from keras_learnact.layers import _initial

GRID = np.linspace(-4.0, 4.0, 1601)
WEIGHTS = _initial.normal_weights(GRID)
FUNCTIONS = tuple(_initial.FUNCTIONS)

# Row label -> (constructor, keyword arguments).
CONFIGURATIONS = {
    "ABU (default basis)": (kla.layers.ABU, {}),
    "ABU, softmax": (kla.layers.ABU, {"normalization": "softmax"}),
    "AdaptiveScaling relu": (kla.layers.AdaptiveScaling, {}),
    "AdaptiveScaling swish": (kla.layers.AdaptiveScaling,
                              {"activation": "swish"}),
    "DEU": (kla.layers.DEU, {}),
    "SLAF degree 4": (kla.layers.SLAF, {}),
    "SLAF degree 8": (kla.layers.SLAF, {"degree": 8}),
    "PWLU N=16": (kla.layers.PWLU, {}),
    "PWLU N=8": (kla.layers.PWLU, {"num_intervals": 8}),
}


def errors(cls, kwargs, name):
    """The maximum and weighted RMS errors of one layer on `GRID`.

    Args:
        cls: the layer class.
        kwargs: its constructor arguments, `initial_function` aside.
        name: the initial function's name.

    Returns:
        `(max_error, rms_error)`, floats.
    """
    layer = cls(initial_function=name, **kwargs)
    layer.build((None, 3))
    outputs = layer.curve(GRID).astype("float64")
    difference = outputs - _initial.function(name)(GRID)
    rms = np.sqrt(np.max(np.sum(WEIGHTS * np.square(difference), axis=-1)))
    return float(np.max(np.abs(difference))), float(rms)


def table():
    """Every configuration's errors for every function.

    Returns:
        A dict from the row label to a dict from the function's name to
        `(max_error, rms_error)`.
    """
    return {label: {name: errors(cls, kwargs, name) for name in FUNCTIONS}
            for label, (cls, kwargs) in CONFIGURATIONS.items()}


def markdown(results, index):
    """One Markdown table: entry `index` (0 max, 1 RMS) of each cell."""
    lines = ["| | " + " | ".join(f"`{n}`" for n in FUNCTIONS) + " |",
             "|---" * (len(FUNCTIONS) + 1) + "|"]
    for label, row in results.items():
        cells = []
        for name in FUNCTIONS:
            value = row[name][index]
            cells.append("exact" if value < 1e-5 else f"{value:.2g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true",
                        help="print the numbers as JSON")
    results = table()
    if parser.parse_args().json:
        print(json.dumps(results, indent=1))
        return
    print("Maximum absolute error on (-4, 4):\n")
    print(markdown(results, 0))
    print("\nRoot mean square error, weighted by the standard normal "
          "density:\n")
    print(markdown(results, 1))


if __name__ == "__main__":
    main()
