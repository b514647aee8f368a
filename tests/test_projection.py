"""lstm_ext.LSTM with proj_size > 0 against torch.nn.LSTM (same weights).

Parameters (names, shapes, order, seeded init, state_dict both ways) and the
forward/backward: outputs ``[T, B, D*P]``, ``h_n [L*D, B, P]``,
``c_n [L*D, B, H]`` and the gradients of the input, h_0, c_0 and every
parameter, ``weight_hr_l{k}[_reverse]`` included.
"""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import (assert_dicts_close, assert_message, leaf, module_pair, num_re, shape_re, tols)

F32, F64 = torch.float32, torch.float64
# torch.nn.LSTM (the reference) warns that oneDNN has no projections; not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


def make_pair(*args, **kwargs):
    """(torch.nn.LSTM, lstm_ext.LSTM) with identical parameters."""
    return module_pair(nn.LSTM, lstm_ext.LSTM, *args, **kwargs)


def forward_backward(module, x, hx, seed=1234):
    """Outputs (out, h_n, c_n) and the gradients of fixed random cotangents
    w.r.t. the input, h0/c0 (when given) and every parameter."""
    out, (h_n, c_n) = module(x) if hx is None else module(x, hx)
    outs = {"out": out, "h_n": h_n, "c_n": c_n}
    wrt = {"input": x}
    if hx is not None:
        wrt["h0"], wrt["c0"] = hx
    wrt.update(module.named_parameters())
    g = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device) for o in outs.values()]
    grads = torch.autograd.grad(list(outs.values()), list(wrt.values()), cots, allow_unused=True)
    for name, gr in zip(wrt, grads):
        assert gr is not None, f"no gradient reached {name}"
    return {k: v.detach() for k, v in outs.items()}, dict(zip(wrt, grads))


# --- parameters ---------------------------------------------------------------------

API_CONFIGS = [
    dict(input_size=3, hidden_size=5, proj_size=2),
    dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True, proj_size=1),
    dict(input_size=2, hidden_size=6, num_layers=2, bias=False, batch_first=True, proj_size=5),
]
API_IDS = ["L1-P2", "L3-bi-P1", "L2-nobias-bf-P5"]


@pytest.mark.parametrize("cfg", API_CONFIGS, ids=API_IDS)
def test_proj_parameters_identical_to_torch(cfg):
    ref, ext = nn.LSTM(**cfg), lstm_ext.LSTM(**cfg)
    r_named = [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
    e_named = [(n, tuple(p.shape)) for n, p in ext.named_parameters()]
    assert e_named == r_named
    assert list(ext.state_dict()) == list(ref.state_dict())
    L, D = cfg.get("num_layers", 1), 2 if cfg.get("bidirectional") else 1
    H, P = cfg["hidden_size"], cfg["proj_size"]
    hr = [n for n, _ in e_named if n.startswith("weight_hr")]
    assert hr == [f"weight_hr_l{k}{sfx}" for k in range(L) for sfx in (["", "_reverse"][:D])]
    for n in hr:
        assert getattr(ext, n).shape == (P, H)
    for k in range(L):
        assert ext.get_parameter(f"weight_hh_l{k}").shape == (4 * H, P)
        if k > 0:
            assert ext.get_parameter(f"weight_ih_l{k}").shape == (4 * H, D * P)
    assert ext.proj_size == ref.proj_size == P
    # all_weights: same grouping and order as torch.nn
    assert [[tuple(p.shape) for p in group] for group in ext.all_weights] == \
        [[tuple(p.shape) for p in group] for group in ref.all_weights]
    for names, group in zip(ref._all_weights, ext.all_weights):
        assert [p is getattr(ext, n) for n, p in zip(names, group)] == [True] * len(names)
    assert "proj_size=" in repr(ext) and repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]


@pytest.mark.parametrize("cfg", API_CONFIGS, ids=API_IDS)
@pytest.mark.parametrize("dtype", [None, F64], ids=["default-dtype", "f64"])
def test_proj_identical_init_under_same_seed(cfg, dtype):
    torch.manual_seed(99)
    ref = nn.LSTM(**cfg, dtype=dtype)
    after_ref = torch.rand(3)
    torch.manual_seed(99)
    ext = lstm_ext.LSTM(**cfg, dtype=dtype)
    after_ext = torch.rand(3)
    for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
        assert n == m and q.dtype == p.dtype and torch.equal(p, q), n
    assert torch.equal(after_ref, after_ext)


