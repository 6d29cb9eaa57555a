"""02 - Tucker format and the truncated HOSVD with the τ rule (ALGORITHM.md §1 and §2 steps 8-9).

Unfolding Mat_i(T) = moveaxis(T, i, 0).reshape(n_i, -1) (`refdlrt.unfold`, inverse `fold`),
mode product Mat_i(T x_i A) = A Mat_i(T) (`mode_product`), Tucker tensor
Y = C x_0 U_0 ... x_{d-1} U_{d-1} (`refdlrt.Tucker`), with Mat_i(Y) = U_i Mat_i(C) (⊗_{j≠i} U_j)ᵀ.
`refdlrt.hosvd(T, tau=τ)` keeps, per mode i, the smallest rank r_i whose discarded singular values
of Mat_i(T) have norm (Σ_{j>r_i} σ_{i,j}²)^½ ≤ ϑ = τ‖T‖_F, so its error obeys
    max_i tail_i ≤ ‖T − T_r‖_F ≤ bound = (Σ_i tail_i²)^½ ≤ √d ϑ.
The script checks these identities, recovers the ranks of an exactly low-rank tensor plus tiny
noise, and sweeps τ on a tensor with decaying spectrum to show the rank/error trade-off.
Modes count from 0 here; ALGORITHM.md counts from 1.
"""

import argparse
import sys
from functools import reduce

import numpy as np

import refdlrt

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
rng = np.random.default_rng(args.seed)
failed = 0


def check(name, ok, detail=""):
    global failed
    failed += not ok
    print(f"  {name:<58} {detail:<30} {'OK' if ok else 'NOT OK'}")


shape, ranks = (8, 7, 9, 6), (3, 2, 4, 2)  # a 4-way tensor, like a conv kernel
d = len(shape)
Us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]  # orthonormal
Y = refdlrt.Tucker(rng.standard_normal(ranks), Us)
T = Y.to_tensor()
print(f"Tucker tensor: shape {Y.shape}, ranks {Y.ranks}, {Y.n_params} numbers instead of "
      f"{Y.dense_params} (compression {100 * Y.compression:.0f} %)")
for i in range(d):
    A = rng.standard_normal((5, shape[i]))
    check(f"mode {i}: fold(unfold(T)) == T, unfold {refdlrt.unfold(T, i).shape}",
          np.array_equal(refdlrt.fold(refdlrt.unfold(T, i), i, shape), T))
    err = np.abs(refdlrt.unfold(refdlrt.mode_product(T, A, i), i) - A @ refdlrt.unfold(T, i)).max()
    check(f"mode {i}: Mat_i(T x_i A) == A Mat_i(T)", err < 1e-12, f"max diff {err:.1e}")
    kron = reduce(np.kron, [Us[j] for j in range(d) if j != i])  # ⊗_{j≠i} U_j, j increasing
    err = np.abs(refdlrt.unfold(T, i) - Us[i] @ refdlrt.unfold(Y.core, i) @ kron.T).max()
    check(f"mode {i}: Mat_i(Y) == U_i Mat_i(C) (⊗_(j≠i) U_j)ᵀ", err < 1e-12, f"max diff {err:.1e}")

noisy = T + 1e-5 * rng.standard_normal(shape)
tucker, info = refdlrt.hosvd(noisy, tau=1e-3)
check(f"hosvd(tau=1e-3) of T + noise finds the ranks {tucker.ranks}", tucker.ranks == ranks,
      f"true ranks {ranks}")
err = np.linalg.norm(noisy - tucker.to_tensor())
check("  error <= bound <= √d ϑ", err <= info.bound <= np.sqrt(d) * info.theta,
      f"{err:.1e} <= {info.bound:.1e} <= {np.sqrt(d) * info.theta:.1e}")

# a full-rank tensor whose energy decays across the modes: core entries damped by 0.6^(k_0+..+k_3)
damp = 0.6 ** np.add.outer(np.add.outer(np.arange(8), np.arange(7)),
                           np.add.outer(np.arange(9), np.arange(6)))
Qs = [np.linalg.qr(rng.standard_normal((n, n)))[0] for n in shape]
S = refdlrt.Tucker(damp * rng.standard_normal(shape), Qs).to_tensor()
print(f"\nτ sweep on a full-rank tensor with decaying spectrum, shape {S.shape}")
print(f"  {'tau':>5} {'ranks':>14} {'max tail':>9} {'error':>9} {'bound':>9} {'√d ϑ':>9}")
for tau in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
    tucker, info = refdlrt.hosvd(S, tau=tau)
    err = np.linalg.norm(S - tucker.to_tensor())
    slack = 1e-12 * info.norm  # rounding: at τ = 0 the bound is 0 and the error ~1e-15
    ok = max(info.tails) <= err + slack and err <= info.bound + slack
    ok = ok and info.bound <= np.sqrt(d) * info.theta + slack
    print(f"  {tau:5.3f} {str(tucker.ranks):>14} {max(info.tails):9.2e} {err:9.2e} "
          f"{info.bound:9.2e} {np.sqrt(d) * info.theta:9.2e}  {'OK' if ok else 'NOT OK'}")
    failed += not ok

print("\nall checks OK" if not failed else f"\n{failed} check(s) NOT OK")
sys.exit(1 if failed else 0)
