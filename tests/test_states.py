"""``return_all_states=True``: every step's h (and, for the LSTM, c) of every
layer and direction.

LSTM: ``(output, (h_n, c_n), LSTMStates(h, c))``; RNN: ``(output, h_n, h_all)``.
Shapes follow the output's layout (``[L*D, T, B, .]``, ``[L*D, B, T, .]`` with
batch_first, ``[L*D, T, .]`` unbatched, ``[L*D, N, .]`` packed, rows aligned
with ``output.data``). Values and gradients are checked against a step-by-step
unrolled reference built from torch.nn.LSTMCell (or, with a projection, the
same cell formula written out) and against torch.nn.LSTM / RNN run layer by layer.
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import lstm_ext
import lstm_ext.modules
from helpers import (assert_close, assert_dicts_close, copy_params, leaf, tols)

F32, F64 = torch.float32, torch.float64
# torch.nn.LSTM (the reference) warns that oneDNN has no projections; not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


# --- references ---------------------------------------------------------------------

def _suffix(layer, direction):
    return f"_l{layer}" + ("_reverse" if direction else "")


def unrolled_lstm(m, x, h0, c0):
    """Step-by-step reference for an LSTM module ``m`` on time-major ``x [T,B,I]``
    with ``h0/c0 [L*D,B,.]``, differentiable w.r.t. ``m``'s own parameters.

    Without a projection each step is ``torch.nn.LSTMCell`` (called with
    ``m``'s tensors); with one, the same cell followed by ``h = W_hr h``.
    Returns (output [T,B,D*P], h_n, c_n, hs [L*D,T,B,P], cs [L*D,T,B,H]).
    """
    L, D, H, P = m.num_layers, 2 if m.bidirectional else 1, m.hidden_size, m.proj_size
    T = x.shape[0]
    hs, cs, h_n, c_n = [], [], [], []
    layer_in = x
    for layer in range(L):
        outs = []
        for d in range(D):
            sfx, k = _suffix(layer, d), layer * D + d
            params = {"weight_ih": getattr(m, "weight_ih" + sfx), "weight_hh": getattr(m, "weight_hh" + sfx)}
            if m.bias:
                params["bias_ih"] = getattr(m, "bias_ih" + sfx)
                params["bias_hh"] = getattr(m, "bias_hh" + sfx)
            h, c = h0[k], c0[k]
            ys, cells = [None] * T, [None] * T
            if P == 0:
                cell = nn.LSTMCell(layer_in.shape[-1], H, bias=m.bias, device="meta", dtype=x.dtype)
            for t in (reversed(range(T)) if d else range(T)):
                if P == 0:
                    h, c = torch.func.functional_call(cell, params, (layer_in[t], (h, c)))
                else:
                    gates = layer_in[t] @ params["weight_ih"].T + h @ params["weight_hh"].T
                    if m.bias:
                        gates = gates + params["bias_ih"] + params["bias_hh"]
                    i, f, g, o = gates.chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = (torch.sigmoid(o) * torch.tanh(c)) @ getattr(m, "weight_hr" + sfx).T
                ys[t], cells[t] = h, c
            hs.append(torch.stack(ys))
            cs.append(torch.stack(cells))
            h_n.append(h)
            c_n.append(c)
            outs.append(hs[-1])
        layer_in = torch.cat(outs, dim=-1)
    return layer_in, torch.stack(h_n), torch.stack(c_n), torch.stack(hs), torch.stack(cs)


def cotangents(tensors, seed=4321):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in tensors]


def grads_of(outputs, wrt: dict, cots):
    grads = torch.autograd.grad(outputs, list(wrt.values()), cots, allow_unused=True)
    for name, g in zip(wrt, grads):
        assert g is not None, f"no gradient reached {name}"
    return dict(zip(wrt, grads))


def to_time_major(t, layout):
    """States [L*D, *seq, F] in the output's layout -> [L*D, T, B, F]."""
    if layout == "batch_first":
        return t.transpose(1, 2)
    if layout == "unbatched":
        return t.unsqueeze(2)
    return t


# --- shapes ---------------------------------------------------------------------------

L3, I, H, P, T, B = 3, 4, 7, 2, 5, 3
LENGTHS = [5, 2, 4]  # N = 11


def _input(layout, device="cpu", dtype=F32):
    if layout == "packed":
        x = torch.randn(T, B, I, device=device, dtype=dtype)
        return pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
    shape = {"time_major": (T, B, I), "batch_first": (B, T, I), "unbatched": (T, I)}[layout]
    return torch.randn(shape, device=device, dtype=dtype)


SEQ = {"time_major": (T, B), "batch_first": (B, T), "unbatched": (T,), "packed": (sum(LENGTHS),)}
LAYOUTS = list(SEQ)


@pytest.mark.parametrize("proj", [0, P], ids=["noproj", "proj"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lstm_states_shapes(device, layout, proj):
    m = lstm_ext.LSTM(I, H, L3, bidirectional=True, proj_size=proj, batch_first=layout == "batch_first",
                      device=device)
    x = _input(layout, device)
    result = m(x, return_all_states=True)
    assert isinstance(result, tuple) and len(result) == 3
    out, (h_n, c_n), states = result
    assert isinstance(states, lstm_ext.LSTMStates) and states._fields == ("h", "c")
    assert states.h is states[0] and states.c is states[1]
    Pr = proj or H
    assert states.h.shape == (2 * L3, *SEQ[layout], Pr)
    assert states.c.shape == (2 * L3, *SEQ[layout], H)
    for t in states:
        assert t.dtype == F32 and t.device.type == device and t.requires_grad
    # the first two results are the default call's, exactly
    out2, (h2, c2) = m(x)
    if layout == "packed":
        assert isinstance(out, PackedSequence) and torch.equal(out.batch_sizes, out2.batch_sizes)
        out, out2 = out.data, out2.data
        assert states.h.shape[1] == out.shape[0]
    for a, b in ((out, out2), (h_n, h2), (c_n, c2)):
        assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rnn_states_shapes(device, layout):
    m = lstm_ext.RNN(I, H, L3, nonlinearity="relu", bidirectional=True,
                     batch_first=layout == "batch_first", device=device)
    x = _input(layout, device)
    result = m(x, return_all_states=True)
    assert isinstance(result, tuple) and len(result) == 3
    out, h_n, h_all = result
    assert isinstance(h_all, torch.Tensor) and h_all.shape == (2 * L3, *SEQ[layout], H)
    assert h_all.requires_grad
    out2, h2 = m(x)
    data = out.data if layout == "packed" else out
    assert torch.equal(data, out2.data if layout == "packed" else out2) and torch.equal(h_n, h2)
    # last layer equals the output, per direction
    assert_close(h_all[-2], data[..., :H], "last layer fwd", atol=0, rtol=0)
    assert_close(h_all[-1], data[..., H:], "last layer rev", atol=0, rtol=0)


def test_default_call_returns_two_tuple_and_flag_is_keyword_only():
    m = lstm_ext.LSTM(I, H, 2)
    x = torch.randn(T, B, I)
    res = m(x)
    assert isinstance(res, tuple) and len(res) == 2 and len(res[1]) == 2
    res = lstm_ext.RNN(I, H, 2)(x)
    assert isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], torch.Tensor)
    with pytest.raises(TypeError):
        m(x, None, True)


# --- values ----------------------------------------------------------------------------

#        (L, bidir, proj, layout, hx)
VALUE_CASES = [
    (2, True, 0, "time_major", True),
    (2, True, 2, "batch_first", False),
    (3, False, 0, "unbatched", True),
    (1, True, 3, "time_major", False),
    (3, True, 2, "unbatched", False),
    (2, False, 3, "batch_first", True),
]


@pytest.mark.parametrize("L,bidir,proj,layout,use_hx", VALUE_CASES,
                         ids=[f"L{c[0]}-{'bi' if c[1] else 'uni'}-P{c[2]}-{c[3]}-{'hx' if c[4] else 'nohx'}"
                              for c in VALUE_CASES])
def test_lstm_states_values(device, L, bidir, proj, layout, use_hx):
    """Every h_t and c_t equals the unrolled LSTMCell reference; the last layer's h
    equals the output (each direction at its half of the features), h/c at each
    direction's last step equal h_n/c_n."""
    H_ = 4
    D, Pr = (2 if bidir else 1), proj or H_
    m = lstm_ext.LSTM(I, H_, L, bidirectional=bidir, proj_size=proj, batch_first=layout == "batch_first",
                      device=device, dtype=F64)
    x = _input(layout, device, F64)
    batch = () if layout == "unbatched" else (B,)
    hx = None
    if use_hx:
        hx = (torch.randn(L * D, *batch, Pr, device=device, dtype=F64),
              torch.randn(L * D, *batch, H_, device=device, dtype=F64))
    out, (h_n, c_n), states = m(x, hx, return_all_states=True)
    # reference, time-major with a batch dimension
    x_tm = to_time_major(x.unsqueeze(0), layout)[0] if layout != "time_major" else x
    if hx is None:
        hx_tm = (torch.zeros(L * D, x_tm.shape[1], Pr, dtype=F64, device=device),
                 torch.zeros(L * D, x_tm.shape[1], H_, dtype=F64, device=device))
    else:
        hx_tm = tuple(s.unsqueeze(1) for s in hx) if layout == "unbatched" else hx
    r_out, r_hn, r_cn, r_hs, r_cs = unrolled_lstm(m, x_tm, *hx_tm)
    hs, cs = to_time_major(states.h, layout), to_time_major(states.c, layout)
    out_tm = to_time_major(out.unsqueeze(0), layout)[0]
    otol = tols(F64)[0]
    assert_close(hs, r_hs, "states.h", **otol)
    assert_close(cs, r_cs, "states.c", **otol)
    assert_close(out_tm, r_out, "output", **otol)
    hn_b = h_n.unsqueeze(1) if layout == "unbatched" else h_n
    cn_b = c_n.unsqueeze(1) if layout == "unbatched" else c_n
    assert_close(hn_b, r_hn, "h_n", **otol)
    assert_close(cn_b, r_cn, "c_n", **otol)
    # the relations, directly
    for d in range(D):
        assert torch.equal(hs[(L - 1) * D + d], out_tm[..., d * Pr:(d + 1) * Pr])
    for k in range(L * D):
        last = 0 if k % D == 1 else -1
        assert torch.equal(hs[k, last], hn_b[k]), k
        assert torch.equal(cs[k, last], cn_b[k]), k


def test_lstm_intermediate_layers_equal_single_layer_torch(device):
    """Layer l's states equal a 1-layer bidirectional torch.nn.LSTM run on the
    concatenated states of layer l-1 (with layer l's weights and hx rows)."""
    L, D, H_ = 3, 2, 5
    ref = nn.LSTM(I, H_, L, bidirectional=True, device=device)
    ext = copy_params(ref, lstm_ext.LSTM(I, H_, L, bidirectional=True, device=device))
    x = torch.randn(T, B, I, device=device)
    h0 = torch.randn(L * D, B, H_, device=device)
    c0 = torch.randn(L * D, B, H_, device=device)
    with torch.no_grad():
        out, _, states = ext(x, (h0, c0), return_all_states=True)
        for layer in range(1, L):
            single = nn.LSTM(2 * H_, H_, 1, bidirectional=True, device=device)
            single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in ref.state_dict().items()
                                    if f"_l{layer}" in k}, strict=True)
            prev = torch.cat([states.h[(layer - 1) * D], states.h[(layer - 1) * D + 1]], dim=-1)
            rows = slice(layer * D, layer * D + D)
            s_out, (s_h, s_c) = single(prev, (h0[rows], c0[rows]))
            assert_close(states.h[layer * D], s_out[..., :H_], f"layer {layer} fwd h", **tols(F32)[0])
            assert_close(states.h[layer * D + 1], s_out[..., H_:], f"layer {layer} rev h", **tols(F32)[0])
            assert_close(states.c[layer * D, -1], s_c[0], f"layer {layer} fwd c_T", **tols(F32)[0])
            assert_close(states.c[layer * D + 1, 0], s_c[1], f"layer {layer} rev c_0", **tols(F32)[0])


