"""One description of each recurrent cell kind the suite tests (not a test module).

``KINDS`` maps "lstm", "rnn_tanh", "rnn_relu" and "gru" to a :class:`CellKind`:
torch.nn's layer and cell classes and lstm_ext's twins, the constructor
keywords that pick the kind (``nonlinearity``), the number of states and of
gate blocks, and

* one input factory: :func:`make_inputs` (one layer-direction's tensors for
  the ops, dense or packed), :meth:`CellKind.module_inputs` (x and hx for a
  layer or a cell; :func:`module_results` packs x for packed input);
* one pure-PyTorch reference for one layer-direction, an explicit Python loop
  over time steps (:func:`layer_reference`), independent of torch.nn's fused
  kernels and of lstm_ext; packed input is cut into its sequences, each run
  alone;
* the uniform call of a module (:func:`module_results`); how each kind's ops
  and layer wrapper are called is in tests/cell_op_adapters.py.

The op and module tests parametrize over ``KIND_PARAMS`` and the ``device``
fixture instead of keeping one copy per cell. lstm_ext's GRU classes are looked
up when used, so a missing one fails the GRU cases (it is never skipped).

Cell formulas (torch.nn's, gate blocks in weight order):

* LSTM (i, f, g, o): pre = x W_ih^T + b_ih + h W_hh^T + b_hh;
  c' = f c + i g; h' = o tanh(c').
* RNN: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu.
* GRU (r, z, n): gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh;
  r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
  n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional, Tuple

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from helpers import backprop, copy_params


# =============================================================================== one step


def _bias(*biases):
    """The sum of the biases that are not None (None if all are)."""
    present = [b for b in biases if b is not None]
    if not present:
        return None
    total = present[0]
    for b in present[1:]:
        total = total + b
    return total


def _lstm_step(x, states, w_ih, w_hh, b_ih, b_hh):
    h, c = states
    pre = x @ w_ih.t() + h @ w_hh.t()
    b = _bias(b_ih, b_hh)
    if b is not None:
        pre = pre + b
    zi, zf, zg, zo = pre.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return (h, c), (torch.cat([i, f, g, o], dim=-1), c)


def _rnn_step(act):
    def step(x, states, w_ih, w_hh, b_ih, b_hh):
        (h,) = states
        pre = x @ w_ih.t() + h @ w_hh.t()
        b = _bias(b_ih, b_hh)
        if b is not None:
            pre = pre + b
        return (act(pre),), (pre,)
    return step


def _gru_step(x, states, w_ih, w_hh, b_ih, b_hh):
    (h,) = states
    gi = x @ w_ih.t()
    gh = h @ w_hh.t()
    if b_ih is not None:
        gi = gi + b_ih
    if b_hh is not None:
        gh = gh + b_hh
    gi_r, gi_z, gi_n = gi.chunk(3, dim=-1)
    gh_r, gh_z, gh_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(gi_r + gh_r)
    z = torch.sigmoid(gi_z + gh_z)
    n = torch.tanh(gi_n + r * gh_n)
    h = (1 - z) * n + z * h
    # What gru_forward saves per row (the contract): r, z, n and hn = gh_n.
    return (h,), (torch.cat([r, z, n, gh_n], dim=-1),)


# =============================================================================== kinds


@dataclasses.dataclass(frozen=True)
class CellKind:
    name: str  # "lstm", "rnn_tanh", "rnn_relu", "gru"
    layer_name: str  # the class name in torch.nn and lstm_ext: "LSTM", "RNN", "GRU"
    cell_name: str  # "LSTMCell", "RNNCell", "GRUCell"
    nonlinearity: Optional[str]  # the RNN's constructor keyword
    gates: int  # gate blocks in the weights: w_ih is [gates * H, I]
    num_states: int  # 2 for the LSTM (h, c), else 1
    step: Callable  # (x_t, states, w_ih, w_hh, b_ih, b_hh) -> (states, saved row tuple)
    saved_widths: Tuple[int, ...]  # width of each saved tensor, in units of H

    def __repr__(self):
        return self.name

    # -- classes and constructor keywords
    @property
    def kwargs(self) -> dict:
        """The constructor keywords that pick this kind (layers and cells alike)."""
        return {} if self.nonlinearity is None else {"nonlinearity": self.nonlinearity}

    @property
    def torch_layer(self) -> type:
        return getattr(nn, self.layer_name)

    @property
    def torch_cell(self) -> type:
        return getattr(nn, self.cell_name)

    @property
    def ext_layer(self) -> type:
        return getattr(lstm_ext, self.layer_name)

    @property
    def ext_cell(self) -> type:
        return getattr(lstm_ext, self.cell_name)

    @property
    def mode(self) -> str:
        """torch.nn's ``mode`` attribute: "LSTM", "RNN_TANH", "RNN_RELU", "GRU"."""
        return self.name.upper()

    def layer_pair(self, *args, device="cpu", dtype=torch.float32, **kwargs):
        """(torch.nn layer, lstm_ext layer) of this kind with identical parameters."""
        ref = self.torch_layer(*args, device=device, dtype=dtype, **self.kwargs, **kwargs)
        ext = self.ext_layer(*args, device=device, dtype=dtype, **self.kwargs, **kwargs)
        return ref, copy_params(ref, ext)

    def cell_pair(self, *args, device="cpu", dtype=torch.float32, **kwargs):
        """(torch.nn cell, lstm_ext cell) of this kind with identical parameters."""
        ref = self.torch_cell(*args, device=device, dtype=dtype, **self.kwargs, **kwargs)
        ext = self.ext_cell(*args, device=device, dtype=dtype, **self.kwargs, **kwargs)
        return ref, copy_params(ref, ext)

    # -- hx in the shape modules take and give
    def hx(self, states: Tuple[Tensor, ...]):
        """A module's hx from a tuple of state tensors: (h, c) for the LSTM, h otherwise."""
        return tuple(states) if self.num_states == 2 else states[0]

    def states_of(self, hx) -> Tuple[Tensor, ...]:
        """The inverse of :meth:`hx`: always a tuple."""
        return tuple(hx) if self.num_states == 2 else (hx,)

    def module_inputs(self, x_shape, state_shape, *, dtype=torch.float32, device="cpu", use_hx=True,
                      scale=0.5):
        """x and hx for a layer or cell of this kind: leaves requiring grad, x
        ``x_shape`` standard normal, each state ``state_shape`` (e.g.
        ``[L*D, B, H]``, ``[L*D, H]`` unbatched, ``[B, H]`` for a cell)
        ``scale`` * standard normal; hx None unless ``use_hx``. Values from
        torch's global RNG (seeded per test by conftest.py), drawn on the CPU.
        -> (x, hx)."""
        def randn(shape, s=1.0):
            t = s * torch.randn(*shape, dtype=torch.float64)
            return t.to(device=device, dtype=dtype).requires_grad_(True)

        x = randn(x_shape)
        hx = self.hx(tuple(randn(state_shape, scale) for _ in range(self.num_states))) if use_hx else None
        return x, hx


