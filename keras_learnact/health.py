"""Health checks of learnable activations: what went wrong, where, and when.

`keras_learnact.callbacks.ActivationSnapshot` runs these checks on every
unit at every snapshot, warns once per problem (naming the layer, the
channels, the epoch and what to try), records what it found in the
snapshot file and can stop training on chosen kinds. The checks work on
snapshot data (a layer's curves on the grid, its parameters, its
configuration and, with a probe batch, the inputs and outputs of each
channel), so this module needs NumPy only; `check` runs them on a
snapshot file recorded without them.

The kinds of finding (thresholds in `DEFAULT_THRESHOLDS`):

* `nonfinite`: a curve, a parameter or a running statistic holds NaN or
  inf;
* `clipped`: more than `clip_share` of a DEU channel's outputs sit at
  its `output_clip`;
* `dead`: the curve's slope stays below `dead_slope` over all the inputs
  the channel received;
* `off_grid`: more than `off_grid_share` of a realigned PWLU channel's
  inputs fall outside its bounds `[BL, BR]`;
* `moments`: the running mean square of some power `x^i` of a SLAF
  channel grew more than `moment_growth`-fold since the first trained
  snapshot.
"""

import dataclasses

import numpy as np

KINDS = ("nonfinite", "clipped", "dead", "off_grid", "moments")
DEFAULT_THRESHOLDS = {
    # A unit is dead when |dy/dx| stays below this over its inputs.
    "dead_slope": 1e-3,
    # A DEU channel is pinned when more than this share of its outputs
    # sits at +-output_clip.
    "clip_share": 0.01,
    # A realigned PWLU channel is off its grid when more than this share
    # of its inputs falls outside [BL, BR] (3 sigma bounds leave ~0.3 %).
    "off_grid_share": 0.05,
    # SLAF moments have grown by orders of magnitude past this factor.
    "moment_growth": 100.0,
}
# The output counts as at the clip within this relative distance of it.
CLIP_TOLERANCE = 1e-5
# The range of a channel's inputs: these quantiles of what it received,
# read from at most RANGE_SAMPLES evenly spaced inputs per channel (a conv
# layer's probe holds hundreds of thousands; 20000 leave 100 in each tail).
RANGE_QUANTILES = (0.005, 0.995)
RANGE_SAMPLES = 20000

ADVICE = {
    "nonfinite": (
        "lower the learning rate and clip gradients (e.g. "
        "optimizer clipnorm=1.0); for SLAF keep normalization='batch' and "
        "add a coefficient_regularizer, for ABU prefer "
        "normalization='softmax' to 'normalized' (its sum can cross zero), "
        "and look for NaN in the data"),
    "clipped": (
        "the unit learned a fast-growing solution and its output sits at "
        "the clip, where no gradient passes: lower the learning rate, clip "
        "gradients, or restart the unit with fit_to(...)"),
    "dead": (
        "no gradient passes through a flat unit: lower the learning rate, "
        "normalise its inputs (BatchNormalization before it), or start it "
        "as a function with slope on both sides (initial_function="
        "'leaky_relu' or 'elu')"),
    "off_grid": (
        "the inputs moved away from the bounds set at realignment: "
        "realign later (PWLURealignment(warmup_epochs=...)), widen the "
        "bounds (bound_sigmas), or normalise the inputs "
        "(BatchNormalization before the PWLU)"),
    "moments": (
        "the statistics of SLAF's high powers are exploding: lower the "
        "degree or the learning rate, clip gradients, normalise its inputs "
        "(BatchNormalization before it), or call reset_statistics() and "
        "re-estimate them"),
}

__all__ = ["ADVICE", "DEFAULT_THRESHOLDS", "KINDS", "Finding", "check",
           "check_layer", "check_thresholds", "summarize"]


