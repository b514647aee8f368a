"""torch.compile(fullgraph=True) traces models built on lstm_ext (LSTM; RNN and
GRU layers, the GRU's cell and op at the end).

Most tests use the "aot_eager" backend (traces through dynamo + AOTAutograd,
exercising the fake kernels and the registered autograd, without paying for
code generation).  One test uses the default inductor backend.
"""
import copy

import pytest
import torch
import torch._functorch.config
import torch._inductor.config
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

import lstm_ext
from cells import GRU
from helpers import assert_close, leaf

VOCAB, EMB, HID = 13, 6, 8


class TinyLM(nn.Module):
    """embedding -> LSTM (2 layers, bidirectional) -> linear."""

    def __init__(self, lstm_cls, bidirectional=True):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB)
        self.lstm = lstm_cls(EMB, HID, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(HID * (2 if bidirectional else 1), VOCAB)

    def forward(self, tokens, hx=None):
        out, (h, c) = self.lstm(self.emb(tokens), hx)
        return self.head(out), h, c


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _loss_and_grads(model, tokens, hx=None):
    logits, h, c = model(tokens, hx)
    loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens.reshape(-1))
    loss = loss + 0.1 * h.pow(2).sum() + 0.05 * c.sum()
    params = [p for p in model.parameters()]
    extra = [t for t in (hx or ()) if t.requires_grad]
    grads = torch.autograd.grad(loss, params + extra)
    names = [n.replace("_orig_mod.", "") for n, _ in model.named_parameters()] + [f"hx{i}" for i in range(len(extra))]
    return logits.detach(), h.detach(), c.detach(), loss.detach(), dict(zip(names, grads))


def _assert_same(eager, compiled, atol_out=1e-5, atol_grad=1e-5):
    for name, a, b in zip(("logits", "h_n", "c_n", "loss"), eager[:4], compiled[:4]):
        assert_close(b, a, name, atol=atol_out, rtol=1e-5)
    assert eager[4].keys() == compiled[4].keys()
    for k in eager[4]:
        assert_close(compiled[4][k], eager[4][k], f"grad {k}", atol=atol_grad, rtol=1e-4)


def _capturing_backend():
    graphs = {"fw": [], "bw": []}

    def fw(gm, example_inputs):
        graphs["fw"].append(gm)
        return make_boxed_func(gm.forward)

    def bw(gm, example_inputs):
        graphs["bw"].append(gm)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=fw, bw_compiler=bw), graphs


