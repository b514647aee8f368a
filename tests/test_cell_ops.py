"""Op-level tests of every cell kind (tests/cells.py: LSTM, RNN tanh and relu,
GRU) on every device (conftest.py's ``device`` fixture: "cpu", and "cuda"
where there is a GPU).

Each test is written once and runs for every kind through its op adapter
(tests/cell_op_adapters.py): the forward, backward and composite ops
(torch.ops.lstm_ext.{lstm,rnn,gru}_forward, ..._backward,
..._forward_composite) and the differentiable layer wrappers
(lstm_ext.ops.lstm_layer, rnn_ops.rnn_layer, gru_ops.gru_layer), against the
one pure-PyTorch reference of tests/cells.py and against torch.nn: values and
saved activations, gradients, gradcheck and gradgradcheck, opcheck and the fake
kernels, edge cases, and the argument checks' messages. What only one kind has
is tested in test_lstm_ops.py (the projection, the cells output and its
gradient) and test_gru_ops.py (bfloat16 saved gates).
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

from cell_op_adapters import LENGTHS, cell_ops, leaves, random_like
from cells import KIND_PARAMS, KINDS, make_inputs
from helpers import (assert_close, assert_dicts_close, assert_message, backprop, dtype_re, layout, leaf,
                     needs_cuda, num_re, shape_re, tols)

F32, F64 = torch.float32, torch.float64

KIND = pytest.mark.parametrize("kind", KIND_PARAMS)
#: The kinds whose forward op has a save_for_backward flag (the RNN's saves nothing).
SAVING_KIND = pytest.mark.parametrize("kind", [p for p in KIND_PARAMS if cell_ops(p.values[0]).has_save_flag])
LAYOUTS = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["dense", "packed"])
REVERSE = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
BIAS = pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])


@pytest.fixture
def ops(kind):
    """The op adapter of the test's cell kind."""
    return cell_ops(kind)


def per_kind(cases):
    """parametrize values (kind, *case) for every kind and each case of
    ``cases(ops)``, which yields (id, case tuple)."""
    return [pytest.param(kind, *case, id=f"{kind.name}-{case_id}")
            for kind in KINDS.values() for case_id, case in cases(cell_ops(kind))]


def as_function(args, call):
    """(f, leaves) for gradcheck: the non-None tensors of ``args`` as fresh
    leaves, and f(*leaves) = call(args with those tensors replaced)."""
    present = [i for i, t in enumerate(args) if t is not None]

    def f(*tensors):
        full = list(args)
        for i, t in zip(present, tensors, strict=True):
            full[i] = t
        return call(full)

    return f, [leaf(args[i]) for i in present]


