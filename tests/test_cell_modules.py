"""Module-level tests over the cell kinds (tests/cells.py: LSTM, RNN tanh/relu,
GRU) and the device: lstm_ext's layers and cells as drop-ins for torch.nn's.

Everything is compared with torch.nn given identical weights: outputs, final
states and the gradients of the input, the initial states and every
parameter (parity grid, dropout, unbatched, PackedSequence sorted and
unsorted); every step's hidden state (``return_all_states=True``) against
torch.nn run one layer at a time; streaming in chunks against one call;
state_dict, seeded initialisation, from_torch_nn / to_torch_nn; the cells;
gradcheck and double backward; and bad input, which must raise what torch.nn
raises (the same type or a subclass, with torch.nn's words where torch.nn's
message is the issue's). The LSTM- and RNN-specific behaviour (projections,
cell states, nonlinearity arguments) stays in test_modules.py,
test_rnn_modules.py, test_states.py and test_packed.py.
"""
import contextlib
import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from cells import KIND_PARAMS, KINDS, SINGLE_STATE_PARAMS, module_results
from fuzz_strategies import single_threaded
from helpers import (assert_close, assert_dicts_close, assert_flatten_parameters_harmless, backprop, cudnn_refuses,
                     expect_same_error, float64_cpu_reference, layout, leaf, tols)

F32, F64 = torch.float32, torch.float64
KIND = pytest.mark.parametrize("kind", KIND_PARAMS)


@pytest.fixture
def one_thread():
    """float64 runs torch.nn's and lstm_ext's plain loops, which slow down many
    times with 2 threads on busy cores (fuzz_strategies.single_threaded); the
    threading of the fused kernels is tested in float32 and elsewhere."""
    with single_threaded():
        yield


def check_results(got, exp, dtype, label=""):
    """Compare two module_results: the outputs and every gradient, keys, shapes and values."""
    otol, gtol = tols(dtype)
    assert_dicts_close(got[1], exp[1], otol, f"{label} output")
    assert_dicts_close(got[2], exp[2], gtol, f"{label} grad")


def reference_results(kind, ref, x, hx=None, **kwargs):
    """torch.nn's module_results for the same call, or, where cuDNN refuses it
    (non-contiguous hx, backward in eval mode: helpers.cudnn_refuses), torch.nn's
    on the CPU in float64, brought back to the module's device and dtype."""
    if cudnn_refuses(ref, hx):
        def run(m, x, hx, cot_dtype=None):
            return module_results(kind, m, x, hx, cot_dtype=cot_dtype, **kwargs)[1:]
        return (None, *float64_cpu_reference(run, ref, x, hx))
    return module_results(kind, ref, x, hx, **kwargs)


# =============================================================================== parity grid
# (L, bidirectional, batch_first, bias, hx, H, layout of x and hx, T, I, B): every
# num_layers 1-3, both directions, both layouts, bias False, H not a multiple of 16.
GRID = [
    (1, False, False, True, True, 7, "contig", 5, 3, 2),
    (2, True, True, False, False, 17, "transposed", 4, 1, 3),
    (3, False, True, True, True, 33, "step", 3, 5, 1),
    (2, True, False, True, True, 1, "step", 1, 2, 4),
    (3, True, False, False, True, 5, "transposed", 6, 4, 2),
    (1, True, True, True, False, 16, "contig", 2, 9, 3),
]


