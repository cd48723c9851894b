"""The snapshot callback and the snapshot file format.

One tiny model with a layer of every public family (picked up from
`keras_learnact.layers.__all__`, so new families join automatically) is
trained once per module; the tests compare the file with what an
independent recording callback saw at the same moments.
"""

import errno
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import keras
import numpy as np
import pytest

import keras_learnact
from keras_learnact import snapshots as ks
from keras_learnact.callbacks import ActivationSnapshot
from keras_learnact.callbacks.snapshot import find_learnable_activations
from keras_learnact.layers.adaptive_scaling import AdaptiveScaling
from keras_learnact.layers.base import LearnableActivation

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = np.linspace(-4.0, 4.0, 201).astype("float32")
WIDE = 16  # units of the channel-granularity layer
MAX_CHANNELS = 4


def families():
    """Every public layer class, built with its default arguments."""
    return [
        getattr(keras_learnact.layers, name)
        for name in keras_learnact.layers.__all__
        if name != "LearnableActivation"
    ]


def build_model(seed=0):
    """Dense layers, each followed by one activation of every family, then
    a wide channel-granularity layer (for `max_channels`)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = inputs
    for cls in families():
        x = keras.layers.Dense(5)(x)
        # A PWLU learns only after its realignment: start it realigned so
        # that every family's shape changes while it trains.
        extra = {"start_realigned": True} if cls.__name__ == "PWLU" else {}
        x = cls(name=f"act_{cls.__name__.lower()}", **extra)(x)
    x = keras.layers.Dense(WIDE)(x)
    x = AdaptiveScaling("tanh", granularity="channel", name="wide")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True)).astype("float32")
    return x, y


class Recorder(keras.callbacks.Callback):
    """What every activation computes, and receives, at the same moments
    the snapshot callback records them (a different route to the inputs:
    a functional sub-model up to each layer's input)."""

    def __init__(self, probe):
        super().__init__()
        self.probe = probe
        self.curves, self.params, self.inputs = {}, {}, {}

    def _layers(self):
        return [layer for layer in self.model.layers
                if isinstance(layer, LearnableActivation)]

    def _record(self, epoch):
        layers = self._layers()
        self.curves[epoch] = {a.name: a.curve(GRID) for a in layers}
        self.params[epoch] = {a.name: a.parameter_values() for a in layers}
        taps = keras.Model(self.model.inputs, [a.input for a in layers])
        values = taps([self.probe], training=False)
        self.inputs[epoch] = {
            a.name: keras.ops.convert_to_numpy(v).ravel()
            for a, v in zip(layers, values, strict=True)
        }

    def on_train_begin(self, logs=None):
        self._pending = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._pending:
            self._record(epoch)
            self._pending = False

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Trains the model for 3 epochs with the snapshot callback."""
    path = str(tmp_path_factory.mktemp("run") / "activations.npz")
    x, y = data()
    probe = x[:32]
    model = build_model()
    recorder = Recorder(probe)
    snapshot = ActivationSnapshot(path, probe=probe,
                                  max_channels=MAX_CHANNELS)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0,
              callbacks=[recorder, snapshot])
    return {"path": path, "recorder": recorder, "model": model,
            "probe": probe}


# -- what the callback records --

def test_file_holds_epochs_0_to_3_with_the_layers_curves(run):
    snaps = ks.load(run["path"])
    expected = run["recorder"].curves
    assert snaps.epochs.tolist() == [0, 1, 2, 3]
    names = [f"act_{cls.__name__.lower()}" for cls in families()] + ["wide"]
    assert snaps.layers == names
    np.testing.assert_array_equal(snaps.grid, GRID)
    for name in names:
        curves = snaps.curves(name)
        channels = snaps.channels(name)
        assert curves.shape == (4, channels.size, GRID.size)
        for epoch in range(4):
            np.testing.assert_allclose(
                curves[epoch], expected[epoch][name][channels], atol=1e-6,
                rtol=0, err_msg=f"{name} at epoch {epoch}")
        # training moved the shape: the snapshots are not four copies
        assert np.abs(curves[-1] - curves[0]).max() > 1e-4, name


def test_params_classes_and_metadata(run):
    snaps = ks.load(run["path"])
    expected = run["recorder"].params
    for cls in families():
        name = f"act_{cls.__name__.lower()}"
        assert snaps.layer_class(name) == cls.__name__
        params = snaps.params(name)
        assert list(params) == list(expected[0][name])
        for pname, values in params.items():
            assert values.shape[0] == 4
            for epoch in range(4):
                np.testing.assert_array_equal(
                    values[epoch], expected[epoch][name][pname])
    assert snaps.info["backend"] == keras.backend.backend()
    assert snaps.info["keras_version"] == keras.__version__
    assert snaps.format_version == ks.FORMAT_VERSION
    with np.load(run["path"], allow_pickle=False) as npz:
        metadata = json.loads(bytes(npz[ks.METADATA_KEY]).decode("utf-8"))
    assert metadata["format"] == "keras-learnact-snapshots"
    assert metadata["epochs"] == [0, 1, 2, 3]


def test_max_channels_picks_the_same_channels_every_time(run, tmp_path):
    snaps = ks.load(run["path"])
    chosen = snaps.channels("wide")
    assert snaps.total_channels("wide") == WIDE
    assert chosen.size == MAX_CHANNELS and len(set(chosen)) == MAX_CHANNELS
    assert np.all(np.diff(chosen) > 0) and chosen.max() < WIDE
    # the file's curves are exactly those channels at every epoch
    for epoch in range(4):
        np.testing.assert_allclose(
            snaps.curves("wide")[epoch],
            run["recorder"].curves[epoch]["wide"][chosen], atol=1e-6)
    # a new callback with the same seed chooses the same channels, another
    # seed (here) different ones
    model = run["model"]
    for seed, same in ((0, True), (7, False)):
        path = str(tmp_path / f"seed{seed}.npz")
        callback = ActivationSnapshot(path, max_channels=MAX_CHANNELS,
                                      channel_seed=seed)
        callback.set_model(model)
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        again = ks.load(path).channels("wide")
        assert np.array_equal(again, chosen) == same, (seed, again, chosen)


def test_histograms_of_the_real_inputs_on_the_probe(run):
    snaps = ks.load(run["path"])
    inputs = run["recorder"].inputs
    for name in snaps.layers:
        edges, counts, outside = snaps.histograms(name)
        np.testing.assert_allclose(edges, np.linspace(-4, 4, 51), atol=1e-6)
        assert counts.shape == (4, 50) and outside.shape == (4, 2)
        for epoch in range(4):
            values = inputs[epoch][name]
            expected, _ = np.histogram(values, edges)
            # the two routes may round a value on a bin edge differently
            assert np.abs(counts[epoch] - expected).sum() <= 2, name
            assert counts[epoch].sum() + outside[epoch].sum() == values.size
            assert outside[epoch].tolist() == [
                int(np.sum(values < -4)), int(np.sum(values > 4))]


def test_input_ranges_and_configs_of_the_recorded_channels(run):
    """Per recorded channel, the 0.5 % and 99.5 % quantiles of the inputs
    it received (for explain and the figures), and each layer's plain
    configuration (for explain's exact descriptions)."""
    snaps = ks.load(run["path"])
    model, probe = run["model"], run["probe"]
    for name in snaps.layers:
        layer = model.get_layer(name)
        taps = keras.Model(model.inputs, layer.input)
        ranges = snaps.input_ranges(name)
        channels = snaps.channels(name)
        assert ranges.shape == (4, channels.size, 2)
        values = keras.ops.convert_to_numpy(taps(probe, training=False))
        if layer.granularity == "layer":
            values = values.reshape(-1, 1)
        expected = np.quantile(values[:, channels], [0.005, 0.995], axis=0)
        np.testing.assert_allclose(ranges[-1], expected.T, atol=1e-5)
        config = snaps.config(name)
        assert config["granularity"] == layer.granularity
        assert all(not isinstance(v, dict) for v in config.values())
    assert snaps.config("act_abu")["basis"] == list(
        model.get_layer("act_abu").basis)


def test_resume_keeps_every_earlier_epoch(tmp_path):
    path = str(tmp_path / "acts.npz")
    x, y = data()
    model = build_model()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[ActivationSnapshot(path)])
    before = ks.load(path)
    recorder = Recorder(x[:4])
    model.fit(x, y, initial_epoch=3, epochs=5, batch_size=32, verbose=0,
              callbacks=[recorder, ActivationSnapshot(path)])
    after = ks.load(path)
    assert after.epochs.tolist() == [0, 1, 2, 3, 4, 5]
    for name in before.layers:
        np.testing.assert_array_equal(
            after.curves(name)[:4], before.curves(name))
        for epoch in (4, 5):
            np.testing.assert_allclose(
                after.curves(name)[epoch],
                recorder.curves[epoch][name][after.channels(name)],
                atol=1e-6)


def test_every_n_epochs_and_the_last_epoch(tmp_path):
    path = str(tmp_path / "acts.npz")
    x, y = data(32)
    model = build_model()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0,
              callbacks=[ActivationSnapshot(path, every_n_epochs=2,
                                            grid=[-1.0, 0.0, 2.0])])
    snaps = ks.load(path)
    assert snaps.epochs.tolist() == [0, 2, 3]
    assert snaps.grid.tolist() == [-1.0, 0.0, 2.0]
    assert snaps.histograms(snaps.layers[0]) is None


