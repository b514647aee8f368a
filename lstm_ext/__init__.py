"""lstm_ext: fused LSTM, RNN and GRU kernels for PyTorch, as drop-in torch.nn modules.

``lstm_ext.LSTM``, ``LSTMCell``, ``RNN``, ``RNNCell``, ``GRU`` and ``GRUCell`` take the same
arguments, hold the same parameters and return the same values as their
torch.nn counterparts.
"""
from . import gru_ops, ops, rnn_ops
from .convert import from_torch_nn, to_torch_nn
from .onnx_export import OnnxExportError
from .ops import cuda_path
from .modules import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    HiddenStateError,
    InputTypeError,
    InvalidArgumentError,
    LSTMCell,
    LSTMStates,
    RNNCell,
)

__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "GRU",
    "GRUCell",
    "LSTMStates",
    "cuda_path",
    "from_torch_nn",
    "to_torch_nn",
    "HiddenStateError",
    "InputTypeError",
    "InvalidArgumentError",
    "OnnxExportError",
    "ops",
    "rnn_ops",
    "gru_ops",
    "__version__",
]