def direction_parameters(module, d):
    """(weight_ih, weight_hh, bias_ih, bias_hh) of layer 0, direction d, of a torch.nn layer."""
    sfx = "_l0_reverse" if d else "_l0"
    return [getattr(module, n + sfx) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _raises(call, *patterns):
    with pytest.raises(RuntimeError) as info:
        call()
    assert_message(info.value, *patterns)


# =============================================================================== forward op


@KIND
@LAYOUTS
@REVERSE
@BIAS
def test_forward_matches_reference_f64(device, ops, lengths, reverse, has_bias):
    """Every output of the forward op against the reference, float64: y, the
    final states and what it saves for the backward (the LSTM's gates i, f, g,
    o and cells c_t; the GRU's r, z, n and hn = h W_hn^T + b_hn per row), with
    and without saving where the op has the flag (then the saved ones are
    empty [0])."""
    inputs = make_inputs(ops.kind, 6, 3, 5, 7, bias=has_bias, lengths=lengths, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    ref = ops.reference(args, reverse, bs)
    otol, _ = tols(F64)
    for save in ((True, False) if ops.has_save_flag else (True,)):
        outs = ops.forward(args, reverse, save, bs)
        for name, t in outs.items():
            assert t.dtype == F64 and t.device.type == device, (save, name)
        for name in ("y", *ops.final_names):
            assert outs[name].shape == ref[name].shape and outs[name].is_contiguous(), (save, name)
            assert_close(outs[name], ref[name], f"save={save} {name}", **otol)
        for name in ops.saved_names:
            if save:
                assert outs[name].shape == ref[name].shape, name
                assert_close(outs[name], ref[name], name, **otol)
            else:
                assert outs[name].shape == (0,), name


@KIND
@REVERSE
def test_forward_matches_reference_f32(device, ops, reverse):
    inputs = make_inputs(ops.kind, 9, 4, 3, 33, dtype=F32, device=device)
    args = inputs.op_args()
    outs = ops.forward(args, reverse)
    ref = ops.reference([a.double() for a in args], reverse)
    for name, t in outs.items():
        assert t.dtype == F32, name
        assert_close(t.double(), ref[name], name, **tols(F32)[0])


@KIND
@LAYOUTS
@REVERSE
def test_forward_final_state_is_each_sequences_last_step(device, ops, lengths, reverse):
    """Each final state is the state after the last processed step, bit for bit:
    each sequence's own last step forward, its first in reverse (h_n a row of
    y, the LSTM's c_n a row of cells)."""
    inputs = make_inputs(ops.kind, 5, 4, 3, 4, lengths=lengths, device=device)
    outs = ops.forward(inputs.op_args(), reverse, True, inputs.batch_sizes)
    if lengths is None:
        last = 0 if reverse else -1
        rows = {name: outs[name][last] for name in ops.step_outputs.values()}
    else:
        offsets = [0, *torch.cumsum(inputs.batch_sizes, 0).tolist()]  # packed row of step t, batch 0
        index = [offsets[0 if reverse else n - 1] + b for b, n in enumerate(lengths)]
        rows = {name: outs[name][index] for name in ops.step_outputs.values()}
    for final, steps in ops.step_outputs.items():
        assert torch.equal(outs[final], rows[steps]), final


@KIND
def test_reverse_equals_flipped_forward(device, ops):
    inputs = make_inputs(ops.kind, 8, 3, 5, 6, device=device)
    args = inputs.op_args()
    rev = ops.forward(args, True)
    fwd = ops.forward((args[0].flip(0), *args[1:]), False)
    for name, t in rev.items():
        expected = fwd[name] if name in ops.final_names else fwd[name].flip(0)
        assert_close(t, expected, name, **tols(F64)[0])


@SAVING_KIND
def test_forward_save_flag_does_not_change_outputs(device, ops):
    inputs = make_inputs(ops.kind, 7, 3, 4, 5, dtype=F32, device=device)
    saved = ops.forward(inputs.op_args(), False, True)
    unsaved = ops.forward(inputs.op_args(), False, False)
    for name in ("y", *ops.final_names):
        torch.testing.assert_close(unsaved[name], saved[name], atol=1e-6, rtol=1e-6, msg=name)


@KIND
@LAYOUTS
def test_composite_matches_forward_op(device, ops, lengths):
    """The composite op (double backward's path) computes what the forward op
    computes: y, the final states (and the LSTM's cells)."""
    inputs = make_inputs(ops.kind, 5, 4, 3, 4, lengths=lengths, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    for reverse in (False, True):
        forward = ops.forward(args, reverse, True, bs)
        for name, t in ops.composite(args, reverse, bs).items():
            assert_close(t, forward[name], f"reverse={reverse} composite {name}", **tols(F64)[0])


# =============================================================================== layer wrapper


def assert_layer_matches_reference(ops, inputs, reverse, device):
    """The layer's outputs (dtype, device, contiguity, values) and the
    gradients of every tensor argument, against the reference differentiated
    by autograd, float64."""
    args, bs = leaves(inputs.op_args()), inputs.batch_sizes
    outs = ops.layer(args, reverse, bs)
    ref = ops.reference(args, reverse, bs)
    ref = {name: ref[name] for name in outs}
    for name, t in outs.items():
        assert t.dtype == F64 and t.device.type == device and t.is_contiguous(), name
    assert_dicts_close(outs, ref, tols(F64)[0], "output")
    wrt = {name: a for name, a in zip(ops.arg_names, args) if a is not None}
    assert_dicts_close(backprop(outs, wrt), backprop(ref, wrt), tols(F64)[1], "grad")


@KIND
@LAYOUTS
@REVERSE
@BIAS
def test_layer_vs_reference_f64(device, ops, lengths, reverse, has_bias):
    inputs = make_inputs(ops.kind, 5, 3, 4, 7, bias=has_bias, lengths=lengths, device=device, seed=1)
    assert_layer_matches_reference(ops, inputs, reverse, device)


@KIND
@pytest.mark.parametrize("half", ["fwd", "rev"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_layer_is_each_direction_of_torch_bidirectional(device, ops, half, packed):
    """The layer (reverse=False / True) is the forward / reverse half of a
    bidirectional torch.nn layer of its kind, float32: the outputs and every
    gradient (x, the initial states, that half's weights and biases)."""
    kind = ops.kind
    T, B, I, H = 6, 4, 5, 11
    lengths = [6, 4, 4, 1]
    ref = kind.torch_layer(I, H, bidirectional=True, device=device, **kind.kwargs)
    x = leaf(torch.randn(T, B, I, device=device))
    states = [leaf(torch.randn(2, B, H, device=device)) for _ in ops.state_names]
    inp = pack_padded_sequence(x, lengths) if packed else x
    out, hx_n = ref(inp, kind.hx(states))
    d = 1 if half == "rev" else 0
    params = direction_parameters(ref, d)
    ours = [leaf(p) for p in params]
    xe = leaf(x)
    states_e = [leaf(s[d]) for s in states]
    x_op = pack_padded_sequence(xe, lengths).data if packed else xe
    outs = ops.layer(ops.args_of(x_op, *ours, states_e), reverse=bool(d),
                     batch_sizes=inp.batch_sizes if packed else None)
    expected = {"y": (out.data if packed else out)[..., d * H:(d + 1) * H],
                **{name: s[d] for name, s in zip(ops.final_names, kind.states_of(hx_n))}}
    otol, gtol = tols(F32)
    assert_dicts_close(outs, expected, otol, "output")
    names = ("x", *ops.state_names, "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    got = backprop(outs, dict(zip(names, (xe, *states_e, *ours))))
    exp = backprop(expected, dict(zip(names, (x, *states, *params))))
    for name in ops.state_names:
        exp[name] = exp[name][d]
    assert_dicts_close(got, exp, gtol, "grad")


@KIND
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 6), B=st.integers(0, 3), I=st.integers(1, 6), H=st.integers(1, 6),
       reverse=st.booleans(), has_bias=st.booleans(), scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_layer_property_vs_reference(device, ops, T, B, I, H, reverse, has_bias, scale):
    """Random small shapes (empty batches included) and weight scales: outputs
    and gradients against the reference, float64."""
    inputs = make_inputs(ops.kind, T, B, I, H, bias=has_bias, scale=scale, seed=T * 1000 + B * 100 + I * 10 + H,
                         device=device)
    assert_layer_matches_reference(ops, inputs, reverse, device)


@KIND
@REVERSE
def test_layer_only_one_output_used(device, ops, reverse):
    """Backward through one output alone: the others' gradients arrive as None
    (set_materialize_grads(False)), which the backward op reads as zero."""
    inputs = make_inputs(ops.kind, 4, 2, 3, 5, device=device)
    for used in ("y", *ops.final_names):
        args = leaves(inputs.op_args())
        out = ops.layer(args, reverse)[used]
        cot = random_like({used: out})
        got = torch.autograd.grad(out, args, cot[used])
        exp = ops.reference_grads(inputs.op_args(), cot, reverse)
        for name, a in zip(ops.grad_names, got):
            assert_close(a, exp[name], f"{used} alone: {name}", **tols(F64)[1])


#: The non-contiguous layout of each argument (helpers.layout).
NONCONTIGUOUS = {"x": "transposed", "w_ih": "transposed", "w_hh": "step", "bias": "step", "b_ih": "step",
                 "b_hh": "step", "h0": "transposed", "c0": "step"}


@KIND
@REVERSE
def test_layer_noncontiguous_inputs(device, ops, reverse):
    """Non-contiguous x, weights, biases, states and output gradients give the
    same outputs, bit for bit, and the same gradients as contiguous ones."""
    inputs = make_inputs(ops.kind, 6, 3, 5, 4, device=device)
    args_c = leaves(inputs.op_args())
    args_s = [layout(a, NONCONTIGUOUS[name]) for name, a in zip(ops.arg_names, args_c)]
    assert not any(a.is_contiguous() for a in args_s)
    outs_c = ops.layer(args_c, reverse)
    outs_s = ops.layer(args_s, reverse)
    for name in outs_c:
        assert torch.equal(outs_s[name], outs_c[name]), name
    cots = random_like(outs_c)
    grads_c = torch.autograd.grad(list(outs_c.values()), args_c, list(cots.values()))
    grads_s = torch.autograd.grad(list(outs_s.values()), args_s, [layout(c, "transposed") for c in cots.values()])
    for name, a, e in zip(ops.grad_names, grads_s, grads_c):
        assert_close(a, e, f"noncontiguous {name}", **tols(F64)[1])


@KIND
@REVERSE
def test_layer_zero_batch(device, ops, reverse):
    inputs = make_inputs(ops.kind, 3, 0, 4, 5, dtype=F32, device=device)
    args = leaves(inputs.op_args())
    outs = ops.layer(args, reverse)
    assert outs["y"].shape == (3, 0, 5)
    assert all(outs[name].shape == (0, 5) for name in ops.final_names)
    grads = torch.autograd.grad(sum(t.sum() for t in outs.values()), args)
    for name, g, a in zip(ops.grad_names, grads, args):
        assert g.shape == a.shape, name
        assert torch.count_nonzero(g) == 0, name


@KIND
def test_layer_single_step(device, ops):
    inputs = make_inputs(ops.kind, 1, 2, 3, 1, device=device)
    outs = ops.layer(inputs.op_args())
    ref = ops.reference(inputs.op_args())
    assert_dicts_close(outs, {name: ref[name] for name in outs}, tols(F64)[0], "output")


@pytest.mark.parametrize("H,B,dtype", [
    (1, 2, F64), (7, 3, F32), (8, 1, F32), (9, 5, F64), (15, 4, F32), (15, 17, F32), (16, 3, F32), (16, 3, F64),
    (17, 2, F32), (17, 2, F64), (32, 9, F64), (33, 5, F32), (33, 6, F32), (64, 1, F32), (64, 1, F64),
    (65, 4, F32), (128, 64, F32),
], ids=lambda v: str(v).replace("torch.", ""))
@KIND
def test_layer_vector_width_and_batch_tiling_tails(device, ops, H, B, dtype):
    """H around the SIMD widths (8/16 float lanes, 4/8 double lanes) of the
    fused kernels and B around their batch tiling, forward and backward,
    against the float64 reference at the dtype's tolerances."""
    inputs = make_inputs(ops.kind, 4, B, 5, H, dtype=dtype, device=device, seed=H + B)
    args = leaves(inputs.op_args())
    ref_args = leaves([a.double() for a in inputs.op_args()])
    outs = ops.layer(args, reverse=bool(H % 2))
    ref = ops.reference(ref_args, reverse=bool(H % 2))
    ref = {name: ref[name] for name in outs}
    otol, gtol = tols(dtype)
    for name, t in outs.items():
        assert t.dtype == dtype, name
        assert_close(t.double(), ref[name], name, **otol)
    got = backprop(outs, dict(zip(ops.arg_names, args)), cot_dtype=F64)
    exp = backprop(ref, dict(zip(ops.arg_names, ref_args)), cot_dtype=F64)
    assert_dicts_close({name: g.double() for name, g in got.items()}, exp, gtol, "grad")


# =============================================================================== edge cases


@KIND
def test_zero_steps_return_the_initial_states(device, ops):
    """T = 0: y is empty and the final states are the initial ones; the
    backward passes their gradients straight through and gives the weights
    and biases zero."""
    inputs = make_inputs(ops.kind, 0, 2, 3, 4, device=device)
    args = inputs.op_args()
    outs = ops.forward(args)
    assert outs["y"].shape == (0, 2, 4)
    for final, state in zip(ops.final_names, inputs.states, strict=True):
        assert torch.equal(outs[final], state), final
    grads = ops.backward({name: torch.ones_like(outs[name]) for name in ops.final_names}, args, outs)
    assert grads["grad_x"].shape == inputs.x.shape
    for name, state in zip(ops.state_names, inputs.states):
        assert torch.equal(grads[f"grad_{name}"], torch.ones_like(state)), name
    for name in ("w_ih", "w_hh", *ops.bias_names):
        assert torch.count_nonzero(grads[f"grad_{name}"]) == 0, name


@KIND
def test_double_backward_with_no_steps(device, ops):
    inputs = make_inputs(ops.kind, 0, 2, 3, 4, device=device)
    args = leaves(inputs.op_args())
    outs = ops.layer(args)
    h0 = args[ops.arg_names.index("h0")]
    loss = outs["h_n"].pow(2).sum() + sum(outs[name].sum() for name in ops.final_names[1:])
    (g,) = torch.autograd.grad(loss, h0, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), h0)
    torch.testing.assert_close(gg, torch.full_like(h0, 2.0))


@KIND
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_nonfinite_propagates_like_torch(device, ops, value):
    """NaN and +-inf go where torch's own ops take them (torch.relu keeps NaN).
    The reference is torch.nn on the CPU, also for the CUDA kernels: it
    computes with torch's ops, while torch.nn on CUDA runs cuDNN, which does
    not document how it treats NaN (its RNN relu has no NaN-propagation
    setting)."""
    kind = ops.kind
    T, B, I, H = 4, 3, 2, 5
    ref = kind.torch_layer(I, H, **kind.kwargs)
    x = torch.randn(T, B, I)
    x[1, 1, 0] = value
    states = [torch.randn(1, B, H) for _ in ops.state_names]
    out, hx_n = ref(x, kind.hx(states))
    on_device = lambda t: t.detach().to(device)  # noqa: E731
    outs = ops.layer(ops.args_of(on_device(x), *map(on_device, direction_parameters(ref, 0)),
                                 [on_device(s[0]) for s in states]))
    expected = {"y": out, **{name: s[0] for name, s in zip(ops.final_names, kind.states_of(hx_n))}}
    for name, t in outs.items():
        assert t.device.type == device, name
        torch.testing.assert_close(t.cpu(), expected[name].detach(), equal_nan=True, **tols(F32)[0],
                                   msg=lambda m, name=name: f"{name}: {m}")
    if value != value:  # the NaN reaches every unit of row 1 from step 1 on
        assert torch.isnan(outs["y"][1:, 1]).all()
        assert all(torch.isnan(outs[name][1]).all() for name in ops.final_names)


# =============================================================================== backward op


@KIND
@pytest.mark.parametrize("lengths,reverse,need_grad_x,has_bias", [
    # has_bias alternates so that each layout, direction and need_grad_x meets both.
    pytest.param(lengths, reverse, need_grad_x, reverse == need_grad_x,
                 id=f"{'packed' if lengths else 'dense'}-{'rev' if reverse else 'fwd'}-"
                    f"{'gx' if need_grad_x else 'nogx'}-{'bias' if reverse == need_grad_x else 'nobias'}")
    for lengths in (None, LENGTHS) for reverse in (False, True) for need_grad_x in (True, False)
])
def test_backward_op_vs_reference_f64(device, ops, lengths, reverse, need_grad_x, has_bias):
    """Every gradient the backward op returns, for gradients of every output
    (the LSTM's cells included), against the reference; with
    need_grad_x=False grad_x is an empty [0] tensor, and so is the LSTM's
    grad_w_hr without a projection."""
    inputs = make_inputs(ops.kind, 4, 3, 5, 9, bias=has_bias, lengths=lengths, seed=3, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    outs = ops.forward(args, reverse, True, bs)
    cots = random_like({name: outs[name] for name in ops.cotangent_names})
    got = ops.backward(cots, args, outs, reverse, need_grad_x, bs)
    exp = ops.reference_grads(args, cots, reverse, bs)
    _, gtol = tols(F64)
    for name, e in exp.items():
        a = got[name]
        if name == "grad_x" and not need_grad_x:
            assert a.shape == (0,), f"grad_x must be an empty [0] tensor when need_grad_x=False, got {a.shape}"
            continue
        assert a.shape == e.shape and a.dtype == F64 and a.device.type == device, name
        assert a.is_contiguous(), name
        assert_close(a, e, name, **gtol)
    for name in ops.extra_grad_names:
        assert got[name].shape == (0,), f"{name} must be an empty [0] tensor without its argument"


@KIND
def test_backward_need_grad_x_does_not_change_other_grads(device, ops):
    inputs = make_inputs(ops.kind, 5, 2, 3, 4, dtype=F32, device=device)
    args = inputs.op_args()
    outs = ops.forward(args)
    cots = random_like({name: outs[name] for name in ("y", *ops.final_names)})
    with_x = ops.backward(cots, args, outs, need_grad_x=True)
    without_x = ops.backward(cots, args, outs, need_grad_x=False)
    assert with_x["grad_x"].shape == inputs.x.shape and without_x["grad_x"].shape == (0,)
    for name in ops.grad_names[1:]:
        torch.testing.assert_close(without_x[name], with_x[name], atol=1e-6, rtol=1e-6, msg=name)


@KIND
@LAYOUTS
def test_backward_op_absent_output_grads_count_as_zero(device, ops, lengths):
    """Every output gradient is optional and None means zero: with one given
    (the rest None) the gradients equal those for zeros in their place, bit
    for bit, and the reference's; with none given they are all zero."""
    inputs = make_inputs(ops.kind, 4, 3, 5, 6, lengths=lengths, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    outs = ops.forward(args, True, True, bs)
    cots = random_like({name: outs[name] for name in ops.cotangent_names})
    for kept in (*cots, None):
        given_ = {name: c if name == kept else None for name, c in cots.items()}
        zeroed = {name: c if name == kept else torch.zeros_like(c) for name, c in cots.items()}
        got = ops.backward(given_, args, outs, True, True, bs)
        exp = ops.backward(zeroed, args, outs, True, True, bs)
        for name, a in got.items():
            assert torch.equal(a, exp[name]), f"{kept} given: {name} (None vs zeros)"
        if kept is None:
            for name, a in got.items():
                assert torch.count_nonzero(a) == 0, name
            continue
        ref = ops.reference_grads(args, {kept: cots[kept]}, True, bs)
        for name, r in ref.items():
            assert_close(got[name], r, f"{kept} given: {name} (vs reference)", **tols(F64)[1])


@KIND
def test_backward_op_refuses_to_be_differentiated(device, ops):
    """The fused backward op is opaque to autograd: differentiating its outputs
    directly fails loudly rather than returning None."""
    inputs = make_inputs(ops.kind, 3, 2, 3, 4, device=device)
    args = leaves(inputs.op_args())
    with torch.no_grad():
        outs = ops.forward(args)
    grads = ops.backward({"y": torch.ones_like(outs["y"])}, args, outs)
    with pytest.raises(RuntimeError, match="not differentiable"):
        grads["grad_w_ih"].sum().backward()


# =============================================================================== gradcheck, gradgradcheck


@KIND
@LAYOUTS
@REVERSE
@BIAS
def test_gradcheck_layer(device, ops, lengths, reverse, has_bias):
    inputs = make_inputs(ops.kind, 4, 2, 3, 3, bias=has_bias, lengths=lengths, seed=11, scale=2.0, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    ops.assert_clear_of_kinks(args, reverse, bs)
    f, tensors = as_function(args, lambda a: tuple(ops.layer(a, reverse, bs).values()))
    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


@KIND
@LAYOUTS
@REVERSE
def test_gradcheck_op_through_its_registered_autograd(device, ops, lengths, reverse):
    """The layer records an eager autograd.Function; direct callers of the op
    (and torch.compile) get the formula registered on the op. Both must be
    right: the gradients of every differentiable output through the op."""
    inputs = make_inputs(ops.kind, 4, 2, 3, 3, lengths=[4, 3] if lengths else None, seed=11, scale=2.0, device=device)
    args, bs = leaves(inputs.op_args()), inputs.batch_sizes
    ops.assert_clear_of_kinks(args, reverse, bs)
    assert "GeneratedBackwardFor" in type(ops.forward(args, reverse, True, bs)["y"].grad_fn).__name__
    assert "GeneratedBackwardFor" not in type(ops.layer(args, reverse, bs)["y"].grad_fn).__name__

    def f(*a):
        outs = ops.forward(a, reverse, True, bs)
        return tuple(outs[name] for name in ops.differentiable_output_names)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@KIND
@pytest.mark.parametrize("lengths,reverse,has_bias", [
    (None, False, True), (None, True, False), ([4, 2, 1], True, True), ([4, 2, 1], False, False),
], ids=["dense-fwd-bias", "dense-rev-nobias", "packed-rev-bias", "packed-fwd-nobias"])
def test_gradgradcheck_layer(device, ops, lengths, reverse, has_bias):
    """create_graph=True gives gradients autograd can differentiate again (the
    composite op)."""
    inputs = make_inputs(ops.kind, 4, 3, 3, 2, bias=has_bias, lengths=lengths, seed=5, scale=2.0, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    ops.assert_clear_of_kinks(args, reverse, bs)
    f, tensors = as_function(args, lambda a: tuple(ops.layer(a, reverse, bs).values()))
    assert torch.autograd.gradgradcheck(f, tensors)


@KIND
@LAYOUTS
def test_double_backward_matches_reference(device, ops, lengths):
    """Second-order gradients (a gradient penalty through create_graph=True)
    equal the reference's: the composite path computes the right values, not
    only self-consistent ones (which gradgradcheck checks)."""
    inputs = make_inputs(ops.kind, 4, 3, 3, 4, lengths=lengths, device=device, seed=3)
    bs = inputs.batch_sizes
    results = []
    for run in (ops.layer, ops.reference):
        args = leaves(inputs.op_args())
        named = dict(zip(ops.arg_names, args))
        outs = run(args, True, bs)
        loss = outs["y"].pow(2).sum() + outs[ops.final_names[-1]].sum()
        first = torch.autograd.grad(loss, [named["x"], named["w_hh"], named["h0"]], create_graph=True)
        penalty = sum(g.pow(2).sum() for g in first)
        results.append(dict(zip(named, torch.autograd.grad(penalty, args))))
    assert_dicts_close(results[0], results[1], tols(F64)[1], "d penalty /")


@KIND
def test_double_backward_matches_torch_nn(device, ops):
    """Second-order gradients (a gradient penalty) equal torch.nn's on the CPU
    (cuDNN cannot do double backward, so the reference always runs on the
    CPU)."""
    kind = ops.kind
    torch.manual_seed(4)
    ref = kind.torch_layer(3, 4, dtype=F64, **kind.kwargs)
    x = torch.randn(5, 2, 3, dtype=F64)
    params = direction_parameters(ref, 0)
    ours = [leaf(p.to(device)) for p in params]
    zeros = [torch.zeros(2, 4, dtype=F64, device=device) for _ in ops.state_names]

    def penalty_grads(run, x, weights):
        (g,) = torch.autograd.grad(run(x).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), [x, *weights])

    exp = penalty_grads(lambda v: ref(v)[0], leaf(x), params[:2])
    got = penalty_grads(lambda v: ops.layer(ops.args_of(v, *ours, zeros))["y"], leaf(x.to(device)), ours[:2])
    for name, a, e in zip(("x", "w_ih", "w_hh"), got, exp, strict=True):
        torch.testing.assert_close(a.cpu(), e, msg=lambda m, name=name: f"{name}: {m}")


# =============================================================================== opcheck, fake kernels


@KIND
@pytest.mark.parametrize("lengths,save,reverse,has_bias,requires_grad", [
    (None, True, False, True, True),
    (None, True, True, False, True),
    (None, False, False, False, False),
    (None, False, True, True, False),
    (None, True, False, True, False),
    (LENGTHS, True, True, True, True),
    (LENGTHS, False, False, False, False),
], ids=["save-fwd-bias-rg", "save-rev-nobias-rg", "nosave-fwd-nobias", "nosave-rev-bias", "save-fwd-bias",
        "packed-save-rev-bias-rg", "packed-nosave-fwd-nobias"])
def test_opcheck_forward(device, ops, lengths, save, reverse, has_bias, requires_grad):
    inputs = make_inputs(ops.kind, 4, 2, 3, 5, dtype=F32, bias=has_bias, lengths=lengths, device=device)
    args = leaves(inputs.op_args()) if requires_grad else inputs.op_args()
    torch.library.opcheck(ops.forward_op, ops.forward_args(args, reverse, save, inputs.batch_sizes))


@KIND
@pytest.mark.parametrize("lengths,need_grad_x,grads,reverse", [
    (None, True, "all", False),
    (None, False, "none", True),
    (LENGTHS, True, "y", True),
    (LENGTHS, False, "h_n", False),
], ids=["dense-gx-all", "dense-nogx-none", "packed-gx-y-rev", "packed-nogx-hn"])
def test_opcheck_backward(device, ops, lengths, need_grad_x, grads, reverse):
    inputs = make_inputs(ops.kind, 4, 2, 3, 5, dtype=F32, lengths=lengths, device=device)
    args, bs = inputs.op_args(), inputs.batch_sizes
    outs = ops.forward(args, reverse, True, bs)
    cots = random_like({name: outs[name] for name in ops.cotangent_names if grads in (name, "all")})
    torch.library.opcheck(ops.backward_op, ops.backward_args(cots, args, outs, reverse, need_grad_x, bs))


@KIND
@LAYOUTS
def test_opcheck_composite(device, ops, lengths):
    """Packed: without test_aot_dispatch_dynamic, which makes batch_sizes a
    fake tensor whose values the composite (a C++ loop over the steps, used by
    double backward only) has to read: the double backward is eager only."""
    inputs = make_inputs(ops.kind, 3, 2, 3, 4, lengths=lengths, device=device)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor") if lengths else \
        torch.library._OPCHECK_DEFAULT_UTILS
    torch.library.opcheck(ops.composite_op, ops.composite_args(leaves(inputs.op_args()), True, inputs.batch_sizes),
                          test_utils=utils)


def _noncontiguous_op_inputs(ops, device):
    """Float32 forward arguments with x, w_ih and the states transposed
    (dense, non-contiguous, as batch_first inputs come)."""
    args = list(make_inputs(ops.kind, 4, 2, 3, 5, dtype=F32, device=device).op_args())
    for name in ("x", "w_ih", *ops.state_names):
        i = ops.arg_names.index(name)
        args[i] = layout(args[i], "transposed")
    return args


@KIND
def test_opcheck_noncontiguous_inputs(device, ops):
    """Fake kernels must report the strides the real kernels produce also for
    non-contiguous (e.g. batch_first-transposed) inputs; inductor checks this."""
    args = _noncontiguous_op_inputs(ops, device)
    torch.library.opcheck(ops.forward_op, ops.forward_args(args))
    outs = ops.forward(args)
    cots = random_like({name: outs[name] for name in ("y", *ops.final_names)})
    cots["y"] = layout(cots["y"], "transposed")
    torch.library.opcheck(ops.backward_op, ops.backward_args(cots, args, outs))


@KIND
@REVERSE
def test_fake_kernel_strides_match_real_kernel(device, ops, reverse):
    """Output shapes, strides, dtypes and devices: FakeTensorMode vs the real
    kernels, for non-contiguous inputs and output gradients."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    args = _noncontiguous_op_inputs(ops, device)
    fargs = ops.forward_args(args, reverse)
    real_f = ops.forward_op(*fargs)
    outs = dict(zip(ops.output_names, real_f))
    cots = random_like({name: outs[name] for name in ("y", *ops.final_names)})
    cots["y"] = layout(cots["y"], "transposed")
    bargs = ops.backward_args(cots, args, outs, reverse)
    real_b = ops.backward_op(*bargs)
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        conv = lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
        fake_f = ops.forward_op(*map(conv, fargs))
        fake_b = ops.backward_op(*map(conv, bargs))
    for names, reals, fakes in ((ops.output_names, real_f, fake_f), (ops.grad_names, real_b, fake_b)):
        for name, r, f in zip(names, reals, fakes, strict=True):
            assert (tuple(f.shape), f.stride()) == (tuple(r.shape), r.stride()), \
                f"{name}: fake {tuple(f.shape)}/{f.stride()} vs real {tuple(r.shape)}/{r.stride()}"
            assert (f.device, f.dtype) == (r.device, r.dtype), name


@KIND
@LAYOUTS
def test_all_meta_inputs_give_shapes(ops, lengths):
    # No device fixture: every tensor is on "meta" (batch_sizes on the CPU), so
    # the fake kernel runs whatever the machine; no real kernel is involved.
    inputs = make_inputs(ops.kind, 3, 2, 4, 5, dtype=F32, lengths=lengths)
    outs = ops.forward([t.to("meta") for t in inputs.op_args()], True, True, inputs.batch_sizes)
    rows = inputs.x.shape[:-1]
    expected = {"y": (*rows, 5), **{name: (len(inputs.states[0]), 5) for name in ops.final_names},
                **{name: (*rows, ops.saved_width(name) * 5) for name in ops.saved_names}}
    assert {name: tuple(t.shape) for name, t in outs.items()} == expected
    assert all(t.device.type == "meta" for t in outs.values())


# =============================================================================== argument checks


def _other_args(ops):
    for name in ops.arg_names[1:]:
        yield name, (name,)


@pytest.mark.parametrize("kind,which", per_kind(_other_args))
def test_mixed_devices_raise(device, ops, which):
    """A tensor on another device than x is refused, naming it and both
    devices: one on "meta" reaches the fake kernel; on CUDA, a CPU tensor among
    CUDA ones reaches the CUDA kernel (whose checks must catch it before any
    launch)."""
    for other in ["meta"] + (["cpu"] if device != "cpu" else []):
        args = list(make_inputs(ops.kind, 3, 2, 3, 4, dtype=F32, device=device).op_args())
        i = ops.arg_names.index(which)
        args[i] = args[i].to(other)
        _raises(lambda: ops.forward(args, False, False),
                rf"{ops.forward_name}: {which}: expected device {device}\S* \(the device of x\), got {other}")


@pytest.mark.parametrize("kind,which", per_kind(_other_args))
def test_mixed_dtypes_raise(device, ops, which):
    args = list(make_inputs(ops.kind, 3, 2, 3, 4, dtype=F32, device=device).op_args())
    i = ops.arg_names.index(which)
    args[i] = args[i].double()
    _raises(lambda: ops.forward(args, False, False), rf"{ops.forward_name}: {which}: expected dtype Float .*got Double")


@KIND
@pytest.mark.parametrize("device,dtype", [
    # float16 on the CPU only: the CUDA kernels support it (tests/test_cuda.py).
    ("cpu", torch.float16),
    ("cpu", torch.int32),
    pytest.param("cuda", torch.int32, marks=needs_cuda),
], ids=["cpu-f16", "cpu-i32", "cuda-i32"])
def test_unsupported_dtype_raises(ops, device, dtype):
    # bfloat16 is supported on both devices (tests/test_bf16.py, tests/test_cuda.py).
    args = [t.to(dtype) for t in make_inputs(ops.kind, 3, 2, 3, 4, dtype=F32, device=device).op_args()]
    supported = r"float32, float64, float16 or bfloat16" if device == "cuda" else r"float32, float64 or bfloat16"
    patterns = (rf"{ops.forward_name}: x: expected dtype {supported}, got",
                {torch.float16: "Half", torch.int32: "Int"}[dtype])
    _raises(lambda: ops.forward(args, False, False), *patterns)
    _raises(lambda: ops.layer(args), *patterns)


def _bad_shape_cases(ops):
    """(which, bad shape, message patterns) against x [3, 2, 3] with H = 4,
    B = 2: the message names the argument, its expected layout and shape, and
    the shape that came."""
    gates, rows = ops.kind.gates, ops.rows_label
    G = gates * 4
    cases = [
        ("x", (3, 2), [r"\[T, B, I\]", shape_re((3, 2))]),
        ("x", (3, 2, 3, 1), [num_re(3), num_re(4)]),
        ("w_ih", (G, 5), [rf"\[{rows}, I\]", shape_re((G, 3)), shape_re((G, 5))]),
        ("w_ih", (G - 1, 3), [shape_re((G, 3)), shape_re((G - 1, 3))]),
        ("w_hh", (G,), [num_re(2), num_re(1)]),
    ]
    for bad in ((G, 5), (gates * 5, 4)):  # wrong columns, wrong rows
        H = ops.w_hh_hidden(bad)
        cases.append(("w_hh", bad, [rf"\[{rows}, H\]", shape_re((gates * H, H)), shape_re(bad)]))
    for name in ops.bias_names:
        for bad in ((G - 1,), (G + 1,)):
            cases.append((name, bad, [rf"\[{rows}\]", shape_re((G,)), shape_re(bad)]))
    for name in ops.state_names:
        cases.append((name, (3, 4), [r"\[B, H\]", shape_re((2, 4)), shape_re((3, 4))]))
        cases.append((name, (2, 5), [r"\[B, H\]", shape_re((2, 4)), shape_re((2, 5))]))
    for which, bad, patterns in cases:
        yield f"{which}-{'x'.join(map(str, bad))}", (which, bad, patterns)


@pytest.mark.parametrize("kind,which,bad_shape,patterns", per_kind(_bad_shape_cases))
def test_bad_shapes_raise(device, ops, which, bad_shape, patterns):
    """The op's own checks name the argument, the expected and the actual shape,
    before any kernel (ATen's GEMM would raise a RuntimeError too, so the
    message is what tells them apart), through the op and through the layer."""
    args = list(make_inputs(ops.kind, 3, 2, 3, 4, dtype=F32, device=device).op_args())
    args[ops.arg_names.index(which)] = torch.randn(bad_shape, device=device)
    patterns = [rf"{ops.forward_name}: {which}: expected (a \d-D tensor|shape)", *patterns]
    _raises(lambda: ops.forward(args, False, True), *patterns)
    _raises(lambda: ops.layer(args), *patterns)


@KIND
@pytest.mark.parametrize("bad,patterns", [
    ("increasing", [r"batch_sizes", r"non-increasing", num_re(1), num_re(2)]),
    ("sum", [r"batch_sizes", r"\bx\b", num_re(12), num_re(11)]),
    ("dtype", [r"batch_sizes", dtype_re(torch.int64), r"Int"]),
    ("rank", [r"batch_sizes", r"\[T\]", shape_re((5, 1))]),
    ("zero", [r"batch_sizes", r"positive", num_re(0)]),
])
def test_bad_batch_sizes_raise(device, ops, bad, patterns):
    inputs = make_inputs(ops.kind, 0, 0, 3, 4, dtype=F32, lengths=LENGTHS, device=device)
    args, bs = list(inputs.op_args()), inputs.batch_sizes
    if bad == "increasing":
        bs = torch.tensor([4, 1, 2, 1, 4], dtype=torch.int64)
    elif bad == "sum":
        args[0] = torch.randn(11, 3, device=device)  # batch_sizes [4,3,3,1,1] sum to 12
    elif bad == "dtype":
        bs = bs.int()
    elif bad == "rank":
        bs = bs.view(-1, 1)
    elif bad == "zero":
        bs = torch.tensor([4, 3, 3, 0, 2], dtype=torch.int64)
    _raises(lambda: ops.forward(args, False, False, bs), rf"\b{ops.forward_name}: ", *patterns)
    outs = ops.outputs_like(args[0], 4)
    _raises(lambda: ops.backward({}, args, outs, False, True, bs), rf"\b{ops.backward_name}: ",
            *patterns)


def _backward_output_cases(ops):
    for name in ops.backward_reads:
        yield name, (name,)
    for name in ops.cotangent_names:
        yield f"grad_{name}", (f"grad_{name}",)


@pytest.mark.parametrize("kind,which", per_kind(_backward_output_cases))
def test_backward_bad_shapes_raise(device, ops, which):
    """A forward output or output gradient of the wrong width (5 for H = 4):
    the message names it, its layout ([T, B, H] per step, [B, H] per
    sequence, [T, B, 4H] for gates), the expected and the actual shape."""
    inputs = make_inputs(ops.kind, 3, 2, 3, 4, dtype=F32, device=device)
    args = inputs.op_args()
    outs = ops.forward(args, False, True)
    cots = {name: torch.zeros_like(outs[name]) for name in ops.cotangent_names}
    target, key = (cots, which[len("grad_"):]) if which.startswith("grad_") else (outs, which)
    good = target[key]
    target[key] = good.new_zeros(*good.shape[:-1], 5)
    width = ops.saved_width(key) if key in ops.saved_names else 1
    letters = r"\[B, H\]" if key in ops.final_names else rf"\[T, B, {'' if width == 1 else width}H\]"
    _raises(lambda: ops.backward(cots, args, outs, False, True),
            rf"{ops.backward_name}: {which}: expected shape {letters}", shape_re(good.shape),
            shape_re(target[key].shape))


@KIND
def test_backward_packed_y_shape_names_letters(device, ops):
    inputs = make_inputs(ops.kind, 0, 0, 3, 4, dtype=F32, lengths=LENGTHS, device=device)
    args = inputs.op_args()
    outs = ops.outputs_like(args[0], 4)
    outs["y"] = torch.zeros(3, 2, 4, device=device)
    _raises(lambda: ops.backward({}, args, outs, False, True, inputs.batch_sizes),
            rf"{ops.backward_name}: y: ", r"\[N, H\]", shape_re((12, 4)), shape_re((3, 2, 4)))
