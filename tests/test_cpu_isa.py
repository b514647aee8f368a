"""scripts/cpu_isa.py: the one rule for the CPU kernels' vector ISA, which
setup.py imports and CMakeLists.txt runs (no second copy may come back)."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("cpu_isa", ROOT / "scripts" / "cpu_isa.py")
cpu_isa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_isa)

ZEN4 = frozenset("fpu sse2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl avx512_bf16".split())
SKYLAKE_X = frozenset("fpu sse2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl".split())
HASWELL = frozenset("fpu sse2 avx avx2 fma f16c".split())


@pytest.mark.parametrize("requested, flags, expected", [
    ("", ZEN4, ("avx512", True)),
    ("auto", ZEN4, ("avx512", True)),
    (" AVX512 ", ZEN4, ("avx512", True)),
    ("avx512", SKYLAKE_X, ("avx512", False)),
    ("auto", SKYLAKE_X, ("avx512", False)),
    ("auto", HASWELL, ("avx2", False)),
    ("avx512bf16", HASWELL, ("avx512", True)),  # asked for: cross-building
    ("avx2", ZEN4, ("avx2", False)),
    ("default", ZEN4, ("default", False)),
    ("auto", frozenset(), ("default", False)),
    # Whole words only: avx512fp16 is not avx512f, fma4 is not fma.
    ("auto", frozenset("avx2 fma4 f16c avx512fp16 avx512dq avx512bw avx512vl".split()), ("default", False)),
])
def test_rule(requested, flags, expected):
    assert cpu_isa.resolve(requested, flags) == expected


def test_unknown_request_is_an_error():
    with pytest.raises(ValueError, match="LSTM_EXT_CPU_ISA"):
        cpu_isa.resolve("avx", ZEN4)


def test_flags_of_several_processors_must_all_list_a_feature(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: avx2 fma f16c avx512f avx512bw avx512vl avx512dq\n\n"
                    "processor\t: 1\nflags\t\t: avx2 fma f16c\n\n")
    assert cpu_isa.resolve("auto", cpu_isa.cpu_flags(str(info))) == ("avx2", False)
    assert cpu_isa.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_cmake_output_matches_setup_flags(tmp_path):
    out = tmp_path / "isa.cmake"
    for isa in ("avx512bf16", "avx512", "avx2", "default"):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "cpu_isa.py"), "--isa", isa, "--cmake", str(out)],
                       check=True)
        text = out.read_text()
        defs = text.split("set(LSTM_EXT_ISA_DEFS ")[1].split(")")[0].split()
        opts = text.split("set(LSTM_EXT_ISA_OPTS ")[1].split(")")[0].split()
        assert [f"-D{d}" for d in defs] + opts == cpu_isa.cxx_flags(isa), isa


def test_both_builds_use_the_script():
    assert "scripts/cpu_isa.py" in (ROOT / "CMakeLists.txt").read_text()
    assert "cpu_isa.py" in (ROOT / "setup.py").read_text()
    for build_file in ("CMakeLists.txt", "setup.py"):  # no second copy of the rule
        assert "/proc/cpuinfo" not in (ROOT / build_file).read_text(), build_file
