"""03 - One TDLRT step by hand (ALGORITHM.md §2, Algorithm 1; modes count from 0 here).

Y = C x_0 U_0 ... x_3 U_3 is a Tucker conv kernel (C_out, C_in, k_h, k_w); the loss is
L(W) = ½‖W − T‖² for a random target T, so the dense gradient is G = Y − T. The script calls the
named sub-steps of refdlrt/dlrt/integrator.py in order, printing each intermediate's shape and
the invariant it must satisfy:
  k_step (steps 1-3)  -> K_i, ∇_{K_i}L        augment (4-5) -> Û_i ⊇ range(U_i), M̂_i = Û_iᵀU_i
  lift (6)            -> Ĉ with Ĉ x_i Û_i = Y   s_step (7)    -> Ĉ − λ G x_i Û_iᵀ
  truncate (8-9)      -> HOSVD of the small core with ϑ = τ‖Ĉ‖, η ≤ bound ≤ √d ϑ
and then checks that the result equals `refdlrt.tdlrt_step` and `refdlrt.tdlrt_step_reference`
bit for bit. `--plant-bug` changes one entry of the hand-made core by one unit in the last place
(np.nextafter) after the step: the bit-for-bit checks must then say NOT OK and the script exit 1.
"""

import argparse
import sys

import numpy as np

import refdlrt

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--lr", type=float, default=0.3)
parser.add_argument("--tau", type=float, default=0.1)
parser.add_argument("--plant-bug", action="store_true", help="perturb the result by one ulp")
args = parser.parse_args()
rng = np.random.default_rng(args.seed)
failed = 0


def check(name, ok, detail=""):
    global failed
    failed += not ok
    print(f"    {name:<44} {detail:<20} {'OK' if ok else 'NOT OK'}")


def ortho_err(U):
    return np.abs(U.T @ U - np.eye(U.shape[1])).max()


def loss(W):
    return 0.5 * np.sum((W - T) ** 2)


def same(A, B):  # equal ranks and every number equal, bit for bit
    return A.ranks == B.ranks and all(
        np.array_equal(a, b) for a, b in zip((A.core, *A.factors), (B.core, *B.factors)))


shape, ranks = (16, 12, 5, 5), (4, 3, 2, 2)
Us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
Y = refdlrt.Tucker(rng.standard_normal(ranks), Us)
T = 0.1 * rng.standard_normal(shape)  # a dense (full-rank) target
G = Y.to_tensor() - T  # ∇L(Y)
grad, C, lr, tau, d = refdlrt.DenseGradient(G), Y.core, args.lr, args.tau, len(shape)
print(f"Y: shape {Y.shape}, ranks {Y.ranks}; λ = {lr}, τ = {tau}; L(Y) = {loss(Y.to_tensor()):.4f}")

U_hats, M_hats = [], []
for i in range(d):
    K, grad_K = refdlrt.k_step(C, Us, i, grad, lr)
    U_hat, M_hat = refdlrt.augment(K, Us[i], direction=grad_K)
    print(f"  mode {i}: K_i {K.shape}, ∇_K L {grad_K.shape} -> Û_i {U_hat.shape}, "
          f"M̂_i {M_hat.shape}")
    check("Û_iᵀÛ_i = I", ortho_err(U_hat) < 1e-13, f"{ortho_err(U_hat):.1e}")
    err = np.abs(Us[i] - U_hat @ M_hat).max()  # U_i = Û_i Û_iᵀ U_i
    check("range(Û_i) ⊇ range(U_i)", err < 1e-13, f"{err:.1e}")
    U_hats.append(U_hat), M_hats.append(M_hat)
C_hat = refdlrt.lift(C, M_hats)
err = np.abs(refdlrt.Tucker(C_hat, U_hats).to_tensor() - Y.to_tensor()).max()
print(f"  lift: C {C.shape} -> Ĉ {C_hat.shape}")
check("lift exactness Ĉ x_i Û_i = Y", err < 1e-13, f"{err:.1e}")
C_tilde, grad_C = refdlrt.s_step(C_hat, U_hats, grad, lr)
print(f"  s_step: Ĉ {C_tilde.shape}, ‖∇_Ĉ L‖ = {np.linalg.norm(grad_C):.4f}")
Y_hand, info, eta = refdlrt.truncate(C_tilde, U_hats, tau, r_min=1, r_max=None)
print(f"  truncate: ϑ = τ‖Ĉ‖ = {info.theta:.4f}, ranks {C_tilde.shape} -> {Y_hand.ranks}")
slack = 1e-12 * info.norm  # rounding: when nothing is cut the bound is 0 and η ~1e-15
check("η <= HOSVD bound <= √d ϑ", eta <= info.bound + slack <= np.sqrt(d) * info.theta + 2 * slack,
      f"{eta:.2e} <= {info.bound:.2e} <= {np.sqrt(d) * info.theta:.2e}")
check("new bases orthonormal", max(map(ortho_err, Y_hand.factors)) < 1e-13)
L0, L1 = loss(Y.to_tensor()), loss(Y_hand.to_tensor())
check("the loss went down", L1 < L0, f"{L0:.4f} -> {L1:.4f}")

if args.plant_bug:
    Y_hand.core[(0,) * d] = np.nextafter(Y_hand.core[(0,) * d], np.inf)
print("  the step by hand against the library:")
for name, Y_lib in [("tdlrt_step", refdlrt.tdlrt_step(Y, G, lr, tau)[0]),
                    ("tdlrt_step_reference", refdlrt.tdlrt_step_reference(Y, G, lr, tau))]:
    check(f"by hand == {name}, bit for bit", same(Y_hand, Y_lib))

print("all checks OK" if not failed else f"{failed} check(s) NOT OK")
sys.exit(1 if failed else 0)
