"""The `keras-learnact` command line: inspect and plot snapshot files.

Usage:

    keras-learnact info activations.npz
    keras-learnact plot activations.npz -o evolution.png \\
        [--gif evolution.gif] [--final final.png] [--layers abu abu_1] \\
        [--channels 4] [--no-histogram] [--fps 4]

Also runnable as `python -m keras_learnact ...`. Exit status 0 on success,
1 when a file cannot be read or written, 2 for bad arguments.
"""

import argparse
import sys

from keras_learnact import snapshots as snapshot_files


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-learnact",
        description="Inspect and plot keras-learnact activation snapshots.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser(
        "info", help="summarise a snapshot file (layers, channels, epochs)")
    info.add_argument("file", help="a snapshot file (.npz)")
    plot = commands.add_parser(
        "plot", help="plot the evolution of the activation shapes")
    plot.add_argument("file", help="a snapshot file (.npz)")
    plot.add_argument("-o", "--output", required=True,
                      help="the evolution figure to write (.png, .pdf, .svg)")
    plot.add_argument("--gif", help="also write an animation (.gif or .mp4)")
    plot.add_argument("--final", help="also write the final shapes figure")
    plot.add_argument("--layers", nargs="+", help="layer names (default all)")
    plot.add_argument("--channels", type=int,
                      help="plot at most this many channels per layer")
    plot.add_argument("--no-histogram", action="store_true",
                      help="leave out the input histograms")
    plot.add_argument("--fps", type=float, default=4.0,
                      help="animation frames per second (default 4)")
    plot.add_argument("--dpi", type=int, default=120,
                      help="resolution of the figures (default 120)")
    return parser


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
    return "\n".join(lines)


def _plot(args, snaps):
    from keras_learnact import plotting

    figure = plotting.plot_evolution(
        snaps, layers=args.layers, channels=args.channels,
        histogram=not args.no_histogram)
    figure.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    if args.final:
        plotting.plot_final(snaps, layers=args.layers,
                            channels=args.channels).savefig(
            args.final, dpi=args.dpi)
        print(f"wrote {args.final}")
    if args.gif:
        plotting.animate_evolution(
            snaps, args.gif, fps=args.fps, layers=args.layers,
            channels=args.channels, histogram=not args.no_histogram)
        print(f"wrote {args.gif}")


def main(argv=None):
    """Runs the command line.

    Args:
        argv: the arguments without the program name (default:
            `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 for an unreadable file or a failed
        plot.

    Examples:

    >>> main(["info", "activations.npz"])  # doctest: +SKIP
    0
    """
    args = _parser().parse_args(argv)
    try:
        snaps = snapshot_files.load(args.file)
        if args.command == "info":
            print(format_info(snaps))
        else:
            _plot(args, snaps)
    except (OSError, ValueError, ImportError, RuntimeError) as error:
        print(f"keras-learnact: error: {error}", file=sys.stderr)
        return 1
    return 0
