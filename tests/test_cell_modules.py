"""Module-level tests over the cell kinds (tests/cells.py: LSTM, RNN tanh/relu,
GRU) and the device: lstm_ext's layers and cells as drop-ins for torch.nn's.

Everything is compared with torch.nn given identical weights: outputs, final
states and the gradients of the input, the initial states and every
parameter (parity grid, long sequences, dropout, unbatched, empty batch,
PackedSequence sorted and unsorted, NaN and inf, frozen parameters); with a
second oracle, the plain-tensor-op reference of tests/cells.py, for layers and
cells; calls that must agree exactly (no hx and zero hx, batch_first and a
transpose, grad mode and no_grad, train and eval without dropout, a call and
its repeat); every step's hidden state (``return_all_states=True``) against
torch.nn run one layer at a time; streaming in chunks against one call;
state_dict, seeded initialisation, dtype conversions, from_torch_nn /
to_torch_nn; the cells; gradcheck and double backward; and bad input, which
must raise what torch.nn raises (the same type or a subclass, with torch.nn's
words where torch.nn's message is the issue's). The RNN's nonlinearity
arguments are the ``test_rnn_*`` tests here; what only the LSTM has lives in
test_lstm_modules.py, test_states.py (cell states), test_projection.py and
test_packed.py.
"""
import contextlib
import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from cells import KIND_PARAMS, KINDS, SINGLE_STATE_PARAMS, layer_reference, module_results
from fuzz_strategies import single_threaded
from helpers import (assert_close, assert_dicts_close, assert_flatten_parameters_harmless, assert_message, backprop,
                     copy_params, expect_same_error, layout, leaf, num_re, shape_re, tols)
from module_cases import check_results, module_reference, reference_results

F32, F64 = torch.float32, torch.float64
KIND = pytest.mark.parametrize("kind", KIND_PARAMS)
UNI_BI = pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
EXACT = dict(atol=0, rtol=0)


@pytest.fixture
def one_thread():
    """float64 runs torch.nn's and lstm_ext's plain loops, which slow down many
    times with 2 threads on busy cores (fuzz_strategies.single_threaded); the
    threading of the fused kernels is tested in float32 and elsewhere."""
    with single_threaded():
        yield


def outputs_of(kind, result):
    """A layer's (output, final states) result as a list: [output, h_n] or [output, h_n, c_n]."""
    return [result[0], *kind.states_of(result[1])]


def every_h_of(kind, every):
    """The every-step hidden states of a ``return_all_states=True`` call's third result."""
    return every.h if kind.name == "lstm" else every


# =============================================================================== parity grid
# (L, bidirectional, batch_first, bias, hx, H, layout of x and hx, T, I, B). The
# first 14 are a pairwise covering of L {1,2,3} x bidirectional x batch_first x
# bias x hx x H {1,7,33} x layout {contiguous, transposed view, step-2 slice} x
# T {1,5} x I {1,3,9} x B {1,4}: every pair of values of any two axes occurs in
# some case. The last 6 add H 5, 16 and 17 (a multiple of 16 and not) and other
# T, I, B. Long sequences come below.
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
    (1, False, False, True, True, 7, "contig", 5, 3, 2),
    (2, True, True, False, False, 17, "transposed", 4, 1, 3),
    (3, False, True, True, True, 33, "step", 3, 5, 1),
    (2, True, False, True, True, 1, "step", 1, 2, 4),
    (3, True, False, False, True, 5, "transposed", 6, 4, 2),
    (1, True, True, True, False, 16, "contig", 2, 9, 3),
]
LONG = [
    (1, False, False, True, False, 16, "contig", 300, 5, 2),
    (2, True, True, True, True, 7, "transposed", 301, 3, 3),
]


def _grid_id(c):
    L, bd, bf, bias, hx, H, lay, T, I, B = c
    return (f"L{L}-{'bi' if bd else 'uni'}-{'bf' if bf else 'sf'}-{'bias' if bias else 'nobias'}-"
            f"{'hx' if hx else 'nohx'}-H{H}-{lay}-T{T}-I{I}-B{B}")


