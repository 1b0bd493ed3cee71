"""The metrics of pairwise preference and of quality scores: the one home of each.

Pairs (numpy, on the host):

    direction accuracy   a pair labelled superior or better (the second video is
                         better, prompt.SECOND_BETTER) is right when its preference is
                         above the centre (P > 0.5), one labelled worse or inferior
                         (prompt.SECOND_WORSE) when below (P < 0.5); a preference at the
                         centre is wrong; "similar" pairs have no direction and are left
                         out. `decisive_only` keeps superior and inferior pairs, which for
                         synthetic pairs are the level gaps above 1.
    five-way accuracy    argmax of the five level logits == label.
    by origin            both, overall ("all") and per entry of labels.origins.ORIGINS,
                         over a table of predictions (`predict.predict_pairs` output).
    cross-entropy        weighted mean of -log softmax(level logits)[label].

Any per-pair preference signal works: the student's P with centre 0.5, or a teacher's
score difference (second minus first) with centre 0 (`teacher_direction_accuracy`).

Scores against MOS: SRCC, PLCC and KRCC are scipy.stats.spearmanr, pearsonr and
kendalltau (tau-b, which accounts for ties). PLCC is raw, as the paper's code and
Q-Align report it; `plcc_fitted` and `rmse_fitted` come after the field's
4-parameter logistic (`logistic_4`, VQEG), as MinimalisticVQA and Compare2Score
report them. `bootstrap_interval` gives 95% percentile bootstrap intervals,
`mos_metrics` all of them for one set, and `weighted_overall` / `overall_by_group` the
paper's in-domain and out-of-distribution "overall" (means weighted by video count).

Small sets. Every report carries the count it rests on (`mos_metrics`' "videos",
`by_origin`'s "<name>/pairs" and "<name>/direction_pairs", `teacher_direction_summary`'s
"pairs"). Below MIN_VIDEOS_CORRELATION videos `mos_metrics`' SRCC, PLCC and KRCC are NaN
(over 2 videos a correlation is always +1 or -1). Below MIN_VIDEOS_FITTED videos the logistic-fitted figures (PLCC and RMSE
after the fit) are NaN, and below MIN_VIDEOS_BOOTSTRAP the bootstrap intervals are
[NaN, NaN]; so is a fitted figure whose logistic is a step (`MosFit.is_step`), whatever
the count. `mos_metrics` says why in its "notes". Warnings of numpy and scipy (a nearly
constant input, a poorly conditioned line) are caught and said once per call in our
words, as a `MetricsWarning` (a tables.TableWarning, so a verb's notes list it), and
stand in `mos_metrics`' notes too.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special
import scipy.stats

from w2s_vqa.labels import origins as origins_lib
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS, SECOND_BETTER, SECOND_WORSE
from w2s_vqa.score.metric_warnings import Caught, say, speaks_once

# The levels of a decisive pair: the strong words, a level gap above 1 for synthetic pairs.
DECISIVE: tuple[int, ...] = (LEVEL_INDEX["superior"], LEVEL_INDEX["inferior"])
# Columns of a prediction table (predict.predict_pairs): P(second better) and the level logits.
P_COLUMN = "p"
LOGIT_COLUMNS: tuple[str, ...] = tuple(f"logit_{word}" for word in LEVELS)

# The fewest videos for the figures after the 4-parameter logistic fit: five per parameter.
# Fewer let the fit bend through the points (often into a step), raising PLCC above what the
# scores earn: on 8 videos of unrelated scores a fitted PLCC of 0.9 is common.
MIN_VIDEOS_FITTED = 20
# The fewest videos for a percentile bootstrap interval of a correlation: below it the
# resamples repeat so few distinct videos that the interval's coverage falls well short of
# its nominal 95% (Efron and Tibshirani 1993, ch. 13; the percentile method's known bias on small n).
MIN_VIDEOS_BOOTSTRAP = 20
# The fewest videos for SRCC, PLCC and KRCC: over 2 videos any correlation is +1 or -1 (or
# undefined), whatever the scores, so a figure on fewer than 3 says nothing of the model.
MIN_VIDEOS_CORRELATION = 3


def _labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional [N], got shape {labels.shape}")
    bad = ~np.isin(labels, np.arange(len(LEVELS)))
    if bad.any():
        raise ValueError(f"labels must be indices into LEVELS (0..{len(LEVELS) - 1}); {int(bad.sum())} are not, "
                         f"the first in row {int(np.flatnonzero(bad)[0])} (from 0): {labels[bad][0].item()!r}")
    return labels.astype(np.int64)


def direction_outcomes(labels, preference, *, center: float = 0.5,
                       decisive_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(counted, correct): bool [N] each, the pairs direction accuracy counts and which of them are right.

    labels: [N] indices into prompt.LEVELS. preference: [N] floats, higher = the second
    video preferred (P in [0, 1] with center 0.5, or a score difference with center 0).
    A pair counts when its label has a direction (superior, better, worse, inferior; with
    `decisive_only` superior and inferior only) and its preference is not NaN (NaN marks
    a pair not predicted, or a video a teacher did not score). ValueError on labels
    outside LEVELS or arrays of different lengths.
    """
    labels = _labels(labels)
    preference = np.asarray(preference, np.float64)
    if preference.shape != labels.shape:
        raise ValueError(f"preference has shape {preference.shape}, labels {labels.shape}")
    better, worse = np.isin(labels, SECOND_BETTER), np.isin(labels, SECOND_WORSE)
    counted = (better | worse) & ~np.isnan(preference)
    if decisive_only:
        counted &= np.isin(labels, DECISIVE)
    correct = counted & np.where(better, preference > center, preference < center)
    return counted, correct


