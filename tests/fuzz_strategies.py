"""Hypothesis strategies and runners for tests/test_fuzz.py (not a test module).

Two families of cases:

* ``parity_configs``: valid configurations of LSTM / RNN (tanh, relu) / GRU; a case
  is built by ``build_parity_case`` and run by ``check_parity`` on torch.nn and
  on lstm_ext with identical weights, inputs and cotangents.
* ``fuzz_cases``: small modules (LSTM, RNN, GRU, LSTMCell, RNNCell, GRUCell) called with a
  valid input to which zero to two "edits" are applied (wrong ranks, sizes,
  dtypes, devices, hx structures, non-finite values, odd strides).
  ``check_fuzz_case`` requires lstm_ext to behave as torch.nn does: the same
  exception type (or a subclass) with a message, or the same result.

Tensor values are never drawn by Hypothesis (slow, and shrinking them is of
no use here): a case carries a seed for a ``torch.Generator``.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from typing import Optional, Tuple

import numpy as np
import torch
from hypothesis import strategies as st
from torch import nn

import lstm_ext
from helpers import OpRecorder, assert_results_close, backprop, layout, module_pair, tols

SEEDS = st.integers(0, 2**31 - 1)

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
    "complex64": torch.complex64,
}

# bfloat16 (and, on CUDA, float16) results are compared with torch.nn run in float32 on the same
# (exactly upcast) values: lstm_ext computes in float32 and rounds once, closer to
# that than torch.nn's own bfloat16 path, which rounds every step (with relu its
# gradients can be off by 0.1-1 on the fuzzer's tiny cases).  tests/test_bf16.py
# measures the error properly; this only catches garbage.
_BF16_TOL = dict(atol=5e-2, rtol=5e-2)


def result_tols(dtype: torch.dtype):
    if dtype in (torch.bfloat16, torch.float16):
        return _BF16_TOL, _BF16_TOL
    return tols(dtype)


@contextlib.contextmanager
def single_threaded():
    """torch.nn, the oracle, runs on one thread: its threading is not under test,
    and on a machine whose cores are busy with other work a 2-thread torch.nn
    LSTM can take 100x longer (every OpenMP region waits for a descheduled
    thread).  lstm_ext keeps torch's thread count in float32 (and bfloat16): the
    fused kernels split the hidden units between the threads, which is part of
    what is tested.  float64 runs lstm_ext's reference loops, which slow down
    the same way on busy cores (measured: 0.02 s single-threaded, 1.6-5 s with 2
    threads for T=16, B=6, 2 bidirectional layers): single-threaded here too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# =============================================================================== parity


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    mode: str  # "LSTM", "RNN_TANH", "RNN_RELU" or "GRU"
    T: int
    B: Optional[int]  # None: unbatched 2-D input
    I: int
    H: int
    L: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    use_hx: bool
    layout: str  # of the input and of h0/c0: "contig", "transposed" or "step"
    proj_size: int
    dtype: str
    seed: int


@st.composite
def parity_configs(draw, modes=("LSTM", "RNN_TANH", "RNN_RELU", "GRU"), dtypes=("float64",)):
    mode = draw(st.sampled_from(modes))
    T = draw(st.integers(1, 64))
    # Mostly batched, now and then unbatched 2-D input; B=0 also comes from the
    # explicit examples in test_fuzz.py.
    B = draw(st.sampled_from([None, *range(10)]))
    I = draw(st.integers(1, 40))
    H = draw(st.integers(1, 64))
    L = draw(st.integers(1, 3))
    bidirectional = draw(st.booleans())
    batch_first = draw(st.booleans())
    bias = draw(st.booleans())
    use_hx = draw(st.booleans())
    lay = draw(st.sampled_from(["contig", "transposed", "step"]))
    proj_size = 0
    if mode == "LSTM" and H > 1 and draw(st.booleans()):
        proj_size = draw(st.integers(1, H - 1))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(SEEDS)
    return ParityConfig(mode, T, B, I, H, L, bidirectional, batch_first, bias, use_hx, lay, proj_size,
                        dtype, seed)


