"""Op-level tests over the cell kinds (tests/cells.py: LSTM, RNN tanh/relu, GRU)
and the device: each kind's differentiable one-layer wrapper
(lstm_ext.ops.lstm_layer, rnn_ops.rnn_layer, gru_ops.gru_layer) against the
one pure-PyTorch reference of tests/cells.py, then the GRU ops in detail
(torch.ops.lstm_ext.gru_forward, gru_backward, gru_forward_composite): the
saved gates, the backward op, gradcheck and gradgradcheck, opcheck, the fake
kernels and the argument checks. The LSTM and RNN ops have their own detailed
files (test_ops.py, test_rnn_ops.py).

GRU per torch.nn (gates r, z, n in weight order): gi = x W_ih^T + b_ih,
gh = h W_hh^T + b_hh, r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h. gru_forward saves per row
(r, z, n, hn = gh_n) in ``gates`` [., 4H].
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext  # noqa: F401  (loads the extension and registers the ops)
from cells import GRU, KIND_PARAMS, layer_reference, make_inputs
from helpers import (assert_close, assert_dicts_close, assert_message, backprop, dtype_re, layout, leaf, num_re,
                     shape_re, tols)

OPS = torch.ops.lstm_ext
F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
LENGTHS = [5, 3, 3, 1]  # sorted, as pack_padded_sequence(enforce_sorted=True) wants
GRAD_NAMES = ("grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_h0")

KIND = pytest.mark.parametrize("kind", KIND_PARAMS)
LAYOUTS = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
REVERSE = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
BIAS = pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])


def gru_layer(*args, **kwargs):
    from lstm_ext.gru_ops import gru_layer as layer  # looked up here: a missing GRU fails these tests
    return layer(*args, **kwargs)


def named_leaves(inputs):
    """{name: leaf} of a LayerInputs' tensors (None ones left out)."""
    names = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")
    return {n: leaf(t) for n, t in zip(names, inputs.tensors) if t is not None}


def leaves_in_order(inputs, leaves):
    """The layer's positional tensors, the leaves in place of the inputs."""
    names = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")
    return [leaves.get(n) for n, _ in zip(names, inputs.tensors)]


# =============================================================================== every kind


@KIND
@LAYOUTS
@REVERSE
@BIAS
def test_layer_vs_reference_f64(device, kind, lengths, reverse, has_bias):
    """Outputs and the gradients of every tensor argument, against the reference
    differentiated by autograd, float64."""
    inputs = make_inputs(kind, 5, 3, 4, 7, bias=has_bias, lengths=lengths, device=device, seed=1)
    leaves = named_leaves(inputs)
    args = leaves_in_order(inputs, leaves)
    y, finals = kind.layer(*args, reverse=reverse, batch_sizes=inputs.batch_sizes)
    ry, rfinals, _ = layer_reference(kind, *args[:5], tuple(args[5:]), reverse, inputs.batch_sizes)
    otol, gtol = tols(F64)
    assert y.shape == ry.shape and y.dtype == F64 and y.device.type == device
    assert_close(y, ry, "y", **otol)
    for i, (a, e) in enumerate(zip(finals, rfinals, strict=True)):
        assert a.shape == e.shape and a.device.type == device
        assert_close(a, e, f"final state {i}", **otol)
    outs = {"y": y, **{f"state{i}": f for i, f in enumerate(finals)}}
    routs = {"y": ry, **{f"state{i}": f for i, f in enumerate(rfinals)}}
    assert_dicts_close(backprop(outs, leaves), backprop(routs, leaves), gtol, "grad")


@pytest.mark.parametrize("H,B,dtype", [
    (1, 2, F64), (7, 3, F32), (15, 4, F32), (16, 3, F32), (17, 2, F64), (33, 5, F32), (64, 1, F32),
], ids=lambda v: str(v).replace("torch.", ""))
@KIND
def test_layer_vector_width_tails(device, kind, H, B, dtype):
    """H around the SIMD widths (8/16 float lanes) of the fused kernels, forward and
    backward, against the float64 reference at the dtype's tolerances."""
    inputs = make_inputs(kind, 4, B, 5, H, dtype=dtype, device=device, seed=H + B)
    leaves = named_leaves(inputs)
    args = leaves_in_order(inputs, leaves)
    y, finals = kind.layer(*args, reverse=bool(H % 2))
    ref_leaves = {k: leaf(v.double()) for k, v in leaves.items()}
    ref_args = leaves_in_order(inputs, ref_leaves)
    ry, rfinals, _ = layer_reference(kind, *ref_args[:5], tuple(ref_args[5:]), bool(H % 2))
    otol, gtol = tols(dtype)
    outs = {"y": y, **{f"state{i}": f for i, f in enumerate(finals)}}
    routs = {"y": ry, **{f"state{i}": f for i, f in enumerate(rfinals)}}
    for k in outs:
        assert outs[k].dtype == dtype
        assert_close(outs[k].double(), routs[k], k, **otol)
    got = backprop(outs, leaves, cot_dtype=F64)
    exp = backprop(routs, ref_leaves, cot_dtype=F64)
    assert_dicts_close({k: v.double() for k, v in got.items()}, exp, gtol, "grad")


