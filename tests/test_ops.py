"""Op-level tests: torch.ops.lstm_ext.lstm_forward / lstm_backward and the
differentiable Python wrapper lstm_ext.ops.lstm_layer, against the pure-PyTorch
reference in tests/reference.py (and, for reverse=True, against torch.nn)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_ext  # noqa: F401  (loads the extension and registers the ops)
from lstm_ext import ops as lstm_ops
import cells
from helpers import assert_close, leaf, tols
from reference import lstm_layer_ref

OPS = torch.ops.lstm_ext


def make_inputs(T, B, I, H, **kwargs):
    """(x, w_ih, w_hh, bias, h0, c0) for the LSTM ops, bias = b_ih + b_hh (None
    with bias=False): the shared input factory's (tests/cells.py), whose
    keywords (dtype, device, bias, seed, scale) it takes."""
    return cells.make_inputs(cells.LSTM, T, B, I, H, **kwargs).op_args()


def cotangents(T, B, H, dtype, device, seed=99):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    return r(T, B, H), r(B, H), r(B, H), r(T, B, H)


def ref_grads(x, w_ih, w_hh, bias, h0, c0, reverse, gy, ghn, gcn, gcells=None):
    """Gradients of the reference layer for the given cotangents.

    grad_bias is always returned (as the gradient w.r.t. a bias, zero if none
    was given, since d pre / d bias = 1)."""
    x, w_ih, w_hh, h0, c0 = map(leaf, (x, w_ih, w_hh, h0, c0))
    b = leaf(bias) if bias is not None else torch.zeros(w_ih.shape[0], dtype=x.dtype,
                                                          device=x.device, requires_grad=True)
    y, hn, cn, _, cells = lstm_layer_ref(x, w_ih, w_hh, b, h0, c0, reverse)
    outs, cots = [y, hn, cn], [gy, ghn, gcn]
    if gcells is not None:
        outs.append(cells)
        cots.append(gcells)
    gx, gwi, gwh, gb, gh0, gc0 = torch.autograd.grad(outs, [x, w_ih, w_hh, b, h0, c0], cots)
    return gx, gwi, gwh, gb, gh0, gc0


GRAD_NAMES = ("grad_x", "grad_w_ih", "grad_w_hh", "grad_bias", "grad_h0", "grad_c0")


# --- lstm_forward -------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("save", [True, False], ids=["save", "nosave"])
def test_forward_matches_reference_f64(device, reverse, has_bias, save):
    T, B, I, H = 6, 3, 5, 7
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, device=device, bias=has_bias)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, save)
    ry, rhn, rcn, rgates, rcells = lstm_layer_ref(x, w_ih, w_hh, b, h0, c0, reverse)
    otol, _ = tols(torch.float64)
    assert y.shape == (T, B, H) and hn.shape == (B, H) and cn.shape == (B, H)
    for t in (y, hn, cn, gates, cells):
        assert t.dtype == torch.float64 and t.device.type == device
    assert_close(y, ry, "y", **otol)
    assert_close(hn, rhn, "h_n", **otol)
    assert_close(cn, rcn, "c_n", **otol)
    if save:
        assert gates.shape == (T, B, 4 * H) and cells.shape == (T, B, H)
        assert_close(gates, rgates, "gates", **otol)
        assert_close(cells, rcells, "cells", **otol)
    else:
        assert gates.shape == (0,) and cells.shape == (0,)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_forward_matches_reference_f32(device, reverse):
    T, B, I, H = 9, 4, 3, 33
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, True)
    ref = lstm_layer_ref(*(t.double() for t in (x, w_ih, w_hh, b, h0, c0)), reverse)
    for name, a, r in zip(("y", "h_n", "c_n", "gates", "cells"), (y, hn, cn, gates, cells), ref):
        assert a.dtype == torch.float32
        assert_close(a.double(), r, name, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_forward_final_state_is_last_step(device, reverse):
    """h_n / c_n are the state after the last processed step: t=T-1 forward, t=0 reverse."""
    x, w_ih, w_hh, b, h0, c0 = make_inputs(5, 2, 3, 4, device=device)
    y, hn, cn, _, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, True)
    last = 0 if reverse else -1
    assert torch.equal(hn, y[last])
    assert torch.equal(cn, cells[last])


def test_forward_save_flag_does_not_change_outputs(device):
    x, w_ih, w_hh, b, h0, c0 = make_inputs(7, 3, 4, 5, dtype=torch.float32, device=device)
    a = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    n = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, False)
    for i in range(3):
        torch.testing.assert_close(a[i], n[i], atol=1e-6, rtol=1e-6)


def test_reverse_equals_flipped_forward(device):
    x, w_ih, w_hh, b, h0, c0 = make_inputs(8, 3, 5, 6, device=device)
    yr, hr, cr, gr, clr = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, True, True)
    yf, hf, cf, gf, clf = OPS.lstm_forward(x.flip(0), w_ih, w_hh, b, h0, c0, False, True)
    otol, _ = tols(torch.float64)
    assert_close(yr, yf.flip(0), "y", **otol)
    assert_close(hr, hf, "h_n", **otol)
    assert_close(cr, cf, "c_n", **otol)
    assert_close(gr, gf.flip(0), "gates", **otol)
    assert_close(clr, clf.flip(0), "cells", **otol)


def test_reverse_matches_torch_bidirectional(device):
    """reverse=True is exactly the reverse direction of a bidirectional torch.nn.LSTM."""
    T, B, I, H = 11, 3, 5, 7
    ref = torch.nn.LSTM(I, H, bidirectional=True).to(device)
    x = torch.randn(T, B, I, device=device)
    h0 = torch.randn(2, B, H, device=device)
    c0 = torch.randn(2, B, H, device=device)
    with torch.no_grad():
        out, (hn, cn) = ref(x, (h0, c0))
        for d, sfx in ((0, "_l0"), (1, "_l0_reverse")):
            w_ih, w_hh = getattr(ref, "weight_ih" + sfx), getattr(ref, "weight_hh" + sfx)
            b = getattr(ref, "bias_ih" + sfx) + getattr(ref, "bias_hh" + sfx)
            y, h, c = lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0[d], c0[d], reverse=bool(d))
            assert_close(y, out[..., d * H:(d + 1) * H], f"y dir {d}", atol=1e-5, rtol=1e-4)
            assert_close(h, hn[d], f"h_n dir {d}", atol=1e-5, rtol=1e-4)
            assert_close(c, cn[d], f"c_n dir {d}", atol=1e-5, rtol=1e-4)


# --- lstm_layer (autograd wrapper) ---------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
def test_layer_forward_backward_vs_reference(device, reverse, has_bias):
    T, B, I, H = 7, 3, 5, 6
    inputs = make_inputs(T, B, I, H, device=device, bias=has_bias)
    x, w_ih, w_hh, b, h0, c0 = [None if t is None else leaf(t) for t in inputs]
    y, hn, cn = lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse)
    ry, rhn, rcn, _, _ = lstm_layer_ref(*inputs, reverse)
    otol, gtol = tols(torch.float64)
    assert_close(y, ry, "y", **otol)
    assert_close(hn, rhn, "h_n", **otol)
    assert_close(cn, rcn, "c_n", **otol)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    wrt = [x, w_ih, w_hh, h0, c0] + ([b] if has_bias else [])
    got = torch.autograd.grad([y, hn, cn], wrt, [gy, ghn, gcn])
    exp = ref_grads(*inputs, reverse, gy, ghn, gcn)
    exp = [exp[0], exp[1], exp[2], exp[4], exp[5]] + ([exp[3]] if has_bias else [])
    for name, a, e in zip(["x", "w_ih", "w_hh", "h0", "c0", "bias"], got, exp):
        assert_close(a, e, f"grad {name}", **gtol)


def test_layer_only_some_outputs_used(device):
    """Backward through y alone, h_n alone, c_n alone (undefined/zero cotangents)."""
    T, B, I, H = 4, 2, 3, 5
    inputs = make_inputs(T, B, I, H, device=device)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    zeros = torch.zeros_like
    for idx, (gy_, ghn_, gcn_) in enumerate([(gy, zeros(ghn), zeros(gcn)),
                                             (zeros(gy), ghn, zeros(gcn)),
                                             (zeros(gy), zeros(ghn), gcn)]):
        x, w_ih, w_hh, b, h0, c0 = map(leaf, inputs)
        outs = lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0)
        (outs[idx] * (gy_, ghn_, gcn_)[idx]).sum().backward()
        exp = ref_grads(*inputs, False, gy_, ghn_, gcn_)
        for name, t, e in zip(GRAD_NAMES, (x, w_ih, w_hh, b, h0, c0), exp):
            assert_close(t.grad, e, f"output {idx} {name}", **tols(torch.float64)[1])


def test_layer_noncontiguous_inputs(device):
    """Non-contiguous x / weights / states give the same result as contiguous ones."""
    T, B, I, H = 6, 3, 5, 4
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, device=device)
    xs = x.transpose(0, 1).contiguous().transpose(0, 1)       # [T,B,I], strides (I, T*I, 1)
    w_ih_s = w_ih.t().contiguous().t()                          # column-major
    w_hh_s = torch.cat([w_hh, w_hh], dim=1)[:, ::2]             # step 2 in last dim
    w_hh_s.copy_(w_hh)
    b_s = torch.stack([b, b], dim=1)[:, 0]                      # stride 2
    h0_s = h0.t().contiguous().t()
    c0_s = torch.stack([c0, c0], dim=-1)[..., 1]
    for t in (xs, w_ih_s, w_hh_s, b_s, h0_s, c0_s):
        assert not t.is_contiguous()
    args_c = [leaf(t) for t in (x, w_ih, w_hh, b, h0, c0)]
    args_s = [t.detach().requires_grad_(True) for t in (xs, w_ih_s, w_hh_s, b_s, h0_s, c0_s)]
    outs_c = lstm_ops.lstm_layer(*args_c, reverse=True)
    outs_s = lstm_ops.lstm_layer(*args_s, reverse=True)
    otol, gtol = tols(torch.float64)
    for a, e in zip(outs_s, outs_c):
        assert_close(a, e, "noncontig output", **otol)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    gc = torch.autograd.grad(outs_c, args_c, [gy, ghn, gcn])
    # non-contiguous cotangents as well
    gy_s = gy.transpose(0, 1).contiguous().transpose(0, 1)
    gs = torch.autograd.grad(outs_s, args_s, [gy_s, ghn.t().contiguous().t(), gcn])
    for name, a, e in zip(GRAD_NAMES, gs, gc):
        assert_close(a, e, f"noncontig {name}", **gtol)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_layer_zero_batch(device, reverse):
    T, B, I, H = 3, 0, 4, 5
    inputs = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    x, w_ih, w_hh, b, h0, c0 = map(leaf, inputs)
    y, hn, cn = lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse)
    assert y.shape == (T, 0, H) and hn.shape == (0, H) and cn.shape == (0, H)
    (y.sum() + hn.sum() + cn.sum()).backward()
    assert x.grad.shape == x.shape and h0.grad.shape == h0.shape
    for t in (w_ih, w_hh, b):
        assert torch.equal(t.grad, torch.zeros_like(t))


def test_layer_single_step(device):
    inputs = make_inputs(1, 2, 3, 1, device=device)
    y, hn, cn = lstm_ops.lstm_layer(*inputs)
    ry, rhn, rcn, _, _ = lstm_layer_ref(*inputs)
    assert_close(y, ry, "y", **tols(torch.float64)[0])
    assert_close(hn, rhn, "h_n", **tols(torch.float64)[0])


@pytest.mark.parametrize("H,B,dtype", [
    (8, 1, torch.float32), (9, 5, torch.float64), (15, 17, torch.float32), (16, 3, torch.float64),
    (17, 2, torch.float32), (32, 9, torch.float64), (65, 4, torch.float32), (64, 1, torch.float64),
    (128, 64, torch.float32),
], ids=lambda v: str(v).replace("torch.", ""))
def test_layer_vector_and_batch_tiling_boundaries(device, H, B, dtype):
    """Sizes around SIMD widths (8/16 lanes) and batch tiling, forward and backward,
    against the float64 reference."""
    T, I = 4, 5
    inputs = make_inputs(T, B, I, H, dtype=dtype, device=device, seed=H + B)
    args = [leaf(t) for t in inputs]
    outs = lstm_ops.lstm_layer(*args, reverse=bool(H % 2))
    ref_inputs = [t.double() for t in inputs]
    ref = lstm_layer_ref(*ref_inputs, bool(H % 2))[:3]
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    got = torch.autograd.grad(outs, args, [g.to(dtype) for g in (gy, ghn, gcn)])
    exp = ref_grads(*ref_inputs, bool(H % 2), gy, ghn, gcn)
    exp = (exp[0], exp[1], exp[2], exp[3], exp[4], exp[5])
    otol, gtol = tols(dtype)
    for name, a, e in zip(("y", "h_n", "c_n"), outs, ref):
        assert_close(a.double(), e, name, **otol)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        assert_close(a.double(), e, name, **gtol)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(1, 6), B=st.integers(0, 3), I=st.integers(1, 6), H=st.integers(1, 6),
       reverse=st.booleans(), has_bias=st.booleans(), scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_layer_property_vs_reference(T, B, I, H, reverse, has_bias, scale):
    inputs = make_inputs(T, B, I, H, bias=has_bias, scale=scale, seed=T * 1000 + B * 100 + I * 10 + H)
    args = [None if t is None else leaf(t) for t in inputs]
    outs = lstm_ops.lstm_layer(*args, reverse=reverse)
    ref = lstm_layer_ref(*inputs, reverse)[:3]
    otol, gtol = tols(torch.float64)
    for name, a, e in zip(("y", "h_n", "c_n"), outs, ref):
        assert a.shape == e.shape
        assert_close(a, e, name, **otol)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, "cpu")
    wrt = [t for t in args if t is not None]
    got = torch.autograd.grad(outs, wrt, [gy, ghn, gcn])
    exp = ref_grads(*inputs, reverse, gy, ghn, gcn)
    exp = [e for e, t in zip((exp[0], exp[1], exp[2], exp[3], exp[4], exp[5]), inputs) if t is not None]
    for a, e in zip(got, exp):
        assert_close(a, e, "grad", **gtol)


# --- lstm_backward --------------------------------------------------------------

@pytest.mark.parametrize("reverse,has_bias,use_gcells,need_grad_x", [
    (False, True, False, True),
    (True, False, True, True),
    (False, False, True, False),
    (True, True, False, False),
], ids=["fwd-bias-nocells-gx", "rev-nobias-cells-gx", "fwd-nobias-cells-nogx", "rev-bias-nocells-nogx"])
def test_backward_op_vs_reference(device, reverse, has_bias, use_gcells, need_grad_x):
    T, B, I, H = 6, 3, 4, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, device=device, bias=has_bias)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, True)
    gy, ghn, gcn, gcells = cotangents(T, B, H, torch.float64, device)
    if not use_gcells:
        gcells = None
    got = OPS.lstm_backward(gy, ghn, gcn, gcells, x, w_ih, w_hh, h0, c0, y, gates, cells,
                            reverse, need_grad_x)
    assert len(got) == 7
    assert got[6].shape == (0,), "grad_w_hr must be an empty [0] tensor without a projection"
    exp = ref_grads(x, w_ih, w_hh, b, h0, c0, reverse, gy, ghn, gcn, gcells)
    _, gtol = tols(torch.float64)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        if name == "grad_x" and not need_grad_x:
            assert a.shape == (0,), f"grad_x should be empty [0] when need_grad_x=False, got {a.shape}"
            continue
        assert a.shape == e.shape, (name, a.shape, e.shape)
        assert_close(a, e, name, **gtol)


def test_backward_need_grad_x_does_not_change_other_grads(device):
    T, B, I, H = 5, 2, 3, 4
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float32, device)
    a = OPS.lstm_backward(gy, ghn, gcn, None, x, w_ih, w_hh, h0, c0, y, gates, cells, False, True)
    n = OPS.lstm_backward(gy, ghn, gcn, None, x, w_ih, w_hh, h0, c0, y, gates, cells, False, False)
    assert a[0].shape == x.shape and n[0].shape == (0,)
    for name, ga, gn in zip(GRAD_NAMES[1:], a[1:], n[1:]):
        torch.testing.assert_close(ga, gn, atol=1e-6, rtol=1e-6, msg=name)


def test_backward_grad_cells_is_added_to_cell_gradient(device):
    """grad_cells[t] enters as an extra dL/dc_t; at the last step it is
    indistinguishable from grad_c_n."""
    T, B, I, H = 4, 2, 3, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, device=device)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    gcells = torch.zeros(T, B, H, dtype=torch.float64, device=device)
    gcells[-1] = gcn
    via_cells = OPS.lstm_backward(gy, ghn, torch.zeros_like(gcn), gcells, x, w_ih, w_hh, h0, c0,
                                  y, gates, cells, False, True)
    via_cn = OPS.lstm_backward(gy, ghn, gcn, None, x, w_ih, w_hh, h0, c0, y, gates, cells, False, True)
    for name, a, e in zip(GRAD_NAMES, via_cells, via_cn):
        assert_close(a, e, name, **tols(torch.float64)[1])


def test_backward_op_absent_output_grads_count_as_zero(device):
    """grad_y / grad_h_n / grad_c_n are optional: None means zero."""
    T, B, I, H = 4, 2, 3, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, device=device)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, True, True)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float64, device)
    saved = (x, w_ih, w_hh, h0, c0, y, gates, cells, True, True)
    _, gtol = tols(torch.float64)
    for keep in range(3):
        given_ = [g if i == keep else None for i, g in enumerate((gy, ghn, gcn))]
        zeroed = [g if i == keep else torch.zeros_like(g) for i, g in enumerate((gy, ghn, gcn))]
        got = OPS.lstm_backward(*given_, None, *saved)
        exp = OPS.lstm_backward(*zeroed, None, *saved)
        ref = ref_grads(x, w_ih, w_hh, b, h0, c0, True, *zeroed)
        for name, a, e, r in zip(GRAD_NAMES, got, exp, ref):
            assert_close(a, e, f"keep {keep} {name} (None vs zeros)", **gtol)
            assert_close(a, r, f"keep {keep} {name} (vs reference)", **gtol)


# --- dtype / argument validation at op level -----------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.int32], ids=["f16", "i32"])
def test_unsupported_dtype_raises_cpu(dtype):
    # CPU only: a CUDA backend may legitimately support float16. (bfloat16 is
    # supported on the CPU: tests/test_bf16.py.)
    x, w_ih, w_hh, b, h0, c0 = make_inputs(3, 2, 3, 4, dtype=torch.float32)
    args = [t.to(dtype) for t in (x, w_ih, w_hh, b, h0, c0)]
    with pytest.raises((RuntimeError, TypeError, ValueError, NotImplementedError)) as ei:
        OPS.lstm_forward(*args, False, False)
    name = str(dtype).replace("torch.", "")
    aten = {"float16": "Half", "int32": "Int"}[name]
    assert name in str(ei.value) or aten in str(ei.value), str(ei.value)
    with pytest.raises((RuntimeError, TypeError, ValueError, NotImplementedError)):
        lstm_ops.lstm_layer(*args)


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "bias", "h0", "c0"])
def test_op_mixed_dtypes_raise(device, which):
    names = ["x", "w_ih", "w_hh", "bias", "h0", "c0"]
    args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device))
    i = names.index(which)
    args[i] = args[i].double()
    with pytest.raises(RuntimeError, match=rf"lstm_forward: {which}: expected dtype Float .*got Double"):
        OPS.lstm_forward(*args, False, False)


@pytest.mark.parametrize("which,bad_shape", [
    ("x", (3, 2)),            # rank 2
    ("w_ih", (16, 4)),        # I mismatch (x has I=3)
    ("w_ih", (15, 3)),        # 4H mismatch
    ("w_hh", (16, 5)),        # not square in H
    ("bias", (15,)),
    ("h0", (3, 4)),           # B mismatch
    ("c0", (2, 5)),           # H mismatch
])
def test_op_bad_shapes_raise(device, which, bad_shape):
    names = ["x", "w_ih", "w_hh", "bias", "h0", "c0"]
    args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32, device=device))
    args[names.index(which)] = torch.randn(bad_shape, device=device)
    # The op's own check names the argument, before any kernel (ATen's GEMM
    # would raise a RuntimeError too, so the message is what tells them apart).
    expected = rf"lstm_forward: {which}: expected (a 3-D tensor|shape)"
    with pytest.raises(RuntimeError, match=expected):
        OPS.lstm_forward(*args, False, True)
    with pytest.raises(RuntimeError, match=expected):
        lstm_ops.lstm_layer(*args)


# --- gradcheck ------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_lstm_layer(device, reverse, has_bias):
    inputs = make_inputs(4, 2, 3, 3, device=device, bias=has_bias, seed=7, scale=2.0)
    args = [None if t is None else leaf(t) for t in inputs]

    def f(x, w_ih, w_hh, b, h0, c0):
        return lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gradcheck_op_through_its_registered_autograd(device, reverse):
    """lstm_layer records an eager autograd.Function; direct callers of the op
    (and torch.compile) get the formula registered on the op. Both must be right."""
    inputs = make_inputs(4, 2, 3, 3, device=device, seed=7, scale=2.0)
    args = [leaf(t) for t in inputs]
    y_op = OPS.lstm_forward.default(*args, reverse, True)[0]
    y_layer = lstm_ops.lstm_layer(*args, reverse=reverse)[0]
    assert "GeneratedBackwardFor" in type(y_op.grad_fn).__name__
    assert "GeneratedBackwardFor" not in type(y_layer.grad_fn).__name__

    def f(x, w_ih, w_hh, b, h0, c0):
        y, h_n, c_n, _, cells = OPS.lstm_forward.default(x, w_ih, w_hh, b, h0, c0, reverse, True)
        return y, h_n, c_n, cells

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


# --- opcheck --------------------------------------------------------------------

@pytest.mark.parametrize("save,reverse,has_bias,requires_grad", [
    (True, False, True, True),
    (True, True, False, True),
    (False, False, False, False),
    (False, True, True, False),
    (True, False, True, False),
], ids=["save-fwd-bias-rg", "save-rev-nobias-rg", "nosave-fwd-nobias", "nosave-rev-bias", "save-fwd-bias"])
def test_opcheck_lstm_forward(device, save, reverse, has_bias, requires_grad):
    inputs = make_inputs(4, 2, 3, 5, dtype=torch.float32, device=device, bias=has_bias)
    if requires_grad:
        inputs = [None if t is None else leaf(t) for t in inputs]
    torch.library.opcheck(OPS.lstm_forward.default, (*inputs, reverse, save))


@pytest.mark.parametrize("need_grad_x,use_gcells,reverse", [
    (True, False, False),
    (True, True, True),
    (False, True, False),
    (False, False, True),
], ids=["gx-nocells-fwd", "gx-cells-rev", "nogx-cells-fwd", "nogx-nocells-rev"])
def test_opcheck_lstm_backward(device, need_grad_x, use_gcells, reverse):
    T, B, I, H = 4, 2, 3, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, True)
    gy, ghn, gcn, gcells = cotangents(T, B, H, torch.float32, device)
    args = (gy, ghn, gcn, gcells if use_gcells else None, x, w_ih, w_hh, h0, c0, y, gates, cells,
            reverse, need_grad_x)
    torch.library.opcheck(OPS.lstm_backward.default, args)


def _noncontig(t):
    """Same values, transposed (dense, non-contiguous) layout of the first two dims."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def test_opcheck_noncontiguous_inputs(device):
    """Fake kernels must report the strides the real kernels produce also for
    non-contiguous (e.g. batch_first-transposed) inputs; inductor checks this."""
    T, B, I, H = 4, 2, 3, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    x, w_ih, h0, c0 = map(_noncontig, (x, w_ih, h0, c0))
    torch.library.opcheck(OPS.lstm_forward.default, (x, w_ih, w_hh, b, h0, c0, False, True))
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float32, device)
    torch.library.opcheck(OPS.lstm_backward.default,
                          (gy, ghn, gcn, None, x, w_ih, w_hh, h0, c0, y, gates, cells, False, True))