KINDS = {
    "lstm": CellKind("lstm", "LSTM", "LSTMCell", None, 4, 2, _lstm_step, (4, 1)),
    "rnn_tanh": CellKind("rnn_tanh", "RNN", "RNNCell", "tanh", 1, 1, _rnn_step(torch.tanh), (1,)),
    "rnn_relu": CellKind("rnn_relu", "RNN", "RNNCell", "relu", 1, 1, _rnn_step(torch.relu), (1,)),
    "gru": CellKind("gru", "GRU", "GRUCell", None, 3, 1, _gru_step, (4,)),
}
LSTM, RNN_TANH, RNN_RELU, GRU = (KINDS[k] for k in ("lstm", "rnn_tanh", "rnn_relu", "gru"))

#: ``@pytest.mark.parametrize("kind", KIND_PARAMS)``: every kind, ids "lstm", ...
KIND_PARAMS = [pytest.param(k, id=k.name) for k in KINDS.values()]
#: The single-state kinds (RNN tanh/relu, GRU): their modules take hx as one tensor.
SINGLE_STATE_PARAMS = [p for p in KIND_PARAMS if p.values[0].num_states == 1]


# =============================================================================== reference


def batch_sizes_of(lengths):
    """PackedSequence.batch_sizes for sorted (non-increasing) lengths: int64 [T] on the CPU."""
    return torch.tensor([sum(1 for n in lengths if n > t) for t in range(max(lengths))], dtype=torch.int64)


