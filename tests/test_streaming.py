"""Streaming: a long sequence run in chunks, carrying the state from one chunk
to the next, equals one call on the whole sequence (outputs, final state and,
with the carried state not detached, the gradients of a loss over all chunks).

Bidirectional layers cannot be streamed (the reverse direction needs the whole
sequence), so only unidirectional modules are covered here.
"""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import assert_close, copy_params, leaf, tols

F32, F64 = torch.float32, torch.float64
# torch.nn.LSTM (the reference) warns that oneDNN has no projections; not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")
I, H, T = 3, 5, 20

#: name -> (torch.nn class, lstm_ext class, constructor kwargs)
MODELS = {
    "lstm-L2": (nn.LSTM, lstm_ext.LSTM, dict(num_layers=2)),
    "lstm-proj-L2": (nn.LSTM, lstm_ext.LSTM, dict(num_layers=2, proj_size=2)),
    "lstm-nobias-L3": (nn.LSTM, lstm_ext.LSTM, dict(num_layers=3, bias=False)),
    "rnn-tanh-L2": (nn.RNN, lstm_ext.RNN, dict(num_layers=2)),
    "rnn-relu-L2": (nn.RNN, lstm_ext.RNN, dict(num_layers=2, nonlinearity="relu")),
}


def make_pair(name, device, dtype, batch_first):
    ref_cls, ext_cls, kwargs = MODELS[name]
    ref = ref_cls(I, H, batch_first=batch_first, device=device, dtype=dtype, **kwargs)
    return ref, copy_params(ref, ext_cls(I, H, batch_first=batch_first, device=device, dtype=dtype, **kwargs))


def initial_state(m, batch, device, dtype):
    L, P = m.num_layers, getattr(m, "proj_size", 0) or m.hidden_size
    h0 = leaf(torch.randn(L, *batch, P, device=device, dtype=dtype))
    if isinstance(m, (nn.LSTM, lstm_ext.LSTM)):
        return (h0, leaf(torch.randn(L, *batch, m.hidden_size, device=device, dtype=dtype)))
    return h0


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def run_chunked(m, x, hx, chunks, time_dim, detach):
    """Run ``m`` chunk by chunk, carrying the state. -> (output, final state tuple)."""
    assert sum(chunks) == x.shape[time_dim]
    outs, state, start = [], hx, 0
    for n in chunks:
        piece = x.narrow(time_dim, start, n)
        out, state = m(piece) if state is None else m(piece, state)
        outs.append(out)
        if detach:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        start += n
    return torch.cat(outs, dim=time_dim), as_tuple(state)


def run_whole(m, x, hx):
    out, state = m(x) if hx is None else m(x, hx)
    return out, as_tuple(state)


def loss_grads(out, finals, wrt, seed=99):
    """Gradients of a loss over the whole output and the final state."""
    g = torch.Generator().manual_seed(seed)
    outs = [out, *finals]
    cots = [torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device) for o in outs]
    grads = torch.autograd.grad(outs, list(wrt.values()), cots, allow_unused=True)
    for name, gr in zip(wrt, grads):
        assert gr is not None, f"no gradient reached {name}"
    return dict(zip(wrt, grads))


#        (model, batch_first, hx, chunks)
CASES = [
    ("lstm-L2", False, True, [7, 1, 12]),
    ("lstm-L2", True, False, [1, 12, 7]),
    ("lstm-proj-L2", False, False, [7, 1, 12]),
    ("lstm-proj-L2", True, True, [12, 7, 1]),
    ("lstm-nobias-L3", False, True, [5, 5, 5, 5]),
    ("rnn-tanh-L2", True, True, [7, 1, 12]),
    ("rnn-relu-L2", False, False, [1, 1, 18]),
    ("rnn-relu-L2", True, True, [7, 1, 12]),
]
IDS = [f"{m}-{'bf' if bf else 'sf'}-{'hx' if hx else 'nohx'}-{'_'.join(map(str, c))}" for m, bf, hx, c in CASES]


@pytest.mark.parametrize("detach", [False, True], ids=["carried", "detached"])
@pytest.mark.parametrize("name,bf,use_hx,chunks", CASES, ids=IDS)
def test_streaming_outputs_and_final_state(device, name, bf, use_hx, chunks, detach):
    B = 3
    ref, ext = make_pair(name, device, F64, bf)
    x = torch.randn(*((B, T, I) if bf else (T, B, I)), device=device, dtype=F64)
    hx = initial_state(ext, (B,), device, F64) if use_hx else None
    c_out, c_state = run_chunked(ext, x, hx, chunks, 1 if bf else 0, detach)
    w_out, w_state = run_whole(ext, x, hx)
    r_out, r_state = run_whole(ref, x, hx)
    otol = tols(F64)[0]
    assert c_out.shape == w_out.shape == r_out.shape
    assert_close(c_out, w_out, "chunked vs whole output", **otol)
    assert_close(c_out, r_out, "chunked vs torch.nn output", **otol)
    assert len(c_state) == len(w_state)
    for i, (c, w, r) in enumerate(zip(c_state, w_state, r_state)):
        assert_close(c, w, f"final state {i} vs whole", **otol)
        assert_close(c, r, f"final state {i} vs torch.nn", **otol)