def direction_accuracy(labels, preference, *, center: float = 0.5, decisive_only: bool = False) -> float:
    """Fraction of directional pairs whose preference points the label's way; NaN when none counts.

    See `direction_outcomes` for the arguments and what counts.
    """
    counted, correct = direction_outcomes(labels, preference, center=center, decisive_only=decisive_only)
    return float(correct.sum() / counted.sum()) if counted.any() else float("nan")


def five_way_accuracy(labels, level_logits) -> float:
    """Fraction of pairs whose largest level logit is their label; NaN for no pair.

    labels [N] indices into LEVELS; level_logits [N, 5] in LEVELS order (any scale:
    logits, probabilities). A tie goes to the first level, as numpy's argmax.
    """
    labels = _labels(labels)
    level_logits = np.asarray(level_logits)
    if level_logits.shape != (len(labels), len(LEVELS)):
        raise ValueError(f"level_logits must be [N, {len(LEVELS)}] with N = {len(labels)}, "
                         f"got shape {level_logits.shape}")
    return float(np.mean(level_logits.argmax(axis=-1) == labels)) if len(labels) else float("nan")


def cross_entropy(labels, level_logits, weights=None) -> float:
    """Weighted mean over pairs of -log softmax(level_logits)[label], in nats.

    labels [N]; level_logits [N, 5]; weights [N] (default 1; 0 leaves a pair out), the
    objective's weighting (train.objective.loss_terms) taken over all N pairs at once.
    NaN when the weights sum to 0.
    """
    labels = _labels(labels)
    log_q = scipy.special.log_softmax(np.asarray(level_logits, np.float64), axis=-1)
    ce = -np.take_along_axis(log_q, labels[:, None], axis=-1)[:, 0]
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    total = weights.sum()
    return float((ce * weights).sum() / total) if total > 0 else float("nan")


