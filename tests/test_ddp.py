"""DistributedDataParallel on an existing engine: gloo, 2 processes on this machine.

Each rank gets half of a global batch; DDP averages the ranks' gradients, so
they must equal single-process training on the whole batch. lstm_ext.LSTM has
ordinary parameters and no flatten_parameters() requirement: nothing may warn.

Every rank must also have destroyed its gloo process group, worker threads
joined, before Python finalizes: a gloo worker thread that releases a
collective's tensors after that aborts the process ("terminate called without
an active exception"; see examples/train_ddp.py). Whether that abort happens
is a race, but whether the threads are still there after teardown is not, so
the tests check that.
"""
import gc
import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lstm_ext

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORLD = 2
T, B, I, H = 7, 6, 5, 8  # B: the global batch, split evenly over the ranks


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * H, 1)

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        return self.head(y).squeeze(-1), h, c


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, T, I, generator=g), torch.randn(B, T, generator=g)


def _loss(model, x, target):
    out, h, c = model(x)
    # h and c enter the loss too, so the final-state gradients are exercised.
    return nn.functional.mse_loss(out, target) + 0.1 * (h.square().mean() + c.square().mean())


def _gloo_threads():
    """Names of this process's threads that belong to gloo (pt_gloo_runloop,
    gloo_tcp_loop): none may be left once the process group is destroyed."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return sorted(n for n in names if "gloo" in n)


def _single_process_grads():
    torch.manual_seed(0)
    model = Model()
    _loss(model, *_data()).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _rank(rank, init_file, out_dir):
    # Before init_process_group, as in examples/train_ddp.py: imported later (DDP
    # does, lazily), its `group=group.WORLD` default arguments keep the group alive.
    import torch.distributed.nn  # noqa: F401

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
        torch.manual_seed(0)
        model = Model()
        ddp = DistributedDataParallel(model)
        x, target = _data()
        shard = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        # Per-rank mean over half the batch, averaged by DDP: the global mean,
        # except the final-state term, which is a mean over the rank's rows too.
        _loss(ddp, x[shard], target[shard]).backward()
        # Teardown as in examples/train_ddp.py: the group's last reference goes
        # with destroy_process_group(), whose destructor joins gloo's threads.
        dist.barrier()
        del ddp
        gc.collect()
        dist.destroy_process_group()
    torch.save({"grads": {n: p.grad for n, p in model.named_parameters()},
                "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                "gloo_threads_after_destroy": _gloo_threads()},
               os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_gradients_equal_single_process_training(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    expected = _single_process_grads()
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["warnings"] == [], result["warnings"]
        assert result["gloo_threads_after_destroy"] == [], f"rank {rank}: {result['gloo_threads_after_destroy']}"
        assert result["grads"].keys() == expected.keys()
        for name, grad in result["grads"].items():
            torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=1e-5, msg=f"rank {rank}: {name}")


def test_train_ddp_example_runs_under_torchrun():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "examples" / "train_ddp.py"), "--steps", "4", "--hidden", "16", "--batch", "4"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    losses = [float(line.split("loss")[1].split()[0]) for line in run.stdout.splitlines() if "loss" in line]
    assert len(losses) == 2 and all(l > 0 for l in losses), run.stdout  # steps 0 and 3 are printed


def _example_rank(rank, port, out_dir):
    # What torchrun would set; the example initialises from the environment.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    spec = importlib.util.spec_from_file_location("train_ddp", ROOT / "examples" / "train_ddp.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.main(["--steps", "2", "--hidden", "16", "--batch", "4", "--backend", "gloo"])
    torch.save({"losses": losses, "gloo_threads_after_main": _gloo_threads()},
               os.path.join(out_dir, f"example_rank{rank}.pt"))


def test_train_ddp_example_joins_gloo_threads_before_exit(tmp_path):
    # The deterministic half of the torchrun test above: after main() no gloo
    # thread may be left to release work while the interpreter finalizes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_example_rank, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"example_rank{rank}.pt")
        assert len(result["losses"]) == 2 and all(l > 0 for l in result["losses"]), result["losses"]
        assert result["gloo_threads_after_main"] == [], f"rank {rank}: {result['gloo_threads_after_main']}"
