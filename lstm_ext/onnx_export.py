"""ONNX export of lstm_ext's layers and cells as ONNX's own LSTM, GRU and RNN nodes.

``torch.onnx.export(model, args, f)`` works on a model holding lstm_ext
layers and cells, with either exporter (``dynamo=True``, torch 2.13's default,
and the TorchScript-based ``dynamo=False``); no extra argument is needed. While
an export runs (:func:`exporting`), the modules call :func:`run_layers` /
:func:`cell_step` instead of lstm_ext's custom ops, and these emit one
standard ONNX recurrent node per layer (both directions in one
``direction="bidirectional"`` node; a cell is a one-step node), so that
runtimes use their fused kernels. The dynamo exporter gets the node as
``torch.onnx.ops.symbolic_multi_out``; the TorchScript exporter as an
autograd.Function whose ``symbolic`` writes it (its traced value is
lstm_ext's own result).

- LSTM: torch.nn's gates ``i, f, g, o`` reordered to ONNX's ``i, o, f, c``;
  GRU: ``r, z, n`` to ``z, r, h``, with ``linear_before_reset=1`` (torch.nn's
  formula, ``b_hn`` inside ``r ⊙ (.)``); RNN: ``activations`` Tanh or Relu.
- ``W``, ``R`` and ``B = [b_ih, b_hh]`` (the split biases, in that order) are
  built from the parameters with a stack and a row gather each, which the
  exporters fold into initializers. ``bias=False`` leaves ``B`` out (ONNX:
  zeros).
- ``initial_h`` / ``initial_c`` come from ``hx`` when it is given (left out,
  i.e. zeros, when it is not); ``h_n`` / ``c_n`` are the nodes' ``Y_h`` /
  ``Y_c``. ``batch_first`` is a Transpose around the nodes (ONNX's
  ``layout=1`` is not implemented by onnxruntime's CPU kernels).
- The batch and sequence dimensions stay symbolic: export with
  ``dynamic_shapes`` (dynamo) or ``dynamic_axes`` (either) to keep them
  dynamic in the graph.
- A PackedSequence (``pack_padded_sequence`` inside the model, then
  ``pad_packed_sequence(..., total_length=...)``, so that the eager output
  keeps the padded length as ONNX's does) exports through the nodes'
  ``sequence_lens`` with ``dynamo=False``, the same way torch.nn's layers do
  (torch's ONNX peephole pass moves the packing past the nodes). The dynamo
  exporter cannot express packed sequences (torch.nn's layers fail there
  too): it raises :class:`OnnxExportError` saying so.
- ``dynamo=False`` on a bare layer (the model *is* the LSTM / GRU / RNN)
  fails in torch's exporter, which passes the keyword-only
  ``return_all_states`` positionally: export a module that holds the layer.

Raises :class:`OnnxExportError` (a ``torch.onnx.errors.OnnxExporterError``)
for what ONNX's operators cannot express: ``proj_size > 0`` (ONNX's LSTM has
no projection) and ``return_all_states=True``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence
from torch.onnx.errors import OnnxExporterError

__all__ = ["OnnxExportError", "exporting", "run_layers", "cell_step"]


class OnnxExportError(OnnxExporterError):
    """An lstm_ext layer's configuration or input has no ONNX form."""


try:  # the flags behind torch.onnx.is_in_onnx_export()
    from torch.onnx._internal.exporter import _flags as _dynamo_flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _torchscript_globals

    _FLAGS = hasattr(_dynamo_flags, "_is_onnx_exporting") and hasattr(_torchscript_globals, "_in_onnx_export")
except ImportError:  # another torch's layout
    _FLAGS = False


def exporting() -> bool:
    """Whether a ``torch.onnx.export`` is running (either exporter), as
    ``torch.onnx.is_in_onnx_export()`` says, but read from its flags: that
    function costs ~1 us per call (it imports), and torch.compile folds it
    to False, while the dynamo exporter, when its non-strict capture fails
    (say, on an OnnxExportError below), retries with ``torch.export(strict=True)``,
    which must take this branch too (and raise the same error rather than
    capture lstm_ext's custom ops). Under torch.compile the flags read False."""
    if _FLAGS:
        return _dynamo_flags._is_onnx_exporting or _torchscript_globals._in_onnx_export
    return torch.onnx.is_in_onnx_export()