def _check_parity_case(device, kind, case, dtype):
    L, bidir, bf, bias, use_hx, H, lay, T, I, B = case
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(I, H, L, bias=bias, batch_first=bf, bidirectional=bidir, device=device,
                               dtype=dtype)
    assert ext.mode == ref.mode == kind.mode
    for name, value in kind.kwargs.items():
        assert getattr(ext, name) == value, name
    x, hx = kind.module_inputs((B, T, I) if bf else (T, B, I), (L * D, B, H), dtype=dtype, device=device,
                               use_hx=use_hx)
    x = layout(x, lay)
    if hx is not None:
        hx = kind.hx(tuple(layout(s, lay) for s in kind.states_of(hx)))
    # lstm_ext runs on the very hx, possibly non-contiguous, that cuDNN refuses (see reference_results)
    with single_threaded() if dtype == F64 else contextlib.nullcontext():
        got = module_results(kind, ext, x, hx)
        exp = reference_results(kind, ref, x, hx)
    assert got[1]["out"].shape == ((B, T, D * H) if bf else (T, B, D * H))
    for k, v in got[1].items():
        assert v.dtype == dtype and v.device.type == device, k
        if k != "out":
            assert v.shape == (L * D, B, H), k
    check_results(got, exp, dtype, kind.name)
    return got


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
@KIND
def test_parity_grid(device, kind, case, dtype):
    got = _check_parity_case(device, kind, case, dtype)
    if kind.name == "rnn_relu":
        # relu really clamps, so the parity above covers its zero branch too; only
        # outputs too small to be sure of a clamped value are let off (the seeded
        # f64 draws of two cases, 5 and 8 values, have none)
        out = got[1]["out"]
        assert (out >= 0).all()
        assert (out == 0).any() or out.numel() < 16


@pytest.mark.parametrize("case", LONG, ids=["T300-L1-uni", "T301-L2-bi-bf-hx-transposed"])
@KIND
def test_parity_long_sequence(device, kind, case):
    _check_parity_case(device, kind, case, F32)


@UNI_BI
@KIND
@pytest.mark.usefixtures("one_thread")
def test_matches_pure_reference(device, kind, bidir):
    """Second oracle, independent of torch.nn: the module against the
    plain-tensor-op reference run layer by layer (module_cases.module_reference),
    outputs and the gradients of the input, the initial states and every
    parameter, float64."""
    L, I, H, T, B = 2, 5, 6, 7, 3
    D = 2 if bidir else 1
    ext = kind.ext_layer(I, H, L, bidirectional=bidir, device=device, dtype=F64, **kind.kwargs)
    x, hx = kind.module_inputs((T, B, I), (L * D, B, H), dtype=F64, device=device)
    states = kind.states_of(hx)
    out, final = ext(x, hx)
    ref_out, ref_final, _ = module_reference(kind, ext, x, states)
    wrt = {"input": x, **dict(zip(("h0", "c0"), states)), **dict(ext.named_parameters())}
    results = []
    for outs in ({"out": out, **dict(zip(("h_n", "c_n"), kind.states_of(final)))},
                 {"out": ref_out, **dict(zip(("h_n", "c_n"), ref_final))}):
        results.append((None, {k: v.detach() for k, v in outs.items()}, backprop(outs, wrt)))
    check_results(*results, F64, "vs pure reference")


# =============================================================================== dropout


@pytest.mark.parametrize("L,bidir", [(2, False), (3, True)], ids=["L2-uni", "L3-bi"])
@KIND
def test_dropout_one_matches_torch(device, kind, L, bidir):
    """p=1 zeroes every inter-layer activation: deterministic, so comparable with
    torch.nn in train mode, outputs and gradients; eval mode differs."""
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(3, 4, L, bidirectional=bidir, dropout=1.0, device=device)
    x, hx = kind.module_inputs((5, 2, 3), (L * D, 2, 4), device=device)
    got = module_results(kind, ext.train(), x, hx)
    check_results(got, reference_results(kind, ref.train(), x, hx), F32, "dropout=1")
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


