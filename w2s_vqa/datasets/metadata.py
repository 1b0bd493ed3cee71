"""The ten evaluation sets' own metadata files, read into one table; the paper's lists.

No TensorFlow Datasets here: `w2s_vqa.datasets.builders` turns these tables into TFDS
builders, and `w2s-vqa eval` reads them without building anything when only teacher
tables are evaluated.

Each set's reader takes the set's root folder (the manual download, see `set_root`)
and returns an `OfficialTable`: one row per video of the official release, columns

    key       the video's name as the paper's lists name it (`file` of lists/NAME.csv):
              LSVQ's `name` + ".mp4", KoNViD-1k's `<flickr_id>.mp4`, ...
    video     where the reader expects the video, relative to the root ("/" separated)
    mos       float64, the set's own MOS on its own scale (KoNViD-1k and YouTube-UGC 1-5,
              LSVQ 0-100, ...); the lists' `mos` may be rescaled (KoNViD-1k's x 20)
    mos_std   float64, the per-video standard deviation of the ratings where the file
              gives one, else NaN
    row       the video's place in the metadata file, for messages (data rows from 1,
              or the column of a transposed table, as `tables.ROW_CONVENTION` says)

Which files each set ships and how sure we are of the format: `SETS` (SetSpec.layout,
SetSpec.source, SetSpec.confidence). Every problem of a metadata file (missing file,
missing column, a MOS that is not a number, a video named twice) is one MetadataError
naming the file and every bad row at once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from importlib import resources
from typing import Callable

import numpy as np
import pandas as pd

from w2s_vqa.tables import ProblemReport, read_csv

# The lists shipped in the package: the paper's exact subsets (lists/README.md).
LISTS_PACKAGE = "w2s_vqa.datasets"
LISTS_DIR = "lists"
COLUMNS = ("key", "video", "mos", "mos_std", "row")
# Videos named in one "missing" error before the rest are only counted.
MAX_NAMED = 20


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


# ----------------------------------------------------------------------------- shared helpers
def _norm(name: str) -> str:
    """A column name compared loosely: lower case, letters and digits only ("MOS full" -> "mosfull")."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def _column(table: pd.DataFrame, names: tuple[str, ...], *, path: str, set_name: str,
            required: bool = True) -> str | None:
    """The first column of `table` whose loose name is one of `names`; MetadataError naming the
    file, the columns wanted and the columns it has when a required one is absent."""
    by_norm = {_norm(c): c for c in table.columns}
    for name in names:
        if _norm(name) in by_norm:
            return by_norm[_norm(name)]
    if required:
        raise MetadataError(f"{set_name}: {path}: no column {' or '.join(repr(n) for n in names)}; "
                            f"its columns are {[str(c) for c in table.columns]}")
    return None


