"""Every code example in the docs runs: the docstring examples of every
module (doctest) and the ```python blocks of README.md and docs/."""

import doctest
import importlib
import os
import pathlib
import pkgutil
import re

import pytest

import keras_learnact

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = sorted(
    info.name for info in pkgutil.walk_packages(
        keras_learnact.__path__, prefix="keras_learnact.")
    if not info.name.endswith("__main__")
) + ["keras_learnact"]
PAGES = sorted(
    [ROOT / "README.md"] + list((ROOT / "docs").rglob("*.md")), key=str
)
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_public_api_has_docstring_examples():
    """Every public class and function carries Args and an example."""
    missing = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            doc = obj.__doc__ or ""
            is_error = isinstance(obj, type) and issubclass(obj, Exception)
            if callable(obj) and not ("Example" in doc and (
                    is_error or "Args:" in doc or "Returns:" in doc)):
                missing.append(f"{name}.{attr}")
    assert not missing, missing


@pytest.mark.parametrize(
    "page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_markdown_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = CODE_BLOCK.findall(page.read_text())
    if not blocks:
        return  # a page without code: nothing to run
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    for number, block in enumerate(blocks):
        code = compile(block, f"{page.name}[block {number}]", "exec")
        exec(code, namespace)  # noqa: S102
    os.chdir(ROOT)
