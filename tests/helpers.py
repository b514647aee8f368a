"""Comparison helpers shared by the test modules (not a conftest: import it)."""
import copy
import re

import pytest
import torch

from torch.nn.utils.rnn import PackedSequence
from torch.utils._python_dispatch import TorchDispatchMode

from lstm_ext.ops import SUPPORTED_DEVICE_TYPES

HAS_CUDA = torch.cuda.is_available()
# CUDA cases need a GPU and a build with CUDA kernels; without the latter a
# CUDA tensor raises NotImplementedError (tested in test_errors.py).
needs_cuda = pytest.mark.skipif(
    not (HAS_CUDA and "cuda" in SUPPORTED_DEVICE_TYPES),
    reason="needs CUDA" if not HAS_CUDA else "this build has no CUDA kernels",
)

#: Use as ``@pytest.mark.parametrize("device", DEVICES)`` or through the
#: ``device`` fixture in conftest.py.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]

# float32: outputs (y, h_n, c_n) and gradients, as agreed for parity with torch.nn.
F32_OUT = dict(atol=1e-5, rtol=1e-4)
F32_GRAD = dict(atol=1e-4, rtol=1e-3)
# float64: tight.
F64_OUT = dict(atol=1e-10, rtol=1e-9)
F64_GRAD = dict(atol=1e-9, rtol=1e-8)


def tols(dtype):
    """(output tolerances, gradient tolerances) for a dtype."""
    if dtype == torch.float64:
        return F64_OUT, F64_GRAD
    return F32_OUT, F32_GRAD


def assert_close(actual, expected, what="", **tol):
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{what}: {m}", **tol)


def layout(t, kind):
    """A tensor equal to ``t`` laid out as ``kind``.

    "contig": contiguous copy; "transposed": a transposed view of a contiguous
    tensor with the first two dims swapped; "step": a slice with step 2 in the
    last dimension (strided rows).  The result is a leaf tensor with the same
    requires_grad flag as ``t`` has on entry.  Empty tensors and NaN are kept
    as they are (an empty tensor may come out contiguous).
    """
    rg = t.requires_grad
    t = t.detach()
    if kind == "contig":
        out = t.clone().contiguous()
    elif kind == "transposed":
        assert t.dim() >= 2
        out = t.transpose(0, 1).contiguous().transpose(0, 1)
        if t.shape[0] > 1 and t.shape[1] > 1 and t.numel():
            assert not out.is_contiguous()
    elif kind == "step":
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        out = big[..., ::2]
        if t.shape[-1] > 1 and t.numel():
            assert not out.is_contiguous()
    else:
        raise ValueError(kind)
    torch.testing.assert_close(out, t, rtol=0, atol=0, equal_nan=True)
    if rg:
        # keep the non-contiguous layout: make the strided view itself a leaf
        out.requires_grad_(True)
    return out


def copy_params(src, dst):
    """Load ``src``'s state_dict into ``dst`` (strict) and return ``dst``."""
    dst.load_state_dict(src.state_dict(), strict=True)
    return dst


def forward_backward(module, x, hx=None, grad_seed=1234, cot_dtype=None):
    """Run ``module(x, hx)`` and backprop random cotangents into every output.

    Returns (outputs, grads): outputs is a dict with "out" and, for LSTM, "h_n"
    and "c_n" (for LSTMCell: "h", "c"); grads maps "input", "h0", "c0" (when hx
    is given) and every parameter name to its gradient.  The random cotangents
    depend only on ``grad_seed``, the output shapes and ``cot_dtype`` (the dtype
    they are drawn in, then cast to each output's dtype; default: the output's
    dtype), so two modules given the same inputs get the same cotangents.
    """
    leaves = {"input": x}
    if hx is not None:
        leaves["h0"], leaves["c0"] = hx
    for t in leaves.values():
        assert t.requires_grad
    res = module(x, hx) if hx is not None else module(x)
    if isinstance(res[1], tuple):  # LSTM: (out, (h_n, c_n))
        outs = {"out": res[0], "h_n": res[1][0], "c_n": res[1][1]}
    else:  # LSTMCell: (h, c)
        outs = {"h": res[0], "c": res[1]}
    g = torch.Generator(device="cpu").manual_seed(grad_seed)
    cot = [torch.randn(o.shape, generator=g, dtype=cot_dtype or o.dtype).to(device=o.device, dtype=o.dtype)
           for o in outs.values()]
    params = dict(module.named_parameters())
    names = list(leaves) + list(params)
    tensors = list(leaves.values()) + list(params.values())
    grads = torch.autograd.grad(list(outs.values()), tensors, cot, allow_unused=True)
    grads = dict(zip(names, grads))
    for k, v in grads.items():
        assert v is not None, f"no gradient reached {k}"
    return {k: v.detach() for k, v in outs.items()}, grads


