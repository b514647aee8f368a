#!/usr/bin/env bash
# Compile every csrc/cuda/*.cu with nvcc for sm_80 and sm_90, without torch
# and without CMake, and keep ptxas' resource report (registers, spills,
# shared memory per kernel) in benchmarks/results/ptxas_<name>.txt. The
# binding (csrc/cuda_binding) is compiled and linked by the real CUDA build
# of scripts/cuda_build_check.sh, which `make test` runs next.
#
#   bash scripts/cuda_compile_check.sh        (or `make cuda-check`)
#
# The kernels in csrc/cuda include no torch header (csrc/cuda/README.md), so
# this runs on any machine with nvcc, GPU or not. Fails if any file fails to
# compile. Environment: NVCC (default nvcc), NVCC_FLAGS (extra flags).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

shopt -s nullglob
SOURCES=(csrc/cuda/*.cu)
if ((${#SOURCES[@]} == 0)); then
  echo "[cuda-check] no CUDA sources yet (csrc/cuda/*.cu): nothing to check"
  exit 0
fi

NVCC=${NVCC:-nvcc}
command -v "$NVCC" >/dev/null 2>&1 || { echo "[cuda-check] error: $NVCC not found" >&2; exit 1; }
REPORT_DIR=benchmarks/results
mkdir -p "$REPORT_DIR"
OBJ_DIR=$(mktemp -d)
trap 'rm -rf "$OBJ_DIR"' EXIT

# Same nvcc flags as setup.py's CUDAExtension (-O3 -std=c++17, and torch's
# COMMON_NVCC_FLAGS, which remove the implicit half/bfloat16 conversions),
# so the ptxas numbers are those of the real build.
# shellcheck disable=SC2206
FLAGS=(-c -std=c++17 -O3 -Icsrc
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
       -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr
       -gencode arch=compute_80,code=sm_80
       -gencode arch=compute_90,code=sm_90
       -Xptxas -v ${NVCC_FLAGS:-})

echo "[cuda-check] $("$NVCC" --version | tail -n 1)"
failed=()
for src in "${SOURCES[@]}"; do
  name=$(basename "$src" .cu)
  report="$REPORT_DIR/ptxas_$name.txt"
  start=$SECONDS
  if "$NVCC" "${FLAGS[@]}" -o "$OBJ_DIR/$name.o" "$src" 2>"$OBJ_DIR/$name.ptxas"; then
    # Without ptxas' compile times, so the committed report changes only when
    # the code does.
    grep -v "Compile time" "$OBJ_DIR/$name.ptxas" >"$report" || true
    kernels=$(grep -c "Compiling entry function" "$report" || true)
    spills=$(grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$report" | wc -l || true)
    echo "[cuda-check] ok   $src ($((SECONDS - start)) s, $kernels kernel compilations, $spills with spills) -> $report"
  else
    cp "$OBJ_DIR/$name.ptxas" "$report"
    echo "[cuda-check] FAIL $src -> $report" >&2
    grep -v "^ptxas info" "$report" | head -n 40 >&2 || true
    failed+=("$src")
  fi
done

if ((${#failed[@]})); then
  echo "[cuda-check] ${#failed[@]} of ${#SOURCES[@]} file(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "[cuda-check] all ${#SOURCES[@]} file(s) compile for sm_80 and sm_90"
