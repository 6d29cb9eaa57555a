"""A sweep's plan (its grid, fixed settings and learning-rate selection) and its cells.

A plan is one or more grids, each a set of axes ``field -> [values]`` over :class:`TrainConfig`
fields (plus the sweep's own ``ranks_from``), the fixed settings shared by every cell
(``--set``), and optionally a learning-rate grid chosen from by validation accuracy
(``--select-lr``). Every cell is the product of one grid's axes; its id names the axes' values,
e.g. ``method=tdlrt__tau=0.2__seed=1``. Everything is checked here, before anything runs: an
unknown field or a bad value is a one-line error naming the field.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import zlib
from dataclasses import dataclass, field

from ..nn.models import METHODS
from ..training.config import TrainConfig

__all__ = ["Plan", "Cell", "FIELD_KINDS", "SELECTED", "parse_value", "plan_from_args",
           "read_grid_file", "expand", "diff_plans", "source_group", "plain_group"]

SELECTED = "sel"  # the id's lr of a cell trained at the rate the sweep chose for its group


def _kind(type_text: str) -> str:
    t = str(type_text).replace(" ", "")
    base = t.split("|")[0]
    return base + ("?" if "None" in t and base != "None" else "")


FIELD_KINDS = {f.name: _kind(f.type) for f in dataclasses.fields(TrainConfig)}
FIELD_KINDS["ranks_from"] = "str?"  # the sweep's own: start at the final ranks of another method
_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
             for f in dataclasses.fields(TrainConfig)}
_DEFAULTS["ranks_from"] = None


def _fields_list() -> str:
    return ", ".join(sorted(FIELD_KINDS))


def _check_field(name: str, where: str):
    if name not in FIELD_KINDS:
        raise ValueError(f"{where}: unknown field {name!r} (the fields of a cell: {_fields_list()})")


def coerce(name: str, value, where: str):
    """A value (from TOML/JSON, or already parsed) in the field's normal form, or a one-line
    error naming the field."""
    kind = FIELD_KINDS[name]
    opt = kind.endswith("?")
    base = kind.rstrip("?")
    bad = f"{where}: {name}: expected {{}}, got {value!r}"
    if value is None or (opt and isinstance(value, str) and value.lower() in ("none", "null")):
        if opt:
            return None
        raise ValueError(bad.format(f"a value of type {base}"))
    if base == "str":
        if not isinstance(value, str):
            raise ValueError(bad.format("a string"))
        return value
    if base == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ValueError(bad.format("an integer"))
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(bad.format("a finite number"))
        return float(value)
    if base == "tuple":
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(bad.format("a list of integers, e.g. [0, 1]"))
        return [int(v) for v in value]
    if base == "dict":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and v and
            all(isinstance(r, int) and not isinstance(r, bool) for r in v) for k, v in value.items())
        if not ok:
            raise ValueError(bad.format('a table of layer name -> list of ranks, e.g. '
                                        '{"conv2": [4, 4, 3, 3]}'))
        return {k: [int(r) for r in v] for k, v in value.items()}
    raise AssertionError(kind)  # pragma: no cover


def parse_value(name: str, text: str, where: str):
    """A value given as text on the command line: numbers and strings as typed, none for an
    optional field, JSON for lists and tables."""
    kind = FIELD_KINDS[name].rstrip("?")
    text = text.strip()
    if kind in ("int", "float") and text.lower() not in ("none", "null"):
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            raise ValueError(f"{where}: {name}: expected {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {text!r}") from None
        return coerce(name, value, where)
    if kind in ("tuple", "dict"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            example = "[0, 1]" if kind == "tuple" else '{"conv2": [4, 4, 3, 3]}'
            raise ValueError(f"{where}: {name}: expected JSON, e.g. {example}, got {text!r}") from None
        return coerce(name, value, where)
    return coerce(name, text, where)


def _split_top(text: str) -> list:
    """Split on commas outside brackets and braces: ``a,[1,2],b`` -> ``a``, ``[1,2]``, ``b``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def _item(text: str, option: str) -> tuple:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"{option}: expected FIELD=VALUE, got {text!r}")
    _check_field(name, f"{option} {text}")
    return name, value


