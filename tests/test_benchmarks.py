"""The model benchmark runs on the test's backend and says where it ran.

`benchmarks/activation_benchmark.py` at its tiniest (one round of one step,
batch 2, ReLU and AdaptiveScaling), in this process: its table must be
headed by the CPU and the backend, and every variant must have a finite
ratio to ReLU in each timed column. TensorFlow measures memory in fresh
processes (seconds each), so there the memory columns are left out; JAX
reads them from the compiled step, and PyTorch prints "n/a".
"""

import importlib.util
import math
import os
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def _load(name):
    sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_names_the_machine_and_gives_every_variant_a_ratio(capsys):
    benchmark = _load("activation_benchmark")
    backend = keras.backend.backend()
    variants = ["relu", "alpha-relu"]
    argv = ["--variants", *variants, "--rounds", "1", "--steps", "1",
            "--batch-size", "2", "--mode", "both"]
    if backend == "tensorflow":
        argv.append("--no-memory")
    benchmark.main(argv)
    out = capsys.readouterr().out
    header, *_ = out.splitlines()
    assert f"CPU: {benchmark._machine.cpu_model()}" in header
    assert f"backend {backend}" in header
    assert "jit_compile=auto" in header
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in out.splitlines() if line.startswith("| ")}
    columns = [c.strip() for c in rows.pop("activation")]
    assert {"train step / ReLU", "predict / ReLU",
            "fit step / ReLU"} <= set(columns)
    assert sorted(rows) == sorted(variants)
    for name, cells in rows.items():
        for column, cell in zip(columns, cells, strict=True):
            cell = cell.strip()
            if column.endswith("/ ReLU") and backend == "torch" and (
                    column.startswith("peak")):
                assert cell == "n/a"
            elif column.endswith("/ ReLU"):
                assert math.isfinite(float(cell.rstrip("x"))), (name, column)
