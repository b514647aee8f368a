"""What only the CUDA path has: float16, bfloat16 against cuDNN's own error,
streams, CUDA graphs, device placement. (fp32/fp64 parity, gradcheck, opcheck
and torch.compile run on CUDA through the ``device`` fixture of the other
test modules.) Every test here needs a GPU and a CUDA build."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from helpers import F32_GRAD, F32_OUT, assert_dicts_close, backprop, leaf, module_pair, needs_cuda
from low_precision import assert_as_close_as_torch

pytestmark = needs_cuda

LOW = [torch.float16, torch.bfloat16]
T, B, I, H = 12, 3, 16, 16


def _randn(*shape, dtype=torch.float32, scale=1.0):
    return (scale * torch.randn(*shape, device="cuda")).to(dtype)


def _states(dtype, layers, D, batch, hidden, proj=0):
    return (_randn(layers * D, batch, proj or hidden, dtype=dtype, scale=0.5),
            _randn(layers * D, batch, hidden, dtype=dtype, scale=0.5))


# --- float16 / bfloat16: no worse than cuDNN's own error against float32 -------------------

@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["1layer", "2layer-bidir"])
def test_lstm_low_precision_matches_cudnn_error(dtype, layers, bidirectional):
    D = 2 if bidirectional else 1
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(T, B, I, dtype=dtype),
                             _states(dtype, layers, D, B, H), dtype=dtype, device="cuda",
                             input_size=I, hidden_size=H, num_layers=layers, bidirectional=bidirectional)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_lstm_low_precision_large_shape(dtype):
    """T64 B64 I256 H512: long enough for rounding to accumulate over steps."""
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(64, 64, 256, dtype=dtype),
                             dtype=dtype, device="cuda", input_size=256, hidden_size=512)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_lstm_low_precision_projection_batch_first(dtype):
    P = 8
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(B, T, I, dtype=dtype),
                             _states(dtype, 2, 1, B, H, proj=P), dtype=dtype, device="cuda",
                             input_size=I, hidden_size=H, num_layers=2, batch_first=True, proj_size=P)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_lstm_low_precision_packed_bidirectional(dtype):
    lengths = torch.tensor([5, 12, 3, 9])
    x = pack_padded_sequence(_randn(T, 4, I, dtype=dtype), lengths, enforce_sorted=False)
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, x, _states(dtype, 1, 2, 4, H), dtype=dtype,
                             device="cuda", input_size=I, hidden_size=H, bidirectional=True)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_low_precision_matches_cudnn_error(dtype, nonlinearity):
    h0 = (_randn(2, B, H, dtype=dtype, scale=0.5),)
    assert_as_close_as_torch(nn.RNN, lstm_ext.RNN, _randn(T, B, I, dtype=dtype), h0, dtype=dtype,
                             device="cuda", input_size=I, hidden_size=H, bidirectional=True,
                             nonlinearity=nonlinearity)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_low_precision_outputs_keep_dtype_and_cell_state_is_float32_inside(dtype):
    """Outputs, states and gradients come back in the module's dtype; the op
    saves gates and cells in float32 (the compute dtype)."""
    m = lstm_ext.LSTM(I, H, device="cuda", dtype=dtype)
    x = leaf(_randn(T, B, I, dtype=dtype))
    y, (h, c) = m(x)
    assert y.dtype == h.dtype == c.dtype == dtype
    (y.float().sum() + c.float().sum()).backward()
    assert x.grad.dtype == dtype and all(p.grad.dtype == dtype for p in m.parameters())
    w = m.weight_ih_l0
    b = (m.bias_ih_l0.float() + m.bias_hh_l0.float())
    out = torch.ops.lstm_ext.lstm_forward(x.detach(), w, m.weight_hh_l0, b, h[0], c[0], False, True)
    assert out[3].dtype == out[4].dtype == torch.float32


# --- module conversion and placement ---------------------------------------------------

@pytest.mark.parametrize("convert", ["to_cuda", "half", "bfloat16"])
def test_module_conversions_run_forward_and_backward(convert):
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, I, H, num_layers=2)
    dtype = {"to_cuda": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16}[convert]
    for m in (ref, ext):
        m.to("cuda")
        if convert == "half":
            m.half()
        elif convert == "bfloat16":
            m.bfloat16()
    assert all(p.is_cuda and p.dtype == dtype for p in ext.parameters())
    assert ext.state_dict().keys() == ref.state_dict().keys()
    x = _randn(T, B, I, dtype=dtype)
    y, (h, c) = ext(x)
    y.float().pow(2).sum().backward()
    assert all(torch.isfinite(p.grad.float()).all() for p in ext.parameters())
    if dtype == torch.float32:
        assert_dicts_close({"y": y}, {"y": ref(x)[0]}, F32_OUT, "after .to('cuda')")


def test_cpu_module_moved_to_cuda_and_back_gives_same_outputs():
    m = lstm_ext.LSTM(I, H, bidirectional=True)
    x = torch.randn(T, B, I)
    y_cpu = m(x)[0]
    y_gpu = m.to("cuda")(x.cuda())[0]
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, **F32_OUT)
    torch.testing.assert_close(m.cpu()(x)[0], y_cpu, atol=0, rtol=0)


def test_mixed_devices_raise_clearly():
    m = lstm_ext.LSTM(I, H, device="cuda")
    with pytest.raises(RuntimeError, match=r"not at the same device.*cpu.*cuda"):
        m(torch.randn(T, B, I))
    with pytest.raises(RuntimeError, match=r"not at the same device.*h_0"):
        m(_randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, H)))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_gpu_runs_on_its_own_device():
    """The device guard: a module on cuda:1 computes there while cuda:0 is current."""
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, I, H)
    ref.to("cuda:1"), ext.to("cuda:1")
    x = torch.randn(T, B, I, device="cuda:1")
    with torch.cuda.device(0):
        y = ext(x)[0]
    assert y.device == torch.device("cuda:1")
    torch.testing.assert_close(y, ref(x)[0], **F32_OUT)


# --- streams and graphs ----------------------------------------------------------------

def _training_results(m, x, hx):
    x, hx = leaf(x), tuple(leaf(h) for h in hx)
    y, (h, c) = m(x, hx)
    wrt = {"x": x, "h0": hx[0], "c0": hx[1], **dict(m.named_parameters())}
    return {"y": y.detach(), "h": h.detach(), "c": c.detach()}, backprop({"y": y, "h": h, "c": c}, wrt)


def test_runs_on_the_current_non_default_stream():
    """Everything (GEMMs and kernels) is queued on the caller's stream: after a
    long kernel on that stream, the results must not be read early, and they
    equal a default-stream run."""
    m = lstm_ext.LSTM(I, H, num_layers=2, device="cuda")
    x, hx = _randn(50, 8, I), _states(torch.float32, 2, 1, 8, H)
    expected = _training_results(m, x, hx)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keep the stream busy: an op on another stream would race ahead
        got = _training_results(m, x, hx)
    torch.cuda.current_stream().wait_stream(side)
    assert_dicts_close(got[0], expected[0], F32_OUT, "outputs on a side stream")
    assert_dicts_close(got[1], expected[1], F32_GRAD, "grads on a side stream")


def test_cuda_graph_capture_and_replay_inference():
    m = lstm_ext.LSTM(I, H, num_layers=2, device="cuda").eval()
    static_x = _randn(T, B, I)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):  # warm up (allocator, cuBLAS handles) outside the capture
            m(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_y, (static_h, static_c) = m(static_x)
    for _ in range(3):
        fresh = _randn(T, B, I)
        static_x.copy_(fresh)
        graph.replay()
        with torch.no_grad():
            y, (h, c) = m(fresh)
        # Same kernels; cuBLAS may pick another algorithm under capture, so not bitwise.
        torch.testing.assert_close(static_y, y, **F32_OUT)
        torch.testing.assert_close(static_c, c, **F32_OUT)


def test_cuda_graph_capture_and_replay_training_step():
    """make_graphed_callables captures forward and backward; replayed outputs
    and gradients equal an eager twin's (make_graphed_callables replaces the
    module's own forward, so the twin is a copy made before)."""
    m = lstm_ext.LSTM(I, H, device="cuda")
    eager = copy.deepcopy(m)
    graphed = torch.cuda.make_graphed_callables(m, (leaf(_randn(T, B, I)),))
    for _ in range(2):
        x = _randn(T, B, I)
        m.zero_grad(set_to_none=True)
        eager.zero_grad(set_to_none=True)
        y_graph = graphed(leaf(x))[0]
        y_graph.pow(2).sum().backward()
        y_graph = y_graph.detach().clone()  # the graph's static output is overwritten by the next replay
        y_eager = eager(leaf(x))[0]
        y_eager.pow(2).sum().backward()
        torch.testing.assert_close(y_graph, y_eager, **F32_OUT)
        for (n, p), q in zip(m.named_parameters(), eager.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **F32_GRAD, msg=n)


