"""GPU benchmark: refdlrt on CuPy against PyTorch/cuDNN on the same GPU, float32.

    python benchmarks/bench_gpu.py [--repeats R] [--only conv,layer,steps] [--json PATH]

Needs CuPy and a GPU; PyTorch with CUDA is optional (its columns stay empty without it).

conv   conv2d forward + backward, N = 128, 64 -> 64, 32x32, 3x3, pad 1: ours / cuDNN, with
       TF32 off (float32 arithmetic, as ours; the target's reference, <= 2) and on (PyTorch's
       default for cuDNN convolutions: 10-bit mantissas in the products). Then ours in pieces:
       forward, backward, and the forward's NHWC padding copy, im2col copy and GEMM alone.
linalg the integrator's decompositions at its sizes, one call at a time: SVD and QR of float32
       matrices, eigh of their Gram matrices formed in float64 (as ``left_singular`` and
       ``orth`` form them): cuSOLVER (cupy.linalg) against the host's LAPACK with both copies,
       on one BLAS thread as ``svd_thin``'s host route for at most ``_HOST_SVD_MAX`` entries.
layer  the same layer at Tucker ranks (r, r, 3, 3), r = 4, 8, 16, 32: our dense f+b; our Tucker
       f+b; Tucker f+b + projections + ``tdlrt_step`` (the whole TDLRT update of the layer, as
       ``benchmarks/run.py``'s layer section on the CPU); and torch's Tucker chain
       (1x1 conv by U_1^T, the r_0 x r_1 x 3 x 3 core conv, 1x1 conv by U_0) forward + backward
       by autograd, the same FLOPs as our Tucker f+b.
steps  training steps on the embedded MNIST data, lenet5 and vgg_small, dense and tdlrt
       (CLI defaults, ``--backend cupy``): one epoch of 2,048 images to let the ranks settle,
       then 20 steps of each in turn on the same batches, synchronised; median ms and
       tdlrt / dense.

Every timing synchronises the device before the clock is read. A section that fails prints
its traceback and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback

import numpy as np

SECTIONS = ("conv", "linalg", "layer", "steps")


def _sync():
    import cupy

    cupy.cuda.Device().synchronize()


def _time(fn, repeats, sync):
    """Median seconds of ``fn()`` over ``repeats`` runs, after two warm-ups (kernel compilation,
    cuDNN autotune, the memory pool)."""
    for _ in range(2):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _problem(rng):
    import cupy

    N, C, H, k = 128, 64, 32, 3
    x = cupy.asarray(rng.standard_normal((N, C, H, H)), dtype=cupy.float32)
    w = cupy.asarray(rng.standard_normal((C, C, k, k)) / 24, dtype=cupy.float32)
    dy = cupy.asarray(rng.standard_normal((N, C, H, H)), dtype=cupy.float32)
    return x, w, dy


def section_conv(repeats, rng):
    import cupy

    from refdlrt.ops.conv import conv2d_backward, conv2d_forward

    x, w, dy = _problem(rng)
    b = cupy.zeros(w.shape[0], dtype=cupy.float32)

    def ours():
        _, c = conv2d_forward(x, w, b, padding=1)
        conv2d_backward(dy, c)

    t_ours, t_torch, torch = _time(ours, repeats, _sync), None, _torch_cuda()
    if torch is not None:
        tx = torch.as_tensor(cupy.asnumpy(x), device="cuda").requires_grad_()
        tw = torch.as_tensor(cupy.asnumpy(w), device="cuda").requires_grad_()
        tb = torch.zeros(w.shape[0], device="cuda", requires_grad=True)
        tdy = torch.as_tensor(cupy.asnumpy(dy), device="cuda")

        def theirs():
            y = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
            torch.autograd.grad(y, (tx, tw, tb), tdy)

        t_torch = {}
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            t_torch[tf32] = _time(theirs, repeats, torch.cuda.synchronize)
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    rows = []
    for tf32, label in ((False, "cuDNN float32 (TF32 off)"), (True, "cuDNN TF32 (torch default)")):
        tt = None if t_torch is None else t_torch[tf32]
        rows.append(dict(case=f"conv2d f+b, N=128 64->64 32x32 3x3 vs {label}", ours_ms=1e3 * t_ours,
                         torch_ms=None if tt is None else 1e3 * tt,
                         ratio=None if tt is None else t_ours / tt,
                         target="<= 2" if not tf32 else "(info)"))
    rows.extend(_conv_pieces(x, w, b, dy, repeats))
    return rows


def _conv_pieces(x, w, b, dy, repeats):
    """Our conv's forward and backward alone, and the forward's three steps alone."""
    import cupy

    from refdlrt.ops import conv as C
    from refdlrt.ops.conv_patches import _im2col_into, _pad_nhwc_into

    g = C._geometry(x, w, b, 1, 1, 1)
    (kh, kw), (Hp, Wp), (Ho, Wo) = g.kernel, g.padded_size, g.out_size
    n, Cin, O = g.n, g.c_in, g.c_out
    xpad = cupy.zeros((n, Hp, Wp, Cin), dtype=x.dtype)
    col = cupy.empty((n, Ho, Wo, kh, kw, Cin), dtype=x.dtype)
    w_mat, out = C._kernel_matrix(w), cupy.empty((n * Ho * Wo, O), dtype=x.dtype)
    _, cache = C.conv2d_forward(x, w, b, padding=1)
    parts = dict(
        forward=lambda: C.conv2d_forward(x, w, b, padding=1),
        backward=lambda: C.conv2d_backward(dy, cache),
        backward_dw_only=lambda: C.conv2d_backward(dy, cache, need_dx=False),
        pad_nhwc=lambda: _pad_nhwc_into(xpad, x, g),
        im2col_copy=lambda: _im2col_into(col, xpad, (1, 1), (1, 1)),
        gemm=lambda: cupy.matmul(col.reshape(n * Ho * Wo, -1), w_mat, out=out),
    )
    gemm_flop = 2 * n * Ho * Wo * kh * kw * Cin * O
    rows = []
    for name, fn in parts.items():
        t = _time(fn, repeats, _sync)
        extra = f"{gemm_flop / t / 1e12:.1f} TFLOP/s" if name == "gemm" else ""
        rows.append(dict(case=f"  ours: {name}", ours_ms=1e3 * t, torch_ms=None, ratio=None,
                         target=extra))
    return rows


def section_linalg(repeats, rng):
    import cupy

    from refdlrt.tensor import linalg

    rows = []
    for m, n in ((32, 32), (64, 64), (128, 64), (576, 32), (1024, 64), (256, 256), (2048, 64),
                 (512, 512)):
        A = cupy.asarray(rng.standard_normal((m, n)), dtype=cupy.float32)
        A64 = A.astype(cupy.float64)
        M = A64.T @ A64  # float64, as the integrator's Gram matrices
        row = dict(case=f"{m}x{n}")
        for name, arg, kw in (("svd", A, {"full_matrices": False}), ("eigh", M, {}),
                              ("qr", A, {})):
            dev = _time(lambda: getattr(cupy.linalg, name)(arg, **kw), repeats, _sync)

            def on_host():  # as svd_thin's host route: both copies, one BLAS thread
                with linalg.one_blas_thread(np):
                    out = getattr(np.linalg, name)(cupy.asnumpy(arg), **kw)
                return tuple(cupy.asarray(f) for f in out)

            host = _time(on_host, repeats, _sync)
            row[f"{name}_cusolver_ms"], row[f"{name}_host_ms"] = 1e3 * dev, 1e3 * host
        row["svd_on_host"] = A.size <= linalg._HOST_SVD_MAX
        rows.append(row)
    return rows


def section_layer(repeats, rng):
    import cupy

    from refdlrt.dlrt.integrator import tdlrt_step
    from refdlrt.nn.lowrank_layers import TuckerConv2d
    from refdlrt.ops.conv import conv2d_backward, conv2d_forward

    x, w, dy = _problem(rng)
    k, torch = w.shape[2], _torch_cuda()

    def dense():
        _, c = conv2d_forward(x, w, None, padding=1)
        conv2d_backward(dy, c)

    t_dense, rows = _time(dense, repeats, _sync), []
    for r in (4, 8, 16, 32):
        ranks = (r, r, k, k)
        layer = TuckerConv2d.from_dense(w, None, ranks=ranks, padding=1)

        def fb():
            layer.forward(x)
            layer.backward(dy)

        def full():
            fb()
            Y, _ = tdlrt_step(layer.weight, layer.projector(), 0.01, 0.0, r_min=r, r_max=ranks,
                              diagnostics=False)
            if tuple(Y.ranks) != ranks:
                raise RuntimeError(f"layer: ranks changed to {Y.ranks}, expected {ranks}")

        t_fb, t_full, t_torch = _time(fb, repeats, _sync), _time(full, repeats, _sync), None
        if torch is not None:
            Yd = layer.weight
            U0, U1, U2, U3 = (torch.as_tensor(cupy.asnumpy(U), device="cuda") for U in Yd.factors)
            core = torch.as_tensor(cupy.asnumpy(Yd.core), device="cuda")
            K = torch.einsum("abij,ki,lj->abkl", core, U2, U3).contiguous().requires_grad_()
            A1 = U1.T.contiguous()[:, :, None, None].requires_grad_()  # r1, C_in, 1, 1
            A0 = U0.contiguous()[:, :, None, None].requires_grad_()  # C_out, r0, 1, 1
            tx = torch.as_tensor(cupy.asnumpy(x), device="cuda").requires_grad_()
            tdy = torch.as_tensor(cupy.asnumpy(dy), device="cuda")
            F = torch.nn.functional

            def chain():
                y = F.conv2d(F.conv2d(F.conv2d(tx, A1), K, padding=1), A0)
                torch.autograd.grad(y, (tx, A1, K, A0), tdy)

            t_torch = _time(chain, repeats, torch.cuda.synchronize)
        rows.append(dict(case=f"Tucker ranks ({r},{r},3,3)", dense_ms=1e3 * t_dense,
                         tucker_fb_ms=1e3 * t_fb, tucker_full_ms=1e3 * t_full,
                         torch_chain_ms=None if t_torch is None else 1e3 * t_torch,
                         full_over_dense=t_full / t_dense,
                         fb_over_torch=None if t_torch is None else t_fb / t_torch))
    return rows


def section_steps(repeats, rng):
    import cupy

    from refdlrt.training.datasets import load_dataset
    from refdlrt.training.trainer import TrainConfig, Trainer

    data, rows = load_dataset("embedded"), []
    for model in ("lenet5", "vgg_small"):
        trainers = {}
        for method in ("dense", "tdlrt"):
            tr = Trainer(TrainConfig(model=model, method=method, epochs=1, train_size=2048,
                                     backend="cupy"), data)
            t0 = time.perf_counter()
            tr.run_epoch()
            _sync()
            trainers[method] = (tr, time.perf_counter() - t0)
        seconds = {m: [] for m in trainers}
        for _ in range(2 * repeats):
            some = trainers["dense"][0]
            idx = np.sort(rng.choice(len(some.data.y_train), some.cfg.batch_size, replace=False))
            for m, (tr, _) in trainers.items():
                xb = cupy.asarray(tr.data.x_train[idx], dtype=tr.dtype)
                yb = cupy.asarray(tr.data.y_train[idx])
                _sync()
                t0 = time.perf_counter()
                tr.train_step(xb, yb, tr.cfg.lr / 2)
                _sync()
                seconds[m].append(time.perf_counter() - t0)
        d, t = (1e3 * statistics.median(seconds[m]) for m in ("dense", "tdlrt"))
        tr = trainers["tdlrt"][0]
        rows.append(dict(case=f"{model} training step (batch 64)", dense_ms=d, tdlrt_ms=t,
                         ratio=t / d, epoch_s={m: v[1] for m, v in trainers.items()},
                         ranks={k: list(v) for k, v in tr.ranks().items()},
                         lowrank_param_fraction=tr.counts()["lowrank_param_fraction"]))
    return rows


def _print(name, rows):
    if not rows:
        return
    keys = list(rows[0])
    cells = [keys] + [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    print(f"\n== {name}")
    for c in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                        enumerate(zip(c, widths))), flush=True)


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return "; ".join(f"{k} {_fmt(x) if not isinstance(x, list) else ','.join(map(str, x))}"
                         for k, x in v.items())
    return str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--host-svd-max", type=int, default=None,
                    help="override refdlrt.tensor.linalg._HOST_SVD_MAX (0: every SVD on the GPU)")
    args = ap.parse_args(argv)
    if args.host_svd_max is not None:
        from refdlrt.tensor import linalg

        linalg._HOST_SVD_MAX = args.host_svd_max
        print(f"_HOST_SVD_MAX = {args.host_svd_max}")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SECTIONS for s in only):
        ap.error(f"--only: expected names from {','.join(SECTIONS)}, got {args.only!r}")

    import cupy

    torch = _torch_cuda()
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy "
          f"{cupy.__version__}, torch CUDA: {torch.__version__ if torch else 'no'}", flush=True)
    fns = dict(conv=section_conv, linalg=section_linalg, layer=section_layer,
               steps=section_steps)
    out, status = {}, 0
    for name in only:
        t0 = time.perf_counter()
        try:
            out[name] = fns[name](args.repeats, np.random.default_rng(0))
        except Exception:  # report, and still run the other sections
            traceback.print_exc()
            out[name], status = f"failed: {traceback.format_exc(limit=3)}", 1
            continue
        _print(f"{name} ({time.perf_counter() - t0:.0f} s)", out[name])
        if args.json:  # after each section, so a later crash or timeout keeps what ran
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
