"""Small test-only helpers shared by several test modules."""


class ForeignArray:
    """Looks like a CuPy array to get_xp (module "cupy"), so mixing can be tested without a GPU."""

    __module__ = "cupy"

    def __init__(self, a):
        self.dtype, self.shape, self.ndim = a.dtype, a.shape, a.ndim
