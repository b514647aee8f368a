"""Drop-in replacements for ``torch.nn.LSTM``, ``LSTMCell``, ``RNN``, ``RNNCell``,
``GRU`` and ``GRUCell``.

Same constructors, parameter names, shapes, order and initialisation as
torch.nn, so a ``state_dict`` loads either way with ``strict=True``. Argument
checks happen here, before any kernel runs, and raise the exception type that
torch.nn raises for the same input, with a message naming what was expected
and what came. The compute is one fused op call per layer and direction
(:func:`lstm_ext.ops.lstm_layer`, :func:`lstm_ext.rnn_ops.rnn_layer`,
:func:`lstm_ext.gru_ops.gru_layer`).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ._autograd import autocast_dtype, combine_biases
from . import onnx_export
from .gru_ops import gru_layer
from .ops import SUPPORTED_DEVICE_TYPES, lstm_layer
from .rnn_ops import rnn_layer

__all__ = ["LSTM", "LSTMCell", "RNN", "RNNCell", "GRU", "GRUCell", "LSTMStates", "HiddenStateError",
           "InputTypeError", "InvalidArgumentError"]


class HiddenStateError(TypeError, RuntimeError, IndexError, AttributeError, ValueError):
    """``hx`` does not have the structure or rank the module takes.

    For such inputs torch.nn raises TypeError, RuntimeError, IndexError,
    AttributeError or (the cells, for a wrong rank) ValueError, depending on
    how the bad value fails deep inside it; this is all five, so code written
    against torch.nn keeps catching it.
    """


class InputTypeError(TypeError, AttributeError):
    """The input is not a tensor (or PackedSequence). torch.nn fails on it with
    AttributeError ('... has no attribute dim'); this is that and TypeError."""


class _PackedInputDtypeError(ValueError, RuntimeError):
    """A PackedSequence whose dtype differs from the weights': torch 2.13's
    layers raise ValueError for it, older ones failed in the kernel with
    RuntimeError; this is both."""


class InvalidArgumentError(ValueError, RuntimeError):
    """An invalid constructor argument (a size, a nonlinearity).

    torch.nn raises ValueError for some of these and RuntimeError for others
    (the cells fail only when allocating or running); this is both.
    """


class LSTMStates(NamedTuple):
    """Every step's states of every layer and direction.

    ``h`` and ``c`` are ``[num_layers * num_directions, *seq, size]`` where
    ``seq`` is the output's layout: ``T, B`` (or ``B, T`` with batch_first),
    ``T`` for unbatched input, or the packed rows ``N`` of a PackedSequence
    (aligned with ``output.data``). Index ``layer * num_directions +
    direction`` as for ``h_n``.
    """

    h: Tensor
    c: Tensor


# --------------------------------------------------------------------------- checks


def _check_size_arg(name: str, value, minimum: int = 1) -> None:
    """The layers need sizes >= 1, as torch.nn's do; the cells, like
    torch.nn's, also take 0 (an empty state or input)."""
    if not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        bound = "greater than zero" if minimum == 1 else "non-negative"
        raise InvalidArgumentError(f"{name} must be {bound}, got {value}")


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


def _check_nonlinearity(nonlinearity) -> None:
    if nonlinearity not in ("tanh", "relu"):
        raise InvalidArgumentError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def _state_tensors(hx, count: int, module: str) -> Tuple[Tensor, ...]:
    """``hx`` as a tuple of ``count`` tensors: a pair for the LSTM, one tensor otherwise."""
    if count == 1:
        if not isinstance(hx, Tensor):
            raise HiddenStateError(f"{module}: expected hx to be a Tensor, got {type(hx).__name__}")
        return (hx,)
    if not isinstance(hx, (tuple, list)) or len(hx) != count:
        got = f"a {type(hx).__name__}" if not isinstance(hx, (tuple, list)) else f"{len(hx)} items"
        raise HiddenStateError(f"{module}: expected hx to be a pair (h_0, c_0) of tensors, got {got}")
    if not all(isinstance(t, Tensor) for t in hx):
        got = ", ".join(type(t).__name__ for t in hx)
        raise HiddenStateError(f"{module}: expected hx to be a pair (h_0, c_0) of tensors, got ({got})")
    return tuple(hx)


