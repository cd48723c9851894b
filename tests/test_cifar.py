"""Tests of the CIFAR example: models, activation registry, data pipeline,
training end to end on TFDS mock data, and tf.distribute training.

Everything runs offline on CPU: `tfds.testing.mock_data` stands in for the
CIFAR download and `--synthetic` for the distributed runs. Under TensorFlow,
runs that train for a few steps use `--run-eagerly`, since tracing a
ResNet-32 train step costs far more than the two steps themselves; the
distributed tests train compiled.
"""

import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import cifar  # noqa: E402
import cifar_models  # noqa: E402

import keras_learnact as kla  # noqa: E402

# Tracing a TensorFlow train step costs more than a few eager steps; JAX's
# jit and torch (eager anyway) are quicker compiled.
EAGER = ["--run-eagerly"] if keras.backend.backend() == "tensorflow" else []
SMOKE = ["--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2",
         "--eval-steps", "1", "--verbose", "0"]


def _activation_kind(model_name, name):
    if model_name == "smcnBN" and name in cifar_models.ABU_MODES:
        return cifar_models.BNBlendABU
    return type(cifar_models.make_activation(name))


# -- registry and models ------------------------------------------------------

def test_registry_holds_the_abu_paper_specs():
    specs = cifar_models.ABU_PAPER_SPECS
    assert len(specs) == 17 and len(set(specs)) == 17
    assert set(specs) <= set(cifar_models.ACTIVATIONS)
    assert type(cifar_models.make_activation("alpha-swish")).__name__ == (
        "AdaptiveScaling"
    )
    abu = cifar_models.make_activation("abu-posnormed")
    assert abu.normalization == "posnormed"
    identity = cifar_models.make_activation("identity")
    assert np.allclose(identity(np.array([[-2.0, 3.0]])), [[-2.0, 3.0]])
    with pytest.raises(ValueError, match="Unknown activation 'gelu2'"):
        cifar_models.make_activation("gelu2")


@pytest.mark.parametrize("name, cls", sorted(cifar_models.OPTIONAL.items()))
def test_optional_layers_registered_exactly_when_present(name, cls):
    if hasattr(kla.layers, cls):
        layer = cifar_models.make_activation(name)
        assert isinstance(layer, getattr(kla.layers, cls))
    else:
        assert name not in cifar_models.ACTIVATIONS
        with pytest.raises(ValueError, match=f"keras_learnact.layers.{cls}"):
            cifar_models.make_activation(name)


# Every network, but on JAX smcn only: the network code is the same on
# every backend, an eager ResNet-18 with every activation took 41 s there,
# and JAX's smoke diagonal trains every network
# (tests/test_examples_smoke.py).
BUILT_MODELS = ("smcn",) if keras.backend.backend() == "jax" \
    else cifar_models.MODELS


@pytest.mark.parametrize("model_name", BUILT_MODELS)
def test_every_model_builds_with_every_activation(model_name):
    """Each network gets every registered activation at least once.

    A list of activations is used in turn at the network's activation
    positions, so a few builds cover them all (each build costs seconds);
    narrow/shallow ResNets (same code paths) keep it quick, and the full
    sizes are built in test_parameter_counts.
    """
    small = {"width": 4, "n": 1}
    positions = {"smcn": 6, "smcnLin": 6, "smcnDeep": 10, "smcnBN": 6,
                 "resnet18": 17, "resnet32": 7}[model_name]
    names = list(cifar_models.ACTIVATIONS)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3))
    for start in range(0, len(names), positions):
        chunk = names[start:start + positions]
        model = cifar_models.build_model(model_name, chunk, 10, **small)
        y = keras.ops.convert_to_numpy(model(x.astype("float32")))
        assert y.shape == (2, 10), (model_name, chunk)
        assert np.all(np.isfinite(y)), (model_name, chunk)
        acts = [layer for layer in model.layers
                if isinstance(layer, (keras.layers.Activation,
                                      kla.layers.LearnableActivation))]
        assert len(acts) == positions
        for i, layer in enumerate(acts):  # in order, cycling
            name = chunk[i % len(chunk)]
            assert type(layer) is _activation_kind(model_name, name), name
        keras.backend.clear_session()