def _grid_id(c):
    L, bd, bf, bias, hx, H, lay, T, I, B = c
    return (f"L{L}-{'bi' if bd else 'uni'}-{'bf' if bf else 'sf'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if hx else 'nohx'}-H{H}-{lay}-T{T}-I{I}-B{B}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
@KIND
def test_parity_grid(device, kind, case, dtype):
    L, bidir, bf, bias, use_hx, H, lay, T, I, B = case
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(I, H, L, bias=bias, batch_first=bf, bidirectional=bidir, device=device,
                               dtype=dtype)
    assert ext.mode == ref.mode == kind.mode
    x, hx = kind.module_inputs((B, T, I) if bf else (T, B, I), (L * D, B, H), dtype=dtype, device=device,
                               use_hx=use_hx)
    x = layout(x, lay)
    if hx is not None:
        hx = kind.hx(tuple(layout(s, lay) for s in kind.states_of(hx)))
    with single_threaded() if dtype == F64 else contextlib.nullcontext():
        got = module_results(kind, ext, x, hx)
        exp = reference_results(kind, ref, x, hx)
    assert got[1]["out"].shape == ((B, T, D * H) if bf else (T, B, D * H))
    assert got[1]["h_n"].shape == (L * D, B, H)
    for k, v in got[1].items():
        assert v.dtype == dtype and v.device.type == device, k
    check_results(got, exp, dtype, kind.name)


@pytest.mark.parametrize("L,bidir", [(2, False), (3, True)], ids=["L2-uni", "L3-bi"])
@KIND
def test_dropout_one_matches_torch(device, kind, L, bidir):
    """p=1 zeroes every inter-layer activation: deterministic, so comparable with
    torch.nn in train mode, outputs and gradients; eval mode differs."""
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(3, 4, L, bidirectional=bidir, dropout=1.0, device=device)
    x, hx = kind.module_inputs((5, 2, 3), (L * D, 2, 4), device=device)
    got = module_results(kind, ext.train(), x, hx)
    check_results(got, module_results(kind, ref.train(), x, hx), F32, "dropout=1")
    with torch.no_grad():
        assert not torch.allclose(ext.eval()(x, hx)[0], got[1]["out"])


@KIND
def test_dropout_eval_mode_matches_torch(device, kind):
    """Eval mode: no dropout, and backward works (cuDNN refuses backward in eval
    mode; then the reference is torch.nn on the CPU in float64)."""
    ref, ext = kind.layer_pair(3, 5, 2, bidirectional=True, dropout=0.5, device=device)
    ref.eval()
    ext.eval()
    x, hx = kind.module_inputs((4, 2, 3), (4, 2, 5), device=device)
    check_results(module_results(kind, ext, x, hx), reference_results(kind, ref, x, hx), F32, "eval")


@pytest.mark.parametrize("batch_first,use_hx", [(False, True), (True, False)], ids=["sf-hx", "bf-nohx"])
@KIND
def test_unbatched(device, kind, batch_first, use_hx):
    """2-D input [T, I] and hx [L*D, H] (batch_first does not apply), as torch.nn."""
    L, I, H, T = 2, 3, 5, 6
    ref, ext = kind.layer_pair(I, H, L, bidirectional=True, batch_first=batch_first, device=device)
    x, hx = kind.module_inputs((T, I), (2 * L, H), device=device, use_hx=use_hx)
    got = module_results(kind, ext, x, hx)
    assert got[1]["out"].shape == (T, 2 * H) and got[1]["h_n"].shape == (2 * L, H)
    check_results(got, module_results(kind, ref, x, hx), F32, "unbatched")


# (enforce_sorted, bidirectional, L, hx, batch_first, lengths)
PACKED = [
    (True, False, 1, False, False, [6, 4, 4, 1]),
    (False, True, 2, True, True, [3, 6, 1, 4]),
    (False, False, 3, True, False, [5, 5, 5]),
    (True, True, 1, True, True, [4, 2, 1]),
    (False, True, 2, False, False, [1, 3]),
]


@pytest.mark.parametrize("enforce_sorted,bidir,L,use_hx,bf,lengths", PACKED,
                         ids=[f"{'sorted' if c[0] else 'unsorted'}-{'bi' if c[1] else 'uni'}-L{c[2]}-"
                              f"{'hx' if c[3] else 'nohx'}-{'bf' if c[4] else 'sf'}-len{'_'.join(map(str, c[5]))}"
                              for c in PACKED])
@KIND
def test_packed(device, kind, enforce_sorted, bidir, L, use_hx, bf, lengths):
    """PackedSequence input: the packed output (data, batch_sizes, sorted and
    unsorted indices), h_n in the caller's order, and the gradients of the
    padded input, h0 and every parameter."""
    I, H = 3, 5
    D, B, T = (2 if bidir else 1), len(lengths), max(lengths)
    ref, ext = kind.layer_pair(I, H, L, bidirectional=bidir, batch_first=bf, device=device)
    x, hx = kind.module_inputs((B, T, I) if bf else (T, B, I), (L * D, B, H), device=device, use_hx=use_hx)
    pack = dict(lengths=lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    got = module_results(kind, ext, x, hx, pack=pack)
    exp = module_results(kind, ref, x, hx, pack=pack)
    a, e = got[0][0], exp[0][0]
    assert isinstance(a, PackedSequence)
    assert torch.equal(a.batch_sizes, e.batch_sizes) and a.batch_sizes.device.type == "cpu"
    for name in ("sorted_indices", "unsorted_indices"):
        ai, ei = getattr(a, name), getattr(e, name)
        assert (ai is None) == (ei is None) and (ai is None or torch.equal(ai, ei)), name
    assert got[1]["out"].shape == (sum(lengths), D * H) and got[1]["h_n"].shape == (L * D, B, H)
    check_results(got, exp, F32, "packed")


# =============================================================================== every step's states


def _every_h(kind, res):
    every = res[2]
    return every.h if kind.name == "lstm" else every


@pytest.mark.parametrize("how", ["time_major", "batch_first", "unbatched", "packed"])
@KIND
@pytest.mark.usefixtures("one_thread")
def test_return_all_states_equals_layers_run_one_by_one(device, kind, how):
    """every_h [L*D, *seq, H] holds every h_t of every layer and direction: layer
    l's rows equal a 1-layer bidirectional torch.nn module with layer l's weights
    and hx rows run on layer l-1's output; values and the gradients of a loss on
    every_h (input, initial states, every parameter), float64. The last layer's
    rows are the output and each direction's last step is h_n. The default call
    returns the same output and h_n."""
    L, D, I, H, T, B = 3, 2, 3, 4, 5, 3
    lengths = [5, 2, 4]
    bf = how == "batch_first"
    ext = kind.ext_layer(I, H, L, bidirectional=True, batch_first=bf, device=device, dtype=F64, **kind.kwargs)
    x_shape = {"time_major": (T, B, I), "batch_first": (B, T, I), "unbatched": (T, I), "packed": (T, B, I)}[how]
    state_shape = (L * D, H) if how == "unbatched" else (L * D, B, H)
    x, hx = kind.module_inputs(x_shape, state_shape, dtype=F64, device=device)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False) if how == "packed" else None
    inp = x if packed is None else packed
    out, final, every = ext(inp, hx, return_all_states=True)
    every_h = every.h if kind.name == "lstm" else every
    seq = (out.data if packed is not None else out).shape[:-1]
    assert every_h.shape == (L * D, *seq, H) and every_h.dtype == F64 and every_h.device.type == device

    # the reference: torch.nn one layer at a time, on the previous layer's output
    states = kind.states_of(hx)
    # a packing of its own: the backward through ext's call frees that one's graph
    layer_in = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed is not None else x
    ref_h, singles = [], []
    for layer in range(L):
        in_size = I if layer == 0 else D * H
        single = kind.torch_layer(in_size, H, 1, bidirectional=True, batch_first=bf, device=device, dtype=F64,
                                  **kind.kwargs)
        single.load_state_dict({k.replace(f"_l{layer}", "_l0"): v for k, v in ext.state_dict().items()
                                if f"_l{layer}" in k}, strict=True)
        singles.append(single)
        rows = kind.hx(tuple(s[layer * D:(layer + 1) * D] for s in states))
        s_out, _ = single(layer_in, rows)
        data = s_out.data if packed is not None else s_out
        ref_h += [data[..., :H], data[..., H:]]
        layer_in = s_out
    ref_h = torch.stack(ref_h)
    otol, gtol = tols(F64)
    assert_close(every_h, ref_h, "every_h", **otol)

    # relations: the last layer's rows are the output; each direction's last step is h_n
    out_data = out.data if packed is not None else out
    assert torch.equal(torch.cat([every_h[-2], every_h[-1]], -1), out_data)
    h_n = kind.states_of(final)[0]
    if packed is None:
        tdim = 1 if bf else 0
        for k in range(L * D):
            assert torch.equal(every_h[k].select(tdim, 0 if k % 2 else -1), h_n[k]), k

    # gradients of a loss on every_h only
    cot = torch.randn(every_h.shape, dtype=F64, device=device)
    wrt_ext = {"input": x, **dict(zip(("h0", "c0"), states)), **dict(ext.named_parameters())}
    got = dict(zip(wrt_ext, torch.autograd.grad(every_h, list(wrt_ext.values()), cot, allow_unused=True)))
    ref_params = {}
    for layer, single in enumerate(singles):
        for n, p in single.named_parameters():
            ref_params[n.replace("_l0", f"_l{layer}")] = p
    wrt_ref = {"input": x, **dict(zip(("h0", "c0"), states)), **{n: ref_params[n] for n, _ in ext.named_parameters()}}
    exp = dict(zip(wrt_ref, torch.autograd.grad(ref_h, list(wrt_ref.values()), cot)))
    for k, g in got.items():
        assert g is not None, f"no gradient reached {k}"
    assert_dicts_close(got, exp, gtol, "grad through every_h")

    # the default call gives the same output and final states
    out2, final2 = ext(inp, hx)
    assert torch.equal((out2.data if packed is not None else out2), out_data)
    for a, b in zip(kind.states_of(final2), kind.states_of(final)):
        assert torch.equal(a, b)


@KIND
def test_return_all_states_under_no_grad_matches_grad_mode(device, kind):
    ext = kind.ext_layer(3, 4, 2, bidirectional=True, device=device, **kind.kwargs)
    x = torch.randn(5, 2, 3, device=device)
    grad_res = ext(x, return_all_states=True)
    with torch.no_grad():
        ng_res = ext(x, return_all_states=True)
    with torch.inference_mode():
        inf_res = ext(x, return_all_states=True)

    def flat(r):
        return [r[0], *kind.states_of(r[1]), _every_h(kind, r)]

    for a, b, c in zip(flat(grad_res), flat(ng_res), flat(inf_res), strict=True):
        assert a.requires_grad and not b.requires_grad and not c.requires_grad
        assert torch.equal(a.detach(), b) and torch.equal(a.detach(), c)


# =============================================================================== streaming


def _chunked(m, x, hx, chunks, time_dim, kind):
    outs, state, start = [], hx, 0
    for n in chunks:
        piece = x.narrow(time_dim, start, n)
        out, state = m(piece) if state is None else m(piece, state)
        outs.append(out)
        start += n
    return torch.cat(outs, time_dim), kind.states_of(state)


@pytest.mark.parametrize("bf,use_hx,chunks", [(False, True, [7, 1, 4]), (True, False, [1, 11])],
                         ids=["sf-hx-7_1_4", "bf-nohx-1_11"])
@KIND
@pytest.mark.usefixtures("one_thread")
def test_streaming_with_carried_state_equals_one_call(device, kind, bf, use_hx, chunks):
    """A sequence run in chunks, the state carried (not detached) from one chunk to
    the next, equals one call (lstm_ext's and torch.nn's): outputs, final states
    and the gradients of a loss over all chunks, float64."""
    T, B, I, H, L = sum(chunks), 2, 3, 5, 2
    ref, ext = kind.layer_pair(I, H, L, batch_first=bf, device=device, dtype=F64)
    x, hx = kind.module_inputs((B, T, I) if bf else (T, B, I), (L, B, H), dtype=F64, device=device,
                               use_hx=use_hx)
    wrt = {"input": x, **(dict(zip(("h0", "c0"), kind.states_of(hx))) if use_hx else {})}
    results = []
    for m, split in ((ext, True), (ext, False), (ref, False)):
        if split:
            out, finals = _chunked(m, x, hx, chunks, 1 if bf else 0, kind)
        else:
            out, state = m(x) if hx is None else m(x, hx)
            finals = kind.states_of(state)
        outs = {"out": out, **{f"state{i}": f for i, f in enumerate(finals)}}
        grads = backprop(outs, {**wrt, **dict(m.named_parameters())}, seed=5)
        results.append(({k: v.detach() for k, v in outs.items()}, grads))
    (c_o, c_g), (w_o, w_g), (r_o, r_g) = results
    otol, gtol = tols(F64)
    assert_dicts_close(c_o, w_o, otol, "chunked vs whole")
    assert_dicts_close(c_o, r_o, otol, "chunked vs torch.nn")
    assert_dicts_close(c_g, w_g, gtol, "grad chunked vs whole")
    assert_dicts_close(c_g, r_g, gtol, "grad chunked vs torch.nn")
    # the carried state matters: the first step's input reaches the last chunk's loss
    assert c_g["input"].narrow(1 if bf else 0, 0, 1).abs().sum() > 0


# =============================================================================== module API

API_CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(input_size=4, hidden_size=3, num_layers=3, bidirectional=True),
    dict(input_size=2, hidden_size=6, num_layers=2, bias=False, batch_first=True, dropout=0.25),
]
API_IDS = ["default", "L3-bi", "L2-nobias-bf-dropout"]