@dataclass
class Plan:
    """What a sweep trains: the grids (axes), the fixed settings and the lr selection."""

    grids: list = field(default_factory=list)  # each an ordered dict field -> [values]
    fixed: dict = field(default_factory=dict)
    select_lr: list | None = None
    select_seeds: int = 1

    def to_json(self) -> dict:
        return dict(version=1, grids=self.grids, set=self.fixed, select_lr=self.select_lr,
                    select_seeds=self.select_seeds)

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(grids=[dict(g) for g in d["grids"]], fixed=dict(d["set"]),
                   select_lr=d.get("select_lr"), select_seeds=d.get("select_seeds", 1))


def _axes(table: dict, where: str) -> dict:
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where}: expected a table of field = [values], got {table!r}")
    axes = {}
    for name, values in table.items():
        _check_field(name, where)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"{where}: {name}: expected at least one value")
        axes[name] = [coerce(name, v, where) for v in values]
        if len({json.dumps(v) for v in axes[name]}) != len(values):
            raise ValueError(f"{where}: {name}: a value is given twice ({values})")
    return axes


def read_grid_file(path: str) -> dict:
    """The grid file's tables: ``grid`` (one table or an array of tables), ``set``, ``sweep``
    (``select_lr``, ``select_seeds``). TOML (``.toml``) or JSON (anything else)."""
    where = f"--grid-file {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            d = tomllib.loads(raw.decode())
        else:
            d = json.loads(raw)
    except Exception as e:  # noqa: BLE001 - any parse error is one line naming the file
        raise ValueError(f"{where}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {e}") from None
    unknown = sorted(set(d) - {"grid", "set", "sweep"})
    if unknown:
        raise ValueError(f"{where}: unknown table {', '.join(unknown)} (expected grid, set, sweep)")
    unknown = sorted(set(d.get("sweep", {})) - {"select_lr", "select_seeds"})
    if unknown:
        raise ValueError(f"{where}: [sweep]: unknown key {', '.join(unknown)} (expected select_lr, "
                         f"select_seeds)")
    return d


def _select_lr(values, where) -> list:
    try:
        vals = [float(v) for v in (_split_top(values) if isinstance(values, str) else values)]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected comma-separated learning rates, got {values!r}") from None
    if not vals or any(not (v > 0 and math.isfinite(v)) for v in vals) or len(set(vals)) != len(vals):
        raise ValueError(f"{where}: expected distinct finite learning rates > 0, got {values!r}")
    return vals


def plan_from_args(grid=None, grid_file=None, set_items=None, select_lr=None,
                   select_seeds=None) -> Plan:
    """The plan given by ``--grid`` items or ``--grid-file``, ``--set`` items (they override the
    file's ``[set]``), ``--select-lr`` and ``--select-seeds``; every value checked."""
    if grid and grid_file:
        raise ValueError("--grid and --grid-file exclude each other (put every axis in one of them)")
    plan = Plan()
    if grid_file:
        d = read_grid_file(grid_file)
        tables = d.get("grid")
        tables = tables if isinstance(tables, list) else [tables] if tables else []
        if not tables:
            raise ValueError(f"--grid-file {grid_file}: expected a [grid] table (or [[grid]] tables)")
        plan.grids = [_axes(t, f"--grid-file {grid_file} [grid]") for t in tables]
        for k, v in d.get("set", {}).items():
            _check_field(k, f"--grid-file {grid_file} [set]")
            plan.fixed[k] = coerce(k, v, f"--grid-file {grid_file} [set]")
        sweep = d.get("sweep", {})
        if "select_lr" in sweep:
            plan.select_lr = _select_lr(sweep["select_lr"], f"--grid-file {grid_file} [sweep] select_lr")
        if "select_seeds" in sweep:
            plan.select_seeds = sweep["select_seeds"]
    elif grid:
        axes = {}
        for text in grid:
            name, values = _item(text, "--grid")
            if name in axes:
                raise ValueError(f"--grid {text}: the field {name} is given twice")
            axes[name] = [parse_value(name, v, f"--grid {text}") for v in _split_top(values)]
        plan.grids = [axes]
    else:
        plan.grids = [{}]
    for text in set_items or []:
        name, value = _item(text, "--set")
        plan.fixed[name] = parse_value(name, value, f"--set {text}")
    if select_lr is not None:
        plan.select_lr = _select_lr(select_lr, "--select-lr")
    if select_seeds is not None:
        plan.select_seeds = select_seeds
    if not isinstance(plan.select_seeds, int) or isinstance(plan.select_seeds, bool) or plan.select_seeds < 1:
        raise ValueError(f"--select-seeds: expected an integer >= 1, got {plan.select_seeds!r}")
    return plan


