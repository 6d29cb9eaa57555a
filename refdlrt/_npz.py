"""Deterministic ``.npz`` files: the same arrays give the same bytes (fixed zip timestamps,
sorted names), so golden files can be checked by SHA-256. Reading never unpickles."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile

import numpy as np

__all__ = ["write_npz", "read_npz", "sha256", "NpzFileError"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip file can hold


class NpzFileError(ValueError):
    """A file cannot be used: missing, unreadable, not plain arrays (checkpoints, golden and
    candidate files of the oracle). ``reason`` is the message without the file's name, for
    callers that name the file in words of their own."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


def write_npz(path, arrays: dict) -> str:
    """Write ``arrays`` (name -> array) to ``path`` deterministically; return its SHA-256.

    Written to a temporary file and renamed, so a half-written file is never seen."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            a = a if a.flags.c_contiguous else a.copy(order="C")  # keeps 0-d arrays 0-d
            if a.dtype == object:
                raise TypeError(f"write_npz: {name}: object arrays are not allowed")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            zf.writestr(info, member.getvalue())
    data = buf.getvalue()
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_npz(path) -> dict:
    """name -> NumPy array; raises NpzFileError (never unpickles) on anything else."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise NpzFileError(f"{path}: no such file", "no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        msg = str(e)
        if "Object arrays" in msg or "pickle" in msg:  # never follow NumPy's advice to unpickle
            msg = "it holds Python objects, which would need unpickling; refused"
        reason = f"not a readable .npz of plain arrays ({msg})"
        raise NpzFileError(f"{path}: {reason}", reason) from None
