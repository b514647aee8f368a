"""Module-level tests: lstm_ext.LSTM / lstm_ext.LSTMCell as drop-in
replacements for torch.nn.LSTM / torch.nn.LSTMCell."""
import warnings

import pytest
import torch
from torch import nn

import lstm_ext
from helpers import (assert_close, assert_flatten_parameters_harmless, assert_results_close, copy_params, cudnn_refuses, float64_cpu_reference, forward_backward, layout, leaf, module_pair, tols)
from reference import lstm_cell_ref, lstm_ref

F32, F64 = torch.float32, torch.float64


def make_pair(*args, **kwargs):
    """(torch.nn.LSTM, lstm_ext.LSTM) with identical parameters."""
    return module_pair(nn.LSTM, lstm_ext.LSTM, *args, **kwargs)


def make_cell_pair(*args, **kwargs):
    return module_pair(nn.LSTMCell, lstm_ext.LSTMCell, *args, **kwargs)


def randn(*shape, device="cpu", dtype=F32):
    return torch.randn(*shape, device=device, dtype=dtype)


# --- parity grid ------------------------------------------------------------------
# A pairwise covering of: layers {1,2,3} x bidirectional x batch_first x bias x hx
# x H {1,7,33} x input layout {contiguous, transposed view, step-2 slice} x T {1,5}
# x I {1,3,9} x B {1,4}: every pair of values of any two axes occurs in some case.
# Long sequences are covered separately below.
#        (L, bidir, batch_first, bias, hx, H, layout, T, I, B)
GRID = [
    (2, True, False, False, True, 7, "transposed", 5, 3, 1),
    (3, True, True, True, False, 33, "step", 1, 9, 4),
    (1, False, False, False, True, 1, "contig", 1, 1, 4),
    (1, False, True, True, False, 1, "contig", 5, 3, 1),
    (3, False, False, True, True, 33, "step", 5, 1, 1),
    (2, False, True, True, False, 7, "transposed", 1, 1, 4),
    (1, True, False, False, False, 33, "transposed", 5, 9, 4),
    (2, True, True, False, True, 1, "contig", 1, 9, 1),
    (3, False, False, False, False, 1, "step", 1, 3, 4),
    (3, False, False, False, True, 7, "contig", 1, 9, 1),
    (1, True, True, True, True, 7, "step", 1, 1, 1),
    (2, False, False, True, True, 33, "step", 5, 3, 4),
    (3, False, True, False, False, 1, "transposed", 1, 3, 4),
    (2, False, True, False, True, 33, "contig", 5, 3, 4),
]


def _grid_id(c):
    L, bd, bf, bias, hx, H, lay, T, I, B = c
    return (f"L{L}-{'bi' if bd else 'uni'}-{'bf' if bf else 'sf'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if hx else 'nohx'}-H{H}-{lay}-T{T}-I{I}-B{B}")


def _run_case(device, dtype, L, bidir, bf, bias, use_hx, H, lay, T, I, B):
    ref, ext = make_pair(I, H, L, bias=bias, batch_first=bf, bidirectional=bidir,
                         device=device, dtype=dtype)
    D = 2 if bidir else 1
    x = randn(*((B, T, I) if bf else (T, B, I)), device=device, dtype=dtype)
    x = layout(x, lay).requires_grad_(True)
    hx = None
    if use_hx:
        hx = tuple(layout(randn(L * D, B, H, device=device, dtype=dtype), lay).requires_grad_(True)
                   for _ in range(2))
    got = forward_backward(ext, x, hx)
    if cudnn_refuses(ref, hx):
        # cuDNN refuses a non-contiguous hx ("rnn: hx is not contiguous"). lstm_ext
        # accepts it, a feature asserted here: it ran on that very hx above, and
        # must match torch.nn run on the CPU in float64 (same weights and inputs).
        exp = float64_cpu_reference(forward_backward, ref, x, hx)
    else:
        exp = forward_backward(ref, x, hx)
    out_shape = (B, T, D * H) if bf else (T, B, D * H)
    assert got[0]["out"].shape == out_shape
    assert got[0]["h_n"].shape == (L * D, B, H) and got[0]["c_n"].shape == (L * D, B, H)
    for k, v in got[0].items():
        assert v.dtype == dtype and v.device.type == device, k
    assert_results_close(got, exp, dtype, "lstm_ext vs torch.nn")
    return ref, ext, x, hx, got


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_lstm_parity_grid(device, dtype, case):
    _run_case(device, dtype, *case)