# --- long sequences and large batches -------------------------------------------------------

def test_long_sequence_matches_cudnn():
    """T=1000: no drift against cuDNN over many steps (float32)."""
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, 32, 64, device="cuda")
    x = _randn(1000, 4, 32)
    y_ref, (h_ref, c_ref) = ref(x)
    y, (h, c) = ext(x)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(c, c_ref, atol=2e-5, rtol=1e-4)


def test_large_batch_grid_stride():
    """rows * H above one grid's worth of threads (8192 blocks x 256)."""
    ref, ext = module_pair(nn.RNN, lstm_ext.RNN, 8, 1024, device="cuda")
    x = _randn(2, 2100, 8)
    torch.testing.assert_close(ext(x)[0], ref(x)[0], **F32_OUT)


# --- the persistent kernels (LSTM_EXT_CUDA_PATH=persistent forces them) ----------------------

@pytest.fixture
def persistent(monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "persistent")


def _assert_matches_cudnn(ref, ext, x, hx):
    got = _training_results(ext, x, hx)
    want = _training_results(ref, x, hx)
    assert_dicts_close(got[0], want[0], F32_OUT, "outputs")
    assert_dicts_close(got[1], want[1], F32_GRAD, "grads")


@pytest.mark.parametrize("B,H", [(1, 1), (1, 64), (3, 33), (4, 257), (8, 512), (16, 768)])
def test_persistent_matches_cudnn(persistent, B, H):
    """Both directions (bidirectional runs the reverse kernel), hx given, fp32."""
    assert lstm_ext.cuda_path(B, H).startswith("persistent")
    assert lstm_ext.cuda_path(B, H, backward=True).startswith("persistent")
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, 24, H, bidirectional=True, device="cuda")
    _assert_matches_cudnn(ref, ext, _randn(9, B, 24), _states(torch.float32, 1, 2, B, H))