@pytest.mark.parametrize("dtype", [None, F64], ids=["default-dtype", "f64"])
@pytest.mark.parametrize("cfg", API_CONFIGS, ids=API_IDS)
@KIND
def test_seeded_init_state_dict_and_attributes_identical(kind, cfg, dtype):
    """Same seed, same parameters (names, order, shapes, dtypes, values) and the
    same amount of RNG consumed; state_dict loads both ways with strict=True and
    the loaded modules compute alike; attributes and repr as torch.nn's."""
    torch.manual_seed(1234)
    ref = kind.torch_layer(**cfg, dtype=dtype, **kind.kwargs)
    after_ref = torch.rand(3)
    torch.manual_seed(1234)
    ext = kind.ext_layer(**cfg, dtype=dtype, **kind.kwargs)
    after_ext = torch.rand(3)
    assert torch.equal(after_ref, after_ext), "the constructors consumed different amounts of RNG"
    assert list(ext.state_dict()) == list(ref.state_dict())
    for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
        assert n == m and p.shape == q.shape and p.dtype == q.dtype and torch.equal(p, q), n
    assert list(dict(ext.named_buffers())) == list(dict(ref.named_buffers()))
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "mode", *kind.kwargs):
        assert getattr(ext, attr) == getattr(ref, attr), attr
    assert repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    assert isinstance(ext, nn.Module)
    # all_weights: the same structure, lstm_ext's own parameters
    assert len(ext.all_weights) == len(ref.all_weights)
    for names, rl, el in zip(ref._all_weights, ref.all_weights, ext.all_weights, strict=True):
        for name, r, e in zip(names, rl, el, strict=True):
            assert e is getattr(ext, name) and isinstance(e, nn.Parameter) and e.shape == r.shape, name
    # strict loads both ways; the loaded modules compute what the sources compute
    ext2, ref2 = kind.ext_layer(**cfg, dtype=dtype, **kind.kwargs), kind.torch_layer(**cfg, dtype=dtype, **kind.kwargs)
    ref2.load_state_dict(ext2.state_dict(), strict=True)
    ext.load_state_dict(ref2.state_dict(), strict=True)
    ref2.eval()
    ext.eval()
    ext2.eval()
    x = torch.randn(4, 2, cfg["input_size"], dtype=dtype)
    otol = tols(dtype or F32)[0]
    with torch.no_grad():
        assert_close(ext2(x)[0], ref2(x)[0], "ext -> torch.nn", **otol)
        assert_close(ext(x)[0], ref2(x)[0], "torch.nn -> ext", **otol)