def test_adding_a_different_model_to_a_file_is_refused(run, tmp_path):
    path = str(tmp_path / "acts.npz")
    with open(run["path"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              AdaptiveScaling(name="other")])
    other.compile("sgd", "mse")
    # from epoch 0 it is another run; resumed, it is another model
    for kwargs, error in (({}, FileExistsError),
                          ({"resume": True}, ValueError)):
        with pytest.raises(error, match="acts.npz"):
            other.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0,
                      callbacks=[ActivationSnapshot(path, **kwargs)])
    assert ks.load(path).epochs.tolist() == [0, 1, 2, 3]


# -- one file, one run --

def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3),
        AdaptiveScaling("tanh", name="act"), keras.layers.Dense(3),
        AdaptiveScaling("swish", name="act_2"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def fit(model, *callbacks, **kwargs):
    x, y = data(32)
    kwargs.setdefault("epochs", 1)
    return model.fit(x, y, batch_size=16, verbose=0,
                     callbacks=list(callbacks), **kwargs)


def alphas(path):
    return ks.load(path).params("act")["alpha"].tolist()


def test_the_same_callback_continues_its_record_across_fits(tmp_path):
    """Issue #16 5: fit(epochs=3) then fit(epochs=2) with one callback."""
    path = str(tmp_path / "refit.npz")
    model = small_model()
    callback = ActivationSnapshot(path)
    first, second = Recorder(data(4)[0]), Recorder(data(4)[0])
    fit(model, first, callback, epochs=3)
    fit(model, second, callback, epochs=2)
    snaps = ks.load(path)
    assert snaps.epochs.tolist() == [0, 1, 2, 3, 4, 5]
    expected = [first.params[e]["act"]["alpha"] for e in range(4)]
    expected += [second.params[e]["act"]["alpha"] for e in (1, 2)]
    np.testing.assert_array_equal(snaps.params("act")["alpha"], expected)
    assert expected[0] == 1.0  # the true epoch 0, not the state after 3
    assert len(np.unique(expected)) == 6  # every epoch is its own state
    # the modulus counts the record's epochs, across the fits
    path = str(tmp_path / "every2.npz")
    callback = ActivationSnapshot(path, every_n_epochs=2)
    fit(model, callback, epochs=3)
    fit(model, callback, epochs=3)
    assert ks.load(path).epochs.tolist() == [0, 2, 3, 4, 6]


def test_a_new_run_into_an_existing_file_is_refused(tmp_path):
    """Issue #16 5: a fresh callback from epoch 0 into a file another run
    wrote stops before training, naming the file and the two ways on."""
    path = str(tmp_path / "refit.npz")
    fit(small_model(), ActivationSnapshot(path), epochs=3)
    before = open(path, "rb").read()
    model = small_model(seed=1)
    weights = model.get_weights()
    with pytest.raises(FileExistsError) as info:
        fit(model, ActivationSnapshot(path), epochs=2)
    message = str(info.value)
    for part in (path, "overwrite=True", "resume=True", "0, 1, 2, 3"):
        assert part in message
    assert open(path, "rb").read() == before  # the file is untouched
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # and nothing trained
    # resume=True continues its record after its last epoch ...
    fit(model, ActivationSnapshot(path, resume=True), epochs=2)
    resumed = alphas(path)
    assert len(resumed) == 6 and resumed[3] == 1.0  # model 1's start
    # ... and overwrite=True starts a new one, without reading the file
    with open(path, "r+b") as f:
        f.write(b"garbage")
    fit(model, ActivationSnapshot(path, overwrite=True), epochs=1)
    assert ks.load(path).epochs.tolist() == [0, 1]
    assert alphas(path)[0] == resumed[-1]
    # a fresh callback may start a file that does not exist, resume or not
    other = str(tmp_path / "new.npz")
    fit(model, ActivationSnapshot(other, resume=True), epochs=1)
    assert ks.load(other).epochs.tolist() == [0, 1]


def test_the_same_callback_refuses_another_model_or_a_changed_file(
        tmp_path):
    """Rebuilding the model in a notebook and refitting with the same
    callback is another run; so is a file someone else rewrote."""
    path = str(tmp_path / "acts.npz")
    callback = ActivationSnapshot(path)
    fit(small_model(), callback, epochs=2)
    with pytest.raises(FileExistsError, match="acts.npz"):
        fit(small_model(seed=1), callback, epochs=2)
    assert ks.load(path).epochs.tolist() == [0, 1, 2]
    model = small_model()
    callback = ActivationSnapshot(str(tmp_path / "b.npz"))
    fit(model, callback)
    ks.save(callback.filepath, ks.load(path))  # someone else rewrites it
    with pytest.raises(FileExistsError, match="b.npz"):
        fit(model, callback)
    # the file removed between the fits: the callback's record goes on
    callback = ActivationSnapshot(str(tmp_path / "c.npz"))
    fit(model, callback)
    os.remove(callback.filepath)
    fit(model, callback)
    assert ks.load(callback.filepath).epochs.tolist() == [0, 1, 2]


def test_resuming_at_an_earlier_epoch_drops_the_later_snapshots(tmp_path):
    """A run interrupted after its checkpoint of epoch 3 recorded 4 and 5;
    resuming at 3 replaces them, and says so."""
    path = str(tmp_path / "acts.npz")
    model = small_model()
    fit(model, ActivationSnapshot(path), epochs=5)
    recorder = Recorder(data(4)[0])
    with pytest.warns(UserWarning, match="epochs 4, 5 in '.*acts.npz'"):
        fit(model, recorder, ActivationSnapshot(path), initial_epoch=3,
            epochs=4)
    snaps = ks.load(path)
    assert snaps.epochs.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(snaps.params("act")["alpha"][3:], [
        recorder.params[e]["act"]["alpha"] for e in (3, 4)])


def test_contradictory_or_bad_run_arguments():
    with pytest.raises(ValueError, match="overwrite=True with resume=True"):
        ActivationSnapshot("a.npz", overwrite=True, resume=True)
    with pytest.raises(ValueError, match="resume='yes'"):
        ActivationSnapshot("a.npz", resume="yes")


# -- where the file goes --

def test_a_missing_folder_is_refused_at_construction(tmp_path):
    path = str(tmp_path / "missing" / "acts.npz")
    with pytest.raises(FileNotFoundError) as info:
        ActivationSnapshot(path)
    assert path in str(info.value) and ".tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        ActivationSnapshot(tmp_path)


def test_a_read_only_folder_is_refused_at_construction(tmp_path,
                                                       monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        # Root may write anywhere (CI runs as root): let the folder answer
        # as it does for any other user.
        real = os.access
        monkeypatch.setattr(
            os, "access",
            lambda p, mode, **kw: (not mode & os.W_OK) and real(p, mode)
            if os.fspath(p) == str(folder) else real(p, mode, **kw))
    try:
        path = str(folder / "acts.npz")
        with pytest.raises(PermissionError) as info:
            ActivationSnapshot(path)
        assert path in str(info.value) and ".tmp" not in str(info.value)
    finally:
        folder.chmod(0o755)


def test_a_failed_write_warns_and_training_goes_on(tmp_path, monkeypatch):
    """A full disk during the snapshot of epoch 2 loses neither the
    training run nor the snapshot: the next write includes it."""
    path = str(tmp_path / "acts.npz")
    real = ks._write_npz
    full = {"epochs": set()}

    def write(f, arrays):
        epochs = arrays["epochs"].tolist()
        if epochs[-1] in full["epochs"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, arrays)

    monkeypatch.setattr(ks, "_write_npz", write)
    full["epochs"] = {2}
    with pytest.warns(UserWarning) as caught:
        history = fit(small_model(), ActivationSnapshot(path), epochs=4)
    assert len(history.history["loss"]) == 4
    (warning,) = [w for w in caught if "could not write" in str(w.message)]
    message = str(warning.message)
    assert "epoch 2" in message and f"'{path}'" in message
    assert "No space left on device" in message and ".tmp" not in message
    assert ks.load(path).epochs.tolist() == [0, 1, 2, 3, 4]
    assert os.listdir(tmp_path) == ["acts.npz"]
    # a disk that stays full: the last good file stays, the record is kept
    path = str(tmp_path / "full.npz")
    full["epochs"] = {2, 3}
    callback = ActivationSnapshot(path)
    with pytest.warns(UserWarning) as caught:
        fit(small_model(), callback, epochs=3)
    messages = [str(w.message) for w in caught if "could not" in str(w.message)]
    assert len(messages) == 2
    assert "epoch 2" in messages[0] and "epoch 3" in messages[1]
    assert ks.load(path).epochs.tolist() == [0, 1]
    assert callback.snapshots.epochs.tolist() == [0, 1, 2, 3]


def test_files_get_the_permissions_np_savez_would_give(tmp_path):
    """Not mkstemp's 0o600: a new file gets 0o666 less the umask, and a
    file rewritten keeps its mode."""
    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    old = os.umask(0o002)
    try:
        ks.save(str(tmp_path / "new.npz"), small_snapshots())
        np.savez(tmp_path / "numpy.npz", a=np.zeros(1))
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.npz") == mode(tmp_path / "numpy.npz") == 0o664
    os.chmod(tmp_path / "new.npz", 0o640)
    ks.save(str(tmp_path / "new.npz"), small_snapshots())
    assert mode(tmp_path / "new.npz") == 0o640


def test_leftovers_of_a_killed_write_are_removed_when_a_run_opens_it(
        tmp_path):
    """A writer SIGKILLed mid-write leaves its temporary file; the next run
    on the same file removes it, and nothing else."""
    path = str(tmp_path / "acts.npz")
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from keras_learnact import snapshots as ks
        snaps = ks.Snapshots(np.linspace(-4, 4, 201))
        snaps.add(0, {{"act": {{"class": "ABU", "params": {{}},
                                "curves": np.zeros((1, 201))}}}})
        ks.save({path!r}, snaps)
        def half_then_killed(f, arrays):
            f.write(b"PK\x03\x04" + bytes(1000))
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        ks._write_npz = half_then_killed
        ks.save({path!r}, snaps)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert done.returncode == -signal.SIGKILL
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".acts.npz.")
    others = [".other.npz.abcd1234.tmp", ".acts.npz.bak", "acts.npz.tmp"]
    for name in others:
        (tmp_path / name).write_bytes(b"")
    fit(small_model(), ActivationSnapshot(path, overwrite=True))
    assert sorted(os.listdir(tmp_path)) == sorted(["acts.npz", *others])


# -- atomic writes --

def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "acts.npz")
    x, y = data(32)
    model = build_model()

    def half_then_crash(f, arrays):
        f.write(b"PK\x03\x04" + b"\0" * 1000)  # the start of a zip ...
        raise KeyboardInterrupt("killed mid-write")  # ... and then nothing

    class CrashAtEpoch2(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # runs before the snapshot of epoch 2
                monkeypatch.setattr(ks, "_write_npz", half_then_crash)

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, batch_size=32, verbose=0,
                  callbacks=[ActivationSnapshot(path), CrashAtEpoch2()])
    # epoch 1 was written, the epoch-2 write died half-way
    assert ks.load(path).epochs.tolist() == [0, 1]
    assert os.listdir(tmp_path) == ["acts.npz"]  # no temporary file left


