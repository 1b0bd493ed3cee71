"""Thurstone scores against anchor videos, for the PyTorch side: numpy and scipy, no JAX.

The same method and the same decisions as `w2s_vqa.score.thurstone`, which scores in
JAX (read its docstring for the sources); written again here so that a PyTorch user
needs neither JAX nor the training code, and checked against it in
tests/convert/test_torch_side.py. For one test video and K anchors (sorted by MOS, lowest
first), n = K + 1 objects, the test video last:

    M          M_ji = P and M_ij = 1 - P for each anchor pair (first = anchor i, second =
               anchor j, i < j; P = P(second better)); M_Kk = P and M_kK = 1 - P for the
               test video (second) against anchor k (first).
    "map"      q* = argmax sum_ij M_ij log Phi(q_i - q_j) - sum_i q_i^2 / 2, solved by
               scipy.optimize.minimize's exact trust-region Newton method with the
               analytic gradient and Hessian (below), float64. The score is the test
               video's q* on the least-squares line through the anchors' (q*, MOS); its
               standard error is the delta method through that line with the inverse
               Hessian as q*'s covariance (the Laplace approximation); 95% interval
               score +- 1.959964 stderr.
    "paper"    the authors' procedure: sigmoid link floored at 1e-6, P at temperature 1
               for anchor pairs and 5 for test pairs, torch.optim.Adam (lr 0.1) for 50
               steps from torch.manual_seed(0); torch.rand(n), output min-max scaled to
               0-100 over the n videos. Needs torch (imported when used).

Derivatives of L(q) = sum_ij M_ij log Phi(d_ij), d_ij = q_i - q_j, with
r(d) = phi(d) / Phi(d) and r'(d) = -r(d) (d + r(d)):
    dL/dq_a = sum_j M_aj r(d_aj) - sum_i M_ia r(d_ia)
    d2L/dq_a dq_b = -S_ab (a != b), d2L/dq_a^2 = sum_{j != a} S_aj, S = W + W^T, W_ij = M_ij r'(d_ij)
"""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

from w2s_vqa import prompt

MODES = ("map", "paper")
Z95 = 1.959963984540054
PAPER_ANCHOR_TEMPERATURE = 1.0
PAPER_TEST_TEMPERATURE = 5.0
PAPER_STEPS = 50
PAPER_LR = 0.1
PAPER_SEED = 0
PAPER_FLOOR = 1e-6
# The trust-region solver stops when the gradient's largest entry is below this.
GRADIENT_TOL = 1e-11
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def preference(level_logits, temperature: float = 1.0) -> np.ndarray:
    """P(second video better) from level logits [..., 5] at a softmax temperature; float64 [...]."""
    return prompt.preference(np.asarray(level_logits, np.float64) / float(temperature))


def preference_matrix(anchor_p, test_p) -> np.ndarray:
    """M float64 [K + 1, K + 1] from anchor_p [K, K] ([i, j], i < j: P(anchor j better than
    anchor i); the rest unread) and test_p [K] (P(test video better than anchor k))."""
    anchor_p = np.asarray(anchor_p, np.float64)
    test_p = np.asarray(test_p, np.float64)
    k = anchor_p.shape[0]
    if anchor_p.shape != (k, k) or test_p.shape != (k,):
        raise ValueError(f"anchor preferences must be [K, K] and test preferences [K], got {anchor_p.shape} "
                         f"and {test_p.shape}")
    m = np.full((k + 1, k + 1), 0.5)
    for i in range(k):
        for j in range(i + 1, k):
            m[j, i], m[i, j] = anchor_p[i, j], 1.0 - anchor_p[i, j]
    m[k, :k], m[:k, k] = test_p, 1.0 - test_p
    return m


def _terms(q: np.ndarray, m: np.ndarray):
    d = q[:, None] - q[None, :]
    log_cdf = scipy.special.log_ndtr(d)
    r = np.exp(-0.5 * d * d - _LOG_SQRT_2PI - log_cdf)
    return d, log_cdf, r


def _negative_log_posterior(q, m):
    _, log_cdf, _ = _terms(q, m)
    return -(np.sum(m * log_cdf) - 0.5 * q @ q)


def _gradient(q, m):
    _, _, r = _terms(q, m)
    mr = m * r
    return -(mr.sum(axis=1) - mr.sum(axis=0) - q)


