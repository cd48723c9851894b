"""The contract every layer of keras-learnact is tested against.

A family's test module declares its configurations once:

    class TestABUContract(LayerContract):
        cases = [
            LayerCase("abu-layer", kla.ABU, {}, (8, 8, 3), trainable=2),
            ...
        ]

and inherits every check below, each parametrised over `cases`: config and
registered-serialisation round trips, weight counts, symbolic and eager calls,
a compiled training step that lowers the loss, mixed precision (float16 and
bfloat16), a `.keras` round trip loaded in a fresh Python process and, on
TensorFlow, an exported SavedModel. `test_contract_coverage.py` fails if a
public layer class has no case.
"""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_learnact  # noqa: F401  (registers the classes)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One configuration of a layer under test.

    Args:
        id: the test id.
        cls: the layer class.
        kwargs: constructor arguments.
        input_shape: the input shape without the batch axis.
        trainable: the number of trainable weights after build.
        non_trainable: the number of non-trainable weights after build.
        input_scale: the standard deviation of the generated inputs.
        training_seed: the random seed of the training test's weights
            (default: the test session's), for a family whose training from
            some initial draws is unstable by design (say which and why).
        agreement_atol: how far an eager call and a compiled `predict` may
            differ, for a family whose closed form sums terms much larger
            than its result (say which and how large).
    """

    id: str
    cls: type
    kwargs: dict
    input_shape: tuple
    trainable: int
    non_trainable: int = 0
    input_scale: float = 1.0
    training_seed: int | None = None
    agreement_atol: float = 1e-6

    def make(self, **overrides):
        return self.cls(**{**self.kwargs, **overrides})

    def inputs(self, batch=8, seed=0):
        rng = np.random.default_rng(seed)
        shape = (batch, *self.input_shape)
        return (rng.normal(size=shape) * self.input_scale).astype("float32")

    def model(self, layer=None):
        """A small model that puts the layer where an activation goes."""
        inputs = keras.Input(self.input_shape)
        hidden = keras.layers.Dense(self.input_shape[-1])(inputs)
        hidden = (layer or self.make())(hidden)
        hidden = keras.layers.Flatten()(hidden)
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def _fit_briefly(model, case, epochs=1):
    x = case.inputs(batch=32, seed=1)
    y = np.random.default_rng(2).normal(size=(32, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)


_LOADER = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import keras
    import keras_learnact  # the only import that registers our classes
    jobs = pickle.load(open(sys.argv[1], "rb"))
    results = {}
    for key, (path, x) in jobs.items():
        model = keras.models.load_model(path)
        results[key] = np.asarray(model.predict(x, verbose=0))
    pickle.dump(results, open(sys.argv[2], "wb"))
    """
)


