"""Op-level tests of the vanilla RNN ops: torch.ops.lstm_ext.rnn_forward /
rnn_backward and the differentiable wrapper lstm_ext.rnn_ops.rnn_layer,
against the pure-PyTorch reference of tests/cells.py and torch.nn.RNN.

Both ops have CPU and CUDA kernels (csrc/cpu/rnn_cpu.cpp,
csrc/cuda_binding/rnn_cuda.cpp): the tests of values, gradients, gradcheck,
opcheck, fake kernels and argument checking take the ``device`` fixture
(conftest.py: "cpu", and "cuda" where there is a GPU), as tests/test_ops.py
does for the LSTM ops. The few that stay on the CPU say why.
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lstm_ext import rnn_ops
import cells
from helpers import assert_close, assert_message, dtype_re, leaf, needs_cuda, num_re, shape_re, tols

OPS = torch.ops.lstm_ext
GRAD_NAMES = ("grad_x", "grad_w_ih", "grad_w_hh", "grad_bias", "grad_h0")
LENGTHS = [5, 3, 3, 1]  # sorted, as pack_padded_sequence(enforce_sorted=True) wants


# --- reference and inputs: the shared ones of tests/cells.py ------------------------

def rnn_layer_ref(x, w_ih, w_hh, bias, h0, reverse=False, relu=False, batch_sizes=None):
    """One RNN layer, one direction (cells.layer_reference); returns (y, h_n,
    pre-activations). Packed input is run one sequence at a time."""
    kind = cells.RNN_RELU if relu else cells.RNN_TANH
    y, (h_n,), (pre,) = cells.layer_reference(kind, x, w_ih, w_hh, bias, None, (h0,), reverse, batch_sizes)
    return y, h_n, pre


def make_inputs(T, B, I, H, **kwargs):
    """(x, w_ih, w_hh, bias, h0, batch_sizes) for the RNN ops, bias = b_ih +
    b_hh (None with bias=False), x packed [N,I] when ``lengths`` is given: the
    shared input factory's (cells.make_inputs), whose keywords (dtype, device,
    bias, seed, scale, lengths) it takes. The values are drawn on the CPU (the
    same on every device); batch_sizes stays on the CPU, as in PackedSequence."""
    inputs = cells.make_inputs(cells.RNN_TANH, T, B, I, H, **kwargs)
    return (*inputs.op_args(), inputs.batch_sizes)


def cotangents(y, h_n, seed=99):
    """Random cotangents for y and h_n, drawn on the CPU, on their device."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device),
            torch.randn(h_n.shape, generator=g, dtype=h_n.dtype).to(h_n.device))


def ref_grads(x, w_ih, w_hh, bias, h0, reverse, relu, batch_sizes, gy, ghn):
    """Gradients of the reference for the given cotangents (None = not used).
    grad_bias is always returned (zero-bias leaf when bias is None)."""
    x, w_ih, w_hh, h0 = map(leaf, (x, w_ih, w_hh, h0))
    b = leaf(bias) if bias is not None else torch.zeros(w_ih.shape[0], dtype=x.dtype, device=x.device,
                                                          requires_grad=True)
    y, hn, _ = rnn_layer_ref(x, w_ih, w_hh, b, h0, reverse, relu, batch_sizes)
    outs, cots = zip(*[(o, c) for o, c in ((y, gy), (hn, ghn)) if c is not None])
    return torch.autograd.grad(outs, [x, w_ih, w_hh, b, h0], cots, allow_unused=True)


LAYOUTS = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
REVERSE = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
ACT = pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])


# --- forward and gradients vs the reference (float64) ---------------------------

@LAYOUTS
@REVERSE
@ACT
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
def test_layer_vs_reference_f64(device, lengths, reverse, relu, has_bias):
    x, w_ih, w_hh, b, h0, bs = make_inputs(5, 3, 4, 7, bias=has_bias, lengths=lengths, device=device)
    args = [None if t is None else leaf(t) for t in (x, w_ih, w_hh, b, h0)]
    y, hn = rnn_ops.rnn_layer(*args, reverse=reverse, relu=relu, batch_sizes=bs)
    ry, rhn, _ = rnn_layer_ref(x, w_ih, w_hh, b, h0, reverse, relu, bs)
    otol, gtol = tols(torch.float64)
    assert y.shape == ry.shape and hn.shape == rhn.shape
    assert y.device.type == device and hn.device.type == device
    assert y.is_contiguous() and hn.is_contiguous()
    assert_close(y, ry, "y", **otol)
    assert_close(hn, rhn, "h_n", **otol)
    gy, ghn = cotangents(y, hn)
    leaves = [a for a in args if a is not None]
    got = dict(zip([n for n, a in zip(GRAD_NAMES, args) if a is not None],
                   torch.autograd.grad((y, hn), leaves, (gy, ghn))))
    exp = dict(zip(GRAD_NAMES, ref_grads(x, w_ih, w_hh, b, h0, reverse, relu, bs, gy, ghn)))
    for name, g in got.items():
        assert_close(g, exp[name], name, **gtol)