@dataclasses.dataclass
class Finding:
    """One problem of one layer at one snapshot.

    Args:
        (the attributes below, in order)

    Attributes:
        epoch: the snapshot's epoch.
        layer: the layer's name.
        kind: one of `KINDS`.
        channels: the channel indices concerned (empty: the whole layer).
        value: the measured number behind the finding (a share, a slope,
            a growth factor), or None.
        message: what was found and what to try, naming the layer, the
            channels and the epoch.

    Examples:

    >>> f = Finding(3, "deu", "clipped", [0, 2], 0.4, "...")
    >>> f.to_dict()["channels"]
    [0, 2]
    """

    epoch: int
    layer: str
    kind: str
    channels: list
    value: float
    message: str

    def to_dict(self):
        """The finding as a plain dict (as stored in snapshot files).

        Returns:
            A dict with the attributes as keys.

        Examples:

        >>> Finding(0, "abu", "dead", [], None, "m").to_dict()["kind"]
        'dead'
        """
        return {"epoch": int(self.epoch), "layer": self.layer,
                "kind": self.kind,
                "channels": [int(c) for c in self.channels],
                "value": None if self.value is None else float(self.value),
                "message": self.message}

    def __str__(self):
        return self.message


def check_thresholds(thresholds):
    """Validates health thresholds; returns the full set.

    Args:
        thresholds: None, or a dict overriding some of
            `DEFAULT_THRESHOLDS` (`dead_slope`, `clip_share`,
            `off_grid_share`, `moment_growth`).

    Returns:
        A dict with every threshold.

    Raises:
        ValueError: naming an unknown key or a bad value.

    Examples:

    >>> check_thresholds({"dead_slope": 1e-4})["dead_slope"]
    0.0001
    >>> check_thresholds({"clip_share": 2})
    Traceback (most recent call last):
    ...
    ValueError: Invalid health_thresholds['clip_share']=2: expected a ...
    """
    if thresholds is None:
        return dict(DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, dict):
        raise ValueError(
            f"Invalid health_thresholds={thresholds!r}: expected a dict "
            f"with some of the keys {', '.join(DEFAULT_THRESHOLDS)}.")
    result = dict(DEFAULT_THRESHOLDS)
    for key, value in thresholds.items():
        if key not in DEFAULT_THRESHOLDS:
            raise ValueError(
                f"Invalid health_thresholds key {key!r}; allowed: "
                f"{', '.join(DEFAULT_THRESHOLDS)}.")
        number = isinstance(value, (int, float, np.number)) and not (
            isinstance(value, bool)) and np.isfinite(value)
        if key in ("clip_share", "off_grid_share"):
            ok, allowed = number and 0 < value < 1, "a number in (0, 1)"
        elif key == "moment_growth":
            ok, allowed = number and value > 1, "a number > 1"
        else:
            ok, allowed = number and value > 0, "a number > 0"
        if not ok:
            raise ValueError(
                f"Invalid health_thresholds[{key!r}]={value!r}: expected "
                f"{allowed}.")
        result[key] = float(value)
    return result


def check_kinds(name, kinds):
    """Validates a collection of finding kinds; returns it as a tuple.

    Args:
        name: the argument's name, for the message.
        kinds: an iterable of names from `KINDS` (a single string is
            refused, as a likely mistake for a one-element tuple).

    Returns:
        A tuple of kinds.

    Examples:

    >>> check_kinds("stop_on", ["nonfinite"])
    ('nonfinite',)
    """
    if isinstance(kinds, str) or kinds is None:
        raise ValueError(
            f"Invalid {name}={kinds!r}: expected a tuple of kinds such as "
            f"('nonfinite',); allowed kinds: {', '.join(KINDS)}.")
    try:
        kinds = tuple(kinds)
    except TypeError:
        raise ValueError(
            f"Invalid {name}={kinds!r}: expected a tuple of kinds from "
            f"{', '.join(KINDS)}.") from None
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(
            f"Invalid {name}={kinds!r}: unknown kinds {unknown!r}; allowed: "
            f"{', '.join(KINDS)}.")
    return kinds


