"""The command line's arguments and speed, and the light package import it
relies on: reading a snapshot file imports no deep-learning backend, while
`import keras_learnact` still registers the layers for `load_model`.

(`tests/test_plotting.py` checks what the `plot` and `info` commands draw
and print.)
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_learnact
from keras_learnact import cli
from keras_learnact import snapshots as ks

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("keras", "tensorflow", "jax", "torch")


@pytest.fixture
def saved(tmp_path):
    snaps = ks.Snapshots(np.linspace(-4, 4, 21))
    for epoch in range(3):
        snaps.add(epoch, {"abu": {
            "class": "ABU", "curves": np.tanh(np.linspace(-4, 4, 21))[None],
            "params": {"alpha": np.float32(epoch)}}})
    path = str(tmp_path / "activations.npz")
    ks.save(path, snaps)
    return path


def python(*args, code=None):
    """Runs a fresh Python on the repository, with TensorFlow allowed to
    log as it does for a user (no TF_CPP_MIN_LOG_LEVEL)."""
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO_ROOT
    command = [sys.executable, *args] + (["-c", code] if code else [])
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


# -- every argument is checked before anything is written --

BAD_ARGUMENTS = [  # (the option named in the error, the arguments)
    ("--channels", ["--channels", "0"]),
    ("--channels", ["--channels", "-3"]),
    ("--channels", ["--channels", "two"]),
    ("--fps", ["--fps", "-1"]),
    ("--fps", ["--fps", "nan"]),
    ("--dpi", ["--dpi", "0"]),
    ("--fps", ["--fps", "-1", "--gif", "{tmp}/e.gif"]),
    ("--gif", ["--gif", "{tmp}/evolution.avi"]),
    ("--final", ["--final", "{tmp}/final.docx"]),
]


@pytest.mark.parametrize("option, bad", BAD_ARGUMENTS, ids=[
    " ".join(bad).replace("{tmp}/", "") for _, bad in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_the_usage_before_writing(
        option, bad, saved, tmp_path, capsys):
    """Issue #16 6: these exited 1, or failed after the PNG was written."""
    bad = [a.format(tmp=tmp_path) for a in bad]
    with pytest.raises(SystemExit) as info:
        cli.main(["plot", saved, "-o", str(tmp_path / "e.png"), *bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: keras-learnact plot")
    assert f"error: argument {option}: " in err
    assert bad[bad.index(option) + 1] in err  # the bad value, named
    assert os.listdir(tmp_path) == ["activations.npz"]  # nothing written


def test_mp4_without_ffmpeg_exits_2_before_writing(
        saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg to be found
    with pytest.raises(SystemExit) as info:
        cli.main(["plot", saved, "-o", str(tmp_path / "evolution.png"),
                  "--gif", str(tmp_path / "evolution.mp4")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "ffmpeg" in err
    assert os.listdir(tmp_path) == ["activations.npz"]


def test_a_missing_output_folder_exits_1_before_writing(
        saved, tmp_path, capsys):
    gif = str(tmp_path / "missing" / "evolution.gif")
    code = cli.main(["plot", saved, "-o", str(tmp_path / "evolution.png"),
                     "--gif", gif])
    assert code == 1
    assert gif in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["activations.npz"]


def test_good_arguments_still_plot(saved, tmp_path):
    pytest.importorskip("matplotlib")
    png, gif = tmp_path / "e.png", tmp_path / "e.gif"
    assert cli.main(["plot", saved, "-o", str(png), "--gif", str(gif),
                     "--channels", "1", "--fps", "2.5", "--dpi", "30"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert gif.read_bytes()[:3] == b"GIF"


def test_version():
    done = python("-m", "keras_learnact", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"keras-learnact {keras_learnact.__version__}\n"


# -- reading a file imports no backend --

def imported_modules(importtime_log):
    """The top-level modules named in a `-X importtime` log."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_info_imports_no_backend_and_prints_nothing_on_stderr(saved):
    """Issue #16 6: `info` took 3.6 s, importing TensorFlow to read a .npz,
    and printed TensorFlow's log lines."""
    done = python("-m", "keras_learnact", "info", saved)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "epochs: 3 snapshots: 0, 1, 2" in done.stdout
    done = python("-X", "importtime", "-m", "keras_learnact", "info", saved)
    assert done.returncode == 0
    modules = imported_modules(done.stderr)
    assert "numpy" in modules and "keras_learnact" in modules
    assert not modules & {*BACKENDS, "matplotlib"}


def test_explain_imports_no_backend(saved):
    """Explaining a file is NumPy work too (issue #19)."""
    done = python("-X", "importtime", "-m", "keras_learnact", "explain",
                  saved, "--json")
    assert done.returncode == 0, done.stderr
    modules = imported_modules(done.stderr)
    assert "keras_learnact" in modules
    assert not modules & {*BACKENDS, "matplotlib"}
    assert '"function": "tanh"' in done.stdout


LOAD = textwrap.dedent("""
    import sys
    BACKENDS = {backends!r}
    if {learnact_first}:
        import keras_learnact as kla
        from keras_learnact import cli, snapshots  # noqa: F401
        assert not BACKENDS & set(sys.modules), BACKENDS & set(sys.modules)
        import keras
    else:
        import keras
        import keras_learnact as kla
    assert keras.saving.get_registered_object("keras_learnact>PWLU")
    model = keras.saving.load_model({path!r})
    import numpy as np
    y = model(np.array({x!r}, "float32"))
    np.save({out!r}, keras.ops.convert_to_numpy(y))
    assert kla.ABU is kla.layers.ABU is kla.custom_objects()["ABU"]
    assert kla.callbacks.ActivationSnapshot.__name__ == "ActivationSnapshot"
    assert set(kla.__all__) <= set(dir(kla))
    try:
        kla.nothing
    except AttributeError as error:
        assert "nothing" in str(error)
    else:
        raise AssertionError("kla.nothing exists")
""")


@pytest.mark.parametrize("learnact_first", [True, False],
                         ids=["keras_learnact-then-keras",
                              "keras-then-keras_learnact"])
def test_import_keras_learnact_registers_the_layers(learnact_first,
                                                    tmp_path):
    """A `.keras` file loads in a fresh process after `import
    keras_learnact`, whichever of it and Keras comes first; importing it
    alone imports no backend."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((3,)), keras.layers.Dense(4), keras_learnact.ABU(),
        keras.layers.Dense(4), keras_learnact.PWLU(start_realigned=True),
    ])
    x = [[0.5, -1.0, 2.0], [-3.0, 0.1, 0.7]]
    expected = keras.ops.convert_to_numpy(model(np.array(x, "float32")))
    path, out = str(tmp_path / "m.keras"), str(tmp_path / "out.npy")
    model.save(path)
    done = python(code=LOAD.format(
        backends=set(BACKENDS), learnact_first=learnact_first, path=path,
        out=out, x=x))
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-6)
