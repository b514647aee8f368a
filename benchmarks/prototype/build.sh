#!/bin/bash
# Build the prototypes. breakdown links libtorch (it calls MKL's sgemm_ and
# the production at::vec cell pass); lstm_proto links torch only for the
# optional Sleef comparison and the MKL baseline (-DWITH_TORCH).
set -e
cd "$(dirname "$0")"
TP=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")
TINC="-I$TP/include -I$TP/include/torch/csrc/api/include"
TLIB="-L$TP/lib -ltorch_cpu -lc10 -Wl,-rpath,$TP/lib"
ISA="-DCPU_CAPABILITY=AVX512 -DCPU_CAPABILITY_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma"
# Same flags as setup.py uses for the extension (cell pass compiled as production does).
g++ -O3 -std=c++20 $ISA $TINC -I../../csrc breakdown.cpp -o breakdown $TLIB -lpthread
# same, but with -fopenmp: at::parallel_for forks (the extension itself builds WITHOUT -fopenmp,
# so its per-step for_rows parallel_for is compiled inline-serial)
g++ -O3 -std=c++20 -fopenmp $ISA $TINC -I../../csrc breakdown.cpp -o breakdown_omp $TLIB -lpthread
# -fopenmp so that at::parallel_for really forks (torch's libgomp is found first via rpath)
g++ -O3 -std=c++20 -march=native -fopenmp -DWITH_TORCH $TINC lstm_proto.cpp -o lstm_proto $TLIB -lpthread
g++ -O3 -std=c++20 -march=native lstm_proto.cpp -o lstm_proto_notorch -lpthread
# Variant: Eigen-style rational tanh (cheaper epilogue, ~3e-7 abs error)
g++ -O3 -std=c++20 -march=native -fopenmp -DWITH_TORCH -DFAST_TANH $TINC lstm_proto.cpp -o lstm_proto_fasttanh $TLIB -lpthread
