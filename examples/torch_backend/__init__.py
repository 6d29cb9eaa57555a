"""An independent PyTorch TDLRT backend for refdlrt's conformance checker (see README.md)."""

from .adapter import TorchAdapter
from .tdlrt import BUGS

__all__ = ["BUGS", "TorchAdapter"]
