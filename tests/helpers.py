"""Small test-only helpers shared by several test modules."""

import numpy as np

from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import assert_close


def cast_tucker(Y, dtype):
    """Y with its core and factors cast to ``dtype``."""
    return Tucker(Y.core.astype(dtype), tuple(U.astype(dtype) for U in Y.factors))


class ForeignArray:
    """Looks like a CuPy array to get_xp (module "cupy"), so mixing can be tested without a GPU."""

    __module__ = "cupy"

    def __init__(self, a):
        self.dtype, self.shape, self.ndim = a.dtype, a.shape, a.ndim


def check_float32_matches_float64(forward, backward, x, dy, xp, **kwargs):
    """A single-output forward/backward pair run in float32 keeps float32 and agrees with its
    float64 run to the float32 tolerance (scaled by the largest input)."""
    y64, c64 = forward(xp.asarray(x), **kwargs)
    y32, c32 = forward(xp.asarray(x.astype(np.float32)), **kwargs)
    dx64 = backward(xp.asarray(dy), c64)
    dx32 = backward(xp.asarray(dy.astype(np.float32)), c32)
    assert y32.dtype == np.float32 and dx32.dtype == np.float32
    assert_close(y32, y64, np.float32, scale=float(np.abs(x).max()))
    assert_close(dx32, dx64, np.float32, scale=float(np.abs(dy).max()))


def write_mnist_dir(path, x_train, y_train, x_test, y_test):
    """An MNIST-format folder (gzip IDX files, as the loaders read them) of images in [0, 1]
    (N, 1, 28, 28) and integer labels; returns the folder as a string."""
    import gzip
    import struct

    def write(name, arr, magic):
        with gzip.open(path / name, "wb") as f:
            f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in arr.shape))
            f.write(arr.astype(np.uint8).tobytes())

    for stem, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write(f"{stem}-images-idx3-ubyte.gz", np.rint(x[:, 0] * 255), 2051)
        write(f"{stem}-labels-idx1-ubyte.gz", y, 2049)
    return str(path)
