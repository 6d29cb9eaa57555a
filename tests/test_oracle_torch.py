"""A real second backend passes the oracle, and every planted bug class is caught with a hint
that points at the right step (examples/torch_backend, PyTorch CPU)."""

from __future__ import annotations

import pathlib
import sys

import pytest

from refdlrt.oracle import check
from refdlrt.oracle.hints import HINTS

torch = pytest.importorskip("torch")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from torch_backend import BUGS, TorchAdapter  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: OpenMP threads only cost time here
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    from refdlrt.oracle import export

    out = tmp_path_factory.mktemp("golden_torch")
    export(out)
    return str(out)


def test_the_torch_backend_passes_every_case(golden):
    report = check(golden, TorchAdapter())
    assert report.ok, report.format()
    assert len(report.cases) == 26


# bug -> (a case that shows it, the first differing quantity, the hint)
PLANTED = {
    "truncation_transpose": ("step_d3", "new tensor", "truncation_vectors"),
    "bias_twice": ("tucker_conv_bias", "forward y", "bias_twice"),
    "stale_momentum": ("step_d3_momentum", "new velocity", "momentum_transport"),
    "no_old_basis": ("step_d3", "augmented span of mode 0", "augmentation_old_basis"),
    "no_lift": ("step_d3", "lifted tensor", "no_lift"),
    "theta_before_s_step": ("step_d3", "truncation tolerance theta", "theta_before_s_step"),
    "theta_absolute": ("step_d3", "truncation tolerance theta", "theta_absolute"),
    "strict_threshold": ("hosvd_tie", "ranks", "threshold"),
    "wrong_unfolding_tails": ("step_d3", "singular values of Mat_0", "tails_unfolding"),
    "k_gradient_no_q": ("step_d3", "K-gradient of mode 0", "k_gradient_no_q"),
}


def test_every_bug_class_is_planted():
    assert set(PLANTED) == set(BUGS)


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_planted_bug_is_caught_with_the_right_hint(golden, bug):
    case, label, hint = PLANTED[bug]
    report = check(golden, TorchAdapter(bug=bug), only=[case])
    res = report.cases[0]
    assert not report.ok
    assert res.first_failure is not None and res.first_failure.label.startswith(label), res.summary()
    assert res.hint == HINTS[hint], res.summary()
    assert f"look at the {res.first_failure.step}" in res.summary()


def test_cli_runs_the_torch_adapter_and_exits_1_on_a_bug(golden, capsys, monkeypatch):
    from refdlrt.cli import main

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    assert main(["oracle", "check", "--golden", golden, "--adapter",
                 "examples.torch_backend:TorchAdapter", "--only", "step_d2,conv_mixed"]) == 0
    assert "2 of 2 cases OK" in capsys.readouterr().out
