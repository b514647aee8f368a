"""What the LSTM, RNN and GRU op wrappers share: fake-kernel checks and the
differentiable (double-backward) path of their autograd formulas."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in for tensors stored in ``dtype``, and in
    which the LSTM ops keep the activations they save (``gates``, ``cells``):
    float32 for bfloat16 (and float16), else ``dtype`` itself. Mirrors
    csrc/compute_dtype.h."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype an enclosing ``torch.autocast`` asks for on ``device_type``, or
    None outside autocast."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_inputs(device_type: str, *tensors: Optional[Tensor]) -> tuple:
    """``tensors`` as torch.autocast would pass them to torch.nn's recurrent
    kernels: inside autocast, float32 tensors cast (differentiably) to the
    autocast dtype, the rest as they are; outside it, unchanged. The layers then
    compute in that dtype with float32 accumulation and a float32 cell state,
    and return it, as torch.nn does under autocast. (The combined bias is not
    passed here: it stays float32, the compute dtype of bfloat16 and float16.)"""
    dtype = autocast_dtype(device_type)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t is not None and t.dtype == torch.float32 else t for t in tensors)


def needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd will need the activations a forward can save."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _traced() -> bool:
    """Whether a tracer records this call (torch.compile, or torch.jit.trace as
    in ONNX export): it must see the plain op, with its registered autograd."""
    return torch.compiler.is_compiling() or torch._C._is_tracing()


def _below_autograd(op, args: tuple):
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def call_below_autograd(op, *args):
    """``op(*args)`` for a call that needs no gradient, dispatched straight past
    the autograd key. The kernel torch.library.register_autograd installs there
    would find no gradient needed and redispatch the same way, after ~10 us of
    Python per call (measured at T=1: 36 us plain, 27 us past it), a sizeable
    share of a small layer. Tracers record the plain call instead."""
    return op(*args) if _traced() else _below_autograd(op, args)


def eager_function(name: str, op, setup_context: Callable, backward: Callable) -> type:
    """An autograd.Function computing ``op`` with the formula registered for it
    (``setup_context`` and ``backward``, as given to register_autograd).

    Eager calls that need gradients go through it instead of the op's autograd
    kernel: same graph, same saved tensors, but without that kernel's per-call
    Python (torch's fill_defaults alone rebuilds the schema's argument list a
    dozen times, ~24 us per call here). Tracers and direct op callers keep using
    the registered kernel.
    """
    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(lambda *args: _below_autograd(op, args)),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })


def run_op(op, function: type, needs_autograd: bool, args: tuple):
    """``op(*args)`` the cheapest correct way: through ``function`` (from
    eager_function) when autograd must record it, past the autograd key when it
    need not, and as the plain op for tracers."""
    if needs_autograd and not _traced():
        return function.apply(*args)
    return call_below_autograd(op, *args)


def check_like_x(op: str, x: Tensor, **tensors: Optional[Tensor]) -> None:
    """The device and dtype checks the real kernels make, for the fake ones.

    A call that mixes devices (say one argument on "meta") dispatches to the
    fake kernel, which must refuse it as the real kernel would instead of
    returning uninitialised memory.
    """
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device != x.device:
            raise RuntimeError(f"{op}: {name}: expected device {x.device} (the device of x), got {t.device}")
        if t.dtype != x.dtype:
            raise RuntimeError(f"{op}: {name}: expected dtype {x.dtype} (the dtype of x), got {t.dtype}")


def check_bias_like_x(op: str, x: Tensor, bias: Optional[Tensor], name: str = "bias") -> None:
    """The bias check the real kernels make (csrc/checks.cpp, check::bias): x's
    device, and x's dtype or x's compute dtype (float32 for bfloat16)."""
    if bias is None:
        return
    if bias.device != x.device:
        raise RuntimeError(f"{op}: {name}: expected device {x.device} (the device of x), got {bias.device}")
    compute = compute_dtype(x.dtype)
    if compute == x.dtype:
        if bias.dtype != x.dtype:
            raise RuntimeError(f"{op}: {name}: expected dtype {x.dtype} (the dtype of x), got {bias.dtype}")
    elif bias.dtype not in (x.dtype, compute):
        raise RuntimeError(
            f"{op}: {name}: expected dtype {x.dtype} (the dtype of x) or {compute} (the compute dtype "
            f"for x of dtype {x.dtype}), got {bias.dtype}"
        )


def combine_biases(bias_ih: Tensor, bias_hh: Tensor) -> Tensor:
    """``bias_ih + bias_hh``, the one bias the ops take, summed in the compute
    dtype: float32 for bfloat16 parameters (as torch.nn/oneDNN does; a sum
    rounded to bfloat16 can flip the sign of a pre-activation near 0), a plain
    sum, with no cast, for float32 and float64. Differentiable in both."""
    compute = compute_dtype(bias_ih.dtype)
    if compute != bias_ih.dtype:
        return bias_ih.to(compute) + bias_hh.to(compute)
    return bias_ih + bias_hh


def grad_bias_as(grad_bias: Tensor, bias: Tensor) -> Tensor:
    """The backward ops return grad_bias in the compute dtype (float32 for a
    bfloat16 x); autograd wants it in the bias's dtype. No-op when they agree
    (always for float32 and float64)."""
    return grad_bias if grad_bias.dtype == bias.dtype else grad_bias.to(bias.dtype)


def check_compute_like_x(op: str, x: Tensor, **tensors: Optional[Tensor]) -> None:
    """check_like_x for tensors kept in x's compute dtype (saved activations)."""
    expected = compute_dtype(x.dtype)
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device != x.device:
            raise RuntimeError(f"{op}: {name}: expected device {x.device} (the device of x), got {t.device}")
        if t.dtype != expected:
            raise RuntimeError(
                f"{op}: {name}: expected dtype {expected} (the compute dtype for x of dtype {x.dtype}), "
                f"got {t.dtype}"
            )