# torch.nn's gate blocks, in ONNX's order: i,f,g,o -> i,o,f,c; r,z,n -> z,r,h.
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}
_NUM_OUTPUTS = {"LSTM": 3, "GRU": 2, "RNN": 2}


class _Node(tuple):
    """What a recurrent node is: op type, hidden size, directions, and the
    per-op attributes."""

    __slots__ = ()

    def __new__(cls, kind: str, hidden: int, directions: int, relu: bool = False):
        return super().__new__(cls, (kind, hidden, directions, relu))

    kind = property(lambda self: self[0])
    hidden = property(lambda self: self[1])
    directions = property(lambda self: self[2])
    relu = property(lambda self: self[3])

    def attributes(self) -> dict:
        attrs = {"hidden_size": self.hidden, "direction": "bidirectional" if self.directions == 2 else "forward"}
        if self.kind == "GRU":
            attrs["linear_before_reset"] = 1
        elif self.kind == "RNN":
            attrs["activations"] = ["Relu" if self.relu else "Tanh"] * self.directions
        return attrs


def _gate_rows(kind: str, hidden: int, device, copies: int = 1) -> Optional[Tensor]:
    """The rows of a torch.nn gate-stacked tensor ([G*H, ...], or ``copies``
    of them one after the other) in ONNX's gate order; None when the orders
    agree."""
    order = _GATE_ORDER[kind]
    if len(order) == 1:
        return None
    size = len(order) * hidden
    rows = [copy * size + gate * hidden + j for copy in range(copies) for gate in order for j in range(hidden)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def _onnx_weights(kind: str, hidden: int, params: Sequence[dict], bias: bool):
    """W [D, G*H, I], R [D, G*H, H] and B [D, 2*G*H] (or None) in ONNX's gate
    order, from one parameter dict (weight_ih, weight_hh, bias_ih, bias_hh)
    per direction: a stack and one row gather each (few ops, which the
    exporters fold into the initializers)."""
    device = params[0]["weight_ih"].device
    rows = _gate_rows(kind, hidden, device)

    def ordered(tensors, rows):
        stacked = torch.stack(tensors)
        return stacked if rows is None else stacked.index_select(1, rows)

    W = ordered([p["weight_ih"] for p in params], rows)
    R = ordered([p["weight_hh"] for p in params], rows)
    B = None
    if bias:
        B = ordered([torch.cat([p["bias_ih"], p["bias_hh"]]) for p in params], _gate_rows(kind, hidden, device, 2))
    return W, R, B


# --------------------------------------------------------------------------- the node, per exporter


def _trim(inputs: list) -> list:
    """ONNX lets trailing optional inputs be left out."""
    while inputs and inputs[-1] is None:
        inputs.pop()
    return inputs


_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _TorchScriptNode(torch.autograd.Function):
    """The node for the TorchScript-based exporter (``dynamo=False``): traced
    as one PythonOp whose value is lstm_ext's own result, ``eager(x,
    params, h0, c0, seq_lens)`` (so that the trace goes on with the right values), and
    exported through :meth:`symbolic` as the ONNX node. Every tensor the
    eager result reads is an input (the tracer records the forward's ops as
    a subgraph of the inputs), hence the parameters in torch.nn's layout
    after the ONNX ones, which the symbolic leaves unused."""

    @staticmethod
    def forward(ctx, node, eager, x, W, R, B, seq_lens, h0, c0, *flat_params):
        params = [dict(zip(_PARAM_NAMES, flat_params[i:i + 4])) for i in range(0, len(flat_params), 4)]
        return eager(x, params, h0, c0, seq_lens)

    @staticmethod
    def symbolic(g, node, eager, x, W, R, B, seq_lens, h0, c0, *flat_params):
        from torch.onnx._internal.torchscript_exporter import symbolic_helper

        if seq_lens is not None and seq_lens.node().kind() != "prim::PackPadded":
            raise OnnxExportError(
                "lstm_ext: a PackedSequence exports to ONNX only when the model makes it with "
                "torch.nn.utils.rnn.pack_padded_sequence (its lengths become the nodes' sequence_lens); "
                "this one was made elsewhere (e.g. passed in as an input). Pass the padded tensor and "
                "the lengths to the model, and pack inside it."
            )
        states = (h0, c0) if node.kind == "LSTM" else (h0,)
        inputs = [
            symbolic_helper._optional_input_placeholder_tensor(g) if value is None else value
            for value in _trim([x, W, R, B, seq_lens, *states])
        ]
        attrs = {}
        for key, value in node.attributes().items():
            attrs[key + ("_s" if isinstance(value, (str, list)) else "_i")] = value
        outputs = g.op(node.kind, *inputs, outputs=_NUM_OUTPUTS[node.kind], **attrs)
        # Y [T, D, B, H] -> [T, B, D*H], as torch.nn's exporter does (its ONNX
        # peephole pass recognises this pattern when it moves a PackPadded
        # past the node).
        y = outputs[0]
        if node.directions == 1:
            y = symbolic_helper._squeeze_helper(g, y, [1])
        else:
            y = g.op("Transpose", y, perm_i=[0, 2, 1, 3])
            y = g.op("Reshape", y, g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64)))
        return (y, *outputs[1:])