def test_proj_load_state_dict_both_ways():
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=3)
    ref, ext = nn.LSTM(**cfg), lstm_ext.LSTM(**cfg)
    ext.load_state_dict(ref.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(ext.state_dict()[k], v), k
    ext2, ref2 = lstm_ext.LSTM(**cfg), nn.LSTM(**cfg)
    ref2.load_state_dict(ext2.state_dict(), strict=True)
    for k, v in ext2.state_dict().items():
        assert torch.equal(ref2.state_dict()[k], v), k
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(ref2(x)[0], ext2(x)[0], atol=1e-5, rtol=1e-4)
    # a state_dict without projections (or with another proj_size) does not load
    with pytest.raises(RuntimeError):
        ext.load_state_dict(nn.LSTM(3, 5, 2, bidirectional=True).state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(nn.LSTM(3, 5, 2, bidirectional=True, proj_size=2).state_dict(), strict=True)


# --- parity ---------------------------------------------------------------------------
# Pairwise-style covering of layers {1,2,3} x bidirectional x batch_first x bias x hx
# x unbatched x P {1, 2, 3, H-1}.
#        (L, bidir, batch_first, bias, hx, unbatched, P)
GRID = [
    (1, False, False, True, False, False, 3),
    (1, True, True, False, True, False, 1),
    (2, True, False, True, True, False, 3),
    (2, False, True, False, False, False, 2),
    (3, True, True, True, False, False, 2),
    (3, False, False, False, True, False, 5),
    (2, True, False, True, True, True, 3),
    (1, False, True, False, False, True, 2),
    (3, False, True, True, True, True, 1),
]


def _grid_id(c):
    L, bd, bf, bias, hx, unb, P = c
    return (f"L{L}-{'bi' if bd else 'uni'}-{'bf' if bf else 'sf'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if hx else 'nohx'}-{'unbatched' if unb else 'batched'}-P{P}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_proj_parity_grid(device, dtype, case):
    L, bidir, bf, bias, use_hx, unbatched, P = case
    I, H, T, B = 4, 6, 5, 3
    D = 2 if bidir else 1
    ref, ext = make_pair(I, H, L, bias=bias, batch_first=bf, bidirectional=bidir, proj_size=P,
                         device=device, dtype=dtype)
    batch = () if unbatched else (B,)
    x_shape = (T, I) if unbatched else ((B, T, I) if bf else (T, B, I))
    x = leaf(torch.randn(x_shape, device=device, dtype=dtype))
    hx = None
    if use_hx:
        hx = (leaf(torch.randn(L * D, *batch, P, device=device, dtype=dtype)),
              leaf(torch.randn(L * D, *batch, H, device=device, dtype=dtype)))
    got, got_grads = forward_backward(ext, x, hx)
    exp, exp_grads = forward_backward(ref, x, hx)
    out_shape = (T, D * P) if unbatched else ((B, T, D * P) if bf else (T, B, D * P))
    assert got["out"].shape == out_shape
    assert got["h_n"].shape == (L * D, *batch, P)
    assert got["c_n"].shape == (L * D, *batch, H)
    for v in got.values():
        assert v.dtype == dtype and v.device.type == device
    otol, gtol = tols(dtype)
    assert_dicts_close(got, exp, otol, "output")
    assert_dicts_close(got_grads, exp_grads, gtol, "grad")


def test_proj_output_is_projected_h(device):
    """The output is W_hr (o * tanh(c)): for a 1-layer module with W_hr = 0 the
    output and h_n are zero while c_n is not (and equals torch.nn's)."""
    I, H, P = 3, 4, 2
    ref, ext = make_pair(I, H, 1, proj_size=P, device=device, dtype=F64)
    x = torch.randn(5, 2, I, device=device, dtype=F64)
    with torch.no_grad():
        for m in (ref, ext):
            m.weight_hr_l0.zero_()
        out, (h_n, c_n) = ext(x)
        assert (out == 0).all() and (h_n == 0).all() and (c_n != 0).all()
        torch.testing.assert_close(c_n, ref(x)[1][1], **tols(F64)[0])


def test_proj_gradcheck_bidirectional_2layer(device):
    m = lstm_ext.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    assert "weight_hr_l1_reverse" in names
    params = [leaf(p) for p in m.parameters()]
    x = leaf(torch.randn(3, 2, 2, device=device, dtype=F64))
    h0 = leaf(torch.randn(4, 2, 2, device=device, dtype=F64))
    c0 = leaf(torch.randn(4, 2, 3, device=device, dtype=F64))

    def f(x, h0, c0, *ps):
        out, (h_n, c_n) = torch.func.functional_call(m, dict(zip(names, ps)), (x, (h0, c0)))
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# --- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("proj_size", [-1, 5, 6], ids=["negative", "equal-H", "above-H"])
def test_invalid_proj_size_raises_value_error(proj_size):
    with pytest.raises(Exception) as ref_info:
        nn.LSTM(3, 5, proj_size=proj_size)
    assert type(ref_info.value) is ValueError
    with pytest.raises(ValueError) as info:
        lstm_ext.LSTM(3, 5, proj_size=proj_size)
    assert_message(info.value, "proj_size")
    if proj_size >= 5:
        assert_message(info.value, num_re(proj_size), num_re(5))


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_proj_hx_sizes_checked_like_torch(batched):
    """h0 must be [L*D, B, P] and c0 [L*D, B, H]: swapping them is an error
    naming the expected and the actual size."""
    L, I, H, P, B = 2, 3, 5, 2, 4
    ref, ext = make_pair(I, H, L, proj_size=P)
    batch = (B,) if batched else ()
    x = torch.randn(6, *batch, I)
    for hx, exp_shape, bad_shape in (
        ((torch.zeros(L, *batch, H), torch.zeros(L, *batch, H)), (L, *batch, P), (L, *batch, H)),
        ((torch.zeros(L, *batch, P), torch.zeros(L, *batch, P)), (L, *batch, H), (L, *batch, P)),
    ):
        with pytest.raises(Exception) as ref_info:
            ref(x, hx)
        with pytest.raises(type(ref_info.value)) as info:
            ext(x, hx)
        assert isinstance(info.value, RuntimeError)
        assert_message(info.value, shape_re(exp_shape), shape_re(bad_shape))
