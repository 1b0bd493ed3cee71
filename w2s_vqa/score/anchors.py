"""Anchor sets: K videos of known MOS that every scored video is compared with.

docs/method.md "Scoring a single video": the paper compares each test video with K = 5 anchors
from LSVQ (MOS 39.56, 50.23, 60.62, 69.43, 78.03); those videos are not public in full,
so users pick their own from a labeled set (`pick_anchors`, `w2s-vqa anchors`).

An anchor directory is self-contained, so scoring needs neither the store the anchors
came from nor JAX to read it:

    anchors.json   {"version", "anchors": [{"id", "mos", "source_id", "path"}, ...] in
                   increasing MOS, "settings": the settings the videos were made with
                   (store.settings.Settings.to_json; sets made before it recorded
                   distort_max_side and distort_max_seconds lack those), "store", "rule"}
    videos.npz     the anchors' student inputs as the store holds them, in that order:
                   frames uint8 [K, F, S, S, 3], frame_mask bool [K, F], motion float32
                   [K, M, D], motion_mask bool [K, M]
    matrices/      per student, the level logits of every anchor pair (`save_matrix`):
                   <digest>.npz with logits float32 [K, K, 5] ([i, j]: first anchor i,
                   second anchor j) and the student's key

The anchors are ordered by MOS, lowest first; the scorer asks each anchor pair with the
lower one first, as the authors' code does (thurstone module docstring).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings

import numpy as np
import pandas as pd

from w2s_vqa import workdir
from w2s_vqa.store.format import VideoStore, media_of
from w2s_vqa.store.settings import Settings
from w2s_vqa.tables import ProblemReport, TableWarning, read_csv
from w2s_vqa.video.decode import IMAGE

ANCHORS_FILE = "anchors.json"
VIDEOS_FILE = "videos.npz"
MATRIX_DIR = "matrices"
VERSION = 1
# The arrays of videos.npz, in the store's record names.
VIDEO_ARRAYS = ("frames", "frame_mask", "motion", "motion_mask")
# Default share of a MOS table's videos that the anchors' targets span (pick_anchors).
DEFAULT_COVERAGE = 0.95
# MOS table columns: the video, then its score (w2s_vqa/datasets/lists/*.csv use file,mos).
VIDEO_COLUMNS = ("file", "id", "video_id")
MOS_COLUMN = "mos"


class AnchorError(ValueError):
    """An anchor set or its inputs cannot be used; the message names the file, row or video."""


@dataclasses.dataclass(frozen=True)
class AnchorSet:
    """K anchor videos with their MOS and student inputs.

    ids: K video ids; mos: float64 [K], strictly increasing; videos: VIDEO_ARRAYS as arrays
    with K rows (shapes in the module docstring); settings: the Settings of the store
    they came from (test videos must be made alike); source_ids, paths: per anchor, where known ("" otherwise); store: the
    store directory they came from; path: the anchor directory it was loaded from, if any.
    """

    ids: tuple[str, ...]
    mos: np.ndarray
    videos: dict[str, np.ndarray]
    settings: Settings
    source_ids: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    store: str = ""
    rule: str = ""
    path: str = ""

    def __post_init__(self):
        if not isinstance(self.settings, Settings):  # a record of its fields (Settings.from_json)
            object.__setattr__(self, "settings", Settings.from_json(self.settings))
        validate(self.ids, self.mos, self.videos, where=self.path or "anchor set")

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ from a store
    @classmethod
    def from_store(cls, store: VideoStore | str, ids, mos, *, rule: str = "") -> AnchorSet:
        """The anchors `ids` with their `mos`, their inputs read from `store` (sorted by MOS).

        Raises AnchorError naming every id the store lacks, and as `validate` does.
        """
        store = store if isinstance(store, VideoStore) else VideoStore(store)
        ids = [str(i) for i in ids]
        missing = store.unknown_ids(ids)
        if missing:
            raise AnchorError(f"{store.path}: the store has no video {', '.join(repr(m) for m in missing)} "
                              f"({len(missing)} of the {len(ids)} anchors)")
        mos = np.asarray(mos, np.float64)
        order = np.argsort(mos, kind="stable")
        ids = [ids[i] for i in order]
        records = [store.get(i) for i in ids]
        videos = {name: np.stack([np.asarray(r[name]) for r in records]) for name in VIDEO_ARRAYS}
        rows = store.index.set_index("id").loc[ids]
        return cls(ids=tuple(ids), mos=mos[order], videos=videos,
                   settings=store.settings,
                   source_ids=tuple(rows["source_id"].astype(str)), paths=tuple(rows["path"].fillna("").astype(str)),
                   store=workdir.absolute(store.path), rule=rule)

    # ------------------------------------------------------------------ the directory
    def save(self, directory: str, *, overwrite: bool = False) -> list[str]:
        """Write anchors.json and videos.npz into `directory` (created); returns the names written.

        Raises FileExistsError when it already holds an anchor set, unless `overwrite`
        (which also drops the cached matrices, made for other anchors).
        """
        directory = os.fspath(directory)
        meta_path = workdir.join(directory, ANCHORS_FILE)
        if workdir.exists(meta_path) and not overwrite:
            raise FileExistsError(f"{directory}: already holds an anchor set ({ANCHORS_FILE}); choose another "
                                  "--out or pass --overwrite")
        workdir.makedirs(directory)
        if overwrite:
            # anchors.json is what makes the folder an anchor set, and it is written last: removed
            # first, a reader never pairs the old record with the new videos (in a bucket too).
            workdir.remove(meta_path)
            matrices = workdir.join(directory, MATRIX_DIR)
            for name in workdir.listdir(matrices):
                workdir.remove(workdir.join(matrices, name))
        with workdir.atomic_open(workdir.join(directory, VIDEOS_FILE), "wb") as f:
            np.savez(f, **self.videos)
        record = {
            "version": VERSION,
            "anchors": [{"id": i, "mos": float(m), "source_id": s, "path": p}
                        for i, m, s, p in zip(self.ids, self.mos, self._or_blank(self.source_ids),
                                              self._or_blank(self.paths))],
            "settings": self.settings.to_json(),
            "store": self.store,
            "rule": self.rule,
        }
        workdir.write_text(meta_path, json.dumps(record, indent=1) + "\n")
        return [ANCHORS_FILE, VIDEOS_FILE]

    def _or_blank(self, values) -> tuple[str, ...]:
        return tuple(values) if len(values) == len(self.ids) else ("",) * len(self.ids)

    @classmethod
    def load(cls, directory: str) -> AnchorSet:
        """The anchor set of a directory `save` wrote.

        Raises AnchorError for a missing or unreadable anchors.json or videos.npz, and as
        `validate` does (fewer than two anchors, a repeated or decreasing MOS, an anchor
        without its video in videos.npz).
        """
        directory = os.fspath(directory)
        if not workdir.is_local(directory):
            directory = workdir.absolute(directory)  # one line naming the package when no file system serves it
        meta_path = workdir.join(directory, ANCHORS_FILE)
        if not workdir.isdir(directory):
            raise AnchorError(f"{directory}: no such anchor directory (make one with `w2s-vqa anchors`)")
        if not workdir.exists(meta_path):
            raise AnchorError(f"{directory}: not an anchor directory (no {ANCHORS_FILE}); make one with "
                              "`w2s-vqa anchors`")
        try:
            meta = workdir.read_json(meta_path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AnchorError(f"{meta_path}: not readable as JSON ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("anchors"), list):
            raise AnchorError(f"{meta_path}: expected an object with an 'anchors' list")
        if meta.get("version") != VERSION:
            raise AnchorError(f"{meta_path}: version {meta.get('version')!r}, this code reads version {VERSION}")
        problems = []
        ids, mos = [], []
        for n, entry in enumerate(meta["anchors"], 1):
            if not isinstance(entry, dict) or "id" not in entry or "mos" not in entry:
                problems.append(f"anchor {n}: needs 'id' and 'mos'")
                continue
            try:
                value = float(entry["mos"])
            except (TypeError, ValueError):
                problems.append(f"anchor {n} ('{entry['id']}'): MOS {entry['mos']!r} is not a number")
                continue
            ids.append(str(entry["id"]))
            mos.append(value)
        if problems:
            raise AnchorError(f"{meta_path}: " + "; ".join(problems))
        videos_path = workdir.join(directory, VIDEOS_FILE)
        if not workdir.exists(videos_path):
            raise AnchorError(f"{directory}: the anchors' videos are missing (no {VIDEOS_FILE}); rebuild the "
                              "directory with `w2s-vqa anchors`")
        try:
            with workdir.path(videos_path).open("rb") as f, np.load(f, allow_pickle=False) as data:
                videos = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError) as e:
            raise AnchorError(f"{videos_path}: not readable ({e})") from None
        entries = [e for e in meta["anchors"] if isinstance(e, dict)]
        return cls(ids=tuple(ids), mos=np.asarray(mos, np.float64), videos=videos,
                   settings=Settings.from_json(meta.get("settings")),
                   source_ids=tuple(str(e.get("source_id", "")) for e in entries),
                   paths=tuple(str(e.get("path", "")) for e in entries), store=str(meta.get("store", "")),
                   rule=str(meta.get("rule", "")), path=directory)

    # ------------------------------------------------------------------ fit with a student
    def video_settings(self) -> Settings:
        """How the anchors' videos were made: their shapes (from the arrays), then the
        settings anchors.json records."""
        frames, motion = self.videos["frames"], self.videos["motion"]
        shapes = Settings(num_frames=frames.shape[1], image_size=frames.shape[2], num_motion_chunks=motion.shape[1],
                          motion_dim=motion.shape[2])
        return shapes.merged(self.settings)

    def check_settings(self, settings: Settings, *, mine: str = "the student") -> None:
        """Raise AnchorError naming, with both values, every setting in which the anchors'
        videos (`video_settings`) differ from `settings`, how `mine` reads a video."""
        settings.check_fits(self.video_settings(), mine=mine, theirs="the anchors' videos",
                            where=self.path or "anchor set", error=AnchorError)

    def check_student(self, cfg, settings: Settings | None = None) -> None:
        """Raise AnchorError when the anchors' videos are not made as the student reads its
        inputs (`check_settings`): frames, image size, motion chunks and width from the
        StudentConfig `cfg`, and every other field of `settings` (the student's run
        config's or its export's)."""
        student = Settings.from_student(cfg)
        self.check_settings(student.merged(settings) if settings is not None else student)

    def digest(self) -> str:
        """A hex digest of the ids, MOS and video arrays: equal for equal anchor sets."""
        h = hashlib.sha256(json.dumps([list(self.ids), [float(m) for m in self.mos]]).encode())
        for name in VIDEO_ARRAYS:
            h.update(np.ascontiguousarray(self.videos[name]).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ cached matrices
    def matrix_path(self, student_key: str) -> str:
        if not self.path:
            raise AnchorError("an anchor set not loaded from a directory has no matrix cache")
        name = hashlib.sha256(student_key.encode()).hexdigest()[:20]
        return workdir.join(self.path, MATRIX_DIR, f"{name}.npz")

    def load_matrix(self, student_key: str) -> np.ndarray | None:
        """The cached level logits [K, K, 5] of `student_key` (a string naming the student's
        weights, e.g. 'checkpoint:/runs/tiny:step 9000'), or None when not cached."""
        path = self.matrix_path(student_key)
        if not workdir.exists(path):
            return None
        with workdir.path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
            if str(data["key"]) != student_key or str(data["anchors"]) != self.digest():
                return None
            logits = np.asarray(data["logits"], np.float32)
        return logits if logits.shape == (len(self), len(self), 5) else None

    def save_matrix(self, student_key: str, logits) -> str:
        """Cache a student's anchor level logits [K, K, 5]; returns the file written."""
        logits = np.asarray(logits, np.float32)
        if logits.shape != (len(self), len(self), 5):
            raise AnchorError(f"anchor logits must be [{len(self)}, {len(self)}, 5], got {logits.shape}")
        path = self.matrix_path(student_key)
        workdir.makedirs(workdir.parent(path))
        with workdir.atomic_open(path, "wb") as f:
            np.savez(f, logits=logits, key=np.asarray(student_key), anchors=np.asarray(self.digest()))
        return path


