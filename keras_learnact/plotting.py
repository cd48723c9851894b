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
# Channels drawn per panel by default: those whose shape changed most.
DEFAULT_MAX_CHANNELS = 4
# Line styles that tell the channels of an evolution panel apart (the
# colour there is the epoch).
LINE_STYLES = ("-", "--", ":", "-.")

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
        import matplotlib.ticker  # noqa: F401
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


def _select_channels(snaps, layer, channels, max_channels=None,
                     xlim=None):
    """Positions (into the recorded channels) and channel ids to draw.

    `channels=None` draws every recorded channel, or with `max_channels`
    the `max_channels` whose shape changed most over the epochs (on the
    x-range `xlim`; a channel with a non-finite curve counts as changed
    most), in channel order."""
    recorded = snaps.channels(layer)
    if channels is None or snaps.total_channels(layer) == 1:
        positions = np.arange(recorded.size)
        if max_channels is not None and recorded.size > max_channels:
            change = _change(snaps.curves(layer), snaps.grid, xlim)
            positions = np.sort(np.argsort(-change, kind="stable")[
                :max_channels])
        return positions, recorded[positions]
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


def _change(curves, grid, xlim):
    """How much each channel's curve moved from the first epoch: the
    largest root-mean-square difference on the x-range (inf for a curve
    with a non-finite value)."""
    inside = _inside(grid, xlim)
    values = curves[:, :, inside].astype("float64")
    change = np.sqrt(np.mean(np.square(values - values[:1]), axis=2))
    change = np.max(change, axis=0)
    finite = np.all(np.isfinite(curves), axis=(0, 2))
    return np.where(finite, np.nan_to_num(change), np.inf)


def _inside(grid, xlim):
    """The grid points within `xlim`, with one more on each side (so a
    line reaches the panel's edges)."""
    if xlim is None:
        return np.ones(grid.size, bool)
    index = np.flatnonzero((grid >= xlim[0]) & (grid <= xlim[1]))
    if index.size == 0:
        index = np.array([int(np.clip(np.searchsorted(grid, xlim[0]), 0,
                                      grid.size - 1))])
    inside = np.zeros(grid.size, bool)
    inside[max(index[0] - 1, 0):index[-1] + 2] = True
    return inside


