"""The pair table: where every labelled pair meets, its schema, checks and files.

Pairs come from the weak teachers' fused scores, from distortion levels of one source
video, from MOS-labeled sets and, in later stages, from the previous stage's student
(labels/sampling.py, labels/mining.py, labels/mos_pairs.py). All of them meet in one
pair table:

    first_id, second_id  str    video ids in the video store
    label                int8   index into prompt.LEVELS (labels/rules.py)
    origin               str    "teacher", "spatial", "temporal", "compression",
                                "student:<stage>" for pairs a stage's student labelled,
                                or "mos" for pairs of one MOS-labeled set
                                (labels/origins.py)
    stage                int32  the training stage (1, 2, 3, ...) the pair belongs to
    weight               float32 per-pair loss weight

and, where known, `d` and `s_d` (teacher pairs: score difference and its spread) and
`source_id` (synthetic pairs: the source both videos were made from). Other columns
are kept, after these (`canonical`).
"""

from __future__ import annotations

import json
import os
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.labels import origins
from w2s_vqa.prompt import LEVELS
from w2s_vqa.tables import MAX_EXAMPLES, ProblemReport, read_csv, read_jsonl

PAIR_COLUMNS = ("first_id", "second_id", "label", "origin", "stage", "weight")
OPTIONAL_COLUMNS = ("d", "s_d", "source_id")
_DTYPES = {
    "first_id": "str", "second_id": "str", "label": np.int8, "origin": "str",
    "stage": np.int32, "weight": np.float32, "d": np.float64, "s_d": np.float64, "source_id": "str",
}


class PairTableError(ValueError):
    """A pair table cannot be used; the message lists every problem found.

    `unknown_ids` lists every video id the table names that the store does not hold,
    when the check had the store's ids (`validate_pair_table(known_ids=...)`).
    """

    def __init__(self, message: str, unknown_ids: Sequence[str] = ()):
        super().__init__(message)
        self.unknown_ids = list(unknown_ids)


def make_pair_table(first_id, second_id, label, *, origin, stage: int, weight=1.0, **optional) -> pd.DataFrame:
    """A pair table in canonical column order and dtypes; `optional` takes d, s_d, source_id.

    Scalars (origin, stage, weight) are repeated over all pairs.
    """
    unknown = set(optional) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown optional pair column(s) {sorted(unknown)}; known: {OPTIONAL_COLUMNS}")
    columns = {"first_id": first_id, "second_id": second_id, "label": label,
               "origin": origin, "stage": stage, "weight": weight, **optional}
    as_arrays = {name: value.to_numpy() if isinstance(value, pd.Series) else value
                 for name, value in columns.items()}
    length = len(np.asarray(as_arrays["first_id"]))
    table = pd.DataFrame(as_arrays, index=pd.RangeIndex(length))
    return canonical(table)