@KIND
def test_dropout_between_layers_only(device, kind):
    """Dropout acts on the input of every layer but the first: layer 0's final
    states are eval mode's, the later layers' and the output are not; the masks
    come from torch's RNG. The output itself is never dropped: its ends are
    h_n's rows exactly, and with the last layer deaf to its input (weight_ih
    zero) train mode's output is eval mode's at every step."""
    L, D, H = 3, 2, 8
    ext = kind.ext_layer(4, H, L, bidirectional=True, dropout=0.5, device=device, **kind.kwargs)
    x, hx = kind.module_inputs((7, 5, 4), (L * D, 5, H), device=device)
    with torch.no_grad():
        e_out, e_final = ext.eval()(x, hx)
        ext.train()
        torch.manual_seed(1)
        t_out, t_final = ext(x, hx)
        torch.manual_seed(1)
        t2_out, _ = ext(x, hx)
        torch.manual_seed(2)
        t3_out, _ = ext(x, hx)
    for i, (t, e) in enumerate(zip(kind.states_of(t_final), kind.states_of(e_final), strict=True)):
        assert_close(t[:D], e[:D], f"layer 0 final state {i}", atol=1e-6, rtol=1e-6)
        assert not torch.allclose(t[D:], e[D:]), f"later layers' final state {i} saw no dropout"
    assert not torch.allclose(t_out, e_out)
    h_n = kind.states_of(t_final)[0]
    assert_close(t_out[-1, :, :H], h_n[-2], "forward output's last step vs h_n", **EXACT)
    assert_close(t_out[0, :, H:], h_n[-1], "reverse output's first step vs h_n", **EXACT)
    assert_close(t2_out, t_out, "same seed, same masks", **EXACT)
    assert not torch.allclose(t3_out, t_out)
    with torch.no_grad():
        getattr(ext, f"weight_ih_l{L - 1}").zero_()
        getattr(ext, f"weight_ih_l{L - 1}_reverse").zero_()
        deaf_train = ext(x, hx)[0]
        deaf_eval = ext.eval()(x, hx)[0]
    assert_close(deaf_train, deaf_eval, "output of a last layer deaf to its input", atol=1e-6, rtol=1e-6)


def _assert_train_equals_eval(kind, ext, x):
    for a, b in zip(outputs_of(kind, ext.train()(x)), outputs_of(kind, ext.eval()(x)), strict=True):
        assert_close(a, b, "train vs eval", **EXACT)


@KIND
def test_dropout_single_layer_has_no_effect_and_warns(device, kind):
    with warnings.catch_warnings(record=True) as rec_ref:
        warnings.simplefilter("always")
        kind.torch_layer(3, 4, 1, dropout=0.5, **kind.kwargs)
    with warnings.catch_warnings(record=True) as rec_ext:
        warnings.simplefilter("always")
        ext = kind.ext_layer(3, 4, 1, dropout=0.5, device=device, **kind.kwargs)
    assert any(issubclass(w.category, UserWarning) for w in rec_ref)
    assert any(issubclass(w.category, UserWarning) and "dropout" in str(w.message) for w in rec_ext), \
        [str(w.message) for w in rec_ext]
    x = torch.randn(5, 2, 3, device=device)
    _assert_train_equals_eval(kind, ext, x)


@KIND
def test_train_mode_without_dropout_equals_eval(device, kind):
    ext = kind.ext_layer(3, 5, 2, device=device, **kind.kwargs)
    x = torch.randn(4, 2, 3, device=device)
    _assert_train_equals_eval(kind, ext, x)


# =============================================================================== input shapes


@pytest.mark.parametrize("batch_first,use_hx,bidir", [(False, True, True), (True, False, True),
                                                      (False, False, False), (True, True, False)],
                         ids=["sf-hx-bi", "bf-nohx-bi", "sf-nohx-uni", "bf-hx-uni"])
@KIND
def test_unbatched(device, kind, batch_first, use_hx, bidir):
    """2-D input [T, I] and hx [L*D, H] (batch_first does not apply), as torch.nn."""
    L, I, H, T = 2, 3, 5, 6
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(I, H, L, bidirectional=bidir, batch_first=batch_first, device=device)
    x, hx = kind.module_inputs((T, I), (L * D, H), device=device, use_hx=use_hx)
    got = module_results(kind, ext, x, hx)
    assert got[1]["out"].shape == (T, D * H)
    for k in list(got[1])[1:]:
        assert got[1][k].shape == (L * D, H), k
    check_results(got, reference_results(kind, ref, x, hx), F32, "unbatched")


