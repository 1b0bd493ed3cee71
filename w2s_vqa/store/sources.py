"""The videos a store is made from: a folder of videos or a CSV/JSONL manifest.

Every input video is a pristine source: prepare writes its record under its `id`
and one record per variant it makes of it (w2s_vqa.store.variants.variant_id), all
with the source's `source_id`. So a `source_id` groups one pristine video with its
variants; the synthetic pair rule (w2s_vqa.labels.sampling.synthetic_pairs) pairs
the variants of a source with its one pristine video, and refuses a source_id
held by two of them. Two inputs with one source_id are refused here, when the
manifest is read, rather than after the store has been built.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from w2s_vqa.store.format import StoreError
from w2s_vqa.store.listing import VIDEO_EXTENSIONS, duplicate_ids, folder_files
from w2s_vqa.tables import ProblemReport, read_csv, read_jsonl
from w2s_vqa import workdir as workdir_lib

# A manifest's columns, found in any case ("Path", "ID").
MANIFEST_COLUMNS = ("path", "id", "source_id", "motion")
# Problems named in one error before the rest are only counted.
_MAX_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Source:
    """One input video. `id` names its record; its variants are `variant_id(id, name, level)`.

    `source_id` groups a source with the variants prepare makes of it; it
    defaults to `id`, variants inherit it, and no two sources share one.
    """

    id: str
    source_id: str
    path: str
    motion: str = ""  # .npy of per-second motion features [chunks, motion_dim], or ""


def find_sources(inputs: str, *, require_motion: bool = False) -> list[Source]:
    """Sources from a folder (recursive) or a CSV/JSONL manifest, sorted by id.

    Every file under a folder is a source, whatever its extension, so that each
    is accounted for: what decodes lands in the store, anything else is skipped
    and listed in errors.jsonl with the reason ("not a video: no video stream",
    "cannot open: ..."). Folder ids are paths relative to the folder without
    extension (with "/" between folders), so that they match the names teacher
    score tables use; each folder video is its own source (source_id = id). A file
    that shares its id with a video (VIDEO_EXTENSIONS, any case), such as a
    clip.json beside clip.mp4, keeps its extension in its id. A manifest is read
    by `read_manifest`. Raises StoreError for a missing input, no files, or two
    videos with one id (e.g. a.mp4 and a.MKV in one folder).
    """
    inputs = os.fspath(inputs)
    if os.path.isdir(inputs):
        if require_motion:
            raise StoreError(f"{inputs}: data.motion_features='precomputed' needs a manifest with a 'motion' column")
        sources = _folder_sources(inputs)
    elif os.path.isfile(inputs):
        sources = read_manifest(inputs, require_motion=require_motion)
    else:
        raise StoreError(f"{inputs}: no such folder or manifest")
    if not sources:
        raise StoreError(f"{inputs}: no files found")
    duplicates = duplicate_ids((source.id, source.path) for source in sources)
    if duplicates:
        raise StoreError(f"{inputs}: {duplicates}; rename the files, or list them in a manifest with an 'id' column")
    return sorted(sources, key=lambda s: s.id)


def _folder_sources(folder: str) -> list[Source]:
    """One Source per regular file under `folder` (hidden ones included), ids as `find_sources` says
    (store.listing.folder_files, which TorchScorer lists folders with too)."""
    return [Source(id=i, source_id=i, path=p) for i, p in folder_files(folder)]


def read_manifest(path: str, *, require_motion: bool = False) -> list[Source]:
    """Sources of a CSV or JSONL manifest, in row order.

    Columns: `path` (required; relative paths are relative to the manifest),
    optional `id` (default: the file name without extension), `source_id`
    (default: the id) and `motion` (an .npy of per-second features [chunks,
    motion_dim], required when `require_motion`; its numbers are checked when
    prepare reads it, w2s_vqa.store.prepare). Every field is text, none numeric: a
    JSON number is taken as its text (7 -> "7"). Empty cells and JSON nulls count as
    missing. Text is UTF-8 with or without a byte-order mark; other encodings and CSV
    separated by ';' or tabs are refused naming what was found (w2s_vqa.tables).

    Raises StoreError for an unreadable file or a missing column, and otherwise one
    StoreError listing every problem of the rows (data rows counted from 1, the
    header not counted): an empty path, a value that is not text (a JSON list or
    object), an id held by two rows, a source_id held by two rows (see the module
    docstring). The manifest is refused whole: it is the list of what the store is to
    hold, and a store built from part of it would silently differ from it.
    """
    lower = path.lower()
    if not lower.endswith((".csv", ".jsonl")):
        raise StoreError(not_a_manifest(path))
    rows = None
    try:
        if lower.endswith(".csv"):
            # Only empty cells are missing: an id such as "NA" stays an id.
            table = read_csv(path, what="manifest", error=StoreError, columns=MANIFEST_COLUMNS)
        else:
            table, rows = read_jsonl(path, what="manifest", error=StoreError, columns=MANIFEST_COLUMNS)
    except OSError as e:
        raise StoreError(f"{path}: cannot read manifest: {e}") from e
    if "path" not in table.columns:
        raise StoreError(f"{path}: manifest needs a 'path' column (has {list(table.columns)})")
    if require_motion and "motion" not in table.columns:
        raise StoreError(f"{path}: data.motion_features='precomputed' needs a 'motion' column")
    base = os.path.dirname(workdir_lib.absolute(path))
    columns = [c for c in ("path", "id", "source_id", "motion") if c in table.columns]
    rows = list(range(1, len(table) + 1)) if rows is None else rows
    problems = ProblemReport(path, "manifest", max_examples=_MAX_EXAMPLES)

    def resolve(p: str) -> str:
        return p if not p or os.path.isabs(p) else os.path.join(base, p)

    not_text, no_path, sources = [], [], []
    for row_number, record in zip(rows, table[columns].to_dict("records")):
        fields = {}
        for column in columns:
            value = record[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                value = ""
            elif isinstance(value, (list, dict)):
                not_text.append(f"row {row_number}, column {column}: {value!r}")
                value = ""
            fields[column] = str(value).strip() if not isinstance(value, str) else value
        if not fields["path"]:
            no_path.append(f"row {row_number}")
        video_id = fields.get("id") or os.path.splitext(os.path.basename(fields["path"]))[0]
        sources.append(Source(id=video_id, source_id=fields.get("source_id") or video_id,
                              path=resolve(fields["path"]), motion=resolve(fields.get("motion", ""))))
    problems.add("value that is not text", len(not_text), not_text)
    problems.add("empty path", len(no_path), no_path)
    _shared(problems, "id", [s.id for s in sources], rows, [s.path for s in sources],
            "An id names one video's record: give each row its own in an 'id' column (a missing id is the file "
            "name without extension).")
    # Rows whose source_id is one id they share are the id clash above, not reported twice.
    _shared(problems, "source_id", [s.source_id for s in sources], rows, None,
            "A source_id groups one pristine video with the variants prepare makes of it (a missing source_id "
            "is the id): give each row its own.", unless_all_of=[s.id for s in sources])
    problems.raise_if_any(StoreError)
    return sources


# Still-image files, named as such when given where a manifest is expected.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic")
_HOW_TO_GIVE = ("give a folder that holds the video(s) (one of its own for a single video) or a manifest listing "
                "them: a .csv with a 'path' column, or .jsonl")


def not_a_manifest(path: str) -> str:
    """The one-line refusal of a file given where a folder or a manifest is expected, saying
    what the file seems to be (by its extension) and how to give inputs instead."""
    extension = os.path.splitext(path)[1].lower()
    if extension in VIDEO_EXTENSIONS:
        what = "a single video, not a folder or a manifest"
    elif extension in IMAGE_EXTENSIONS:
        what = "a single image, not a folder or a manifest"
    elif extension in (".xlsx", ".xls", ".ods"):
        what = "a spreadsheet workbook, not a manifest (save it as 'CSV UTF-8')"
    else:
        what = f"not a manifest (a manifest is .csv or .jsonl; this file is {extension or 'without extension'})"
    return f"{path}: {what}; {_HOW_TO_GIVE}"


def _shared(problems: ProblemReport, column: str, values: list[str], rows: list[int],
            paths: list[str] | None, fix: str, unless_all_of: list[str] | None = None) -> None:
    """Add to `problems` each value of `column` held by more than one row, with its rows
    (and paths), except values whose rows all hold one value of `unless_all_of`."""
    rows_of = collections.defaultdict(list)
    for row_number, value, i in zip(rows, values, range(len(values))):
        if value:
            rows_of[value].append((row_number, i))
    shared = [(value, held) for value, held in rows_of.items() if len(held) > 1
              and (unless_all_of is None or len({unless_all_of[i] for _, i in held}) > 1)]

    def where(held):
        if paths is None:
            return ", ".join(str(r) for r, _ in held)
        return ", ".join(f"{r} ({paths[i]})" for r, i in held)

    problems.add(f"{column} held by more than one row", len(shared),
                 (f"{column} '{value}' in rows {where(held)}" for value, held in shared), fix)