@pytest.mark.parametrize("T_steps", [1, 300])
def test_persistent_one_and_many_steps(persistent, T_steps):
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, 16, 128, num_layers=2, device="cuda")
    _assert_matches_cudnn(ref, ext, _randn(T_steps, 4, 16), _states(torch.float32, 2, 1, 4, 128))


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_persistent_several_row_tiles(persistent, packed):
    """B=48, H=1024: the staged rows come in several tiles per step, forward and
    backward (forced: auto keeps B > 16 on the standard path)."""
    B_big, H_big = 48, 1024
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, 32, H_big, device="cuda")
    hx = _states(torch.float32, 1, 1, B_big, H_big)
    x = _randn(6, B_big, 32)
    if not packed:
        _assert_matches_cudnn(ref, ext, x, hx)
        return
    lengths = torch.randint(1, 7, (B_big,))
    lengths[0] = 6
    packed_x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        y_ref, (h_ref, c_ref) = ref(packed_x, hx)
        y, (h, c) = ext(packed_x, hx)
    torch.testing.assert_close(y.data, y_ref.data, **F32_OUT)
    torch.testing.assert_close(h, h_ref, **F32_OUT)
    torch.testing.assert_close(c, c_ref, **F32_OUT)


def test_persistent_packed_unsorted_bidirectional(persistent):
    lengths = torch.tensor([5, 12, 3, 9, 12, 1])
    ref, ext = module_pair(nn.LSTM, lstm_ext.LSTM, I, 96, bidirectional=True, device="cuda")
    x = pack_padded_sequence(_randn(12, 6, I), lengths, enforce_sorted=False)
    hx = _states(torch.float32, 1, 2, 6, 96)
    outs = {}
    for name, m in (("ref", ref), ("ext", ext)):
        data = leaf(x.data)
        packed = nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
        states = tuple(leaf(h) for h in hx)
        y, (h, c) = m(packed, states)
        wrt = {"x": data, "h0": states[0], "c0": states[1], **dict(m.named_parameters())}
        outs[name] = ({"y": y.data.detach(), "h": h.detach(), "c": c.detach()},
                      backprop({"y": y.data, "h": h, "c": c}, wrt))
    assert_dicts_close(outs["ext"][0], outs["ref"][0], F32_OUT, "packed outputs")
    assert_dicts_close(outs["ext"][1], outs["ref"][1], F32_GRAD, "packed grads")


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
def test_persistent_low_precision_matches_cudnn_error(persistent, dtype):
    assert lstm_ext.cuda_path(8, 512, dtype).startswith("persistent")
    assert_as_close_as_torch(nn.LSTM, lstm_ext.LSTM, _randn(50, 8, 128, dtype=dtype),
                             _states(dtype, 1, 2, 8, 512), dtype=dtype, device="cuda",
                             input_size=128, hidden_size=512, bidirectional=True)