def validate(ids, mos, videos, *, where: str = "anchor set") -> None:
    """Raise AnchorError for an anchor set that cannot anchor a scale: fewer than two
    anchors; ids repeated; MOS not finite, repeated, or not increasing in the anchors'
    order; videos missing an array of VIDEO_ARRAYS or holding another count of rows than
    there are anchors (an anchor without its video)."""
    ids = [str(i) for i in ids]
    mos = np.asarray(mos, np.float64)
    if len(ids) < 2:
        raise AnchorError(f"{where}: {len(ids)} anchor(s); a scale needs at least two anchors of different MOS")
    if len(mos) != len(ids):
        raise AnchorError(f"{where}: {len(ids)} anchor ids but {len(mos)} MOS values")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise AnchorError(f"{where}: anchor id(s) listed twice: {repeated}")
    if not np.isfinite(mos).all():
        bad = [f"'{i}' ({m})" for i, m in zip(ids, mos) if not np.isfinite(m)]
        raise AnchorError(f"{where}: MOS must be finite numbers: {', '.join(bad)}")
    steps = np.diff(mos)
    if (steps == 0).any():
        k = int(np.flatnonzero(steps == 0)[0])
        raise AnchorError(f"{where}: anchors '{ids[k]}' and '{ids[k + 1]}' have the same MOS {mos[k]}; the "
                          "anchors' MOS must differ")
    if (steps < 0).any():
        k = int(np.flatnonzero(steps < 0)[0])
        raise AnchorError(f"{where}: the anchors' MOS must increase in their order; '{ids[k + 1]}' ({mos[k + 1]}) "
                          f"follows '{ids[k]}' ({mos[k]})")
    missing = [name for name in VIDEO_ARRAYS if name not in videos]
    if missing:
        raise AnchorError(f"{where}: the anchors' videos lack {', '.join(missing)}")
    rows = {name: int(np.asarray(videos[name]).shape[0]) for name in VIDEO_ARRAYS}
    short = {name: n for name, n in rows.items() if n != len(ids)}
    if short:
        raise AnchorError(f"{where}: {len(ids)} anchors but the videos hold "
                          f"{', '.join(f'{n} {name}' for name, n in short.items())}: an anchor's video is missing")


