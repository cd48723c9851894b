"""Health checks of `ActivationSnapshot`: each finding provoked on purpose,
warned once (layer, channels, epoch, what to try), recorded in the file
and listed by `keras-learnact info`; `stop_on` stops training; old files
load with no findings."""

import warnings

import keras
import numpy as np
import pytest

import keras_learnact as kla
from keras_learnact import cli
from keras_learnact import health
from keras_learnact import snapshots as ks
from keras_learnact.callbacks import ActivationSnapshot


def inputs(shape=(64, 3), scale=1.0, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return (offset + scale * rng.normal(size=shape)).astype("float32")


def record(tmp_path, activation, x, epochs=1, before=None, **kwargs):
    """Fits Input -> identity Dense -> activation (nothing learns: SGD with
    rate 0; the Dense gives every backend a gradient to take, even for a
    PWLU in phase I) with an ActivationSnapshot probing `x`; returns
    (callback, warnings, history)."""
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Dense(x.shape[-1], kernel_initializer="identity"),
        activation])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    callback = ActivationSnapshot(str(tmp_path / "acts.npz"), probe=x,
                                  **kwargs)
    callbacks = ([before] if before is not None else []) + [callback]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, np.zeros_like(x), epochs=epochs, verbose=0,
                            batch_size=32, callbacks=callbacks)
    found = [str(w.message) for w in caught
             if "ActivationSnapshot" in str(w.message)]
    return callback, found, history


def kinds(callback):
    return sorted({f.kind for f in callback.findings})


class Poison(keras.callbacks.Callback):
    """Sets one channel of a weight to NaN at the end of epoch `at`."""

    def __init__(self, layer, weight, channel, at=0):
        super().__init__()
        self.layer, self.weight = layer, weight
        self.channel, self.at = channel, at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            variable = next(w for w in self.layer.weights
                            if w.name == self.weight)
            value = keras.ops.convert_to_numpy(variable.value).copy()
            value[self.channel] = np.nan
            variable.assign(value)


def test_nonfinite_stops_training_naming_layer_channel_and_epoch(tmp_path):
    layer = kla.layers.AdaptiveScaling("tanh", granularity="channel",
                                       name="scaled")
    callback, messages, history = record(
        tmp_path, layer, inputs(), epochs=3,
        before=Poison(layer, "alpha", 1), stop_on=("nonfinite",))
    assert len(history.history["loss"]) == 1  # stopped after epoch 1
    assert callback.model.stop_training
    nonfinite = [f for f in callback.findings if f.kind == "nonfinite"]
    assert {(f.epoch, tuple(f.channels)) for f in nonfinite} == {(1, (1,))}
    assert any("curve is NaN" in f.message for f in nonfinite)
    assert any("parameter 'alpha'" in f.message for f in nonfinite)
    stop = [m for m in messages if "stops training" in m]
    assert len(stop) == 1
    assert "scaled (AdaptiveScaling), channel 1 of 3, epoch 1" in stop[0]
    assert "Try: lower the learning rate" in stop[0]
    # Recorded in the file, and listed by `keras-learnact info`.
    snaps = ks.load(callback.filepath)
    assert {f["kind"] for f in snaps.findings} == {"nonfinite"}
    assert snaps.findings[0]["channels"] == [1]


def test_a_nonfinite_running_statistic(tmp_path):
    pwlu = kla.layers.PWLU(name="pwlu")
    callback, messages, _ = record(
        tmp_path, pwlu, inputs(), before=Poison(pwlu, "moving_mean", 2))
    found = [f for f in callback.findings if f.kind == "nonfinite"]
    assert found and found[0].channels == [2]
    assert "running statistic 'moving_mean'" in found[0].message


def test_dead_units_warn_once_and_are_listed_by_info(tmp_path, capsys):
    x = -np.abs(inputs()) - 0.5  # every input negative: relu is flat
    x[:, 2] = np.abs(x[:, 2])    # ... but for channel 2
    callback, messages, _ = record(
        tmp_path, kla.layers.AdaptiveScaling("relu", granularity="channel",
                                             name="relu"), x, epochs=2)
    dead = [f for f in callback.findings if f.kind == "dead"]
    assert [f.epoch for f in dead] == [0, 1, 2]
    assert all(f.channels == [0, 1] for f in dead)
    assert len(messages) == 1  # warned once
    assert "relu (AdaptiveScaling), channels 0, 1 of 3, epoch 0" in (
        messages[0])
    assert "slope stays below 0.001" in messages[0]
    assert cli.main(["info", callback.filepath]) == 0
    out = capsys.readouterr().out
    assert "health findings (3):" in out
    assert "channels 0, 1 of 3, epoch 0" in out and "(again at epochs 1, 2)" \
        in out


def test_deu_outputs_pinned_at_the_clip(tmp_path):
    deu = kla.layers.DEU(name="deu")
    model_input = inputs(scale=2.0)

    class Steep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            # b y' = H with b = 0.02: y = t / 0.02, past the clip of 10
            # from t = 0.2 on, for channel 0 only.
            # (Rows a, b, c of the weight; one column per channel.)
            values = keras.ops.convert_to_numpy(
                deu.ode_parameters.value).copy()
            values[:3, 0] = (0.0, 0.02, 0.0)
            deu.ode_parameters.assign(values)

    callback, messages, _ = record(tmp_path, deu, model_input,
                                   before=Steep())
    clipped = [f for f in callback.findings if f.kind == "clipped"]
    assert clipped and clipped[0].channels == [0]
    share = np.mean(model_input[:, 0] > 0.2)
    assert abs(clipped[0].value - share) < 1e-6
    assert any("sit at the clip +-10" in m for m in messages)


