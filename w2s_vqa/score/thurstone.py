"""Thurstone Case V scores from the student's preferences against anchor videos, batched in JAX.

The method (docs/method.md "Scoring a single video"; Thurstone 1927, Case V, as the MAP
estimate of Tsukida and Gupta, "How to analyze paired comparison data", UWEE TR 2011,
section 3.3, which the authors' code follows). For one test video and K anchors, n = K + 1
objects; index K (the last) is the test video.

    M [n, n]   M_ij = weight of "i is better than j": the student's P that i is better.
               Anchor pairs: each unordered pair once, the lower-index anchor first (the
               anchors sorted by MOS, ascending), so P = P(second = j better than first = i)
               gives M_ji = P, M_ij = 1 - P. Test pairs: anchor k first, the test video
               second, so M_Kk = P, M_kK = 1 - P. The diagonal is 0.5 and does not matter.
    MAP        q* = argmax_q  sum_ij M_ij log F(q_i - q_j) - sum_i q_i^2 / 2
               (a N(0, 1) prior on every q_i). At the optimum sum_i q_i = 0: the
               likelihood term does not change when every q_i moves alike, so its
               gradient sums to zero and the prior's, -q, must too.

Two modes:

`map` (the default; our decisions where the paper is silent). F = Phi, the standard
normal CDF (Thurstone's Case V). Both kinds of pairs use P at temperature 1. Solved to
convergence by Newton's method with backtracking (the objective is strictly concave:
log Phi is concave and the prior is strictly so) in float64 on the host CPU, which every
platform has, even where the accelerator lacks float64 (TPU). The test video's score on
the MOS scale comes from the least-squares line through the anchors' latent scores and
their MOS: score = mean(MOS) + b (q_test - mean(q_anchors)), b = cov(q_A, MOS) / var(q_A).
Its standard error is the Laplace approximation: the posterior covariance of q is the
inverse of the negative Hessian at the MAP, carried through the line (whose a and b
depend on the anchors' q too) by the delta method; the 95% interval is score +- 1.96
standard errors. A score outside the anchors' MOS range is an extrapolation along that
line, not a clamp.

`paper` reproduces the authors' procedure (github.com/clh124/W2S-VQA, commit 2c7ca75,
llava/eval/infer_pair.py: `optimize_score_map_pytorch_cuda`, `update_matrices`, the
`t = 5` softmax): F = sigmoid floored at 1e-6 inside the log; P at temperature 1 for
anchor pairs and 5 for test pairs (the level logits divided by 5 before the softmax);
Adam (lr 0.1, betas 0.9 and 0.999, eps 1e-8, float32) for 50 steps from the same seeded
start for every test video; no centring; the output is the test video's latent score
min-max scaled to 0-100 over the n videos. The anchors' MOS is never used, so every test
video better than the best anchor scores 100 and every one worse than the worst scores
0: they tie. The start is the authors' `torch.manual_seed(0); torch.rand(n)` as PyTorch
draws it on a CPU (`paper_start`, reproduced without PyTorch); on a GPU their code draws
other numbers (CUDA's generator), which the 50 steps do not fully forget.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import log_ndtr

from w2s_vqa import prompt as prompt_lib

MODES = ("map", "paper")
# Both-sided 95% interval of a normal: score +- Z95 * stderr.
Z95 = 1.959963984540054
# The authors' settings (module docstring).
PAPER_ANCHOR_TEMPERATURE = 1.0
PAPER_TEST_TEMPERATURE = 5.0
PAPER_STEPS = 50
PAPER_LR = 0.1
PAPER_SEED = 0
PAPER_FLOOR = 1e-6
# Newton's stopping rule: the largest step below this (latent units), within MAX_NEWTON steps.
NEWTON_TOL = 1e-10
MAX_NEWTON = 100


class ThurstoneError(ValueError):
    """Inputs the solver cannot use (shapes that do not fit, too few anchors, non-finite values)."""


def preference(level_logits, temperature: float = 1.0) -> np.ndarray:
    """P(second video better) = sum_k alpha_k softmax(level_logits / temperature)_k.

    level_logits: [..., 5] in prompt.LEVELS order. Returns float64 [...], in [0, 1].
    temperature 1 is prompt.preference; the authors use 5 for test pairs.
    """
    logits = np.asarray(level_logits, np.float64)
    if logits.shape[-1:] != (len(prompt_lib.LEVELS),):
        raise ThurstoneError(f"level logits must end in {len(prompt_lib.LEVELS)} levels, got shape {logits.shape}")
    return prompt_lib.preference(logits / float(temperature))


def anchor_block(anchor_p) -> np.ndarray:
    """The anchors' [K, K] block of M from anchor_p [K, K], where anchor_p[i, j] (i < j) is
    P(anchor j better than anchor i) from the pair (first = i, second = j).

    Entries on and below anchor_p's diagonal are not read. M[j, i] = anchor_p[i, j],
    M[i, j] = 1 - anchor_p[i, j], M[i, i] = 0.5. Returns float64.
    """
    p = np.asarray(anchor_p, np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ThurstoneError(f"anchor preferences must be [K, K], got shape {p.shape}")
    upper = np.triu(np.ones(p.shape, bool), 1)
    block = np.full(p.shape, 0.5)
    block[upper] = 1.0 - p[upper]
    block.T[upper] = p[upper]
    return block


def preference_matrix(anchor_p, test_p) -> np.ndarray:
    """M [..., K + 1, K + 1] for every test video: the anchors' block (`anchor_block`) and the
    test video last, with M[K, k] = test_p[..., k] (P that the test video, second, is
    better than anchor k, first) and M[k, K] = 1 - test_p[..., k]. Returns float64.
    """
    block = anchor_block(anchor_p)
    test_p = np.asarray(test_p, np.float64)
    k = block.shape[0]
    if test_p.shape[-1:] != (k,):
        raise ThurstoneError(f"test preferences must be [..., {k}] (one per anchor), got shape {test_p.shape}")
    m = np.empty(test_p.shape[:-1] + (k + 1, k + 1))
    m[..., :k, :k] = block
    m[..., k, :k] = test_p
    m[..., :k, k] = 1.0 - test_p
    m[..., k, k] = 0.5
    return m


@dataclasses.dataclass(frozen=True)
class MapSolution:
    """The MAP scores of a batch of matrices.

    latent: float64 [..., n]; covariance: float64 [..., n, n], the inverse negative Hessian
    of the log posterior at latent (the Laplace approximation); converged: bool [...];
    iterations: int32 [...] Newton steps taken.
    """

    latent: np.ndarray
    covariance: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray


def solve_map(matrix, *, tol: float = NEWTON_TOL, max_iter: int = MAX_NEWTON) -> MapSolution:
    """Thurstone Case V MAP (probit link) of every matrix in a batch, to convergence.

    matrix: [..., n, n] nonnegative weights M_ij of "i better than j" (P values, or counts
    of comparisons). Maximizes sum_ij M_ij log Phi(q_i - q_j) - sum_i q_i^2 / 2 by Newton's
    method with backtracking, vmapped over the batch, in float64 on the host CPU; stops
    when the largest step is below `tol` or after `max_iter` steps. Raises ThurstoneError
    for a matrix that is not square, has fewer than two objects, or has negative or
    non-finite entries.
    """
    m = _check_matrix(matrix)
    batch = m.shape[:-2]
    flat = m.reshape((-1,) + m.shape[-2:])
    with jax.enable_x64(True):
        cpu = jax.local_devices(backend="cpu")[0]
        q, cov, converged, steps = _map_batch(jax.device_put(flat, cpu), float(tol), int(max_iter))
        q, cov, converged, steps = (np.asarray(x) for x in (q, cov, converged, steps))
    n = m.shape[-1]
    return MapSolution(latent=q.reshape(batch + (n,)), covariance=cov.reshape(batch + (n, n)),
                       converged=converged.reshape(batch), iterations=steps.reshape(batch).astype(np.int32))


def _check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2] or m.shape[-1] < 2:
        raise ThurstoneError(f"preference matrices must be [..., n, n] with n >= 2, got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        bad = np.argwhere(~np.isfinite(m) | (m < 0))[0]
        raise ThurstoneError(f"preference matrices must hold finite nonnegative weights; entry {tuple(bad)} is "
                             f"{m[tuple(bad)]}")
    return m


def _log_posterior(q, m):
    diff = q[:, None] - q[None, :]
    return jnp.sum(m * log_ndtr(diff)) - 0.5 * jnp.sum(q * q)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _map_batch(m, tol, max_iter):
    def one(mi):
        n = mi.shape[0]
        value = functools.partial(_log_posterior, m=mi)
        grad, hess = jax.grad(value), jax.hessian(value)

        def newton(state):
            q, _, it, _ = state
            g, h = grad(q), hess(q)
            step = jnp.linalg.solve(-h, g)  # -h is positive definite: the objective is strictly concave
            f0 = value(q)

            # Backtracking: halve the step until the objective does not decrease (at most 40 times).
            def shorter(s):
                t, _ = s
                return t * 0.5, value(q + t * 0.5 * step)

            def worse(s):
                t, f = s
                return (f < f0) & (t > 2.0**-40)

            t, _ = jax.lax.while_loop(worse, shorter, (1.0, value(q + step)))
            moved = t * step
            return q + moved, jnp.max(jnp.abs(moved)), it + 1, f0

        def going(state):
            _, size, it, _ = state
            return (size > tol) & (it < max_iter)

        q0 = jnp.zeros((n,), mi.dtype)
        q, size, it, _ = jax.lax.while_loop(going, newton, (q0, jnp.asarray(jnp.inf, mi.dtype), 0, 0.0 * mi[0, 0]))
        cov = jnp.linalg.inv(-hess(q))
        return q, cov, size <= tol, it

    return jax.vmap(one)(m)


def to_mos(latent, covariance, anchor_mos) -> tuple[np.ndarray, np.ndarray]:
    """(score, stderr), float64 [...]: the last object's latent score on the MOS scale.

    latent [..., K + 1] and covariance [..., K + 1, K + 1] (a MapSolution's), the first K
    the anchors; anchor_mos [K]. score = mean(MOS) + b (q_test - mean(q_A)) with the
    least-squares slope b = sum (q_k - mean q_A)(MOS_k - mean MOS) / sum (q_k - mean q_A)^2.
    stderr = sqrt(g^T C g), g the gradient of the score with respect to all K + 1 latent
    scores (delta method). Where the anchors' latent scores are all equal the line is
    undefined: score and stderr are NaN.
    """
    q = np.asarray(latent, np.float64)
    cov = np.asarray(covariance, np.float64)
    mos = np.asarray(anchor_mos, np.float64)
    k = mos.shape[0]
    if q.shape[-1] != k + 1 or cov.shape[-2:] != (k + 1, k + 1):
        raise ThurstoneError(f"{k} anchor MOS values need latent [..., {k + 1}] and covariance "
                             f"[..., {k + 1}, {k + 1}], got {q.shape} and {cov.shape}")
    qa, qt = q[..., :k], q[..., k]
    da = qa - qa.mean(axis=-1, keepdims=True)
    dm = mos - mos.mean()
    sxx = np.sum(da * da, axis=-1)
    sxy = np.sum(da * dm, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(sxx > 0, sxy / sxx, np.nan)
        u = qt - qa.mean(axis=-1)
        score = mos.mean() + b * u
        # d score / d q_test = b; d score / d q_k = -b/K + u * d b / d q_k, with
        # d b / d q_k = (dm_k - 2 b da_k) / sxx (centring's own terms cancel: sum da = sum dm = 0).
        grad_a = -b[..., None] / k + u[..., None] * (dm - 2.0 * b[..., None] * da) / sxx[..., None]
    grad = np.concatenate([grad_a, b[..., None]], axis=-1)
    var = np.einsum("...i,...ij,...j->...", grad, cov, grad)
    return score, np.sqrt(np.maximum(var, 0.0))


def paper_start(n: int, seed: int = PAPER_SEED) -> np.ndarray:
    """float32 [n]: `torch.manual_seed(seed); torch.rand(n)` as PyTorch draws it on a CPU.

    PyTorch's CPU generator is MT19937 seeded by its standard initialization (numpy's
    legacy RandomState seeding is the same), and a float32 uniform keeps the low 24 bits
    of one 32-bit draw: (x & (2^24 - 1)) / 2^24. Checked against PyTorch in the tests.
    """
    draws = np.random.RandomState(seed).randint(0, 2**24, size=n, dtype=np.uint32)
    return (draws.astype(np.float64) * 2.0**-24).astype(np.float32)


def solve_paper(matrix, *, start=None, steps: int = PAPER_STEPS, lr: float = PAPER_LR) -> np.ndarray:
    """The authors' latent scores, float32 [..., n]: Adam on
    -(sum_ij M_ij log max(sigmoid(q_i - q_j), 1e-6) - sum_i q_i^2 / 2), `steps` steps at `lr`,
    float32, vmapped over the batch.

    matrix [..., n, n]; start [n] (shared by every matrix, as the authors reseed per video)
    or [..., n]; default paper_start(n). Raises ThurstoneError as solve_map does.
    """
    m = _check_matrix(matrix).astype(np.float32)
    n = m.shape[-1]
    start = paper_start(n) if start is None else np.asarray(start, np.float32)
    if start.shape[-1:] != (n,):
        raise ThurstoneError(f"start must be [..., {n}], got shape {start.shape}")
    start = np.broadcast_to(start, m.shape[:-1])
    flat_m, flat_q = m.reshape((-1, n, n)), start.reshape((-1, n))
    cpu = jax.local_devices(backend="cpu")[0]
    out = _paper_batch(jax.device_put(flat_m, cpu), jax.device_put(flat_q, cpu), int(steps), float(lr))
    return np.asarray(out).reshape(m.shape[:-1])


@functools.partial(jax.jit, static_argnums=(2, 3))
def _paper_batch(m, q0, steps, lr):
    optimizer = optax.adam(lr)  # torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8

    def loss(q, mi):
        prob = jnp.maximum(jax.nn.sigmoid(q[:, None] - q[None, :]), jnp.float32(PAPER_FLOOR))
        return -(jnp.sum(mi * jnp.log(prob)) - jnp.sum(q**2) / 2)

    def one(mi, q):
        def step(_, carry):
            q, opt = carry
            updates, opt = optimizer.update(jax.grad(loss)(q, mi), opt)
            return optax.apply_updates(q, updates), opt

        return jax.lax.fori_loop(0, steps, step, (q, optimizer.init(q)))[0]

    return jax.vmap(one)(m, q0)


def paper_scale(latent) -> np.ndarray:
    """float64 [...]: 100 (q_last - min q) / (max q - min q) over the last axis, the authors'
    output; NaN where all n scores are equal."""
    q = np.asarray(latent, np.float64)
    lo, hi = q.min(axis=-1), q.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hi > lo, 100.0 * (q[..., -1] - lo) / (hi - lo), np.nan)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per test video (N of them), float64 unless said:

    score [N]: `map`: on the anchors' MOS scale; `paper`: 0-100.
    stderr, low, high [N]: `map`: standard error and 95% interval; `paper`: NaN.
    latent [N]: the test video's latent Thurstone score.
    p [N, K]: P(test video better than anchor k), at temperature 1 (what the student says).
    converged [N] bool: `map`: Newton converged; `paper`: True.
    """

    score: np.ndarray
    stderr: np.ndarray
    low: np.ndarray
    high: np.ndarray
    latent: np.ndarray
    p: np.ndarray
    converged: np.ndarray


