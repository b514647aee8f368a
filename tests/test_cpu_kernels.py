"""The fused float32 CPU kernels (csrc/cpu/fused/), each one, against torch.nn.

Every test that runs a module is parametrized over every name in
``torch.ops.lstm_ext.cpu_kernels()`` (ids = the names) and selects it with
``LSTM_EXT_CPU_KERNEL``, which the ops read at every call.

The kernels tile hidden units in vectors of 16 (avx512) or 8 (avx2, generic)
floats, batch rows in tiles of up to 6 (avx512), 3 (avx2) or 4 (generic), and
the backward cuts units into blocks of 4 vectors (the GRU's forward tile holds
3 vectors per k step, one per gate). The configurations below pick sizes
around those edges: H = 1, 3, 5, 17, 33, 64, 65, 257 (less than one vector,
one past a vector or a block, exact blocks); B = 1, 3, 7, 13 (one row, one
partial row tile, several row tiles with a ragged last one); T = 1 and longer; input sizes 5
and 19 (not a multiple of any vector width); bidirectional, 2 layers,
PackedSequence input with ``enforce_sorted=False`` (rows drop out step by
step), proj_size, RNN tanh and relu, GRU with and without biases. Outputs and
the gradients of the input, the initial states and every parameter are
compared with torch.nn.LSTM / torch.nn.RNN / torch.nn.GRU given identical
weights, at the suite's float32 tolerances
(helpers.F32_OUT: atol 1e-5, rtol 1e-4; helpers.F32_GRAD: atol 1e-4, rtol 1e-3).
"""
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from helpers import F32_GRAD, F32_OUT, assert_dicts_close, assert_message, leaf, module_pair

KERNELS = list(torch.ops.lstm_ext.cpu_kernels())
ENV = "LSTM_EXT_CPU_KERNEL"

# torch.nn.LSTM (the reference) warns that oneDNN has no projections; not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")


@pytest.fixture(params=KERNELS, ids=KERNELS)
def kernel(request, monkeypatch):
    monkeypatch.setenv(ENV, request.param)
    return request.param