def validate_pair_table(pairs: pd.DataFrame, path: str | os.PathLike | None = None, *,
                        known_ids: Collection[str] | None = None, rows: Sequence[int] | None = None) -> None:
    """Raise PairTableError listing every problem of a pair table in one message.

    Checked: missing columns, missing or equal ids, labels outside 0..len(LEVELS)-1,
    unknown origins, stages that are not integers >= 1, weights that are not finite
    numbers >= 0, d that is not a number or infinite, s_d that is not a number,
    infinite or negative (d and s_d may be missing: pairs without a teacher
    difference), and, with `known_ids` (the store's ids), video ids the store does not
    hold, with the rows that name them (also in the error's `unknown_ids`).

    A pair table is refused whole, never used with bad rows left out: every row is one
    training example with its loss weight, and a run on a silently shrunk table could
    not be compared with another on the same file.

    Rows are data rows counted from 1, the header not counted (`rows` gives each row's
    number where they differ, as JSON lines with blank lines do).
    """
    source = os.fspath(path) if path is not None else "<pair table>"
    problems = ProblemReport(source, "pair table")
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    problems.add(f"missing columns (the table has {list(pairs.columns)})", len(missing), map(repr, missing))
    rows = np.arange(1, len(pairs) + 1) if rows is None else np.asarray(rows)

    def report(kind: str, bad: np.ndarray, values: pd.Series | None = None) -> None:
        where = np.flatnonzero(bad)[:MAX_EXAMPLES]
        if values is None:
            shown = [f"row {rows[i]}" for i in where]
        else:  # tolist() gives Python scalars, which print plainly
            shown = [f"row {rows[i]}: {value!r}" for i, value in zip(where, values.iloc[where].tolist())]
        problems.add(kind, int(bad.sum()), shown)

    def numbers(column: str) -> tuple[np.ndarray, np.ndarray]:
        """(values as float64, blank mask): text that is no number becomes NaN, not blank."""
        values = pairs[column]
        blank = (values.isna() | (values.astype("str").str.strip() == "")).to_numpy()
        if pd.api.types.is_bool_dtype(values):
            return np.full(len(values), np.nan), blank
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan), blank

    blank = {}
    for column in ("first_id", "second_id"):
        if column in pairs.columns:
            values = pairs[column]
            blank[column] = (values.isna() | (values.astype("str").str.strip() == "")).to_numpy()
            report(f"empty {column}", blank[column])
    if len(blank) == 2:
        same = (pairs["first_id"].astype("str") == pairs["second_id"].astype("str")).to_numpy()
        report("a video compared with itself", same & ~blank["first_id"], pairs["first_id"])
    if "label" in pairs.columns:
        label, _ = numbers("label")
        bad = ~(np.isin(label, np.arange(len(LEVELS))))
        report(f"label not an index into LEVELS (0..{len(LEVELS) - 1})", bad, pairs["label"])
    if "origin" in pairs.columns:
        origin = pairs["origin"]
        text = origin.astype("str")
        known = text.isin([o for o in text.unique() if origins.is_known(o)]).to_numpy()
        bad = ~(known & origin.notna().to_numpy())
        report(f"unknown origin (expected {origins.EXPECTED})", bad, origin)
    if "stage" in pairs.columns:
        stage, _ = numbers("stage")
        bad = ~((stage >= 1) & (stage == np.round(stage)))
        report("stage not an integer >= 1", bad, pairs["stage"])
    if "weight" in pairs.columns:
        weight, _ = numbers("weight")
        report("weight not a finite number", ~np.isfinite(weight), pairs["weight"])
        report("negative weight", weight < 0, pairs["weight"])
    for column in ("d", "s_d"):
        if column in pairs.columns:
            value, empty = numbers(column)
            report(f"{column} not a finite number (leave it empty where a pair has none)",
                   ~np.isfinite(value) & ~empty, pairs[column])
            if column == "s_d":
                report("negative s_d (a standard deviation)", value < 0, pairs[column])

    unknown = []
    if known_ids is not None and len(blank) == 2:
        known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
        ids = {column: pairs[column].astype("str").to_numpy() for column in blank}
        outside = {column: ~pd.Series(ids[column]).isin(known).to_numpy() & ~blank[column] for column in blank}
        unknown = list(pd.unique(np.concatenate([ids[c][outside[c]] for c in blank])))
        using = outside["first_id"] | outside["second_id"]
        rows_of: dict[str, list[int]] = {}
        for i in np.flatnonzero(using):
            for column in blank:
                if outside[column][i]:
                    rows_of.setdefault(ids[column][i], []).append(int(rows[i]))

        def example(video_id: str) -> str:
            used = rows_of[video_id]
            shown = ", ".join(map(str, used[:MAX_EXAMPLES])) + (", ..." if len(used) > MAX_EXAMPLES else "")
            return f"{video_id!r} (row{'s' if len(used) > 1 else ''} {shown})"

        problems.add(f"video ids the video store does not hold (used by {int(using.sum())} pair(s))", len(unknown),
                     map(example, unknown))
    if problems:
        raise PairTableError(problems.message(), unknown)


