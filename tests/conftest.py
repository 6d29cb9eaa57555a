"""Shared test set-up: hypothesis profiles, the backend fixture, the torch oracle."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from refdlrt.backend import gpu_available

# CI profile: no deadlines (2 slow cores), derandomized so every run draws the same examples.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    max_examples=25,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        # the xp/rng fixtures are constants (a module, a seeded generator re-made per test)
        HealthCheck.function_scoped_fixture,
    ],
)
# dev profile: random examples, more of them, to look for new failures locally.
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_GPU = gpu_available()
BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param(
        "cupy", id="cupy", marks=pytest.mark.skipif(not _GPU, reason="no usable GPU (CuPy)")
    ),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array namespace under test: numpy always, cupy when a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


@pytest.fixture
def rng():
    """A fixed-seed generator: the only source of randomness in tests."""
    return np.random.default_rng(20231128)


@pytest.fixture(scope="session")
def torch():
    """PyTorch CPU as an external oracle; tests using it skip cleanly when it is absent."""
    t = pytest.importorskip("torch", reason="PyTorch (test-only oracle) is not installed")
    t.set_num_threads(1)
    return t
