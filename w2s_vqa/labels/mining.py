"""Hard cases for a weak-to-strong stage: the stage-k student's labels, misranked
synthetic pairs and gMAD real pairs, mixed into stage k+1's new pairs.

METHOD.md, "Iterative weak-to-strong stages": stages 2 and 3 add 100k new pairs each,
labelled by the previous stage's student and chosen as hard cases. The paper gives
the mixture (85k real pairs, 5k synthetic pairs per simulator family) and names the
two rules; everything below that it leaves open is decided here and said so.

Student labels (`student_labels`). The five-way rule of the teacher pairs
(pairs.five_way_labels, METHOD.md "Labels") with d = s_second - s_first, the
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
pairs.synthetic_pairs); their label is the known level gap. Two readings of
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

gMAD (`gmad_pairs`; Ma et al., "Group MAximum Differentiation Competition", ECCV
2016 and TPAMI 2020). The defender's scores split the videos into `levels`
equal-count bins (by rank: bin = floor(levels * rank / n), rank 0 the lowest score,
ties by position), videos the defender cannot tell far apart. Inside a bin the
attacker's most separated pairs are the extreme ones: its i-th lowest video with its
i-th highest, i = 0, 1, ... (disjoint pairs, the most separated first). gMAD's
original picks one pair per level (i = 0); a stage needs thousands, so the ladder
continues inward. Pairs go to the bins evenly, count / levels each, the remainder to
the first bins, and a bin with fewer pairs than its share gives the rest to bins that
have more. The student attacks with each weak teacher defending (pairs the teacher
holds equal that the student separates most), then the teacher attacks with the
student defending: both directions of the paper's "and the reverse".

The stage's new pairs (`mine_stage_pairs`): synthetic_per_kind misranked pairs of
each kind the pool has; the rest real pairs by gMAD, split evenly over teachers x
the two directions; real labels from the student (`student_labels`), origin
"student:<k>", stage k+1; each pair's order randomized. A `rule` column records
which rule picked each pair (pair tables keep extra columns: pairs._canonical);
older tables without it read and concatenate as before.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from w2s_vqa.labels import origins
from w2s_vqa.labels import pairs as pair_tables
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.prompt import DIRECTION, LEVEL_INDEX, LEVELS
from w2s_vqa.tables import MAX_EXAMPLES

MISRANKED_RULES = ("direction", "level")
GMAD_DIRECTIONS = ("student_attacks", "teacher_attacks")
MISRANKED = "misranked"
RULE_COLUMN = "rule"
INDEX_COLUMNS = ("id", "source_id", "distortion", "kind", "level")
SCORE_COLUMNS = ("id", "score", "stderr")
TEACHER_COLUMNS = ("video_id", "teacher", "score")
_DIRECTION = np.asarray(DIRECTION, dtype=np.int64)
_DECISIVE = (LEVEL_INDEX["superior"], LEVEL_INDEX["inferior"])


class MiningError(ValueError):
    """Mining inputs that cannot be used; the message names the table, column or setting."""


def gmad_rule(teacher: str, direction: str) -> str:
    """The `rule` value of a gMAD pair: "gmad:<teacher>:<direction>", direction one of GMAD_DIRECTIONS."""
    if direction not in GMAD_DIRECTIONS:
        raise MiningError(f"gMAD direction must be one of {GMAD_DIRECTIONS}, got {direction!r}")
    return f"gmad:{teacher}:{direction}"


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

    pairs.five_way_labels(d, s_d) with d and s_d from `student_differences`: superior
    if d > 2 s_d, better if s_d < d <= 2 s_d, similar if -s_d < d <= s_d (and d == 0),
    worse if -2 s_d < d <= -s_d, inferior if d <= -2 s_d (METHOD.md "Labels", the
    teacher rule with the student's standard errors as the spread). MiningError as
    `student_differences`.
    """
    return pair_tables.five_way_labels(*student_differences(first_score, first_stderr, second_score, second_stderr))


# ---------------------------------------------------------------- gMAD

