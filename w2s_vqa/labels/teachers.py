"""Weak teachers' scores: read a score table, check it, and fuse it per video.

Several existing quality models (the weak teachers, docs/method.md "Labels") score the pool
of unlabeled videos ahead of time. Their scores arrive as one table, in long form
(`video_id, teacher, score`, one row per score) or wide form (`video_id` plus one
numeric column per teacher). Both become the long form here, which `fuse` reduces to
the per-video mean and variance across teachers that rules.py turns into labels.

A bad score silently averaged into a mean would mislabel every pair its video is in,
so the table is checked completely before use. Skip or refuse, by kind:

- A score that is no number (NaN, infinite, text such as "N/A", empty in long form) is
  one teacher failing on one video, as happens in a 200k-video batch: that score is
  left out, exactly as an empty cell of a wide table, the video keeps its other
  teachers' scores, and one `tables.TableWarning` counts the skipped scores with
  examples (file, row, video, teacher, value).
- Everything else says the table does not describe the store's videos and no skip can
  repair it: missing columns, an empty table, a row without video id or teacher, a
  (video, teacher) scored twice, ids the store does not hold, a teacher left with too
  few valid scores. Those refuse the table with one `TeacherTableError` listing every
  problem, the skippable ones included: fixing a table one error per run is not
  workable.

Direction. Fusion takes every teacher as higher-is-better. NIQE, BRISQUE, PIQE and
their kind fall as quality rises: declare them in `lower_is_better` (the pairs verb's
`--lower-is-better niqe,brisque`) and their scores are negated before normalizing and
averaging. Undeclared, they would cancel the others out (z-scored, every pair becomes
"similar") or invert the ranking, so `fuse` warns, naming the teacher, when a
teacher's scores run against the consensus of the others (`consensus_spearman` < 0).
"""

from __future__ import annotations

import os
import warnings
from typing import Collection

import numpy as np
import pandas as pd
import scipy.stats

from w2s_vqa.tables import ProblemReport, TableWarning, read_csv, read_jsonl

TEACHER_COLUMNS = ("video_id", "teacher", "score")
NORMALIZATIONS = (None, "zscore", "minmax")

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_JSONL_SUFFIXES = (".jsonl", ".json")


class TeacherTableError(ValueError):
    """The teacher score table cannot be used; the message lists every problem found."""


def read_teacher_table(path: str | os.PathLike, *, known_ids: Collection[str] | None = None,
                       min_videos_per_teacher: int = 1) -> pd.DataFrame:
    """Read, check and return a teacher score table in long form.

    The format follows the extension: .csv, .parquet/.pq, or JSON lines (.jsonl/.json,
    one object per line); text is UTF-8 with or without a byte-order mark, and any
    other encoding, or a CSV file separated by ';' or tabs, is refused naming what was
    found (w2s_vqa.tables). Long or wide form is detected from the columns, and scores
    that are no number are skipped with a warning while other problems refuse the table
    (see `parse_teacher_table`). Problems name the file and the data row, counted from
    1 with the header not counted (a JSON-lines row is its line).
    """
    source = os.fspath(path)
    raw, row_numbers = _read_raw(source)
    return _to_long(raw, row_numbers, source=source, known_ids=known_ids,
                    min_videos_per_teacher=min_videos_per_teacher)


def parse_teacher_table(table: pd.DataFrame, *, source: str = "<table>",
                        known_ids: Collection[str] | None = None,
                        min_videos_per_teacher: int = 1) -> pd.DataFrame:
    """Check an in-memory teacher table and return it in long form.

    Long form has the columns video_id, teacher, score (other columns are ignored);
    any table with a `teacher` or `score` column is taken as long form, so a long table
    missing one of them is reported rather than misread. Otherwise the table is wide:
    `video_id` plus one column per teacher, where an empty or NaN cell means that
    teacher did not score that video. In long form every row claims a score.

    Skipped, and counted with examples in one `tables.TableWarning`: scores that are
    missing or NaN (long form), infinite, or not a number (text, booleans).
    Refused, every problem listed in one TeacherTableError (the skipped scores among
    them): missing columns, an empty table, missing video ids or teacher names, a
    (video, teacher) scored twice, video ids outside `known_ids` (when given: the ids
    the video store holds), and teachers with valid scores for fewer than
    `min_videos_per_teacher` videos. Rows are numbered from 1 in table order.

    Returns columns video_id (str), teacher (str), score (float64, finite), in table
    order, without the skipped scores.
    """
    return _to_long(table, np.arange(1, len(table) + 1), source=source, known_ids=known_ids,
                    min_videos_per_teacher=min_videos_per_teacher)


