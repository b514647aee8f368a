"""Property-based tests (Hypothesis): parity with torch.nn over random
configurations, and a fuzzer of malformed input.

* Parity: random LSTM / RNN (tanh, relu) / GRU configurations (T 1-64, B 0-9, I 1-40,
  H 1-64, 1-3 layers, uni-/bidirectional, batch_first, bias, hx or not,
  contiguous / transposed / step-2 input and states, proj_size for the LSTM,
  unbatched 2-D input now and then); outputs and the gradients of the input,
  h0/c0 and every parameter are compared with torch.nn's, in float64 (the
  reference loops, tight tolerances) and float32 (the fused kernels).  An
  empty batch (B=0, drawn and explicit examples): torch.nn returns empty
  results, and lstm_ext must return the same.
* Fuzzer: LSTM, RNN, GRU, LSTMCell, RNNCell and GRUCell called with wrong ranks, sizes,
  dtypes, devices, hx structures, NaN/inf values and odd strides: lstm_ext
  must raise what torch.nn raises (the same type or a subclass, with a
  message, before any lstm_ext kernel runs) or return what torch.nn returns
  (NaN-aware), forward and backward, without modifying its arguments.  Every
  case runs in-process: a crash fails the whole run, and a hang is turned into
  a failure with a traceback.  The few tolerated differences are named in
  fuzz_strategies.py (documented ones and torch.nn's own laxness).  Bugs the
  fuzzer found keep a minimal reproducer as a plain test in this file.

Deterministic: every test is derandomized (fixed examples, no example
database), and tensor values come from seeded torch.Generators.
``PYTHONPATH=. python3 -m pytest -q tests/test_fuzz.py`` (add
``--hypothesis-show-statistics`` to see what the examples covered).
"""
import faulthandler

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from torch import nn

import lstm_ext
from fuzz_strategies import (EDIT_KINDS, KINDS, ParityConfig, check_fuzz_case, check_parity, fuzz_cases,
                             parity_configs)
from helpers import DEVICES, F32_GRAD, expect_same_error, module_pair

FUZZ_SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# A hang inside a kernel would stall CI: dump every thread's stack and exit instead.
HANG_TIMEOUT_S = 600

pytestmark = [
    # torch.nn's LSTM with proj_size warns that oneDNN does not support it.
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning"),
    # the fuzzer casts inputs between dtypes, complex ones too.
    pytest.mark.filterwarnings("ignore:Casting complex values to real discards:UserWarning"),
]


@pytest.fixture(autouse=True)
def _hang_guard(request):
    if float(request.config.getini("faulthandler_timeout") or 0) > 0:
        yield  # pytest's own faulthandler_timeout is in charge
        return
    faulthandler.dump_traceback_later(HANG_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# =============================================================================== parity


def _parity(cfg):
    event(f"B={cfg.B}" if cfg.B in (None, 0) else "B>0")
    event(f"proj_size>0: {cfg.proj_size > 0}")
    check_parity(cfg)


def empty_batch(mode, dtype, **overrides):
    """An explicit B=0 example (torch.nn returns empty results for these; were it
    to raise, lstm_ext would have to raise the same type: see check_parity)."""
    cfg = dict(mode=mode, T=5, B=0, I=3, H=4, L=2, bidirectional=True, batch_first=False, bias=True,
               use_hx=False, layout="contig", proj_size=0, dtype=dtype, seed=0)
    cfg.update(overrides)
    return example(cfg=ParityConfig(**cfg))


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("LSTM",), dtypes=("float64",)))
@empty_batch("LSTM", "float64")
@empty_batch("LSTM", "float64", use_hx=True, batch_first=True, layout="transposed")
@empty_batch("LSTM", "float64", use_hx=True, proj_size=2, L=3, layout="step")
@empty_batch("LSTM", "float64", bidirectional=False, batch_first=True, proj_size=1, L=1)
def test_lstm_parity_f64(cfg):
    _parity(cfg)


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("RNN_TANH", "RNN_RELU"), dtypes=("float64",)))
@empty_batch("RNN_TANH", "float64", use_hx=True, batch_first=True)
@empty_batch("RNN_RELU", "float64", bidirectional=False, layout="step")
def test_rnn_parity_f64(cfg):
    _parity(cfg)


