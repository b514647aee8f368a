"""Drop-in replacements for ``torch.nn.LSTM`` and ``torch.nn.LSTMCell``.

Same constructor, parameter names, shapes, order and initialisation as
torch.nn, so a ``state_dict`` loads either way with ``strict=True``. Argument
checks happen here, before any kernel runs, and raise the exception type that
torch.nn raises for the same input, with a message naming what was expected
and what came. The compute is one fused op call per layer and direction
(:func:`lstm_ext.ops.lstm_layer`).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .ops import SUPPORTED_DEVICE_TYPES, lstm_layer

__all__ = ["LSTM", "LSTMCell", "HiddenStateError", "SizeArgumentError"]


class HiddenStateError(TypeError, RuntimeError, IndexError):
    """``hx`` is not a pair ``(h_0, c_0)`` of tensors.

    For such inputs torch.nn raises TypeError, RuntimeError or IndexError,
    depending on how the bad value fails deep inside it; this is all three, so
    code written against torch.nn keeps catching it.
    """


class SizeArgumentError(ValueError, RuntimeError):
    """An invalid size passed to a constructor.

    torch.nn.LSTM raises ValueError for these, torch.nn.LSTMCell RuntimeError
    (from allocating a negative-sized weight); this is both.
    """


def _check_size_arg(name: str, value) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < 1:
        raise SizeArgumentError(f"{name} must be greater than zero, got {value}")


def _check_dropout(dropout) -> None:
    if (
        not isinstance(dropout, numbers.Number)
        or isinstance(dropout, bool)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            f"element being zeroed, got {dropout!r}"
        )


def _unpack_hx(hx, module: str) -> Tuple[Tensor, Tensor]:
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        got = f"a {type(hx).__name__}" if not isinstance(hx, (tuple, list)) else f"{len(hx)} items"
        raise HiddenStateError(f"{module}: expected hx to be a pair (h_0, c_0) of tensors, got {got}")
    if not all(isinstance(t, Tensor) for t in hx):
        got = ", ".join(type(t).__name__ for t in hx)
        raise HiddenStateError(f"{module}: expected hx to be a pair (h_0, c_0) of tensors, got ({got})")
    return hx[0], hx[1]


def _check_state_like(state: Tensor, name: str, input: Tensor) -> None:
    if state.device != input.device:
        raise RuntimeError(
            f"Input and hidden tensors are not at the same device: expected {name} on "
            f"{input.device} (the device of input), got {state.device}"
        )
    if state.dtype != input.dtype:
        raise RuntimeError(f"expected {name} of dtype {input.dtype} (the dtype of input), got {state.dtype}")


def _check_device_supported(input: Tensor, module: str) -> None:
    if input.device.type not in SUPPORTED_DEVICE_TYPES:
        raise NotImplementedError(
            f"{module}: this build of lstm_ext has no kernels for device type "
            f"'{input.device.type}' (it supports: {', '.join(sorted(SUPPORTED_DEVICE_TYPES))})"
        )


def _check_same_device(input: Tensor, weight: Tensor) -> None:
    if input.device != weight.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{input.device} and parameter tensor at {weight.device}"
        )


def _check_input_dtype(input: Tensor, weight: Tensor, error: type = ValueError) -> None:
    """torch.nn.LSTM raises ValueError for this, torch.nn.LSTMCell RuntimeError."""
    if input.dtype != weight.dtype and not torch.is_autocast_enabled(input.device.type):
        raise error(
            f"input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). Convert "
            f"input: input.to({weight.dtype}), or convert model: model.to({input.dtype})"
        )


class LSTM(nn.Module):
    """Multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM`.

    ``forward(input, hx=None)`` returns ``(output, (h_n, c_n))`` with the
    shapes torch.nn documents. Not yet supported: ``proj_size > 0`` and
    :class:`~torch.nn.utils.rnn.PackedSequence` input (NotImplementedError).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_size_arg("input_size", input_size)
        _check_size_arg("hidden_size", hidden_size)
        _check_size_arg("num_layers", num_layers)
        if not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} >= hidden_size={hidden_size}")
        if proj_size > 0:
            raise NotImplementedError(
                f"lstm_ext.LSTM: proj_size > 0 (got {proj_size}) is not supported yet; use proj_size=0 "
                "or torch.nn.LSTM for projected LSTMs"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        factory = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        gate_size = 4 * hidden_size
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {
                    "weight_ih": (gate_size, layer_input_size),
                    "weight_hh": (gate_size, hidden_size),
                }
                if bias:
                    shapes.update({"bias_ih": (gate_size,), "bias_hh": (gate_size,)})
                names = []
                for kind, shape in shapes.items():
                    name = kind + suffix
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same distribution, and the same parameter order, as torch.nn.LSTM:
        # under the same seed both modules draw identical weights.
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for torch.nn.LSTM compatibility. A no-op: the fused kernels
        read each layer's weights where they are, so there is nothing to flatten."""

    @property
    def _flat_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _layer_weights(self, layer: int, direction: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        params = self.all_weights[layer * (2 if self.bidirectional else 1) + direction]
        bias = params[2] + params[3] if self.bias else None
        return params[0], params[1], bias

    def _check_input(self, input) -> None:
        if isinstance(input, PackedSequence):
            raise NotImplementedError(
                "lstm_ext.LSTM: PackedSequence input is not supported yet; pass a padded tensor "
                "(torch.nn.utils.rnn.pad_packed_sequence) or use torch.nn.LSTM"
            )
        if not isinstance(input, Tensor):
            raise TypeError(f"LSTM: expected input to be a Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.size(-1)}"
            )
        _check_input_dtype(input, self.weight_ih_l0)
        _check_device_supported(input, "LSTM")
        _check_same_device(input, self.weight_ih_l0)

    def _initial_state(self, input: Tensor, hx, batched: bool) -> Tuple[Tensor, Tensor]:
        """(h_0, c_0) as [L*D, B, H] tensors, input in time-major [T, B, I]."""
        num_states = self.num_layers * (2 if self.bidirectional else 1)
        expected = (num_states, input.size(1), self.hidden_size)
        if hx is None:
            zeros = torch.zeros(expected, dtype=input.dtype, device=input.device)
            return zeros, zeros
        h0, c0 = _unpack_hx(hx, "LSTM")
        rank = 3 if batched else 2
        if h0.dim() != rank or c0.dim() != rank:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {rank}-D but got ({h0.dim()}-D, {c0.dim()}-D) tensors"
            )
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        for index, (name, state) in enumerate((("h_0", h0), ("c_0", c0))):
            if tuple(state.shape) != expected:
                shown = expected if batched else (expected[0], expected[2])
                got = list(state.shape) if batched else [state.shape[0], state.shape[2]]
                raise RuntimeError(f"Expected hidden[{index}] ({name}) size {shown}, got {got}")
            _check_state_like(state, name, input)
        return h0, c0

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None):
        self._check_input(input)
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        h0, c0 = self._initial_state(input, hx, batched)

        num_directions = 2 if self.bidirectional else 1
        h_n: List[Tensor] = []
        c_n: List[Tensor] = []
        layer_input = input
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                w_ih, w_hh, bias = self._layer_weights(layer, direction)
                y, h, c = lstm_layer(layer_input, w_ih, w_hh, bias, h0[index], c0[index], reverse=direction == 1)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)

        output = layer_input
        h_out, c_out = torch.stack(h_n), torch.stack(c_n)
        if not batched:
            return output.squeeze(1), (h_out.squeeze(1), c_out.squeeze(1))
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_out, c_out)


class LSTMCell(nn.Module):
    """One LSTM step, a drop-in for :class:`torch.nn.LSTMCell`.

    ``forward(input, hx=None)`` returns ``(h_1, c_1)``; input is ``[B, I]`` or
    unbatched ``[I]``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        _check_size_arg("input_size", input_size)
        _check_size_arg("hidden_size", hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        return s.format(**self.__dict__)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        if not isinstance(input, Tensor):
            raise TypeError(f"LSTMCell: expected input to be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(-1)} expected {self.input_size}"
            )
        _check_input_dtype(input, self.weight_ih, RuntimeError)
        _check_device_supported(input, "LSTMCell")
        _check_same_device(input, self.weight_ih)
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        batch = input.size(0)
        if hx is None:
            zeros = torch.zeros(batch, self.hidden_size, dtype=input.dtype, device=input.device)
            h0 = c0 = zeros
        else:
            h0, c0 = _unpack_hx(hx, "LSTMCell")
            rank = 2 if batched else 1
            if h0.dim() != rank or c0.dim() != rank:
                raise RuntimeError(
                    f"LSTMCell: Expected hx[0] and hx[1] to be {rank}D for {rank}D input, got "
                    f"({h0.dim()}D, {c0.dim()}D)"
                )
            if not batched:
                h0, c0 = h0.unsqueeze(0), c0.unsqueeze(0)
            for index, state in enumerate((h0, c0)):
                if state.size(0) != batch:
                    raise RuntimeError(f"Input batch size {batch} doesn't match hidden{index} batch size {state.size(0)}")
                if state.size(1) != self.hidden_size:
                    raise RuntimeError(
                        f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected {self.hidden_size}"
                    )
                _check_state_like(state, f"hx[{index}]", input)
        bias = self.bias_ih + self.bias_hh if self.bias else None
        _, h1, c1 = lstm_layer(input.unsqueeze(0), self.weight_ih, self.weight_hh, bias, h0, c0)
        if not batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1
