"""64-bit index arithmetic, on a real shape past 2^31 elements.

The LSTM forward's [N,4H] pre-activation buffer holds N*4H > 2^31 elements
here (and y, N*H floats, passes 2^31 bytes), so any 32-bit product of a row
index and a row width in the input projection, the time loop or the final
state gather would wrap and write or read the wrong place. The weights make
every step independent of the last (W_hh = 0, and a forget gate of
sigmoid(-100), which rounds c_{t-1}'s contribution away), so the last rows
can be checked against a closed form. It needs about 13 GB of memory: sized
for this project's 24 GB CI machine; machines with less memory cannot run it.
"""
import pytest
import torch

import lstm_ext  # noqa: F401  (registers the ops)

B = 4096
T = 2**31 // (4 * B) + 256  # N * 4H > 2^31 with H = 1


def _available_bytes():
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.mark.skipif(_available_bytes() < 16 * 2**30, reason="needs about 16 GB of free memory")
def test_lstm_forward_past_two_to_the_31_elements():
    g = torch.Generator().manual_seed(0)
    x = torch.empty(T, B, 1)
    x.uniform_(-2, 2, generator=g)
    w_ih = torch.tensor([[0.7], [0.0], [-1.3], [0.9]])
    bias = torch.tensor([0.1, -100.0, 0.2, -0.3])
    zeros = torch.zeros(B, 1)
    assert T * B * 4 > 2**31
    with torch.inference_mode():
        y, h_n, c_n, _, _ = torch.ops.lstm_ext.lstm_forward(
            x, w_ih, torch.zeros(4, 1), bias, zeros, zeros, False, False)
    for rows in (slice(0, 2), slice(T // 2, T // 2 + 2), slice(T - 3, T)):
        pre = x[rows] * w_ih[:, 0] + bias  # [t, B, 4]: i, f, g, o
        i, f, gg, o = pre.unbind(-1)
        c = torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
        torch.testing.assert_close(y[rows, :, 0], h, atol=1e-6, rtol=1e-5, msg=f"rows {rows}")
    torch.testing.assert_close(h_n[:, 0], h[-1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c_n[:, 0], c[-1], atol=1e-6, rtol=1e-5)