def by_origin(predictions: pd.DataFrame) -> dict[str, float]:
    """Direction and five-way accuracy and the pair count, overall and per origin.

    predictions: a pair table (label, origin, weight) with the columns `P_COLUMN` and
    `LOGIT_COLUMNS`, as `predict.predict_pairs` returns it. Pairs of weight 0 and pairs
    not predicted (P NaN) are left out. Keys, for "all" then each entry of
    labels.origins.ORIGINS that has a pair ("student:<stage>" origins pool under
    "student"): "<name>/direction_accuracy" (absent when the name has no directional
    pair), "<name>/direction_pairs" (the count it rests on, a float), "<name>/five_way_accuracy",
    "<name>/pairs" (the count five-way accuracy rests on, a float).
    """
    missing = [c for c in ("label", "origin", "weight", P_COLUMN, *LOGIT_COLUMNS) if c not in predictions.columns]
    if missing:
        raise KeyError(f"the prediction table lacks columns {missing} (has {list(predictions.columns)})")
    p = predictions[P_COLUMN].to_numpy(np.float64)
    kept = (predictions["weight"].to_numpy(np.float64) > 0) & ~np.isnan(p)
    labels = _labels(predictions["label"].to_numpy())
    counted, correct = direction_outcomes(labels, p)
    five_way = predictions[list(LOGIT_COLUMNS)].to_numpy().argmax(axis=-1) == labels
    codes = origins_lib.origin_codes(predictions["origin"].astype(str))
    out: dict[str, float] = {}
    for name, select in [("all", kept)] + [(o, kept & (codes == i)) for i, o in enumerate(origins_lib.ORIGINS)]:
        if not select.any():
            continue
        if (counted & select).any():
            out[f"{name}/direction_accuracy"] = float((correct & select).sum() / (counted & select).sum())
        out[f"{name}/direction_pairs"] = float((counted & select).sum())
        out[f"{name}/five_way_accuracy"] = float(five_way[select].mean())
        out[f"{name}/pairs"] = float(select.sum())
    return out


def teacher_direction_summary(pairs: pd.DataFrame, scores: pd.DataFrame, *, origins: Iterable[str] | None = None,
                              decisive_only: bool = False) -> dict[str, dict[str, float]]:
    """Per teacher, the direction accuracy of its scores on a pair table and the pairs it
    rests on: {teacher: {"accuracy": float, "pairs": int}}.

    pairs: a pair table (first_id, second_id, label, origin); scores: a long teacher
    table (video_id, teacher, score; higher = better), as labels.teachers reads it. A
    teacher's preference for a pair is its score of the second video minus that of the
    first, with centre 0: a tie is wrong, and a pair with a video the teacher did not
    score is left out (so teachers may rest on different counts). `origins` keeps pairs
    of those origins only; `decisive_only` as in `direction_outcomes`. A teacher left
    with no pair gets accuracy NaN and pairs 0.
    """
    if origins is not None:
        pairs = pairs[pairs["origin"].isin(list(origins))]
    wide = scores.pivot(index="video_id", columns="teacher", values="score")
    out = {}
    for teacher in wide.columns:
        column = wide[teacher].astype(np.float64)
        difference = (column.reindex(pairs["second_id"].astype(str)).to_numpy()
                      - column.reindex(pairs["first_id"].astype(str)).to_numpy())
        counted, correct = direction_outcomes(pairs["label"].to_numpy(), difference, center=0.0,
                                              decisive_only=decisive_only)
        out[str(teacher)] = {"accuracy": float(correct.sum() / counted.sum()) if counted.any() else float("nan"),
                             "pairs": int(counted.sum())}
    return out


def teacher_direction_accuracy(pairs: pd.DataFrame, scores: pd.DataFrame, *, origins: Iterable[str] | None = None,
                               decisive_only: bool = False) -> dict[str, float]:
    """{teacher: accuracy}: `teacher_direction_summary` without the counts."""
    return {teacher: summary["accuracy"] for teacher, summary in teacher_direction_summary(
        pairs, scores, origins=origins, decisive_only=decisive_only).items()}


# ----------------------------------------------------------------------------- scores against MOS
def _finite_pair(predicted, mos) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(predicted, np.float64), np.asarray(mos, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"predicted and mos must be [N] of one length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("predicted and mos must be finite: "
                         f"{int((~np.isfinite(x)).sum())} and {int((~np.isfinite(y)).sum())} values are not")
    if len(x) < 2:
        raise ValueError(f"a correlation needs at least 2 videos, got {len(x)}")
    return x, y


