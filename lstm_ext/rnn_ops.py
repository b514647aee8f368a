"""Typed wrapper over ``torch.ops.lstm_ext.rnn_forward`` / ``rnn_backward``
(the vanilla RNN: ``h_t = act(x_t W_ih^T + bias + h_{t-1} W_hh^T)``), their
fake kernels and autograd.

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
    check_like_x,
    differentiable_grads,
    fake_layer_grads,
    grad_bias_as,
    needs_grad,
    register_formula,
    run_op,
)

__all__ = ["rnn_layer"]

_forward_op = torch.ops.lstm_ext.rnn_forward.default
_backward_op = torch.ops.lstm_ext.rnn_backward.default
_composite_op = torch.ops.lstm_ext.rnn_forward_composite.default


def rnn_layer(
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Optional[Tensor],
    h0: Tensor,
    reverse: bool = False,
    relu: bool = False,
    batch_sizes: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """One vanilla RNN layer in one direction over a whole sequence.

    ``h_t = act(x_t @ w_ih.T + bias + h_{t-1} @ w_hh.T)`` with act = relu if
    ``relu`` else tanh. Shapes: ``x [T,B,I]``, ``w_ih [H,I]``, ``w_hh [H,H]``,
    ``bias [H]`` (``b_ih + b_hh``) or None, ``h0 [B,H]``. Returns
    ``y [T,B,H]`` and ``h_n [B,H]``.

    With ``batch_sizes`` (int64 [T] on the CPU, non-increasing, as in
    ``PackedSequence``), ``x`` is packed data ``[N,I]`` and ``y`` is ``[N,H]``
    packed the same way; ``h_n`` holds each sequence's state at its own last
    step (its first step when ``reverse``). ``reverse=True`` runs from the
    last step to the first; ``y[t]`` stays aligned with ``x[t]``.
    Differentiable in every tensor argument, twice (double backward takes a
    slower, recomputing path). Every tensor has one dtype: float32, float64
    or (on the CPU) bfloat16, which is computed in float32 and returned in
    bfloat16; ``bias`` alone may also be float32 for a bfloat16 ``x`` (the
    modules pass ``b_ih + b_hh`` summed in float32), and its gradient then is
    float32 too.
    """
    x, w_ih, w_hh, h0 = autocast_inputs(x.device.type, x, w_ih, w_hh, h0)
    args = (x, w_ih, w_hh, bias, h0, reverse, relu, batch_sizes)
    return run_op(_forward_op, _RnnForward, needs_grad(x, w_ih, w_hh, bias, h0), args)


# The real kernels return fresh contiguous tensors whatever the inputs'
# strides, so the fakes use new_empty(shape), never empty_like. B comes from
# h0, not batch_sizes, whose values a fake tensor does not have.

@torch.library.register_fake("lstm_ext::rnn_forward")
def _rnn_forward_fake(x, w_ih, w_hh, bias, h0, reverse, relu, batch_sizes=None):
    check_like_x("rnn_forward", x, w_ih=w_ih, w_hh=w_hh, h0=h0)
    check_bias_like_x("rnn_forward", x, bias)
    H = w_hh.shape[0]
    return x.new_empty((*x.shape[:-1], H)), x.new_empty((h0.shape[0], H))


@torch.library.register_fake("lstm_ext::rnn_backward")
def _rnn_backward_fake(grad_y, grad_h_n, x, w_ih, w_hh, h0, y, reverse, relu, need_grad_x,
                       batch_sizes=None):
    check_like_x("rnn_backward", x, grad_y=grad_y, grad_h_n=grad_h_n, w_ih=w_ih, w_hh=w_hh,
                  h0=h0, y=y)
    return fake_layer_grads(x, w_ih, w_hh, h0, need_grad_x)


def _setup_context(ctx, inputs, output):
    x, w_ih, w_hh, bias, h0, reverse, relu, batch_sizes = inputs
    y, _ = output
    ctx.reverse = reverse
    ctx.relu = relu
    ctx.batch_sizes = batch_sizes
    # Absent output gradients stay None, and the kernel reads None as zero,
    # instead of autograd materialising tensors of zeros.
    ctx.set_materialize_grads(False)
    # The backward needs only the output y (act' is read off it).
    ctx.save_for_backward(x, w_ih, w_hh, h0, y, bias)


def _rnn_forward_backward(ctx, grad_y, grad_h_n):
    x, w_ih, w_hh, h0, y, bias = ctx.saved_tensors
    if torch.is_grad_enabled():
        # create_graph=True: the gradients must be differentiable themselves.
        return differentiable_grads(
            ctx.needs_input_grad,
            (x, w_ih, w_hh, bias, h0, None, None, None),
            lambda: _composite_op(x, w_ih, w_hh, bias, h0, ctx.reverse, ctx.relu, ctx.batch_sizes),
            (grad_y, grad_h_n),
        )
    batch_sizes = ctx.batch_sizes
    needs = ctx.needs_input_grad
    grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_h0 = call_below_autograd(
        _backward_op, grad_y, grad_h_n, x, w_ih, w_hh, h0, y, ctx.reverse, ctx.relu, needs[0], batch_sizes
    )
    return (
        grad_x if needs[0] else None,
        grad_w_ih if needs[1] else None,
        grad_w_hh if needs[2] else None,
        grad_bias_as(grad_bias, bias) if bias is not None and needs[3] else None,
        grad_h0 if needs[4] else None,
        None,
        None,
        None,
    )


_RnnForward = register_formula("rnn", _setup_context, _rnn_forward_backward, "lstm_ext.rnn_ops.rnn_layer or lstm_ext.RNN")