@LAYOUTS
@REVERSE
@ACT
@pytest.mark.parametrize("need_grad_x", [True, False], ids=["gx", "nogx"])
def test_backward_op_vs_reference_f64(device, lengths, reverse, relu, need_grad_x):
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 3, 5, 9, lengths=lengths, seed=3, device=device)
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, reverse, relu, bs)
    gy, ghn = cotangents(y, hn)
    got = OPS.rnn_backward(gy, ghn, x, w_ih, w_hh, h0, y, reverse, relu, need_grad_x, bs)
    assert len(got) == 5
    exp = ref_grads(x, w_ih, w_hh, b, h0, reverse, relu, bs, gy, ghn)
    _, gtol = tols(torch.float64)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        if name == "grad_x" and not need_grad_x:
            assert a.shape == (0,), "grad_x must be an empty [0] tensor when need_grad_x=False"
            continue
        assert a.is_contiguous(), name
        assert_close(a, e, name, **gtol)


@LAYOUTS
@pytest.mark.parametrize("which", ["grad_y", "grad_h_n", "both"])
def test_backward_op_absent_grads_count_as_zero(device, lengths, which):
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 3, 5, 6, lengths=lengths, device=device)
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, True, False, bs)
    gy, ghn = cotangents(y, hn)
    given = (None if which in ("grad_y", "both") else gy,
             None if which in ("grad_h_n", "both") else ghn)
    zeros = (torch.zeros_like(gy) if given[0] is None else gy,
             torch.zeros_like(ghn) if given[1] is None else ghn)
    got = OPS.rnn_backward(*given, x, w_ih, w_hh, h0, y, True, False, True, bs)
    exp = OPS.rnn_backward(*zeros, x, w_ih, w_hh, h0, y, True, False, True, bs)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        assert torch.equal(a, e), name
    if which == "both":
        for name, a in zip(GRAD_NAMES, got):
            assert torch.count_nonzero(a) == 0, name


@pytest.mark.parametrize("use", ["y", "h_n"])
def test_layer_only_one_output_used(device, use):
    """With set_materialize_grads(False) the unused output's grad arrives as None."""
    x, w_ih, w_hh, b, h0, _ = make_inputs(4, 2, 3, 5, device=device)
    args = list(map(leaf, (x, w_ih, w_hh, b, h0)))
    y, hn = rnn_ops.rnn_layer(*args, reverse=True)
    out = y if use == "y" else hn
    g = torch.autograd.grad(out.sum(), args)
    gy = torch.ones_like(y) if use == "y" else None
    ghn = torch.ones_like(hn) if use == "h_n" else None
    exp = ref_grads(x, w_ih, w_hh, b, h0, True, False, None, gy, ghn)
    for name, a, e in zip(GRAD_NAMES, g, exp):
        assert_close(a, e, name, **tols(torch.float64)[1])


@pytest.mark.parametrize("H,B,dtype", [
    (1, 2, torch.float64), (7, 3, torch.float32), (9, 5, torch.float64), (15, 4, torch.float32),
    (16, 3, torch.float32), (17, 2, torch.float64), (33, 6, torch.float32), (64, 1, torch.float64),
], ids=lambda v: str(v).replace("torch.", ""))
@ACT
def test_vector_width_tails(device, H, B, dtype, relu):
    """H around the SIMD widths (8/16 float lanes, 4/8 double lanes) of the CPU
    kernels (the CUDA kernels get the same sizes)."""
    x, w_ih, w_hh, b, h0, _ = make_inputs(3, B, 5, H, dtype=dtype, seed=H, device=device)
    args = list(map(leaf, (x, w_ih, w_hh, b, h0)))
    y, hn = rnn_ops.rnn_layer(*args, reverse=True, relu=relu)
    gy, ghn = cotangents(y, hn)
    got = torch.autograd.grad((y, hn), args, (gy, ghn))
    d = lambda t: t.double()  # noqa: E731
    ry, rhn, _ = rnn_layer_ref(*map(d, (x, w_ih, w_hh, b, h0)), True, relu)
    exp = ref_grads(*map(d, (x, w_ih, w_hh, b, h0)), True, relu, None, d(gy), d(ghn))
    otol, gtol = tols(dtype)
    assert_close(y.double(), ry, "y", **otol)
    assert_close(hn.double(), rhn, "h_n", **otol)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        assert_close(a.double(), e, name, **gtol)


