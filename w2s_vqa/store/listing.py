"""The videos of a folder and their ids, as every verb lists a folder of videos.

Standard library alone: TorchScorer (convert.torch_scorer, the PyTorch-only install)
lists a folder by this rule without JAX, pandas or etils, and store.sources builds its
Sources from it, so that a folder gives the same ids on both sides.
"""

from __future__ import annotations

import os
from typing import Iterable

# Extensions that name a video without a look inside. A folder's other files are tried too
# (the decoder decides); these only break ties between files that share a name.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp",
                    ".y4m", ".m2ts", ".mts", ".mxf", ".ogv", ".gif", ".vob", ".f4v", ".dv", ".nut", ".ivf", ".m2v")
# Duplicate ids named in one error before the rest are only counted.
MAX_SHOWN = 5


def folder_files(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(id, path) of every regular file under `folder` (recursive, hidden ones included), by path.

    Ids are paths relative to the folder without extension, with "/" between folders
    (sub/a for sub/a.mp4), so that they match the names teacher score tables use. A file
    that shares its id with a video (VIDEO_EXTENSIONS, any case), such as a clip.json beside
    clip.mp4, keeps its extension in its id. Two videos may still share an id (a.mp4 and
    a.MKV): `duplicate_ids` finds them.
    """
    folder = os.fspath(folder)
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if os.path.isfile(os.path.join(root, name)))
    relative = [os.path.relpath(p, folder).replace(os.sep, "/") for p in paths]
    stems = [os.path.splitext(r)[0] for r in relative]
    video_stems = {s for s, r in zip(stems, relative) if r.lower().endswith(VIDEO_EXTENSIONS)}
    ids = [r if s in video_stems and not r.lower().endswith(VIDEO_EXTENSIONS) else s
           for s, r in zip(stems, relative)]
    return list(zip(ids, paths))


def duplicate_ids(pairs: Iterable[tuple[str, str]]) -> str:
    """"" when every id of the (id, path) pairs names one file; otherwise the text every
    lister's one-line error ends with: how many ids name more than one video, and the
    first MAX_SHOWN of them with their paths."""
    paths_of: dict[str, list[str]] = {}
    for video_id, path in pairs:
        paths_of.setdefault(video_id, []).append(os.fspath(path))
    duplicates = sorted((i, paths) for i, paths in paths_of.items() if len(paths) > 1)
    if not duplicates:
        return ""
    shown = "; ".join(f"'{i}': {', '.join(paths)}" for i, paths in duplicates[:MAX_SHOWN])
    return f"{len(duplicates)} id(s) name more than one video: {shown}"
