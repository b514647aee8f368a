"""Build lstm_ext's C++ (and, when available, CUDA) extension.

The choice between a CppExtension and a CUDAExtension follows the installed
torch and the toolchain: CUDA is built when torch was built with CUDA and nvcc
is found. ``USE_CUDA=0`` or ``USE_CUDA=1`` overrides that choice, so a build on
a GPU-less machine is never silently CPU-only by accident.

The CPU kernels' vector ISA (``LSTM_EXT_CPU_ISA``: auto, avx512bf16, avx512,
avx2, default) is decided by scripts/cpu_isa.py, the single rule that
CMakeLists.txt runs as well (``python3 scripts/cpu_isa.py`` prints the choice).

Build without isolation, so the torch that is already installed is the one the
extension is compiled against::

    pip install --no-build-isolation -e .
"""
import glob
import importlib.util
import os
import shutil

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_requested() -> bool:
    override = os.environ.get("USE_CUDA")
    if override is not None:
        return override.strip().lower() not in ("0", "false", "off", "no", "")
    import torch

    home = cpp_extension.CUDA_HOME
    has_nvcc = (home is not None and os.path.exists(os.path.join(home, "bin", "nvcc"))) or shutil.which("nvcc") is not None
    return torch.version.cuda is not None and has_nvcc


def _cpu_isa_flags() -> list:
    """Vector ISA flags for ATen's at::vec in our CPU kernels (CPU_CAPABILITY_*
    macros and -m options), for the machine we build on or as forced by
    ``LSTM_EXT_CPU_ISA`` (auto, avx512bf16, avx512, avx2, default).

    The rule lives in scripts/cpu_isa.py, which CMakeLists.txt runs too, so
    both builds pick the same ISA; see that file for the rule.
    """
    spec = importlib.util.spec_from_file_location("lstm_ext_cpu_isa", os.path.join(ROOT, "scripts", "cpu_isa.py"))
    cpu_isa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu_isa)
    try:
        return cpu_isa.cxx_flags()
    except ValueError as e:
        raise SystemExit(f"lstm_ext: {e}") from None


def _cublas():
    """(include dirs, link args) for cuBLAS, which the binding's float32 GEMMs
    call directly (csrc/cuda_binding/gemm.h, through torch's
    ATen/cuda/CUDAContext.h, which also wants the cuSPARSE, cuBLASLt and
    cuSOLVER headers).

    A full CUDA toolkit has all of them. A minimal one (nvcc and the runtime
    only, as on some build machines) has none; a pip-installed CUDA torch then
    brings them in its nvidia wheels (nvidia/cu13 for CUDA 13, nvidia/cublas and
    siblings for CUDA 12), with the very libcublas torch loads. The headers the
    toolkit lacks are linked from the wheel into build/cuda_wheel_include, so the
    wheel's copies of the runtime headers never shadow the toolkit's (nvcc must
    see its own).
    """
    home = cpp_extension.CUDA_HOME or ""
    toolkit_include = os.path.join(home, "include")
    wanted = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h")
    toolkit_has = all(os.path.exists(os.path.join(toolkit_include, h)) for h in wanted)
    toolkit_lib = glob.glob(os.path.join(home, "lib64", "libcublas.so*"))
    if toolkit_has and toolkit_lib:
        return [], ["-lcublas"]
    wheel_includes, wheel_lib = [], None
    for name in ("nvidia.cu13", "nvidia.cublas", "nvidia.cusparse", "nvidia.cusolver"):
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        root = list(spec.submodule_search_locations)[0]
        if os.path.isdir(os.path.join(root, "include")):
            wheel_includes.append(os.path.join(root, "include"))
        libs = sorted(glob.glob(os.path.join(root, "lib", "libcublas.so.*")))
        if libs and wheel_lib is None:
            wheel_lib = libs[0]
    have = lambda h: os.path.exists(os.path.join(toolkit_include, h)) or any(
        os.path.exists(os.path.join(d, h)) for d in wheel_includes)
    if not all(have(h) for h in wanted) or not (toolkit_lib or wheel_lib):
        raise RuntimeError(
            "lstm_ext: building with CUDA needs cuBLAS (cublas_v2.h, libcublas) and the cuSPARSE, "
            f"cuBLASLt and cuSOLVER headers; found them neither under CUDA_HOME={home or '(unset)'} "
            "nor in the nvidia pip wheels. Install the CUDA toolkit's math libraries, or build the "
            "CPU extension with USE_CUDA=0"
        )
    links = os.path.join(ROOT, "build", "cuda_wheel_include")
    os.makedirs(links, exist_ok=True)
    for d in wheel_includes:
        for entry in sorted(os.listdir(d)):
            dst = os.path.join(links, entry)
            if os.path.exists(os.path.join(toolkit_include, entry)) or os.path.lexists(dst):
                continue
            os.symlink(os.path.join(d, entry), dst)
    link = ["-lcublas"] if toolkit_lib else [f"-L{os.path.dirname(wheel_lib)}", f"-l:{os.path.basename(wheel_lib)}"]
    return [links], link


def _extension():
    sources = sorted(
        glob.glob(os.path.join("csrc", "*.cpp"))
        + glob.glob(os.path.join("csrc", "cpu", "*.cpp"))
        + glob.glob(os.path.join("csrc", "cpu", "fused", "*.cpp"))
        + glob.glob(os.path.join("csrc", "composite", "*.cpp"))
    )
    sources.append(os.path.join("csrc", "python", "module.cpp"))
    # -fopenmp: ATen's at::parallel_for is a header template that only runs in
    # parallel when the including file is compiled with OpenMP (it then uses
    # the libgomp torch has loaded); without it our loops silently run serial.
    cxx_flags = ["-O3", "-std=c++20", "-fvisibility=hidden", "-Wall", "-Wno-unused-parameter", "-fopenmp"]
    cxx_flags += _cpu_isa_flags()
    sanitize = os.environ.get("LSTM_EXT_SANITIZE", "")
    extra_link = ["-fopenmp"]
    if sanitize:
        # -O1 -g1: instrumented code at -O3 compiles several times slower (the
        # fused kernels' unrolled templates) for no extra findings; -g1 keeps
        # file:line in the reports' stacks.
        cxx_flags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-O1", "-g1"]
        extra_link += [f"-fsanitize={sanitize}"]
    # csrc/cuda: the torch-free kernels; csrc/cuda_binding: tensors to kernels.
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda_binding", "*.cpp")))
    if _cuda_requested() and not cuda_sources:
        print("lstm_ext: CUDA requested but csrc/cuda has no sources yet: building the CPU extension")
    if _cuda_requested() and cuda_sources:
        cublas_include, cublas_link = _cublas()
        return cpp_extension.CUDAExtension(
            "lstm_ext._C",
            sources + cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")] + cublas_include,
            define_macros=[("LSTM_EXT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=extra_link + cublas_link,
        )
    return cpp_extension.CppExtension(
        "lstm_ext._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link,
    )


setup(
    name="lstm_ext",
    version="0.1.0",
    description="Fused LSTM kernels for PyTorch: a drop-in torch.nn.LSTM",
    packages=find_packages(include=["lstm_ext", "lstm_ext.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
)
