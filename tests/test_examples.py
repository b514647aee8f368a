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


def test_hidden_states_toy_recurrence_and_png(tmp_path):
    out = tmp_path / "hidden_states.png"
    result = _load("hidden_states").main(["--out", str(out), "--hidden", "4", "--word", "abca"])
    # h_t = 0.5 h_{t-1} + x_t through lstm_ext.RNN(relu): (2, -1, 3) -> 3; reordered
    # (-1, 2, 3) -> 4, as relu clips h_1 = -1 to 0; the linear arithmetic gives 3.75.
    assert result["final"] == 3.0
    assert result["reordered"] == 4.0
    assert result["reordered_linear"] == 3.75
    assert result["steps"]["final"] == [2.0, 0.0, 3.0]
    assert result["steps"]["reordered"] == [0.0, 2.0, 4.0]
    assert result["png"] == str(out)
    data = out.read_bytes()
    assert len(data) > 1000
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data[12:16] == b"IHDR" and data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")


def test_seq2seq_runs_tiny():
    result = _load("seq2seq").main(["--steps", "5", "--hidden", "8", "--emb", "4", "--batch", "8", "--test", "16"])
    assert 0.0 <= result["accuracy"] <= 1.0
    assert len(result["examples"]) == 8
    assert all(isinstance(word, str) and isinstance(guess, str) for word, guess in result["examples"])
    # the greedy LSTMCell is the decoder LSTM, step by step
    assert result["cell_vs_lstm_max_diff"] < 1e-5
