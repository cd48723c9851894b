"""Snapshot files: the learned activation shapes over training, as data.

A snapshot file records, for every learnable activation of a model, the
curve it computes on a fixed grid at several moments of training (epochs),
its parameter values at those moments and, optionally, a histogram of the
inputs it really received. The `ActivationSnapshot` callback writes such
files; `load` reads them; plotting and the command line work from them.

This module is plain data: it needs NumPy only and imports neither Keras
nor a plotting library, so a file can be inspected anywhere.

File format, version 1
----------------------

An uncompressed NumPy `.npz` archive (a zip of `.npy` arrays), readable with
`np.load(path, allow_pickle=False)`. Layers and parameters are numbered in
the array names (`layer_<i>`, `param_<j>`) and named in the metadata, so any
layer or weight name is allowed. With `E` snapshots (epochs), `P` grid
points, `C_i` recorded channels of layer `i` and `B` histogram bins:

| entry | dtype | shape | content |
|---|---|---|---|
| `__keras_learnact_snapshots__` | uint8 | (n,) | UTF-8 JSON metadata (below) |
| `grid` | float32 | (P,) | the inputs the curves are evaluated at |
| `epochs` | int64 | (E,) | the epochs, increasing; 0 = before training |
| `layer_<i>.curves` | float32 | (E, C_i, P) | the curves |
| `layer_<i>.param_<j>` | as saved | (E, ...) | weight `j` of layer `i` |
| `layer_<i>.hist_edges` | float32 | (B + 1,) | histogram bin edges |
| `layer_<i>.hist_counts` | int64 | (E, B) | inputs falling in each bin |
| `layer_<i>.hist_outside` | int64 | (E, 2) | inputs below / above the edges |
| `layer_<i>.input_range` | float32 | (E, C_i, 2) | input quantiles |

The histogram entries exist only for layers recorded with a probe batch.
`input_range` holds, per epoch and recorded channel, the 0.5 % and
99.5 % quantiles of the inputs the channel received on the probe; it is
optional even with a probe (files written before it was added
have none, and a channel the probe never reached has NaN).
The metadata JSON holds:

| key | content |
|---|---|
| `format` | `"keras-learnact-snapshots"` |
| `format_version` | `1` |
| `info` | free-form provenance: `package_version`, `keras_version`, `backend` |
| `epochs` | the epochs, as in the `epochs` array |
| `layers` | one object per layer, in order (below) |
| `findings` | optional: the health findings, a list of objects (below) |

Each layer object: `name`, `class` (the class name), `channels` (the
recorded channel indices), `total_channels`, `params` (weight names, in
`param_<j>` order), `histogram` (bool) and, optionally, `config`: the
layer's configuration entries that are plain JSON values (`basis`,
`normalization`, `epsilon`, ...), which `keras_learnact.explain` uses to
describe each family's exact function.

Each finding (see `keras_learnact.health`): `epoch`, `layer`, `kind`
(`"nonfinite"`, `"clipped"`, `"dead"`, `"off_grid"`, `"moments"`),
`channels` (the channel indices concerned, a list), `value` (the measured
number, or null) and `message` (what was found and what to try).

The optional entries (`config`, `findings`, `input_range`) were added
without changing the version: a file without them is read as one with no
configuration, no findings and no input ranges, and readers that do not
know them ignore them.

A reader refuses files whose `format` differs or whose `format_version` is
newer than it knows.
"""

import contextlib
import json
import os
import re
import secrets
import stat
import zipfile

import numpy as np

FORMAT = "keras-learnact-snapshots"
FORMAT_VERSION = 1
METADATA_KEY = "__keras_learnact_snapshots__"

__all__ = [
    "FORMAT_VERSION",
    "SnapshotFileError",
    "Snapshots",
    "load",
    "save",
]