@KIND
def test_load_state_dict_mismatch_is_strict(kind):
    ext = kind.ext_layer(3, 4, 2, **kind.kwargs)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(kind.torch_layer(3, 4, 1, **kind.kwargs).state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        ext.load_state_dict(kind.torch_layer(3, 5, 2, **kind.kwargs).state_dict(), strict=True)
    other = next(k for k in KINDS.values() if k.gates != kind.gates)
    with pytest.raises(RuntimeError):  # another cell's weights (another number of gates)
        ext.load_state_dict(other.torch_layer(3, 4, 2, **other.kwargs).state_dict(), strict=True)


@KIND
def test_flatten_parameters_is_harmless(device, kind):
    _, ext = kind.layer_pair(3, 4, 2, bidirectional=True, device=device)
    assert_flatten_parameters_harmless(ext, torch.randn(5, 2, 3, device=device))


@KIND
def test_double_and_float_conversions(device, kind):
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=True, device=device)
    ref, ext = ref.double(), ext.double()
    assert all(p.dtype == F64 for p in ext.parameters())
    x, _ = kind.module_inputs((5, 2, 3), (4, 2, 4), dtype=F64, device=device, use_hx=False)
    check_results(module_results(kind, ext, x), module_results(kind, ref, x), F64, "double")
    ref, ext = ref.float(), ext.to(F32)
    x32 = leaf(x.detach().float())
    check_results(module_results(kind, ext, x32), module_results(kind, ref, x32), F32, "float")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_from_and_to_torch_nn_round_trip(training):
    """from_torch_nn swaps every torch.nn GRU and GRUCell (with the other kinds)
    for lstm_ext's, keeping parameters, device, dtype and mode; to_torch_nn
    swaps back, and the state_dict is unchanged throughout."""
    I, H = 4, 6
    model = nn.ModuleDict({"gru": nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True, bias=False),
                           "gru_cell": nn.GRUCell(I, H), "gru64": nn.GRU(I, H, dtype=F64),
                           "rnn": nn.RNN(I, H, nonlinearity="relu"), "lstm_cell": nn.LSTMCell(I, H)})
    model.train(training)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 5, I)

    def outputs(m):
        return (m["gru"](x)[0], m["gru"](x)[1], m["gru_cell"](x[:, 0]), m["gru64"](x.double())[1],
                m["rnn"](x)[0], m["lstm_cell"](x[:, 0])[1])

    with torch.no_grad():
        expected = outputs(model)
    assert lstm_ext.from_torch_nn(model) is model
    assert [type(model[k]) for k in model] == [lstm_ext.GRU, lstm_ext.GRUCell, lstm_ext.GRU, lstm_ext.RNN,
                                               lstm_ext.LSTMCell]
    g = model["gru"]
    assert (g.num_layers, g.bidirectional, g.batch_first, g.bias) == (2, True, True, False)
    assert model["gru64"].weight_ih_l0.dtype == F64
    assert all(m.training == training for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    with torch.no_grad():
        for got, want in zip(outputs(model), expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    lstm_ext.to_torch_nn(model)
    assert [type(model[k]) for k in model] == [nn.GRU, nn.GRUCell, nn.GRU, nn.RNN, nn.LSTMCell]
    assert all(m.training == training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("cls", ["GRU", "GRUCell"])
def test_from_torch_nn_on_a_bare_module_returns_the_twin(cls):
    theirs = getattr(nn, cls)(3, 4)
    ours = lstm_ext.from_torch_nn(theirs)
    assert type(ours) is getattr(lstm_ext, cls)
    x = torch.randn(2, 3)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    torch.testing.assert_close(a[0] if isinstance(a, tuple) else a, b[0] if isinstance(b, tuple) else b,
                               atol=1e-6, rtol=1e-5)
    back = lstm_ext.to_torch_nn(ours)
    assert type(back) is getattr(nn, cls)


# =============================================================================== cells

CELL_GRID = [
    # (batched, hx, bias, dtype)
    (True, True, True, F32),
    (True, False, False, F32),
    (False, True, False, F32),
    (False, False, True, F64),
    (True, True, False, F64),
]


@pytest.mark.parametrize("batched,use_hx,bias,dtype", CELL_GRID,
                         ids=[f"{'batched' if b else 'unbatched'}-{'hx' if h else 'nohx'}-"
                              f"{'bias' if bi else 'nobias'}-{str(d)[6:]}" for b, h, bi, d in CELL_GRID])
@KIND
def test_cell_parity(device, kind, batched, use_hx, bias, dtype):
    I, H, B = 5, 7, 3
    ref, ext = kind.cell_pair(I, H, bias=bias, device=device, dtype=dtype)
    x, hx = kind.module_inputs((B, I) if batched else (I,), (B, H) if batched else (H,), dtype=dtype,
                               device=device, use_hx=use_hx)
    got = module_results(kind, ext, x, hx)
    exp = module_results(kind, ref, x, hx)
    assert got[1]["h"].shape == ((B, H) if batched else (H,)) and got[1]["h"].dtype == dtype
    check_results(got, exp, dtype, kind.cell_name)


@KIND
def test_cell_seeded_init_and_state_dict(kind):
    for bias in (True, False):
        torch.manual_seed(5)
        ref = kind.torch_cell(4, 6, bias=bias, **kind.kwargs)
        after_ref = torch.rand(2)
        torch.manual_seed(5)
        ext = kind.ext_cell(4, 6, bias=bias, **kind.kwargs)
        assert torch.equal(torch.rand(2), after_ref)
        assert list(ext.state_dict()) == list(ref.state_dict())
        for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
            assert n == m and p.shape == q.shape and torch.equal(p, q), n
        ext.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(ext.state_dict(), strict=True)
        for attr in ("input_size", "hidden_size", "bias", *kind.kwargs):
            assert getattr(ext, attr) == getattr(ref, attr), attr
        assert repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]


@KIND
def test_cell_zero_batch(device, kind):
    ref, ext = kind.cell_pair(3, 4, device=device)
    x, hx = kind.module_inputs((0, 3), (0, 4), device=device)
    got = module_results(kind, ext, x, hx)
    assert got[1]["h"].shape == (0, 4)
    check_results(got, module_results(kind, ref, x, hx), F32, "cell B=0")


@KIND
@pytest.mark.usefixtures("one_thread")
def test_cell_unrolled_equals_one_layer_module(device, kind):
    """Unrolling the cell over time equals a 1-layer module with the same weights."""
    cell = kind.ext_cell(3, 5, device=device, dtype=F64, **kind.kwargs)
    layer = kind.ext_layer(3, 5, device=device, dtype=F64, **kind.kwargs)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()}, strict=True)
    x = torch.randn(6, 2, 3, device=device, dtype=F64)
    states = tuple(torch.randn(2, 5, device=device, dtype=F64) for _ in range(kind.num_states))
    hx, outs = kind.hx(states), []
    for t in range(6):
        hx = cell(x[t], hx)
        outs.append(kind.states_of(hx)[0])
    out, final = layer(x, kind.hx(tuple(s.unsqueeze(0) for s in states)))
    otol = tols(F64)[0]
    assert_close(torch.stack(outs), out, "outputs", **otol)
    for i, (a, b) in enumerate(zip(kind.states_of(hx), kind.states_of(final), strict=True)):
        assert_close(a, b[0], f"final state {i}", **otol)


