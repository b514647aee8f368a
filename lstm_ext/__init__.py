"""lstm_ext: fused LSTM and RNN kernels for PyTorch, as drop-in torch.nn modules.

``lstm_ext.LSTM``, ``LSTMCell``, ``RNN`` and ``RNNCell`` take the same
arguments, hold the same parameters and return the same values as their
torch.nn counterparts.
"""
from . import ops, rnn_ops
from .convert import from_torch_nn, register_onnx_refusal, to_torch_nn
from .ops import cuda_path
from .modules import (
    LSTM,
    RNN,
    HiddenStateError,
    InputTypeError,
    InvalidArgumentError,
    LSTMCell,
    LSTMStates,
    RNNCell,
)

__version__ = "0.1.0"

register_onnx_refusal()

__all__ = [
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "LSTMStates",
    "cuda_path",
    "from_torch_nn",
    "to_torch_nn",
    "HiddenStateError",
    "InputTypeError",
    "InvalidArgumentError",
    "ops",
    "rnn_ops",
    "__version__",
]
