"""Pair metrics on cases checked by hand; SRCC/PLCC/KRCC against their textbook formulas;
the training log's on-device sums against the host definitions."""

import itertools

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels.pair_table import make_pair_table
from w2s_vqa.labels.rules import BETTER, INFERIOR, SIMILAR, SUPERIOR, WORSE
from w2s_vqa.prompt import LEVELS
from w2s_vqa.score import metric_warnings, metrics
from w2s_vqa.score import overall as overall_lib
from w2s_vqa.train import objective


def test_direction_accuracy_by_hand():
    labels = [SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR, BETTER, INFERIOR]
    p = [0.9, 0.4, 0.7, 0.2, 0.5, np.nan, 0.1]
    # right, wrong, (similar: out), right, wrong (at the centre), (not predicted: out), right
    assert metrics.direction_accuracy(labels, p) == pytest.approx(3 / 5)
    # superior and inferior only: right, wrong, right
    assert metrics.direction_accuracy(labels, p, decisive_only=True) == pytest.approx(2 / 3)
    counted, correct = metrics.direction_outcomes(labels, p)
    np.testing.assert_array_equal(counted, [1, 1, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(correct, [1, 0, 0, 1, 0, 0, 1])
    # A score difference reads with centre 0.
    assert metrics.direction_accuracy([BETTER, WORSE, WORSE], [2.0, -1.0, 0.0], center=0.0) == pytest.approx(2 / 3)
    assert np.isnan(metrics.direction_accuracy([SIMILAR, SIMILAR], [0.9, 0.1]))
    with pytest.raises(ValueError, match=r"1 are not, the first in row 1 \(from 0\): 7"):
        metrics.direction_accuracy([BETTER, 7], [0.9, 0.1])
    with pytest.raises(ValueError, match="shape"):
        metrics.direction_accuracy([BETTER, WORSE], [0.9])


def test_five_way_accuracy_and_cross_entropy_by_hand():
    logits = np.array([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 2.0], [0, 0, 0, 0, 0]])
    assert metrics.five_way_accuracy([SUPERIOR, WORSE, SUPERIOR], logits) == pytest.approx(2 / 3)  # a tie: first
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        metrics.five_way_accuracy([0, 1], logits)
    uniform = np.zeros((2, 5))
    assert metrics.cross_entropy([0, 3], uniform) == pytest.approx(np.log(5))
    # -log softmax([3, 0, 0, 0, 0])[0] = log(e^3 + 4) - 3; weights 1 and 3 against log 5.
    ce = metrics.cross_entropy([SUPERIOR, SIMILAR], np.array([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]), [1.0, 3.0])
    assert ce == pytest.approx((np.log(np.e**3 + 4) - 3 + 3 * np.log(5)) / 4)
    assert np.isnan(metrics.cross_entropy([0], uniform[:1], [0.0]))


def predictions(logits, labels, origins, weights):
    logits = np.asarray(logits, np.float32)
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    table = pd.DataFrame({"label": labels, "origin": origins, "weight": weights,
                          metrics.P_COLUMN: q @ np.array([1.0, 0.75, 0.5, 0.25, 0.0])})
    return table.assign(**{c: logits[:, k] for k, c in enumerate(metrics.LOGIT_COLUMNS)})


def test_by_origin_by_hand():
    big = 10.0
    table = predictions(
        [[big, 0, 0, 0, 0],  # P ~ 1
         [0, 0, 0, 0, big],  # P ~ 0
         [0, 0, big, 0, 0],  # P = 0.5
         [0, big, 0, 0, 0],  # P ~ 0.75
         [big, 0, 0, 0, 0],  # P ~ 1, student stage 2
         [0, 0, 0, 0, big],  # weight 0: left out
         [big, 0, 0, 0, 0]],  # not predicted: left out
        [BETTER, BETTER, SIMILAR, INFERIOR, SUPERIOR, WORSE, SUPERIOR],
        ["teacher", "spatial", "spatial", "compression", "student:2", "teacher", "student:3"],
        [1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 1.0])
    table.loc[6, metrics.P_COLUMN] = np.nan
    m = metrics.by_origin(table)
    assert list(m) == [f"{name}/{k}" for name in ("all", "teacher", "spatial", "compression", "student")
                       for k in ("direction_accuracy", "direction_pairs", "five_way_accuracy", "pairs")]
    assert m["all/direction_accuracy"] == pytest.approx(2 / 4)  # the similar pair is left out
    # The counts each figure rests on: 4 directional pairs of the 5 kept; the spatial one is 1 pair.
    assert m["all/direction_pairs"] == 4.0 and m["spatial/direction_pairs"] == 1.0 and m["spatial/pairs"] == 2.0
    assert m["all/five_way_accuracy"] == pytest.approx(2 / 5) and m["all/pairs"] == 5.0
    # Ratios of counts: compared with a tolerance, as every computed float.
    assert m["teacher/direction_accuracy"] == pytest.approx(1.0) and m["teacher/pairs"] == 1.0
    assert m["spatial/direction_accuracy"] == pytest.approx(0.0) and m["spatial/five_way_accuracy"] == pytest.approx(0.5)
    assert m["compression/direction_accuracy"] == pytest.approx(0.0)
    assert m["student/direction_accuracy"] == pytest.approx(1.0) and m["student/five_way_accuracy"] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="logit_superior"):
        metrics.by_origin(table.drop(columns="logit_superior"))


