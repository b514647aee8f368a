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
        Tagger(lstm_ext.GRU(I, H, num_layers=2, batch_first=True, bidirectional=True), 2 * H),
        Tagger(lstm_ext.GRU(I, H, batch_first=True, bias=False), H),
    ]


@pytest.mark.parametrize("model", _models(), ids=["lstm-2layer-bi", "lstm-proj", "rnn-relu", "gru-2layer-bi",
                                                  "gru-nobias"])
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


@pytest.mark.parametrize("index,op", [(0, "lstm_forward"), (3, "gru_forward")], ids=["lstm", "gru"])
def test_export_under_no_grad_saves_no_activations(index, op):
    """Exported for inference, the layer ops are called with save_for_backward=False."""
    model = _models()[index].eval()
    with torch.no_grad():
        exported = torch.export.export(model, (torch.randn(2, 5, I),))
    calls = [n for n in exported.graph.nodes if str(n.target).startswith(f"lstm_ext.{op}")]
    assert len(calls) == 4 and all(n.args[7] is False for n in calls), [n.args for n in calls]


def test_onnx_export_emits_onnx_recurrent_nodes():
    """lstm_ext layers export as ONNX's own LSTM / RNN nodes (tests/test_onnx.py
    covers the rest: both exporters, onnxruntime, the cells, GRU, packed input);
    proj_size, which ONNX's LSTM cannot express, raises a clear error."""
    onnx = pytest.importorskip("onnx", reason="needs onnx: pip install onnx onnxruntime onnxscript")
    for model, expected in ((_models()[0], ["LSTM", "LSTM"]), (_models()[2], ["RNN"])):
        f = io.BytesIO()
        torch.onnx.export(model.eval(), (torch.randn(2, 5, I),), f, dynamo=False)
        ops = [n.op_type for n in onnx.load_from_string(f.getvalue()).graph.node]
        assert [op for op in ops if op in ("LSTM", "GRU", "RNN", "Loop", "Scan")] == expected, ops
    with pytest.raises(torch.onnx.errors.OnnxExporterError, match=r"proj_size > 0 has no ONNX export"):
        torch.onnx.export(_models()[1].eval(), (torch.randn(2, 5, I),), io.BytesIO(), dynamo=False)


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