@UNI_BI
@KIND
def test_zero_batch(device, kind, bidir):
    """An empty batch, with hx [L*D, 0, H] and without: empty outputs of the
    right shapes, and the (empty) gradients torch.nn gives."""
    L, I, H, T = 2, 3, 4, 5
    D = 2 if bidir else 1
    ref, ext = kind.layer_pair(I, H, L, bidirectional=bidir, device=device)
    x, hx = kind.module_inputs((T, 0, I), (L * D, 0, H), device=device)
    got = module_results(kind, ext, x, hx)
    check_results(got, reference_results(kind, ref, x, hx), F32, "B=0")
    out, *finals = outputs_of(kind, ext(x))
    assert out.shape == got[1]["out"].shape == (T, 0, D * H)
    for k, final in zip(list(got[1])[1:], finals, strict=True):
        assert final.shape == got[1][k].shape == (L * D, 0, H), k


# (enforce_sorted, bidirectional, L, hx, batch_first, lengths)
PACKED = [
    (True, False, 1, False, False, [6, 4, 4, 1]),
    (False, True, 2, True, True, [3, 6, 1, 4]),
    (False, False, 3, True, False, [5, 5, 5]),
    (True, True, 1, True, True, [4, 2, 1]),
    (False, True, 2, False, False, [1, 3]),
    (False, True, 3, False, False, [5, 5, 5]),
    (False, False, 2, True, False, [1, 3]),
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
    exp = reference_results(kind, ref, x, hx, pack=pack)
    a, e = got[0][0], exp[0][0]
    assert isinstance(a, PackedSequence)
    assert torch.equal(a.batch_sizes, e.batch_sizes) and a.batch_sizes.device.type == "cpu"
    for name in ("sorted_indices", "unsorted_indices"):
        ai, ei = getattr(a, name), getattr(e, name)
        assert (ai is None) == (ei is None) and (ai is None or torch.equal(ai, ei)), name
    assert got[1]["out"].shape == (sum(lengths), D * H) and got[1]["h_n"].shape == (L * D, B, H)
    check_results(got, exp, F32, "packed")


# =============================================================================== calls that agree


@KIND
def test_hx_none_equals_zero_state(device, kind):
    ext = kind.ext_layer(4, 5, 2, bidirectional=True, device=device, **kind.kwargs)
    x = torch.randn(6, 3, 4, device=device)
    zeros = kind.hx(tuple(torch.zeros(4, 3, 5, device=device) for _ in range(kind.num_states)))
    for a, b in zip(outputs_of(kind, ext(x)), outputs_of(kind, ext(x, zeros)), strict=True):
        assert_close(a, b, "hx=None vs zeros", **EXACT)


@KIND
def test_batch_first_is_a_transpose(device, kind):
    ext_sf = kind.ext_layer(3, 4, 2, bidirectional=True, device=device, **kind.kwargs)
    ext_bf = copy_params(ext_sf, kind.ext_layer(3, 4, 2, bidirectional=True, batch_first=True, device=device,
                                                **kind.kwargs))
    x = torch.randn(5, 2, 3, device=device)
    out_sf, *finals_sf = outputs_of(kind, ext_sf(x))
    out_bf, *finals_bf = outputs_of(kind, ext_bf(x.transpose(0, 1)))
    assert_close(out_bf, out_sf.transpose(0, 1), "output", atol=1e-6, rtol=1e-6)
    for i, (a, b) in enumerate(zip(finals_bf, finals_sf, strict=True)):  # hx is never batch-first
        assert_close(a, b, f"final state {i}", atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("return_all_states", [False, True], ids=["default", "all-states"])
@KIND
def test_no_grad_and_inference_mode_match_grad_mode(device, kind, return_all_states):
    ext = kind.ext_layer(3, 4, 2, bidirectional=True, device=device, **kind.kwargs)
    x = torch.randn(5, 2, 3, device=device)

    def run():
        res = ext(x, return_all_states=return_all_states)
        return outputs_of(kind, res) + ([every_h_of(kind, res[2])] if return_all_states else [])

    grad_res = run()
    with torch.no_grad():
        no_grad_res = run()
    with torch.inference_mode():
        inference_res = run()
    for a, b, c in zip(grad_res, no_grad_res, inference_res, strict=True):
        assert a.requires_grad and not b.requires_grad and not c.requires_grad
        assert torch.equal(a.detach(), b) and torch.equal(a.detach(), c)


@KIND
def test_bitwise_repeatable(device, kind):
    """The same call twice gives the same bits: outputs and every gradient."""
    _, ext = kind.layer_pair(24, 64, 2, bidirectional=True, device=device)
    x, hx = kind.module_inputs((20, 16, 24), (4, 16, 64), device=device)
    first, second = (module_results(kind, ext, x, hx) for _ in range(2))
    assert_dicts_close(first[1], second[1], EXACT, "repeated output")
    assert_dicts_close(first[2], second[2], EXACT, "repeated grad")


# =============================================================================== NaN and inf


@UNI_BI
@KIND
def test_nan_propagates_like_torch(device, kind, bidir):
    """A NaN in one sequence spreads through it as in torch.nn, and to no other sequence."""
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=bidir, device=device)
    x = torch.randn(6, 3, 3, device=device)
    x[2, 1, 0] = float("nan")
    with torch.no_grad():
        got, exp = outputs_of(kind, ext(x)), outputs_of(kind, ref(x))
    out = got[0]
    assert torch.equal(out.isnan(), exp[0].isnan())
    assert out.isnan().any() and not out[:, 0].isnan().any() and not out[:, 2].isnan().any()
    for name, a, e in zip(("out", "h_n", "c_n"), got, exp):
        torch.testing.assert_close(a, e, equal_nan=True, atol=1e-5, rtol=1e-4, msg=name)


@KIND
def test_inf_and_huge_inputs_like_torch(device, kind):
    """+-inf / 1e30 inputs saturate the gates (I=1 so pre-activations are +-inf,
    not NaN; relu passes inf on, and what torch.nn turns into NaN, so must lstm_ext)."""
    ref, ext = kind.layer_pair(1, 5, 2, bidirectional=True, device=device)
    x = torch.randn(6, 3, 1, device=device)
    x[1, 0, 0] = float("inf")
    x[3, 1, 0] = float("-inf")
    x[2, 2, 0] = 1e30
    x[4, 2, 0] = -1e30
    with torch.no_grad():
        got, exp = outputs_of(kind, ext(x)), outputs_of(kind, ref(x))
    for name, a, e in zip(("out", "h_n", "c_n"), got, exp):
        assert torch.equal(a.isnan(), e.isnan()), name
        assert torch.equal(a.isinf(), e.isinf()), name
        torch.testing.assert_close(a, e, equal_nan=True, atol=1e-5, rtol=1e-4, msg=name)


# =============================================================================== partial requires_grad


@pytest.mark.parametrize("trained", [(), ("bias_hh_l1", "weight_ih_l0_reverse")], ids=["h0-only", "two-parameters"])
@KIND
def test_partial_requires_grad_like_torch(device, kind, trained):
    """Only some leaves require grad: h0 alone (no parameter, nor the LSTM's c0),
    or two parameters (no hx); their gradients are torch.nn's."""
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=True, device=device)
    x = torch.randn(5, 2, 3, device=device)
    _, hx = kind.module_inputs((5, 2, 3), (4, 2, 4), device=device, use_hx=not trained)
    if hx is not None:
        h0, *other_states = kind.states_of(hx)
        hx = kind.hx((h0, *(s.detach() for s in other_states)))
    grads = []
    for m in (ref, ext):
        for n, p in m.named_parameters():
            p.requires_grad_(n in trained)
        out, final = m(x) if hx is None else m(x, hx)
        loss = (out * out).sum() + kind.states_of(final)[-1].sum()
        grads.append(torch.autograd.grad(loss, [getattr(m, n) for n in trained] or [h0]))
    for name, a, e in zip(trained or ("h0",), grads[1], grads[0], strict=True):
        assert_close(a, e, f"grad {name}", **tols(F32)[1])


