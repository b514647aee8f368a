"""float32 on CUDA computes what torch.nn.LSTM computes: TF32 products exactly
when ``torch.backends.cudnn.allow_tf32`` allows them (cuDNN's rule, on by
default), strict float32 when it is off, whatever
``torch.backends.cuda.matmul.allow_tf32`` says (csrc/cuda_binding/gemm.h).

The oracle is torch.nn in float64; TF32 shows as an error about 2^-11 relative
per product, three orders of magnitude above strict float32's. The shapes take
the standard path (B > 16) and the persistent one (B <= 16, whose input
projection is a cuBLAS GEMM too). Every test needs a GPU and a CUDA build."""
import contextlib

import pytest
import torch
from torch import nn

import lstm_ext
from helpers import copy_params, needs_cuda

pytestmark = needs_cuda


@contextlib.contextmanager
def tf32(cudnn: bool, matmul: bool):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _errors(batch, hidden, cudnn_tf32, matmul_tf32=False, steps=20):
    """-> (lstm_ext's, torch.nn's) largest relative error of y and of grad x
    against torch.nn in float64, both run under the given flags."""
    torch.manual_seed(0)
    ref = nn.LSTM(hidden, hidden).cuda()
    ext = copy_params(ref, lstm_ext.LSTM(hidden, hidden).cuda())
    exact = nn.LSTM(hidden, hidden).cuda().double()
    exact.load_state_dict(ref.state_dict())
    x = torch.randn(steps, batch, hidden, device="cuda")
    cot = torch.randn(steps, batch, hidden, device="cuda")

    def run(module, dtype):
        xi = x.to(dtype).requires_grad_()
        y = module(xi)[0]
        (gx,) = torch.autograd.grad(y, xi, cot.to(dtype))
        return y.double(), gx.double()

    y64, gx64 = run(exact, torch.float64)

    def rel(got, exp):
        return ((got - exp).abs().max() / exp.abs().max()).item()

    with tf32(cudnn_tf32, matmul_tf32):
        errs = []
        for module in (ext, ref):
            y, gx = run(module, torch.float32)
            errs.append(max(rel(y, y64), rel(gx, gx64)))
    return tuple(errs)


SHAPES = [(64, 512), (8, 256)]
IDS = ["standard-B64-H512", "persistent-B8-H256"]


@pytest.mark.parametrize("batch,hidden", SHAPES, ids=IDS)
def test_strict_fp32_when_cudnn_tf32_is_off(batch, hidden):
    ext_err, torch_err = _errors(batch, hidden, cudnn_tf32=False)
    assert ext_err < 1e-5, (ext_err, torch_err)


@pytest.mark.parametrize("batch,hidden", SHAPES, ids=IDS)
def test_matmul_tf32_flag_does_not_switch_tf32_on(batch, hidden):
    # nn.LSTM ignores torch.backends.cuda.matmul.allow_tf32; so does lstm_ext.
    ext_err, _ = _errors(batch, hidden, cudnn_tf32=False, matmul_tf32=True)
    assert ext_err < 1e-5, ext_err


@pytest.mark.parametrize("batch,hidden", SHAPES, ids=IDS)
def test_tf32_when_cudnn_allows_it_as_torch_nn(batch, hidden):
    strict_err, _ = _errors(batch, hidden, cudnn_tf32=False)
    ext_err, torch_err = _errors(batch, hidden, cudnn_tf32=True)
    # TF32 is in use (an error far above strict float32's) ...
    assert ext_err > 20 * strict_err, (ext_err, strict_err)
    # ... and it is no worse than cuDNN's own TF32 error.
    assert ext_err < max(2 * torch_err, 2e-3), (ext_err, torch_err)