def test_a_killed_writer_process_leaves_a_readable_file(tmp_path):
    """SIGKILL a process that rewrites a large snapshot file in a loop."""
    path = str(tmp_path / "big.npz")
    module = os.path.join(REPO_ROOT, "keras_learnact", "snapshots.py")
    script = textwrap.dedent(f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("snaps", {module!r})
        ks = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ks)
        snaps = ks.Snapshots(np.linspace(-4, 4, 201))
        curves = np.random.default_rng(0).normal(size=(2000, 201))
        for epoch in range(10 ** 6):
            snaps.add(epoch, {{"act": {{"class": "ABU", "curves": curves,
                                         "params": {{}}}}}})
            ks.save({path!r}, snaps)
            if epoch == 0:
                print("ready", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # several multi-megabyte writes per second
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    snaps = ks.load(path)
    assert snaps.epochs.size >= 1
    assert snaps.curves("act").shape == (snaps.epochs.size, 2000, 201)


# -- models of every shape --

def test_nested_models_are_walked(tmp_path):
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3), AdaptiveScaling(
            "tanh", name="act")], name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5)(inputs)
    x = AdaptiveScaling("swish", name="act")(x)
    x = inner(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    found = find_learnable_activations(model)
    # same names in two models: told apart by the path
    assert [name for name, _ in found] == ["act", "inner/act"]
    assert found[1][1] is inner.layers[-1]
    path = str(tmp_path / "nested.npz")
    model.compile("adam", "mse")
    x_train, y_train = data(16)
    model.fit(x_train, y_train, epochs=1, verbose=0,
              callbacks=[ActivationSnapshot(path, probe=x_train)])
    snaps = ks.load(path)
    assert snaps.layers == ["act", "inner/act"]
    outer_act = found[0][1]
    inner_input = inner.layers[0](
        keras.Model(model.inputs, outer_act.output)([x_train]))
    _, counts, outside = snaps.histograms("inner/act")
    assert counts[-1].sum() + outside[-1].sum() == 16 * 3
    expected, _ = np.histogram(
        keras.ops.convert_to_numpy(inner_input), np.linspace(-4, 4, 51))
    assert np.abs(counts[-1] - expected).sum() <= 2


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(6)
        self.act = AdaptiveScaling("tanh", granularity="channel")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        return self.out(self.act(self.dense(inputs)))


def test_subclassed_model_histograms(tmp_path):
    model = Subclassed()
    model.compile("adam", "mse")
    x, y = data(16)
    model(x[:2])  # build
    path = str(tmp_path / "sub.npz")
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[ActivationSnapshot(path, probe=x,
                                            histogram_bins=10)])
    assert "call" not in vars(model.act)  # the probe hook is gone
    snaps = ks.load(path)
    (name,) = snaps.layers
    edges, counts, outside = snaps.histograms(name)
    assert counts.shape == (3, 10)
    assert np.all(counts.sum(axis=1) + outside.sum(axis=1) == 16 * 6)
    expected = np.histogram(
        keras.ops.convert_to_numpy(model.dense(x)), edges)[0]
    assert np.abs(counts[-1] - expected).sum() <= 2


