"""Test configuration shared by every test module.

The backend comes from `KERAS_BACKEND` (tensorflow when unset). Under JAX,
float64 is switched on so that gradient checks can run in double precision.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# PyTorch's torch.compile takes seconds for each kernel it compiles (Rational
# on PyTorch): eager here, compiled in tests/test_fused.py's `torch_compile`.
os.environ.setdefault("KERAS_LEARNACT_TORCH_COMPILE", "0")
if os.environ["KERAS_BACKEND"] == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)

import keras  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_generate_tests(metafunc):
    """Parametrises `case` over the `cases` of a layer contract class."""
    if "case" in metafunc.fixturenames and metafunc.cls is not None:
        cases = getattr(metafunc.cls, "cases", ())
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the float32 policy and a fixed seed.

    Keras's state is cleared after each test without a full garbage
    collection (`free_memory=False`): with TensorFlow or JAX loaded, one
    took about 0.6 s, 41-47 % of each backend's test time; Python's own
    collector still frees cycles as objects accumulate."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


def pytest_terminal_summary(terminalreporter):
    """Lists the timings that tests record with
    `record_property("timing", text)` (the smoke matrix's cells), which
    reach this process from pytest-xdist's workers with their reports."""
    rows = sorted(
        (report.nodeid.split("::", 1)[-1], value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "timing"
    )
    if rows:
        terminalreporter.write_sep("=", "timings")
        width = max(len(test) for test, _ in rows)
        for test, value in rows:
            terminalreporter.write_line(f"{test:<{width}}  {value}")
