#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer) check of the
# C++ extension, behind `make sanitize`:
#
#   bash scripts/sanitize_check.sh                  # default test subset (below)
#   bash scripts/sanitize_check.sh tests/test_cell_ops.py -k backward   # own pytest args
#
# Exit status: 0 clean; 1 a finding (UBSan runtime error, ASan error, a leak
# from lstm_ext) or a failing test; 2 set-up or build problem.
#
# 1. Build, out of tree: LSTM_EXT_SANITIZE=address,undefined (setup.py adds
#    -fsanitize=..., -fno-omit-frame-pointer, -g) into $SANITIZE_BUILD_DIR
#    (default build/sanitize): objects in tmp/, the .so in lib/. Never the
#    in-place lstm_ext/_C*.so (no --inplace). The ninja tree persists, so a
#    second run only recompiles what changed (cold: all of csrc/ at -O1 -g1,
#    about 3 minutes with MAX_JOBS=2; nothing changed: a relink, seconds).
# 2. Package dir pkg/lstm_ext: symlinks to lstm_ext/*.py (the checkout's Python
#    code) and to the sanitized .so; put first on sys.path, so tests/conftest.py
#    leaves it alone. A small pytest plugin (written to plugin/) refuses to run
#    if `lstm_ext._C` is not that .so.
# 3. pytest under the sanitizer runtimes. Python is not instrumented, so:
#    - LD_PRELOAD = the libasan the .so links against, then libstdc++ (ASan
#      must come first; with libstdc++ loaded at ASan's start its __cxa_throw
#      interceptor works, else the first C++ exception aborts the process with
#      "CHECK failed: ... real___cxa_throw");
#    - PYTHONMALLOC=malloc, so that Python objects are heap blocks LSan scans
#      (pymalloc's mmap arenas are not, and everything a Python object owns
#      would be reported as leaked);
#    - no leak check at exit (leak_check_at_exit=0: Python does not free its
#      objects at exit, thousands of reports); the plugin runs LSan once
#      instead (__lsan_do_recoverable_leak_check) at the end of the session,
#      while the interpreter is alive: what it reports is unreachable memory;
#    - UBSan recovers (halt_on_error=0) so one run lists every distinct
#      runtime error; ASan stops at its first error (exitcode=99).
#    All sanitizer output goes to the process's stderr, into logs/sanitizer.log,
#    with a marker naming each test as it starts. pytest runs with
#    --capture=no: its fd capture would swallow the reports of passing tests,
#    and --capture=sys leaves a sys.stderr without fileno() (faulthandler in
#    test_fuzz.py needs one). Not log_path either: libasan and libubsan each
#    open that file and overwrite each other's reports.
# 4. The report is read back. A finding is: any UBSan "runtime error"; any
#    AddressSanitizer error or sanitizer CHECK failure; a leak whose allocation
#    stack has a frame in lstm_ext (csrc/ or the _C .so). Leaks wholly inside
#    Python / torch are counted and ignored. Malloc stacks are unwound with
#    frame pointers (fast): our code and torch's libraries keep them, libpython
#    does not, and some torch paths cut the stack short, so an allocation
#    torch makes on our behalf may show no lstm_ext frame. Hence a direct leak
#    of a tensor or storage (allocated in c10/ATen) is also a finding, as
#    "unattributed"; SANITIZE_FULL_STACKS=1 (fast_unwind_on_malloc=0, about 4x
#    slower) gives full stacks, and then only the lstm_ext rule applies.
#
# Default subset (about 670 tests, ~570 run, the CUDA variants skip; about
# 1 minute on 2 cores; of the C++ lines the full suite executes, per
# translation unit, it misses none, measured with a --coverage build):
# test_cpu_kernels.py (every fused kernel, incl. avx512bf16, and the reference
# loops, forced one by one via LSTM_EXT_CPU_KERNEL: LSTM/RNN forward and
# backward, packed, projections, bidirectional, 1 vs 2 threads, NaN/inf, bf16
# through each kernel), test_bf16_native.py (native bf16 forward),
# test_errors.py, test_cell_ops.py (every op of every cell kind: against the
# reference, saved gates, backward op, packed, zero batch/steps, gradcheck,
# argument checks), test_lstm_ops.py and test_gru_ops.py (what one cell has) without the opcheck
# grid and the slow LSTM gradgradcheck grid (C++ argument checks, zero
# batch/steps, f64, non-contiguous, backward ops, composite double backward),
# the GRU's cases of the cell-parametrized module tests (parity grid, packed,
# every step's states, cells, zero-size cells), a few bf16 cases (float32 bias,
# double backward, the GRU's modules), the concurrent-caller tests, and
# test_fuzz.py (Hypothesis: random shapes incl. empty batches, strides,
# malformed input; derandomized).
#
# Environment:
#   PYTHON               interpreter (default python3); its real executable is
#                        used (a pyenv shim under LD_PRELOAD runs the wrong one)
#   MAX_JOBS             compile jobs (default: nproc)
#   LSTM_EXT_SANITIZE    sanitizers (default address,undefined; needs address
#                        for the leak check)
#   SANITIZE_BUILD_DIR   default build/sanitize
#   SANITIZE_FULL_STACKS 1: slow, complete malloc stacks (see 4.)
#   SANITIZE_IF_AVAILABLE 1: a compiler without sanitizer runtimes skips the
#                        check (exit 0, with a notice) instead of failing
# The build is CPU-only (USE_CUDA=0) and CUDA is hidden from the tests
# (CUDA_VISIBLE_DEVICES=""); LSTM_EXT_CPU_KERNEL is unset for the run.
# Needs: a C++ compiler with libasan/libubsan (gcc), ninja, torch, pytest,
# hypothesis (`bash scripts/bootstrap.sh test` installs the Python ones).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { echo "[sanitize] $*"; }
die() { echo "[sanitize] error: $*" >&2; exit 2; }