def test_pwlu_inputs_beyond_its_grid(tmp_path):
    pwlu = kla.layers.PWLU(start_realigned=True, initial_bounds=(-0.5, 0.5),
                           name="pwlu")
    x = inputs(scale=2.0)
    callback, messages, _ = record(tmp_path, pwlu, x,
                                   health_thresholds={"off_grid_share": 0.3})
    off = [f for f in callback.findings if f.kind == "off_grid"]
    assert off and off[0].channels == [0, 1, 2]
    share = np.mean(np.abs(x) > 0.5, axis=0).max()
    assert abs(off[0].value - share) < 1e-6
    assert any("outside its bounds" in m for m in messages)
    # Phase I (not realigned): its bounds mean nothing yet.
    callback, _, _ = record(tmp_path, kla.layers.PWLU(name="p"), x,
                            overwrite=True)
    assert "off_grid" not in kinds(callback)


def test_slaf_moments_growing_by_orders_of_magnitude(tmp_path):
    slaf = kla.layers.SLAF(degree=4, name="slaf")
    x = inputs()
    model = keras.Sequential([keras.Input((3,)), slaf])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    callback = ActivationSnapshot(str(tmp_path / "acts.npz"), probe=x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, x, epochs=1, verbose=0, callbacks=[callback])
        assert "moments" not in kinds(callback)
        model.fit(30 * x, x, epochs=1, verbose=0, callbacks=[callback])
    moments = [f for f in callback.findings if f.kind == "moments"]
    assert moments and moments[0].epoch == 2
    assert moments[0].channels == [0, 1, 2] and moments[0].value > 1e4
    assert any("x^i grew" in str(w.message) for w in caught)


def test_healthy_units_have_no_findings_and_checks_can_be_off(tmp_path):
    callback, messages, _ = record(
        tmp_path, kla.layers.AdaptiveScaling("tanh"), inputs())
    assert callback.findings == [] and messages == []
    callback, _, _ = record(
        tmp_path, kla.layers.AdaptiveScaling("relu"), -np.abs(inputs()) - 1,
        health=False, overwrite=True)
    assert callback.findings == []
    assert ks.load(callback.filepath).findings == []


@pytest.mark.parametrize("kwargs, match", [
    ({"stop_on": "nonfinite"}, "stop_on='nonfinite'.*tuple"),
    ({"stop_on": ("nan",)}, "unknown kinds \\['nan'\\]"),
    ({"stop_on": ("dead",), "health": False}, "health=False"),
    ({"health": 1}, "health=1"),
    ({"health_thresholds": {"dead": 1}}, "key 'dead'"),
    ({"health_thresholds": {"clip_share": 1.5}}, "clip_share'\\]=1.5"),
    ({"health_thresholds": {"moment_growth": 0.5}}, "moment_growth'\\]=0.5"),
    ({"health_thresholds": [1]}, "health_thresholds=\\[1\\]"),
])
def test_bad_health_arguments_are_refused_at_construction(tmp_path, kwargs,
                                                          match):
    with pytest.raises(ValueError, match=match):
        ActivationSnapshot(str(tmp_path / "a.npz"), **kwargs)


def test_old_files_load_with_no_findings_and_can_be_checked(tmp_path):
    grid = np.linspace(-4, 4, 81)
    snaps = ks.Snapshots(grid)
    for epoch in (0, 1):
        snaps.add(epoch, {"act": {"class": "ABU", "params": {},
                                  "curves": np.stack([np.tanh(grid),
                                                      np.zeros(81)])}})
    path = str(tmp_path / "old.npz")
    snaps.save(path)  # no findings, configs or input ranges: as before
    with np.load(path) as npz:
        assert "layer_0.input_range" not in npz.files
    old = ks.load(path)
    assert old.findings == [] and old.config("act") == {}
    assert old.input_ranges("act") is None
    found = health.check(old)
    assert [(f.kind, f.epoch, f.channels) for f in found] == [
        ("dead", 0, [1]), ("dead", 1, [1])]
    # Findings survive a save and load; drop_after drops theirs.
    old.add_findings(found)
    old.save(path)
    again = ks.load(path)
    assert [f["epoch"] for f in again.findings] == [0, 1]
    again.drop_after(0)
    assert [f["epoch"] for f in again.findings] == [0]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_channel_ranges_are_numpys_quantiles(dtype):
    # The order statistics are selected per channel rather than by
    # np.quantile along axis 0: the same values, bit for bit, whatever the
    # count (1 and 2 examples, ties, more than RANGE_SAMPLES examples).
    rng = np.random.default_rng(0)
    for count in (1, 2, 3, 17, 200, 201, health.RANGE_SAMPLES + 7):
        for values in (rng.normal(size=(count, 3)) * 1e3,
                       rng.integers(-2, 3, size=(count, 3))):
            values = values.astype(dtype)
            sampled = values[::-(-count // health.RANGE_SAMPLES)]
            expected = np.quantile(sampled.astype("float64"),
                                   health.RANGE_QUANTILES, axis=0)
            np.testing.assert_array_equal(
                health.channel_ranges(values),
                expected.T.astype("float32"))
    # A channel with a NaN keeps the quantiles of its finite values, one
    # without any finite value is NaN.
    values = rng.normal(size=(50, 3)).astype(dtype if dtype != "int64"
                                             else "float64")
    values[[3, 7], 0] = np.nan
    values[:, 2] = np.inf
    ranges = health.channel_ranges(values)
    np.testing.assert_array_equal(
        ranges[0], np.quantile(np.delete(values[:, 0], [3, 7]).astype(
            "float64"), health.RANGE_QUANTILES).astype("float32"))
    assert np.isnan(ranges[2]).all()
