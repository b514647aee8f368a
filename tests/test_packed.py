"""lstm_ext.LSTM with PackedSequence input, against torch.nn.LSTM (same weights).

Outputs (the PackedSequence with its data, batch_sizes, sorted_indices and
unsorted_indices; h_n; c_n) and the gradients of the padded input, h_0, c_0
and every parameter must match; h_n/c_n hold each sequence's state at its own
last step, in the caller's order; the reverse direction starts at each
sequence's true end.
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import lstm_ext
from helpers import (assert_close, assert_dicts_close, assert_message, backprop, cudnn_refuses, float64_cpu_reference, leaf, module_pair, shape_re, tols)

F32, F64 = torch.float32, torch.float64
# torch.nn.LSTM (the reference) warns that oneDNN has no projections; not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


def make_pair(*args, **kwargs):
    """(torch.nn.LSTM, lstm_ext.LSTM) with identical parameters."""
    return module_pair(nn.LSTM, lstm_ext.LSTM, *args, **kwargs)


def assert_same_packing(a, b):
    assert isinstance(a, PackedSequence) and isinstance(b, PackedSequence)
    assert torch.equal(a.batch_sizes, b.batch_sizes)
    assert a.batch_sizes.device.type == "cpu" and a.batch_sizes.dtype == torch.int64
    for name in ("sorted_indices", "unsorted_indices"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name


def packed_forward_backward(module, x, lengths, hx, batch_first, enforce_sorted, cot_dtype=None):
    """Pack the padded leaf ``x``, run ``module`` on it, backprop fixed random
    cotangents (drawn in ``cot_dtype``, see helpers.backprop) from out.data, h_n
    and c_n. -> (packed output, outputs, grads)."""
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, (h_n, c_n) = module(packed) if hx is None else module(packed, hx)
    outs = {"out.data": out.data, "h_n": h_n, "c_n": c_n}
    wrt = {"input": x}
    if hx is not None:
        wrt["h0"], wrt["c0"] = hx
    wrt.update(module.named_parameters())
    grads = backprop(outs, wrt, cot_dtype=cot_dtype)
    return out, {k: v.detach() for k, v in outs.items()}, grads


def padded_input(lengths, batch_first, I, device, dtype):
    T, B = max(lengths), len(lengths)
    x = torch.randn(*((B, T, I) if batch_first else (T, B, I)), device=device, dtype=dtype)
    return leaf(x)


# A pairwise-style covering of: layers {1,2,3} x bidirectional x sorted/unsorted x hx
# x batch_first packing x proj_size {0, >0} x lengths (with a length-1 sequence,
# all equal, all length 1, a single sequence).
#        (L, bidir, enforce_sorted, hx, batch_first, proj, lengths)
GRID = [
    (1, False, True, False, False, 0, [6, 4, 4, 1]),
    (1, True, False, True, True, 0, [3, 6, 1, 4]),
    (2, True, True, True, False, 0, [5, 5, 5]),
    (2, False, False, False, True, 0, [5, 5, 5]),
    (3, True, False, False, False, 0, [3, 6, 1, 4]),
    (3, False, True, True, True, 0, [6, 4, 4, 1]),
    (2, True, False, True, False, 3, [3, 6, 1, 4]),
    (1, False, True, False, True, 2, [6, 4, 4, 1]),
    (3, True, True, False, True, 2, [5, 5, 5]),
    (2, True, False, True, True, 0, [1, 1]),
    (1, True, True, True, False, 2, [2]),
    (2, False, False, True, False, 1, [2, 5, 1]),
]


def _grid_id(c):
    L, bd, srt, hx, bf, P, lengths = c
    return (f"L{L}-{'bi' if bd else 'uni'}-{'sorted' if srt else 'unsorted'}-{'hx' if hx else 'nohx'}-"
            f"{'bf' if bf else 'sf'}-P{P}-len{'_'.join(map(str, lengths))}")


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_packed_parity_grid(device, dtype, case):
    L, bidir, enforce_sorted, use_hx, bf, P, lengths = case
    I, H = 3, 5
    D = 2 if bidir else 1
    ref, ext = make_pair(I, H, L, bidirectional=bidir, batch_first=bf, proj_size=P,
                         device=device, dtype=dtype)
    x = padded_input(lengths, bf, I, device, dtype)
    B = len(lengths)
    hx = None
    if use_hx:
        hx = (leaf(torch.randn(L * D, B, P or H, device=device, dtype=dtype)),
              leaf(torch.randn(L * D, B, H, device=device, dtype=dtype)))
    got_out, got, got_grads = packed_forward_backward(ext, x, lengths, hx, bf, enforce_sorted)
    exp_out, exp, exp_grads = packed_forward_backward(ref, x, lengths, hx, bf, enforce_sorted)
    assert_same_packing(got_out, exp_out)
    assert got["out.data"].shape == (sum(lengths), D * (P or H))
    assert got["h_n"].shape == (L * D, B, P or H) and got["c_n"].shape == (L * D, B, H)
    for v in got.values():
        assert v.dtype == dtype and v.device.type == device
    otol, gtol = tols(dtype)
    assert_dicts_close(got, exp, otol, "output")
    assert_dicts_close(got_grads, exp_grads, gtol, "grad")


@pytest.mark.parametrize("bidir,P,bf,enforce_sorted", [
    (True, 0, False, False),
    (True, 2, True, False),
    (False, 0, True, True),
    (True, 0, False, True),
], ids=["bi-unsorted", "bi-proj-bf-unsorted", "uni-bf-sorted", "bi-sorted"])
def test_packed_h_n_is_each_sequence_last_step(device, bidir, P, bf, enforce_sorted):
    """h_n (forward) is the output at t = len_b - 1 and h_n (reverse) the output at
    t = 0, for each sequence b, in the caller's order; for every layer, checked
    against running each sequence alone."""
    L, I, H = 2, 3, 5
    D = 2 if bidir else 1
    Pr = P or H
    lengths = [3, 6, 1, 4] if not enforce_sorted else [6, 4, 3, 1]
    ext = lstm_ext.LSTM(I, H, L, bidirectional=bidir, batch_first=bf, proj_size=P, device=device)
    x = padded_input(lengths, bf, I, device, F32).detach()
    packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
    with torch.no_grad():
        out, (h_n, c_n) = ext(packed)
    padded, out_lengths = pad_packed_sequence(out, batch_first=bf)
    assert out_lengths.tolist() == lengths
    if bf:
        padded = padded.transpose(0, 1)
    for b, n in enumerate(lengths):
        assert_close(h_n[(L - 1) * D, b], padded[n - 1, b, :Pr], f"forward h_n of sequence {b}",
                     atol=0, rtol=0)
        if bidir:
            assert_close(h_n[(L - 1) * D + 1, b], padded[0, b, Pr:], f"reverse h_n of sequence {b}",
                         atol=0, rtol=0)
        # padding positions are not filled with values of later steps
        assert (padded[n:, b] == 0).all()


@pytest.mark.parametrize("P", [0, 2], ids=["noproj", "proj"])
def test_packed_equals_each_sequence_alone(device, P):
    """Each sequence of a packed batch is processed as if alone: the reverse
    direction starts from its true end, not from the padding."""
    L, I, H = 2, 3, 4
    lengths = [2, 6, 1, 4]
    B, D = len(lengths), 2
    ext = lstm_ext.LSTM(I, H, L, bidirectional=True, proj_size=P, device=device, dtype=F64)
    x = padded_input(lengths, False, I, device, F64).detach()
    h0 = torch.randn(L * D, B, P or H, device=device, dtype=F64)
    c0 = torch.randn(L * D, B, H, device=device, dtype=F64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n) = ext(packed, (h0, c0))
    padded, _ = pad_packed_sequence(out)
    otol = tols(F64)[0]
    for b, n in enumerate(lengths):
        sl = slice(b, b + 1)
        a_out, (a_h, a_c) = ext(x[:n, sl], (h0[:, sl], c0[:, sl]))
        assert_close(padded[:n, sl], a_out, f"output of sequence {b}", **otol)
        assert_close(h_n[:, sl], a_h, f"h_n of sequence {b}", **otol)
        assert_close(c_n[:, sl], a_c, f"c_n of sequence {b}", **otol)
    # negative control: running the padded batch densely gives a different reverse
    # direction for the short sequences, so the comparison above can fail
    dense_out, _ = ext(x, (h0, c0))
    assert not torch.allclose(dense_out[0, 0, (P or H):], padded[0, 0, (P or H):])


def test_packed_gradcheck_bidirectional_2layer(device):
    L, I, H = 2, 2, 2
    lengths = [3, 1, 2]
    m = lstm_ext.LSTM(I, H, L, bidirectional=True, device=device, dtype=F64)
    names = [n for n, _ in m.named_parameters()]
    params = [leaf(p) for p in m.parameters()]
    x = leaf(torch.randn(3, 3, I, device=device, dtype=F64))
    h0 = leaf(torch.randn(2 * L, 3, H, device=device, dtype=F64))
    c0 = leaf(torch.randn(2 * L, 3, H, device=device, dtype=F64))

    def f(x, h0, c0, *ps):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h_n, c_n) = torch.func.functional_call(m, dict(zip(names, ps)), (packed, (h0, c0)))
        return out.data, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_packed_dropout_eval_mode_matches_torch(device):
    L, I, H = 3, 3, 4
    lengths = [3, 5, 1, 4]
    ref, ext = make_pair(I, H, L, bidirectional=True, dropout=0.5, device=device)
    ref.eval()
    ext.eval()
    x = padded_input(lengths, False, I, device, F32)
    hx = tuple(leaf(torch.randn(2 * L, 4, H, device=device)) for _ in range(2))
    got_out, got, got_grads = packed_forward_backward(ext, x, lengths, hx, False, False)
    if cudnn_refuses(ref, hx, backward=True):
        # cuDNN refuses backward in eval mode ("cudnn RNN backward can only be
        # called in training mode"); lstm_ext supports it, a feature asserted
        # here: compare with torch.nn run on the CPU in float64 instead.
        exp_out, exp, exp_grads = float64_cpu_reference(packed_forward_backward, ref, x, lengths, hx,
                                                        False, False)
    else:
        exp_out, exp, exp_grads = packed_forward_backward(ref, x, lengths, hx, False, False)
    assert_same_packing(got_out, exp_out)
    assert_dicts_close(got, exp, tols(F32)[0], "eval output")
    assert_dicts_close(got_grads, exp_grads, tols(F32)[1], "eval grad")
    # eval mode really is deterministic
    with torch.no_grad():
        again = ext(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)[0].data
    assert torch.equal(again, got["out.data"])


def test_packed_dropout_one_train_mode_matches_torch(device):
    """p=1 zeroes every inter-layer activation: deterministic, comparable in train mode."""
    L, I, H = 2, 3, 4
    lengths = [3, 5, 1]
    ref, ext = make_pair(I, H, L, bidirectional=True, dropout=1.0, device=device)
    x = padded_input(lengths, False, I, device, F32)
    hx = tuple(leaf(torch.randn(2 * L, 3, H, device=device)) for _ in range(2))
    got_out, got, got_grads = packed_forward_backward(ext, x, lengths, hx, False, False)
    exp_out, exp, exp_grads = packed_forward_backward(ref, x, lengths, hx, False, False)
    assert_dicts_close(got, exp, tols(F32)[0], "dropout=1 output")
    assert_dicts_close(got_grads, exp_grads, tols(F32)[1], "dropout=1 grad")
    ext.eval()
    with torch.no_grad():
        eval_out = ext(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)[0].data
    assert not torch.allclose(eval_out, got["out.data"])


# --- bad hx for packed input ---------------------------------------------------------

@pytest.mark.parametrize("which,batch", [("h0", 3), ("c0", 3), ("h0", 5), ("c0", 1)],
                         ids=["h0-B3", "c0-B3", "h0-B5", "c0-B1"])
@pytest.mark.parametrize("P", [0, 2], ids=["noproj", "proj"])
@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
def test_packed_bad_hx_batch(which, batch, P, enforce_sorted):
    """For packed input, hx's batch dimension must be the max batch (the number of
    sequences): a RuntimeError naming the expected and the actual size.

    torch.nn raises RuntimeError for most of these too, but with an unrelated
    message (an index or broadcast failure), and it silently accepts some
    (B=5 when unsorted: the extra row is dropped by the permutation; c0 with
    B=1 when sorted: broadcast); lstm_ext refuses them all, with the type torch
    uses where it does raise.
    """
    L, I, H = 2, 3, 4
    lengths = [3, 5, 1, 4] if not enforce_sorted else [5, 4, 3, 1]  # max batch 4
    ref, ext = make_pair(I, H, L, proj_size=P)
    packed = pack_padded_sequence(torch.randn(5, 4, I), lengths, enforce_sorted=enforce_sorted)
    sizes = {"h0": P or H, "c0": H}
    hx = {k: torch.zeros(L, 4, s) for k, s in sizes.items()}
    hx[which] = torch.zeros(L, batch, sizes[which])
    hx = (hx["h0"], hx["c0"])
    try:
        ref(packed, hx)
    except Exception as e:  # where torch.nn raises, it raises RuntimeError
        assert isinstance(e, RuntimeError), type(e)
    with pytest.raises(RuntimeError) as info:
        ext(packed, hx)
    assert_message(info.value, shape_re((L, 4, sizes[which])), shape_re((L, batch, sizes[which])))
    # and the right shapes are accepted
    good = (torch.zeros(L, 4, P or H), torch.zeros(L, 4, H))
    out, (h_n, c_n) = ext(packed, good)
    assert h_n.shape == (L, 4, P or H) and c_n.shape == (L, 4, H)


def test_packed_proj_hx_with_hidden_size_instead_of_proj_size():
    L, I, H, P = 1, 3, 4, 2
    ref, ext = make_pair(I, H, L, proj_size=P)
    packed = pack_padded_sequence(torch.randn(5, 3, I), [5, 2, 3], enforce_sorted=False)
    hx = (torch.zeros(L, 3, H), torch.zeros(L, 3, H))  # h0 must be [L, B, P]
    with pytest.raises(Exception) as ref_info:
        ref(packed, hx)
    with pytest.raises(type(ref_info.value)) as info:
        ext(packed, hx)
    assert isinstance(info.value, RuntimeError)
    assert_message(info.value, shape_re((L, 3, P)), shape_re((L, 3, H)))