@KIND
@pytest.mark.parametrize("case", ["dense-fwd", "packed-rev-nobias"])
def test_gradcheck_layer(device, kind, case):
    packed, reverse, bias = case.startswith("packed"), "rev" in case, "nobias" not in case
    inputs = make_inputs(kind, 3, 2, 2, 2, bias=bias, lengths=[3, 1] if packed else None, device=device,
                         seed=7, scale=2.0)
    leaves = named_leaves(inputs)

    def f(*tensors):
        args = leaves_in_order(inputs, dict(zip(leaves, tensors)))
        y, finals = kind.layer(*args, reverse=reverse, batch_sizes=inputs.batch_sizes)
        return (y, *finals)

    assert torch.autograd.gradcheck(f, tuple(leaves.values()), eps=1e-6, atol=1e-7, rtol=1e-5)


@KIND
@LAYOUTS
def test_double_backward_matches_reference(device, kind, lengths):
    """Second-order gradients (a gradient penalty through create_graph=True)
    equal the reference's: the composite path computes the right values, not
    only self-consistent ones (which gradgradcheck checks)."""
    inputs = make_inputs(kind, 4, 3, 3, 4, lengths=lengths, device=device, seed=3)
    results = []
    for run in ("ext", "ref"):
        leaves = named_leaves(inputs)
        args = leaves_in_order(inputs, leaves)
        if run == "ext":
            y, finals = kind.layer(*args, reverse=True, batch_sizes=inputs.batch_sizes)
        else:
            y, finals, _ = layer_reference(kind, *args[:5], tuple(args[5:]), True, inputs.batch_sizes)
        loss = y.pow(2).sum() + finals[-1].sum()
        first = torch.autograd.grad(loss, [leaves["x"], leaves["w_hh"], leaves["h0"]], create_graph=True)
        penalty = sum(g.pow(2).sum() for g in first)
        results.append(dict(zip(leaves, torch.autograd.grad(penalty, list(leaves.values())))))
    assert_dicts_close(results[0], results[1], tols(F64)[1], "d penalty /")


# =============================================================================== gru_forward


def _gru_forward(inputs, reverse, save):
    return OPS.gru_forward(*inputs.op_args(), reverse, save, inputs.batch_sizes)


@pytest.mark.parametrize("lengths,reverse,has_bias,save", [
    (None, False, True, True), (None, True, False, False), (None, True, True, True),
    (LENGTHS, False, False, True), (LENGTHS, True, True, False), (LENGTHS, True, False, True),
], ids=["dense-fwd-bias-save", "dense-rev-nobias-nosave", "dense-rev-bias-save", "packed-fwd-nobias-save",
        "packed-rev-bias-nosave", "packed-rev-nobias-save"])
def test_gru_forward_matches_reference_f64(device, lengths, reverse, has_bias, save):
    """y, h_n and (when saved) the gates (r, z, n, hn) per row, as the contract says."""
    inputs = make_inputs(GRU, 6, 3, 5, 7, bias=has_bias, lengths=lengths, device=device)
    y, h_n, gates = _gru_forward(inputs, reverse, save)
    ry, (rh,), (rgates,) = inputs.reference(reverse)
    otol, _ = tols(F64)
    assert y.shape == ry.shape and h_n.shape == rh.shape == (inputs.x.shape[1] if lengths is None else 4, 7)
    for t in (y, h_n, gates):
        assert t.dtype == F64 and t.device.type == device
    assert y.is_contiguous() and h_n.is_contiguous()
    assert_close(y, ry, "y", **otol)
    assert_close(h_n, rh, "h_n", **otol)
    if save:
        assert gates.shape == (*ry.shape[:-1], 28)
        assert_close(gates, rgates, "gates (r, z, n, hn)", **otol)
    else:
        assert gates.shape == (0,)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gru_forward_matches_reference_f32(device, reverse):
    inputs = make_inputs(GRU, 9, 4, 3, 33, dtype=F32, device=device)
    outs = _gru_forward(inputs, reverse, True)
    x, w_ih, w_hh, b_ih, b_hh, h0 = (t.double() for t in inputs.op_args())
    ry, (rh,), (rgates,) = layer_reference(GRU, x, w_ih, w_hh, b_ih, b_hh, (h0,), reverse)
    for name, a, r in zip(("y", "h_n", "gates"), outs, (ry, rh, rgates)):
        assert a.dtype == F32
        assert_close(a.double(), r, name, **tols(F32)[0])


@LAYOUTS
@REVERSE
def test_gru_forward_final_state_is_each_sequences_last_step(device, lengths, reverse):
    """h_n is the state after the last processed step: each sequence's own last
    step forward, its first step in reverse."""
    inputs = make_inputs(GRU, 5, 4, 3, 4, lengths=lengths, device=device)
    y, h_n, _ = _gru_forward(inputs, reverse, True)
    if lengths is None:
        assert torch.equal(h_n, y[0 if reverse else -1])
        return
    offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.int64), inputs.batch_sizes]), 0)
    for b, n in enumerate(lengths):
        row = offsets[0 if reverse else n - 1] + b
        assert torch.equal(h_n[b], y[row]), b


