#!/usr/bin/env python3
"""Time lstm_ext.LSTM / RNN / GRU against torch.nn.LSTM / RNN / GRU,
for inference and for training, on padded or packed input.

Both implementations get identical weights and inputs and run interleaved in
one process, so slow drifts of the machine (frequency, other load) hit both
alike. Results go to a table on stdout, a JSON record and a PNG chart under
benchmarks/results/. See benchmarks/README.md.

    python3 benchmarks/bench.py                  # default suite, both modes
    python3 benchmarks/bench.py --quick          # smoke test, a few seconds
    python3 benchmarks/bench.py --shapes 100x32x256x256 50x8x128x128:L2:bi
    python3 benchmarks/bench.py --shapes 100x32x256x256:packed 100x32x256x256:rnn-relu:bi
    python3 benchmarks/bench.py --device cuda --fp32-precision strict   # TF32 off only

On CUDA float32 each case runs under torch's default TF32 flags and under
strict float32 (--fp32-precision both), both implementations alike; parity is
each one's error against a float64 torch.nn run, with a tolerance that knows
the precision (see "Parity" in benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, asdict
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

# Other processes' share of CPU time above which the results are flagged.
BUSY_WARN = 0.15

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run as `python3 benchmarks/bench.py`, sys.path[0] is benchmarks/, which would
# hide an in-place build (`setup.py build_ext --inplace`) of the checkout; the
# checkout is what the recorded git commit describes, so it goes first.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


# --------------------------------------------------------------------------- shapes

# Keys are torch's own names for the recurrences (torch.nn.RNNBase.mode), as
# recorded in the JSON. Matmul rows per hidden unit: LSTM has 4 gates, GRU 3,
# RNN one.
GATES = {"LSTM": 4, "RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3}
_MODEL_PREFIX = {"LSTM": "", "RNN_TANH": "RNN ", "RNN_RELU": "RNN-relu ", "GRU": "GRU "}
_MODEL_OPT = {"LSTM": "", "RNN_TANH": ":rnn", "RNN_RELU": ":rnn-relu", "GRU": ":gru"}


@dataclass(frozen=True)
class Shape:
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    # New fields go last with defaults, so the original 8-shape suite and its
    # labels/specs stay exactly as before.
    model: str = "LSTM"
    packed: bool = False

    @property
    def label(self) -> str:
        s = _MODEL_PREFIX[self.model] + f"T{self.T} B{self.B} I{self.I} H{self.H}"
        if self.layers != 1:
            s += f" L{self.layers}"
        if self.bidirectional:
            s += " bi"
        if self.packed:
            s += " packed"
        return s

    @property
    def spec(self) -> str:
        """The --shapes syntax that reproduces this shape."""
        s = f"{self.T}x{self.B}x{self.I}x{self.H}"
        if self.layers != 1:
            s += f":L{self.layers}"
        if self.bidirectional:
            s += ":bi"
        s += _MODEL_OPT[self.model]
        if self.packed:
            s += ":packed"
        return s

    @property
    def variant(self) -> str:
        return variant_of(self.model, self.packed)


def variant_of(model: str, packed: bool) -> str:
    """Model and input kind, e.g. "LSTM", "LSTM packed", "RNN": the grouping of
    the per-variant geomeans (JSON records carry model and packed, not this)."""
    return (_MODEL_PREFIX[model].strip() or "LSTM") + (" packed" if packed else "")


# The issue's shapes, in its order and grouped as it groups them: the summary
# reports geometric means for each group separately (shape_group).
SMALL_SHAPES = [
    Shape(200, 1, 64, 64),
    Shape(200, 8, 64, 64),
    Shape(100, 4, 128, 128, layers=2),
    Shape(50, 1, 256, 256),
]
LARGE_SHAPES = [
    Shape(100, 32, 256, 256),
    Shape(100, 64, 512, 512),
    Shape(50, 32, 256, 256, layers=2),
]
# On a GPU (the CUDA-path issue): large-batch shapes (B >= 64, H in {512,
# 1024}, T = 100) against cuDNN, and small batches (B <= 8), reported.
GPU_LARGE_SHAPES = [
    Shape(100, 64, 512, 512),
    Shape(100, 64, 1024, 1024),
    Shape(100, 128, 512, 512),
    Shape(100, 256, 1024, 1024),
]
GPU_SMALL_SHAPES = [
    Shape(100, 1, 256, 256),
    Shape(100, 4, 512, 512),
    Shape(100, 8, 1024, 1024),
    Shape(1000, 4, 512, 512),
]
# The GRU issue's targets are the same small and large shapes, as nn.GRU.
GRU_SMALL_SHAPES = [Shape(s.T, s.B, s.I, s.H, s.layers, model="GRU") for s in SMALL_SHAPES]
GRU_LARGE_SHAPES = [Shape(s.T, s.B, s.I, s.H, s.layers, model="GRU") for s in LARGE_SHAPES]
GPU_GRU_SHAPES = [
    Shape(100, 64, 512, 512, model="GRU"),
    Shape(100, 256, 1024, 1024, model="GRU"),
    Shape(100, 8, 1024, 1024, model="GRU"),
]
CPU_GROUPS = {"small": SMALL_SHAPES, "large": LARGE_SHAPES,
              "gru-small": GRU_SMALL_SHAPES, "gru-large": GRU_LARGE_SHAPES}
GPU_GROUPS = {"gpu-large": GPU_LARGE_SHAPES, "gpu-small": GPU_SMALL_SHAPES, "gpu-gru": GPU_GRU_SHAPES}
GROUPS = {**CPU_GROUPS, **GPU_GROUPS}

DEFAULT_SUITE = [
    # The issue's 7 shapes first (small, then large); the extra variants
    # (bidirectional, packed, RNN) follow and belong to no group.
    *SMALL_SHAPES,
    *LARGE_SHAPES,
    Shape(100, 16, 128, 128, bidirectional=True),
    Shape(100, 32, 256, 256, packed=True),
    Shape(100, 32, 256, 256, model="RNN_TANH"),
    *GRU_SMALL_SHAPES,
    *GRU_LARGE_SHAPES,
]


GPU_SUITE = [
    *GPU_LARGE_SHAPES,
    *GPU_SMALL_SHAPES,
    Shape(100, 64, 512, 512, layers=2, bidirectional=True),
    Shape(100, 64, 512, 512, packed=True),
    Shape(100, 64, 512, 512, model="RNN_TANH"),
    *GPU_GRU_SHAPES,
]


def shape_group(shape: Shape, device_type: str = "cpu") -> Optional[str]:
    """The issue's group of a shape on this device type (also when given with
    --shapes): "small"/"large" on the CPU, "gpu-small"/"gpu-large" on CUDA;
    None for the rest."""
    for name, members in (GPU_GROUPS if device_type == "cuda" else CPU_GROUPS).items():
        if shape in members:
            return name
    return None


# Small enough to finish in seconds, but still covering every code path the
# default suite touches (multi-layer, bidirectional, batch of one, packed
# input, the RNN modules).
QUICK_SUITE = [
    Shape(20, 4, 32, 32),
    Shape(10, 1, 16, 32),
    Shape(10, 2, 16, 16, layers=2, bidirectional=True),
    Shape(20, 4, 32, 32, packed=True),
    Shape(20, 4, 32, 32, model="RNN_TANH"),
    Shape(20, 4, 32, 32, model="GRU"),
]

_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)((?::[^:]+)*)$")
_SHAPE_SYNTAX = "TxBxIxH[:L<layers>][:bi][:rnn|:rnn-relu|:gru][:packed]"
_MODEL_OPTS = {"lstm": "LSTM", "rnn": "RNN_TANH", "rnn-tanh": "RNN_TANH", "rnn-relu": "RNN_RELU", "gru": "GRU"}


def parse_shape(text: str) -> Shape:
    """Parse `TxBxIxH[:L<layers>][:bi][:rnn|:rnn-relu|:gru][:packed]`, e.g. `100x32x256x256:L2:bi:packed`."""
    m = _SHAPE_RE.match(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: expected {_SHAPE_SYNTAX}, e.g. 100x32x256x256:L2:bi")
    T, B, I, H = (int(g) for g in m.groups()[:4])
    layers, bidir, model, packed = 1, False, None, False
    for opt in filter(None, m.group(5).split(":")):
        if opt in ("bi", "bidir", "bidirectional"):
            bidir = True
        elif re.fullmatch(r"l\d+", opt):
            layers = int(opt[1:])
        elif opt in ("packed", "pack"):
            packed = True
        elif opt.replace("_", "-") in _MODEL_OPTS:
            new = _MODEL_OPTS[opt.replace("_", "-")]
            if model not in (None, new):
                # Silently letting the last one win would time a model nobody asked for.
                raise argparse.ArgumentTypeError(f"bad shape {text!r}: more than one model option")
            model = new
        else:
            raise argparse.ArgumentTypeError(
                f"bad shape option {opt!r} in {text!r}: use L<layers>, bi, rnn, rnn-relu, gru, lstm or packed")
    if min(T, B, I, H, layers) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: all sizes must be >= 1")
    return Shape(T, B, I, H, layers, bidir, model or "LSTM", packed)


def seq_lengths(shape: Shape, seed: int = 0) -> list:
    """Per-sequence lengths of the batch: all T unless the shape is packed.

    Packed batches get lengths linearly spaced from T down to max(1, T//4), so
    the per-step batch shrinks steadily as in a real bucket of sentences, in a
    shuffled order (fixed seed) so that enforce_sorted=False really has to sort
    and unsort. The longest is always T, so T stays the step count.
    """
    if not shape.packed:
        return [shape.T] * shape.B
    lengths = np.rint(np.linspace(shape.T, max(1, shape.T // 4), shape.B)).astype(int).tolist()
    order = torch.randperm(shape.B, generator=torch.Generator().manual_seed(seed)).tolist()
    return [lengths[i] for i in order]


def real_tokens(shape: Shape) -> int:
    """Tokens that carry data: padding is not work a user wants done.

    The shuffle only reorders the lengths, so the seed does not matter here.
    """
    return sum(seq_lengths(shape))


def rnn_flops(shape: Shape, mode: str) -> float:
    """Matmul flops of one call; elementwise gate math is ignored.

    Per layer and direction the input and recurrent projections are
    2*N*G*H*(I_l + H), with N the real (unpadded) tokens and G the gate count
    (4 for LSTM, 3 for GRU, 1 for RNN). Training counts 3x forward: the backward needs one
    product for the input gradient and one for the weight gradient, which is
    also why the benchmark input requires grad.
    """
    dirs = 2 if shape.bidirectional else 1
    tokens = real_tokens(shape)
    total = 0.0
    for layer in range(shape.layers):
        in_l = shape.I if layer == 0 else shape.H * dirs
        total += dirs * 2.0 * tokens * GATES[shape.model] * shape.H * (in_l + shape.H)
    return total * (3.0 if mode == "training" else 1.0)


# --------------------------------------------------------------------------- environment

def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _cpu_slug(model: str) -> str:
    # Vendor decorations and the clock suffix only make names long.
    model = re.sub(r"\((r|tm|c)\)", " ", model, flags=re.I)
    model = re.sub(r"@.*$", "", model)
    model = re.sub(r"\b(cpu|processor)\b", " ", model, flags=re.I)
    return slugify(model) or "unknown"


def machine_slug(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return "cuda-" + slugify(torch.cuda.get_device_name(device))
    return f"cpu-{_cpu_slug(cpu_model())}-{threads}t"


def git_commit() -> Optional[str]:
    """Short HEAD, with -dirty when tracked sources differ; None without git/commits."""
    def git(*args):
        return subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        # Results written by this tool must not make the tree count as dirty.
        st = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results")
        return head.stdout.strip() + ("-dirty" if st.returncode == 0 and st.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class LoadMeter:
    """CPU share that *other* processes used since construction, on Linux.

    All CPUs' busy time from /proc/stat minus this process's own CPU time,
    over wall time x CPUs. On a shared 2-core box a concurrent compile makes
    torch's OpenMP threads fight for cores and timings balloon by up to 100x;
    this is how such cases get noticed, retried and flagged.
    """

    def __init__(self):
        self.start = self._snap()

    @staticmethod
    def _snap():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        # guest time is already inside user; steal is time the host took from us.
        busy = sum(v) - v[3] - v[4]
        t = os.times()
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), t.user + t.system

    def other_load(self) -> Optional[float]:
        end = self._snap()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(1.0, max(0.0, other / max(wall * (os.cpu_count() or 1), 1e-9)))


def cpu_busy_fraction(interval: float = 0.5) -> Optional[float]:
    meter = LoadMeter()
    time.sleep(interval)
    return meter.other_load()


def wait_for_idle(max_wait: float, threshold: float) -> Optional[float]:
    """Sleep until other processes leave the CPUs (two quiet seconds) or max_wait passes."""
    deadline = time.perf_counter() + max_wait
    quiet, load = 0, cpu_busy_fraction(1.0)
    while load is not None and time.perf_counter() < deadline:
        quiet = quiet + 1 if load <= threshold else 0
        if quiet >= 2:
            break
        load = cpu_busy_fraction(1.0)
    return load


KERNEL_ENV = "LSTM_EXT_CPU_KERNEL"


def default_cpu_kernel(available, dtype: Optional[torch.dtype]) -> Optional[str]:
    """The kernel lstm_ext picks by itself for `dtype`: the first available,
    except that bf16-only kernels (avx512bf16) do not run float32."""
    usable = available if dtype == torch.bfloat16 else [k for k in available if "bf16" not in k]
    return usable[0] if usable else None


def cpu_kernel_info(requested: Optional[str], dtype: Optional[torch.dtype] = None) -> dict:
    """Which CPU kernel the ext runs: the request (--kernel), the environment
    value, the kernels available here (best first) and the effective one for
    `dtype` (bf16-only kernels such as avx512bf16 serve bfloat16 alone; a
    float32 run uses the best float kernel). "error" is set when the value
    names no available kernel."""
    env = os.environ.get(KERNEL_ENV)
    info = {"requested": requested, "env": env, "available": None, "effective": None}
    try:
        available = list(torch.ops.lstm_ext.cpu_kernels())
    except (AttributeError, RuntimeError):
        # An ext without kernel selection (e.g. a stand-in module): nothing to pick.
        if requested not in (None, "auto"):
            info["error"] = f"--kernel {requested}: this lstm_ext has no cpu_kernels() op"
        return info
    info["available"] = available
    default = default_cpu_kernel(available, dtype)
    if env in (None, "", "auto"):
        info["effective"] = default
    elif env in available:
        info["effective"] = env if (dtype == torch.bfloat16 or "bf16" not in env) else default
    else:
        info["error"] = (f"{KERNEL_ENV}={env!r} is not a kernel of this build/CPU; "
                         f"expected auto or one of {', '.join(available)}")
    return info


def load_ext(module_name: str, class_names):
    """Import the implementation under test; fail loudly rather than fall back.

    Returns ({class name: ext class} for each of class_names, module, version).
    Only the classes the chosen shapes use are required, so an LSTM-only
    build can still run an LSTM-only suite.
    """
    try:
        mod = importlib.import_module(module_name)
    except Exception as e:  # an ImportError or a crash in the extension's init
        sys.exit(f"error: cannot import {module_name!r}: {type(e).__name__}: {e}\n"
                 f"Build it first, e.g. `python3 setup.py build_ext --inplace` (or `make build`) in {REPO_ROOT}.")
    classes = {}
    for name in class_names:
        cls = getattr(mod, name, None)
        if cls is None:
            where = getattr(mod, "__file__", None) or list(getattr(mod, "__path__", []))
            sys.exit(f"error: {module_name!r} (from {where}) has no attribute {name}; "
                     f"the extension is probably not built yet: `python3 setup.py build_ext --inplace` or `make build`.")
        if cls is getattr(torch.nn, name):
            # Timing torch against itself would produce plausible-looking nonsense.
            sys.exit(f"error: {module_name}.{name} is torch.nn.{name} itself; refusing to benchmark torch against torch.")
        classes[name] = cls
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v
            version = _v(module_name.split(".")[0])
        except Exception:
            version = None
    return classes, mod, version


def module_class_name(model: str) -> str:
    """torch.nn / lstm_ext class that implements `model` (RNN covers both nonlinearities)."""
    return "RNN" if model.startswith("RNN") else model


# --------------------------------------------------------------------------- fp32 precision (CUDA)

# On CUDA, float32 GEMMs may run in TF32: torch.nn.LSTM's cuDNN GEMMs do by
# default (torch.backends.cudnn.allow_tf32 is True), and lstm_ext's cuBLAS GEMMs
# follow the same flag. A float32 CUDA run therefore times each case under one
# or both settings, each applied to both implementations of a row alike:
#   default: torch's defaults, cudnn.allow_tf32=True (TF32 allowed in the RNN
#            GEMMs), cuda.matmul.allow_tf32=False;
#   strict:  both flags False, strict float32 throughout.
# Values: (cudnn.allow_tf32, cuda.matmul.allow_tf32).
FP32_SETTINGS = {"default": (True, False), "strict": (False, False)}
# How the table and chart name them: what the RNN GEMMs are allowed to use.
PRECISION_LABEL = {"default": "tf32", "strict": "fp32"}


def precision_settings(device: torch.device, dtype: torch.dtype, choice: str) -> list:
    """The --fp32-precision settings a run times: ["default", "strict"], one of
    them, or [None] where TF32 does not apply (the CPU, dtypes other than float32)."""
    if device.type != "cuda" or dtype != torch.float32:
        return [None]
    return list(FP32_SETTINGS) if choice == "both" else [choice]


def _fp32_precision_leaves() -> list:
    """[(name, module)] of the per-operator fp32_precision values of torch >= 2.9
    that the two legacy TF32 flags map onto: cuda.matmul, cudnn.conv and
    cudnn.rnn ("tf32", "ieee" or "none" = inherit from a parent); [] before 2.9."""
    b = torch.backends
    leaves = []
    try:
        for name, mod in (("cuda.matmul", b.cuda.matmul), ("cudnn.conv", b.cudnn.conv),
                          ("cudnn.rnn", b.cudnn.rnn)):
            mod.fp32_precision  # noqa: B018  (AttributeError before torch 2.9)
            leaves.append((name, mod))
    except AttributeError:
        return []
    return leaves


def _read(getter):
    """getter(), or None where torch refuses (mixed legacy/new TF32 API values raise)."""
    try:
        return getter()
    except RuntimeError:
        return None


def tf32_flags_now() -> dict:
    """The TF32 flags in force, for the record: the two legacy booleans (None
    where torch refuses to read one) and, on torch >= 2.9, the effective
    fp32_precision of cuda.matmul, cudnn.conv and cudnn.rnn."""
    b = torch.backends
    out = {"cudnn.allow_tf32": _read(lambda: bool(b.cudnn.allow_tf32)),
           "cuda.matmul.allow_tf32": _read(lambda: bool(b.cuda.matmul.allow_tf32))}
    for name, mod in _fp32_precision_leaves():
        out[f"{name}.fp32_precision"] = mod.fp32_precision
    return out


def _set_tf32(cudnn_tf32: bool, matmul_tf32: bool) -> None:
    b = torch.backends
    # The legacy setters also keep torch's legacy state (the allow_tf32 bool of
    # cuDNN, float32_matmul_precision) in step, so its legacy getters and
    # consistency checks keep working.
    b.cudnn.allow_tf32 = cudnn_tf32
    b.cuda.matmul.allow_tf32 = matmul_tf32
    # But on torch >= 2.9 cudnn.allow_tf32=False writes "none" (inherit), and a
    # parent (cudnn.fp32_precision or torch.backends.fp32_precision = "tf32")
    # would then still allow TF32; the leaves are set explicitly.
    for name, mod in _fp32_precision_leaves():
        mod.fp32_precision = "tf32" if (matmul_tf32 if name == "cuda.matmul" else cudnn_tf32) else "ieee"


def _save_tf32() -> Callable[[], None]:
    """Snapshot of the TF32 flags that _set_tf32 writes; returns the function that puts them back.

    Exact for every state set through one API (the legacy flags,
    set_float32_matmul_precision, or the fp32_precision values). Where the
    user mixed both so that torch's legacy getters refuse to read, the hidden
    legacy value cannot be read either: the effective per-operator values are
    put back, which the legacy getters then read consistently.
    """
    b = torch.backends
    cudnn = _read(lambda: bool(b.cudnn.allow_tf32))
    matmul_prec = _read(torch.get_float32_matmul_precision)
    matmul = _read(lambda: bool(b.cuda.matmul.allow_tf32))
    leaves = [(mod, mod.fp32_precision) for _, mod in _fp32_precision_leaves()]
    if leaves:
        # set_float32_matmul_precision below also writes oneDNN's matmul value.
        leaves.append((b.mkldnn.matmul, b.mkldnn.matmul.fp32_precision))

    def restore():
        # Legacy state first (where it was readable), then the effective
        # per-operator values, which the legacy setters may have overwritten.
        if cudnn is not None:
            b.cudnn.allow_tf32 = cudnn
        if matmul_prec is not None:
            torch.set_float32_matmul_precision(matmul_prec)
        elif matmul is not None:
            b.cuda.matmul.allow_tf32 = matmul
        for mod, value in leaves:
            mod.fp32_precision = value
    return restore


@contextlib.contextmanager
def tf32_flags(cudnn_tf32: Optional[bool], matmul_tf32: bool = False):
    """Run the body with torch.backends.cudnn.allow_tf32 = cudnn_tf32 and
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32, then put the user's
    flags back (also on an exception). cudnn_tf32=None changes nothing (the
    CPU, dtypes other than float32)."""
    if cudnn_tf32 is None:
        yield
        return
    restore = _save_tf32()
    try:
        _set_tf32(bool(cudnn_tf32), bool(matmul_tf32))
        yield
    finally:
        restore()


def fp32_precision(setting: Optional[str]):
    """tf32_flags for a --fp32-precision setting ("default"/"strict"); None: no change."""
    return tf32_flags(*FP32_SETTINGS[setting]) if setting is not None else tf32_flags(None)


# --------------------------------------------------------------------------- models

# Dtypes measured against torch.nn's own error in them (check_parity_reduced).
LOW_PRECISION = (torch.bfloat16, torch.float16)


def build_models(shape: Shape, ext_classes, device, dtype, seed: int = 0):
    """A torch.nn model and an ext model with identical weights, plus one input.

    The input is a (T, B, I) tensor, or for packed shapes one PackedSequence
    built here once, so both implementations see the very same object and the
    packing cost is not timed.
    """
    torch.manual_seed(seed)
    # bfloat16: both models are built in float32 (the same initial weights as a
    # float32 run) and converted with .bfloat16(), as a user would.
    build_dtype = torch.float32 if dtype in LOW_PRECISION else dtype
    kwargs = dict(input_size=shape.I, hidden_size=shape.H, num_layers=shape.layers, bias=True,
                  batch_first=False, dropout=0.0, bidirectional=shape.bidirectional,
                  device=device, dtype=build_dtype)
    if shape.model.startswith("RNN"):
        kwargs["nonlinearity"] = "relu" if shape.model == "RNN_RELU" else "tanh"
    name = module_class_name(shape.model)
    ref = getattr(torch.nn, name)(**kwargs)
    ext = ext_classes[name](**kwargs)
    ext.load_state_dict(ref.state_dict())
    if dtype in LOW_PRECISION:
        ref, ext = ref.to(dtype), ext.to(dtype)
    # Training steps give their own copy of x requires_grad (see make_step), so
    # the input-gradient product counted by rnn_flops is really computed.
    x = torch.randn(shape.T, shape.B, shape.I, device=device, dtype=build_dtype).to(dtype)
    if shape.packed:
        # Packing drops the padding, so neither model can see or spend time on it.
        x = pack_padded_sequence(x, seq_lengths(shape, seed), enforce_sorted=False)
    return ref, ext, x


def input_with_grad(x):
    """(a copy of x to feed the model, the leaf tensor whose .grad is dx).

    A fresh leaf per step owner, so that the two implementations never share
    or accumulate into one gradient buffer.
    """
    if isinstance(x, PackedSequence):
        data = x.data.detach().clone().requires_grad_(True)
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices), data
    xg = x.detach().clone().requires_grad_(True)
    return xg, xg


def result_tensors(result) -> tuple:
    """(output, h_n[, c_n]) as plain tensors, whatever the model and input kind.

    For packed input the output's .data holds exactly the real tokens; its
    padding-free layout is what both implementations must agree on.
    """
    y, hn = result
    if isinstance(y, PackedSequence):
        y = y.data
    return (y, *hn) if isinstance(hn, tuple) else (y, hn)


def loss_of(result) -> torch.Tensor:
    """Sum of every returned tensor: each one gets a gradient of ones."""
    tensors = result_tensors(result)
    loss = tensors[0].sum()
    for t in tensors[1:]:
        loss = loss + t.sum()
    return loss


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0


def check_parity(ref, ext, x, with_grad: bool, tol: float, grad_tol: float) -> dict:
    """Compare outputs (and, with_grad, input/parameter gradients) once per shape.

    Forward uses allclose(atol=rtol=tol). Gradients accumulate over T steps, so
    they get a looser grad_tol, relative to the largest reference gradient.
    """
    res = {"checked": "forward+grad" if with_grad else "forward"}
    packed = isinstance(x, PackedSequence)
    try:
        if with_grad:
            ref.train(); ext.train()
            outs, grads = [], []
            for m in (ref, ext):
                m.zero_grad(set_to_none=True)
                xi, leaf = input_with_grad(x)
                result = m(xi)
                loss_of(result).backward()
                outs.append(result_tensors(result))
                grads.append([leaf.grad] + [p.grad for _, p in sorted(m.named_parameters())])
            m_names = ["input.data" if packed else "input"] + [n for n, _ in sorted(ref.named_parameters())]
        else:
            ref.eval(); ext.eval()
            with torch.no_grad():
                outs = [result_tensors(m(x)) for m in (ref, ext)]
        fwd_ok, fwd_diff = True, 0.0
        names = ("output.data" if packed else "output", "h_n", "c_n")
        if len(outs[0]) != len(outs[1]):
            return {**res, "ok": False, "fwd_ok": False, "max_abs_diff": None,
                    "error": f"{len(outs[1])} results != reference {len(outs[0])}"}
        for r, e, name in zip(outs[0], outs[1], names):
            if r.shape != e.shape:
                return {**res, "ok": False, "fwd_ok": False, "max_abs_diff": None,
                        "error": f"{name} shape {tuple(e.shape)} != reference {tuple(r.shape)}"}
            fwd_diff = max(fwd_diff, _max_abs_diff(r, e))
            fwd_ok &= bool(torch.allclose(r, e, atol=tol, rtol=tol))
        res.update(ok=fwd_ok, fwd_ok=fwd_ok, max_abs_diff=fwd_diff)
        if with_grad:
            g_ok, g_rel, worst = True, 0.0, None
            for name, gr, ge in zip(m_names, grads[0], grads[1]):
                if gr is None or ge is None or gr.shape != ge.shape:
                    g_ok, worst = False, f"{name}: missing or misshapen gradient"
                    break
                scale = max(float(gr.abs().max()), 1e-12)
                rel = _max_abs_diff(gr, ge) / scale
                if rel > g_rel:
                    g_rel, worst = rel, name
                g_ok &= bool(torch.allclose(gr, ge, atol=grad_tol * scale, rtol=grad_tol))
            res.update(grad_ok=g_ok, grad_max_rel_diff=g_rel, grad_worst=worst, ok=fwd_ok and g_ok)
    except Exception as e:
        res.setdefault("fwd_ok", False)
        res.setdefault("max_abs_diff", None)
        res.update(ok=False, error=f"{type(e).__name__}: {e}")
    return res


# bfloat16 parity: how much worse than torch.nn's own bfloat16 error ours may be
# (as tests/test_bf16.py): max|ours - ref32| <= BF16_FACTOR * max|torch - ref32|
# + BF16_FLOOR * max|ref32|, per output and per gradient.
BF16_FACTOR = 2.0
BF16_FLOOR = 2.0 ** -10


def upcast_input(x, dtype):
    """x (a tensor or PackedSequence) with its values converted to dtype (exact for bf16 -> fp32)."""
    if isinstance(x, PackedSequence):
        return PackedSequence(x.data.to(dtype), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return x.to(dtype)


def _outputs_and_grads(m, x, with_grad: bool, as_dtype: torch.dtype = torch.float32):
    """(result tensors, [input grad, parameter grads by sorted name] or None), as as_dtype copies."""
    if with_grad:
        m.train()
        m.zero_grad(set_to_none=True)
        xi, leaf = input_with_grad(x)
        result = m(xi)
        loss_of(result).backward()
        grads = [leaf.grad] + [p.grad for _, p in sorted(m.named_parameters())]
        grads = [None if g is None else g.detach().to(as_dtype) for g in grads]
    else:
        m.eval()
        with torch.no_grad():
            result = m(x)
        grads = None
    return [t.detach().to(as_dtype) for t in result_tensors(result)], grads


def check_parity_reduced(ref, ext, x, with_grad: bool) -> dict:
    """Parity of a bfloat16 run: both implementations against a float32
    reference holding the same (bfloat16) weights and inputs, upcast.

    max_abs_diff is ours vs that reference, torch_max_abs_diff torch.nn's
    bfloat16 error vs the same reference; ok when ours is at most BF16_FACTOR
    times torch's plus BF16_FLOOR * max|reference|, for every output and, with
    with_grad, every gradient (relative to the largest reference gradient).
    """
    import copy
    res = {"checked": "forward+grad" if with_grad else "forward",
           "reference": "float32 of the same bfloat16 weights and inputs",
           "rule": f"ours <= {BF16_FACTOR:g} * torch + {BF16_FLOOR:g} * max|ref|"}
    packed = isinstance(x, PackedSequence)
    try:
        ref32 = copy.deepcopy(ref).float()
        (o32, g32) = _outputs_and_grads(ref32, upcast_input(x, torch.float32), with_grad)
        (o_t, g_t) = _outputs_and_grads(ref, x, with_grad)
        (o_e, g_e) = _outputs_and_grads(ext, x, with_grad)
        names = ("output.data" if packed else "output", "h_n", "c_n")
        if len(o_e) != len(o32) or any(a.shape != b.shape for a, b in zip(o_e, o32)):
            return {**res, "ok": False, "fwd_ok": False, "max_abs_diff": None,
                    "error": f"result shapes {[tuple(t.shape) for t in o_e]} != reference "
                             f"{[tuple(t.shape) for t in o32]}"}
        fwd_ok, ours, theirs = True, 0.0, 0.0
        for r, t, e, name in zip(o32, o_t, o_e, names):
            d_e, d_t = _max_abs_diff(r, e), _max_abs_diff(r, t)
            ours, theirs = max(ours, d_e), max(theirs, d_t)
            scale = float(r.abs().max()) if r.numel() else 0.0
            fwd_ok &= bool(d_e <= BF16_FACTOR * d_t + BF16_FLOOR * scale)
        res.update(ok=fwd_ok, fwd_ok=fwd_ok, max_abs_diff=ours, torch_max_abs_diff=theirs)
        if with_grad:
            m_names = ["input.data" if packed else "input"] + [n for n, _ in sorted(ref.named_parameters())]
            g_ok, rel_e, rel_t, worst = True, 0.0, 0.0, None
            for name, gr, gt, ge in zip(m_names, g32, g_t, g_e):
                if gr is None or ge is None or gt is None or gr.shape != ge.shape:
                    g_ok, worst = False, f"{name}: missing or misshapen gradient"
                    break
                scale = max(float(gr.abs().max()), 1e-12)
                r_e, r_t = _max_abs_diff(gr, ge) / scale, _max_abs_diff(gr, gt) / scale
                if r_e > rel_e:
                    rel_e, worst = r_e, name
                rel_t = max(rel_t, r_t)
                g_ok &= bool(r_e <= BF16_FACTOR * r_t + BF16_FLOOR)
            res.update(grad_ok=g_ok, grad_max_rel_diff=rel_e, grad_torch_max_rel_diff=rel_t,
                       grad_worst=worst, ok=fwd_ok and g_ok)
    except Exception as e:
        res.setdefault("fwd_ok", False)
        res.setdefault("max_abs_diff", None)
        res.update(ok=False, error=f"{type(e).__name__}: {e}")
    return res


# Parity against float64, the check that decides on CUDA and joins the one
# above on the CPU: torch.nn run in float64 on the same device, with the same
# weights and inputs (upcast from the run's dtype, exactly, so that rounding
# them to bfloat16 does not count as error), is the reference; each
# implementation's error is ||out - ref|| / ||ref|| (norms over all elements),
# per output tensor and, in training, per gradient (input and each parameter).
# lstm_ext fails where its error exceeds a tolerance that knows the precision:
#   float32, strict:         max(1e-5,  2 * torch_err)
#   float32, TF32 allowed:   max(2e-3,  2 * torch_err)
#   float64:                 max(1e-10, 2 * torch_err)
#   bfloat16 / float16:      2 * torch_err + 2**-10
# torch_err is torch.nn's own error against the same reference, in the same
# dtype and under the same TF32 flags; a non-finite one widens nothing.
ERR_FACTOR = 2.0
ERR_FLOOR = {"fp32": 1e-5, "tf32": 2e-3, "float64": 1e-10, "low": 2.0 ** -10}


def err_rule(dtype: torch.dtype, tf32: bool) -> tuple:
    """(kind, floor) of lstm_ext's tolerance: "max" = max(floor, ERR_FACTOR * torch_err),
    "sum" = ERR_FACTOR * torch_err + floor."""
    if dtype in LOW_PRECISION:
        return "sum", ERR_FLOOR["low"]
    if dtype == torch.float64:
        return "max", ERR_FLOOR["float64"]
    return "max", ERR_FLOOR["tf32" if tf32 else "fp32"]


def err_rule_text(rule: tuple) -> str:
    kind, floor = rule
    if kind == "sum":
        return f"ext_err <= {ERR_FACTOR:g} * torch_err + {floor:g}"
    return f"ext_err <= max({floor:g}, {ERR_FACTOR:g} * torch_err)"


def err_tolerance(rule: tuple, torch_err: float) -> float:
    kind, floor = rule
    t = ERR_FACTOR * torch_err if math.isfinite(torch_err) else 0.0
    return t + floor if kind == "sum" else max(floor, t)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (the absolute norm where ref is all zeros)."""
    diff = float(torch.linalg.vector_norm(out.to(torch.float64) - ref))
    scale = float(torch.linalg.vector_norm(ref))
    return diff / scale if scale > 0 else diff


def float64_reference(ref, x, with_grad: bool):
    """(outputs, grads or None) of a float64 copy of the torch.nn model ref on x
    upcast, as float64 tensors: what check_parity_float64 measures against."""
    ref64 = copy.deepcopy(ref).to(torch.float64)
    return _outputs_and_grads(ref64, upcast_input(x, torch.float64), with_grad, as_dtype=torch.float64)


def _worst_err(names, refs, theirs, ours, rule) -> dict:
    """Per tensor errors and tolerances; the failing tensor, else the one nearest its tolerance."""
    if len(ours) != len(refs) or len(theirs) != len(refs):
        return {"ok": False, "ext": None, "torch": None, "tol": None,
                "tensor": f"{len(ours)} results (torch.nn {len(theirs)}) != reference {len(refs)}"}
    rows = []
    for name, r, t, e in zip(names, refs, theirs, ours):
        if r is None or t is None or e is None or r.shape != e.shape or r.shape != t.shape:
            return {"ok": False, "ext": None, "torch": None, "tol": None,
                    "tensor": f"{name}: missing or misshapen"}
        e_err, t_err = rel_err(e, r), rel_err(t, r)
        tol = err_tolerance(rule, t_err)
        ok = bool(e_err <= tol)  # False for NaN
        rows.append((not ok, e_err / tol if ok else math.inf, name, e_err, t_err, tol, ok))
    *_, name, e_err, t_err, tol, _ = max(rows, key=lambda row: row[:2])
    return {"ok": all(row[-1] for row in rows), "ext": e_err, "torch": t_err, "tol": tol, "tensor": name}


def check_parity_float64(ref, ext, x, with_grad: bool, reference, dtype: torch.dtype, tf32: bool) -> dict:
    """Both implementations' relative errors against `reference` (float64_reference,
    or an error message where that failed), judged by err_rule(dtype, tf32).

    Forward: ext_err, torch_err, tol, err_tensor (the tensor nearest failing)
    and fwd_err_ok; with_grad adds the grad_ fields for the gradients.
    """
    rule = err_rule(dtype, tf32)
    res = {"err_reference": "torch.nn in float64, same weights and inputs", "err_rule": err_rule_text(rule)}
    try:
        if isinstance(reference, str):
            raise RuntimeError(f"float64 reference failed: {reference}")
        (o_r, g_r) = reference
        (o_t, g_t) = _outputs_and_grads(ref, x, with_grad, as_dtype=torch.float64)
        (o_e, g_e) = _outputs_and_grads(ext, x, with_grad, as_dtype=torch.float64)
        packed = isinstance(x, PackedSequence)
        names = ("output.data" if packed else "output", "h_n", "c_n")
        w = _worst_err(names, o_r, o_t, o_e, rule)
        res.update(fwd_err_ok=w["ok"], ext_err=w["ext"], torch_err=w["torch"], tol=w["tol"],
                   err_tensor=w["tensor"])
        if with_grad:
            g_names = ["input.data" if packed else "input"] + [n for n, _ in sorted(ref.named_parameters())]
            w = _worst_err(g_names, g_r, g_t, g_e, rule)
            res.update(grad_err_ok=w["ok"], grad_ext_err=w["ext"], grad_torch_err=w["torch"],
                       grad_tol=w["tol"], grad_err_tensor=w["tensor"])
    except Exception as e:
        res["fwd_err_ok"] = False
        if with_grad:
            res["grad_err_ok"] = False
        res["err_error"] = f"{type(e).__name__}: {e}"
    return res


def combine_parity(direct: dict, err: dict, with_grad: bool, direct_decides: bool) -> dict:
    """One parity record: the direct check's fields (check_parity or
    check_parity_reduced, unchanged) and check_parity_float64's, with the
    verdicts fwd_ok / grad_ok / ok from the float64 check, and also from the
    direct one where direct_decides (the CPU, as before). Where the direct
    check does not decide, its verdicts stay as fwd_direct_ok / grad_direct_ok
    and its exception, if any, as direct_error."""
    res = {**direct, **err, "direct_decides": direct_decides}
    res["fwd_direct_ok"] = bool(direct.get("fwd_ok", False))
    fwd_ok = bool(err.get("fwd_err_ok")) and (res["fwd_direct_ok"] or not direct_decides)
    res["fwd_ok"] = ok = fwd_ok
    if with_grad:
        res["grad_direct_ok"] = bool(direct.get("grad_ok", False))
        res["grad_ok"] = bool(err.get("grad_err_ok")) and (res["grad_direct_ok"] or not direct_decides)
        ok = ok and res["grad_ok"]
    if not direct_decides and "error" in res:
        res["direct_error"] = res.pop("error")
    res["ok"] = ok
    return res


# --------------------------------------------------------------------------- timed steps

def make_step(model, x, mode: str) -> Callable[[], None]:
    """One timed call of `model`, the way a user would run it in `mode`."""
    if mode == "inference":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        xg, leaf = input_with_grad(x)

        def step():
            # Zeroing is part of a real training step, so it is timed too.
            model.zero_grad(set_to_none=True)
            leaf.grad = None
            loss_of(model(xg)).backward()
    return step


def make_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    """Return f(step) -> seconds for one call of step on `device`."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def timed(step):
            # Work queued by the previous call must not leak into this one.
            torch.cuda.synchronize(device)
            start.record()
            step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    else:
        def timed(step):
            t0 = time.perf_counter()
            step()
            return time.perf_counter() - t0
    return timed


def time_interleaved(step_ref, step_ext, timed, warmup: int, repeats: int,
                     min_time: float, max_repeats: int):
    """Median-ready samples for both steps, run alternately.

    Each round runs both once, swapping which goes first so neither always
    inherits the other's cache state. Rounds continue past `repeats` until both
    together have run 2*min_time (about min_time each), capped by max_repeats.
    """
    for _ in range(warmup):
        step_ref(); step_ext()
    t_ref, t_ext = [], []
    was_enabled = gc.isenabled()
    gc.collect()
    # A collector pause would land on whichever implementation happened to run.
    gc.disable()
    try:
        i = 0
        while True:
            if i % 2 == 0:
                t_ref.append(timed(step_ref)); t_ext.append(timed(step_ext))
            else:
                t_ext.append(timed(step_ext)); t_ref.append(timed(step_ref))
            i += 1
            if i >= max_repeats or (i >= repeats and sum(t_ref) + sum(t_ext) >= 2 * min_time):
                break
    finally:
        if was_enabled:
            gc.enable()
    return np.array(t_ref), np.array(t_ext)


def summarize(samples: np.ndarray) -> dict:
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_ms": med * 1e3, "min_ms": float(samples.min()) * 1e3, "iqr_ms": (q3 - q1) * 1e3,
            "n": int(samples.size)}


def gemm_ceiling(device, dtype, n: int, timed, min_time: float = 1.0) -> dict:
    """Median GFLOP/s of a square torch.mm: the practical peak for this machine/dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    step = lambda: torch.mm(a, b, out=out)  # noqa: E731
    # A few calls are not enough: the first ~0.3 s of GEMMs in a fresh process
    # run at about half speed (thread pool and clocks ramping up), so warm by time.
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        step()
    ts = []
    while len(ts) < 5 or (sum(ts) < min_time and len(ts) < 1000):
        ts.append(timed(step))
    med = float(np.median(ts))
    return {"n": n, "gflops": 2.0 * n ** 3 / med / 1e9, "median_ms": med * 1e3, "repeats": len(ts)}


def measure_on_quiet_machine(measure: Callable[[], object], device, args, warn, what: str):
    """Run measure(); redo it (after waiting for idle) when other processes took CPU meanwhile.

    Returns (result, other_cpu_load or None, attempts). The last attempt is kept
    even when still contaminated; callers flag it.
    """
    for attempt in range(1 + args.busy_retries):
        meter = LoadMeter() if device.type == "cpu" else None
        result = measure()
        load = meter.other_load() if meter else None
        if load is None or load <= BUSY_WARN:
            break
        if attempt < args.busy_retries:
            warn(f"!!! {what}: other processes used {100 * load:.0f}% of the CPUs while timing; "
                 f"waiting up to {args.idle_wait:.0f} s for idle and retrying")
            wait_for_idle(args.idle_wait, BUSY_WARN / 2)
        else:
            warn(f"!!! {what}: other processes used {100 * load:.0f}% of the CPUs while timing; "
                 f"result kept but flagged (~)")
    return result, load, attempt + 1


# --------------------------------------------------------------------------- one case

def run_shape(shape: Shape, modes, settings, ext_classes, device, dtype, timed, args, tol, grad_tol,
              warn) -> list:
    """All modes of one shape, under each precision setting: build once, compute
    the float64 reference once, then per setting check parity once and time each mode."""
    records = []
    tokens = real_tokens(shape)
    base = {**asdict(shape), "shape": shape.label, "spec": shape.spec, "group": shape_group(shape, device.type),
            "real_tokens": tokens}
    cls = module_class_name(shape.model)
    try:
        ref, ext, x = build_models(shape, ext_classes, device, dtype, seed=args.seed)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        warn(f"!!! {shape.label}: could not build/load models: {msg}")
        return [{**base, "mode": m, "precision": s, "error": msg, "parity": {"ok": False}}
                for s in settings for m in modes]
    with_grad = "training" in modes
    try:
        # float64 is not affected by the TF32 flags: one reference serves every setting.
        reference = float64_reference(ref, x, with_grad)
    except Exception as e:
        reference = f"{type(e).__name__}: {e}"
    for setting in settings:
        what = shape.label + (f" [{PRECISION_LABEL[setting]}]" if setting else "")
        # Both implementations of a row, their parity check and their timing run
        # under the same flags; the user's flags come back after each setting.
        with fp32_precision(setting):
            flags = tf32_flags_now() if setting is not None else None
            if dtype in LOW_PRECISION:
                direct = check_parity_reduced(ref, ext, x, with_grad=with_grad)
            else:
                direct = check_parity(ref, ext, x, with_grad=with_grad, tol=tol, grad_tol=grad_tol)
            err = check_parity_float64(ref, ext, x, with_grad, reference, dtype, tf32=setting == "default")
            parity = combine_parity(direct, err, with_grad, direct_decides=device.type == "cpu")
            if not parity["ok"]:
                warn("!" * 78 + f"\n!!! PARITY FAILURE {what}: lstm_ext disagrees with torch.nn.{cls}: "
                     f"{parity_failure_summary(parity)}\n!!! {json.dumps(parity)}"
                     f"\n!!! its timings below are for a BROKEN implementation\n" + "!" * 78)
            for mode in modes:
                rec = {**base, "mode": mode, "precision": setting, "tf32_flags": flags,
                       "flops": rnn_flops(shape, mode), "parity": parity_for_mode(parity, mode)}
                try:
                    (t_ref, t_ext), load, attempts = measure_on_quiet_machine(
                        lambda: time_interleaved(make_step(ref, x, mode), make_step(ext, x, mode), timed,
                                                 warmup=args.warmup, repeats=args.repeats,
                                                 min_time=args.min_time, max_repeats=args.max_repeats),
                        device, args, warn, f"{what} {mode}")
                    rec.update(other_cpu_load=load, attempts=attempts)
                except Exception as e:
                    msg = f"{type(e).__name__}: {e}"
                    warn(f"!!! {what} {mode}: timing failed: {msg}")
                    rec["error"] = msg
                    records.append(rec)
                    continue
                r, e_ = summarize(t_ref), summarize(t_ext)
                rec.update(
                    ref=r, ext=e_,
                    speedup=r["median_ms"] / e_["median_ms"],
                    ref_tokens_per_s=tokens / (r["median_ms"] / 1e3),
                    ext_tokens_per_s=tokens / (e_["median_ms"] / 1e3),
                    ref_gflops=rec["flops"] / (r["median_ms"] / 1e3) / 1e9,
                    ext_gflops=rec["flops"] / (e_["median_ms"] / 1e3) / 1e9,
                )
                records.append(rec)
    del ref, ext, x, reference
    gc.collect()
    return records


def parity_failure_summary(parity: dict) -> str:
    """What failed, in a line: the float64 check's numbers, the direct check, exceptions."""
    def num(v):
        return "n/a" if v is None else f"{v:.2e}"
    why = []
    for ok_key, prefix, what in (("fwd_err_ok", "", "outputs"), ("grad_err_ok", "grad_", "gradients")):
        if parity.get(ok_key) is False and f"{prefix}ext_err" in parity:
            why.append(f"{what} ({parity.get(prefix + 'err_tensor')}): ext_err {num(parity.get(prefix + 'ext_err'))}"
                       f" > tol {num(parity.get(prefix + 'tol'))} (torch_err {num(parity.get(prefix + 'torch_err'))})")
    if parity.get("err_error"):
        why.append(f"float64 check: {parity['err_error']}")
    if parity.get("direct_decides"):
        if parity.get("fwd_direct_ok") is False:
            why.append(f"direct comparison of outputs failed (max_abs_diff {num(parity.get('max_abs_diff'))})")
        if parity.get("grad_direct_ok") is False:
            why.append(f"direct comparison of gradients failed (grad_max_rel_diff "
                       f"{num(parity.get('grad_max_rel_diff'))}, {parity.get('grad_worst')})")
        if parity.get("error"):
            why.append(parity["error"])
    return "; ".join(why) or "see the record"


def parity_for_mode(parity: dict, mode: str) -> dict:
    """Inference is judged on the forward check only; training also on gradients."""
    if mode == "training":
        return dict(parity)
    out = {k: v for k, v in parity.items() if not k.startswith("grad")}
    out.update(checked="forward", ok=parity.get("fwd_ok", False))
    return out


# --------------------------------------------------------------------------- reporting

def fmt_rate(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def _err_shown(par: dict):
    """(ext_err, torch_err, tol) of the parity record's float64 check to show: of
    the forward and (training) gradient checks, the one nearest its tolerance
    (a failing one first); None where the check produced no numbers."""
    best = None
    for prefix in ("", "grad_"):
        e, t, tol = par.get(prefix + "ext_err"), par.get(prefix + "torch_err"), par.get(prefix + "tol")
        if e is None or tol is None:
            continue
        key = (not e <= tol, e / tol if e <= tol else math.inf)
        if best is None or key > best[0]:
            best = (key, (e, t, tol))
    return best[1] if best else None


def format_table(records, gemm_gflops: float) -> str:
    """A Markdown table: readable in a terminal and pasteable into NOTES.md."""
    with_prec = any(r.get("precision") is not None for r in records)
    head = ["shape", "mode", *(["precision"] if with_prec else []), "torch ms", "ext ms", "speedup",
            "torch tok/s", "ext tok/s", "ext GFLOP/s", "% GEMM", "parity"]
    rows = []
    for r in records:
        par = r.get("parity", {})
        par_s = "ok" if par.get("ok") else "FAIL"
        shown = _err_shown(par)
        if shown is not None:
            # relative errors vs the float64 reference: ours, torch.nn's, our tolerance
            e, t, tol = shown
            par_s += f" (ext {e:.1e}, torch {t:.1e}, tol {tol:.1e})"
        elif par.get("max_abs_diff") is not None:
            par_s += f" ({par['max_abs_diff']:.1e})"
        if par.get("direct_decides") and (par.get("fwd_direct_ok") is False or par.get("grad_direct_ok") is False):
            par_s += " direct"
        prec = [PRECISION_LABEL.get(r.get("precision"), "-")] if with_prec else []
        if "error" in r:
            rows.append([r["shape"], r["mode"], *prec, "-", "-", "ERROR", "-", "-", "-", "-", par_s])
            continue
        eff = r.get("gemm_efficiency", r["ext_gflops"] / gemm_gflops)
        rows.append([
            r["shape"], r["mode"], *prec,
            f"{r['ref']['median_ms']:.3f}", f"{r['ext']['median_ms']:.3f}",
            f"{r['speedup']:.2f}x" + ("" if par.get("ok") else " !!") + (" ~" if _busy(r) else ""),
            fmt_rate(r["ref_tokens_per_s"]), fmt_rate(r["ext_tokens_per_s"]),
            f"{r['ext_gflops']:.1f}" if r["ext_gflops"] >= 1 else f"{r['ext_gflops']:.3f}", f"{100 * eff:.0f}%", par_s,
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    left = {0, 1, len(head) - 1} | ({2} if with_prec else set())
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join((":" + "-" * (w + 1)) if i in left else ("-" * (w + 1) + ":")
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def _busy(rec) -> bool:
    return (rec.get("other_cpu_load") or 0.0) > BUSY_WARN


def geomean_speedups(records) -> dict:
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        sp = [r["speedup"] for r in records if r["mode"] == mode and "speedup" in r]
        if sp:
            out[mode] = {"geomean": math.exp(sum(map(math.log, sp)) / len(sp)), "n": len(sp),
                         "parity_failures": sum(1 for r in records if r["mode"] == mode
                                                and not r.get("parity", {}).get("ok")),
                         "busy_cases": sum(1 for r in records if r["mode"] == mode and _busy(r))}
    return out


def geomean_by_variant(records) -> dict:
    """geomean_speedups per variant, so that the suite-wide geomean, which mixes
    LSTM, RNN and packed cases, can be taken apart and the plain-LSTM figure
    compared with runs made before the other variants existed."""
    variants = dict.fromkeys(variant_of(r.get("model", "LSTM"), r.get("packed", False)) for r in records)
    return {v: geomean_speedups([r for r in records
                                 if variant_of(r.get("model", "LSTM"), r.get("packed", False)) == v])
            for v in variants}


def summary_by_group(records) -> dict:
    """Per group of the issues ("small", "large", "gru-small", ...) and mode: geomean and minimum
    speedup, and the range of ext GFLOP/s as a fraction of the GEMM ceiling.
    Shapes outside the groups are left out (they are in geomean_speedup)."""
    out = {}
    for group in GROUPS:
        per_mode = {}
        for mode in dict.fromkeys(r["mode"] for r in records):
            rs = [r for r in records if r.get("group") == group and r["mode"] == mode and "speedup" in r]
            if not rs:
                continue
            worst = min(rs, key=lambda r: r["speedup"])
            eff = [r["gemm_efficiency"] for r in rs if "gemm_efficiency" in r] or [float("nan")]
            per_mode[mode] = {
                "geomean": math.exp(sum(math.log(r["speedup"]) for r in rs) / len(rs)), "n": len(rs),
                "min_speedup": worst["speedup"], "min_shape": worst["shape"],
                "gemm_efficiency_min": min(eff), "gemm_efficiency_max": max(eff),
                "parity_failures": sum(1 for r in rs if not r.get("parity", {}).get("ok")),
            }
        if per_mode:
            out[group] = per_mode
    return out


def min_speedups(records) -> dict:
    """The slowest single case per mode, over every shape of the run."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in records):
        rs = [r for r in records if r["mode"] == mode and "speedup" in r]
        if rs:
            w = min(rs, key=lambda r: r["speedup"])
            out[mode] = {"speedup": w["speedup"], "shape": w["shape"]}
    return out


def summaries(records) -> dict:
    """The per-mode summaries of a set of records (one precision setting's)."""
    return {"geomean_speedup": geomean_speedups(records),
            "geomean_speedup_by_variant": geomean_by_variant(records),
            "summary_by_group": summary_by_group(records),
            "min_speedup": min_speedups(records)}


def torch_classes(records) -> str:
    """"LSTM", "RNN" or "LSTM/RNN": the torch.nn reference(s) a run compared against."""
    return "/".join(dict.fromkeys(module_class_name(r.get("model", "LSTM")) for r in records)) or "LSTM"


PRECISION_TITLE = {"default": "default: TF32 allowed (torch's defaults, cudnn.allow_tf32=True)",
                   "strict": "strict: fp32 (cudnn/cuda.matmul allow_tf32=False)"}


def write_plot(path: str, meta: dict, records) -> None:
    """Speedup bars per shape and mode on a log axis; one panel per precision
    setting (CUDA float32 with both settings: default and strict side by side,
    on one shared axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, NullLocator

    shapes = list(dict.fromkeys(r["shape"] for r in records))
    modes = list(dict.fromkeys(r["mode"] for r in records))
    panels = list(dict.fromkeys(r.get("precision") for r in records)) or [None]
    colors = {"inference": "#4C72B0", "training": "#DD8452"}
    bar_h = 0.8 / len(modes)
    height = 1.2 + 0.62 * len(shapes) * max(1, len(modes)) / 1.5
    if len(panels) > 1:
        height += 0.4  # the panel titles
    fig, axes = plt.subplots(1, len(panels), figsize=(10 if len(panels) == 1 else 7.5 * len(panels), height),
                             sharey=True, squeeze=False)
    vals = [r["speedup"] for r in records if "speedup" in r] or [1.0]
    lo, hi = min(min(vals), 1.0) / 1.35, max(max(vals), 1.0) * 1.35
    nice = [0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100]
    ticks = [t for t in nice if lo <= t <= hi]
    if len(ticks) < 4:
        ticks = sorted(set(ticks) | {t for t in (0.8, 0.9, 1.1, 1.2) if lo <= t <= hi})
    ref_name = f"torch.nn.{torch_classes(records)}"
    for ax, prec in zip(axes[0], panels):
        for mi, mode in enumerate(modes):
            for si, shape in enumerate(shapes):
                rec = next((r for r in records if r["shape"] == shape and r["mode"] == mode
                            and r.get("precision") == prec), None)
                if rec is None:
                    continue
                y = si + (mi - (len(modes) - 1) / 2) * bar_h
                ok = rec.get("parity", {}).get("ok")
                if "speedup" not in rec:
                    ax.text(1.0, y, "  error", va="center", fontsize=9, color="red")
                    continue
                s = rec["speedup"]
                # Bars grow from the 1.0x line on a log axis: right = faster, left = slower,
                # and 2x faster looks as long as 2x slower.
                ax.barh(y, s - 1.0, left=1.0, height=bar_h * 0.9, color=colors.get(mode, "gray"),
                        hatch=None if ok else "xx", edgecolor="red" if not ok else "none")
                txt = f"{s:.2f}×" + ("" if ok else " PARITY FAIL") + (" (busy)" if _busy(rec) else "")
                ax.text(s * (1.02 if s >= 1 else 0.98), y, txt, va="center",
                        ha="left" if s >= 1 else "right", fontsize=8.5, color="black" if ok else "red")
        ax.axvline(1.0, color="black", lw=1.2)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}×" for t in ticks])
        ax.set_yticks(range(len(shapes)))
        ax.set_yticklabels(shapes, fontfamily="monospace", fontsize=9)
        ax.set_ylim(len(shapes) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"speedup of lstm_ext over {ref_name} (median time ratio, log scale; >1 = faster)"
                      if len(panels) == 1 else "speedup (median time ratio, log scale; >1 = faster)")
        if len(panels) > 1:
            gm = meta.get("by_precision", {}).get(prec, {}).get("geomean_speedup", {})
            ax.set_title(PRECISION_TITLE.get(prec, str(prec)) + "\n"
                         + "geomean: " + ", ".join(f"{m} {v['geomean']:.2f}×" for m, v in gm.items()),
                         fontsize=9.5)
    gm = meta["geomean_speedup"]
    gm_s = ", ".join(f"{m} {v['geomean']:.2f}×" for m, v in gm.items())
    header = (f"lstm_ext vs {ref_name} — {meta['machine']}\n"
              f"torch {meta['torch_version']}, {meta['dtype']}, {meta['threads']} threads, "
              f"commit {meta['git_commit'] or 'n/a'}, {meta['date'][:16].replace('T', ' ')} UTC\n")
    ceiling = f"GEMM ceiling {meta['gemm_ceiling']['gflops']:.0f} GFLOP/s"
    if meta.get("gemm_ceiling_tf32"):
        ceiling += f" (TF32 {meta['gemm_ceiling_tf32']['gflops']:.0f})"
    if len(panels) == 1:
        prec = panels[0]
        axes[0][0].set_title(header + f"geomean: {gm_s}   |   {ceiling}"
                             + (f"   |   {PRECISION_LABEL[prec]} ({prec})" if prec else ""), fontsize=10)
    else:
        fig.suptitle(header + f"speedup of lstm_ext over {ref_name}, one panel per precision setting   |   "
                     + ceiling, fontsize=10)
    handles = [Patch(color=colors.get(m, "gray"), label=m) for m in modes]
    if any(not r.get("parity", {}).get("ok") for r in records):
        handles.append(Patch(facecolor="white", edgecolor="red", hatch="xx", label="parity failed"))
    axes[0][0].legend(handles=handles, loc="best", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark lstm_ext.LSTM / RNN / GRU against torch.nn.LSTM / RNN / GRU (inference and training, "
                    "padded or packed input).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", nargs="+", type=parse_shape, metavar=_SHAPE_SYNTAX.replace("<layers>", "<n>"),
                   help="custom shapes instead of the default suite, e.g. 100x32x256x256 50x8x64x64:L2:bi "
                        "100x32x256x256:rnn-relu:packed (:rnn = tanh RNN, :packed = PackedSequence of "
                        "varied lengths)")
    p.add_argument("--quick", action="store_true", help="tiny suite and short timing: a smoke test")
    p.add_argument("--mode", choices=["inference", "training", "both"], default="both")
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"], default="float32",
                   help="bfloat16 / float16 (CUDA only): both models converted with .to(dtype), inputs in "
                        "that dtype; parity is each "
                        "one's error vs a float64 run (on the CPU also vs a float32 run) of the same values; "
                        "on the CPU the GEMM ceiling "
                        "stays float32 (lstm_ext computes bf16 in float32)")
    p.add_argument("--fp32-precision", choices=["default", "strict", "both"], default="both",
                   help="CUDA float32 only (ignored elsewhere): time each case with torch's default TF32 "
                        "flags (default: cudnn.allow_tf32=True, so torch.nn's cuDNN and lstm_ext's GEMMs may "
                        "use TF32), with strict float32 (strict: cudnn.allow_tf32 and cuda.matmul.allow_tf32 "
                        "False), or both, one after the other; both implementations of a row run under the "
                        "same flags, and the user's flags are restored afterwards")
    p.add_argument("--kernel", default=None, metavar="NAME",
                   help="set LSTM_EXT_CPU_KERNEL=NAME for the run: one of torch.ops.lstm_ext.cpu_kernels() "
                        "(e.g. avx512, avx2, generic, reference) or auto; default: the environment's")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch.set_num_threads (default: torch's default, {torch.get_num_threads()} here)")
    p.add_argument("--repeats", type=int, default=5, help="minimum timed rounds per case")
    p.add_argument("--max-repeats", type=int, default=1000, help="maximum timed rounds per case")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="keep timing until each implementation has run about this many seconds")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each implementation per case")
    p.add_argument("--busy-retries", type=int, default=3,
                   help="re-time a case this often when other processes used >15%% of the CPUs meanwhile")
    p.add_argument("--idle-wait", type=float, default=120.0,
                   help="seconds to wait for an idle machine before the run and before each retry")
    p.add_argument("--gemm-size", type=int, default=2048, help="n of the n x n torch.mm GEMM ceiling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "benchmarks", "results"))
    p.add_argument("--tag", default=None,
                   help="suffix for the result file name (default: 'quick' / 'custom' for non-default suites)")
    p.add_argument("--no-plot", action="store_true")
    # Developer hook to exercise this script against a stand-in before lstm_ext exists.
    p.add_argument("--ext-module", default="lstm_ext", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        # Explicit knobs on the command line still win over --quick's shortcuts.
        given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
        if "--min-time" not in given:
            args.min_time = 0.1
        if "--repeats" not in given:
            args.repeats = 3
        if "--warmup" not in given:
            args.warmup = 1
        if "--gemm-size" not in given:
            args.gemm_size = 1024
    if args.dtype == "float16" and args.device != "cuda":
        p.error("--dtype float16 is supported on CUDA only (--device cuda); use bfloat16 on the CPU")
    if args.repeats < 1 or args.max_repeats < args.repeats or args.warmup < 0:
        p.error("need 1 <= --repeats <= --max-repeats and --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    # lstm_ext computes bfloat16 in float32, so its ceiling is the float32 GEMM (sgemm).
    # On CUDA the GEMMs run in the low-precision dtype itself (tensor cores).
    gemm_dtype = torch.float32 if dtype in LOW_PRECISION and device.type == "cpu" else dtype
    if args.kernel is not None:
        # Read by the ops at every call; set before anything runs.
        os.environ[KERNEL_ENV] = args.kernel
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    default_suite = GPU_SUITE if args.device == "cuda" else DEFAULT_SUITE
    shapes = args.shapes or (QUICK_SUITE if args.quick else default_suite)
    ext_classes, ext_mod, ext_version = load_ext(
        args.ext_module, dict.fromkeys(module_class_name(s.model) for s in shapes))
    kernel_info = cpu_kernel_info(args.kernel, dtype)
    if kernel_info.get("error"):
        sys.exit(f"error: {kernel_info['error']}")
    modes = ["inference", "training"] if args.mode == "both" else [args.mode]
    # [None] where TF32 does not apply; on CUDA float32 "default" and/or "strict".
    settings = precision_settings(device, dtype, args.fp32_precision)
    if settings == [None] and args.fp32_precision != "both":
        print(f"note: --fp32-precision {args.fp32_precision} ignored: TF32 applies to float32 on CUDA only",
              file=sys.stderr)
    tol, grad_tol = (1e-4, 1e-3) if dtype == torch.float32 else (1e-9, 1e-8)
    timed = make_timer(device)

    slug = machine_slug(device, threads)
    tag = args.tag or ("quick" if args.quick else "custom" if args.shapes else None)
    dtype_suffix = {torch.float32: "", torch.bfloat16: "-bf16", torch.float16: "-fp16"}.get(dtype, f"-{args.dtype}")
    # A kernel other than the default one gets its own files; the default keeps the plain name.
    eff = kernel_info.get("effective")
    default = default_cpu_kernel(kernel_info.get("available") or [], dtype)
    kernel_suffix = f"-{eff}" if eff and default and eff != default else ""
    # A run of one precision setting only gets its own files; both (the default) keep the plain name.
    prec_suffix = f"-{settings[0]}" if len(settings) == 1 and settings[0] is not None else ""
    stem = slug + dtype_suffix + kernel_suffix + prec_suffix + (f"-{tag}" if tag else "")
    os.makedirs(args.out_dir, exist_ok=True)

    warnings = []

    def warn(msg):
        warnings.append(msg)
        tqdm.write(msg, file=sys.stderr)

    busy_before = None
    if device.type == "cpu":
        busy_before = cpu_busy_fraction()
        if busy_before is not None and busy_before > BUSY_WARN and args.idle_wait > 0:
            print(f"machine busy ({100 * busy_before:.0f}% used by other processes); "
                  f"waiting up to {args.idle_wait:.0f} s for it to go idle", file=sys.stderr, flush=True)
            busy_before = wait_for_idle(args.idle_wait, BUSY_WARN / 2)
    gemm_time = 0.3 if args.quick else 1.0
    # On CUDA float32 the ceiling is a strict float32 GEMM, whatever the user's
    # flags; where the "default" setting runs, a TF32 GEMM (cuda.matmul.allow_tf32)
    # is the ceiling its rows are held against, as their GEMMs may use TF32.
    cuda_fp32 = settings != [None]
    tf32_ceiling = "default" in settings

    def measure_ceilings(when: str):
        with tf32_flags(False, False) if cuda_fp32 else tf32_flags(None):
            main_c = measure_on_quiet_machine(
                lambda: gemm_ceiling(device, gemm_dtype, args.gemm_size, timed, min_time=gemm_time),
                device, args, warn, "GEMM ceiling" + when)
        if not tf32_ceiling:
            return main_c, None
        with tf32_flags(True, True):
            return main_c, measure_on_quiet_machine(
                lambda: gemm_ceiling(device, gemm_dtype, args.gemm_size, timed, min_time=gemm_time),
                device, args, warn, "GEMM ceiling (TF32)" + when)

    (gemm, gemm_load, _), gemm_t = measure_ceilings("")
    err_rules = ({s: err_rule_text(err_rule(dtype, s == "default")) for s in settings} if cuda_fp32
                 else {args.dtype: err_rule_text(err_rule(dtype, False))})
    meta = {
        "machine": slug,
        "cpu_model": cpu_model(),
        "threads": threads,
        "cores": os.cpu_count(),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "dtype": args.dtype,
        "torch_version": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "ext_module": args.ext_module,
        "ext_version": ext_version,
        "ext_path": getattr(ext_mod, "__file__", None),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command_line": shlex.join([os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "timing": {"warmup": args.warmup, "min_repeats": args.repeats, "max_repeats": args.max_repeats,
                   "min_time_s": args.min_time, "statistic": "median of interleaved rounds",
                   "timer": "torch.cuda.Event" if device.type == "cuda" else "time.perf_counter"},
        "parity_tolerance": {
            **({"rule": f"ours <= {BF16_FACTOR:g} * torch.nn + {BF16_FLOOR:g} * max|ref|",
                "reference": "float32 of the same bfloat16 weights and inputs"}
               if dtype in LOW_PRECISION else {"forward_atol_rtol": tol, "grad_rel": grad_tol}),
            # The check against float64 (ext_err / torch_err / tol in each case's parity).
            "float64_check": {
                "reference": "torch.nn in float64 on the same device, same weights and inputs",
                "measure": "||out - ref|| / ||ref|| per output tensor and, in training, per gradient",
                "rules": err_rules,
                # On the CPU the direct check above decides too (as before); on CUDA it is recorded only.
                "direct_check_decides": device.type == "cpu"}},
        "fp32_precision": ({"settings": settings,
                            "flags": {s: dict(zip(("cudnn.allow_tf32", "cuda.matmul.allow_tf32"), FP32_SETTINGS[s]))
                                      for s in settings},
                            "user_flags": tf32_flags_now()} if cuda_fp32 else None),
        "cpu_kernel": kernel_info,
        "gemm_ceiling": {**gemm, "dtype": str(gemm_dtype).replace("torch.", ""),
                         **({"tf32": False} if cuda_fp32 else {})},
    }
    if gemm_t is not None:
        meta["gemm_ceiling_tf32"] = {**gemm_t[0], "dtype": "float32", "tf32": True}
    print(f"machine   {slug}  ({meta['device_name']}, {threads} threads of {os.cpu_count()} cores)")
    print(f"torch     {torch.__version__} (cpu capability {meta['torch_cpu_capability']}, "
          f"mkldnn {'on' if meta['torch_mkldnn_enabled'] else 'off'})")
    print(f"lstm_ext  {ext_version or '?'} from {meta['ext_path']}  [git {meta['git_commit'] or 'n/a'}]")
    print(f"dtype     {args.dtype} on {args.device}")
    if kernel_info.get("available"):
        print(f"kernel    {kernel_info['effective']}  ({KERNEL_ENV}={kernel_info['env'] or '(unset)'}; "
              f"available: {', '.join(kernel_info['available'])})")
    print(f"GEMM      {gemm['gflops']:.1f} GFLOP/s  (torch.mm {gemm['n']}x{gemm['n']} "
          f"{meta['gemm_ceiling']['dtype']}{', strict' if cuda_fp32 else ''}, median)")
    if gemm_t is not None:
        print(f"GEMM tf32 {gemm_t[0]['gflops']:.1f} GFLOP/s  (the same with cuda.matmul.allow_tf32=True: "
              f"the ceiling of the tf32 rows)")
    if cuda_fp32:
        print("precision " + ", then ".join(
            f"{s} ({PRECISION_LABEL[s]}: cudnn.allow_tf32={FP32_SETTINGS[s][0]}, "
            f"cuda.matmul.allow_tf32={FP32_SETTINGS[s][1]})" for s in settings)
            + "; user's flags restored after each")
    print(flush=True)

    if busy_before is not None and busy_before > BUSY_WARN:
        warn(f"!!! machine busy: other processes use {100 * busy_before:.0f}% of the CPUs; "
             f"timings will be noisy or badly inflated")

    t_start = time.perf_counter()
    records = []
    with tqdm(total=len(shapes) * len(modes) * len(settings), desc="benchmark", unit="case", file=sys.stderr,
              dynamic_ncols=True) as bar:
        for shape in shapes:
            bar.set_postfix_str(shape.label)
            recs = run_shape(shape, modes, settings, ext_classes, device, dtype, timed, args, tol, grad_tol,
                             warn)
            records.extend(recs)
            bar.update(len(recs))
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    # A second GEMM measurement brackets the run: if the machine's speed changed
    # (load, throttling) the two disagree and the results deserve suspicion.
    (gemm_after, gemm_after_load, _), gemm_t_after = measure_ceilings(" (after)")
    busy_after = cpu_busy_fraction() if device.type == "cpu" else None
    drift = gemm_after["gflops"] / gemm["gflops"] - 1.0
    meta["stability"] = {"cpu_busy_before": busy_before, "cpu_busy_after": busy_after,
                         "gemm_gflops_before": gemm["gflops"], "gemm_gflops_after": gemm_after["gflops"],
                         "gemm_other_cpu_load": [gemm_load, gemm_after_load], "gemm_drift": drift}
    # Contention only ever slows a GEMM down, so the better of the two is the ceiling.
    meta["gemm_ceiling"]["gflops"] = max(gemm["gflops"], gemm_after["gflops"])
    meta["gemm_ceiling"]["median_ms"] = min(gemm["median_ms"], gemm_after["median_ms"])
    if gemm_t is not None:
        meta["stability"].update(gemm_tf32_gflops_before=gemm_t[0]["gflops"],
                                 gemm_tf32_gflops_after=gemm_t_after[0]["gflops"])
        meta["gemm_ceiling_tf32"]["gflops"] = max(gemm_t[0]["gflops"], gemm_t_after[0]["gflops"])
        meta["gemm_ceiling_tf32"]["median_ms"] = min(gemm_t[0]["median_ms"], gemm_t_after[0]["median_ms"])
    if abs(drift) > 0.15 or (busy_after is not None and busy_after > BUSY_WARN):
        warn(f"!!! machine speed varied: GEMM {gemm['gflops']:.1f} -> {gemm_after['gflops']:.1f} GFLOP/s "
             f"({100 * drift:+.0f}%) before/after the suite, other-process CPU use after: "
             f"{'n/a' if busy_after is None else f'{100 * busy_after:.0f}%'}; absolute ms and GFLOP/s are "
             f"uncertain by about that much, interleaved speedups much less")
    for r in records:
        if "ext_gflops" in r:
            # The "default" rows' GEMMs may use TF32: their ceiling is the TF32 GEMM.
            ceiling = meta["gemm_ceiling_tf32" if r.get("precision") == "default" else "gemm_ceiling"]
            r["gemm_efficiency"] = r["ext_gflops"] / ceiling["gflops"]
    # The top-level summaries describe the first setting (on CUDA float32 with
    # both: "default", torch's defaults, as earlier runs); by_precision has each.
    by_prec = {s: summaries([r for r in records if r.get("precision") == s]) for s in settings}
    meta.update(by_prec[settings[0]])
    if cuda_fp32:
        meta["headline_precision"] = settings[0]
        meta["by_precision"] = by_prec

    print(format_table(records, meta["gemm_ceiling"]["gflops"]))
    notes = ["parity: relative error ||out - ref|| / ||ref|| against a float64 torch.nn run: lstm_ext's (ext), "
             "torch.nn's (torch)\n        and lstm_ext's tolerance (tol), for the output or (training) gradient "
             "nearest its tolerance"]
    if any(r.get("parity", {}).get("direct_decides") and False in (r["parity"].get("fwd_direct_ok"),
                                                                    r["parity"].get("grad_direct_ok"))
           for r in records):
        notes.append("direct = the direct lstm_ext vs torch.nn comparison failed (on the CPU it decides too)")
    if cuda_fp32:
        notes.append("precision: tf32 = --fp32-precision default (torch's defaults, cudnn.allow_tf32=True: both "
                     "may use TF32;\n        % GEMM of the TF32 ceiling), fp32 = strict (cudnn and cuda.matmul "
                     "allow_tf32=False)")
    if any(not r.get("parity", {}).get("ok") for r in records):
        notes.append("!! = parity failed: timing of a broken implementation")
    if any(_busy(r) for r in records):
        notes.append(f"~ = other processes used >{100 * BUSY_WARN:.0f}% of the CPUs while this case was timed")
    print("\n".join(notes))
    for setting in settings:
        summ = by_prec[setting]
        print()
        if setting is not None:
            print(f"precision {setting} ({PRECISION_LABEL[setting]}):")
        for mode, g in summ["geomean_speedup"].items():
            extra = f"   !! {g['parity_failures']} case(s) failed parity" if g["parity_failures"] else ""
            if g["busy_cases"]:
                extra += f"   ~ {g['busy_cases']} case(s) timed on a busy machine"
            print(f"geomean speedup ({mode}): {g['geomean']:.2f}x over {g['n']} shapes{extra}")
            by_variant = summ["geomean_speedup_by_variant"]
            if len(by_variant) > 1:
                print("    by variant: " + ", ".join(f"{v} {gv[mode]['geomean']:.2f}x ({gv[mode]['n']})"
                                                  for v, gv in by_variant.items() if mode in gv))
        for group, per_mode in summ["summary_by_group"].items():
            for mode, g in per_mode.items():
                print(f"{group:5s} {mode:9s}: geomean {g['geomean']:.2f}x over {g['n']} shapes, "
                      f"min {g['min_speedup']:.2f}x ({g['min_shape']}), ext at "
                      f"{100 * g['gemm_efficiency_min']:.1f}-{100 * g['gemm_efficiency_max']:.1f}% of the GEMM ceiling")
        for mode, m in summ["min_speedup"].items():
            print(f"min speedup ({mode}): {m['speedup']:.2f}x  ({m['shape']})")
    if cuda_fp32:
        print()
    print(f"GEMM ceiling: {meta['gemm_ceiling']['gflops']:.1f} GFLOP/s {meta['gemm_ceiling']['dtype']} "
          f"(before {gemm['gflops']:.1f}, after {gemm_after['gflops']:.1f}; % GEMM = ext GFLOP/s / "
          f"the better)")
    if gemm_t is not None:
        print(f"GEMM ceiling (TF32, of the tf32 rows): {meta['gemm_ceiling_tf32']['gflops']:.1f} GFLOP/s "
              f"(before {gemm_t[0]['gflops']:.1f}, after {gemm_t_after[0]['gflops']:.1f})")
    print(f"suite time: {meta['elapsed_s']:.1f} s")

    json_path = os.path.join(args.out_dir, stem + ".json")
    with open(json_path, "w") as f:
        json.dump({**meta, "warnings": warnings, "cases": records}, f, indent=2)
        f.write("\n")
    print(f"wrote {json_path}")
    if not args.no_plot:
        png_path = os.path.join(args.out_dir, stem + ".png")
        write_plot(png_path, meta, records)
        print(f"wrote {png_path}")
    if any(not r.get("parity", {}).get("ok") or "error" in r for r in records):
        print("WARNING: some cases failed parity or errored; see above and the JSON.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
