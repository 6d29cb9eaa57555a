"""The oracle's files: deterministic ``.npz`` (see :mod:`refdlrt._npz`, shared with checkpoints)."""

from .._npz import NpzFileError as OracleFileError
from .._npz import read_npz, sha256, write_npz

__all__ = ["OracleFileError", "read_npz", "sha256", "write_npz"]
