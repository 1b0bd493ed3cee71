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
import os
from importlib import resources
from typing import Callable

import numpy as np
import pandas as pd

from w2s_vqa.datasets.official_table import (MetadataError, MissingVideosError, OfficialTable, finish_table,
                                             find_column, loose_name, parse_numbers, problem_report, read_table,
                                             require_file, with_extension)
from w2s_vqa.tables import read_csv
from w2s_vqa import workdir as workdir_lib

# The lists shipped in the package: the paper's exact subsets (lists/README.md).
LISTS_PACKAGE = "w2s_vqa.datasets"
LISTS_DIR = "lists"
# Videos named in one "missing" error before the rest are only counted.
MAX_NAMED = 20


# ----------------------------------------------------------------------------- the ten readers
def _mos_and_std(table: pd.DataFrame, *, path: str, set_name: str, mos_names, std_names=()):
    """(rows, report, mos, std) of a metadata table: rows numbered from 1, the ProblemReport
    of `path`, the MOS column (the first of `mos_names` present; required) and the standard
    deviation column (the first of `std_names` present; NaN where absent or empty), float64,
    every cell that is not a number added to the report with its row."""
    mos_column = find_column(table, tuple(mos_names), path=path, set_name=set_name)
    std_column = (find_column(table, tuple(std_names), path=path, set_name=set_name, required=False)
                  if std_names else None)
    rows = list(range(1, len(table) + 1))
    report = problem_report(set_name, path)
    mos = parse_numbers(table[mos_column], path=path, set_name=set_name, column=mos_column, rows=rows, report=report)
    std = (np.full(len(table), np.nan) if std_column is None else
           parse_numbers(table[std_column], path=path, set_name=set_name, column=std_column, rows=rows, report=report,
                    allow_empty=True))
    return rows, report, mos, std


