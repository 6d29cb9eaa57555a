"""`refdlrt explain`: every intermediate of one step printed with its check; the checks bite."""

from __future__ import annotations

import numpy as np
import pytest

import refdlrt.explain as explain
from refdlrt.cli import main

STEPS = ("k_step", "augment", "lift", "s_step", "truncate", "result")


@pytest.mark.parametrize("args", [["--order", "2"], ["--order", "3"], ["--order", "4"],
                                  ["--layer"], ["--order", "3", "--tau", "0"],
                                  ["--shape", "7,5,3", "--ranks", "2,2,2", "--tau", "0.3"]])
def test_explain_runs_and_every_check_is_ok(capsys, args):
    assert main(["explain", *args]) == 0
    out = capsys.readouterr().out
    assert "NOT OK" not in out and "checks OK" in out
    positions = [out.index(s) for s in STEPS]
    assert positions == sorted(positions)  # printed in the order of Algorithm 1
    assert "this walk == tdlrt_step" in out and "lift exact" in out


def test_layer_step_uses_the_projector_and_demo_is_its_alias(capsys, monkeypatch):
    import refdlrt.nn.lowrank_projectors as lp

    real, calls = lp._conv2d_weight_grad, []
    monkeypatch.setattr(lp, "_conv2d_weight_grad",
                        lambda xa, dya, *a: calls.append((xa.shape[1], dya.shape[1])) or real(xa, dya, *a))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "TuckerConv2d" in out and "projector route (G never formed)" in out
    assert "NOT OK" not in out
    assert calls and (6, 16) not in calls  # (C_in, C_out) would be G: the row's claim holds


def _drop_old_basis(K, U, direction=None):
    from refdlrt.tensor.linalg import orth

    U_hat = orth(K)  # the bug: range(U) is not kept
    return U_hat, U_hat.T @ U


def _zero_padded_lift(C, M_hats):
    out = np.zeros(tuple(M.shape[0] for M in M_hats))
    out[tuple(slice(0, n) for n in C.shape)] = C  # the bug: C zero-padded, not C x_i M^_i
    return out


@pytest.mark.parametrize("name, planted, check", [
    ("augment", _drop_old_basis, "||U_i - U^_i M^_i||_F"),
    ("lift", _zero_padded_lift, "(lift exact)"),
])
def test_a_planted_bug_is_reported_not_ok_with_exit_1(monkeypatch, capsys, name, planted, check):
    monkeypatch.setattr(explain, name, planted)
    assert main(["explain", "--order", "3"]) == 1
    out = capsys.readouterr().out
    bad = [line for line in out.splitlines() if line.endswith("NOT OK")]
    assert any(check in line for line in bad), out
    assert "checks NOT OK" in out


@pytest.mark.parametrize("args, match", [
    (["--ranks", "3,1,1"], "compatible"),
    (["--shape", "4,4", "--ranks", "5,5"], "1 <= r <= n"),
    (["--shape", "4,x"], "comma-separated integers"),
    (["--layer", "--shape", "4,4,4,4"], "--shape"),
    (["--tau", "-1"], "--tau"),
    (["--lr", "0"], "--lr"),
    (["--seed", "-3"], "--seed"),
])
def test_bad_arguments_give_a_message_and_exit_2(capsys, args, match):
    assert main(["explain", *args]) == 2
    assert match in capsys.readouterr().err