def _constant(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether either side is constant: every correlation is then undefined (scipy warns and
    gives NaN; we give NaN without the warning)."""
    return bool(np.ptp(x) == 0 or np.ptp(y) == 0)


@speaks_once
def srcc(predicted, mos) -> float:
    """Spearman rank-order correlation of predicted scores with MOS (scipy.stats.spearmanr;
    ties take their average rank). [N] each, finite, N >= 2; NaN when either is constant."""
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.spearmanr(x, y).statistic)


@speaks_once
def plcc(predicted, mos) -> float:
    """Pearson linear correlation of predicted scores with MOS (scipy.stats.pearsonr).

    Plain Pearson on the raw scores: no logistic mapping is fitted first. Much of the VQA
    literature (VQEG) fits a 4- or 5-parameter logistic from scores to MOS before taking
    PLCC; this figure is the one without, which such a fit can only raise. [N] each,
    finite, N >= 2; NaN when either is constant.
    """
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.pearsonr(x, y).statistic)


@speaks_once
def krcc(predicted, mos) -> float:
    """Kendall rank correlation (tau-b) of predicted scores with MOS (scipy.stats.kendalltau).
    [N] each, finite, N >= 2; NaN when either is constant."""
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.kendalltau(x, y).statistic)


def correlations(predicted, mos) -> dict[str, float]:
    """{"srcc", "plcc", "krcc"} of predicted scores with MOS; see each function."""
    return {"srcc": srcc(predicted, mos), "plcc": plcc(predicted, mos), "krcc": krcc(predicted, mos)}


# ----------------------------------------------------------------------------- logistic fit, RMSE
def logistic_4(x, beta1: float, beta2: float, beta3: float, beta4: float):
    """The field's 4-parameter logistic from objective scores to MOS, elementwise on [N] arrays:

        f(x) = beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|))

    beta1 and beta2 are the upper and lower asymptotes (swapped for a predictor that
    falls as MOS rises), beta3 the midpoint, |beta4| the scale. Source: VQEG, "Final
    report on the validation of objective models of video quality assessment, phase
    II" (2003), the monotonic logistic fitted before PLCC and RMSE; the same function
    (`logistic_func`) is in the evaluation code of MinimalisticVQA, FAST-VQA and DOVER.
    """
    z = -(np.asarray(x, np.float64) - beta3) / max(abs(beta4), 1e-300)
    return beta2 + (beta1 - beta2) * scipy.special.expit(-z)


# Evaluations a fit may take (scipy.optimize.curve_fit's maxfev); a fit that needs more is
# treated as failed.
LOGISTIC_MAX_EVALUATIONS = 10_000


@dataclasses.dataclass(frozen=True)
class MosFit:
    """A map from objective scores to MOS: `kind` "logistic" (`params` = beta1..beta4 of
    `logistic_4`) or "linear" (`params` = slope, intercept), the fallback when the
    logistic fit does not converge."""

    kind: str
    params: tuple[float, ...]

    def __call__(self, x) -> np.ndarray:
        """The fitted MOS of scores x: float64, x's shape."""
        x = np.asarray(x, np.float64)
        if self.kind == "logistic":
            return logistic_4(x, *self.params)
        slope, intercept = self.params
        return slope * x + intercept

    def is_step(self, x) -> bool:
        """Whether this map is a step on the scores x [N]: one jump between neighbouring
        videos (sorted by score) makes at least STEP_SHARE of the fitted range, and more
        than twice the share of the scores' own range that their widest gap makes. The map
        then sorts the videos into two groups instead of following the scores (a flexible
        fit on few or unrelated scores); a line never is."""
        if self.kind != "logistic":
            return False
        x = np.sort(np.asarray(x, np.float64))
        mapped = self(x)
        span, x_span = np.ptp(mapped), np.ptp(x)
        if span == 0 or x_span == 0:
            return False
        share = float(np.max(np.abs(np.diff(mapped))) / span)
        return share >= STEP_SHARE and share > 2 * float(np.max(np.diff(x)) / x_span)


# The share of the fitted range one jump between neighbouring videos takes for `MosFit.is_step`.
STEP_SHARE = 0.5