class SnapshotFileError(ValueError):
    """A file that is not a readable keras-learnact snapshot file.

    Raised for truncated or corrupt files, foreign `.npz` archives and
    files of an unknown format version. The message names the file.

    Examples:

    >>> issubclass(SnapshotFileError, ValueError)
    True
    """


class Snapshots:
    """The recorded activation shapes of one training run.

    Holds, per layer, the curves on a shared grid, the parameter values and
    optionally input histograms, for a sorted list of epochs. Build one
    empty (the callback does) and `add` snapshots, or get one from `load`.

    Args:
        grid: the 1-D grid the curves are evaluated at.
        info: optional provenance dict (package and Keras versions,
            backend), stored in the metadata as-is.

    Examples:

    >>> import numpy as np
    >>> s = Snapshots(np.linspace(-1, 1, 3))
    >>> s.add(0, {"act": {"class": "ABU", "curves": np.zeros((1, 3)),
    ...                    "params": {"alpha": np.float32(1.0)}}})
    >>> s.layers, s.epochs.tolist(), s.curves("act").shape
    (['act'], [0], (1, 1, 3))
    """

    def __init__(self, grid, info=None):
        grid = np.asarray(grid, dtype="float32")
        if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)):
            raise ValueError(
                f"Invalid grid of shape {grid.shape}: expected a 1-D array of "
                "at least 2 finite values."
            )
        self.grid = grid
        self.info = dict(info or {})
        self.path = None
        self.format_version = FORMAT_VERSION
        self._epochs = []
        self._layers = {}
        self._findings = []

    # -- reading -----------------------------------------------------------

    @property
    def layers(self):
        """The layer names, in recording order."""
        return list(self._layers)

    @property
    def epochs(self):
        """The recorded epochs, increasing, as an int64 array."""
        return np.asarray(self._epochs, dtype="int64")

    def _layer(self, layer):
        if layer not in self._layers:
            raise KeyError(
                f"No layer {layer!r} in these snapshots; layers: "
                f"{', '.join(self._layers) or '(none)'}."
            )
        return self._layers[layer]

    def curves(self, layer):
        """The curves of one layer over the epochs.

        Args:
            layer: the layer name.

        Returns:
            A float32 array of shape `(epochs, channels, points)`.
        """
        return np.stack(self._layer(layer)["curves"])

    def params(self, layer):
        """The parameter values of one layer over the epochs.

        Args:
            layer: the layer name.

        Returns:
            A dict from weight name to an array of shape `(epochs, ...)`.
        """
        record = self._layer(layer)
        return {name: np.stack(values)
                for name, values in record["params"].items()}

    def histograms(self, layer):
        """The input histograms of one layer, if recorded.

        Args:
            layer: the layer name.

        Returns:
            None if the layer was recorded without a probe batch, else a
            tuple `(edges, counts, outside)`: the `(bins + 1,)` edges, the
            `(epochs, bins)` counts, and the `(epochs, 2)` counts of inputs
            below the first and above the last edge.
        """
        record = self._layer(layer)
        if record["hist_edges"] is None:
            return None
        return (record["hist_edges"], np.stack(record["hist_counts"]),
                np.stack(record["hist_outside"]))

    def input_ranges(self, layer):
        """The range of each recorded channel's inputs, if recorded.

        Args:
            layer: the layer name.

        Returns:
            None for a layer recorded without a probe batch (or by a
            version that did not record ranges), else a float32 array of
            shape `(epochs, channels, 2)`: per epoch and recorded channel,
            the 0.5 % and 99.5 % quantiles of the inputs it received on
            the probe (NaN where it received none).

        Examples:

        >>> import numpy as np
        >>> s = Snapshots(np.linspace(-1, 1, 3))
        >>> s.add(0, {"act": {"class": "ABU", "curves": np.zeros((1, 3)),
        ...                    "params": {}}})
        >>> s.input_ranges("act") is None
        True
        """
        record = self._layer(layer)
        if record["input_range"] is None:
            return None
        return np.stack(record["input_range"])

    def config(self, layer):
        """The recorded configuration of one layer (plain JSON values).

        Args:
            layer: the layer name.

        Returns:
            A dict, empty for files recorded without configurations.

        Examples:

        >>> import numpy as np
        >>> s = Snapshots(np.linspace(-1, 1, 3))
        >>> s.add(0, {"act": {"class": "ABU", "curves": np.zeros((1, 3)),
        ...                    "params": {}, "config": {"basis": ["relu"]}}})
        >>> s.config("act")
        {'basis': ['relu']}
        """
        return dict(self._layer(layer)["config"])

    @property
    def findings(self):
        """The recorded health findings, by epoch (a list of dicts).

        Each has `epoch`, `layer`, `kind`, `channels`, `value` and
        `message`; see `keras_learnact.health`. Empty for files recorded
        without health checks.
        """
        return [dict(f) for f in self._findings]

    def add_findings(self, findings):
        """Records health findings (dicts as in `findings`).

        Args:
            findings: an iterable of dicts with at least `epoch`, `layer`,
                `kind` and `message`; or of objects with a `to_dict()`.

        Examples:

        >>> import numpy as np
        >>> s = Snapshots(np.linspace(-1, 1, 3))
        >>> s.add_findings([{"epoch": 0, "layer": "act", "kind": "dead",
        ...                  "message": "flat"}])
        >>> s.findings[0].get("channels")
        []
        """
        for finding in findings:
            if hasattr(finding, "to_dict"):
                finding = finding.to_dict()
            self._findings.append(_finding(finding))
        self._findings.sort(key=lambda f: f["epoch"])

    def layer_class(self, layer):
        """The class name of one layer (`"ABU"`, ...).

        Args:
            layer: the layer name.

        Returns:
            A string.
        """
        return self._layer(layer)["class"]

    def channels(self, layer):
        """The channel indices recorded for one layer.

        Args:
            layer: the layer name.

        Returns:
            An int64 array of the channel indices, in curve order.
        """
        return np.asarray(self._layer(layer)["channels"], dtype="int64")

    def total_channels(self, layer):
        """How many channels the layer has (recorded or not).

        Args:
            layer: the layer name.

        Returns:
            An int.
        """
        return self._layer(layer)["total_channels"]

    def __repr__(self):
        return (f"<Snapshots {len(self._layers)} layers, epochs "
                f"{self._epochs}, {self.grid.size} grid points>")

    # -- writing -----------------------------------------------------------

    def add(self, epoch, layers):
        """Adds (or replaces) the snapshot of one epoch.

        Args:
            epoch: the epoch, a non-negative int (0 = before training).
            layers: a dict from layer name to a dict with `"class"` (str),
                `"curves"` (`(channels, points)` array), `"params"` (dict of
                arrays), optionally `"channels"` (recorded indices, default
                all), `"total_channels"` and, for a histogram,
                `"hist_edges"`, `"hist_counts"` and `"hist_outside"`, with
                optionally `"input_range"` (`(channels, 2)`), and
                `"config"` (a dict; its plain JSON values are kept, from
                the first snapshot). The first snapshot fixes the layers;
                later ones must give the same layers, classes, channels
                and shapes. Replacing an epoch drops its findings.
        """
        epoch = int(epoch)
        if epoch < 0:
            raise ValueError(f"Invalid epoch={epoch}: expected >= 0.")
        if self._epochs and sorted(layers) != sorted(self._layers):
            raise ValueError(
                f"Snapshot of epoch {epoch} has layers {sorted(layers)}, "
                f"but the earlier snapshots have {sorted(self._layers)}."
            )
        entries = {}
        for name, data in layers.items():
            entries[name] = self._entry(name, data, epoch)
        if epoch in self._epochs:
            index = self._epochs.index(epoch)
            self._findings = [f for f in self._findings
                              if f["epoch"] != epoch]
            for name, entry in entries.items():
                self._put(name, entry, index, replace=True)
            return
        index = int(np.searchsorted(self._epochs, epoch))
        self._epochs.insert(index, epoch)
        for name, entry in entries.items():
            self._put(name, entry, index, replace=False)

    def drop_after(self, epoch):
        """Removes the snapshots of every epoch after `epoch`.

        Used when training resumes from an earlier epoch than the last one
        recorded: the later snapshots belong to the run that was abandoned.

        Args:
            epoch: the last epoch to keep (an int).

        Returns:
            The epochs removed, increasing, as a list of ints.

        Examples:

        >>> import numpy as np
        >>> s = Snapshots(np.linspace(-1, 1, 3))
        >>> for e in (0, 1, 2, 3):
        ...     s.add(e, {"act": {"class": "ABU", "curves": np.zeros((1, 3)),
        ...                        "params": {}}})
        >>> s.drop_after(1), s.epochs.tolist()
        ([2, 3], [0, 1])
        """
        keep = int(np.searchsorted(self._epochs, int(epoch), side="right"))
        dropped = [int(e) for e in self._epochs[keep:]]
        del self._epochs[keep:]
        self._findings = [f for f in self._findings
                          if f["epoch"] <= int(epoch)]
        for record in self._layers.values():
            for values in _series(record):
                del values[keep:]
        return dropped

    def _entry(self, name, data, epoch):
        curves = np.asarray(data["curves"], dtype="float32")
        if curves.ndim != 2 or curves.shape[1] != self.grid.size:
            raise ValueError(
                f"Layer {name!r}, epoch {epoch}: curves of shape "
                f"{curves.shape}, expected (channels, {self.grid.size})."
            )
        channels = np.asarray(
            data.get("channels", np.arange(curves.shape[0])), dtype="int64"
        )
        if channels.shape != (curves.shape[0],):
            raise ValueError(
                f"Layer {name!r}: {channels.size} channel indices for "
                f"{curves.shape[0]} curves."
            )
        entry = {
            "class": str(data["class"]),
            "channels": channels,
            "total_channels": int(data.get("total_channels", channels.size)),
            "curves": curves,
            "params": {str(k): np.asarray(v)
                       for k, v in data["params"].items()},
            "hist_edges": None,
            "input_range": None,
            "config": _plain_config(data.get("config")),
        }
        if data.get("hist_counts") is not None:
            entry["hist_edges"] = np.asarray(data["hist_edges"], "float32")
            entry["hist_counts"] = np.asarray(data["hist_counts"], "int64")
            entry["hist_outside"] = np.asarray(data["hist_outside"], "int64")
        if data.get("input_range") is not None:
            ranges = np.asarray(data["input_range"], "float32")
            if ranges.shape != (curves.shape[0], 2):
                raise ValueError(
                    f"Layer {name!r}, epoch {epoch}: input_range of shape "
                    f"{ranges.shape}, expected ({curves.shape[0]}, 2)."
                )
            entry["input_range"] = ranges
        existing = self._layers.get(name)
        if existing is not None and existing["input_range"] is None:
            # A record begun without ranges (an older file) stays so.
            entry["input_range"] = None
        if existing is not None:
            same = (
                existing["class"] == entry["class"]
                and np.array_equal(existing["channels"], entry["channels"])
                and list(existing["params"]) == list(entry["params"])
                and all(existing["params"][k][0].shape == v.shape
                        for k, v in entry["params"].items())
                and (existing["hist_edges"] is None)
                == (entry["hist_edges"] is None)
                and (existing["input_range"] is None)
                == (entry["input_range"] is None)
            )
            if not same:
                raise ValueError(
                    f"Layer {name!r}, epoch {epoch}: its class, channels, "
                    "parameter names/shapes or histogram setting differ "
                    "from the earlier snapshots. Record a different model "
                    "to a new file."
                )
        return entry

    def _put(self, name, entry, index, replace):
        record = self._layers.get(name)
        if record is None:
            record = {
                "class": entry["class"],
                "channels": entry["channels"],
                "total_channels": entry["total_channels"],
                "curves": [],
                "params": {k: [] for k in entry["params"]},
                "hist_edges": entry["hist_edges"],
                "hist_counts": [],
                "hist_outside": [],
                "input_range": None if entry["input_range"] is None else [],
                "config": entry["config"],
            }
            self._layers[name] = record
        for values, value in zip(_series(record), _series(entry),
                                 strict=True):
            if replace:
                values[index] = value
            else:
                values.insert(index, value)

    def _arrays(self):
        layers_meta = []
        arrays = {"grid": self.grid, "epochs": self.epochs}
        for i, (name, record) in enumerate(self._layers.items()):
            prefix = f"layer_{i}."
            arrays[prefix + "curves"] = np.stack(record["curves"])
            for j, values in enumerate(record["params"].values()):
                arrays[prefix + f"param_{j}"] = np.stack(values)
            has_hist = record["hist_edges"] is not None
            if has_hist:
                arrays[prefix + "hist_edges"] = record["hist_edges"]
                arrays[prefix + "hist_counts"] = np.stack(
                    record["hist_counts"])
                arrays[prefix + "hist_outside"] = np.stack(
                    record["hist_outside"])
            if record["input_range"] is not None:
                arrays[prefix + "input_range"] = np.stack(
                    record["input_range"])
            meta = {
                "name": name,
                "class": record["class"],
                "channels": [int(c) for c in record["channels"]],
                "total_channels": record["total_channels"],
                "params": list(record["params"]),
                "histogram": has_hist,
            }
            if record["config"]:
                meta["config"] = record["config"]
            layers_meta.append(meta)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "info": self.info,
            "epochs": [int(e) for e in self._epochs],
            "layers": layers_meta,
        }
        if self._findings:
            metadata["findings"] = self._findings
        arrays[METADATA_KEY] = np.frombuffer(
            json.dumps(metadata).encode("utf-8"), dtype="uint8"
        )
        return arrays

    def save(self, path):
        """Writes the snapshots to `path` atomically; see `save`.

        Args:
            path: the file path (written as given; `.npz` is conventional).
        """
        save(path, self)


