#!/usr/bin/env python3
"""Which x86 vector ISA lstm_ext's CPU kernels are compiled for: the one rule.

Both builds take their ISA from here, so they cannot drift apart:

* setup.py (``make build``, ``pip install -e .``) imports this file and adds
  ``compile_flags()`` to the C++ flags of lstm_ext._C;
* CMakeLists.txt (``make cmake``) runs it at configure time with ``--cmake
  FILE`` and includes the ``set()`` lines it writes (LSTM_EXT_ISA,
  LSTM_EXT_ISA_BF16, LSTM_EXT_ISA_DEFS, LSTM_EXT_ISA_OPTS) for lstm_ext_core.

The request is ``LSTM_EXT_CPU_ISA`` (the environment variable for setup.py,
the cache variable of the same name for CMake; ``make cmake`` passes the
environment's value on): ``auto`` (or unset/empty), ``avx512bf16``,
``avx512``, ``avx2`` or ``default``; anything else is an error.

* auto: avx512 when the build machine's /proc/cpuinfo lists avx512f, avx512bw,
  avx512vl and avx512dq; else avx2 when it lists avx2, fma and f16c; else
  default (no /proc/cpuinfo: default).
* avx512 (asked for or detected) also compiles the native bfloat16 kernels
  (-mavx512bf16, csrc/cpu/fused/kernels_avx512bf16.cpp) when the build machine
  lists avx512_bf16; avx512bf16 asks for them regardless (cross-building).
* The flags: ATen's CPU_CAPABILITY macros, which select at::vec's
  Vectorized<T> implementation (without them it is scalar), and the matching
  -m options.

A CPU flag counts only as a whole word of a "flags" line (so avx512f is not
found in avx512fp16), and on several processors only if every one lists it.

Run it to see the choice:

    python3 scripts/cpu_isa.py            # e.g. "avx512 +avx512bf16: -DCPU_CAPABILITY=AVX512 ..."
    python3 scripts/cpu_isa.py --flags    # only the compiler flags, one line
    LSTM_EXT_CPU_ISA=avx2 python3 scripts/cpu_isa.py

No dependencies beyond the standard library (CMake runs it without torch).
"""
import argparse
import os
import sys

CHOICES = ("auto", "avx512bf16", "avx512", "avx2", "default")
AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
AVX2 = ("avx2", "fma", "f16c")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """The CPU flags every processor in `cpuinfo` lists (empty if unreadable)."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return frozenset()
    common = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            words = set(value.split())
            common = words if common is None else common & words
    return frozenset(common or ())


def resolve(requested=None, flags=None):
    """(isa, bf16): isa is "avx512", "avx2" or "default"; bf16 whether the
    avx512bf16 kernels are compiled too. `requested` defaults to the
    LSTM_EXT_CPU_ISA environment variable, `flags` to this machine's."""
    if requested is None:
        requested = os.environ.get("LSTM_EXT_CPU_ISA", "")
    req = requested.strip().lower() or "auto"
    if req not in CHOICES:
        raise ValueError(f"LSTM_EXT_CPU_ISA must be one of {', '.join(CHOICES)}, not {requested!r}")
    if flags is None:
        flags = cpu_flags()
    if req == "avx512bf16":
        return "avx512", True
    if req == "auto":
        if all(f in flags for f in AVX512):
            isa = "avx512"
        elif all(f in flags for f in AVX2):
            isa = "avx2"
        else:
            isa = "default"
    else:
        isa = req
    return isa, isa == "avx512" and "avx512_bf16" in flags


def compile_flags(isa: str, bf16: bool):
    """(preprocessor definitions without -D, compiler options) for an ISA."""
    if isa == "avx512":
        return (["CPU_CAPABILITY=AVX512", "CPU_CAPABILITY_AVX512"],
                ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"] + (["-mavx512bf16"] if bf16 else []))
    if isa == "avx2":
        return ["CPU_CAPABILITY=AVX2", "CPU_CAPABILITY_AVX2"], ["-mavx2", "-mfma", "-mf16c"]
    if isa == "default":
        return ["CPU_CAPABILITY=DEFAULT"], []
    raise ValueError(f"unknown ISA {isa!r}")


def cxx_flags(requested=None, flags=None):
    """The compiler flags for setup.py: -D definitions, then -m options."""
    defs, opts = compile_flags(*resolve(requested, flags))
    return [f"-D{d}" for d in defs] + opts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isa", default=None, help="the request (default: $LSTM_EXT_CPU_ISA, else auto)")
    p.add_argument("--cpuinfo", default="/proc/cpuinfo", help="read the CPU flags from this file")
    p.add_argument("--flags", action="store_true", help="print only the compiler flags")
    p.add_argument("--cmake", metavar="FILE", help="write the choice as CMake set() lines to FILE")
    args = p.parse_args(argv)
    try:
        isa, bf16 = resolve(args.isa, cpu_flags(args.cpuinfo))
    except ValueError as e:
        print(f"cpu_isa.py: {e}", file=sys.stderr)
        return 2
    defs, opts = compile_flags(isa, bf16)
    if args.cmake:
        with open(args.cmake, "w") as f:
            f.write("# Written by scripts/cpu_isa.py at configure time; do not edit.\n"
                    f"set(LSTM_EXT_ISA {isa})\n"
                    f"set(LSTM_EXT_ISA_BF16 {'ON' if bf16 else 'OFF'})\n"
                    f"set(LSTM_EXT_ISA_DEFS {' '.join(defs)})\n"
                    f"set(LSTM_EXT_ISA_OPTS {' '.join(opts)})\n")
    flags = " ".join([f"-D{d}" for d in defs] + opts)
    if args.flags:
        print(flags)
    elif not args.cmake:
        print(f"{isa}{' +avx512bf16' if bf16 else ''}: {flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
