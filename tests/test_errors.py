"""Bad input: lstm_ext raises what torch.nn raises, before any kernel runs.

For every case the test first computes what torch.nn.LSTM / torch.nn.LSTMCell
raises for the same input, then requires lstm_ext to raise that exception type
(or a subclass) with a message naming the expected and the actual value.  A
TorchDispatchMode records every dispatched op, so the test can also require
that no lstm_ext kernel ran before the error.
"""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import (OpRecorder, assert_message, copy_params, dtype_re, expect_same_error, needs_cuda, num_re,
                     shape_re)
from lstm_ext.ops import SUPPORTED_DEVICE_TYPES


I, H, L, B, T = 7, 5, 2, 3, 4


@pytest.fixture
def pair():
    ref = nn.LSTM(I, H, L)
    return ref, copy_params(ref, lstm_ext.LSTM(I, H, L))


def test_recorder_sees_lstm_ext_kernels(pair):
    """Positive control: on valid input the recorder does see the lstm_ext ops,
    so an empty record in the tests below is meaningful."""
    _, ext = pair
    rec = OpRecorder()
    with rec:
        ext(torch.randn(T, B, I))
    assert rec.lstm_ext_ops(), [str(f) for f in rec.ops]


# --- input -------------------------------------------------------------------------

@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_wrong_feature_size(pair, batched):
    ref, ext = pair
    x = torch.randn(T, B, 11) if batched else torch.randn(T, 11)
    expect_same_error(lambda: ref(x), lambda: ext(x), num_re(7), num_re(11))


@pytest.mark.parametrize("rank", [1, 4])
def test_wrong_input_rank(pair, rank):
    ref, ext = pair
    x = torch.randn(*[T, B, I, 2][:rank]) if rank == 4 else torch.randn(I)
    expect_same_error(lambda: ref(x), lambda: ext(x), num_re(2), num_re(3), num_re(rank))


def test_zero_length_sequence(pair):
    ref, ext = pair
    x = torch.randn(0, B, I)
    expect_same_error(lambda: ref(x), lambda: ext(x), num_re(0))


# --- hx ------------------------------------------------------------------------------

@pytest.mark.parametrize("which,bad", [
    ("h0", (L, B + 1, H)),     # batch
    ("h0", (L, B, H + 1)),     # hidden
    ("c0", (L - 1, B, H)),     # layers
    ("c0", (L, B, H + 2)),
], ids=["h0-batch", "h0-hidden", "c0-layers", "c0-hidden"])
def test_wrong_hx_shape(pair, which, bad):
    ref, ext = pair
    x = torch.randn(T, B, I)
    good = torch.zeros(L, B, H)
    bad_t = torch.zeros(bad)
    hx = (bad_t, good) if which == "h0" else (good, bad_t)
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), shape_re((L, B, H)), shape_re(bad))


def test_wrong_hx_shape_unbatched(pair):
    ref, ext = pair
    x = torch.randn(T, I)
    hx = (torch.zeros(L, H + 3), torch.zeros(L, H))
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), num_re(H), num_re(H + 3))


@pytest.mark.parametrize("batched", [True, False], ids=["3d-input-2d-hx", "2d-input-3d-hx"])
def test_hx_rank_does_not_match_input(pair, batched):
    ref, ext = pair
    if batched:
        x, hx = torch.randn(T, B, I), (torch.zeros(L, H), torch.zeros(L, H))
    else:
        x, hx = torch.randn(T, I), (torch.zeros(L, 1, H), torch.zeros(L, 1, H))
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), num_re(2), num_re(3))


@pytest.mark.parametrize("kind", ["tensor-L2", "tensor-L1", "3-tuple", "1-tuple"])
def test_hx_not_a_pair(kind):
    layers = 1 if kind == "tensor-L1" else L
    ref = nn.LSTM(I, H, layers)
    ext = copy_params(ref, lstm_ext.LSTM(I, H, layers))
    x = torch.randn(T, B, I)
    h = torch.zeros(layers, B, H)
    hx, actual = {"tensor-L2": (h, r"Tensor"), "tensor-L1": (h, r"Tensor"),
                  "3-tuple": ((h, h, h), num_re(3)), "1-tuple": ((h,), num_re(1))}[kind]
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), r"(?i)two|pair|\b2\b|\(h_?0, c_?0\)",
                      actual)


# --- dtype ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.int64], ids=["f64", "i64"])
def test_input_dtype_differs_from_weights(pair, dtype):
    ref, ext = pair
    x = torch.randn(T, B, I).to(dtype)
    expect_same_error(lambda: ref(x), lambda: ext(x), dtype_re(dtype), dtype_re(torch.float32))


def test_input_dtype_differs_from_weights_f64_module():
    ref = nn.LSTM(I, H, L, dtype=torch.float64)
    ext = copy_params(ref, lstm_ext.LSTM(I, H, L, dtype=torch.float64))
    x = torch.randn(T, B, I)
    expect_same_error(lambda: ref(x), lambda: ext(x), dtype_re(torch.float64), dtype_re(torch.float32))


@pytest.mark.parametrize("which", ["both", "c0"])
def test_hx_dtype_differs_from_input(pair, which):
    ref, ext = pair
    x = torch.randn(T, B, I)
    h = torch.zeros(L, B, H)
    hd = h.double()
    hx = (hd, hd) if which == "both" else (h, hd)
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), dtype_re(torch.float64),
                      dtype_re(torch.float32))