# =============================================================================== gradcheck, double backward


@pytest.mark.parametrize("how", ["dense-all-states", "packed-unsorted"])
@KIND
@pytest.mark.usefixtures("one_thread")
def test_gradcheck_module(device, kind, how):
    """float64 gradcheck of a 2-layer bidirectional module w.r.t. the input, the
    initial states and every parameter (dense: also through every_h)."""
    m = kind.ext_layer(2, 2, 2, bidirectional=True, device=device, dtype=F64, **kind.kwargs)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x, hx = kind.module_inputs((3, 2, 2), (4, 2, 2), dtype=F64, device=device)
    states = kind.states_of(hx)

    def f(x, *rest):
        st, ps = rest[:kind.num_states], rest[kind.num_states:]
        if how == "packed-unsorted":
            inp = pack_padded_sequence(x, [2, 3], enforce_sorted=False)
            out, final = torch.func.functional_call(m, dict(zip(names, ps)), (inp, kind.hx(st)))
            return out.data, *kind.states_of(final)
        out, final, every = torch.func.functional_call(m, dict(zip(names, ps)), (x, kind.hx(st)),
                                                       {"return_all_states": True})
        return out, *kind.states_of(final), every.h if kind.name == "lstm" else every

    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@KIND
@pytest.mark.usefixtures("one_thread")
def test_double_backward_matches_torch_nn(device, kind, bidirectional):
    """Second-order gradients (a gradient penalty) equal torch.nn's on the CPU
    (cuDNN cannot do double backward, so the reference always runs there)."""
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=bidirectional, dtype=F64)
    ext = ext.to(device)
    x = torch.randn(5, 2, 3, dtype=F64)
    results = []
    for m, dev in ((ref, "cpu"), (ext, device)):
        xx = leaf(x.to(dev))
        out, final = m(xx)
        (g,) = torch.autograd.grad(out.pow(2).sum() + kind.states_of(final)[-1].sum(), xx, create_graph=True)
        penalty = g.pow(2).sum()
        results.append([t.cpu() for t in torch.autograd.grad(penalty, [xx, m.weight_hh_l0, m.bias_ih_l1])])
    for name, e, r in zip(("x", "weight_hh_l0", "bias_ih_l1"), results[1], results[0]):
        assert_close(e, r, f"d penalty / d {name}", **tols(F64)[1])