def test_persistent_and_standard_paths_agree(monkeypatch):
    m = lstm_ext.LSTM(I, 200, num_layers=2, device="cuda")
    x, hx = _randn(40, 5, I), _states(torch.float32, 2, 1, 5, 200)
    results = {}
    for path in ("standard", "persistent"):
        monkeypatch.setenv("LSTM_EXT_CUDA_PATH", path)
        results[path] = _training_results(m, x, hx)
    assert_dicts_close(results["persistent"][0], results["standard"][0], F32_OUT, "outputs")
    assert_dicts_close(results["persistent"][1], results["standard"][1], F32_GRAD, "grads")


def test_auto_path_choice_is_reported(monkeypatch):
    monkeypatch.delenv("LSTM_EXT_CUDA_PATH", raising=False)
    assert lstm_ext.cuda_path(4, 512).startswith("persistent")
    assert lstm_ext.cuda_path(4, 512, torch.bfloat16).startswith("persistent")
    assert lstm_ext.cuda_path(64, 512) == "standard (batch 64 > 16)"
    assert lstm_ext.cuda_path(4, 512, torch.float64) == "standard (float64 runs the standard path)"
    assert lstm_ext.cuda_path(4, 512, proj_size=128) == "standard (proj_size runs the standard path)"
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "standard")
    assert lstm_ext.cuda_path(4, 512) == "standard (LSTM_EXT_CUDA_PATH=standard)"