def build_parity_case(cfg: ParityConfig):
    """-> (ref module, ext module, x, hx): leaves requiring grad, in cfg's layout."""
    dtype = DTYPES[cfg.dtype]
    kwargs = dict(num_layers=cfg.L, bias=cfg.bias, batch_first=cfg.batch_first,
                  bidirectional=cfg.bidirectional, dtype=dtype)
    if cfg.mode == "LSTM":
        kind, kwargs["proj_size"], state_sizes = "LSTM", cfg.proj_size, (cfg.proj_size or cfg.H, cfg.H)
    elif cfg.mode == "GRU":
        kind, state_sizes = "GRU", (cfg.H,)
    else:
        kind, kwargs["nonlinearity"], state_sizes = "RNN", cfg.mode[4:].lower(), (cfg.H,)
    torch.manual_seed(cfg.seed)
    ref, ext = module_pair(getattr(nn, kind), getattr(lstm_ext, kind), cfg.I, cfg.H, **kwargs)
    g = torch.Generator().manual_seed(cfg.seed)

    def randn(*shape):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        return layout(t, cfg.layout).requires_grad_(True)

    if cfg.B is None:
        x = randn(cfg.T, cfg.I)
    else:
        x = randn(*((cfg.B, cfg.T, cfg.I) if cfg.batch_first else (cfg.T, cfg.B, cfg.I)))
    hx = None
    if cfg.use_hx:
        D = 2 if cfg.bidirectional else 1
        batch = () if cfg.B is None else (cfg.B,)
        states = tuple(randn(cfg.L * D, *batch, size) for size in state_sizes)
        hx = states if cfg.mode == "LSTM" else states[0]
    return ref, ext, x, hx


def run_parity_module(module, x, hx, seed):
    """-> (outputs, grads of input, h0/c0 and every parameter) for random cotangents
    that depend only on ``seed`` and the output shapes."""
    res = module(x) if hx is None else module(x, hx)
    out, state = res
    outs = {"out": out}
    if isinstance(state, tuple):
        outs["h_n"], outs["c_n"] = state
    else:
        outs["h_n"] = state
    wrt = {"input": x}
    if isinstance(hx, tuple):
        wrt["h0"], wrt["c0"] = hx
    elif hx is not None:
        wrt["h0"] = hx
    wrt.update(module.named_parameters())
    grads = backprop(outs, wrt, seed=seed)
    return {k: v.detach() for k, v in outs.items()}, grads


def check_parity(cfg: ParityConfig):
    ref, ext, x, hx = build_parity_case(cfg)
    dtype = DTYPES[cfg.dtype]
    with single_threaded():
        exp = run_parity_module(ref, x, hx, cfg.seed)
    # lstm_ext keeps torch's threads except in float64 (see single_threaded).
    with single_threaded() if dtype == torch.float64 else contextlib.nullcontext():
        got = run_parity_module(ext, x, hx, cfg.seed)
    # Keys, shapes, dtypes and values of every output and gradient.
    assert_results_close(got, exp, dtype)


# =============================================================================== fuzzer

KINDS = ("LSTM", "RNN", "GRU", "LSTMCell", "RNNCell", "GRUCell")
NONFINITE = (math.nan, math.inf, -math.inf, 1e30, -1e30)


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    kind: str  # one of KINDS
    I: int
    H: int
    L: int  # 1 for the cells
    bidirectional: bool
    batch_first: bool
    proj_size: int
    bias: bool
    nonlinearity: str
    dtype: str  # the module's (and, unless edited, the input's and hx's) dtype
    batched: bool
    T: int
    B: int
    use_hx: bool
    edits: Tuple[tuple, ...]
    seed: int

    @property
    def is_cell(self) -> bool:
        return self.kind.endswith("Cell")

    @property
    def num_states(self) -> int:
        return 2 if self.kind.startswith("LSTM") else 1