# --- configurations -----------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    H: int
    B: int
    T: int
    I: int
    layers: int = 1
    bidir: bool = False
    packed: bool = False
    proj: int = 0
    hx: bool = True
    batch_first: bool = False
    mode: str = "LSTM"  # or "tanh" / "relu" for nn.RNN, or "GRU"
    bias: bool = True

    @property
    def id(self):
        s = (self.mode if self.mode in ("LSTM", "GRU") else f"RNN-{self.mode}") + \
            f"-H{self.H}-B{self.B}-T{self.T}-I{self.I}"
        if self.layers != 1:
            s += f"-L{self.layers}"
        if self.bidir:
            s += "-bi"
        if self.packed:
            s += "-packed"
        if self.proj:
            s += f"-P{self.proj}"
        if not self.hx:
            s += "-nohx"
        if self.batch_first:
            s += "-bf"
        if not self.bias:
            s += "-nobias"
        return s

    def lengths(self):
        """Varied lengths for packed cases: the longest is T, a length-1
        sequence when B > 2, in a shuffled order (enforce_sorted=False has to
        sort), so the per-step row count shrinks across row tiles."""
        if not self.packed:
            return None
        if self.B == 1:
            return [self.T]
        lens = [max(1, self.T - (self.T * k) // (self.B - 1)) for k in range(self.B)]
        lens[0] = self.T
        perm = torch.randperm(self.B, generator=torch.Generator().manual_seed(self.B + self.T)).tolist()
        return [lens[i] for i in perm]


LSTM_CASES = [
    Case(H=1, B=1, T=1, I=5),
    Case(H=1, B=7, T=9, I=19, bidir=True, packed=True),
    Case(H=3, B=7, T=9, I=19, bidir=True, batch_first=True),
    Case(H=3, B=13, T=15, I=5, packed=True, hx=False),
    Case(H=17, B=13, T=6, I=5, packed=True, proj=5),
    Case(H=17, B=7, T=11, I=5, layers=2, bidir=True, packed=True, proj=5),
    Case(H=33, B=1, T=12, I=19, layers=2),
    Case(H=33, B=13, T=8, I=19, bidir=True, proj=5, batch_first=True),
    Case(H=64, B=13, T=7, I=19, bidir=True, packed=True),
    Case(H=64, B=1, T=20, I=5, hx=False),
    Case(H=65, B=7, T=1, I=5, layers=2, bidir=True),
    Case(H=65, B=13, T=10, I=19, packed=True, batch_first=True),
    Case(H=257, B=7, T=4, I=19),
    Case(H=257, B=13, T=3, I=5, bidir=True, packed=True),
    Case(H=33, B=7, T=60, I=5, bidir=True, packed=True),
]

RNN_CASES = [
    Case(H=1, B=1, T=1, I=5, mode="tanh"),
    Case(H=17, B=13, T=9, I=5, bidir=True, packed=True, mode="tanh"),
    Case(H=65, B=7, T=6, I=19, layers=2, mode="relu"),
    Case(H=33, B=13, T=10, I=19, packed=True, bidir=True, mode="relu", hx=False),
    Case(H=257, B=7, T=5, I=5, packed=True, mode="tanh", batch_first=True),
    Case(H=64, B=1, T=16, I=19, mode="relu"),
    Case(H=65, B=13, T=50, I=5, bidir=True, packed=True, mode="tanh"),
]

# H = 1, 5, 17, 33 (in and past one vector), 65 and 257 (several blocks);
# reverse (bidir) with packed rows, where sequences start at their own last
# step and read h0 in the middle of the batch.
GRU_CASES = [
    Case(H=1, B=1, T=1, I=5, mode="GRU"),
    Case(H=1, B=7, T=5, I=19, bidir=True, packed=True, mode="GRU"),
    Case(H=5, B=3, T=5, I=19, bidir=True, mode="GRU"),
    Case(H=5, B=13, T=5, I=5, packed=True, hx=False, mode="GRU"),
    Case(H=17, B=7, T=5, I=19, bidir=True, packed=True, mode="GRU"),
    Case(H=17, B=1, T=5, I=5, layers=2, batch_first=True, mode="GRU"),
    Case(H=17, B=3, T=1, I=5, bidir=True, mode="GRU", bias=False),
    Case(H=33, B=13, T=1, I=19, bidir=True, mode="GRU"),
    Case(H=33, B=7, T=5, I=5, layers=2, bidir=True, packed=True, mode="GRU"),
    Case(H=33, B=13, T=5, I=19, packed=True, mode="GRU", bias=False),
    Case(H=65, B=13, T=5, I=19, bidir=True, packed=True, batch_first=True, mode="GRU"),
    Case(H=257, B=3, T=5, I=5, bidir=True, mode="GRU"),
    Case(H=33, B=7, T=40, I=5, bidir=True, packed=True, mode="GRU"),
]


def make_modules(case, dtype=torch.float32):
    """(torch.nn module, lstm_ext module) with identical parameters."""
    kw = dict(num_layers=case.layers, bidirectional=case.bidir, batch_first=case.batch_first,
              bias=case.bias, dtype=dtype)
    if case.mode == "LSTM":
        return module_pair(nn.LSTM, lstm_ext.LSTM, case.I, case.H, proj_size=case.proj, **kw)
    if case.mode == "GRU":
        return module_pair(nn.GRU, lstm_ext.GRU, case.I, case.H, **kw)
    return module_pair(nn.RNN, lstm_ext.RNN, case.I, case.H, nonlinearity=case.mode, **kw)


def make_inputs(case, dtype=torch.float32):
    """(padded input leaf, initial state leaves or None)."""
    D = 2 if case.bidir else 1
    shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
    x = leaf(torch.randn(shape, dtype=dtype))
    hx = None
    if case.hx:
        h0 = leaf(0.5 * torch.randn(case.layers * D, case.B, case.proj or case.H, dtype=dtype))
        if case.mode == "LSTM":
            hx = (h0, leaf(0.5 * torch.randn(case.layers * D, case.B, case.H, dtype=dtype)))
        else:
            hx = (h0,)
    return x, hx


def run(module, case, x, hx, grads=True, cot_dtype=torch.float32):
    """Outputs (y or y.data, h_n[, c_n]) and, with grads, the gradients of fixed
    random cotangents (float32 draws rounded to cot_dtype, then cast to the
    output dtype) w.r.t. the padded input, the initial states and every
    parameter. -> (outputs, grads or None), detached."""
    lengths = case.lengths()
    inp = x if lengths is None else pack_padded_sequence(
        x, lengths, batch_first=case.batch_first, enforce_sorted=False)
    if hx is None:
        res = module(inp)
    else:
        res = module(inp, hx if case.mode == "LSTM" else hx[0])
    y, rest = res
    outs = {"y": y.data if lengths is not None else y}
    if case.mode == "LSTM":
        outs["h_n"], outs["c_n"] = rest
    else:
        outs["h_n"] = rest
    g = None
    if grads:
        wrt = {"input": x}
        for name, s in zip(("h0", "c0"), hx or ()):
            wrt[name] = s
        wrt.update(module.named_parameters())
        gen = torch.Generator().manual_seed(1234)
        cots = [torch.randn(o.shape, generator=gen).to(cot_dtype).to(o.dtype) for o in outs.values()]
        grads_ = torch.autograd.grad(list(outs.values()), list(wrt.values()), cots)
        g = {k: v.detach() for k, v in zip(wrt, grads_)}
    return {k: v.detach() for k, v in outs.items()}, g


def check_case(case):
    ref, ext = make_modules(case)
    x, hx = make_inputs(case)
    got, got_g = run(ext, case, x, hx)
    exp, exp_g = run(ref, case, x, hx)
    D = 2 if case.bidir else 1
    if case.lengths() is None:
        y_rows = (case.B, case.T) if case.batch_first else (case.T, case.B)
    else:
        y_rows = (sum(case.lengths()),)
    assert got["y"].shape == (*y_rows, D * (case.proj or case.H))
    assert_dicts_close(got, exp, F32_OUT, f"[{case.id}] output")
    assert_dicts_close(got_g, exp_g, F32_GRAD, f"[{case.id}] grad")


# --- parity grid --------------------------------------------------------------------------

PARITY_CASES = LSTM_CASES + RNN_CASES + GRU_CASES


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c.id for c in PARITY_CASES])
def test_matches_torch(kernel, case):
    check_case(case)