def _check_state_like(state: Tensor, name: str, input: Tensor) -> None:
    if state.device != input.device:
        raise RuntimeError(
            f"Input and hidden tensors are not at the same device: expected {name} on "
            f"{input.device} (the device of input), got {state.device}"
        )
    # Under autocast the layers cast the states with the input (as torch.nn does).
    if state.dtype != input.dtype and autocast_dtype(input.device.type) is None:
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
    """torch.nn's words. It raises ValueError for this with a tensor input to a
    recurrent layer, and RuntimeError in the cells."""
    if input.dtype != weight.dtype and autocast_dtype(input.device.type) is None:
        raise error(
            f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). Convert "
            f"input: input.to({weight.dtype}), or convert model: model.to({input.dtype})"
        )


# --------------------------------------------------------------------------- layers


def _stacked(tensors: List[Tensor]) -> Tensor:
    """torch.stack(tensors), as a view when there is one (a single layer-direction's
    fresh final state: no copy, and a third of the cost of a call to stack)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


class _Sequence(NamedTuple):
    """The input as the ops take it, and what is needed to give results back in
    the caller's layout."""

    x: Tensor  # time-major [T, B, I], or the packed data [N, I]
    batch_sizes: Optional[Tensor]
    sorted_indices: Optional[Tensor]
    unsorted_indices: Optional[Tensor]
    batched: bool
    batch: int