def _check_limits(name, value):
    """A `(low, high)` pair of finite numbers with low < high, or None."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
        ok = np.isfinite(low) and np.isfinite(high) and low < high and not (
            any(isinstance(v, (bool, str)) for v in value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"Invalid {name}={value!r}: expected None, (low, high) with "
            "low < high" + (", or 'grid'." if name == "xlim" else ".")
        )
    return low, high


def _input_span(snaps, layer, positions):
    """The range the inputs of these channels covered over all epochs:
    from the recorded input ranges, else the histograms; None without."""
    ranges = snaps.input_ranges(layer)
    if ranges is not None:
        values = ranges[:, positions].astype("float64")
        low, high = values[..., 0], values[..., 1]
        if np.any(np.isfinite(low)) and np.any(np.isfinite(high)):
            return float(np.nanmin(low)), float(np.nanmax(high))
    histograms = snaps.histograms(layer)
    if histograms is not None:
        edges, counts, outside = histograms
        nonzero = np.flatnonzero(counts.sum(axis=0))
        if nonzero.size:
            low = (snaps.grid[0] if outside[:, 0].sum()
                   else edges[nonzero[0]])
            high = (snaps.grid[-1] if outside[:, 1].sum()
                    else edges[nonzero[-1] + 1])
            return float(low), float(high)
    return None


def _x_limits(snaps, layer, positions, xlim):
    """The panel's x-range: `xlim` as given, the whole grid for
    `"grid"`, else the range the inputs covered, padded by 5 % (at
    least two grid steps) and cut to the grid."""
    grid = snaps.grid.astype("float64")
    if isinstance(xlim, str) and xlim == "grid":
        return float(grid[0]), float(grid[-1])
    xlim = _check_limits("xlim", xlim)
    if xlim is not None:
        return xlim
    span = _input_span(snaps, layer, positions)
    if span is None:
        return float(grid[0]), float(grid[-1])
    step = float(np.max(np.diff(grid)))
    pad = max(0.05 * (span[1] - span[0]), 2 * step)
    return (max(span[0] - pad, float(grid[0])),
            min(span[1] + pad, float(grid[-1])))


def _nan_note(snaps, ids, curves):
    """'channel 3: NaN from epoch 4' notes for non-finite curves."""
    notes = []
    for c, channel in enumerate(ids):
        bad = ~np.all(np.isfinite(curves[:, c]), axis=1)
        if np.any(bad):
            first = int(snaps.epochs[np.flatnonzero(bad)[0]])
            notes.append(f"channel {channel}: NaN from epoch {first}")
    return notes


def _x_label(notes):
    return "\n".join(["input"] + notes[:3] + (
        [f"... and {len(notes) - 3} more"] if len(notes) > 3 else []))


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


def _y_limits(curves, grid=None, xlim=None, ylim=None):
    """`ylim` as given, else the span of the finite curve values on the
    x-range, padded by 5 %."""
    ylim = _check_limits("ylim", ylim)
    if ylim is not None:
        return ylim
    if grid is not None:
        grid = np.asarray(grid, "float64")
        inside = (grid >= xlim[0]) & (grid <= xlim[1]) if (
            xlim is not None) else np.ones(grid.size, bool)
        if np.any(inside):
            curves = curves[..., inside]
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
    return (f"grey: inputs at epoch {epoch}, {100 * share:.1f}% off "
            "the grid")


def _channel_legend(axis, ids, curves, total, styles=True):
    """A legend naming the drawn channels of a multi-channel layer (by line
    style where the colour is the epoch), '(NaN)' after a channel with a
    non-finite curve."""
    from matplotlib.lines import Line2D

    if total <= 1 and np.all(np.isfinite(curves)):
        return
    handles = []
    for c, channel in enumerate(ids):
        label = f"channel {channel}"
        if not np.all(np.isfinite(curves[:, c])):
            label += " (NaN)"
        style = LINE_STYLES[c % len(LINE_STYLES)] if styles else "-"
        handles.append(Line2D([], [], color="0.2", ls=style, label=label))
    axis.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)


def _no_curve(axis, curves):
    """Says so in an empty panel when no curve has a finite value."""
    if not np.any(np.isfinite(curves)):
        axis.text(0.5, 0.5, "no finite value: every curve is NaN or inf",
                  transform=axis.transAxes, ha="center", va="center",
                  fontsize=8, color="tab:red")


def plot_evolution(snapshots, layers=None, channels=None, histogram=True,
                   cmap="viridis", max_columns=3,
                   max_channels=DEFAULT_MAX_CHANNELS, xlim=None, ylim=None):
    """One panel per layer: its curve at every snapshot, coloured by epoch.

    Each panel shows the range of inputs the layer's units really received
    (from the recorded input ranges or histograms; the whole grid when
    none were recorded), and the y-range the curves take there, so a
    curve that explodes far off the data does not flatten the rest.
    Channels are told apart by line style and named in the legend; a
    channel with NaN is marked there and in a note under the panel (notes
    never sit on the curves).

    Args:
        snapshots: a `Snapshots` object or the path of a snapshot file.
        layers: layer names to plot (default: all, in recording order).
        channels: for channel-granularity layers, None (the
            `max_channels` recorded channels whose shape changed most), an
            int k (the first k recorded channels) or a list of channel
            indices.
        histogram: draw the input histogram of the last snapshot behind the
            curves, where one was recorded.
        cmap: the matplotlib colour map for the epochs.
        max_columns: panels per row.
        max_channels: with `channels=None`, at most this many channels per
            panel (default 4; None: every recorded channel).
        xlim: the x-range of every panel: None (the inputs' range),
            `"grid"` (the whole grid) or `(low, high)`.
        ylim: the y-range of every panel: None (what the curves do on the
            x-range) or `(low, high)`.

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
    _check_limits("ylim", ylim)
    if not (isinstance(xlim, str) and xlim == "grid"):
        _check_limits("xlim", xlim)
    matplotlib = _matplotlib()
    figure = _new_figure(
        (4.2 * min(len(names), max_columns) + 1.2,
         3.6 * -(-len(names) // max_columns))
    )
    epochs = snaps.epochs
    norm = matplotlib.colors.Normalize(
        vmin=epochs[0], vmax=max(epochs[-1], epochs[0] + 1))
    colours = matplotlib.colormaps[cmap]
    axes = _panel_grid(figure, len(names), max_columns)
    for axis, name in zip(axes, names, strict=True):
        span = _x_limits(snaps, name, np.arange(
            snaps.channels(name).size), xlim)
        positions, ids = _select_channels(snaps, name, channels,
                                          max_channels, span)
        span = _x_limits(snaps, name, positions, xlim)
        curves = snaps.curves(name)[:, positions]
        notes = []
        if histogram and snaps.histograms(name) is not None:
            _histogram_axis(axis, snaps, name, -1)
            notes.append(_outside_note(snaps, name, -1))
        notes += _nan_note(snaps, ids, curves)
        alpha = 0.9 if len(positions) == 1 else 0.6
        for k, epoch in enumerate(epochs):
            for c in range(len(positions)):
                axis.plot(snaps.grid, curves[k, c], color=colours(norm(epoch)),
                          lw=1.2, alpha=alpha,
                          ls=LINE_STYLES[c % len(LINE_STYLES)])
        _channel_legend(axis, ids, curves, snaps.total_channels(name))
        _no_curve(axis, curves)
        axis.set_label(f"layer:{name}")
        axis.set_title(_title(snaps, name, ids), fontsize=9)
        axis.set_xlim(*span)
        axis.set_ylim(*_y_limits(curves, snaps.grid, span, ylim))
        axis.set_xlabel(_x_label(notes), fontsize=8)
        axis.set_ylabel("output")
        axis.grid(alpha=0.3)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=colours)
    colour_bar = figure.colorbar(mappable, ax=axes, label="epoch")
    colour_bar.ax.set_label("colorbar")
    colour_bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    colour_bar.update_ticks()
    return figure


def plot_final(snapshots, layers=None, channels=None, show_initial=True,
               max_channels=DEFAULT_MAX_CHANNELS, xlim=None, ylim=None):
    """The last recorded shape of every layer, side by side.

    Ranges and channels are chosen as in `plot_evolution`; each channel
    has its colour, named in the legend (with the first snapshot dashed).

    Args:
        snapshots: a `Snapshots` object or the path of a snapshot file.
        layers: layer names to plot (default: all).
        channels: None, an int k or a list of channel indices, as in
            `plot_evolution`.
        show_initial: also draw the first snapshot, dashed, for reference.
        max_channels: with `channels=None`, at most this many channels per
            panel, those whose shape changed most (default 4; None: all).
        xlim: None (the inputs' range), `"grid"` or `(low, high)`, as in
            `plot_evolution`.
        ylim: None (what the curves do there) or `(low, high)`.

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
    _check_limits("ylim", ylim)
    if not (isinstance(xlim, str) and xlim == "grid"):
        _check_limits("xlim", xlim)
    _matplotlib()
    from matplotlib.lines import Line2D

    figure = _new_figure((3.6 * len(names), 3.6))
    axes = _panel_grid(figure, len(names), len(names))
    last, first = int(snaps.epochs[-1]), int(snaps.epochs[0])
    initial = show_initial and len(snaps.epochs) > 1
    for axis, name in zip(axes, names, strict=True):
        span = _x_limits(snaps, name, np.arange(
            snaps.channels(name).size), xlim)
        positions, ids = _select_channels(snaps, name, channels,
                                          max_channels, span)
        span = _x_limits(snaps, name, positions, xlim)
        curves = snaps.curves(name)[:, positions]
        for c, channel in enumerate(ids):
            label = f"channel {channel}" if snaps.total_channels(
                name) > 1 else f"epoch {last}"
            if not np.all(np.isfinite(curves[:, c])):
                label += " (NaN)"
            line, = axis.plot(snaps.grid, curves[-1, c], lw=1.5,
                              label=label)
            if initial:
                axis.plot(snaps.grid, curves[0, c], lw=1.0, ls="--",
                          color=line.get_color(), alpha=0.5)
        handles, _ = axis.get_legend_handles_labels()
        if initial:
            handles.append(Line2D([], [], color="0.4", ls="--", lw=1.0,
                                  label=f"epoch {first}"))
        axis.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
        _no_curve(axis, curves)
        axis.set_label(f"layer:{name}")
        axis.set_title(f"{_title(snaps, name, ids)}\nepoch {last}",
                       fontsize=9)
        axis.set_xlim(*span)
        # The y-range follows the final shapes; the dashed start may leave
        # it (it is there for reference).
        axis.set_ylim(*_y_limits(curves[-1:], snaps.grid, span, ylim))
        axis.set_xlabel(_x_label(_nan_note(snaps, ids, curves)), fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("output")
    return figure


def animate_evolution(snapshots, path, fps=4, layers=None, channels=None,
                      histogram=True, dpi=80, max_columns=3,
                      max_channels=DEFAULT_MAX_CHANNELS, xlim=None,
                      ylim=None):
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
        max_channels: with `channels=None`, at most this many channels per
            panel, those whose shape changed most (default 4; None: all).
        xlim: None (the inputs' range), `"grid"` or `(low, high)`, as in
            `plot_evolution`.
        ylim: None (what the curves do there) or `(low, high)`.

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
    _check_limits("ylim", ylim)
    if not (isinstance(xlim, str) and xlim == "grid"):
        _check_limits("xlim", xlim)
    path = os.fspath(path)
    writer = _animation_writer(path, fps)

    figure = _new_figure(
        (4.2 * min(len(names), max_columns),
         3.4 * -(-len(names) // max_columns) + 0.3)
    )
    axes = _panel_grid(figure, len(names), max_columns)
    panels = []
    for axis, name in zip(axes, names, strict=True):
        span = _x_limits(snaps, name, np.arange(
            snaps.channels(name).size), xlim)
        positions, ids = _select_channels(snaps, name, channels,
                                          max_channels, span)
        span = _x_limits(snaps, name, positions, xlim)
        curves = snaps.curves(name)[:, positions]
        bars = None
        notes = _nan_note(snaps, ids, curves)
        if histogram and snaps.histograms(name) is not None:
            _, bars = _histogram_axis(axis, snaps, name, 0)
        current = [axis.plot(snaps.grid, curves[0, c], lw=1.6,
                             label=f"channel {channel}")[0]
                   for c, channel in enumerate(ids)]
        if len(ids) > 1:
            axis.legend(fontsize=7, loc="best", framealpha=0.8)
        axis.set_label(f"layer:{name}")
        axis.set_title(_title(snaps, name, ids), fontsize=9)
        axis.set_xlim(*span)
        axis.set_ylim(*_y_limits(curves, snaps.grid, span, ylim))
        axis.set_xlabel(_x_label(notes), fontsize=8)
        axis.grid(alpha=0.3)
        panels.append((axis, name, curves, current, bars, notes))
    heading = figure.suptitle("")

    with writer.saving(figure, path, dpi):
        for k, epoch in enumerate(snaps.epochs):
            heading.set_text(f"epoch {int(epoch)}")
            for axis, name, curves, current, bars, notes in panels:
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
                    axis.set_xlabel(_x_label(
                        [_outside_note(snaps, name, k)] + notes), fontsize=8)
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
