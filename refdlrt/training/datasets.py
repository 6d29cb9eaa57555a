"""Dataset loaders: IDX files (MNIST, Fashion-MNIST), CIFAR-10 python batches, and the MNIST
test split embedded in the package, and ``load_dataset``, the CLI's ``--data``. Host data only
(NumPy); callers move batches to the device.

Every loader returns a :class:`~refdlrt.training.data.Dataset` whose images are float32 in
[0, 1], laid out N, C, H, W, and whose labels are int64 in 0..n_classes-1. The type and what
is done with a loaded dataset (standardisation, holdout, minibatches) live in
:mod:`refdlrt.training.data`; they are re-exported here, so either import works.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.resources
import os
import pickle
import zlib

import numpy as np

from .data import VAL_SPLIT_STREAM, Dataset, _check_ints, holdout, iterate_minibatches, standardize

__all__ = ["Dataset", "standardize", "read_idx", "load_mnist_dir", "load_fashion_mnist",
           "load_embedded_mnist", "embedded_mnist_split", "load_cifar10_dir", "load_dataset",
           "iterate_minibatches", "holdout", "FASHION_MNIST_DEBIAN_DIR", "VAL_SPLIT_STREAM"]

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package installs the full Fashion-MNIST (IDX, gzip)."""

EMBEDDED_MNIST_SIZE = 10_000
MNIST_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"


# ----------------------------------------------------------------------------- IDX files
def _parse_idx(data: bytes, where: str) -> np.ndarray:
    """Decode IDX bytes (gzip-compressed if they start with the gzip magic 1f 8b)."""
    if data[:2] == b"\x1f\x8b":  # gzip magic
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{where}: expected a complete gzip stream, got a corrupt or "
                             f"truncated one ({e})") from None
    if len(data) < 4:
        raise ValueError(f"{where}: expected an IDX header of at least 4 bytes, got {len(data)}")
    zero, dtype_code, ndim = data[:2], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero != b"\x00\x00" or dtype_code != 0x08 or ndim == 0:
        raise ValueError(f"{where}: expected an IDX magic number 0x000008NN (unsigned bytes, "
                         f"NN >= 1 dims; 2051 images, 2049 labels), got {magic} (0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{where}: expected a {header}-byte header for {ndim} dims, "
                         f"got {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "trailing bytes"
        raise ValueError(f"{where}: {kind}: expected {expected} payload bytes for dims {dims}, "
                         f"got {got} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path) -> np.ndarray:
    """Read an IDX file of unsigned bytes, raw or gzip-compressed, into a uint8 array.

    Compression is detected by the gzip magic bytes, not by the file name.

    Notes
    -----
    IDX layout: bytes 0-1 zero, byte 2 the element type (0x08 = unsigned byte, the only one
    read here), byte 3 the number of dims d, then d big-endian uint32 sizes, then
    prod(sizes) bytes in C order. MNIST images have magic 2051 (d = 3), labels 2049 (d = 1).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _parse_idx(f.read(), path)


def _to_unit(a: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 in [0, 1] (x / 255)."""
    return a.astype(np.float32) / np.float32(255.0)


def _images_labels_to_arrays(images, labels, img_where, lbl_where, n_classes=10):
    """uint8 (N, H, W) images and (N,) labels -> float32 (N, 1, H, W) in [0, 1], int64 labels."""
    for a, ndim, where, what in ((images, 3, img_where, "images"),
                                 (labels, 1, lbl_where, "labels")):
        if a.ndim != ndim:  # magic 0x0803 = 2051 images, 0x0801 = 2049 labels
            raise ValueError(f"{where}: expected {what} (magic {0x800 + ndim}, {ndim} dims), "
                             f"got {a.ndim} dims {a.shape} (magic {0x800 + a.ndim})")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"expected as many labels as images, got {labels.shape[0]} labels in "
                         f"{lbl_where} and {images.shape[0]} images in {img_where}")
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"{lbl_where}: expected labels in 0..{n_classes - 1}, "
                         f"got max {labels.max()}")
    return _to_unit(images)[:, None], labels.astype(np.int64)  # N, 1, H, W


def _require_dir(path: str, expected: str):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{expected}, got {path!r}, which is not a directory")


