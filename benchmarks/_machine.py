"""The machine and software a benchmark ran on, for the head of its tables.

A ratio measured on one machine does not carry to another: a CPU whose
convolutions are twice as fast makes every activation's overhead weigh
twice as much, and each backend compiles differently. So every table of
the scripts in this folder is headed by `header()`: the CPU model, its
cores and vector instructions, any accelerator, the Keras backend with
its framework's version, and how the training step was compiled.

Example:

    python -c "import _machine; print(_machine.header('auto'))"
"""

import os
import platform


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as info:
            return info.read()
    except OSError:
        return ""


def cpu_model():
    """The processor's model name, as the kernel reports it.

    Returns:
        A string such as `"AMD EPYC 7B13"`, or `platform.processor()` where
        /proc/cpuinfo has none.

    Example:

    >>> isinstance(cpu_model(), str)
    True
    """
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def simd_level():
    """The widest vector instructions the CPU reports.

    Returns:
        `"avx512f"`, `"avx2"`, `"sve"` or `"asimd"` (ARM), `"no avx2"` for
        an x86 CPU with neither, or `"unknown"` without /proc/cpuinfo.

    Example:

    >>> simd_level() in ("avx512f", "avx2", "sve", "asimd", "no avx2",
    ...                  "unknown")
    True
    """
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    for level in ("avx512f", "avx2", "sve", "asimd"):
        if level in flags:
            return level
    return "no avx2" if flags else "unknown"


def framework():
    """The framework under Keras's backend, with its version.

    Returns:
        A string such as `"tensorflow 2.21.0"`.

    Example:

        framework()  # 'jax 0.7.1' under KERAS_BACKEND=jax
    """
    import keras

    name = keras.backend.backend()
    try:
        module = __import__(name)
    except ImportError:
        return name
    return f"{name} {getattr(module, '__version__', '?')}"


def accelerator():
    """The name of the first GPU the backend sees, or `"none"`.

    Example:

        accelerator()  # 'NVIDIA H100 80GB HBM3' on a GPU machine
    """
    import keras

    name = keras.backend.backend()
    try:
        if name == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", "GPU")
        elif name == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform != "cpu"]
            if gpus:
                return gpus[0].device_kind
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # a broken driver must not stop a CPU benchmark
        return "unknown"
    return "none"


def resolve_jit(requested):
    """Whether `Model.compile(jit_compile=requested)` compiles the step.

    `"auto"`, Keras's default, is resolved by Keras itself on a tiny
    model: on JAX it compiles the step with `jax.jit`, on TensorFlow it
    uses XLA only where a GPU is present, on PyTorch it runs eagerly.

    Args:
        requested: `"auto"`, `True` or `False`.

    Returns:
        A bool.

    Example:

        resolve_jit("auto")  # True on JAX, False on a TensorFlow CPU
    """
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse", jit_compile=requested)
    return bool(model.jit_compile)


def compile_mode(requested):
    """What `Model.compile(jit_compile=requested)` does on this backend.

    Args:
        requested: `"auto"`, `True` or `False` (see `resolve_jit`).

    Returns:
        A string such as `"jit_compile=auto -> True (jax.jit, XLA)"`.

    Example:

        compile_mode("auto")  # 'jit_compile=auto -> False (tf.function
                              #  graph, no XLA)' on a TensorFlow CPU
    """
    import keras

    resolved = resolve_jit(requested)
    how = {
        ("tensorflow", True): "XLA",
        ("tensorflow", False): "tf.function graph, no XLA",
        ("jax", True): "jax.jit, XLA",
        ("jax", False): "eager, no jax.jit",
        ("torch", True): "torch.compile",
        ("torch", False): "eager",
    }.get((keras.backend.backend(), resolved), "")
    return f"jit_compile={requested} -> {resolved} ({how})"


def describe(jit_compile=None):
    """The machine and software, as a dict (for JSON output).

    Args:
        jit_compile: the `jit_compile` the benchmark passed to `compile`,
            or None to leave the compile mode out.

    Returns:
        A dict with `cpu`, `cores`, `simd`, `accelerator`, `backend`,
        `framework`, `keras` and, with `jit_compile`, `compile`.

    Example:

        describe("auto")["cpu"]  # 'AMD EPYC 7B13'
    """
    import keras

    found = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": simd_level(),
        "accelerator": accelerator(),
        "backend": keras.backend.backend(),
        "framework": framework(),
        "keras": keras.__version__,
    }
    if jit_compile is not None:
        found["compile"] = compile_mode(jit_compile)
    return found


def header(jit_compile=None, machine=None):
    """One line naming the machine and software, to print above a table.

    Args:
        jit_compile: as for `describe`.
        machine: a dict from `describe` (default: described now).

    Returns:
        A string such as `"CPU: AMD EPYC 7B13, 2 cores, avx2; backend
        tensorflow (tensorflow 2.21.0), keras 3.15.0; jit_compile=auto ->
        False (tf.function graph, no XLA)"`.

    Example:

        print(header("auto"))
    """
    m = machine or describe(jit_compile)
    line = f"CPU: {m['cpu']}, {m['cores']} cores, {m['simd']}"
    if m["accelerator"] != "none":
        line += f"; GPU: {m['accelerator']}"
    line += (f"; backend {m['backend']} ({m['framework']}), "
             f"keras {m['keras']}")
    if "compile" in m:
        line += f"; {m['compile']}"
    return line