class _RecurrentBase(nn.Module):
    """Parameters, argument checks and the layers × directions loop shared by
    LSTM, RNN and GRU; a subclass says how one layer-direction runs."""

    _state_names: Tuple[str, ...]

    def __init__(
        self, mode: str, gate_multiplier: int, input_size, hidden_size, num_layers, bias, batch_first,
        dropout, bidirectional, proj_size, device, dtype,
    ) -> None:
        super().__init__()
        _check_dropout(dropout)
        _check_size_arg("input_size", input_size)
        _check_size_arg("hidden_size", hidden_size)
        _check_size_arg("num_layers", num_layers)
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        if not isinstance(proj_size, int):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(
                f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} >= hidden_size={hidden_size}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        factory = {"device": device, "dtype": dtype}
        gate_size = gate_multiplier * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else real_hidden * self._num_directions
            for direction in range(self._num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {"weight_ih": (gate_size, layer_input_size), "weight_hh": (gate_size, real_hidden)}
                if bias:
                    shapes.update({"bias_ih": (gate_size,), "bias_hh": (gate_size,)})
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for kind, shape in shapes.items():
                    setattr(self, kind + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(kind + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        # Same distribution, and the same parameter order, as torch.nn: under
        # the same seed both modules draw identical weights.
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for torch.nn compatibility. A no-op: the fused kernels read each
        layer's weights where they are, so there is nothing to flatten."""

    @property
    def _flat_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
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

    # -- what a subclass provides
    def _state_sizes(self) -> Tuple[int, ...]:
        raise NotImplementedError

    def _run_layer(self, x, params, states, reverse, batch_sizes, return_cells):
        """-> (y, final states tuple, cells or None) for one layer-direction."""
        raise NotImplementedError

    # -- shared machinery
    def _layer_params(self, index: int) -> dict:
        # getattr, not self._parameters: torch.func.functional_call swaps the attributes.
        return {name.rpartition("_l")[0]: getattr(self, name) for name in self._all_weights[index]}

    def _prepare_input(self, input) -> _Sequence:
        """The input's type and rank, and its time-major view; the rest of its
        checks come after hx's structure, in torch.nn's order (_check_input)."""
        module = type(self).__name__
        if isinstance(input, PackedSequence):
            x, batch_sizes, sorted_indices, unsorted_indices = input
            return _Sequence(x, batch_sizes, sorted_indices, unsorted_indices, True, int(batch_sizes[0]))
        if not isinstance(input, Tensor):
            raise InputTypeError(f"{module}: expected input to be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{module}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        if not batched:
            x = input.unsqueeze(1)
        elif self.batch_first:
            x = input.transpose(0, 1)
        else:
            x = input
        return _Sequence(x, None, None, None, batched, x.size(1))

    def _check_input(self, seq: _Sequence) -> None:
        """dtype before feature size, as torch.nn: ValueError for a dtype mismatch
        of a tensor input, RuntimeError for one of a PackedSequence."""
        x = seq.x
        weight = self.weight_ih_l0
        _check_input_dtype(x, weight, _PackedInputDtypeError if seq.batch_sizes is not None else ValueError)
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.size(-1)}"
            )

    def _check_placement(self, seq: _Sequence) -> None:
        """What torch.nn leaves to its kernels: device, an empty sequence."""
        module = type(self).__name__
        _check_device_supported(seq.x, module)
        _check_same_device(seq.x, self.weight_ih_l0)
        if seq.batch_sizes is None and seq.x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def _given_states(self, seq: _Sequence, hx) -> Optional[Tuple[Tensor, ...]]:
        """hx's structure and rank (torch.nn checks them before the input's dtype
        and size), as [L*D, B, size] tensors; None when hx is None."""
        if hx is None:
            return None
        states = _state_tensors(hx, len(self._state_sizes()), type(self).__name__)
        if seq.batch_sizes is not None:
            return states
        rank = 3 if seq.batched else 2
        if any(s.dim() != rank for s in states):
            kind = "batched 3-D" if seq.batched else "unbatched 2-D"
            dims = ", ".join(f"{s.dim()}-D" for s in states)
            what = "hx and cx" if len(states) == 2 else "hx"
            raise RuntimeError(f"For {kind} input, {what} should also be {rank}-D but got ({dims}) tensors")
        if not seq.batched:
            states = tuple(s.unsqueeze(1) for s in states)
        return states

    def _initial_states(self, seq: _Sequence, states: Optional[Tuple[Tensor, ...]]) -> Tuple[Tensor, ...]:
        """The initial states as [L*D, B, size] tensors, rows in the ops' order."""
        num_states = self.num_layers * self._num_directions
        sizes = self._state_sizes()
        x = seq.x
        if states is None:
            return tuple(torch.zeros(num_states, seq.batch, size, dtype=x.dtype, device=x.device) for size in sizes)
        for index, (name, state, size) in enumerate(zip(self._state_names, states, sizes)):
            expected = (num_states, seq.batch, size)
            if tuple(state.shape) != expected:
                shown = expected if seq.batched else (num_states, size)
                got = list(state.shape) if seq.batched else [state.shape[0], state.shape[2]]
                label = f"hidden[{index}] ({name})" if len(sizes) > 1 else "hidden"
                raise RuntimeError(f"Expected {label} size {shown}, got {got}")
        return states

    def _check_states_placement(self, seq: _Sequence, states: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        for name, state in zip(self._state_names, states):
            _check_state_like(state, name, seq.x)
        if seq.sorted_indices is not None:
            states = tuple(s.index_select(1, seq.sorted_indices) for s in states)
        return states

    def _restore_layout(self, seq: _Sequence, output: Tensor, finals, all_states):
        """Gives results back in the caller's layout and order."""
        if seq.batch_sizes is not None:
            output = PackedSequence(output, seq.batch_sizes, seq.sorted_indices, seq.unsorted_indices)
            if seq.unsorted_indices is not None:
                finals = tuple(f.index_select(1, seq.unsorted_indices) for f in finals)
        elif not seq.batched:
            output = output.squeeze(1)
            finals = tuple(f.squeeze(1) for f in finals)
            all_states = tuple(a.squeeze(2) for a in all_states)
        elif self.batch_first:
            output = output.transpose(0, 1)
            all_states = tuple(a.transpose(1, 2) for a in all_states)
        return output, finals, all_states

    def _run(self, input, hx, return_all_states: bool):
        if onnx_export.exporting():  # torch.onnx.export: ONNX's own LSTM/GRU/RNN nodes (lstm_ext/onnx_export.py)
            return onnx_export.run_layers(self, input, hx, return_all_states)
        # torch.nn's order, so that input with two things wrong raises what torch.nn raises.
        seq = self._prepare_input(input)
        given = self._given_states(seq, hx)
        self._check_input(seq)
        states = self._initial_states(seq, given)
        self._check_placement(seq)
        if given is not None:  # zeros made here need no checks and no reordering
            states = self._check_states_placement(seq, states)
        num_directions = self._num_directions
        finals: List[List[Tensor]] = [[] for _ in states]
        every_h: List[Tensor] = []
        every_c: List[Tensor] = []
        layer_input = seq.x
        # One unbind per state instead of an index per layer-direction and state.
        per_layer = tuple(zip(*(s.unbind(0) for s in states)))
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                y, final, cells = self._run_layer(
                    layer_input, self._layer_params(index), per_layer[index], direction == 1,
                    seq.batch_sizes, return_all_states,
                )
                outputs.append(y)
                for collected, value in zip(finals, final):
                    collected.append(value)
                if return_all_states:
                    every_h.append(y)
                    if cells is not None:
                        every_c.append(cells)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)
        all_states = tuple(torch.stack(e) for e in (every_h, every_c) if e)
        return self._restore_layout(seq, layer_input, tuple(_stacked(f) for f in finals), all_states)


class LSTM(_RecurrentBase):
    """Multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM`.

    ``forward(input, hx=None)`` returns ``(output, (h_n, c_n))`` with the
    shapes torch.nn documents, for tensors and PackedSequences alike.

    ``forward(input, hx, return_all_states=True)`` (keyword only) also returns
    an :class:`LSTMStates` ``(h, c)`` holding every step's hidden and cell
    state of every layer and direction, differentiable like the rest. The
    default path does not compute or keep them.
    """

    _state_names = ("h_0", "c_0")

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
        proj_size: int = 0, device=None, dtype=None,
    ) -> None:
        super().__init__(
            "LSTM", 4, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, device, dtype,
        )

    def _state_sizes(self) -> Tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def _run_layer(self, x, params, states, reverse, batch_sizes, return_cells):
        bias = combine_biases(params["bias_ih"], params["bias_hh"]) if self.bias else None
        result = lstm_layer(
            x, params["weight_ih"], params["weight_hh"], bias, states[0], states[1], reverse=reverse,
            batch_sizes=batch_sizes, w_hr=params.get("weight_hr"), return_cells=return_cells,
        )
        cells = result[3] if return_cells else None
        return result[0], result[1:3], cells

    def forward(self, input, hx: Optional[Tuple[Tensor, Tensor]] = None, *, return_all_states: bool = False):
        output, (h_n, c_n), every = self._run(input, hx, return_all_states)
        if return_all_states:
            return output, (h_n, c_n), LSTMStates(*every)
        return output, (h_n, c_n)


class _SingleStateLayer(_RecurrentBase):
    """A layer whose only state is h: RNN and GRU.

    ``forward(input, hx=None)`` returns ``(output, h_n)``;
    ``return_all_states=True`` (keyword only) also returns every step's
    hidden state of every layer and direction, ``[num_layers *
    num_directions, *seq, hidden_size]`` as for :class:`LSTMStates`.
    """

    _state_names = ("h_0",)

    def _state_sizes(self) -> Tuple[int, ...]:
        return (self.hidden_size,)

    def forward(self, input, hx: Optional[Tensor] = None, *, return_all_states: bool = False):
        output, (h_n,), every = self._run(input, hx, return_all_states)
        if return_all_states:
            return output, h_n, every[0]
        return output, h_n


def _reject_proj_size(kwargs: dict, module: str) -> None:
    if "proj_size" in kwargs:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    if kwargs:
        raise TypeError(f"{module}.__init__() got unexpected keyword arguments: {', '.join(kwargs)}")


class RNN(_SingleStateLayer):
    """Multi-layer Elman RNN with tanh or relu, a drop-in for :class:`torch.nn.RNN`.

    ``forward(input, hx=None)`` returns ``(output, h_n)``;
    ``return_all_states=True`` (keyword only) also returns every step's
    hidden state of every layer and direction, ``[num_layers *
    num_directions, *seq, hidden_size]`` as for :class:`LSTMStates`.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
        bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
        device=None, dtype=None, **kwargs,
    ) -> None:
        _reject_proj_size(kwargs, "RNN")
        _check_nonlinearity(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", 1, input_size, hidden_size, num_layers,
            bias, batch_first, dropout, bidirectional, 0, device, dtype,
        )

    def _run_layer(self, x, params, states, reverse, batch_sizes, return_cells):
        bias = combine_biases(params["bias_ih"], params["bias_hh"]) if self.bias else None
        y, h_n = rnn_layer(
            x, params["weight_ih"], params["weight_hh"], bias, states[0], reverse=reverse,
            relu=self.nonlinearity == "relu", batch_sizes=batch_sizes,
        )
        return y, (h_n,), None


class GRU(_SingleStateLayer):
    """Multi-layer gated recurrent unit, a drop-in for :class:`torch.nn.GRU`
    (gates r, z, n in torch.nn's order and formula, ``b_hn`` inside ``r ⊙ (.)``).

    ``forward(input, hx=None)`` returns ``(output, h_n)``;
    ``return_all_states=True`` (keyword only) also returns every step's
    hidden state of every layer and direction, ``[num_layers *
    num_directions, *seq, hidden_size]`` as for :class:`LSTMStates`.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
        device=None, dtype=None, **kwargs,
    ) -> None:
        _reject_proj_size(kwargs, "GRU")
        super().__init__(
            "GRU", 3, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, 0,
            device, dtype,
        )

    def _run_layer(self, x, params, states, reverse, batch_sizes, return_cells):
        y, h_n = gru_layer(
            x, params["weight_ih"], params["weight_hh"], params.get("bias_ih"), params.get("bias_hh"),
            states[0], reverse=reverse, batch_sizes=batch_sizes,
        )
        return y, (h_n,), None


# --------------------------------------------------------------------------- cells


class _CellBase(nn.Module):
    """Parameters and checks shared by LSTMCell, RNNCell and GRUCell."""

    _num_states: int

    def __init__(self, input_size, hidden_size, bias, gate_multiplier, device, dtype) -> None:
        super().__init__()
        _check_size_arg("input_size", input_size, minimum=0)
        _check_size_arg("hidden_size", hidden_size, minimum=0)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = gate_multiplier * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += ", nonlinearity={nonlinearity}"
        return s.format(**self.__dict__)

    def _empty_step(self, x: Tensor, states: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        """New [B, 0] states for hidden_size == 0, connected (with zero
        gradients) to the input, the states and the parameters, as torch.nn's are."""
        anchor = x.sum() * 0
        for p in self.parameters():
            anchor = anchor + p.sum() * 0
        return tuple(s + anchor for s in states)

    def _combined_bias(self) -> Optional[Tensor]:
        return combine_biases(self.bias_ih, self.bias_hh) if self.bias else None

    def _prepare(self, input, hx) -> Tuple[Tensor, Tuple[Tensor, ...], bool]:
        """-> (input [1, B, I], states ([B, H], ...), batched)."""
        module = type(self).__name__
        if not isinstance(input, Tensor):
            raise InputTypeError(f"{module}: expected input to be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{module}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        # torch.nn's order: hx's structure and rank, then sizes, then device and dtype.
        states = None if hx is None else _state_tensors(hx, self._num_states, module)
        for index, state in enumerate(states or ()):
            if state.dim() not in (1, 2):  # torch.nn's check and words
                name = f"hx[{index}]" if self._num_states > 1 else "hidden"
                raise HiddenStateError(f"{module}: Expected {name} to be 1D or 2D, got {state.dim()}D instead")
        rank = 2 if input.dim() == 2 else 1
        if states is not None and any(s.dim() != rank for s in states):
            dims = ", ".join(f"{s.dim()}D" for s in states)
            raise HiddenStateError(f"{module}: Expected hidden states to be {rank}D for {rank}D input, got ({dims})")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(-1)} expected {self.input_size}")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        batch = input.size(0)
        if states is None:
            states = (torch.zeros(batch, self.hidden_size, dtype=input.dtype, device=input.device),) * self._num_states
        elif not batched:
            states = tuple(s.unsqueeze(0) for s in states)
        for index, state in enumerate(states):
            if state.size(0) != batch:
                raise RuntimeError(f"Input batch size {batch} doesn't match hidden{index} batch size {state.size(0)}")
            if state.size(1) != self.hidden_size:
                raise RuntimeError(
                    f"hidden{index} has inconsistent hidden_size: got {state.size(1)}, expected {self.hidden_size}"
                )
        _check_device_supported(input, module)
        _check_same_device(input, self.weight_ih)
        _check_input_dtype(input, self.weight_ih, RuntimeError)
        if hx is not None:
            for index, state in enumerate(states):
                _check_state_like(state, f"hx[{index}]" if self._num_states > 1 else "hx", input)
        return input.unsqueeze(0), states, batched


class LSTMCell(_CellBase):
    """One LSTM step, a drop-in for :class:`torch.nn.LSTMCell`.

    ``forward(input, hx=None)`` returns ``(h_1, c_1)``; input is ``[B, I]`` or
    unbatched ``[I]``.
    """

    _num_states = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        x, (h0, c0), batched = self._prepare(input, hx)
        if self.hidden_size == 0:  # an empty state stays empty, as in torch.nn
            h1, c1 = self._empty_step(x, (h0, c0))
        elif onnx_export.exporting():  # torch.onnx.export: ONNX's LSTM node (lstm_ext/onnx_export.py)
            h1, c1 = onnx_export.cell_step(self, x, (h0, c0))
        else:
            _, h1, c1 = lstm_layer(x, self.weight_ih, self.weight_hh, self._combined_bias(), h0, c0)
        if not batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1


class RNNCell(_CellBase):
    """One Elman RNN step, a drop-in for :class:`torch.nn.RNNCell`.

    ``forward(input, hx=None)`` returns ``h_1``; input is ``[B, I]`` or
    unbatched ``[I]``.
    """

    _num_states = 1

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
        device=None, dtype=None,
    ) -> None:
        _check_nonlinearity(nonlinearity)
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, (h0,), batched = self._prepare(input, hx)
        if self.hidden_size == 0:  # an empty state stays empty, as in torch.nn
            (h0,) = self._empty_step(x, (h0,))
            return h0 if batched else h0.squeeze(0)
        if onnx_export.exporting():  # torch.onnx.export: ONNX's RNN node (lstm_ext/onnx_export.py)
            (h1,) = onnx_export.cell_step(self, x, (h0,))
            return h1 if batched else h1.squeeze(0)
        _, h1 = rnn_layer(
            x, self.weight_ih, self.weight_hh, self._combined_bias(), h0, relu=self.nonlinearity == "relu"
        )
        return h1 if batched else h1.squeeze(0)


class GRUCell(_CellBase):
    """One GRU step, a drop-in for :class:`torch.nn.GRUCell`.

    ``forward(input, hx=None)`` returns ``h_1``; input is ``[B, I]`` or
    unbatched ``[I]``.
    """

    _num_states = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        x, (h0,), batched = self._prepare(input, hx)
        if self.hidden_size == 0:  # an empty state stays empty, as in torch.nn
            (h0,) = self._empty_step(x, (h0,))
            return h0 if batched else h0.squeeze(0)
        if onnx_export.exporting():  # torch.onnx.export: ONNX's GRU node (lstm_ext/onnx_export.py)
            (h1,) = onnx_export.cell_step(self, x, (h0,))
            return h1 if batched else h1.squeeze(0)
        _, h1 = gru_layer(x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, h0)
        return h1 if batched else h1.squeeze(0)
