"""The stage-k student's labels, and the synthetic pairs it misranks.

docs/method.md, "Iterative weak-to-strong stages": stages 2 and 3 add 100k new pairs each,
labelled by the previous stage's student and chosen as hard cases. The paper gives
the mixture (85k real pairs, 5k synthetic pairs per simulator family) and names the
two rules; everything below that it leaves open is decided here and said so.

Student labels (`student_labels`). The five-way rule of the teacher pairs
(rules.five_way_labels, docs/method.md "Labels") with d = s_second - s_first, the
difference of the student's scores (score.thurstone's MAP score on the anchors' MOS
scale), and s_d = sqrt(stderr_first^2 + stderr_second^2), the spread from the two
scores' standard errors (the scoring issue's interval: score +- 1.96 stderr). The
teachers' rule takes s as the spread across teachers; here it is the student's own
uncertainty about each score, which plays the same part: a difference within one
spread is "similar", beyond two is "superior"/"inferior". The two errors are taken as
independent although both scores lean on the same anchors (a score table has no
covariance): an error the anchors share moves both scores alike and cancels in d, so
s_d overstates the spread of d and labels err towards "similar", the cautious side.

Misranked synthetic pairs (`misranked_synthetic`). Candidates are all synthetic pairs
of the pool's variants (two severity levels of one source under one simulator,
sampling.synthetic_pairs); their label is the known level gap. Two readings of
"the student gets it wrong", the config's `stages.misranked`:

- "direction" (the default): the sign of s_second - s_first differs from the label's
  direction (prompt.DIRECTION). A tie counts as misranked: the student did not
  separate two videos whose order is known. This is the reading the paper's ablation
  figures (direction accuracy, SRCC) reward, and it does not depend on the stderr.
- "level": student_labels(...) differs from the level-gap label. Stricter: a pair
  the student orders correctly but calls "better" where the gap says "superior", or
  "similar" within its own uncertainty, is a hard case too.

The pairs keep their level-gap labels and their origin (the simulator's kind): the
label comes from the known gap, never from the student.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from w2s_vqa.labels import rules as label_rules
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels.mining_inputs import INDEX_COLUMNS, MiningError, positions, require, student_arrays
from w2s_vqa.prompt import DIRECTION, LEVELS

MISRANKED_RULES = ("direction", "level")
# The `rule` value of the pairs this module picks.
MISRANKED = "misranked"
_DIRECTION = np.asarray(DIRECTION, dtype=np.int64)


# ---------------------------------------------------------------- student labels

def student_differences(first_score, first_stderr, second_score, second_stderr) -> tuple[np.ndarray, np.ndarray]:
    """(d, s_d), float64 [N] each: d = second_score - first_score and
    s_d = sqrt(first_stderr^2 + second_stderr^2) (see the module docstring).

    All four are float [N] on one scale (a score table's score and stderr columns).
    MiningError when a score is not finite, a stderr is NaN (a table scored in the
    authors' "paper" mode has no interval: score the pool in "map" mode), infinite or
    negative, or the shapes differ.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (first_score, first_stderr, second_score, second_stderr)]
    if len({a.shape for a in arrays}) != 1:
        raise MiningError(f"scores and stderrs must have one shape, got {[a.shape for a in arrays]}")
    s1, e1, s2, e2 = arrays
    for name, value in (("first_score", s1), ("second_score", s2)):
        if not np.isfinite(value).all():
            raise MiningError(f"{name}: {int((~np.isfinite(value)).sum())} score(s) are not finite numbers")
    for name, value in (("first_stderr", e1), ("second_stderr", e2)):
        if np.isnan(value).any():
            raise MiningError(f"{name}: {int(np.isnan(value).sum())} stderr(s) are NaN; a score table from the "
                              "authors' 'paper' mode has no interval to label with: score in 'map' mode")
        if not np.isfinite(value).all() or (value < 0).any():
            raise MiningError(f"{name}: a stderr must be a finite number >= 0")
    return s2 - s1, np.hypot(e1, e2)


def student_labels(first_score, first_stderr, second_score, second_stderr) -> np.ndarray:
    """int8 [N] label indices (prompt.LEVELS) of N pairs from the student's scores.

    rules.five_way_labels(d, s_d) with d and s_d from `student_differences`: superior
    if d > 2 s_d, better if s_d < d <= 2 s_d, similar if -s_d < d <= s_d (and d == 0),
    worse if -2 s_d < d <= -s_d, inferior if d <= -2 s_d (docs/method.md "Labels", the
    teacher rule with the student's standard errors as the spread). MiningError as
    `student_differences`.
    """
    return label_rules.five_way_labels(*student_differences(first_score, first_stderr, second_score, second_stderr))


# ---------------------------------------------------------------- misranked synthetic pairs

class Misranked(NamedTuple):
    """`misranked_synthetic`'s result: `pairs` the misranked candidates (a pair table, the
    candidates' columns and labels), `misranked` and `scored` bool [C] over the candidates."""

    pairs: pd.DataFrame
    misranked: np.ndarray
    scored: np.ndarray


def misranked_synthetic(candidates: pd.DataFrame, scores: pd.DataFrame, *, rule: str = "direction") -> Misranked:
    """The synthetic pairs the student misranks, with their level-gap labels.

    candidates: a synthetic pair table (sampling.synthetic_pairs: first_id, second_id,
    label from the level gap, origin = the simulator's kind, source_id, ...). scores:
    the student's score table (score.scorer.score_table: id, score, stderr; stderr
    needed by rule "level" only). rule: "direction" (the student's score order
    differs from the label's direction; a tie is misranked) or "level"
    (student_labels differs from the label); see the module docstring. A pair with a
    video the table does not score, or scores NaN, is not `scored` and never
    misranked. The returned pairs keep every column of the candidates, labels
    included, in candidate order.

    MiningError for an unknown rule, missing columns, repeated ids in `scores`, or
    (rule "level") a NaN stderr of a scored video.
    """
    if rule not in MISRANKED_RULES:
        raise MiningError(f"misranked rule must be one of {MISRANKED_RULES}, got {rule!r}")
    require(candidates, ("first_id", "second_id", "label"), "candidate pair table")
    require(scores, ("id", "score") + (("stderr",) if rule == "level" else ()), "student score table")
    score, stderr, ids = student_arrays(scores, need_stderr=rule == "level")
    first, second = positions(ids, candidates["first_id"], candidates["second_id"])
    misranked, scored = misranked_by_scores(candidates["label"].to_numpy(np.int64), first, second, score, stderr, rule)
    return Misranked(candidates[misranked].reset_index(drop=True), misranked, scored)


def misranked_by_scores(label, first, second, score, stderr, rule) -> tuple[np.ndarray, np.ndarray]:
    """(misranked, scored) bool [C] of C pairs by the student's scores: label int [C] (level-gap
    labels), first and second int [C] positions into score/stderr (float64, -1: unknown), rule
    as `misranked_synthetic`."""
    scored = (first >= 0) & (second >= 0)
    scored[scored] = np.isfinite(score[first[scored]]) & np.isfinite(score[second[scored]])
    f, s = first[scored], second[scored]
    if rule == "direction":
        wrong = np.sign(score[s] - score[f]).astype(np.int64) != _DIRECTION[label[scored]]
    else:
        wrong = student_labels(score[f], stderr[f], score[s], stderr[s]) != label[scored]
    misranked = np.zeros(len(label), dtype=bool)
    misranked[scored] = wrong
    return misranked, scored


def synthetic_candidates(index: pd.DataFrame, *, stage: int = 1) -> pd.DataFrame:
    """Every synthetic pair of a pool (its index: id, source_id, distortion, kind, level),
    less distorted video first: the candidates `mine_stage_pairs` judges, in its order."""
    require(index, INDEX_COLUMNS, "store index")
    return pair_sampling.synthetic_pairs(index.assign(id=index["id"].astype(str))[list(INDEX_COLUMNS)], stage=stage)


def misranked_by_pairs(candidates: pd.DataFrame, predictions: pd.DataFrame, *,
                       rule: str = "direction") -> tuple[np.ndarray, np.ndarray]:
    """(misranked, scored) bool [C]: the synthetic candidates the student itself gets wrong
    when asked about the pair (the paper's "synthetic pairs the student gets wrong").

    predictions: the student's answers on (some of) the candidates, in the candidates'
    order of the two videos: first_id, second_id, p = P(second better) (float, the
    prompt's preference), and for rule "level" the five logit_<level> columns. Rule
    "direction": P on the wrong side of 0.5 for the label's direction (0.5 itself is
    wrong: the student did not separate them); "level": the most likely level differs
    from the level-gap label. A candidate the predictions lack, or with NaN P, is not
    scored. MiningError for missing columns or a pair predicted twice.
    """
    logit_columns = [f"logit_{word}" for word in LEVELS]
    require(predictions, ("first_id", "second_id", "p", *(logit_columns if rule == "level" else ())),
             "pair predictions")
    keys = predictions[["first_id", "second_id"]].astype(str)
    if keys.duplicated().any():
        raise MiningError(f"pair predictions: {int(keys.duplicated().sum())} pair(s) predicted twice, e.g. "
                          f"{tuple(keys[keys.duplicated()].iloc[0])}")
    columns = ["p", *(logit_columns if rule == "level" else ())]
    merged = candidates[["first_id", "second_id"]].astype(str).merge(
        predictions[["first_id", "second_id", *columns]].astype({"first_id": str, "second_id": str}),
        on=["first_id", "second_id"], how="left")
    p = merged["p"].to_numpy(np.float64)
    scored = np.isfinite(p)
    label = candidates["label"].to_numpy(np.int64)
    if rule == "direction":
        wrong = np.sign(np.where(scored, p, 0.5) - 0.5).astype(np.int64) != _DIRECTION[label]
    else:
        logits = merged[logit_columns].to_numpy(np.float64)
        wrong = np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1) != label
    return scored & wrong, scored