# --- selection ----------------------------------------------------------------------------

def test_kernel_list():
    assert KERNELS[-1] == "reference"
    assert len(KERNELS) == len(set(KERNELS))
    assert set(KERNELS) <= {"avx512bf16", "avx512", "avx2", "generic", "reference"}
    # the portable kernel builds everywhere
    assert "generic" in KERNELS
    order = ["avx512bf16", "avx512", "avx2", "generic", "reference"]
    assert KERNELS == sorted(KERNELS, key=order.index), "best first"


@pytest.mark.parametrize("value", ["bogus", "AVX2", "reference "])
def test_unknown_kernel_raises(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    m = lstm_ext.LSTM(4, 8)
    with pytest.raises(RuntimeError) as e:
        m(torch.randn(3, 2, 4))
    assert_message(e.value, ENV, *KERNELS)
    # read at every call: a valid value works again at once
    monkeypatch.setenv(ENV, KERNELS[0])
    m(torch.randn(3, 2, 4))


@pytest.mark.parametrize("mode", ["LSTM", "tanh", "GRU"])
def test_auto_is_first_kernel(monkeypatch, mode):
    """Unset, "" and "auto" all run the first (best) kernel: bitwise the same results."""
    case = Case(H=33, B=7, T=5, I=19, bidir=True, packed=True, mode=mode)
    _, ext = make_modules(case)
    x, hx = make_inputs(case)
    monkeypatch.setenv(ENV, KERNELS[0])
    best = run(ext, case, x, hx)
    for value in (None, "", "auto"):
        if value is None:
            monkeypatch.delenv(ENV, raising=False)
        else:
            monkeypatch.setenv(ENV, value)
        got = run(ext, case, x, hx)
        for a, b in zip(got, best):
            for k in a:
                assert torch.equal(a[k], b[k]), (value, k)


# --- non-finite values --------------------------------------------------------------------

def _assert_same_nonfinite(got, exp, label):
    for k in exp:
        a, b = got[k], exp[k]
        assert torch.equal(torch.isnan(a), torch.isnan(b)), \
            f"{label} {k}: NaN at {torch.isnan(a).nonzero().tolist()} vs torch {torch.isnan(b).nonzero().tolist()}"
        assert torch.equal(torch.isinf(a), torch.isinf(b)), f"{label} {k}: inf pattern differs"
        torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"{label} {k}: {m}", **F32_OUT)


NONFINITE_CASES = [
    Case(H=17, B=7, T=6, I=5, bidir=True),
    Case(H=65, B=13, T=5, I=19, packed=True, layers=2),
    Case(H=33, B=7, T=6, I=5, mode="tanh", bidir=True, packed=True),
    # relu's backward passes dh where h is NaN (threshold_backward), not 0
    Case(H=33, B=7, T=6, I=5, mode="relu", bidir=True),
    Case(H=17, B=7, T=6, I=5, mode="GRU", bidir=True, packed=True),
]


@pytest.mark.parametrize("case", NONFINITE_CASES, ids=[c.id for c in NONFINITE_CASES])
def test_nan_propagates_like_torch(kernel, case):
    """A NaN in one input element of one sequence poisons exactly what it
    poisons in torch.nn: that sequence's outputs from its step on (both ways
    in the reverse direction), and no other batch row of its row tile;
    likewise for the gradient of the input."""
    ref, ext = make_modules(case)
    x, hx = make_inputs(case)
    b = 4  # caller row 4 (B = 7, 13: several row tiles in every kernel)
    lengths = case.lengths()
    t = 2 if lengths is None else min(2, lengths[b] - 1)  # a real step of sequence b
    with torch.no_grad():
        if case.batch_first:
            x[b, t, 1] = float("nan")
        else:
            x[t, b, 1] = float("nan")
    got, got_g = run(ext, case, x, hx)
    exp, exp_g = run(ref, case, x, hx)
    assert torch.isnan(exp["y"]).any() and not torch.isnan(exp["y"]).all()
    _assert_same_nonfinite(got, exp, f"[{case.id}] output")
    _assert_same_nonfinite({"input": got_g["input"]}, {"input": exp_g["input"]}, f"[{case.id}] grad")