def test_the_training_logs_on_device_sums_give_the_host_figures():
    rng = np.random.default_rng(0)
    n = 64
    logits = rng.normal(size=(n, 5)).astype(np.float32) * 2
    labels = rng.integers(0, 5, n)
    codes = rng.integers(0, 5, n)
    weights = (rng.random(n) > 0.2).astype(np.float32)
    names = ["teacher", "spatial", "temporal", "compression", "student:1"]
    sums = objective.pair_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(codes), jnp.asarray(weights))
    on_device = objective.summarize_metrics({k: np.asarray(v) for k, v in sums.items()})
    on_host = metrics.by_origin(predictions(logits, labels, [names[c] for c in codes], weights))
    assert on_device.keys() == on_host.keys()
    for key in on_host:
        assert on_device[key] == pytest.approx(on_host[key], abs=1e-12), key


def test_teacher_direction_accuracy_counts_agreeing_signs_ties_as_wrong_and_skips_similar_and_unscored():
    scores = pd.DataFrame({"video_id": ["p", "q", "r", "s", "p", "q"], "teacher": ["t"] * 4 + ["u"] * 2,
                           "score": [1.0, 2.0, 2.0, 0.0, 5.0, 5.0]})
    pairs = make_pair_table(
        ["p", "q", "p", "q", "q", "p", "p"],
        ["q", "p", "s", "r", "s", "r", "q"],
        [BETTER, INFERIOR, SUPERIOR, WORSE, INFERIOR, SIMILAR, SUPERIOR],
        origin=["spatial", "spatial", "spatial", "compression", "teacher", "spatial", "spatial"], stage=1)
    # t: right, right, wrong (0 < 1), wrong (tie), right, right; "similar" left out.
    # u scored only p and q, equally: three ties, all wrong.
    accuracy = metrics.teacher_direction_accuracy
    assert accuracy(pairs, scores) == {"t": pytest.approx(4 / 6), "u": 0.0}
    assert accuracy(pairs, scores, origins=["spatial"])["t"] == pytest.approx(3 / 4)
    decisive = accuracy(pairs, scores, origins=["spatial", "compression"], decisive_only=True)
    assert decisive["t"] == pytest.approx(2 / 3) and decisive["u"] == 0.0
    assert np.isnan(accuracy(pairs, scores, origins=["temporal"])["t"])


# ----------------------------------------------------------------------------- scores against MOS
def _ranks(x):
    """Average ranks from 1, ties sharing theirs."""
    x = np.asarray(x, float)
    return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])


def _kendall_tau_b(x, y):
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))


def test_correlations_by_their_textbook_formulas():
    predicted = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    mos = np.array([1.0, 2.5, 3.0, 4.5, 4.0, 1.5])
    # No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); d = rank differences (here one swap).
    d = _ranks(predicted) - _ranks(mos)
    n = len(mos)
    assert metrics.srcc(predicted, mos) == pytest.approx(1 - 6 * np.sum(d**2) / (n * (n**2 - 1)))
    assert metrics.plcc(predicted, mos) == pytest.approx(np.corrcoef(predicted, mos)[0, 1])
    assert metrics.krcc(predicted, mos) == pytest.approx((14 - 1) / 15)  # 15 pairs, one discordant
    # With ties: Pearson of average ranks, and tau-b.
    tied_p, tied_m = np.array([1.0, 2.0, 2.0, 3.0, 5.0]), np.array([2.0, 1.0, 3.0, 3.0, 4.0])
    assert metrics.srcc(tied_p, tied_m) == pytest.approx(np.corrcoef(_ranks(tied_p), _ranks(tied_m))[0, 1])
    assert metrics.krcc(tied_p, tied_m) == pytest.approx(_kendall_tau_b(tied_p, tied_m))
    assert metrics.correlations(predicted, -mos) == pytest.approx(
        {"srcc": -metrics.srcc(predicted, mos), "plcc": -metrics.plcc(predicted, mos),
         "krcc": -metrics.krcc(predicted, mos)})


