"""The configuration of a training run (:class:`TrainConfig`, checked by ``validate``) and its
learning-rate schedule (:func:`learning_rate`). The loop itself is :mod:`refdlrt.training.trainer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._checks import is_int
from ..nn.models import METHODS, MODELS

__all__ = ["TrainConfig", "learning_rate"]


@dataclass
class TrainConfig:
    """Everything a run depends on. The defaults are the settings recorded in the README."""

    model: str = "lenet5"
    method: str = "tdlrt"
    tau: float = 0.2
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.5
    schedule: str = "cosine"  # cosine | step | constant
    step_size: int = 5  # epochs between decays of the step schedule
    gamma: float = 0.1  # decay factor of the step schedule
    seed: int = 0
    init_rank: float = 1.0  # start at full rank; τ prunes within the first epoch
    ranks: dict = field(default_factory=dict)
    r_min: int = 2
    r_max: int | None = None
    layer_r_max: dict = field(default_factory=dict)  # per-layer rank bounds: name -> int or per-mode
    conv_adaptive_modes: tuple | None = None  # modes of Tucker conv kernels that adapt (None: all)
    warmup_epochs: int = 0  # first epochs of tdlrt / matrix-dlrt taken at fixed rank (no truncation)
    finetune_epochs: int = 0  # last epochs of tdlrt / matrix-dlrt taken at fixed rank (no truncation)
    data: str = "embedded"
    dtype: str = "float32"
    backend: str = "numpy"
    widths: tuple = (32, 32, 64, 64)
    train_size: int | None = None  # keep the first train_size training images (None: all)
    val_fraction: float = 0.0  # share of them held out for validation, split by seed (0: none)

    def validate(self):
        """Check every field; messages name the field and its ``refdlrt train`` option."""
        def opt(name):
            return f"{name} (--{name.replace('_', '-')})"

        if self.model not in MODELS:
            raise ValueError(f"{opt('model')}: expected one of {', '.join(MODELS)}, got {self.model!r}")
        if self.method not in METHODS:
            raise ValueError(f"{opt('method')}: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"{opt('schedule')}: expected cosine, step or constant, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "step_size", "r_min"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ValueError(f"{opt(name)}: expected an integer >= 1, got {v!r}")
        for name in ("seed", "warmup_epochs", "finetune_epochs"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise ValueError(f"{opt(name)}: expected an integer >= 0, got {v!r}")
        if self.r_max is not None and (not is_int(self.r_max) or self.r_max < self.r_min):
            raise ValueError(f"{opt('r_max')}: expected an integer >= r_min = {self.r_min}, got {self.r_max!r}")
        if not self.widths or any(not is_int(w) or w < 1 for w in self.widths):
            raise ValueError(f"{opt('widths')}: expected channel widths >= 1, got {list(self.widths)}")
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise ValueError(f"{opt('gamma')}: expected a finite decay factor > 0, got {self.gamma}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"{opt('warmup_epochs')}: expected 0 <= warmup_epochs < epochs = {self.epochs}, "
                             f"got {self.warmup_epochs}")
        if not 0 <= self.finetune_epochs < self.epochs:
            raise ValueError(f"{opt('finetune_epochs')}: expected 0 <= finetune_epochs < epochs = "
                             f"{self.epochs}, got {self.finetune_epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"{opt('lr')}: expected a finite lr > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"{opt('momentum')}: expected 0 <= momentum < 1, got {self.momentum}")
        if not (self.tau >= 0 and math.isfinite(self.tau)):
            raise ValueError(f"{opt('tau')}: expected a finite tau >= 0, got {self.tau}")
        if not (0 < self.init_rank <= 1):
            raise ValueError(f"{opt('init_rank')}: expected 0 < init_rank <= 1, got {self.init_rank}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"{opt('dtype')}: expected float32 or float64, got {self.dtype!r}")
        if self.backend not in ("numpy", "cupy"):
            raise ValueError(f"{opt('backend')}: expected numpy or cupy, got {self.backend!r}")
        if self.train_size is not None and (not is_int(self.train_size) or self.train_size < 1):
            raise ValueError(f"{opt('train_size')}: expected an integer >= 1 or none, got "
                             f"{self.train_size!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"{opt('val_fraction')}: expected 0 <= val_fraction < 1, got "
                             f"{self.val_fraction!r}")
        return self


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """λ at (epoch, step): cosine from lr to 0 over all steps, step decay, or constant."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    t = (epoch * steps_per_epoch + step) / (cfg.epochs * steps_per_epoch)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