def test_rnn_states_values_layer_by_layer(device):
    """h_all of every layer equals torch.nn.RNN run one layer at a time; h_n is
    h_all at each direction's last step."""
    L, D, H_ = 3, 2, 5
    ref = nn.RNN(I, H_, L, nonlinearity="tanh", bidirectional=True, batch_first=True, device=device)
    ext = copy_params(ref, lstm_ext.RNN(I, H_, L, bidirectional=True, batch_first=True, device=device))
    x = torch.randn(B, T, I, device=device)
    h0 = torch.randn(L * D, B, H_, device=device)
    with torch.no_grad():
        out, h_n, h_all = ext(x, h0, return_all_states=True)
        layer_in = x
        for layer in range(L):
            single = nn.RNN(layer_in.shape[-1], H_, 1, bidirectional=True, batch_first=True, device=device)
            single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in ref.state_dict().items()
                                    if f"_l{layer}" in k}, strict=True)
            s_out, s_h = single(layer_in, h0[layer * D:layer * D + D])
            assert_close(h_all[layer * D], s_out[..., :H_], f"layer {layer} fwd", **tols(F32)[0])
            assert_close(h_all[layer * D + 1], s_out[..., H_:], f"layer {layer} rev", **tols(F32)[0])
            layer_in = s_out
        for k in range(L * D):
            assert torch.equal(h_all[k, :, 0 if k % 2 else -1], h_n[k]), k
        assert torch.equal(torch.cat([h_all[-2], h_all[-1]], -1), out)


