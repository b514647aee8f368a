"""The native bfloat16 LSTM forward (AVX512-BF16) against the upcast path.

On CPUs with avx512_bf16 a bfloat16 lstm_forward runs natively: bfloat16 x,
h and weights, float32 accumulation (vdpbf16ps), float32 cell state, and h_t
rounded to bfloat16 once per step. LSTM_EXT_CPU_KERNEL=reference (or any
float32 kernel's name) runs the upcast path instead. Both must stay within the
error budget of test_bf16.py against a float32 reference (torch.nn.LSTM in
float32 on the same bfloat16 values, upcast):

    max|ours - ref| <= 2 * max|torch.nn bf16 - ref| + 2**-10 * max|ref|

Where the native kernel is not available only the upcast path runs.
"""
import pytest
import torch
from torch import nn

import lstm_ext  # noqa: F401  (registers the ops)
from low_precision import FACTOR, FLOOR

BF16 = torch.bfloat16
OPS = torch.ops.lstm_ext
NATIVE = "avx512bf16"
HAVE_NATIVE = NATIVE in OPS.cpu_kernels()
PATHS = [NATIVE, "reference"] if HAVE_NATIVE else ["reference"]


def _bf16(*shape, scale=1.0, gen=None):
    return (scale * torch.randn(*shape, generator=gen)).to(BF16)


def _args(T, B, I, H, P=0, lengths=None, bias=True, seed=0):
    """Op arguments in bfloat16: (x, w_ih, w_hh, b, h0, c0, batch_sizes, w_hr)."""
    g = torch.Generator().manual_seed(seed)
    Ph = P or H
    k = 1.0 / H ** 0.5
    bs = None
    if lengths is None:
        x = _bf16(T, B, I, gen=g)
    else:
        bs = torch.tensor([sum(1 for n in lengths if n > t) for t in range(max(lengths))])
        x = _bf16(int(bs.sum()), I, gen=g)
        B = int(bs[0])
    return (x, _bf16(4 * H, I, scale=k, gen=g), _bf16(4 * H, Ph, scale=k, gen=g),
            _bf16(4 * H, scale=k, gen=g) if bias else None, _bf16(B, Ph, scale=0.5, gen=g),
            _bf16(B, H, scale=0.5, gen=g), bs, _bf16(Ph, H, scale=k, gen=g) if P else None)


def _torch_lstm(args, reverse, dtype):
    """torch.nn.LSTM in ``dtype`` on the same values: (y, h_n, c_n) of the
    direction the op runs (the reverse half of a bidirectional LSTM whose two
    directions share the weights)."""
    x, w_ih, w_hh, b, h0, c0, bs, w_hr = args
    H, I = w_hh.shape[0] // 4, w_ih.shape[1]
    P = w_hr.shape[0] if w_hr is not None else 0
    D = 2 if reverse else 1
    m = nn.LSTM(I, H, proj_size=P, bias=b is not None, bidirectional=reverse, dtype=dtype)
    with torch.no_grad():
        for sfx in ("_l0", "_l0_reverse")[:D]:
            getattr(m, "weight_ih" + sfx).copy_(w_ih)
            getattr(m, "weight_hh" + sfx).copy_(w_hh)
            if b is not None:
                getattr(m, "bias_ih" + sfx).copy_(b)
                getattr(m, "bias_hh" + sfx).zero_()
            if P:
                getattr(m, "weight_hr" + sfx).copy_(w_hr)
        inp = x.to(dtype)
        if bs is not None:
            inp = nn.utils.rnn.PackedSequence(inp, bs)
        hx = (h0.to(dtype).expand(D, *h0.shape).contiguous(), c0.to(dtype).expand(D, *c0.shape).contiguous())
        y, (h_n, c_n) = m(inp, hx)
    if bs is not None:
        y = y.data
    Ph = P or H
    y = y[..., (D - 1) * Ph:]
    return [t.float() for t in (y, h_n[D - 1], c_n[D - 1])]


def _ours(args, reverse, save, path, monkeypatch):
    x, w_ih, w_hh, b, h0, c0, bs, w_hr = args
    monkeypatch.setenv("LSTM_EXT_CPU_KERNEL", path)
    return OPS.lstm_forward(x, w_ih, w_hh, b, h0, c0, reverse, save, bs, w_hr)