EDIT_KINDS = (
    "input_rank", "input_features", "input_dim_zero", "input_dtype", "input_meta", "input_nonfinite",
    "input_stride", "input_object", "weight_nonfinite",
    "hx_shape", "hx_rank", "hx_dtype", "hx_meta", "hx_nonfinite", "hx_stride", "hx_struct",
)


def _edit(op: str, num_states: int, input_rank: int, I: int):
    """A strategy for one edit of kind ``op``: a tuple (op, *parameters)."""
    which = st.integers(0, num_states - 1)
    values = st.sampled_from(NONFINITE)
    where = st.sampled_from(["one", "all"])
    strides = st.sampled_from(["expand", "transposed", "step"])
    if num_states == 2:
        structs = ["list", "h_only", "stacked", "1-tuple", "3-tuple", "empty", "None-h", "None-c",
                   "float-c", "ndarray-c", "str", "dict"]
    else:
        structs = ["1-tuple", "list1", "pair", "float", "str", "ndarray"]
    params = {
        "input_rank": [st.integers(0, 4)],
        "input_features": [st.sampled_from([n for n in range(I + 4) if n != I])],
        "input_dim_zero": [st.integers(0, input_rank - 1)],
        "input_dtype": [st.sampled_from(sorted(DTYPES))],
        "input_meta": [],
        "input_nonfinite": [values, where],
        "input_stride": [strides],
        "input_object": [st.sampled_from(["None", "list", "float", "ndarray", "str"])],
        "weight_nonfinite": [st.integers(0, 9), values, where],
        # hx has the input's rank: [L*D, B, H] / [L*D, H]; the cells' [B, H] / [H].
        "hx_shape": [which, st.integers(0, input_rank - 1), st.sampled_from([-2, -1, 1, 2])],
        "hx_rank": [which, st.integers(0, 4)],
        "hx_dtype": [which, st.sampled_from(sorted(DTYPES))],
        "hx_meta": [which],
        "hx_nonfinite": [which, values, where],
        "hx_stride": [which, strides],
        "hx_struct": [st.sampled_from(structs)],
    }[op]
    return st.tuples(st.just(op), *params)


@st.composite
def fuzz_cases(draw, kinds=KINDS, first_edit=None):
    """A FuzzCase of one of ``kinds``.  ``first_edit``: the kind of its first edit
    ("none": a valid call, no edit; None: drawn), followed now and then by a
    second, drawn edit (two errors at once: which one is reported)."""
    kind = draw(st.sampled_from(kinds))
    is_cell = kind.endswith("Cell")
    num_states = 2 if kind.startswith("LSTM") else 1
    I = draw(st.integers(1, 5))
    H = draw(st.integers(1, 5))
    L = 1 if is_cell else draw(st.integers(1, 2))
    bidirectional = False if is_cell else draw(st.booleans())
    batch_first = False if is_cell else draw(st.booleans())
    proj_size = draw(st.integers(0, H - 1)) if kind == "LSTM" and H > 1 else 0
    bias = draw(st.booleans())
    nonlinearity = draw(st.sampled_from(["tanh", "relu"])) if kind.startswith("RNN") else "tanh"
    # float16 modules: see check_fuzz_case (a documented difference).
    dtype = draw(st.sampled_from(["float32", "float32", "float32", "float64", "bfloat16", "float16"]))
    batched = draw(st.sampled_from([True, True, True, False]))
    T = draw(st.integers(1, 4))
    B = draw(st.integers(1, 3))
    input_rank = (2 if batched else 1) if is_cell else (3 if batched else 2)
    if first_edit == "none":
        ops = []
    else:
        ops = [first_edit or draw(st.sampled_from(EDIT_KINDS))]
        if draw(st.sampled_from([False, False, True])):
            ops.append(draw(st.sampled_from(EDIT_KINDS)))
    use_hx = any(op.startswith("hx_") and op != "hx_struct" for op in ops) or draw(st.booleans())
    edits = tuple(draw(_edit(op, num_states, input_rank, I)) for op in ops)
    seed = draw(SEEDS)
    return FuzzCase(kind, I, H, L, bidirectional, batch_first, proj_size, bias, nonlinearity, dtype,
                    batched, T, B, use_hx, edits, seed)


