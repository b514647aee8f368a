"""ONNX export of lstm_ext's layers and cells (lstm_ext/onnx_export.py).

Each model is exported once per exporter, with the plain call
``torch.onnx.export(model, args, path, input_names=..., dynamic_axes=...)``:
torch's default exporter (dynamo on torch 2.13) and ``dynamo=False``. Every
exported model passes ``onnx.checker.check_model``, holds ONNX's own
LSTM / GRU / RNN nodes (one per layer, no Loop or Scan), and onnxruntime runs
it on fresh inputs of another batch size and sequence length, within 1e-5 of
eager lstm_ext (fp32).
"""
import importlib.util
import logging
import pathlib
import textwrap
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_ext

onnx = pytest.importorskip("onnx", reason="ONNX export tests need onnx: pip install onnx onnxruntime onnxscript")
ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime: pip install onnxruntime")

_HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
# torch's default exporter (dynamo=True on torch 2.13) needs onnxscript.
DEFAULT = pytest.param("default", marks=pytest.mark.skipif(
    not _HAS_ONNXSCRIPT, reason="torch.onnx's dynamo exporter needs onnxscript: pip install onnxscript"))
EXPORTERS = [DEFAULT, "torchscript"]

I, H = 5, 7
EXPORT_B, EXPORT_T = 3, 5
RUN_B, RUN_T = 4, 9
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _quiet():
    """The exporters' progress lines, TracerWarnings and the like."""
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


# --------------------------------------------------------------------------- models


class WithState(nn.Module):
    """hx given: LSTM 2 layers bidirectional batch_first, GRU 3 layers
    bidirectional time-major, RNN relu 2 layers batch_first; LSTMCell (two
    steps), GRUCell and RNNCell (relu)."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = lstm_ext.GRU(I, H, num_layers=3, bidirectional=True)
        self.rnn = lstm_ext.RNN(I, H, num_layers=2, nonlinearity="relu", batch_first=True)
        self.lstm_cell = lstm_ext.LSTMCell(I, H)
        self.gru_cell = lstm_ext.GRUCell(I, H)
        self.rnn_cell = lstm_ext.RNNCell(I, H, nonlinearity="relu")

    def forward(self, x, h_lstm, c_lstm, h_gru, h_rnn, h, c):
        y1, (h1, c1) = self.lstm(x, (h_lstm, c_lstm))
        y2, h2 = self.gru(x.transpose(0, 1), h_gru)
        y3, h3 = self.rnn(x, h_rnn)
        h4, c4 = self.lstm_cell(x[:, 1], self.lstm_cell(x[:, 0], (h, c)))
        return y1, h1, c1, y2, h2, y3, h3, h4, c4, self.gru_cell(x[:, 0], h), self.rnn_cell(x[:, 0], h)

    @staticmethod
    def inputs(batch, steps):
        return {"x": torch.randn(batch, steps, I), "h_lstm": torch.randn(4, batch, H),
                "c_lstm": torch.randn(4, batch, H), "h_gru": torch.randn(6, batch, H),
                "h_rnn": torch.randn(2, batch, H), "h": torch.randn(batch, H), "c": torch.randn(batch, H)}

    axes = {"x": {0: "batch", 1: "steps"}, "h_lstm": {1: "batch"}, "c_lstm": {1: "batch"},
            "h_gru": {1: "batch"}, "h_rnn": {1: "batch"}, "h": {0: "batch"}, "c": {0: "batch"}}
    nodes = {"LSTM": 4, "GRU": 4, "RNN": 3}
    directions = {"LSTM": ["bidirectional"] * 2 + ["forward"] * 2, "GRU": ["bidirectional"] * 3 + ["forward"],
                  "RNN": ["forward"] * 3}
    activations = [["Relu"]] * 3


class WithoutState(nn.Module):
    """No hx: LSTM without bias (time-major), GRU without bias bidirectional
    batch_first, RNN tanh 3 layers bidirectional; LSTMCell and GRUCell without
    bias, RNNCell (tanh)."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(I, H, bias=False)
        self.gru = lstm_ext.GRU(I, H, bias=False, bidirectional=True, batch_first=True)
        self.rnn = lstm_ext.RNN(I, H, num_layers=3, bidirectional=True)
        self.lstm_cell = lstm_ext.LSTMCell(I, H, bias=False)
        self.gru_cell = lstm_ext.GRUCell(I, H, bias=False)
        self.rnn_cell = lstm_ext.RNNCell(I, H)

    def forward(self, x):
        y1, (h1, c1) = self.lstm(x.transpose(0, 1))
        y2, h2 = self.gru(x)
        y3, h3 = self.rnn(x.transpose(0, 1))
        h4, c4 = self.lstm_cell(x[:, 0])
        return y1, h1, c1, y2, h2, y3, h3, h4, c4, self.gru_cell(x[:, 0]), self.rnn_cell(x[:, 0])

    @staticmethod
    def inputs(batch, steps):
        return {"x": torch.randn(batch, steps, I)}

    axes = {"x": {0: "batch", 1: "steps"}}
    nodes = {"LSTM": 2, "GRU": 2, "RNN": 4}
    directions = {"LSTM": ["forward"] * 2, "GRU": ["bidirectional", "forward"],
                  "RNN": ["bidirectional"] * 3 + ["forward"]}
    activations = [["Tanh", "Tanh"]] * 3 + [["Tanh"]]


