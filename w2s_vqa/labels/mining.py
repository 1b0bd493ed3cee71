"""A weak-to-strong stage's new pairs: hard cases chosen and labelled by the stage-k student.

docs/method.md, "Iterative weak-to-strong stages": stages 2 and 3 add 100k new pairs each,
labelled by the previous stage's student and chosen as hard cases. The paper gives
the mixture (85k real pairs, 5k synthetic pairs per simulator family) and names the
two rules; everything below that it leaves open is decided here and said so.

The stage's new pairs (`mine_stage_pairs`): synthetic_per_kind misranked pairs of
each kind the pool has; the rest real pairs by gMAD, split evenly over teachers x
the two directions; real labels from the student (`student_labels`), origin
"student:<k>", stage k+1; each pair's order randomized. A `rule` column records
which rule picked each pair (pair tables keep extra columns: pair_table.canonical);
older tables without it read and concatenate as before.

The rules live apart: the student's labels and misranked synthetic pairs in
labels/misranked.py, gMAD in labels/gmad.py, the checked input tables in
labels/mining_inputs.py. This module mixes them into the stage's table and report.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from w2s_vqa.labels import origins
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import rules as label_rules
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.labels.gmad import GMAD_DIRECTIONS, gmad_pairs, gmad_rule, is_member, pair_keys, spread_count
from w2s_vqa.labels.mining_inputs import (INDEX_COLUMNS, SCORE_COLUMNS, TEACHER_COLUMNS, MiningError, examples,
                                          positions, require, student_arrays)
from w2s_vqa.labels.misranked import (MISRANKED, MISRANKED_RULES, misranked_by_pairs, misranked_by_scores,
                                      student_differences, synthetic_candidates)
from w2s_vqa.prompt import DIRECTION, LEVEL_INDEX

RULE_COLUMN = "rule"
_DIRECTION = np.asarray(DIRECTION, dtype=np.int64)
_DECISIVE = (LEVEL_INDEX["superior"], LEVEL_INDEX["inferior"])


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
    `misranked.misranked_synthetic(rule=misranked)` finds; per kind present, synthetic_per_kind
    of them drawn at random, those not in `previous` first, then, when too few new
    ones are misranked, pairs already in `previous` (a small pool's stage-1 table
    holds every synthetic pair); fewer when fewer are misranked. Their level-gap
    labels, origin (kind) and source_id are kept; stage = `stage`.

    Real hard cases: new_pairs - synthetic_per_kind x (kinds present), split evenly
    over (teacher, direction), teachers in sorted order, "student_attacks" before
    "teacher_attacks", the remainder to the first; each by `gmad_pairs` with
    `gmad_levels` bins, among the videos both the student and that teacher scored.
    Labelled by `misranked.student_labels`, with d and s_d kept; origin
    origins.student_origin(stage - 1). No unordered pair twice in the new table, none
    already in `previous`, no video with itself: each (teacher, direction) skips the
    pairs taken before it.

    Every pair's order is then swapped with probability 1/2 (sampling.random_swap).
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
    teacher_scores, tables = _checked_tables(index, student_scores, teacher_scores, previous)
    universe = _pool_ids(index)
    candidates = synthetic_candidates(index, stage=stage)
    pool = _pool_arrays(universe, candidates, student_scores, teacher_scores, tables)
    seeds = np.random.SeedSequence(seed).spawn(2)
    draw, swap = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])

    synthetic, synthetic_report, real_asked = _synthetic_hard_cases(
        pool, candidates, pair_predictions, rule=misranked, stage=stage, new_pairs=new_pairs,
        per_kind=synthetic_per_kind, rng=draw)
    real, first, second, by_slot = _real_hard_cases(pool, real_asked, gmad_levels=gmad_levels, stage=stage)

    table = pd.concat([synthetic, real], ignore_index=True)
    table = pair_sampling.random_swap(table, swap).reset_index(drop=True)
    report = {
        "stage": int(stage), "seed": int(seed), "misranked_rule": misranked,
        **pair_counts(table),
        "by_rule": {str(k): int(v) for k, v in table[RULE_COLUMN].value_counts(sort=False).sort_index().items()},
        "synthetic": synthetic_report,
        "real": {"asked": int(real_asked), "found": len(real), "gmad_levels": int(gmad_levels), "by_slot": by_slot},
        "teacher_agreement": _agreement(real, first, second, pool.teachers, pool.teacher_matrix),
        "left_out": pool.left_out,
        "notes": pool.notes,
    }
    return table, report


# ---------------------------------------------------------------- the steps

@dataclasses.dataclass
class _Pool:
    """The pool's videos by position in their sorted ids (so that nothing depends on row
    order), what the student and the teachers say of each, and what mining must avoid."""

    ids: np.ndarray  # object [n]: the sorted video ids
    score: np.ndarray  # float64 [n]: the student's score, NaN where it gave none
    stderr: np.ndarray  # float64 [n]
    teachers: list[str]  # sorted
    teacher_matrix: np.ndarray  # float64 [T, n]: teacher t's score, NaN where it gave none
    candidate_first: np.ndarray  # int64 [C]: positions of the synthetic candidates' videos
    candidate_second: np.ndarray  # (n + a code for ids outside the pool)
    taken: np.ndarray  # sorted int64 pair keys (pair_keys(.., n)) no new pair may repeat
    left_out: dict[str, int]  # the report's counts of what was left out
    notes: list[str]  # the report's notes, in the order the steps add them


def _checked_tables(index, student_scores, teacher_scores, previous) -> tuple[pd.DataFrame | None, list]:
    """(teacher_scores, previous tables as a list), after checking every table's columns;
    an empty teacher table becomes None."""
    require(index, INDEX_COLUMNS, "store index")
    require(student_scores, SCORE_COLUMNS, "student score table")
    teacher_scores = None if teacher_scores is None or not len(teacher_scores) else teacher_scores
    if teacher_scores is not None:
        require(teacher_scores, TEACHER_COLUMNS, "teacher score table")
    tables = [] if previous is None else [previous] if isinstance(previous, pd.DataFrame) else list(previous)
    for number, table in enumerate(tables):
        require(table, ("first_id", "second_id"), f"previous pair table {number}")
    return teacher_scores, tables


def _pool_ids(index: pd.DataFrame) -> pd.Series:
    """The pool's ids as text, sorted: every video is known by its position here, so the
    result does not depend on row order. MiningError for an id that appears twice."""
    universe = index["id"].astype(str).sort_values(ignore_index=True)
    twice = universe[(universe.iloc[1:].to_numpy() == universe.iloc[:-1].to_numpy()).nonzero()[0]].unique()
    if len(twice):
        raise MiningError(f"store index: {len(twice)} video id(s) appear more than once: {examples(twice)}")
    return universe


def _pool_arrays(universe: pd.Series, candidates, student_scores, teacher_scores, tables) -> _Pool:
    """Every table's ids as positions in `universe` (`_pool_ids`), the scores as arrays over
    the pool, and the keys of the earlier stages' pairs; counts and notes for what lies outside."""
    n = len(universe)
    notes: list[str] = []
    left_out: dict[str, int] = {}

    # One factorization finds every id the tables name (pandas' get_indexer, column by column, took longer).
    score, stderr, score_ids = student_arrays(student_scores, need_stderr=True)
    columns = [score_ids, candidates["first_id"], candidates["second_id"]]
    if teacher_scores is not None:
        columns.append(teacher_scores["video_id"])
    for table in tables:
        columns += [table["first_id"], table["second_id"]]
    codes = positions(universe, *columns, keep_unknown=True)
    student_where, candidate_first, candidate_second = codes[:3]

    # The student's scores over the pool, by position.
    inside = student_where < n
    left_out["student_scores_outside_pool"] = int((~inside).sum())
    pool_score, pool_stderr = np.full(n, np.nan), np.full(n, np.nan)
    pool_score[student_where[inside]], pool_stderr[student_where[inside]] = score[inside], stderr[inside]
    left_out["pool_videos_without_student_score"] = int((~np.isfinite(pool_score)).sum())
    if left_out["pool_videos_without_student_score"]:
        notes.append(f"{left_out['pool_videos_without_student_score']} of the pool's {n} videos have no student "
                     "score: they are in no new pair")

    teacher_codes = codes[3] if teacher_scores is not None else None
    teachers, teacher_matrix, outside = _teacher_arrays(teacher_scores, teacher_codes, n)
    left_out["teacher_scores_outside_pool"] = outside
    previous_keys = _previous_keys(codes[3 + (teacher_scores is not None):], n)
    return _Pool(universe.to_numpy(dtype=object), pool_score, pool_stderr, teachers, teacher_matrix,
                 candidate_first, candidate_second, previous_keys, left_out, notes)