def _make_modules(case: FuzzCase):
    args = dict(bias=case.bias)
    if not case.is_cell:
        args.update(num_layers=case.L, batch_first=case.batch_first, bidirectional=case.bidirectional)
    if case.kind == "LSTM":
        args["proj_size"] = case.proj_size
    elif case.kind.startswith("RNN"):
        args["nonlinearity"] = case.nonlinearity
    torch.manual_seed(case.seed)
    return module_pair(getattr(nn, case.kind), getattr(lstm_ext, case.kind), case.I, case.H,
                       dtype=DTYPES[case.dtype], **args)


def _fill_nonfinite(t: torch.Tensor, value: float, where: str, g: torch.Generator) -> torch.Tensor:
    t = t.detach().clone()
    if t.numel() == 0:
        return t
    value = torch.tensor(value, dtype=torch.float64).to(t.dtype)  # 1e30 is inf in float16
    if where == "all":
        t.fill_(value)
    else:
        idx = int(torch.randint(t.numel(), (1,), generator=g))
        t[tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), t.shape))] = value
    return t


def _restride(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``t``'s values with odd strides: a stride-0 expanded view (along the
    batch/first dim), a transposed view or a step-2 slice."""
    if t.dim() == 0 or t.numel() == 0:
        return t
    if kind == "expand":
        first = t.select(0, 0).unsqueeze(0)
        return first.expand_as(t)
    if kind == "transposed" and t.dim() < 2:
        return t
    return layout(t, kind)


def _with_dim(shape, dim, size):
    shape = list(shape)
    shape[dim] = size
    return tuple(shape)


def _rank_shape(shape, rank):
    shape = list(shape)
    return tuple(shape[:rank] + [2] * max(0, rank - len(shape)))


def materialize(case: FuzzCase, device: str = "cpu"):
    """-> (ref, ext, args): the two modules, with identical parameters, and the
    positional arguments of the call.  ``ext`` and the arguments are on
    ``device``; ``ref`` (torch.nn, the oracle) stays on the CPU: call it with
    ``cpu_copy(args)``.  On the CPU the "meta" edits make meta tensors; on
    another device they leave the tensor on the CPU (a device mismatch)."""
    g = torch.Generator().manual_seed(case.seed)
    ref, ext = _make_modules(case)
    ext.to(device)
    mdtype = DTYPES[case.dtype]
    other_device = "meta" if device == "cpu" else "cpu"

    def randn(shape, dtype=mdtype):
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)

    # ---- module edits
    for edit in case.edits:
        if edit[0] == "weight_nonfinite":
            _, index, value, where = edit
            names = [n for n, _ in ref.named_parameters()]
            name = names[index % len(names)]
            bad = _fill_nonfinite(getattr(ref, name), value, where, g)
            with torch.no_grad():
                getattr(ref, name).copy_(bad)
                getattr(ext, name).copy_(bad)

    # ---- the valid call
    D = 2 if case.bidirectional else 1
    if case.is_cell:
        x_shape = (case.B, case.I) if case.batched else (case.I,)
        batch = (case.B,) if case.batched else ()
        state_shapes = [(*batch, case.H)] * case.num_states
    else:
        if case.batched:
            x_shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
        else:
            x_shape = (case.T, case.I)
        batch = (case.B,) if case.batched else ()
        sizes = (case.proj_size or case.H, case.H) if case.kind == "LSTM" else (case.H,)
        state_shapes = [(case.L * D, *batch, s) for s in sizes]
    x = randn(x_shape)
    states = [randn(s) for s in state_shapes] if case.use_hx else None

    # ---- tensor edits
    for edit in case.edits:
        op = edit[0]
        if op == "input_rank":
            x = randn(_rank_shape(x_shape, edit[1]))
        elif op == "input_features":
            x = randn(_with_dim(x.shape, -1, edit[1])) if x.dim() else x
        elif op == "input_dim_zero":
            if edit[1] < x.dim():
                x = randn(_with_dim(x.shape, edit[1], 0))
        elif op == "input_dtype":
            x = x.to(DTYPES[edit[1]])
        elif op == "input_meta":
            x = x.to(other_device)
        elif op == "input_nonfinite":
            if x.is_floating_point() and x.device.type != "meta":
                x = _fill_nonfinite(x, edit[1], edit[2], g)
        elif op == "input_stride":
            if x.device.type != "meta":
                x = _restride(x, edit[1])
        elif op.startswith("hx_") and op != "hx_struct":
            i = edit[1]
            s = states[i]
            if op == "hx_shape":
                _, _, dim, delta = edit
                if dim < s.dim():
                    states[i] = randn(_with_dim(s.shape, dim, max(0, s.shape[dim] + delta)))
            elif op == "hx_rank":
                states[i] = randn(_rank_shape(s.shape, edit[2]))
            elif op == "hx_dtype":
                states[i] = s.to(DTYPES[edit[2]])
            elif op == "hx_meta":
                states[i] = s.to(other_device)
            elif op == "hx_nonfinite":
                if s.is_floating_point() and s.device.type != "meta":
                    states[i] = _fill_nonfinite(s, edit[2], edit[3], g)
            elif op == "hx_stride":
                if s.device.type != "meta":
                    states[i] = _restride(s, edit[2])

    # Leaves: every floating tensor argument requires grad, so that a call that
    # returns can be compared through backward too.
    def as_leaf(t):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            t = t.detach()
            t.requires_grad_(True)
        return t

    x = as_leaf(x)
    if states is not None:
        states = [as_leaf(s) for s in states]

    # ---- structure edits (last: they replace objects)
    hx = None
    if states is not None:
        hx = tuple(states) if case.num_states == 2 else states[0]
    for edit in case.edits:
        if edit[0] == "input_object" and isinstance(x, torch.Tensor):
            base = x.detach().cpu() if x.device.type != "meta" else torch.zeros(x.shape)
            x = {"None": None, "list": base.tolist(), "float": 1.5, "ndarray": base.float().numpy(),
                 "str": "abc"}[edit[1]]
        elif edit[0] == "hx_struct":
            what = edit[1]
            h = states[0] if states is not None else randn(state_shapes[0])
            c = states[-1] if states is not None else randn(state_shapes[-1])
            if case.num_states == 2:
                stackable = h.shape == c.shape and h.dtype == c.dtype and h.device == c.device
                hx = {"list": [h, c], "h_only": h,
                      "stacked": torch.stack([h.detach(), c.detach()]) if stackable else h,
                      "1-tuple": (h,), "3-tuple": (h, c, c), "empty": (), "None-h": (None, c),
                      "None-c": (h, None), "float-c": (h, 0.5), "ndarray-c": (h, np.zeros(2)),
                      "str": "hc", "dict": {0: h, 1: c}}[what]
            else:
                hx = {"1-tuple": (h,), "list1": [h], "pair": (h, h), "float": 0.5, "str": "h",
                      "ndarray": np.zeros(2)}[what]
    args = (x,) if hx is None else (x, hx)
    return ref, ext, args


# ------------------------------------------------------------------------------- checks


def _call(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - compared by the caller
        return None, exc


def _structure(res):
    if isinstance(res, (tuple, list)):
        return (type(res).__name__, tuple(_structure(r) for r in res))
    if isinstance(res, torch.Tensor):
        return "Tensor"
    return type(res).__name__


def _flatten(res):
    if isinstance(res, dict):  # an hx edit: the dict {0: h, 1: c}
        res = list(res.values())
    if isinstance(res, (tuple, list)):
        return [t for r in res for t in _flatten(r)]
    return [res]


def _tensors_of(obj):
    return [t for t in _flatten(obj) if isinstance(t, torch.Tensor)]


def _snapshot(args):
    return [t.detach().clone() if t.device.type != "meta" else None for t in _tensors_of(args)]


def _assert_unchanged(args, before, label):
    for t, b in zip(_tensors_of(args), before):
        if b is not None:
            torch.testing.assert_close(t.detach(), b, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m: f"{label} modified an argument in place: {m}")


def _grads(module, res, args, seed, via):
    """Gradients of every output w.r.t. the tensor arguments that are leaves and
    every parameter, for random cotangents (rounded to ``via``, the case's dtype)."""
    outs = [o for o in _flatten(res) if isinstance(o, torch.Tensor) and o.requires_grad]
    leaves = [t for t in _tensors_of(args) if t.requires_grad and t.is_leaf]
    wrt = leaves + list(module.parameters())
    if not outs:
        return None
    gen = torch.Generator().manual_seed(seed)
    cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(via).to(o.dtype).to(o.device)
            for o in outs]
    return torch.autograd.grad(outs, wrt, cots, allow_unused=True)