def test_single_activation_everywhere_and_bad_names():
    model = cifar_models.build_model("smcnBN", "abu-absnormed")
    blends = [la for la in model.layers
              if isinstance(la, cifar_models.BNBlendABU)]
    assert len(blends) == 6
    assert {la.normalization for la in blends} == {"absnormed"}
    with pytest.raises(ValueError, match="Unknown model 'vgg'"):
        cifar_models.build_model("vgg")
    with pytest.raises(ValueError, match="Unknown activation 'relu6x'"):
        cifar_models.build_model("smcn", ["relu", "relu6x"])


def test_parameter_counts():
    # smcn by hand: four convolutions, dense 4096->384->192->10.
    smcn = (5 * 5 * 3 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (64 * 64 + 64) \
        + (5 * 5 * 64 * 64 + 64) + (4096 * 384 + 384) + (384 * 192 + 192) \
        + (192 * 10 + 10)
    assert cifar_models.build_model("smcn").count_params() == smcn
    resnet32 = cifar_models.build_model("resnet32", num_classes=10)
    assert resnet32.name == "resnet32_relu"
    assert 0.46e6 <= resnet32.count_params() <= 0.47e6  # He et al.: 0.46 M
    resnet18 = cifar_models.build_model("resnet18", num_classes=100)
    assert 11.2e6 <= resnet18.count_params() <= 11.3e6


def test_smcn_initialisation_follows_the_paper():
    model = cifar_models.build_model("smcn", "relu")
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    dense = [la for la in model.layers if isinstance(la, keras.layers.Dense)]
    assert np.all(keras.ops.convert_to_numpy(convs[0].bias) == 0.0)
    for layer in convs[1:] + dense:
        assert np.allclose(keras.ops.convert_to_numpy(layer.bias), 0.1)
    # A normal truncated at 2 stddev has 0.8796 of the stddev.
    kernel = keras.ops.convert_to_numpy(convs[3].kernel)
    target = np.sqrt(2.0 / (5 * 5 * 64)) * 0.8796
    assert abs(kernel.std() / target - 1) < 0.05
    kernel = keras.ops.convert_to_numpy(dense[0].kernel)
    target = np.sqrt(2.0 / (4096 * 384)) * 0.8796
    assert abs(kernel.std() / target - 1) < 0.05


def _basis_numpy(x):
    elu = np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1)
    swish = x / (1 + np.exp(-x))
    return [np.maximum(x, 0), elu, np.tanh(x), swish, x]


def test_bn_blend_abu_normalises_each_basis_output():
    x = np.random.default_rng(1).normal(size=(6, 5, 3)).astype("float32")
    layer = cifar_models.BNBlendABU(normalization="softmax", epsilon=1e-3)
    train = keras.ops.convert_to_numpy(layer(x, training=True))
    flat = x.reshape(-1, 3).astype("float64")
    expected = sum(
        (g - g.mean(0)) / np.sqrt(g.var(0) + 1e-3) for g in _basis_numpy(flat)
    ) / 5
    assert np.allclose(train, expected.reshape(x.shape), atol=1e-4)
    # Inference uses the moving statistics (one update: 0.99*init + 0.01*batch).
    infer = keras.ops.convert_to_numpy(layer(x, training=False))
    moved = sum(
        (g - 0.01 * g.mean(0)) / np.sqrt(0.99 + 0.01 * g.var(0) + 1e-3)
        for g in _basis_numpy(flat)
    ) / 5
    assert np.allclose(infer, moved.reshape(x.shape), atol=1e-4)
    curve = layer.curve(np.linspace(-2, 2, 7))
    assert curve.shape == (3, 7)
    probe = np.repeat(np.linspace(-2, 2, 7)[:, None], 3, axis=1)
    direct = keras.ops.convert_to_numpy(layer(probe, training=False))
    assert np.allclose(curve, direct.T, atol=1e-6)
    clone = cifar_models.BNBlendABU.from_config(layer.get_config())
    assert clone.normalization == "softmax" and clone.basis == layer.basis
    assert "bn_3_swish/moving_mean" in layer.parameter_values()
    with pytest.raises(ValueError, match="normalization"):
        cifar_models.BNBlendABU(normalization="sum")


