"""The student examples in examples/ run, pass their own checks, and can fail.

Each script prints its checks with OK / NOT OK and exits 1 when one fails. They run here as a
user would run them: a fresh interpreter, from another working directory (tmp_path).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def run(name, *args, cwd):
    # the scripts print symbols (τ, ϑ, Û): ask for UTF-8 whatever the locale
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, encoding="utf-8", timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_examples_are_there_and_listed():
    assert {"01_convolution_from_loops.py", "02_tucker_and_hosvd.py", "03_one_step_by_hand.py",
            "04_tiny_training_run.py"} <= set(SCRIPTS)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert [name for name in SCRIPTS if name not in readme] == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_passes_its_checks(name, tmp_path):
    takes_out = '"--out"' in (EXAMPLES / name).read_text(encoding="utf-8")  # scripts that write files
    rc, out = run(name, *(["--out", str(tmp_path / "out")] if takes_out else []), cwd=tmp_path)
    assert rc == 0, out
    assert "NOT OK" not in out, out
    assert "all checks OK" in out, out
    if name.startswith("04_"):
        assert (tmp_path / "out" / "ranks.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["01_convolution_from_loops.py", "03_one_step_by_hand.py"])
def test_a_planted_bug_makes_the_example_fail(name, tmp_path):
    # test the tester: --plant-bug breaks the computation (01: the fast path gets the flipped
    # kernel; 03: one ulp added to the hand-made core), the checks must see it
    rc, out = run(name, "--plant-bug", cwd=tmp_path)
    assert rc == 1, out
    assert "NOT OK" in out, out