def _dynamo_node(node: _Node, x, W, R, B, h0, c0) -> Tuple[Tensor, ...]:
    """The node for the dynamo exporter: an ``onnx_symbolic`` op in the
    exported program, which the exporter writes as the ONNX node itself."""
    T, batch, H, D = x.shape[0], x.shape[1], node.hidden, node.directions
    states = (h0, c0) if node.kind == "LSTM" else (h0,)
    count = _NUM_OUTPUTS[node.kind]
    outputs = torch.onnx.ops.symbolic_multi_out(
        node.kind, _trim([x, W, R, B, None, *states]), node.attributes(),
        dtypes=[x.dtype] * count, shapes=[[T, D, batch, H]] + [[D, batch, H]] * (count - 1),
    )
    y = outputs[0]
    y = y.squeeze(1) if D == 1 else y.transpose(1, 2).flatten(2)
    return (y, *outputs[1:])


def _run_node(node: _Node, eager: Callable, x: Tensor, params: Sequence[dict], bias: bool,
              init: Optional[Tuple[Tensor, ...]], batch_sizes: Optional[Tensor]) -> Tuple[Tensor, ...]:
    """One recurrent node over the sequence ``x`` ([T, B, I], or packed data
    with ``batch_sizes``) from the initial states ``init`` ([D, B, size]
    each, or None for zeros): ``(y [T, B, D*H], h_n [D, B, H][, c_n])``.
    ``eager(x, params, h0, c0, batch_sizes)`` is lstm_ext's own result, in
    that form."""
    W, R, B = _onnx_weights(node.kind, node.hidden, params, bias)
    h0, c0 = (tuple(init) + (None,))[:2] if init is not None else (None, None)
    if torch._C._get_tracing_state() is not None:
        flat_params = [p.get(name) for p in params for name in _PARAM_NAMES]
        return _TorchScriptNode.apply(node, eager, x, W, R, B, batch_sizes, h0, c0, *flat_params)
    return _dynamo_node(node, x, W, R, B, h0, c0)


# --------------------------------------------------------------------------- layers and cells


def _present(*tensors):
    return tuple(t for t in tensors if t is not None)


def run_layers(module, input, hx, return_all_states: bool):
    """What ``_RecurrentBase._run(input, hx, return_all_states)`` returns,
    computed by ONNX nodes (one per layer) while ``torch.onnx.export`` runs."""
    _check_exportable(module, input, return_all_states)
    # The layer's own checks, in _run's order (so export raises what a call raises).
    seq = module._prepare_input(input)
    given = module._given_states(seq, hx)
    module._check_input(seq)
    states = module._initial_states(seq, given)
    module._check_placement(seq)
    if given is not None:
        states = module._check_states_placement(seq, states)
    else:
        states = None  # the nodes start from zeros: no initial_h / initial_c inputs
    kind = {"LSTM": "LSTM", "GRU": "GRU"}.get(module.mode, "RNN")
    D = module._num_directions
    node = _Node(kind, module.hidden_size, D, module.mode == "RNN_RELU")
    x = seq.x
    finals: List[List[Tensor]] = []
    for layer in range(module.num_layers):
        params = [module._layer_params(index) for index in range(layer * D, (layer + 1) * D)]
        init = None if states is None else tuple(s[layer * D:(layer + 1) * D] for s in states)

        def eager(x, params, h0, c0, batch_sizes):
            return _eager_layer(module, x, params, None if h0 is None else _present(h0, c0), batch_sizes)

        y, *final = _run_node(node, eager, x, params, module.bias, init, seq.batch_sizes)
        finals.append(final)
        x = y
        if module.dropout > 0 and module.training and layer < module.num_layers - 1:
            x = F.dropout(x, p=module.dropout, training=True)
    stacked = tuple(f[0] if len(f) == 1 else torch.cat(f) for f in zip(*finals))
    return module._restore_layout(seq, x, stacked, ())


