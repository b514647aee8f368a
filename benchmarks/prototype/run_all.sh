#!/bin/bash
# One measurement round: GEMM ceiling + torch.nn.LSTM (oneDNN), current-ext
# breakdown (MKL sgemm_ + at::vec cell), prototype. Usage: ./run_all.sh TAG
cd "$(dirname "$0")"; TAG=${1:-r}
mkdir -p results
python3 measure.py python3 torch_ref.py results/torch_$TAG.json > results/torch_$TAG.txt 2>&1
python3 measure.py ./breakdown 21 > results/breakdown_$TAG.txt 2>&1
[ "$OMP" = 1 ] && python3 measure.py ./breakdown_omp 21 > results/breakdown_omp_$TAG.txt 2>&1
python3 measure.py ./lstm_proto 21 > results/proto_$TAG.txt 2>&1
[ "$FT" = 1 ] && python3 measure.py ./lstm_proto_fasttanh 21 quick > results/proto_fasttanh_$TAG.txt 2>&1