def fake_layer_grads(x: Tensor, w_ih: Tensor, w_hh: Tensor, h0: Tensor, need_grad_x: bool) -> tuple:
    """Fake (grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_h0), the outputs the
    LSTM and RNN backward ops share. The real kernels return fresh contiguous
    tensors whatever the inputs' strides, so these use new_empty(shape), never
    empty_like; grad_x is an empty [0] tensor when not needed; grad_bias is in
    x's compute dtype (float32 for bfloat16)."""
    return (
        x.new_empty(x.shape) if need_grad_x else x.new_empty((0,)),
        w_ih.new_empty(w_ih.shape),
        w_hh.new_empty(w_hh.shape),
        w_hh.new_empty((w_hh.shape[0],), dtype=compute_dtype(x.dtype)),
        h0.new_empty(h0.shape),
    )


def differentiable_grads(
    needs_input_grad: Sequence[bool],
    inputs: Sequence[Optional[Tensor]],
    recompute: Callable[[], Sequence[Tensor]],
    output_grads: Sequence[Optional[Tensor]],
) -> tuple:
    """First-order gradients that autograd can differentiate again.

    The fused backward kernels are opaque to autograd, so under
    create_graph=True the layer is recomputed by ``recompute`` (the op's
    composite twin: the same function as differentiable ATen ops, looped over
    the steps in C++) and differentiated with create_graph=True. ``inputs``
    lines up with the op's arguments (None where an argument is not a tensor);
    ``output_grads`` with ``recompute``'s outputs (None = no gradient).
    """
    wanted = [i for i, t in enumerate(inputs) if t is not None and needs_input_grad[i]]
    result = [None] * len(inputs)
    with torch.enable_grad():
        outputs = recompute()
        pairs = [(o, g) for o, g in zip(outputs, output_grads) if g is not None]
        if not pairs or not wanted:
            return tuple(result)
        grads = torch.autograd.grad(
            [o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
            create_graph=True, allow_unused=True,
        )
    for i, g in zip(wanted, grads):
        result[i] = g if g is not None else torch.zeros_like(inputs[i])
    return tuple(result)


def register_formula(name: str, setup_context: Callable, backward: Callable, entry_point: str) -> type:
    """Installs the autograd formula of ``lstm_ext::<name>_forward`` (its
    ``setup_context`` and ``backward``) for tracers and direct op callers,
    makes ``lstm_ext::<name>_backward`` refuse to be differentiated, and
    returns the eager_function the wrapper ``entry_point`` calls."""
    forward_op, backward_op = f"lstm_ext::{name}_forward", f"lstm_ext::{name}_backward"
    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)
    register_opaque_backward(backward_op, forward_op, entry_point)
    op = getattr(torch.ops.lstm_ext, f"{name}_forward").default
    return eager_function(f"{name.capitalize()}Forward", op, setup_context, backward)


def require_saved(ctx, name: str, wrapper: str) -> None:
    """The first-order backward of an op called with save_for_backward=False
    has no activations to work from: say so, and how to call it."""
    if not ctx.saved:
        raise RuntimeError(
            f"lstm_ext::{name}_forward was called with save_for_backward=False, so it kept no "
            f"activations to differentiate. Call it with save_for_backward=True when gradients "
            f"are needed ({wrapper} decides this automatically)."
        )


def register_opaque_backward(backward_op: str, forward_op: str, entry_point: str) -> None:
    """Make differentiating a fused backward op's outputs fail loudly.

    Under grad mode the op's outputs carry this node, so a direct caller that
    differentiates them gets an error naming the differentiable route instead
    of gradients that silently come back as None.
    """

    def refuse(ctx, *grads):
        raise RuntimeError(
            f"{backward_op} is not differentiable. For second-order gradients, differentiate "
            f"{forward_op} (e.g. through {entry_point}) with create_graph=True, which takes a "
            "differentiable path."
        )

    torch.library.register_autograd(backward_op, refuse, setup_context=lambda ctx, inputs, output: None)