def test_correlations_refuse_bad_input_and_are_nan_for_a_constant_side():
    with pytest.raises(ValueError, match="one length"):
        metrics.srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite: 1 and 0"):
        metrics.plcc([1, np.nan, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.krcc([1], [1])
    for f in (metrics.srcc, metrics.plcc, metrics.krcc):
        assert np.isnan(f([1, 1, 1], [1, 2, 3]))


def test_logit_columns_follow_the_levels():
    assert metrics.LOGIT_COLUMNS == tuple(f"logit_{w}" for w in LEVELS)


# ----------------------------------------------------------------------------- logistic fit, bootstrap, overall
def test_the_logistic_fit_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, 400)
    truth = (85.0, 15.0, 55.0, 9.0)  # beta1..beta4 of the VQEG logistic
    mos_clean = truth[1] + (truth[0] - truth[1]) / (1 + np.exp(-(x - truth[2]) / truth[3]))
    fit = metrics.fit_logistic(x, mos_clean)
    assert fit.kind == "logistic"
    np.testing.assert_allclose(fit.params[:3], truth[:3], rtol=1e-5)
    assert abs(fit.params[3]) == pytest.approx(truth[3], rel=1e-5)
    # Noise-free: the fitted map is exact, which a line is not.
    assert metrics.plcc_fitted(x, mos_clean) == pytest.approx(1.0, abs=1e-9)
    assert metrics.rmse_fitted(x, mos_clean) == pytest.approx(0.0, abs=1e-4)
    assert metrics.plcc(x, mos_clean) < 0.99
    # With noise of std 3 MOS units: the parameters within a few standard errors, RMSE near 3.
    mos = mos_clean + rng.normal(0, 3.0, len(x))
    noisy = metrics.fit_logistic(x, mos)
    np.testing.assert_allclose(noisy.params[:3], truth[:3], atol=2.0)
    assert metrics.rmse_fitted(x, mos) == pytest.approx(3.0, rel=0.15)
    # No other least-squares fit of the same function does better (an independent optimizer).
    import scipy.optimize

    other = scipy.optimize.least_squares(lambda b: metrics.logistic_4(x, *b) - mos, x0=(70, 30, 50, 5)).x
    sse = lambda b: np.sum((metrics.logistic_4(x, *b) - mos) ** 2)  # noqa: E731
    assert sse(noisy.params) <= sse(other) * (1 + 1e-9)
    # A predictor that falls as MOS rises: the asymptotes swap, the fitted PLCC stays positive.
    assert metrics.fit_logistic(-x, mos_clean).params[0] < metrics.fit_logistic(-x, mos_clean).params[1]
    assert metrics.plcc_fitted(-x, mos_clean) == pytest.approx(1.0, abs=1e-9)


def test_the_fit_falls_back_to_a_line_where_a_logistic_cannot_be_fitted():
    x, mos = np.array([1.0, 2.0, 4.0, 3.0]), np.array([10.0, 25.0, 35.0, 40.0])
    fit = metrics.fit_logistic(x, mos)  # 4 videos: no degree of freedom left for 4 parameters
    assert fit.kind == "linear" and not fit.is_step(x)
    np.testing.assert_allclose(fit.params, np.polyfit(x, mos, 1))
    # The figures after the fit rest on at least MIN_VIDEOS_FITTED videos: NaN on 4.
    assert np.isnan(metrics.plcc_fitted(x, mos)) and np.isnan(metrics.rmse_fitted(x, mos))
    # From MIN_VIDEOS_FITTED videos on, a line's fitted PLCC is the raw one's magnitude and RMSE the line's.
    rng = np.random.default_rng(3)
    x = rng.normal(size=metrics.MIN_VIDEOS_FITTED)
    mos = 2 * x + rng.normal(size=len(x))
    line = metrics.MosFit("linear", tuple(np.polyfit(x, mos, 1)))
    assert np.sqrt(np.mean((line(x) - mos) ** 2)) >= metrics.rmse_fitted(x, mos) - 1e-9  # the logistic fits better
    assert np.isnan(metrics.plcc_fitted(np.ones(25), np.arange(25.0)))


def _unrelated(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(50, 10, size=n)


def test_a_logistic_fit_that_is_a_step_is_named_and_its_figures_left_out():
    # Two groups of scores, MOS split unevenly between them: the least-squares logistic
    # jumps once between the groups; the scores' widest gap is 1/15 of their range.
    x = np.r_[np.linspace(0.0, 0.6, 10), np.linspace(0.6 + 1 / 15, 1.0, 14)]
    mos = np.r_[np.full(10, 30.0), np.full(14, 70.0)] + np.tile([0.5, -0.5], 12)
    fit = metrics.fit_logistic(x, mos)
    assert fit.kind == "logistic" and fit.is_step(x)
    m = metrics.mos_metrics(x, mos, bootstrap=0)
    assert np.isnan(m["plcc_fitted"]) and np.isnan(m["rmse_fitted"]) and m["fit"]["step"]
    assert m["notes"] == ["the logistic fit is a step (one jump between neighbouring videos makes most of its "
                          "range): PLCC and RMSE after the fit are left out (no figure: - in the tables, null or "
                          "NaN in the JSON)"]
    assert m["plcc"] == pytest.approx(scipy_pearson(x, mos))  # the raw figure stands
    # A known logistic over spread scores is no step; nor is a predictor on its lower tail.
    x = np.linspace(0, 100, 60)
    assert not metrics.MosFit("logistic", (85.0, 15.0, 55.0, 9.0)).is_step(x)
    assert not metrics.MosFit("logistic", (2000.0, -5.0, 800.0, 100.0)).is_step(x)
    assert metrics.MosFit("logistic", (85.0, 15.0, 55.0, 0.01)).is_step(x)


def scipy_pearson(x, y):
    import scipy.stats

    return scipy.stats.pearsonr(x, y).statistic


@pytest.mark.parametrize("n", [4, 8, 19])
def test_small_sets_report_their_count_and_leave_out_fitted_figures_and_intervals(n, recwarn):
    x, mos = _unrelated(n, seed=n)
    m = metrics.mos_metrics(x, mos, bootstrap=50, what="tiny_set, student")
    assert m["videos"] == n
    assert m["srcc"] == pytest.approx(metrics.srcc(x, mos)) and m["plcc"] == pytest.approx(scipy_pearson(x, mos))
    assert np.isnan(m["plcc_fitted"]) and np.isnan(m["rmse_fitted"])
    assert all(np.isnan(m[f"{name}_ci"]).all() for name in metrics.STATISTICS)
    assert m["notes"][0].startswith(f"{n} videos, fewer than 20: PLCC and RMSE after the logistic fit and the "
                                    "bootstrap intervals are left out (no figure: - in the tables, null or NaN in "
                                    "the JSON)")
    # Said in the figures (NaN) and the notes; a warning is kept for the libraries' troubles.
    assert not [w for w in recwarn if issubclass(w.category, metric_warnings.MetricsWarning)]
    # At MIN_VIDEOS_BOOTSTRAP videos of related scores: every figure and interval is there, no note.
    rng = np.random.default_rng(n)
    x = rng.normal(size=metrics.MIN_VIDEOS_BOOTSTRAP)
    mos = 3 * x + rng.normal(size=len(x))
    m = metrics.mos_metrics(x, mos, bootstrap=50)
    assert m["notes"] == [] and np.isfinite(m["plcc_fitted"]) and np.isfinite(m["srcc_ci"]).all()
    assert m["plcc_fitted"] >= m["plcc"] - 0.05  # a monotone map on related scores: about the raw figure or above


def test_library_warnings_are_caught_and_said_once_in_our_words():
    import warnings

    # Scores differing only near float precision: scipy warns on every resample; we say it once.
    rng = np.random.default_rng(0)
    x = 5.0 + rng.normal(size=30) * 1e-14
    mos = rng.normal(50, 10, size=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = metrics.mos_metrics(x, mos, bootstrap=100, what="kvq, student")
    assert [w.category for w in caught] == [metric_warnings.MetricsWarning]
    assert str(caught[0].message).startswith("kvq, student: the scores or the MOS are nearly constant")
    assert "nearly constant" in str(caught[0].message) and "NearConstantInputWarning" not in str(caught[0].message)
    assert any("nearly constant" in note for note in m["notes"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics.plcc(x, mos)
    assert [w.category for w in caught] == [metric_warnings.MetricsWarning]
    # The verbs' note collector gathers it as a note (MetricsWarning is a TableWarning).
    from w2s_vqa.tables import collect_notes

    with collect_notes() as notes:
        metrics.plcc(x, mos)
    assert len(notes) == 1 and notes[0].startswith("the scores or the MOS are nearly constant")


def test_teacher_direction_summary_counts_the_pairs_each_teacher_rests_on():
    pairs = pd.DataFrame({"first_id": ["a", "b", "a"], "second_id": ["b", "c", "c"],
                          "label": [BETTER, BETTER, WORSE],
                          "origin": ["teacher"] * 3})
    scores = pd.DataFrame({"video_id": ["a", "b", "c", "a", "b"], "teacher": ["t1"] * 3 + ["t2"] * 2,
                           "score": [1.0, 2.0, 3.0, 5.0, 4.0]})
    summary = metrics.teacher_direction_summary(pairs, scores)
    # t1: a<b right, b<c right, a>c wrong (c is better by its scores); t2 scored a and b only: wrong on a->b.
    assert summary["t1"] == {"accuracy": pytest.approx(2 / 3), "pairs": 3}
    assert summary["t2"] == {"accuracy": pytest.approx(0.0), "pairs": 1}
    assert metrics.teacher_direction_accuracy(pairs, scores) == {"t1": pytest.approx(2 / 3), "t2": pytest.approx(0.0)}


def test_bootstrap_intervals_agree_with_scipy_and_skip_undefined_resamples():
    import scipy.stats

    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    mos = x + rng.normal(size=300)
    ours = metrics.bootstrap_interval("plcc", x, mos, resamples=3000, seed=3)
    theirs = scipy.stats.bootstrap((x, mos), lambda a, b: scipy.stats.pearsonr(a, b).statistic, paired=True,
                                   vectorized=False, n_resamples=3000, method="percentile",
                                   rng=np.random.default_rng(4)).confidence_interval
    # Two independent Monte Carlo estimates of one interval (half-width about 0.045).
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.01)
    assert ours[0] < metrics.plcc(x, mos) < ours[1]
    assert metrics.bootstrap_interval("plcc", x, mos, resamples=200, seed=3) == \
        metrics.bootstrap_interval("plcc", x, mos, resamples=200, seed=3)
    # Two videos: a resample is either one video twice (SRCC undefined, left out) or both (SRCC 1).
    assert metrics.bootstrap_interval("srcc", [0.0, 1.0], [0.0, 1.0], resamples=50) == pytest.approx((1.0, 1.0))
    assert all(np.isnan(metrics.bootstrap_interval("srcc", [1.0, 1.0], [0.0, 1.0], resamples=10)))
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_interval("srcc", x, mos, confidence=95)


def test_mos_metrics_gathers_every_figure():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=40)
    mos = 5 * x + rng.normal(size=40)
    m = metrics.mos_metrics(x, mos, bootstrap=20, seed=1)
    assert m["videos"] == 40
    assert m["srcc"] == metrics.srcc(x, mos) and m["krcc"] == metrics.krcc(x, mos) and m["plcc"] == metrics.plcc(x, mos)
    assert m["plcc_fitted"] == pytest.approx(metrics.plcc_fitted(x, mos))
    assert m["rmse_fitted"] == pytest.approx(metrics.rmse_fitted(x, mos))
    assert m["srcc_ci"] == list(metrics.bootstrap_interval("srcc", x, mos, resamples=20, seed=1))
    assert "srcc_ci" not in metrics.mos_metrics(x, mos, bootstrap=0)


def test_the_weighted_overall_by_hand():
    per_set = {"konvid_1k": {"videos": 100, "srcc": 0.9, "plcc": 0.8},
               "live_vqc": {"videos": 300, "srcc": 0.5, "plcc": 0.6},
               "kvq": {"videos": 50, "srcc": 0.2, "plcc": float("nan")}}
    overall = overall_lib.weighted_overall(per_set, ["konvid_1k", "live_vqc", "lsvq_test"], ["srcc", "plcc"])
    assert overall == {"sets": ["konvid_1k", "live_vqc"], "missing": ["lsvq_test"], "videos": 400,
                       "srcc": pytest.approx((0.9 * 100 + 0.5 * 300) / 400),
                       "plcc": pytest.approx((0.8 * 100 + 0.6 * 300) / 400)}
    groups = overall_lib.overall_by_group(per_set, metrics=["srcc", "plcc"])
    assert set(groups) == {"in_domain", "out_of_distribution"}
    # A weighted mean (sum of products over a sum): rounding may differ by CPU, so a tolerance.
    assert groups["out_of_distribution"]["srcc"] == pytest.approx(0.2) and np.isnan(groups["out_of_distribution"]["plcc"])
    assert overall_lib.weighted_overall(per_set, ["cgvds"]) is None
    # The paper's overall: its counts over all ten sets.
    assert sum(overall_lib.IN_DOMAIN_SETS.values()) == 13560 and sum(overall_lib.OUT_OF_DISTRIBUTION_SETS.values()) == 5563
