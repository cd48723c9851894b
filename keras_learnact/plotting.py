"""Plots and animations of recorded activation shapes.

Everything here works from snapshot data (a `keras_learnact.snapshots`
`Snapshots` object or the path of a snapshot file), never from a live model.
matplotlib is an optional dependency, imported only when a function runs
(`pip install keras-learnact[plot]`). Figures are plain
`matplotlib.figure.Figure` objects drawn with the Agg canvas, so plotting
works headless and leaves pyplot's global state alone: save them with
`figure.savefig(...)` (in a notebook they display inline).
"""

import os

import numpy as np

from keras_learnact import snapshots as snapshot_files

INSTALL_HINT = "pip install keras-learnact[plot]"

__all__ = [
    "animate_evolution",
    "figure_to_array",
    "plot_evolution",
    "plot_final",
]


def _matplotlib():
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "keras_learnact.plotting needs matplotlib, which is not "
            f"installed. Install it with: {INSTALL_HINT}"
        ) from error
    return matplotlib


def _new_figure(figsize):
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = matplotlib.figure.Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _as_snapshots(snapshots):
    if isinstance(snapshots, snapshot_files.Snapshots):
        return snapshots
    if isinstance(snapshots, (str, os.PathLike)):
        return snapshot_files.load(snapshots)
    raise TypeError(
        "Expected a keras_learnact.snapshots.Snapshots object or the path "
        f"of a snapshot file; got {type(snapshots).__name__}."
    )


def _select_layers(snaps, layers):
    if layers is None:
        return snaps.layers
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    unknown = [name for name in layers if name not in snaps.layers]
    if unknown or not layers:
        raise ValueError(
            f"Unknown layers {unknown or layers!r}; the snapshots hold: "
            f"{', '.join(snaps.layers)}."
        )
    return layers


def _select_channels(snaps, layer, channels):
    """Positions (into the recorded channels) and channel ids to draw."""
    recorded = snaps.channels(layer)
    if channels is None or snaps.total_channels(layer) == 1:
        return np.arange(recorded.size), recorded
    if isinstance(channels, (int, np.integer)) and not isinstance(
            channels, bool):
        if channels < 1:
            raise ValueError(
                f"Invalid channels={channels!r}: expected a count >= 1, a "
                "list of channel indices or None."
            )
        positions = np.arange(min(int(channels), recorded.size))
        return positions, recorded[positions]
    wanted = [int(c) for c in channels]
    missing = [c for c in wanted if c not in recorded]
    if missing or not wanted:
        raise ValueError(
            f"Channels {missing or wanted} of layer '{layer}' were not "
            f"recorded; recorded channels: {recorded.tolist()}."
        )
    positions = np.array([int(np.flatnonzero(recorded == c)[0])
                          for c in wanted])
    return positions, recorded[positions]


def _panel_grid(figure, count, max_columns):
    columns = min(count, max_columns)
    rows = -(-count // columns)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for extra in axes[count:]:
        figure.delaxes(extra)
    return list(axes[:count])


def _title(snaps, layer, ids):
    title = f"{layer} ({snaps.layer_class(layer)})"
    total = snaps.total_channels(layer)
    if total > 1:
        shown = ids.tolist()
        if len(shown) > 6:
            shown = ", ".join(map(str, shown[:6])) + ", ..."
        else:
            shown = ", ".join(map(str, shown))
        title += f"\nchannels {shown} of {total}"
    return title


def _y_limits(curves):
    finite = curves[np.isfinite(curves)]
    if finite.size == 0:
        return -1.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low) or 0.5
    return low - pad, high + pad


def _histogram_axis(axis, snaps, layer, epoch_index):
    """Grey bars of the layer's input histogram behind `axis`'s curves."""
    edges, counts, outside = snaps.histograms(layer)
    twin = axis.twinx()
    twin.set_label(f"histogram:{layer}")
    bars = twin.bar(edges[:-1], counts[epoch_index], width=np.diff(edges),
                    align="edge", color="0.85", edgecolor="none")
    top = counts.max()
    twin.set_ylim(0, 1.15 * top if top > 0 else 1.0)
    twin.set_yticks([])
    axis.set_zorder(twin.get_zorder() + 1)
    axis.patch.set_visible(False)
    return twin, bars


def _outside_note(snaps, layer, epoch_index):
    edges, counts, outside = snaps.histograms(layer)
    total = counts[epoch_index].sum() + outside[epoch_index].sum()
    epoch = int(snaps.epochs[epoch_index])
    if total == 0:
        return f"epoch {epoch}: the probe never reached this layer"
    share = outside[epoch_index].sum() / total
    return (f"inputs at epoch {epoch} (grey), {100 * share:.1f}% off "
            "the grid")


