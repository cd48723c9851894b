"""Every public layer class must run through the layer contract."""

import importlib
import pathlib

import keras_learnact

from layer_contract import LayerContract


def _covered_classes():
    covered = set()
    for path in pathlib.Path(__file__).parent.glob("test_*.py"):
        module = importlib.import_module(path.stem)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, LayerContract):
                covered.update(case.cls for case in value.cases)
    return covered


def test_every_public_layer_has_contract_cases():
    public = {
        getattr(keras_learnact.layers, name)
        for name in keras_learnact.layers.__all__
        if name != "LearnableActivation"
    }
    missing = public - _covered_classes()
    assert not missing, f"layers without contract cases: {missing}"