def cpu_copy(args):
    """``args`` with every tensor copied to the CPU (meta tensors kept), as
    leaves requiring grad where the originals do: torch.nn's arguments when
    lstm_ext runs on another device."""
    def cpu(obj):
        if isinstance(obj, (tuple, list)):
            return type(obj)(cpu(o) for o in obj)
        if isinstance(obj, torch.Tensor) and obj.device.type not in ("cpu", "meta"):
            return obj.detach().cpu().requires_grad_(obj.requires_grad)
        return obj
    return cpu(args)


def _upcast_call(module, args, dtype):
    """A float32 copy of a ``dtype`` (low precision) module and of the arguments
    (``dtype`` tensors upcast exactly, as leaves requiring grad where the
    originals do)."""
    def up(obj):
        if isinstance(obj, (tuple, list)):
            return type(obj)(up(o) for o in obj)
        if isinstance(obj, torch.Tensor) and obj.dtype == dtype:
            return obj.detach().float().requires_grad_(obj.requires_grad)
        return obj
    return copy.deepcopy(module).float(), up(args)


def _compare(got, exp, tol, label):
    torch.testing.assert_close(got, exp, equal_nan=True, msg=lambda m: f"{label}: {m}", **tol)


# ------------------------------------------------------------------ what is tolerated
#
# Everything below is a named, narrow exception to "same exception type or same
# result as torch.nn"; anything else fails.


