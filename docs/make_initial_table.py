"""Computes the fit-error table of docs/initial-functions.md.

    python docs/make_initial_table.py            # prints the Markdown tables
    python docs/make_initial_table.py --json     # the numbers, for tests
    python docs/make_initial_table.py --rational # docs/layers/rational.md's

Builds every family's default configuration (and a few variants) with each
`initial_function` on the range (-4, 4) (the default of every family but
`Rational`, which is fitted on it too here) and measures, against the
NumPy function, the maximum absolute error of the layer's output on 1601
evenly spaced points of (-4, 4) and its root mean square error weighted by
the standard normal density (the weighting the fit itself uses).

`--rational` does the same for `Rational`'s versions on its own default
range, (-3, 3), with 1201 points of it.
"""

import argparse
import json

import numpy as np

import keras_learnact as kla
from keras_learnact.layers import _initial

GRID = np.linspace(-4.0, 4.0, 1601)
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
    "Rational A 5/4": (kla.layers.Rational, {"initial_range": (-4.0, 4.0)}),
    "Rational B 5/4": (kla.layers.Rational,
                       {"version": "B", "initial_range": (-4.0, 4.0)}),
}

# `Rational` on its default range (-3, 3): row label -> arguments.
RATIONAL_GRID = np.linspace(-3.0, 3.0, 1201)
RATIONAL = {
    "A 5/4 (default)": {},
    "B 5/4 (and D)": {"version": "B"},
    "C 5/4": {"version": "C"},
    "A 3/2": {"numerator_degree": 3, "denominator_degree": 2},
    "A 7/6": {"numerator_degree": 7, "denominator_degree": 6},
}


def errors(cls, kwargs, name, grid=GRID):
    """The maximum and weighted RMS errors of one layer on a grid.

    Args:
        cls: the layer class.
        kwargs: its constructor arguments, `initial_function` aside.
        name: the initial function's name.
        grid: the points the errors are measured on (default `GRID`).

    Returns:
        `(max_error, rms_error)`, floats.
    """
    layer = cls(initial_function=name, **kwargs)
    layer.build((None, 3))
    outputs = layer.curve(grid).astype("float64")
    difference = outputs - _initial.function(name)(grid)
    weights = _initial.normal_weights(grid)
    rms = np.sqrt(np.max(np.sum(weights * np.square(difference), axis=-1)))
    return float(np.max(np.abs(difference))), float(rms)


def table(rational=False):
    """Every configuration's errors for every function.

    Args:
        rational: whether to measure `RATIONAL` on `RATIONAL_GRID` instead
            of `CONFIGURATIONS` on `GRID`.

    Returns:
        A dict from the row label to a dict from the function's name to
        `(max_error, rms_error)`.
    """
    if rational:
        return {label: {name: errors(kla.layers.Rational, kwargs, name,
                                     RATIONAL_GRID) for name in FUNCTIONS}
                for label, kwargs in RATIONAL.items()}
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
    parser.add_argument("--rational", action="store_true",
                        help="Rational's versions on its range (-3, 3)")
    args = parser.parse_args()
    results = table(args.rational)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    span = "(-3, 3)" if args.rational else "(-4, 4)"
    print(f"Maximum absolute error on {span}:\n")
    print(markdown(results, 0))
    print("\nRoot mean square error, weighted by the standard normal "
          "density:\n")
    print(markdown(results, 1))


if __name__ == "__main__":
    main()
