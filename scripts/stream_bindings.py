"""Evidence for the root cause of the crashes the first GPU run saw in error
paths (csrc/message.h): which C++ stream symbols lstm_ext's extension
imports, which loaded libraries export them once torch, CUDA and lstm_ext are
loaded, and which copy the dynamic linker binds each of the extension's
references to (LD_DEBUG=bindings; Python loads extensions with RTLD_NOW, so
all of them bind at load) in a process that raises one bad-shape error on
the device.

    python3 scripts/stream_bindings.py [cpu|cuda]      (scripts/gpu_verify.sh runs it)

Only reads; prints a report. The extension still imports these symbols from
torch's inline code on paths its checks no longer take (the ostringstream
constructor binds to libc10.so's copy, the inserters to libstdc++'s): the
guard test (tests/test_check_messages.py) shows no check calls them."""
import glob
import os
import subprocess
import sys
import tempfile

STREAM_SYMBOLS = ("_M_insert", "basic_ostringstream", "__ostream_insert", "basic_ios")
EXPORTS = ("_ZNSo9_M_insertIlEERSoT_", "_ZNSt7__cxx1119basic_ostringstreamIcSt11char_traitsIcESaIcEEC1Ev")


def nm(lib, *flags):
    res = subprocess.run(["nm", "-D", *flags, lib], capture_output=True, text=True)
    return res.stdout.splitlines()


def main(device):
    sys.path.insert(0, os.getcwd())
    import torch
    import lstm_ext

    ext = glob.glob(os.path.join(os.path.dirname(lstm_ext.__file__), "_C*.so"))[0]
    print(f"# {ext}: stream symbols it imports")
    imports = [l.split()[-1] for l in nm(ext, "--undefined-only") if any(s in l for s in STREAM_SYMBOLS)]
    print("\n".join(imports) or "(none)")

    if device == "cuda":
        torch.zeros(1, device="cuda")
    print("# loaded libraries exporting the number inserter or the ostringstream constructor")
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if ".so" in line})
    for lib in libs:
        hits = [l.split()[-1] for l in nm(lib, "--defined-only") if any(e in l for e in EXPORTS)]
        if hits:
            print(lib, *hits)

    print(f"# where the extension's stream references bind, in a process raising a bad-shape error on {device}")
    raise_one = (
        "import sys, torch; sys.path.insert(0, '.'); import lstm_ext\n"
        f"z = lambda *s: torch.zeros(*s, device={device!r})\n"
        "try:\n"
        "    torch.ops.lstm_ext.lstm_forward(z(3, 4), z(8, 4), z(8, 2), None, z(1, 2), z(1, 2), False, False)\n"
        "except RuntimeError as e:\n"
        "    print('raised:', str(e).splitlines()[0])\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=os.path.join(tmp, "ld"))
        res = subprocess.run([sys.executable, "-c", raise_one], env=env, capture_output=True, text=True)
        print(res.stdout.strip(), res.stderr.strip()[-2000:])
        lines = []
        for path in glob.glob(os.path.join(tmp, "ld.*")):
            lines += [l.strip() for l in open(path, errors="replace")
                      if "lstm_ext/_C" in l.split("to ")[0] and any(s in l for s in STREAM_SYMBOLS)]
        print("\n".join(lines) or "(no stream symbol bound)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cuda")