# ---------------------------------------------------------------------------- MOS tables
def read_mos_table(path: str, store: VideoStore | None = None, *, folder: str | None = None,
                   stems: bool = False, problems: ProblemReport | None = None,
                   error: type[Exception] = AnchorError) -> pd.DataFrame:
    """A MOS table (CSV: a video column `file`, `id` or `video_id`, and `mos`; the format of
    w2s_vqa/datasets/lists/*.csv) as a DataFrame with columns id (str), mos (float64), row (int,
    data rows from 1), in file order, and path (the video's absolute path) with `folder`.

    With `store`, each video is matched to a store id: the id itself, or the name
    without its extension (a folder store's ids), or the file name of the video the
    store was made from (index column `path`). With `folder` (an existing folder of
    videos), each video must be a file there, named relative to it; with `stems` also
    the one file of its folder whose name without extension is the row's name (a
    `clip01` row is `clip01.mp4`). `problems`: problems of the same table found by the
    caller (another column), reported with these.

    Raises `error` (AnchorError by default) listing, at once, every row whose MOS is not
    a finite number, every empty name, every video named twice, (with `store`) every
    video the store does not hold or matches twice, (with `folder`) every video the
    folder lacks and (with `stems`) every name that fits several files, and the
    caller's `problems`: one table, one error, every kind of problem in it.
    """
    table = read_csv(path, what="MOS table", error=error, columns=VIDEO_COLUMNS + (MOS_COLUMN,))
    column = next((c for c in VIDEO_COLUMNS if c in table.columns), None)
    if column is None or MOS_COLUMN not in table.columns:
        raise error(f"{path}: a MOS table needs a video column ({' or '.join(VIDEO_COLUMNS)}) and "
                    f"'{MOS_COLUMN}'; it has {list(table.columns)}")
    names = table[column].fillna("").astype(str).str.strip().tolist()
    mos = pd.to_numeric(table[MOS_COLUMN], errors="coerce").to_numpy(np.float64)
    rows = np.arange(1, len(table) + 1)
    report = ProblemReport(path, "MOS table")
    cells = table[MOS_COLUMN]
    bad = [f"row {r}: " + ("empty" if pd.isna(cells.iloc[r - 1]) or not str(cells.iloc[r - 1]).strip()
                           else f"'{cells.iloc[r - 1]}'") for r, m in zip(rows, mos) if not np.isfinite(m)]
    report.add("MOS that is not a finite number", len(bad), bad)
    empty = [f"row {r}" for r, n in zip(rows, names) if not n]
    report.add(f"empty {column}", len(empty), empty)
    seen: dict[str, int] = {}
    twice = []
    for r, n in zip(rows, names):
        if n and n in seen:
            twice.append(f"'{n}' in rows {seen[n]} and {r}")
        seen.setdefault(n, r)
    report.add("video named twice", len(twice), twice)
    ids = names
    if store is not None:
        ids, unknown, ambiguous = _match_store(names, store)
        report.add(f"video the store {store.path} does not hold", len(unknown),
                   [f"row {r}: '{names[r - 1]}'" for r in unknown],
                   "a MOS table row names a video by its store id, its file name, or its file name without "
                   "extension")
        report.add("video that matches more than one store video", len(ambiguous),
                   [f"row {r}: '{names[r - 1]}' -> {m}" for r, m in ambiguous])
    paths = None
    if folder is not None:
        paths, missing, several = locate_files(names, folder, stems=stems)
        report.add(f"video the folder {folder} lacks", len(missing), [f"row {r}: '{names[r - 1]}'" for r in missing],
                   "the `file` column names videos relative to the folder" + (
                       ", with or without their extension" if stems else "") +
                   " (download the missing ones, or use a table without them)")
        report.add("name without extension that fits more than one file", len(several),
                   [f"row {r}: '{names[r - 1]}' -> {', '.join(fits)}" for r, fits in several],
                   "name the file with its extension")
    if problems is not None:
        report.extend(problems)
    report.raise_if_any(error)
    out = pd.DataFrame({"id": ids, "mos": mos, "row": rows})
    if paths is not None:
        out["path"] = paths
    return out


