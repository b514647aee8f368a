#!/usr/bin/env bash
# Build the real CUDA extension (kernels, binding, link against torch's CUDA
# libraries and cuBLAS) on a machine without a GPU, import it, and run the
# tests that reach the C++ error paths with it loaded:
#
#   bash scripts/cuda_build_check.sh        (or `make cuda-build`; part of `make test`)
#
# 1. A virtual environment of its own ($CUDA_VENV, default build/cuda-venv)
#    with a CUDA build of torch ($CUDA_TORCH_SPEC, default torch==2.14.1, the
#    CUDA 13 build on PyPI; ~5.5 GB, ~5 min the first time, reused after) and
#    the test dependencies. The main environment's CPU torch is not touched.
# 2. setup.py build_ext with USE_CUDA=1 for $TORCH_CUDA_ARCH_LIST (default
#    "8.0;9.0": A100 and H100/H200), out of tree in build/cuda (the in-place
#    lstm_ext/_C*.so of the CPU build is left alone), against the toolkit of
#    the nvcc on PATH. A toolkit without cuBLAS is fine: setup.py then takes
#    cuBLAS from torch's nvidia wheels.
# 3. The package with that .so, staged in build/cuda/lib, must import and
#    report "cuda" among its devices; then tests/test_check_messages.py and
#    tests/test_errors.py run against it (their CUDA variants skip without a
#    GPU), so the error paths are checked with torch's CUDA libraries loaded.
#
# Binding, template and link errors fail here instead of on a GPU machine.
# Skipped (exit 0) when nvcc is not on PATH or LSTM_EXT_CUDA_BUILD=0.
# Environment: PYTHON (the interpreter that makes the venv, default python3),
# CUDA_VENV, CUDA_TORCH_SPEC, TORCH_CUDA_ARCH_LIST, MAX_JOBS, CUDA_HOME
# (default: the toolkit of the nvcc on PATH).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { echo "[cuda-build] $*"; }
die() { echo "[cuda-build] error: $*" >&2; exit 1; }

if [[ "${LSTM_EXT_CUDA_BUILD:-1}" == 0 ]]; then
  say "LSTM_EXT_CUDA_BUILD=0: skipped"
  exit 0
fi
if ! command -v nvcc >/dev/null 2>&1; then
  say "nvcc not on PATH: skipped"
  exit 0
fi
start=$SECONDS

# The toolkit of the nvcc on PATH (which may be a wrapper script): nvcc names
# its own bin directory (_HERE_) in a dry run.
if [[ -z "${CUDA_HOME:-}" ]]; then
  bin=$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n 1)
  [[ -n "$bin" && -x "$bin/nvcc" ]] || die "cannot find the CUDA toolkit of $(command -v nvcc); set CUDA_HOME"
  CUDA_HOME=$(cd "$bin/.." && pwd)
fi
export CUDA_HOME
say "toolkit: $CUDA_HOME ($(nvcc --version | tail -n 1))"

PYTHON=${PYTHON:-python3}
VENV=${CUDA_VENV:-build/cuda-venv}
SPEC=${CUDA_TORCH_SPEC:-torch==2.14.1}
VPY=$VENV/bin/python
if ! { [[ -x "$VPY" ]] && "$VPY" -c "import torch, sys; sys.exit(torch.version.cuda is None)" 2>/dev/null; }; then
  say "creating $VENV with $SPEC (a CUDA build of torch; takes minutes the first time)"
  "$PYTHON" -m venv "$VENV"
  "$VPY" -m pip install -q --upgrade pip >/dev/null
  "$VPY" -m pip install -q "$SPEC"
fi
"$VPY" -m pip install -q "setuptools>=64" wheel ninja numpy pytest hypothesis expecttest >/dev/null
"$VPY" -c "import torch, sys; sys.exit(torch.version.cuda is None)" ||
  die "$VENV's torch has no CUDA ($SPEC): set CUDA_TORCH_SPEC to a CUDA build"
say "torch $("$VPY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') in $VENV ($((SECONDS - start)) s)"

# --- 2. build out of tree ------------------------------------------------------------------
OUT=build/cuda
mkdir -p "$OUT"
build_start=$SECONDS
say "building for TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0} (MAX_JOBS=${MAX_JOBS:-$(nproc)})"
if ! TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0} USE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$VPY" setup.py -q build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" >"$OUT.log" 2>&1; then
  grep -E "error|Error" "$OUT.log" | head -n 40 >&2 || true
  die "CUDA build failed (full log: $OUT.log)"
fi
say "built in $((SECONDS - build_start)) s: $(ls "$OUT"/lib/lstm_ext/_C*.so)"

# --- 3. import and error-path tests ----------------------------------------------------------
# The package's Python files next to the CUDA .so; PYTHONSAFEPATH keeps the
# checkout (with its CPU .so) off sys.path.
for f in lstm_ext/*.py; do cp "$f" "$OUT/lib/lstm_ext/"; done
export PYTHONPATH=$ROOT/$OUT/lib PYTHONSAFEPATH=1
"$VPY" - <<'EOF'
import lstm_ext, torch
from lstm_ext.ops import SUPPORTED_DEVICE_TYPES
assert "build/cuda/lib" in lstm_ext.__file__, lstm_ext.__file__
assert "cuda" in SUPPORTED_DEVICE_TYPES, SUPPORTED_DEVICE_TYPES
for op in ("lstm_forward", "lstm_backward", "rnn_forward", "rnn_backward", "gru_forward",
           "gru_backward"):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"lstm_ext::{op}", "CUDA"), op
print(f"[cuda-build] import ok: {lstm_ext.__file__}, devices {SUPPORTED_DEVICE_TYPES}, "
      f"GPU {'present' if torch.cuda.is_available() else 'absent'}")
EOF
"$VPY" -m pytest -q -p no:cacheprovider tests/test_check_messages.py tests/test_errors.py
say "done in $((SECONDS - start)) s"
