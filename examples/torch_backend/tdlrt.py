"""TDLRT (arXiv 2305.19059) in PyTorch, written from docs/ALGORITHM.md; modes 0-based.

Every function takes ``bug``: None, or one name of ``BUGS`` that plants that one mistake
(see README.md). Conventions: Mat_i(T) = movedim(T, i, 0).reshape(n_i, -1) (C order);
T x_i A has Mat_i(T x_i A) = A Mat_i(T); Y = C x_0 U_0 ... x_{d-1} U_{d-1}.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BUGS = (
    "truncation_transpose",   # rows of the left singular vector matrix used as P_i
    "bias_twice",             # Tucker conv: bias in the core conv and after the last stage
    "stale_momentum",         # v_new = grad_C_hat sliced to the new ranks, not transported
    "no_old_basis",           # U_hat_i = orth(K_i), U_i left out of the augmentation
    "no_lift",                # C_hat = C zero-padded instead of C x_i M_hat_i
    "theta_before_s_step",    # theta = tau ||C_hat|| before the S-step
    "theta_absolute",         # theta = tau
    "strict_threshold",       # tail < theta instead of tail <= theta
    "wrong_unfolding_tails",  # sigma / tails of mode i from the unfolding of mode (i+1) % d
    "k_gradient_no_q",        # grad_K_i = Mat_i(D x_{j!=i} U_j^T) Mat_i(C)^T, no Q_i
)


# ------------------------------------------------------------------------- tensor algebra
def unfold(T, i):
    """Mat_i(T): n_i x prod_{j != i} n_j."""
    return torch.movedim(T, i, 0).reshape(T.shape[i], -1)


def fold(M, i, shape):
    """Inverse of :func:`unfold` for a tensor of ``shape``."""
    rest = [n for j, n in enumerate(shape) if j != i]
    return torch.movedim(M.reshape([shape[i]] + rest), 0, i)


def mode_product(T, A, i):
    """T x_i A (A: m x n_i)."""
    shape = list(T.shape)
    shape[i] = A.shape[0]
    return fold(A @ unfold(T, i), i, shape)


def multi_mode(T, mats, transpose=False):
    """T x_0 mats[0] ... (None: mode skipped); ``transpose`` uses mats[i]^T."""
    for i, A in enumerate(mats):
        if A is not None:
            T = mode_product(T, A.T if transpose else A, i)
    return T


def fro(T):
    """||T||_F as a Python float (sqrt of a dot product, like numpy.linalg.norm)."""
    t = T.reshape(-1)
    return math.sqrt(float(torch.dot(t, t)))


def orth(B):
    """Orthonormal basis of range(B): left singular vectors with s > max(n, m) eps s_max."""
    n, m = B.shape
    if min(n, m) == 0:
        return B.new_zeros((n, 0))
    P, s, _ = torch.linalg.svd(B, full_matrices=False)
    k = int((s > max(n, m) * torch.finfo(B.dtype).eps * s[0]).sum())
    return P[:, :k]


def compatible(ranks):
    """Lower ranks until r_i <= prod_{j != i} r_j for every i (repeat until stable)."""
    r = list(ranks)
    changed = True
    while changed:
        changed = False
        for i in range(len(r)):
            other = math.prod(r[:i] + r[i + 1:])
            if r[i] > other:
                r[i], changed = other, True
    return r


# ----------------------------------------------------------------------- HOSVD, tau rule
def tau_rank(sigma, theta, lo, hi, bug=None):
    """Smallest r in [0, k] with (sum_{j>r} sigma_j^2)^(1/2) <= theta (tails summed from the
    smallest sigma up), then min(max(r, lo), hi, k)."""
    k = sigma.shape[0]
    s2 = (sigma * sigma).tolist()
    tails = [0.0] * (k + 1)
    for j in range(k - 1, -1, -1):  # tails[r] = sqrt(sum_{j >= r} s2[j]) (0-based j)
        tails[j] = tails[j + 1] + s2[j]
    tails = [math.sqrt(t) for t in tails]
    ok = [t < theta if bug == "strict_threshold" else t <= theta for t in tails]
    r = ok.index(True) if True in ok else k
    return min(max(r, lo), hi, k)


def hosvd(T, *, theta=None, ranks=None, lo=None, hi=None, bug=None):
    """Truncated HOSVD. theta: absolute tolerance (tau rule with bounds lo, hi, per mode);
    else fixed ``ranks`` (default: full). Returns (core, bases, sigmas, ranks)."""
    d = T.ndim
    svds = [torch.linalg.svd(unfold(T, i), full_matrices=False) for i in range(d)]
    bases, sigmas, chosen = [], [], []
    for i in range(d):
        P, s, _ = svds[i]
        k = s.shape[0]
        if bug == "wrong_unfolding_tails":
            s = svds[(i + 1) % d][1]
        if theta is not None:
            r = min(tau_rank(s, theta, lo[i], hi[i], bug), k)
        else:
            r = min(ranks[i] if ranks is not None else k, k)
        if bug == "truncation_transpose":  # rows of the square left singular matrix
            P = torch.linalg.svd(unfold(T, i), full_matrices=True)[0].T
        bases.append(P[:, :r])
        sigmas.append(s)
        chosen.append(r)
    return multi_mode(T, bases, transpose=True), bases, sigmas, chosen


# --------------------------------------------------------------------------- TDLRT step
def tdlrt_step(C, Us, G, lr, tau, *, r_min=1, r_max=None, fixed_rank=False,
               momentum=0.0, v=None, bug=None):
    """One rank-adaptive (or fixed-rank) BUG step, ALGORITHM.md §2. Returns a dict of
    every intermediate (names as in the adapter protocol)."""
    d = C.ndim
    r_max = list(G.shape) if r_max is None else [int(r) for r in torch.broadcast_to(
        torch.as_tensor(r_max), (d,))]  # None: n_i; an int: the same in every mode
    D = G + momentum * multi_mode(v, Us) if momentum > 0 and v is not None else G
    out, U_hats = {}, []
    for i in range(d):  # K-steps, all from the same D
        Q, R = torch.linalg.qr(unfold(C, i).T)  # prod_{j!=i} r_j x r_i, r_i x r_i
        proj = unfold(multi_mode(D, [None if j == i else U for j, U in enumerate(Us)], True), i)
        grad_K = proj @ (unfold(C, i).T if bug == "k_gradient_no_q" else Q)  # n_i x r_i
        K = Us[i] @ R.T - lr * grad_K
        if fixed_rank:
            U_hat = torch.linalg.qr(K)[0]  # n_i x r_i
        elif bug == "no_old_basis":
            U_hat = orth(K)
        else:
            g = fro(grad_K)
            U_hat = orth(torch.cat([Us[i], grad_K / g if g > 0 else grad_K], dim=1))
        out[f"K_{i}"], out[f"grad_K_{i}"], out[f"U_hat_{i}"] = K, grad_K, U_hat
        U_hats.append(U_hat)
    r_hat = [U.shape[1] for U in U_hats]
    if bug == "no_lift":
        C_hat = C.new_zeros(r_hat)
        sl = tuple(slice(0, min(a, b)) for a, b in zip(C.shape, r_hat))
        C_hat[sl] = C[sl]
    else:
        C_hat = multi_mode(C, [Uh.T @ U for Uh, U in zip(U_hats, Us)])  # lift
    grad_C = multi_mode(D, U_hats, transpose=True)  # S-step
    C_tilde = C_hat - lr * grad_C
    out.update(C_hat=C_hat, grad_C_hat=grad_C, C_tilde=C_tilde)
    if fixed_rank:
        C_new, U_new, theta, ranks, v_new = C_tilde, U_hats, 0.0, r_hat, grad_C
    else:  # truncation of the small core
        scale = {"theta_before_s_step": fro(C_hat), "theta_absolute": 1.0}.get(bug)
        theta = tau * (fro(C_tilde) if scale is None else scale)  # relative to C_tilde
        lo = [min(r_min, r) for r in r_hat]
        hi = [max(min(rm, r), l) for rm, r, l in zip(r_max, r_hat, lo)]
        C_new, Ps, sigmas, ranks = hosvd(C_tilde, theta=theta, lo=lo, hi=hi, bug=bug)
        if compatible(ranks) != ranks:
            ranks = compatible(ranks)
            C_new, Zs, _, _ = hosvd(C_new, ranks=ranks, bug=bug)
            Ps = [P @ Z for P, Z in zip(Ps, Zs)]
        U_new = [Uh @ P for Uh, P in zip(U_hats, Ps)]
        ranks = list(C_new.shape)
        out.update({f"sigma_{i}": s for i, s in enumerate(sigmas)})
        if bug == "stale_momentum":
            v_new = grad_C[tuple(slice(0, r) for r in ranks)]
        else:
            v_new = multi_mode(grad_C, [Uh.T @ Un for Uh, Un in zip(U_hats, U_new)], True)
    out.update({f"U_new_{i}": U for i, U in enumerate(U_new)})
    out.update(theta=torch.tensor(float(theta), dtype=C.dtype), C_new=C_new,
               ranks=torch.tensor(ranks, dtype=torch.int64))
    if momentum > 0:
        out["v_new"] = v_new
    return out


# ------------------------------------------------------------------------------ layers
def conv_weight_grad(x, dy, shape, geom):
    """dL/dw of y = conv2d(x, w) for output gradient dy (w of ``shape``; linear in w)."""
    w = x.new_zeros(shape, requires_grad=True)
    (gw,) = torch.autograd.grad(F.conv2d(x, w, None, **geom), w, dy)
    return gw


def tucker_conv2d(x, C, Us, b, geom, bug=None):
    """ALGORITHM.md §3: z1 = U_1^T x; z2 = conv(z1, C x_2 U_2 x_3 U_3); y = U_0 z2 + b."""
    U0, U1, U2, U3 = Us
    z1 = torch.einsum("cr,nchw->nrhw", U1, x)  # N, r1, H, W
    small = multi_mode(C, [None, None, U2, U3])  # r0, r1, kh, kw
    core_b = U0.T @ b if (bug == "bias_twice" and b is not None) else None
    z2 = F.conv2d(z1, small, core_b, **geom)  # N, r0, Ho, Wo
    y = torch.einsum("or,nrhw->nohw", U0, z2)  # N, C_out, Ho, Wo
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def lenet5_steps(p, batches, lr, tau, r_min, bug=None):
    """Train LeNet5 (conv2 Tucker, fc1 / fc2 low-rank matrices) for len(batches) steps.

    ``p``: dict of tensors (conv1_w, conv1_b, conv2_C, conv2_U_0..3, conv2_b, fc1_C, fc1_U_0,
    fc1_U_1, fc1_b, fc2_..., fc3_w, fc3_b). Returns one dict per step; the loss is the one
    before the update. Dense weights and biases take SGD, low-rank weights a TDLRT step with
    the dense gradient G of their weight."""
    p, lowrank, geom = dict(p), {"conv2": 4, "fc1": 2, "fc2": 2}, dict(stride=1, padding=0)
    records = []
    for x, labels in batches:
        t = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
        Us = {n: [t[f"{n}_U_{i}"] for i in range(d)] for n, d in lowrank.items()}
        W = {n: multi_mode(t[f"{n}_C"], Us[n]).detach().requires_grad_(True)
             for n in ("fc1", "fc2")}  # dense leaves: their .grad is G
        h1 = F.max_pool2d(F.relu(F.conv2d(x, t["conv1_w"], t["conv1_b"], padding=2)), 2)
        y2 = tucker_conv2d(h1, t["conv2_C"], Us["conv2"], t["conv2_b"], geom, bug)
        y2.retain_grad()  # dL/dy2 gives the dense kernel gradient of conv2
        h = F.max_pool2d(F.relu(y2), 2).reshape(x.shape[0], -1)  # N, 400 (C order)
        h = F.relu(F.linear(h, W["fc1"], t["fc1_b"]))
        h = F.relu(F.linear(h, W["fc2"], t["fc2_b"]))
        loss = F.cross_entropy(F.linear(h, t["fc3_w"], t["fc3_b"]), labels)  # batch mean
        loss.backward()
        kernel_shape = tuple(U.shape[0] for U in Us["conv2"])  # 16, 6, 5, 5
        G = {"conv2": conv_weight_grad(h1.detach(), y2.grad, kernel_shape, geom),
             "fc1": W["fc1"].grad, "fc2": W["fc2"].grad}
        rec = {"loss": loss.detach()}
        with torch.no_grad():
            for k in ("conv1_w", "conv1_b", "conv2_b", "fc1_b", "fc2_b", "fc3_w", "fc3_b"):
                p[k] = p[k] - lr * t[k].grad
            for n, d in lowrank.items():
                s = tdlrt_step(p[f"{n}_C"], [p[f"{n}_U_{i}"] for i in range(d)], G[n], lr, tau,
                               r_min=r_min, bug=bug)
                p[f"{n}_C"] = s["C_new"]
                p.update({f"{n}_U_{i}": s[f"U_new_{i}"] for i in range(d)})
                rec[f"ranks_{n}"] = s["ranks"]
                rec[f"W_{n}"] = multi_mode(s["C_new"], [s[f"U_new_{i}"] for i in range(d)])
            rec.update(W_conv1=p["conv1_w"], W_fc3=p["fc3_w"])
            rec.update({f"b_{n}": p[f"{n}_b"] for n in ("conv1", "conv2", "fc1", "fc2", "fc3")})
        records.append(rec)
    return records