def test_noncontiguous_inputs(device):
    x, w_ih, w_hh, b, h0, _ = make_inputs(4, 3, 5, 6, device=device)

    def nc(t):  # same values, non-contiguous (first two dims swapped in memory)
        return t.transpose(0, 1).contiguous().transpose(0, 1)

    args_c = list(map(leaf, (x, w_ih, w_hh, b, h0)))
    args_s = [nc(t).requires_grad_(True) for t in (x, w_ih, w_hh)] + [leaf(b), nc(h0).requires_grad_(True)]
    assert not args_s[0].is_contiguous() and not args_s[4].is_contiguous()
    outs_c = rnn_ops.rnn_layer(*args_c)
    outs_s = rnn_ops.rnn_layer(*args_s)
    for a, e in zip(outs_s, outs_c):
        assert torch.equal(a, e)
    gy, ghn = cotangents(*outs_c)
    gc = torch.autograd.grad(outs_c, args_c, (gy, ghn))
    gs = torch.autograd.grad(outs_s, args_s, (nc(gy), nc(ghn)))
    for name, a, e in zip(GRAD_NAMES, gs, gc):
        assert_close(a, e, name, **tols(torch.float64)[1])


# --- parity with torch.nn.RNN (float32) -----------------------------------------

def _torch_rnn(I, H, relu, bidirectional, bias=True, device="cpu"):
    return nn.RNN(I, H, nonlinearity="relu" if relu else "tanh", bias=bias,
                  bidirectional=bidirectional, device=device)


def _params(rnn, half):
    sfx = "_l0_reverse" if half == "rev" else "_l0"
    w_ih, w_hh = getattr(rnn, "weight_ih" + sfx), getattr(rnn, "weight_hh" + sfx)
    b = getattr(rnn, "bias_ih" + sfx) + getattr(rnn, "bias_hh" + sfx) if rnn.bias else None
    return w_ih, w_hh, b


def _compare_with_torch(rnn, half, x_ref, out_ref, hn_ref, x, y, hn, ext_leaves):
    """Backprop the same cotangents through torch.nn's half and ours; compare."""
    H = rnn.hidden_size
    gy, ghn = cotangents(y, hn)
    ref_y = out_ref[..., H:] if half == "rev" else out_ref[..., :H]
    ref_hn = hn_ref[1] if half == "rev" else hn_ref[0]
    assert_close(y, ref_y, "y", **tols(torch.float32)[0])
    assert_close(hn, ref_hn, "h_n", **tols(torch.float32)[0])
    w_ih, w_hh, _ = _params(rnn, half)
    sfx = "_l0_reverse" if half == "rev" else "_l0"
    ref_leaves = [x_ref, w_ih, w_hh, getattr(rnn, "bias_ih" + sfx)]
    ref_g = torch.autograd.grad((ref_y, ref_hn), ref_leaves, (gy, ghn), retain_graph=True)
    ext_g = torch.autograd.grad((y, hn), ext_leaves, (gy, ghn), retain_graph=True)
    gtol = tols(torch.float32)[1]
    for name, a, e in zip(("grad_x", "grad_w_ih", "grad_w_hh", "grad_bias"), ext_g, ref_g):
        assert_close(a, e, name, **gtol)
    return ref_hn


@pytest.mark.parametrize("half", ["uni", "rev"], ids=["uni", "bidir-reverse-half"])
@ACT
def test_parity_with_torch_rnn_f32(device, half, relu):
    T, B, I, H = 6, 4, 5, 11
    rnn = _torch_rnn(I, H, relu, bidirectional=half == "rev", device=device)
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    h0_full = torch.randn(2 if half == "rev" else 1, B, H, device=device, requires_grad=True)
    out, hn_ref = rnn(x, h0_full)
    w_ih, w_hh, b = (leaf(t) for t in _params(rnn, half))
    xe = leaf(x)
    y, hn = rnn_ops.rnn_layer(xe, w_ih, w_hh, b, h0_full[-1].detach(), reverse=half == "rev",
                              relu=relu)
    _compare_with_torch(rnn, half, x, out, hn_ref, xe, y, hn, [xe, w_ih, w_hh, b])