def normalize_scores(scores: pd.DataFrame, method: str | None) -> pd.DataFrame:
    """Rescale each teacher's scores over the videos it scored; `method` None leaves them.

    "zscore" maps a teacher to mean 0 and standard deviation 1, "minmax" to [0, 1]. This
    is for teachers on different scales; the paper's teachers share a 0-100-ish scale
    and are not normalized, hence the default None elsewhere. A teacher that scored
    different videos than the others is normalized over its own videos.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {method!r}")
    if method is None:
        return scores
    by_teacher = scores.groupby("teacher", sort=False)["score"]
    if method == "zscore":
        center = by_teacher.transform("mean")
        scale = by_teacher.transform(lambda s: s.std(ddof=0))
    else:
        center = by_teacher.transform("min")
        scale = by_teacher.transform("max") - center
    constant = sorted(scores.loc[scale.to_numpy() == 0, "teacher"].unique())
    if constant:
        raise TeacherTableError(
            f"cannot {method}-normalize teachers whose scores are all equal: {', '.join(constant)}")
    return scores.assign(score=(scores["score"] - center) / scale)


def orient(scores: pd.DataFrame, lower_is_better: Collection[str] = ()) -> pd.DataFrame:
    """The long table with the scores of the `lower_is_better` teachers negated, so
    that every teacher's scores rise with quality.

    Raises TeacherTableError naming any teacher in `lower_is_better` that the table does
    not have (a misspelt name would otherwise leave its teacher reversed).
    """
    declared = [lower_is_better] if isinstance(lower_is_better, str) else list(lower_is_better)
    if not declared:
        return scores
    present = set(scores["teacher"].unique())
    unknown = sorted(set(declared) - present)
    if unknown:
        raise TeacherTableError(f"lower_is_better names teacher(s) the table does not have: {', '.join(unknown)}; "
                                f"its teachers: {', '.join(sorted(present, key=str))}")
    flip = scores["teacher"].isin(declared).to_numpy()
    return scores.assign(score=np.where(flip, -scores["score"].to_numpy(np.float64), scores["score"]))


def consensus_spearman(scores: pd.DataFrame) -> pd.Series:
    """Each teacher's Spearman correlation with the consensus of the other teachers.

    The consensus of a video is the mean, over the other teachers that scored it, of
    their centred percentile ranks (ranks, so that teachers on different scales weigh
    alike whatever the normalization). Each other teacher enters in the direction the
    majority of teachers shares, so that one reversed teacher does not drag a sound one
    below 0: the signs of the leading eigenvector of the teachers' pairwise Spearman
    matrix (its first principal component) split them into two camps, and the smaller
    camp's ranks are negated. With camps of equal size (e.g. two teachers that
    disagree) no direction is the majority's and the others enter as they are.

    Correlations are scipy.stats.spearmanr over the videos both sides scored; NaN with
    one teacher, under three such videos, or constant scores. Below 0, the teacher
    ranks videos against the others: typically a lower-is-better score (NIQE, BRISQUE)
    taken as higher-is-better.

    Returns a float64 Series indexed by teacher, in the table's order of teachers.
    """
    teachers = list(scores["teacher"].unique())
    table = scores.pivot(index="video_id", columns="teacher", values="score")[teachers]
    ranks = table.rank(pct=True) - 0.5  # centred: negating a rank reverses its order
    pairwise = np.eye(len(teachers))
    for i in range(len(teachers)):
        for j in range(i + 1, len(teachers)):
            rho = _spearman(table.iloc[:, i], table.iloc[:, j])
            pairwise[i, j] = pairwise[j, i] = 0.0 if np.isnan(rho) else rho
    leading = np.linalg.eigh(pairwise)[1][:, -1]
    sign = np.where(leading < 0, -1.0, 1.0)
    if (sign < 0).sum() > (sign > 0).sum():
        sign = -sign
    elif (sign < 0).sum() == (sign > 0).sum():
        sign = np.ones(len(teachers))
    oriented = ranks * sign
    spearman = {}
    for i, teacher in enumerate(teachers):
        others = oriented.drop(columns=teacher).mean(axis=1)  # NaN where no other teacher scored
        spearman[teacher] = _spearman(table[teacher], others) if len(teachers) > 1 else np.nan
    return pd.Series(spearman, dtype=np.float64, name="spearman")


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """scipy.stats.spearmanr over the rows where both are present; NaN under 3 rows or a constant side."""
    both = a.notna() & b.notna()
    if both.sum() < 3 or a[both].nunique() < 2 or b[both].nunique() < 2:
        return np.nan
    return float(scipy.stats.spearmanr(a[both], b[both]).statistic)


def fuse(scores: pd.DataFrame, *, normalize: str | None = None,
         lower_is_better: Collection[str] = ()) -> pd.DataFrame:
    """Per-video mean and population variance of the teachers' scores.

    `scores` is a checked long table (`read_teacher_table`). The scores of the
    `lower_is_better` teachers are negated (`orient`), then each teacher is normalized
    (`normalize_scores`), then averaged. The variance is taken over the teachers that
    scored the video (ddof=0, so a video scored by one teacher has variance 0);
    labels/sampling.py combines two videos' variances into the label's s_d.

    Warns (`tables.TableWarning`, one per teacher, naming it) when a teacher's oriented
    scores correlate negatively with the others' consensus (`consensus_spearman`):
    fused as they are, they would cancel or invert the ranking.

    Returns a frame indexed by video_id (sorted) with columns mean, var (float64) and
    n_teachers (int64). Raises TeacherTableError for an unknown name in
    `lower_is_better` or a constant teacher under normalization; ValueError for an
    unknown `normalize`.
    """
    oriented = orient(scores, lower_is_better)
    warn_against_consensus(oriented, lower_is_better)
    scores = normalize_scores(oriented, normalize)
    by_video = scores.groupby("video_id", sort=True)["score"]
    fused = pd.DataFrame({
        "mean": by_video.mean(),
        "var": by_video.var(ddof=0),
        "n_teachers": by_video.size().astype(np.int64),
    })
    fused.index.name = "video_id"
    return fused


def warn_against_consensus(scores: pd.DataFrame, lower_is_better: Collection[str] = ()) -> list[str]:
    """Warn (`tables.TableWarning`) for each teacher of an oriented long table whose
    `consensus_spearman` is below 0; returns the warnings' messages.

    `lower_is_better` only words the advice: a teacher already declared is told to
    check the declaration rather than to make it.
    """
    declared = {lower_is_better} if isinstance(lower_is_better, str) else set(lower_is_better)
    spearman = consensus_spearman(scores)
    against = spearman[spearman < 0]
    messages = []
    for teacher, rho in against.items():
        counted = int(scores.loc[scores["teacher"] == teacher, "video_id"].nunique())
        if teacher in declared:
            advice = "it is declared lower-is-better (negated before fusion): check that it is"
        else:
            advice = (f"if its scores fall as quality rises (as NIQE's and BRISQUE's do), declare it: "
                      f"lower_is_better=['{teacher}'] (w2s-vqa pairs --lower-is-better {teacher}); if not, "
                      "the teachers disagree on these videos and partly cancel out in the fused score")
        camps = (" (the teachers split in two equal camps: either may be the reversed one)"
                 if (spearman < 0).all() else "")
        messages.append(f"teacher {teacher!r} ranks videos against the other teachers{camps}: Spearman {rho:.2f} "
                        f"between its scores and the mean of the others' ranks, over the {counted} videos it "
                        f"scored; {advice}")
    for message in messages:
        warnings.warn(message, TableWarning, stacklevel=3)
    return messages


def wide_scores(scores: pd.DataFrame, *, normalize: str | None = None,
                lower_is_better: Collection[str] = ()) -> pd.DataFrame:
    """One column per teacher, indexed by video_id; NaN where a teacher did not score.

    Scores are oriented (`orient`: the `lower_is_better` teachers negated) and
    normalized as `fuse` does. Per-teacher scores matter beyond the mean: gMAD
    (docs/method.md, stages 2 and 3) looks for pairs one particular teacher cannot tell apart.
    """
    table = (normalize_scores(orient(scores, lower_is_better), normalize)
             .pivot(index="video_id", columns="teacher", values="score"))
    table.columns.name = None
    return table


def _read_raw(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The table as read, all values as in the file, and each row's 1-based row number."""
    suffix = os.path.splitext(path)[1].lower()
    what = "teacher score table"
    if suffix in _CSV_SUFFIXES:
        # Strings throughout: ids keep leading zeros and bad scores stay visible as text;
        # only an empty cell is missing, so a video id such as "NA" stays an id.
        raw = read_csv(path, what=what, error=TeacherTableError, columns=TEACHER_COLUMNS)
    elif suffix in _PARQUET_SUFFIXES:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such {what}")
        raw = pd.read_parquet(path)
    elif suffix in _JSONL_SUFFIXES:
        raw, rows = read_jsonl(path, what=what, error=TeacherTableError, columns=TEACHER_COLUMNS)
        return raw, np.asarray(rows, dtype=np.int64)
    else:
        raise TeacherTableError(
            f"{path}: unknown teacher table format {suffix!r}; "
            f"expected one of {_CSV_SUFFIXES + _PARQUET_SUFFIXES + _JSONL_SUFFIXES}")
    return raw, np.arange(1, len(raw) + 1)


