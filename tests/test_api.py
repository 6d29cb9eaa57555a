"""The package surface: public names, the backend module, the console script."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import refdlrt
from refdlrt.backend import get_xp, gpu_available, is_cupy_array, to_numpy


def test_every_public_name_is_importable_and_documented():
    for name in refdlrt.__all__:
        obj = getattr(refdlrt, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, f"{name} has no docstring"


def test_importing_refdlrt_never_imports_cupy():
    code = "import sys, refdlrt; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_only_the_backend_module_imports_cupy():
    import pathlib
    import re

    pkg = pathlib.Path(refdlrt.__file__).parent
    offenders = [
        str(p.relative_to(pkg))
        for p in pkg.rglob("*.py")
        if p.name != "backend.py" and re.search(r"^\s*(import cupy|from cupy)", p.read_text(), re.M)
    ]
    assert offenders == []


class _FakeCupyArray:
    """Looks like a CuPy array to get_xp (its class lives in a module named cupy)."""


_FakeCupyArray.__module__ = "cupy._core.core"


def test_get_xp_picks_numpy_and_rejects_mixed_backends():
    a = np.zeros(3)
    assert get_xp(a, None, 1.0) is np
    assert get_xp() is np
    assert is_cupy_array(_FakeCupyArray()) and not is_cupy_array(a)
    with pytest.raises(TypeError, match="mix array libraries"):
        get_xp(a, _FakeCupyArray())
    np.testing.assert_array_equal(to_numpy([1, 2]), np.array([1, 2]))
    assert isinstance(gpu_available(), bool)


def test_console_script_help_and_version():
    out = subprocess.run([sys.executable, "-m", "refdlrt.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and refdlrt.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "refdlrt.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "demo" in out.stdout
    # python -m refdlrt: the same command where no console script is installed (a GPU machine)
    out = subprocess.run([sys.executable, "-m", "refdlrt", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and refdlrt.__version__ in out.stdout


def test_namespace_names_and_errors():
    from refdlrt.backend import namespace

    assert namespace("numpy") is np
    with pytest.raises(ValueError, match="expected 'numpy' or 'cupy'"):
        namespace("torch")
    if not gpu_available():
        with pytest.raises(ValueError, match="needs CuPy and a usable GPU"):
            namespace("cupy")


def test_backend_name_inverts_namespace(xp):
    """backend_name(namespace(b)) == b, and a submodule names its package (the routes' rules
    test it on whatever module they are handed)."""
    from refdlrt.backend import backend_name, namespace

    name = "numpy" if xp is np else "cupy"
    assert backend_name(xp) == name and namespace(backend_name(xp)) is xp
    assert backend_name(xp.linalg) == name