# =============================================================================== every step's states


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
    every_h = every_h_of(kind, every)
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
                 "proj_size", "mode", *kind.kwargs):
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
    for k, v in ext2.state_dict().items():
        assert torch.equal(ref2.state_dict()[k], v) and torch.equal(ext.state_dict()[k], v), k
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


@pytest.mark.parametrize("how", ["double-float", "to-dtype"])
@KIND
def test_double_and_float_conversions(device, kind, how):
    """.double() / .float() and .to(dtype) both ways: every parameter converted,
    results as torch.nn's at the new dtype."""
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=True, device=device)
    ref, ext = ref.double(), (ext.double() if how == "double-float" else ext.to(F64))
    assert all(p.dtype == F64 for p in ext.parameters())
    x, _ = kind.module_inputs((5, 2, 3), (4, 2, 4), dtype=F64, device=device, use_hx=False)
    check_results(module_results(kind, ext, x), reference_results(kind, ref, x), F64, "double")
    ref, ext = ref.float(), (ext.float() if how == "double-float" else ext.to(F32))
    assert all(p.dtype == F32 for p in ext.parameters())
    x32 = leaf(x.detach().float())
    check_results(module_results(kind, ext, x32), reference_results(kind, ref, x32), F32, "float")


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
    (False, False, True, F32),
    (False, False, True, F64),
    (True, True, False, F64),
    (False, True, True, F64),
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
    exp = reference_results(kind, ref, x, hx)
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
def test_cell_matches_pure_reference(device, kind):
    """Second oracle, independent of torch.nn: one step of tests/cells.py's reference, float64."""
    ext = kind.ext_cell(4, 3, device=device, dtype=F64, **kind.kwargs)
    x, hx = kind.module_inputs((2, 4), (2, 3), dtype=F64, device=device)
    _, expected, _ = layer_reference(kind, x.unsqueeze(0), ext.weight_ih, ext.weight_hh, ext.bias_ih, ext.bias_hh,
                                     kind.states_of(hx))
    got = kind.states_of(ext(x, hx))
    assert len(got) == len(expected) == kind.num_states
    for name, a, e in zip(("h", "c"), got, expected):
        assert_close(a, e, name, **tols(F64)[0])


