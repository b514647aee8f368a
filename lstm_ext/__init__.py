"""lstm_ext: fused LSTM kernels for PyTorch, as drop-in torch.nn modules.

``lstm_ext.LSTM`` and ``lstm_ext.LSTMCell`` take the same arguments, hold the
same parameters and return the same values as their torch.nn counterparts.
"""
from . import ops
from .modules import LSTM, LSTMCell, HiddenStateError, SizeArgumentError

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMCell", "HiddenStateError", "SizeArgumentError", "ops", "__version__"]
