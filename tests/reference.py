"""A pure-PyTorch reference LSTM, written with plain tensor ops.

This is the second oracle of the test-suite, independent of both torch.nn's
fused LSTM kernels and of lstm_ext.  It is deliberately simple (a Python loop
over time steps, in tests/cells.py: the one reference of every cell kind) and
differentiable through ordinary autograd.

Gate order is i, f, g, o (like torch.nn):
    pre  = x_t @ W_ih^T + h_{t-1} @ W_hh^T + b
    i, f, o = sigmoid(...), g = tanh(...)
    c_t  = f * c_{t-1} + i * g
    h_t  = o * tanh(c_t)
"""
import torch

from cells import LSTM, layer_reference


def lstm_layer_ref(x, w_ih, w_hh, bias, h0, c0, reverse=False):
    """One layer, one direction, whole sequence: the shared one-layer reference
    of tests/cells.py (cells.layer_reference) for the LSTM.

    x [T, B, I], w_ih [4H, I], w_hh [4H, H], bias [4H] or None, h0/c0 [B, H].
    Returns (y [T, B, H], h_n [B, H], c_n [B, H], gates [T, B, 4H], cells [T, B, H]);
    ``gates`` holds the activated gates (i, f, g, o) and ``cells`` holds c_t,
    both indexed by input time t (also when ``reverse`` is True).
    """
    y, (h, c), (gates, cells) = layer_reference(LSTM, x, w_ih, w_hh, bias, None, (h0, c0), reverse)
    return y, h, c, gates, cells


def lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    bias = None
    if b_ih is not None:
        bias = b_ih + b_hh
    _, h1, c1, _, _ = lstm_layer_ref(x.unsqueeze(0), w_ih, w_hh, bias, h, c)
    return h1, c1


def lstm_ref(x, params, num_layers, hidden_size, bias=True, batch_first=False,
             bidirectional=False, hx=None, dropout_masks=None):
    """Multi-layer (bi)directional LSTM, same contract as torch.nn.LSTM.forward.

    ``params`` maps torch.nn.LSTM parameter names (weight_ih_l0, ...,
    bias_hh_l1_reverse) to tensors.  ``dropout_masks[k]`` (optional) multiplies
    the input of layer k+1 (already scaled, like inverted dropout).
    Returns (output, (h_n, c_n)).
    """
    D = 2 if bidirectional else 1
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
        if hx is not None:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    elif batch_first:
        x = x.transpose(0, 1)
    B = x.shape[1]
    if hx is None:
        z = x.new_zeros(num_layers * D, B, hidden_size)
        hx = (z, z)
    h_n, c_n = [], []
    layer_in = x
    for layer in range(num_layers):
        if layer > 0 and dropout_masks is not None:
            layer_in = layer_in * dropout_masks[layer - 1]
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            b = None
            if bias:
                b = params["bias_ih" + sfx] + params["bias_hh" + sfx]
            k = layer * D + d
            y, hn, cn, _, _ = lstm_layer_ref(layer_in, params["weight_ih" + sfx],
                                             params["weight_hh" + sfx], b,
                                             hx[0][k], hx[1][k], reverse=(d == 1))
            outs.append(y)
            h_n.append(hn)
            c_n.append(cn)
        layer_in = torch.cat(outs, dim=-1)
    out, h_n, c_n = layer_in, torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    if batch_first:
        out = out.transpose(0, 1)
    return out, (h_n, c_n)