def _numbers(values, *, path: str, set_name: str, column: str, rows, report: ProblemReport,
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


def _finish(set_name: str, path: str, keys, videos, mos, mos_std, rows, report: ProblemReport) -> OfficialTable:
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


def _report(set_name: str, path: str) -> ProblemReport:
    return ProblemReport(f"{set_name}: {path}", f"{set_name} metadata file")


def _require_file(set_name: str, root: str, candidates: tuple[str, ...], what: str) -> str:
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


def _read_table(set_name: str, path: str, sheet: str | None = None) -> pd.DataFrame:
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
        chosen = next((n for n in names if sheet and _norm(n) == _norm(sheet)), names[0])
        table = pd.read_excel(workbook, sheet_name=chosen, dtype=str)
        table.columns = [str(c) for c in table.columns]
        return table.mask(table.apply(lambda c: c.astype(str).str.strip() == ""))
    return read_csv(path, what=f"{set_name} metadata file", error=MetadataError)


def _with_extension(name: str, extension: str = ".mp4") -> str:
    return name if os.path.splitext(name)[1] else name + extension


# ----------------------------------------------------------------------------- the ten readers
def _mos_and_std(table: pd.DataFrame, *, path: str, set_name: str, mos_names, std_names=()):
    """(rows, report, mos, std) of a metadata table: rows numbered from 1, the ProblemReport
    of `path`, the MOS column (the first of `mos_names` present; required) and the standard
    deviation column (the first of `std_names` present; NaN where absent or empty), float64,
    every cell that is not a number added to the report with its row."""
    mos_column = _column(table, tuple(mos_names), path=path, set_name=set_name)
    std_column = (_column(table, tuple(std_names), path=path, set_name=set_name, required=False)
                  if std_names else None)
    rows = list(range(1, len(table) + 1))
    report = _report(set_name, path)
    mos = _numbers(table[mos_column], path=path, set_name=set_name, column=mos_column, rows=rows, report=report)
    std = (np.full(len(table), np.nan) if std_column is None else
           _numbers(table[std_column], path=path, set_name=set_name, column=std_column, rows=rows, report=report,
                    allow_empty=True))
    return rows, report, mos, std


def read_lsvq(root: str, *, set_name: str, file_name: str) -> OfficialTable:
    """LSVQ: `file_name` (LSVQ_whole_test.csv or LSVQ_whole_test_1080p.csv) with columns
    `name` (e.g. "yfcc-batch1/747", no extension) and `mos` (0-100); the video is
    `<name>.mp4` under the root. The file gives no per-video standard deviation."""
    path = _require_file(set_name, root, (file_name, f"*/{file_name}"), f"{file_name}")
    table = _read_table(set_name, path)
    name = _column(table, ("name",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("mos",))
    names = table[name].fillna("").astype(str).str.strip()
    keys = [_with_extension(n) for n in names]
    return _finish(set_name, path, keys, keys, mos, std, rows, report)


def read_konvid_1k(root: str, *, set_name: str = "konvid_1k") -> OfficialTable:
    """KoNViD-1k: KoNViD_1k_metadata/KoNViD_1k_attributes.csv with `flickr_id`, `MOS` and
    `SD` (1-5 scale; SD may be absent); the video is KoNViD_1k_videos/<flickr_id>.mp4, the
    current release's naming. Where that file is absent, an older release's name is
    looked for in the same folder: the sheet's `file_name` where that column exists
    (<flickr_id>_original_centercrop_960x540_8s.mp4), else the one file named
    <flickr_id>_*.mp4 (none or several: the current name is kept, and `select` names it
    as missing)."""
    path = _require_file(set_name, root, ("KoNViD_1k_metadata/KoNViD_1k_attributes.csv",
                                          "KoNViD_1k_attributes.csv", "*/KoNViD_1k_attributes.csv"),
                         "KoNViD_1k_attributes.csv")
    table = _read_table(set_name, path)
    flickr = _column(table, ("flickr_id",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("MOS",),
                                          std_names=("SD", "std"))
    file_column = _column(table, ("file_name",), path=path, set_name=set_name, required=False)
    ids = table[flickr].fillna("").astype(str).str.strip()
    keys = [f"{i}.mp4" for i in ids]
    folder = os.path.relpath(os.path.dirname(os.path.dirname(path)), root) if os.path.basename(
        os.path.dirname(path)) == "KoNViD_1k_metadata" else os.path.relpath(os.path.dirname(path), root)
    base = "" if folder == "." else folder.replace(os.sep, "/") + "/"
    folder_path = os.path.join(root, *f"{base}KoNViD_1k_videos".split("/"))
    present = set(os.listdir(folder_path)) if os.path.isdir(folder_path) else set()
    videos = []
    for i, (flickr_id, key) in enumerate(zip(ids, keys)):
        name = key
        if key not in present:
            old = table[file_column].iloc[i] if file_column is not None else None
            old = old.strip() if isinstance(old, str) else ""
            # The sheet's own name first; without it (or its file), the one <flickr_id>_*.mp4 (ids are
            # digits, so "123_" cannot also prefix another id's files).
            matches = sorted(f for f in present if f.startswith(f"{flickr_id}_") and f.lower().endswith(".mp4"))
            if old and old in present:
                name = old
            elif flickr_id and len(matches) == 1:
                name = matches[0]
        videos.append(f"{base}KoNViD_1k_videos/{name}")
    return _finish(set_name, path, keys, videos, mos, std, rows, report)


LIVE_VQC_FOLDER = "LIVE Video Quality Challenge (VQC) Database"


def read_live_vqc(root: str, *, set_name: str = "live_vqc") -> OfficialTable:
    """LIVE-VQC: data.mat (MATLAB 5 format, scipy.io.loadmat) with `video_list`, a 585 x 1
    cell array of file names ("A001.mp4"), and `mos`, 585 x 1 (0-100); the video is
    Video/<name>. The file gives no per-video standard deviation."""
    import scipy.io

    path = _require_file(set_name, root, ("data.mat", f"{LIVE_VQC_FOLDER}/data.mat", "*/data.mat"), "data.mat")
    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError as e:  # MATLAB 7.3 files are HDF5
        raise MetadataError(f"{set_name}: {path}: a MATLAB 7.3 (HDF5) file; the release's data.mat is "
                            "MATLAB 5 format, which scipy reads") from e
    except Exception as e:  # not a .mat file at all
        raise MetadataError(f"{set_name}: {path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    missing = [k for k in ("video_list", "mos") if k not in data]
    if missing:
        raise MetadataError(f"{set_name}: {path}: no variable {' or '.join(map(repr, missing))}; it holds "
                            f"{sorted(k for k in data if not k.startswith('__'))}")
    names = []
    for cell in np.asarray(data["video_list"], dtype=object).ravel():
        value = cell
        while isinstance(value, np.ndarray) and value.size:  # a cell holds a 1 x 1 char array
            value = value.ravel()[0]
        names.append("" if isinstance(value, np.ndarray) else str(value).strip())
    mos_cells = np.asarray(data["mos"]).ravel()
    if len(mos_cells) != len(names):
        raise MetadataError(f"{set_name}: {path}: 'video_list' has {len(names)} entries and 'mos' {len(mos_cells)}")
    rows = list(range(1, len(names) + 1))
    report = _report(set_name, path)
    mos = _numbers([m.item() if isinstance(m, np.generic) else m for m in mos_cells], path=path,
                   set_name=set_name, column="mos", rows=rows, report=report)
    base = os.path.relpath(os.path.dirname(path), root)
    base = "" if base == "." else base.replace(os.sep, "/") + "/"
    return _finish(set_name, path, names, [f"{base}Video/{n}" for n in names], mos, np.full(len(names), np.nan),
                   rows, report)


YOUTUBE_UGC_SUFFIX = "_crf_10_ss_00_t_20.0.mp4"


def read_youtube_ugc(root: str, *, set_name: str = "youtube_ugc") -> OfficialTable:
    """YouTube-UGC: original_videos_MOS_for_YouTube_UGC_dataset.xlsx, sheet "MOS", columns
    `vid` (e.g. "Animation_1080P-05f8") and `MOS full` (1-5), with a standard deviation
    where a column "SD full" (or "std full") exists. The key is the paper's name,
    <vid>_crf_10_ss_00_t_20.0.mp4 (the H.264 transcodes the authors evaluated); the video
    is that file anywhere under the root, else the original <vid>.mkv (or .mp4)."""
    path = _require_file(set_name, root, ("original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
                                          "*/original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
                                          "*MOS*YouTube_UGC*.xlsx"),
                         "original_videos_MOS_for_YouTube_UGC_dataset.xlsx")
    table = _read_table(set_name, path, sheet="MOS")
    vid = _column(table, ("vid",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("MOS full", "MOS"),
                                          std_names=("SD full", "std full"))
    vids = table[vid].fillna("").astype(str).str.strip().tolist()
    files = _files_by_name(root)
    keys, videos = [], []
    for v in vids:
        key = v + YOUTUBE_UGC_SUFFIX if v else ""
        keys.append(key)
        videos.append(files.get(key) or files.get(v + ".mkv") or files.get(v + ".mp4") or key)
    return _finish(set_name, path, keys, videos, mos, std, rows, report)


def read_live_yt_hfr(root: str, *, set_name: str = "live_yt_hfr") -> OfficialTable:
    """LIVE-YT-HFR: subject_MOS.csv (github.com/pavancm/LIVE-HFR, subjective_scores/), a
    transposed table: a row "File Names" with one video per column ("1Runner_crf_0_24fps"),
    a row "MOS" and a row "std". The key is <name>.mp4 and so is the video, anywhere under
    the root: the release's videos are raw YUV, which must be converted to a container
    PyAV reads (MANUAL_DOWNLOAD_INSTRUCTIONS gives the ffmpeg line)."""
    path = _require_file(set_name, root, ("subject_MOS.csv", "subjective_scores/subject_MOS.csv", "*/subject_MOS.csv"),
                         "subject_MOS.csv")
    raw = read_csv(path, what=f"{set_name} metadata file", error=MetadataError)
    # Transposed: the header is "File Names,<video>,...", each further row "<name>,<value>,...".
    first = raw.columns[0]
    labels = {_norm(label): i for i, label in enumerate(raw[first].fillna("").astype(str))}
    if _norm(first) not in ("filenames", "filename") or "mos" not in labels:
        raise MetadataError(f"{set_name}: {path}: expected a transposed table whose first column reads "
                            f"'File Names', then 'MOS' (and 'std'); found {first!r} and {list(raw[first])}")
    names = [str(c).strip() for c in raw.columns[1:]]
    columns = [f"column {i + 2}" for i in range(len(names))]  # the spreadsheet's column, counted from 1
    report = _report(set_name, path)
    mos = _numbers(raw.iloc[labels["mos"], 1:].tolist(), path=path, set_name=set_name, column="MOS",
                   rows=columns, report=report)
    std_row = labels.get("std", labels.get("sd"))
    std = (np.full(len(names), np.nan) if std_row is None else
           _numbers(raw.iloc[std_row, 1:].tolist(), path=path, set_name=set_name, column="std", rows=columns,
                    report=report, allow_empty=True))
    files = _files_by_name(root)
    keys = [_with_extension(n) if n and not n.startswith("Unnamed") else "" for n in names]
    return _finish(set_name, path, keys, [files.get(k, k) for k in keys], mos, std, columns, report)


def read_kvq(root: str, *, set_name: str = "kvq") -> OfficialTable:
    """KVQ (NTIRE 2024 short-form UGC challenge): train_data.csv with `filename`
    ("train/0001.mp4") and `score` (1-5); the key is the file name without its folder, as
    the paper's list names it; the video is `filename` under the root. No per-video
    standard deviation."""
    path = _require_file(set_name, root, ("train_data.csv", "*/train_data.csv"), "train_data.csv")
    table = _read_table(set_name, path)
    file_column = _column(table, ("filename", "file_names", "name"), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("score", "mos"))
    base = os.path.relpath(os.path.dirname(path), root)
    base = "" if base == "." else base.replace(os.sep, "/") + "/"
    names = table[file_column].fillna("").astype(str).str.strip().tolist()
    return _finish(set_name, path, [n.rsplit("/", 1)[-1] for n in names], [base + n for n in names], mos, std,
                   rows, report)


# Column names the generic reader accepts, compared loosely (_norm).
_NAME_COLUMNS = ("file", "filename", "file_name", "video", "video_name", "videoname", "name", "vid")
_MOS_COLUMNS = ("MOS", "mos", "score")
_STD_COLUMNS = ("std", "SD", "MOS_std", "stdev", "std_dev")


def read_generic(root: str, *, set_name: str, patterns: tuple[str, ...]) -> OfficialTable:
    """Sets whose score file format we could not confirm (LIVE-YT-Gaming, CGVDS,
    Waterloo-IVC-4K): the first file matching `patterns` under the root (a CSV or an
    Excel workbook), a video-name column (_NAME_COLUMNS), a MOS column (_MOS_COLUMNS) and
    optionally a standard deviation (_STD_COLUMNS). Names without an extension get
    ".mp4"; the video is that name anywhere under the root."""
    path = _require_file(set_name, root, patterns, "MOS file")
    table = _read_table(set_name, path)
    name = _column(table, _NAME_COLUMNS, path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=_MOS_COLUMNS,
                                          std_names=_STD_COLUMNS)
    names = table[name].fillna("").astype(str).str.strip().tolist()
    keys = [_with_extension(n.replace("\\", "/").rsplit("/", 1)[-1]) if n else "" for n in names]
    files = _files_by_name(root)
    return _finish(set_name, path, keys, [files.get(k, k) for k in keys], mos, std, rows, report)


def _files_by_name(root: str) -> dict[str, str]:
    """{file name: path relative to root ("/" separated)} of every file under root; a name
    found twice keeps the path that sorts first."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            found.setdefault(name, os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return found


# ----------------------------------------------------------------------------- the sets
@dataclasses.dataclass(frozen=True)
class SetSpec:
    """One evaluation set: its name (metrics.SET_GROUPS'), title, where it is obtained
    (`source`), the layout expected under its manual folder (`layout`), its metadata
    reader, and how sure we are of that layout: "confirmed" (checked against the file
    or the release's own code), "documented" (as the release and widespread loaders
    describe it) or "best guess" (no authoritative description found)."""

    name: str
    title: str
    source: str
    layout: str
    read: Callable[[str], OfficialTable]
    confidence: str
    scale: str


_GENERIC_HELP = ("a MOS file (CSV or .xlsx) whose name contains 'MOS' (or 'score'), with a video-name column "
                 "(File, filename, video or name) and a MOS column (MOS or score), optionally std/SD; the videos "
                 "anywhere under the folder")

SETS: dict[str, SetSpec] = {s.name: s for s in [
    SetSpec("lsvq_test", "LSVQ test", "github.com/baidut/PatchVQ (LSVQ download link; an unofficial mirror: "
            "huggingface.co/datasets/teowu/LSVQ-videos)",
            "LSVQ_whole_test.csv (columns name, mos, ...); <name>.mp4, e.g. yfcc-batch1/747.mp4",
            lambda root: read_lsvq(root, set_name="lsvq_test", file_name="LSVQ_whole_test.csv"), "documented",
            "0-100"),
    SetSpec("lsvq_1080p", "LSVQ test-1080p", "as lsvq_test (the same download)",
            "LSVQ_whole_test_1080p.csv (columns name, mos, ...); <name>.mp4",
            lambda root: read_lsvq(root, set_name="lsvq_1080p", file_name="LSVQ_whole_test_1080p.csv"),
            "documented", "0-100"),
    SetSpec("konvid_1k", "KoNViD-1k", "database.mmsp-kn.de/konvid-1k-database.html (KoNViD_1k_videos.zip, "
            "KoNViD_1k_metadata.zip)",
            "KoNViD_1k_metadata/KoNViD_1k_attributes.csv (flickr_id, MOS, SD, ...); KoNViD_1k_videos/<flickr_id>.mp4 "
            "(or an older release's <flickr_id>_original_centercrop_960x540_8s.mp4)",
            read_konvid_1k, "documented", "1-5"),
    SetSpec("live_vqc", "LIVE-VQC", "live.ece.utexas.edu/research/LIVEVQC (request form)",
            "data.mat (video_list, mos); Video/<name>, e.g. Video/A001.mp4 (the folder 'LIVE Video Quality "
            "Challenge (VQC) Database' itself or its parent)", read_live_vqc, "documented", "0-100"),
    SetSpec("youtube_ugc", "YouTube-UGC", "media.withyoutube.com (gs://ugc-dataset: original_videos, the MOS "
            "workbook)",
            "original_videos_MOS_for_YouTube_UGC_dataset.xlsx (sheet MOS: vid, MOS full); "
            "<vid>_crf_10_ss_00_t_20.0.mp4 (the paper's H.264 transcodes) or <vid>.mkv anywhere below",
            read_youtube_ugc, "best guess (the workbook's sheet and column names)", "1-5"),
    SetSpec("live_yt_gaming", "LIVE-YT-Gaming", "live.ece.utexas.edu/research/LIVE-YT-Gaming (request form)",
            _GENERIC_HELP + "; e.g. LIVE-YT-Gaming_MOS.csv with File, MOS; ARKSuvivalEvolved-001.mp4",
            lambda root: read_generic(root, set_name="live_yt_gaming",
                                      patterns=("*mos*.csv", "*mos*.xlsx", "*score*.csv", "*score*.xlsx")),
            "best guess (the MOS file's name and columns)", "0-100"),
    SetSpec("cgvds", "CGVDS", "github.com/stootaghaj/CGVDS (Cloud Gaming Video Dataset)",
            _GENERIC_HELP + "; e.g. CGVDS_MOS.csv with File, MOS; Overwatch_30_30fps_640x480_30_300_h264_nvenc.mp4",
            lambda root: read_generic(root, set_name="cgvds",
                                      patterns=("*mos*.csv", "*mos*.xlsx", "*score*.csv", "*score*.xlsx")),
            "best guess (the MOS file's name and columns)", "1-5"),
    SetSpec("live_yt_hfr", "LIVE-YT-HFR", "live.ece.utexas.edu/research/LIVE_YT_HFR (videos); "
            "github.com/pavancm/LIVE-HFR (subjective_scores/subject_MOS.csv)",
            "subject_MOS.csv (transposed: File Names / MOS / std rows); <name>.mp4 anywhere below (the release's "
            "YUV files converted)", read_live_yt_hfr, "confirmed (the score file); the mp4 names are the paper's",
            "0-100"),
    SetSpec("waterloo_ivc_4k", "Waterloo-IVC-4K", "ece.uwaterloo.ca/~z777li/4kvqa (Waterloo 4K Video Quality "
            "Database)", _GENERIC_HELP + "; e.g. MOS.csv with File, MOS; HEVC_01_960x540_1.mp4",
            lambda root: read_generic(root, set_name="waterloo_ivc_4k",
                                      patterns=("*mos*.csv", "*mos*.xlsx", "*score*.csv", "*score*.xlsx")),
            "best guess (the MOS file's name and columns)", "0-100"),
    SetSpec("kvq", "KVQ", "github.com/lixinustc/KVQ-Challenge-CVPR-NTIRE2024 (Google Drive link)",
            "train_data.csv (filename, score); train/<NNNN>.mp4", read_kvq, "documented", "1-5"),
]}


def set_root(manual_dir: str, name: str) -> str:
    """The folder holding set `name`'s download: manual_dir/<name> when it is a folder (one
    manual_dir for several sets, as `w2s-vqa eval --manual-dir` takes), else manual_dir."""
    candidate = os.path.join(manual_dir, name)
    return candidate if os.path.isdir(candidate) else manual_dir


def paper_list(name: str) -> pd.DataFrame:
    """The paper's list of set `name` shipped in the package (lists/NAME.csv): columns file
    (str), mos (float64, the authors' scale), row (data rows from 1)."""
    text = resources.files(LISTS_PACKAGE).joinpath(LISTS_DIR, f"{name}.csv").read_text()
    import io

    table = pd.read_csv(io.StringIO(text), dtype={"file": str})
    return pd.DataFrame({"file": table["file"].astype(str), "mos": table["mos"].astype(np.float64),
                         "row": np.arange(1, len(table) + 1)})


def selection_digest(chosen: pd.DataFrame) -> str:
    """SHA-256 (hex) of what a build of `chosen` (a `select` result) is made from: per
    video, in order, its key, its path under the manual folder (`video`, so that moving
    the whole download keeps the digest), mos, mos_std, paper_mos and the file's size in
    bytes (a replaced or re-encoded video). The builders store it with a build
    (DatasetInfo.metadata "source_digest"); `builders.build` rebuilds when it differs."""
    import hashlib
    import json

    rows = [[str(k), str(v), float(m), float(s), float(p), os.path.getsize(path)]
            for k, v, m, s, p, path in zip(chosen["key"], chosen["video"], chosen["mos"], chosen["mos_std"],
                                           chosen["paper_mos"], chosen["path"])]
    return hashlib.sha256(json.dumps(rows, allow_nan=True).encode()).hexdigest()


def select(name: str, root: str, subset: str) -> pd.DataFrame:
    """The videos of set `name` to build or evaluate: the official table's rows (COLUMNS) in
    the paper's list order with its `paper_mos` (subset "paper"), or every row of the
    official table with paper_mos NaN (subset "full"), plus `path` (absolute).

    Raises MetadataError naming the set and file for an unreadable metadata file and, for
    "paper", for list videos the metadata file lacks (all of them, first MAX_NAMED named);
    MissingVideosError naming the set, the folder and every selected video the download
    lacks, in one message. Nothing is decoded.
    """
    if name not in SETS:
        raise MetadataError(f"unknown evaluation set '{name}'; the sets: {', '.join(SETS)}")
    if subset not in ("paper", "full"):
        raise MetadataError(f"subset must be 'paper' or 'full', not {subset!r}")
    if not os.path.isdir(root):
        raise MetadataError(f"{name}: no such folder {root} (the manual download; "
                            f"expected: {SETS[name].layout})")
    official = SETS[name].read(root).table
    if subset == "paper":
        listed = paper_list(name)
        by_key = official.set_index("key")
        absent = [f for f in listed["file"] if f not in by_key.index]
        if absent:
            raise MetadataError(
                f"{name}: {len(absent)} of the paper's {len(listed)} listed videos are not in the metadata file of "
                f"{root}: {', '.join(map(repr, absent[:MAX_NAMED]))}" + (f" and {len(absent) - MAX_NAMED} more"
                                                                        if len(absent) > MAX_NAMED else "")
                + " (another release of the set? `w2s-vqa eval --subset full` evaluates every video the metadata "
                  "names; from Python, the builder configs 'tiny_full' / 'paper_full', or "
                  "datasets.config_for(settings, subset='full'))")
        chosen = by_key.loc[listed["file"].tolist()].reset_index()
        chosen["paper_mos"] = listed["mos"].to_numpy(np.float64)
    else:
        chosen = official.copy()
        chosen["paper_mos"] = np.nan
    chosen["path"] = [os.path.join(os.path.abspath(root), *v.split("/")) for v in chosen["video"]]
    missing = [k for k, p in zip(chosen["key"], chosen["path"]) if not os.path.isfile(p)]
    if missing:
        where = {k: v for k, v in zip(chosen["key"], chosen["video"])}
        named = ", ".join(f"'{where[k]}'" for k in missing[:MAX_NAMED])
        more = f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
        raise MissingVideosError(f"{name}: {len(missing)} of the {len(chosen)} {subset} videos are not in the manual "
                                 f"download {root}: {named}{more} (expected layout: {SETS[name].layout})", missing)
    return chosen.reset_index(drop=True)
