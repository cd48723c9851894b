"""Recording how the learnable activations of a model change in training."""

import importlib.util
import os
import sys
import warnings
import weakref
import zlib

import keras
import numpy as np
from keras import ops

from keras_learnact import health as health_checks
from keras_learnact import snapshots as snapshot_files
from keras_learnact.layers.base import LearnableActivation

DEFAULT_GRID = np.linspace(-4.0, 4.0, 201)


def find_learnable_activations(model):
    """Every `LearnableActivation` inside a model, found by walking it.

    Nested models and layers nested inside other layers are included; a
    layer reached twice (shared) is listed once. Names are the layers' own
    names, or their path through the nested models (`"inner/abu"`) where
    two found layers share a name.

    Args:
        model: a Keras model (or any layer).

    Returns:
        A list of `(name, layer)` pairs in the order the walk meets them.

    Examples:

    >>> import keras, keras_learnact as kla
    >>> inner = keras.Sequential([keras.Input((4,)), kla.layers.ABU()])
    >>> outer = keras.Sequential([keras.Input((4,)), inner,
    ...                           kla.layers.AdaptiveScaling()])
    >>> [type(layer).__name__ for _, layer in find_learnable_activations(outer)]
    ['ABU', 'AdaptiveScaling']
    """
    found = []
    seen = set()

    def visit(layer, path):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            child_path = path + (child.name,)
            if isinstance(child, LearnableActivation) and id(child) not in seen:
                seen.add(id(child))
                found.append((child_path, child))
            visit(child, child_path)

    visit(model, ())
    counts = {}
    for path, _ in found:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    return [
        (path[-1] if counts[path[-1]] == 1 else "/".join(path), layer)
        for path, layer in found
    ]