def test_forced_persistent_path_refuses_what_it_cannot_run(persistent):
    m = lstm_ext.LSTM(I, H, proj_size=4, device="cuda")
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent.*proj_size"):
        m(_randn(T, B, I))
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent.*float64"):
        lstm_ext.LSTM(I, H, device="cuda", dtype=torch.float64)(_randn(T, B, I, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"shared memory"):
        lstm_ext.cuda_path(1, 16384)  # a 4 x 16384 x U slice per block cannot fit


def test_forced_persistent_refusal_comes_before_any_allocation(persistent):
    # The path is chosen right after the argument checks: a refused call has
    # allocated nothing and launched nothing (on the old order it copied
    # strided inputs and ran the input-projection GEMM first).
    G = 4 * H
    # x and w_ih strided: a copy to contiguous would be an allocation too.
    args = [_randn(B, T, I, dtype=torch.float64).transpose(0, 1), _randn(I, G, dtype=torch.float64).t(),
            _randn(G, H, dtype=torch.float64), _randn(G, dtype=torch.float64),
            _randn(B, H, dtype=torch.float64), _randn(B, H, dtype=torch.float64)]
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent.*float64"):
        torch.ops.lstm_ext.lstm_forward(*args, False, True)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before


def test_invalid_path_setting_raises(monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "fast")
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH: expected auto, standard, persistent or tensorcore \(experimental\), got 'fast'"):
        lstm_ext.LSTM(I, H, device="cuda")(_randn(T, B, I))


# --- the persistent GRU kernel (never run on a GPU before: only a forced path takes it) ------

def _gru_results(m, x, h0, cot_dtype=None):
    """Outputs (y, h_n) and the gradients of x, h0 and every parameter of a
    GRU module (torch.nn's or lstm_ext's), dense or packed; cotangents drawn
    in ``cot_dtype`` (default: the outputs' dtype), so runs in other dtypes
    can share them."""
    packed = isinstance(x, nn.utils.rnn.PackedSequence)
    data = leaf(x.data if packed else x)
    inp = nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if packed else data
    h0 = leaf(h0)
    y, h = m(inp, h0)
    outs = {"y": y.data if packed else y, "h": h}
    wrt = {"x": data, "h0": h0, **dict(m.named_parameters())}
    return {k: v.detach() for k, v in outs.items()}, backprop(outs, wrt, cot_dtype=cot_dtype)


def _gru_float64_cpu(m, x, h0):
    """_gru_results of torch.nn.GRU ``m``'s float64 CPU twin, back on m's
    device and dtype (the exact reference of a float32 CUDA run)."""
    twin = copy.deepcopy(m).to("cpu", torch.float64)
    to64 = lambda t: t.detach().to("cpu", torch.float64)  # noqa: E731
    if isinstance(x, nn.utils.rnn.PackedSequence):
        x64 = nn.utils.rnn.PackedSequence(to64(x.data), x.batch_sizes,
                                          None if x.sorted_indices is None else x.sorted_indices.cpu(),
                                          None if x.unsorted_indices is None else x.unsorted_indices.cpu())
    else:
        x64 = to64(x)
    outs, grads = _gru_results(twin, x64, to64(h0), cot_dtype=torch.float32)
    back = lambda d: {k: v.to("cuda", torch.float32) for k, v in d.items()}  # noqa: E731
    return back(outs), back(grads)


def _assert_gru_matches(m_ref, m_ext, x, h0):
    """lstm_ext's GRU against cuDNN's (float32) and against torch.nn's float64
    CPU result, outputs and every gradient."""
    got = _gru_results(m_ext, x, h0)
    for label, want in (("cuDNN", _gru_results(m_ref, x, h0)), ("float64 CPU", _gru_float64_cpu(m_ref, x, h0))):
        assert_dicts_close(got[0], want[0], F32_OUT, f"outputs vs {label}")
        assert_dicts_close(got[1], want[1], F32_GRAD, f"grads vs {label}")


@pytest.mark.parametrize("B,H", [(1, 1), (1, 64), (3, 33), (4, 257), (8, 512), (16, 768)])
def test_persistent_gru_matches_torch(persistent, B, H):
    """Both directions (bidirectional runs the reverse kernel), h0 given, fp32;
    H = 33 and 257 leave the last block with fewer units than the others."""
    assert lstm_ext.cuda_path(B, H, cell="gru").startswith("persistent")
    assert lstm_ext.cuda_path(B, H, cell="gru", backward=True).startswith("persistent")
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, 24, H, bidirectional=True, device="cuda")
    _assert_gru_matches(ref, ext, _randn(9, B, 24), _randn(2, B, H, scale=0.5))


@pytest.mark.parametrize("T_steps", [1, 2])
def test_persistent_gru_one_and_two_steps_two_layers(persistent, T_steps):
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, 16, 128, num_layers=2, device="cuda")
    _assert_gru_matches(ref, ext, _randn(T_steps, 4, 16), _randn(2, 4, 128, scale=0.5))


def test_persistent_gru_long_sequence(persistent):
    """T=300: no drift over many steps and grid barriers (float32)."""
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, 16, 128, device="cuda")
    _assert_gru_matches(ref, ext, _randn(300, 4, 16), _randn(1, 4, 128, scale=0.5))


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_persistent_gru_several_row_tiles(persistent, packed):
    """B=48, H=1024: the staged rows come in several tiles per step, forward and
    backward (forced: auto never takes the GRU kernel), both directions."""
    B_big, H_big = 48, 1024
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, 32, H_big, bidirectional=True, device="cuda")
    h0 = _randn(2, B_big, H_big, scale=0.5)
    x = _randn(6, B_big, 32)
    if packed:
        lengths = torch.randint(1, 7, (B_big,))
        lengths[0] = 6
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    _assert_gru_matches(ref, ext, x, h0)