def test_shortcut_pad_subsamples_and_pads_channels():
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(cifar_models.ShortcutPad(8)(x))
    assert y.shape == (2, 3, 3, 8)
    assert np.array_equal(y[..., 2:6], x[:, ::2, ::2, :])
    assert not y[..., :2].any() and not y[..., 6:].any()


# -- data and bookkeeping ------------------------------------------------------

def test_standardize_is_the_abu_papers():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3))
    out = cifar.standardize(image.astype("uint8")).numpy()
    pixels = image.astype("float64")
    expected = (pixels - pixels.mean()) / max(pixels.std(), 1 / np.sqrt(3072))
    assert np.allclose(out, expected, atol=1e-4)
    flat = cifar.standardize(np.full((32, 32, 3), 9, "uint8")).numpy()
    assert np.all(flat == 0.0)


def test_augment_keeps_shape_and_pixels():
    image = np.arange(32 * 32 * 3, dtype="float32").reshape(32, 32, 3) + 1
    out = cifar.augment(tf.constant(image), seed=4).numpy()
    assert out.shape == (32, 32, 3)
    kept = out[out != 0]  # zero padding aside, pixels come from the image
    assert np.isin(kept, image).all()


@pytest.mark.parametrize("prepare", ["built", "optimizer-only"])
def test_built_training_state_leaves_one_trace_of_the_train_step(prepare):
    # Keras on TensorFlow builds the optimizer and the compiled metrics
    # inside the first trace of the train step, and tf.function then
    # traces it again: examples/cifar.py built only the optimizer, and
    # with metrics=["accuracy"] every network was still traced twice.
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              kla.layers.PWLU(), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    if prepare == "built":
        cifar.build_training_state(model)
    else:
        model.optimizer.build(model.trainable_variables)
    calls = []
    step = model.train_step
    model.train_step = lambda *args: calls.append(1) or step(*args)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4, 4, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    # Eager PyTorch calls the step on each of the 4 batches.
    once = 4 if keras.backend.backend() == "torch" else 1
    expected = 2 if (prepare != "built"
                     and keras.backend.backend() == "tensorflow") else once
    assert len(calls) == expected


