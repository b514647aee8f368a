#!/usr/bin/env python3
"""bf16 LSTM inference: torch.nn.LSTM vs lstm_ext native (avx512bf16) vs
lstm_ext upcast (LSTM_EXT_CPU_KERNEL=avx512), interleaved, median of repeats.

    python3 benchmarks/prototype/bench_bf16_native.py [--repeats 15] [--threads 2]
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import lstm_ext  # noqa: E402

SHAPES = [(100, 64, 512, 512), (100, 32, 256, 256), (200, 8, 64, 64), (50, 1, 256, 256)]


def load():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="also time float32 torch / ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, kernels {torch.ops.lstm_ext.cpu_kernels()}, load {load()}")
    for T, B, I, H in SHAPES:
        torch.manual_seed(0)
        ref = torch.nn.LSTM(I, H).to(torch.bfloat16)
        ours = lstm_ext.LSTM(I, H).to(torch.bfloat16)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I).to(torch.bfloat16)
        runs = {
            "torch bf16": (ref, x, None),
            "ours native": (ours, x, "auto"),
            "ours upcast": (ours, x, "avx512"),
        }
        if args.fp32:
            ref32, ours32 = torch.nn.LSTM(I, H), lstm_ext.LSTM(I, H)
            runs["torch fp32"] = (ref32, x.float(), None)
            runs["ours fp32"] = (ours32, x.float(), "auto")
        times = {k: [] for k in runs}
        with torch.inference_mode():
            for name, (m, xx, env) in runs.items():  # warm-up
                if env:
                    os.environ["LSTM_EXT_CPU_KERNEL"] = env
                for _ in range(2):
                    m(xx)
            for _ in range(args.repeats):
                for name, (m, xx, env) in runs.items():
                    if env:
                        os.environ["LSTM_EXT_CPU_KERNEL"] = env
                    t0 = time.perf_counter()
                    m(xx)
                    times[name].append(time.perf_counter() - t0)
        os.environ.pop("LSTM_EXT_CPU_KERNEL", None)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        cols = "  ".join(f"{k} {v:8.2f} ms" for k, v in med.items())
        print(f"T{T} B{B} I{I} H{H}: {cols}  | native vs torch {med['torch bf16'] / med['ours native']:.2f}x, "
              f"native vs upcast {med['ours upcast'] / med['ours native']:.2f}x  (load {load()})", flush=True)


if __name__ == "__main__":
    main()