@pytest.mark.parametrize("proj", [0, 2], ids=["noproj", "proj"])
def test_lstm_states_packed(device, proj):
    """Packed: rows aligned with output.data; unpacked per sequence they equal the
    states of that sequence run alone (the unrolled reference), and each
    sequence's state at its own last step equals h_n / c_n."""
    L, D, H_ = 2, 2, 4
    Pr = proj or H_
    lengths = [3, 6, 1, 4]
    Bn = len(lengths)
    m = lstm_ext.LSTM(I, H_, L, bidirectional=True, proj_size=proj, device=device, dtype=F64)
    x = torch.randn(max(lengths), Bn, I, device=device, dtype=F64)
    h0 = torch.randn(L * D, Bn, Pr, device=device, dtype=F64)
    c0 = torch.randn(L * D, Bn, H_, device=device, dtype=F64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n), states = m(packed, (h0, c0), return_all_states=True)
    assert states.h.shape == (L * D, sum(lengths), Pr) and states.c.shape == (L * D, sum(lengths), H_)
    for d in range(D):
        assert torch.equal(states.h[(L - 1) * D + d], out.data[:, d * Pr:(d + 1) * Pr])

    def unpack(rows):
        p = PackedSequence(rows, out.batch_sizes, out.sorted_indices, out.unsorted_indices)
        return pad_packed_sequence(p)[0]  # [T, B, F], caller's order

    hs = [unpack(states.h[k]) for k in range(L * D)]
    cs = [unpack(states.c[k]) for k in range(L * D)]
    otol = tols(F64)[0]
    with torch.no_grad():
        for b, n in enumerate(lengths):
            sl = slice(b, b + 1)
            _, r_hn, r_cn, r_hs, r_cs = unrolled_lstm(m, x[:n, sl], h0[:, sl], c0[:, sl])
            for k in range(L * D):
                assert_close(hs[k][:n, sl], r_hs[k], f"seq {b} h[{k}]", **otol)
                assert_close(cs[k][:n, sl], r_cs[k], f"seq {b} c[{k}]", **otol)
                last = 0 if k % D == 1 else n - 1
                assert torch.equal(hs[k][last, b], h_n[k, b]), (b, k)
                assert torch.equal(cs[k][last, b], c_n[k, b]), (b, k)
            assert_close(h_n[:, sl], r_hn, f"seq {b} h_n", **otol)
            assert_close(c_n[:, sl], r_cn, f"seq {b} c_n", **otol)


