"""Parity in a low-precision dtype (bfloat16, float16), measured against
torch.nn's own error in that dtype (not a test module: import it).

Each comparison builds torch.nn's and lstm_ext's module in the dtype with the
same weights, runs both and a float32 reference (a float32 copy of torch.nn's
module holding the same, upcast, weights; inputs and cotangents upcast too),
and requires

    max|ours - ref| <= FACTOR * max|torch.nn - ref| + FLOOR * max|ref|

for the outputs and for every gradient (input, initial states, parameters).
On the CPU torch.nn runs oneDNN; on CUDA, cuDNN.
"""
import copy

import torch
from torch import nn

from helpers import leaf, module_pair

FACTOR = 2.0
FLOOR = 2.0 ** -10  # times max|ref|: half a bfloat16 rounding (or less) of the largest value


def upcast_copy(module):
    """A float32 copy of ``module`` holding its (low-precision) weights, upcast:
    the float32 reference."""
    return copy.deepcopy(module).float()


def outputs_and_grads(module, x, hx, cots):
    """Outputs and gradients of sum_k <cots[k], outputs[k]> w.r.t. the input, the
    initial states and every parameter, all as float32 tensors for comparison.

    ``x``, ``hx`` and ``cots`` are in the low-precision dtype and are upcast when
    the module is float32 (the reference sees exactly the values the
    low-precision runs see)."""
    dtype = next(module.parameters()).dtype
    packed = isinstance(x, nn.utils.rnn.PackedSequence)
    data = leaf(x.data.to(dtype))
    inp = nn.utils.rnn.PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if packed else data
    states = None if hx is None else tuple(leaf(h.to(dtype)) for h in hx)
    if states is None:
        out = module(inp)
    else:
        out = module(inp, states[0] if len(states) == 1 else states)
    out_y, rest = out[0], out[1]
    outs = {"y": out_y.data if packed else out_y}
    if isinstance(rest, tuple):
        outs["h_n"], outs["c_n"] = rest
    else:
        outs["h_n"] = rest
    for name, o in outs.items():
        assert o.dtype == dtype, (name, o.dtype)
    wrt = {"x": data, **{f"hx{i}": s for i, s in enumerate(states or ())}, **dict(module.named_parameters())}
    grads = torch.autograd.grad(list(outs.values()), list(wrt.values()),
                                [c.to(dtype) for c in cots[:len(outs)]])
    result = {k: v.detach().float() for k, v in outs.items()}
    for name, g in zip(wrt, grads):
        assert g is not None and g.dtype == dtype, (name, None if g is None else g.dtype)
        result["grad " + name] = g.float()
    return result


def assert_as_close_as_torch(ref_cls, ext_cls, x, hx=None, modules=None, make_reference=upcast_copy,
                             dtype=torch.bfloat16, device="cpu", **kwargs):
    """Build torch.nn's and lstm_ext's module in ``dtype`` on ``device`` with
    the same weights (or take ``modules``, such a pair), run both and a float32
    reference (``make_reference`` of torch.nn's module), and compare errors as
    the module docstring says. ``x`` and ``hx`` are in ``dtype`` on ``device``.
    Returns the errors, for inspection."""
    torch_low, ours = modules or module_pair(ref_cls, ext_cls, dtype=dtype, device=device, **kwargs)
    reference = make_reference(torch_low)
    # cotangents: low-precision values shaped like the outputs (from a dry run)
    with torch.no_grad():
        probe = ours(x) if hx is None else ours(x, hx if len(hx) > 1 else hx[0])
    y = probe[0].data if isinstance(probe[0], nn.utils.rnn.PackedSequence) else probe[0]
    finals = probe[1] if isinstance(probe[1], tuple) else (probe[1],)
    cots = [torch.randn(o.shape, device=o.device).to(o.dtype) for o in (y, *finals)]

    ref = outputs_and_grads(reference, x, hx, cots)
    got_torch = outputs_and_grads(torch_low, x, hx, cots)
    got_ours = outputs_and_grads(ours, x, hx, cots)
    errors = {}
    for k, r in ref.items():
        err_torch = (got_torch[k] - r).abs().max().item()
        err_ours = (got_ours[k] - r).abs().max().item()
        bound = FACTOR * err_torch + FLOOR * r.abs().max().item()
        errors[k] = (err_torch, err_ours)
        assert err_ours <= bound, (
            f"{k}: max|ours - fp32 ref| = {err_ours:.3e} > {FACTOR} * {err_torch:.3e} "
            f"(torch.nn {dtype}'s error) + floor = {bound:.3e}"
        )
    return errors