def _synthetic_hard_cases(pool: _Pool, candidates: pd.DataFrame, pair_predictions: pd.DataFrame | None, *,
                          rule: str, stage: int, new_pairs: int, per_kind: int,
                          rng: np.random.Generator) -> tuple[pd.DataFrame, dict, int]:
    """(the misranked synthetic pairs picked, their report by kind, the real pairs asked):
    per kind, `per_kind` misranked candidates drawn from those not in earlier stages, then
    from those that are. Adds the picked pairs to `pool.taken`."""
    if pair_predictions is None:
        found, scored = misranked_by_scores(candidates["label"].to_numpy(np.int64), pool.candidate_first,
                                            pool.candidate_second, pool.score, pool.stderr, rule)
    else:
        found, scored = misranked_by_pairs(candidates, pair_predictions, rule=rule)
    pool.left_out["synthetic_candidates_unscored"] = int((~scored).sum())
    origin = candidates["origin"].to_numpy(dtype=object)
    kinds = [k for k in origins.SYNTHETIC if (origin == k).any()]
    real_asked = new_pairs - per_kind * len(kinds)
    if real_asked < 0:
        raise MiningError(f"stages.new_pairs ({new_pairs}) is below stages.synthetic_per_kind ({per_kind}) "
                          f"x the pool's {len(kinds)} synthetic kind(s) ({', '.join(kinds)})")
    candidate_keys = pair_keys(pool.candidate_first, pool.candidate_second, len(pool.ids))
    in_previous = is_member(candidate_keys, pool.taken)
    report = {}
    picked_rows = []
    for kind in kinds:
        of_kind = origin == kind
        rows = np.flatnonzero(of_kind & found)
        fresh, seen = rows[~in_previous[rows]], rows[in_previous[rows]]
        if len(fresh) >= per_kind:
            pick = rng.choice(fresh, size=per_kind, replace=False)
            repeats = 0
        else:
            repeats = min(per_kind - len(fresh), len(seen))
            pick = np.concatenate([fresh, rng.choice(seen, size=repeats, replace=False)])
        picked_rows.append(np.sort(pick))
        report[kind] = {"candidates": int(of_kind.sum()), "scored": int((of_kind & scored).sum()),
                        "misranked": len(rows), "asked": per_kind, "new": len(pick) - repeats, "repeats": repeats}
        if repeats:
            pool.notes.append(f"{kind}: {len(fresh)} misranked pair(s) not in earlier stages, fewer than the "
                              f"{per_kind} asked; {repeats} misranked pair(s) from earlier stages repeated")
        if len(pick) < per_kind:
            pool.notes.append(f"{kind}: the student misranks {len(rows)} of its {int(of_kind.sum())} synthetic "
                              f"pairs ({report[kind]['scored']} scored), fewer than the {per_kind} asked")
    picked = np.concatenate(picked_rows) if picked_rows else np.zeros(0, np.int64)
    # `taken` stays sorted (a stable sort of sorted runs is a merge).
    pool.taken = np.sort(np.concatenate([pool.taken, candidate_keys[picked]]), kind="stable")
    synthetic = candidates.iloc[picked].assign(stage=np.int32(stage), **{RULE_COLUMN: MISRANKED})
    return synthetic, report, real_asked