@pytest.mark.parametrize("name,bf,use_hx,chunks", CASES, ids=IDS)
def test_streaming_gradients_with_carried_state(device, name, bf, use_hx, chunks):
    """With the carried state not detached, the gradients of a loss over all
    chunks w.r.t. the input, h0/c0 and every parameter equal the single call's
    (and torch.nn's single call)."""
    B = 2
    ref, ext = make_pair(name, device, F64, bf)
    x = leaf(torch.randn(*((B, T, I) if bf else (T, B, I)), device=device, dtype=F64))
    hx = initial_state(ext, (B,), device, F64) if use_hx else None
    wrt = {"input": x, **{f"hx{i}": s for i, s in enumerate(as_tuple(hx))}} if use_hx else {"input": x}
    got = loss_grads(*run_chunked(ext, x, hx, chunks, 1 if bf else 0, detach=False),
                     {**wrt, **dict(ext.named_parameters())})
    whole = loss_grads(*run_whole(ext, x, hx), {**wrt, **dict(ext.named_parameters())})
    exp = loss_grads(*run_whole(ref, x, hx), {**wrt, **dict(ref.named_parameters())})
    gtol = tols(F64)[1]
    assert list(got) == list(whole) == list(exp)
    for k in got:
        assert_close(got[k], whole[k], f"grad {k} chunked vs whole", **gtol)
        assert_close(got[k], exp[k], f"grad {k} chunked vs torch.nn", **gtol)
    # the carried state matters: the first step's input influences the last chunk
    assert got["input"].narrow(1 if bf else 0, 0, 1).abs().sum() > 0


def test_streaming_detached_state_cuts_the_graph(device):
    """Detaching the carried state stops gradients at the chunk boundary, so a loss
    on the last chunk reaches only the last chunk's input."""
    ext = lstm_ext.LSTM(I, H, 2, device=device, dtype=F64)
    x = leaf(torch.randn(T, 2, I, device=device, dtype=F64))
    out, _ = run_chunked(ext, x, None, [7, 1, 12], 0, detach=True)
    g, = torch.autograd.grad(out[8:].sum(), x)
    assert (g[:8] == 0).all() and (g[8:] != 0).any()
    out, _ = run_chunked(ext, x, None, [7, 1, 12], 0, detach=False)
    g, = torch.autograd.grad(out[8:].sum(), x)
    assert (g[:8] != 0).any()


@pytest.mark.parametrize("name", ["lstm-proj-L2", "rnn-tanh-L2"])
def test_streaming_unbatched(device, name):
    """Unbatched 2-D chunks carry [L, P] / [L, H] states."""
    ref, ext = make_pair(name, device, F64, False)
    x = leaf(torch.randn(T, I, device=device, dtype=F64))
    hx = initial_state(ext, (), device, F64)
    wrt = {"input": x, **{f"hx{i}": s for i, s in enumerate(as_tuple(hx))}}
    c_out, c_state = run_chunked(ext, x, hx, [7, 1, 12], 0, detach=False)
    r_out, r_state = run_whole(ref, x, hx)
    otol, gtol = tols(F64)
    expected = (T, ext.proj_size or H) if name.startswith("lstm") else (T, H)
    assert c_out.shape == r_out.shape == expected
    assert_close(c_out, r_out, "output", **otol)
    for i, (c, r) in enumerate(zip(c_state, r_state)):
        assert c.shape == r.shape
        assert_close(c, r, f"final state {i}", **otol)
    got = loss_grads(c_out, c_state, {**wrt, **dict(ext.named_parameters())})
    exp = loss_grads(r_out, r_state, {**wrt, **dict(ref.named_parameters())})
    for k in got:
        assert_close(got[k], exp[k], f"grad {k}", **gtol)


def test_streaming_float32_matches_torch(device):
    """float32, the usual tolerances: chunked lstm_ext vs torch.nn chunked the same way."""
    ref, ext = make_pair("lstm-proj-L2", device, F32, True)
    x = leaf(torch.randn(3, T, I, device=device))
    hx = initial_state(ext, (3,), device, F32)
    wrt = {"input": x, "h0": hx[0], "c0": hx[1]}
    results = []
    for m in (ext, ref):
        out, state = run_chunked(m, x, hx, [7, 1, 12], 1, detach=False)
        grads = loss_grads(out, state, {**wrt, **dict(m.named_parameters())})
        results.append(((out.detach(), *(s.detach() for s in state)), grads))
    (got_o, got_g), (exp_o, exp_g) = results
    otol, gtol = tols(F32)
    for i, (a, e) in enumerate(zip(got_o, exp_o)):
        assert_close(a, e, f"output {i}", **otol)
    assert list(got_g) == list(exp_g)
    for k in got_g:
        assert_close(got_g[k], exp_g[k], f"grad {k}", **gtol)