class ActivationSnapshot(keras.callbacks.Callback):
    """Records the learnable activations' shapes during training to a file.

    Finds every `keras_learnact.layers.LearnableActivation` in the model
    (nested models included) and records, before the first epoch and then
    every `every_n_epochs` epochs (plus the last epoch of a run), per layer:

    * `layer.curve(grid)`: the learned function on the grid, per channel
      (at most `max_channels` of them, chosen once with a seeded generator,
      the same channels in every snapshot and recorded in the file);
    * `layer.parameter_values()`: every weight of the layer;
    * with a `probe` batch, a histogram of the inputs the layer really
      receives when the model runs on it in inference mode (bins spanning
      the grid; inputs beyond the grid counted separately).

    Epoch `e` in the file means "after `e` epochs": 0 is the initial shape.
    The file (see `keras_learnact.snapshots` for the format) is rewritten
    atomically after every snapshot, so a crash never leaves a partial
    file; a write that fails (a full disk, a folder gone) warns, naming the
    file and the epoch, and training goes on (the next snapshot writes the
    whole record again). The start of every `fit` is recorded too.

    One file holds one run. Which run a `fit` belongs to:

    * the same callback object fitting the same model again continues its
      record: `fit(epochs=3)` then `fit(epochs=2)` records epochs 0..5;
    * `fit(..., initial_epoch=k)` with `k > 0` (or a `BackupAndRestore`
      restore) resumes an existing file at epoch `k`: its snapshots up to
      `k` are kept and any later ones (left by the interrupted run) are
      dropped with a warning;
    * otherwise an existing file belongs to another run, and `fit` stops
      with a `FileExistsError` naming the file, before training, unless
      `overwrite=True` (replace it) or `resume=True` (continue its record
      after its last epoch).

    The output folder must exist and be writable when the callback is
    created. Temporary files left by a writer killed mid-write
    (`.NAME.XXXXXXXX.tmp`) are removed when a run opens the file.

    Health checks (`health=True`, default): at every snapshot every unit
    (all channels, also those `max_channels` leaves out of the file) is
    checked for the problems listed in `keras_learnact.health`: a NaN or
    infinite curve, parameter or running statistic (`"nonfinite"`), a DEU
    output pinned at its clip (`"clipped"`), a unit flat over all the
    inputs it received (`"dead"`), a realigned PWLU whose inputs leave its
    bounds (`"off_grid"`) and SLAF moments growing by orders of magnitude
    (`"moments"`). The inputs each channel received come from the probe
    batch (without one: the grid stands for them, and `off_grid` is not
    judged). Each problem warns once per layer and kind, naming the layer,
    the channels, the epoch and what to try; every finding is recorded in
    the file (`Snapshots.findings`, `keras-learnact info`) and kept in
    `findings`. Kinds listed in `stop_on` stop training
    (`model.stop_training = True`) at the end of the epoch, with that
    message: unlike `keras.callbacks.TerminateOnNaN`, it says where.

    Works on every backend and under a `tf.distribute` strategy (curves and
    probes are evaluated eagerly, outside the compiled training step). The
    probe histograms run the model on the probe with a temporary wrapper
    around each activation's `call`, so they work for functional,
    Sequential and subclassed models alike; a layer the probe never reaches
    gets empty histograms and a warning.

    Args:
        filepath: where to write the snapshot file (conventionally `.npz`),
            in an existing, writable folder.
        every_n_epochs: record after every n-th epoch (default 1).
        grid: the 1-D grid of inputs the curves are evaluated at; default
            201 points on [-4, 4].
        max_channels: keep at most this many channels per layer (None: all).
        channel_seed: seed of the channel choice.
        probe: optional batch of model inputs (whatever `model(probe)`
            accepts) for input histograms.
        histogram_bins: the number of histogram bins.
        tensorboard_dir: optional TensorBoard log directory; the evolution
            figure is logged there as an image at every snapshot. Needs
            TensorFlow and matplotlib.
        overwrite: replace a file at `filepath` that this callback did not
            write (it is not even read), instead of refusing it.
        resume: continue the record of a file at `filepath` that this
            callback did not write: a `fit` from epoch 0 is numbered from
            the file's last epoch on. Without a file, a new one is started.
            At most one of `overwrite` and `resume` may be True.
        health: whether to run the health checks (default True).
        stop_on: the kinds of finding that stop training, a tuple from
            `keras_learnact.health.KINDS` (default none); for instance
            `("nonfinite",)`.
        health_thresholds: optional dict overriding some of
            `keras_learnact.health.DEFAULT_THRESHOLDS` (`dead_slope`,
            `clip_share`, `off_grid_share`, `moment_growth`).

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> from keras_learnact.callbacks import ActivationSnapshot
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           kla.layers.ABU(), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    >>> snapshot = ActivationSnapshot("activations.npz", probe=x)
    >>> model.fit(x, y, epochs=2, verbose=0,  # doctest: +SKIP
    ...           callbacks=[snapshot])
    >>> model.fit(x, y, epochs=1, verbose=0,  # doctest: +SKIP
    ...           callbacks=[snapshot])         # continues: epoch 3
    >>> kla.snapshots.load("activations.npz").epochs  # doctest: +SKIP
    array([0, 1, 2, 3])
    >>> stop = ActivationSnapshot("run.npz", probe=x,
    ...                           stop_on=("nonfinite",))
    """

    def __init__(self, filepath, every_n_epochs=1, grid=None,
                 max_channels=None, channel_seed=0, probe=None,
                 histogram_bins=50, tensorboard_dir=None, overwrite=False,
                 resume=False, health=True, stop_on=(),
                 health_thresholds=None):
        super().__init__()
        self.filepath = _writable_file(filepath)
        self.every_n_epochs = _positive_int("every_n_epochs", every_n_epochs)
        self._grid_given = grid is not None
        grid = DEFAULT_GRID if grid is None else grid
        grid = np.asarray(grid, dtype="float32")
        if (grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid))
                or not np.all(np.diff(grid) > 0)):
            raise ValueError(
                f"Invalid grid of shape {grid.shape}: expected a 1-D, "
                "strictly increasing array of at least 2 finite values."
            )
        self.grid = self._grid = grid
        if max_channels is not None:
            max_channels = _positive_int("max_channels", max_channels)
        self.max_channels = max_channels
        if not isinstance(channel_seed, (int, np.integer)) or isinstance(
                channel_seed, bool) or channel_seed < 0:
            raise ValueError(
                f"Invalid channel_seed={channel_seed!r}: expected an integer "
                ">= 0."
            )
        self.channel_seed = int(channel_seed)
        self.probe = probe
        self.histogram_bins = _positive_int("histogram_bins", histogram_bins)
        if tensorboard_dir is not None:
            for module, extra in (("tensorflow", "tensorflow-cpu"),
                                  ("matplotlib", "plot")):
                if importlib.util.find_spec(module) is None:
                    raise ImportError(
                        f"tensorboard_dir={tensorboard_dir!r} needs "
                        f"{module}, which is not installed. Install it "
                        f"(pip install keras-learnact[{extra}]) or leave "
                        "tensorboard_dir=None."
                    )
            tensorboard_dir = os.fspath(tensorboard_dir)
        self.tensorboard_dir = tensorboard_dir
        for name, value in (("overwrite", overwrite), ("resume", resume)):
            if not isinstance(value, bool):
                raise ValueError(
                    f"Invalid {name}={value!r}: expected True or False.")
        if overwrite and resume:
            raise ValueError(
                "Invalid overwrite=True with resume=True: choose one "
                "(overwrite replaces an existing file, resume continues "
                "its record)."
            )
        self.overwrite = overwrite
        self.resume = resume
        if not isinstance(health, bool):
            raise ValueError(
                f"Invalid health={health!r}: expected True or False.")
        self.health = health
        self.stop_on = health_checks.check_kinds("stop_on", stop_on)
        if self.stop_on and not health:
            raise ValueError(
                f"Invalid stop_on={self.stop_on!r} with health=False: "
                "stopping needs the health checks; leave health=True.")
        self.health_thresholds = health_checks.check_thresholds(
            health_thresholds)
        self.findings = []
        self.stop_message = None
        self._live = None
        self._warned = set()
        self._moment_reference = {}
        self.snapshots = None
        self._layers = None
        self._channels = {}
        self._pending = None
        self._last_recorded = None
        self._last_epoch = None
        self._writer = None
        # The run this callback records: the model it was accepted for, the
        # file as this callback last wrote it, and the epochs trained.
        self._owner = None
        self._written = None
        self._trained = 0
        self._offset = 0
        self._continuing = self._existing = False

    # -- callback hooks ----------------------------------------------------

    def on_train_begin(self, logs=None):
        self._layers = find_learnable_activations(self.model)
        if not self._layers:
            warnings.warn(
                "ActivationSnapshot found no keras_learnact "
                "LearnableActivation layer in the model; nothing will be "
                "recorded.",
                stacklevel=2,
            )
            return
        for name, layer in self._layers:
            if not layer.built:
                raise ValueError(
                    f"ActivationSnapshot: layer '{name}' is not built at the "
                    "start of training. Build the model first (give it a "
                    "keras.Input or call it on a batch)."
                )
        self._continuing = self._continues()
        if self._continuing:
            self._existing = False
        else:
            self._owner = None
            self._channels = {}
            self.grid = self._grid
            self._existing = (not self.overwrite
                              and os.path.exists(self.filepath))
            self.snapshots = (self._read() if self._existing else
                              snapshot_files.Snapshots(self.grid))
        self.snapshots.info.update(_provenance())
        if not self._continuing:
            self._moment_reference = {}
        self._last_recorded = None
        self._last_epoch = None
        self._pending = self._capture()

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending is not None:
            # The state captured at on_train_begin is the state after
            # `initial_epoch` epochs, which Keras reveals only now.
            pending, self._pending = self._pending, None
            self._start_run(epoch)
            self._trained = self._offset + epoch
            self._commit(self._trained, pending)

    def on_epoch_end(self, epoch, logs=None):
        if not self._layers or self._owner is None:
            return
        self._trained = self._last_epoch = self._offset + epoch + 1
        if self._trained % self.every_n_epochs == 0:
            self._commit(self._trained, self._capture())

    def on_train_end(self, logs=None):
        if not self._layers:
            return
        if (self._last_epoch is not None
                and self._last_recorded != self._last_epoch):
            self._commit(self._last_epoch, self._capture())
        self._pending = None
        if self._writer is not None:
            self._writer.flush()

    # -- which run -----------------------------------------------------------

    def _continues(self):
        """Whether this fit continues the record this callback holds: the
        same model, and the file as this callback left it (or gone)."""
        owner = self._owner() if self._owner is not None else None
        if owner is None or owner is not self.model:
            return False
        return _signature(self.filepath) in (None, self._written)

    def _read(self):
        """The record of an existing file that this callback did not write
        (fixing the grid, unless one was given, and the channels)."""
        try:
            existing = snapshot_files.load(self.filepath)
        except snapshot_files.SnapshotFileError as error:
            raise snapshot_files.SnapshotFileError(
                f"ActivationSnapshot: {error} Pass overwrite=True to replace "
                "it, or write to a new file."
            ) from error
        if not np.array_equal(existing.grid, self.grid):
            if self._grid_given:
                raise ValueError(
                    f"ActivationSnapshot: '{self.filepath}' was recorded on a "
                    f"different grid ({existing.grid.size} points on "
                    f"[{existing.grid[0]}, {existing.grid[-1]}]); use the "
                    "same grid to add to it, pass overwrite=True to replace "
                    "it, or write to a new file."
                )
            self.grid = existing.grid
        for name in existing.layers:
            self._channels[name] = existing.channels(name)
        return existing

    def _start_run(self, initial_epoch):
        """Decides where this fit's epochs go in the record, or refuses."""
        epochs = self.snapshots.epochs.tolist() or [0]
        if initial_epoch > 0:
            self._offset = 0
            dropped = self.snapshots.drop_after(initial_epoch)
            if dropped:
                warnings.warn(
                    f"ActivationSnapshot: training resumes at epoch "
                    f"{initial_epoch}, so the snapshots of epochs "
                    f"{_listing(dropped)} in '{self.filepath}' (recorded "
                    "after it by an earlier run) are dropped.",
                    stacklevel=3,
                )
        elif self._continuing:
            self._offset = self._trained
        elif self._existing and self.resume:
            self._offset = epochs[-1]
        elif self._existing:
            raise FileExistsError(
                f"ActivationSnapshot: '{self.filepath}' already holds the "
                f"snapshots of another run (epochs {_listing(epochs)}), and "
                "this callback did not write it. Pass overwrite=True to "
                "replace it, resume=True to continue its record after "
                f"epoch {epochs[-1]}, fit with initial_epoch=k to resume "
                "training at epoch k, or write to a new file."
            )
        else:
            self._offset = 0
        self._owner = weakref.ref(self.model)
        snapshot_files._remove_leftovers(self.filepath)

    def _choose_channels(self, name, total):
        if name in self._channels:
            chosen = self._channels[name]
            if chosen.size and chosen.max() >= total:
                raise ValueError(
                    f"ActivationSnapshot: layer '{name}' has {total} channels "
                    f"but '{self.filepath}' recorded channel {chosen.max()}; "
                    "record this model to a new file, or pass "
                    "overwrite=True to replace that one."
                )
            return chosen
        if self.max_channels is None or total <= self.max_channels:
            chosen = np.arange(total)
        else:
            rng = np.random.default_rng(
                [self.channel_seed, zlib.crc32(name.encode("utf-8"))]
            )
            chosen = np.sort(
                rng.choice(total, size=self.max_channels, replace=False))
        self._channels[name] = chosen.astype("int64")
        return self._channels[name]

    def _capture(self):
        data, self._live = capture(
            self.model, self._layers, self.grid, self.probe,
            self.histogram_bins, choose=self._choose_channels,
            stacklevel=4)
        return data

    def _commit(self, epoch, data):
        try:
            self.snapshots.add(epoch, data)
        except ValueError as error:
            raise ValueError(
                f"ActivationSnapshot: cannot add epoch {epoch} to "
                f"'{self.filepath}': {error} Pass overwrite=True to replace "
                "the file."
            ) from error
        self._last_recorded = epoch
        if self.health:
            self._check_health(epoch, data)
        try:
            self.snapshots.save(self.filepath)
        except OSError as error:
            warnings.warn(
                f"ActivationSnapshot: could not write the snapshot of epoch "
                f"{epoch} to '{self.filepath}' ({error}). Training goes on; "
                "the next snapshot writes the whole record again (it is "
                "kept in this callback's `snapshots`).",
                stacklevel=3,
            )
        else:
            self._written = _signature(self.filepath)
        if self.tensorboard_dir is not None:
            self._log_figure(epoch)

    def _check_health(self, epoch, data):
        """Checks every unit of every layer; records, warns, stops."""
        live, self._live = self._live, None
        if live is None:
            return
        found = []
        for name, _ in self._layers:
            everything = live[name]
            params = data[name]["params"]
            reference = self._moment_reference.get(name)
            found += health_checks.check_layer(
                name, everything, epoch, self.grid, self.health_thresholds,
                inputs=everything.get("inputs"),
                outputs=everything.get("outputs"), reference=reference)
            if reference is None and health_checks.moment_reference(
                    params, epoch):
                self._moment_reference[name] = params
        self.snapshots.add_findings(found)
        self.findings += found
        stopping = []
        for finding in found:
            key = (finding.layer, finding.kind)
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"ActivationSnapshot: {finding.message}",
                              RuntimeWarning, stacklevel=4)
            if finding.kind in self.stop_on:
                stopping.append(finding)
        if stopping and self.model is not None:
            self.model.stop_training = True
            self.stop_message = (
                "ActivationSnapshot stops training (stop_on="
                f"{self.stop_on!r}): {stopping[0].message}")
            warnings.warn(self.stop_message, RuntimeWarning, stacklevel=4)

    def _log_figure(self, epoch):
        import tensorflow as tf

        from keras_learnact import plotting

        figure = plotting.plot_evolution(self.snapshots)
        image = plotting.figure_to_array(figure)[..., :3]
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
        with self._writer.as_default():
            write_image_summary("activation_evolution", image, epoch)
        self._writer.flush()


