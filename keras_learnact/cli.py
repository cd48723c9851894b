"""The `keras-learnact` command line: inspect and plot snapshot files.

Usage:

    keras-learnact info activations.npz
    keras-learnact explain activations.npz [--layer abu] [--epoch 5] [--json]
    keras-learnact plot activations.npz -o evolution.png \\
        [--gif evolution.gif] [--final final.png] [--layers abu abu_1] \\
        [--channels 4] [--max-channels 4] [--xlim -2 2] [--ylim -1 3] \\
        [--no-histogram] [--fps 4] [--dpi 120]
    keras-learnact --version

Also runnable as `python -m keras_learnact ...`. Exit status 0 on success,
1 when a file cannot be read or written, 2 for bad arguments (every
argument is checked before anything is written). Reading a snapshot file
imports NumPy only, never Keras or a deep-learning backend.
"""

import argparse
import json
import math
import os
import sys

import keras_learnact
from keras_learnact import snapshots as snapshot_files


def _positive(convert, kind):
    """An argparse type: `convert`ed, finite and > 0."""
    def check(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}: expected {kind} > 0")
        return value
    return check


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-learnact",
        description="Inspect, explain and plot keras-learnact activation "
        "snapshots: 'info' summarises a file and lists its health findings, "
        "'explain' tells what each unit learned, 'plot' draws the shapes.",
    )
    parser.add_argument(
        "--version", action="version",
        version=f"%(prog)s {keras_learnact.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser(
        "info", help="summarise a snapshot file (layers, channels, epochs) "
        "and list its health findings")
    info.add_argument("file", help="a snapshot file (.npz)")
    info.set_defaults(command_parser=info)
    explain = commands.add_parser(
        "explain",
        help="per unit, the closest named activation a*f(b*x+c)+d over the "
        "inputs it received (R^2, largest error) and the family's exact form",
        description="For every recorded unit: the closest function "
        "a * f(b * x + c) + d, f among relu, leaky_relu, elu, gelu, swish, "
        "tanh, sigmoid, softplus, identity, abs, square and sin, fitted "
        "over the unit's recorded input range and weighted by the input "
        "histogram (the grid, uniformly, without a probe), with its R^2 "
        "and largest error; and the family's exact description (ABU blend, "
        "alpha * g, PWLU knots, SLAF polynomial, DEU ODE and case).")
    explain.set_defaults(command_parser=explain)
    explain.add_argument("file", help="a snapshot file (.npz)")
    explain.add_argument("--layer", nargs="+", dest="layers",
                         help="layer names (default all)")
    explain.add_argument("--epoch", type=int, default=-1,
                         help="the recorded epoch to explain (default: the "
                         "last; negative numbers count from the end)")
    explain.add_argument("--json", action="store_true",
                         help="print the rows as JSON instead of a table")
    plot = commands.add_parser(
        "plot", help="plot the evolution of the activation shapes",
        description="Plot each layer's shapes over the epochs (and their "
        "final shapes, and an animation). Each panel spans the range its "
        "inputs covered and the y-range the curves take there (--xlim, "
        "--ylim for others), with the --max-channels channels whose shape "
        "changed most.")
    plot.set_defaults(command_parser=plot)
    plot.add_argument("file", help="a snapshot file (.npz)")
    plot.add_argument("-o", "--output", required=True,
                      help="the evolution figure to write (.png, .pdf, .svg)")
    plot.add_argument("--gif", help="also write an animation (.gif or .mp4)")
    plot.add_argument("--final", help="also write the final shapes figure")
    plot.add_argument("--layers", nargs="+", help="layer names (default all)")
    plot.add_argument("--channels", type=_positive(int, "an integer"),
                      help="plot the first N recorded channels of each layer")
    plot.add_argument("--max-channels", type=_positive(int, "an integer"),
                      default=4,
                      help="without --channels, plot the N channels whose "
                      "shape changed most (default 4)")
    plot.add_argument("--xlim", nargs="+", metavar="X",
                      help="x-range: LOW HIGH, or 'grid' for the whole grid "
                      "(default: the range the inputs covered)")
    plot.add_argument("--ylim", nargs=2, type=float, metavar=("LOW", "HIGH"),
                      help="y-range (default: what the curves do on the "
                      "x-range)")
    plot.add_argument("--no-histogram", action="store_true",
                      help="leave out the input histograms")
    plot.add_argument("--fps", type=_positive(float, "a number"),
                      default=4.0,
                      help="animation frames per second (default 4)")
    plot.add_argument("--dpi", type=_positive(int, "an integer"),
                      default=120,
                      help="resolution of the figures (default 120)")
    return parser