def _fmt(v) -> str:
    if isinstance(v, float):
        return format(v, "g")
    text = "none" if v is None else v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    if v is None or isinstance(v, (int, float, str)) and re.fullmatch(r"[A-Za-z0-9._+-]{1,40}", str(text)):
        return str(text)
    return f"{zlib.crc32(json.dumps(v, sort_keys=True).encode()):08x}"


@dataclass
class Cell:
    """One training run of the sweep."""

    id: str
    key: dict  # this cell's axis values (lr = SELECTED: the rate its group's selection chose)
    fields: dict  # TrainConfig fields (fixed settings, then the axes); lr a placeholder if SELECTED
    group: tuple  # ((field, value), ...): the axes but seed, and lr when the sweep selects it
    seed: int
    phase: str  # "run", "select" (an lr trial on a selection seed) or "final" (at the chosen lr)
    ranks_from: str | None = None

    @property
    def group_label(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.group) or "all"


def expand(plan: Plan) -> list:
    """Every cell of the plan, checked: each cell's configuration validates, ``lr`` is not an
    axis or fixed when the sweep selects it, a validation split exists for the selection,
    ``ranks_from`` names a group of the sweep, the data exists. One-line errors name the field."""
    if plan.select_lr is not None:
        if "lr" in plan.fixed or any("lr" in g for g in plan.grids):
            raise ValueError("--select-lr: lr is chosen by the sweep; remove it from the grid and "
                             "from --set")
    cells, seen = [], {}
    for axes in plan.grids:
        names = [n for n in axes if n != "seed"]
        seeds = axes.get("seed", [plan.fixed.get("seed", _DEFAULTS["seed"])])
        for combo in itertools.product(*(axes[n] for n in names)):
            g = dict(zip(names, combo))
            group = tuple(g.items())
            for i, seed in enumerate(seeds):
                base = dict(g, **({"seed": seed} if "seed" in axes else {}))
                if plan.select_lr is None:
                    variants = [(dict(base), "run")]
                elif i < plan.select_seeds:
                    variants = [(dict(base, lr=lr), "select") for lr in plan.select_lr]
                else:
                    variants = [(dict(base, lr=SELECTED), "final")]
                for key, phase in variants:
                    ordered = {n: key[n] for n in axes if n in key}
                    ordered.update({k: v for k, v in key.items() if k not in ordered})
                    cid = "__".join(f"{k}={_fmt(v)}" for k, v in ordered.items()) or "default"
                    fields = dict(plan.fixed, **{k: v for k, v in ordered.items()})
                    rf = fields.pop("ranks_from", None)
                    if fields.get("lr") == SELECTED:
                        fields["lr"] = plan.select_lr[0]  # placeholder, resolved before it runs
                    cell = Cell(cid, ordered, fields, group, seed, phase, rf)
                    if cid in seen:
                        if seen[cid].fields != cell.fields:  # pragma: no cover - ids encode the key
                            raise ValueError(f"grid: two different cells share the id {cid}")
                        continue
                    seen[cid] = cell
                    cells.append(cell)
    if len(cells) == 0:
        raise ValueError("grid: no cells")
    for c in cells:
        _check_cell(plan, c, cells)
    return cells