def test_aggregate_and_summary(tmp_path):
    results = [
        {"activation": "relu", "test_accuracy": a, "best_val_accuracy": a,
         "images_per_second": 100.0, "params": 5}
        for a in (0.5, 0.6, 0.8)
    ] + [{"activation": "abu", "test_accuracy": 0.7, "params": 9,
          "images_per_second": 50.0}]
    rows = cifar.aggregate(results)
    assert [r["activation"] for r in rows] == ["relu", "abu"]
    assert np.isclose(rows[0]["test_accuracy_mean"], np.mean([.5, .6, .8]))
    assert np.isclose(rows[0]["test_accuracy_std"],
                      np.std([.5, .6, .8], ddof=1))
    assert rows[1]["runs"] == 1 and rows[1]["test_accuracy_std"] == 0.0
    table = cifar.write_summary(rows, str(tmp_path), relu_speed=100.0)
    assert "| abu | 1 | 0.7000 ± 0.0000 |" in table
    assert "| 0.50 |" in table  # abu's speed relative to ReLU
    with open(tmp_path / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_optimizer_schedules():
    sgdm = cifar.make_schedule("sgdm", 100)
    assert np.isclose(float(sgdm(0)), 0.01)
    assert np.isclose(float(sgdm(50)), (0.01 + 4e-4) / 2)
    assert np.isclose(float(sgdm(100)), 4e-4)
    he = cifar.make_schedule("sgdm-he", 100)
    assert [round(float(he(s)), 6) for s in (0, 51, 76)] == [0.1, 0.01, 0.001]
    assert cifar.make_schedule("adam", 10) == 1e-3
    assert cifar.make_optimizer("sgdm", 10).momentum == 0.9
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
        cifar.make_schedule("rmsprop", 10)


def test_bad_arguments_name_the_problem(capsys):
    with pytest.raises(SystemExit):
        cifar.parse_args(["--activation", "relu,nope"])
    assert "Unknown activation 'nope'" in capsys.readouterr().err
    args = cifar.parse_args(["--sweep", "abu-paper", "--seeds", "3,4"])
    assert args.activations == list(cifar_models.ABU_PAPER_SPECS)
    assert args.seed_list == [3, 4]


# -- end to end ---------------------------------------------------------------

def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smcn_sweep_then_resume_on_mock_cifar(tmp_path):
    out = str(tmp_path)
    common = ["--model", "smcn", "--output", out, *EAGER, *SMOKE]
    with tfds.testing.mock_data(num_examples=16):
        first = cifar.main(["--activation", "abu,relu", *common])
        resumed = cifar.main(
            ["--activation", "abu", "--resume", *common, "--epochs", "2"]
        )
    assert [r["activation"] for r in first] == ["abu", "relu"]
    abu_dir = tmp_path / "cifar10-smcn-abu-adam-s0"
    relu_dir = tmp_path / "cifar10-smcn-relu-adam-s0"
    # Resumed from the backup: epoch 1 appended, epoch 0 not rerun.
    assert [r["epoch"] for r in _rows(abu_dir / "metrics.csv")] == ["0", "1"]
    assert [r["epoch"] for r in _rows(relu_dir / "metrics.csv")] == ["0"]
    result = json.loads((abu_dir / "result.json").read_text())
    assert result == resumed[0] and result["epochs"] == 2
    for key in ("test_accuracy", "test_accuracy_last", "best_val_accuracy"):
        assert 0.0 <= result[key] <= 1.0
    assert result["images_per_second"] > 0
    for name in ("best.weights.h5", "final.weights.h5", "backup"):
        assert (abu_dir / name).exists()
    summary = _rows(tmp_path / "summary.csv")
    assert [r["activation"] for r in summary] == ["abu", "relu"]
    assert "| abu | 1 |" in (tmp_path / "summary.md").read_text()
    if cifar.ActivationSnapshot is not None:
        assert result["snapshots"] and os.path.exists(result["snapshots"])
        if cifar.plot_evolution is not None:
            assert (abu_dir / "evolution.png").stat().st_size > 0
    # The weights saved are those of this model.
    model = cifar_models.build_model("smcn", "abu")
    model.load_weights(str(abu_dir / "final.weights.h5"))


# ResNet-32 on TensorFlow; smcn elsewhere (the data pipeline, augmentation
# and schedule are the same on every backend, and JAX's compile of
# ResNet-32's steps took 40 s here: its training there is the smoke
# matrix's, tests/test_examples_smoke.py).
AUGMENTED_MODEL = "resnet32" if keras.backend.backend() == "tensorflow" \
    else "smcn"


def test_augmented_on_mock_cifar100(tmp_path):
    with tfds.testing.mock_data(num_examples=16):
        [result] = cifar.main([
            "--dataset", "cifar100", "--model", AUGMENTED_MODEL,
            "--activation", "alpha-swish", "--augment",
            "--optimizer", "sgdm-he", "--output", str(tmp_path), *EAGER,
            *SMOKE,
        ])
    assert result["params"] == cifar_models.build_model(
        AUGMENTED_MODEL, "alpha-swish", 100).count_params()
    assert np.isfinite(result["test_loss"])
    assert (tmp_path / f"cifar100-{AUGMENTED_MODEL}-alpha-swish-sgdm-he-s0"
            / "metrics.csv").exists()


def test_synthetic_mixed_precision_reports_images_per_second(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        [result] = cifar.main([
            "--synthetic", "--synthetic-size", "32", "--model", "smcnBN",
            "--activation", "abu", "--mixed-precision",
            "--output", str(tmp_path), *EAGER, *SMOKE,
            "--steps-per-epoch", "3",
        ])
    assert keras.config.dtype_policy().name == "float32"  # restored
    assert result["dataset"] == "synthetic" and result["mixed_precision"]
    assert np.isfinite(result["test_loss"])
    assert result["images_per_second"] > 0
    assert "images/s" in printed.getvalue()


# -- tf.distribute (subprocesses: devices must be set before TF starts) ----

def _distributed_activations():
    # PWLU, the family with state of its own under a strategy (batch
    # statistics reduced over the replicas, its phase switch); a stateless
    # family (ABU, which ran here too) takes the same path with less to
    # check, and each run is a subprocess of 10-20 s (CI time).
    return "pwlu"


def _weights(path):
    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: values.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset) else None
        )
    return values


