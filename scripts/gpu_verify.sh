#!/usr/bin/env bash
# Verify the CUDA path on a GPU machine in one call: build, run the whole
# test suite with CUDA, compute-sanitizer (memcheck, racecheck) on a subset,
# and the benchmark against cuDNN. Logs and results go to $OUT (default
# /tmp/lstm_ext_gpu), the benchmark JSON/PNG to $OUT/results.
#
#   bash scripts/gpu_verify.sh [build] [test] [sanitize] [bench] [bench-bf16]
#
# With no argument it runs every stage. Each stage logs to $OUT/<stage>.log
# and appends one line to $OUT/summary.txt; the script exits non-zero if any
# stage failed, after running the rest.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/lstm_ext_gpu}
PYTHON=${PYTHON:-python3}
JOBS=${MAX_JOBS:-$(nproc)}
mkdir -p "$OUT/results"
: >"$OUT/summary.txt"
STAGES=("$@")
((${#STAGES[@]})) || STAGES=(build test sanitize bench bench-bf16)
failed=0

stage() {  # stage NAME COMMAND...: run, log, time, record the outcome
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "ok   $name ($((SECONDS - start)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "FAIL $name ($((SECONDS - start)) s, rc $?): tail of $OUT/$name.log" | tee -a "$OUT/summary.txt"
    tail -n 30 "$OUT/$name.log"
    failed=1
  fi
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  | tee "$OUT/env.txt"

# The subset the sanitizer runs: every CUDA kernel (standard forward and
# backward in each dtype, projection, packed, reverse, RNN; the persistent
# kernels forced), small shapes so it stays quick.
SANITIZE_TESTS=(tests/test_cuda.py tests/test_ops.py tests/test_packed.py tests/test_projection.py
                tests/test_rnn_ops.py -k "cuda and not gradcheck and not compile and not long and not large"
                -p no:cacheprovider)

for s in "${STAGES[@]}"; do
  case $s in
    build)
      stage build env USE_CUDA=1 MAX_JOBS="$JOBS" "$PYTHON" setup.py build_ext --inplace ;;
    test)
      # xdist when available: the CPU half of the suite is the slow one.
      xdist=()
      "$PYTHON" -c "import xdist" 2>/dev/null && xdist=(-n 8)
      stage test "$PYTHON" -m pytest -q ${xdist[@]+"${xdist[@]}"} tests
      # auto sends small batches to the persistent kernels: run the CUDA cases
      # again on the standard path, and the persistent tests with it forced.
      stage test-standard env LSTM_EXT_CUDA_PATH=standard "$PYTHON" -m pytest -q \
        ${xdist[@]+"${xdist[@]}"} tests -k cuda
      stage test-persistent env LSTM_EXT_CUDA_PATH=persistent "$PYTHON" -m pytest -q \
        tests/test_cuda.py -k persistent ;;
    sanitize)
      # Without the caching allocator, an access past a tensor's end leaves
      # its allocation and memcheck sees it.
      stage memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
        --leak-check no --error-exitcode 3 "$PYTHON" -m pytest -q "${SANITIZE_TESTS[@]}"
      # Only the persistent kernels share memory between threads.
      stage racecheck compute-sanitizer --tool racecheck --error-exitcode 3 \
        "$PYTHON" -m pytest -q tests/test_cuda.py -k "persistent and not long and not large" \
        -p no:cacheprovider ;;
    bench)
      stage bench "$PYTHON" benchmarks/bench.py --device cuda --out-dir "$OUT/results" ;;
    bench-bf16)
      stage bench-bf16 "$PYTHON" benchmarks/bench.py --device cuda --dtype bfloat16 --out-dir "$OUT/results" ;;
    *)
      echo "unknown stage: $s (build, test, sanitize, bench, bench-bf16)" >&2; exit 2 ;;
  esac
done

cat "$OUT/summary.txt"
exit $failed