def _check_plot(args):
    """Checks the output paths of `plot` before anything is drawn: exits 2
    (argparse's usage message) for a format that cannot be written, and
    raises `FileNotFoundError` (exit 1) for a missing output folder."""
    from keras_learnact import plotting

    if args.xlim is not None:
        try:
            if args.xlim == ["grid"]:
                args.xlim = "grid"
            elif len(args.xlim) == 2:
                args.xlim = plotting._check_limits(
                    "xlim", [float(v) for v in args.xlim])
            else:
                raise ValueError("expected LOW HIGH or 'grid'")
        except ValueError as error:
            args.command_parser.error(f"argument --xlim: {error}")
    if args.ylim is not None:
        try:
            plotting._check_limits("ylim", args.ylim)
        except ValueError as error:
            args.command_parser.error(f"argument --ylim: {error}")
    outputs = [("-o/--output", args.output), ("--final", args.final),
               ("--gif", args.gif)]
    for option, path in outputs:
        if path is None:
            continue
        try:
            if option == "--gif":
                plotting._animation_writer(path, args.fps)
            else:
                plotting._check_figure_format(path)
        except (ValueError, RuntimeError) as error:
            args.command_parser.error(f"argument {option}: {error}")
    for option, path in outputs:
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(
                f"cannot write '{path}' ({option}): the folder '{folder}' "
                "does not exist")


def format_info(snaps):
    """A plain-text summary table of snapshots.

    Args:
        snaps: a `keras_learnact.snapshots.Snapshots` object.

    Returns:
        The summary as a string.

    Examples:

    >>> import keras_learnact.snapshots as ks
    >>> print(format_info(ks.load("activations.npz")))  # doctest: +SKIP
    """
    info = snaps.info
    epochs = snaps.epochs.tolist()
    lines = [
        f"file: {snaps.path}",
        f"format version {snaps.format_version}; recorded with "
        f"keras-learnact {info.get('package_version')}, Keras "
        f"{info.get('keras_version')}, backend {info.get('backend')}",
        f"grid: {snaps.grid.size} points on [{snaps.grid[0]:g}, "
        f"{snaps.grid[-1]:g}]",
        f"epochs: {len(epochs)} snapshots: "
        + ", ".join(map(str, epochs)),
        "",
    ]
    header = ("layer", "class", "channels", "parameters", "histogram")
    rows = []
    for name in snaps.layers:
        params = snaps.params(name)
        shapes = ", ".join(
            f"{p}{tuple(v.shape[1:]) if v.ndim > 1 else ''}"
            for p, v in params.items())
        recorded = snaps.channels(name).size
        total = snaps.total_channels(name)
        channels = str(total) if recorded == total else f"{recorded}/{total}"
        rows.append((name, snaps.layer_class(name), channels,
                     shapes or "-",
                     "yes" if snaps.histograms(name) is not None else "no"))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        lines.append("  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip())
    lines.append("")
    findings = snaps.findings
    if findings:
        from keras_learnact import health

        lines.append(f"health findings ({len(findings)}):")
        lines += ["- " + line for line in health.summarize(findings)]
    else:
        lines.append("health findings: none recorded")
    return "\n".join(lines)


def _plot(args, snaps):
    from keras_learnact import plotting

    ranges = {"max_channels": args.max_channels, "xlim": args.xlim,
              "ylim": args.ylim}
    figure = plotting.plot_evolution(
        snaps, layers=args.layers, channels=args.channels,
        histogram=not args.no_histogram, **ranges)
    figure.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    if args.final:
        plotting.plot_final(snaps, layers=args.layers,
                            channels=args.channels, **ranges).savefig(
            args.final, dpi=args.dpi)
        print(f"wrote {args.final}")
    if args.gif:
        plotting.animate_evolution(
            snaps, args.gif, fps=args.fps, layers=args.layers,
            channels=args.channels, histogram=not args.no_histogram,
            **ranges)
        print(f"wrote {args.gif}")


def main(argv=None):
    """Runs the command line.

    Args:
        argv: the arguments without the program name (default:
            `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 for an unreadable file or a failed
        plot. Bad arguments exit with status 2 (`SystemExit`) before
        anything is read or written, as argparse does.

    Examples:

    >>> main(["info", "activations.npz"])  # doctest: +SKIP
    0
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "plot":
            _check_plot(args)
        snaps = snapshot_files.load(args.file)
        if args.command == "info":
            print(format_info(snaps))
        elif args.command == "explain":
            from keras_learnact.explain import explain

            rows = explain(snaps, layers=args.layers,
                                   epoch=args.epoch)
            print(json.dumps(rows.to_dicts(), indent=1) if args.json
                  else str(rows))
        else:
            _plot(args, snaps)
    except (OSError, ValueError, ImportError, RuntimeError) as error:
        print(f"keras-learnact: error: {error}", file=sys.stderr)
        return 1
    return 0