def capture(model, layers, grid, probe=None, histogram_bins=50, choose=None,
            stacklevel=2):
    """What one snapshot records of every layer, and what health checks.

    Args:
        model: the model the layers belong to (run on the probe).
        layers: `(name, layer)` pairs, as from `find_learnable_activations`.
        grid: the 1-D float32 grid the curves are evaluated at.
        probe: optional batch of model inputs; with it, each layer's input
            histogram (`histogram_bins` bins over the grid) and each
            channel's input range are recorded.
        histogram_bins: the number of histogram bins.
        choose: optional `choose(name, total) -> channel indices` of the
            channels to record (default all).
        stacklevel: of the warning for a layer the probe never reaches.

    Returns:
        `(data, live)`: `data` maps each name to its entry for
        `Snapshots.add` (recorded channels only); `live` maps each name
        to the same entry for every channel, with, given a probe,
        `inputs` and `outputs`: `(examples, channels)` arrays of what each
        channel received and computed.

    Examples:

    >>> import keras, numpy as np, keras_learnact as kla
    >>> model = keras.Sequential([keras.Input((3,)), kla.layers.ABU()])
    >>> data, live = capture(model, find_learnable_activations(model),
    ...                      np.linspace(-1, 1, 5, dtype="float32"),
    ...                      probe=np.zeros((2, 3)))
    >>> name = model.layers[0].name
    >>> data[name]["curves"].shape, live[name]["inputs"].shape
    ((1, 5), (6, 1))
    """
    caught = _probe(model, layers, probe, stacklevel + 1) if (
        probe is not None) else {}
    edges = np.linspace(float(grid[0]), float(grid[-1]),
                        histogram_bins + 1).astype("float32")
    data, live = {}, {}
    for name, layer in layers:
        curves = layer.curve(grid)
        total = curves.shape[0]
        chosen = (np.arange(total) if choose is None
                  else np.asarray(choose(name, total)))
        config = snapshot_files._plain_config(layer.get_config())
        entry = {
            "class": type(layer).__name__,
            "curves": curves[chosen],
            "channels": chosen,
            "total_channels": total,
            "params": layer.parameter_values(),
            "config": config,
        }
        everything = dict(entry, curves=curves, channels=np.arange(total))
        if probe is not None:
            calls = caught.get(id(layer), [])
            inputs = np.concatenate(
                [_by_channel(layer, i, total) for i, _ in calls]
                or [np.zeros((0, total), "float32")])
            outputs = np.concatenate(
                [_by_channel(layer, o, total) for _, o in calls]
                or [np.zeros((0, total), "float32")])
            values = inputs[np.isfinite(inputs)]
            entry["hist_edges"] = edges
            # Equal bins given as a count and range: NumPy computes each
            # value's bin (the same counts as `edges`) instead of sorting
            # the values, which took 8 ms of a conv layer's snapshot.
            entry["hist_counts"] = np.histogram(
                values, histogram_bins,
                range=(float(edges[0]), float(edges[-1])))[0]
            entry["hist_outside"] = np.array(
                [np.sum(values < edges[0]), np.sum(values > edges[-1])])
            ranges = health_checks.channel_ranges(inputs)
            entry["input_range"] = ranges[chosen]
            everything.update(input_range=ranges, inputs=inputs,
                              outputs=outputs)
        data[name] = entry
        live[name] = everything
    return data, live


