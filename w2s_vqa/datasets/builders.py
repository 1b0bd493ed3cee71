"""The ten evaluation sets as tensorflow-datasets builders (manual download, ArrayRecord).

One `tfds.core.GeneratorBasedBuilder` per set, registered under the names
score.overall.SET_GROUPS uses (lsvq_test, lsvq_1080p, konvid_1k, live_vqc, youtube_ugc;
live_yt_gaming, cgvds, live_yt_hfr, waterloo_ivc_4k, kvq), so `tfds.builder("konvid_1k")`
finds them once `w2s_vqa.datasets` is imported. Neither building nor reading imports
TensorFlow (tests/test_datasets.py checks sys.modules).

Each builder reads the set's own metadata file (w2s_vqa.datasets.metadata: MOS, and the
per-video standard deviation where the set has one), selects the paper's list (the
`paper`/`tiny` configs) or every video of the release (`*_full`), refuses in one message
every selected video the manual download lacks, then makes each example with the video
store's own per-video path (w2s_vqa.store.prepare.video_records: PyAV decoding by
presentation timestamps, display rotation, frames at 1 fps resized to the model's size,
motion tokens as data.motion_features says), not tfds.features.Video, which runs the
ffmpeg tool and re-encodes. So an example holds exactly what a store prepared from the
same file with the same settings keeps.

An example (one split, "test"; examples in the list's order):

    id            str      the list's `file` (the video's name in the paper's lists)
    video         str      its path under the set's manual folder ("/" separated)
    frames        uint8 [F, S, S, 3]        frame_format "raw"; or, for "jpeg", as the store:
    frames_jpeg   uint8 [bytes]             the valid frames' JPEG files, concatenated
    frame_sizes   int32 [F]                 bytes of each (0 for a frame past the clip's end)
    frame_mask    bool [F]                  False where the clip is shorter than F seconds
    motion        float32 [M, D]            motion tokens (store.prepare's motion)
    motion_mask   bool [M]
    mos           float64  the set's own MOS (its own scale: metadata.SETS[...].scale)
    mos_std       float64  the per-video standard deviation of the ratings, NaN where none
    paper_mos     float64  the paper list's MOS for the video (NaN in the *_full configs)
    fps, duration float64  the source's nominal frame rate and its video stream's seconds
    width, height, rotation int32  displayed size in pixels, clockwise turn applied

Configs (`CONFIGS`): "tiny" (the defaults of w2s_vqa.config: 4 frames of 32x32, 4
motion chunks of frame statistics, raw frames) and "paper" (the paper's 8 frames at
384x384, 10 SlowFast motion chunks, JPEG frames as the 7B config keeps them), each on
the paper's list, and "tiny_full" / "paper_full" on every video of the release;
`config_for` makes one for any other store settings (an anchor set's). The paper
configs compute SlowFast features: give the weights file `w2s-vqa convert-slowfast`
writes as the builder argument `slowfast_weights=` or in $W2S_VQA_SLOWFAST_WEIGHTS.

The dataset's metadata.json (DatasetInfo.metadata) keeps the index: every example's id,
video, source fps/size/duration and MOS, the videos that could not be decoded (skipped,
with the reason) and the store settings, so a reader (w2s_vqa.datasets.source) knows
every id without reading an example; and "source_digest" (metadata.selection_digest:
the selected keys, paths, MOS and file sizes), by which `build` finds a build made from
another state of the manual download and rebuilds it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import sys
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from w2s_vqa.datasets import metadata as metadata_lib
from w2s_vqa.datasets.metadata import SETS
from w2s_vqa.datasets.official_table import MetadataError
from w2s_vqa.store.settings import CONFIG_FIELDS, Settings
from w2s_vqa import workdir as workdir_lib

VERSION = tfds.core.Version("1.0.0")
SPLIT = "test"
SUBSETS = ("paper", "full")
SLOWFAST_ENV = "W2S_VQA_SLOWFAST_WEIGHTS"
# The settings an example depends on: store.settings.Settings' fields a config sets.
SETTING_FIELDS = CONFIG_FIELDS
# Motion a set can be built with: "precomputed" needs a .npy per video, which no release ships.
MOTION_FEATURES = ("none", "frame_stats", "slowfast")


class DatasetError(MetadataError):
    """A builder cannot make its set (settings, weights, every video undecodable); the message
    names the set and the cause."""


@dataclasses.dataclass(eq=False)
class VqaConfig(tfds.core.BuilderConfig):
    """A builder config: which videos (`subset`: "paper", the paper's list, or "full", every
    video of the release) and the store settings their examples are made with
    (SETTING_FIELDS, as store.prepare.Settings and w2s_vqa.config's data.* name them)."""

    subset: str = "paper"
    num_frames: int = 0
    image_size: int = 0
    num_motion_chunks: int = 0
    motion_dim: int = 0
    motion_features: str = ""
    frame_times: str = ""
    motion_min_chunks: int = 0
    frame_format: str = ""
    jpeg_quality: int = 0
    distort_max_side: int = 0
    distort_max_seconds: float = 0.0

    def settings(self) -> Settings:
        """The Settings its examples are made with."""
        return Settings(**{k: getattr(self, k) for k in SETTING_FIELDS})


def _tiny_settings() -> dict[str, Any]:
    """The tiny CPU setting: w2s_vqa.config.defaults()' data.* (their one home)."""
    from w2s_vqa.config import defaults

    data = defaults().data
    return {k: data[k] for k in SETTING_FIELDS}


def _paper_settings() -> dict[str, Any]:
    """The paper's inputs (docs/method.md "Student"): 1 fps at 384x384, 8 frames and 10 SlowFast
    motion chunks of 256 dimensions, JPEG frames, as configs/w2s_llava_ov_7b.py sets data.*."""
    return {**_tiny_settings(), "num_frames": 8, "image_size": 384, "num_motion_chunks": 10, "motion_dim": 256,
            "motion_features": "slowfast", "frame_format": "jpeg"}


def _named(name: str, subset: str, settings: dict[str, Any], description: str) -> VqaConfig:
    return VqaConfig(name=name, version=VERSION, description=description, subset=subset, **settings)


CONFIGS: tuple[VqaConfig, ...] = (
    _named("tiny", "paper", _tiny_settings(), "the paper's list; 4 frames of 32x32, frame-statistics motion (CPU)"),
    _named("paper", "paper", _paper_settings(), "the paper's list; 8 frames of 384x384, 10 SlowFast motion chunks"),
    _named("tiny_full", "full", _tiny_settings(), "every video of the release; the tiny setting"),
    _named("paper_full", "full", _paper_settings(), "every video of the release; the paper's setting"),
)


def config_for(settings: dict[str, Any], subset: str = "paper") -> VqaConfig:
    """The builder config of examples made with store `settings` (any mapping holding
    SETTING_FIELDS, e.g. an anchor set's settings; absent fields take the tiny defaults,
    None values too): a named config of CONFIGS when one matches, else a new one named by
    its values (e.g. "paper_f8_s224_m10_d256_slowfast_jpeg95_max1280x20"). Raises
    DatasetError for an unknown subset or motion_features TFDS sets cannot have."""
    if subset not in SUBSETS:
        raise DatasetError(f"subset must be one of {SUBSETS}, not {subset!r}")
    values = _tiny_settings()
    values.update({k: v for k, v in dict(settings).items() if k in SETTING_FIELDS and v is not None})
    values = {k: type(_tiny_settings()[k])(v) for k, v in values.items()}
    if values["motion_features"] not in MOTION_FEATURES:
        raise DatasetError(f"motion_features={values['motion_features']!r}: an evaluation set can be built with "
                           f"{', '.join(MOTION_FEATURES)} (a release ships no per-video motion files)")
    for config in CONFIGS:
        if config.subset == subset and dict(config.settings()) == values:
            return config
    quality = values["jpeg_quality"] if values["frame_format"] == "jpeg" else ""
    name = (f"{subset}_f{values['num_frames']}_s{values['image_size']}_m{values['num_motion_chunks']}_"
            f"d{values['motion_dim']}_{values['motion_features']}_{values['frame_format']}{quality}_"
            f"max{values['distort_max_side']}x{values['distort_max_seconds']:g}"
            f"{'' if values['frame_times'] == 'centered' else '_' + values['frame_times']}"
            f"{'_min' + str(values['motion_min_chunks']) if values['motion_min_chunks'] else ''}").replace(".", "p")
    return VqaConfig(name=name, version=VERSION, description="store settings " + str(values), subset=subset,
                     **values)


def _store_settings(config: VqaConfig, slowfast_weights: str):
    """The Settings of `config`, as a store is made (store.prepare.StorePlan: the SlowFast
    weights checked and their digest recorded): built from w2s_vqa.config.defaults() with
    the config's data.* values, so that the plan's own checks apply."""
    from w2s_vqa.config import defaults
    from w2s_vqa.store.prepare import StorePlan

    c = defaults()
    for key, value in config.settings().items():
        c.data[key] = value
    c.data.distortions = ""
    c.data.slowfast_weights = slowfast_weights
    return StorePlan.from_config(c).settings


def _instructions(spec: metadata_lib.SetSpec) -> str:
    return (f"{spec.title}: obtain it from {spec.source}. Put the release under the manual folder (or under "
            f"MANUAL_DIR/{spec.name}/ when one manual folder holds several sets), laid out as: {spec.layout}. "
            f"MOS scale: {spec.scale}. Layout: {spec.confidence}.")


def _make_example(source_id: str, path: str, settings) -> tuple[str, Any]:
    """("ok", (meta, arrays, row)) or ("error", reason) for one video; a function of its
    arguments alone, so a process pool can run it."""
    from w2s_vqa.store.prepare import video_records
    from w2s_vqa.store.sources import Source

    for item in video_records(Source(id=source_id, source_id=source_id, path=path), settings):
        if isinstance(item, dict):
            return "error", item["reason"]
        return "ok", item  # no variants: the pristine record is the only one
    return "error", "no record made"


def _f64() -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES)