def locate_files(names: list[str], folder: str, *, stems: bool = False
                 ) -> tuple[list[str], list[int], list[tuple[int, list[str]]]]:
    """(paths, missing rows, [(row, fitting files)]) of a MOS table's video names in
    `folder`: each name's absolute path, the file folder/name where it exists, else (with
    `stems`) the one file of its folder whose name without extension is the name's last
    part. Rows count from 1; an empty name is neither found nor missing (read_mos_table
    names it)."""
    root = workdir.absolute(folder)
    listed: dict[str, list[str]] = {}
    paths, missing, several = [], [], []
    for row, name in enumerate(names, 1):
        path = os.path.join(root, *name.split("/")) if name else root
        paths.append(path)
        if not name or os.path.isfile(path):
            continue
        fits: list[str] = []
        if stems:
            parent, stem = os.path.split(path)
            if parent not in listed:  # a folder is listed once, and only when a row's name misses
                listed[parent] = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
            fits = [f for f in listed[parent]
                    if os.path.splitext(f)[0] == stem and os.path.isfile(os.path.join(parent, f))]
            if len(fits) == 1:
                paths[-1] = os.path.join(parent, fits[0])
                continue
        (several.append((row, fits)) if fits else missing.append(row))
    return paths, missing, several


def _match_store(names: list[str], store: VideoStore) -> tuple[list[str], list[int], list[tuple[int, list[str]]]]:
    index = store.index
    by_key: dict[str, set[str]] = {}
    for vid, path in zip(index["id"].astype(str), index["path"].fillna("").astype(str)):
        keys = {vid}
        if path and "~" not in vid:  # a variant shares its source's path but is another video
            keys.add(os.path.basename(path))
        for key in keys:
            by_key.setdefault(key, set()).add(vid)
    ids, unknown, ambiguous = [], [], []
    for row, name in enumerate(names, 1):
        found = by_key.get(name) or by_key.get(os.path.splitext(name)[0]) or by_key.get(os.path.basename(name))
        if not found:
            unknown.append(row)
            ids.append("")
        elif len(found) > 1:
            ambiguous.append((row, sorted(found)))
            ids.append("")
        else:
            ids.append(next(iter(found)))
    return ids, unknown, ambiguous