def assert_results_close(res_a, res_b, dtype, label=""):
    (outs_a, grads_a), (outs_b, grads_b) = res_a, res_b
    otol, gtol = tols(dtype)
    assert outs_a.keys() == outs_b.keys()
    assert grads_a.keys() == grads_b.keys()
    for k in outs_a:
        assert outs_a[k].shape == outs_b[k].shape, (k, outs_a[k].shape, outs_b[k].shape)
        assert_close(outs_a[k], outs_b[k], f"{label} output {k}", **otol)
    for k in grads_a:
        assert grads_a[k].shape == grads_b[k].shape, (k, grads_a[k].shape, grads_b[k].shape)
        assert_close(grads_a[k], grads_b[k], f"{label} grad {k}", **gtol)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


# --- message matchers ---------------------------------------------------------

def shape_re(shape):
    """Regex matching a shape written as (2, 3), [2, 3], torch.Size([2, 3]) or 2x3."""
    shape = [int(s) for s in shape]
    comma = r",\s*".join(str(s) for s in shape)
    times = r"\s*x\s*".join(str(s) for s in shape)
    return rf"(\b|^){comma}(\b|$)|(\b|^){times}(\b|$)"


_DTYPE_RE = {
    torch.float64: r"float64|[Dd]ouble",
    torch.float32: r"float32|\bFloat\b|\bfloat\b",
    torch.float16: r"float16|\bHalf\b|\bhalf\b",
    torch.bfloat16: r"bfloat16|BFloat16",
    torch.int64: r"int64|\bLong\b|\blong\b",
}


def dtype_re(dtype):
    return _DTYPE_RE[dtype]


def num_re(n):
    """Regex matching the number n as a standalone token (not part of 123)."""
    return rf"(?<![\d.]){re.escape(str(n))}(?![\d])"


def assert_message(exc, *patterns):
    msg = str(exc)
    for p in patterns:
        assert re.search(p, msg), f"message {msg!r} does not match {p!r}"


def module_pair(ref_cls, ext_cls, *args, device="cpu", dtype=torch.float32, **kwargs):
    """(a torch.nn module, its lstm_ext twin) built alike, with identical parameters."""
    ref = ref_cls(*args, device=device, dtype=dtype, **kwargs)
    ext = ext_cls(*args, device=device, dtype=dtype, **kwargs)
    return ref, copy_params(ref, ext)


# --- a reference where cuDNN refuses the call ------------------------------------
# torch.nn on CUDA runs cuDNN, which refuses some calls lstm_ext accepts: a
# non-contiguous hx ("rnn: hx is not contiguous") and backward in eval mode
# ("cudnn RNN backward can only be called in training mode"). Accepting them is
# a feature of lstm_ext; a test that exercises one compares lstm_ext (still run
# on the refused input) against torch.nn on the CPU in float64 instead.

def cudnn_refuses(module, hx=None, backward=True):
    """Whether torch.nn's ``module`` running on cuDNN refuses a call with
    initial states ``hx`` (a tensor, a pair, or None), followed by a backward
    when ``backward``: cuDNN is in use (a CUDA module, cuDNN enabled and
    available) and hx is not contiguous, or the backward comes in eval mode.
    False on the CPU, where torch.nn accepts both."""
    if not torch.backends.cudnn.is_acceptable(next(module.parameters()).detach()):
        return False
    states = () if hx is None else (tuple(hx) if isinstance(hx, (tuple, list)) else (hx,))
    return any(not s.is_contiguous() for s in states) or (backward and not module.training)