def _python(code, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(process, timeout=400):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"timed out:\n{output[-3000:]}") from None
    assert process.returncode == 0, output[-5000:]
    return output


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIST_ARGS = ["--synthetic", "--synthetic-size", "64", "--epochs", "1",
             "--steps-per-epoch", "2", "--eval-steps", "1", "--batch-size",
             "8", "--verbose", "0", "--no-snapshots"]

if keras.backend.backend() == "tensorflow":

    def test_mirrored_over_two_cpus_matches_one_device(tmp_path):
        """Two replicas each see half of every batch; with the gradients
        averaged, the weights end where one device would take them."""
        acts = _distributed_activations()
        args = ["--model", "smcnLin", "--activation", acts, "--optimizer",
                "sgdm", *DIST_ARGS]
        code = f"""
            import sys, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            sys.path.insert(0, "examples")
            import cifar
            args = {args!r}
            cifar.main(args + ["--strategy", "mirrored",
                               "--output", {str(tmp_path / "mirrored")!r}])
            cifar.main(args + ["--strategy", "default",
                               "--output", {str(tmp_path / "single")!r}])
        """
        output = _finish(_python(code))
        assert "images/s" in output
        for act in acts.split(","):
            run = f"synthetic-smcnLin-{act}-sgdm-s0"
            mirrored = json.loads(
                (tmp_path / "mirrored" / run / "result.json").read_text())
            single = json.loads(
                (tmp_path / "single" / run / "result.json").read_text())
            assert (mirrored["replicas"], single["replicas"]) == (2, 1)
            a = _weights(tmp_path / "mirrored" / run / "final.weights.h5")
            b = _weights(tmp_path / "single" / run / "final.weights.h5")
            assert a.keys() == b.keys() and len(a) > 10
            for key in a:
                assert np.all(np.isfinite(a[key]))
                assert np.allclose(a[key], b[key], atol=1e-5), (act, key)

    def test_multi_worker_mirrored_workers_end_identical(tmp_path):
        ports = [_free_port(), _free_port()]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        acts = _distributed_activations()
        args = ["--model", "smcn", "--activation", acts, "--strategy",
                "multiworker", "--output", str(tmp_path), *DIST_ARGS]
        code = f"""
            import sys
            sys.path.insert(0, "examples")
            import cifar
            cifar.main({args!r})
        """
        workers = [
            _python(code, {"TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}
            )})
            for i in range(2)
        ]
        for worker in workers:
            _finish(worker)
        for act in acts.split(","):
            run = f"synthetic-smcn-{act}-adam-s0"
            chief = tmp_path / run
            other = tmp_path / "_workers" / "worker-1" / run
            assert json.loads(
                (chief / "result.json").read_text())["replicas"] == 2
            a = _weights(chief / "final.weights.h5")
            b = _weights(other / "final.weights.h5")
            assert a.keys() == b.keys() and len(a) > 10
            for key in a:
                assert np.array_equal(a[key], b[key]), (act, key)
