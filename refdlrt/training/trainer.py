"""Training: one network forward/backward per minibatch, SGD (with momentum) on the dense
parameters, and one integrator step per low-rank layer from the same cached activations.

Methods: ``dense``; ``tdlrt`` (rank-adaptive Tucker BUG); ``tdlrt-fixed`` (fixed-rank BUG);
``matrix-dlrt`` (conv kernels as matrices, rank-adaptive); ``tucker-direct`` (plain gradient
descent on the Tucker factors, the "train the factorisation directly" baseline).

Momentum. Dense parameters: heavy ball v <- μ v + g, p <- p - λ v. TDLRT layers: the
velocity V = v x_i U_i is kept in low-rank form (its core v in the current bases); the whole
BUG step (K-steps and S-step) is taken along G + μV, and the new velocity is that direction's
Galerkin projection, truncated with the weight (x_i P_i^T) inside :func:`refdlrt.tdlrt_step`.
``tucker-direct``: heavy ball on the core and on every factor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

from .._checks import is_int
from .._npz import NpzFileError, read_npz
from ..backend import namespace, to_numpy
from ..dlrt.baselines import naive_factor_gradients
from ..dlrt.integrator import tdlrt_step
from ..dlrt.matrix_step import matrix_step
from ..nn.layers import Conv2d
from ..nn.models import MODELS, build_model
from ..ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from ..tensor.tucker import Tucker
from .config import TrainConfig, learning_rate
from .data import Dataset, holdout, iterate_minibatches, standardize

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "learning_rate"]  # the first and last from .config


class TrainingDiverged(RuntimeError):
    """The loss or a parameter became NaN/Inf; the last good checkpoint is kept."""


class Trainer:
    """Holds the model, the optimizer state, the RNG and the history of one run."""

    def __init__(self, cfg: TrainConfig, data: Dataset):
        self.cfg = cfg.validate()
        self.xp = namespace(cfg.backend)
        data = holdout(data, train_size=cfg.train_size, val_fraction=cfg.val_fraction, seed=cfg.seed)
        self.data = standardize(data)
        self.dtype = np.dtype(cfg.dtype)
        self.rng = np.random.default_rng(cfg.seed)
        c, h, w = data.x_train.shape[1:]
        if h != w:
            raise ValueError(f"data: expected square images (the models take input_size x input_size), "
                             f"got {h} x {w} images in {data.name}")
        kw = dict(in_channels=c, n_classes=data.n_classes, input_size=h)
        if cfg.model == "vgg_small":
            kw["widths"] = tuple(cfg.widths)
        self.specs = MODELS[cfg.model](**kw)
        self.layers, self.plan = build_model(
            self.specs, cfg.method, self.rng, init_rank=cfg.init_rank, ranks=cfg.ranks,
            dtype=self.dtype, xp=self.xp,
        )
        lowrank = sorted(n for n, kind in self.plan.items() if kind != "dense")
        unknown = sorted(set(cfg.layer_r_max) - set(lowrank))
        if unknown:
            raise ValueError(f"layer_r_max (--layer-r-max): no low-rank layer named {', '.join(unknown)}; "
                             f"the low-rank layers of {cfg.model} / {cfg.method} are "
                             f"{', '.join(lowrank) or 'none'}")
        self.dense_reference = {  # dense parameter counts of the low-rank layers' weights
            ly.name: int(np.prod(ly.dense_shape)) for ly in self.layers if hasattr(ly, "weight")
        }
        self.velocity: dict = {}
        self.epoch = 0
        self.history: list = []
        self.steps: list = []

    # -- one step ----------------------------------------------------------------------------
    def forward(self, x, training: bool):
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def train_step(self, xb, yb, lr: float) -> tuple[float, float]:
        """Forward, backward, update; returns (loss, accuracy) on the batch."""
        logits = self.forward(xb, training=True)
        loss, cache = softmax_cross_entropy(logits, yb)
        loss = float(loss)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became NaN/Inf ({loss}) in epoch {self.epoch + 1}")
        self.backward(softmax_cross_entropy_backward(cache))
        mu = self.cfg.momentum
        for k, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                v = self._heavy_ball((k, name), layer.grads[name], mu)
                layer.params[name] = p - lr * v
            if hasattr(layer, "weight"):
                try:
                    self._lowrank_update(k, layer, lr, mu)
                except FloatingPointError as e:  # the integrator refuses NaN/Inf gradients
                    raise TrainingDiverged(f"layer {layer.name}, epoch {self.epoch + 1}: {e}") from e
        acc = float(to_numpy((logits.argmax(axis=1) == yb).mean()))
        return loss, acc

    def backward(self, d):
        """Every layer's backward from the loss gradient ``d`` of the logits, last layer first
        (sets the layers' grads and projectors). Nobody needs the input gradient of the first
        layer, so a first convolution computes none."""
        for layer in reversed(self.layers[1:]):
            d = layer.backward(d)
        first = self.layers[0]
        if isinstance(first, Conv2d):
            first.backward(d, need_dx=False)
        else:
            first.backward(d)

    def _heavy_ball(self, key, g, mu):
        if mu == 0:
            return g
        v = self.velocity.get(key)
        v = g if v is None else mu * v + g
        self.velocity[key] = v
        return v

    def _lowrank_update(self, k, layer, lr, mu):
        cfg = self.cfg
        if cfg.method == "tucker-direct":
            W = layer.weight
            gC, gUs = naive_factor_gradients(W.core, W.factors, layer.projector())
            core = W.core - lr * self._heavy_ball((k, "core"), gC, mu)
            Us = tuple(U - lr * self._heavy_ball((k, f"U{i}"), g, mu)
                       for i, (U, g) in enumerate(zip(W.factors, gUs)))
            layer.weight = Tucker(core, Us)
            return
        r_max = cfg.layer_r_max.get(layer.name, cfg.r_max)
        velocity = self.velocity.get((k, "core"))
        fixed_rank = (cfg.method == "tdlrt-fixed" or self.epoch < cfg.warmup_epochs
                      or self.epoch >= cfg.epochs - cfg.finetune_epochs)
        if layer.weight.ndim == 2 and layer.weight.ranks[0] == layer.weight.ranks[1] and not fixed_rank:
            # the same step without the K-steps' QRs (a square core; explicit ranks such as
            # --ranks fc1=10,20 start non-square, and tdlrt_step's truncation makes them square)
            Y, info = matrix_step(layer.weight, layer.projector(), lr, cfg.tau, r_min=cfg.r_min,
                                  r_max=r_max, momentum=mu, velocity=velocity)
        else:
            Y, info = tdlrt_step(
                layer.weight, layer.projector(), lr, cfg.tau, r_min=cfg.r_min, r_max=r_max,
                fixed_rank=fixed_rank,
                adaptive_modes=cfg.conv_adaptive_modes if layer.weight.ndim == 4 else None,
                diagnostics=False, momentum=mu, velocity=velocity,
            )
        layer.weight = Y
        if mu:
            self.velocity[(k, "core")] = info.velocity

    # -- evaluation, counting -----------------------------------------------------------------
    def evaluate(self, x, y, batch_size: int = 1000) -> tuple[float, float]:
        """(mean loss, accuracy) in eval mode (batchnorm uses running statistics)."""
        xp, tot_loss, correct = self.xp, 0.0, 0
        for i in range(0, len(y), batch_size):
            xb, yb = xp.asarray(x[i:i + batch_size], dtype=self.dtype), xp.asarray(y[i:i + batch_size])
            logits = self.forward(xb, training=False)
            loss, _ = softmax_cross_entropy(logits, yb)
            tot_loss += float(loss) * len(yb)
            correct += int(to_numpy((logits.argmax(axis=1) == yb).sum()))
        return tot_loss / len(y), correct / len(y)

    def ranks(self) -> dict:
        return {ly.name: list(ly.weight.ranks) for ly in self.layers if hasattr(ly, "weight")}

    def counts(self) -> dict:
        """Parameter counts of the weights (biases and batchnorm excluded)."""
        lowrank = {ly.name: ly.weight.n_params for ly in self.layers if hasattr(ly, "weight")}
        dense_lr = sum(self.dense_reference.values())
        conv, conv_dense = 0, 0
        for s, ly in zip(self.specs, self.layers):
            if s.kind == "conv":
                n_dense = int(np.prod(ly.dense_shape)) if hasattr(ly, "weight") else int(ly.params["w"].size)
                conv_dense += n_dense
                conv += lowrank.get(ly.name, n_dense)
        return {
            "lowrank_params": lowrank,
            "compression": {k: 1.0 - n / self.dense_reference[k] for k, n in lowrank.items()},
            "lowrank_param_fraction": (sum(lowrank.values()) / dense_lr) if dense_lr else 1.0,
            "conv_compression": 1.0 - conv / conv_dense if conv_dense else 0.0,
        }

    def _check_finite(self):
        xp = self.xp
        for ly in self.layers:
            arrays = list(ly.params.values())
            if hasattr(ly, "weight"):
                arrays += [ly.weight.core, *ly.weight.factors]
            for a in arrays:
                if not bool(xp.isfinite(a).all()):
                    raise TrainingDiverged(f"a parameter of layer {ly.name} became NaN/Inf in epoch {self.epoch + 1}")

    # -- the loop -------------------------------------------------------------------------
    def run_epoch(self, progress=None):
        cfg, xp, ds = self.cfg, self.xp, self.data
        n = len(ds.y_train)
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        t0 = time.perf_counter()
        losses, accs = [], []
        batches = iterate_minibatches(n, cfg.batch_size, self.rng)
        for j, idx in enumerate(batches):
            lr = learning_rate(cfg, self.epoch, j, steps_per_epoch)
            ts = time.perf_counter()
            xb = xp.asarray(ds.x_train[idx], dtype=self.dtype)  # N, C, H, W
            loss, acc = self.train_step(xb, xp.asarray(ds.y_train[idx]), lr)
            self.steps.append(dict(epoch=self.epoch, step=j, lr=lr, loss=loss,
                                   seconds=time.perf_counter() - ts, ranks=self.ranks()))
            losses.append(loss)
            accs.append(acc)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.3f}")
        self._check_finite()
        seconds = time.perf_counter() - t0
        test_loss, test_acc = self.evaluate(ds.x_test, ds.y_test)
        val = {}
        if ds.x_val is not None:
            val_loss, val_acc = self.evaluate(ds.x_val, ds.y_val)
            val = dict(val_loss=val_loss, val_accuracy=val_acc)
        row = dict(epoch=self.epoch + 1, lr=lr, train_loss=float(np.mean(losses)),
                   train_accuracy=float(np.mean(accs)), **val, test_loss=test_loss,
                   test_accuracy=test_acc, seconds=seconds, ranks=self.ranks(), **self.counts())
        self.history.append(row)
        self.epoch += 1
        return row

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path):
        """Write parameters, ranks, optimizer state, RNG state and history to an npz file."""
        arrays = {}
        for k, ly in enumerate(self.layers):
            for name, p in ly.params.items():
                arrays[f"layer{k}/param/{name}"] = to_numpy(p)
            for name, s in ly.state.items():
                arrays[f"layer{k}/state/{name}"] = to_numpy(s)
            if hasattr(ly, "weight"):
                arrays[f"layer{k}/core"] = to_numpy(ly.weight.core)
                for i, U in enumerate(ly.weight.factors):
                    arrays[f"layer{k}/factor{i}"] = to_numpy(U)
        for (k, name), v in self.velocity.items():
            arrays[f"velocity/{k}/{name}"] = to_numpy(v)
        meta = dict(config=dataclasses.asdict(self.cfg), epoch=self.epoch, history=self.history,
                    steps=self.steps, rng=self.rng.bit_generator.state)
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = f"{path}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def _read(path) -> dict:
        """Every array of a checkpoint; one clear message (never NumPy's advice to unpickle)."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint {path}: no such file")
        try:
            return read_npz(path)
        except NpzFileError as e:
            raise ValueError(f"checkpoint {path}: not a refdlrt checkpoint (expected an .npz written "
                             f"by Trainer.save): {e.reason}") from None

    @staticmethod
    def read_meta(path) -> dict:
        """The checkpoint's metadata (config, epoch, history, RNG state)."""
        arrays = Trainer._read(path)
        try:
            meta = json.loads(str(arrays["meta"]))
            if not {"config", "epoch", "history", "steps", "rng"} <= set(meta):
                raise KeyError("config, epoch, history, steps, rng")
            return meta
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"checkpoint {path}: its metadata is missing or damaged ({e}); "
                             f"not a refdlrt checkpoint") from None

    @classmethod
    def load(cls, path, data: Dataset) -> "Trainer":
        """Rebuild a trainer from a checkpoint; continuing it gives the same numbers as an
        uninterrupted run (bit for bit on the CPU). Every array is checked against the model
        the checkpoint's configuration builds: a missing or misshapen array is a clear error."""
        meta = cls.read_meta(path)
        arrays = cls._read(path)
        cfg = dict(meta["config"])
        cfg["widths"] = tuple(cfg["widths"])
        try:
            tr = cls(TrainConfig(**cfg), data)
        except TypeError as e:
            raise ValueError(f"checkpoint {path}: its configuration does not fit this refdlrt ({e})") from None
        xp = tr.xp

        def get(key, like):
            if key not in arrays:
                raise ValueError(f"checkpoint {path}: missing array {key!r} (damaged, or written for "
                                 f"another model)")
            a = arrays[key]
            if tuple(a.shape) != tuple(like.shape):
                raise ValueError(f"checkpoint {path}: array {key!r} has shape {tuple(a.shape)}, the "
                                 f"model expects {tuple(like.shape)}")
            if a.dtype != like.dtype:
                raise ValueError(f"checkpoint {path}: array {key!r} has dtype {a.dtype}, the model "
                                 f"expects {like.dtype}")
            return xp.asarray(a)

        for k, ly in enumerate(tr.layers):
            for name in list(ly.params):
                ly.params[name] = get(f"layer{k}/param/{name}", ly.params[name])
            for name in list(ly.state):
                ly.state[name] = get(f"layer{k}/state/{name}", ly.state[name])
            if hasattr(ly, "weight"):
                d = ly.weight.ndim
                core = arrays.get(f"layer{k}/core")
                if core is None:
                    raise ValueError(f"checkpoint {path}: missing array 'layer{k}/core'")
                factors = []
                for i in range(d):
                    key = f"layer{k}/factor{i}"
                    if key not in arrays:
                        raise ValueError(f"checkpoint {path}: missing array {key!r} (damaged, or "
                                         f"written for another model)")
                    factors.append(xp.asarray(arrays[key]))
                try:
                    ly.weight = Tucker(xp.asarray(core), tuple(factors))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"checkpoint {path}: layer {ly.name}: {e}") from None
        tr.velocity = {}
        for key, v in arrays.items():
            if key.startswith("velocity/"):
                _, k, name = key.split("/", 2)
                tr.velocity[(int(k), name)] = xp.asarray(v)
        tr.rng.bit_generator.state = meta["rng"]
        tr.epoch, tr.history, tr.steps = meta["epoch"], meta["history"], meta["steps"]
        if not is_int(tr.epoch) or tr.epoch < 0:
            raise ValueError(f"checkpoint {path}: epoch {tr.epoch!r} is not a count of epochs")
        return tr