@pytest.mark.parametrize("half", ["uni", "rev"], ids=["uni", "bidir-reverse-half"])
@ACT
def test_packed_parity_with_torch_rnn_f32(device, half, relu):
    """pack_padded_sequence with lengths [5,3,3,1], including h_n and h0's gradient."""
    T, I, H = max(LENGTHS), 4, 9
    B = len(LENGTHS)
    rnn = _torch_rnn(I, H, relu, bidirectional=half == "rev", device=device)
    padded = torch.randn(T, B, I, device=device)
    packed = pack_padded_sequence(padded, LENGTHS)
    x_ref = packed.data.detach().requires_grad_(True)
    packed = torch.nn.utils.rnn.PackedSequence(x_ref, packed.batch_sizes)
    h0_full = torch.randn(2 if half == "rev" else 1, B, H, device=device, requires_grad=True)
    out, hn_ref = rnn(packed, h0_full)
    w_ih, w_hh, b = (leaf(t) for t in _params(rnn, half))
    xe, h0 = leaf(x_ref), leaf(h0_full[-1])
    y, hn = rnn_ops.rnn_layer(xe, w_ih, w_hh, b, h0, reverse=half == "rev", relu=relu,
                              batch_sizes=packed.batch_sizes)
    assert y.shape == (sum(LENGTHS), H) and hn.shape == (B, H)
    ref_hn = _compare_with_torch(rnn, half, x_ref, out.data, hn_ref, xe, y, hn,
                                 [xe, w_ih, w_hh, b])
    # h0's gradient, through h_n only (each sequence's own last step).
    ghn = torch.randn(B, H, device=device)
    (g_ref,) = torch.autograd.grad(ref_hn, h0_full, ghn)
    (g_ext,) = torch.autograd.grad(hn, h0, ghn)
    assert_close(g_ext, g_ref[-1], "grad_h0", **tols(torch.float32)[1])


# --- gradcheck (float64) --------------------------------------------------------

@pytest.mark.parametrize("lengths,reverse,has_bias,relu", [
    (None, False, True, False),
    (None, True, False, False),
    (None, False, True, True),
    (None, True, True, True),
    (LENGTHS, False, True, False),
    (LENGTHS, True, False, False),
    (LENGTHS, True, True, True),
    (LENGTHS, False, False, True),
], ids=["dense-fwd-bias-tanh", "dense-rev-nobias-tanh", "dense-fwd-bias-relu", "dense-rev-bias-relu",
        "packed-fwd-bias-tanh", "packed-rev-nobias-tanh", "packed-rev-bias-relu",
        "packed-fwd-nobias-relu"])
def test_gradcheck_rnn_layer(device, lengths, reverse, has_bias, relu):
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 2, 3, 3, bias=has_bias, seed=11, scale=2.0,
                                           lengths=lengths, device=device)
    if relu:
        # relu is not differentiable at 0: finite differences need every
        # pre-activation clear of it (fixed seed, checked here).
        _, _, pre = rnn_layer_ref(x, w_ih, w_hh, b, h0, reverse, relu, bs)
        assert pre.abs().min() > 1e-3, "pick another seed: a relu pre-activation is near 0"
        assert (pre > 0).any() and (pre < 0).any()
    args = [None if t is None else leaf(t) for t in (x, w_ih, w_hh, b, h0)]

    def f(x, w_ih, w_hh, b, h0):
        return rnn_ops.rnn_layer(x, w_ih, w_hh, b, h0, reverse=reverse, relu=relu, batch_sizes=bs)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gradcheck_op_through_its_registered_autograd(device, reverse):
    """rnn_layer records an eager autograd.Function; direct callers of the op
    (and torch.compile) get the formula registered on the op. Both must be right."""
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 2, 3, 3, seed=11, scale=2.0, lengths=[4, 3], device=device)
    args = [leaf(t) for t in (x, w_ih, w_hh, b, h0)]
    op = OPS.rnn_forward.default
    assert "GeneratedBackwardFor" in type(op(*args, reverse, False, bs)[0].grad_fn).__name__
    assert "GeneratedBackwardFor" not in type(rnn_ops.rnn_layer(*args, reverse=reverse, batch_sizes=bs)[0]
                                               .grad_fn).__name__
    assert torch.autograd.gradcheck(lambda *a: op(*a, reverse, False, bs), args, eps=1e-6, atol=1e-7,
                                    rtol=1e-5)