def test_persistent_gru_packed_unsorted_bidirectional(persistent):
    """Packed, unsorted lengths, both directions: the reverse direction's steps
    gain rows that start from h0, h_n is each sequence's state at its own last
    step, grad h0 each sequence's gradient at its own first step."""
    lengths = torch.tensor([5, 12, 3, 9, 12, 1])
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, I, 96, bidirectional=True, device="cuda")
    x = pack_padded_sequence(_randn(12, 6, I), lengths, enforce_sorted=False)
    _assert_gru_matches(ref, ext, x, _randn(2, 6, 96, scale=0.5))


def test_persistent_gru_without_bias_and_inference(persistent):
    """bias=False (null bias pointers) with gradients, and a no-grad forward
    (no saved gates) equal to the training forward."""
    ref, ext = module_pair(nn.GRU, lstm_ext.GRU, I, 40, bias=False, bidirectional=True, device="cuda")
    x, h0 = _randn(T, 5, I), _randn(2, 5, 40, scale=0.5)
    _assert_gru_matches(ref, ext, x, h0)
    with torch.no_grad():
        y, h = ext(x, h0)
        y_ref, h_ref = ref(x, h0)
    torch.testing.assert_close(y, y_ref, **F32_OUT)
    torch.testing.assert_close(h, h_ref, **F32_OUT)