def _array(shape, dtype) -> tfds.features.Tensor:
    # Raw bytes: TFDS would otherwise upcast bools and integers to int64 lists.
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


class EvalSetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the ten builders; a subclass names its set (`name`, a key of metadata.SETS).

    Builder arguments beyond TFDS's own: file_format (default "array_record", so that
    `tfds.data_source` reads with random access), slowfast_weights (the weights file for
    configs with motion_features "slowfast"; default $W2S_VQA_SLOWFAST_WEIGHTS), workers
    (processes decoding videos; 0 or 1 decodes in this process), progress (a progress bar
    over the videos, w2s_vqa.progress, on stderr).
    """

    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Frames at 1 fps and motion tokens made by w2s_vqa.store.prepare; MOS, MOS std."}
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = "see the set's builder"

    def __init__(self, *, file_format=None, slowfast_weights: str = "", workers: int = 0, progress: bool = True,
                 **kwargs):
        self._slowfast_weights = slowfast_weights or os.environ.get(SLOWFAST_ENV, "")
        self._workers = int(workers)
        self._progress = bool(progress)
        super().__init__(file_format=file_format or "array_record", **kwargs)

    # TFDS prints these two lines to stdout; a verb's stdout ends with its JSON line, so stderr.
    def _log_download_bytes(self) -> None:
        print(f"building {self.name}/{self.builder_config.name} into {self.data_dir}", file=sys.stderr)

    def _log_download_done(self) -> None:
        print(f"built {self.name}/{self.builder_config.name}: {self.data_dir}", file=sys.stderr)

    @property
    def spec(self) -> metadata_lib.SetSpec:
        return SETS[self.name]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        f, s, m, d = config.num_frames, config.image_size, config.num_motion_chunks, config.motion_dim
        features = {
            "id": tfds.features.Text(),
            "video": tfds.features.Text(),
            "frame_mask": _array((f,), np.bool_),
            "motion": _array((m, d), np.float32),
            "motion_mask": _array((m,), np.bool_),
            "mos": _f64(), "mos_std": _f64(), "paper_mos": _f64(), "fps": _f64(), "duration": _f64(),
            "width": _array((), np.int32), "height": _array((), np.int32), "rotation": _array((), np.int32),
        }
        if config.frame_format == "raw":
            features["frames"] = _array((f, s, s, 3), np.uint8)
        else:
            features["frames_jpeg"] = _array((None,), np.uint8)
            features["frame_sizes"] = _array((f,), np.int32)
        return tfds.core.DatasetInfo(
            builder=self, description=f"{self.spec.title}: {self.spec.layout}",
            features=tfds.features.FeaturesDict(features), homepage=f"https://{self.spec.source.split(' ')[0]}",
            metadata=tfds.core.MetadataDict(), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS's own words for a missing or empty folder
            raise MetadataError(f"{self.name}: {e}") from None
        root = metadata_lib.set_root(manual_dir, self.name)
        chosen = metadata_lib.select(self.name, root, self.builder_config.subset)
        if self.builder_config.motion_features == "slowfast" and not self._slowfast_weights:
            raise DatasetError(f"{self.name}: config {self.builder_config.name!r} computes SlowFast motion features: "
                               f"give the weights file (`w2s-vqa convert-slowfast` output) as "
                               f"slowfast_weights=... or in ${SLOWFAST_ENV}")
        settings = _store_settings(self.builder_config, self._slowfast_weights)
        return {SPLIT: self._generate_examples(chosen, root, settings)}

    def _results(self, chosen, settings):
        ids, paths = chosen["key"].tolist(), chosen["path"].tolist()
        if self._workers <= 1:
            for video_id, path in zip(ids, paths):
                yield _make_example(video_id, path, settings)
            return
        # spawn, not fork: the caller may hold threads (JAX, TFDS) that fork would copy mid-state.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(self._workers, mp_context=context) as pool:
            yield from pool.map(_make_example, ids, paths, [settings] * len(ids))

    def _generate_examples(self, chosen, root: str, settings):
        from w2s_vqa import progress

        index, skipped = [], []
        bar = progress.bar(total=len(chosen), unit="video", desc=f"build {self.name}", disable=not self._progress)
        for (_, row), (status, result) in zip(chosen.iterrows(), self._results(chosen, settings)):
            bar.update(1)
            if status == "error":  # an undecodable video is skipped, listed in the metadata, never fatal
                skipped.append({"id": row["key"], "video": row["video"], "path": row["path"], "reason": result})
                continue
            meta, arrays, record = result
            example = {
                "id": row["key"], "video": row["video"],
                "frame_mask": np.asarray(arrays["frame_mask"], bool),
                "motion": np.asarray(arrays["motion"], np.float32),
                "motion_mask": np.asarray(arrays["motion_mask"], bool),
                "mos": float(row["mos"]), "mos_std": float(row["mos_std"]), "paper_mos": float(row["paper_mos"]),
                "fps": float(meta["fps"]), "duration": float(meta["duration"]),
                "width": np.int32(record["width"]), "height": np.int32(record["height"]),
                "rotation": np.int32(record["rotation"]),
            }
            for key in ("frames", "frames_jpeg", "frame_sizes"):
                if key in arrays:
                    example[key] = np.asarray(arrays[key])
            index.append({"id": row["key"], "video": row["video"], "path": row["path"], "mos": float(row["mos"]),
                          "mos_std": float(row["mos_std"]), "paper_mos": float(row["paper_mos"]),
                          "fps": float(meta["fps"]), "duration": float(meta["duration"]),
                          "width": int(record["width"]), "height": int(record["height"]),
                          "rotation": int(record["rotation"]), "valid_frames": int(record["valid_frames"]),
                          "media": str(record.get("media", "video"))})
            yield len(index) - 1, example
        bar.close()
        if not index:
            reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:5])
            raise DatasetError(f"{self.name}: none of the {len(skipped)} videos in {root} could be decoded ({reasons})")
        self.info.metadata.update({
            "set": self.name, "subset": self.builder_config.subset, "manual_root": workdir_lib.absolute(root),
            "settings": settings.to_json(), "index": index, "skipped": skipped,
            "source_digest": metadata_lib.selection_digest(chosen),
        })


class LsvqTest(EvalSetBuilder):
    __doc__ = "LSVQ test (7,182 of 7,400 in the paper's list): LSVQ_whole_test.csv, columns name and mos."
    name = "lsvq_test"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["lsvq_test"])


class Lsvq1080p(EvalSetBuilder):
    __doc__ = "LSVQ test-1080p (3,573): LSVQ_whole_test_1080p.csv, columns name and mos."
    name = "lsvq_1080p"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["lsvq_1080p"])


class Konvid1k(EvalSetBuilder):
    __doc__ = ("KoNViD-1k (1,200): KoNViD_1k_attributes.csv, columns flickr_id, MOS, SD (1-5; the paper's list "
               "is the same MOS x 20).")
    name = "konvid_1k"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["konvid_1k"])


class LiveVqc(EvalSetBuilder):
    __doc__ = "LIVE-VQC (585): data.mat, variables video_list and mos; videos in Video/."
    name = "live_vqc"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["live_vqc"])


class YoutubeUgc(EvalSetBuilder):
    __doc__ = ("YouTube-UGC (1,020): the MOS workbook, sheet MOS, columns vid and 'MOS full' (1-5). Best guess: "
               "the sheet and column names are those widespread loaders use; the videos are the paper's "
               "<vid>_crf_10_ss_00_t_20.0.mp4 transcodes, else the original <vid>.mkv.")
    name = "youtube_ugc"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["youtube_ugc"])


class LiveYtGaming(EvalSetBuilder):
    __doc__ = ("LIVE-YT-Gaming (600). Best guess: no authoritative description of its score file was found; a "
               "CSV or workbook whose name holds 'MOS' with a video-name column (File, filename, video, name) and "
               "MOS (optionally std) is read.")
    name = "live_yt_gaming"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["live_yt_gaming"])


class Cgvds(EvalSetBuilder):
    __doc__ = ("CGVDS (357). Best guess, as live_yt_gaming: a MOS file (CSV or workbook) with a video-name column "
               "and MOS.")
    name = "cgvds"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["cgvds"])


class LiveYtHfr(EvalSetBuilder):
    __doc__ = ("LIVE-YT-HFR (480): subject_MOS.csv, transposed (File Names / MOS / std rows), as the release's "
               "repository ships it; videos as <name>.mp4 (the paper's names; the release's YUV files converted).")
    name = "live_yt_hfr"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["live_yt_hfr"]) + (
        " The release's videos are raw YUV 4:2:0 at 1920x1080; convert each, e.g. `ffmpeg -f rawvideo -pix_fmt "
        "yuv420p10le -s 1920x1080 -r FPS -i NAME.yuv -c:v libx264 -qp 0 NAME.mp4` (FPS from the name; "
        "-pix_fmt yuv420p for 8-bit files).")


class WaterlooIvc4k(EvalSetBuilder):
    __doc__ = ("Waterloo-IVC-4K (1,200). Best guess, as live_yt_gaming: a MOS file (CSV or workbook) with a "
               "video-name column and MOS; videos <codec>_<content>_<WxH>_<level>.mp4.")
    name = "waterloo_ivc_4k"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["waterloo_ivc_4k"])


class Kvq(EvalSetBuilder):
    __doc__ = "KVQ (2,926, the set's train split): train_data.csv, columns filename (train/NNNN.mp4) and score."
    name = "kvq"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(SETS["kvq"])


BUILDERS: dict[str, type[EvalSetBuilder]] = {cls.name: cls for cls in (
    LsvqTest, Lsvq1080p, Konvid1k, LiveVqc, YoutubeUgc, LiveYtGaming, Cgvds, LiveYtHfr, WaterlooIvc4k, Kvq)}


def builder(name: str, config: str | VqaConfig = "tiny", *, data_dir: str | None = None,
            **kwargs) -> EvalSetBuilder:
    """The builder of set `name` with `config` (a name of CONFIGS or a VqaConfig, e.g.
    `config_for(...)`); `data_dir` as TFDS's (default ~/tensorflow_datasets); kwargs go to
    EvalSetBuilder (slowfast_weights, workers). DatasetError for an unknown set."""
    if name not in BUILDERS:
        raise DatasetError(f"unknown evaluation set '{name}'; the sets: {', '.join(BUILDERS)}")
    return BUILDERS[name](config=config, data_dir=data_dir, **kwargs)


def stale_reason(built: dict[str, Any], chosen) -> str | None:
    """Why a build (its DatasetInfo.metadata, `built`) was not made from `chosen` (what
    metadata.select reads now), in words; None when its source_digest is chosen's."""
    if built.get("source_digest") == metadata_lib.selection_digest(chosen):
        return None
    if "source_digest" not in built:
        return "the build does not record what it was built from (made before builds did)"
    index = {r["id"]: r for r in built.get("index", [])}
    before = set(index) | {str(s.get("id", "")) for s in built.get("skipped", [])}
    now = [str(k) for k in chosen["key"]]

    def differs(a, b) -> bool:
        return not (a == b or (np.isnan(a) and np.isnan(b)))

    changed = sum(1 for k, m, s, p in zip(now, chosen["mos"], chosen["mos_std"], chosen["paper_mos"]) if k in index
                  and any(differs(float(index[k][c]), float(v)) for c, v in (("mos", m), ("mos_std", s),
                                                                           ("paper_mos", p))))
    moved = sum(1 for k, v in zip(now, chosen["video"]) if k in index and index[k]["video"] != str(v))
    parts = [f"{n} {what}" for n, what in ((len(set(now) - before), "video(s) added"),
                                          (len(before - set(now)), "video(s) gone"),
                                          (changed, "video(s) with another MOS or MOS std"),
                                          (moved, "video(s) at another path")) if n]
    return "its manual download changed since it was built: " + (
        ", ".join(parts) if parts else "a video file was replaced (another size)")