def test_a_model_without_learnable_activations_warns(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    path = str(tmp_path / "none.npz")
    with pytest.warns(UserWarning, match="no keras_learnact"):
        model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0,
                  callbacks=[ActivationSnapshot(path)])
    assert not os.path.exists(path)


# tf.distribute needs the TensorFlow backend: the test exists only there.
if keras.backend.backend() == "tensorflow":

    def test_under_a_distribution_strategy(tmp_path):
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with strategy.scope():
            model = build_model()
        x, y = data(32)
        path = str(tmp_path / "dist.npz")
        recorder = Recorder(x[:8])
        model.fit(x, y, epochs=2, batch_size=16, verbose=0,
                  callbacks=[recorder, ActivationSnapshot(path, probe=x[:8])])
        snaps = ks.load(path)
        assert snaps.epochs.tolist() == [0, 1, 2]
        for name in snaps.layers:
            np.testing.assert_allclose(
                snaps.curves(name)[2],
                recorder.curves[2][name][snaps.channels(name)], atol=1e-6)


def test_tensorboard_image_is_logged(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("matplotlib")
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    logdir = str(tmp_path / "logs")
    x, y = data(16)
    model = build_model()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ActivationSnapshot(
        str(tmp_path / "acts.npz"), tensorboard_dir=logdir)])
    images = []
    for file in os.listdir(logdir):
        for record in tf.data.TFRecordDataset(os.path.join(logdir, file)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                images.append((event.step, tf.make_ndarray(value.tensor)))
    assert [step for step, _ in images] == [0, 1]
    width, height, png = images[-1][1]
    decoded = tf.io.decode_png(png).numpy()
    assert decoded.shape == (int(height), int(width), 3)


# -- arguments --

@pytest.mark.parametrize("kwargs, match", [
    ({"every_n_epochs": 0}, "every_n_epochs=0"),
    ({"every_n_epochs": 1.5}, "every_n_epochs=1.5"),
    ({"grid": [[0.0, 1.0]]}, "grid"),
    ({"grid": [0.0, np.nan]}, "grid"),
    ({"grid": [1.0, 0.0]}, "increasing"),
    ({"max_channels": 0}, "max_channels=0"),
    ({"channel_seed": -1}, "channel_seed=-1"),
    ({"histogram_bins": 0}, "histogram_bins=0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActivationSnapshot("a.npz", **kwargs)


def test_tensorboard_without_tensorflow_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(ImportError, match="tensorflow"):
        ActivationSnapshot("a.npz", tensorboard_dir="logs")


# -- the file format --

def small_snapshots(epochs=(0, 1)):
    snaps = ks.Snapshots(np.linspace(-1, 1, 5), info={"backend": "x"})
    for e in epochs:
        snaps.add(e, {"a": {"class": "ABU",
                            "curves": np.full((2, 5), float(e)),
                            "params": {"w": np.array([e, 2 * e])}}})
    return snaps


def test_add_replaces_an_epoch_and_keeps_order(tmp_path):
    snaps = small_snapshots((3, 1))
    snaps.add(0, {"a": {"class": "ABU", "curves": np.zeros((2, 5)),
                        "params": {"w": np.array([7, 7])}}})
    snaps.add(1, {"a": {"class": "ABU", "curves": np.full((2, 5), 9.0),
                        "params": {"w": np.array([9, 9])}}})
    assert snaps.epochs.tolist() == [0, 1, 3]
    assert snaps.curves("a")[:, 0, 0].tolist() == [0.0, 9.0, 3.0]
    path = str(tmp_path / "s.npz")
    ks.save(path, snaps)
    loaded = ks.load(path)
    assert loaded.params("a")["w"].tolist() == [[7, 7], [9, 9], [3, 6]]
    assert loaded.info == {"backend": "x"}
    with pytest.raises(ValueError, match="differ"):
        snaps.add(4, {"a": {"class": "DEU", "curves": np.zeros((2, 5)),
                            "params": {"w": np.array([1, 1])}}})
    with pytest.raises(KeyError, match="'b'"):
        loaded.curves("b")


def test_the_format_needs_no_plotting_library(tmp_path):
    path = str(tmp_path / "s.npz")
    ks.save(path, small_snapshots())
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    assert names == sorted([
        ks.METADATA_KEY + ".npy", "grid.npy", "epochs.npy",
        "layer_0.curves.npy", "layer_0.param_0.npy"])
    # with matplotlib and Pillow made unimportable, the callback and the
    # format work, and plotting says how to install what it needs
    script = textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib"] = sys.modules["PIL"] = None
        from keras_learnact import plotting, snapshots
        from keras_learnact.callbacks import ActivationSnapshot
        print(snapshots.load({path!r}).epochs.tolist())
        try:
            plotting.plot_evolution({path!r})
        except ImportError as error:
            print(error)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
        text=True, check=True,
        env={**os.environ, "PYTHONPATH": REPO_ROOT})
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[0, 1]"
    assert "pip install keras-learnact[plot]" in lines[1]


@pytest.mark.parametrize("kind", [
    "truncated", "foreign-npz", "random-bytes", "empty", "npy-array",
    "newer-version"])
def test_bad_files_are_clear_errors_naming_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        ks.save(str(path), small_snapshots())
        content = path.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif kind == "foreign-npz":
        np.savez(path, a=np.arange(3))
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy-array":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    elif kind == "newer-version":
        snaps = small_snapshots()
        arrays = snaps._arrays()
        meta = json.loads(bytes(arrays[ks.METADATA_KEY]).decode())
        meta["format_version"] = ks.FORMAT_VERSION + 1
        arrays[ks.METADATA_KEY] = np.frombuffer(
            json.dumps(meta).encode(), "uint8")
        np.savez(path, **arrays)
    with pytest.raises(ks.SnapshotFileError, match=f"{kind}.npz") as info:
        ks.load(str(path))
    assert isinstance(info.value, ValueError)
    if kind == "newer-version":
        assert "version" in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        ks.load(str(tmp_path / "nothing.npz"))


def test_inconsistent_file_is_refused(tmp_path):
    arrays = small_snapshots()._arrays()
    arrays["layer_0.curves"] = arrays["layer_0.curves"][:1]
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    with pytest.raises(ks.SnapshotFileError, match="odd.npz.*curves"):
        ks.load(str(path))
