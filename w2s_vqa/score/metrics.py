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
kendalltau (tau-b, which accounts for ties).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from w2s_vqa.labels import origins as origins_lib
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS, SECOND_BETTER, SECOND_WORSE

# The levels of a decisive pair: the strong words, a level gap above 1 for synthetic pairs.
DECISIVE: tuple[int, ...] = (LEVEL_INDEX["superior"], LEVEL_INDEX["inferior"])
# Columns of a prediction table (predict.predict_pairs): P(second better) and the level logits.
P_COLUMN = "p"
LOGIT_COLUMNS: tuple[str, ...] = tuple(f"logit_{word}" for word in LEVELS)


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
    pair), "<name>/five_way_accuracy", "<name>/pairs" (a float count).
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
        out[f"{name}/five_way_accuracy"] = float(five_way[select].mean())
        out[f"{name}/pairs"] = float(select.sum())
    return out


def teacher_direction_accuracy(pairs: pd.DataFrame, scores: pd.DataFrame, *, origins: Iterable[str] | None = None,
                               decisive_only: bool = False) -> dict[str, float]:
    """Per teacher, the direction accuracy of its scores on a pair table: {teacher: accuracy}.

    pairs: a pair table (first_id, second_id, label, origin); scores: a long teacher
    table (video_id, teacher, score; higher = better), as labels.teachers reads it. A
    teacher's preference for a pair is its score of the second video minus that of the
    first, with centre 0: a tie is wrong, and a pair with a video the teacher did not
    score is left out. `origins` keeps pairs of those origins only; `decisive_only` as
    in `direction_outcomes`. A teacher left with no pair gets NaN.
    """
    if origins is not None:
        pairs = pairs[pairs["origin"].isin(list(origins))]
    wide = scores.pivot(index="video_id", columns="teacher", values="score")
    accuracy = {}
    for teacher in wide.columns:
        column = wide[teacher].astype(np.float64)
        difference = (column.reindex(pairs["second_id"].astype(str)).to_numpy()
                      - column.reindex(pairs["first_id"].astype(str)).to_numpy())
        accuracy[str(teacher)] = direction_accuracy(pairs["label"].to_numpy(), difference, center=0.0,
                                                    decisive_only=decisive_only)
    return accuracy


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


def srcc(predicted, mos) -> float:
    """Spearman rank-order correlation of predicted scores with MOS (scipy.stats.spearmanr;
    ties take their average rank). [N] each, finite, N >= 2; NaN when either is constant."""
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.spearmanr(x, y).statistic)


def plcc(predicted, mos) -> float:
    """Pearson linear correlation of predicted scores with MOS (scipy.stats.pearsonr).

    Plain Pearson on the raw scores: no logistic mapping is fitted first. Much of the VQA
    literature (VQEG) fits a 4- or 5-parameter logistic from scores to MOS before taking
    PLCC; this figure is the one without, which such a fit can only raise. [N] each,
    finite, N >= 2; NaN when either is constant.
    """
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.pearsonr(x, y).statistic)


def krcc(predicted, mos) -> float:
    """Kendall rank correlation (tau-b) of predicted scores with MOS (scipy.stats.kendalltau).
    [N] each, finite, N >= 2; NaN when either is constant."""
    x, y = _finite_pair(predicted, mos)
    return float("nan") if _constant(x, y) else float(scipy.stats.kendalltau(x, y).statistic)


def correlations(predicted, mos) -> dict[str, float]:
    """{"srcc", "plcc", "krcc"} of predicted scores with MOS; see each function."""
    return {"srcc": srcc(predicted, mos), "plcc": plcc(predicted, mos), "krcc": krcc(predicted, mos)}