def torch_nn_accepts_bad_input(case: FuzzCase, args, ext_exc) -> Optional[str]:
    """Bad input torch.nn lets through (returning a result) where lstm_ext raises
    a RuntimeError naming the problem; -> a label, or None.

    * a meta input or hx with a CPU module: torch.nn's cells compute something
      anyway in some paths (RNNCell(bias=False) with a meta input returns a CPU
      tensor computed from hx alone; a torch.nn bug), lstm_ext refuses the
      device mismatch, as torch.nn does on its other paths.
    * c_0 of another dtype than the input (LSTMCell; LSTM wherever it does not
      go through oneDNN: float64, proj_size > 0): torch.nn type-promotes (a bool
      or int64 c_0 is accepted, a float64 c_0 makes LSTMCell return float64),
      lstm_ext refuses it, as torch.nn's oneDNN path does (RuntimeError).
    * LSTM / LSTMCell, unbatched input, hx a tuple or list of more than 2
      tensors, a dict {0: h, 1: c} or a tensor torch.stack([h, c]): torch.nn
      reads hx[0] and hx[1] and drops the rest (it raises for batched input),
      lstm_ext raises HiddenStateError.
    These are stricter-than-torch.nn behaviours of lstm_ext, not documented in
    README's table (reported).
    """
    if not isinstance(ext_exc, RuntimeError) or not str(ext_exc).strip():
        return None
    tensors = _tensors_of(args)
    if any(t.device.type == "meta" for t in tensors) and "device" in str(ext_exc):
        return "torch.nn-accepts-meta"
    x = args[0]
    hx = args[1] if len(args) > 1 else None
    if case.kind in ("LSTM", "LSTMCell") and isinstance(hx, (tuple, list)):
        if (len(hx) == 2 and all(isinstance(t, torch.Tensor) for t in hx)
                and hx[0].dtype == x.dtype and hx[1].dtype != x.dtype and "dtype" in str(ext_exc)):
            return "torch.nn-accepts-c0-dtype"
    unbatched = isinstance(x, torch.Tensor) and x.dim() == (1 if case.is_cell else 2)
    if (case.kind in ("LSTM", "LSTMCell") and unbatched and isinstance(ext_exc, lstm_ext.HiddenStateError)
            and (isinstance(hx, (dict, torch.Tensor)) or (isinstance(hx, (tuple, list)) and len(hx) > 2))):
        return "torch.nn-repacks-unbatched-hx"
    return None


