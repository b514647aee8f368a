"""bfloat16 on the CPU: lstm_ext modules as drop-ins for torch.nn's in bfloat16.

The kernels compute a bfloat16 call in float32 (float32 cell state, float32
accumulation) and return bfloat16. Tolerances are not absolute: each case
measures torch.nn's own bfloat16 error against a float32 reference (the same
bfloat16 weights, inputs and cotangents, upcast) and requires ours to be at
most twice that, plus a small floor:

    max|ours - ref| <= 2 * max|torch.nn bf16 - ref| + 2**-10 * max|ref|

for the outputs and for every gradient (input, initial states, parameters).
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from helpers import assert_message, leaf, module_pair

BF16 = torch.bfloat16
OPS = torch.ops.lstm_ext
FACTOR = 2.0
FLOOR = 2.0 ** -10  # times max|ref|: half a bfloat16 rounding (or less) of the largest value


# --- helpers ---------------------------------------------------------------------------

def _bf16(*shape, scale=1.0):
    return (scale * torch.randn(*shape)).to(BF16)


def _upcast_copy(module):
    """A float32 copy of ``module`` holding its (bfloat16) weights, upcast: the
    float32 reference."""
    return copy.deepcopy(module).float()


def _run(module, x, hx, cots):
    """Outputs and gradients of sum_k <cots[k], outputs[k]> w.r.t. the input, the
    initial states and every parameter, all as float32 tensors for comparison.

    ``x``, ``hx`` and ``cots`` are bfloat16 and are upcast when the module is
    float32 (the reference sees exactly the values the bfloat16 runs see)."""
    dtype = next(module.parameters()).dtype
    packed = isinstance(x, nn.utils.rnn.PackedSequence)
    data = leaf(x.data.to(dtype))
    inp = nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if packed else data
    states = None if hx is None else tuple(leaf(h.to(dtype)) for h in hx)
    if states is None:
        out = module(inp)
    else:
        out = module(inp, states[0] if len(states) == 1 else states)
    out_y, rest = out[0], out[1]
    outs = {"y": out_y.data if packed else out_y}
    if isinstance(rest, tuple):
        outs["h_n"], outs["c_n"] = rest
    else:
        outs["h_n"] = rest
    for name, o in outs.items():
        assert o.dtype == dtype, (name, o.dtype)
    wrt = {"x": data, **{f"hx{i}": s for i, s in enumerate(states or ())}, **dict(module.named_parameters())}
    grads = torch.autograd.grad(list(outs.values()), list(wrt.values()),
                                [c.to(dtype) for c in cots[:len(outs)]])
    result = {k: v.detach().float() for k, v in outs.items()}
    for name, g in zip(wrt, grads):
        assert g is not None and g.dtype == dtype, (name, None if g is None else g.dtype)
        result["grad " + name] = g.float()
    return result


def _cotangents(outs_like):
    return [_bf16(*o.shape) for o in outs_like]


def assert_as_close_as_torch(ref_cls, ext_cls, x, hx=None, **kwargs):
    """Build torch.nn's and lstm_ext's module in bfloat16 with the same weights,
    run both and a float32 reference, and compare errors as the module
    docstring says. Returns the errors, for inspection."""
    torch_bf16, ours = module_pair(ref_cls, ext_cls, dtype=BF16, **kwargs)
    reference = _upcast_copy(torch_bf16)
    # cotangents: bfloat16 values shaped like the outputs (from a dry run)
    with torch.no_grad():
        probe = ours(x) if hx is None else ours(x, hx if len(hx) > 1 else hx[0])
    y = probe[0].data if isinstance(probe[0], nn.utils.rnn.PackedSequence) else probe[0]
    finals = probe[1] if isinstance(probe[1], tuple) else (probe[1],)
    cots = _cotangents([y, *finals])

    ref = _run(reference, x, hx, cots)
    got_torch = _run(torch_bf16, x, hx, cots)
    got_ours = _run(ours, x, hx, cots)
    errors = {}
    for k, r in ref.items():
        err_torch = (got_torch[k] - r).abs().max().item()
        err_ours = (got_ours[k] - r).abs().max().item()
        bound = FACTOR * err_torch + FLOOR * r.abs().max().item()
        errors[k] = (err_torch, err_ours)
        assert err_ours <= bound, (
            f"{k}: max|ours - fp32 ref| = {err_ours:.3e} > {FACTOR} * {err_torch:.3e} "
            f"(torch.nn bf16's error) + floor = {bound:.3e}"
        )
    return errors


# --- LSTM against torch.nn.LSTM ----------------------------------------------------------

T, B, I, H = 12, 3, 16, 16


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["1layer", "2layer-bidir"])
def test_lstm_matches_torch_bf16_error(layers, bidirectional):
    D = 2 if bidirectional else 1
    x = _bf16(T, B, I)
    hx = (_bf16(layers * D, B, H, scale=0.5), _bf16(layers * D, B, H, scale=0.5))
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, x, hx, input_size=I, hidden_size=H,
                             num_layers=layers, bidirectional=bidirectional)


def test_lstm_representative_shape():
    """T50 B8 I64 H64, one layer, no hx (zeros)."""
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _bf16(50, 8, 64), input_size=64, hidden_size=64)


def test_lstm_batch_first_projection():
    P = 8
    x = _bf16(B, T, I)
    hx = (_bf16(2, B, P, scale=0.5), _bf16(2, B, H, scale=0.5))
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, x, hx, input_size=I, hidden_size=H, num_layers=2,
                             batch_first=True, proj_size=P)


def test_lstm_packed_unsorted_bidirectional():
    lengths = torch.tensor([5, 12, 3, 9])
    x = pack_padded_sequence(_bf16(T, 4, I), lengths, enforce_sorted=False)
    hx = (_bf16(2, 4, H, scale=0.5), _bf16(2, 4, H, scale=0.5))
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, x, hx, input_size=I, hidden_size=H, bidirectional=True)


def test_lstm_cell():
    x = _bf16(B, I)
    hx = (_bf16(B, H, scale=0.5), _bf16(B, H, scale=0.5))
    torch_cell, ours = module_pair(nn.LSTMCell, lstm_ext.LSTMCell, I, H, dtype=BF16)
    h1, c1 = ours(x, hx)
    assert h1.dtype == c1.dtype == BF16
    ref = _upcast_copy(torch_cell)(x.float(), tuple(h.float() for h in hx))
    exp = torch_cell(x, hx)
    for got, want, r in zip((h1, c1), exp, ref):
        err_torch = (want.float() - r).abs().max().item()
        assert (got.float() - r).abs().max().item() <= FACTOR * err_torch + FLOOR * r.abs().max().item()


# --- RNN against torch.nn.RNN -------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_matches_torch_bf16_error(nonlinearity):
    x = _bf16(T, B, I)
    hx = (_bf16(4, B, H, scale=0.5),)
    assert_as_close_as_torch(nn.RNN, lstm_ext.RNN, x, hx, input_size=I, hidden_size=H, num_layers=2,
                             bidirectional=True, nonlinearity=nonlinearity)


def test_rnn_packed():
    lengths = torch.tensor([12, 7, 7, 2])
    x = pack_padded_sequence(_bf16(T, 4, I), lengths)
    assert_as_close_as_torch(nn.RNN, lstm_ext.RNN, x, input_size=I, hidden_size=H)


def test_rnn_cell():
    torch_cell, ours = module_pair(nn.RNNCell, lstm_ext.RNNCell, I, H, dtype=BF16)
    x, h = _bf16(B, I), _bf16(B, H, scale=0.5)
    got = ours(x, h)
    assert got.dtype == BF16
    ref = _upcast_copy(torch_cell)(x.float(), h.float())
    err_torch = (torch_cell(x, h).float() - ref).abs().max().item()
    assert (got.float() - ref).abs().max().item() <= FACTOR * err_torch + FLOOR * ref.abs().max().item()


# --- every step's states, training, compile -----------------------------------------------

def test_return_all_states_bf16_and_differentiable():
    ours = lstm_ext.LSTM(I, H, num_layers=2, bidirectional=True).to(BF16)
    reference = _upcast_copy(ours)
    x = _bf16(T, B, I)
    xs = leaf(x)
    out, (h_n, c_n), states = ours(xs, return_all_states=True)
    assert all(t.dtype == BF16 for t in (out, h_n, c_n, states.h, states.c))
    _, _, ref_states = reference(x.float(), return_all_states=True)
    for got, ref in ((states.h, ref_states.h), (states.c, ref_states.c)):
        assert got.shape == ref.shape
        # one rounding to bfloat16 of float32-accurate values, up to one ulp
        torch.testing.assert_close(got.float(), ref, atol=2.0 ** -7, rtol=2.0 ** -7)
    # the gradient of the cells flows back (the op keeps them in float32)
    (g,) = torch.autograd.grad(states.c.float().pow(2).sum(), xs)
    xr = leaf(x.float())
    (gr,) = torch.autograd.grad(reference(xr, return_all_states=True)[2].c.pow(2).sum(), xr)
    assert g.dtype == BF16
    torch.testing.assert_close(g.float(), gr, atol=0.05 * gr.abs().max().item(), rtol=0)


def test_training_step_with_optimizer():
    """A few Adam steps of a bfloat16 model: ours tracks a float32 run from the
    same weights at least about as well as torch.nn's bfloat16 model does."""

    def train(module, steps=4):
        dtype = next(module.parameters()).dtype
        head = nn.Linear(H, 1, dtype=dtype)
        with torch.no_grad():
            head.weight.copy_(torch.linspace(-1, 1, H).to(dtype))
            head.bias.zero_()
        opt = torch.optim.Adam(list(module.parameters()) + list(head.parameters()), lr=1e-2)
        gen = torch.Generator().manual_seed(5)
        losses = []
        for _ in range(steps):
            x = torch.randn(T, B, I, generator=gen).to(BF16).to(dtype)
            target = torch.randn(B, 1, generator=gen).to(BF16).to(dtype)
            out, _ = module(x)
            loss = nn.functional.mse_loss(head(out[-1]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, {k: v.detach().float() for k, v in module.state_dict().items()}

    torch_bf16, ours = module_pair(nn.LSTM, lstm_ext.LSTM, I, H, dtype=BF16)
    loss_ref, params_ref = train(_upcast_copy(torch_bf16))
    loss_torch, params_torch = train(torch_bf16)
    loss_ours, params_ours = train(ours)
    assert loss_ours[-1] < loss_ours[0]
    err_torch = max(abs(a - r) for a, r in zip(loss_torch, loss_ref))
    err_ours = max(abs(a - r) for a, r in zip(loss_ours, loss_ref))
    assert err_ours <= FACTOR * err_torch + FLOOR * max(loss_ref), (err_ours, err_torch)
    for k, r in params_ref.items():
        e_t = (params_torch[k] - r).abs().max().item()
        e_o = (params_ours[k] - r).abs().max().item()
        assert e_o <= FACTOR * e_t + FLOOR * r.abs().max().item(), (k, e_o, e_t)


def test_compile_fullgraph_bf16():
    torch._dynamo.reset()
    try:
        ours = lstm_ext.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True, dtype=BF16)
        compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
        x = _bf16(B, T, I)
        results = []
        for fn in (ours, compiled):
            xs = leaf(x)
            out, (h, c) = fn(xs)
            assert out.dtype == h.dtype == c.dtype == BF16
            loss = out.float().pow(2).sum() + h.float().sum() + c.float().sum()
            grads = torch.autograd.grad(loss, [xs, *ours.parameters()])
            results.append((out, h, c, *grads))
        for e, g in zip(*results):
            assert g.dtype == BF16
            torch.testing.assert_close(g, e, atol=0, rtol=0)
    finally:
        torch._dynamo.reset()


# --- double backward ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_double_backward_bf16(kind):
    """create_graph=True takes the composite path, also computed in float32."""
    if kind == "lstm":
        ours = lstm_ext.LSTM(6, 5, proj_size=3, dtype=BF16)
    else:
        ours = lstm_ext.RNN(6, 5, nonlinearity="tanh", dtype=BF16)
    reference = _upcast_copy(ours)
    x = _bf16(4, 2, 6)

    def gradgrad(module, x):
        xs = leaf(x)
        out = module(xs)[0]
        (g,) = torch.autograd.grad(out.float().pow(2).sum(), xs, create_graph=True)
        assert g.dtype == xs.dtype
        (gg,) = torch.autograd.grad(g.float().pow(2).sum(), xs)
        return g, gg

    g, gg = gradgrad(ours, x)
    g_ref, gg_ref = gradgrad(reference, x.float())
    assert gg.dtype == BF16
    for got, ref in ((g, g_ref), (gg, gg_ref)):
        torch.testing.assert_close(got.float(), ref, atol=2.0 ** -6 * ref.abs().max().item(), rtol=2.0 ** -7)


# --- ops: dtypes, opcheck, errors -----------------------------------------------------------

def _lstm_args(T=4, B=2, I=3, H=5, requires_grad=False):
    g = torch.Generator().manual_seed(3)
    make = lambda *s: (0.5 * torch.randn(*s, generator=g)).to(BF16)  # noqa: E731
    args = [make(T, B, I), make(4 * H, I), make(4 * H, H), make(4 * H), make(B, H), make(B, H)]
    return [leaf(a) for a in args] if requires_grad else args


def test_lstm_forward_dtypes():
    """y, h_n, c_n in bfloat16; the activations saved for backward in float32."""
    y, h_n, c_n, gates, cells = OPS.lstm_forward(*_lstm_args(), False, True)
    assert y.dtype == h_n.dtype == c_n.dtype == BF16
    assert gates.dtype == cells.dtype == torch.float32
    _, _, _, gates, cells = OPS.lstm_forward(*_lstm_args(), False, False)
    assert gates.dtype == cells.dtype == torch.float32 and gates.numel() == cells.numel() == 0


@pytest.mark.parametrize("save,reverse", [(True, False), (False, True)], ids=["save-fwd", "nosave-rev"])
def test_opcheck_lstm_forward_bf16(save, reverse):
    torch.library.opcheck(OPS.lstm_forward.default, (*_lstm_args(requires_grad=save), reverse, save))


def test_opcheck_lstm_forward_bf16_packed_projected():
    H, P = 5, 2
    bs = torch.tensor([3, 2, 2, 1])
    g = torch.Generator().manual_seed(4)
    make = lambda *s: leaf((0.5 * torch.randn(*s, generator=g)).to(BF16))  # noqa: E731
    args = (make(8, 3), make(4 * H, 3), make(4 * H, P), make(4 * H), make(3, P), make(3, H))
    torch.library.opcheck(OPS.lstm_forward.default, (*args, True, True, bs, make(P, H)))


@pytest.mark.parametrize("need_grad_x,use_gcells", [(True, True), (False, False)], ids=["gx-cells", "nogx"])
def test_opcheck_lstm_backward_bf16(need_grad_x, use_gcells):
    x, w_ih, w_hh, b, h0, c0 = _lstm_args()
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, True, True)
    gy, ghn, gcn = (torch.randn(t.shape).to(BF16) for t in (y, hn, cn))
    gcells = torch.randn(cells.shape) if use_gcells else None  # float32, like cells
    args = (gy, ghn, gcn, gcells, x, w_ih, w_hh, h0, c0, y, gates, cells, True, need_grad_x)
    torch.library.opcheck(OPS.lstm_backward.default, args)
    grads = OPS.lstm_backward(*args)
    assert all(t.dtype == BF16 for t in grads)