@pytest.mark.parametrize("case", [
    # (L, bidir, batch_first, bias, hx, H, layout, T, I, B)
    (1, False, False, True, False, 16, "contig", 300, 5, 2),
    (2, True, True, True, True, 7, "transposed", 301, 3, 3),
], ids=["T300-L1-uni", "T301-L2-bi-bf-hx-transposed"])
def test_lstm_parity_long_sequence(device, case):
    _run_case(device, F32, *case)


@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
def test_lstm_matches_pure_reference(device, bidir):
    """Second oracle: lstm_ext.LSTM vs the plain-tensor-op reference, float64."""
    L, I, H, T, B = 2, 5, 6, 7, 3
    ext = lstm_ext.LSTM(I, H, L, bidirectional=bidir, device=device, dtype=F64)
    D = 2 if bidir else 1
    x = leaf(randn(T, B, I, device=device, dtype=F64))
    hx = tuple(leaf(randn(L * D, B, H, device=device, dtype=F64)) for _ in range(2))
    params = dict(ext.named_parameters())
    out, (hn, cn) = ext(x, hx)
    rout, (rhn, rcn) = lstm_ref(x, params, L, H, bidirectional=bidir, hx=hx)
    otol, gtol = tols(F64)
    assert_close(out, rout, "out", **otol)
    assert_close(hn, rhn, "h_n", **otol)
    assert_close(cn, rcn, "c_n", **otol)
    wrt = [x, *hx, *params.values()]
    cot = [torch.randn_like(t) for t in (out, hn, cn)]
    got = torch.autograd.grad([out, hn, cn], wrt, cot)
    exp = torch.autograd.grad([rout, rhn, rcn], wrt, cot)
    for name, a, e in zip(["input", "h0", "c0", *params], got, exp):
        assert_close(a, e, f"grad {name}", **gtol)


@pytest.mark.parametrize("batch_first", [False, True], ids=["sf", "bf"])
@pytest.mark.parametrize("use_hx", [False, True], ids=["nohx", "hx"])
def test_lstm_unbatched(device, batch_first, use_hx):
    L, I, H, T = 2, 3, 5, 6
    ref, ext = make_pair(I, H, L, bidirectional=True, batch_first=batch_first, device=device)
    x = leaf(randn(T, I, device=device))
    hx = tuple(leaf(randn(2 * L, H, device=device)) for _ in range(2)) if use_hx else None
    got = forward_backward(ext, x, hx)
    assert got[0]["out"].shape == (T, 2 * H)
    assert got[0]["h_n"].shape == (2 * L, H) and got[0]["c_n"].shape == (2 * L, H)
    assert_results_close(got, forward_backward(ref, x, hx), F32, "unbatched")


@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
def test_lstm_zero_batch(device, bidir):
    L, I, H, T = 2, 3, 4, 5
    D = 2 if bidir else 1
    ref, ext = make_pair(I, H, L, bidirectional=bidir, device=device)
    x = leaf(randn(T, 0, I, device=device))
    hx = tuple(leaf(randn(L * D, 0, H, device=device)) for _ in range(2))
    got = forward_backward(ext, x, hx)
    assert got[0]["out"].shape == (T, 0, D * H)
    assert got[0]["h_n"].shape == (L * D, 0, H)
    assert_results_close(got, forward_backward(ref, x, hx), F32, "B=0")
    # no hx either
    out, (hn, cn) = ext(x)
    assert out.shape == (T, 0, D * H) and hn.shape == (L * D, 0, H) and cn.shape == (L * D, 0, H)


