"""The tensor-core persistent LSTM kernels (LSTM_EXT_CUDA_PATH=tensorcore,
csrc/cuda/tensorcore.h).

Two halves:

* the planner (csrc/cuda/tensorcore_plan.h), exposed in every build as
  ``torch.ops.lstm_ext.tensorcore_plan``: pure arithmetic, so its invariants
  are checked here on any machine, for the devices the kernels are meant for
  (H200: 132 SMs, 232448 bytes of opt-in shared memory per block; A100: 108
  SMs, 166912 bytes);
* parity and determinism of the kernels themselves (need a GPU and a CUDA
  build; skipped otherwise): outputs and every gradient against a float64
  reference, in bfloat16 and float16 (also no worse than twice cuDNN's own
  error) and float32 as TF32, and identical bits on repeated runs.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from helpers import backprop, leaf, needs_cuda
from low_precision import assert_as_close_as_torch

PLAN = torch.ops.lstm_ext.tensorcore_plan
FIELDS = ("fits", "blocks", "units", "batch_pad", "tile_rows", "kchunk", "chunks", "ksplit",
          "weight_bytes", "smem_bytes", "why_not")

H200 = dict(sms=132, smem_optin=232448)
A100 = dict(sms=108, smem_optin=166912)
DEVICES = {"H200": H200, "A100": A100}
DTYPES = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4}
WARPS, MTILES_PER_WARP, NTILES_PER_WARP = 8, 2, 4


def plan(B, H, dtype=torch.bfloat16, backward=False, device=H200):
    return dict(zip(FIELDS, PLAN(B, H, dtype, backward, device["sms"], device["smem_optin"])))


def align16(n):
    return (n + 15) // 16 * 16


def round_up(n, m):
    return (n + m - 1) // m * m


def expected_smem(p, B, H, elem_bytes, backward):
    """The shared memory the header's formula gives for the plan's choices."""
    U, tile, kchunk, ksplit = p["units"], p["tile_rows"], p["kchunk"], p["ksplit"]
    K = 4 * H if backward else H
    pad = 16 // elem_bytes
    w_rows = U if backward else 4 * U
    weights = align16(w_rows * (round_up(K, 16) + pad) * elem_bytes)
    stage = align16(tile * (kchunk + pad) * elem_bytes)
    acc = align16(ksplit * tile * w_rows * 4)
    state = align16(B * U * 4 * (2 if backward else 1))
    return weights, weights + stage + acc + state


# --- the planner, on the CPU ------------------------------------------------------------------

SHAPES_B = [1, 3, 8, 9, 16, 17, 48, 64, 100, 128, 256]
SHAPES_H = [1, 7, 33, 64, 100, 256, 257, 512, 768, 1000, 1024]


@pytest.mark.parametrize("device", list(DEVICES), ids=list(DEVICES))
@pytest.mark.parametrize("dtype", list(DTYPES), ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_plan_invariants(device, dtype, backward):
    dev, eb = DEVICES[device], DTYPES[dtype]
    quantum, granule = (8, 16) if backward else (4, 8)
    for H in SHAPES_H:
        for B in SHAPES_B:
            p = plan(B, H, dtype, backward, dev)
            where = f"B={B} H={H} {p}"
            K = 4 * H if backward else H
            w_rows = p["units"] if backward else 4 * p["units"]
            if not p["fits"]:
                assert "shared memory" in p["why_not"], where
                continue
            assert p["why_not"] == "", where
            U = p["units"]
            # whole gate quartets, whole MMA tiles: 4U forward rows are whole
            # 16-row m-tiles, U backward columns whole 8-wide n-tiles
            assert U % quantum == 0 and U >= quantum, where
            # the blocks cover H, each owns at least one real unit, one per SM at most
            assert p["blocks"] == math.ceil(H / U) and (p["blocks"] - 1) * U < H <= p["blocks"] * U, where
            assert p["blocks"] <= dev["sms"], where
            # the batch padded to the MMA's granule (N = 8 forward, M = 16 backward)
            assert p["batch_pad"] % granule == 0 and 0 <= p["batch_pad"] - B < granule, where
            assert p["tile_rows"] % granule == 0 and granule <= p["tile_rows"] <= p["batch_pad"], where
            # K chunks: multiples of 16 that cover K
            assert p["kchunk"] % 16 == 0 and p["chunks"] == math.ceil(round_up(K, 16) / p["kchunk"]), where
            # the K split keeps the work items within the block's 8 warps
            ks = p["ksplit"]
            assert ks in (1, 2, 4, 8), where
            m_tiles = p["tile_rows"] // 16 if backward else w_rows // 16
            n_tiles = w_rows // 8 if backward else p["tile_rows"] // 8
            items = math.ceil(m_tiles / MTILES_PER_WARP) * math.ceil(n_tiles / NTILES_PER_WARP)
            assert ks == 1 or items * ks <= WARPS, where
            # the W_hh slice per block (padding included) fits, with the rest
            weights, total = expected_smem(p, B, H, eb, backward)
            assert p["weight_bytes"] == weights >= w_rows * K * eb, where
            assert p["smem_bytes"] == total <= dev["smem_optin"], where


@pytest.mark.parametrize("dtype", list(DTYPES), ids=["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_plan_covers_the_issue_grid_on_h200(dtype, backward):
    """Every target shape (B <= 256, H in 256, 512, 1024) fits an H200, forward
    and backward, in every dtype (fp32 as TF32)."""
    for H in (256, 512, 1024):
        for B in (1, 4, 8, 16, 64, 128, 256):
            p = plan(B, H, dtype, backward, H200)
            assert p["fits"], (B, H, p)


def test_plan_h200_bf16_key_shapes():
    """The layouts benchmarks/NOTES.md's floors are computed for."""
    p = plan(64, 1024)  # forward: 128 blocks of 8 units (32 gate rows, 64.5 KiB of W_hh)
    assert (p["blocks"], p["units"], p["tile_rows"], p["chunks"]) == (128, 8, 64, 1)
    assert p["weight_bytes"] == 32 * (1024 + 8) * 2
    p = plan(8, 1024)
    assert (p["blocks"], p["units"], p["batch_pad"], p["tile_rows"], p["ksplit"]) == (128, 8, 8, 8, 8)
    p = plan(8, 512)
    assert (p["blocks"], p["units"], p["ksplit"]) == (128, 4, 8)
    p = plan(8, 1024, backward=True)  # backward: 128 blocks of 8 columns of W_hh (4H long)
    assert (p["blocks"], p["units"], p["batch_pad"], p["kchunk"], p["chunks"]) == (128, 8, 16, 4096, 1)
    p = plan(256, 1024)  # 256 rows in 4 equal tiles, not 3 x 72 + 40
    assert (p["tile_rows"], p["fits"]) == (64, True)