# --- opcheck --------------------------------------------------------------------

@pytest.mark.parametrize("lengths,reverse,relu,has_bias,requires_grad", [
    (None, False, False, True, True),
    (None, True, True, False, False),
    (LENGTHS, True, False, True, True),
    (LENGTHS, False, True, False, False),
], ids=["dense-fwd-tanh-bias-rg", "dense-rev-relu-nobias", "packed-rev-tanh-bias-rg",
        "packed-fwd-relu-nobias"])
def test_opcheck_rnn_forward(device, lengths, reverse, relu, has_bias, requires_grad):
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 2, 3, 5, dtype=torch.float32, bias=has_bias,
                                           lengths=lengths, device=device)
    tensors = [None if t is None else (leaf(t) if requires_grad else t)
               for t in (x, w_ih, w_hh, b, h0)]
    torch.library.opcheck(OPS.rnn_forward.default, (*tensors, reverse, relu, bs))


@pytest.mark.parametrize("lengths,need_grad_x,grads,reverse", [
    (None, True, "both", False),
    (None, False, "none", True),
    (LENGTHS, True, "y", True),
    (LENGTHS, False, "h_n", False),
], ids=["dense-gx-both", "dense-nogx-none", "packed-gx-y-rev", "packed-nogx-hn"])
def test_opcheck_rnn_backward(device, lengths, need_grad_x, grads, reverse):
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 2, 3, 5, dtype=torch.float32, lengths=lengths, device=device)
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, reverse, False, bs)
    gy, ghn = cotangents(y, hn)
    gy = gy if grads in ("y", "both") else None
    ghn = ghn if grads in ("h_n", "both") else None
    torch.library.opcheck(OPS.rnn_backward.default,
                          (gy, ghn, x, w_ih, w_hh, h0, y, reverse, False, need_grad_x, bs))