def test_gru_reverse_equals_flipped_forward(device):
    inputs = make_inputs(GRU, 8, 3, 5, 6, device=device)
    yr, hr, gr = _gru_forward(inputs, True, True)
    flipped = inputs._replace(x=inputs.x.flip(0))
    yf, hf, gf = _gru_forward(flipped, False, True)
    otol, _ = tols(F64)
    assert_close(yr, yf.flip(0), "y", **otol)
    assert_close(hr, hf, "h_n", **otol)
    assert_close(gr, gf.flip(0), "gates", **otol)


def test_gru_save_flag_does_not_change_outputs(device):
    inputs = make_inputs(GRU, 7, 3, 4, 5, dtype=F32, device=device)
    a, n = _gru_forward(inputs, False, True), _gru_forward(inputs, False, False)
    for i in range(2):
        torch.testing.assert_close(a[i], n[i], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("half", ["fwd", "rev"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_gru_layer_is_each_direction_of_torch_bidirectional_gru(device, half, packed):
    """gru_layer (reverse=False / True) is the forward / reverse half of a
    bidirectional torch.nn.GRU, float32, outputs and every gradient (the weights
    and biases of that half, x, h0)."""
    T, B, I, H = 6, 4, 5, 11
    lengths = [6, 4, 4, 1]
    ref = nn.GRU(I, H, bidirectional=True, device=device)
    x = leaf(torch.randn(T, B, I, device=device))
    h0 = leaf(torch.randn(2, B, H, device=device))
    inp = pack_padded_sequence(x, lengths) if packed else x
    out, h_n = ref(inp, h0)
    d = 1 if half == "rev" else 0
    sfx = "_l0_reverse" if d else "_l0"
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    params = [getattr(ref, n + sfx) for n in names]
    ours = [leaf(p) for p in params]
    xe = leaf(x)
    x_op = pack_padded_sequence(xe, lengths).data if packed else xe
    h0e = leaf(h0[d])
    y, hn = gru_layer(x_op, *ours, h0e, reverse=bool(d),
                      batch_sizes=inp.batch_sizes if packed else None)
    ref_y = (out.data if packed else out)[..., d * H:(d + 1) * H]
    otol, gtol = tols(F32)
    assert_close(y, ref_y, "y", **otol)
    assert_close(hn, h_n[d], "h_n", **otol)
    got = backprop({"y": y, "h_n": hn}, {"x": xe, "h0": h0e, **dict(zip(names, ours))})
    exp = backprop({"y": ref_y, "h_n": h_n[d]}, {"x": x, "h0": h0, **dict(zip(names, params))})
    exp["h0"] = exp["h0"][d]
    assert_dicts_close(got, exp, gtol, "grad")


# =============================================================================== gru_backward


def _ref_grads(inputs, reverse, grad_y, grad_h_n):
    """Gradients of the reference w.r.t. (x, w_ih, w_hh, b_ih, b_hh, h0) for the
    given cotangents (None: not used); zero-valued bias leaves without bias."""
    x, w_ih, w_hh, b_ih, b_hh, h0 = inputs.op_args()
    G = w_ih.shape[0]
    zeros = lambda: torch.zeros(G, dtype=x.dtype, device=x.device)  # noqa: E731
    leaves = [leaf(t) for t in (x, w_ih, w_hh, zeros() if b_ih is None else b_ih,
                                zeros() if b_hh is None else b_hh, h0)]
    y, (h_n,), _ = layer_reference(GRU, *leaves[:5], (leaves[5],), reverse, inputs.batch_sizes)
    outs, cots = zip(*[(o, c) for o, c in ((y, grad_y), (h_n, grad_h_n)) if c is not None])
    return torch.autograd.grad(outs, leaves, cots)


def _cotangents(y, h_n, seed=99):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in (y, h_n))


def _gru_backward(inputs, grad_y, grad_h_n, y, gates, reverse, need_grad_x):
    x, w_ih, w_hh, _, _, h0 = inputs.op_args()
    return OPS.gru_backward(grad_y, grad_h_n, x, w_ih, w_hh, h0, y, gates, reverse, need_grad_x,
                            inputs.batch_sizes)


@pytest.mark.parametrize("lengths,reverse,has_bias,need_grad_x", [
    (None, False, True, True), (None, True, False, False), (None, True, True, True),
    (LENGTHS, False, False, True), (LENGTHS, True, True, False), (LENGTHS, True, False, True),
], ids=["dense-fwd-bias-gx", "dense-rev-nobias-nogx", "dense-rev-bias-gx", "packed-fwd-nobias-gx",
        "packed-rev-bias-nogx", "packed-rev-nobias-gx"])
def test_gru_backward_op_vs_reference_f64(device, lengths, reverse, has_bias, need_grad_x):
    inputs = make_inputs(GRU, 4, 3, 5, 9, bias=has_bias, lengths=lengths, seed=3, device=device)
    y, h_n, gates = _gru_forward(inputs, reverse, True)
    gy, ghn = _cotangents(y, h_n)
    got = _gru_backward(inputs, gy, ghn, y, gates, reverse, need_grad_x)
    assert len(got) == 6
    exp = _ref_grads(inputs, reverse, gy, ghn)
    _, gtol = tols(F64)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        if name == "grad_x" and not need_grad_x:
            assert a.shape == (0,), "grad_x must be an empty [0] tensor when need_grad_x=False"
            continue
        assert a.shape == e.shape and a.dtype == F64 and a.device.type == device, name
        assert a.is_contiguous(), name
        assert_close(a, e, name, **gtol)


@LAYOUTS
@pytest.mark.parametrize("which", ["grad_y", "grad_h_n", "both"])
def test_gru_backward_op_absent_grads_count_as_zero(device, lengths, which):
    """grad_y / grad_h_n are optional: None means zero (and both None, all zeros)."""
    inputs = make_inputs(GRU, 4, 3, 5, 6, lengths=lengths, device=device)
    y, h_n, gates = _gru_forward(inputs, True, True)
    gy, ghn = _cotangents(y, h_n)
    given = (None if which in ("grad_y", "both") else gy, None if which in ("grad_h_n", "both") else ghn)
    zeros = tuple(torch.zeros_like(c) if g is None else g for g, c in zip(given, (gy, ghn)))
    got = _gru_backward(inputs, *given, y, gates, True, True)
    exp = _gru_backward(inputs, *zeros, y, gates, True, True)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        assert torch.equal(a, e), name
    if which == "both":
        for name, a in zip(GRAD_NAMES, got):
            assert torch.count_nonzero(a) == 0, name
    else:
        ref = _ref_grads(inputs, True, *given)
        for name, a, r in zip(GRAD_NAMES, got, ref):
            assert_close(a, r, name, **tols(F64)[1])


@pytest.mark.parametrize("use", ["y", "h_n"])
def test_gru_layer_only_one_output_used(device, use):
    """Backward through y alone or h_n alone (the other's gradient absent)."""
    inputs = make_inputs(GRU, 4, 2, 3, 5, device=device)
    args = [leaf(t) for t in inputs.op_args()]
    y, h_n = gru_layer(*args, reverse=True)
    out = y if use == "y" else h_n
    got = torch.autograd.grad(out.sum(), args)
    exp = _ref_grads(inputs, True, torch.ones_like(y) if use == "y" else None,
                     torch.ones_like(h_n) if use == "h_n" else None)
    for name, a, e in zip(GRAD_NAMES, got, exp):
        assert_close(a, e, name, **tols(F64)[1])


def _nc(t):
    """Same values, non-contiguous (the first two dims swapped in memory)."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def test_gru_layer_noncontiguous_inputs(device):
    """Non-contiguous x / weights / biases / h0 and cotangents give the same
    results as contiguous ones."""
    inputs = make_inputs(GRU, 6, 3, 5, 4, device=device)
    x, w_ih, w_hh, b_ih, b_hh, h0 = inputs.op_args()
    strided = [_nc(x), _nc(w_ih), layout(w_hh, "step"), torch.stack([b_ih, b_ih], 1)[:, 0],
               torch.stack([b_hh, b_hh], -1)[..., 1], _nc(h0)]
    for t in strided:
        assert not t.is_contiguous()
    args_c = [leaf(t) for t in inputs.op_args()]
    args_s = [t.detach().requires_grad_(True) for t in strided]
    outs_c = gru_layer(*args_c, reverse=True)
    outs_s = gru_layer(*args_s, reverse=True)
    otol, gtol = tols(F64)
    for a, e in zip(outs_s, outs_c):
        assert_close(a, e, "noncontiguous output", **otol)
    gy, ghn = _cotangents(*outs_c)
    gc = torch.autograd.grad(outs_c, args_c, (gy, ghn))
    gs = torch.autograd.grad(outs_s, args_s, (_nc(gy), _nc(ghn)))
    for name, a, e in zip(GRAD_NAMES, gs, gc):
        assert_close(a, e, f"noncontiguous {name}", **gtol)


@REVERSE
def test_gru_zero_batch(device, reverse):
    inputs = make_inputs(GRU, 3, 0, 4, 5, dtype=F32, device=device)
    args = [leaf(t) for t in inputs.op_args()]
    y, h_n = gru_layer(*args, reverse=reverse)
    assert y.shape == (3, 0, 5) and h_n.shape == (0, 5)
    grads = torch.autograd.grad(y.sum() + h_n.sum(), args)
    for name, g, a in zip(GRAD_NAMES, grads, args):
        assert g.shape == a.shape, name
        assert torch.count_nonzero(g) == 0, name


def test_gru_zero_steps_returns_h0(device):
    inputs = make_inputs(GRU, 0, 2, 3, 4, device=device)
    y, h_n, gates = _gru_forward(inputs, False, True)
    assert y.shape == (0, 2, 4) and torch.equal(h_n, inputs.states[0])
    grads = _gru_backward(inputs, None, torch.ones_like(h_n), y, gates, False, True)
    assert grads[0].shape == inputs.x.shape and torch.equal(grads[5], torch.ones_like(h_n))
    assert sum(int(torch.count_nonzero(g)) for g in grads[1:5]) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_gru_nonfinite_propagates_like_torch(device, value):
    """NaN and +-inf go where torch.nn.GRU takes them (the reference is torch.nn on
    the CPU, whatever the device)."""
    T, B, I, H = 4, 3, 2, 5
    ref = nn.GRU(I, H)
    x = torch.randn(T, B, I)
    x[1, 1, 0] = value
    h0 = torch.randn(1, B, H)
    out, h_n = ref(x, h0)
    dev = lambda t: t.detach().to(device)  # noqa: E731
    y, hn = gru_layer(dev(x), dev(ref.weight_ih_l0), dev(ref.weight_hh_l0), dev(ref.bias_ih_l0),
                      dev(ref.bias_hh_l0), dev(h0[0]))
    otol = tols(F32)[0]
    torch.testing.assert_close(y.cpu(), out, equal_nan=True, **otol)
    torch.testing.assert_close(hn.cpu(), h_n[0], equal_nan=True, **otol)
    assert torch.equal(y.cpu().isnan(), out.isnan())


# =============================================================================== gradcheck


@LAYOUTS
@REVERSE
@BIAS
def test_gradcheck_gru_layer(device, lengths, reverse, has_bias):
    inputs = make_inputs(GRU, 4, 2, 3, 3, bias=has_bias, lengths=[4, 2] if lengths else None, device=device,
                         seed=7, scale=2.0)
    args = [leaf(t) for t in inputs.op_args() if t is not None]

    def f(*a):
        a = list(a)
        if not has_bias:
            a[3:3] = [None, None]
        return gru_layer(*a, reverse=reverse, batch_sizes=inputs.batch_sizes)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@REVERSE
def test_gradcheck_gru_op_through_its_registered_autograd(device, reverse):
    """Direct callers of the op (and torch.compile) get the formula registered on
    it; gradients of y and h_n through it."""
    inputs = make_inputs(GRU, 4, 2, 3, 3, device=device, seed=7, scale=2.0)
    args = [leaf(t) for t in inputs.op_args()]

    def f(*a):
        y, h_n, _ = OPS.gru_forward.default(*a, reverse, True)
        return y, h_n

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("lengths,reverse,has_bias", [
    (None, False, True), (None, True, False), (LENGTHS, True, True), (LENGTHS, False, False),
], ids=["dense-fwd-bias", "dense-rev-nobias", "packed-rev-bias", "packed-fwd-nobias"])
def test_gradgradcheck_gru_layer(device, lengths, reverse, has_bias):
    """create_graph=True gives gradients autograd can differentiate again (the
    composite op gru_forward_composite)."""
    inputs = make_inputs(GRU, 4, 3, 3, 2, bias=has_bias, lengths=[4, 2, 1] if lengths else None, device=device,
                         seed=5, scale=2.0)
    args = [leaf(t) for t in inputs.op_args() if t is not None]

    def f(*a):
        a = list(a)
        if not has_bias:
            a[3:3] = [None, None]
        return gru_layer(*a, reverse=reverse, batch_sizes=inputs.batch_sizes)

    assert torch.autograd.gradgradcheck(f, args)


def test_gru_composite_matches_forward_op(device):
    """The composite op computes what gru_forward computes (y, h_n)."""
    for lengths in (None, LENGTHS):
        inputs = make_inputs(GRU, 5, 4, 3, 4, lengths=lengths, device=device)
        for reverse in (False, True):
            y, h_n = OPS.gru_forward_composite(*inputs.op_args(), reverse, inputs.batch_sizes)
            ey, eh, _ = _gru_forward(inputs, reverse, False)
            assert_close(y, ey, "composite y", **tols(F64)[0])
            assert_close(h_n, eh, "composite h_n", **tols(F64)[0])


def test_gru_backward_op_refuses_to_be_differentiated(device):
    """The fused backward op is opaque to autograd: differentiating its outputs
    fails loudly rather than returning None."""
    inputs = make_inputs(GRU, 3, 2, 3, 4, device=device)
    args = [leaf(t) for t in inputs.op_args()]
    with torch.no_grad():
        y, _, gates = OPS.gru_forward(*args, False, True)
    x, w_ih, w_hh, _, _, h0 = args
    grads = OPS.gru_backward(torch.ones_like(y), None, x, w_ih, w_hh, h0, y, gates, False, True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        grads[1].sum().backward()


# =============================================================================== opcheck, fake kernels


@pytest.mark.parametrize("lengths,save,reverse,has_bias,requires_grad", [
    (None, True, False, True, True),
    (None, True, True, False, True),
    (None, False, False, False, False),
    (None, False, True, True, False),
    (LENGTHS, True, True, True, True),
    (LENGTHS, False, False, False, False),
], ids=["save-fwd-bias-rg", "save-rev-nobias-rg", "nosave-fwd-nobias", "nosave-rev-bias",
        "packed-save-rev-bias-rg", "packed-nosave-fwd-nobias"])
def test_opcheck_gru_forward(device, lengths, save, reverse, has_bias, requires_grad):
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, bias=has_bias, lengths=lengths, device=device)
    args = [None if t is None else (leaf(t) if requires_grad else t) for t in inputs.op_args()]
    torch.library.opcheck(OPS.gru_forward.default, (*args, reverse, save, inputs.batch_sizes))


@pytest.mark.parametrize("lengths,need_grad_x,grads,reverse", [
    (None, True, "both", False),
    (None, False, "none", True),
    (LENGTHS, True, "y", True),
    (LENGTHS, False, "h_n", False),
], ids=["dense-gx-both", "dense-nogx-none", "packed-gx-y-rev", "packed-nogx-hn"])
def test_opcheck_gru_backward(device, lengths, need_grad_x, grads, reverse):
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, lengths=lengths, device=device)
    y, h_n, gates = _gru_forward(inputs, reverse, True)
    gy, ghn = _cotangents(y, h_n)
    gy = gy if grads in ("y", "both") else None
    ghn = ghn if grads in ("h_n", "both") else None
    x, w_ih, w_hh, _, _, h0 = inputs.op_args()
    torch.library.opcheck(OPS.gru_backward.default,
                          (gy, ghn, x, w_ih, w_hh, h0, y, gates, reverse, need_grad_x, inputs.batch_sizes))


@LAYOUTS
def test_opcheck_gru_forward_composite(device, lengths):
    """Packed: without test_aot_dispatch_dynamic, which makes batch_sizes a fake
    tensor whose values the composite (a C++ loop over the steps, used by double
    backward only) has to read; lstm_forward_composite and rnn_forward_composite
    cannot be traced so either (the double backward is eager only)."""
    inputs = make_inputs(GRU, 3, 2, 3, 4, lengths=lengths, device=device)
    args = [leaf(t) for t in inputs.op_args()]
    utils = ("test_schema", "test_autograd_registration", "test_faketensor") if lengths else \
        torch.library._OPCHECK_DEFAULT_UTILS
    torch.library.opcheck(OPS.gru_forward_composite.default, (*args, True, inputs.batch_sizes), test_utils=utils)


def test_opcheck_gru_noncontiguous_inputs(device):
    """Fake kernels must report the real kernels' strides also for non-contiguous
    (e.g. batch_first-transposed) inputs; inductor checks this."""
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, device=device)
    x, w_ih, w_hh, b_ih, b_hh, h0 = inputs.op_args()
    x, w_ih, h0 = _nc(x), _nc(w_ih), _nc(h0)
    torch.library.opcheck(OPS.gru_forward.default, (x, w_ih, w_hh, b_ih, b_hh, h0, False, True))
    y, h_n, gates = OPS.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, False, True)
    gy, ghn = _cotangents(y, h_n)
    torch.library.opcheck(OPS.gru_backward.default, (_nc(gy), ghn, x, w_ih, w_hh, h0, y, gates, False, True))


def test_gru_fake_kernel_strides_match_real_kernel(device):
    """Output shapes, strides, dtypes and devices: FakeTensorMode vs the real kernels."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, device=device)
    x, w_ih, w_hh, b_ih, b_hh, h0 = inputs.op_args()
    x, w_ih, h0 = _nc(x), _nc(w_ih), _nc(h0)
    fargs = (x, w_ih, w_hh, b_ih, b_hh, h0)
    real_f = OPS.gru_forward(*fargs, True, True)
    gy, ghn = _cotangents(*real_f[:2])
    bargs = (_nc(gy), ghn, x, w_ih, w_hh, h0, real_f[0], real_f[2], True, True)
    real_b = OPS.gru_backward(*bargs)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        conv = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        fake_f = OPS.gru_forward(*map(conv, fargs), True, True)
        fake_b = OPS.gru_backward(*map(conv, bargs))
    for names, reals, fakes in ((("y", "h_n", "gates"), real_f, fake_f), (GRAD_NAMES, real_b, fake_b)):
        for name, r, f in zip(names, reals, fakes, strict=True):
            assert (tuple(f.shape), f.stride()) == (tuple(r.shape), r.stride()), \
                f"{name}: fake {tuple(f.shape)}/{f.stride()} vs real {tuple(r.shape)}/{r.stride()}"
            assert (f.device, f.dtype) == (r.device, r.dtype), name


def test_gru_all_meta_inputs_give_shapes():
    # Every tensor on "meta" (batch_sizes on the CPU): the fake kernel runs whatever the machine.
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, lengths=LENGTHS)
    meta = [t.to("meta") for t in inputs.op_args()]
    y, h_n, gates = OPS.gru_forward(*meta, True, True, inputs.batch_sizes)
    assert y.device.type == "meta"
    assert (y.shape, h_n.shape, gates.shape) == ((sum(LENGTHS), 5), (4, 5), (sum(LENGTHS), 20))
    dense = [t.to("meta") for t in make_inputs(GRU, 3, 2, 4, 5, dtype=F32).op_args()]
    y, h_n, gates = OPS.gru_forward(*dense, False, True)
    assert (y.shape, h_n.shape, gates.shape) == ((3, 2, 5), (2, 5), (3, 2, 20))


# =============================================================================== argument checks

ARG_NAMES = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0")


def _raises(call, *patterns):
    with pytest.raises(RuntimeError) as info:
        call()
    assert_message(info.value, *patterns)


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "b_ih", "b_hh", "h0"])
def test_gru_mixed_devices_raise(device, which):
    """A tensor on another device is refused, naming it and its device: one on
    "meta" reaches the fake kernel; on CUDA, a CPU tensor among CUDA ones reaches
    the CUDA kernel (whose checks must catch it before any launch)."""
    for other in ["meta"] + (["cpu"] if device != "cpu" else []):
        args = list(make_inputs(GRU, 3, 2, 3, 4, dtype=F32, device=device).op_args())
        i = ARG_NAMES.index(which)
        args[i] = args[i].to(other)
        _raises(lambda: OPS.gru_forward(*args, False, False), rf"{which}.*{other}")


