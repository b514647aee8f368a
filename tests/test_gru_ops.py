"""Op-level tests of what only the GRU has: bfloat16 inputs with float32 saved
gates (r, z, n, hn), which gru_backward takes in float32 only. Everything every
cell kind has, the GRU included, is tested in test_cell_ops.py; the other
kinds' bfloat16 ops in test_bf16.py."""
import pytest
import torch

from cells import GRU, make_inputs
from helpers import assert_message, leaf

OPS = torch.ops.lstm_ext
F32, BF16 = torch.float32, torch.bfloat16


def _bf16_inputs(lengths=None, f32_bias=False):
    inputs = make_inputs(GRU, 4, 2, 3, 5, dtype=F32, lengths=lengths, seed=4, scale=1.0)
    args = [t.to(BF16) for t in inputs.op_args()]
    if f32_bias:
        args[3], args[4] = inputs.b_ih, inputs.b_hh
    return args, inputs.batch_sizes


@pytest.mark.parametrize("f32_bias", [False, True], ids=["bf16-bias", "f32-bias"])
def test_gru_bf16_op_dtypes(f32_bias):
    """bfloat16 x: y and h_n bfloat16, the saved gates float32 (the compute dtype);
    the backward's bias gradients float32, the rest bfloat16; a float32 bias is
    accepted (the modules' bfloat16 biases are not summed, so either works)."""
    args, _ = _bf16_inputs(f32_bias=f32_bias)
    y, h_n, gates = OPS.gru_forward(*args, False, True)
    assert (y.dtype, h_n.dtype, gates.dtype) == (BF16, BF16, F32)
    assert OPS.gru_forward(*args, False, False)[2].dtype == F32
    x, w_ih, w_hh, _, _, h0 = args
    grads = OPS.gru_backward(torch.ones_like(y), torch.ones_like(h_n), x, w_ih, w_hh, h0, y, gates, False, True)
    assert [g.dtype for g in grads] == [BF16] * 3 + [F32, F32, BF16]
    # against float32, within a few bfloat16 roundings
    ref = OPS.gru_forward(*[a.float() for a in args], False, True)
    for a, r in zip((y, h_n, gates), ref):
        torch.testing.assert_close(a.float(), r, atol=2.0 ** -6, rtol=2.0 ** -6)


@pytest.mark.parametrize("lengths,f32_bias", [(None, False), ([3, 2, 2], True)], ids=["dense", "packed-f32-bias"])
def test_opcheck_gru_bf16(lengths, f32_bias):
    args, bs = _bf16_inputs(lengths, f32_bias)
    torch.library.opcheck(OPS.gru_forward.default, (*[leaf(a) for a in args], True, True, bs))
    y, h_n, gates = OPS.gru_forward(*args, True, True, bs)
    x, w_ih, w_hh, _, _, h0 = args
    torch.library.opcheck(OPS.gru_backward.default,
                          (torch.ones_like(y), torch.ones_like(h_n), x, w_ih, w_hh, h0, y, gates, True, True, bs))


def test_gru_backward_refuses_bf16_saved_gates():
    """gates come from the forward in float32; bfloat16 ones are refused by the
    real and the fake kernel alike, naming the dtypes."""
    args, _ = _bf16_inputs()
    y, h_n, gates = OPS.gru_forward(*args, False, True)
    x, w_ih, w_hh, _, _, h0 = args
    for dev in ("cpu", "meta"):
        a = [t.to(dev) for t in (y, x, w_ih, w_hh, h0, y, gates.to(BF16))]
        with pytest.raises(RuntimeError) as info:
            OPS.gru_backward(a[0], None, *a[1:], False, True)
        assert_message(info.value, r"\bgates\b", r"float32|\bFloat\b", r"bfloat16|BFloat16")
