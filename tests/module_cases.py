"""What the module tests share (not a test module): comparing two module_results,
torch.nn's results where cuDNN refuses the call, and a multi-layer pure
reference built from tests/cells.py's one-layer reference.

test_cell_modules.py runs every cell kind through these; test_lstm_modules.py
the LSTM-only cases.
"""
import torch

from cells import layer_reference, module_results
from fuzz_strategies import single_threaded
from helpers import assert_dicts_close, cudnn_refuses, float64_cpu_reference, tols


def check_results(got, exp, dtype, label=""):
    """Compare two module_results: the outputs and every gradient, keys, shapes and values."""
    otol, gtol = tols(dtype)
    assert_dicts_close(got[1], exp[1], otol, f"{label} output")
    assert_dicts_close(got[2], exp[2], gtol, f"{label} grad")


def reference_results(kind, ref, x, hx=None, **kwargs):
    """torch.nn's module_results for the same call, or, where cuDNN refuses it
    (non-contiguous hx, backward in eval mode: helpers.cudnn_refuses), torch.nn's
    on the CPU in float64, brought back to the module's device and dtype.

    torch.nn runs on one thread (fuzz_strategies.single_threaded): its
    threading is not under test, and on busy cores its per-step OpenMP regions
    turn a 300-step sequence from 0.01 s into seconds."""
    with single_threaded():
        if cudnn_refuses(ref, hx):
            def run(m, x, hx, cot_dtype=None):
                return module_results(kind, m, x, hx, cot_dtype=cot_dtype, **kwargs)[1:]
            return (None, *float64_cpu_reference(run, ref, x, hx))
        return module_results(kind, ref, x, hx, **kwargs)


def module_reference(kind, module, x, states):
    """``module`` (a time-major layer of ``kind``) recomputed with plain tensor
    ops: cells.layer_reference per layer and direction, on the module's own
    parameters (so gradients reach them), no dropout.

    x ``[T, B, I]``, ``states`` a tuple of ``[L*D, B, H]`` tensors ((h0, c0) for
    the LSTM). -> (output, final states tuple, saved): ``saved`` lists, per
    layer-direction in hx's order, what the kind's forward op saves (the RNN's
    pre-activations, ...: see layer_reference)."""
    num_directions = 2 if module.bidirectional else 1
    layer_in, finals, saved = x, [], []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(num_directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            biases = [getattr(module, b + suffix) if module.bias else None for b in ("bias_ih", "bias_hh")]
            index = layer * num_directions + direction
            y, final, layer_saved = layer_reference(
                kind, layer_in, getattr(module, "weight_ih" + suffix), getattr(module, "weight_hh" + suffix),
                *biases, tuple(s[index] for s in states), reverse=bool(direction))
            outputs.append(y)
            finals.append(final)
            saved.append(layer_saved)
        layer_in = torch.cat(outputs, dim=-1)
    return layer_in, tuple(torch.stack(f) for f in zip(*finals)), saved
