"""No layer differentiates arithmetic inside a TensorFlow conditional.

TensorFlow's graph optimiser may rewrite a gradient sum (`AddN` of more
than two tensors) into an accumulation through a temporary variable when it
estimates that the step's memory is tight (ResNet-18 at batch 128 on a
24 GiB CPU machine). Inside a conditional branch that is not taken, the
variable is created but never released, and the next step fails with
`AlreadyExistsError` (issue #21: PWLU's phase conditional, from the second
training step). A layer whose conditionals only pass tensors through keeps
every such sum outside the branches, whatever the model's size; these tests
check that on the traced training step of every family, in every phase.

The same crash in the network that showed it is reproduced by the slow
smoke matrix (`test_examples_smoke.py`).
"""

import keras
import numpy as np
import pytest

import keras_learnact as kla

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    def _branch_functions(graph_def):
        """The names of every conditional's branch functions, nested ones
        and those of the gradient included."""
        functions = {f.signature.name: f for f in graph_def.library.function}
        nodes = list(graph_def.node)
        for function in functions.values():
            nodes.extend(function.node_def)
        names = set()
        for node in nodes:
            if node.op in ("If", "StatelessIf"):
                for key in ("then_branch", "else_branch"):
                    names.add(node.attr[key].func.name)
        return names, functions

    def _sums_in_branches(layer, shape, phase=None):
        """`(branch, node, inputs)` for each `AddN` of more than two inputs
        in a conditional branch of the layer's traced training step."""
        model = keras.Sequential([keras.Input(shape[1:]), layer])
        if phase is not None:
            phase(layer)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True) ** 2)
            return tape.gradient(loss, model.trainable_variables)

        graph_def = step.get_concrete_function(
            tf.TensorSpec(shape, "float32")
        ).graph.as_graph_def()
        branches, functions = _branch_functions(graph_def)
        found = []
        for name in sorted(branches):
            for node in functions[name].node_def:
                inputs = [i for i in node.input if not i.startswith("^")]
                if node.op == "AddN" and len(inputs) > 2:
                    found.append((name, node.name, len(inputs)))
        return found

    def _realign(layer):
        layer.realign()

    @pytest.mark.parametrize("make, shape, phase", [
        (lambda: kla.layers.PWLU(), (8, 4, 4, 3), None),
        (lambda: kla.layers.PWLU(), (8, 4, 4, 3), _realign),
        (lambda: kla.layers.PWLU(granularity="layer"), (8, 5), None),
        (lambda: kla.layers.DEU(), (8, 4, 4, 3), None),
        (lambda: kla.layers.DEU(granularity="layer"), (8, 5), None),
        (lambda: kla.layers.ABU(), (8, 4, 4, 3), None),
        (lambda: kla.layers.SLAF(), (8, 4, 4, 3), None),
        (lambda: kla.layers.SLAF(normalization="none"), (8, 5), None),
        (lambda: kla.layers.AdaptiveScaling("swish"), (8, 5), None),
    ], ids=["pwlu-phase1", "pwlu-phase2", "pwlu-layer", "deu", "deu-layer",
            "abu", "slaf", "slaf-raw", "alpha-swish"])
    def test_no_gradient_sum_inside_a_conditional(make, shape, phase):
        assert _sums_in_branches(make(), shape, phase) == []

    def test_the_check_sees_a_sum_inside_a_conditional():
        # The check itself: a layer that differentiates three uses of a
        # weight inside a branch is reported.
        class Branchy(keras.layers.Layer):
            def build(self, shape):
                self.w = self.add_weight(shape=(), initializer="ones")

            def call(self, x):
                w = self.w.value
                return keras.ops.cond(
                    w > 0, lambda: x * w + w * w + tf.sin(w), lambda: x)

        found = _sums_in_branches(Branchy(), (4, 3))
        assert len(found) == 1 and found[0][2] > 2

    def test_pwlu_trains_two_steps_in_each_phase():
        # The crash came on the second step of phase I; the tables are
        # still chosen by the phase, with gradients only in phase II.
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 4, 4, 3)).astype("float32")
        y = rng.normal(size=(16, 1)).astype("float32")
        pwlu = kla.layers.PWLU(num_intervals=4)
        model = keras.Sequential([
            keras.Input((4, 4, 3)), keras.layers.Conv2D(3, 1), pwlu,
            keras.layers.Flatten(), keras.layers.Dense(1),
        ])
        model.compile("sgd", "mse")
        before = pwlu.parameter_values()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        after = pwlu.parameter_values()
        for name in ("heights", "left_bound", "right_slope"):
            np.testing.assert_array_equal(before[name], after[name])
        assert not np.allclose(before["moving_mean"], after["moving_mean"])
        pwlu.realign()
        start = pwlu.parameter_values()["heights"]
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert not np.allclose(start, pwlu.parameter_values()["heights"])