def test_half_module_raises_clear_error():
    """float16 is not supported on the CPU (float32, float64 and bfloat16 are;
    torch.nn supports float16 too, so this cannot be compared with torch.nn:
    require a clear error instead)."""
    ext = lstm_ext.LSTM(I, H, L).half()
    with pytest.raises((TypeError, ValueError, RuntimeError, NotImplementedError)) as info:
        ext(torch.randn(T, B, I).half())
    assert_message(info.value, dtype_re(torch.float16))


# --- device --------------------------------------------------------------------------

OTHER_DEVICES = ["meta", pytest.param("cuda", marks=needs_cuda)]


@pytest.mark.parametrize("other", OTHER_DEVICES)
@pytest.mark.parametrize("what", ["input", "hx"])
def test_device_mismatch(pair, other, what):
    ref, ext = pair
    x = torch.randn(T, B, I)
    h = torch.zeros(L, B, H)
    if what == "input":
        x, hx = x.to(other), None
    else:
        hx = (h.to(other), h.to(other))
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), other, "cpu")


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_module_on_other_device_input_on_cpu(other):
    ref = nn.LSTM(I, H, L).to(other)
    ext = lstm_ext.LSTM(I, H, L).to(other)
    x = torch.randn(T, B, I)
    expect_same_error(lambda: ref(x), lambda: ext(x), other, "cpu")


# --- constructor ---------------------------------------------------------------------

def _ctor_error(kwargs, *patterns):
    full = dict(input_size=I, hidden_size=H)
    full.update(kwargs)
    return expect_same_error(lambda: nn.LSTM(**full), lambda: lstm_ext.LSTM(**full), *patterns)


@pytest.mark.parametrize("value", [0, -3])
def test_ctor_hidden_size_not_positive(value):
    _ctor_error(dict(hidden_size=value), "hidden_size", num_re(value), r"(?i)> ?0|>= ?1|greater than (zero|0)|positive|at least 1")


def test_ctor_input_size_not_positive():
    _ctor_error(dict(input_size=0), "input_size", num_re(0), r"(?i)> ?0|>= ?1|greater than (zero|0)|positive|at least 1")


@pytest.mark.parametrize("value", [0, -1])
def test_ctor_num_layers_not_positive(value):
    _ctor_error(dict(num_layers=value), "num_layers", num_re(value), r"(?i)> ?0|>= ?1|greater than (zero|0)|positive|at least 1")


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_ctor_dropout_out_of_range(value):
    _ctor_error(dict(num_layers=2, dropout=value), "dropout", num_re(value), r"\[0(\.0)?, ?1(\.0)?\]|between 0(\.0)? and 1")


@pytest.mark.parametrize("name,value", [("hidden_size", 4.0), ("input_size", 3.5), ("num_layers", 2.0)])
def test_ctor_non_int_sizes(name, value):
    _ctor_error({name: value}, r"\bint\b|integer", r"float")


# --- LSTMCell ---------------------------------------------------------------------------

@pytest.fixture
def cell_pair():
    ref = nn.LSTMCell(I, H)
    return ref, copy_params(ref, lstm_ext.LSTMCell(I, H))


def test_cell_wrong_feature_size(cell_pair):
    ref, ext = cell_pair
    x = torch.randn(B, 11)
    expect_same_error(lambda: ref(x), lambda: ext(x), num_re(7), num_re(11))


@pytest.mark.parametrize("rank", [0, 3])
def test_cell_wrong_input_rank(cell_pair, rank):
    ref, ext = cell_pair
    x = torch.randn(*[B, I, 2][:rank]) if rank else torch.tensor(1.0)
    expect_same_error(lambda: ref(x), lambda: ext(x), num_re(1), num_re(2), num_re(rank))


@pytest.mark.parametrize("which,bad", [("h", (B + 1, H)), ("h", (B, H + 1)), ("c", (B, H + 2))],
                         ids=["h-batch", "h-hidden", "c-hidden"])
def test_cell_wrong_hx_shape(cell_pair, which, bad):
    ref, ext = cell_pair
    x = torch.randn(B, I)
    good, bad_t = torch.zeros(B, H), torch.zeros(bad)
    hx = (bad_t, good) if which == "h" else (good, bad_t)
    differing = [(e, a) for e, a in zip((B, H), bad) if e != a][0]
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), num_re(differing[0]), num_re(differing[1]))


@pytest.mark.parametrize("kind", ["tensor", "3-tuple"])
def test_cell_hx_not_a_pair(cell_pair, kind):
    ref, ext = cell_pair
    x = torch.randn(B, I)
    h = torch.zeros(B, H)
    hx, actual = (h, r"Tensor") if kind == "tensor" else ((h, h, h), num_re(3))
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx), r"(?i)two|pair|\b2\b|tuple", actual)


def test_cell_input_dtype_differs_from_weights(cell_pair):
    ref, ext = cell_pair
    x = torch.randn(B, I).double()
    expect_same_error(lambda: ref(x), lambda: ext(x), dtype_re(torch.float64), dtype_re(torch.float32))


@pytest.mark.parametrize("name,value", [("hidden_size", 4.0), ("input_size", 3.5)])
def test_cell_ctor_non_int_sizes(name, value):
    full = dict(input_size=I, hidden_size=H)
    full.update({name: value})
    expect_same_error(lambda: nn.LSTMCell(**full), lambda: lstm_ext.LSTMCell(**full), r"float")


@pytest.mark.skipif("cuda" in SUPPORTED_DEVICE_TYPES,
                    reason="this build has CUDA kernels: tests/test_cuda.py covers cuda_path")
def test_cuda_path_without_cuda_kernels_raises_clearly():
    with pytest.raises(RuntimeError, match=r"no CUDA kernels.*supports: cpu, meta"):
        lstm_ext.cuda_path(4, 512)
