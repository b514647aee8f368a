"""Shared pytest configuration for the lstm_ext test-suite.

* ``device`` fixture: every device-parametrised test runs on "cpu" and on
  "cuda"; the CUDA variant is skipped (reason "needs CUDA") when
  ``torch.cuda.is_available()`` is False.  That is the only skip in the suite.
* TF32 is switched off so that float32 parity with torch.nn (cuDNN on GPU) is
  meaningful at atol 1e-5.
* The repository root is put on ``sys.path`` only when ``lstm_ext`` is not
  importable otherwise (in-place ``build_ext --inplace`` builds, plain
  ``pytest`` invocations); an installed ``lstm_ext`` is never shadowed.
"""
import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
if importlib.util.find_spec("lstm_ext") is None and ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

from helpers import DEVICES  # noqa: E402


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    # Every test starts from the same RNG state, so failures are reproducible
    # when a single test is run on its own.
    torch.manual_seed(0)
    yield