def _dense_reference(kind, x, w_ih, w_hh, b_ih, b_hh, states, reverse):
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    ys, saved = [None] * T, [None] * T
    states = tuple(states)
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        states, saved[t] = kind.step(x[t], states, w_ih, w_hh, b_ih, b_hh)
        ys[t] = states[0]
    if T == 0:
        empty = [x.new_zeros(0, B, w * H) for w in kind.saved_widths]
        return x.new_zeros(0, B, H), states, tuple(empty)
    return torch.stack(ys), states, tuple(torch.stack(s) for s in zip(*saved))


def layer_reference(kind, x, w_ih, w_hh, b_ih, b_hh, states, reverse=False, batch_sizes=None):
    """One layer-direction of ``kind``, whole sequence, plain tensor ops.

    x ``[T, B, I]`` (or packed ``[N, I]`` with ``batch_sizes``), w_ih
    ``[gates*H, I]``, w_hh ``[gates*H, H]``, b_ih / b_hh ``[gates*H]`` or None
    (the LSTM and RNN add both, so a combined bias can come as b_ih with b_hh
    None), ``states`` a tuple of ``[B, H]`` tensors ((h0, c0) for the LSTM).
    Returns ``(y, final states tuple, saved)``; ``y[t]`` is aligned with
    ``x[t]`` (also when ``reverse``), packed like x; the final states are each
    sequence's state at its own last step (its first when ``reverse``).
    ``saved`` is what the kind's forward op saves, per row: the LSTM's
    activated gates (i, f, g, o) ``[., 4H]`` and cells c_t ``[., H]``; the
    RNN's pre-activations ``[., H]``; the GRU's (r, z, n, hn = gh_n) ``[., 4H]``.

    Packed input is handled independently of any kernel's design: each
    sequence is cut out of the packed data and run alone (batch 1), then
    packed back."""
    if batch_sizes is None:
        return _dense_reference(kind, x, w_ih, w_hh, b_ih, b_hh, states, reverse)
    bs = batch_sizes.tolist()
    offsets = [sum(bs[:t]) for t in range(len(bs))]
    rows = {}  # packed row -> (y row, saved rows)
    finals = []
    for b in range(bs[0]):
        length = sum(1 for n in bs if n > b)
        idx = [offsets[t] + b for t in range(length)]
        y_b, fin_b, saved_b = _dense_reference(kind, x[idx].unsqueeze(1), w_ih, w_hh, b_ih, b_hh,
                                               tuple(s[b:b + 1] for s in states), reverse)
        for t, i in enumerate(idx):
            rows[i] = (y_b[t, 0], tuple(s[t, 0] for s in saved_b))
        finals.append(fin_b)
    N = x.shape[0]
    y = torch.stack([rows[i][0] for i in range(N)])
    saved = tuple(torch.stack([rows[i][1][k] for i in range(N)]) for k in range(len(kind.saved_widths)))
    final = tuple(torch.cat([f[k] for f in finals]) for k in range(kind.num_states))
    return y, final, saved


# =============================================================================== op inputs


