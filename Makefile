# lstm_ext — entry points. See README.md.
#
#   make bench       set up, build, benchmark lstm_ext.LSTM vs torch.nn.LSTM
#                    (extra flags: make bench BENCH_ARGS="--quick")
#   make test        set up, build, nvcc compile check and real CUDA build (if
#                    nvcc is on PATH; LSTM_EXT_CUDA_BUILD=0 skips the build),
#                    run the test suite, then the sanitizer subset (ASan+UBSan,
#                    out of tree; skipped with SANITIZE=0 or without libasan)
#   make build       set up the build tools and build lstm_ext/_C*.so in place
#   make install     pip install --no-build-isolation -e . (into $(PYTHON)'s env)
#   make cuda-check  nvcc-compile csrc/cuda/*.cu for sm_80/sm_90 (no torch needed)
#   make cuda-build  build the CUDA extension against a CUDA torch in
#                    its own venv (build/cuda-venv), import it, run its error-path tests
#   make cmake       configure and build the C++ library with CMake (build/cmake)
#   make sanitize    build with ASan+UBSan out of tree (build/sanitize) and run a
#                    test subset under them (scripts/sanitize_check.sh; own
#                    pytest args: make sanitize SANITIZE_ARGS="tests/test_cell_ops.py")
#   make clean       remove build outputs
#
# Variables: PYTHON (default python3), MAX_JOBS, BENCH_ARGS, SANITIZE (0: make test
# skips the sanitizer run), SANITIZE_ARGS, the build options read by setup.py:
# USE_CUDA, LSTM_EXT_CPU_ISA (make cmake too; scripts/cpu_isa.py decides), LSTM_EXT_SANITIZE.

PYTHON ?= python3
BENCH_ARGS ?=
SANITIZE_ARGS ?=
SANITIZE ?= 1
export PYTHON

.PHONY: help test bench build install cuda-check cuda-build cmake sanitize clean

help:
	@sed -n '3,22p' Makefile

test:
	bash scripts/bootstrap.sh test
	@if command -v nvcc >/dev/null 2>&1; then \
	  bash scripts/cuda_compile_check.sh; \
	  bash scripts/cuda_build_check.sh; \
	else \
	  echo "[cuda-check] nvcc not on PATH: compile check and CUDA build skipped"; \
	fi
	$(PYTHON) -m pytest -q tests
	@if [ "$(SANITIZE)" = 0 ]; then \
	  echo "[sanitize] SANITIZE=0: skipped"; \
	else \
	  SANITIZE_IF_AVAILABLE=1 bash scripts/sanitize_check.sh; \
	fi

bench:
	bash scripts/bootstrap.sh bench
	$(PYTHON) benchmarks/bench.py $(BENCH_ARGS)

build:
	bash scripts/bootstrap.sh build

install:
	$(PYTHON) -m pip install --no-build-isolation -e .

cuda-check:
	bash scripts/cuda_compile_check.sh

cuda-build:
	bash scripts/cuda_build_check.sh

cmake:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DLSTM_EXT_CPU_ISA="$${LSTM_EXT_CPU_ISA:-auto}"
	cmake --build build/cmake -j $${MAX_JOBS:-$$(nproc)}

sanitize:
	bash scripts/sanitize_check.sh $(SANITIZE_ARGS)

clean:
	rm -rf build dist *.egg-info lstm_ext/_C*.so
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