def test_plan_fp32_backward_h1024_chunks_k_on_h200():
    """fp32 (TF32) backward at H=1024: a 16-row tile of 4H = 4096 fp32 columns
    does not fit beside the 128 KiB slice, so K is staged in chunks."""
    p = plan(64, 1024, torch.float32, backward=True)
    assert p["fits"] and p["chunks"] > 1 and p["kchunk"] * p["chunks"] >= 4096, p


def test_plan_refuses_too_large_hidden():
    for H, dtype in ((2048, torch.bfloat16), (4096, torch.float16), (2048, torch.float32)):
        for backward in (False, True):
            p = plan(8, H, dtype, backward)
            assert not p["fits"]
            assert "W_hh slice per block" in p["why_not"] and "does not fit in shared memory" in p["why_not"]
            assert "227 KiB per block" in p["why_not"], p["why_not"]
    # a device without the opt-in (48 KiB) cannot hold H=1024's slice either
    p = plan(8, 1024, device=dict(sms=132, smem_optin=48 * 1024))
    assert not p["fits"] and "shared memory" in p["why_not"]


def test_plan_a100_fp32_backward_h1024_is_refused_with_a_reason():
    p = plan(8, 1024, torch.float32, backward=True, device=A100)
    assert not p["fits"] and "shared memory" in p["why_not"]
    assert plan(8, 1024, torch.bfloat16, backward=True, device=A100)["fits"]


def test_plan_batch_padding():
    for B, fwd, bwd in ((1, 8, 16), (8, 8, 16), (9, 16, 16), (16, 16, 16), (17, 24, 32), (100, 104, 112)):
        assert plan(B, 256)["batch_pad"] == fwd
        assert plan(B, 256, backward=True)["batch_pad"] == bwd


def test_plan_more_shared_memory_never_hurts():
    for H in (256, 700, 1024, 1500):
        fits = [plan(32, H, device=dict(sms=132, smem_optin=kib * 1024))["fits"] for kib in (48, 100, 164, 227)]
        assert fits == sorted(fits), (H, fits)


def test_plan_degenerate_inputs():
    assert plan(0, 64)["why_not"] == "empty batch or hidden size"
    assert plan(4, 0)["why_not"] == "empty batch or hidden size"
    assert "no multiprocessors" in plan(4, 64, device=dict(sms=0, smem_optin=232448))["why_not"]
    p = dict(zip(FIELDS, PLAN(4, 64, torch.float64, False, 132, 232448)))
    assert not p["fits"] and "no Double kernel" in p["why_not"]
    with pytest.raises(RuntimeError, match="tensorcore_plan: smem_optin must be >= 0, got -1"):
        PLAN(4, 64, torch.bfloat16, False, 132, -1)


