"""Smoke tests: the examples run, with tiny settings, and show what they claim."""
import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drop_in_trains_like_torch_nn():
    losses = _load("drop_in").main(["--steps", "3"])
    assert losses["lstm_ext.LSTM"] == pytest.approx(losses["torch.nn.LSTM"], rel=1e-5)