def pair_keys(first, second, n: int) -> np.ndarray:
    """int64 [N]: a key per unordered pair of indices below n, min * n + max (the same for (a, b) and (b, a))."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    return np.minimum(first, second) * np.int64(n) + np.maximum(first, second)


def is_member(keys, sorted_keys) -> np.ndarray:
    """bool [N]: whether each of `keys` (int64 [N]) is in `sorted_keys` (int64, ascending).

    A binary search: np.isin, which sorts or hashes both arrays on every call, took
    several times longer on the pool sizes a stage mines.
    """
    keys = np.asarray(keys, np.int64)
    if not len(sorted_keys):
        return np.zeros(keys.shape, dtype=bool)
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[where] == keys


def spread_count(count: int, capacity) -> np.ndarray:
    """int64 [B]: `count` items over B bins holding at most capacity[b] each, as evenly as they allow.

    Every bin gets q or q + 1 (q the largest level that fits), the extra ones to the
    first bins with room; a bin whose capacity is below q is full and the others
    take its share. The total is min(count, sum(capacity)).
    """
    capacity = np.asarray(capacity, np.int64)
    total = min(int(count), int(capacity.sum()))
    low, high = 0, int(capacity.max(initial=0))
    while low < high:  # the largest q with sum(min(capacity, q)) <= total: a bisection over q, not items
        mid = (low + high + 1) // 2
        if np.minimum(capacity, mid).sum() <= total:
            low = mid
        else:
            high = mid - 1
    quota = np.minimum(capacity, low)
    room = np.flatnonzero(capacity > low)
    quota[room[:total - int(quota.sum())]] += 1
    return quota


def gmad_pairs(attacker, defender, *, levels: int, count: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): int64 [M] indices into the inputs of up to `count` gMAD pairs.

    attacker, defender: float [N] scores of the same N videos (higher = better), NaN
    (or infinite) where a model did not score a video; such videos are left out.
    The defender's scores split the rest, n videos, into `levels` equal-count bins,
    bin = floor(levels * rank / n) (rank from 0 in ascending defender score, ties in
    position order; sizes differ by at most one). Inside a bin, sorted by the
    attacker's score (ties in position order), rung i pairs the i-th lowest video
    with the i-th highest, i < size // 2: disjoint pairs, the attacker's most separated
    first. Each bin gives its lowest rungs, the bins' shares spread by `spread_count`
    (count / levels each, the remainder to the first bins, a small bin's shortfall to
    the others); M = min(count, the rungs there are), fewer than `count` when the bins
    are small. `exclude`: int64 keys (`pair_keys(.., N)`) of unordered pairs not to
    give (already chosen); their rungs are skipped and the bin's next rungs are used.

    first is the video the attacker scores lower, second the higher; pairs come bin by
    bin (lowest defender bin first), the most separated first in each. Sorting is
    O(N log N); no loop over videos or pairs (Ma et al., "Group MAximum
    Differentiation Competition", 2016/2020, with a ladder of pairs per level).
    MiningError for unequal lengths, levels < 1 or count < 0.
    """
    attacker = np.asarray(attacker, np.float64)
    defender = np.asarray(defender, np.float64)
    if attacker.ndim != 1 or attacker.shape != defender.shape:
        raise MiningError(f"attacker and defender must be [N] scores of the same videos, got shapes "
                          f"{attacker.shape} and {defender.shape}")
    if int(levels) != levels or levels < 1:
        raise MiningError(f"gMAD levels must be an integer >= 1, got {levels!r}")
    if int(count) != count or count < 0:
        raise MiningError(f"gMAD count must be an integer >= 0, got {count!r}")
    levels, count = int(levels), int(count)
    videos = np.flatnonzero(np.isfinite(attacker) & np.isfinite(defender))
    n = len(videos)
    empty = np.zeros(0, np.int64)
    if n < 2 or count == 0:
        return empty, empty
    # Stable sorts of `videos` (ascending) break ties by position.
    bins = np.empty(n, np.int64)
    bins[np.argsort(defender[videos], kind="stable")] = np.arange(n, dtype=np.int64) * levels // n
    by_attacker = np.argsort(attacker[videos], kind="stable")
    ranked = videos[by_attacker[np.argsort(bins[by_attacker], kind="stable")]]  # by bin, then attacker score
    sizes = np.bincount(bins, minlength=levels)
    starts = np.cumsum(sizes) - sizes
    rungs = sizes // 2
    excluded = None
    if exclude is not None and len(exclude):
        excluded = np.sort(np.asarray(exclude, np.int64), kind="stable")  # a sorted input: one pass
    # With exclusions, only the first rungs of each bin are looked up at first, as many as
    # could be needed; more only when a bin runs out (the checks cost more than the ladder).
    limit = rungs if excluded is None else np.minimum(rungs, 2 * -(-count // levels) + 16)
    while True:
        bin_of = np.repeat(np.arange(levels), limit)
        rung = np.arange(len(bin_of)) - np.repeat(np.cumsum(limit) - limit, limit)
        first = ranked[starts[bin_of] + rung]
        second = ranked[starts[bin_of] + sizes[bin_of] - 1 - rung]
        if excluded is not None:
            keep = ~is_member(pair_keys(first, second, len(attacker)), excluded)
            first, second, bin_of = first[keep], second[keep], bin_of[keep]
        available = np.bincount(bin_of, minlength=levels)
        quota = spread_count(count, available)
        # A cut-off bin with rungs to spare leaves spread_count's result as the whole ladder's.
        short = (limit < rungs) & (quota >= available)
        if not short.any():
            break
        limit = np.where(short, np.minimum(rungs, 2 * limit), limit)
    within = np.arange(len(bin_of)) - (np.cumsum(available) - available)[bin_of]
    take = within < quota[bin_of]
    return first[take].astype(np.int64), second[take].astype(np.int64)


# ---------------------------------------------------------------- misranked synthetic pairs

class Misranked(NamedTuple):
    """`misranked_synthetic`'s result: `pairs` the misranked candidates (a pair table, the
    candidates' columns and labels), `misranked` and `scored` bool [C] over the candidates."""

    pairs: pd.DataFrame
    misranked: np.ndarray
    scored: np.ndarray


def misranked_synthetic(candidates: pd.DataFrame, scores: pd.DataFrame, *, rule: str = "direction") -> Misranked:
    """The synthetic pairs the student misranks, with their level-gap labels.

    candidates: a synthetic pair table (pairs.synthetic_pairs: first_id, second_id,
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
    _require(candidates, ("first_id", "second_id", "label"), "candidate pair table")
    _require(scores, ("id", "score") + (("stderr",) if rule == "level" else ()), "student score table")
    score, stderr, ids = _student_arrays(scores, need_stderr=rule == "level")
    first, second = _positions(ids, candidates["first_id"], candidates["second_id"])
    misranked, scored = _misranked(candidates["label"].to_numpy(np.int64), first, second, score, stderr, rule)
    return Misranked(candidates[misranked].reset_index(drop=True), misranked, scored)


def _misranked(label, first, second, score, stderr, rule) -> tuple[np.ndarray, np.ndarray]:
    """(misranked, scored) bool [C] of C pairs given as positions into score/stderr (-1: unknown)."""
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
    _require(index, INDEX_COLUMNS, "store index")
    variants = index.assign(id=index["id"].astype(str)).rename(columns={"id": "video_id"})
    return pair_tables.synthetic_pairs(variants[["video_id", *INDEX_COLUMNS[1:]]], stage=stage)


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
    _require(predictions, ("first_id", "second_id", "p", *(logit_columns if rule == "level" else ())),
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


# ---------------------------------------------------------------- a stage's new pairs

def mine_stage_pairs(index: pd.DataFrame, student_scores: pd.DataFrame, teacher_scores: pd.DataFrame | None, *,
                     stage: int, new_pairs: int, synthetic_per_kind: int, gmad_levels: int,
                     misranked: str = "direction",
                     previous: pd.DataFrame | Sequence[pd.DataFrame] | None = None,
                     seed: int = 0, pair_predictions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """(pairs, report): stage `stage`'s new pairs, chosen and labelled by the stage-(stage - 1) student.

    index: the pool, a video store's index (id, source_id, distortion, kind, level);
    scores of videos outside it are ignored (counted). student_scores: the stage-k
    student's score table over the pool (id, score, stderr; `score.scorer.score_table`,
    "map" mode); a NaN score leaves the video out. teacher_scores: the pool's weak
    teachers, long form (video_id, teacher, score), oriented higher = better
    (teachers.orient); None or empty: no real pairs.

    Synthetic hard cases: of all synthetic pairs of the pool's variants, the ones
    `misranked_synthetic(rule=misranked)` finds; per kind present, synthetic_per_kind
    of them drawn at random, those not in `previous` first, then, when too few new
    ones are misranked, pairs already in `previous` (a small pool's stage-1 table
    holds every synthetic pair); fewer when fewer are misranked. Their level-gap
    labels, origin (kind) and source_id are kept; stage = `stage`.

    Real hard cases: new_pairs - synthetic_per_kind x (kinds present), split evenly
    over (teacher, direction), teachers in sorted order, "student_attacks" before
    "teacher_attacks", the remainder to the first; each by `gmad_pairs` with
    `gmad_levels` bins, among the videos both the student and that teacher scored.
    Labelled by `student_labels`, with d and s_d kept; origin
    origins.student_origin(stage - 1). No unordered pair twice in the new table, none
    already in `previous`, no video with itself: each (teacher, direction) skips the
    pairs taken before it.

    Every pair's order is then swapped with probability 1/2 (pairs.random_swap).
    Column `rule`: "misranked" or gmad_rule(teacher, direction). Rows: synthetic
    pairs (kinds in origins.SYNTHETIC order), then real pairs by (teacher, direction).

    previous: the earlier stages' pair tables (one or a list), compared as unordered
    pairs of ids. seed: all randomness (the synthetic draws, the swaps). The result
    depends on the tables' contents only, not on their row order.

    pair_predictions: the student's own verdict on the synthetic candidates
    (`synthetic_candidates(index)` predicted pair by pair: first_id, second_id, p =
    P(second better), logit_<level> for rule "level"; score.predict.predict_pairs'
    columns). When given, a candidate is misranked by `misranked_by_pairs` instead of by
    the two videos' scores; candidates it does not hold are not scored.

    Report (JSON-able): stage, seed, counts (labels.build.pair_counts: "pairs",
    "by_origin"), "by_rule" {rule: count}, "synthetic" {kind: {candidates, scored,
    misranked, asked, new, repeats}}, "real" {asked, found, gmad_levels, by_slot: {rule:
    {asked, found, eligible_videos}}}, "teacher_agreement" {teacher: {pairs,
    direction_agreement, decisive_pairs, decisive_agreement}} of the new real pairs'
    labels with each teacher's score order (a teacher tie disagrees; None without
    pairs), "left_out" counts and "notes" (one line for each shortfall).

    MiningError names the table and column of bad input (missing columns, repeated
    ids or (video, teacher) scores, NaN or negative stderr of a scored video) and bad
    settings (stage < 2, counts < 0, new_pairs below the synthetic share, unknown rule).
    """
    _check_settings(stage, new_pairs, synthetic_per_kind, gmad_levels, misranked)
    _require(index, INDEX_COLUMNS, "store index")
    _require(student_scores, SCORE_COLUMNS, "student score table")
    teacher_scores = None if teacher_scores is None or not len(teacher_scores) else teacher_scores
    if teacher_scores is not None:
        _require(teacher_scores, TEACHER_COLUMNS, "teacher score table")
    tables = [] if previous is None else [previous] if isinstance(previous, pd.DataFrame) else list(previous)
    for number, table in enumerate(tables):
        _require(table, ("first_id", "second_id"), f"previous pair table {number}")
    ids = index["id"].astype(str)
    # Every video by its position in the sorted ids: the result does not depend on row order.
    universe = ids.sort_values(ignore_index=True)
    twice = universe[(universe.iloc[1:].to_numpy() == universe.iloc[:-1].to_numpy()).nonzero()[0]].unique()
    if len(twice):
        raise MiningError(f"store index: {len(twice)} video id(s) appear more than once: {_examples(twice)}")
    n = len(universe)
    notes: list[str] = []
    left_out: dict[str, int] = {}

    variants = index.assign(id=ids).rename(columns={"id": "video_id"})[["video_id", *INDEX_COLUMNS[1:]]]
    candidates = pair_tables.synthetic_pairs(variants, stage=stage)

    # One factorization finds every id the tables name (pandas' get_indexer, column by column, took longer).
    score, stderr, score_ids = _student_arrays(student_scores, need_stderr=True)
    columns = [score_ids, candidates["first_id"], candidates["second_id"]]
    if teacher_scores is not None:
        columns.append(teacher_scores["video_id"])
    for table in tables:
        columns += [table["first_id"], table["second_id"]]
    codes = _positions(universe, *columns, keep_unknown=True)
    student_where, candidate_first, candidate_second = codes[:3]

    # The student's scores over the pool, by position.
    inside = student_where < n
    left_out["student_scores_outside_pool"] = int((~inside).sum())
    pool_score, pool_stderr = np.full(n, np.nan), np.full(n, np.nan)
    pool_score[student_where[inside]], pool_stderr[student_where[inside]] = score[inside], stderr[inside]
    score, stderr = pool_score, pool_stderr
    left_out["pool_videos_without_student_score"] = int((~np.isfinite(score)).sum())
    if left_out["pool_videos_without_student_score"]:
        notes.append(f"{left_out['pool_videos_without_student_score']} of the pool's {n} videos have no student "
                     "score: they are in no new pair")

    teacher_codes = codes[3] if teacher_scores is not None else None
    teachers, teacher_matrix, outside = _teacher_arrays(teacher_scores, teacher_codes, n)
    left_out["teacher_scores_outside_pool"] = outside
    previous_codes = codes[3 + (teacher_scores is not None):]
    previous_keys = _previous_keys(previous_codes, n)

    seeds = np.random.SeedSequence(seed).spawn(2)
    draw, swap = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])

    # Synthetic hard cases.
    if pair_predictions is None:
        found, scored = _misranked(candidates["label"].to_numpy(np.int64), candidate_first, candidate_second, score,
                                   stderr, misranked)
    else:
        found, scored = misranked_by_pairs(candidates, pair_predictions, rule=misranked)
    left_out["synthetic_candidates_unscored"] = int((~scored).sum())
    origin = candidates["origin"].to_numpy(dtype=object)
    kinds = [k for k in origins.SYNTHETIC if (origin == k).any()]
    real_asked = new_pairs - synthetic_per_kind * len(kinds)
    if real_asked < 0:
        raise MiningError(f"stages.new_pairs ({new_pairs}) is below stages.synthetic_per_kind ({synthetic_per_kind}) "
                          f"x the pool's {len(kinds)} synthetic kind(s) ({', '.join(kinds)})")
    candidate_keys = pair_keys(candidate_first, candidate_second, n)
    in_previous = is_member(candidate_keys, previous_keys)
    synthetic_report = {}
    picked_rows = []
    for kind in kinds:
        of_kind = origin == kind
        rows = np.flatnonzero(of_kind & found)
        fresh, seen = rows[~in_previous[rows]], rows[in_previous[rows]]
        if len(fresh) >= synthetic_per_kind:
            pick = draw.choice(fresh, size=synthetic_per_kind, replace=False)
            repeats = 0
        else:
            repeats = min(synthetic_per_kind - len(fresh), len(seen))
            pick = np.concatenate([fresh, draw.choice(seen, size=repeats, replace=False)])
        picked_rows.append(np.sort(pick))
        synthetic_report[kind] = {"candidates": int(of_kind.sum()), "scored": int((of_kind & scored).sum()),
                                  "misranked": len(rows), "asked": synthetic_per_kind, "new": len(pick) - repeats,
                                  "repeats": repeats}
        if repeats:
            notes.append(f"{kind}: {len(fresh)} misranked pair(s) not in earlier stages, fewer than the "
                         f"{synthetic_per_kind} asked; {repeats} misranked pair(s) from earlier stages repeated")
        if len(pick) < synthetic_per_kind:
            notes.append(f"{kind}: the student misranks {len(rows)} of its {int(of_kind.sum())} synthetic pairs "
                         f"({synthetic_report[kind]['scored']} scored), fewer than the {synthetic_per_kind} asked")
    picked = np.concatenate(picked_rows) if picked_rows else np.zeros(0, np.int64)
    synthetic = candidates.iloc[picked].assign(stage=np.int32(stage), **{RULE_COLUMN: MISRANKED})

    # Real hard cases by gMAD; `taken` stays sorted (a stable sort of sorted runs is a merge).
    taken = np.sort(np.concatenate([previous_keys, candidate_keys[picked]]), kind="stable")
    slots = [(teacher, direction) for teacher in teachers for direction in GMAD_DIRECTIONS]
    slot_asked = spread_count(real_asked, np.full(len(slots), real_asked)) if slots else np.zeros(0, np.int64)
    first_parts, second_parts, rules, by_slot = [], [], [], {}
    for (teacher, direction), asked in zip(slots, slot_asked):
        teacher_score = teacher_matrix[teachers.index(teacher)]
        attacker, defender = (score, teacher_score) if direction == "student_attacks" else (teacher_score, score)
        first, second = gmad_pairs(attacker, defender, levels=gmad_levels, count=int(asked), exclude=taken)
        rule = gmad_rule(teacher, direction)
        eligible = int((np.isfinite(score) & np.isfinite(teacher_score)).sum())
        by_slot[rule] = {"asked": int(asked), "found": len(first), "eligible_videos": eligible}
        if len(first) < asked:
            notes.append(f"{rule}: {len(first)} pair(s), fewer than the {int(asked)} asked ({eligible} videos "
                         f"scored by both, gMAD levels {gmad_levels}, pairs of earlier stages and of this one skipped)")
        taken = np.sort(np.concatenate([taken, pair_keys(first, second, n)]), kind="stable")
        first_parts.append(first)
        second_parts.append(second)
        rules += [rule] * len(first)
    if not slots and real_asked:
        notes.append(f"no teacher scores: none of the {real_asked} real pairs asked")
    first = np.concatenate(first_parts) if first_parts else np.zeros(0, np.int64)
    second = np.concatenate(second_parts) if second_parts else np.zeros(0, np.int64)
    d, s_d = student_differences(score[first], stderr[first], score[second], stderr[second])
    pool_ids = universe.to_numpy(dtype=object)
    real = pair_tables.make_pair_table(pool_ids[first], pool_ids[second], pair_tables.five_way_labels(d, s_d),
                                       origin=origins.student_origin(stage - 1), stage=stage, d=d, s_d=s_d)
    real[RULE_COLUMN] = np.asarray(rules, dtype=object)

    table = pd.concat([synthetic, real], ignore_index=True)
    table = pair_tables.random_swap(table, swap).reset_index(drop=True)
    report = {
        "stage": int(stage), "seed": int(seed), "misranked_rule": misranked,
        **pair_counts(table),
        "by_rule": {str(k): int(v) for k, v in table[RULE_COLUMN].value_counts(sort=False).sort_index().items()},
        "synthetic": synthetic_report,
        "real": {"asked": int(real_asked), "found": len(real), "gmad_levels": int(gmad_levels), "by_slot": by_slot},
        "teacher_agreement": _agreement(real, first, second, teachers, teacher_matrix),
        "left_out": left_out,
        "notes": notes,
    }
    return table, report


# ---------------------------------------------------------------- helpers

def _check_settings(stage, new_pairs, synthetic_per_kind, gmad_levels, misranked) -> None:
    problems = []
    if int(stage) != stage or stage < 2:
        problems.append(f"stage must be an integer >= 2 (the stage the new pairs are for), got {stage!r}")
    for name, value, least in (("new_pairs", new_pairs, 0), ("synthetic_per_kind", synthetic_per_kind, 0),
                               ("gmad_levels", gmad_levels, 1)):
        if int(value) != value or value < least:
            problems.append(f"stages.{name} must be an integer >= {least}, got {value!r}")
    if misranked not in MISRANKED_RULES:
        problems.append(f"stages.misranked must be one of {MISRANKED_RULES}, got {misranked!r}")
    if problems:
        raise MiningError("; ".join(problems))


def _require(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MiningError(f"{what} lacks column(s) {missing} (it has {list(table.columns)})")


def _examples(values) -> str:
    values = list(values)
    return ", ".join(map(repr, values[:MAX_EXAMPLES])) + (", ..." if len(values) > MAX_EXAMPLES else "")


def _positions(universe: pd.Series, *columns, keep_unknown: bool = False) -> list[np.ndarray]:
    """int64 [len(column)] per column: each value's position in `universe` (distinct ids),
    -1 where it is not there; with `keep_unknown`, n + a code shared by equal unknown values
    instead (n = len(universe)), so that repeats can still be found among them.

    One pd.factorize over universe + columns: it numbers values in order of first
    appearance, so the universe's values get their positions 0..n-1.
    """
    n = len(universe)
    values = pd.concat([pd.Series(universe, dtype="str").reset_index(drop=True),
                        *(pd.Series(c, dtype="str").reset_index(drop=True) for c in columns)], ignore_index=True)
    codes = pd.factorize(values)[0].astype(np.int64)
    out, start = [], n
    for column in columns:
        code = codes[start:start + len(column)]
        out.append(code if keep_unknown else np.where(code < n, code, -1))
        start += len(column)
    return out


def _student_arrays(scores: pd.DataFrame, *, need_stderr: bool) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """(score, stderr, ids) of a score table, checked: ids once each, scores numbers
    (NaN allowed: not scored), stderr (when needed) finite and >= 0 where the score is."""
    ids = scores["id"].astype(str).reset_index(drop=True)
    twice = ids[ids.duplicated()].unique()
    if len(twice):
        raise MiningError(f"student score table: {len(twice)} id(s) appear more than once: {_examples(twice)}")
    score = pd.to_numeric(scores["score"], errors="coerce").to_numpy(np.float64)
    text = scores["score"].notna().to_numpy() & np.isnan(score)
    if text.any():
        raise MiningError(f"student score table, column 'score': {int(text.sum())} value(s) are not numbers, "
                          f"e.g. id {_examples(ids[text])}")
    if not need_stderr:
        return score, np.full(len(score), np.nan), ids
    stderr = pd.to_numeric(scores["stderr"], errors="coerce").to_numpy(np.float64)
    scored = np.isfinite(score)
    nan = scored & np.isnan(stderr)
    if nan.any():
        raise MiningError(f"student score table, column 'stderr': NaN for {int(nan.sum())} scored video(s) "
                          f"(e.g. id {_examples(ids[nan])}); a table from the authors' 'paper' mode has no interval "
                          "to label pairs with: score in 'map' mode")
    bad = scored & ~(np.isfinite(stderr) & (stderr >= 0))
    if bad.any():
        raise MiningError(f"student score table, column 'stderr': {int(bad.sum())} value(s) are infinite or negative "
                          f"(e.g. id {_examples(ids[bad])})")
    return score, stderr, ids


def _teacher_arrays(teacher_scores: pd.DataFrame | None, codes: np.ndarray | None,
                    n: int) -> tuple[list[str], np.ndarray, int]:
    """(teachers sorted, float64 [T, n] scores by pool position with NaN where unscored,
    number of scores of videos outside the pool). codes: `_positions(.., keep_unknown=True)`
    of the table's video ids."""
    if teacher_scores is None:
        return [], np.zeros((0, n)), 0
    teacher = teacher_scores["teacher"].astype(str).to_numpy(dtype=object)
    row, names = pd.factorize(teacher)  # np.unique on the strings took seconds at 1M videos
    names = np.asarray(names, dtype=object)
    teachers = np.sort(names)
    row = np.searchsorted(teachers, names)[row]
    key = row.astype(np.int64) * (int(codes.max(initial=0)) + 1) + codes
    order = np.argsort(key, kind="stable")
    repeated = order[1:][key[order][1:] == key[order][:-1]]
    if len(repeated):
        video = teacher_scores["video_id"].astype(str).to_numpy(dtype=object)
        shown = [f"{video[i]} by {teacher[i]}" for i in np.sort(repeated)]
        raise MiningError(f"teacher score table: {len(repeated)} (video_id, teacher) pair(s) scored more than once: "
                          f"{_examples(shown)}")
    value = pd.to_numeric(teacher_scores["score"], errors="coerce").to_numpy(np.float64)
    inside = codes < n
    matrix = np.full((len(teachers), n), np.nan)
    matrix[row[inside], codes[inside]] = value[inside]
    return [str(t) for t in teachers], matrix, int((~inside).sum())


