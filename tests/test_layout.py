"""The package layout: layers bottom to top, no import points up a layer, none goes in a circle."""

from __future__ import annotations

import ast
import pathlib

import refdlrt

PKG = pathlib.Path(refdlrt.__file__).parent

# layer of each top-level module or subpackage (see the refdlrt docstring); higher may import lower
LAYERS = {
    "_checks": 0, "_npz": 0, "backend": 0, "tolerances": 0, "gradcheck": 0,
    "ops": 1, "tensor": 2, "dlrt": 3, "nn": 4, "training": 5,
    "validation": 6, "oracle": 6, "experiments": 6, "explain": 7, "demo": 7, "cli": 8, "__init__": 9,
    "__main__": 9,
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set[str]:
    """refdlrt modules imported by ``path`` (anywhere in it, lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "refdlrt":
                continue
            for alias in node.names:  # "from . import layers" imports a module
                sub = f"{mod}.{alias.name}"
                found.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists() else mod)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "refdlrt"}
    found.discard(name)
    return found


def layer(mod: str) -> int:
    parts = mod.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


GRAPH = {module_name(p): imports(p) for p in PKG.rglob("*.py")}


def test_every_module_has_a_layer():
    assert all(layer(m) >= 0 for m in GRAPH)


def test_no_import_points_up_a_layer():
    up = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
                if t != "refdlrt" and layer(t) > layer(m))
    assert up == []


def test_no_import_cycle():
    # depth-first search for a back edge; packages' __init__ count as modules
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in GRAPH.get(m, ()):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in GRAPH:
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checker_sees_a_planted_upward_import_and_cycle(monkeypatch):
    # test the tester: an ops module importing the integrator is both upward and a cycle
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["refdlrt.ops.conv"].add("refdlrt.dlrt.integrator")
    planted["refdlrt.tensor.tucker"].add("refdlrt.tensor.hosvd")
    assert layer("refdlrt.dlrt.integrator") > layer("refdlrt.ops.conv")
    monkeypatch.setattr(__import__(__name__), "GRAPH", planted)
    import pytest

    with pytest.raises(AssertionError):
        test_no_import_points_up_a_layer()
    with pytest.raises(AssertionError):
        test_no_import_cycle()


def test_top_level_namespace_is_the_algorithm_api():
    assert 30 <= len(refdlrt.__all__) <= 60
    assert not any(n.isupper() for n in refdlrt.__all__)  # no constants such as install paths