def torch_nn_may_crash(case: FuzzCase, args) -> bool:
    """LSTMCell / RNNCell / GRUCell, unbatched (1-D) input, a 2-D state: torch.nn
    unsqueezes the state to 3-D and checks only its first two sizes.  With
    hidden_size 1 that passes, and then ``nn.LSTMCell(1, 1)(torch.randn(1),
    (torch.randn(1, 1), torch.randn(1, 1)))`` dies with a segmentation fault
    (torch 2.13, a torch.nn bug); other shapes broadcast (c_0 of shape (1, 2)
    with hidden_size 1: 2-D "unbatched" results) or raise RuntimeError.  Such
    cases must not reach torch.nn in-process; lstm_ext must raise RuntimeError
    (it requires 1-D states for 1-D input)."""
    x = args[0]
    states = _tensors_of(args[1:])
    return case.is_cell and isinstance(x, torch.Tensor) and x.dim() == 1 and any(t.dim() == 2 for t in states)


def _assert_no_kernel_before_error(rec: OpRecorder):
    """Bad input fails before any lstm_ext kernel runs (README); ``rec`` recorded the call."""
    assert rec.lstm_ext_ops() == [], f"lstm_ext kernels ran before the error: {rec.lstm_ext_ops()}"


def check_fuzz_case(case: FuzzCase, device: str = "cpu") -> str:
    """Runs one case on torch.nn (on the CPU) and on lstm_ext (on ``device``);
    -> the outcome's label."""
    ref, ext, args = materialize(case, device)
    before = _snapshot(args)
    rec = OpRecorder()
    with rec:
        ext_res, ext_exc = _call(lambda: ext(*args))
    _assert_unchanged(args, before, "lstm_ext")
    ref_args = args if device == "cpu" else cpu_copy(args)
    if device != "cpu" and any(t.device.type != device for t in _tensors_of(args)):
        # A "meta" edit left a tensor on the CPU: torch.nn raises RuntimeError
        # for inputs and states on another device than the module. A second
        # edit may be reported first: then the type torch.nn raises for it
        # (on the CPU, where the mismatch is gone) is right too.
        allowed = (RuntimeError,)
        if not torch_nn_may_crash(case, args):
            with single_threaded():
                _, cpu_exc = _call(lambda: ref(*ref_args))
            if cpu_exc is not None:
                allowed += (type(cpu_exc),)
        assert isinstance(ext_exc, allowed) and str(ext_exc).strip(), (
            f"a CPU tensor with a {device} module: expected one of {allowed}, lstm_ext gave {ext_exc!r}")
        _assert_no_kernel_before_error(rec)
        return "raised (device mismatch)"
    if torch_nn_may_crash(case, args):
        assert isinstance(ext_exc, RuntimeError) and str(ext_exc).strip(), (
            f"expected a RuntimeError (1-D input, a 2-D state), lstm_ext gave {ext_exc!r}")
        _assert_no_kernel_before_error(rec)
        return "raised (torch.nn not called: it may crash)"
    with single_threaded():
        ref_res, ref_exc = _call(lambda: ref(*ref_args))

    if ref_exc is None and ext_exc is not None:
        lax = torch_nn_accepts_bad_input(case, args, ext_exc)
        if lax is not None:
            return lax
        # Documented difference (README, "dtypes"): lstm_ext refuses float16
        # on the CPU with a clear error, where torch.nn computes in float16.
        if case.dtype == "float16" and device == "cpu":
            assert isinstance(ext_exc, (TypeError, ValueError, RuntimeError, NotImplementedError)), repr(ext_exc)
            assert "float16" in str(ext_exc) or "Half" in str(ext_exc), str(ext_exc)
            return "float16-refused (documented)"
        raise AssertionError(f"torch.nn returned, lstm_ext raised {type(ext_exc).__name__}: {ext_exc}")

    if ref_exc is not None:
        assert ext_exc is not None, (
            f"torch.nn raised {type(ref_exc).__name__}: {ref_exc}; lstm_ext returned {_structure(ext_res)}")
        assert str(ext_exc).strip(), f"lstm_ext raised {type(ext_exc).__name__} with no message"
        assert isinstance(ext_exc, type(ref_exc)), (
            f"torch.nn raised {type(ref_exc).__name__}: {ref_exc}\n"
            f"lstm_ext raised {type(ext_exc).__name__}: {ext_exc}")
        _assert_no_kernel_before_error(rec)
        return "raised"

    # Both returned: the same structure, shapes, dtypes and devices as torch.nn,
    # the same values (NaN where torch.nn has NaN), then the same gradients.
    assert _structure(ext_res) == _structure(ref_res), (_structure(ext_res), _structure(ref_res))
    for i, (a, e) in enumerate(zip(_flatten(ext_res), _flatten(ref_res))):
        # torch.nn ran on the CPU: on another device, lstm_ext's results are there.
        want_device = e.device if device == "cpu" or e.device.type == "meta" else torch.device(device)
        assert (a.shape, a.dtype, a.device.type) == (e.shape, e.dtype, want_device.type), (i, a, e)
    if any(t.device.type == "meta" for t in _tensors_of(ext_res)):
        return "returned (meta)"
    oracle, oracle_args, oracle_res = ref, ref_args, ref_res
    low_precision = case.dtype in ("bfloat16", "float16")
    if low_precision:
        # float16 only reaches here on CUDA (the CPU refuses it, above).
        oracle, oracle_args = _upcast_call(ref, ref_args, DTYPES[case.dtype])
        with single_threaded():
            oracle_res = oracle(*oracle_args)
    otol, gtol = result_tols(DTYPES[case.dtype])
    for i, (a, e) in enumerate(zip(_tensors_of(ext_res), _tensors_of(oracle_res))):
        _compare(a.cpu().to(e.dtype), e, otol, f"output {i}")
    # relu in bfloat16 / float16: a pre-activation within rounding of 0 may
    # switch a unit's derivative between 0 and 1, in lstm_ext's rounding of h_t
    # as in torch.nn's; the gradients are not comparable (tests/test_bf16.py
    # measures them).
    relu_bf16 = low_precision and case.nonlinearity == "relu"
    via = DTYPES[case.dtype]
    with single_threaded():
        exp_g = _grads(oracle, oracle_res, oracle_args, case.seed, via)
    got_g = _grads(ext, ext_res, args, case.seed, via)
    assert (exp_g is None) == (got_g is None)
    if exp_g is None:
        return "returned"
    for i, (a, e) in enumerate(zip(got_g, exp_g)):
        if e is None or a is None:
            # torch.nn may leave a gradient unused (None) where lstm_ext returns
            # zeros, and conversely: both mean "no dependence".
            other = a if e is None else e
            assert other is None or not other.any(), f"grad {i}: one is None, the other nonzero"
            continue
        assert a.shape == e.shape, (f"grad {i}", a.shape, e.shape)
        if not relu_bf16:
            _compare(a.cpu().to(e.dtype), e, gtol, f"grad {i}")
    return "returned, relu bf16: grads unchecked" if relu_bf16 else "returned"