def _check_exportable(module, input, return_all_states: bool) -> None:
    """Raise OnnxExportError for what the nodes cannot express, before any
    other check or op (torch.export would fail first, less clearly)."""
    name = f"lstm_ext.{type(module).__name__}"
    if module.proj_size > 0:
        raise OnnxExportError(
            f"{name}: proj_size > 0 has no ONNX export: ONNX's LSTM operator has no projection (weight_hr), "
            "and lstm_ext does not emit an unrolled or Loop-based graph in its place (it would not run the "
            "runtimes' fused LSTM kernels); torch.nn.LSTM with proj_size has no working ONNX export either. "
            "Export a model with proj_size=0."
        )
    if return_all_states:
        raise OnnxExportError(
            f"{name}: return_all_states=True has no ONNX export: ONNX's recurrent operators give every "
            "step's h of the last layer only, not the cell states or the other layers'. Call the layer "
            "without it in the model you export."
        )
    if isinstance(input, PackedSequence) and torch._C._get_tracing_state() is None:
        raise OnnxExportError(
            f"{name}: a PackedSequence has no ONNX export with the dynamo-based exporter (torch.export "
            "cannot trace packed sequences; torch.nn's layers fail there too). Export with "
            "torch.onnx.export(..., dynamo=False): pack_padded_sequence -> the layer -> pad_packed_sequence "
            "inside the model then exports to the recurrent nodes' sequence_lens. Or give the layer the "
            "padded tensor."
        )


def _eager_layer(module, x, params, init, batch_sizes) -> Tuple[Tensor, ...]:
    """lstm_ext's own result for one layer (both directions), shaped as the
    ONNX node's outputs are after :meth:`_TorchScriptNode.symbolic`: the
    traced value of the node for the TorchScript exporter."""
    if init is None:
        batch = x.size(1) if batch_sizes is None else int(batch_sizes[0])
        init = tuple(x.new_zeros(len(params), batch, size) for size in module._state_sizes())
    outputs, finals = [], []
    for direction, p in enumerate(params):
        y, final, _ = module._run_layer(x, p, tuple(s[direction] for s in init), direction == 1,
                                        batch_sizes, False)
        outputs.append(y)
        finals.append(final)
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
    return (y, *(torch.stack(f) for f in zip(*finals)))


def cell_step(cell, x: Tensor, states: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """One step of ``cell`` (LSTMCell, GRUCell, RNNCell) as a one-step ONNX
    node: ``x [1, B, I]`` and ``states`` ``([B, H], ...)`` as the cells'
    ``_prepare`` gives them; returns the new states ``([B, H], ...)``."""
    from ._autograd import combine_biases
    from .gru_ops import gru_layer
    from .modules import GRUCell, LSTMCell
    from .ops import lstm_layer
    from .rnn_ops import rnn_layer

    kind = "LSTM" if isinstance(cell, LSTMCell) else "GRU" if isinstance(cell, GRUCell) else "RNN"
    relu = getattr(cell, "nonlinearity", "tanh") == "relu"
    node = _Node(kind, cell.hidden_size, 1, relu)
    params = [{"weight_ih": cell.weight_ih, "weight_hh": cell.weight_hh, "bias_ih": cell.bias_ih,
               "bias_hh": cell.bias_hh}]

    def eager(x, params, h0, c0, batch_sizes):
        p = params[0]
        w_ih, w_hh, b_ih, b_hh = (p[name] for name in _PARAM_NAMES)
        states = (h0[0], c0[0]) if kind == "LSTM" else (h0[0],)
        bias = combine_biases(b_ih, b_hh) if b_ih is not None else None
        if kind == "LSTM":
            result = lstm_layer(x, w_ih, w_hh, bias, *states)
        elif kind == "GRU":
            result = gru_layer(x, w_ih, w_hh, b_ih, b_hh, *states)
        else:
            result = rnn_layer(x, w_ih, w_hh, bias, *states, relu=relu)
        return (result[0], *(s.unsqueeze(0) for s in result[1:3]))

    _, *final = _run_node(node, eager, x, params, cell.bias, tuple(s.unsqueeze(0) for s in states), None)
    return tuple(f.squeeze(0) for f in final)
