"""Tests for refdlrt.training.datasets and the Dataset type of refdlrt.training.data (re-exported
there): the embedded MNIST split, IDX and CIFAR-10 readers built on small files written here, the
dispatcher, standardisation, and minibatch iteration."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.tolerances import assert_close
from refdlrt.training.datasets import (
    FASHION_MNIST_DEBIAN_DIR,
    Dataset,
    embedded_mnist_split,
    iterate_minibatches,
    load_cifar10_dir,
    load_dataset,
    load_embedded_mnist,
    load_fashion_mnist,
    load_mnist_dir,
    read_idx,
    standardize,
)

# From refdlrt/_embedded/mnist/README.md.
README_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
README_MD5 = {
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


def _embedded_bytes(name: str) -> bytes:
    """Uncompressed bytes of an embedded file, read without the code under test."""
    res = importlib.resources.files("refdlrt") / "_embedded" / "mnist" / name
    return gzip.decompress(res.read_bytes())


@pytest.fixture(scope="module")
def embedded():
    return load_embedded_mnist()


# ----------------------------------------------------------------------------- embedded MNIST

def test_embedded_readme_states_what_we_check():
    readme = importlib.resources.files("refdlrt") / "_embedded" / "mnist" / "README.md"
    text = readme.read_text()
    assert " ".join(map(str, README_COUNTS)) in text
    for md5 in README_MD5.values():
        assert md5 in text
    assert "Creative Commons Attribution-Share Alike 3.0" in text


@pytest.mark.parametrize("name", sorted(README_MD5))
def test_embedded_md5_matches_readme(name):
    assert hashlib.md5(_embedded_bytes(name)).hexdigest() == README_MD5[name]


def test_embedded_shapes_dtypes_range(embedded):
    ds = embedded
    assert ds.x_train.shape == (8000, 1, 28, 28) and ds.x_test.shape == (2000, 1, 28, 28)
    assert ds.y_train.shape == (8000,) and ds.y_test.shape == (2000,)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0.0 and x.max() == 1.0  # MNIST uses the full 0..255 range
    for y in (ds.y_train, ds.y_test):
        assert set(np.unique(y).tolist()) == set(range(10))
    assert (ds.name, ds.n_classes, ds.source, ds.image_shape) == ("mnist", 10, "embedded",
                                                                  (1, 28, 28))


def test_embedded_class_counts_match_readme(embedded):
    # default split 8000 + 2000 covers all 10,000 images exactly once
    y = np.concatenate([embedded.y_train, embedded.y_test])
    assert np.bincount(y, minlength=10).tolist() == README_COUNTS
    raw = np.frombuffer(_embedded_bytes("t10k-labels-idx1-ubyte.gz"), np.uint8, offset=8)
    assert np.bincount(raw, minlength=10).tolist() == README_COUNTS


def test_embedded_split_is_the_documented_permutation_and_disjoint(embedded):
    # Disjointness is checked on row indices of the 10,000-image file (images may repeat).
    train_idx, test_idx = embedded_mnist_split(8000, 2000, 0)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.unique(train_idx).size == 8000 and np.unique(test_idx).size == 2000
    perm = np.random.default_rng(0).permutation(10_000)
    np.testing.assert_array_equal(np.concatenate([train_idx, test_idx]), perm)
    # the loader's rows are exactly those rows of the raw files
    img = np.frombuffer(_embedded_bytes("t10k-images-idx3-ubyte.gz"), np.uint8, offset=16)
    img = img.reshape(10_000, 28, 28)
    lab = np.frombuffer(_embedded_bytes("t10k-labels-idx1-ubyte.gz"), np.uint8, offset=8)
    for x, y, idx in ((embedded.x_train, embedded.y_train, train_idx),
                      (embedded.x_test, embedded.y_test, test_idx)):
        np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), img[idx])
        np.testing.assert_array_equal(y, lab[idx])


def test_embedded_deterministic_by_seed():
    a = load_embedded_mnist(n_train=300, n_test=100, seed=3)
    b = load_embedded_mnist(n_train=300, n_test=100, seed=3)
    c = load_embedded_mnist(n_train=300, n_test=100, seed=4)
    for f in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.x_test, c.x_test)
    # a smaller split is a prefix of the same permutation
    small = load_embedded_mnist(n_train=10, n_test=5, seed=3)
    np.testing.assert_array_equal(small.x_train, a.x_train[:10])


@pytest.mark.parametrize("n_train, n_test", [(9000, 1001), (0, 10), (10, 0), (-1, 5)])
def test_embedded_bad_sizes(n_train, n_test):
    with pytest.raises(ValueError, match=r"n_train \+ n_test <= 10000.*got n_train="):
        load_embedded_mnist(n_train=n_train, n_test=n_test)


def test_embedded_non_int_size():
    with pytest.raises(TypeError, match="n_train: expected an int, got 1.5"):
        load_embedded_mnist(n_train=1.5)


# ----------------------------------------------------------------------------- IDX files

def write_idx(path, arr, *, gz=False, type_byte=0x08, cut=0, extra=b""):
    """Write ``arr`` (uint8) as IDX: 2 zero bytes, type byte, ndim, big-endian dims, data."""
    arr = np.asarray(arr, dtype=np.uint8)
    blob = struct.pack(">BBBB", 0, 0, type_byte, arr.ndim)
    blob += struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes() + extra
    blob = blob[: len(blob) - cut]
    with open(path, "wb") as f:
        f.write(gzip.compress(blob) if gz else blob)
    return str(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3, 1, 4)])
def test_read_idx_roundtrip(tmp_path, rng, gz, shape):
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    # misleading names: compression must be detected from the bytes
    out = read_idx(write_idx(tmp_path / ("f.raw" if gz else "f.gz"), arr, gz=gz))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    out[0] = 0  # writeable


@pytest.mark.parametrize("type_byte", [0x0D, 0x09])
def test_read_idx_wrong_type_byte(tmp_path, type_byte):
    p = write_idx(tmp_path / "x", np.zeros((2, 2)), type_byte=type_byte)
    with pytest.raises(ValueError, match=rf"magic number 0x000008NN.*got .*0x00000{type_byte:x}02"):
        read_idx(p)


def test_read_idx_nonzero_leading_bytes(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match=r"expected an IDX magic number.*0x01000801"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_payload(tmp_path, gz):
    p = write_idx(tmp_path / "imgs", np.ones((3, 4, 5)), gz=gz, cut=1)
    with pytest.raises(ValueError, match=r"imgs: truncated: expected 60 payload bytes for "
                                         r"dims \(3, 4, 5\), got 59 bytes"):
        read_idx(p)


def test_read_idx_trailing_bytes(tmp_path):
    p = write_idx(tmp_path / "x", np.ones((2, 2)), extra=b"\x00")
    with pytest.raises(ValueError, match="trailing bytes: expected 4 payload bytes.*got 5"):
        read_idx(p)


def test_read_idx_short_header_and_truncated_gzip(tmp_path):
    p = tmp_path / "short"
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="short: expected a 16-byte header for 3 dims, got 6"):
        read_idx(p)
    q = tmp_path / "cut.gz"
    q.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(ValueError, match="cut.gz: expected a complete gzip stream"):
        read_idx(q)


def write_mnist_dir(d, rng, *, n_train=7, n_test=5, hw=(28, 28), gz=True, dotted=False,
                    which=("train", "t10k")):
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (x, y)
        if split not in which:
            continue
        sep = "." if dotted else "-"
        suffix = ".gz" if gz else ""
        write_idx(d / f"{split}-images{sep}idx3-ubyte{suffix}", x, gz=gz)
        write_idx(d / f"{split}-labels{sep}idx1-ubyte{suffix}", y, gz=gz)
    return arrays


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (True, True)])
def test_load_mnist_dir(tmp_path, rng, gz, dotted):
    arrays = write_mnist_dir(tmp_path, rng, gz=gz, dotted=dotted)
    ds = load_mnist_dir(tmp_path, kind="fashion-mnist")
    assert (ds.name, ds.n_classes, ds.source) == ("fashion-mnist", 10, str(tmp_path))
    for x, y, split in ((ds.x_train, ds.y_train, "train"), (ds.x_test, ds.y_test, "t10k")):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (arrays[split][0].shape[0], 1, 28, 28)
        assert 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(np.rint(x[:, 0] * 255).astype(np.uint8), arrays[split][0])
        np.testing.assert_array_equal(y, arrays[split][1])


def test_load_mnist_dir_only_test_split(tmp_path, rng):
    write_mnist_dir(tmp_path, rng, which=("t10k",))
    with pytest.raises(FileNotFoundError, match=r"missing \['train-images-idx3-ubyte', "
                       r"'train-labels-idx1-ubyte'\], found \['t10k-images-idx3-ubyte.gz', "
                       r"'t10k-labels-idx1-ubyte.gz'\]; only the test split"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_one_file_missing(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"missing \['t10k-labels-idx1-ubyte'\]") as e:
        load_mnist_dir(tmp_path)
    assert "only the test split" not in str(e.value)


def test_load_mnist_dir_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a directory of IDX files, got .*nope"):
        load_mnist_dir(tmp_path / "nope")


def test_load_mnist_dir_count_mismatch(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6), gz=True)
    with pytest.raises(ValueError, match=r"as many labels as images, got 6 labels in "
                                         r".*train-labels.*7 images in .*train-images"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_label_out_of_range(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", [0, 1, 2, 10, 3], gz=True)
    with pytest.raises(ValueError, match=r"t10k-labels.*expected labels in 0\.\.9, got max 10"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_labels_file_in_images_slot(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(7), gz=True)
    with pytest.raises(ValueError, match=r"train-images.*expected images \(magic 2051, 3 dims\), "
                                         r"got 1 dims \(7,\) \(magic 2049\)"):
        load_mnist_dir(tmp_path)


def test_load_mnist_dir_image_size_mismatch(tmp_path, rng):
    write_mnist_dir(tmp_path, rng)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 27)), gz=True)
    with pytest.raises(ValueError, match=r"train and test images of one size, got \(28, 28\) "
                                         r"and \(28, 27\)"):
        load_mnist_dir(tmp_path)


def test_load_fashion_mnist_from_dir_and_missing(tmp_path, rng):
    write_mnist_dir(tmp_path / "fm", rng, n_train=4, n_test=3)
    ds = load_fashion_mnist(tmp_path / "fm")
    assert ds.name == "fashion-mnist" and ds.x_train.shape == (4, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "absent")


_FM_DIR = os.environ.get("REFDLRT_FASHION_MNIST_DIR", FASHION_MNIST_DEBIAN_DIR)


@pytest.mark.skipif(not os.path.isdir(_FM_DIR), reason=f"no Fashion-MNIST at {_FM_DIR}")
def test_load_fashion_mnist_installed():
    ds = load_fashion_mnist(_FM_DIR)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- CIFAR-10

def cifar_batch(rng, n, *, cols=3072, label_hi=10, n_labels=None):
    data = rng.integers(0, 256, size=(n, cols), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, label_hi, size=n if n_labels is None else n_labels)]
    return {b"batch_label": b"synthetic", b"labels": labels, b"data": data,
            b"filenames": [b"img%d.png" % i for i in range(n)]}


def write_cifar_dir(d, rng, *, protocol=pickle.HIGHEST_PROTOCOL, sizes=(3, 2, 4, 1, 2), n_test=3):
    d.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, n in enumerate(sizes, start=1):
        batches[f"data_batch_{i}"] = cifar_batch(rng, n)
    batches["test_batch"] = cifar_batch(rng, n_test)
    for name, b in batches.items():
        (d / name).write_bytes(pickle.dumps(b, protocol=protocol))
    return batches


def _check_cifar(ds, batches):
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    test = batches["test_batch"]
    data_tr = np.concatenate([b[b"data"] for b in train])
    assert ds.x_train.shape == (data_tr.shape[0], 3, 32, 32) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (test[b"data"].shape[0], 3, 32, 32)
    np.testing.assert_array_equal(ds.y_train, sum((b[b"labels"] for b in train), []))
    np.testing.assert_array_equal(ds.y_test, test[b"labels"])
    assert ds.y_train.dtype == np.int64 and (ds.name, ds.n_classes) == ("cifar10", 10)
    # layout: row = 1024 red, 1024 green, 1024 blue, each 32 x 32 row-major
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 31, 31), (4, 1, 5, 17), (2, 0, 31, 0)]:
        assert round(float(ds.x_train[n, c, h, w]) * 255) == data_tr[n, c * 1024 + h * 32 + w]
    np.testing.assert_array_equal(np.rint(ds.x_test * 255).astype(np.uint8).reshape(-1, 3072),
                                  test[b"data"])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_cifar10_dir(tmp_path, rng, protocol):
    batches = write_cifar_dir(tmp_path, rng, protocol=protocol)
    _check_cifar(load_cifar10_dir(tmp_path), batches)


def test_load_cifar10_nested_dir_and_legacy_numpy_module(tmp_path, rng):
    batches = write_cifar_dir(tmp_path / "cifar-10-batches-py", rng, protocol=2)
    # the real batches name numpy.core.multiarray (numpy 1.x); rewrite the GLOBAL opcodes
    for p in (tmp_path / "cifar-10-batches-py").iterdir():
        blob = p.read_bytes()
        assert b"numpy._core.multiarray\n" in blob
        p.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    ds = load_cifar10_dir(tmp_path)
    _check_cifar(ds, batches)
    assert ds.source == str(tmp_path / "cifar-10-batches-py")


def test_load_cifar10_missing_file(tmp_path, rng):
    write_cifar_dir(tmp_path, rng)
    os.remove(tmp_path / "test_batch")
    with pytest.raises(FileNotFoundError, match=r"missing \['test_batch'\], found "
                                                r"\['data_batch_1'"):
        load_cifar10_dir(tmp_path)


@pytest.mark.parametrize("bad, match", [
    (dict(cols=3071), r"data_batch_2: expected b'data' uint8 of shape \(N, 3072\), got uint8 "
                      r"\(4, 3071\)"),
    (dict(n_labels=3), r"data_batch_2: expected 4 labels \(one per image\), got shape \(3,\)"),
    (dict(label_hi=11), r"data_batch_2: expected integer labels in 0\.\.9"),
])
def test_load_cifar10_bad_batch(tmp_path, rng, bad, match):
    write_cifar_dir(tmp_path, rng)
    b = cifar_batch(np.random.default_rng(0), 4, **bad)
    if "label_hi" in bad:
        b[b"labels"][0] = 10
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(b))
    with pytest.raises(ValueError, match=match):
        load_cifar10_dir(tmp_path)


def test_load_cifar10_not_a_dict_and_missing_keys(tmp_path, rng):
    write_cifar_dir(tmp_path, rng)
    (tmp_path / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ValueError, match="test_batch: expected a pickled dict, got list"):
        load_cifar10_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}))
    with pytest.raises(ValueError, match=r"expected keys b'data' and b'labels', got \[b'data'\]"):
        load_cifar10_dir(tmp_path)


class _Planted:
    """Pickles as a call to os.mkdir: an unpickler that runs it would create the directory."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_load_cifar10_refuses_foreign_globals(tmp_path, rng):
    write_cifar_dir(tmp_path, rng)
    planted = tmp_path / "planted"
    b = cifar_batch(rng, 2)
    b[b"batch_label"] = _Planted(str(planted))
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(b))
    with pytest.raises(ValueError, match=r"data_batch_1: expected a pickled CIFAR-10 batch "
                                         r"dict.*refusing to load global (posix|nt)\.mkdir"):
        load_cifar10_dir(tmp_path)
    assert not planted.exists()