# --- gradients ------------------------------------------------------------------------

#        (proj, batch_first)
GRAD_CASES = [(0, False), (2, True)]


@pytest.mark.parametrize("through", ["c", "h", "h+c"])
@pytest.mark.parametrize("proj,bf", GRAD_CASES, ids=["noproj-sf", "proj-bf"])
def test_lstm_gradients_through_states_only(device, through, proj, bf):
    """A loss on states.c only (states.h only, both) gives the same gradients of
    the input, h0, c0 and every parameter as the unrolled reference."""
    L, D, H_ = 2, 2, 3
    Pr = proj or H_
    m = lstm_ext.LSTM(I, H_, L, bidirectional=True, proj_size=proj, batch_first=bf, device=device, dtype=F64)
    x = leaf(torch.randn(*((B, T, I) if bf else (T, B, I)), device=device, dtype=F64))
    h0 = leaf(torch.randn(L * D, B, Pr, device=device, dtype=F64))
    c0 = leaf(torch.randn(L * D, B, H_, device=device, dtype=F64))
    wrt = {"input": x, "h0": h0, "c0": c0, **dict(m.named_parameters())}
    _, _, states = m(x, (h0, c0), return_all_states=True)
    hs, cs = (to_time_major(s, "batch_first" if bf else "time_major") for s in states)
    _, _, _, r_hs, r_cs = unrolled_lstm(m, x.transpose(0, 1) if bf else x, h0, c0)
    picked = {"c": [(cs, r_cs)], "h": [(hs, r_hs)], "h+c": [(hs, r_hs), (cs, r_cs)]}[through]
    cots = cotangents([a for a, _ in picked])
    got = grads_of([a for a, _ in picked], wrt, cots)
    exp = grads_of([r for _, r in picked], wrt, cots)
    assert_dicts_close(got, exp, tols(F64)[1], f"grad through states.{through}")
    assert got["c0"].abs().sum() > 0 and got["input"].abs().sum() > 0