def _find_mnist_file(path: str, stem: str) -> str | None:
    """First existing of stem, stem.gz, and the dotted variant (``train-images.idx3-ubyte``)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = os.path.join(path, name)
        if os.path.isfile(p):
            return p
    return None


def load_mnist_dir(path, *, kind: str = "mnist") -> Dataset:
    """Load MNIST or Fashion-MNIST from a directory of the four standard IDX files.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, each raw or ``.gz`` (also the
    ``train-images.idx3-ubyte`` spelling). Both splits are required (a directory with only the
    t10k files is an error). ``kind`` becomes ``Dataset.name``. Any H x W, same for both splits.
    """
    path = os.fspath(path)
    _require_dir(path, f"{kind}: expected a directory of IDX files")
    found = {k: _find_mnist_file(path, stem) for k, stem in MNIST_STEMS.items()}
    missing = [MNIST_STEMS[k] for k, p in found.items() if p is None]
    if missing:
        have = [os.path.basename(p) for p in found.values() if p is not None]
        only_test = not (found["train_images"] or found["train_labels"]) and len(have) == 2
        hint = ("; only the test split (t10k) is there and the training split is required (to "
                "split the 10,000 MNIST test images use --data embedded)") if only_test else ""
        raise FileNotFoundError(
            f"{path}: expected the IDX files {list(MNIST_STEMS.values())} (raw or .gz), "
            f"missing {missing}, found {have}{hint}")
    arrays = {k: read_idx(p) for k, p in found.items()}
    x_train, y_train = _images_labels_to_arrays(arrays["train_images"], arrays["train_labels"],
                                                found["train_images"], found["train_labels"])
    x_test, y_test = _images_labels_to_arrays(arrays["test_images"], arrays["test_labels"],
                                              found["test_images"], found["test_labels"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{path}: expected train and test images of one size, got "
                         f"{x_train.shape[2:]} and {x_test.shape[2:]}")
    return Dataset(x_train, y_train, x_test, y_test, name=kind, n_classes=10, source=path)


def load_fashion_mnist(path=FASHION_MNIST_DEBIAN_DIR) -> Dataset:
    """Load the full Fashion-MNIST (60,000 / 10,000) from IDX files.

    The default is where Debian's ``dataset-fashion-mnist`` package installs it
    (``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``).
    """
    path = os.fspath(path)
    _require_dir(path, "fashion-mnist: expected the directory of its IDX files (on Debian: "
                       "apt-get install dataset-fashion-mnist)")
    return load_mnist_dir(path, kind="fashion-mnist")


# ----------------------------------------------------------------------------- embedded MNIST
def _embedded_idx(name: str) -> np.ndarray:
    res = importlib.resources.files("refdlrt") / "_embedded" / "mnist" / name
    return _parse_idx(res.read_bytes(), f"embedded:refdlrt/_embedded/mnist/{name}")


def embedded_mnist_split(n_train: int = 8000, n_test: int = 2000, seed: int = 0):
    """Row indices (train_idx, test_idx) of the embedded 10,000 images used by the loader.

    Notes
    -----
    p = np.random.default_rng(seed).permutation(10000); train_idx = p[:n_train],
    test_idx = p[n_train:n_train + n_test]. Disjoint because p is a permutation.
    """
    _check_ints(n_train=n_train, n_test=n_test, seed=seed)
    if n_train < 1 or n_test < 1 or n_train + n_test > EMBEDDED_MNIST_SIZE:
        raise ValueError(f"expected n_train >= 1, n_test >= 1 and n_train + n_test <= "
                         f"{EMBEDDED_MNIST_SIZE}, got n_train={n_train}, n_test={n_test}")
    p = np.random.default_rng(seed).permutation(EMBEDDED_MNIST_SIZE)
    return p[:n_train], p[n_train:n_train + n_test]


def load_embedded_mnist(*, n_train: int = 8000, n_test: int = 2000, seed: int = 0) -> Dataset:
    """The MNIST test split shipped in the package (10,000 images, CC BY-SA 3.0), split in two
    by :func:`embedded_mnist_split`: a permutation from ``np.random.default_rng(seed)``, first
    ``n_train`` rows train, next ``n_test`` test."""
    train_idx, test_idx = embedded_mnist_split(n_train, n_test, seed)
    x, y = _images_labels_to_arrays(_embedded_idx("t10k-images-idx3-ubyte.gz"),
                                    _embedded_idx("t10k-labels-idx1-ubyte.gz"),
                                    "embedded images", "embedded labels")
    return Dataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                   name="mnist", n_classes=10, source="embedded")


# ----------------------------------------------------------------------------- CIFAR-10
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled ndarray needs; anything else raises
    (an untrusted pickle could otherwise call any function it names)."""

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 at protocol <= 2
    }
    for _mod in ("numpy.core", "numpy._core"):
        _ALLOWED[(_mod + ".multiarray", "_reconstruct")] = np.zeros(1).__reduce__()[0]
        _ALLOWED[(_mod + ".multiarray", "scalar")] = np.int64(0).__reduce__()[0]
        _ALLOWED[(_mod + ".numeric", "_frombuffer")] = np.zeros(1).__reduce_ex__(5)[0]
    del _mod

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                         f"arrays, lists and dicts are expected") from None


