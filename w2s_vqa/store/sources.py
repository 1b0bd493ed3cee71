"""The videos a store is made from: a folder of videos or a CSV/JSONL manifest.

Every input video is a pristine source: prepare writes its record under its `id`
and one record per variant it makes of it (w2s_vqa.store.prepare.variant_id), all
with the source's `source_id`. So a `source_id` groups one pristine video with its
variants; the synthetic pair rule (w2s_vqa.labels.pairs.synthetic_pairs) pairs
the variants of a source with its one pristine video, and refuses a source_id
held by two of them. Two inputs with one source_id are refused here, when the
manifest is read, rather than after the store has been built.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import pandas as pd

from w2s_vqa.store.format import StoreError

# Extensions that name a video without a look inside. A folder's other files are tried too
# (the decoder decides); these only break ties between files that share a name.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp",
                    ".y4m", ".m2ts", ".mts", ".mxf", ".ogv", ".gif", ".vob", ".f4v", ".dv", ".nut", ".ivf", ".m2v")
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
    paths_of = collections.defaultdict(list)
    for source in sources:
        paths_of[source.id].append(source.path)
    duplicates = sorted((i, paths) for i, paths in paths_of.items() if len(paths) > 1)
    if duplicates:
        shown = "; ".join(f"'{i}': {', '.join(paths)}" for i, paths in duplicates[:_MAX_EXAMPLES])
        raise StoreError(f"{inputs}: {len(duplicates)} id(s) name more than one video: {shown}; rename the "
                         "files, or list them in a manifest with an 'id' column")
    return sorted(sources, key=lambda s: s.id)


def _folder_sources(folder: str) -> list[Source]:
    """One Source per regular file under `folder` (hidden ones included), ids as `find_sources` says."""
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if os.path.isfile(os.path.join(root, name)))
    relative = [os.path.relpath(p, folder).replace(os.sep, "/") for p in paths]
    stems = [os.path.splitext(r)[0] for r in relative]
    video_stems = {s for s, r in zip(stems, relative) if r.lower().endswith(VIDEO_EXTENSIONS)}
    ids = [r if s in video_stems and not r.lower().endswith(VIDEO_EXTENSIONS) else s
           for s, r in zip(stems, relative)]
    return [Source(id=i, source_id=i, path=p) for i, p in zip(ids, paths)]


def read_manifest(path: str, *, require_motion: bool = False) -> list[Source]:
    """Sources of a CSV or JSONL manifest, in row order.

    Columns: `path` (required; relative paths are relative to the manifest),
    optional `id` (default: the file name without extension), `source_id`
    (default: the id) and `motion` (an .npy of per-second features [chunks,
    motion_dim], required when `require_motion`). Empty cells count as missing.
    Raises StoreError naming the manifest and its data rows (1-based, a CSV
    header not counted) for an unreadable file, a missing column, an empty
    path, or a source_id shared by two rows (see the module docstring).
    """
    lower = path.lower()
    if not lower.endswith((".csv", ".jsonl")):
        raise StoreError(f"{path}: a manifest must be .csv or .jsonl")
    try:
        if lower.endswith(".csv"):
            # Only empty cells are missing: an id such as "NA" stays an id.
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            table = pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as e:
        raise StoreError(f"{path}: cannot read manifest: {e}") from e
    if "path" not in table.columns:
        raise StoreError(f"{path}: manifest needs a 'path' column (has {list(table.columns)})")
    if require_motion and "motion" not in table.columns:
        raise StoreError(f"{path}: data.motion_features='precomputed' needs a 'motion' column")
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        return p if not p or os.path.isabs(p) else os.path.join(base, p)

    sources = []
    for row_number, row in enumerate(table.fillna("").astype(str).to_dict("records"), start=1):
        if not row["path"]:
            raise StoreError(f"{path}: data row {row_number} (1-based, header not counted) has an empty path")
        video_id = row.get("id") or os.path.splitext(os.path.basename(row["path"]))[0]
        sources.append(Source(id=video_id, source_id=row.get("source_id") or video_id,
                              path=resolve(row["path"]), motion=resolve(row.get("motion", ""))))
    _check_one_video_per_source(path, sources)
    return sources


def _check_one_video_per_source(path: str, sources: list[Source]) -> None:
    """Refuse a source_id held by more than one manifest row; `sources` are in row order."""
    rows_of = collections.defaultdict(list)
    for row_number, source in enumerate(sources, start=1):
        rows_of[source.source_id].append(row_number)
    shared = [(source_id, rows) for source_id, rows in rows_of.items() if len(rows) > 1]
    if not shared:
        return
    shown = "; ".join(f"source_id '{s}' in rows {', '.join(map(str, rows))}" for s, rows in shared[:_MAX_EXAMPLES])
    more = f"; ... and {len(shared) - _MAX_EXAMPLES} more" if len(shared) > _MAX_EXAMPLES else ""
    raise StoreError(
        f"{path}: {len(shared)} source_id(s) name more than one video (data rows, 1-based, header not "
        f"counted): {shown}{more}. A source_id groups one pristine video with the variants prepare makes "
        "of it (a missing source_id defaults to the id); give each row its own")