@pytest.mark.parametrize("case", NONFINITE_CASES, ids=[c.id for c in NONFINITE_CASES])
def test_inf_saturates_like_torch(kernel, case):
    """+-inf and huge finite inputs drive the gates into saturation (sigmoid 0 or
    1, tanh +-1): the outputs stay what torch.nn gives, finite where it is finite."""
    ref, ext = make_modules(case)
    x, hx = make_inputs(case)
    with torch.no_grad():
        flat = x.view(-1, case.I)
        flat[::3, 0] = float("inf")
        flat[1::3, 2] = float("-inf")
        flat[2::5, 3] = 3e4
        flat[4::7, 4] = -1e30
    got, _ = run(ext, case, x, hx, grads=False)
    exp, _ = run(ref, case, x, hx, grads=False)
    if case.mode != "relu":
        assert all(torch.isfinite(v).all() for v in exp.values())
    _assert_same_nonfinite(got, exp, f"[{case.id}] output")


# --- threads ------------------------------------------------------------------------------

THREAD_CASES = [
    Case(H=257, B=13, T=6, I=19, bidir=True, packed=True),
    Case(H=65, B=13, T=8, I=5, layers=2, proj=5),
    Case(H=257, B=7, T=6, I=19, mode="relu", packed=True),
    Case(H=65, B=13, T=6, I=19, mode="GRU", bidir=True, packed=True),
]


@pytest.mark.parametrize("case", THREAD_CASES, ids=[c.id for c in THREAD_CASES])
def test_one_and_two_threads_agree(kernel, case):
    """The work split across threads does not change the results (beyond
    1e-6): outputs and every gradient with torch.set_num_threads(1) and (2).
    The sizes are above the per-step work at which the loop uses threads."""
    _, ext = make_modules(case)
    x, hx = make_inputs(case)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(ext, case, x, hx)
        torch.set_num_threads(2)
        two = run(ext, case, x, hx)
    finally:
        torch.set_num_threads(before)
    # 1e-6 of each tensor's scale: the reference kernel's BLAS sums a weight
    # gradient's N rows in a thread-dependent order, so an element near 0 of a
    # gradient whose largest entries are ~6 moves by a few float32 ulps of 6.
    for label, a, b in (("output", one[0], two[0]), ("grad", one[1], two[1])):
        for name in a:
            scale = max(1.0, a[name].abs().max().item())
            assert_dicts_close({name: b[name]}, {name: a[name]}, dict(atol=1e-6 * scale, rtol=1e-6),
                               f"[{case.id}] 2 vs 1 thread {label}")


# --- bfloat16 -----------------------------------------------------------------------------

BF16_CASES = [
    Case(H=17, B=7, T=8, I=19, bidir=True, packed=True, proj=5),
    Case(H=65, B=13, T=6, I=5, mode="relu", packed=True),
    Case(H=33, B=7, T=8, I=19, mode="GRU", bidir=True, packed=True),
]


@pytest.mark.parametrize("case", BF16_CASES, ids=[c.id for c in BF16_CASES])
def test_bfloat16_through_each_kernel(kernel, case):
    """bfloat16 is computed by the float32 kernels: against a float32 run of
    the same (bfloat16) weights and inputs, our error is at most twice
    torch.nn's bfloat16 error plus 2**-10 * max|reference| (as test_bf16.py),
    for the outputs and every gradient."""
    ref, ext = make_modules(case)
    ref, ext = ref.bfloat16(), ext.bfloat16()
    ref32 = make_modules(case)[0]
    ref32.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x, hx = make_inputs(case, torch.bfloat16)
    up = lambda t: leaf(t.float())  # noqa: E731
    exp = run(ref32, case, up(x), tuple(map(up, hx)) if hx else None, cot_dtype=torch.bfloat16)
    got = run(ext, case, x, hx, cot_dtype=torch.bfloat16)
    theirs = run(ref, case, x, hx, cot_dtype=torch.bfloat16)
    for i, what in enumerate(("output", "grad")):
        for k in exp[i]:
            e = exp[i][k]
            d_ours = float((got[i][k].float() - e).abs().max())
            d_torch = float((theirs[i][k].float() - e).abs().max())
            bound = 2 * d_torch + 2.0 ** -10 * float(e.abs().max())
            assert d_ours <= bound, f"[{case.id}] {what} {k}: ours {d_ours:.3g} > {bound:.3g} (torch {d_torch:.3g})"