@speaks_once
def fit_logistic(predicted, mos) -> MosFit:
    """Least-squares fit of `logistic_4` from predicted scores to MOS (scipy.optimize.curve_fit).

    predicted, mos: [N] finite floats, N >= 2. The start is beta = (max MOS, min MOS,
    mean score, std of the scores): the field's code starts beta4 at 0.5 whatever the
    scale of the scores; the standard deviation makes the start independent of it.
    When the fit does not converge (curve_fit's RuntimeError, a non-finite result, or
    fewer than 5 videos: 4 parameters need at least one degree of freedom left), the
    least-squares line is returned instead (kind "linear"), which leaves PLCC at its
    raw value. ValueError for inputs `plcc` refuses.
    """
    x, y = _finite_pair(predicted, mos)
    if _constant(x, y):
        return MosFit("linear", (0.0, float(y.mean())))
    if len(x) >= 5:
        start = (float(y.max()), float(y.min()), float(x.mean()), float(x.std()))
        try:
            with warnings.catch_warnings():
                # An ill-conditioned covariance (OptimizeWarning) does not make the fit wrong.
                warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
                params, _ = scipy.optimize.curve_fit(logistic_4, x, y, p0=start, maxfev=LOGISTIC_MAX_EVALUATIONS)
            if np.isfinite(params).all() and np.isfinite(logistic_4(x, *params)).all():
                return MosFit("logistic", tuple(float(p) for p in params))
        except RuntimeError:
            pass
    slope, intercept = np.polyfit(x, y, 1)
    return MosFit("linear", (float(slope), float(intercept)))


# How a note says where a left-out figure shows: NaN in mos_metrics' dict, which `eval`'s tables
# print as "-", its closing JSON line writes as null (main.common.finite) and results.json as NaN.
LEFT_OUT = " (no figure: - in the tables, null or NaN in the JSON)"


def _fitted_problem(x: np.ndarray, fit: MosFit) -> str:
    """Why the figures after `fit` are left out on the scores x ("" when they stand)."""
    if len(x) < MIN_VIDEOS_FITTED:
        return (f"{len(x)} videos, fewer than {MIN_VIDEOS_FITTED}: PLCC and RMSE after the logistic fit are left "
                f"out{LEFT_OUT}, since 4 parameters fitted to so few videos raise PLCC above what the scores earn")
    if fit.is_step(x):
        return ("the logistic fit is a step (one jump between neighbouring videos makes most of its range): "
                f"PLCC and RMSE after the fit are left out{LEFT_OUT}")
    return ""


@speaks_once
def plcc_fitted(predicted, mos) -> float:
    """PLCC of MOS with the predicted scores mapped by `fit_logistic`, as the VQEG procedure
    (and MinimalisticVQA's and Compare2Score's tables) reports it. NaN when either side is
    constant or the fitted map is, for fewer than MIN_VIDEOS_FITTED videos, and for a fit
    that is a step (`MosFit.is_step`)."""
    x, y = _finite_pair(predicted, mos)
    fit = fit_logistic(x, y)
    if _fitted_problem(x, fit):
        return float("nan")
    mapped = fit(x)
    return float("nan") if _constant(mapped, y) else float(scipy.stats.pearsonr(mapped, y).statistic)


@speaks_once
def rmse_fitted(predicted, mos) -> float:
    """Root mean squared error, in MOS units, between MOS and the predicted scores mapped by
    `fit_logistic`: sqrt(mean((f(x) - MOS)^2)) (VQEG phase II). NaN where `plcc_fitted` is
    left out for the count or a step."""
    x, y = _finite_pair(predicted, mos)
    fit = fit_logistic(x, y)
    if _fitted_problem(x, fit):
        return float("nan")
    return float(np.sqrt(np.mean((fit(x) - y) ** 2)))


# ----------------------------------------------------------------------------- bootstrap intervals
STATISTICS: dict[str, Callable] = {"srcc": srcc, "krcc": krcc, "plcc": plcc, "plcc_fitted": plcc_fitted,
                                   "rmse_fitted": rmse_fitted}


