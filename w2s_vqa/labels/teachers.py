"""Weak teachers' scores: read a score table, check it, and fuse it per video.

Several existing quality models (the weak teachers, METHOD.md "Labels") score the pool
of unlabeled videos ahead of time. Their scores arrive as one table, in long form
(`video_id, teacher, score`, one row per score) or wide form (`video_id` plus one
numeric column per teacher). Both become the long form here, which `fuse` reduces to
the per-video mean and variance across teachers that pairs.py turns into labels.

A bad score silently averaged into a mean would mislabel every pair its video is in,
so the table is checked completely before use and every problem is reported in one
`TeacherTableError`: fixing a 200k-video table one error per run is not workable.
"""

from __future__ import annotations

import json
import os
from typing import Collection, Iterable

import numpy as np
import pandas as pd

TEACHER_COLUMNS = ("video_id", "teacher", "score")
# How many examples each kind of problem lists; the count is always complete.
MAX_EXAMPLES = 20
NORMALIZATIONS = (None, "zscore", "minmax")

_CSV_SUFFIXES = (".csv",)
_PARQUET_SUFFIXES = (".parquet", ".pq")
_JSONL_SUFFIXES = (".jsonl", ".json")


class TeacherTableError(ValueError):
    """The teacher score table cannot be used; the message lists every problem found."""


class ProblemReport:
    """Problems grouped by kind, so that one error can list all of them.

    Each kind keeps its full count but only the first `max_examples` examples, which
    keeps the message readable when a whole column is broken.
    """

    def __init__(self, source: str, what: str, max_examples: int = MAX_EXAMPLES):
        self.source = source
        self.what = what
        self.max_examples = max_examples
        self._kinds: list[tuple[str, int, list[str]]] = []

    def add(self, kind: str, count: int, examples: Iterable[str]) -> None:
        """Record `count` problems of one kind, described by (at least the first) examples."""
        if count:
            shown = [example for _, example in zip(range(min(count, self.max_examples)), examples)]
            self._kinds.append((kind, int(count), shown))

    def __bool__(self) -> bool:
        return bool(self._kinds)

    def message(self) -> str:
        total = sum(count for _, count, _ in self._kinds)
        lines = [f"{self.source}: {total} problem(s) in the {self.what}:"]
        for kind, count, shown in self._kinds:
            more = f"; ... and {count - len(shown)} more" if count > len(shown) else ""
            lines.append(f"  - {kind} ({count}): " + "; ".join(shown) + more)
        return "\n".join(lines)

    def raise_if_any(self, error_type: type[Exception]) -> None:
        if self:
            raise error_type(self.message())


def read_teacher_table(path: str | os.PathLike, *, known_ids: Collection[str] | None = None,
                       min_videos_per_teacher: int = 1) -> pd.DataFrame:
    """Read, check and return a teacher score table in long form.

    The format follows the extension: .csv, .parquet/.pq, or JSON lines (.jsonl/.json,
    one object per line). Long or wide form is detected from the columns (see
    `parse_teacher_table`). Problems name the file and the 1-based data row: the header
    is not counted in a CSV file, and JSON-lines rows are numbered by line.
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
    teacher did not score that video. In long form every row claims a score, so an empty or NaN
    score is an error.

    Problems reported together: missing columns, an empty table, missing video ids or
    teacher names, NaN / missing, infinite or non-numeric scores, a (video, teacher)
    scored twice, video ids outside `known_ids` (when given: the ids the video store
    holds), and teachers with valid scores for fewer than `min_videos_per_teacher`
    videos. Rows are numbered from 1 in table order.

    Returns columns video_id (str), teacher (str), score (float64), in table order.
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


def fuse(scores: pd.DataFrame, *, normalize: str | None = None) -> pd.DataFrame:
    """Per-video mean and population variance of the teachers' scores.

    `scores` is a checked long table (`read_teacher_table`). The variance is taken over
    the teachers that scored the video (ddof=0, so a video scored by one teacher has
    variance 0); pairs.py combines two videos' variances into the label's s_d.

    Returns a frame indexed by video_id (sorted) with columns mean, var (float64) and
    n_teachers (int64).
    """
    scores = normalize_scores(scores, normalize)
    by_video = scores.groupby("video_id", sort=True)["score"]
    fused = pd.DataFrame({
        "mean": by_video.mean(),
        "var": by_video.var(ddof=0),
        "n_teachers": by_video.size().astype(np.int64),
    })
    fused.index.name = "video_id"
    return fused


def wide_scores(scores: pd.DataFrame, *, normalize: str | None = None) -> pd.DataFrame:
    """One column per teacher, indexed by video_id; NaN where a teacher did not score.

    Per-teacher scores matter beyond the mean: gMAD (METHOD.md, stages 2 and 3) looks
    for pairs one particular teacher cannot tell apart.
    """
    table = normalize_scores(scores, normalize).pivot(index="video_id", columns="teacher", values="score")
    table.columns.name = None
    return table


def _read_raw(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The table as read, all values as in the file, and each row's 1-based row number."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such teacher score table")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _CSV_SUFFIXES:
        # Strings throughout: ids keep leading zeros and bad scores stay visible as text;
        # only an empty cell is missing, so a video id such as "NA" stays an id.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    elif suffix in _PARQUET_SUFFIXES:
        raw = pd.read_parquet(path)
    elif suffix in _JSONL_SUFFIXES:
        return _read_jsonl(path)
    else:
        raise TeacherTableError(
            f"{path}: unknown teacher table format {suffix!r}; "
            f"expected one of {_CSV_SUFFIXES + _PARQUET_SUFFIXES + _JSONL_SUFFIXES}")
    return raw, np.arange(1, len(raw) + 1)


def _read_jsonl(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    """JSON lines, parsed by the json module so that NaN and Infinity reach the checks."""
    records, lines, bad = [], [], []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad.append(f"row {line_number}: {e.msg}")
                continue
            if not isinstance(record, dict):
                bad.append(f"row {line_number}: a JSON {type(record).__name__}, not an object")
                continue
            records.append(record)
            lines.append(line_number)
    problems = ProblemReport(path, "teacher score table")
    problems.add("lines that are not one JSON object", len(bad), bad)
    problems.raise_if_any(TeacherTableError)
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)


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

    score, no_score, not_numeric = _parse_scores(long["score"])
    infinite = np.isinf(score)
    problems.add("missing or NaN score", int(no_score.sum()), where(no_score))
    problems.add("infinite score", int(infinite.sum()), where(infinite))
    problems.add("non-numeric score", int(not_numeric.sum()),
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

    problems.raise_if_any(TeacherTableError)
    return pd.DataFrame({"video_id": video_id, "teacher": teacher, "score": score})


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