def write_pairs(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Check `pairs` and write it as Parquet (.parquet/.pq), CSV (.csv) or JSON lines (.jsonl)."""
    path = os.fspath(path)
    validate_pair_table(pairs)
    table = canonical(pairs)
    kind = _format(path)
    if not workdir_lib.is_local(path):  # an object store: the final object written whole (w2s_vqa.workdir)
        with workdir_lib.atomic_open(path, "wb" if kind == "parquet" else "w") as f:
            if kind == "parquet":
                table.to_parquet(f, index=False)
            elif kind == "csv":
                table.to_csv(f, index=False)
            else:
                records = table.astype(object).where(table.notna(), None).to_dict("records")
                f.writelines(json.dumps(record) + "\n" for record in records)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if kind == "parquet":
        table.to_parquet(path, index=False)
    elif kind == "csv":
        table.to_csv(path, index=False)
    else:
        # json.dumps writes floats exactly (pandas' to_json rounds to 10 decimals).
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)


def read_pairs(path: str | os.PathLike, *, known_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Read a pair table written by `write_pairs` (or by hand), check it, return canonical dtypes.

    Text (CSV, JSON lines) is UTF-8 with or without a byte-order mark; other encodings
    and CSV separated by ';' or tabs are refused naming what was found (w2s_vqa.tables).
    Every problem, ids the store does not hold included when `known_ids` is given, is
    in one PairTableError (`validate_pair_table`). FileNotFoundError for a missing file;
    PairTableError for an empty path or an unknown extension.
    """
    path = os.fspath(path)
    if not path.strip():
        raise PairTableError("no pair table given (the path is empty)")
    kind = _format(path)
    if not workdir_lib.exists(path):
        raise FileNotFoundError(f"{path}: no such pair table")
    if kind != "parquet":  # text tables are read through w2s_vqa.tables, from local files
        workdir_lib.refuse_url(path, "pair table", "CSV and JSON-lines tables are read from local files; "
                                                   "give a local path or a Parquet table")
    text_columns = {c: str for c, t in _DTYPES.items() if t == "str"}
    rows = None
    if kind == "parquet":
        table = workdir_lib.read_parquet(path)
    elif kind == "csv":
        # Text, only empty cells missing: a video id such as "NA" stays an id.
        table = read_csv(path, what="pair table", error=PairTableError, columns=tuple(_DTYPES))
    else:
        # The json module, not pandas: NaN and Infinity reach the checks, floats stay exact.
        table, rows = read_jsonl(path, what="pair table", error=PairTableError, columns=tuple(_DTYPES))
        for column in (c for c in text_columns if c in table.columns):
            table[column] = table[column].astype(object).map(_as_text)
    validate_pair_table(table, path, known_ids=known_ids, rows=rows)
    # Checked: the numeric columns hold numbers (or, for d and s_d, nothing), whatever their type.
    numeric = [c for c, t in _DTYPES.items() if t != "str" and c in table.columns]
    return canonical(table.assign(**{c: pd.to_numeric(table[c]) for c in numeric}))


def _as_text(value):
    """A JSON id as text (7 -> "7"); missing (None, or NaN where a record lacks the key) stays missing."""
    if value is None or isinstance(value, str) or (isinstance(value, float) and np.isnan(value)):
        return value
    return str(value)


def _format(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    formats = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
    if suffix not in formats:
        raise PairTableError(f"{path}: unknown pair table format {suffix!r}; expected one of {sorted(formats)}")
    return formats[suffix]


def canonical(pairs: pd.DataFrame) -> pd.DataFrame:
    """The table with its required columns first, then the optional ones present, then any
    others; canonical dtypes (`_DTYPES`)."""
    order = [c for c in PAIR_COLUMNS + OPTIONAL_COLUMNS if c in pairs.columns]
    order += [c for c in pairs.columns if c not in order]
    return pairs[order].astype({c: t for c, t in _DTYPES.items() if c in pairs.columns})