def test_plan_blocks_use_the_machine():
    """H=1024 on an H200: 128 blocks of 8 units (of 132 SMs); on an A100 (108
    SMs) 8 units would need 128 blocks: forward 86 blocks of 12 units (whole
    16-row m-tiles), backward 64 of 16 (whole 8-wide n-tiles)."""
    assert (plan(8, 1024)["blocks"], plan(8, 1024)["units"]) == (128, 8)
    assert (plan(8, 1024, backward=True)["blocks"], plan(8, 1024, backward=True)["units"]) == (128, 8)
    p = plan(8, 1024, device=A100)
    assert (p["blocks"], p["units"]) == (86, 12)
    p = plan(8, 1024, backward=True, device=A100)
    assert (p["blocks"], p["units"]) == (64, 16)


# --- the kernels, on a GPU --------------------------------------------------------------------

LOW = [torch.bfloat16, torch.float16]
# TF32 operands carry 10 mantissa bits (unit roundoff 2^-11); over a few
# hundred-term dot products and a dozen steps the error stays near 1e-3 of the
# largest value, which is what the issue asks for. bf16/fp16: generous float64
# sanity bounds; the tight check is against cuDNN's own error.
REL_TOL = {torch.float32: (3e-3, 1e-2), torch.float16: (1e-2, 2e-2), torch.bfloat16: (4e-2, 8e-2)}


@pytest.fixture
def tensorcore(monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "tensorcore")


@pytest.fixture
def tf32():
    """TF32 allowed for cuDNN RNNs (torch's default; conftest switches it off)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32 = before


def _randn(*shape, dtype=torch.float32, scale=1.0):
    return (scale * torch.randn(*shape, device="cuda")).to(dtype)


def _results(m, x, hx, packed_lengths=None, cot_dtype=None):
    """Outputs and every gradient (x, h0, c0, parameters) of one training step,
    with fixed cotangents (drawn in cot_dtype, default the outputs' dtype, so a
    float64 run can see the low-precision run's values)."""
    data = leaf(x)
    states = tuple(leaf(h) for h in hx)
    inp = data if packed_lengths is None else pack_padded_sequence(data, packed_lengths, enforce_sorted=False)
    y, (h, c) = m(inp, states)
    y = y if packed_lengths is None else y.data
    wrt = {"x": data, "h0": states[0], "c0": states[1], **dict(m.named_parameters())}
    outs = {"y": y, "h": h, "c": c}
    return {k: v.detach() for k, v in outs.items()}, backprop(outs, wrt, cot_dtype=cot_dtype)


def _float64_results(ext, x, hx, packed_lengths=None):
    ref = nn.LSTM(ext.input_size, ext.hidden_size, num_layers=ext.num_layers,
                  bidirectional=ext.bidirectional, dtype=torch.float64)
    ref.load_state_dict({k: v.double().cpu() for k, v in ext.state_dict().items()})
    x64, hx64 = x.detach().double().cpu(), tuple(h.detach().double().cpu() for h in hx)
    return _results(ref, x64, hx64, packed_lengths, cot_dtype=x.dtype)


def _assert_close_to_float64(got, want, dtype, label):
    out_tol, grad_tol = REL_TOL[dtype]
    for part, tol in ((0, out_tol), (1, grad_tol)):
        for k in want[part]:
            g, w = got[part][k].double().cpu(), want[part][k]
            assert g.shape == w.shape, (label, k, g.shape, w.shape)
            err, scale = (g - w).abs().max().item(), w.abs().max().item()
            assert err <= tol * max(scale, 1e-3), f"{label} {k}: max err {err:.3e} > {tol} * max|ref| {scale:.3e}"


SHAPES = [(1, 64), (3, 33), (8, 512), (20, 256), (9, 1024)]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "tf32"])
@pytest.mark.parametrize("B,H", SHAPES, ids=[f"B{b}-H{h}" for b, h in SHAPES])
def test_tensorcore_matches_float64(tensorcore, tf32, dtype, B, H):
    """Both directions (the reverse kernel too), hx given, forward and backward."""
    assert lstm_ext.cuda_path(B, H, dtype).startswith("tensorcore (")
    assert lstm_ext.cuda_path(B, H, dtype, backward=True).startswith("tensorcore (")
    ext = lstm_ext.LSTM(24, H, bidirectional=True, device="cuda", dtype=dtype)
    x = _randn(9, B, 24, dtype=dtype)
    hx = (_randn(2, B, H, dtype=dtype, scale=0.5), _randn(2, B, H, dtype=dtype, scale=0.5))
    _assert_close_to_float64(_results(ext, x, hx), _float64_results(ext, x, hx), dtype, f"B{B} H{H}")