# ----------------------------------------------------------------------------- dispatch

def test_load_dataset_dispatch(tmp_path, rng):
    assert load_dataset("embedded").x_train.shape == (8000, 1, 28, 28)
    write_mnist_dir(tmp_path / "digits", rng, n_train=3, n_test=2)
    assert load_dataset(str(tmp_path / "digits")).name == "mnist"
    write_mnist_dir(tmp_path / "Fashion-MNIST", rng, n_train=3, n_test=2)
    assert load_dataset(str(tmp_path / "Fashion-MNIST") + os.sep).name == "fashion-mnist"
    write_cifar_dir(tmp_path / "c" / "cifar-10-batches-py", rng)
    assert load_dataset(str(tmp_path / "c")).x_test.shape == (3, 3, 32, 32)


def test_load_dataset_partial_mnist_dir_reports_mnist_files(tmp_path, rng):
    write_mnist_dir(tmp_path, rng, which=("t10k",))
    with pytest.raises(FileNotFoundError, match="only the test split"):
        load_dataset(str(tmp_path))


def test_load_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected 'embedded' or a directory, got .*nope"):
        load_dataset(str(tmp_path / "nope"))
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"expected MNIST-style IDX files .*"
                                                r"CIFAR-10 python batches .*\['readme.txt'\]"):
        load_dataset(str(tmp_path))