@pytest.mark.usefixtures("one_thread")
def test_gradgradcheck_gru_module(device):
    """gradgradcheck through the module (the composite op), packed, bidirectional."""
    m = lstm_ext.GRU(2, 2, bidirectional=True, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    x = leaf(torch.randn(3, 2, 2, dtype=F64, device=device))
    h0 = leaf(torch.randn(2, 2, 2, dtype=F64, device=device))

    def f(x, h0, *ps):
        inp = pack_padded_sequence(x, [3, 2])
        out, h_n = torch.func.functional_call(m, dict(zip(names, ps)), (inp, h0))
        return out.data, h_n

    assert torch.autograd.gradgradcheck(f, (x, h0, *[leaf(p) for p in m.parameters()]))


@pytest.mark.usefixtures("one_thread")
def test_gru_cell_gradcheck(device):
    cell = lstm_ext.GRUCell(3, 2, device=device, dtype=F64)
    names = [n for n, _ in cell.named_parameters()]
    x, h = leaf(torch.randn(2, 3, dtype=F64, device=device)), leaf(torch.randn(2, 2, dtype=F64, device=device))

    def f(x, h, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps)), (x, h))

    args = (x, h, *[leaf(p) for p in cell.parameters()])
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(f, args)


# =============================================================================== errors
# lstm_ext raises torch.nn's exception type (or a subclass) before any kernel runs
# (helpers.expect_same_error); where the issue names torch.nn's message, with
# torch.nn's words: the message torch.nn gives for that very input, read off it.