@pytest.mark.parametrize("which,bad_shape,patterns", [
    ("x", (3, 2), [r"\bx\b", r"\[T, B, I\]", shape_re((3, 2))]),
    ("w_ih", (12, 5), [r"w_ih", r"\[3H, I\]", shape_re((12, 3)), shape_re((12, 5))]),
    ("w_ih", (11, 3), [r"w_ih", shape_re((12, 3)), shape_re((11, 3))]),
    ("w_hh", (4, 4), [r"w_hh", r"\[3H, H\]", shape_re((12, 4)), shape_re((4, 4))]),
    ("w_hh", (12,), [r"w_hh", num_re(2), num_re(1)]),
    ("b_ih", (4,), [r"\bb_ih\b", r"\[3H\]", shape_re((12,)), shape_re((4,))]),
    ("b_hh", (13,), [r"\bb_hh\b", r"\[3H\]", shape_re((12,)), shape_re((13,))]),
    ("h0", (3, 4), [r"\bh0\b", r"\[B, H\]", shape_re((2, 4)), shape_re((3, 4))]),
    ("h0", (2, 5), [r"\bh0\b", shape_re((2, 4)), shape_re((2, 5))]),
], ids=["x-rank", "w_ih-I", "w_ih-3H", "w_hh-rows", "w_hh-rank", "b_ih", "b_hh", "h0-B", "h0-H"])
def test_gru_bad_shapes_raise(device, which, bad_shape, patterns):
    """The op's own checks name the argument, the expected and the actual shape,
    before any kernel (ATen's GEMM would raise a RuntimeError too, so the message
    is what tells them apart), through the op and through gru_layer."""
    args = list(make_inputs(GRU, 3, 2, 3, 4, dtype=F32, device=device).op_args())
    args[ARG_NAMES.index(which)] = torch.randn(bad_shape, device=device)
    _raises(lambda: OPS.gru_forward(*args, False, True), r"gru_forward", *patterns)
    _raises(lambda: gru_layer(*args), *patterns)