# ----------------------------------------------------------------------------- Dataset

def _tiny_dataset(rng, c=3):
    x_tr = rng.random((6, c, 4, 5), dtype=np.float32)
    x_te = rng.random((3, c, 4, 5), dtype=np.float32) * 2 + 1  # other statistics than train
    y = rng.integers(0, 10, size=9)
    return Dataset(x_tr, y[:6], x_te, y[6:], name="tiny", n_classes=10, source="test")


def test_standardize_uses_train_statistics_per_channel(rng):
    ds = _tiny_dataset(rng)
    out = standardize(ds)
    assert out.x_train.dtype == np.float32 and out.name == "tiny" and out.y_test is ds.y_test
    for c in range(3):
        vals = ds.x_train[:, c].astype(np.float64).ravel()
        mu = sum(vals) / vals.size
        sigma = (sum((v - mu) ** 2 for v in vals) / vals.size) ** 0.5
        assert_close(out.x_train[:, c], (ds.x_train[:, c] - mu) / sigma, np.float32, scale=2.0)
        assert_close(out.x_test[:, c], (ds.x_test[:, c] - mu) / sigma, np.float32, scale=10.0)
    assert_close(out.x_train.mean(axis=(0, 2, 3)), np.zeros(3), np.float32)
    assert_close(out.x_train.std(axis=(0, 2, 3)), np.ones(3), np.float32)


