"""Thurstone Case V scores: MAP recovers known scores and its intervals cover them at the
stated rate; the optimum is scipy's; `paper` mode equals an independent PyTorch
reimplementation of the authors' procedure; batched equals one at a time."""

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from w2s_vqa import prompt
from w2s_vqa.score import thurstone

PAPER_MOS = np.array([39.56, 50.23, 60.62, 69.43, 78.03])


def _probit_matrix(q, count):
    """count comparisons per pair, split by their expected outcome under Thurstone Case V."""
    return count * scipy.stats.norm.cdf(q[..., :, None] - q[..., None, :])


def test_matrix_layout_follows_the_authors_code():
    # anchor_p[i, j] = P(anchor j, second, better than anchor i, first), asked for i < j only.
    anchor_p = np.array([[9, .8, .9], [9, 9, .7], [9, 9, 9]])
    m = thurstone.preference_matrix(anchor_p, np.array([[.1, .2, .3]]))
    want = np.array([[.5, .2, .1, .9],
                     [.8, .5, .3, .8],
                     [.9, .7, .5, .7],
                     [.1, .2, .3, .5]])
    np.testing.assert_allclose(m[0], want)


def test_preference_at_a_temperature_divides_the_logits():
    logits = np.array([[2.0, 1.0, 0.0, -1.0, -3.0]])
    q = np.exp(logits / 5) / np.exp(logits / 5).sum()
    np.testing.assert_allclose(thurstone.preference(logits, 5.0), q @ np.array(prompt.ALPHA))
    np.testing.assert_allclose(thurstone.preference(logits), prompt.preference(logits))


