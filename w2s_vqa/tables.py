"""Reading the tables users hand in: text encodings, separators, JSON lines, one report.

Teacher score tables, manifests and pair tables are written by people with whatever
tool they have: Excel, PowerShell, pandas, a shell loop. Each table reader (labels/
teachers.py and pair_table.py, store/sources.py) reads its text here, so they all accept the
same files and refuse the others with the same diagnosis:

- UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one; so does
  PowerShell 5's `Out-File -Encoding utf8`).
- UTF-16 and UTF-32 (Excel's "Unicode text", PowerShell 5's default redirection) are
  named as such, with the byte-order mark found; bytes that are not UTF-8 are named
  with their place and the encoding they decode in (Windows-1252, Excel's plain
  "CSV" on Windows); a ZIP file (an .xlsx workbook saved under another name) and
  other binary files are named too. No table reader ever shows a raw
  UnicodeDecodeError.
- A CSV file whose columns are separated by ';' (Excel in locales with a decimal
  comma) or by tabs is named as such, and decimal commas ("0,35") are pointed out:
  read as ',' separated, such a file would be one column, or a number would be split
  into two cells.

Row numbers. Every message about a row uses one convention, ROW_CONVENTION: data rows
counted from 1, the header line not counted. A JSON-lines file has no header, so its
row N is line N of the file (blank lines are skipped but still counted as lines, so
that the number finds the line in an editor).

`ProblemReport` gathers every problem of a table, so that one error lists all of them:
fixing a 200k-row table one problem per run is not workable.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import os
import re
import warnings
from typing import Iterable, Iterator

import pandas as pd

# How many examples each kind of problem lists; the count is always complete.
MAX_EXAMPLES = 20
ROW_CONVENTION = "rows are data rows counted from 1, the header not counted"

# Byte-order marks, longest first: UTF-32 LE's begins with UTF-16 LE's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32", "FF FE 00 00"),
    (codecs.BOM_UTF32_BE, "UTF-32", "00 00 FE FF"),
    (codecs.BOM_UTF16_LE, "UTF-16", "FF FE"),
    (codecs.BOM_UTF16_BE, "UTF-16", "FE FF"),
)
_SAVE_AS_UTF8 = ("save it as UTF-8 (Excel: 'CSV UTF-8'; PowerShell: `Out-File -Encoding utf8`; "
                 "pandas: to_csv(..., encoding='utf-8'))")
# A number written with a decimal comma: "0,35", "-12,5", "1.234,5".
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?(\d{1,3}(\.\d{3})+|\d+),\d+\s*$")
# Separators a spreadsheet may have used instead of ',', with their names.
_OTHER_SEPARATORS = ((";", "';'"), ("\t", "tabs"), ("|", "'|'"))
# Lines looked at for decimal commas when naming a separator.
_SNIFF_LINES = 1000


class TableWarning(UserWarning):
    """A table was used, but not all of it or not as it stood: rows left out, a teacher
    whose scores run against the others. The message names the file, rows and values."""


@contextlib.contextmanager
def collect_notes() -> Iterator[list[str]]:
    """Collect the messages of the TableWarnings raised inside, every one of them, for a
    verb's notes; other warnings are shown as Python shows them.

        with collect_notes() as notes:
            fused = teachers.fuse(teachers.read_teacher_table(path), normalize="zscore")
    """
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TableWarning)
        yield notes
    for warning in caught:
        if issubclass(warning.category, TableWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


class ProblemReport:
    """Problems of one table grouped by kind, so that one error can list all of them.

    Each kind keeps its full count but only the first `max_examples` examples, which
    keeps the message readable when a whole column is broken. The message's first
    line stands alone (a log or `grep` may show only it): the source, the count, the row
    convention (ROW_CONVENTION) and each kind with its count and first example; the lines
    below list every kind's examples and fixes.
    """

    def __init__(self, source: str, what: str, max_examples: int = MAX_EXAMPLES):
        self.source = source
        self.what = what
        self.max_examples = max_examples
        self._kinds: list[tuple[str, int, list[str], str]] = []

    def add(self, kind: str, count: int, examples: Iterable[str], fix: str = "") -> None:
        """Record `count` problems of one kind, described by (at least the first) examples;
        `fix`, when given, says on a line of its own how to fix them."""
        if count:
            shown = [example for _, example in zip(range(min(count, self.max_examples)), examples)]
            self._kinds.append((kind, int(count), shown, fix))

    def extend(self, other: "ProblemReport") -> None:
        """Add every kind of `other` (a report on the same table) to this one."""
        self._kinds.extend(other._kinds)

    def __bool__(self) -> bool:
        return bool(self._kinds)

    @property
    def total(self) -> int:
        """The number of problems of every kind together."""
        return sum(count for _, count, _, _ in self._kinds)

    def message(self, verb: str = "problem(s) in") -> str:
        """'SOURCE: N problem(s) in the WHAT (rows ...): KIND (n), e.g. EXAMPLE; ...' on the
        first line, then one line per kind with its examples (and one with its fix)."""
        summary = "; ".join(f"{kind} ({count})" + (f", e.g. {shown[0]}" if shown else "")
                            for kind, count, shown, _ in self._kinds)
        lines = [f"{self.source}: {self.total} {verb} the {self.what} ({ROW_CONVENTION}): {summary}"]
        for kind, count, shown, fix in self._kinds:
            more = f"; ... and {count - len(shown)} more" if count > len(shown) else ""
            lines.append(f"  - {kind} ({count}): " + "; ".join(shown) + more)
            if fix:
                lines.append(f"    {fix}")
        return "\n".join(lines)

    def raise_if_any(self, error_type: type[Exception]) -> None:
        if self:
            raise error_type(self.message())


def read_text(path: str | os.PathLike, *, what: str, error: type[Exception], header: bool = True) -> str:
    """The text of a table file, decoded as UTF-8 with an optional byte-order mark.

    Raises `error` (the table's own error type) naming `path`, the `what` ("teacher
    score table") and what was found: a UTF-16 or UTF-32 byte-order mark, NUL bytes
    (UTF-16 without a mark, or a binary file), a ZIP archive (an Excel workbook), or
    the first byte that is not UTF-8 with its row (`header` says whether line 1 is a
    header, for ROW_CONVENTION) and, when the bytes decode as Windows-1252, that guess.
    FileNotFoundError when the file does not exist.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    with open(path, "rb") as f:
        data = f.read()
    return decode(data, source=path, what=what, error=error, header=header)


def decode(data: bytes, *, source: str, what: str, error: type[Exception], header: bool = True) -> str:
    """`read_text` on bytes already read; `source` names them in errors."""
    for bom, name, shown in _BOMS:
        if data.startswith(bom):
            raise error(f"{source}: the {what} looks like {name} text (byte-order mark {shown}), as Excel's "
                        f"'Unicode text' and Windows PowerShell write; {_SAVE_AS_UTF8}")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if data.startswith(b"PK\x03\x04"):
        raise error(f"{source}: the {what} is a ZIP archive (an Excel .xlsx workbook?), not text; "
                    f"export it as CSV UTF-8")
    if data.startswith(b"PAR1"):
        raise error(f"{source}: the {what} is a Parquet file, not text (where Parquet is read, the name must "
                    "end in .parquet)")
    nul = data.find(b"\0", 0, 1 << 16)
    if nul >= 0:
        raise error(f"{source}: the {what} holds NUL bytes ({_place(data, nul, header)}): UTF-16 text without a "
                    f"byte-order mark, or not a text file; {_SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        try:
            data.decode("cp1252")
            guess = "; it decodes as Windows-1252, the encoding of Excel's plain 'CSV' on Windows"
        except UnicodeDecodeError:
            guess = ""
        raise error(f"{source}: the {what} is not UTF-8 text: byte 0x{data[e.start]:02X} "
                    f"({_place(data, e.start, header)}) is not valid UTF-8{guess}; {_SAVE_AS_UTF8}") from None


def _place(data: bytes, offset: int, header: bool) -> str:
    """'the header', 'data row N' or 'row N' of the line holding byte `offset`."""
    line = data.count(b"\n", 0, offset) + 1
    if header:
        return "in the header" if line == 1 else f"in data row {line - 1}"
    return f"in row {line}"


def fold_columns(table: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """`table` with each header cell that names one of `columns` but for case and the
    spaces around it ("MOS", " Path ") renamed to that spelling. Unambiguous only: a
    column whose name is already present, or that two header cells fold to ("mos" and
    "MOS", "Mos" and "MOS"), is left as the table has it, so that the table's own check
    names what it found."""
    header = [str(c) for c in table.columns]
    renames = {}
    for name in columns:
        if name in header:
            continue
        matches = [c for c in header if c.strip().casefold() == name.casefold()]
        if len(matches) == 1:
            renames[matches[0]] = name
    return table.rename(columns=renames) if renames else table


def read_csv(path: str | os.PathLike, *, what: str, error: type[Exception],
             columns: Iterable[str] = ()) -> pd.DataFrame:
    """A CSV table as text: every column a string, only an empty cell missing (NaN).

    Text throughout, so that ids keep leading zeros, a video id such as "NA" stays an
    id, and a bad number stays visible as text for the table's own checks, which
    convert the numeric columns. Decoding as `read_text`; parsed by the csv module
    (RFC 4180 quoting). Blank lines are skipped and not counted as rows; a header cell
    left empty is named "Unnamed: <position>", as pandas names it; a short row is
    padded with missing cells; empty cells at the end of a line beyond the header's
    (a trailing delimiter) are dropped.

    Refused as `error`, the table's own error type, naming the file: a table whose
    columns are separated by ';', tabs or '|' rather than ',' (and its decimal commas,
    when its numbers use them: `diagnose_separator`); a header naming a column twice;
    rows with more cells than the header, all of them in one message. (pandas would
    take the extra cells of such rows for an index and shift every value one column
    to the right without a word, which is what an unquoted decimal comma, "0,35",
    does to a ','-separated row.)

    `columns`: the names the table's reader looks for, found in any case (`fold_columns`).
    """
    path = os.fspath(path)
    text = read_text(path, what=what, error=error, header=True)
    separator = diagnose_separator(text)
    if separator:
        raise error(f"{path}: the {what} {separator}")
    try:
        records = [record for record in csv.reader(io.StringIO(text, newline="")) if record]
    except csv.Error as e:
        raise error(f"{path}: the {what} is not a well-formed CSV table: {e}") from None
    if not records:
        raise error(f"{path}: the {what} is empty (not even a header line)")
    header = [name if name.strip() else f"Unnamed: {i}" for i, name in enumerate(records[0])]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise error(f"{path}: the {what}'s header names column(s) more than once: {', '.join(map(repr, twice))}")
    _check_row_widths(records, source=path, what=what, error=error)
    width = len(header)
    rows = [record[:width] + [""] * (width - len(record)) for record in records[1:]]
    table = pd.DataFrame(rows, columns=header, dtype="str") if rows else pd.DataFrame(
        {name: pd.Series([], dtype="str") for name in header})
    return fold_columns(table.mask(table == ""), columns)


def _check_row_widths(records: list[list[str]], *, source: str, what: str, error: type[Exception]) -> None:
    """Raise `error` listing every data row of `records` (header first) with more
    non-empty cells than the header has cells."""
    header, wide, decimal_comma = records[0], [], False
    for row, record in enumerate(records[1:], start=1):
        # Empty extra cells are a delimiter at the end of the line: nothing is lost.
        if len(record) > len(header) and any(cell.strip() for cell in record[len(header):]):
            wide.append(f"row {row}: {len(record)} cells {','.join(record)[:80]!r}")
            decimal_comma = decimal_comma or any(
                _DECIMAL_COMMA.match(a + "," + b) for a, b in zip(record, record[1:]))
    if not wide:
        return
    problems = ProblemReport(source, what)
    cause = ("numbers take '.' as the decimal mark: a decimal comma splits a number into two cells"
             if decimal_comma else "a value holding ',' must be in double quotes")
    problems.add(f"rows with more cells than the {len(header)} of the header", len(wide), wide, cause)
    problems.raise_if_any(error)


def diagnose_separator(text: str) -> str | None:
    """Why `text` is not a ','-separated table, or None when it may well be one.

    It is not when its header is one cell read with ',' but several with ';', a tab or
    '|'. With ';', numbers with a decimal comma ("0,35") among the first data rows are
    named too: that is how Excel writes CSV where ',' is the decimal mark.
    """
    lines = [line.rstrip("\r\n") for line in itertools.islice(io.StringIO(text, newline=""), _SNIFF_LINES + 1)
             if line.strip()]
    if not lines or len(_cells(lines[0], ",")) > 1:
        return None
    for separator, name in _OTHER_SEPARATORS:
        columns = _cells(lines[0], separator)
        if len(columns) < 2:
            continue
        shown = ", ".join(repr(c) for c in columns[:4]) + (", ..." if len(columns) > 4 else "")
        fix = "save it with ',' between columns"
        found = f"has its columns separated by {name}, not ',' (header: {shown})"
        for row, line in enumerate(lines[1:], start=1):
            decimal = next((cell for cell in _cells(line, separator) if _DECIMAL_COMMA.match(cell)), None)
            if decimal is not None:
                found += (f", and numbers with a decimal comma (data row {row}: {decimal!r}), as Excel writes "
                          "CSV where ',' is the decimal mark")
                fix += " and '.' as the decimal mark"
                break
        return (f"{found}; {fix} (pandas: pd.read_csv(PATH, sep={separator!r}"
                f"{', decimal=' + repr(',') if 'decimal' in fix else ''}).to_csv(NEW_PATH, index=False))")
    return None


def _cells(line: str, separator: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=separator))
    except (csv.Error, StopIteration):
        return [line]


def read_jsonl(path: str | os.PathLike, *, what: str, error: type[Exception],
               columns: Iterable[str] = ()) -> tuple[pd.DataFrame, list[int]]:
    """A JSON-lines table (one object per line) and each record's row number (its line).

    Parsed by the json module, so NaN and Infinity, which Python's json writes, reach
    the table's own checks as floats rather than failing here. Blank lines are skipped.
    Decoding as `read_text`. Lines that are not one JSON object are all listed in one
    `error`. A file without records gives an empty frame (the table's checks name it).
    `columns`: as `read_csv`'s, keys found in any case.
    """
    path = os.fspath(path)
    text = read_text(path, what=what, error=error, header=False)
    records, rows, bad = [], [], []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line breaks
    # of Unicode, which are not line ends of JSON lines.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"row {line_number}: {e.msg} at column {e.colno}")
            continue
        if not isinstance(record, dict):
            bad.append(f"row {line_number}: a JSON {type(record).__name__}, not an object")
            continue
        records.append(record)
        rows.append(line_number)
    problems = ProblemReport(path, what)
    problems.add("lines that are not one JSON object", len(bad), bad)
    problems.raise_if_any(error)
    return fold_columns(pd.DataFrame.from_records(records), columns), rows
