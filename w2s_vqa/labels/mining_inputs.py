"""The tables hard-case mining reads, checked, and their video ids as pool positions.

The pool is a video store's index (`INDEX_COLUMNS`); the student's scores are a score
table (`SCORE_COLUMNS`, score.scorer.score_table); the weak teachers' scores a long
teacher table (`TEACHER_COLUMNS`, labels/teachers.py). Every problem is a MiningError
naming the table, column or setting. Used by labels/misranked.py, labels/gmad.py and
the stage mixture (labels/mining.py).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from w2s_vqa.tables import MAX_EXAMPLES

INDEX_COLUMNS = ("id", "source_id", "distortion", "kind", "level")
SCORE_COLUMNS = ("id", "score", "stderr")
TEACHER_COLUMNS = ("video_id", "teacher", "score")


class MiningError(ValueError):
    """Mining inputs that cannot be used; the message names the table, column or setting."""


def require(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """MiningError naming `what` and its missing columns, unless `table` has all of `columns`."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MiningError(f"{what} lacks column(s) {missing} (it has {list(table.columns)})")


def examples(values) -> str:
    """The first MAX_EXAMPLES values, quoted, for a message."""
    values = list(values)
    return ", ".join(map(repr, values[:MAX_EXAMPLES])) + (", ..." if len(values) > MAX_EXAMPLES else "")


def positions(universe: pd.Series, *columns, keep_unknown: bool = False) -> list[np.ndarray]:
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


def student_arrays(scores: pd.DataFrame, *, need_stderr: bool) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """(score, stderr, ids) of a score table, checked: ids once each, scores numbers
    (NaN allowed: not scored), stderr (when needed) finite and >= 0 where the score is."""
    ids = scores["id"].astype(str).reset_index(drop=True)
    twice = ids[ids.duplicated()].unique()
    if len(twice):
        raise MiningError(f"student score table: {len(twice)} id(s) appear more than once: {examples(twice)}")
    score = pd.to_numeric(scores["score"], errors="coerce").to_numpy(np.float64)
    text = scores["score"].notna().to_numpy() & np.isnan(score)
    if text.any():
        raise MiningError(f"student score table, column 'score': {int(text.sum())} value(s) are not numbers, "
                          f"e.g. id {examples(ids[text])}")
    if not need_stderr:
        return score, np.full(len(score), np.nan), ids
    stderr = pd.to_numeric(scores["stderr"], errors="coerce").to_numpy(np.float64)
    scored = np.isfinite(score)
    nan = scored & np.isnan(stderr)
    if nan.any():
        raise MiningError(f"student score table, column 'stderr': NaN for {int(nan.sum())} scored video(s) "
                          f"(e.g. id {examples(ids[nan])}); a table from the authors' 'paper' mode has no interval "
                          "to label pairs with: score in 'map' mode")
    bad = scored & ~(np.isfinite(stderr) & (stderr >= 0))
    if bad.any():
        raise MiningError(f"student score table, column 'stderr': {int(bad.sum())} value(s) are infinite or negative "
                          f"(e.g. id {examples(ids[bad])})")
    return score, stderr, ids