def test_lstm_gradients_through_packed_cells(device):
    """Packed input, loss on states.c only: gradients equal the sum over the
    sequences run alone through the unrolled reference."""
    L, D, H_ = 2, 2, 3
    lengths = [2, 4, 1]
    Bn = len(lengths)
    m = lstm_ext.LSTM(I, H_, L, bidirectional=True, device=device, dtype=F64)
    x = leaf(torch.randn(max(lengths), Bn, I, device=device, dtype=F64))
    h0 = leaf(torch.randn(L * D, Bn, H_, device=device, dtype=F64))
    c0 = leaf(torch.randn(L * D, Bn, H_, device=device, dtype=F64))
    wrt = {"input": x, "h0": h0, "c0": c0, **dict(m.named_parameters())}
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, _, states = m(packed, (h0, c0), return_all_states=True)
    cot, = cotangents([states.c])
    got = grads_of([states.c], wrt, [cot])
    # the same cotangent rows, per sequence in the caller's order: [L*D, T, B, H]
    cot_padded = torch.stack([
        pad_packed_sequence(PackedSequence(cot[k], out.batch_sizes, out.sorted_indices,
                                           out.unsorted_indices))[0] for k in range(L * D)])
    loss = 0
    for b, n in enumerate(lengths):
        sl = slice(b, b + 1)
        *_, r_cs = unrolled_lstm(m, x[:n, sl], h0[:, sl], c0[:, sl])
        loss = loss + (r_cs * cot_padded[:, :n, sl]).sum()
    exp = grads_of([loss], wrt, None)
    assert_dicts_close(got, exp, tols(F64)[1], "packed grad through states.c")


