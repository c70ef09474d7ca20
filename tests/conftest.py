"""Shared fixtures: ``backend`` runs a test once per kernel backend, in one process."""

import pytest

from pysbnn.kernels import jit

BACKENDS = ["numpy"] + (["numba"] if jit.numba_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    """``"numpy"`` (the NumPy references) and ``"numba"`` (the kernels; uncompiled
    under ``NUMBA_DISABLE_JIT=1``)."""
    return request.param
