"""Data-parallel training of an lstm_ext model with DistributedDataParallel.

Launch one process per worker with torchrun, on one machine (gloo, CPU) or
one GPU per process (nccl):

    PYTHONPATH=. torchrun --nproc_per_node=2 examples/train_ddp.py
    PYTHONPATH=. torchrun --nproc_per_node=2 examples/train_ddp.py --steps 50 --backend gloo

Each rank trains the same character-level LSTM language model on its own
shard of a generated corpus (repeating letter patterns, so the loss drops
quickly). DDP averages the gradients across ranks after every backward;
lstm_ext.LSTM needs nothing special for that: its parameters are ordinary
nn.Parameters with torch.nn.LSTM's names, there is no flatten_parameters()
to call and no warning to silence. Rank 0 prints the loss.

Teardown: a gloo process group runs two worker threads, and the thread that
finishes a collective drops its last references to the collective's tensors
some time after the caller has been woken up. If that happens while Python
is already finalizing, the thread cannot take the GIL to release a tensor's
Python object: Python ends the thread with pthread_exit, whose unwinding
reaches a noexcept destructor (ProcessGroupGloo::AsyncWork), and the C++
runtime aborts the process: "terminate called without an active exception",
SIGABRT, after the last loss line (torch 2.13: 1 run in 14 to 40 on 2 loaded
cores, with torch.nn.LSTM as with lstm_ext.LSTM). The cure is to destroy the
group, whose destructor joins those threads, before the interpreter exits:
main() drops every reference to it first (see the end of main() and the
import of torch.distributed.nn below).
"""
import argparse
import gc
import os

import torch
import torch.distributed as dist
# Import before init_process_group: torch.distributed.nn.functional binds
# `group=group.WORLD` as default arguments when it is imported, so importing
# it while a group exists keeps that group alive for good and
# destroy_process_group() can no longer join gloo's threads. DDP imports it
# lazily (DistributedDataParallel() -> torch._dynamo -> ... -> torch.distributed.nn).
import torch.distributed.nn  # noqa: F401
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lstm_ext

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class CharModel(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = lstm_ext.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)


def corpus_batch(generator, batch: int, length: int) -> torch.Tensor:
    """[batch, length + 1] letter indices: each row repeats a random pattern of
    2 to 5 letters, so the next letter is predictable from the context."""
    rows = []
    for _ in range(batch):
        period = int(torch.randint(2, 6, (1,), generator=generator))
        pattern = torch.randint(0, len(ALPHABET), (period,), generator=generator)
        rows.append(pattern.repeat(length // period + 2)[: length + 1])
    return torch.stack(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16, help="sequences per rank and step")
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--backend", default=None, help="gloo (default on CPU) or nccl (default with CUDA)")
    args = p.parse_args(argv)

    use_cuda = torch.cuda.is_available() and args.backend != "gloo"
    dist.init_process_group(args.backend or ("nccl" if use_cuda else "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(CharModel(len(ALPHABET), args.hidden, args.layers).to(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    losses = []
    for step in range(args.steps):
        batch = corpus_batch(data, args.batch, args.length).to(device)
        logits = model(batch[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(ALPHABET)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # The mean loss over all ranks, for the log.
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.3f}  ({world} ranks x {args.batch} sequences)", flush=True)
    # Teardown (see the module docstring): no rank closes its connections
    # while a peer is still in a collective; then drop the other references to
    # the process group (DDP's reducer holds it, and a DDP module sits in
    # reference cycles, hence the collection) so that destroy_process_group()
    # releases the last one: the group's destructor then waits for its queued
    # work and joins gloo's worker threads while Python is fully alive.
    dist.barrier()
    del model, optimizer
    gc.collect()
    dist.destroy_process_group()
    return losses


if __name__ == "__main__":
    main()