@pytest.mark.parametrize("which", ["w_ih", "w_hh", "b_ih", "b_hh", "h0"])
def test_gru_dtype_mismatch_raises(device, which):
    args = list(make_inputs(GRU, 3, 2, 3, 4, dtype=F32, device=device).op_args())
    i = ARG_NAMES.index(which)
    args[i] = args[i].double()
    _raises(lambda: OPS.gru_forward(*args, False, False), r"gru_forward", rf"\b{which}\b",
            dtype_re(F32), dtype_re(F64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32], ids=["f16", "i32"])
def test_gru_unsupported_dtype_raises_cpu(dtype):
    # CPU only: a CUDA backend may support float16. bfloat16 is supported (below).
    args = [t.to(dtype) for t in make_inputs(GRU, 3, 2, 3, 4, dtype=F32).op_args()]
    _raises(lambda: OPS.gru_forward(*args, False, False), r"\bx\b", r"float32, float64 or bfloat16",
            {torch.float16: "Half", torch.int32: "Int"}[dtype])
    with pytest.raises((RuntimeError, TypeError, ValueError, NotImplementedError)):
        gru_layer(*args)


@pytest.mark.parametrize("bad,patterns", [
    ("increasing", [r"batch_sizes", r"non-increasing", num_re(1), num_re(2)]),
    ("sum", [r"batch_sizes", r"\bx\b", num_re(12), num_re(11)]),
    ("dtype", [r"batch_sizes", dtype_re(torch.int64), r"Int"]),
    ("rank", [r"batch_sizes", r"\[T\]", shape_re((5, 1))]),
    ("zero", [r"batch_sizes", r"positive", num_re(0)]),
])
def test_gru_bad_batch_sizes_raise(device, bad, patterns):
    inputs = make_inputs(GRU, 0, 0, 3, 4, dtype=F32, lengths=LENGTHS, device=device)
    x, w_ih, w_hh, b_ih, b_hh, h0 = inputs.op_args()
    bs = inputs.batch_sizes
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
    _raises(lambda: OPS.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, False, False, bs), r"gru_forward", *patterns)
    y = torch.zeros(x.shape[0], 4, device=device)
    gates = torch.zeros(x.shape[0], 16, device=device)
    _raises(lambda: OPS.gru_backward(None, None, x, w_ih, w_hh, h0, y, gates, False, True, bs),
            r"gru_backward", *patterns)