@settings(max_examples=60, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("GRU",), dtypes=("float64",)))
@empty_batch("GRU", "float64")
@empty_batch("GRU", "float64", use_hx=True, batch_first=True, layout="transposed", L=3)
def test_gru_parity_f64(cfg):
    _parity(cfg)


@settings(max_examples=40, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("LSTM",), dtypes=("float32",)))
@empty_batch("LSTM", "float32", use_hx=True, batch_first=True, proj_size=3)
def test_lstm_parity_f32(cfg):
    _parity(cfg)


@settings(max_examples=40, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("RNN_TANH", "RNN_RELU"), dtypes=("float32",)))
@empty_batch("RNN_RELU", "float32", use_hx=True, layout="transposed")
def test_rnn_parity_f32(cfg):
    _parity(cfg)


@settings(max_examples=40, **FUZZ_SETTINGS)
@given(cfg=parity_configs(modes=("GRU",), dtypes=("float32",)))
@empty_batch("GRU", "float32", use_hx=True, layout="step", bidirectional=False)
def test_gru_parity_f32(cfg):
    _parity(cfg)


# =============================================================================== fuzzer


# Every module kind x every kind of edit ("none": a valid call, which is where the
# cells' parity is tested), 20 examples each (2,040 cases per device, ~15 s on
# the CPU; 100 each were run once, clean): a bounded run covers them all. On
# CUDA, lstm_ext runs on the GPU and torch.nn on the CPU is the oracle (cuDNN
# refuses strided hx, which lstm_ext accepts), and the "meta" edits leave a
# tensor on the CPU instead: a device mismatch.
@pytest.mark.parametrize("edit", ("none",) + EDIT_KINDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, **FUZZ_SETTINGS)
@given(data=st.data())
def test_malformed_input_fuzz(device, kind, edit, data):
    case = data.draw(fuzz_cases(kinds=(kind,), first_edit=edit), label="case")
    event(f"outcome: {check_fuzz_case(case, device)}")


# =============================================================================== reproducers
# Minimal reproducers of the lstm_ext bugs the fuzzer found, kept as plain tests.


def pair(kind, *args, **kwargs):
    return module_pair(getattr(nn, kind), getattr(lstm_ext, kind), *args, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_input_not_a_tensor(kind):
    # torch.nn: AttributeError: 'NoneType' object has no attribute 'dim'
    ref, ext = pair(kind, 3, 4)
    expect_same_error(lambda: ref(None), lambda: ext(None))


@pytest.mark.parametrize("kind,x,hx", [
    # torch.nn: ValueError: LSTMCell: Expected hx[0] to be 1D or 2D, got 3D instead
    ("LSTMCell", (2, 3), [(1, 2, 4), (1, 2, 4)]),
    # torch.nn: ValueError: RNNCell: Expected hidden to be 1D or 2D, got 3D instead
    ("RNNCell", (2, 3), [(1, 2, 4)]),
    # torch.nn: IndexError: Dimension out of range (expected to be in range of [-1, 0], but got 1)
    ("RNNCell", (2, 3), [(2,)]),
], ids=["LSTMCell-3d-hx", "RNNCell-3d-hx", "RNNCell-1d-hx-2d-input"])
def test_cell_hx_rank(kind, x, hx):
    ref, ext = pair(kind, 3, 4)
    x = torch.randn(x)
    hx = tuple(torch.zeros(s) for s in hx)
    hx = hx if kind == "LSTMCell" else hx[0]
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx))


