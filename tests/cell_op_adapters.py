"""How each cell kind's ops are called (not a test module).

tests/cells.py describes the cells; this file says how lstm_ext's three op
families for them are called, so that one test covers every kind
(tests/test_cell_ops.py). :func:`cell_ops` gives a kind's :class:`CellOps`:
its forward, backward and composite ops (``torch.ops.lstm_ext.<family>_forward``,
``_backward``, ``_forward_composite``), its differentiable layer wrapper
(``lstm_ext.ops.lstm_layer``, ``rnn_ops.rnn_layer``, ``gru_ops.gru_layer``)
and the reference (``cells.layer_reference``).

Every method takes the forward op's tensor arguments in their order,
``LayerInputs.op_args()``: LSTM (x, w_ih, w_hh, bias, h0, c0), RNN (x, w_ih,
w_hh, bias, h0) with bias = b_ih + b_hh, GRU (x, w_ih, w_hh, b_ih, b_hh, h0).
Results come as dicts keyed by the ops' own names, so tests compare them by
name whatever the kind:

* forward op: y, h_n (, c_n), then what it saves for the backward: the LSTM
  gates and cells, the GRU gates, the RNN nothing (its backward reads y);
* backward op: grad_<argument> for every argument, and the LSTM's grad_w_hr
  (for its projection, empty [0] without one);
* composite op: y, h_n (, c_n) (, the LSTM's cells);
* layer wrapper: y, h_n (, c_n);
* reference: y, h_n (, c_n) and the saved activations under the op's names
  (the RNN's pre-activations, which its op does not save, as "pre").
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

import lstm_ext  # noqa: F401  (loads the extension and registers the ops)
from cells import KINDS, CellKind, LayerInputs, layer_reference
from helpers import leaf

#: Packed sequence lengths, sorted as pack_padded_sequence(enforce_sorted=True) wants.
LENGTHS = [5, 3, 3, 1]


@dataclasses.dataclass(frozen=True)
class CellOps:
    kind: CellKind
    family: str  # "lstm", "rnn", "gru": the ops lstm_ext::<family>_forward, ...
    arg_names: Tuple[str, ...]  # the forward op's tensor arguments
    reference_saved_names: Tuple[str, ...]  # names of cells.layer_reference's saved tensors
    has_save_flag: bool  # the forward op takes save_for_backward (and then saves the reference's saved)
    backward_reads: Tuple[str, ...]  # the forward outputs the backward op takes
    composite_names: Tuple[str, ...]  # the composite op's outputs
    extra_grad_names: Tuple[str, ...] = ()  # backward outputs for optional arguments not in arg_names

    def __repr__(self):  # what a failure report shows for the test's ``ops``
        return self.kind.name

    # -- names
    @property
    def forward_name(self) -> str:
        return f"{self.family}_forward"

    @property
    def backward_name(self) -> str:
        return f"{self.family}_backward"

    @property
    def final_names(self) -> Tuple[str, ...]:
        return ("h_n", "c_n")[:self.kind.num_states]

    @property
    def state_names(self) -> Tuple[str, ...]:
        return ("h0", "c0")[:self.kind.num_states]

    @property
    def bias_names(self) -> Tuple[str, ...]:
        return self.arg_names[3:len(self.arg_names) - self.kind.num_states]

    @property
    def saved_names(self) -> Tuple[str, ...]:
        return self.reference_saved_names if self.has_save_flag else ()

    @property
    def output_names(self) -> Tuple[str, ...]:
        return ("y", *self.final_names, *self.saved_names)

    @property
    def differentiable_output_names(self) -> Tuple[str, ...]:
        """The forward op's outputs autograd differentiates: all but gates,
        which the formula marks non-differentiable (nothing downstream needs
        its gradient)."""
        return tuple(n for n in self.output_names if n != "gates")

    @property
    def cotangent_names(self) -> Tuple[str, ...]:
        """The outputs whose gradients the backward op takes (grad_<name>):
        y, the final states, and the LSTM's cells (grad_cells)."""
        return ("y", *self.final_names, *(n for n in self.saved_names if n == "cells"))

    @property
    def grad_names(self) -> Tuple[str, ...]:
        return (*(f"grad_{n}" for n in self.arg_names), *self.extra_grad_names)

    @property
    def step_outputs(self) -> dict:
        """{final state: the output holding that state at every step}: h_n's is
        y, the LSTM's c_n's is cells."""
        return dict(zip(self.final_names, ("y", "cells")))

    @property
    def rows_label(self) -> str:
        """How the messages write the weights' row count: "4H", "H", "3H"."""
        return "H" if self.kind.gates == 1 else f"{self.kind.gates}H"

    def saved_width(self, name: str) -> int:
        """Width of a saved activation, in units of H (gates 4H, cells H)."""
        return dict(zip(self.reference_saved_names, self.kind.saved_widths))[name]

    def w_hh_hidden(self, shape) -> int:
        """The H an op reads off a w_hh of this shape, from which its message's
        expected shapes are built: the LSTM's and RNN's from the rows (4H and
        H), the GRU's from the columns."""
        return shape[1] if self.family == "gru" else shape[0] // self.kind.gates

    # -- arguments
    def args_of(self, x, w_ih, w_hh, b_ih, b_hh, states) -> tuple:
        """The forward op's arguments from torch.nn's tensors (the LSTM and RNN
        take b_ih + b_hh, summed differentiably)."""
        return LayerInputs(self.kind, x, w_ih, w_hh, b_ih, b_hh, tuple(states), None).op_args()

    def _flags(self, reverse, *rest):
        """The ops' bool arguments: reverse, the RNN's relu, then ``rest``."""
        if self.family == "rnn":
            return (reverse, self.kind.nonlinearity == "relu", *rest)
        return (reverse, *rest)

    def _states(self, args) -> tuple:
        return tuple(args[len(args) - self.kind.num_states:])

    # -- ops
    def _op(self, suffix):
        return getattr(torch.ops.lstm_ext, f"{self.family}_{suffix}").default

    @property
    def forward_op(self):
        return self._op("forward")

    @property
    def backward_op(self):
        return self._op("backward")

    @property
    def composite_op(self):
        return self._op("forward_composite")

    def forward_args(self, args, reverse=False, save=True, batch_sizes=None) -> tuple:
        """The forward op's whole argument list (``save`` is dropped for the RNN,
        whose op has no such flag)."""
        save_flag = (save,) if self.has_save_flag else ()
        return (*args, *self._flags(reverse, *save_flag), batch_sizes)

    def forward(self, args, reverse=False, save=True, batch_sizes=None) -> dict:
        outs = self.forward_op(*self.forward_args(args, reverse, save, batch_sizes))
        return dict(zip(self.output_names, outs, strict=True))

    def backward_args(self, cotangents: dict, args, outputs: dict, reverse=False, need_grad_x=True,
                      batch_sizes=None) -> tuple:
        """The backward op's whole argument list: the gradient of each output
        in ``cotangents`` ({name: tensor}; absent or None: not given), the
        forward's arguments (not its biases) and the outputs it reads."""
        x, w_ih, w_hh = args[:3]
        return (*(cotangents.get(n) for n in self.cotangent_names), x, w_ih, w_hh, *self._states(args),
                *(outputs[n] for n in self.backward_reads), *self._flags(reverse, need_grad_x), batch_sizes)

    def backward(self, cotangents: dict, args, outputs: dict, reverse=False, need_grad_x=True,
                 batch_sizes=None) -> dict:
        grads = self.backward_op(*self.backward_args(cotangents, args, outputs, reverse, need_grad_x,
                                                     batch_sizes))
        return dict(zip(self.grad_names, grads, strict=True))

    def composite_args(self, args, reverse=False, batch_sizes=None) -> tuple:
        return (*args, *self._flags(reverse), batch_sizes)

    def composite(self, args, reverse=False, batch_sizes=None) -> dict:
        outs = self.composite_op(*self.composite_args(args, reverse, batch_sizes))
        return dict(zip(self.composite_names, outs, strict=True))

    def layer(self, args, reverse=False, batch_sizes=None) -> dict:
        """The differentiable layer wrapper, looked up when called (a missing
        one fails its kind's tests, it is never skipped)."""
        module = importlib.import_module("lstm_ext.ops" if self.family == "lstm" else f"lstm_ext.{self.family}_ops")
        fn = getattr(module, f"{self.family}_layer")
        kwargs = {"relu": self.kind.nonlinearity == "relu"} if self.family == "rnn" else {}
        outs = fn(*args, reverse=reverse, batch_sizes=batch_sizes, **kwargs)
        return dict(zip(("y", *self.final_names), outs, strict=True))

    def outputs_like(self, x, H) -> dict:
        """Zero forward outputs the backward op reads, for x ([T, B, I] or
        packed [N, I]) and H: y and the saved activations."""
        rows = x.shape[:-1]
        outs = {"y": x.new_zeros(*rows, H)}
        outs.update({n: x.new_zeros(*rows, self.saved_width(n) * H) for n in self.saved_names})
        return {n: outs[n] for n in self.backward_reads}

    # -- reference
    def reference(self, args, reverse=False, batch_sizes=None) -> dict:
        x, w_ih, w_hh, *rest = args
        biases = rest[:len(self.bias_names)]
        b_ih, b_hh = (*biases, None, None)[:2]
        y, finals, saved = layer_reference(self.kind, x, w_ih, w_hh, b_ih, b_hh, self._states(args), reverse,
                                           batch_sizes)
        return {"y": y, **dict(zip(self.final_names, finals, strict=True)),
                **dict(zip(self.reference_saved_names, saved, strict=True))}

    def reference_grads(self, args, cotangents: dict, reverse=False, batch_sizes=None) -> dict:
        """{grad_<argument>: tensor}: the reference differentiated by autograd
        for ``cotangents`` ({output name: tensor or None, not used}); an absent
        bias as a zero one (the backward ops return its gradient anyway)."""
        G = args[1].shape[0]
        leaves = [leaf(t) if t is not None else args[0].new_zeros(G).requires_grad_(True) for t in args]
        ref = self.reference(leaves, reverse, batch_sizes)
        outs, cots = zip(*[(ref[n], c) for n, c in cotangents.items() if c is not None])
        grads = torch.autograd.grad(outs, leaves, cots)
        return dict(zip((f"grad_{n}" for n in self.arg_names), grads, strict=True))

    def assert_clear_of_kinks(self, args, reverse=False, batch_sizes=None):
        """For relu: every pre-activation clear of relu's kink at 0, where
        finite differences (gradcheck) break, and both signs present (the
        inputs' seed is picked for it); nothing for the smooth kinds."""
        if self.kind.nonlinearity != "relu":
            return
        pre = self.reference([a.detach() if a is not None else None for a in args], reverse, batch_sizes)["pre"]
        assert pre.abs().min() > 1e-3, "pick another seed: a relu pre-activation is near 0"
        assert (pre > 0).any() and (pre < 0).any()


_OPS = {
    "lstm": CellOps(KINDS["lstm"], "lstm", ("x", "w_ih", "w_hh", "bias", "h0", "c0"), ("gates", "cells"), True,
                    ("y", "gates", "cells"), ("y", "h_n", "c_n", "cells"), ("grad_w_hr",)),
    **{name: CellOps(KINDS[name], "rnn", ("x", "w_ih", "w_hh", "bias", "h0"), ("pre",), False, ("y",),
                     ("y", "h_n")) for name in ("rnn_tanh", "rnn_relu")},
    "gru": CellOps(KINDS["gru"], "gru", ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"), ("gates",), True,
                   ("y", "gates"), ("y", "h_n")),
}


def cell_ops(kind: CellKind) -> CellOps:
    return _OPS[kind.name]


def leaves(tensors: Sequence[Optional[Tensor]]) -> list:
    """Fresh leaves requiring grad of ``tensors`` (None stays None)."""
    return [None if t is None else leaf(t) for t in tensors]


def random_like(tensors: dict, seed=99) -> dict:
    """{name: standard normal tensor shaped like tensors[name]}, drawn on the
    CPU (alike on every device), on its tensor's device and in its dtype."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for n, t in tensors.items()}