def _hessian(q, m):
    d, _, r = _terms(q, m)
    w = m * (-r * (d + r))
    s = w + w.T
    np.fill_diagonal(s, 0.0)
    return s - np.diag(s.sum(axis=1)) + np.eye(len(q))


def solve_map(matrix) -> tuple[np.ndarray, np.ndarray]:
    """(q*, covariance): the probit MAP scores float64 [n] of one matrix [n, n] and the inverse
    Hessian of the negative log posterior there [n, n]. Raises ValueError when the solver
    does not converge."""
    m = np.asarray(matrix, np.float64)
    result = scipy.optimize.minimize(_negative_log_posterior, np.zeros(len(m)), args=(m,), jac=_gradient,
                                     hess=_hessian, method="trust-exact", options={"gtol": GRADIENT_TOL})
    if not result.success and np.max(np.abs(_gradient(result.x, m))) > 1e-8:
        raise ValueError(f"the Thurstone MAP did not converge: {result.message}")
    return result.x, np.linalg.inv(_hessian(result.x, m))


def to_mos(latent, covariance, anchor_mos) -> tuple[float, float]:
    """(score, stderr) of the last object on the MOS scale: the least-squares line through the
    anchors' (latent, MOS), and the delta method with `covariance` [K + 1, K + 1]."""
    q = np.asarray(latent, np.float64)
    mos = np.asarray(anchor_mos, np.float64)
    k = len(mos)
    slope, intercept = np.polyfit(q[:k], mos, 1)
    score = slope * q[k] + intercept
    # d score / d q: through the test video's q directly (the slope), and through the line.
    centred, mos_centred = q[:k] - q[:k].mean(), mos - mos.mean()
    sxx = centred @ centred
    offset = q[k] - q[:k].mean()
    d_slope = (mos_centred - 2 * slope * centred) / sxx
    gradient = np.append(-slope / k + offset * d_slope, slope)
    return float(score), float(np.sqrt(max(gradient @ np.asarray(covariance) @ gradient, 0.0)))


def paper_latent(matrix, *, seed: int = PAPER_SEED, steps: int = PAPER_STEPS, lr: float = PAPER_LR) -> np.ndarray:
    """The authors' latent scores float32 [n] for one matrix [n, n], in PyTorch (their code)."""
    import torch

    m = torch.as_tensor(np.asarray(matrix, np.float32))
    generator = torch.Generator().manual_seed(seed)
    q = torch.rand(m.shape[0], generator=generator).requires_grad_(True)
    optimizer = torch.optim.Adam([q], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        prob = torch.clamp(torch.sigmoid(q[:, None] - q[None, :]), min=PAPER_FLOOR)
        loss = -(torch.sum(m * torch.log(prob)) - torch.sum(q**2) / 2)
        loss.backward()
        optimizer.step()
    return q.detach().numpy()


def score(anchor_logits, test_logits, anchor_mos, *, mode: str = "map") -> dict:
    """One test video's score from level logits: anchor_logits [K, K, 5] ([i, j]: first anchor i,
    second anchor j; i < j read), test_logits [K, 5] ([k]: first anchor k, second the test
    video), anchor_mos [K] increasing.

    Returns {"score", "stderr", "low", "high", "latent", "p": [K] P(test better than
    anchor k) at temperature 1}; `paper` mode has NaN stderr, low and high. Raises
    ValueError for an unknown mode or shapes that do not fit.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    p = preference(test_logits)
    if mode == "map":
        q, cov = solve_map(preference_matrix(preference(anchor_logits), p))
        value, stderr = to_mos(q, cov, anchor_mos)
        return {"score": value, "stderr": stderr, "low": value - Z95 * stderr, "high": value + Z95 * stderr,
                "latent": float(q[-1]), "p": p}
    matrix = preference_matrix(preference(anchor_logits, PAPER_ANCHOR_TEMPERATURE),
                               preference(test_logits, PAPER_TEST_TEMPERATURE))
    q = paper_latent(matrix).astype(np.float64)
    spread = q.max() - q.min()
    value = 100.0 * (q[-1] - q.min()) / spread if spread > 0 else float("nan")
    nan = float("nan")
    return {"score": float(value), "stderr": nan, "low": nan, "high": nan, "latent": float(q[-1]), "p": p}
