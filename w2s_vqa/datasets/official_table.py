"""What every evaluation set's metadata reader shares: the official table, its errors, and
the checks and file lookups each reader (w2s_vqa.datasets.metadata) is made of.

An `OfficialTable` holds one row per video of a set's official release, columns `COLUMNS`
(described in w2s_vqa.datasets.metadata). Every problem of a metadata file is one
MetadataError naming the set, the file and every bad row at once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re

import numpy as np
import pandas as pd

from w2s_vqa.tables import ProblemReport, read_csv

COLUMNS = ("key", "video", "mos", "mos_std", "row")


class MetadataError(ValueError):
    """A set's metadata file (or its manual download) cannot be used; the message names the
    set, the file and every bad row or column."""


class MissingVideosError(MetadataError):
    """Listed videos the manual download lacks; `.missing` holds all of their names."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing

    def __reduce__(self):
        return type(self), (self.args[0], self.missing)


@dataclasses.dataclass(frozen=True)
class OfficialTable:
    """A set's official metadata as one table (COLUMNS) and the file it came from."""

    table: pd.DataFrame
    source: str


def loose_name(name: str) -> str:
    """A column name compared loosely: lower case, letters and digits only ("MOS full" -> "mosfull")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def find_column(table: pd.DataFrame, names: tuple[str, ...], *, path: str, set_name: str,
            required: bool = True) -> str | None:
    """The first column of `table` whose loose name is one of `names`; MetadataError naming the
    file, the columns wanted and the columns it has when a required one is absent."""
    by_norm = {loose_name(c): c for c in table.columns}
    for name in names:
        if loose_name(name) in by_norm:
            return by_norm[loose_name(name)]
    if required:
        raise MetadataError(f"{set_name}: {path}: no column {' or '.join(repr(n) for n in names)}; "
                            f"its columns are {[str(c) for c in table.columns]}")
    return None


def parse_numbers(values, *, path: str, set_name: str, column: str, rows, report: ProblemReport,
             allow_empty: bool = False) -> np.ndarray:
    """float64 of a text column; each cell that is not a finite number is added to `report`
    with its row (an empty cell is NaN without a problem when `allow_empty`)."""
    text = pd.Series(list(values), dtype=object)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    empty = text.isna().to_numpy() | (text.astype(str).str.strip() == "").to_numpy()
    bad = ~np.isfinite(numbers) & ~(empty & allow_empty)
    # An empty cell is said to be empty: its NaN's repr ('nan') would read as a value in the file.
    shown = ["empty" if empty[i] else repr(text.iloc[i]) for i in range(len(text))]
    report.add(f"'{column}' that is not a finite number", int(bad.sum()),
               (f"{r if isinstance(r, str) else f'row {r}'}: {shown[i]}" for i, r in enumerate(rows) if bad[i]))
    return np.where(empty & allow_empty, np.nan, numbers)


def finish_table(set_name: str, path: str, keys, videos, mos, mos_std, rows, report: ProblemReport) -> OfficialTable:
    """The OfficialTable of parsed columns, after the checks every set shares: a key named
    twice and an empty key join the report, which is raised as one MetadataError."""
    keys = [str(k).strip() for k in keys]
    empty = [f"row {r}" for k, r in zip(keys, rows) if not k or k.lower() == "nan"]
    report.add("empty video name", len(empty), empty)
    seen: dict[str, object] = {}
    twice = []
    for key, row in zip(keys, rows):
        if key in seen:
            twice.append(f"'{key}' in rows {seen[key]} and {row}")
        seen.setdefault(key, row)
    report.add("video named twice", len(twice), twice)
    report.raise_if_any(MetadataError)
    table = pd.DataFrame({"key": keys, "video": [str(v) for v in videos],
                          "mos": np.asarray(mos, np.float64), "mos_std": np.asarray(mos_std, np.float64),
                          "row": list(rows)})
    return OfficialTable(table, path)


def problem_report(set_name: str, path: str) -> ProblemReport:
    """The ProblemReport of one set's metadata file: messages start with "<set>: <path>"."""
    return ProblemReport(f"{set_name}: {path}", f"{set_name} metadata file")


def require_file(set_name: str, root: str, candidates: tuple[str, ...], what: str) -> str:
    """The first of `candidates` (paths relative to `root`, fnmatch patterns allowed, case
    ignored) that exists; MetadataError naming the set, the root and what was looked for."""
    names = []
    for folder, dirs, files in os.walk(root):
        depth = 0 if folder == root else os.path.relpath(folder, root).count(os.sep) + 1
        if depth >= 2:  # the metadata sits at the top of a release or up to two folders down
            dirs[:] = []
        names += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/") for f in files]
    for pattern in candidates:
        found = sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))
        if found:
            return os.path.join(root, *found[0].split("/"))
    raise MetadataError(f"{set_name}: no {what} in {root} (looked for {', '.join(candidates)}); "
                        "see the set's MANUAL_DOWNLOAD_INSTRUCTIONS for the layout expected")


def read_table(set_name: str, path: str, sheet: str | None = None) -> pd.DataFrame:
    """A CSV (tables.read_csv: text cells, one error for a malformed file) or an Excel
    workbook (.xlsx, via openpyxl; `sheet` or the first), every cell as text."""
    if path.lower().endswith((".xlsx", ".xlsm", ".xls")):
        try:
            workbook = pd.ExcelFile(path)
        except ImportError as e:
            raise MetadataError(f"{set_name}: {path}: reading a workbook needs openpyxl "
                                "(pip install 'w2s-vqa[tfds]')") from e
        except Exception as e:  # a file that is not a workbook: named, whatever openpyxl raised
            raise MetadataError(f"{set_name}: {path}: not a readable Excel workbook ({type(e).__name__}: {e})") from e
        names = workbook.sheet_names
        chosen = next((n for n in names if sheet and loose_name(n) == loose_name(sheet)), names[0])
        table = pd.read_excel(workbook, sheet_name=chosen, dtype=str)
        table.columns = [str(c) for c in table.columns]
        return table.mask(table.apply(lambda c: c.astype(str).str.strip() == ""))
    return read_csv(path, what=f"{set_name} metadata file", error=MetadataError)


def with_extension(name: str, extension: str = ".mp4") -> str:
    """`name`, with `extension` added when it has none."""
    return name if os.path.splitext(name)[1] else name + extension