def pick_anchors(mos_table: pd.DataFrame, k: int, *, coverage: float = DEFAULT_COVERAGE) -> pd.DataFrame:
    """K videos spread evenly over a labeled set's MOS range: the rule of `w2s-vqa anchors`.

    mos_table: columns id and mos (`read_mos_table`). The targets are K evenly spaced MOS
    values from the (1 - coverage)/2 to the (1 + coverage)/2 quantile of the table's MOS
    (numpy's linear quantiles; coverage 1 spans the minimum to the maximum); target by
    target, lowest first, the anchor is the video nearest to it in MOS among those not
    yet taken whose MOS no anchor has yet (ties: the lower MOS, then the smaller id).

    Why values, not quantiles: evenly spaced MOS values give the line from latent scores
    to MOS (thurstone.to_mos) even leverage along the scale, where quantiles would crowd
    the anchors into the middle of the distribution; the paper's LSVQ anchors are evenly
    spaced too (about 10 MOS points apart). Why not the minimum and maximum: a set's most
    extreme videos are outliers, against which every test video is decided with P near 0
    or 1, which says nothing about where it lies; the default spans the middle 95%.

    Returns K rows (id, mos, target), by increasing MOS. Raises AnchorError for k < 2, a
    coverage outside (0, 1], or a table with fewer than k distinct MOS values.
    """
    if k < 2:
        raise AnchorError(f"k={k}: a scale needs at least two anchors")
    if not 0 < coverage <= 1:
        raise AnchorError(f"coverage={coverage}: must be in (0, 1]")
    table = mos_table[["id", "mos"]].copy()
    table["id"] = table["id"].astype(str)
    table["mos"] = table["mos"].astype(np.float64)
    distinct = table["mos"].nunique()
    if distinct < k:
        raise AnchorError(f"the MOS table holds {len(table)} videos with {distinct} distinct MOS values; "
                          f"{k} anchors need {k} distinct values")
    lo, hi = np.quantile(table["mos"].to_numpy(), [(1 - coverage) / 2, (1 + coverage) / 2])
    targets = np.linspace(lo, hi, k)
    table = table.sort_values(["mos", "id"], kind="stable").reset_index(drop=True)
    mos = table["mos"].to_numpy()
    taken = np.zeros(len(table), bool)
    used_mos: set[float] = set()
    picked = []
    for target in targets:
        allowed = ~taken & ~np.isin(mos, list(used_mos))
        distance = np.where(allowed, np.abs(mos - target), np.inf)
        best = int(np.argmin(distance))  # the first minimum: lower MOS, then smaller id (sorted)
        taken[best] = True
        used_mos.add(float(mos[best]))
        picked.append({"id": table["id"].iloc[best], "mos": float(mos[best]), "target": float(target)})
    return pd.DataFrame(picked).sort_values("mos", kind="stable").reset_index(drop=True)