def save(path, snapshots):
    """Writes snapshots to a file, atomically.

    The archive is written to a temporary file in the same directory
    (`.NAME.XXXXXXXX.tmp`), flushed and synced to disk, then renamed over
    `path`; a crash at any point leaves either the previous file or the new
    one, never a partial file. The file gets the permissions `np.savez`
    would give it: those of the file it replaces, or for a new file
    read-write for everyone the umask allows.

    Args:
        path: the file path (used exactly as given).
        snapshots: a `Snapshots` object with at least one epoch.

    Raises:
        OSError: if the file cannot be written (a missing or read-only
            folder, a full disk); the message names `path`, and the
            previous file, if any, is left as it was.

    Examples:

    >>> import numpy as np, os, tempfile
    >>> s = Snapshots(np.linspace(-1, 1, 3))
    >>> s.add(0, {"act": {"class": "ABU", "curves": np.zeros((1, 3)),
    ...                    "params": {}}})
    >>> path = os.path.join(tempfile.mkdtemp(), "acts.npz")
    >>> save(path, s)
    >>> load(path).epochs.tolist()
    [0]
    """
    if not snapshots._epochs:
        raise ValueError("Nothing to save: the snapshots hold no epoch yet.")
    path = os.fspath(path)
    arrays = snapshots._arrays()
    directory, name = os.path.split(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None  # a new file: the umask decides, as for np.savez
    try:
        fd, tmp = _create_temporary(directory, name)
    except OSError as error:
        raise _naming(error, path) from error
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise _naming(error, path) from error
        raise
    _fsync_directory(directory)
    snapshots.path = path


def _series(record):
    """The per-epoch values of a layer record (or of one epoch's entry), in
    a fixed order: curves, each parameter, then the histogram counts."""
    series = [record["curves"], *record["params"].values()]
    if record["hist_edges"] is not None:
        series += [record["hist_counts"], record["hist_outside"]]
    if record.get("input_range") is not None:
        series.append(record["input_range"])
    return series


def _plain(value):
    """Whether `value` is a plain JSON value (numbers, strings, booleans,
    None, and lists and dicts of them)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return bool(np.isfinite(value))
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _plain_config(config):
    """The entries of a layer configuration that are plain JSON values
    (initializers, dtype policies and the like are left out)."""
    if not config:
        return {}
    return {str(k): (list(v) if isinstance(v, tuple) else v)
            for k, v in config.items()
            if not isinstance(v, dict) and _plain(v)}


def _finding(data):
    """A finding as stored: the required keys checked, types made plain."""
    try:
        finding = {
            "epoch": int(data["epoch"]),
            "layer": str(data["layer"]),
            "kind": str(data["kind"]),
            "channels": [int(c) for c in data.get("channels") or []],
            "value": (None if data.get("value") is None
                      else float(data["value"])),
            "message": str(data["message"]),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"Invalid finding {data!r}: {error}") from error
    if finding["value"] is not None and not np.isfinite(finding["value"]):
        finding["value"] = None  # JSON has no NaN
    return finding


def _create_temporary(directory, name):
    """Creates `.NAME.XXXXXXXX.tmp` next to the file, exclusively, with mode
    0o666 less the umask (`tempfile.mkstemp` would make it 0o600)."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
             | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0))
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(
        f"No free temporary file name for '{name}' in '{directory}'.")