@speaks_once
def bootstrap_interval(statistic: Callable | str, predicted, mos, *, confidence: float = 0.95,
                       resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(low, high): the percentile bootstrap interval of `statistic(predicted, mos)`.

    Paired resampling (Efron and Tibshirani, "An Introduction to the Bootstrap", 1993,
    ch. 13): each resample draws N videos with replacement, keeping each video's score
    and MOS together, and the interval holds the central `confidence` of the statistic
    over `resamples` resamples. The percentile method, as scipy.stats.bootstrap's
    method="percentile"; BCa would need a jackknife of N more evaluations, refits
    included. Written out rather than through scipy.stats.bootstrap because a resample
    where the statistic is undefined (a constant side, likely on small sets) must be
    left out, where scipy's interval would become NaN. `statistic` is a function
    (predicted [N], mos [N]) -> float or a name in STATISTICS. Seeded: the same
    inputs and seed give the same interval. (NaN, NaN) when no resample is defined.
    No count is refused here; `mos_metrics` leaves intervals out below
    MIN_VIDEOS_BOOTSTRAP. Library warnings of all resamples are said once.
    ValueError for inputs `srcc` refuses, confidence outside (0, 1), resamples < 1.
    """
    function = STATISTICS[statistic] if isinstance(statistic, str) else statistic
    x, y = _finite_pair(predicted, mos)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for r in range(resamples):
        drawn = rng.integers(0, len(x), len(x))
        values[r] = function(x[drawn], y[drawn])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def mos_metrics(predicted, mos, *, bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                what: str = "") -> dict:
    """Every figure of predicted scores against MOS, for one evaluation set.

    predicted, mos: [N] finite floats, N >= 2. Returns {"videos": N, "srcc", "krcc",
    "plcc" (raw, as the paper reports it; the three NaN below MIN_VIDEOS_CORRELATION videos), "plcc_fitted", "rmse_fitted" (after
    `fit_logistic`; RMSE in MOS units; NaN below MIN_VIDEOS_FITTED videos or for a step
    fit), "fit": {"kind", "params", "step"}, "notes": [sentences: what was left out and
    why, and library warnings in our words]} and, unless `bootstrap` is 0,
    "<statistic>_ci": [low, high] for each of the five statistics (`bootstrap_interval`
    with `bootstrap` resamples, `confidence`, `seed`; [NaN, NaN] below
    MIN_VIDEOS_BOOTSTRAP videos). Library warnings are also said once as a MetricsWarning,
    beginning with `what` (e.g. "konvid_1k, student").
    """
    with Caught() as caught:
        x, y = _finite_pair(predicted, mos)
        fit = fit_logistic(x, y)
        mapped = fit(x)
        problem = _fitted_problem(x, fit)
        fitted_plcc = float("nan") if problem or _constant(mapped, y) else \
            float(scipy.stats.pearsonr(mapped, y).statistic)
        out: dict = {"videos": int(len(x)), **correlations(x, y), "plcc_fitted": fitted_plcc,
                     "rmse_fitted": float("nan") if problem else float(np.sqrt(np.mean((mapped - y) ** 2))),
                     "fit": {"kind": fit.kind, "params": list(fit.params), "step": fit.is_step(x)}}
        small = bool(bootstrap) and len(x) < MIN_VIDEOS_BOOTSTRAP
        if small and len(x) < MIN_VIDEOS_FITTED:  # one sentence for both
            problem = (f"{len(x)} videos, fewer than {max(MIN_VIDEOS_FITTED, MIN_VIDEOS_BOOTSTRAP)}: PLCC and "
                       f"RMSE after the logistic fit and the bootstrap intervals are left out{LEFT_OUT}, since on so "
                       f"few videos a 4-parameter fit raises PLCC above what the scores earn and an interval "
                       f"claims more certainty than the videos hold")
        elif small:
            problem = "; ".join(filter(None, [problem, (
                f"{len(x)} videos, fewer than {MIN_VIDEOS_BOOTSTRAP}: the bootstrap intervals are left out{LEFT_OUT}, "
                f"since on so few videos an interval claims more certainty than the videos hold")]))
        notes = problem.split("; ") if problem else []
        if len(x) < MIN_VIDEOS_CORRELATION:
            out.update(srcc=float("nan"), plcc=float("nan"), krcc=float("nan"))
            notes.insert(0, f"{len(x)} videos, fewer than {MIN_VIDEOS_CORRELATION}: SRCC, PLCC and KRCC are left "
                            f"out (NaN), since over {len(x)} videos a correlation is always +1 or -1")
        if bootstrap:
            for name in STATISTICS:
                out[f"{name}_ci"] = [float("nan")] * 2 if small else list(bootstrap_interval(
                    name, x, y, confidence=confidence, resamples=bootstrap, seed=seed))
    library = [s for s in caught.said if s not in notes]
    out["notes"] = notes + library
    say(library, what)  # what was left out shows in the figures themselves (NaN) and the notes
    return out