def scores(anchor_logits, test_logits, anchor_mos, *, mode: str = "map") -> Scores:
    """Scores of N test videos from the student's level logits.

    anchor_logits: [K, K, 5], [i, j] the pair (first = anchor i, second = anchor j); only
    i < j is read. test_logits: [N, K, 5], [t, k] the pair (first = anchor k, second = test
    video t). anchor_mos: [K], strictly increasing (anchors.AnchorSet's order). mode: "map"
    or "paper" (module docstring). Raises ThurstoneError for shapes that do not fit or an
    unknown mode.
    """
    if mode not in MODES:
        raise ThurstoneError(f"mode must be one of {MODES}, not {mode!r}")
    anchor_logits = np.asarray(anchor_logits, np.float64)
    test_logits = np.asarray(test_logits, np.float64)
    mos = np.asarray(anchor_mos, np.float64)
    k = mos.shape[0]
    if anchor_logits.shape != (k, k, 5) or test_logits.ndim != 3 or test_logits.shape[1:] != (k, 5):
        raise ThurstoneError(f"{k} anchors need anchor logits [{k}, {k}, 5] and test logits [N, {k}, 5], got "
                             f"{anchor_logits.shape} and {test_logits.shape}")
    p = preference(test_logits)
    n = test_logits.shape[0]
    if mode == "map":
        solution = solve_map(preference_matrix(preference(anchor_logits), p))
        score, stderr = to_mos(solution.latent, solution.covariance, mos)
        return Scores(score=score, stderr=stderr, low=score - Z95 * stderr, high=score + Z95 * stderr,
                      latent=solution.latent[:, k], p=p, converged=solution.converged)
    matrix = preference_matrix(preference(anchor_logits, PAPER_ANCHOR_TEMPERATURE),
                               preference(test_logits, PAPER_TEST_TEMPERATURE))
    latent = solve_paper(matrix)
    nan = np.full((n,), np.nan)
    return Scores(score=paper_scale(latent), stderr=nan, low=nan, high=nan, latent=latent[:, k].astype(np.float64),
                  p=p, converged=np.ones((n,), bool))