def expect_torch_nn_words(ref_call, ext_call, *patterns):
    """As expect_same_error, and lstm_ext's message contains torch.nn's."""
    with pytest.raises(Exception) as ref_info:
        ref_call()
    exc = expect_same_error(ref_call, ext_call, *patterns)
    assert str(ref_info.value) in str(exc), f"torch.nn says {str(ref_info.value)!r}, lstm_ext {str(exc)!r}"
    return exc


_DTYPE_WORDS = re.compile(r"input dtype .* does not match weight dtype")


@pytest.mark.parametrize("how", ["f64-dense", "i64-dense", "f64-unbatched", "f64-packed", "f32-into-f64"])
@KIND
def test_input_dtype_differs_from_weights(kind, how):
    """torch.nn's type, and where torch.nn says "RNN input dtype (...) does not
    match weight dtype (...)", those words (torch 2.13 says them for the GRU and
    the RNN in every case, for the LSTM for tensor input)."""
    mdtype = F64 if how == "f32-into-f64" else F32
    ref, ext = kind.layer_pair(3, 4, 2, dtype=mdtype)
    xdtype = {"f64": F64, "i64": torch.int64, "f32": F32}[how[:3]]
    x = torch.randn(5, 2, 3).to(xdtype)
    if how.endswith("unbatched"):
        x = x[:, 0]
    if how.endswith("packed"):
        x = pack_padded_sequence(x, [5, 3])
    with pytest.raises(Exception) as ref_info:
        ref(x)
    if _DTYPE_WORDS.search(str(ref_info.value)):
        expect_torch_nn_words(lambda: ref(x), lambda: ext(x))
    else:
        expect_same_error(lambda: ref(x), lambda: ext(x))
    if kind.name != "lstm":
        assert str(ref_info.value).startswith("RNN input dtype"), "torch.nn's words changed: update the test"


@KIND
def test_cell_input_dtype_differs_from_weights(kind):
    ref, ext = kind.cell_pair(3, 4)
    x = torch.randn(2, 3, dtype=F64)
    expect_same_error(lambda: ref(x), lambda: ext(x))


