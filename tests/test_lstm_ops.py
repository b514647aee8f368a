"""Op-level tests of what only the LSTM has: the cell state of every step
(lstm_forward's ``cells`` output, lstm_backward's ``grad_cells``,
lstm_layer's ``return_cells``) and the projection (``w_hr``, proj_size) in
opcheck and double backward. Everything every cell kind has, the LSTM
included, is tested in test_cell_ops.py."""
import pytest
import torch

from cell_op_adapters import cell_ops, random_like
from cells import LSTM, make_inputs
from helpers import assert_close, leaf, tols
from lstm_ext.ops import lstm_layer

OPS = torch.ops.lstm_ext
LSTM_OPS = cell_ops(LSTM)


def test_backward_grad_cells_is_added_to_cell_gradient(device):
    """grad_cells[t] enters as an extra dL/dc_t; at the last step it is
    indistinguishable from grad_c_n."""
    T, B, I, H = 4, 2, 3, 5
    args = make_inputs(LSTM, T, B, I, H, device=device).op_args()
    outs = LSTM_OPS.forward(args)
    cots = random_like({name: outs[name] for name in ("y", "h_n", "c_n")})
    grad_cells = torch.zeros(T, B, H, dtype=torch.float64, device=device)
    grad_cells[-1] = cots["c_n"]
    via_cells = LSTM_OPS.backward({**cots, "c_n": torch.zeros_like(cots["c_n"]), "cells": grad_cells}, args, outs)
    via_c_n = LSTM_OPS.backward(cots, args, outs)
    for name, a in via_cells.items():
        assert_close(a, via_c_n[name], name, **tols(torch.float64)[1])


# --- projection and cells: opcheck, double backward ------------------------------------------


def _packed_projected_inputs(requires_grad):
    torch.manual_seed(6)
    H, I, P = 4, 3, 2
    batch_sizes = torch.tensor([3, 3, 1])
    make = (lambda *s: leaf(torch.randn(*s, dtype=torch.float64) * 0.5)) if requires_grad else \
        (lambda *s: torch.randn(*s, dtype=torch.float64) * 0.5)
    x = make(int(batch_sizes.sum()), I)
    return (x, make(4 * H, I), make(4 * H, P), make(4 * H), make(3, P), make(3, H)), batch_sizes, make(P, H)


@pytest.mark.parametrize("save", [True, False], ids=["save", "nosave"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_opcheck_packed_projected(save, reverse):
    args, batch_sizes, w_hr = _packed_projected_inputs(requires_grad=save)
    torch.library.opcheck(OPS.lstm_forward.default, (*args, reverse, save, batch_sizes, w_hr))
    x, w_ih, w_hh, b, h0, c0 = (t.detach() for t in args)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, True, batch_sizes, w_hr.detach())
    torch.library.opcheck(
        OPS.lstm_backward.default,
        (torch.randn_like(y), torch.randn_like(hn), None, torch.randn_like(cells), x, w_ih, w_hh, h0, c0, y,
         gates, cells, reverse, save, batch_sizes, w_hr.detach()),
    )


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("variant", ["proj", "cells"])
def test_gradgradcheck_lstm_layer(reverse, variant):
    """create_graph=True gives gradients autograd can differentiate again, with
    a projection (w_hr [P, H], h0 [B, P]) or with the cells output (dense and
    packed without them: test_cell_ops.py)."""
    torch.manual_seed(5)
    H, I, P = 4, 3, (2 if variant == "proj" else 4)
    x = leaf(torch.randn(4, 3, I, dtype=torch.float64))
    w_ih = leaf(torch.randn(4 * H, I, dtype=torch.float64) * 0.5)
    w_hh = leaf(torch.randn(4 * H, P, dtype=torch.float64) * 0.5)
    b = leaf(torch.randn(4 * H, dtype=torch.float64))
    h0 = leaf(torch.randn(3, P, dtype=torch.float64))
    c0 = leaf(torch.randn(3, H, dtype=torch.float64))
    args = [x, w_ih, w_hh, b, h0, c0]
    if variant == "proj":
        args.append(leaf(torch.randn(P, H, dtype=torch.float64)))

    def f(x, w_ih, w_hh, b, h0, c0, *w_hr):
        return lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse, w_hr=w_hr[0] if w_hr else None,
                          return_cells=variant == "cells")

    assert torch.autograd.gradgradcheck(f, args)


def test_gradgradcheck_packed_projected_reverse_cells():
    args, batch_sizes, w_hr = _packed_projected_inputs(requires_grad=True)

    def f(*a):
        return lstm_layer(*a[:6], reverse=True, batch_sizes=batch_sizes, w_hr=a[6], return_cells=True)

    assert torch.autograd.gradgradcheck(f, (*args, w_hr))