@needs_cuda
@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_tensorcore_low_precision_no_worse_than_cudnn(tensorcore, dtype):
    """Within 2x cuDNN's own error in the same dtype (float32 reference)."""
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(50, 8, 128, dtype=dtype),
                             (_randn(2, 8, 512, dtype=dtype, scale=0.5), _randn(2, 8, 512, dtype=dtype, scale=0.5)),
                             dtype=dtype, device="cuda", input_size=128, hidden_size=512, bidirectional=True)


@needs_cuda
def test_tensorcore_several_tiles_and_k_chunks(tensorcore, tf32):
    """B=48 H=1024 fp32 (TF32): several row tiles per step forward, K staged in
    chunks backward (plan: test_plan_fp32_backward_h1024_chunks_k_on_h200)."""
    ext = lstm_ext.LSTM(32, 1024, device="cuda")
    x = _randn(5, 48, 32)
    hx = (_randn(1, 48, 1024, scale=0.5), _randn(1, 48, 1024, scale=0.5))
    _assert_close_to_float64(_results(ext, x, hx), _float64_results(ext, x, hx), torch.float32, "B48 H1024")


@needs_cuda
def test_tensorcore_packed_unsorted_bidirectional(tensorcore):
    lengths = torch.tensor([5, 12, 3, 9, 12, 1])
    ext = lstm_ext.LSTM(16, 96, bidirectional=True, device="cuda", dtype=torch.bfloat16)
    x = _randn(12, 6, 16, dtype=torch.bfloat16)
    hx = (_randn(2, 6, 96, dtype=torch.bfloat16, scale=0.5), _randn(2, 6, 96, dtype=torch.bfloat16, scale=0.5))
    _assert_close_to_float64(_results(ext, x, hx, lengths), _float64_results(ext, x, hx, lengths),
                             torch.bfloat16, "packed")


@needs_cuda
def test_tensorcore_many_steps_two_layers(tensorcore):
    """T=300: rounding accumulates over the steps; no worse than cuDNN's."""
    dtype = torch.bfloat16
    hx = (_randn(2, 4, 256, dtype=dtype, scale=0.5), _randn(2, 4, 256, dtype=dtype, scale=0.5))
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(300, 4, 16, dtype=dtype), hx, dtype=dtype,
                             device="cuda", input_size=16, hidden_size=256, num_layers=2)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "tf32"])
def test_tensorcore_repeated_runs_are_identical(tensorcore, tf32, dtype):
    """Fixed-order K reductions and no atomics: the same bits every run (a
    moving result would be a race)."""
    ext = lstm_ext.LSTM(32, 512, bidirectional=True, device="cuda", dtype=dtype)
    x = _randn(20, 16, 32, dtype=dtype)
    hx = (_randn(2, 16, 512, dtype=dtype), _randn(2, 16, 512, dtype=dtype))
    first = _results(ext, x, hx)
    for _ in range(3):
        again = _results(ext, x, hx)
        for part in (0, 1):
            for k in first[part]:
                assert torch.equal(again[part][k], first[part][k]), k


@needs_cuda
def test_auto_never_takes_the_tensorcore_path(monkeypatch):
    monkeypatch.delenv("LSTM_EXT_CUDA_PATH", raising=False)
    for B, H in ((1, 256), (8, 1024), (64, 1024)):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for backward in (False, True):
                assert not lstm_ext.cuda_path(B, H, dtype, backward=backward).startswith("tensorcore")


@needs_cuda
def test_forced_tensorcore_path_refuses_what_it_cannot_run(tensorcore):
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore.*TF32.*allow_tf32"):
        lstm_ext.cuda_path(8, 512, torch.float32)  # conftest: strict float32
    m = lstm_ext.LSTM(16, 64, device="cuda")
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore.*TF32"):
        m(_randn(5, 3, 16))  # raises in the layer too, before any kernel
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore.*float64"):
        lstm_ext.cuda_path(8, 512, torch.float64)
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore.*proj_size"):
        lstm_ext.cuda_path(8, 512, torch.bfloat16, proj_size=128)
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore.*W_hh slice per block.*shared memory"):
        lstm_ext.cuda_path(8, 4096, torch.bfloat16)