def _check_cell(plan: Plan, c: Cell, cells: list):
    kw = {k: (tuple(v) if FIELD_KINDS[k].startswith("tuple") and v is not None else v)
          for k, v in c.fields.items()}
    kw = {k: ({n: tuple(r) for n, r in v.items()} if FIELD_KINDS[k] == "dict" else v) for k, v in kw.items()}
    try:
        TrainConfig(**kw).validate()
    except ValueError as e:
        msg = re.sub(r"^(\w+) \(--[\w-]+\)", r"\1", str(e))
        raise ValueError(f"grid: cell {c.id}: {msg}") from None
    data = c.fields.get("data", _DEFAULTS["data"])
    if data != "embedded" and not os.path.isdir(data):
        raise ValueError(f"grid: cell {c.id}: data: expected 'embedded' or a folder of IDX / "
                         f"CIFAR-10 files, got {data!r} (no such folder)")
    if plan.select_lr is not None and not c.fields.get("val_fraction", 0):
        raise ValueError(f"--select-lr: chooses by validation accuracy, so it needs a validation "
                         f"split: add --set val_fraction=0.1 (cell {c.id} has val_fraction 0)")
    if c.ranks_from is not None:
        if c.ranks_from not in METHODS:
            raise ValueError(f"grid: cell {c.id}: ranks_from: expected one of {', '.join(METHODS)}, "
                             f"got {c.ranks_from!r}")
        if "ranks" in c.fields:
            raise ValueError(f"grid: cell {c.id}: ranks_from and ranks exclude each other")
        if "method" not in dict(c.group):
            raise ValueError(f"grid: cell {c.id}: ranks_from needs method as an axis of its grid")
        if c.ranks_from == c.fields.get("method", _DEFAULTS["method"]):
            raise ValueError(f"grid: cell {c.id}: ranks_from: names the cell's own method (use "
                             f"[[grid]] tables in a --grid-file to give it to some methods only)")
        src = source_group(c)
        sources = [s for s in cells if plain_group(s.group) == src and s.seed == c.seed]
        if not sources:
            raise ValueError(f"grid: cell {c.id}: ranks_from={c.ranks_from}: the sweep has no cell "
                             f"{', '.join(f'{k}={_fmt(v)}' for k, v in src)} with seed {c.seed}")
        if plan.select_lr is None and len(sources) > 1:
            raise ValueError(f"grid: cell {c.id}: ranks_from={c.ranks_from}: more than one source "
                             f"cell ({', '.join(s.id for s in sources)})")


def source_group(c: Cell) -> tuple:
    """The group whose final ranks a ``ranks_from`` cell starts from: the same axes, the other
    method, ranks_from none (an axis in a grid with ranks_from = ["none", "tdlrt"])."""
    return tuple((k, c.ranks_from if k == "method" else v) for k, v in c.group if k != "ranks_from")


def plain_group(group) -> tuple:
    """A group without a ``ranks_from`` of none: how source groups are matched."""
    return tuple((k, v) for k, v in group if not (k == "ranks_from" and v is None))


def diff_plans(old: dict, new: dict) -> list:
    """What differs between two plans (as recorded in sweep.json), one phrase per key."""
    out = []
    for k in ("grids", "set", "select_lr", "select_seeds"):
        # the order of a grid's axes makes the cell ids, so it counts; that of --set does not
        a, b = (json.dumps(p.get(k), sort_keys=(k == "set")) for p in (old, new))
        if a != b:
            out.append(f"{'grid' if k == 'grids' else k}: recorded {a}, given {b}")
    return out
