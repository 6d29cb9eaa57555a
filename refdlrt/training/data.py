"""The in-memory dataset: the :class:`Dataset` type every loader returns, per-channel
standardisation, the validation holdout, and the minibatch indices of an epoch. Host data only
(NumPy); callers move batches to the device. The loaders (files and the embedded MNIST) are in
:mod:`refdlrt.training.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .._checks import is_int

__all__ = ["Dataset", "standardize", "holdout", "iterate_minibatches", "VAL_SPLIT_STREAM"]


def _check_ints(**named):
    for nm, v in named.items():
        if not is_int(v):
            raise TypeError(f"{nm}: expected an int, got {v!r}")


def _check_array(a, dtype, ndim: int, name: str, layout: str):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected a {np.dtype(dtype)} numpy array ({layout}), got {got}")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test image classification dataset held in host memory.

    x_train, x_test: float32 (N, C, H, W), in [0, 1] as loaded; y_train, y_test: int64 (N,) in
    0..n_classes-1; name: "mnist", "fashion-mnist", "cifar10"; source: directory or "embedded".
    x_val, y_val: an optional validation split held out from the training images by
    :func:`holdout` (None when there is none; loaders never set it).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int
    source: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self):
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError("x_val, y_val: expected both or neither")
        for split in ("train", "test") + (("val",) if self.x_val is not None else ()):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            _check_array(x, np.float32, 4, f"x_{split}", "N, C, H, W")
            _check_array(y, np.int64, 1, f"y_{split}", "N,")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{split}: expected as many labels as images, got "
                                 f"{y.shape[0]} labels for {x.shape[0]} images")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"y_{split}: expected labels in 0..{self.n_classes - 1}, "
                                 f"got min {y.min()} max {y.max()}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"expected train and test images of one shape, got "
                             f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}")

    @property
    def image_shape(self) -> tuple[int, int, int]:  # C, H, W of one image
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        val = "" if self.x_val is None else f", val={self.x_val.shape}"
        return (f"Dataset(name={self.name!r}, n_classes={self.n_classes}, "
                f"train={self.x_train.shape}{val}, test={self.x_test.shape}, source={self.source!r})")


def standardize(ds: Dataset) -> Dataset:
    """Return a copy of ``ds`` with images standardised per channel by training statistics.

    Notes
    -----
    x'[n, c] = (x[n, c] - mu_c) / sigma_c for every split, where mu_c and sigma_c are the mean and
    (population) standard deviation of channel c over all training pixels (axes N, H, W), computed
    in float64. The test and validation splits never enter the statistics.
    """
    x64 = ds.x_train.astype(np.float64)
    mu = x64.mean(axis=(0, 2, 3), keepdims=True)  # 1, C, 1, 1
    sigma = x64.std(axis=(0, 2, 3), keepdims=True)  # 1, C, 1, 1
    if np.any(sigma == 0):
        raise ValueError(f"{ds.name}: expected every channel of x_train to vary, got "
                         f"standard deviations {sigma.ravel().tolist()}")
    x_train = ((x64 - mu) / sigma).astype(np.float32)
    x_test = ((ds.x_test.astype(np.float64) - mu) / sigma).astype(np.float32)
    extra = {}
    if ds.x_val is not None:
        extra["x_val"] = ((ds.x_val.astype(np.float64) - mu) / sigma).astype(np.float32)
    return replace(ds, x_train=x_train, x_test=x_test, **extra)


VAL_SPLIT_STREAM = 0x76616C  # "val": the validation split's generator is seeded (seed, this)


def holdout(ds: Dataset, *, train_size: int | None = None, val_fraction: float = 0.0,
            seed: int = 0) -> Dataset:
    """Keep the first ``train_size`` training images (all if None) and hold out a validation
    split of ``round(val_fraction * n)`` of them; the test split is never touched.

    Parameters
    ----------
    ds : Dataset
        As loaded (no validation split yet).
    train_size : int or None
        Number of training images kept, the first ones in the loader's order.
    val_fraction : float
        Share of the kept training images held out, in [0, 1).
    seed : int
        The split is ``np.random.default_rng((seed, VAL_SPLIT_STREAM)).permutation(n)``: its
        first ``n_val`` rows are the validation split, the others (in their original order) stay
        training images. A generator of its own, so the training run's stream is unchanged.

    Returns
    -------
    Dataset
        With ``x_val``, ``y_val`` set when ``val_fraction > 0``; ``ds`` itself when nothing
        changes.
    """
    n = len(ds.y_train)
    if train_size is not None:
        if not is_int(train_size) or not 1 <= train_size <= n:
            raise ValueError(f"train_size (--train-size): expected an integer in 1..{n} (the "
                             f"training images of {ds.name}), got {train_size!r}")
        if train_size < n:
            ds = replace(ds, x_train=ds.x_train[:train_size], y_train=ds.y_train[:train_size])
            n = train_size
    if not val_fraction:
        return ds
    n_val = int(round(val_fraction * n))
    if not 1 <= n_val < n:
        raise ValueError(f"val_fraction (--val-fraction): {val_fraction} of {n} training images "
                         f"holds out {n_val}; expected at least one for validation and one for "
                         f"training")
    p = np.random.default_rng((seed, VAL_SPLIT_STREAM)).permutation(n)
    val, train = p[:n_val], np.sort(p[n_val:])
    return replace(ds, x_train=ds.x_train[train], y_train=ds.y_train[train],
                   x_val=ds.x_train[val], y_val=ds.y_train[val])


def _minibatches(order: np.ndarray, batch_size: int, drop_last: bool):
    stop = order.shape[0] - (order.shape[0] % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size]


def iterate_minibatches(n: int, batch_size: int, rng, *, shuffle: bool = True,
                        drop_last: bool = False):
    """Yield int64 index arrays that split ``range(n)`` into minibatches for one epoch.

    With ``shuffle`` the order is ``rng.permutation(n)`` (one draw per call), else 0..n-1;
    ``rng`` may be None only without shuffling. Consecutive slices of ``batch_size``; the last
    one is shorter unless ``drop_last``, which skips it. Arguments are checked at call time.
    """
    _check_ints(n=n, batch_size=batch_size)
    if n < 0 or batch_size < 1:
        raise ValueError(f"expected n >= 0 and batch_size >= 1, got n={n}, "
                         f"batch_size={batch_size}")
    if shuffle and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator when shuffle=True, "
                        f"got {type(rng).__name__}")
    order = rng.permutation(n) if shuffle else np.arange(n, dtype=np.int64)
    return _minibatches(order, int(batch_size), bool(drop_last))