def _listing(channels, total):
    if total <= 1:
        return "the layer"
    shown = ", ".join(map(str, channels[:8]))
    if len(channels) > 8:
        shown += f", ... ({len(channels)} channels)"
    return f"channel{'s' if len(channels) > 1 else ''} {shown} of {total}"


def _message(layer, cls, epoch, kind, where, what):
    return (f"{layer} ({cls}), {where}, epoch {epoch}: {what}. "
            f"Try: {ADVICE[kind]}.")


def _per_channel(value, total, config):
    """`value` with one row per channel, or None for a layer-wide value."""
    per_channel = config.get("granularity") == "channel" if config else (
        total > 1)
    if per_channel and value.ndim >= 1 and value.shape[0] == total:
        return value.reshape(total, -1)
    return None


def _ranges(curves_count, grid, inputs, input_range):
    """The `(channels, 2)` input range of each channel: the recorded
    range, else the quantiles of its inputs, else the grid (NaN rows: no
    input). (The snapshot callback passes both, the range computed from
    those inputs: not computed twice.)"""
    if input_range is not None:
        return np.asarray(input_range, "float64")
    if inputs is not None:
        return channel_ranges(inputs)
    return np.tile([float(grid[0]), float(grid[-1])], (curves_count, 1))


def channel_ranges(inputs):
    """The `RANGE_QUANTILES` quantiles of each channel's finite inputs
    (of at most `RANGE_SAMPLES` evenly spaced ones).

    Args:
        inputs: an `(examples, channels)` array.

    Returns:
        A float32 `(channels, 2)` array, NaN for a channel without a
        finite input.

    Examples:

    >>> channel_ranges(np.arange(201.0)[:, None] - 100).tolist()
    [[-99.0, 99.0]]
    """
    values = np.asarray(inputs)
    if values.shape[0] > RANGE_SAMPLES:
        values = values[::-(-values.shape[0] // RANGE_SAMPLES)]
    finite = np.isfinite(values)
    if np.all(finite):
        if values.shape[0] == 0:
            return np.full((values.shape[1], 2), np.nan, "float32")
        return _quantiles(values, RANGE_QUANTILES)
    values = values.astype("float64")
    values = np.where(finite, values, np.nan)
    result = np.full((values.shape[1], 2), np.nan)
    empty = ~np.any(finite, axis=0)
    if not np.all(empty):
        result[~empty] = np.nanquantile(
            values[:, ~empty], RANGE_QUANTILES, axis=0).T
    return result.astype("float32")


def _quantiles(values, quantiles):
    """`np.quantile(values, quantiles, axis=0).T` as float32, for finite
    `(examples, channels)` values, selecting only the order statistics it
    needs from each channel's values laid out contiguously (NumPy's own
    partitions strided columns; a third of a snapshot's health checks).
    The same values: the same virtual indices, and the same interpolation,
    done by `np.quantile` between the two neighbours."""
    columns = np.ascontiguousarray(values.T)
    if not np.issubdtype(columns.dtype, np.floating):
        columns = columns.astype("float64")
    count = columns.shape[1]
    virtual = (count - 1) * np.asarray(quantiles, "float64")
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, count - 1)
    chosen = np.partition(columns, np.union1d(below, above), axis=1)
    return np.stack([
        np.quantile(np.stack([chosen[:, low], chosen[:, high]]).astype(
            "float64"), fraction, axis=0)
        for low, high, fraction in zip(below, above, virtual - below,
                                       strict=True)], axis=1).astype("float32")


def max_slope(grid, curve, low, high, points=33):
    """The largest `|dy/dx|` of a curve between `low` and `high`.

    Read from the curve on the grid (linearly interpolated on `points`
    points); a range narrower than the grid spacing is widened to one
    grid step around its middle, and a range beyond the grid is cut to it.

    Args:
        grid: the increasing 1-D grid.
        curve: the curve's values on it.
        low, high: the range.
        points: how many points the range is read at.

    Returns:
        A float (NaN where the curve is not finite there).

    Examples:

    >>> g = np.linspace(-4, 4, 81)
    >>> round(max_slope(g, np.maximum(g, 0), -3.0, -1.0), 6)
    0.0
    """
    grid = np.asarray(grid, "float64")
    step = float(np.min(np.diff(grid)))
    low, high = max(low, grid[0]), min(high, grid[-1])
    if not high - low >= step:
        middle = 0.5 * (low + high) if np.isfinite(low + high) else 0.0
        middle = min(max(middle, grid[0] + step / 2), grid[-1] - step / 2)
        low, high = middle - step / 2, middle + step / 2
    x = np.linspace(low, high, points)
    y = np.interp(x, grid, np.asarray(curve, "float64"))
    return float(np.max(np.abs(np.diff(y) / np.diff(x))))


def check_layer(layer, entry, epoch, grid, thresholds=None, inputs=None,
                outputs=None, reference=None):
    """Runs every check on one layer at one snapshot.

    Args:
        layer: the layer's name.
        entry: the layer's snapshot data, as given to
            `Snapshots.add`: `class`, `curves` (`(channels, points)`),
            `params`, optionally `channels` (the curves' channel indices,
            default all), `total_channels`, `config` and `input_range`
            (each channel's input range; without it, computed from
            `inputs`, else the grid).
        epoch: the epoch.
        grid: the grid the curves are on.
        thresholds: as for `check_thresholds` (default its defaults).
        inputs: optional `(examples, channels)` inputs of the same
            channels on the probe batch.
        outputs: optional outputs, shaped like `inputs`.
        reference: optional parameters (a dict) of an earlier snapshot,
            for the growth of SLAF's moments.

    Returns:
        A list of `Finding`s (empty when healthy).

    Examples:

    >>> g = np.linspace(-4, 4, 81)
    >>> entry = {"class": "ABU", "params": {},
    ...          "curves": np.stack([np.tanh(g), np.full(81, np.nan)])}
    >>> [f.kind for f in check_layer("abu", entry, 2, g)]
    ['nonfinite']
    """
    limits = check_thresholds(thresholds)
    cls = str(entry["class"])
    curves = np.asarray(entry["curves"], "float64")
    ids = np.asarray(entry.get("channels", np.arange(curves.shape[0])))
    total = int(entry.get("total_channels", curves.shape[0]))
    config = entry.get("config") or {}
    params = {k: np.asarray(v) for k, v in entry["params"].items()}
    findings = []

    def add(kind, positions, value, what, channel_ids=None):
        channel_ids = (ids[positions] if channel_ids is None
                       else np.asarray(channel_ids))
        channel_ids = sorted(int(c) for c in channel_ids)
        where = _listing(channel_ids, total)
        findings.append(Finding(
            int(epoch), layer, kind, channel_ids if total > 1 else [],
            value, _message(layer, cls, epoch, kind, where, what)))

    # Non-finite curves, parameters and running statistics.
    bad = ~np.all(np.isfinite(curves), axis=1)
    if np.any(bad):
        add("nonfinite", np.flatnonzero(bad), None,
            "the curve is NaN or infinite")
    for name, value in params.items():
        if not np.issubdtype(value.dtype, np.number) or np.all(
                np.isfinite(value)):
            continue
        what = ("running statistic" if name.startswith("moving_")
                else "parameter")
        rows = _per_channel(value, total, config)
        if rows is None:
            add("nonfinite", [], None, f"{what} '{name}' is NaN or "
                "infinite", channel_ids=[])
        else:
            channels = np.flatnonzero(~np.all(np.isfinite(rows), axis=1))
            add("nonfinite", [], None, f"{what} '{name}' is NaN or infinite",
                channel_ids=channels)

    finite = ~bad
    ranges = _ranges(curves.shape[0], grid, inputs, entry.get("input_range"))
    reached = finite & np.all(np.isfinite(ranges), axis=1)

    # Dead units: flat over every input they received.
    slopes = np.full(curves.shape[0], np.nan)
    for c in np.flatnonzero(reached):
        slopes[c] = max_slope(grid, curves[c], *ranges[c])
    dead = reached & (slopes < limits["dead_slope"])
    if np.any(dead):
        add("dead", np.flatnonzero(dead), float(np.nanmax(slopes[dead])),
            f"the slope stays below {limits['dead_slope']:g} over all its "
            "inputs (the output is flat there)")

    # DEU outputs pinned at the clip.
    if cls == "DEU" or "output_clip" in config:
        clip = float(config.get("output_clip", 10.0))
        at = clip * (1.0 - CLIP_TOLERANCE)
        if outputs is not None:
            values = np.asarray(outputs, "float64")
            share = np.mean(np.abs(values) >= at, axis=0)
        else:
            share = np.zeros(curves.shape[0])
            g = np.asarray(grid, "float64")
            for c in np.flatnonzero(reached):
                inside = (g >= ranges[c, 0]) & (g <= ranges[c, 1])
                if np.any(inside):
                    share[c] = np.mean(np.abs(curves[c, inside]) >= at)
        pinned = finite & (share > limits["clip_share"])
        if np.any(pinned):
            add("clipped", np.flatnonzero(pinned),
                float(np.max(share[pinned])),
                f"up to {100 * np.max(share[pinned]):.0f}% of the outputs "
                f"sit at the clip +-{clip:g} (output_clip)")

    # PWLU inputs beyond the realigned bounds.
    if (cls == "PWLU" and inputs is not None
            and float(np.max(params.get("realigned", 0.0))) >= 0.5
            and "left_bound" in params and "right_bound" in params):
        left = np.broadcast_to(
            params["left_bound"].reshape(-1)[ids] if params[
                "left_bound"].ndim else params["left_bound"], ids.shape)
        right = np.broadcast_to(
            params["right_bound"].reshape(-1)[ids] if params[
                "right_bound"].ndim else params["right_bound"], ids.shape)
        values = np.asarray(inputs, "float64")
        valid = np.isfinite(values)
        outside = valid & ((values < left) | (values > right))
        share = outside.sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
        off = share > limits["off_grid_share"]
        if np.any(off):
            add("off_grid", np.flatnonzero(off), float(np.max(share[off])),
                f"up to {100 * np.max(share[off]):.0f}% of the inputs fall "
                "outside its bounds [BL, BR], where it is only its tail "
                "lines")

    # SLAF moments growing by orders of magnitude.
    if (reference is not None and "moving_mean" in params
            and "moving_variance" in params
            and "moving_mean" in reference and "moving_variance" in reference):
        now = _mean_square(params)
        then = _mean_square(reference)
        if now.shape == then.shape:
            with np.errstate(divide="ignore", invalid="ignore"):
                growth = np.max(now / np.maximum(then, 1e-30), axis=-1)
            grown = np.isfinite(growth) & (growth > limits["moment_growth"])
            if np.any(grown):
                rows = np.flatnonzero(grown)
                add("moments", [], float(np.max(growth[grown])),
                    f"the running mean square of its powers x^i grew up to "
                    f"{np.max(growth[grown]):.3g}-fold since the first "
                    "trained snapshot", channel_ids=rows)
    return findings


def _mean_square(params):
    """Per statistics channel and power, `var + mean^2` of `x^i`."""
    mean = np.asarray(params["moving_mean"], "float64")
    variance = np.asarray(params["moving_variance"], "float64")
    return np.atleast_2d(variance + mean * mean)


def moment_reference(params, epoch):
    """Whether a SLAF's parameters can serve as the reference of moment
    growth: trained statistics (a `moving_count` above 0, or without one,
    after epoch 0).

    Args:
        params: the layer's parameters at a snapshot (a dict).
        epoch: that snapshot's epoch.

    Returns:
        A bool.

    Examples:

    >>> moment_reference({"moving_count": np.float32(0)}, 0)
    False
    """
    if "moving_mean" not in params:
        return False
    if "moving_count" in params:
        return float(np.asarray(params["moving_count"])) > 0
    return int(epoch) > 0


def check(snapshots, layers=None, thresholds=None):
    """Runs the checks that need no live model on recorded snapshots.

    For files recorded without health checks (or to check again with
    other thresholds). Without the live inputs, `off_grid` cannot be
    judged, and `clipped` and `dead` are read from the curves over each
    channel's recorded input range (the grid when none was recorded).

    Args:
        snapshots: a `keras_learnact.snapshots.Snapshots` object.
        layers: layer names to check (default all).
        thresholds: as for `check_thresholds`.

    Returns:
        A list of `Finding`s, by epoch.

    Examples:

    >>> import keras_learnact.snapshots as ks
    >>> g = np.linspace(-4, 4, 81)
    >>> s = ks.Snapshots(g)
    >>> s.add(0, {"act": {"class": "ABU", "curves": np.zeros((1, 81)),
    ...                    "params": {}}})
    >>> [(f.kind, f.epoch) for f in check(s)]
    [('dead', 0)]
    """
    names = snapshots.layers if layers is None else list(layers)
    found = []
    for name in names:
        curves = snapshots.curves(name)
        params = snapshots.params(name)
        ranges = snapshots.input_ranges(name)
        reference = None
        for k, epoch in enumerate(snapshots.epochs):
            now = {p: v[k] for p, v in params.items()}
            entry = {
                "class": snapshots.layer_class(name),
                "curves": curves[k], "params": now,
                "channels": snapshots.channels(name),
                "total_channels": snapshots.total_channels(name),
                "config": snapshots.config(name),
                "input_range": None if ranges is None else ranges[k],
            }
            found += check_layer(name, entry, int(epoch), snapshots.grid,
                                 thresholds, reference=reference)
            if reference is None and moment_reference(now, epoch):
                reference = now
    return sorted(found, key=lambda f: f.epoch)


def summarize(findings):
    """One line per layer and kind of finding, for listings.

    Args:
        findings: `Finding`s or their dicts.

    Returns:
        A list of lines: the first finding's message, then the later
        epochs the same kind was found at in that layer, and every channel
        it concerned over all of them.

    Examples:

    >>> f = [Finding(e, "a", "dead", [e], 0.0, f"a dead at {e}")
    ...      for e in (1, 2)]
    >>> summarize(f)
    ['a dead at 1 (again at epoch 2; channels 1, 2 in all)']
    """
    groups = {}
    for finding in findings:
        if not isinstance(finding, dict):
            finding = finding.to_dict()
        groups.setdefault((finding["layer"], finding["kind"]), []).append(
            finding)
    lines = []
    for group in groups.values():
        group = sorted(group, key=lambda f: f["epoch"])
        line = group[0]["message"]
        later = sorted({g["epoch"] for g in group} - {group[0]["epoch"]})
        channels = sorted({c for g in group for c in g["channels"]})
        if later:
            shown = ", ".join(map(str, later[:6])) + (
                f", ..., {later[-1]}" if len(later) > 6 else "")
            extra = f"again at epoch{'s' if len(later) > 1 else ''} {shown}"
            if channels and channels != sorted(group[0]["channels"]):
                listed = ", ".join(map(str, channels[:8])) + (
                    f", ... ({len(channels)} channels)"
                    if len(channels) > 8 else "")
                extra += f"; channels {listed} in all"
            line += f" ({extra})"
        lines.append(line)
    return lines
