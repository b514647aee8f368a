"""Typed wrappers over ``torch.ops.lstm_ext``, their fake kernels and autograd.

Data flows one way: modules -> these wrappers -> the dispatcher -> a backend
kernel. The fake kernels give shapes only, so ``torch.compile`` and
``torch.library.opcheck`` can trace the ops without running them.
"""
from __future__ import annotations

from typing import Optional

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
    fake_layer_grads,
    grad_bias_as,
    needs_grad,
    register_formula,
    require_saved,
    run_op,
)

__all__ = ["lstm_layer", "cuda_path", "SUPPORTED_DEVICE_TYPES"]

_forward_op = torch.ops.lstm_ext.lstm_forward.default
_backward_op = torch.ops.lstm_ext.lstm_backward.default
_composite_op = torch.ops.lstm_ext.lstm_forward_composite.default

# Device types this build has kernels for; "meta" runs the fake kernels
# registered below. Read once at import, so the modules can give a clear error
# for, say, a CUDA tensor on a CPU-only build, without a per-call query.
SUPPORTED_DEVICE_TYPES = frozenset(
    {"meta"}
    | {
        device
        for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
        if torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::lstm_forward", key)
    }
)


def cuda_path(batch: int, hidden: int, dtype: torch.dtype = torch.float32, *, proj_size: int = 0,
              backward: bool = False, device=None, cell: str = "lstm") -> str:
    """The CUDA path an LSTM (or, with ``cell="gru"``, a GRU) layer-direction
    takes: ``"persistent (...)"`` (one cooperative kernel for the whole
    sequence, W_hh resident in shared memory) or ``"standard (why not
    persistent)"`` (a cuBLAS GEMM and a fused kernel per step), for ``batch``
    rows (the widest step), ``hidden`` units, ``dtype`` and ``proj_size``, in
    the forward (or the ``backward``), on ``device`` (default: the current
    CUDA device). The environment variable
    ``LSTM_EXT_CUDA_PATH=auto|standard|persistent|tensorcore`` steers the
    choice; with ``persistent`` or ``tensorcore`` a configuration that cannot
    run it raises, here as in the layer. ``tensorcore`` (``"tensorcore
    (...)"``: the persistent kernel with the recurrent product on the tensor
    cores, float16, bfloat16, and float32 as TF32 while
    ``torch.backends.cudnn.allow_tf32`` allows it) is experimental and LSTM
    only: ``auto`` never picks it, and it raises for a GRU. The persistent GRU
    kernel has not run on a GPU yet: ``auto`` keeps GRUs on the standard path,
    ``persistent`` forces it."""
    if "cuda" not in SUPPORTED_DEVICE_TYPES:
        raise RuntimeError(
            "lstm_ext.cuda_path: this build of lstm_ext has no CUDA kernels (it supports: "
            f"{', '.join(sorted(SUPPORTED_DEVICE_TYPES))}); build it with a CUDA torch"
        )
    index = -1 if device is None else torch.device(device).index
    return torch.ops.lstm_ext.cuda_lstm_path(batch, hidden, dtype, proj_size > 0, backward,
                                             -1 if index is None else index, cell)


def lstm_layer(
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    reverse: bool = False,
    batch_sizes: Optional[Tensor] = None,
    w_hr: Optional[Tensor] = None,
    return_cells: bool = False,
):
    """One LSTM layer in one direction over a whole sequence.

    Shapes: ``x [T,B,I]``, or the packed ``[N,I]`` of a PackedSequence with
    its ``batch_sizes``; ``w_ih [4H,I]``, ``w_hh [4H,P]``, ``bias [4H]``
    (``b_ih + b_hh``) or None, ``h0 [B,P]``, ``c0 [B,H]``, and the optional
    projection ``w_hr [P,H]`` (P = H without one). Returns ``y [T,B,P]`` (or
    ``[N,P]``), ``h_n [B,P]`` and ``c_n [B,H]``, and with ``return_cells``
    also every ``c_t`` as ``cells [T,B,H]`` (or ``[N,H]``). ``reverse=True``
    runs from the last step to the first; ``y[t]`` stays aligned with
    ``x[t]``. Differentiable in every tensor argument, ``cells`` included.

    Every tensor has one dtype: float32, float64 or (on the CPU) bfloat16,
    which is computed in float32 with a float32 cell state and returned in
    bfloat16, ``cells`` included. The one exception is ``bias``, which may
    also be float32 for a bfloat16 ``x`` (the modules pass ``b_ih + b_hh``
    summed in float32); its gradient then is float32 too.
    """
    x, w_ih, w_hh, h0, c0, w_hr = autocast_inputs(x.device.type, x, w_ih, w_hh, h0, c0, w_hr)
    grad = needs_grad(x, w_ih, w_hh, bias, h0, c0, w_hr)
    args = (x, w_ih, w_hh, bias, h0, c0, reverse, return_cells or grad, batch_sizes, w_hr)
    y, h_n, c_n, _, cells = run_op(_forward_op, _LstmForward, grad, args)
    if return_cells:
        # The op keeps cells in the compute dtype (float32 for bfloat16).
        return y, h_n, c_n, cells.to(x.dtype)
    return y, h_n, c_n