@pytest.mark.parametrize("dtype", LOW, ids=["fp16", "bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_persistent_gru_low_precision_matches_cudnn_error(persistent, dtype, packed):
    assert lstm_ext.cuda_path(8, 512, dtype, cell="gru").startswith("persistent")
    x = _randn(50, 8, 128, dtype=dtype)
    if packed:
        x = pack_padded_sequence(x, torch.tensor([50, 3, 17, 50, 1, 29, 8, 44]), enforce_sorted=False)
    assert_as_close_as_torch(nn.GRU, lstm_ext.GRU, x, (_randn(2, 8, 512, dtype=dtype, scale=0.5),),
                             dtype=dtype, device="cuda", input_size=128, hidden_size=512,
                             bidirectional=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", ["dense", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_persistent_gru_ops_match_the_standard_path(monkeypatch, dtype, layout, reverse):
    """The ops' contract, path against path: y, h_n, the saved gates [N,4H]
    (r, z, n, hn) and every output of gru_backward (the gate gradients leave
    only through them), with grad_y and grad_h_n given or absent."""
    Hs, Is, Ts, Bs = 72, 20, 7, 5
    lengths = [7, 7, 5, 2, 1]
    if layout == "packed":
        batch_sizes = torch.tensor([sum(1 for n in lengths if n > t) for t in range(Ts)])
        N = int(batch_sizes.sum())
        x = _randn(N, Is, dtype=dtype)
    else:
        batch_sizes = None
        N = Ts * Bs
        x = _randn(Ts, Bs, Is, dtype=dtype)
    w_ih, w_hh = _randn(3 * Hs, Is, dtype=dtype, scale=0.3), _randn(3 * Hs, Hs, dtype=dtype, scale=0.3)
    b_ih, b_hh = _randn(3 * Hs, dtype=dtype, scale=0.3), _randn(3 * Hs, dtype=dtype, scale=0.3)
    h0 = _randn(Bs, Hs, dtype=dtype, scale=0.5)
    y_shape = (N, Hs) if batch_sizes is not None else (Ts, Bs, Hs)
    grad_y, grad_h_n = _randn(*y_shape, dtype=dtype), _randn(Bs, Hs, dtype=dtype)
    results = {}
    for path in ("standard", "persistent"):
        monkeypatch.setenv("LSTM_EXT_CUDA_PATH", path)
        y, h_n, gates = torch.ops.lstm_ext.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, True, batch_sizes)
        out = {"y": y, "h_n": h_n, "gates": gates}
        for name, gy, gh in (("both", grad_y, grad_h_n), ("y only", grad_y, None), ("h_n only", None, grad_h_n)):
            grads = torch.ops.lstm_ext.gru_backward(gy, gh, x, w_ih, w_hh, h0, y, gates, reverse, True, batch_sizes)
            for k, g in zip(("grad_x", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_h0"), grads):
                out[f"{k} ({name})"] = g
        results[path] = {k: v.float() for k, v in out.items()}
    label = f"{layout} reverse={reverse}"
    if dtype == torch.float32:
        # Strict fp32 products on both paths (conftest turns TF32 off): only
        # the order of the sums differs.
        assert_dicts_close(results["persistent"], results["standard"], dict(atol=1e-5, rtol=1e-4), label)
        return
    # 16-bit: the persistent kernel keeps the recurrent products and dh in
    # float32 where the standard path rounds them to the storage dtype, so the
    # two differ by a few roundings, relative to each tensor's scale.
    rel = {torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    for k, want in results["standard"].items():
        got = results["persistent"][k]
        assert got.shape == want.shape, (label, k)
        err, scale = (got - want).abs().max().item(), want.abs().max().item()
        assert err <= rel * scale + 1e-6, f"{label} {k}: max|persistent - standard| = {err:.3e} > {rel} * {scale:.3e}"


def test_persistent_gru_and_standard_paths_agree(monkeypatch):
    m = lstm_ext.GRU(I, 200, num_layers=2, device="cuda")
    x, h0 = _randn(40, 5, I), _randn(2, 5, 200, scale=0.5)
    results = {}
    for path in ("standard", "persistent"):
        monkeypatch.setenv("LSTM_EXT_CUDA_PATH", path)
        results[path] = _gru_results(m, x, h0)
    assert_dicts_close(results["persistent"][0], results["standard"][0], F32_OUT, "outputs")
    assert_dicts_close(results["persistent"][1], results["standard"][1], F32_GRAD, "grads")


def test_persistent_gru_auto_path_is_standard(monkeypatch):
    """auto keeps GRUs on the standard path (the persistent GRU kernel has not
    been verified on a GPU) and says why; the LSTM's choice is unchanged."""
    monkeypatch.delenv("LSTM_EXT_CUDA_PATH", raising=False)
    why = "standard (persistent GRU kernel not yet verified on a GPU)"
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        assert lstm_ext.cuda_path(4, 512, dtype, cell="gru") == why
        assert lstm_ext.cuda_path(4, 512, dtype, cell="gru", backward=True) == why
    assert lstm_ext.cuda_path(4, 512).startswith("persistent")
    assert lstm_ext.cuda_path(4, 512, cell="lstm").startswith("persistent")
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "standard")
    assert lstm_ext.cuda_path(4, 512, cell="gru") == "standard (LSTM_EXT_CUDA_PATH=standard)"
    with pytest.raises(RuntimeError, match=r"cell must be 'lstm' or 'gru', got 'rnn'"):
        lstm_ext.cuda_path(4, 512, cell="rnn")


def test_persistent_gru_forced_path_refuses_what_it_cannot_run(persistent):
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent: this GRU cannot run.*float64"):
        lstm_ext.cuda_path(4, 64, torch.float64, cell="gru")
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent: this GRU cannot run.*float64"):
        lstm_ext.GRU(I, H, device="cuda", dtype=torch.float64)(_randn(T, B, I, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"this GRU cannot run.*shared memory"):
        lstm_ext.cuda_path(1, 16384, cell="gru")  # a 3 x 16384 x U slice per block cannot fit


def test_persistent_gru_forced_refusal_comes_before_any_allocation(persistent):
    G3 = 3 * H
    args = [_randn(B, T, I, dtype=torch.float64).transpose(0, 1), _randn(I, G3, dtype=torch.float64).t(),
            _randn(G3, H, dtype=torch.float64), _randn(G3, dtype=torch.float64), _randn(G3, dtype=torch.float64),
            _randn(B, H, dtype=torch.float64)]
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=persistent.*GRU.*float64"):
        torch.ops.lstm_ext.gru_forward(*args, False, True)
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before


def test_persistent_gru_tensorcore_setting_raises_for_a_gru(monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CUDA_PATH", "tensorcore")
    with pytest.raises(RuntimeError, match=r"LSTM_EXT_CUDA_PATH=tensorcore: there is no tensor-core GRU kernel"):
        lstm_ext.cuda_path(4, 64, torch.bfloat16, cell="gru")
    with pytest.raises(RuntimeError, match=r"no tensor-core GRU kernel"):
        lstm_ext.GRU(I, H, device="cuda")(_randn(T, B, I))