class LayerInputs(NamedTuple):
    """One layer-direction's tensors, as :func:`make_inputs` draws them."""

    kind: CellKind
    x: Tensor  # [T, B, I], or packed [N, I]
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Optional[Tensor]
    b_hh: Optional[Tensor]
    states: Tuple[Tensor, ...]  # (h0,) or (h0, c0), [B, H]
    batch_sizes: Optional[Tensor]  # int64 [T] on the CPU, or None

    def op_args(self) -> tuple:
        """The tensor arguments of the kind's forward op and layer wrapper, in
        their order: LSTM (x, w_ih, w_hh, bias, h0, c0), RNN (x, w_ih, w_hh,
        bias, h0) with bias = b_ih + b_hh (None without bias); GRU (x, w_ih,
        w_hh, b_ih, b_hh, h0)."""
        if self.kind.name == "gru":
            return (self.x, self.w_ih, self.w_hh, self.b_ih, self.b_hh, *self.states)
        return (self.x, self.w_ih, self.w_hh, _bias(self.b_ih, self.b_hh), *self.states)


def make_inputs(kind, T, B, I, H, *, dtype=torch.float64, device="cpu", bias=True, seed=0, scale=1.0,
                lengths=None):
    """One layer-direction's inputs for ``kind``'s ops (:class:`LayerInputs`).

    Weights and biases are uniform in +-scale/sqrt(H) (torch.nn's init at
    scale 1), x standard normal, the states 0.5 * standard normal. With
    ``lengths`` (non-increasing), x is packed ``[N, I]`` and B is
    len(lengths). Values are drawn on the CPU from a generator seeded with
    ``seed`` (the same on every device), then moved to ``device``;
    batch_sizes stays on the CPU, as in PackedSequence."""
    g = torch.Generator().manual_seed(seed)
    k = scale / math.sqrt(H) if H else 0.0
    G = kind.gates * H

    def u(*shape):
        return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * k

    batch_sizes = None
    if lengths is not None:
        batch_sizes = batch_sizes_of(lengths)
        B = len(lengths)
        x = torch.randn(int(batch_sizes.sum()), I, generator=g, dtype=dtype)
    else:
        x = torch.randn(T, B, I, generator=g, dtype=dtype)
    w_ih, w_hh = u(G, I), u(G, H)
    b_ih, b_hh = (u(G), u(G)) if bias else (None, None)
    states = tuple(0.5 * torch.randn(B, H, generator=g, dtype=dtype) for _ in range(kind.num_states))
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return LayerInputs(kind, to(x), to(w_ih), to(w_hh), to(b_ih), to(b_hh), tuple(map(to, states)), batch_sizes)


# =============================================================================== modules


def module_results(kind, module, x, hx=None, *, pack=None, grad_seed=1234, cot_dtype=None, **call_kwargs):
    """Run a layer or cell of ``kind`` and backprop random cotangents (helpers.backprop)
    from every output into the input ``x``, every state of ``hx`` and every
    parameter. With ``pack`` (pack_padded_sequence's keywords: lengths,
    batch_first, enforce_sorted), ``x`` is the padded leaf and the module gets
    it packed (a fresh packing per call, so the same leaf serves several runs).

    -> (raw result, outputs, grads). outputs: "out" (the PackedSequence's data
    for packed input) and "h_n" (and "c_n"), or for a cell "h" (and "c");
    grads: "input", "h0" (and "c0") when hx is given, then every parameter
    name."""
    inp = x if pack is None else pack_padded_sequence(x, **pack)
    res = module(inp, **call_kwargs) if hx is None else module(inp, hx, **call_kwargs)
    if isinstance(module, (nn.RNNCellBase,)) or type(module).__name__.endswith("Cell"):
        states = kind.states_of(res)
        outs = dict(zip(("h", "c"), states))
    else:
        out = res[0]
        outs = {"out": out.data if isinstance(out, PackedSequence) else out}
        outs.update(zip(("h_n", "c_n"), kind.states_of(res[1])))
    wrt = {"input": x}
    if hx is not None:
        wrt.update(zip(("h0", "c0"), kind.states_of(hx)))
    wrt.update(module.named_parameters())
    grads = backprop(outs, wrt, seed=grad_seed, cot_dtype=cot_dtype)
    return res, {k: v.detach() for k, v in outs.items()}, grads