CASES = {
    # name: (T, B, I, H, P, lengths, bias)
    "T12-B3-I16-H16": (12, 3, 16, 16, 0, None, True),
    "odd-H17": (9, 4, 12, 17, 0, None, True),
    "odd-H33-B7": (7, 7, 20, 33, 0, None, True),
    "odd-I5": (8, 5, 5, 24, 0, None, True),
    "T1": (1, 6, 16, 20, 0, None, True),
    "B13-I40-H70": (6, 13, 40, 70, 0, None, True),
    "B1-I256-H256": (6, 1, 256, 256, 0, None, True),
    "B64-I96-H48-nobias": (4, 64, 96, 48, 0, None, False),
    "packed": (0, 0, 11, 21, 0, [7, 5, 5, 2, 1], True),
    "proj-P8": (10, 3, 16, 16, 8, None, True),
    "proj-odd-P5-H33": (6, 7, 9, 33, 5, None, True),
    "packed-proj": (0, 0, 6, 18, 7, [6, 6, 3], True),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", PATHS)
def test_forward_error_budget(path, case, reverse, monkeypatch):
    T, B, I, H, P, lengths, bias = CASES[case]
    args = _args(T, B, I, H, P, lengths, bias, seed=len(case))
    ref = _torch_lstm(args, reverse, torch.float32)
    got_torch = _torch_lstm(args, reverse, BF16)
    y, h_n, c_n, gates, cells = _ours(args, reverse, True, path, monkeypatch)
    assert y.dtype == h_n.dtype == c_n.dtype == BF16
    assert gates.dtype == cells.dtype == torch.float32
    worst = 0.0
    for name, got, want, r in zip(("y", "h_n", "c_n"), (y, h_n, c_n), got_torch, ref):
        assert got.shape == r.shape, name
        err_torch = (want - r).abs().max().item()
        err = (got.float() - r).abs().max().item()
        bound = FACTOR * err_torch + FLOOR * r.abs().max().item()
        worst = max(worst, bound)
        assert err <= bound, f"{path} {name}: {err:.3e} > {bound:.3e} (torch.nn bf16: {err_torch:.3e})"
    # the saved activations and cells (float32) against the float32 op on the
    # upcast values, within the same budget
    monkeypatch.setenv("LSTM_EXT_CPU_KERNEL", "reference")
    x, w_ih, w_hh, b, h0, c0, bs, w_hr = args
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    _, _, _, gates32, cells32 = OPS.lstm_forward(f32(x), f32(w_ih), f32(w_hh), f32(b), f32(h0), f32(c0),
                                                 reverse, True, bs, f32(w_hr))
    assert gates.shape == gates32.shape and cells.shape == cells32.shape
    assert (gates - gates32).abs().max().item() <= worst
    assert (cells - cells32).abs().max().item() <= 2 * worst


@pytest.mark.parametrize("path", PATHS)
def test_inference_matches_training_forward(path, monkeypatch):
    """save_for_backward changes what is stored, not the outputs."""
    args = _args(7, 5, 13, 19, seed=3)
    a = _ours(args, False, True, path, monkeypatch)
    b = _ours(args, False, False, path, monkeypatch)
    for t, u in zip(a[:3], b[:3]):
        assert torch.equal(t, u)
    assert b[3].numel() == b[4].numel() == 0 and b[3].dtype == b[4].dtype == torch.float32


def test_native_is_the_default_for_bf16(monkeypatch):
    """Where avx512bf16 is usable a bf16 forward runs natively by default (and
    differs from the upcast path in its roundings); elsewhere the default is
    the upcast path."""
    args = _args(6, 5, 12, 18, seed=4)
    default = _ours(args, False, True, "auto", monkeypatch)
    upcast = _ours(args, False, True, "reference", monkeypatch)
    if HAVE_NATIVE:
        native = _ours(args, False, True, NATIVE, monkeypatch)
        assert all(torch.equal(a, b) for a, b in zip(native, default))
        # the upcast path keeps h_{t-1} in float32 on its way to the next step
        assert not torch.equal(native[4], upcast[4])
    else:
        # the upcast path on the default float32 kernel
        best_float = [k for k in OPS.cpu_kernels() if "bf16" not in k][0]
        upcast_default = _ours(args, False, True, best_float, monkeypatch)
        torch.testing.assert_close(default, upcast_default, atol=0, rtol=0)


def test_native_kernel_request(monkeypatch):
    """LSTM_EXT_CPU_KERNEL=avx512bf16 runs the native path where it exists
    (float32 calls then take the default float32 kernel) and is an error
    naming the available kernels elsewhere."""
    monkeypatch.setenv("LSTM_EXT_CPU_KERNEL", NATIVE)
    args = _args(3, 2, 4, 5)[:6]
    if HAVE_NATIVE:
        assert OPS.lstm_forward(*args, False, False)[0].dtype == BF16
        assert OPS.lstm_forward(*[a.float() for a in args], False, False)[0].dtype == torch.float32
    else:
        with pytest.raises(RuntimeError, match="not available"):
            OPS.lstm_forward(*args, False, False)


def test_module_training_with_native_forward():
    """A module's bfloat16 forward (native where available) and its float32
    backward: gradients within the budget of test_bf16.py."""
    from low_precision import assert_as_close_as_torch

    x = _bf16(9, 7, 5)
    hx = (_bf16(1, 7, 17, scale=0.5), _bf16(1, 7, 17, scale=0.5))
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, x, hx, input_size=5, hidden_size=17)