@pytest.mark.parametrize("which,patterns", [
    ("y", [r"\by\b", r"\[T, B, H\]", shape_re((3, 2, 4)), shape_re((3, 2, 5))]),
    ("grad_y", [r"grad_y", shape_re((3, 2, 4)), shape_re((3, 2, 5))]),
    ("grad_h_n", [r"grad_h_n", r"\[B, H\]", shape_re((2, 4)), shape_re((2, 5))]),
    ("gates", [r"\bgates\b", r"\[T, B, 4H\]", shape_re((3, 2, 16)), shape_re((3, 2, 5))]),
])
def test_gru_backward_bad_shapes_raise(device, which, patterns):
    inputs = make_inputs(GRU, 3, 2, 3, 4, dtype=F32, device=device)
    y, h_n, gates = _gru_forward(inputs, False, True)
    args = {"grad_y": torch.zeros_like(y), "grad_h_n": torch.zeros_like(h_n), "y": y, "gates": gates}
    args[which] = torch.zeros(*args[which].shape[:-1], 5, device=device)
    x, w_ih, w_hh, _, _, h0 = inputs.op_args()
    _raises(lambda: OPS.gru_backward(args["grad_y"], args["grad_h_n"], x, w_ih, w_hh, h0, args["y"],
                                     args["gates"], False, True),
            r"gru_backward", *patterns)