def test_standardize_constant_channel(rng):
    ds = _tiny_dataset(rng, c=2)
    ds.x_train[:, 1] = 0.5
    with pytest.raises(ValueError, match=r"every channel of x_train to vary.*0\.0\]"):
        standardize(ds)


def test_dataset_validates(rng):
    x = np.zeros((2, 1, 3, 3), np.float32)
    y = np.zeros(2, np.int64)
    with pytest.raises(TypeError, match=r"x_train: expected a float32 numpy array \(N, C, H, W\), "
                                        r"got float64 \(2, 1, 3, 3\)"):
        Dataset(x.astype(np.float64), y, x, y, name="t", n_classes=10, source="s")
    with pytest.raises(ValueError, match="test: expected as many labels as images, got 1 labels"):
        Dataset(x, y, x, y[:1], name="t", n_classes=10, source="s")
    with pytest.raises(ValueError, match=r"y_train: expected labels in 0\.\.1, got min 0 max 2"):
        Dataset(x, np.array([0, 2]), x, y, name="t", n_classes=2, source="s")
    with pytest.raises(ValueError, match="train and test images of one shape"):
        Dataset(x, y, x[:, :, :2], y, name="t", n_classes=10, source="s")


# ----------------------------------------------------------------------------- minibatches

@given(n=st.integers(0, 40), batch_size=st.integers(1, 12), shuffle=st.booleans(),
       drop_last=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_minibatches_partition_one_epoch(n, batch_size, shuffle, drop_last, seed):
    batches = list(iterate_minibatches(n, batch_size, np.random.default_rng(seed),
                                       shuffle=shuffle, drop_last=drop_last))
    n_full, rest = divmod(n, batch_size)
    sizes = [b.size for b in batches]
    assert sizes == [batch_size] * n_full + ([rest] if rest and not drop_last else [])
    seen = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    assert seen.dtype == np.int64 and np.unique(seen).size == seen.size  # each index once
    if not drop_last:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(seen.size))