def _targets(gms):
    return {str(n.target) for gm in gms for n in gm.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("use_hx", [False, True], ids=["nohx", "hx"])
def test_compile_tiny_lm_aot_eager_matches_eager(device, use_hx):
    torch.manual_seed(0)
    model = TinyLM(lstm_ext.LSTM).to(device)
    cmodel = torch.compile(copy.deepcopy(model), backend="aot_eager", fullgraph=True)
    tokens = torch.randint(0, VOCAB, (3, 9), device=device)
    hx = None
    if use_hx:
        hx = (leaf(torch.randn(4, 3, HID, device=device)), leaf(torch.randn(4, 3, HID, device=device)))
    _assert_same(_loss_and_grads(model, tokens, hx), _loss_and_grads(cmodel, tokens, hx))


def test_compile_traces_the_custom_ops(device):
    """The compiled graphs call lstm_ext's ops (forward and backward), i.e. the
    fake kernels and autograd registration are what tracing goes through."""
    backend, graphs = _capturing_backend()
    torch.manual_seed(0)
    model = TinyLM(lstm_ext.LSTM).to(device)
    cmodel = torch.compile(copy.deepcopy(model), backend=backend, fullgraph=True)
    tokens = torch.randint(0, VOCAB, (2, 5), device=device)
    _assert_same(_loss_and_grads(model, tokens), _loss_and_grads(cmodel, tokens))
    fw, bw = _targets(graphs["fw"]), _targets(graphs["bw"])
    assert any("lstm_ext.lstm_forward" in t for t in fw), fw
    assert any("lstm_ext.lstm_backward" in t for t in bw), bw


def test_compile_matches_torch_nn_model(device):
    """The compiled lstm_ext model computes what the eager torch.nn model computes."""
    torch.manual_seed(0)
    ref = TinyLM(nn.LSTM).to(device)
    ext = TinyLM(lstm_ext.LSTM).to(device)
    ext.load_state_dict(ref.state_dict(), strict=True)
    cext = torch.compile(ext, backend="aot_eager", fullgraph=True)
    tokens = torch.randint(0, VOCAB, (3, 7), device=device)
    _assert_same(_loss_and_grads(ref, tokens), _loss_and_grads(cext, tokens), atol_grad=1e-4)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_compile_lstm_layer_op(device, reverse):
    T, B, I, H = 5, 2, 3, 4
    args = [leaf(torch.randn(*s, device=device)) for s in
            ((T, B, I), (4 * H, I), (4 * H, H), (4 * H,), (B, H), (B, H))]

    def f(x, w_ih, w_hh, b, h0, c0):
        y, h, c = lstm_ext.ops.lstm_layer(x, w_ih, w_hh, b, h0, c0, reverse=reverse)
        return (y.sin().sum() + h.sum() * 2 + c.pow(2).sum())

    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    le = f(*args)
    ge = torch.autograd.grad(le, args)
    lc = cf(*args)
    gc = torch.autograd.grad(lc, args)
    assert_close(lc, le, "loss", atol=1e-6, rtol=1e-6)
    for i, (a, b) in enumerate(zip(gc, ge)):
        assert_close(a, b, f"grad {i}", atol=1e-6, rtol=1e-6)


def test_compile_dynamic_shapes(device):
    """Fake kernels work with symbolic sizes: one dynamic graph, several T and B."""
    torch.manual_seed(0)
    model = TinyLM(lstm_ext.LSTM, bidirectional=False).to(device)
    cmodel = torch.compile(copy.deepcopy(model), backend="aot_eager", fullgraph=True, dynamic=True)
    for B, T in ((2, 5), (3, 8), (4, 3)):
        tokens = torch.randint(0, VOCAB, (B, T), device=device)
        _assert_same(_loss_and_grads(model, tokens), _loss_and_grads(cmodel, tokens))


def test_compile_inference_no_grad(device):
    torch.manual_seed(0)
    model = TinyLM(lstm_ext.LSTM).to(device).eval()
    cmodel = torch.compile(copy.deepcopy(model), backend="aot_eager", fullgraph=True)
    tokens = torch.randint(0, VOCAB, (3, 6), device=device)
    with torch.no_grad():
        for a, b in zip(model(tokens), cmodel(tokens)):
            assert_close(b, a, "no_grad", atol=1e-6, rtol=1e-6)


def test_compile_lstm_cell(device):
    torch.manual_seed(0)
    cell = lstm_ext.LSTMCell(4, 5).to(device)

    def unroll(x, h, c):
        for t in range(x.shape[0]):
            h, c = cell(x[t], (h, c))
        return h.sum() + c.sum()

    cunroll = torch.compile(unroll, backend="aot_eager", fullgraph=True)
    x, h, c = (leaf(torch.randn(*s, device=device)) for s in ((3, 2, 4), (2, 5), (2, 5)))
    le, lc = unroll(x, h, c), cunroll(x, h, c)
    assert_close(lc, le, "loss", atol=1e-6, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(lc, (x, h, c, *cell.parameters())),
                    torch.autograd.grad(le, (x, h, c, *cell.parameters()))):
        assert_close(a, b, "grad", atol=1e-6, rtol=1e-6)


def test_compile_inductor_matches_eager(device):
    """Default backend (inductor), forward and backward.

    Inductor checks the real kernels' output strides against the fake kernels'
    (batch_first makes the op inputs non-contiguous).  The FX-graph and
    AOTAutograd caches are off: their keys do not cover the Python fake
    kernels, so a cached graph could outlive a change to them."""
    torch.manual_seed(0)
    model = TinyLM(lstm_ext.LSTM, bidirectional=False).to(device)
    tokens = torch.randint(0, VOCAB, (2, 6), device=device)
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        cmodel = torch.compile(copy.deepcopy(model), fullgraph=True)
        compiled = _loss_and_grads(cmodel, tokens)
    _assert_same(_loss_and_grads(model, tokens), compiled)


# --- single-state layers (RNN, GRU) and the GRU's cell and op -------------------------------

class TinyTagger(nn.Module):
    """embedding -> a 2-layer bidirectional single-state layer (RNN, GRU) -> linear."""

    def __init__(self, layer_cls, **kwargs):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, EMB)
        self.rnn = layer_cls(EMB, HID, num_layers=2, batch_first=True, bidirectional=True, **kwargs)
        self.head = nn.Linear(2 * HID, VOCAB)

    def forward(self, tokens, hx=None):
        out, h = self.rnn(self.emb(tokens), hx)
        return self.head(out), h


def _tagger_loss_and_grads(model, tokens, hx=None):
    logits, h = model(tokens, hx)
    loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens.reshape(-1)) + 0.1 * h.pow(2).sum()
    extra = [hx] if hx is not None else []
    grads = torch.autograd.grad(loss, list(model.parameters()) + extra)
    names = [n.replace("_orig_mod.", "") for n, _ in model.named_parameters()] + ["hx"] * len(extra)
    return logits.detach(), h.detach(), loss.detach(), dict(zip(names, grads))


