"""What the in-process A/B scripts share: a checkout's refdlrt imported under a package name of
its own (so two checkouts live in one process and see the same phase of the machine), and the
median time of a call (``ab_integrator.py``, ``ab_batchnorm.py``, ``ab_weight_grad.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time

import numpy as np


def import_checkout(name: str, root: str, module: str | None = None):
    """``root``'s refdlrt imported as package ``name``; its submodule ``module`` (e.g.
    ``"ops.conv"``) where given, else the package."""
    init = os.path.join(os.path.abspath(root), "refdlrt", "__init__.py")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package if module is None else importlib.import_module(f"{name}.{module}")


def median_ms(f, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``f()``, after one warm-up call."""
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))