def _read_cifar_batch(path: str):
    """One CIFAR-10 python batch -> uint8 (N, 3, 32, 32) images and int64 (N,) labels."""
    with open(path, "rb") as f:
        try:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: expected a pickled CIFAR-10 batch dict, got an "
                             f"unreadable pickle ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    get = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in get or "labels" not in get:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', got {list(d)}")
    data, labels = np.asarray(get["data"]), np.asarray(get["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: expected b'data' uint8 of shape (N, 3072), "
                         f"got {data.dtype} {data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: expected {data.shape[0]} labels (one per image), "
                         f"got shape {labels.shape}")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected integer labels in 0..9, got dtype {labels.dtype} "
                         f"min {labels.min()} max {labels.max()}")
    # rows are 1024 R, 1024 G, 1024 B values, each plane row-major 32 x 32
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)  # N, 3, 32, 32


def _cifar_root(path: str) -> str:
    sub = os.path.join(path, CIFAR10_SUBDIR)
    return sub if os.path.isdir(sub) else path


def load_cifar10_dir(path) -> Dataset:
    """Load CIFAR-10 from python batches ``data_batch_1..5``, ``test_batch`` in ``path`` or in
    ``path/cifar-10-batches-py``. Unpickling untrusted files is unsafe, so they are read with an
    unpickler that accepts only numpy arrays, lists and dicts; only b"data", b"labels" are used.
    """
    path = os.fspath(path)
    _require_dir(path, "cifar10: expected a directory")
    root = _cifar_root(path)
    wanted = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
    missing = [n for n in wanted if not os.path.isfile(os.path.join(root, n))]
    if missing:
        have = [n for n in wanted if n not in missing]
        raise FileNotFoundError(f"{root}: expected CIFAR-10 python batches {list(wanted)}, "
                                f"missing {missing}, found {have}")
    train = [_read_cifar_batch(os.path.join(root, n)) for n in CIFAR10_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(os.path.join(root, CIFAR10_TEST_FILE))
    x_train = np.concatenate([b[0] for b in train])  # N, 3, 32, 32
    y_train = np.concatenate([b[1] for b in train])
    return Dataset(_to_unit(x_train), y_train, _to_unit(x_test), y_test,
                   name="cifar10", n_classes=10, source=root)


# ----------------------------------------------------------------------------- dispatch
def load_dataset(spec: str) -> Dataset:
    """Load what the CLI's ``--data`` names: ``"embedded"`` or a directory.

    A directory holding any MNIST-style IDX file is read by :func:`load_mnist_dir` (named
    "fashion-mnist" when the directory's name contains "fashion", else "mnist"); one holding
    CIFAR-10 batches (directly or in ``cifar-10-batches-py``) by :func:`load_cifar10_dir`.
    """
    if spec == "embedded":
        return load_embedded_mnist()
    path = os.fspath(spec)
    _require_dir(path, "--data: expected 'embedded' or a directory")
    if any(_find_mnist_file(path, stem) for stem in MNIST_STEMS.values()):
        base = os.path.basename(os.path.abspath(path)).lower()
        return load_mnist_dir(path, kind="fashion-mnist" if "fashion" in base else "mnist")
    root = _cifar_root(path)
    if any(os.path.isfile(os.path.join(root, n))
           for n in CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)):
        return load_cifar10_dir(path)
    shown = sorted(os.listdir(path))[:10]
    raise FileNotFoundError(
        f"{path}: expected MNIST-style IDX files ({list(MNIST_STEMS.values())}, raw or .gz) or "
        f"CIFAR-10 python batches ({CIFAR10_TRAIN_FILES[0]}..., {CIFAR10_TEST_FILE}, possibly in "
        f"{CIFAR10_SUBDIR}/), got the entries (first 10) {shown}")
