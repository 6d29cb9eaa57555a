"""The oracle: deterministic golden files, a checker that passes correct candidates, catches
perturbations and malformed input without a traceback, and names the step that differs."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from refdlrt.cli import main
from refdlrt.oracle import RefdlrtAdapter, check, export, load_golden
from refdlrt.oracle.check import _compare
from refdlrt.oracle.npz import OracleFileError, read_npz, write_npz
from refdlrt.oracle.quantities import TOLERANCES, quantities


@pytest.fixture(scope="session")
def golden(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    assert main(["oracle", "export", "--out", str(out)]) == 0
    return str(out)


def _hashes(d):
    m = json.load(open(os.path.join(d, "manifest.json")))
    return {c["file"]: c["sha256"] for c in m["cases"]}


def test_export_is_byte_identical_twice(golden, tmp_path):
    again = tmp_path / "again"
    export(again)
    for name in sorted(os.listdir(golden)):  # every file, manifest included
        assert (again / name).read_bytes() == open(os.path.join(golden, name), "rb").read(), name
    assert _hashes(golden) == _hashes(again)


def test_manifest_describes_every_case(golden):
    m = load_golden(golden)
    assert m["schema_version"] == 1 and m["dtype"] == "float64" and "numpy_version" in m
    kinds = {c["kind"] for c in m["cases"]}
    assert kinds == {"conv2d", "hosvd", "tdlrt_step", "tucker_conv2d", "lowrank_linear",
                     "matrix_conv2d", "lenet5_steps"}
    assert sum(c["kind"] == "conv2d" for c in m["cases"]) >= 6
    steps = [c for c in m["cases"] if c["kind"] == "tdlrt_step"]
    assert {len([k for k in c["inputs"] if k.startswith("U_")]) for c in steps} == {2, 3, 4}
    assert any(c["params"]["fixed_rank"] for c in steps) and any(c["params"]["momentum"] for c in steps)
    grew = fell = False
    for c in steps:
        z = read_npz(os.path.join(golden, c["file"]))
        before = [z[f"U_{i}"].shape[1] for i in range(len(z["ranks"]))]
        grew |= any(a > b for a, b in zip(z["ranks"], before))
        fell |= any(a < b for a, b in zip(z["ranks"], before))
        for q in c["quantities"]:
            assert set(q["tolerance"]) == {"float64", "float32"}
    assert grew and fell


def test_reference_passes_through_the_adapter_and_the_directory(golden, tmp_path, capsys):
    assert check(golden, RefdlrtAdapter()).ok
    cand = tmp_path / "cand"
    assert main(["oracle", "run", "--golden", golden, "--adapter", "refdlrt.oracle:RefdlrtAdapter",
                 "--out", str(cand)]) == 0
    assert main(["oracle", "check", "--golden", golden, "--candidate", str(cand), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "26 of 26 cases OK" in out or "cases OK" in out and "NOT OK" not in out


def test_float32_goldens_export_and_pass_the_float32_reference(tmp_path):
    export(tmp_path, dtype="float32", only=["step_d3", "conv_stride2", "hosvd_tie"])
    report = check(str(tmp_path), RefdlrtAdapter())
    assert report.ok and report.dtype == "float32"


def _outputs(golden_dir, case):
    z = read_npz(os.path.join(golden_dir, case["file"]))
    return z, {k: v for k, v in z.items() if k not in case["inputs"]}


def _perturb(a, q, rng, tol):
    """a copy of ``a`` moved by 10x the tolerance of quantity ``q`` (or +1 for exact ones)."""
    if q.compare == "exact":
        b = a.copy()
        b.flat[0] += 1
        return b
    noise = rng.standard_normal(a.shape)
    scale = np.sqrt(max(a.shape[1], 1)) if q.compare == "span" else np.linalg.norm(a)
    return a + noise * (10 * tol * max(scale, 1e-300) / np.linalg.norm(noise))


def test_a_perturbation_of_ten_tolerances_in_any_single_quantity_is_caught(golden):
    rng = np.random.default_rng(0)
    n = 0
    for case in load_golden(golden)["cases"]:
        z, outs = _outputs(golden, case)
        d = sum(1 for k in outs if k.startswith("sigma_")) if case["kind"] == "hosvd" else \
            sum(1 for k in outs if k.startswith("U_hat_"))
        for q in quantities(case["kind"], case["params"], outs, d):
            tol = TOLERANCES[q.tol]["float64"]
            assert _compare(q, z, z, "float64").ok, (case["name"], q.label)
            target = q.arrays[0]
            cand = dict(z)
            cand[target] = _perturb(z[target], q, rng, tol)
            row = _compare(q, z, cand, "float64")
            assert not row.ok, (case["name"], q.label, row.error)
            n += 1
    assert n > 250


@pytest.fixture()
def small_golden(golden, tmp_path):
    """A copy of a few golden cases that a test may damage."""
    out = tmp_path / "g"
    shutil.copytree(golden, out)
    return str(out)


def test_a_tampered_golden_file_is_not_ok_with_a_message(small_golden, capsys):
    path = os.path.join(small_golden, "step_d3.npz")
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 1
    open(path, "wb").write(bytes(data))
    rc = main(["oracle", "check", "--golden", small_golden, "--adapter",
               "refdlrt.oracle:RefdlrtAdapter", "--only", "step_d3,conv_stride2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "step_d3 (tdlrt_step): NOT OK: golden file" in out and "SHA-256" in out
    assert "conv_stride2 (conv2d): OK" in out


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(schema_version=99), "schema version 99 is not supported"),
    (lambda m: m.pop("cases"), "malformed manifest"),
])
def test_unknown_schema_or_malformed_manifest_is_refused(small_golden, capsys, edit, match):
    p = os.path.join(small_golden, "manifest.json")
    m = json.load(open(p))
    edit(m)
    json.dump(m, open(p, "w"))
    assert main(["oracle", "check", "--golden", small_golden, "--candidate", small_golden]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_missing_golden_directory_and_bad_options_are_refused(tmp_path, capsys, golden):
    assert main(["oracle", "check", "--golden", str(tmp_path), "--candidate", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["oracle", "check", "--golden", golden]) == 2
    assert "exactly one of --candidate" in capsys.readouterr().err
    assert main(["oracle", "check", "--golden", golden, "--adapter", "nonexistent.module:X"]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["oracle", "check", "--golden", golden, "--candidate", golden, "--only", "nope"]) == 2
    assert "unknown case" in capsys.readouterr().err
    assert main(["oracle", "export", "--out", str(tmp_path / "x"), "--only", "nope"]) == 2


class _Edited(RefdlrtAdapter):
    """The reference with one output edited: what malformed candidates look like."""

    def __init__(self, edit):
        self.edit = edit

    def tdlrt_step(self, inputs, params):
        return self.edit(super().tdlrt_step(inputs, params))


def _drop(k):
    return lambda o: {a: b for a, b in o.items() if a != k}


def _set(k, f):
    return lambda o: {**o, k: f(o[k])}


def _raise(o):
    raise RuntimeError("boom")


@pytest.mark.parametrize("edit, label, message", [
    (_drop("C_hat"), "lifted tensor", "missing array C_hat"),
    (_set("U_hat_1", lambda a: a[:-1]), "augmented span of mode 1", "expected shape"),
    (_set("K_0", lambda a: np.full(a.shape, np.nan)), "K_0 after the K-step", "NaN"),
    (_set("theta", lambda a: np.array("x")), "truncation tolerance theta", "numeric array"),
    (_set("ranks", lambda a: a[:-1]), "new ranks", "expected shape"),
    (_set("C_new", lambda a: a[..., :1]), "new tensor", "cannot form the quantity"),
    (_raise, None, "raised RuntimeError: boom"),
    (lambda o: [1, 2], None, "returned list"),
])
def test_malformed_candidates_are_not_ok_with_a_message(golden, edit, label, message):
    report = check(golden, _Edited(edit), only=["step_d3"])
    case = report.cases[0]
    assert not report.ok
    text = case.message if label is None else next(r.message for r in case.rows if r.label.startswith(label))
    assert message in text
    report.format()  # formats without raising


def test_bad_candidate_files_are_not_ok_never_unpickled(golden, tmp_path):
    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "conv_stride2.npz").write_bytes(b"not a zip at all")
    np.savez(cand / "conv_mixed.npz", y=np.array([object()], dtype=object))  # needs pickle
    report = check(golden, str(cand), only=["conv_stride2", "conv_mixed", "conv_dilation2"])
    msgs = {c.name: c.message for c in report.cases}
    assert "not a readable .npz" in msgs["conv_stride2"]
    assert "not a readable .npz" in msgs["conv_mixed"] and "allow_pickle" not in msgs["conv_mixed"]
    assert "missing candidate file" in msgs["conv_dilation2"]


def test_write_npz_is_deterministic_and_refuses_objects(tmp_path):
    a = {"x": np.arange(6.0).reshape(2, 3), "s": np.asarray(1.5)}
    assert write_npz(tmp_path / "a.npz", a) == write_npz(tmp_path / "b.npz", dict(reversed(a.items())))
    back = read_npz(tmp_path / "a.npz")
    assert back["s"].shape == () and np.array_equal(back["x"], a["x"])
    with zipfile.ZipFile(tmp_path / "a.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with pytest.raises(TypeError, match="object"):
        write_npz(tmp_path / "c.npz", {"o": np.array([None], dtype=object)})
    with pytest.raises(OracleFileError, match="no such file"):
        read_npz(tmp_path / "missing.npz")


class _Float32(RefdlrtAdapter):
    """A float32 candidate: the reference run on the golden inputs cast to float32."""

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name.startswith("_") or not callable(attr):
            return attr

        def run(inputs, params):
            cast = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
            return attr(cast, params)
        return run


def test_a_float32_candidate_passes_float64_goldens_at_float32_tolerances(golden):
    report = check(golden, _Float32())
    assert report.dtype == "float32"
    assert report.ok, report.format()


def test_the_readme_oracle_commands_run(tmp_path):
    """The README's 'check your own implementation' commands, as written, in a fresh folder."""
    import pathlib
    import re
    import subprocess

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "refdlrt oracle" in b)
    for line in block.strip().splitlines():
        out = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, (line, out.stdout[-2000:], out.stderr[-2000:])
    assert "26 of 26 cases OK" in out.stdout