def test_minibatches_reproducible_and_shuffled():
    def epoch(seed):
        return np.concatenate(list(iterate_minibatches(50, 8, np.random.default_rng(seed))))

    np.testing.assert_array_equal(epoch(7), epoch(7))
    assert not np.array_equal(epoch(7), epoch(8))
    assert not np.array_equal(epoch(7), np.arange(50))
    g = np.random.default_rng(7)  # two epochs from one generator differ
    e1 = np.concatenate(list(iterate_minibatches(50, 8, g)))
    e2 = np.concatenate(list(iterate_minibatches(50, 8, g)))
    np.testing.assert_array_equal(e1, epoch(7))
    assert not np.array_equal(e1, e2)


def test_minibatches_errors_raised_at_call():
    with pytest.raises(ValueError, match="batch_size >= 1, got n=5, batch_size=0"):
        iterate_minibatches(5, 0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator when shuffle=True, got RandomSt"):
        iterate_minibatches(5, 2, np.random.RandomState(0))
    with pytest.raises(TypeError, match="batch_size: expected an int, got 2.0"):
        iterate_minibatches(5, 2.0, np.random.default_rng(0))
    assert [b.tolist() for b in iterate_minibatches(5, 2, None, shuffle=False)] == [
        [0, 1], [2, 3], [4]]