def _to_long(raw: pd.DataFrame, row_numbers: np.ndarray, *, source: str,
             known_ids: Collection[str] | None, min_videos_per_teacher: int) -> pd.DataFrame:
    if min_videos_per_teacher < 1:
        raise ValueError(f"min_videos_per_teacher must be at least 1, got {min_videos_per_teacher}")
    problems = ProblemReport(source, "teacher score table")
    long = _melt(raw, row_numbers, problems)
    problems.raise_if_any(TeacherTableError)

    video_id = long["video_id"]
    teacher = long["teacher"]
    rows = long["row"].to_numpy()

    def where(mask, detail=lambda i: ""):
        """Examples 'row R (video V, teacher T)' for the rows selected by `mask`."""
        for i in np.flatnonzero(mask):
            yield f"row {rows[i]} (video {video_id.iat[i]}, teacher {teacher.iat[i]}){detail(i)}"

    no_id = _is_blank(video_id).to_numpy()
    no_teacher = _is_blank(teacher).to_numpy()
    problems.add("missing video id", int(no_id.sum()), where(no_id))
    problems.add("missing teacher name", int(no_teacher.sum()), where(no_teacher))

    # Scores that are no number are skipped (module docstring); reported apart from the rest.
    skipped = ProblemReport(source, "teacher score table")
    score, no_score, not_numeric = _parse_scores(long["score"])
    infinite = np.isinf(score)
    skipped.add("missing or NaN score", int(no_score.sum()), where(no_score))
    skipped.add("infinite score", int(infinite.sum()), where(infinite))
    skipped.add("non-numeric score", int(not_numeric.sum()),
                where(not_numeric, lambda i: f": {long['score'].iat[i]!r}"))

    keyed = long[~(no_id | no_teacher)]
    repeated = keyed[keyed.duplicated(["video_id", "teacher"], keep=False)]
    groups = repeated.groupby(["video_id", "teacher"], sort=False)["row"]
    problems.add("(video, teacher) scored more than once", groups.ngroups,
                 (f"video {v}, teacher {t} at rows {', '.join(map(str, r))}" for (v, t), r in groups))

    if known_ids is not None:
        known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
        unknown = keyed[~keyed["video_id"].isin(known)].drop_duplicates("video_id")
        problems.add("video ids the video store does not hold", len(unknown),
                     (f"{v} (row {r})" for v, r in zip(unknown["video_id"], unknown["row"])))

    valid = ~(no_id | no_teacher | no_score | not_numeric | infinite)
    videos_per_teacher = (long[valid].groupby("teacher")["video_id"].nunique()
                          .reindex(teacher[~no_teacher].unique(), fill_value=0))
    too_few = videos_per_teacher[videos_per_teacher < min_videos_per_teacher]
    problems.add(f"teachers with valid scores for fewer than {min_videos_per_teacher} video(s)",
                 len(too_few), (f"{t}: {n} video(s)" for t, n in too_few.items()))

    if problems:
        problems.extend(skipped)
        problems.raise_if_any(TeacherTableError)
    if skipped:
        warnings.warn(skipped.message("score(s) left out of") + "\n  (their videos keep their other teachers' scores)",
                      TableWarning, stacklevel=3)
    return pd.DataFrame({"video_id": video_id[valid], "teacher": teacher[valid],
                         "score": score[valid]}).reset_index(drop=True)