def test_lstm_hx_none_equals_zero_state(device):
    ref, ext = make_pair(4, 5, 2, bidirectional=True, device=device)
    x = randn(6, 3, 4, device=device)
    z = torch.zeros(4, 3, 5, device=device)
    a = ext(x)
    b = ext(x, (z, z))
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    torch.testing.assert_close(a[1][0], b[1][0], atol=0, rtol=0)
    torch.testing.assert_close(a[1][1], b[1][1], atol=0, rtol=0)


def test_lstm_batch_first_is_a_transpose(device):
    _, ext_sf = make_pair(3, 4, 2, bidirectional=True, device=device)
    ext_bf = lstm_ext.LSTM(3, 4, 2, bidirectional=True, batch_first=True, device=device)
    copy_params(ext_sf, ext_bf)
    x = randn(5, 2, 3, device=device)
    out_sf, (h_sf, c_sf) = ext_sf(x)
    out_bf, (h_bf, c_bf) = ext_bf(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out_sf.transpose(0, 1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_bf, h_sf, atol=1e-6, rtol=1e-6)  # hx is never batch-first
    torch.testing.assert_close(c_bf, c_sf, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
def test_lstm_nan_propagates_like_torch(device, bidir):
    ref, ext = make_pair(3, 4, 2, bidirectional=bidir, device=device)
    x = randn(6, 3, 3, device=device)
    x[2, 1, 0] = float("nan")
    with torch.no_grad():
        out, (hn, cn) = ext(x)
        rout, (rhn, rcn) = ref(x)
    assert torch.equal(out.isnan(), rout.isnan())
    assert out.isnan().any() and not out[:, 0].isnan().any() and not out[:, 2].isnan().any()
    for a, e in ((out, rout), (hn, rhn), (cn, rcn)):
        torch.testing.assert_close(a, e, equal_nan=True, atol=1e-5, rtol=1e-4)


def test_lstm_inf_and_huge_inputs_like_torch(device):
    """+-inf / 1e30 inputs saturate the gates (I=1 so pre-activations are +-inf, not nan)."""
    ref, ext = make_pair(1, 5, 2, bidirectional=True, device=device)
    x = randn(6, 3, 1, device=device)
    x[1, 0, 0] = float("inf")
    x[3, 1, 0] = float("-inf")
    x[2, 2, 0] = 1e30
    x[4, 2, 0] = -1e30
    with torch.no_grad():
        out, (hn, cn) = ext(x)
        rout, (rhn, rcn) = ref(x)
    for name, a, e in (("out", out, rout), ("h_n", hn, rhn), ("c_n", cn, rcn)):
        assert torch.equal(a.isnan(), e.isnan()), name
        assert torch.equal(a.isinf(), e.isinf()), name
        torch.testing.assert_close(a, e, equal_nan=True, atol=1e-5, rtol=1e-4, msg=name)


# --- determinism ---------------------------------------------------------------------

def test_lstm_bitwise_repeatable(device):
    _, ext = make_pair(24, 64, 2, bidirectional=True, device=device)
    x = leaf(randn(20, 16, 24, device=device))
    hx = tuple(leaf(randn(4, 16, 64, device=device)) for _ in range(2))
    a_out, a_grads = forward_backward(ext, x, hx)
    b_out, b_grads = forward_backward(ext, x, hx)
    for k in a_out:
        assert torch.equal(a_out[k], b_out[k]), k
    for k in a_grads:
        assert torch.equal(a_grads[k], b_grads[k]), k


def test_lstm_no_grad_and_inference_mode_match_grad_mode(device):
    _, ext = make_pair(4, 6, 2, bidirectional=True, device=device)
    x = randn(5, 3, 4, device=device)
    out, (hn, cn) = ext(x)
    assert out.requires_grad
    with torch.no_grad():
        out2, (hn2, cn2) = ext(x)
    with torch.inference_mode():
        out3, (hn3, cn3) = ext(x)
    for a, b, c in ((out, out2, out3), (hn, hn2, hn3), (cn, cn2, cn3)):
        torch.testing.assert_close(b, a.detach(), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(c, a.detach(), atol=1e-6, rtol=1e-6)
    assert not out2.requires_grad


# --- gradcheck on the module -------------------------------------------------------

def test_gradcheck_module_2layer_bidirectional(device):
    m = lstm_ext.LSTM(3, 2, num_layers=2, bidirectional=True, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x = leaf(randn(3, 2, 3, device=device, dtype=F64))
    h0 = leaf(randn(4, 2, 2, device=device, dtype=F64))
    c0 = leaf(randn(4, 2, 2, device=device, dtype=F64))

    def f(x, h0, c0, *ps):
        out, (hn, cn) = torch.func.functional_call(m, dict(zip(names, ps)), (x, (h0, c0)))
        return out, hn, cn

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# --- module API ------------------------------------------------------------------------

API_CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True),
    dict(input_size=2, hidden_size=6, num_layers=2, bias=False, batch_first=True),
]


@pytest.mark.parametrize("cfg", API_CONFIGS, ids=["default", "L3-bi", "L2-nobias-bf"])
def test_state_dict_keys_and_shapes_identical(cfg):
    ref, ext = nn.LSTM(**cfg), lstm_ext.LSTM(**cfg)
    rsd, esd = ref.state_dict(), ext.state_dict()
    assert list(esd.keys()) == list(rsd.keys())
    for k in rsd:
        assert esd[k].shape == rsd[k].shape and esd[k].dtype == rsd[k].dtype, k
    assert [n for n, _ in ext.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert list(dict(ext.named_buffers())) == list(dict(ref.named_buffers()))


@pytest.mark.parametrize("cfg", API_CONFIGS, ids=["default", "L3-bi", "L2-nobias-bf"])
@pytest.mark.parametrize("dtype", [None, F64], ids=["default-dtype", "f64"])
def test_identical_init_under_same_seed(cfg, dtype):
    torch.manual_seed(1234)
    ref = nn.LSTM(**cfg, dtype=dtype)
    after_ref = torch.rand(3)
    torch.manual_seed(1234)
    ext = lstm_ext.LSTM(**cfg, dtype=dtype)
    after_ext = torch.rand(3)
    for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters()):
        assert n == m
        assert q.dtype == p.dtype
        assert torch.equal(p, q), n
    # same amount of RNG consumed, so code following the constructor is unaffected
    assert torch.equal(after_ref, after_ext)


def test_load_state_dict_both_ways():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ref, ext = nn.LSTM(**cfg), lstm_ext.LSTM(**cfg)
    ext.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(ext.state_dict()[k], v)
    ext2 = lstm_ext.LSTM(**cfg)
    ref2 = nn.LSTM(**cfg)
    ref2.load_state_dict(ext2.state_dict(), strict=True)
    for k, v in ext2.state_dict().items():
        assert torch.equal(ref2.state_dict()[k], v)
    # and the loaded torch module computes what lstm_ext computes
    x = randn(4, 2, 3)
    torch.testing.assert_close(ref2(x)[0], ext2(x)[0], atol=1e-5, rtol=1e-4)


def test_load_state_dict_mismatch_is_strict():
    ext = lstm_ext.LSTM(3, 4, 2)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(nn.LSTM(3, 4, 1).state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(nn.LSTM(3, 5, 2).state_dict(), strict=True)


def test_flatten_parameters_is_harmless(device):
    _, ext = make_pair(3, 4, 2, bidirectional=True, device=device)
    assert_flatten_parameters_harmless(ext, randn(5, 2, 3, device=device))


def test_all_weights_structure():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    for bias in (True, False):
        ref, ext = nn.LSTM(**cfg, bias=bias), lstm_ext.LSTM(**cfg, bias=bias)
        rw, ew = ref.all_weights, ext.all_weights
        assert len(ew) == len(rw)
        for names, rl, el in zip(ref._all_weights, rw, ew):
            assert len(el) == len(rl)
            for name, r, e in zip(names, rl, el):
                assert e is getattr(ext, name), name
                assert isinstance(e, nn.Parameter) and e.shape == r.shape, name


def test_eval_mode_backward(device):
    ref, ext = make_pair(3, 5, 2, bidirectional=True, dropout=0.3, device=device)
    ref.eval()
    ext.eval()
    assert not ext.training
    x = leaf(randn(4, 2, 3, device=device))
    hx = tuple(leaf(randn(4, 2, 5, device=device)) for _ in range(2))
    got = forward_backward(ext, x, hx)
    if cudnn_refuses(ref, hx, backward=True):
        # cuDNN refuses backward in eval mode ("cudnn RNN backward can only be
        # called in training mode"); lstm_ext supports it, a feature asserted
        # here: compare with torch.nn run on the CPU in float64 instead.
        exp = float64_cpu_reference(forward_backward, ref, x, hx)
    else:
        exp = forward_backward(ref, x, hx)
    assert_results_close(got, exp, F32, "eval")


def test_train_mode_without_dropout_equals_eval(device):
    _, ext = make_pair(3, 5, 2, device=device)
    x = randn(4, 2, 3, device=device)
    a = ext.train()(x)[0]
    b = ext.eval()(x)[0]
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize("dtype_change", ["double", "to_dtype", "ctor"])
def test_double_and_to_dtype(device, dtype_change):
    torch.manual_seed(3)
    ref = nn.LSTM(3, 4, 2, bidirectional=True, device=device)
    ext = copy_params(ref, lstm_ext.LSTM(3, 4, 2, bidirectional=True, device=device))
    ref = ref.double()
    if dtype_change == "double":
        ext = ext.double()
    elif dtype_change == "to_dtype":
        ext = ext.to(torch.float64)
    else:
        ext = copy_params(ref, lstm_ext.LSTM(3, 4, 2, bidirectional=True, device=device, dtype=F64))
    for p in ext.parameters():
        assert p.dtype == F64
    x = leaf(randn(5, 2, 3, device=device, dtype=F64))
    assert_results_close(forward_backward(ext, x), forward_backward(ref, x), F64, dtype_change)
    # and back to float32
    ext = ext.float()
    ref = ref.float()
    x32 = leaf(x.detach().float())
    assert_results_close(forward_backward(ext, x32), forward_backward(ref, x32), F32, "float")


# --- dropout -------------------------------------------------------------------------------

@pytest.mark.parametrize("L,bidir", [(2, False), (3, True)], ids=["L2-uni", "L3-bi"])
def test_dropout_one_matches_torch(device, L, bidir):
    """With p=1 every inter-layer activation is zeroed: deterministic, so it can
    be compared with torch.nn in train mode, outputs and gradients."""
    ref, ext = make_pair(3, 4, L, bidirectional=bidir, dropout=1.0, device=device)
    ref.train()
    ext.train()
    x = leaf(randn(5, 2, 3, device=device))
    D = 2 if bidir else 1
    hx = tuple(leaf(randn(L * D, 2, 4, device=device)) for _ in range(2))
    got = forward_backward(ext, x, hx)
    assert_results_close(got, forward_backward(ref, x, hx), F32, "dropout=1")
    # and it really differs from eval mode
    ext.eval()
    assert not torch.allclose(ext(x, hx)[0], got[0]["out"])


def test_dropout_between_layers_only(device):
    L, D, H = 3, 2, 8
    _, ext = make_pair(4, H, L, bidirectional=True, dropout=0.5, device=device)
    x = randn(7, 5, 4, device=device)
    hx = tuple(randn(L * D, 5, H, device=device) for _ in range(2))
    with torch.no_grad():
        ext.eval()
        e_out, (e_hn, e_cn) = ext(x, hx)
        ext.train()
        torch.manual_seed(1)
        t_out, (t_hn, t_cn) = ext(x, hx)
        torch.manual_seed(1)
        t2_out, _ = ext(x, hx)
        torch.manual_seed(2)
        t3_out, _ = ext(x, hx)
    # layer 0 (both directions) sees no dropout: its final states match eval mode
    torch.testing.assert_close(t_hn[:D], e_hn[:D], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(t_cn[:D], e_cn[:D], atol=1e-6, rtol=1e-6)
    # later layers do see dropout
    assert not torch.allclose(t_hn[D:], e_hn[D:])
    assert not torch.allclose(t_out, e_out)
    # no dropout on the last layer's output: it is exactly the last layer's h_t
    # (no zeros, |h| < 1, and consistent with the last layer's h_n)
    assert (t_out != 0).all()
    assert (t_out.abs() < 1).all()
    torch.testing.assert_close(t_out[-1, :, :H], t_hn[-2], atol=0, rtol=0)
    torch.testing.assert_close(t_out[0, :, H:], t_hn[-1], atol=0, rtol=0)
    # dropout masks come from torch's RNG
    torch.testing.assert_close(t2_out, t_out, atol=0, rtol=0)
    assert not torch.allclose(t3_out, t_out)


def test_dropout_single_layer_has_no_effect_and_warns(device):
    with warnings.catch_warnings(record=True) as rec_ref:
        warnings.simplefilter("always")
        nn.LSTM(3, 4, 1, dropout=0.5)
    with warnings.catch_warnings(record=True) as rec_ext:
        warnings.simplefilter("always")
        ext = lstm_ext.LSTM(3, 4, 1, dropout=0.5, device=device)
    assert any(issubclass(w.category, UserWarning) for w in rec_ref)
    assert any(issubclass(w.category, UserWarning) and "dropout" in str(w.message) for w in rec_ext), \
        [str(w.message) for w in rec_ext]
    x = randn(5, 2, 3, device=device)
    torch.testing.assert_close(ext.train()(x)[0], ext.eval()(x)[0], atol=0, rtol=0)


# --- LSTMCell ----------------------------------------------------------------------------

CELL_GRID = [
    # (batched, hx, bias, dtype)
    (True, True, True, F32),
    (True, False, False, F32),
    (False, True, False, F32),
    (False, False, True, F32),
    (True, True, False, F64),
    (False, True, True, F64),
]


@pytest.mark.parametrize("batched,use_hx,bias,dtype", CELL_GRID,
                         ids=[f"{'batched' if b else 'unbatched'}-{'hx' if h else 'nohx'}-"
                              f"{'bias' if bi else 'nobias'}-{str(d)[6:]}" for b, h, bi, d in CELL_GRID])
def test_lstm_cell_parity(device, batched, use_hx, bias, dtype):
    I, H, B = 5, 7, 3
    ref, ext = make_cell_pair(I, H, bias=bias, device=device, dtype=dtype)
    x = leaf(randn(*((B, I) if batched else (I,)), device=device, dtype=dtype))
    hx = None
    if use_hx:
        hx = tuple(leaf(randn(*((B, H) if batched else (H,)), device=device, dtype=dtype))
                   for _ in range(2))
    got = forward_backward(ext, x, hx)
    exp = forward_backward(ref, x, hx)
    assert got[0]["h"].shape == exp[0]["h"].shape == ((B, H) if batched else (H,))
    assert_results_close(got, exp, dtype, "LSTMCell")


def test_lstm_cell_matches_pure_reference(device):
    ext = lstm_ext.LSTMCell(4, 3, device=device, dtype=F64)
    x = randn(2, 4, device=device, dtype=F64)
    h, c = randn(2, 3, device=device, dtype=F64), randn(2, 3, device=device, dtype=F64)
    h1, c1 = ext(x, (h, c))
    rh, rc = lstm_cell_ref(x, h, c, ext.weight_ih, ext.weight_hh, ext.bias_ih, ext.bias_hh)
    assert_close(h1, rh, "h", **tols(F64)[0])
    assert_close(c1, rc, "c", **tols(F64)[0])


def test_lstm_cell_api_and_init():
    for bias in (True, False):
        torch.manual_seed(5)
        ref = nn.LSTMCell(4, 6, bias=bias)
        torch.manual_seed(5)
        ext = lstm_ext.LSTMCell(4, 6, bias=bias)
        assert list(ext.state_dict()) == list(ref.state_dict())
        for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters()):
            assert n == m and torch.equal(p, q), n
        ext.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(ext.state_dict(), strict=True)
        assert ext.input_size == 4 and ext.hidden_size == 6 and ext.bias == bias


def test_lstm_cell_zero_batch(device):
    ref, ext = make_cell_pair(3, 4, device=device)
    x = leaf(randn(0, 3, device=device))
    got = forward_backward(ext, x)
    assert got[0]["h"].shape == (0, 4)
    assert_results_close(got, forward_backward(ref, x), F32, "cell B=0")


def test_lstm_cell_unrolled_equals_lstm(device):
    """Unrolling LSTMCell over time equals a 1-layer lstm_ext.LSTM with the same weights."""
    cell = lstm_ext.LSTMCell(3, 5, device=device, dtype=F64)
    lstm = lstm_ext.LSTM(3, 5, device=device, dtype=F64)
    with torch.no_grad():
        for a, b in (("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0"),
                     ("bias_ih", "bias_ih_l0"), ("bias_hh", "bias_hh_l0")):
            getattr(lstm, b).copy_(getattr(cell, a))
    x = randn(6, 2, 3, device=device, dtype=F64)
    h = c = torch.zeros(2, 5, device=device, dtype=F64)
    outs = []
    for t in range(6):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    out, (hn, cn) = lstm(x)
    assert_close(torch.stack(outs), out, "out", **tols(F64)[0])
    assert_close(c, cn[0], "c_n", **tols(F64)[0])


# --- attributes ---------------------------------------------------------------------------

def test_lstm_attributes_like_torch():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bias=False, batch_first=True,
               dropout=0.25, bidirectional=True)
    ref, ext = nn.LSTM(**cfg), lstm_ext.LSTM(**cfg)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(ext, attr) == getattr(ref, attr), attr
    assert isinstance(ext, nn.Module)


# --- partial requires_grad, hx as list, double backward ------------------------------------

def test_lstm_frozen_parameters_grad_to_hx_only(device):
    ref, ext = make_pair(3, 4, 2, bidirectional=True, device=device)
    x = randn(5, 2, 3, device=device)
    h = leaf(randn(4, 2, 4, device=device))
    c = randn(4, 2, 4, device=device)
    grads = []
    for m in (ref, ext):
        m.requires_grad_(False)
        out, (hn, cn) = m(x, [h, c])  # a list, as torch.nn accepts
        grads.append(torch.autograd.grad((out * out).sum() + cn.sum(), h)[0])
    assert_close(grads[1], grads[0], "grad h0", **tols(F32)[1])


def test_lstm_only_some_parameters_require_grad(device):
    ref, ext = make_pair(3, 4, 2, bidirectional=True, device=device)
    x = randn(5, 2, 3, device=device)
    grads = []
    for m in (ref, ext):
        for n, p in m.named_parameters():
            p.requires_grad_(n in ("bias_hh_l1", "weight_ih_l0_reverse"))
        out, _ = m(x)
        grads.append(torch.autograd.grad(out.sin().sum(), [m.bias_hh_l1, m.weight_ih_l0_reverse]))
    for a, e in zip(grads[1], grads[0]):
        assert_close(a, e, "partial grads", **tols(F32)[1])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_double_backward_matches_torch_nn(device, bidirectional):
    """Second-order gradients (a gradient penalty) equal torch.nn.LSTM's on the
    CPU (cuDNN cannot do double backward, so the reference always runs on the
    CPU), and are never silently missing."""
    ref, ext = make_pair(3, 4, 2, bidirectional=bidirectional, device="cpu", dtype=F64)
    ext = ext.to(device)
    x = randn(5, 2, 3, dtype=F64)
    results = []
    for m, dev in ((ref, "cpu"), (ext, device)):
        xx = leaf(x.to(dev))
        out, (h, c) = m(xx)
        g, = torch.autograd.grad(out.pow(2).sum() + c.sum(), xx, create_graph=True)
        penalty = g.pow(2).sum()
        results.append([t.cpu() for t in torch.autograd.grad(penalty, [xx, m.weight_hh_l0, m.bias_ih_l1])])
    for name, e, r in zip(("x", "weight_hh_l0", "bias_ih_l1"), results[1], results[0]):
        assert_close(e, r, f"d penalty / d {name}", **tols(F64)[1])