def _assert_tagger_same(eager, compiled, atol_grad=1e-5):
    for name, a, b in zip(("logits", "h_n", "loss"), eager[:3], compiled[:3]):
        assert_close(b, a, name, atol=1e-5, rtol=1e-5)
    assert eager[3].keys() == compiled[3].keys()
    for k in eager[3]:
        assert_close(compiled[3][k], eager[3][k], f"grad {k}", atol=atol_grad, rtol=1e-4)


@pytest.mark.parametrize("kind", [GRU], ids=["gru"])
def test_compile_single_state_layer_traces_its_ops(device, kind):
    """torch.compile(fullgraph=True, dynamic=True) of a model holding a GRU (the
    test takes any single-state kind of tests/cells.py; the RNN's would add a
    compile's time): one dynamic graph for several batch sizes and lengths, whose forward
    calls the kind's forward op and whose backward calls its backward op; the
    compiled model computes what the eager model and torch.nn's compute."""
    backend, graphs = _capturing_backend()
    torch.manual_seed(0)
    ref = TinyTagger(kind.torch_layer, **kind.kwargs).to(device)
    model = TinyTagger(kind.ext_layer, **kind.kwargs).to(device)
    model.load_state_dict(ref.state_dict(), strict=True)
    cmodel = torch.compile(copy.deepcopy(model), backend=backend, fullgraph=True, dynamic=True)
    for B, T in ((2, 5), (3, 8), (4, 3)):
        tokens = torch.randint(0, VOCAB, (B, T), device=device)
        hx = leaf(torch.randn(4, B, HID, device=device))
        eager = _tagger_loss_and_grads(model, tokens, hx)
        _assert_tagger_same(eager, _tagger_loss_and_grads(cmodel, tokens, hx))
        _assert_tagger_same(_tagger_loss_and_grads(ref, tokens, hx), eager, atol_grad=1e-4)
    op = "gru" if kind.name == "gru" else "rnn"
    fw, bw = _targets(graphs["fw"]), _targets(graphs["bw"])
    assert any(f"lstm_ext.{op}_forward" in t for t in fw), fw
    assert any(f"lstm_ext.{op}_backward" in t for t in bw), bw
    assert len(graphs["fw"]) == 1, "the dynamic graph was recompiled"


def test_compile_gru_cell(device):
    torch.manual_seed(0)
    cell = lstm_ext.GRUCell(4, 5).to(device)

    def unroll(x, h):
        for t in range(x.shape[0]):
            h = cell(x[t], h)
        return h.pow(2).sum()

    cunroll = torch.compile(unroll, backend="aot_eager", fullgraph=True)
    x, h = leaf(torch.randn(3, 2, 4, device=device)), leaf(torch.randn(2, 5, device=device))
    le, lc = unroll(x, h), cunroll(x, h)
    assert_close(lc, le, "loss", atol=1e-6, rtol=1e-6)
    for a, b in zip(torch.autograd.grad(lc, (x, h, *cell.parameters())),
                    torch.autograd.grad(le, (x, h, *cell.parameters())), strict=True):
        assert_close(a, b, "grad", atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_compile_gru_layer_op(device, packed):
    """lstm_ext.gru_ops.gru_layer in both directions under fullgraph compile
    (packed: batch_sizes a CPU tensor, as in PackedSequence)."""
    from lstm_ext.gru_ops import gru_layer
    T, B, I, H = 5, 3, 3, 4
    batch_sizes = torch.tensor([3, 3, 2, 1, 1]) if packed else None
    x_shape = (int(batch_sizes.sum()), I) if packed else (T, B, I)
    args = [leaf(torch.randn(*s, device=device)) for s in
            (x_shape, (3 * H, I), (3 * H, H), (3 * H,), (3 * H,), (B, H))]

    def f(x, w_ih, w_hh, b_ih, b_hh, h0):
        y, h = gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, batch_sizes=batch_sizes)
        yr, hr = gru_layer(y, w_hh, w_hh, None, b_hh, h, reverse=True, batch_sizes=batch_sizes)  # I = H
        return y.sin().sum() + h.sum() * 2 + yr.pow(2).sum() + hr.sum()

    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    le = f(*args)
    ge = torch.autograd.grad(le, args)
    lc = cf(*args)
    gc = torch.autograd.grad(lc, args)
    assert_close(lc, le, "loss", atol=1e-6, rtol=1e-6)
    for i, (a, b) in enumerate(zip(gc, ge)):
        assert_close(a, b, f"grad {i}", atol=1e-6, rtol=1e-6)

