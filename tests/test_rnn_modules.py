"""lstm_ext.RNN / lstm_ext.RNNCell as drop-ins for torch.nn.RNN / torch.nn.RNNCell.

Everything is compared with torch.nn given identical weights: outputs, h_n and
the gradients of the input, h_0 and every parameter; the module API
(state_dict, init, all_weights, flatten_parameters); and bad input, which must
raise the exception type torch.nn raises (or a subclass of it).
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from helpers import (assert_close, assert_dicts_close, assert_flatten_parameters_harmless, assert_message, backprop, copy_params, leaf, module_pair, num_re, shape_re, tols)

F32, F64 = torch.float32, torch.float64


def make_pair(*args, **kwargs):
    """(torch.nn.RNN, lstm_ext.RNN) with identical parameters."""
    return module_pair(nn.RNN, lstm_ext.RNN, *args, **kwargs)


def make_cell_pair(*args, **kwargs):
    return module_pair(nn.RNNCell, lstm_ext.RNNCell, *args, **kwargs)


def rnn_forward_backward(module, x, hx=None, lengths=None, enforce_sorted=True):
    """Run an RNN (packing ``x`` first when ``lengths`` is given) and backprop
    into input, h0 and every parameter. -> (raw output, outputs, grads)."""
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    out, h_n = module(inp) if hx is None else module(inp, hx)
    outs = {"out": out.data if isinstance(out, PackedSequence) else out, "h_n": h_n}
    wrt = {"input": x}
    if hx is not None:
        wrt["h0"] = hx
    wrt.update(module.named_parameters())
    grads = backprop(outs, wrt)
    return out, {k: v.detach() for k, v in outs.items()}, grads


def assert_pair_close(got, exp, dtype, label=""):
    otol, gtol = tols(dtype)
    assert_dicts_close(got[1], exp[1], otol, f"{label} output")
    assert_dicts_close(got[2], exp[2], gtol, f"{label} grad")


# --- parity grid ---------------------------------------------------------------------
# Pairwise-style covering of nonlinearity x layers {1,2,3} x bidirectional x
# batch_first x bias x hx x H {1,3,4,5,6,7,33} x T x I x B.
#        (nonlinearity, L, bidir, batch_first, bias, hx, H, T, I, B)
GRID = [
    ("tanh", 1, False, False, True, False, 4, 5, 3, 2),
    ("relu", 1, True, True, False, True, 5, 1, 2, 3),
    ("tanh", 2, True, False, False, True, 3, 4, 3, 1),
    ("relu", 2, False, True, True, False, 6, 3, 1, 4),
    ("tanh", 3, False, True, False, True, 1, 2, 4, 2),
    ("relu", 3, True, False, True, False, 4, 5, 2, 3),
    ("relu", 2, True, True, True, True, 7, 6, 3, 2),
    ("tanh", 1, False, False, True, True, 33, 3, 5, 2),
]


def _grid_id(c):
    nl, L, bd, bf, bias, hx, H, T, I, B = c
    return (f"{nl}-L{L}-{'bi' if bd else 'uni'}-{'bf' if bf else 'sf'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if hx else 'nohx'}-H{H}-T{T}-I{I}-B{B}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_rnn_parity_grid(device, dtype, case):
    nl, L, bidir, bf, bias, use_hx, H, T, I, B = case
    D = 2 if bidir else 1
    ref, ext = make_pair(I, H, L, nonlinearity=nl, bias=bias, batch_first=bf, bidirectional=bidir,
                         device=device, dtype=dtype)
    assert ext.nonlinearity == nl and ext.mode == ref.mode
    x = leaf(torch.randn(*((B, T, I) if bf else (T, B, I)), device=device, dtype=dtype))
    hx = leaf(torch.randn(L * D, B, H, device=device, dtype=dtype)) if use_hx else None
    got = rnn_forward_backward(ext, x, hx)
    exp = rnn_forward_backward(ref, x, hx)
    assert got[1]["out"].shape == ((B, T, D * H) if bf else (T, B, D * H))
    assert got[1]["h_n"].shape == (L * D, B, H)
    for v in got[1].values():
        assert v.dtype == dtype and v.device.type == device
    assert_pair_close(got, exp, dtype)
    if nl == "relu":
        assert (got[1]["out"] >= 0).all() and (got[1]["out"] == 0).any()


def test_rnn_nonlinearity_positional_fourth_argument(device):
    """torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias,
    batch_first, dropout, bidirectional): all positional."""
    args = (3, 4, 2, "relu", False, True, 0.0, True)
    ref = nn.RNN(*args, device=device)
    ext = copy_params(ref, lstm_ext.RNN(*args, device=device))
    for attr in ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
                 "dropout", "bidirectional", "mode"):
        assert getattr(ext, attr) == getattr(ref, attr), attr
    assert ext.nonlinearity == "relu" and ext.bias is False and ext.batch_first is True
    assert list(ext.state_dict()) == list(ref.state_dict())
    x = leaf(torch.randn(2, 5, 3, device=device))
    assert_pair_close(rnn_forward_backward(ext, x), rnn_forward_backward(ref, x), F32, "positional")
    # relu really is used: a tanh module with the same weights computes something else
    tanh = copy_params(ref, lstm_ext.RNN(3, 4, 2, "tanh", False, True, 0.0, True, device=device))
    assert not torch.allclose(tanh(x)[0], ext(x)[0])
    assert repr(ext) == repr(ref)


@pytest.mark.parametrize("nl,bidir,use_hx", [("tanh", True, True), ("relu", False, True),
                                               ("relu", True, False), ("tanh", False, False)],
                         ids=["tanh-bi-hx", "relu-uni-hx", "relu-bi-nohx", "tanh-uni-nohx"])
def test_rnn_unbatched(device, nl, bidir, use_hx):
    L, I, H, T = 2, 3, 5, 6
    D = 2 if bidir else 1
    ref, ext = make_pair(I, H, L, nonlinearity=nl, bidirectional=bidir, batch_first=True, device=device)
    x = leaf(torch.randn(T, I, device=device))
    hx = leaf(torch.randn(L * D, H, device=device)) if use_hx else None
    got = rnn_forward_backward(ext, x, hx)
    assert got[1]["out"].shape == (T, D * H) and got[1]["h_n"].shape == (L * D, H)
    assert_pair_close(got, rnn_forward_backward(ref, x, hx), F32, "unbatched")


@pytest.mark.parametrize("nl,enforce_sorted,bidir,L,use_hx,lengths", [
    ("tanh", True, False, 1, False, [6, 4, 4, 1]),
    ("relu", False, True, 2, True, [3, 6, 1, 4]),
    ("tanh", False, True, 3, False, [5, 5, 5]),
    ("relu", True, True, 1, True, [4, 2, 1]),
    ("tanh", False, False, 2, True, [1, 3]),
], ids=["tanh-sorted-uni-L1", "relu-unsorted-bi-L2-hx", "tanh-unsorted-bi-L3-equal",
        "relu-sorted-bi-L1-hx", "tanh-unsorted-uni-L2-hx"])
def test_rnn_packed(device, nl, enforce_sorted, bidir, L, use_hx, lengths):
    I, H = 3, 5
    D, B = (2 if bidir else 1), len(lengths)
    ref, ext = make_pair(I, H, L, nonlinearity=nl, bidirectional=bidir, device=device)
    x = leaf(torch.randn(max(lengths), B, I, device=device))
    hx = leaf(torch.randn(L * D, B, H, device=device)) if use_hx else None
    got = rnn_forward_backward(ext, x, hx, lengths, enforce_sorted)
    exp = rnn_forward_backward(ref, x, hx, lengths, enforce_sorted)
    assert isinstance(got[0], PackedSequence)
    assert torch.equal(got[0].batch_sizes, exp[0].batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        a, e = getattr(got[0], name), getattr(exp[0], name)
        assert (a is None) == (e is None) and (a is None or torch.equal(a, e)), name
    assert got[1]["out"].shape == (sum(lengths), D * H) and got[1]["h_n"].shape == (L * D, B, H)
    assert_pair_close(got, exp, F32, "packed")


# --- dropout ----------------------------------------------------------------------------

@pytest.mark.parametrize("nl,L,bidir", [("tanh", 2, False), ("relu", 3, True)],
                         ids=["tanh-L2-uni", "relu-L3-bi"])
def test_rnn_dropout_one_matches_torch(device, nl, L, bidir):
    """p=1 zeroes every inter-layer activation: deterministic, so comparable with
    torch.nn in train mode, outputs and gradients."""
    D = 2 if bidir else 1
    ref, ext = make_pair(3, 4, L, nonlinearity=nl, bidirectional=bidir, dropout=1.0, device=device)
    ref.train()
    ext.train()
    x = leaf(torch.randn(5, 2, 3, device=device))
    hx = leaf(torch.randn(L * D, 2, 4, device=device))
    got = rnn_forward_backward(ext, x, hx)
    assert_pair_close(got, rnn_forward_backward(ref, x, hx), F32, "dropout=1")
    ext.eval()
    assert not torch.allclose(ext(x, hx)[0], got[1]["out"])


def test_rnn_dropout_between_layers_only(device):
    L, D, H = 3, 2, 8
    _, ext = make_pair(4, H, L, bidirectional=True, dropout=0.5, device=device)
    x = torch.randn(7, 5, 4, device=device)
    hx = torch.randn(L * D, 5, H, device=device)
    with torch.no_grad():
        e_out, e_hn = ext.eval()(x, hx)
        ext.train()
        torch.manual_seed(1)
        t_out, t_hn = ext(x, hx)
        torch.manual_seed(1)
        t2_out, _ = ext(x, hx)
    # layer 0 sees no dropout; later layers do
    torch.testing.assert_close(t_hn[:D], e_hn[:D], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(t_hn[D:], e_hn[D:])
    # none on the last layer's output: it is exactly that layer's h_t
    assert (t_out != 0).all() and (t_out.abs() < 1).all()
    torch.testing.assert_close(t_out[-1, :, :H], t_hn[-2], atol=0, rtol=0)
    torch.testing.assert_close(t_out[0, :, H:], t_hn[-1], atol=0, rtol=0)
    torch.testing.assert_close(t2_out, t_out, atol=0, rtol=0)


# --- module API -------------------------------------------------------------------------

API_CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True, nonlinearity="relu"),
    dict(input_size=2, hidden_size=6, num_layers=2, bias=False, batch_first=True),
]
API_IDS = ["default", "L3-bi-relu", "L2-nobias-bf"]


@pytest.mark.parametrize("cfg", API_CONFIGS, ids=API_IDS)
def test_rnn_state_dict_and_seeded_init_identical(cfg):
    torch.manual_seed(1234)
    ref = nn.RNN(**cfg)
    after_ref = torch.rand(3)
    torch.manual_seed(1234)
    ext = lstm_ext.RNN(**cfg)
    after_ext = torch.rand(3)
    assert torch.equal(after_ref, after_ext)
    assert list(ext.state_dict()) == list(ref.state_dict())
    for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
        assert n == m and p.shape == q.shape and p.dtype == q.dtype and torch.equal(p, q), n
    # load both ways, strict; the loaded torch module computes the same
    ext2, ref2 = lstm_ext.RNN(**cfg), nn.RNN(**cfg)
    ref2.load_state_dict(ext2.state_dict(), strict=True)
    ext.load_state_dict(ref2.state_dict(), strict=True)
    x = torch.randn(4, 2, cfg["input_size"])
    torch.testing.assert_close(ext2(x)[0], ref2(x)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ext(x)[0], ref2(x)[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(nn.LSTM(**{k: v for k, v in cfg.items() if k != "nonlinearity"}).state_dict())
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "nonlinearity", "mode"):
        assert getattr(ext, attr) == getattr(ref, attr), attr
    assert repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]


def test_rnn_all_weights_structure():
    for bias in (True, False):
        ref = nn.RNN(3, 4, 2, bidirectional=True, bias=bias)
        ext = lstm_ext.RNN(3, 4, 2, bidirectional=True, bias=bias)
        assert len(ext.all_weights) == len(ref.all_weights) == 4
        for names, rl, el in zip(ref._all_weights, ref.all_weights, ext.all_weights, strict=True):
            assert len(el) == len(rl) == (4 if bias else 2)
            for name, r, e in zip(names, rl, el):
                assert e is getattr(ext, name), name
                assert isinstance(e, nn.Parameter) and e.shape == r.shape, name


def test_rnn_flatten_parameters_is_harmless(device):
    _, ext = make_pair(3, 4, 2, nonlinearity="relu", bidirectional=True, device=device)
    assert_flatten_parameters_harmless(ext, torch.randn(5, 2, 3, device=device))


# --- gradcheck --------------------------------------------------------------------------

def rnn_preactivations(m, x, h0):
    """Every pre-activation x_t W_ih^T + b + h_{t-1} W_hh^T of a time-major RNN
    module, computed with plain tensor ops (a pure reference). -> (list of
    pre-activation tensors, output)."""
    L, D = m.num_layers, 2 if m.bidirectional else 1
    act = torch.relu if m.nonlinearity == "relu" else torch.tanh
    pres, layer_in = [], x
    for layer in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = getattr(m, "weight_ih" + sfx), getattr(m, "weight_hh" + sfx)
            h, ys = h0[layer * D + d], [None] * x.shape[0]
            for t in (reversed(range(x.shape[0])) if d else range(x.shape[0])):
                pre = layer_in[t] @ w_ih.T + h @ w_hh.T
                if m.bias:
                    pre = pre + getattr(m, "bias_ih" + sfx) + getattr(m, "bias_hh" + sfx)
                pres.append(pre)
                h = ys[t] = act(pre)
            outs.append(torch.stack(ys))
        layer_in = torch.cat(outs, -1)
    return pres, layer_in


@pytest.mark.parametrize("nl", ["relu", "tanh"])
def test_rnn_gradcheck_module(device, nl):
    torch.manual_seed(7)
    m = lstm_ext.RNN(2, 3, 2, nonlinearity=nl, bidirectional=True, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x = leaf(torch.randn(3, 2, 2, device=device, dtype=F64))
    h0 = leaf(torch.randn(4, 2, 3, device=device, dtype=F64))
    with torch.no_grad():
        pres, ref_out = rnn_preactivations(m, x, h0)
        # relu is not differentiable at 0: keep every pre-activation well away from it
        assert min(p.abs().min().item() for p in pres) > 1e-3
        assert_close(m(x, h0)[0], ref_out, "output vs pure reference", **tols(F64)[0])
    if nl == "relu":
        assert any((p < 0).any() for p in pres)  # the kink is actually exercised

    def f(x, h0, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x, h0))

    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# --- RNNCell ------------------------------------------------------------------------------

CELL_GRID = [
    # (nonlinearity, batched, hx, bias, dtype)
    ("tanh", True, True, True, F32),
    ("relu", True, False, False, F32),
    ("relu", False, True, True, F32),
    ("tanh", False, False, False, F32),
    ("relu", True, True, False, F64),
    ("tanh", False, True, True, F64),
]


@pytest.mark.parametrize("nl,batched,use_hx,bias,dtype", CELL_GRID,
                         ids=[f"{nl}-{'batched' if b else 'unbatched'}-{'hx' if h else 'nohx'}-"
                              f"{'bias' if bi else 'nobias'}-{str(d)[6:]}" for nl, b, h, bi, d in CELL_GRID])
def test_rnn_cell_parity(device, nl, batched, use_hx, bias, dtype):
    I, H, B = 5, 7, 3
    ref, ext = make_cell_pair(I, H, bias=bias, nonlinearity=nl, device=device, dtype=dtype)
    x = leaf(torch.randn(*((B, I) if batched else (I,)), device=device, dtype=dtype))
    hx = leaf(torch.randn(*((B, H) if batched else (H,)), device=device, dtype=dtype)) if use_hx else None
    results = []
    for m in (ext, ref):
        h1 = m(x) if hx is None else m(x, hx)
        wrt = {"input": x, **({"hx": hx} if use_hx else {}), **dict(m.named_parameters())}
        results.append(({"h1": h1.detach()}, backprop({"h1": h1}, wrt)))
    (got, got_g), (exp, exp_g) = results
    assert got["h1"].shape == ((B, H) if batched else (H,)) and got["h1"].dtype == dtype
    otol, gtol = tols(dtype)
    assert_dicts_close(got, exp, otol, "RNNCell output")
    assert_dicts_close(got_g, exp_g, gtol, "RNNCell grad")


def test_rnn_cell_api_and_init():
    for bias, nl in ((True, "tanh"), (False, "relu")):
        torch.manual_seed(5)
        ref = nn.RNNCell(4, 6, bias, nl)
        torch.manual_seed(5)
        ext = lstm_ext.RNNCell(4, 6, bias, nl)  # positional, like torch
        assert list(ext.state_dict()) == list(ref.state_dict())
        for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
            assert n == m and torch.equal(p, q), n
        ext.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(ext.state_dict(), strict=True)
        for attr in ("input_size", "hidden_size", "bias", "nonlinearity"):
            assert getattr(ext, attr) == getattr(ref, attr), attr
        assert repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]


def test_rnn_cell_unrolled_equals_rnn(device):
    cell = lstm_ext.RNNCell(3, 5, nonlinearity="relu", device=device, dtype=F64)
    rnn = lstm_ext.RNN(3, 5, nonlinearity="relu", device=device, dtype=F64)
    rnn.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()}, strict=True)
    x = torch.randn(6, 2, 3, device=device, dtype=F64)
    h = torch.zeros(2, 5, device=device, dtype=F64)
    outs = []
    for t in range(6):
        h = cell(x[t], h)
        outs.append(h)
    out, h_n = rnn(x)
    assert_close(torch.stack(outs), out, "out", **tols(F64)[0])
    assert_close(h, h_n[0], "h_n", **tols(F64)[0])


# --- errors: the type torch.nn raises (or a subclass) ---------------------------------------

def torch_error(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value)


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_rnn_bad_nonlinearity(how):
    def build(cls):
        return cls(3, 4, 2, "sigmoid") if how == "positional" else cls(3, 4, nonlinearity="sigmoid")

    ref_type = torch_error(lambda: build(nn.RNN))
    assert ref_type is ValueError
    with pytest.raises(ref_type) as info:
        build(lstm_ext.RNN)
    assert_message(info.value, "sigmoid", "tanh", "relu")


def test_rnn_cell_bad_nonlinearity():
    """torch.nn.RNNCell accepts a bad nonlinearity and fails at forward (with a
    RuntimeError); lstm_ext fails at construction, with an InvalidArgumentError,
    which is a subclass of what torch raises."""
    ref = nn.RNNCell(3, 4, nonlinearity="sigmoid")
    ref_type = torch_error(lambda: ref(torch.randn(2, 3)))
    assert issubclass(lstm_ext.InvalidArgumentError, ref_type)
    with pytest.raises(ref_type) as info:
        lstm_ext.RNNCell(3, 4, nonlinearity="sigmoid")
    assert isinstance(info.value, lstm_ext.InvalidArgumentError)
    assert_message(info.value, "sigmoid")
    with pytest.raises(ref_type):
        lstm_ext.RNNCell(3, 4, True, "gelu")


def test_rnn_proj_size_raises_value_error():
    ref_type = torch_error(lambda: nn.RNN(3, 4, proj_size=2))
    assert ref_type is ValueError
    with pytest.raises(ref_type) as info:
        lstm_ext.RNN(3, 4, proj_size=2)
    assert_message(info.value, "proj_size")


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_rnn_wrong_feature_size(batched):
    ref, ext = make_pair(7, 5, 2)
    x = torch.randn(4, 3, 11) if batched else torch.randn(4, 11)
    with pytest.raises(torch_error(lambda: ref(x))) as info:
        ext(x)
    assert_message(info.value, num_re(7), num_re(11))
    cref, cext = make_cell_pair(7, 5)
    x = torch.randn(3, 11) if batched else torch.randn(11)
    with pytest.raises(torch_error(lambda: cref(x))) as info:
        cext(x)
    assert_message(info.value, num_re(7), num_re(11))


@pytest.mark.parametrize("bad", [(2, 4, 5), (2, 3, 6), (1, 3, 5), (4, 3, 5)],
                         ids=["batch", "hidden", "layers", "layers-x2"])
def test_rnn_wrong_hx_shape(bad):
    ref, ext = make_pair(7, 5, 2)
    x = torch.randn(4, 3, 7)
    hx = torch.zeros(bad)
    with pytest.raises(torch_error(lambda: ref(x, hx))) as info:
        ext(x, hx)
    assert isinstance(info.value, RuntimeError)
    assert_message(info.value, shape_re((2, 3, 5)), shape_re(bad))


def test_rnn_wrong_hx_shape_unbatched_and_cell():
    ref, ext = make_pair(7, 5, 2)
    x, hx = torch.randn(4, 7), torch.zeros(2, 6)
    with pytest.raises(torch_error(lambda: ref(x, hx))) as info:
        ext(x, hx)
    assert_message(info.value, num_re(5), num_re(6))
    cref, cext = make_cell_pair(7, 5)
    x, hx = torch.randn(3, 7), torch.zeros(4, 5)
    with pytest.raises(torch_error(lambda: cref(x, hx))) as info:
        cext(x, hx)
    assert_message(info.value, num_re(3), num_re(4))


@pytest.mark.parametrize("which", ["rnn", "rnn-packed", "cell"])
def test_hx_given_as_tuple(which):
    """torch.nn raises AttributeError ('tuple' object has no attribute ...)."""
    if which == "cell":
        ref, ext = make_cell_pair(7, 5)
        x, hx = torch.randn(3, 7), (torch.zeros(3, 5),)
    else:
        ref, ext = make_pair(7, 5, 2)
        x, hx = torch.randn(4, 3, 7), (torch.zeros(2, 3, 5),)
        if which == "rnn-packed":
            x = pack_padded_sequence(x, [4, 2, 1])
    ref_type = torch_error(lambda: ref(x, hx))
    assert ref_type is AttributeError
    with pytest.raises(ref_type) as info:
        ext(x, hx)
    assert_message(info.value, "tuple")