DEFAULT_TESTS=(
  tests/test_cpu_kernels.py
  tests/test_bf16_native.py
  tests/test_errors.py
  tests/test_cell_ops.py
  tests/test_lstm_ops.py
  tests/test_gru_ops.py
  tests/test_cell_modules.py::test_parity_grid
  tests/test_cell_modules.py::test_packed
  tests/test_cell_modules.py::test_return_all_states_equals_layers_run_one_by_one
  tests/test_cell_modules.py::test_cell_parity
  tests/test_cell_modules.py::test_zero_size_cells_like_torch_nn
  tests/test_bf16.py::test_gru_matches_torch_bf16_error
  tests/test_bf16.py::test_gru_packed_unsorted_bidirectional
  tests/test_bf16.py::test_gru_cell
  tests/test_bf16.py::test_f32_bias_is_used_unrounded_and_gets_a_float32_gradient
  tests/test_bf16.py::test_double_backward_bf16
  tests/test_bf16.py::test_double_backward_bf16_f32_bias
  tests/test_bf16.py::test_rnn_packed
  tests/test_reliability.py::test_concurrent_threads_share_one_module
  tests/test_reliability.py::test_concurrent_rnn_and_lstm_calls
  tests/test_fuzz.py
  -k "not opcheck and not gradgradcheck_lstm_layer and not (test_cell_modules and (lstm or rnn_))"
)

