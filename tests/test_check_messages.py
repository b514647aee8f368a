"""lstm_ext's error paths use no C++ streams.

The first GPU run crashed (SIGSEGV) in exactly the checks whose message wrote a
number through TORCH_CHECK's std::ostringstream (csrc/message.h says why). The
checks now build their messages with lstm_ext::message.  This test keeps it
so on any machine: it preloads tests/iostream_guard.c, which aborts the process
when code in lstm_ext's extension writes to a stream, and runs every op's
error-path tests (bad shapes, dtypes, devices, hx, batch_sizes, the kernel and
path selectors, and the malformed-input fuzzer) in a subprocess under it.
Before the fix the first bad shape aborted that subprocess.
"""
import ctypes
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUARD_SOURCE = os.path.join(ROOT, "tests", "iostream_guard.c")

# The tests whose cases raise from lstm_ext's checks (and their CUDA
# variants, which run where a GPU is present).
ERROR_PATH_TESTS = [
    "tests/test_errors.py",
    "tests/test_cell_ops.py", "tests/test_lstm_ops.py", "tests/test_gru_ops.py", "tests/test_cpu_kernels.py",
    "tests/test_cuda.py",
    "-k", "raise or error or refuse or bad or malformed",
    "tests/test_fuzz.py",
]


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc or gcc, or $CC) to build tests/iostream_guard.c")
    lib = str(tmp_path_factory.mktemp("iostream_guard") / "iostream_guard.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib, GUARD_SOURCE, "-ldl"], check=True)
    return lib


def _run_guarded(guard, args, timeout, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LSTM_EXT_"))}
    env.update(extra_env)
    # After any preload already there (a sanitizer runtime must stay first).
    env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), guard]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_guard_intercepts_streams(guard):
    """Positive control: torch's own error messages do write numbers through
    streams; the guard sees (and forwards) those calls, so a clean run below
    means lstm_ext made none, not that the guard was bypassed."""
    script = (
        "import ctypes, torch\n"
        "try:\n"
        "    torch.zeros(2, 3).view(5)\n"
        "except RuntimeError as e:\n"
        "    assert '6' in str(e), e\n"
        f"print(ctypes.CDLL({guard!r}).iostream_guard_forwarded())\n"
    )
    res = _run_guarded(guard, ["-c", script], timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cannot be preloaded" not in res.stderr, res.stderr
    assert int(res.stdout.split()[-1]) > 0, res.stdout


def test_error_paths_use_no_streams(guard):
    # pytest in the guarded process; it then reports how many stream calls
    # the guard forwarded there (torch's), which proves the guard was active.
    script = (
        "import ctypes, sys, pytest\n"
        f"rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-x', *{ERROR_PATH_TESTS!r}])\n"
        f"print('GUARD_FORWARDED', ctypes.CDLL({guard!r}).iostream_guard_forwarded())\n"
        "sys.exit(int(rc))\n"
    )
    res = _run_guarded(guard, ["-c", script], timeout=1200)
    out = res.stdout + res.stderr
    assert "IOSTREAM_FROM_LSTM_EXT" not in out, out[-6000:]
    assert res.returncode == 0, out[-6000:]
    assert " passed" in res.stdout, out[-6000:]
    forwarded = [line for line in res.stdout.splitlines() if line.startswith("GUARD_FORWARDED")]
    assert forwarded and int(forwarded[-1].split()[1]) > 0, out[-6000:]


@pytest.mark.parametrize("variable,value,pattern", [
    ("LSTM_EXT_CPU_KERNEL", "bogus", "LSTM_EXT_CPU_KERNEL=bogus: expected one of auto"),
    ("LSTM_EXT_CPU_KERNEL", "reference", None),
])
def test_kernel_selector_errors_use_no_streams(guard, variable, value, pattern):
    """The CPU kernel selector's own errors (a bad variable value) raise cleanly
    under the guard; a valid value runs."""
    script = (
        "import torch, lstm_ext\n"
        "m = lstm_ext.LSTM(3, 4)\n"
        "try:\n"
        "    m(torch.randn(2, 1, 3))\n"
        "    print('RAN')\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    res = _run_guarded(guard, ["-c", script], timeout=120, **{variable: value})
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "IOSTREAM_FROM_LSTM_EXT" not in out, out
    if pattern is None:
        assert "RAN" in res.stdout, out
    else:
        assert "RAISED" in res.stdout and pattern in res.stdout, out
