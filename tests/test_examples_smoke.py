"""Smoke matrix of the CIFAR example (issue #21): every network with every
learnable family, two training steps at the batch size of its paper.

A cell builds one network of `examples/cifar_models.py` with one activation
everywhere, compiles it (Adam, sparse cross-entropy on logits), builds the
optimizer as `examples/cifar.py` does (on TensorFlow the train step is then
traced once, not twice) and trains two
steps on random CIFAR-shaped data at the paper's batch size (256 for the ABU
paper's smcn family, 128 for the ResNets); both losses must be finite. Two
steps, because a step can leak state that only the next one trips over
(ResNet-18 with PWLU at batch 128 failed on TensorFlow from the second
step, tests/test_control_flow.py). Each cell records its time to the first
step (building, compiling, tracing and the step itself) and of the second;
the summary at the end of the run lists them (tests/conftest.py).

Activations: ReLU, the baseline, and one of each learnable family present
(`abu`, `alpha-swish` for AdaptiveScaling, `deu`, `slaf`, `pwlu`,
`rational`). On each
backend:

* TensorFlow: every network with every activation, traced without XLA;
  with `jit_compile=True`, the diagonal below. The full matrix under XLA
  would take about 20 minutes of one process instead of 4 (estimated from
  11 of its cells), past the CI budget of 45 minutes in all: XLA's CPU
  kernels are slow (smcn's training step, with its dropout and max
  pooling, takes 11 to 18 s against 1 s without XLA).
* JAX (jit-compiled): the diagonal. PyTorch runs eagerly, with no trace
  or compiled step of its own to fail, and has no cells (CI time).

The diagonal gives network i the i-th learnable family, cycling, so that
each network and each family appear once; the network that gets DEU also
gets ReLU, for comparison. Cells of the other backends are not
generated. The networks are `NETWORKS`.

Each network is one test class, so that pytest-xdist's `--dist loadscope`
spreads the networks over the workers. The times are printed, not
asserted (a test must not depend on the machine's speed or load): DEU's
time to the first step against ReLU's is measured side by side in fresh
processes by `benchmarks/first_step_benchmark.py`.

Three keras.applications networks of `examples/applications.py` (issue
#18), converted by `replace_activations` with each unit started as the
activation it replaces, train two steps at batch 128 on TensorFlow
without XLA (`APPLICATION_CELLS`, about two minutes).

The whole module is marked slow and the test command (tox) runs it;
`-m "not slow"` leaves it out. With two pytest-xdist workers on a 2-core
CPU: TensorFlow 8 minutes (the XLA diagonal and the applications
included), JAX about 2.
"""

import dataclasses
import os
import sys
import time

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import applications  # noqa: E402
import cifar_models  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # PWLU's phase I has no gradient for its table (documented in
    # docs/layers/pwlu.md); Keras warns about it on PyTorch.
    pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning"),
]

NETWORKS = cifar_models.MODELS
BASELINE = "relu"
# One name per learnable family, in the diagonal's order: it puts PWLU on
# ResNet-18 (the network of issue #21) and ABU on smcnBN (whose ABU is the
# batch-normalised blend).
FAMILIES = tuple(
    name for name in ("slaf", "deu", "alpha-swish", "abu", "pwlu",
                      "rational")
    if name in cifar_models.ACTIVATIONS
)
NUM_CLASSES = 10
BACKEND = keras.backend.backend()
# Mode label -> the `jit_compile` argument of `Model.compile`.
MODES = {
    "tensorflow": {"graph": False, "xla": True},
    "jax": {"jit": True},
}.get(BACKEND, {})
# The modes that run every activation in every network; the others run
# the diagonal.
FULL = {"graph"}

# The `jit_compile` values whose compiler this process has used.
WARM = set()


def batch_size(network):
    """The batch size of the network's paper (the PWLU paper's networks,
    ImageNet-sized there, at 128 here)."""
    return 256 if network.startswith("smcn") else 128


# The keras.applications cells (TensorFlow, no XLA), the three whose first
# step takes under a minute here: ResNet50 with PWLU (102 s to its first
# step, PWLU's kernels compiled for each of its shapes) and EfficientNetB0
# with SLAF (82 s) would add 3 minutes to a CI run already over 45
# minutes. tests/test_convert.py checks every network's conversion.
APPLICATION_CELLS = (
    ("mobilenetv2", "abu"), ("mobilenetv3small", "deu"),
    ("efficientnetb0", "adaptive-scaling"),
)