def _melt(raw: pd.DataFrame, row_numbers: np.ndarray, problems: ProblemReport) -> pd.DataFrame:
    """Long form with raw (unparsed) scores and a `row` column; structural problems go to `problems`."""
    columns = [str(c) for c in raw.columns]
    raw = raw.set_axis(columns, axis=1).reset_index(drop=True)
    if len(raw) == 0:
        problems.add("empty table", 1, ["no data rows"])
        return raw
    long_form = "teacher" in columns or "score" in columns
    required = TEACHER_COLUMNS if long_form else ("video_id",)
    missing = [c for c in required if c not in columns]
    problems.add(f"missing required columns (the table has {columns})", len(missing), map(repr, missing))
    if not long_form and "video_id" in columns and len(columns) == 1:
        problems.add("no teacher columns", 1,
                     ["a wide table needs one score column per teacher besides 'video_id'"])
    # In wide form every other column is a teacher: a nameless one would become a teacher
    # named "Unnamed: 0" (pandas' name for it), typically a row index saved with the table.
    unnamed = [c for c in columns if not long_form and c.startswith("Unnamed: ")]
    problems.add("columns without a name in the header", len(unnamed), map(repr, unnamed),
                 "In a wide table every column but video_id is a teacher; a row index saved with "
                 "the table has no name (pandas: write it with to_csv(..., index=False)).")
    if problems:
        return raw
    # Ids are text everywhere else (the video store, pair tables), whatever the file held.
    raw = raw.assign(video_id=raw["video_id"].astype("str"))
    if long_form:
        long = raw.loc[:, list(TEACHER_COLUMNS)].assign(row=row_numbers, teacher=raw["teacher"].astype("str"))
    else:
        long = (raw.assign(row=row_numbers)
                .melt(id_vars=["video_id", "row"], var_name="teacher", value_name="score")
                .sort_values("row", kind="stable"))
        long = long[~_no_score(long["score"])]
    return long.reset_index(drop=True)


def _is_blank(values: pd.Series) -> pd.Series:
    """Missing, or text that is empty after stripping."""
    return values.isna() | (values.astype("str").str.strip() == "")


def _no_score(values: pd.Series) -> pd.Series:
    """Blank, NaN, or the text "nan" in any case: a cell that holds no score."""
    return _is_blank(values) | values.astype("str").str.strip().str.lower().isin(["nan", "+nan", "-nan"])


def _parse_scores(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score as float64, missing-or-NaN mask, non-numeric mask).

    Numeric columns are taken as they are; anything else is parsed from its text, so
    CSV strings, JSON values of mixed type and Parquet string columns take one path.
    Booleans are not scores.
    """
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        score = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        return score, np.isnan(score), np.zeros(len(raw), dtype=bool)
    score = pd.to_numeric(raw.astype("str"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    no_score = _no_score(raw).to_numpy()
    not_numeric = np.isnan(score) & ~no_score
    return score, no_score, not_numeric