@pytest.mark.parametrize("use_hx", [True, False], ids=["hx", "nohx"])
@KIND
def test_cell_zero_batch(device, kind, use_hx):
    ref, ext = kind.cell_pair(3, 4, device=device)
    x, hx = kind.module_inputs((0, 3), (0, 4), device=device, use_hx=use_hx)
    got = module_results(kind, ext, x, hx)
    for k, v in got[1].items():
        assert v.shape == (0, 4), k
    check_results(got, reference_results(kind, ref, x, hx), F32, "cell B=0")


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


@pytest.mark.parametrize("how", ["dense", "dense-all-states", "packed-unsorted"])
@KIND
@pytest.mark.usefixtures("one_thread")
def test_gradcheck_module(device, kind, how):
    """float64 gradcheck of a 2-layer bidirectional module w.r.t. the input, the
    initial states and every parameter: the default call, the call that also
    returns every_h (through every_h too; the LSTM's kernels then keep the cell
    states: another path), and unsorted packed input."""
    m = kind.ext_layer(2, 2, 2, bidirectional=True, device=device, dtype=F64, **kind.kwargs)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x, hx = kind.module_inputs((3, 2, 2), (4, 2, 2), dtype=F64, device=device)
    states = kind.states_of(hx)
    if kind.name == "rnn_relu" and how != "packed-unsorted":
        # relu has a kink at 0 that finite differences must not straddle; and
        # some pre-activation below it, so that the clamp's zero gradient is checked
        with torch.no_grad():
            _, _, saved = module_reference(kind, m, x, states)
        pre = torch.cat([pre.flatten() for (pre,) in saved])
        assert pre.abs().min() > 1e-3 and (pre < 0).any()

    def f(x, *rest):
        st, ps = rest[:kind.num_states], rest[kind.num_states:]
        if how == "packed-unsorted":
            inp = pack_padded_sequence(x, [2, 3], enforce_sorted=False)
            out, final = torch.func.functional_call(m, dict(zip(names, ps)), (inp, kind.hx(st)))
            return out.data, *kind.states_of(final)
        if how == "dense":
            out, final = torch.func.functional_call(m, dict(zip(names, ps)), (x, kind.hx(st)))
            return out, *kind.states_of(final)
        out, final, every = torch.func.functional_call(m, dict(zip(names, ps)), (x, kind.hx(st)),
                                                       {"return_all_states": True})
        return out, *kind.states_of(final), every_h_of(kind, every)

    assert torch.autograd.gradcheck(f, (x, *states, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@UNI_BI
@KIND
@pytest.mark.usefixtures("one_thread")
def test_double_backward_matches_torch_nn(device, kind, bidir):
    """Second-order gradients (a gradient penalty) equal torch.nn's on the CPU
    (cuDNN cannot do double backward, so the reference always runs there)."""
    ref, ext = kind.layer_pair(3, 4, 2, bidirectional=bidir, dtype=F64)
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
    exc = expect_torch_nn_words(lambda: kind.torch_layer(3, 4, proj_size=2, **kind.kwargs),
                                lambda: kind.ext_layer(3, 4, proj_size=2, **kind.kwargs), "proj_size")
    assert isinstance(exc, ValueError)


_HX_SHAPE = {"hx-batch": (2, 4, 5), "hx-hidden": (2, 3, 6), "hx-layers": (1, 3, 5), "hx-layers-x2": (4, 3, 5)}
#: a wrong feature size, batched or not, with hx given or not ("-nohx")
_FEATURES = ["features", "features-nohx", "features-unbatched", "features-unbatched-nohx"]


def _call(module, x, hx):
    return module(x) if hx is None else module(x, hx)


@pytest.mark.parametrize("what", [*_FEATURES, "rank-1", "rank-4", "empty-sequence", *_HX_SHAPE, "hx-rank",
                                  "unbatched-hx-rank", "hx-unbatched-size", "hx-tuple", "packed-hx-tuple"])
@KIND
def test_bad_layer_input_raises_like_torch_nn(kind, what):
    """torch.nn's exception type; where torch.nn names the sizes or shapes
    involved, lstm_ext's message names them too (and says "tuple" for a tuple hx)."""
    ref, ext = kind.layer_pair(7, 5, 2)
    x = torch.randn(4, 3, 7)
    h = torch.zeros(2, 3, 5)
    states = [h] * kind.num_states
    words, exc_type = (), Exception
    if what in _FEATURES:
        x, words = torch.randn(4, 3, 11), (num_re(7), num_re(11))
        if "unbatched" in what:
            x, states = torch.randn(4, 11), [torch.zeros(2, 5)] * kind.num_states
    elif what == "rank-1":
        x = torch.randn(7)
    elif what == "rank-4":
        x = torch.randn(4, 3, 7, 1)
    elif what == "empty-sequence":
        x = torch.randn(0, 3, 7)
    elif what in _HX_SHAPE:
        states[-1 if what == "hx-hidden" else 0] = torch.zeros(_HX_SHAPE[what])
        words, exc_type = (shape_re((2, 3, 5)), shape_re(_HX_SHAPE[what])), RuntimeError
    elif what == "hx-rank":
        states[0] = torch.zeros(2, 5)
    elif what == "unbatched-hx-rank":
        x = torch.randn(4, 7)
    elif what == "hx-unbatched-size":
        x, states = torch.randn(4, 7), [torch.zeros(2, 6)] * kind.num_states
        words = (num_re(5), num_re(6))
    elif what.endswith("hx-tuple"):
        if what.startswith("packed"):
            x = pack_padded_sequence(x, [4, 2, 1])
        if kind.num_states == 1:
            words, exc_type = ("tuple",), AttributeError
    hx = (h,) * (3 - kind.num_states) if what.endswith("hx-tuple") else kind.hx(tuple(states))
    if what.endswith("-nohx"):
        hx = None
    exc = expect_same_error(lambda: _call(ref, x, hx), lambda: _call(ext, x, hx), *words)
    assert isinstance(exc, exc_type)


@pytest.mark.parametrize("what", [*_FEATURES, "rank-3", "hx-batch", "hx-hidden", "hx-tuple"])
@KIND
def test_bad_cell_input_raises_like_torch_nn(kind, what):
    ref, ext = kind.cell_pair(7, 5)
    x = torch.randn(3, 7)
    states = [torch.zeros(3, 5)] * kind.num_states
    words, exc_type = (), Exception
    if what in _FEATURES:
        x, words = torch.randn(3, 11), (num_re(7), num_re(11))
        if "unbatched" in what:
            x, states = torch.randn(11), [torch.zeros(5)] * kind.num_states
    elif what == "rank-3":
        x = torch.randn(2, 3, 7)
    elif what == "hx-batch":
        states[0], words = torch.zeros(4, 5), (num_re(3), num_re(4))
    elif what == "hx-hidden":
        states[-1] = torch.zeros(3, 6)
    elif what == "hx-tuple" and kind.num_states == 1:
        words, exc_type = ("tuple",), AttributeError
    hx = kind.hx(tuple(states)) if what != "hx-tuple" else (states[0],) * (3 - kind.num_states)
    if what.endswith("-nohx"):
        hx = None
    exc = expect_same_error(lambda: _call(ref, x, hx), lambda: _call(ext, x, hx), *words)
    assert isinstance(exc, exc_type)


# =============================================================================== the RNN's nonlinearity


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_rnn_bad_nonlinearity(how):
    def build(cls):
        return cls(3, 4, 2, "sigmoid") if how == "positional" else cls(3, 4, nonlinearity="sigmoid")

    exc = expect_same_error(lambda: build(nn.RNN), lambda: build(lstm_ext.RNN), "sigmoid", "tanh", "relu")
    assert isinstance(exc, ValueError)


def test_rnn_cell_bad_nonlinearity():
    """torch.nn.RNNCell accepts a bad nonlinearity and fails at forward (with a
    RuntimeError); lstm_ext fails at construction, with an InvalidArgumentError,
    which is a subclass of what torch raises."""
    ref = nn.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(Exception) as ref_info:
        ref(torch.randn(2, 3))
    ref_type = type(ref_info.value)
    assert issubclass(lstm_ext.InvalidArgumentError, ref_type)
    with pytest.raises(ref_type) as info:
        lstm_ext.RNNCell(3, 4, nonlinearity="sigmoid")
    assert isinstance(info.value, lstm_ext.InvalidArgumentError)
    assert_message(info.value, "sigmoid")
    with pytest.raises(ref_type):
        lstm_ext.RNNCell(3, 4, True, "gelu")


def test_rnn_nonlinearity_positional_fourth_argument(device):
    """torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias,
    batch_first, dropout, bidirectional): all positional."""
    rnn_relu = KINDS["rnn_relu"]
    args = (3, 4, 2, "relu", False, True, 0.0, True)
    ref = nn.RNN(*args, device=device)
    ext = copy_params(ref, lstm_ext.RNN(*args, device=device))
    for attr in ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
                 "dropout", "bidirectional", "mode"):
        assert getattr(ext, attr) == getattr(ref, attr), attr
    assert ext.nonlinearity == "relu" and ext.bias is False and ext.batch_first is True
    assert list(ext.state_dict()) == list(ref.state_dict())
    x = leaf(torch.randn(2, 5, 3, device=device))
    check_results(module_results(rnn_relu, ext, x), reference_results(rnn_relu, ref, x), F32, "positional")
    # relu really is used: a tanh module with the same weights computes something else
    tanh = copy_params(ref, lstm_ext.RNN(3, 4, 2, "tanh", False, True, 0.0, True, device=device))
    assert not torch.allclose(tanh(x)[0], ext(x)[0])
    assert repr(ext) == repr(ref)


def test_rnn_cell_positional_bias_and_nonlinearity():
    """torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity), positional:
    the same parameters under the same seed, attributes and repr."""
    for bias, nonlinearity in ((True, "tanh"), (False, "relu")):
        torch.manual_seed(5)
        ref = nn.RNNCell(4, 6, bias, nonlinearity)
        torch.manual_seed(5)
        ext = lstm_ext.RNNCell(4, 6, bias, nonlinearity)
        assert list(ext.state_dict()) == list(ref.state_dict())
        for (n, p), (m, q) in zip(ref.named_parameters(), ext.named_parameters(), strict=True):
            assert n == m and torch.equal(p, q), n
        for attr in ("input_size", "hidden_size", "bias", "nonlinearity"):
            assert getattr(ext, attr) == getattr(ref, attr), attr
        assert repr(ext).split("(", 1)[1] == repr(ref).split("(", 1)[1]