def test_fake_kernel_strides_match_real_kernel(device):
    """Fakes must report the real kernels' (contiguous) outputs also for
    non-contiguous inputs; inductor relies on it."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, w_ih, w_hh, b, h0, _ = make_inputs(4, 2, 3, 5, dtype=torch.float32, device=device)
    x = x.transpose(0, 1).contiguous().transpose(0, 1)
    w_ih, h0 = w_ih.t().contiguous().t(), h0.t().contiguous().t()
    real_f = OPS.rnn_forward(x, w_ih, w_hh, b, h0, False, False)
    gy, ghn = cotangents(*real_f)
    bargs = (gy.transpose(0, 1).contiguous().transpose(0, 1), ghn, x, w_ih, w_hh, h0, real_f[0],
             False, False, True)
    real_b = OPS.rnn_backward(*bargs)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        conv = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        fake_f = OPS.rnn_forward(*map(conv, (x, w_ih, w_hh, b, h0)), False, False)
        fake_b = OPS.rnn_backward(*map(conv, bargs))
    for names, reals, fakes in ((("y", "h_n"), real_f, fake_f), (GRAD_NAMES, real_b, fake_b)):
        for name, r, f in zip(names, reals, fakes):
            assert (tuple(f.shape), f.stride()) == (tuple(r.shape), r.stride()), \
                f"{name}: fake {tuple(f.shape)}/{f.stride()} vs real {tuple(r.shape)}/{r.stride()}"
            assert (f.device, f.dtype) == (r.device, r.dtype), name


def test_all_meta_inputs_give_shapes():
    # No device fixture: every tensor is on "meta" (batch_sizes on the CPU), so
    # the fake kernel runs whatever the machine; no real kernel is involved.
    x, w_ih, w_hh, b, h0, bs = make_inputs(4, 2, 3, 5, dtype=torch.float32, lengths=LENGTHS)
    meta = [t.to("meta") for t in (x, w_ih, w_hh, b, h0)]
    y, hn = OPS.rnn_forward(*meta, True, False, bs)
    assert y.device.type == "meta" and (y.shape, hn.shape) == ((sum(LENGTHS), 5), (4, 5))


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "bias", "h0"])
def test_mixed_devices_raise(device, which):
    """A tensor on another device must be refused, naming it and its device: one
    on "meta" reaches the fake kernel; on CUDA, a CPU tensor among CUDA ones
    reaches the CUDA kernel (whose checks must catch it before any launch)."""
    names = ["x", "w_ih", "w_hh", "bias", "h0"]
    for other in ["meta"] + (["cpu"] if device != "cpu" else []):
        args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device)[:5])
        i = names.index(which)
        args[i] = args[i].to(other)
        with pytest.raises(RuntimeError, match=rf"{which}.*{other}"):
            OPS.rnn_forward(*args, False, False)


# --- validation -----------------------------------------------------------------

def _raises(call, *patterns):
    with pytest.raises(RuntimeError) as info:
        call()
    assert_message(info.value, *patterns)


@pytest.mark.parametrize("which,bad_shape,patterns", [
    ("x", (3, 2), [r"\bx\b", r"\[T, B, I\]", shape_re((3, 2))]),
    ("x", (3, 2, 3, 1), [r"\bx\b", num_re(3), num_re(4)]),
    ("w_ih", (4, 5), [r"w_ih", r"\[H, I\]", shape_re((4, 3)), shape_re((4, 5))]),
    ("w_ih", (5, 3), [r"w_ih", shape_re((4, 3)), shape_re((5, 3))]),
    ("w_hh", (4, 5), [r"w_hh", r"\[H, H\]", shape_re((4, 4)), shape_re((4, 5))]),
    ("w_hh", (4,), [r"w_hh", num_re(2), num_re(1)]),
    ("bias", (5,), [r"bias", r"\[H\]", shape_re((4,)), shape_re((5,))]),
    ("h0", (3, 4), [r"h0", r"\[B, H\]", shape_re((2, 4)), shape_re((3, 4))]),
    ("h0", (2, 5), [r"h0", shape_re((2, 4)), shape_re((2, 5))]),
])
def test_bad_shapes_raise(device, which, bad_shape, patterns):
    names = ["x", "w_ih", "w_hh", "bias", "h0"]
    args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device)[:5])
    args[names.index(which)] = torch.randn(bad_shape, device=device)
    _raises(lambda: OPS.rnn_forward(*args, False, False), r"rnn_forward", *patterns)
    _raises(lambda: rnn_ops.rnn_layer(*args), *patterns)


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "bias", "h0"])
def test_dtype_mismatch_raises(device, which):
    names = ["x", "w_ih", "w_hh", "bias", "h0"]
    args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device)[:5])
    args[names.index(which)] = args[names.index(which)].double()
    _raises(lambda: OPS.rnn_forward(*args, False, False), rf"\b{which}\b",
            dtype_re(torch.float32), dtype_re(torch.float64))


@pytest.mark.parametrize("device,dtype", [
    # float16 on the CPU only: the CUDA kernels support it (tests/test_cuda.py).
    ("cpu", torch.float16),
    ("cpu", torch.int32),
    pytest.param("cuda", torch.int32, marks=needs_cuda),
], ids=["cpu-f16", "cpu-i32", "cuda-i32"])
def test_unsupported_dtype_raises(device, dtype):
    # bfloat16 is supported on both devices (tests/test_bf16.py, tests/test_cuda.py).
    args = [t.to(dtype) for t in make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device)[:5]]
    supported = r"float32, float64, float16 or bfloat16" if device == "cuda" else r"float32, float64 or bfloat16"
    _raises(lambda: OPS.rnn_forward(*args, False, False), r"\bx\b",
            supported, {torch.float16: "Half", torch.int32: "Int"}[dtype])


@pytest.mark.parametrize("bad,patterns", [
    ("increasing", [r"batch_sizes", r"non-increasing", num_re(1), num_re(2)]),
    ("sum", [r"batch_sizes", r"\bx\b", num_re(12), num_re(11)]),
    ("dtype", [r"batch_sizes", dtype_re(torch.int64), r"Int"]),
    ("rank", [r"batch_sizes", r"\[T\]", shape_re((5, 1))]),
    ("zero", [r"batch_sizes", r"positive", num_re(0)]),
])
def test_bad_batch_sizes_raise(device, bad, patterns):
    x, w_ih, w_hh, b, h0, bs = make_inputs(0, 0, 3, 4, dtype=torch.float32, lengths=LENGTHS, device=device)
    if bad == "increasing":
        bs = torch.tensor([4, 1, 2, 1, 4], dtype=torch.int64)
    elif bad == "sum":
        x = torch.randn(11, 3, device=device)  # batch_sizes [4,3,3,1,1] sum to 12
    elif bad == "dtype":
        bs = bs.int()
    elif bad == "rank":
        bs = bs.view(-1, 1)
    elif bad == "zero":
        bs = torch.tensor([4, 3, 3, 0, 2], dtype=torch.int64)
    _raises(lambda: OPS.rnn_forward(x, w_ih, w_hh, b, h0, False, False, bs), *patterns)
    y = torch.zeros(x.shape[0], 4, device=device)
    _raises(lambda: OPS.rnn_backward(None, None, x, w_ih, w_hh, h0, y, False, False, True, bs),
            r"rnn_backward", *patterns)


@pytest.mark.parametrize("which,patterns", [
    ("y", [r"\by\b", r"\[T, B, H\]", shape_re((3, 2, 4)), shape_re((3, 2, 5))]),
    ("grad_y", [r"grad_y", shape_re((3, 2, 4)), shape_re((3, 2, 5))]),
    ("grad_h_n", [r"grad_h_n", r"\[B, H\]", shape_re((2, 4)), shape_re((2, 5))]),
])
def test_backward_bad_shapes_raise(device, which, patterns):
    x, w_ih, w_hh, b, h0, _ = make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device)
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, False, False)
    args = {"grad_y": torch.zeros_like(y), "grad_h_n": torch.zeros_like(hn), "y": y}
    args[which] = torch.zeros(*args[which].shape[:-1], 5, device=device)
    _raises(lambda: OPS.rnn_backward(args["grad_y"], args["grad_h_n"], x, w_ih, w_hh, h0,
                                     args["y"], False, False, True),
            r"rnn_backward", *patterns)


def test_backward_packed_y_shape_names_letters(device):
    x, w_ih, w_hh, b, h0, bs = make_inputs(0, 0, 3, 4, dtype=torch.float32, lengths=LENGTHS, device=device)
    y = torch.zeros(3, 2, 4, device=device)
    _raises(lambda: OPS.rnn_backward(None, None, x, w_ih, w_hh, h0, y, False, False, True, bs),
            r"\by\b", r"\[N, H\]", shape_re((12, 4)), shape_re((3, 2, 4)))


# --- edge cases -----------------------------------------------------------------

@REVERSE
@ACT
def test_zero_batch(device, reverse, relu):
    T, B, I, H = 3, 0, 4, 5
    args = list(map(leaf, make_inputs(T, B, I, H, dtype=torch.float32, device=device)[:5]))
    y, hn = rnn_ops.rnn_layer(*args, reverse=reverse, relu=relu)
    assert y.shape == (T, 0, H) and hn.shape == (0, H)
    grads = torch.autograd.grad((y.sum() + hn.sum(),), args)
    for name, g, a in zip(GRAD_NAMES, grads, args):
        assert g.shape == a.shape, name
        assert torch.count_nonzero(g) == 0, name


def test_zero_steps_returns_h0(device):
    x, w_ih, w_hh, b, h0, _ = make_inputs(0, 2, 3, 4, device=device)
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, False, False)
    assert y.shape == (0, 2, 4) and torch.equal(hn, h0)
    gx, gwi, gwh, gb, gh0 = OPS.rnn_backward(None, torch.ones_like(hn), x, w_ih, w_hh, h0, y,
                                             False, False, True)
    assert gx.shape == x.shape and torch.equal(gh0, torch.ones_like(h0))
    assert torch.count_nonzero(gwi) + torch.count_nonzero(gwh) + torch.count_nonzero(gb) == 0


@ACT
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")],
                         ids=["nan", "inf", "-inf"])
def test_nonfinite_propagates_like_torch(device, relu, value):
    """NaN and +-inf go where torch's own ops (torch.relu keeps NaN) take them.
    The reference is torch.nn.RNN on the CPU, also for the CUDA kernels: it
    computes with torch's ops, while torch.nn on CUDA runs cuDNN, which does
    not document how its RNN relu treats NaN (it has no NaN-propagation
    setting for it)."""
    T, B, I, H = 4, 3, 2, 5
    rnn = _torch_rnn(I, H, relu, bidirectional=False)
    x = torch.randn(T, B, I)
    x[1, 1, 0] = value
    h0 = torch.randn(1, B, H)
    out, hn_ref = rnn(x, h0)
    dev = lambda t: t.to(device)  # noqa: E731
    y, hn = rnn_ops.rnn_layer(dev(x), dev(rnn.weight_ih_l0), dev(rnn.weight_hh_l0),
                              dev(rnn.bias_ih_l0 + rnn.bias_hh_l0), dev(h0[0]), relu=relu)
    assert y.device.type == device and hn.device.type == device
    y, hn = y.cpu(), hn.cpu()
    otol = tols(torch.float32)[0]
    torch.testing.assert_close(y, out, equal_nan=True, **otol)
    torch.testing.assert_close(hn, hn_ref[0], equal_nan=True, **otol)
    if value != value:  # the NaN reaches every unit of row 1 from step 1 on
        assert torch.isnan(y[1:, 1]).all() and torch.isnan(hn[1]).all()


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_gradgradcheck(device, relu, packed):
    """Second-order gradients (create_graph=True, then differentiate again)."""
    torch.manual_seed(3)
    on = lambda t: leaf(t.to(device))  # noqa: E731  (values drawn on the CPU, alike on every device)
    if packed:
        batch_sizes = torch.tensor([3, 2, 2, 1])
        x = on(torch.randn(int(batch_sizes.sum()), 3, dtype=torch.float64))
    else:
        batch_sizes = None
        x = on(torch.randn(4, 3, 3, dtype=torch.float64))
    w_ih, w_hh, b = (on(torch.randn(*s, dtype=torch.float64) * 0.5) for s in ((4, 3), (4, 4), (4,)))
    h0 = on(torch.randn(3, 4, dtype=torch.float64))
    if relu:  # keep pre-activations away from relu's kink, where finite differences break
        _, _, pre = rnn_layer_ref(x, w_ih, w_hh, b, h0, True, relu, batch_sizes)
        assert pre.abs().min() > 1e-3, "pick another seed: a relu pre-activation is near 0"
        assert (pre > 0).any() and (pre < 0).any()

    def f(*args):
        return rnn_ops.rnn_layer(*args, reverse=True, relu=relu, batch_sizes=batch_sizes)

    assert torch.autograd.gradgradcheck(f, (x, w_ih, w_hh, b, h0))


def test_double_backward_matches_torch_nn(device):
    """Second-order gradients (a gradient penalty) equal torch.nn.RNN's on the
    CPU (cuDNN cannot do double backward, so the reference always runs on the
    CPU)."""
    torch.manual_seed(4)
    rnn = torch.nn.RNN(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ours = {n: leaf(p.to(device)) for n, p in rnn.named_parameters()}
    results = []
    for dev, params, run in (
            ("cpu", dict(rnn.named_parameters()), lambda v: rnn(v)[0]),
            (device, ours, lambda v: rnn_ops.rnn_layer(v, ours["weight_ih_l0"], ours["weight_hh_l0"],
                                                       ours["bias_ih_l0"] + ours["bias_hh_l0"],
                                                       torch.zeros(2, 4, dtype=torch.float64, device=device))[0])):
        xx = leaf(x.to(dev))
        (g,) = torch.autograd.grad(run(xx).pow(2).sum(), xx, create_graph=True)
        grads = torch.autograd.grad(g.pow(2).sum(), [xx, params["weight_hh_l0"], params["weight_ih_l0"]])
        results.append([t.cpu() for t in grads])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_backward_op_refuses_to_be_differentiated(device):
    """The fused backward op itself is opaque; differentiating its outputs
    directly fails loudly rather than returning None."""
    args = list(map(leaf, make_inputs(3, 2, 3, 4, device=device)[:5]))
    x, w_ih, w_hh, _, h0 = args
    with torch.no_grad():
        y, _ = rnn_ops.rnn_layer(*args)
    grads = torch.ops.lstm_ext.rnn_backward(torch.ones_like(y), None, x, w_ih, w_hh, h0, y, False, False, True)
    with pytest.raises(RuntimeError, match=r"not differentiable"):
        grads[1].sum().backward()


def test_opcheck_composite_dense(device):
    args = make_inputs(3, 2, 3, 4, device=device)[:5]
    torch.library.opcheck(torch.ops.lstm_ext.rnn_forward_composite.default, (*args, True, False))
