"""Swapping a model's recurrent layers between torch.nn and lstm_ext.

``from_torch_nn(model)`` replaces every torch.nn LSTM, RNN, GRU, LSTMCell,
RNNCell and GRUCell inside ``model`` with lstm_ext's twin (same constructor arguments,
same parameters, same device, dtype and train/eval mode); ``to_torch_nn``
goes back. Both work in place and return the model.

``torch.onnx.export`` takes lstm_ext's layers and cells as they are (see
:mod:`lstm_ext.onnx_export`); ``to_torch_nn`` remains for users who want
torch.nn's own export path.
"""
from __future__ import annotations

from torch import nn

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["from_torch_nn", "to_torch_nn"]

# torch.nn class -> lstm_ext class; the constructor arguments each takes.
_TWINS = {nn.LSTM: LSTM, nn.RNN: RNN, nn.GRU: GRU, nn.LSTMCell: LSTMCell, nn.RNNCell: RNNCell,
          nn.GRUCell: GRUCell}
_LAYER_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")
_CELL_ARGS = ("input_size", "hidden_size", "bias")


def _constructor_args(module: nn.Module) -> dict:
    cell = isinstance(module, (nn.RNNCellBase, LSTMCell, RNNCell, GRUCell))
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
    torch.nn's, with the same parameters (e.g. to export through torch.nn's own
ONNX path)."""
    return _swap(model, {ours: theirs for theirs, ours in _TWINS.items()})