def plot_evolution(snapshots, layers=None, channels=None, histogram=True,
                   cmap="viridis", max_columns=3):
    """One panel per layer: its curve at every snapshot, coloured by epoch.

    Args:
        snapshots: a `Snapshots` object or the path of a snapshot file.
        layers: layer names to plot (default: all, in recording order).
        channels: for channel-granularity layers, None (every recorded
            channel), an int k (the first k recorded channels) or a list
            of channel indices.
        histogram: draw the input histogram of the last snapshot behind the
            curves, where one was recorded.
        cmap: the matplotlib colour map for the epochs.
        max_columns: panels per row.

    Returns:
        A `matplotlib.figure.Figure`; panel axes are labelled
        `"layer:<name>"`.

    Examples:

    >>> from keras_learnact import plotting
    >>> fig = plotting.plot_evolution("activations.npz")  # doctest: +SKIP
    >>> fig.savefig("evolution.png")  # doctest: +SKIP
    """
    snaps = _as_snapshots(snapshots)
    names = _select_layers(snaps, layers)
    matplotlib = _matplotlib()
    figure = _new_figure(
        (4.2 * min(len(names), max_columns) + 1.2,
         3.4 * -(-len(names) // max_columns))
    )
    epochs = snaps.epochs
    norm = matplotlib.colors.Normalize(
        vmin=epochs[0], vmax=max(epochs[-1], epochs[0] + 1))
    colours = matplotlib.colormaps[cmap]
    axes = _panel_grid(figure, len(names), max_columns)
    for axis, name in zip(axes, names, strict=True):
        positions, ids = _select_channels(snaps, name, channels)
        curves = snaps.curves(name)[:, positions]
        if histogram and snaps.histograms(name) is not None:
            _histogram_axis(axis, snaps, name, -1)
            axis.text(0.02, 0.98, _outside_note(snaps, name, -1),
                      transform=axis.transAxes, va="top", fontsize=7,
                      color="0.4")
        alpha = 0.9 if len(positions) == 1 else 0.5
        for k, epoch in enumerate(epochs):
            for c in range(len(positions)):
                axis.plot(snaps.grid, curves[k, c], color=colours(norm(epoch)),
                          lw=1.2, alpha=alpha)
        axis.set_label(f"layer:{name}")
        axis.set_title(_title(snaps, name, ids), fontsize=9)
        axis.set_xlim(snaps.grid[0], snaps.grid[-1])
        axis.set_ylim(*_y_limits(curves))
        axis.set_xlabel("input")
        axis.set_ylabel("output")
        axis.grid(alpha=0.3)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=colours)
    colour_bar = figure.colorbar(mappable, ax=axes, label="epoch")
    colour_bar.ax.set_label("colorbar")
    return figure


def plot_final(snapshots, layers=None, channels=None, show_initial=True):
    """The last recorded shape of every layer, side by side.

    Args:
        snapshots: a `Snapshots` object or the path of a snapshot file.
        layers: layer names to plot (default: all).
        channels: None, an int k or a list of channel indices, as in
            `plot_evolution`.
        show_initial: also draw the first snapshot, dashed, for reference.

    Returns:
        A `matplotlib.figure.Figure` with one panel (labelled
        `"layer:<name>"`) per layer, in one row.

    Examples:

    >>> from keras_learnact import plotting
    >>> plotting.plot_final("activations.npz").savefig(
    ...     "final.png")  # doctest: +SKIP
    """
    snaps = _as_snapshots(snapshots)
    names = _select_layers(snaps, layers)
    figure = _new_figure((3.6 * len(names), 3.4))
    axes = _panel_grid(figure, len(names), len(names))
    last, first = int(snaps.epochs[-1]), int(snaps.epochs[0])
    for axis, name in zip(axes, names, strict=True):
        positions, ids = _select_channels(snaps, name, channels)
        curves = snaps.curves(name)[:, positions]
        for c, channel in enumerate(ids):
            line, = axis.plot(snaps.grid, curves[-1, c], lw=1.5,
                              label=f"channel {channel}")
            if show_initial and len(snaps.epochs) > 1:
                axis.plot(snaps.grid, curves[0, c], lw=1.0, ls="--",
                          color=line.get_color(), alpha=0.5)
        if 1 < len(ids) <= 8:
            axis.legend(fontsize=7)
        axis.set_label(f"layer:{name}")
        note = f", dashed: epoch {first}" if show_initial and (
            len(snaps.epochs) > 1) else ""
        axis.set_title(f"{_title(snaps, name, ids)}\nepoch {last}{note}",
                       fontsize=9)
        axis.set_xlim(snaps.grid[0], snaps.grid[-1])
        axis.set_xlabel("input")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("output")
    return figure


def animate_evolution(snapshots, path, fps=4, layers=None, channels=None,
                      histogram=True, dpi=80, max_columns=3):
    """Writes an animation with one frame per snapshot.

    Axes limits are fixed over the frames, so the motion is the curves'.
    Each frame draws the current curve in colour over the earlier ones in
    light grey and, where recorded, that epoch's input histogram.

    Args:
        snapshots: a `Snapshots` object or the path of a snapshot file.
        path: the output file: `.gif` (written with Pillow) or `.mp4`
            (needs ffmpeg on the PATH).
        fps: frames per second.
        layers: layer names to animate (default: all).
        channels: None, an int k or a list of channel indices, as in
            `plot_evolution`.
        histogram: draw the input histograms where recorded.
        dpi: resolution of the frames.
        max_columns: panels per row.

    Returns:
        `path`.

    Examples:

    >>> from keras_learnact import plotting
    >>> plotting.animate_evolution("activations.npz",
    ...                            "evolution.gif")  # doctest: +SKIP
    'evolution.gif'
    """
    snaps = _as_snapshots(snapshots)
    names = _select_layers(snaps, layers)
    path = os.fspath(path)
    writer = _animation_writer(path, fps)

    figure = _new_figure(
        (4.2 * min(len(names), max_columns),
         3.4 * -(-len(names) // max_columns) + 0.3)
    )
    axes = _panel_grid(figure, len(names), max_columns)
    panels = []
    for axis, name in zip(axes, names, strict=True):
        positions, ids = _select_channels(snaps, name, channels)
        curves = snaps.curves(name)[:, positions]
        bars = note = None
        if histogram and snaps.histograms(name) is not None:
            _, bars = _histogram_axis(axis, snaps, name, 0)
            note = axis.text(0.02, 0.98, "", transform=axis.transAxes,
                             va="top", fontsize=7, color="0.4")
        current = [axis.plot(snaps.grid, curves[0, c], lw=1.6)[0]
                   for c in range(len(positions))]
        axis.set_label(f"layer:{name}")
        axis.set_title(_title(snaps, name, ids), fontsize=9)
        axis.set_xlim(snaps.grid[0], snaps.grid[-1])
        axis.set_ylim(*_y_limits(curves))
        axis.set_xlabel("input")
        axis.grid(alpha=0.3)
        panels.append((axis, name, curves, current, bars, note))
    heading = figure.suptitle("")

    with writer.saving(figure, path, dpi):
        for k, epoch in enumerate(snaps.epochs):
            heading.set_text(f"epoch {int(epoch)}")
            for axis, name, curves, current, bars, note in panels:
                if k > 0:
                    for c in range(curves.shape[1]):
                        axis.plot(snaps.grid, curves[k - 1, c], lw=0.8,
                                  color="0.75", zorder=1)
                for c, line in enumerate(current):
                    line.set_ydata(curves[k, c])
                    line.set_zorder(3)
                if bars is not None:
                    _, counts, _ = snaps.histograms(name)
                    for bar, height in zip(bars, counts[k], strict=True):
                        bar.set_height(height)
                    note.set_text(_outside_note(snaps, name, k))
            writer.grab_frame()
    return path


def _animation_writer(path, fps):
    """The matplotlib writer for an animation file, or a clear error: a
    `ValueError` for a bad `fps` or suffix, a `RuntimeError` for `.mp4`
    without ffmpeg, an `ImportError` without matplotlib or Pillow. Writes
    nothing (the command line uses it to check its arguments)."""
    if (not isinstance(fps, (int, float)) or isinstance(fps, bool)
            or not np.isfinite(fps) or fps <= 0):
        raise ValueError(f"Invalid fps={fps!r}: expected a number > 0.")
    _matplotlib()
    from matplotlib import animation

    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".gif":
        try:
            import PIL  # noqa: F401
        except ImportError as error:
            raise ImportError(
                f"Writing a GIF needs Pillow. Install it with: {INSTALL_HINT}"
            ) from error
        return animation.PillowWriter(fps=fps)
    if suffix == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            raise RuntimeError(
                f"Writing '{path}' needs ffmpeg, which was not found on the "
                "PATH. Install ffmpeg, or write a .gif instead."
            )
        return animation.FFMpegWriter(fps=fps)
    raise ValueError(
        f"Cannot animate to '{path}': the file must end in .gif or .mp4."
    )


def _check_figure_format(path):
    """Raises a `ValueError` unless matplotlib can save a figure to `path`
    (judged by its suffix; none means matplotlib's default, PNG)."""
    _matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = os.path.splitext(os.fspath(path))[1][1:].lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise ValueError(
            f"Cannot save a figure as '{path}': matplotlib writes "
            f"{', '.join('.' + f for f in sorted(formats))}."
        )


def figure_to_array(figure):
    """Renders a figure to an RGBA image array.

    Args:
        figure: a `matplotlib.figure.Figure`.

    Returns:
        A uint8 array of shape `(height, width, 4)`.

    Examples:

    >>> from keras_learnact import plotting
    >>> image = plotting.figure_to_array(
    ...     plotting.plot_final("activations.npz"))  # doctest: +SKIP
    """
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