def _sequence_shape(x: Tensor, features: int):
    """[T,B,F] for a dense x [T,B,I]; [N,F] for a packed x [N,I]."""
    return (*x.shape[:-1], features)


@torch.library.register_fake("lstm_ext::lstm_forward")
def _lstm_forward_fake(x, w_ih, w_hh, bias, h0, c0, reverse, save_for_backward, batch_sizes=None, w_hr=None):
    check_like_x("lstm_forward", x, w_ih=w_ih, w_hh=w_hh, h0=h0, c0=c0, w_hr=w_hr)
    check_bias_like_x("lstm_forward", x, bias)
    H = w_hh.shape[0] // 4
    P = w_hh.shape[1]
    y = x.new_empty(_sequence_shape(x, P))
    h_n = x.new_empty(h0.shape)
    c_n = x.new_empty(c0.shape)
    # gates and cells are kept in the compute dtype (float32 for bfloat16).
    saved = compute_dtype(x.dtype)
    if save_for_backward:
        gates = x.new_empty(_sequence_shape(x, 4 * H), dtype=saved)
        cells = x.new_empty(_sequence_shape(x, H), dtype=saved)
        return y, h_n, c_n, gates, cells
    return y, h_n, c_n, x.new_empty((0,), dtype=saved), x.new_empty((0,), dtype=saved)


@torch.library.register_fake("lstm_ext::lstm_backward")
def _lstm_backward_fake(
    grad_y, grad_h_n, grad_c_n, grad_cells, x, w_ih, w_hh, h0, c0, y, gates, cells, reverse, need_grad_x,
    batch_sizes=None, w_hr=None,
):
    check_like_x(
        "lstm_backward", x, grad_y=grad_y, grad_h_n=grad_h_n, grad_c_n=grad_c_n,
        w_ih=w_ih, w_hh=w_hh, h0=h0, c0=c0, y=y, w_hr=w_hr,
    )
    check_compute_like_x("lstm_backward", x, gates=gates, cells=cells, grad_cells=grad_cells)
    return (
        *fake_layer_grads(x, w_ih, w_hh, h0, need_grad_x),
        c0.new_empty(c0.shape),
        w_hr.new_empty(w_hr.shape) if w_hr is not None else x.new_empty((0,)),
    )


def _setup_context(ctx, inputs, output):
    x, w_ih, w_hh, bias, h0, c0, reverse, save_for_backward, batch_sizes, w_hr = inputs
    y, _, _, gates, cells = output
    ctx.reverse = reverse
    ctx.saved = save_for_backward
    ctx.batch_sizes = batch_sizes
    ctx.mark_non_differentiable(gates)
    # Absent output gradients stay None, and the kernel reads None as zero,
    # instead of autograd materialising [T,B,H] tensors of zeros.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w_ih, w_hh, h0, c0, y, gates, cells, w_hr, bias)


def _lstm_forward_backward(ctx, grad_y, grad_h_n, grad_c_n, _grad_gates, grad_cells):
    if torch.is_grad_enabled():
        # create_graph=True: the gradients must be differentiable themselves.
        return _differentiable_backward(ctx, (grad_y, grad_h_n, grad_c_n, grad_cells))
    require_saved(ctx, "lstm", "lstm_ext.ops.lstm_layer")
    x, w_ih, w_hh, h0, c0, y, gates, cells, w_hr, bias = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads = call_below_autograd(
        _backward_op, grad_y, grad_h_n, grad_c_n, grad_cells, x, w_ih, w_hh, h0, c0, y, gates, cells,
        ctx.reverse, needs[0], ctx.batch_sizes, w_hr,
    )
    grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_h0, grad_c0, grad_w_hr = grads
    return (
        grad_x if needs[0] else None,
        grad_w_ih if needs[1] else None,
        grad_w_hh if needs[2] else None,
        grad_bias_as(grad_bias, bias) if bias is not None and needs[3] else None,
        grad_h0 if needs[4] else None,
        grad_c0 if needs[5] else None,
        None,
        None,
        None,
        grad_w_hr if w_hr is not None and needs[9] else None,
    )


def _differentiable_backward(ctx, output_grads):
    x, w_ih, w_hh, h0, c0, _, _, _, w_hr, bias = ctx.saved_tensors
    return differentiable_grads(
        ctx.needs_input_grad,
        (x, w_ih, w_hh, bias, h0, c0, None, None, None, w_hr),
        lambda: _composite_op(x, w_ih, w_hh, bias, h0, c0, ctx.reverse, ctx.batch_sizes, w_hr),
        output_grads,
    )


_LstmForward = register_formula("lstm", _setup_context, _lstm_forward_backward, "lstm_ext.ops.lstm_layer or lstm_ext.LSTM")
