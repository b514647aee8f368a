"""torch.export, ONNX, and swapping a model's layers between torch.nn and lstm_ext."""
import io

import pytest
import torch
from torch import nn

import lstm_ext

I, H = 8, 16


class Tagger(nn.Module):
    """A model that holds recurrent layers the way users' models do."""

    def __init__(self, recurrent: nn.Module, features: int):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(features, 3)

    def forward(self, x):
        y, state = self.recurrent(x)
        return self.head(y), state


def _models():
    return [
        Tagger(lstm_ext.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True), 2 * H),
        Tagger(lstm_ext.LSTM(I, H, batch_first=True, proj_size=5), 5),
        Tagger(lstm_ext.RNN(I, H, batch_first=True, nonlinearity="relu"), H),
    ]


@pytest.mark.parametrize("model", _models(), ids=["lstm-2layer-bi", "lstm-proj", "rnn-relu"])
def test_export_runs_like_the_eager_model(model):
    model.eval()
    x = torch.randn(4, 6, I)
    batch, steps = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("steps", min=2, max=512)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch, 1: steps},))
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any(op.startswith("lstm_ext.") for op in ops), ops
    for shape in ((4, 6, I), (9, 6, I), (1, 3, I), (2, 40, I)):
        fresh = torch.randn(shape)
        torch.testing.assert_close(exported.module()(fresh), model(fresh), atol=0, rtol=0)


def test_export_under_no_grad_saves_no_activations():
    """Exported for inference, the layer ops are called with save_for_backward=False."""
    model = _models()[0].eval()
    with torch.no_grad():
        exported = torch.export.export(model, (torch.randn(2, 5, I),))
    calls = [n for n in exported.graph.nodes if str(n.target).startswith("lstm_ext.lstm_forward")]
    assert calls and all(n.args[7] is False for n in calls), [n.args for n in calls]


def test_onnx_export_refuses_with_a_clear_error_and_the_way_out():
    model = _models()[0].eval()
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match=r"no ONNX export.*lstm_ext\.to_torch_nn"):
        torch.onnx.export(model, (torch.randn(2, 5, I),), io.BytesIO(), dynamo=False)


@pytest.mark.parametrize("training", [True, False])
def test_from_and_to_torch_nn_keep_weights_and_mode(training):
    model = nn.Sequential(
        nn.ModuleDict({"enc": nn.LSTM(I, H, num_layers=2, dropout=0.0, batch_first=True, proj_size=4),
                       "cell": nn.RNNCell(I, H, nonlinearity="relu", bias=False),
                       "lstm_cell": nn.LSTMCell(I, H)}),
    )
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 5, I)

    def outputs(m):
        d = m[0]
        return d["enc"](x)[0], d["cell"](x[:, 0]), d["lstm_cell"](x[:, 0])[1]

    expected = outputs(model)
    lstm_ext.from_torch_nn(model)
    assert [type(model[0][k]) for k in ("enc", "cell", "lstm_cell")] == [lstm_ext.LSTM, lstm_ext.RNNCell,
                                                                          lstm_ext.LSTMCell]
    assert model[0]["enc"].proj_size == 4 and model[0]["cell"].nonlinearity == "relu"
    assert all(m.training == training for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    for got, want in zip(outputs(model), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    lstm_ext.to_torch_nn(model)
    assert type(model[0]["enc"]) is nn.LSTM and type(model[0]["cell"]) is nn.RNNCell
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_from_torch_nn_on_a_bare_layer_returns_the_twin():
    layer = nn.LSTM(I, H, bidirectional=True)
    ours = lstm_ext.from_torch_nn(layer)
    assert type(ours) is lstm_ext.LSTM and ours.bidirectional
    x = torch.randn(5, 2, I)
    torch.testing.assert_close(ours(x)[0], layer(x)[0], atol=1e-6, rtol=1e-5)