class Packed(nn.Module):
    """pack_padded_sequence -> layer -> pad_packed_sequence, unsorted lengths:
    LSTM 2 layers bidirectional batch_first with hx, GRU without hx."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = lstm_ext.GRU(I, H)

    def forward(self, x, lengths, h, c):
        steps = x.size(1)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y1, (h1, c1) = self.lstm(packed, (h, c))
        y1 = pad_packed_sequence(y1, batch_first=True, total_length=steps)[0]
        packed = pack_padded_sequence(x.transpose(0, 1), lengths, enforce_sorted=False)
        y2, h2 = self.gru(packed)
        y2 = pad_packed_sequence(y2, total_length=steps)[0]
        return y1, h1, c1, y2, h2

    @staticmethod
    def inputs(batch, steps):
        lengths = torch.randint(1, steps + 1, (batch,))
        lengths[1 % batch] = 1
        return {"x": torch.randn(batch, steps, I), "lengths": lengths, "h": torch.randn(4, batch, H),
                "c": torch.randn(4, batch, H)}

    axes = {"x": {0: "batch", 1: "steps"}, "lengths": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}}
    nodes = {"LSTM": 2, "GRU": 1}


# --------------------------------------------------------------------------- export and run


def _export(model: nn.Module, exporter: str, path, inputs: dict, axes: dict):
    """The plain call, as a user writes it; -> the exported ModelProto."""
    kwargs = {} if exporter == "default" else {"dynamo": False}
    torch.onnx.export(model, tuple(inputs.values()), str(path), input_names=list(inputs), dynamic_axes=axes,
                      **kwargs)
    return onnx.load(str(path))


def _flat(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for o in outputs for t in _flat(o)]


_EXPORTS = {}


@pytest.fixture
def exported(request, tmp_path_factory):
    """(model, ModelProto) for the parametrized model class and exporter, exported once."""
    cls, exporter = request.param
    key = (cls.__name__, exporter)
    if key not in _EXPORTS:
        torch.manual_seed(0)
        model = cls().eval()
        path = tmp_path_factory.mktemp("onnx") / f"{cls.__name__}-{exporter}.onnx"
        _EXPORTS[key] = model, _export(model, exporter, path, cls.inputs(EXPORT_B, EXPORT_T), cls.axes)
    return _EXPORTS[key]


def _cases(*classes):
    cases = []
    for cls in classes:
        for exp in EXPORTERS:
            name, marks = (exp, ()) if isinstance(exp, str) else (exp.values[0], exp.marks)
            cases.append(pytest.param((cls, name), id=f"{cls.__name__}-{name}", marks=marks))
    return cases


ALL = _cases(WithState, WithoutState)


def _max_errors(model, proto, inputs):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    got = session.run(None, feed)
    with torch.no_grad():
        want = _flat(model(**inputs))
    assert len(got) == len(want)
    errors = []
    for g, w in zip(got, want):
        assert tuple(g.shape) == tuple(w.shape)
        errors.append(float((torch.from_numpy(g) - w).abs().max()))
    return errors


@pytest.mark.parametrize("exported", ALL, indirect=True)
def test_onnxruntime_matches_eager_on_another_batch_and_length(exported):
    model, proto = exported
    torch.manual_seed(1)
    errors = _max_errors(model, proto, type(model).inputs(RUN_B, RUN_T))
    assert max(errors) <= ATOL, errors


@pytest.mark.parametrize("exported", ALL, indirect=True)
def test_graph_is_checked_and_made_of_onnx_recurrent_nodes(exported):
    model, proto = exported
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert not {"Loop", "Scan", "If"} & set(ops), ops
    assert not any(node.domain not in ("", "ai.onnx") for node in proto.graph.node), ops
    counts = {kind: ops.count(kind) for kind in ("LSTM", "GRU", "RNN")}
    assert counts == {kind: type(model).nodes.get(kind, 0) for kind in counts}, ops
    for node in proto.graph.node:
        if node.op_type not in ("LSTM", "GRU", "RNN"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["hidden_size"] == H
        if node.op_type == "GRU":
            assert attrs["linear_before_reset"] == 1
    # batch (and steps) stay symbolic
    for graph_input in proto.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        for axis in type(model).axes.get(graph_input.name, {}):
            assert dims[axis].dim_param and not dims[axis].dim_value, (graph_input.name, dims)


def _attrs(proto, op_type):
    return [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for node in proto.graph.node if node.op_type == op_type]


@pytest.mark.parametrize("exported", ALL, indirect=True)
def test_directions_and_activations_are_the_modules(exported):
    model, proto = exported
    for kind, expected in type(model).directions.items():
        assert [a.get("direction", b"forward").decode() for a in _attrs(proto, kind)] == expected, kind
    assert [[s.decode() for s in a["activations"]] for a in _attrs(proto, "RNN")] == type(model).activations


def test_packed_sequences_export_through_sequence_lens(tmp_path):
    torch.manual_seed(0)
    model = Packed().eval()
    proto = _export(model, "torchscript", tmp_path / "packed.onnx", Packed.inputs(EXPORT_B, EXPORT_T), Packed.axes)
    onnx.checker.check_model(proto, full_check=True)
    recurrent = [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU")]
    assert [n.op_type for n in recurrent] == ["LSTM", "LSTM", "GRU"]
    assert all(len(n.input) > 4 and n.input[4] for n in recurrent), "sequence_lens not wired"
    assert not {"Loop", "Scan"} & {n.op_type for n in proto.graph.node}
    for seed in (1, 2):
        torch.manual_seed(seed)
        inputs = Packed.inputs(RUN_B, RUN_T)
        errors = _max_errors(model, proto, inputs)
        assert max(errors) <= ATOL, (inputs["lengths"], errors)


@pytest.mark.skipif(not _HAS_ONNXSCRIPT, reason="torch.onnx's dynamo exporter needs onnxscript: pip install onnxscript")
def test_packed_sequences_with_the_dynamo_exporter_raise_a_clear_error(tmp_path):
    class PackedGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = lstm_ext.GRU(I, H)

        def forward(self, x, lengths):
            return self.gru(pack_padded_sequence(x, lengths))[1]

    inputs = {"x": torch.randn(EXPORT_T, EXPORT_B, I), "lengths": torch.tensor([EXPORT_T, 2, 1])}
    with pytest.raises(torch.onnx.errors.OnnxExporterError,
                       match=r"PackedSequence has no ONNX export with the dynamo-based exporter(.|\n)*dynamo=False"):
        _export(PackedGRU().eval(), "default", tmp_path / "m.onnx", inputs, {})


class _Single(nn.Module):
    def __init__(self, layer, **call):
        super().__init__()
        self.layer, self.call = layer, call

    def forward(self, x):
        return self.layer(x, **self.call)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_proj_size_raises_a_clear_error(exporter, tmp_path):
    model = _Single(lstm_ext.LSTM(I, H, proj_size=3)).eval()
    with pytest.raises(torch.onnx.errors.OnnxExporterError,
                       match=r"proj_size > 0 has no ONNX export: ONNX's LSTM operator has no projection"):
        _export(model, exporter, tmp_path / "m.onnx", {"x": torch.randn(EXPORT_T, EXPORT_B, I)}, {})


def test_return_all_states_raises_a_clear_error(tmp_path):
    model = _Single(lstm_ext.GRU(I, H), return_all_states=True).eval()
    with pytest.raises(lstm_ext.OnnxExportError, match="return_all_states=True has no ONNX export"):
        _export(model, "torchscript", tmp_path / "m.onnx", {"x": torch.randn(EXPORT_T, EXPORT_B, I)}, {})


def test_to_torch_nn_still_exports_through_torch_nn(tmp_path):
    torch.manual_seed(0)
    model = WithoutState().eval()
    reference = WithoutState().eval()
    reference.load_state_dict(model.state_dict())
    lstm_ext.to_torch_nn(model)
    assert isinstance(model.lstm, nn.LSTM) and isinstance(model.gru_cell, nn.GRUCell)
    proto = _export(model, "torchscript", tmp_path / "m.onnx", WithoutState.inputs(EXPORT_B, EXPORT_T),
                    WithoutState.axes)
    torch.manual_seed(1)
    errors = _max_errors(reference, proto, WithoutState.inputs(RUN_B, RUN_T))
    assert max(errors) <= ATOL, errors


def test_eager_calls_do_not_take_the_export_path():
    """Outside an export the layers run lstm_ext's ops, not the ONNX nodes."""
    assert not lstm_ext.onnx_export.exporting()
    layer = lstm_ext.LSTM(I, H).eval()
    with torch.no_grad():
        y, (h, c) = layer(torch.randn(EXPORT_T, EXPORT_B, I))
    assert y.abs().sum() > 0 and torch.equal(y[-1], h[0])


@pytest.mark.skipif(not _HAS_ONNXSCRIPT, reason="torch.onnx's dynamo exporter needs onnxscript: pip install onnxscript")
def test_readme_example_exports_and_runs_in_onnxruntime(tmp_path, monkeypatch, capsys):
    """The example in README.md's "Mixed precision, export, distributed training"."""
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("- **ONNX.**"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    monkeypatch.chdir(tmp_path)
    exec(compile(textwrap.dedent(code), "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "tagger.onnx").exists()
    assert float(capsys.readouterr().out.split()[-1]) <= ATOL