def _naming(error, path):
    """The same `OSError`, but naming the snapshot file instead of the
    temporary file (or no file) that the system call saw."""
    if error.errno is None:
        return OSError(f"Cannot write '{path}': {error}")
    return OSError(error.errno, error.strerror or str(error), path)


def _remove_leftovers(path):
    """Removes the temporary files that interrupted writes of `path` left.

    A process killed while `save` writes leaves its `.NAME.XXXXXXXX.tmp`
    behind. Only files of exactly that pattern for this `path` are removed
    (also `tempfile.mkstemp`'s names, which earlier versions used).

    Args:
        path: the snapshot file.

    Returns:
        The removed paths, a list.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for entry in entries:
        if pattern.fullmatch(entry):
            leftover = os.path.join(directory, entry)
            with contextlib.suppress(OSError):
                os.remove(leftover)
                removed.append(leftover)
    return removed


def _write_npz(f, arrays):
    np.savez(f, **arrays)


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path):
    """Reads a snapshot file.

    Args:
        path: the file written by `ActivationSnapshot` or `save`.

    Returns:
        A `Snapshots` object.

    Raises:
        FileNotFoundError: if there is no such file.
        SnapshotFileError: (a `ValueError`) if the file is truncated,
            corrupt, not a keras-learnact snapshot file, or of a newer
            format version.

    Examples:

    >>> import keras_learnact.snapshots as ks
    >>> snaps = ks.load("activations.npz")  # doctest: +SKIP
    >>> snaps.curves(snaps.layers[0]).shape  # doctest: +SKIP
    (4, 1, 201)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No snapshot file at '{path}'.")
    try:
        npz = np.load(path, allow_pickle=False)
        if not hasattr(npz, "files"):
            raise SnapshotFileError(
                f"'{path}' is a single NumPy array, not a keras-learnact "
                "snapshot file."
            )
        with npz:
            if METADATA_KEY not in npz.files:
                raise SnapshotFileError(
                    f"'{path}' is a NumPy archive but not a keras-learnact "
                    f"snapshot file (no '{METADATA_KEY}' entry)."
                )
            metadata = json.loads(bytes(npz[METADATA_KEY]).decode("utf-8"))
            _check_metadata(path, metadata)
            arrays = {key: npz[key] for key in npz.files}
    except SnapshotFileError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
            UnicodeDecodeError) as error:
        raise SnapshotFileError(
            f"Cannot read '{path}' as a keras-learnact snapshot file (it may "
            f"be truncated, corrupt or of another kind): {error}"
        ) from error
    try:
        return _from_arrays(path, metadata, arrays)
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise SnapshotFileError(
            f"'{path}' is an inconsistent keras-learnact snapshot file: "
            f"{error}"
        ) from error