def test_gradcheck_loss_on_cells(device):
    m = lstm_ext.LSTM(2, 2, 2, bidirectional=True, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x = leaf(torch.randn(3, 2, 2, device=device, dtype=F64))
    h0 = leaf(torch.randn(4, 2, 2, device=device, dtype=F64))
    c0 = leaf(torch.randn(4, 2, 2, device=device, dtype=F64))

    def f(x, h0, c0, *ps):
        _, _, states = torch.func.functional_call(m, dict(zip(names, ps)), (x, (h0, c0)),
                                                  {"return_all_states": True})
        return states.c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_packed_projected_states(device):
    m = lstm_ext.LSTM(2, 3, 2, bidirectional=True, proj_size=1, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x = leaf(torch.randn(3, 2, 2, device=device, dtype=F64))
    h0 = leaf(torch.randn(4, 2, 1, device=device, dtype=F64))
    c0 = leaf(torch.randn(4, 2, 3, device=device, dtype=F64))

    def f(x, h0, c0, *ps):
        packed = pack_padded_sequence(x, [2, 3], enforce_sorted=False)
        _, _, states = torch.func.functional_call(m, dict(zip(names, ps)), (packed, (h0, c0)),
                                                  {"return_all_states": True})
        return states.h, states.c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


# --- what the default path asks of the ops --------------------------------------------------

class _ForwardRecorder(TorchDispatchMode):
    """Records the save_for_backward argument of every lstm_ext::lstm_forward call."""

    def __init__(self):
        super().__init__()
        self.saves = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.lstm_ext.lstm_forward.default:
            names = [a.name for a in func._schema.arguments]
            i = names.index("save_for_backward")
            self.saves.append(args[i] if i < len(args) else kwargs["save_for_backward"])
        return func(*args, **kwargs)


@pytest.fixture
def layer_spy(monkeypatch):
    """Every return_cells value lstm_ext.LSTM passes to lstm_ext.ops.lstm_layer."""
    calls = []
    real = lstm_ext.modules.lstm_layer
    assert real is lstm_ext.ops.lstm_layer

    def spy(*args, **kwargs):
        calls.append(kwargs.get("return_cells", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(lstm_ext.modules, "lstm_layer", spy)
    return calls


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_default_path_does_not_ask_for_cells(layer_spy, packed):
    L, D = 2, 2
    m = lstm_ext.LSTM(I, H, L, bidirectional=True)
    x = _input("packed" if packed else "time_major")
    m(x)  # grad mode, parameters require grad
    assert layer_spy == [False] * (L * D)
    layer_spy.clear()
    rec = _ForwardRecorder()
    with torch.no_grad(), rec:
        out, (h_n, c_n) = m(x)
    assert layer_spy == [False] * (L * D)
    assert rec.saves == [False] * (L * D), "no_grad default path must not save activations"
    assert not h_n.requires_grad
    layer_spy.clear()
    m(x, return_all_states=True)
    assert layer_spy == [True] * (L * D)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_return_all_states_under_no_grad_matches_grad_mode(device, kind):
    if kind == "lstm":
        m = lstm_ext.LSTM(I, H, 2, bidirectional=True, proj_size=3, device=device)
    else:
        m = lstm_ext.RNN(I, H, 2, bidirectional=True, device=device)
    x = _input("time_major", device)
    grad_res = m(x, return_all_states=True)
    with torch.no_grad():
        ng_res = m(x, return_all_states=True)
    with torch.inference_mode():
        inf_res = m(x, return_all_states=True)
    flat = lambda r: [r[0], *(r[1] if kind == "lstm" else (r[1],)), *(r[2] if kind == "lstm" else (r[2],))]
    for a, b, c in zip(flat(grad_res), flat(ng_res), flat(inf_res), strict=True):
        assert a.requires_grad and not b.requires_grad and not c.requires_grad
        assert torch.equal(a.detach(), b) and torch.equal(a.detach(), c)