# =============================================================================== bfloat16 (CPU)


def _bf16_inputs(lengths=None, f32_bias=False):
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, lengths=lengths, seed=4, scale=1.0)
    args = [t.to(BF16) for t in inputs.op_args()]
    if f32_bias:
        args[3], args[4] = inputs.b_ih, inputs.b_hh
    return args, inputs.batch_sizes


@pytest.mark.parametrize("f32_bias", [False, True], ids=["bf16-bias", "f32-bias"])
def test_gru_bf16_op_dtypes(f32_bias):
    """bfloat16 x: y and h_n bfloat16, the saved gates float32 (the compute dtype);
    the backward's bias gradients float32, the rest bfloat16; a float32 bias is
    accepted (the modules' bfloat16 biases are not summed, so either works)."""
    args, _ = _bf16_inputs(f32_bias=f32_bias)
    y, h_n, gates = OPS.gru_forward(*args, False, True)
    assert (y.dtype, h_n.dtype, gates.dtype) == (BF16, BF16, F32)
    assert OPS.gru_forward(*args, False, False)[2].dtype == F32
    x, w_ih, w_hh, _, _, h0 = args
    grads = OPS.gru_backward(torch.ones_like(y), torch.ones_like(h_n), x, w_ih, w_hh, h0, y, gates, False, True)
    assert [g.dtype for g in grads] == [BF16] * 3 + [F32, F32, BF16]
    # against float32, within a few bfloat16 roundings
    ref = OPS.gru_forward(*[a.float() for a in args], False, True)
    for a, r in zip((y, h_n, gates), ref):
        torch.testing.assert_close(a.float(), r, atol=2.0 ** -6, rtol=2.0 ** -6)


