"""refdlrt as a correctness oracle for other TDLRT implementations (docs/ORACLE.md).

``export`` writes golden cases (inputs and every intermediate of the algorithm, per case one
``.npz``, and a ``manifest.json``); ``check`` compares a candidate (a directory of the same
layout, or an adapter object with one method per case kind) quantity by quantity, in the order
of the algorithm, comparing only basis-independent quantities, and names the first step that
differs, with a hint where the difference matches a known bug class.
"""

from .check import Report, check, load_golden
from .export import export
from .npz import OracleFileError
from .reference import KINDS, RefdlrtAdapter

__all__ = ["check", "export", "load_golden", "Report", "OracleFileError", "RefdlrtAdapter", "KINDS"]