def _check_metadata(path, metadata):
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != FORMAT:
        raise SnapshotFileError(
            f"'{path}' is not a keras-learnact snapshot file (format "
            f"{found!r})."
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise SnapshotFileError(
            f"'{path}' has snapshot format version {version!r}; this "
            f"keras-learnact reads versions 1..{FORMAT_VERSION}. Upgrade "
            "keras-learnact to read it."
        )


def _from_arrays(path, metadata, arrays):
    snapshots = Snapshots(arrays["grid"], info=metadata.get("info"))
    snapshots.path = path
    snapshots.format_version = metadata["format_version"]
    epochs = [int(e) for e in arrays["epochs"]]
    if epochs != [int(e) for e in metadata["epochs"]]:
        raise ValueError("the epochs array and the metadata disagree")
    if epochs != sorted(set(epochs)):
        raise ValueError(f"epochs {epochs} are not increasing")
    n = len(epochs)
    for i, layer in enumerate(metadata["layers"]):
        prefix = f"layer_{i}."
        curves = arrays[prefix + "curves"]
        channels = np.asarray(layer["channels"], dtype="int64")
        if curves.shape != (n, channels.size, snapshots.grid.size):
            raise ValueError(
                f"layer {layer['name']!r}: curves of shape {curves.shape}, "
                f"expected {(n, channels.size, snapshots.grid.size)}"
            )
        params = {}
        for j, pname in enumerate(layer["params"]):
            values = arrays[prefix + f"param_{j}"]
            if values.shape[:1] != (n,):
                raise ValueError(
                    f"layer {layer['name']!r}: parameter {pname!r} has "
                    f"{values.shape[:1]} epochs, expected {n}"
                )
            params[pname] = list(values)
        record = {
            "class": str(layer["class"]),
            "channels": channels,
            "total_channels": int(layer["total_channels"]),
            "curves": list(curves),
            "params": params,
            "hist_edges": None,
            "hist_counts": [],
            "hist_outside": [],
            "input_range": None,
            "config": _plain_config(layer.get("config")),
        }
        if prefix + "input_range" in arrays:
            ranges = arrays[prefix + "input_range"]
            if ranges.shape != (n, channels.size, 2):
                raise ValueError(
                    f"layer {layer['name']!r}: input_range of shape "
                    f"{ranges.shape}, expected {(n, channels.size, 2)}"
                )
            record["input_range"] = list(ranges)
        if layer["histogram"]:
            counts = arrays[prefix + "hist_counts"]
            outside = arrays[prefix + "hist_outside"]
            edges = arrays[prefix + "hist_edges"]
            if counts.shape != (n, edges.size - 1) or outside.shape != (n, 2):
                raise ValueError(
                    f"layer {layer['name']!r}: histogram arrays of shapes "
                    f"{counts.shape}, {outside.shape} do not match "
                    f"{n} epochs and {edges.size - 1} bins"
                )
            record.update(hist_edges=edges, hist_counts=list(counts),
                          hist_outside=list(outside))
        snapshots._layers[str(layer["name"])] = record
    snapshots._epochs = epochs
    snapshots.add_findings(metadata.get("findings") or [])
    return snapshots