class LayerContract:
    """Checks that every learnable activation must pass.

    Subclasses set `cases`, a list of `LayerCase`.
    """

    cases = ()

    def test_config_round_trip(self, case):
        layer = case.make()
        layer.build((None, *case.input_shape))
        config = layer.get_config()
        json.dumps(config)  # plain data only
        rebuilt = case.cls.from_config(config)
        assert rebuilt.get_config() == config
        for key in case.kwargs:
            if key != "name":
                assert key in config, f"{key} missing from get_config()"

    def test_registered_serialization(self, case):
        layer = case.make()
        serialized = keras.saving.serialize_keras_object(layer)
        assert serialized["registered_name"] == (
            f"keras_learnact>{case.cls.__name__}"
        )
        restored = keras.saving.deserialize_keras_object(
            json.loads(json.dumps(serialized))
        )
        assert type(restored) is case.cls
        assert restored.get_config() == layer.get_config()

    def test_weight_counts_and_dtypes(self, case):
        layer = case.make()
        layer.build((None, *case.input_shape))
        assert len(layer.trainable_weights) == case.trainable
        assert len(layer.non_trainable_weights) == case.non_trainable
        names = [w.name for w in layer.weights]
        assert len(set(names)) == len(names), names
        assert all(w.dtype == "float32" for w in layer.weights)

    def test_symbolic_call(self, case):
        inputs = keras.Input(case.input_shape)
        outputs = case.make()(inputs)
        assert tuple(outputs.shape) == (None, *case.input_shape)
        assert outputs.dtype == "float32"

    def test_eager_call_and_model_agree(self, case):
        layer = case.make()
        x = case.inputs()
        eager = ops.convert_to_numpy(layer(x))
        assert eager.shape == x.shape
        assert np.all(np.isfinite(eager))
        inputs = keras.Input(case.input_shape)
        model = keras.Model(inputs, layer(inputs))
        np.testing.assert_allclose(
            model.predict(x, verbose=0), eager, rtol=1e-6,
            atol=case.agreement_atol,
        )

    def test_mask_passes_through(self, case):
        inputs = keras.Input((4, *case.input_shape[-1:]))
        masked = keras.layers.Masking()(inputs)
        layer = case.make()
        layer(masked)
        mask = np.array([[True, False, True, True]])
        assert layer.supports_masking
        np.testing.assert_array_equal(
            ops.convert_to_numpy(layer.compute_mask(None, mask)), mask
        )

    def test_compiled_training_lowers_loss(self, case):
        if case.training_seed is not None:
            keras.utils.set_random_seed(case.training_seed)
        layer = case.make()
        model = case.model(layer)
        x = case.inputs(batch=64, seed=3)
        y = np.tanh(x.reshape(len(x), -1).sum(axis=1, keepdims=True))
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        before = model.evaluate(x, y, verbose=0)
        initial = {w.path: ops.convert_to_numpy(w.value).copy()
                   for w in layer.trainable_weights}
        history = model.fit(x, y, batch_size=16, epochs=15, verbose=0)
        after = model.evaluate(x, y, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert after < 0.8 * before, (before, after)
        moved = [path for path, v in initial.items() if not np.allclose(
            v, ops.convert_to_numpy(
                next(w for w in layer.trainable_weights if w.path == path)
            ))]
        assert moved or not initial, "no weight of the activation was trained"

    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(self, case, policy):
        layer = case.make(dtype=policy)
        x = case.inputs()
        out = layer(x)
        compute = policy.split("_")[1]
        assert keras.backend.standardize_dtype(out.dtype) == compute
        assert all(w.dtype == "float32" for w in layer.weights)
        out = np.asarray(ops.convert_to_numpy(ops.cast(out, "float32")))
        assert np.all(np.isfinite(out))
        reference = case.make()
        reference.build(x.shape)
        reference.set_weights(layer.get_weights())
        expected = ops.convert_to_numpy(reference(x))
        tolerance = 2e-2 if compute == "float16" else 8e-2
        np.testing.assert_allclose(
            out, expected, rtol=tolerance, atol=tolerance
        )

    @pytest.fixture(scope="class")
    def fresh_process_outputs(self, request, tmp_path_factory):
        """Saves every case's trained model, then loads them all in one
        fresh Python process that imports only `keras_learnact`."""
        folder = tmp_path_factory.mktemp("keras_files")
        jobs, expected = {}, {}
        for case in request.cls.cases:
            keras.utils.set_random_seed(7)
            model = case.model()
            _fit_briefly(model, case)
            path = str(folder / f"{case.id}.keras")
            model.save(path)
            x = case.inputs(batch=4, seed=5)
            jobs[case.id] = (path, x)
            expected[case.id] = model.predict(x, verbose=0)
        job_file, out_file = folder / "jobs.pkl", folder / "out.pkl"
        job_file.write_bytes(pickle.dumps(jobs))
        env = {**os.environ, "PYTHONPATH": REPO_ROOT}
        subprocess.run(
            [sys.executable, "-c", _LOADER, str(job_file), str(out_file)],
            check=True, env=env, cwd=str(folder), timeout=600,
        )
        return expected, pickle.loads(out_file.read_bytes())

    def test_keras_file_round_trip_in_fresh_process(
        self, case, fresh_process_outputs
    ):
        expected, loaded = fresh_process_outputs
        np.testing.assert_allclose(
            loaded[case.id], expected[case.id], rtol=1e-6, atol=1e-6
        )

    if keras.backend.backend() == "tensorflow":

        def test_savedmodel_export(self, case, tmp_path):
            import tensorflow as tf

            model = case.model()
            _fit_briefly(model, case)
            x = case.inputs(batch=4, seed=6)
            expected = model.predict(x, verbose=0)
            model.export(str(tmp_path / "exported"), verbose=False)
            restored = tf.saved_model.load(str(tmp_path / "exported"))
            np.testing.assert_allclose(
                restored.serve(x).numpy(), expected, rtol=1e-6, atol=1e-6
            )
