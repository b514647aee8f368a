#!/usr/bin/env bash
# Idempotent set-up behind `make test` and `make bench`:
#
#   bash scripts/bootstrap.sh [test|bench|build]
#
#   1. torch: installed (torch==2.13.0) only when `import torch` fails. An
#      importable torch is never touched, so a GPU machine keeps its CUDA build.
#   2. Python deps for the mode, each installed only if missing:
#        test:  pytest numpy tqdm matplotlib expecttest hypothesis onnx
#               onnxruntime onnxscript (tests/test_onnx.py: ONNX export)
#        bench: tqdm matplotlib numpy
#        build: none
#   3. Build tools: a `ninja` binary (else `pip install ninja`), setuptools>=64,
#      wheel.
#   4. Builds the extension in place: lstm_ext/_C*.so.
#
# Environment: PYTHON (default python3), MAX_JOBS (default nproc), TORCH_SPEC
# (what step 1 installs; default torch==2.13.0), and the
# build options read by setup.py (USE_CUDA, LSTM_EXT_CPU_ISA, LSTM_EXT_SANITIZE).
#
# Why step 4 is `setup.py build_ext --inplace` and not `pip install -e .`:
# measured with setuptools 84 / pip 23, `pip install --no-build-isolation -e .`
# compiles into a fresh temporary build directory on every call (setuptools'
# editable_wheel forces build_temp to a TemporaryDirectory), so every run is a
# full rebuild of all sources. `build_ext --inplace` keeps ninja's build tree
# in build/temp.*: a run with no change costs ~3 s (ninja "no work to do" +
# relink), and an edit recompiles only the touched translation units (header
# dependencies included, via ninja's depfiles). The result is the same
# lstm_ext/_C*.so next to the Python package; `python -m pytest` from the repo
# root and benchmarks/bench.py import it from the checkout. To install the
# package into the environment for use elsewhere, the supported way remains
#   $PYTHON -m pip install --no-build-isolation -e .     (or `make install`)
set -euo pipefail

MODE=${1:-build}
case "$MODE" in
  test)  DEPS=(pytest numpy tqdm matplotlib expecttest hypothesis onnx onnxruntime onnxscript) ;;
  bench) DEPS=(tqdm matplotlib numpy) ;;
  build) DEPS=() ;;
  *) echo "usage: $0 [test|bench|build]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}
export MAX_JOBS
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { echo "[bootstrap] $*"; }
die() { echo "[bootstrap] error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON not found"
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  say "pip missing: $PYTHON -m ensurepip"
  "$PYTHON" -m ensurepip --upgrade >/dev/null
fi
pip_install() {
  say "pip install $*"
  local log
  log=$(mktemp)
  if ! PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --disable-pip-version-check -q "$@" 2>"$log"; then
    cat "$log" >&2
    if grep -q "externally-managed-environment" "$log"; then
      echo "[bootstrap] $PYTHON is managed by the system package manager and refuses pip installs." >&2
      echo "[bootstrap] Use a virtual environment:  python3 -m venv .venv && make test PYTHON=.venv/bin/python" >&2
    fi
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}

# 1. torch -------------------------------------------------------------------
if TORCH_VERSION=$("$PYTHON" -c "import torch; print(torch.__version__)" 2>/dev/null); then
  say "torch $TORCH_VERSION already installed: left as is"
else
  pip_install "$TORCH_SPEC"
fi

# 2. Python deps (import name == distribution name for all of these) ---------
if ((${#DEPS[@]})); then
  mapfile -t MISSING < <("$PYTHON" - "${DEPS[@]}" <<'EOF'
import importlib.util, sys
for name in sys.argv[1:]:
    if importlib.util.find_spec(name) is None:
        print(name)
EOF
)
  if ((${#MISSING[@]})); then
    pip_install "${MISSING[@]}"
  else
    say "deps for '$MODE' present"
  fi
fi

# 3. Build tools -------------------------------------------------------------
# torch.utils.cpp_extension runs `ninja --version` from PATH; pip puts the
# ninja wheel's binary in this interpreter's scripts dir, which may not be on
# PATH (venv not activated, pyenv shims not rehashed).
SCRIPTS_DIR=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$PATH:$SCRIPTS_DIR"
if ! command -v ninja >/dev/null 2>&1; then
  pip_install ninja
  command -v ninja >/dev/null 2>&1 || die "ninja installed but not on PATH ($SCRIPTS_DIR)"
fi
NEED_TOOLS=$("$PYTHON" - <<'EOF'
import importlib.metadata as md, importlib.util
need = []
try:
    if int(md.version("setuptools").split(".")[0]) < 64:
        need.append("setuptools>=64")
except md.PackageNotFoundError:
    need.append("setuptools>=64")
if importlib.util.find_spec("wheel") is None:
    need.append("wheel")
print(" ".join(need))
EOF
)
if [[ -n "$NEED_TOOLS" ]]; then
  # shellcheck disable=SC2086
  pip_install $NEED_TOOLS
fi

# 4. Build -------------------------------------------------------------------
say "building lstm_ext._C in place (MAX_JOBS=$MAX_JOBS${USE_CUDA:+, USE_CUDA=$USE_CUDA}${LSTM_EXT_CPU_ISA:+, LSTM_EXT_CPU_ISA=$LSTM_EXT_CPU_ISA}${LSTM_EXT_SANITIZE:+, LSTM_EXT_SANITIZE=$LSTM_EXT_SANITIZE})"
LOG=build/bootstrap-build.log
mkdir -p build
start=$SECONDS
if ! "$PYTHON" setup.py build_ext --inplace >"$LOG" 2>&1; then
  tail -n 60 "$LOG" >&2
  die "build failed (full log: $LOG)"
fi
if grep -q "ninja: no work to do" "$LOG"; then
  say "up to date ($((SECONDS - start)) s)"
else
  say "built in $((SECONDS - start)) s (log: $LOG)"
fi
ls lstm_ext/_C*.so >/dev/null 2>&1 || die "no lstm_ext/_C*.so after the build (log: $LOG)"