def _diagonal():
    pairs = []
    for i, network in enumerate(NETWORKS):
        family = FAMILIES[i % len(FAMILIES)]
        if family == "deu":
            pairs.append((network, BASELINE))
        pairs.append((network, family))
    return pairs


def _warm_up(jit_compile):
    """One step of a tiny model, so that no cell pays for the first use of
    the backend's compiler in the process."""
    if jit_compile in WARM:
        return
    WARM.add(jit_compile)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse", jit_compile=jit_compile)
    model.train_on_batch(np.ones((2, 4), "float32"),
                         np.ones((2, 2), "float32"))
    keras.backend.clear_session()


@dataclasses.dataclass(frozen=True)
class Cell:
    """Two training steps of one network with one activation in one mode."""

    network: str
    activation: str
    mode: str

    @property
    def id(self):
        return f"{self.network}-{self.activation}-{self.mode}"

    def build(self):
        if self.network in applications.APPLICATIONS:
            return applications.convert(
                self.network, self.activation, NUM_CLASSES)[1]
        return cifar_models.build_model(
            self.network, self.activation, NUM_CLASSES)

    def run(self, record_property):
        jit_compile = MODES[self.mode]
        _warm_up(jit_compile)
        keras.utils.set_random_seed(0)  # the same weights, warm-up or not
        size = batch_size(self.network)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(2, size, 32, 32, 3)).astype("float32")
        y = rng.integers(0, NUM_CLASSES, (2, size))
        start = time.perf_counter()
        model = self.build()
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        # As examples/cifar.py does: one trace of the train step on
        # TensorFlow rather than two (see there).
        model.optimizer.build(model.trainable_variables)
        first_loss = float(model.train_on_batch(x[0], y[0]))
        first = time.perf_counter() - start
        timing = f"first step {first:7.1f} s"
        try:  # the time is reported when the second step fails too
            second_loss = float(model.train_on_batch(x[1], y[1]))
            second = time.perf_counter() - start - first
            timing += (f"  second {second:6.2f} s  batch {size}  "
                       f"losses {first_loss:.3f} {second_loss:.3f}")
        finally:
            record_property("timing", timing)
        assert np.isfinite(first_loss), first_loss
        assert np.isfinite(second_loss), second_loss


def network_cases(network):
    """The cells of one network on this backend."""
    diagonal = _diagonal()
    cells = []
    for mode in MODES:
        if mode in FULL:
            names = (BASELINE, *FAMILIES)
        else:
            names = [name for net, name in diagonal if net == network]
        cells.extend(Cell(network, name, mode) for name in names)
    return cells


class _Network:
    """One network's cases; conftest.py parametrises `case` over them."""

    cases = ()

    def test_smoke(self, case, record_property):
        case.run(record_property)


# One class per network (TestSmcn, ..., TestResnet32): a network added to
# NETWORKS gets its class. None on PyTorch (no modes).
for _network in NETWORKS if MODES else ():
    _name = f"Test{_network[0].upper()}{_network[1:]}"
    globals()[_name] = type(
        _name, (_Network,), {"cases": network_cases(_network)}
    )


if BACKEND == "tensorflow":
    class TestApplications(_Network):
        cases = tuple(Cell(network, family, "graph")
                      for network, family in APPLICATION_CELLS)


if MODES:  # no cells on PyTorch
    def test_matrix_covers_every_network_and_family():
        every = [c for cls in _Network.__subclasses__() for c in cls.cases]
        for mode in MODES:
            cells = {(c.network, c.activation) for c in every
                     if c.mode == mode and c.network in NETWORKS}
            assert {net for net, _ in cells} == set(NETWORKS)
            assert {name for _, name in cells} >= set(FAMILIES)
        if BACKEND == "tensorflow":
            cells = {(c.network, c.activation) for c in every
                     if c.network in applications.APPLICATIONS}
            assert {net for net, _ in cells} == {
                "mobilenetv2", "mobilenetv3small", "efficientnetb0"}