@pytest.mark.parametrize("rank", [0, 3, 4])
@pytest.mark.parametrize("batched", [True, False], ids=["2d-input", "1d-input"])
@KIND
def test_cell_hidden_state_of_wrong_rank(kind, rank, batched):
    """torch.nn: ValueError "GRUCell: Expected hidden to be 1D or 2D, got 4D
    instead" (RNNCell alike; LSTMCell: "Expected hx[0] to be ..."); the same
    words from lstm_ext."""
    ref, ext = kind.cell_pair(3, 4)
    x = torch.randn(2, 3) if batched else torch.randn(3)
    h = torch.zeros((1, 1, 2, 4)[4 - rank:]) if rank else torch.tensor(0.5)
    hx = kind.hx((h,) * kind.num_states)
    exc = expect_torch_nn_words(lambda: ref(x, hx), lambda: ext(x, hx))
    assert isinstance(exc, ValueError)


@KIND
def test_zero_size_cells_like_torch_nn(device, kind):
    """GRUCell(3, 0), RNNCell(4, 0), LSTMCell(3, 0) construct, as torch.nn's do,
    with the same (empty) parameters, and compute what torch.nn's compute:
    batched, unbatched, with and without hx, backward included."""
    I = 4 if kind.name.startswith("rnn") else 3
    ref, ext = kind.cell_pair(I, 0, device=device)
    assert list(ext.state_dict()) == list(ref.state_dict())
    for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
        assert n == m and p.shape == q.shape, n
    assert ext.hidden_size == 0
    for batched in (True, False):
        for use_hx in (False, True):
            x, hx = kind.module_inputs((2, I) if batched else (I,), (2, 0) if batched else (0,), device=device,
                                       use_hx=use_hx)
            got, exp = (module_results(kind, m, x, hx) for m in (ext, ref))
            assert got[1]["h"].shape == ((2, 0) if batched else (0,))
            check_results(got, exp, F32, f"batched={batched} hx={use_hx}")


@KIND
def test_zero_hidden_size_layer_raises_like_torch_nn(kind):
    expect_same_error(lambda: kind.torch_layer(3, 0, **kind.kwargs), lambda: kind.ext_layer(3, 0, **kind.kwargs))


@pytest.mark.parametrize("kind", SINGLE_STATE_PARAMS)
def test_proj_size_refused_like_torch_nn(kind):
    expect_torch_nn_words(lambda: kind.torch_layer(3, 4, proj_size=2, **kind.kwargs),
                          lambda: kind.ext_layer(3, 4, proj_size=2, **kind.kwargs))


@pytest.mark.parametrize("what", ["features", "features-unbatched", "rank-1", "rank-4", "empty-sequence",
                                  "hx-batch", "hx-hidden", "hx-layers", "hx-rank", "hx-unbatched-size",
                                  "hx-tuple", "packed-hx-tuple"])
@KIND
def test_bad_layer_input_raises_like_torch_nn(kind, what):
    ref, ext = kind.layer_pair(7, 5, 2)
    x = torch.randn(4, 3, 7)
    h = torch.zeros(2, 3, 5)
    states = [h] * kind.num_states
    if what == "features":
        x = torch.randn(4, 3, 11)
    elif what == "features-unbatched":
        x = torch.randn(4, 11)
    elif what == "rank-1":
        x = torch.randn(7)
    elif what == "rank-4":
        x = torch.randn(4, 3, 7, 1)
    elif what == "empty-sequence":
        x = torch.randn(0, 3, 7)
    elif what == "hx-batch":
        states[0] = torch.zeros(2, 4, 5)
    elif what == "hx-hidden":
        states[-1] = torch.zeros(2, 3, 6)
    elif what == "hx-layers":
        states[0] = torch.zeros(1, 3, 5)
    elif what == "hx-rank":
        states[0] = torch.zeros(2, 5)
    elif what == "hx-unbatched-size":
        x, states = torch.randn(4, 7), [torch.zeros(2, 6)] * kind.num_states
    elif what.endswith("hx-tuple"):
        if what.startswith("packed"):
            x = pack_padded_sequence(x, [4, 2, 1])
        hx = (h,) if kind.num_states == 1 else (h, h, h)
    if not what.endswith("hx-tuple"):
        hx = kind.hx(tuple(states))
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx))


@pytest.mark.parametrize("what", ["features", "features-unbatched", "rank-3", "hx-batch", "hx-hidden",
                                  "hx-tuple"])
@KIND
def test_bad_cell_input_raises_like_torch_nn(kind, what):
    ref, ext = kind.cell_pair(7, 5)
    x = torch.randn(3, 7)
    states = [torch.zeros(3, 5)] * kind.num_states
    if what == "features":
        x = torch.randn(3, 11)
    elif what == "features-unbatched":
        x, states = torch.randn(11), [torch.zeros(5)] * kind.num_states
    elif what == "rank-3":
        x = torch.randn(2, 3, 7)
    elif what == "hx-batch":
        states[0] = torch.zeros(4, 5)
    elif what == "hx-hidden":
        states[-1] = torch.zeros(3, 6)
    hx = kind.hx(tuple(states)) if what != "hx-tuple" else (states[0],) * (3 - kind.num_states)
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx))