def test_fake_kernel_strides_match_real_kernel(device):
    """Direct check of output strides: FakeTensorMode vs the real kernel."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    T, B, I, H = 4, 2, 3, 5
    x, w_ih, w_hh, b, h0, c0 = make_inputs(T, B, I, H, dtype=torch.float32, device=device)
    x, w_ih, h0, c0 = map(_noncontig, (x, w_ih, h0, c0))
    real_f = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    gy, ghn, gcn, _ = cotangents(T, B, H, torch.float32, device)
    bargs = (gy, ghn, gcn, None, x, w_ih, w_hh, h0, c0, *[real_f[i] for i in (0, 3, 4)], False, True)
    real_b = OPS.lstm_backward(*bargs)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        conv = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        fake_f = OPS.lstm_forward(*map(conv, (x, w_ih, w_hh, b, h0, c0)), False, True)
        fake_b = OPS.lstm_backward(*map(conv, bargs))
    for names, reals, fakes in ((("y", "h_n", "c_n", "gates", "cells"), real_f, fake_f),
                                (GRAD_NAMES, real_b, fake_b)):
        for name, r, f in zip(names, reals, fakes):
            assert (tuple(f.shape), f.stride()) == (tuple(r.shape), r.stride()), \
                f"{name}: fake {tuple(f.shape)}/{f.stride()} vs real {tuple(r.shape)}/{r.stride()}"


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "bias", "h0", "c0"])
def test_op_mixed_devices_raise(which):
    """A tensor on another device (meta here) must raise, not run the CPU kernel
    on tensors without data nor fall through to the fake kernel."""
    names = ["x", "w_ih", "w_hh", "bias", "h0", "c0"]
    args = list(make_inputs(3, 2, 3, 4, dtype=torch.float32))
    i = names.index(which)
    args[i] = args[i].to("meta")
    with pytest.raises(RuntimeError, match="meta"):
        OPS.lstm_forward(*args, False, False)


def test_op_all_meta_inputs_give_shapes():
    args = [t.to("meta") for t in make_inputs(3, 2, 4, 5, dtype=torch.float32)]
    y, hn, cn, gates, cells = OPS.lstm_forward(*args, False, True)
    assert y.device.type == "meta"
    assert (y.shape, hn.shape, cn.shape, gates.shape, cells.shape) == \
        ((3, 2, 5), (2, 5), (2, 5), (3, 2, 20), (3, 2, 5))


# --- double backward -----------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("variant", ["dense", "packed", "proj", "cells"])
def test_gradgradcheck_lstm_layer(reverse, variant):
    """create_graph=True gives gradients autograd can differentiate again."""
    torch.manual_seed(5)
    H, I, P = 4, 3, (2 if variant == "proj" else 4)
    batch_sizes = torch.tensor([3, 2, 2, 1]) if variant == "packed" else None
    x_shape = (int(batch_sizes.sum()), I) if batch_sizes is not None else (4, 3, I)
    x = leaf(torch.randn(*x_shape, dtype=torch.float64))
    w_ih = leaf(torch.randn(4 * H, I, dtype=torch.float64) * 0.5)
    w_hh = leaf(torch.randn(4 * H, P, dtype=torch.float64) * 0.5)
    b = leaf(torch.randn(4 * H, dtype=torch.float64))
    h0 = leaf(torch.randn(3, P, dtype=torch.float64))
    c0 = leaf(torch.randn(3, H, dtype=torch.float64))
    args = [x, w_ih, w_hh, b, h0, c0]
    if variant == "proj":
        args.append(leaf(torch.randn(P, H, dtype=torch.float64)))

    def f(x, w_ih, w_hh, b, h0, c0, *w_hr):
        return lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse, batch_sizes=batch_sizes,
                                   w_hr=w_hr[0] if w_hr else None, return_cells=variant == "cells")

    assert torch.autograd.gradgradcheck(f, args)


def test_backward_op_refuses_to_be_differentiated():
    """The fused backward op is opaque to autograd: differentiating its outputs
    directly fails loudly rather than returning None."""
    x, w_ih, w_hh, b, h0, c0 = (leaf(t) for t in make_inputs(3, 2, 3, 4))
    with torch.no_grad():
        y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    grads = OPS.lstm_backward(torch.ones_like(y), None, None, None, x, w_ih, w_hh, h0, c0, y, gates, cells,
                              False, True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        grads[1].sum().backward()


# --- packed and projected layouts: opcheck, combined double backward -----------------------


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


def test_opcheck_composite_dense():
    args = make_inputs(3, 2, 3, 4)
    torch.library.opcheck(OPS.lstm_forward_composite.default, (*args, True))


def test_gradgradcheck_packed_projected_reverse_cells():
    args, batch_sizes, w_hr = _packed_projected_inputs(requires_grad=True)

    def f(*a):
        return lstm_ops.lstm_layer(*a[:6], reverse=True, batch_sizes=batch_sizes, w_hr=a[6], return_cells=True)

    assert torch.autograd.gradgradcheck(f, (*args, w_hr))


def test_double_backward_with_no_steps():
    x, w_ih, w_hh, b, h0, c0 = (leaf(t) for t in make_inputs(0, 2, 3, 4))
    _, hn, cn = lstm_ops.lstm_layer(x, w_ih, w_hh, b, h0, c0)
    (g,) = torch.autograd.grad(hn.pow(2).sum() + cn.sum(), h0, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), h0)
    torch.testing.assert_close(gg, torch.full_like(h0, 2.0))