# Two things wrong at once: the checks run in torch.nn's order (input rank, hx's
# structure and rank, input dtype, feature size, state sizes, devices), so the
# first error is torch.nn's first and the exception type is the same.  Before,
# lstm_ext checked the whole input first and raised the other error.
@pytest.mark.parametrize("kind,x,hx", [
    # wrong feature size and dtype. torch.nn: ValueError (dtype)
    ("LSTM", torch.randn(5, 2, 7, dtype=torch.float64), None),
    # wrong feature size and hx a 1-tuple. torch.nn: AttributeError ('tuple' object has no attribute 'dim')
    ("RNN", torch.randn(5, 2, 7), (torch.zeros(1, 2, 4),)),
    # int64 input and 2-D hx for 3-D input. torch.nn: RuntimeError (hx should be 3-D)
    ("RNN", torch.randn(5, 2, 3).long(), torch.zeros(1, 4)),
    # wrong feature size and 3-D hx. torch.nn: ValueError (hx rank)
    ("LSTMCell", torch.randn(2, 5), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))),
    # empty sequence and wrong feature size. torch.nn: RuntimeError (input_size, checked first)
    ("LSTM", torch.randn(0, 2, 7), None),
    # float64 input and wrong h_0 size. torch.nn: ValueError (dtype)
    ("LSTM", torch.randn(5, 2, 3, dtype=torch.float64), (torch.zeros(1, 3, 4), torch.zeros(1, 2, 4))),
    # bfloat16 input on "meta". torch.nn: ValueError (dtype); lstm_ext once asked autocast about
    # the meta device and got a RuntimeError back
    ("LSTM", torch.randn(5, 2, 3, dtype=torch.bfloat16, device="meta"), None),
], ids=["LSTM-features+dtype", "RNN-features+hx-tuple", "RNN-dtype+hx-rank", "LSTMCell-features+hx-rank",
        "LSTM-empty+features", "LSTM-dtype+hx-size", "LSTM-dtype+meta"])
def test_two_errors_raise_what_torch_nn_raises(kind, x, hx):
    ref, ext = pair(kind, 3, 4)
    args = (x,) if hx is None else (x, hx)
    expect_same_error(lambda: ref(*args), lambda: ext(*args))


def test_lstmcell_unbatched_hx_tensor():
    # torch.nn: ValueError: LSTMCell: Expected hx[0] to be 1D or 2D, got 0D instead
    ref, ext = pair("LSTMCell", 3, 4)
    x, hx = torch.randn(3), torch.zeros(4)
    expect_same_error(lambda: ref(x, hx), lambda: ext(x, hx))


@pytest.mark.parametrize("value", [1e30, float("inf")], ids=["1e30", "inf"])
def test_saturated_tanh_passes_no_gradient_f32(value):
    # h = tanh(w * x), w = 1, x = 1e30: torch.nn h = 1, dh/dw = x * (1 - h**2) = 0
    # (x = inf: nan). The fused kernels' tanh must saturate to exactly 1 too
    # (an approximation ending at 1 - 2**-22 once gave dh/dw = 4.8e23 here).
    ref, ext = pair("RNN", 1, 1, bias=False)
    grads = []
    for m in (ref, ext):
        with torch.no_grad():
            m.weight_ih_l0.fill_(1.0)
            m.weight_hh_l0.fill_(0.0)
        y, _ = m(torch.full((1, 1, 1), value))
        grads.append(torch.autograd.grad(y.sum(), m.weight_ih_l0)[0])
    torch.testing.assert_close(grads[1], grads[0], equal_nan=True, **F32_GRAD)


def test_sigmoid_of_minus_inf_is_zero_f32():
    # Output gate o = sigmoid(-inf): torch.nn h_1 = 0 exactly, and so must the fused
    # kernels be (a denormal such as 3e-39 would turn 0 * inf = nan downstream, e.g.
    # with weight_hr = -inf, into finite values).
    ref, ext = pair("LSTM", 1, 1, bias=False)
    outs = []
    for m in (ref, ext):
        with torch.no_grad():
            m.weight_ih_l0.copy_(torch.tensor([[1.0], [1.0], [1.0], [-float("inf")]]))  # i, f, g, o
            m.weight_hh_l0.fill_(0.0)
            outs.append(m(torch.ones(1, 1, 1))[0])
    assert torch.equal(outs[1], outs[0]), (outs[1].item(), outs[0].item())
