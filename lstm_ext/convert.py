"""Swapping a model's recurrent layers between torch.nn and lstm_ext, and what
ONNX export does with lstm_ext's.

``from_torch_nn(model)`` replaces every torch.nn LSTM, RNN, LSTMCell and
RNNCell inside ``model`` with lstm_ext's twin (same constructor arguments,
same parameters, same device, dtype and train/eval mode); ``to_torch_nn``
goes back. Both work in place and return the model, so a trained lstm_ext
model can be exported through torch.nn's modules, e.g. to ONNX, which has no
operator for lstm_ext's custom ops: ``torch.onnx.export`` of a model that
still holds lstm_ext layers raises an OnnxExporterError that says so.
"""
from __future__ import annotations

from torch import nn

from .modules import LSTM, RNN, LSTMCell, RNNCell

__all__ = ["from_torch_nn", "to_torch_nn"]

# torch.nn class -> lstm_ext class; the constructor arguments each takes.
_TWINS = {nn.LSTM: LSTM, nn.RNN: RNN, nn.LSTMCell: LSTMCell, nn.RNNCell: RNNCell}
_LAYER_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_ARGS = ("input_size", "hidden_size", "bias")


def _constructor_args(module: nn.Module) -> dict:
    cell = isinstance(module, (nn.LSTMCell, nn.RNNCell, LSTMCell, RNNCell))
    args = {name: getattr(module, name) for name in (_CELL_ARGS if cell else _LAYER_ARGS)}
    if isinstance(module, (nn.LSTM, LSTM)):
        args["proj_size"] = module.proj_size
    if isinstance(module, (nn.RNN, RNN, nn.RNNCell, RNNCell)):
        args["nonlinearity"] = module.nonlinearity
    first = next(module.parameters())
    return {**args, "device": first.device, "dtype": first.dtype}


def _twin(module: nn.Module, target: type) -> nn.Module:
    twin = target(**_constructor_args(module))
    twin.load_state_dict(module.state_dict(), strict=True)
    twin.train(module.training)
    return twin


def _swap(model: nn.Module, mapping: dict) -> nn.Module:
    if type(model) in mapping:
        return _twin(model, mapping[type(model)])
    for name, child in model.named_children():
        setattr(model, name, _swap(child, mapping))
    return model


def from_torch_nn(model: nn.Module) -> nn.Module:
    """``model`` with its torch.nn recurrent layers and cells replaced by
    lstm_ext's (in place for submodules; a bare torch.nn layer is returned as
    a new lstm_ext one). Subclasses of the torch.nn classes are left alone."""
    return _swap(model, _TWINS)


def to_torch_nn(model: nn.Module) -> nn.Module:
    """The inverse of :func:`from_torch_nn`: lstm_ext layers and cells back to
    torch.nn's, with the same parameters (e.g. before ``torch.onnx.export``)."""
    return _swap(model, {ours: theirs for theirs, ours in _TWINS.items()})


def _refuse_onnx(g, *args, **kwargs):
    from torch.onnx.errors import OnnxExporterError

    raise OnnxExporterError(
        "lstm_ext's recurrent layers have no ONNX export (ONNX has no operator for the custom ops "
        "lstm_ext::lstm_forward / lstm_ext::rnn_forward). Convert the model first with "
        "lstm_ext.to_torch_nn(model): it swaps in torch.nn modules with the same parameters, "
        "which export to ONNX's LSTM and RNN operators."
    )


def register_onnx_refusal() -> None:
    """Make the TorchScript-based ONNX exporter fail with the message above
    instead of a generic unknown-namespace error."""
    import torch.onnx

    for op in ("lstm_ext::lstm_forward", "lstm_ext::rnn_forward"):
        torch.onnx.register_custom_op_symbolic(op, _refuse_onnx, 9)
