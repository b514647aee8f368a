"""Module-level behaviour only lstm_ext.LSTM has, next to the cell-parametrized
suite (test_cell_modules.py): hx as the pair (h_0, c_0) in the forms torch.nn
takes. Projections are in test_projection.py, every step's cell states in
test_states.py.
"""
import torch

from cells import LSTM, module_results
from helpers import assert_dicts_close
from module_cases import check_results, reference_results

F32 = torch.float32


def test_lstm_hx_as_a_list_like_torch(device):
    """torch.nn.LSTM takes hx as a list [h_0, c_0] too: lstm_ext gives the same
    bits as for the tuple, and torch.nn's results, outputs and gradients."""
    ref, ext = LSTM.layer_pair(3, 4, 2, bidirectional=True, device=device)
    x, hx = LSTM.module_inputs((5, 2, 3), (4, 2, 4), device=device)
    as_list = module_results(LSTM, ext, x, list(hx))
    as_tuple = module_results(LSTM, ext, x, hx)
    assert_dicts_close(as_list[1], as_tuple[1], dict(atol=0, rtol=0), "list vs tuple output")
    assert_dicts_close(as_list[2], as_tuple[2], dict(atol=0, rtol=0), "list vs tuple grad")
    check_results(as_list, reference_results(LSTM, ref, x, list(hx)), F32, "hx as a list")