def _by_channel(layer, values, total):
    """A layer's input (or output) as `(examples, channels)`."""
    values = np.asarray(values, "float32")
    if layer.granularity == "channel" and values.ndim >= 2:
        values = np.moveaxis(values, layer._axis_from_end, -1)
        return values.reshape(-1, total)
    return values.reshape(-1, 1)


def _probe(model, layers, probe, stacklevel):
    """Runs the model on the probe, catching each activation's input and
    output: a dict from `id(layer)` to a list of `(inputs, outputs)` NumPy
    arrays, one pair per call."""
    caught = {id(layer): [] for _, layer in layers}

    def catching(layer, call):
        def hooked(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            caught[id(layer)].append((
                np.asarray(ops.convert_to_numpy(inputs), dtype="float32"),
                np.asarray(ops.convert_to_numpy(outputs), dtype="float32")))
            return outputs
        return hooked

    hooked = []  # (layer, its own instance-level `call` or None)
    try:
        for _, layer in layers:
            own = vars(layer).get("call")
            layer.call = catching(layer, layer.call)
            hooked.append((layer, own))
        model(probe, training=False)
    finally:
        for layer, own in hooked:
            if own is None:
                del layer.call
            else:
                layer.call = own
    result = {}
    for name, layer in layers:
        if caught[id(layer)]:
            result[id(layer)] = caught[id(layer)]
        else:
            warnings.warn(
                f"ActivationSnapshot: the probe batch never reached "
                f"layer '{name}'; its input histogram is empty.",
                stacklevel=stacklevel,
            )
    return result


def write_image_summary(tag, image, step):
    """Writes one image to the default TensorFlow summary writer.

    Writes exactly what `tf.summary.image` writes (TensorBoard's image
    plugin format: width, height and the PNG bytes), using only TensorFlow
    itself, because `tf.summary.image` needs the separate `tensorboard`
    package installed.

    Args:
        tag: the summary tag.
        image: a uint8 array of shape `(height, width, 3)`.
        step: the step (here the epoch).

    Returns:
        Whether the summary was written (False with no default writer).

    Examples:

    >>> import tempfile, numpy as np, tensorflow as tf
    >>> logdir = tempfile.mkdtemp()
    >>> with tf.summary.create_file_writer(logdir).as_default():
    ...     write_image_summary("img", np.zeros((4, 4, 3), "uint8"), 0)
    True
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="images", content=b""),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    height, width = image.shape[:2]
    tensor = tf.stack([
        tf.constant(str(width)), tf.constant(str(height)),
        tf.io.encode_png(np.ascontiguousarray(image, dtype="uint8")),
    ])
    return bool(tf.summary.write(tag=tag, tensor=tensor, step=step,
                                 metadata=metadata))


def _provenance():
    return {
        "package_version": getattr(
            sys.modules.get("keras_learnact"), "__version__", None),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
    }


def _signature(path):
    """Identifies one version of a file (None when there is no file)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def _listing(epochs):
    return ", ".join(map(str, epochs)) if len(epochs) <= 6 else (
        f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}")


def _writable_file(filepath):
    """Checks that a file can be written at `filepath`, naming it if not."""
    if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(
            filepath):
        raise ValueError(
            f"Invalid filepath={filepath!r}: expected a file path."
        )
    filepath = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(filepath))
    if os.path.isdir(filepath):
        raise IsADirectoryError(
            f"Invalid filepath='{filepath}': it is a folder; expected a file "
            "path such as "
            f"'{os.path.join(filepath, 'activations.npz')}'."
        )
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write snapshots to '{filepath}': the folder '{folder}' "
            "does not exist. Create it first (os.makedirs) or choose "
            "another path."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write snapshots to '{filepath}': the folder '{folder}' "
            "is not writable."
        )
    return filepath


def _positive_int(name, value):
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
            or value < 1):
        raise ValueError(
            f"Invalid {name}={value!r}: expected an integer >= 1."
        )
    return int(value)