def test_map_recovers_known_scores_and_is_scipys_optimum():
    rng = np.random.default_rng(0)
    # Within 3 standard deviations of each other: no pair is decided with P of 0 or 1, where
    # Case V says little about how far apart the two are.
    q = rng.uniform(-1.5, 1.5, size=(50, 6))
    solution = thurstone.solve_map(_probit_matrix(q, 2000))
    assert solution.converged.all()
    # Many comparisons per pair: the prior's pull fades, the order is exact, values close.
    np.testing.assert_array_equal(np.argsort(solution.latent, -1), np.argsort(q, -1))
    np.testing.assert_allclose(solution.latent - solution.latent.mean(-1, keepdims=True),
                               q - q.mean(-1, keepdims=True), atol=0.03)
    np.testing.assert_allclose(solution.latent.sum(-1), 0, atol=1e-9)  # centred at the optimum

    # The optimum of the objective written out independently, found by scipy's BFGS.
    m = thurstone.preference_matrix(rng.uniform(size=(5, 5)), rng.uniform(size=5))
    objective = lambda x: -(np.sum(m * scipy.stats.norm.logcdf(x[:, None] - x[None, :])) - x @ x / 2)  # noqa: E731
    reference = scipy.optimize.minimize(objective, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(thurstone.solve_map(m).latent, reference, atol=1e-6)


def test_map_scores_land_on_the_anchors_mos_scale():
    rng = np.random.default_rng(1)
    q = np.concatenate([np.tile([-1.5, -0.7, 0.0, 0.8, 1.6], (40, 1)), rng.uniform(-2.5, 2.5, (40, 1))], axis=1)
    mos = 60 + 12 * q[0, :5]
    solution = thurstone.solve_map(_probit_matrix(q, 5000))
    score, stderr = thurstone.to_mos(solution.latent, solution.covariance, mos)
    np.testing.assert_array_equal(np.argsort(score), np.argsort(q[:, 5]))
    np.testing.assert_allclose(score, 60 + 12 * q[:, 5], atol=0.6)  # beyond the anchors' range too: a line
    assert (stderr > 0).all() and (stderr < 2).all()


def test_map_intervals_cover_the_truth_at_the_stated_rate():
    # Scores drawn from the model's own prior, 8 comparisons per pair drawn from Case V: the
    # 95% interval (Laplace approximation, delta method through the line) holds the truth
    # about 95% of the time, on the latent scale and on the MOS scale.
    rng = np.random.default_rng(2)
    trials, count = 3000, 8
    q = rng.normal(size=(trials, 6))
    upper = np.triu(np.ones((6, 6), bool), 1)
    wins = rng.binomial(count, scipy.stats.norm.cdf(q[:, :, None] - q[:, None, :]))
    m = np.where(upper, wins, 0)
    m = m + np.where(upper, count - wins, 0).transpose(0, 2, 1)
    solution = thurstone.solve_map(m)
    assert solution.converged.all()
    se = np.sqrt(solution.covariance[:, 5, 5])
    latent_coverage = np.mean(np.abs(solution.latent[:, 5] - q[:, 5]) <= thurstone.Z95 * se)
    mos = 50 + 10 * q[:, :5]  # the anchors' MOS are exact on a line of the true scores
    score = np.empty(trials)
    stderr = np.empty(trials)
    for t in range(trials):
        score[t], stderr[t] = thurstone.to_mos(solution.latent[t], solution.covariance[t], mos[t])
    mos_coverage = np.mean(np.abs(score - (50 + 10 * q[:, 5])) <= thurstone.Z95 * stderr)
    assert 0.93 <= latent_coverage <= 0.97, latent_coverage
    assert 0.92 <= mos_coverage <= 0.98, mos_coverage


def _authors_procedure(c, seed=0, num_iterations=50):
    """The authors' optimize_score_map_pytorch_cuda (W2S-VQA, commit 2c7ca75), reimplemented
    here from its description on a CPU: seeded torch.rand start, Adam lr 0.1, sigmoid
    floored at 1e-6 inside the log, the N(0, 1) prior, no centring."""
    import torch

    torch.manual_seed(seed)
    c = torch.tensor(c, dtype=torch.float32)
    scores = torch.rand(c.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=0.1)
    for _ in range(num_iterations):
        optimizer.zero_grad()
        prob = torch.maximum(torch.sigmoid(scores[:, None] - scores), torch.tensor(1e-6))
        loss = -(torch.sum(c * torch.log(prob)) - torch.sum(scores**2) / 2)
        loss.backward()
        optimizer.step()
    latent = scores.detach().numpy().astype(np.float64)
    return latent, 100 * (latent[-1] - latent.min()) / (latent.max() - latent.min())


def _softmax_preference(logits, t):
    z = np.exp(logits / t)
    return (z / z.sum(-1, keepdims=True)) @ np.array([1.0, 0.75, 0.5, 0.25, 0.0])


def test_paper_mode_is_the_authors_procedure():
    pytest.importorskip("torch", reason="the reference runs in PyTorch")
    import torch

    for n in (3, 6, 11):
        torch.manual_seed(0)
        np.testing.assert_array_equal(thurstone.paper_start(n), torch.rand(n).numpy())
    rng = np.random.default_rng(3)
    anchor_logits = rng.normal(size=(5, 5, 5)) * 3
    test_logits = rng.normal(size=(7, 5, 5)) * 3
    test_logits[0] = [[9, 0, 0, 0, -9]] * 5  # better than every anchor: a tie at 100 with...
    test_logits[1] = [[4, 1, 0, 0, -4]] * 5  # ... this one, as the authors' scaling makes it
    got = thurstone.scores(anchor_logits, test_logits, PAPER_MOS, mode="paper")
    upper = np.triu(np.ones((5, 5), bool), 1)
    for t in range(7):
        # The authors' matrix, built as their update_matrices and anchor loop do.
        a = _softmax_preference(anchor_logits, 1.0)
        c = np.full((6, 6), 0.5)
        c[:5, :5][upper.T] = a.T[upper.T]  # c[second, first] = P
        c[:5, :5][upper] = 1 - a[upper]  # c[first, second] = 1 - P
        p = _softmax_preference(test_logits[t], 5.0)
        c[5, :5], c[:5, 5] = p, 1 - p
        latent, scaled = _authors_procedure(c)
        np.testing.assert_allclose(thurstone.solve_paper(c), latent, atol=1e-5)
        assert got.latent[t] == pytest.approx(latent[-1], abs=1e-5)
        assert got.score[t] == pytest.approx(scaled, abs=1e-3)  # 1e-5 of the 0-100 range
    # Both tie at the top of the 0-100 scale; a min-max scaled float, so compared with a tolerance.
    assert got.score[:2].tolist() == pytest.approx([100.0, 100.0], abs=1e-9)
    assert np.isnan(got.stderr).all() and np.isnan(got.low).all()


@pytest.mark.parametrize("mode", thurstone.MODES)
def test_batched_equals_one_at_a_time(mode):
    rng = np.random.default_rng(4)
    anchor_logits, test_logits = rng.normal(size=(5, 5, 5)) * 2, rng.normal(size=(9, 5, 5)) * 2
    batched = thurstone.scores(anchor_logits, test_logits, PAPER_MOS, mode=mode)
    for t in range(9):
        one = thurstone.scores(anchor_logits, test_logits[t:t + 1], PAPER_MOS, mode=mode)
        for field in ("score", "stderr", "low", "high", "latent", "p"):
            np.testing.assert_allclose(getattr(one, field)[0], getattr(batched, field)[t], rtol=1e-12, atol=1e-12,
                                       err_msg=field)
    if mode == "map":
        assert batched.converged.all()
        np.testing.assert_allclose(batched.high - batched.score, thurstone.Z95 * batched.stderr)


def test_bad_inputs_are_named():
    with pytest.raises(thurstone.ThurstoneError, match=r"\[\.\.\., n, n\] with n >= 2"):
        thurstone.solve_map(np.ones((3, 4)))
    with pytest.raises(thurstone.ThurstoneError, match="finite nonnegative"):
        thurstone.solve_map(np.array([[0.5, np.nan], [0.5, 0.5]]))
    with pytest.raises(thurstone.ThurstoneError, match=r"anchor logits \[5, 5, 5\] and test logits \[N, 5, 5\]"):
        thurstone.scores(np.zeros((5, 5, 5)), np.zeros((2, 4, 5)), PAPER_MOS)
    with pytest.raises(thurstone.ThurstoneError, match="mode must be one of"):
        thurstone.scores(np.zeros((5, 5, 5)), np.zeros((2, 5, 5)), PAPER_MOS, mode="mle")