def _previous_keys(codes: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Sorted int64 pair keys (repeats kept) of the earlier tables' pairs whose videos are
    both in the pool; codes: first, second, first, second, ... per table (`_positions`)."""
    keys = []
    for first, second in zip(codes[::2], codes[1::2]):
        known = (first < n) & (second < n)
        keys.append(pair_keys(first[known], second[known], n))
    return np.sort(np.concatenate(keys), kind="stable") if keys else np.zeros(0, np.int64)

def _agreement(real: pd.DataFrame, first: np.ndarray, second: np.ndarray, teachers: list[str],
               teacher_matrix: np.ndarray) -> dict:
    """Per teacher: how often its score order agrees with the direction of the new real pairs'
    labels (pairs with a direction; and the decisive ones, superior or inferior only).
    Computed before the swap: a swap changes both the label and the order alike."""
    label = real["label"].to_numpy(np.int64)
    direction = _DIRECTION[label]
    decisive = np.isin(label, _DECISIVE)
    out = {}
    for teacher, row in zip(teachers, teacher_matrix):
        difference = row[second] - row[first]
        counted = (direction != 0) & np.isfinite(difference)
        agree = counted & (np.sign(difference) == direction)
        out[teacher] = {
            "pairs": int(counted.sum()),
            "direction_agreement": float(agree.sum() / counted.sum()) if counted.any() else None,
            "decisive_pairs": int((counted & decisive).sum()),
            "decisive_agreement": float((agree & decisive).sum() / (counted & decisive).sum())
            if (counted & decisive).any() else None,
        }
    return out