def _to_float64_cpu(obj):
    """``obj`` with every tensor copied to the CPU, floating ones as float64
    leaves that keep their requires_grad flag (tuples, lists, dicts recursed)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu", torch.float64 if obj.is_floating_point() else obj.dtype, copy=True)
        return t.requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_float64_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_float64_cpu(v) for k, v in obj.items()}
    return obj


def _to_device_dtype(obj, device, dtype):
    """``obj`` with every tensor detached and moved to ``device``, floating ones
    cast to ``dtype``; a PackedSequence keeps its batch_sizes on the CPU."""
    if isinstance(obj, PackedSequence):
        conv = lambda t: None if t is None else _to_device_dtype(t, device, dtype)  # noqa: E731
        return PackedSequence(conv(obj.data), obj.batch_sizes, conv(obj.sorted_indices),
                              conv(obj.unsorted_indices))
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to_device_dtype(v, device, dtype) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device_dtype(v, device, dtype) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_device_dtype(v, device, dtype) for k, v in obj.items()}
    return obj


def float64_cpu_reference(run, module, *args, **kwargs):
    """``run(module, *args, **kwargs)`` computed by torch.nn on the CPU in
    float64, for the calls cuDNN refuses (see cudnn_refuses).

    ``module`` (a torch.nn module) is copied to a float64 CPU twin with the same
    (upcast) parameters and training flag, every tensor in ``args``/``kwargs``
    to a float64 CPU leaf (requires_grad kept), and ``run`` is called on those
    with ``cot_dtype`` set to the module's dtype: ``run`` draws its random
    cotangents in that dtype (forward_backward, backprop), so they equal the
    ones the run under test drew. Every tensor of the result comes back
    detached on the module's device, floating ones in the module's dtype, ready
    for the comparison at that dtype's tolerances.
    """
    p = next(module.parameters())
    device, dtype = p.device, p.dtype
    twin = copy.deepcopy(module).to(device="cpu", dtype=torch.float64)
    result = run(twin, *_to_float64_cpu(args), cot_dtype=dtype, **_to_float64_cpu(kwargs))
    return _to_device_dtype(result, device, dtype)


def assert_flatten_parameters_harmless(ext, x):
    """flatten_parameters() is a no-op that keeps the parameters (same objects,
    same values, same outputs), and training still updates what forward uses."""
    before = {n: (p, p.detach().clone()) for n, p in ext.named_parameters()}
    y0 = ext(x)[0]
    assert ext.flatten_parameters() is None
    for n, p in ext.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1]), n
    torch.testing.assert_close(ext(x)[0], y0, atol=0, rtol=0)
    ext(x)[0].sum().backward()
    with torch.no_grad():
        for p in ext.parameters():
            p -= 0.1 * p.grad
    assert not torch.allclose(ext(x)[0], y0)


def backprop(outs, wrt, seed=1234, cot_dtype=None):
    """Gradients of sum_k <cot_k, outs[k]> w.r.t. every tensor in ``wrt`` (dicts);
    the cotangents depend only on ``seed``, the output shapes and ``cot_dtype``
    (as in forward_backward)."""
    g = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=g, dtype=cot_dtype or o.dtype).to(device=o.device, dtype=o.dtype)
            for o in outs.values()]
    grads = torch.autograd.grad(list(outs.values()), list(wrt.values()), cots, allow_unused=True)
    for name, gr in zip(wrt, grads):
        assert gr is not None, f"no gradient reached {name}"
    return dict(zip(wrt, grads))


def assert_dicts_close(got, exp, tol, label):
    assert list(got) == list(exp)
    for k in got:
        assert got[k].shape == exp[k].shape, (label, k, got[k].shape, exp[k].shape)
        assert_close(got[k], exp[k], f"{label} {k}", **tol)


def expect_same_error(ref_call, ext_call, *patterns):
    """torch.nn's exception type for this input, raised by lstm_ext too (or a
    subclass), before any lstm_ext kernel, with a message matching every regex
    in ``patterns`` (and not empty)."""
    with pytest.raises(Exception) as ref_info:
        ref_call()
    ref_type = type(ref_info.value)
    rec = OpRecorder()
    with pytest.raises(ref_type) as info:
        with rec:
            ext_call()
    assert rec.lstm_ext_ops() == [], f"lstm_ext kernels ran before the error: {rec.lstm_ext_ops()}"
    assert str(info.value).strip(), f"lstm_ext raised {type(info.value).__name__} with no message"
    assert_message(info.value, *patterns)
    return info.value


class OpRecorder(TorchDispatchMode):
    """Records every dispatched op, to show that an error came before any
    lstm_ext kernel ran."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))

    def lstm_ext_ops(self):
        return [str(f) for f in self.ops if getattr(f, "namespace", None) == "lstm_ext"]