PYTHON=${PYTHON:-python3}
MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 2)}
SANITIZERS=${LSTM_EXT_SANITIZE:-address,undefined}
B=${SANITIZE_BUILD_DIR:-build/sanitize}
case "$B" in /*) ;; *) B="$ROOT/$B" ;; esac
LOGS="$B/logs"

# --- preflight ---------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON not found"
PY=$("$PYTHON" -c 'import sys; print(sys.executable)') || die "$PYTHON does not run"
"$PY" - <<'EOF' || die "missing Python packages (bash scripts/bootstrap.sh test installs them)"
import importlib.util, sys
missing = [m for m in ("torch", "pytest", "hypothesis") if importlib.util.find_spec(m) is None]
if missing:
    print("[sanitize] missing:", " ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
export PATH="$PATH:$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
command -v ninja >/dev/null 2>&1 || die "ninja not on PATH (bash scripts/bootstrap.sh installs it)"
# A toolchain without the sanitizer runtimes (no libasan/libubsan) cannot run
# this check at all: with SANITIZE_IF_AVAILABLE=1 (make test) that is a notice
# and exit 0, otherwise a set-up error. A build or test failure never is.
# Any other probe failure (no compiler, a bad LSTM_EXT_SANITIZE) is an error.
CXX_PROBE=${CXX:-c++}
if ! PROBE_ERR=$(echo 'int main() { return 0; }' | $CXX_PROBE -x c++ -fsanitize="$SANITIZERS" -o /dev/null - 2>&1); then
  if grep -Eq 'lib(asan|ubsan)|-l(asan|ubsan)' <<<"$PROBE_ERR"; then
    if [[ "${SANITIZE_IF_AVAILABLE:-0}" == 1 ]]; then
      say "skipped: $CXX_PROBE cannot link -fsanitize=$SANITIZERS (sanitizer runtimes not installed)"
      exit 0
    fi
    die "$CXX_PROBE cannot link -fsanitize=$SANITIZERS (install the compiler's libasan/libubsan)"
  fi
  die "$CXX_PROBE -fsanitize=$SANITIZERS fails: $PROBE_ERR"
fi
case ",$SANITIZERS," in *,address,*) ASAN=1 ;; *) ASAN=0 ;; esac
case ",$SANITIZERS," in *,undefined,*) UBSAN=1 ;; *) UBSAN=0 ;; esac
mkdir -p "$LOGS"
rm -f "$LOGS"/*

# --- 1. build ----------------------------------------------------------------
say "building lstm_ext._C with -fsanitize=$SANITIZERS into ${B#"$ROOT"/}/lib (MAX_JOBS=$MAX_JOBS)"
t0=$SECONDS
if ! USE_CUDA=0 LSTM_EXT_SANITIZE="$SANITIZERS" MAX_JOBS="$MAX_JOBS" \
    "$PY" setup.py build_ext --build-lib "$B/lib" --build-temp "$B/tmp" >"$LOGS/build.log" 2>&1; then
  tail -n 40 "$LOGS/build.log" >&2
  die "build failed (log: $LOGS/build.log)"
fi
BUILD_S=$((SECONDS - t0))
if grep -q "ninja: no work to do" "$LOGS/build.log"; then BUILD_NOTE="up to date, relinked"; else BUILD_NOTE="compiled"; fi
say "build: ${BUILD_S} s ($BUILD_NOTE)"

# This interpreter's extension (build/sanitize may also hold other Pythons' builds).
SO="$B/lib/lstm_ext/_C$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
[[ -e "$SO" ]] || die "no $SO after the build (log: $LOGS/build.log)"
SYMS=$(nm -D "$SO")
if ((ASAN)) && ! grep -q "__asan_init" <<<"$SYMS"; then die "$SO is not built with ASan (was LSTM_EXT_SANITIZE honoured?)"; fi
if ((UBSAN)) && ! grep -q "__ubsan_handle_" <<<"$SYMS"; then die "$SO is not built with UBSan"; fi

# --- 2. package dir and pytest plugin --------------------------------------------
PKG="$B/pkg"
rm -rf "$PKG"
mkdir -p "$PKG/lstm_ext" "$B/plugin"
for f in lstm_ext/*; do
  case "$(basename "$f")" in *.so|__pycache__) continue ;; esac
  ln -s "$ROOT/$f" "$PKG/lstm_ext/"
done
ln -s "$SO" "$PKG/lstm_ext/"

cat >"$B/plugin/lstm_ext_sanitize_plugin.py" <<'EOF'
# Written by scripts/sanitize_check.sh; loaded with -p. Puts the sanitized
# package first on sys.path, checks that it is the one imported, marks each
# test on stderr, and runs LeakSanitizer at the end of the session.
import ctypes, gc, os, sys

PKG = os.environ["LSTM_EXT_SANITIZE_PKG"]
SO = os.environ["LSTM_EXT_SANITIZE_SO"]
DONE = os.environ["LSTM_EXT_SANITIZE_DONE"]
sys.path.insert(0, PKG)


def _mark(text):
    os.write(2, f"\n[lstm_ext-sanitize] {text}\n".encode())


def pytest_sessionstart(session):
    import lstm_ext._C
    got = os.path.realpath(lstm_ext._C.__file__)
    if got != os.path.realpath(SO):
        import pytest
        pytest.exit(f"lstm_ext._C is {got}, not the sanitized {SO}", returncode=3)
    _mark(f"loaded {lstm_ext._C.__file__}")


def pytest_runtest_logstart(nodeid, location):
    _mark(f"test {nodeid}")


def pytest_sessionfinish(session, exitstatus):
    gc.collect()
    result = "off"
    if os.environ.get("LSTM_EXT_SANITIZE_LEAKS") == "1":
        _mark("leak check")
        result = getattr(ctypes.CDLL(None), "__lsan_do_recoverable_leak_check")()
    _mark("session end")
    with open(DONE, "w") as f:
        f.write(f"{os.getpid()} {result}\n")
EOF

# --- 3. tests under the sanitizers ---------------------------------------------
if (($#)); then TEST_ARGS=("$@"); else TEST_ARGS=("${DEFAULT_TESTS[@]}"); fi
PRELOAD=""
if ((ASAN)); then
  LINKED=$(ldd "$SO")
  LIBASAN=$(awk '/libasan/ {print $3; exit}' <<<"$LINKED")
  LIBSTDCXX=$(awk '/libstdc\+\+/ {print $3; exit}' <<<"$LINKED")
  [[ -n "$LIBASAN" && -e "$LIBASAN" ]] || die "cannot find the libasan $SO links against (ldd)"
  PRELOAD="$LIBASAN${LIBSTDCXX:+ $LIBSTDCXX}"
fi
if [[ "${SANITIZE_FULL_STACKS:-0}" == 1 ]]; then FAST_UNWIND=0; else FAST_UNWIND=1; fi
ASAN_OPTS="detect_leaks=$ASAN:leak_check_at_exit=0:fast_unwind_on_malloc=$FAST_UNWIND:malloc_context_size=30"
ASAN_OPTS+=":allocator_may_return_null=1:exitcode=99:print_summary=1"
UBSAN_OPTS="print_stacktrace=1:halt_on_error=0:report_error_type=1"

say "pytest ${TEST_ARGS[*]}"
say "LD_PRELOAD=$PRELOAD PYTHONMALLOC=malloc ASAN_OPTIONS=$ASAN_OPTS UBSAN_OPTIONS=$UBSAN_OPTS"
t0=$SECONDS
set +e
env -u LSTM_EXT_CPU_KERNEL \
  CUDA_VISIBLE_DEVICES="" \
  PYTHONMALLOC=malloc \
  PYTHONPATH="$PKG:$B/plugin${PYTHONPATH:+:$PYTHONPATH}" \
  LSTM_EXT_SANITIZE_PKG="$PKG" LSTM_EXT_SANITIZE_SO="$SO" LSTM_EXT_SANITIZE_LEAKS="$ASAN" \
  LSTM_EXT_SANITIZE_DONE="$LOGS/session.done" \
  ASAN_OPTIONS="$ASAN_OPTS${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="$UBSAN_OPTS${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
  LD_PRELOAD="$PRELOAD${LD_PRELOAD:+ $LD_PRELOAD}" \
  "$PY" -m pytest -p lstm_ext_sanitize_plugin -p no:cacheprovider --capture=no -q -rfE \
    "${TEST_ARGS[@]}" 2>"$LOGS/sanitizer.log" | tee "$LOGS/pytest.log"
PYTEST_RC=${PIPESTATUS[0]}
set -e
TEST_S=$((SECONDS - t0))

# --- 4. findings ---------------------------------------------------------------
"$PY" - "$LOGS" "$ROOT" "$SO" "$PKG" "$PYTEST_RC" "$BUILD_S" "$BUILD_NOTE" "$TEST_S" "$ASAN" "$FAST_UNWIND" <<'EOF'
import os, re, sys

logs, root, so, pkg, rc, build_s, build_note, test_s, asan, fast = sys.argv[1:]
rc, asan, fast = int(rc), asan == "1", fast == "1"
ours_marks = (os.path.join(root, "csrc") + "/", os.path.realpath(so), os.path.join(pkg, "lstm_ext", "_C"),
              "/lstm_ext/_C.")
tensor_alloc = ("c10::alloc_cpu", "c10::TensorImpl::TensorImpl", "c10::StorageImpl", "make_tensor_base",
                "at::detail::empty_generic", "at::detail::empty_strided_generic")
lines = open(os.path.join(logs, "sanitizer.log"), errors="replace").read().splitlines()

ub, asan_errors, leaks_ours, leaks_tensor = [], [], [], []
ignored = [0, 0]  # leak records, bytes
test = "(before the first test)"
loaded = None
frame = re.compile(r"^\s+#\d+ ")
i = 0
while i < len(lines):
    line = lines[i]
    if line.startswith("[lstm_ext-sanitize] loaded "):
        loaded = line.split(" loaded ", 1)[1]
    if line.startswith("[lstm_ext-sanitize] test "):
        test = line.split(" test ", 1)[1]
        i += 1
        continue
    if ": runtime error: " in line:
        j = i + 1
        while j < len(lines) and frame.match(lines[j]):
            j += 1
        ub.append((test, lines[i:j]))
        i = j
        continue
    if re.search(r"==\d+==ERROR: LeakSanitizer: detected memory leaks", line):
        i += 1
        while i < len(lines) and not lines[i].startswith("SUMMARY: AddressSanitizer"):
            m = re.match(r"(Direct|Indirect) leak of (\d+) byte", lines[i])
            if not m:
                i += 1
                continue
            j = i + 1
            while j < len(lines) and frame.match(lines[j]):
                j += 1
            rec = lines[i:j]
            if any(mark in l for l in rec[1:] for mark in ours_marks):
                leaks_ours.append(rec)
            elif fast and m.group(1) == "Direct" and any(t in l for l in rec[1:] for t in tensor_alloc):
                leaks_tensor.append(rec)
            else:
                ignored[0] += 1
                ignored[1] += int(m.group(2))
            i = j
        i += 1
        continue
    if re.search(r"==\d+==ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)", line) \
            or "AddressSanitizer: CHECK failed" in line or "Sanitizer has encountered a fatal error" in line \
            or "AddressSanitizer:DEADLYSIGNAL" in line:
        j = i + 1
        while j < len(lines) and not lines[j].startswith("[lstm_ext-sanitize]") \
                and not re.search(r"==\d+==ABORTING", lines[j - 1]):
            j += 1
        asan_errors.append((test, lines[i:j]))
        i = j
        continue
    i += 1

done = os.path.exists(os.path.join(logs, "session.done"))
leak_ran = done and open(os.path.join(logs, "session.done")).read().split()[1] != "off"
out = []
def trim(body, frames=12):
    """The first frames of each stack, lines cut to a readable width (template
    names run to pages), no shadow-byte map; the full text is in sanitizer.log."""
    kept, dropped = [], 0
    for l in body:
        if l.startswith("Shadow bytes around"):
            break
        m = frame.match(l)
        if m and int(l.split("#", 1)[1].split()[0]) >= frames:
            dropped += 1
            continue
        if dropped:
            kept.append(f"    ... {dropped} more frame(s)")
            dropped = 0
        kept.append(l if len(l) <= 240 else l[:237] + "...")
    if dropped:
        kept.append(f"    ... {dropped} more frame(s)")
    return kept
def show(title, blocks, with_test=True):
    for b in blocks:
        t, body = b if with_test else (None, b)
        out.append(f"---- {title}" + (f" (during {t})" if t else ""))
        out.extend(trim(body))
show("UBSan", ub)
show("ASan", asan_errors)
show("leak from lstm_ext", leaks_ours, with_test=False)
show("unattributed tensor leak (rerun with SANITIZE_FULL_STACKS=1 for the full stack)", leaks_tensor, with_test=False)
if out:
    print("\n".join(out))
    with open(os.path.join(logs, "findings.txt"), "w") as f:
        f.write("\n".join(out) + "\n")

summary = [l for l in open(os.path.join(logs, "pytest.log"), errors="replace").read().splitlines()
           if re.search(r"\d+ (passed|failed|error)", l)]
problems = []
if rc != 0:
    problems.append(f"pytest exit status {rc}" + (" (ASan aborted the process)" if rc == 99 else ""))
if not done:
    problems.append("the session did not finish (crash?)")
elif asan and not leak_ran:
    problems.append("the leak check did not run")
n_find = len(ub) + len(asan_errors) + len(leaks_ours) + len(leaks_tensor)
if loaded:
    print(f"[sanitize] lstm_ext._C loaded from {loaded}")
print(f"[sanitize] build: {build_s} s ({build_note}); tests: {test_s} s"
      + (f" ({summary[-1].strip('= ')})" if summary else ""))
print(f"[sanitize] UBSan: {len(ub)} runtime error(s) | ASan: {len(asan_errors)} error(s) | "
      + (f"LSan: {len(leaks_ours)} leak(s) from lstm_ext, {len(leaks_tensor)} unattributed tensor leak(s); "
         f"ignored {ignored[0]} leak(s), {ignored[1]} bytes, outside lstm_ext" if asan else "LSan: off"))
if n_find or problems:
    for p in problems:
        print(f"[sanitize] FAIL: {p}")
    if n_find:
        print(f"[sanitize] FAIL: {n_find} finding(s), listed above and in {logs}/findings.txt")
    print(f"[sanitize] logs: {logs}/sanitizer.log, {logs}/pytest.log")
    sys.exit(1)
print("[sanitize] clean")
EOF