RULE = ("K evenly spaced MOS targets from the {lo:g} to the {hi:g} quantile of the table's MOS; each anchor the "
        "video nearest its target (w2s_vqa.score.anchors.pick_anchors)")


def build_anchor_set(store: VideoStore | str, mos_table_path: str, k: int, *,
                     coverage: float = DEFAULT_COVERAGE) -> AnchorSet:
    """Read a MOS table against a store, pick K anchors (`pick_anchors`), and read their videos.

    The store's still images (index media "image", w2s_vqa.video.is_still_image) are not
    candidates: an anchor places videos on a video scale. Leaving any out is said in one
    `tables.TableWarning` naming how many and the first few (`w2s-vqa anchors` prints it)."""
    store = store if isinstance(store, VideoStore) else VideoStore(store)
    table = read_mos_table(mos_table_path, store)
    media = dict(zip(store.index["id"].astype(str), media_of(store.index)))
    still = table["id"].map(media).eq(IMAGE).to_numpy()
    if still.any():
        names = table["id"][still].tolist()
        warnings.warn(f"{mos_table_path}: left out {len(names)} still image(s) of the store {store.path} from the "
                      f"anchor candidates ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): anchors are "
                      "videos", TableWarning, stacklevel=2)
        table = table[~still].reset_index(drop=True)
    picked = pick_anchors(table, k, coverage=coverage)
    rule = RULE.format(lo=(1 - coverage) / 2, hi=(1 + coverage) / 2)
    return AnchorSet.from_store(store, picked["id"], picked["mos"], rule=rule)