def _real_hard_cases(pool: _Pool, asked: int, *, gmad_levels: int,
                     stage: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """(the real pairs, first and second int64 [R] pool positions before any swap, the report
    by (teacher, direction)): `asked` gMAD pairs spread over the slots, each slot skipping
    the pairs taken before it, labelled by the student's scores."""
    n = len(pool.ids)
    slots = [(teacher, direction) for teacher in pool.teachers for direction in GMAD_DIRECTIONS]
    slot_asked = spread_count(asked, np.full(len(slots), asked)) if slots else np.zeros(0, np.int64)
    first_parts, second_parts, rules, by_slot = [], [], [], {}
    for (teacher, direction), wanted in zip(slots, slot_asked):
        teacher_score = pool.teacher_matrix[pool.teachers.index(teacher)]
        attacker, defender = ((pool.score, teacher_score) if direction == "student_attacks"
                              else (teacher_score, pool.score))
        first, second = gmad_pairs(attacker, defender, levels=gmad_levels, count=int(wanted), exclude=pool.taken)
        rule = gmad_rule(teacher, direction)
        eligible = int((np.isfinite(pool.score) & np.isfinite(teacher_score)).sum())
        by_slot[rule] = {"asked": int(wanted), "found": len(first), "eligible_videos": eligible}
        if len(first) < wanted:
            pool.notes.append(f"{rule}: {len(first)} pair(s), fewer than the {int(wanted)} asked ({eligible} videos "
                              f"scored by both, gMAD levels {gmad_levels}, pairs of earlier stages and of this one "
                              "skipped)")
        pool.taken = np.sort(np.concatenate([pool.taken, pair_keys(first, second, n)]), kind="stable")
        first_parts.append(first)
        second_parts.append(second)
        rules += [rule] * len(first)
    if not slots and asked:
        pool.notes.append(f"no teacher scores: none of the {asked} real pairs asked")
    first = np.concatenate(first_parts) if first_parts else np.zeros(0, np.int64)
    second = np.concatenate(second_parts) if second_parts else np.zeros(0, np.int64)
    d, s_d = student_differences(pool.score[first], pool.stderr[first], pool.score[second], pool.stderr[second])
    real = pair_table.make_pair_table(pool.ids[first], pool.ids[second], label_rules.five_way_labels(d, s_d),
                                      origin=origins.student_origin(stage - 1), stage=stage, d=d, s_d=s_d)
    real[RULE_COLUMN] = np.asarray(rules, dtype=object)
    return real, first, second, by_slot


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


def _teacher_arrays(teacher_scores: pd.DataFrame | None, codes: np.ndarray | None,
                    n: int) -> tuple[list[str], np.ndarray, int]:
    """(teachers sorted, float64 [T, n] scores by pool position with NaN where unscored,
    number of scores of videos outside the pool). codes: `positions(.., keep_unknown=True)`
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
                          f"{examples(shown)}")
    value = pd.to_numeric(teacher_scores["score"], errors="coerce").to_numpy(np.float64)
    inside = codes < n
    matrix = np.full((len(teachers), n), np.nan)
    matrix[row[inside], codes[inside]] = value[inside]
    return [str(t) for t in teachers], matrix, int((~inside).sum())


def _previous_keys(codes: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Sorted int64 pair keys (repeats kept) of the earlier tables' pairs whose videos are
    both in the pool; codes: first, second, first, second, ... per table (`positions`)."""
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