def _rnn_args(requires_grad=False, lengths=None):
    g = torch.Generator().manual_seed(5)
    make = lambda *s: (0.5 * torch.randn(*s, generator=g)).to(BF16)  # noqa: E731
    bs = None
    if lengths is None:
        x = make(4, 2, 3)
    else:
        bs = torch.tensor([sum(1 for n in lengths if n > t) for t in range(max(lengths))])
        x = make(int(bs.sum()), 3)
    args = [x, make(5, 3), make(5, 5), make(5), make(bs[0] if bs is not None else 2, 5)]
    return ([leaf(a) for a in args] if requires_grad else args), bs


@pytest.mark.parametrize("lengths,relu", [(None, False), ([3, 2, 2], True)], ids=["dense-tanh", "packed-relu"])
def test_opcheck_rnn_forward_bf16(lengths, relu):
    args, bs = _rnn_args(requires_grad=True, lengths=lengths)
    torch.library.opcheck(OPS.rnn_forward.default, (*args, False, relu, bs))
    y, h_n = OPS.rnn_forward(*args, False, relu, bs)
    assert y.dtype == h_n.dtype == BF16


def test_opcheck_rnn_backward_bf16():
    (x, w_ih, w_hh, b, h0), _ = _rnn_args()
    y, hn = OPS.rnn_forward(x, w_ih, w_hh, b, h0, True, False)
    gy, ghn = torch.randn(y.shape).to(BF16), torch.randn(hn.shape).to(BF16)
    args = (gy, ghn, x, w_ih, w_hh, h0, y, True, False, True)
    torch.library.opcheck(OPS.rnn_backward.default, args)
    assert all(t.dtype == BF16 for t in OPS.rnn_backward(*args))


def test_backward_rejects_bf16_saved_activations():
    """gates and cells come from the forward in float32; bfloat16 ones are refused
    by the real and the fake kernel alike, with a message naming the dtypes."""
    x, w_ih, w_hh, b, h0, c0 = _lstm_args()
    y, hn, cn, gates, cells = OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, False, True)
    for dev in ("cpu", "meta"):
        a = [t.to(dev) for t in (y, hn, x, w_ih, w_hh, h0, c0, y, gates.to(BF16), cells)]
        with pytest.raises(RuntimeError) as info:
            OPS.lstm_backward(a[0], a[1], None, None, *a[2:], False, True)
        assert_message(info.value, r"\bgates\b", r"float32|\bFloat\b", r"bfloat16|BFloat16")


def test_float16_on_cpu_is_refused_clearly():
    args = [t.to(torch.float16) for t in _lstm_args()]
    with pytest.raises(RuntimeError) as info:
        OPS.lstm_forward(*args, False, False)
    assert_message(info.value, r"\bx\b", r"bfloat16", r"Half", r"not supported on the CPU")