def build(name: str, manual_dir: str, config: str | VqaConfig = "tiny", *, data_dir: str | None = None,
          **kwargs) -> EvalSetBuilder:
    """Build set `name` from `manual_dir` unless it is built already from the same state of
    the download (TFDS's own download_and_prepare with DownloadConfig(manual_dir=...));
    returns the builder.

    manual_dir holds the set's release, or one folder per set named as the set. A build
    whose source_digest differs from what metadata.select reads now (another MOS, videos
    added, gone or replaced; or a build that records none) is deleted (its version folder,
    data_dir/name/config/version) and built again, with one line on stderr saying so and
    why (`stale_reason`). Raises MetadataError / MissingVideosError naming the set, file
    and rows (metadata.select) before anything is decoded, DatasetError as `config_for`
    and `_split_generators` do. Turns TFDS's own progress bars off
    (tfds.display_progress_bar(False)) for the process.
    """
    result = builder(name, config, data_dir=data_dir, **kwargs)
    if result.is_prepared():
        chosen = metadata_lib.select(name, metadata_lib.set_root(os.fspath(manual_dir), name),
                                     result.builder_config.subset)
        reason = stale_reason(dict(result.info.metadata or {}), chosen)
        if reason is not None:
            print(f"rebuilding {name}/{result.builder_config.name} in {result.data_dir}: {reason}", file=sys.stderr)
            result.data_path.rmtree()  # epath: a local folder or a bucket's, as TFDS's data_dir may be
            result = builder(name, config, data_dir=data_dir, **kwargs)
    tfds.display_progress_bar(False)  # the builder shows its own bar (w2s_vqa.progress) over the videos
    result.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return result
