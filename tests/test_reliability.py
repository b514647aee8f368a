"""Reliability on the CPU: concurrent callers, thread settings, memory, long
sequences and what training keeps per token."""
import threading
import time

import pytest
import torch
from torch import nn

import lstm_ext
from helpers import F32_GRAD, F32_OUT, assert_dicts_close, backprop, leaf, module_pair

# --- many Python threads, one module ------------------------------------------------------

THREADS = 4


def _inference(m, x):
    with torch.no_grad():
        y, (h, c) = m(x)
    return {"y": y, "h": h, "c": c}


def _training(m, x):
    x = leaf(x)
    y, (h, c) = m(x)
    return backprop({"y": y, "h": h, "c": c}, {"x": x, **dict(m.named_parameters())})


def _run_concurrently(fn, inputs, rounds=5):
    """fn(x) for every input, each from its own Python thread, `rounds` times
    over; returns the results of the last round per input, and any exception."""
    results, errors = [None] * len(inputs), []
    start = threading.Barrier(len(inputs))

    def work(index):
        try:
            start.wait()
            for _ in range(rounds):
                results[index] = fn(inputs[index])
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_concurrent_threads_share_one_module(mode):
    """Each thread has its own input (and shapes differ, so per-thread scratch
    buffers differ too); every result equals the same call made alone."""
    m = lstm_ext.LSTM(24, 64, num_layers=2, bidirectional=True)
    inputs = [torch.randn(30 + 7 * i, 3 + 2 * i, 24) for i in range(THREADS)]
    fn = _inference if mode == "inference" else _training
    alone = [fn(m, x) for x in inputs]
    together = _run_concurrently(lambda x: fn(m, x), inputs)
    for i, (a, b) in enumerate(zip(alone, together)):
        assert_dicts_close(b, a, dict(atol=1e-6, rtol=1e-6), f"thread {i} {mode}")


def test_concurrent_rnn_and_lstm_calls():
    lstm, rnn = lstm_ext.LSTM(16, 96), lstm_ext.RNN(16, 96, nonlinearity="relu")
    inputs = [torch.randn(40, 5, 16) for _ in range(THREADS)]

    def fn(x):
        with torch.no_grad():
            return {"lstm": lstm(x)[0], "rnn": rnn(x)[0]}

    alone = [fn(x) for x in inputs]
    for i, (a, b) in enumerate(zip(alone, _run_concurrently(fn, inputs))):
        assert_dicts_close(b, a, dict(atol=1e-6, rtol=1e-6), f"thread {i}")


# --- torch.set_num_threads ----------------------------------------------------------------

def test_one_torch_thread_means_one_busy_core():
    """With torch.set_num_threads(1) the kernels run on the calling thread only:
    the process's CPU time cannot exceed the wall time by more than noise. (The
    sizes are well above the per-step work at which the loops use threads.)"""
    m = lstm_ext.LSTM(256, 256)
    x = torch.randn(400, 16, 256)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            m(x)  # warm up
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(3):
                m(x)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    assert cpu < 1.4 * wall, f"CPU time {cpu:.3f} s over {wall:.3f} s of wall time with one thread"


# --- memory -------------------------------------------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_no_memory_growth_over_2000_training_steps():
    # One thread: the subject is memory, and a 2-thread team on a machine busy
    # with other work waits at every step's barrier for a descheduled partner.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_measure_growth()
    finally:
        torch.set_num_threads(before)


def _train_and_measure_growth():
    torch.manual_seed(0)
    model = nn.ModuleDict({"lstm": lstm_ext.LSTM(16, 32, num_layers=2), "head": nn.Linear(32, 1)})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(20, 4, 16), torch.randn(20, 4, 1)

    def step():
        y, _ = model["lstm"](x)
        loss = nn.functional.mse_loss(model["head"](y), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(200):  # allocator pools, workspaces and Adam state settle
        step()
    start = _rss_bytes()
    for _ in range(2000):
        step()
    growth = _rss_bytes() - start
    assert growth < 4 << 20, f"resident memory grew by {growth / 2**20:.1f} MiB over 2000 steps"


def test_training_keeps_less_per_token_than_torch_nn():
    """What autograd keeps for backward, per token (T*B rows), one layer, float32:
    x, y, the four gate activations and c_t, i.e. 4*(I + 6H) bytes; torch.nn's
    oneDNN LSTM keeps its workspace instead (README, "Memory")."""
    T, B, I, H = 50, 8, 64, 64

    def saved_per_token(m, x):
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        storages = {}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                storages[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(x)
        return sum(storages.values()) / (T * B)

    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, I, H)
    x = leaf(torch.randn(T, B, I))
    ours, theirs = saved_per_token(ext, x), saved_per_token(ref, x)
    expected = 4 * (I + 6 * H)
    # + per call, not per token: h0 and c0 ([B,H] each) and the summed bias [4H]
    per_call = 4 * (2 * B * H + 4 * H)
    assert ours == pytest.approx(expected + per_call / (T * B)), ours
    assert ours < theirs, (ours, theirs)


# --- long sequences -------------------------------------------------------------------------

def test_hundred_thousand_steps_batch_one():
    """T = 100,000, B = 1: forward and backward run and agree with torch.nn."""
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, 4, 8)
    x = torch.randn(100_000, 1, 4)
    hx = tuple(0.5 * torch.randn(1, 1, 8) for _ in range(2))
    results = []
    for m in (ref, ext):
        xl, states = leaf(x), tuple(leaf(h) for h in hx)
        y, (h, c) = m(xl, states)
        grads = backprop({"y": y, "h": h, "c": c}, {"x": xl, "h0": states[0], "c0": states[1],
                                                     **dict(m.named_parameters())})
        results.append(({"y": y.detach(), "h": h.detach(), "c": c.detach()}, grads))
    (ref_out, ref_grads), (out, grads) = results
    assert_dicts_close(out, ref_out, F32_OUT, "T=100000 outputs")
    # Weight gradients sum 100,000 per-step terms: float32 rounding of the sums
    # (in a different order than oneDNN's) grows with T.
    assert_dicts_close(grads, ref_grads, dict(atol=5e-3, rtol=1e-3), "T=100000 grads")