def read_lsvq(root: str, *, set_name: str, file_name: str) -> OfficialTable:
    """LSVQ: `file_name` (LSVQ_whole_test.csv or LSVQ_whole_test_1080p.csv) with columns
    `name` (e.g. "yfcc-batch1/747", no extension) and `mos` (0-100); the video is
    `<name>.mp4` under the root. The file gives no per-video standard deviation."""
    path = require_file(set_name, root, (file_name, f"*/{file_name}"), f"{file_name}")
    table = read_table(set_name, path)
    name = find_column(table, ("name",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("mos",))
    names = table[name].fillna("").astype(str).str.strip()
    keys = [with_extension(n) for n in names]
    return finish_table(set_name, path, keys, keys, mos, std, rows, report)


def read_konvid_1k(root: str, *, set_name: str = "konvid_1k") -> OfficialTable:
    """KoNViD-1k: KoNViD_1k_metadata/KoNViD_1k_attributes.csv with `flickr_id`, `MOS` and
    `SD` (1-5 scale; SD may be absent); the video is KoNViD_1k_videos/<flickr_id>.mp4, the
    current release's naming. Where that file is absent, an older release's name is
    looked for in the same folder: the sheet's `file_name` where that column exists
    (<flickr_id>_original_centercrop_960x540_8s.mp4), else the one file named
    <flickr_id>_*.mp4 (none or several: the current name is kept, and `select` names it
    as missing)."""
    path = require_file(set_name, root, ("KoNViD_1k_metadata/KoNViD_1k_attributes.csv",
                                          "KoNViD_1k_attributes.csv", "*/KoNViD_1k_attributes.csv"),
                         "KoNViD_1k_attributes.csv")
    table = read_table(set_name, path)
    flickr = find_column(table, ("flickr_id",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("MOS",),
                                          std_names=("SD", "std"))
    file_column = find_column(table, ("file_name",), path=path, set_name=set_name, required=False)
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
    return finish_table(set_name, path, keys, videos, mos, std, rows, report)


LIVE_VQC_FOLDER = "LIVE Video Quality Challenge (VQC) Database"


def read_live_vqc(root: str, *, set_name: str = "live_vqc") -> OfficialTable:
    """LIVE-VQC: data.mat (MATLAB 5 format, scipy.io.loadmat) with `video_list`, a 585 x 1
    cell array of file names ("A001.mp4"), and `mos`, 585 x 1 (0-100); the video is
    Video/<name>. The file gives no per-video standard deviation."""
    import scipy.io

    path = require_file(set_name, root, ("data.mat", f"{LIVE_VQC_FOLDER}/data.mat", "*/data.mat"), "data.mat")
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
    report = problem_report(set_name, path)
    mos = parse_numbers([m.item() if isinstance(m, np.generic) else m for m in mos_cells], path=path,
                   set_name=set_name, column="mos", rows=rows, report=report)
    base = os.path.relpath(os.path.dirname(path), root)
    base = "" if base == "." else base.replace(os.sep, "/") + "/"
    return finish_table(set_name, path, names, [f"{base}Video/{n}" for n in names], mos, np.full(len(names), np.nan),
                   rows, report)


YOUTUBE_UGC_SUFFIX = "_crf_10_ss_00_t_20.0.mp4"


def read_youtube_ugc(root: str, *, set_name: str = "youtube_ugc") -> OfficialTable:
    """YouTube-UGC: original_videos_MOS_for_YouTube_UGC_dataset.xlsx, sheet "MOS", columns
    `vid` (e.g. "Animation_1080P-05f8") and `MOS full` (1-5), with a standard deviation
    where a column "SD full" (or "std full") exists. The key is the paper's name,
    <vid>_crf_10_ss_00_t_20.0.mp4 (the H.264 transcodes the authors evaluated); the video
    is that file anywhere under the root, else the original <vid>.mkv (or .mp4)."""
    path = require_file(set_name, root, ("original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
                                          "*/original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
                                          "*MOS*YouTube_UGC*.xlsx"),
                         "original_videos_MOS_for_YouTube_UGC_dataset.xlsx")
    table = read_table(set_name, path, sheet="MOS")
    vid = find_column(table, ("vid",), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("MOS full", "MOS"),
                                          std_names=("SD full", "std full"))
    vids = table[vid].fillna("").astype(str).str.strip().tolist()
    files = _files_by_name(root)
    keys, videos = [], []
    for v in vids:
        key = v + YOUTUBE_UGC_SUFFIX if v else ""
        keys.append(key)
        videos.append(files.get(key) or files.get(v + ".mkv") or files.get(v + ".mp4") or key)
    return finish_table(set_name, path, keys, videos, mos, std, rows, report)


def read_live_yt_hfr(root: str, *, set_name: str = "live_yt_hfr") -> OfficialTable:
    """LIVE-YT-HFR: subject_MOS.csv (github.com/pavancm/LIVE-HFR, subjective_scores/), a
    transposed table: a row "File Names" with one video per column ("1Runner_crf_0_24fps"),
    a row "MOS" and a row "std". The key is <name>.mp4 and so is the video, anywhere under
    the root: the release's videos are raw YUV, which must be converted to a container
    PyAV reads (MANUAL_DOWNLOAD_INSTRUCTIONS gives the ffmpeg line)."""
    path = require_file(set_name, root, ("subject_MOS.csv", "subjective_scores/subject_MOS.csv", "*/subject_MOS.csv"),
                         "subject_MOS.csv")
    raw = read_csv(path, what=f"{set_name} metadata file", error=MetadataError)
    # Transposed: the header is "File Names,<video>,...", each further row "<name>,<value>,...".
    first = raw.columns[0]
    labels = {loose_name(label): i for i, label in enumerate(raw[first].fillna("").astype(str))}
    if loose_name(first) not in ("filenames", "filename") or "mos" not in labels:
        raise MetadataError(f"{set_name}: {path}: expected a transposed table whose first column reads "
                            f"'File Names', then 'MOS' (and 'std'); found {first!r} and {list(raw[first])}")
    names = [str(c).strip() for c in raw.columns[1:]]
    columns = [f"column {i + 2}" for i in range(len(names))]  # the spreadsheet's column, counted from 1
    report = problem_report(set_name, path)
    mos = parse_numbers(raw.iloc[labels["mos"], 1:].tolist(), path=path, set_name=set_name, column="MOS",
                   rows=columns, report=report)
    std_row = labels.get("std", labels.get("sd"))
    std = (np.full(len(names), np.nan) if std_row is None else
           parse_numbers(raw.iloc[std_row, 1:].tolist(), path=path, set_name=set_name, column="std", rows=columns,
                    report=report, allow_empty=True))
    files = _files_by_name(root)
    keys = [with_extension(n) if n and not n.startswith("Unnamed") else "" for n in names]
    return finish_table(set_name, path, keys, [files.get(k, k) for k in keys], mos, std, columns, report)


def read_kvq(root: str, *, set_name: str = "kvq") -> OfficialTable:
    """KVQ (NTIRE 2024 short-form UGC challenge): train_data.csv with `filename`
    ("train/0001.mp4") and `score` (1-5); the key is the file name without its folder, as
    the paper's list names it; the video is `filename` under the root. No per-video
    standard deviation."""
    path = require_file(set_name, root, ("train_data.csv", "*/train_data.csv"), "train_data.csv")
    table = read_table(set_name, path)
    file_column = find_column(table, ("filename", "file_names", "name"), path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=("score", "mos"))
    base = os.path.relpath(os.path.dirname(path), root)
    base = "" if base == "." else base.replace(os.sep, "/") + "/"
    names = table[file_column].fillna("").astype(str).str.strip().tolist()
    return finish_table(set_name, path, [n.rsplit("/", 1)[-1] for n in names], [base + n for n in names], mos, std,
                   rows, report)


# Column names the generic reader accepts, compared loosely (loose_name).
_NAME_COLUMNS = ("file", "filename", "file_name", "video", "video_name", "videoname", "name", "vid")
_MOS_COLUMNS = ("MOS", "mos", "score")
_STD_COLUMNS = ("std", "SD", "MOS_std", "stdev", "std_dev")


def read_generic(root: str, *, set_name: str, patterns: tuple[str, ...]) -> OfficialTable:
    """Sets whose score file format we could not confirm (LIVE-YT-Gaming, CGVDS,
    Waterloo-IVC-4K): the first file matching `patterns` under the root (a CSV or an
    Excel workbook), a video-name column (_NAME_COLUMNS), a MOS column (_MOS_COLUMNS) and
    optionally a standard deviation (_STD_COLUMNS). Names without an extension get
    ".mp4"; the video is that name anywhere under the root."""
    path = require_file(set_name, root, patterns, "MOS file")
    table = read_table(set_name, path)
    name = find_column(table, _NAME_COLUMNS, path=path, set_name=set_name)
    rows, report, mos, std = _mos_and_std(table, path=path, set_name=set_name, mos_names=_MOS_COLUMNS,
                                          std_names=_STD_COLUMNS)
    names = table[name].fillna("").astype(str).str.strip().tolist()
    keys = [with_extension(n.replace("\\", "/").rsplit("/", 1)[-1]) if n else "" for n in names]
    files = _files_by_name(root)
    return finish_table(set_name, path, keys, [files.get(k, k) for k in keys], mos, std, rows, report)


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
    """One evaluation set: its name (score.overall.SET_GROUPS'), title, where it is obtained
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
    chosen["path"] = [os.path.join(workdir_lib.absolute(root), *v.split("/")) for v in chosen["video"]]
    missing = [k for k, p in zip(chosen["key"], chosen["path"]) if not os.path.isfile(p)]
    if missing:
        where = {k: v for k, v in zip(chosen["key"], chosen["video"])}
        named = ", ".join(f"'{where[k]}'" for k in missing[:MAX_NAMED])
        more = f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
        raise MissingVideosError(f"{name}: {len(missing)} of the {len(chosen)} {subset} videos are not in the manual "
                                 f"download {root}: {named}{more} (expected layout: {SETS[name].layout})", missing)
    return chosen.reset_index(drop=True)