@pytest.mark.parametrize("lengths,f32_bias", [(None, False), ([3, 2, 2], True)], ids=["dense", "packed-f32-bias"])
def test_opcheck_gru_bf16(lengths, f32_bias):
    args, bs = _bf16_inputs(lengths, f32_bias)
    torch.library.opcheck(OPS.gru_forward.default, (*[leaf(a) for a in args], True, True, bs))
    y, h_n, gates = OPS.gru_forward(*args, True, True, bs)
    x, w_ih, w_hh, _, _, h0 = args
    torch.library.opcheck(OPS.gru_backward.default,
                          (torch.ones_like(y), torch.ones_like(h_n), x, w_ih, w_hh, h0, y, gates, True, True, bs))


def test_gru_backward_refuses_bf16_saved_gates():
    """gates come from the forward in float32; bfloat16 ones are refused by the
    real and the fake kernel alike, naming the dtypes."""
    args, _ = _bf16_inputs()
    y, h_n, gates = OPS.gru_forward(*args, False, True)
    x, w_ih, w_hh, _, _, h0 = args
    for dev in ("cpu", "meta"):
        a = [t.to(dev) for t in (y, x, w_ih, w_hh, h0, y, gates.to(BF16))]
        with pytest.raises(RuntimeError) as info:
            OPS.gru_backward(a[0], None, *a[1:], False, True)
        assert_message(info.value, r"\bgates\b", r"float32|\bFloat\b", r"bfloat16|BFloat16")
