"""Typed wrapper over ``torch.ops.lstm_ext.gru_forward`` / ``gru_backward``
(torch.nn's GRU), their fake kernels and autograd.

Data flows one way: modules -> this wrapper -> the dispatcher -> a backend
kernel. The fake kernels give shapes only, so ``torch.compile`` and
``torch.library.opcheck`` can trace the ops without running them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library that registers the ops)
from ._autograd import (
    autocast_inputs,
    call_below_autograd,
    check_bias_like_x,
    check_compute_like_x,
    check_like_x,
    compute_dtype,
    differentiable_grads,
    grad_bias_as,
    needs_grad,
    register_formula,
    require_saved,
    run_op,
)

__all__ = ["gru_layer"]

_forward_op = torch.ops.lstm_ext.gru_forward.default
_backward_op = torch.ops.lstm_ext.gru_backward.default
_composite_op = torch.ops.lstm_ext.gru_forward_composite.default


def gru_layer(
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
    h0: Tensor,
    reverse: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """One GRU layer in one direction over a whole sequence, as torch.nn.GRU:

    ``r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)``, ``z`` likewise,
    ``n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))``,
    ``h' = (1 − z) ⊙ n + z ⊙ h``.

    Shapes: ``x [T,B,I]`` (or the packed ``[N,I]`` of a PackedSequence with
    its ``batch_sizes``), ``w_ih [3H,I]``, ``w_hh [3H,H]``, ``b_ih`` and
    ``b_hh [3H]`` or None, ``h0 [B,H]``. Returns ``y [T,B,H]`` (or ``[N,H]``)
    and ``h_n [B,H]`` (each sequence's state at its own last step, its first
    when ``reverse``). ``reverse=True`` runs from the last step to the first;
    ``y[t]`` stays aligned with ``x[t]``. Differentiable in every tensor
    argument, twice (double backward takes a slower, recomputing path).

    Every tensor has one dtype: float32, float64, bfloat16 (computed in
    float32 and returned in bfloat16) or, on CUDA, float16; the biases may
    also be in the compute dtype (float32 for a 16-bit ``x``), and their
    gradients then are too.
    """
    x, w_ih, w_hh, h0 = autocast_inputs(x.device.type, x, w_ih, w_hh, h0)
    grad = needs_grad(x, w_ih, w_hh, b_ih, b_hh, h0)
    args = (x, w_ih, w_hh, b_ih, b_hh, h0, reverse, grad, batch_sizes)
    y, h_n, _ = run_op(_forward_op, _GruForward, grad, args)
    return y, h_n


# The real kernels return fresh contiguous tensors whatever the inputs'
# strides, so the fakes use new_empty(shape), never empty_like. B comes from
# h0, not batch_sizes, whose values a fake tensor does not have.

@torch.library.register_fake("lstm_ext::gru_forward")
def _gru_forward_fake(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, save_for_backward, batch_sizes=None):
    check_like_x("gru_forward", x, w_ih=w_ih, w_hh=w_hh, h0=h0)
    check_bias_like_x("gru_forward", x, b_ih, "b_ih")
    check_bias_like_x("gru_forward", x, b_hh, "b_hh")
    H = w_hh.shape[1]
    saved = compute_dtype(x.dtype)
    gates = (x.new_empty((*x.shape[:-1], 4 * H), dtype=saved) if save_for_backward
             else x.new_empty((0,), dtype=saved))
    return x.new_empty((*x.shape[:-1], H)), x.new_empty((h0.shape[0], H)), gates


@torch.library.register_fake("lstm_ext::gru_backward")
def _gru_backward_fake(grad_y, grad_h_n, x, w_ih, w_hh, h0, y, gates, reverse, need_grad_x,
                       batch_sizes=None):
    check_like_x("gru_backward", x, grad_y=grad_y, grad_h_n=grad_h_n, w_ih=w_ih, w_hh=w_hh, h0=h0, y=y)
    check_compute_like_x("gru_backward", x, gates=gates)
    bias_grad = w_hh.new_empty((w_hh.shape[0],), dtype=compute_dtype(x.dtype))
    return (
        x.new_empty(x.shape) if need_grad_x else x.new_empty((0,)),
        w_ih.new_empty(w_ih.shape),
        w_hh.new_empty(w_hh.shape),
        bias_grad,
        bias_grad.new_empty(bias_grad.shape),
        h0.new_empty(h0.shape),
    )


def _setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, h0, reverse, save_for_backward, batch_sizes = inputs
    y, _, gates = output
    ctx.reverse = reverse
    ctx.saved = save_for_backward
    ctx.batch_sizes = batch_sizes
    ctx.mark_non_differentiable(gates)
    # Absent output gradients stay None, and the kernel reads None as zero,
    # instead of autograd materialising tensors of zeros.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w_ih, w_hh, h0, y, gates, b_ih, b_hh)


def _gru_forward_backward(ctx, grad_y, grad_h_n, _grad_gates):
    x, w_ih, w_hh, h0, y, gates, b_ih, b_hh = ctx.saved_tensors
    if torch.is_grad_enabled():
        # create_graph=True: the gradients must be differentiable themselves.
        return differentiable_grads(
            ctx.needs_input_grad,
            (x, w_ih, w_hh, b_ih, b_hh, h0, None, None, None),
            lambda: _composite_op(x, w_ih, w_hh, b_ih, b_hh, h0, ctx.reverse, ctx.batch_sizes),
            (grad_y, grad_h_n),
        )
    require_saved(ctx, "gru", "lstm_ext.gru_ops.gru_layer")
    needs = ctx.needs_input_grad
    grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_h0 = call_below_autograd(
        _backward_op, grad_y, grad_h_n, x, w_ih, w_hh, h0, y, gates, ctx.reverse, needs[0], ctx.batch_sizes
    )
    return (
        grad_x if needs[0] else None,
        grad_w_ih if needs[1] else None,
        grad_w_hh if needs[2] else None,
        grad_bias_as(grad_b_ih, b_ih) if b_ih is not None and needs[3] else None,
        grad_bias_as(grad_b_hh, b_hh) if b_hh is not None and needs[4] else None,
        grad_h0 if needs[5] else None,
        None,
        None,
        None,
    )


_GruForward = register_formula("gru", _setup_context, _gru_forward_backward, "lstm_ext.gru_ops.gru_layer or lstm_ext.GRU")
