"""The settings that turn a video into the student's inputs: one frozen `Settings`.

A store (store.json), an anchor set (anchors.json "settings"), a TFDS evaluation set
(its metadata), an export (w2s_vqa.json) and a run's config (data.*) all hold these
settings, and every pairing of a student with videos compares them in full
(`Settings.check_fits`): videos made another way than the student learnt from give
other scores with no error otherwise (motion features absent, frames JPEG-decoded or
not, decoding capped elsewhere).

Fields, as config.data.* names them:

    num_frames            frames per video (F)
    image_size            frame side in pixels (S)
    num_motion_chunks     motion chunks per video (M)
    motion_dim            motion feature width (D)
    motion_features       "none", "precomputed", "frame_stats" or "slowfast"
    frame_times           "centered" (frames at (k + 0.5) s) or "released" (frame index
                          k * round(fps) from 0, the authors' released inference):
                          w2s_vqa.video.sample
    motion_min_chunks     motion slots used at least (0: one per whole second only), the
                          last chunk repeated, as the authors' released motion (8)
    frame_format          "jpeg" or "raw": how the store kept frames
    jpeg_quality          1..100, for frame_format "jpeg"
    distort_max_side      decoding cap for computed motion and variants: longer side in
                          pixels (0: native)
    distort_max_seconds   and the first seconds decoded (0: all)
    slowfast_digest       motion_features "slowfast": SHA-256 of the weights file
    slowfast_weights      that file's path: used to compute features, never recorded
                          or compared (a moved file continues its store)

A field is None where a record does not say it ("not recorded": an anchor set or an
export written before the field was recorded, a student known by its shapes alone);
`check_fits` compares the fields both sides record. A full record (one holding
num_frames) written before frame_times or motion_min_chunks was recorded reads them as
"centered" and 0, the only rules there were then. Nothing here imports JAX, pandas
or the store's reader: PyTorch-side code reads settings too.
"""

from __future__ import annotations

import collections.abc
import dataclasses
from typing import Any, Mapping

# data.motion_features: zeros; the source's own .npy (manifest column "motion"); or,
# computed for every video, variants included: frame statistics (w2s_vqa.video.motion)
# or SlowFast-R50 fast-pathway features (w2s_vqa.models.slowfast).
MOTION_FEATURES = ("none", "precomputed", "frame_stats", "slowfast")
FRAME_FORMATS = ("jpeg", "raw")
# data.frame_times: w2s_vqa.video.sample.FRAME_TIMES (not imported: this module stays free of
# the decoder); the first is the default, and what a record without the field was made with.
FRAME_TIMES = ("centered", "released")
# Names the same fields had in an export's w2s_vqa.json before it recorded Settings' own
# names; read as aliases so older exports stay readable.
_OLD_NAMES = {"decode_max_side": "distort_max_side", "decode_max_seconds": "distort_max_seconds"}


class SettingsError(ValueError):
    """Settings out of range, or videos made with other settings than a student reads;
    the message names every key concerned with its values."""


@dataclasses.dataclass(frozen=True)
class Settings(collections.abc.Mapping):
    """How a video becomes the student's inputs (module docstring); None: not recorded.

    Also a read-only mapping of its recorded JSON fields (`to_json`), so that
    `dict(settings)`, `**settings` and `settings["num_frames"]` read as a record does.
    """

    num_frames: int | None = None
    image_size: int | None = None
    num_motion_chunks: int | None = None
    motion_dim: int | None = None
    motion_features: str | None = None
    frame_times: str | None = None
    motion_min_chunks: int | None = None
    frame_format: str | None = None
    jpeg_quality: int | None = None
    distort_max_side: int | None = None
    distort_max_seconds: float | None = None
    slowfast_digest: str | None = None
    slowfast_weights: str | None = dataclasses.field(default=None, compare=False)

    # ------------------------------------------------------------------ making
    @classmethod
    def from_config(cls, config) -> Settings:
        """From a run config's data section (`config.data`; a mapping of data.* keys is
        taken as it is). The SlowFast digest is not computed here (store.prepare does,
        when it reads the file): a run config names the settings its inputs need.
        Raises SettingsError naming the data.* key of a value out of range."""
        data = config.data if hasattr(config, "data") else config
        motion = str(data["motion_features"])
        weights = str(data.get("slowfast_weights", "") or "") if motion == "slowfast" else ""
        settings = cls(num_frames=int(data["num_frames"]), image_size=int(data["image_size"]),
                       num_motion_chunks=int(data["num_motion_chunks"]), motion_dim=int(data["motion_dim"]),
                       motion_features=motion, frame_times=str(data.get("frame_times", FRAME_TIMES[0])),
                       motion_min_chunks=int(data.get("motion_min_chunks", 0)),
                       frame_format=str(data["frame_format"]),
                       jpeg_quality=int(data["jpeg_quality"]), distort_max_side=int(data["distort_max_side"]),
                       distort_max_seconds=float(data["distort_max_seconds"]), slowfast_weights=weights or None)
        settings.validate()
        return settings

    @classmethod
    def from_student(cls, cfg) -> Settings:
        """The fields a StudentConfig (models.config) fixes: its frames, image size, motion
        chunks and motion width; the rest not recorded."""
        return cls(num_frames=int(cfg.num_frames), image_size=int(cfg.vision.image_size),
                   num_motion_chunks=int(cfg.num_motion_chunks), motion_dim=int(cfg.motion_dim))

    @classmethod
    def from_json(cls, record: Mapping[str, Any] | None) -> Settings:
        """From a record holding the fields by name (store.json, an anchor set's or a TFDS
        set's "settings", an export's w2s_vqa.json; other keys are ignored, absent or
        null fields are not recorded). An export's older decode_max_side and
        decode_max_seconds are read as distort_max_side and distort_max_seconds."""
        record = dict(record or {})
        if record.get("num_frames") is not None and record.get("frame_times") is None:
            record["frame_times"] = FRAME_TIMES[0]  # written before the field: the only rule then
        if record.get("num_frames") is not None and record.get("motion_min_chunks") is None:
            record["motion_min_chunks"] = 0
        for old, new in _OLD_NAMES.items():
            if old in record and new not in record:
                record[new] = record[old]
        values = {}
        for field in dataclasses.fields(cls):
            value = record.get(field.name)
            if field.name == "slowfast_weights" or value is None:
                continue
            kind = _KINDS[field.name]
            values[field.name] = kind(value)
        return cls(**values)

    def merged(self, other: Settings) -> Settings:
        """These settings with the fields they do not record taken from `other`."""
        return dataclasses.replace(self, **{f.name: getattr(other, f.name) for f in dataclasses.fields(self)
                                            if getattr(self, f.name) is None and getattr(other, f.name) is not None})

    def validate(self) -> None:
        """Raise SettingsError naming each recorded data.* value out of range."""
        problems = []
        if self.frame_times is not None and self.frame_times not in FRAME_TIMES:
            problems.append(f"data.frame_times must be one of {', '.join(FRAME_TIMES)}, not '{self.frame_times}'")
        if self.frame_format is not None and self.frame_format not in FRAME_FORMATS:
            problems.append(f"data.frame_format must be one of {FRAME_FORMATS}, not '{self.frame_format}'")
        if self.motion_features is not None and self.motion_features not in MOTION_FEATURES:
            problems.append(f"data.motion_features must be one of {', '.join(MOTION_FEATURES)}, "
                            f"not '{self.motion_features}'")
        if self.motion_min_chunks is not None and self.motion_min_chunks < 0:
            problems.append(f"data.motion_min_chunks={self.motion_min_chunks}: must be 0 or more")
        sizes = ("num_frames", "image_size", "num_motion_chunks", "motion_dim")
        small = [f"data.{k}={getattr(self, k)}" for k in sizes if getattr(self, k) is not None and getattr(self, k) < 1]
        if small:
            problems.append(f"{', '.join(small)}: must be positive")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            problems.append(f"data.jpeg_quality must be in 1..100, not {self.jpeg_quality}")
        if problems:
            raise SettingsError("; ".join(problems))

    # ------------------------------------------------------------------ records
    def to_json(self) -> dict[str, Any]:
        """The recorded fields as JSON values, by name (slowfast_weights never; slowfast_digest
        only for motion_features "slowfast", as store.json has always held it)."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "slowfast_weights" and getattr(self, f.name) is not None}
        if self.motion_features != "slowfast":
            record.pop("slowfast_digest", None)
        return record

    def apply_to(self, config) -> None:
        """Set config.data.<field> to each recorded field (slowfast_weights included when
        known), so that the config makes videos as these settings do."""
        for key, value in self.to_json().items():
            if key in config.data:
                config.data[key] = value
        if self.slowfast_weights:
            config.data.slowfast_weights = self.slowfast_weights

    # Mapping over to_json(): what `dict(...)`, `**` and [] read.
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self):
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    # ------------------------------------------------------------------ pairing
    def differences(self, other: Settings, *, mine: str = "this", theirs: str = "that") -> list[str]:
        """One "key: value (mine) vs value (theirs)" entry per field both record and hold
        differently, in field order."""
        other = other if isinstance(other, Settings) else Settings.from_json(other)
        out = []
        for key in _KINDS:
            a, b = getattr(self, key), getattr(other, key)
            if a is not None and b is not None and a != b:
                out.append(f"{key}: {a!r} ({mine}) vs {b!r} ({theirs})")
        return out

    def check_fits(self, other: Settings | Mapping[str, Any], *, mine: str = "the student",
                   theirs: str = "the videos", where: str = "", error: type[Exception] = SettingsError) -> None:
        """Raise `error` (default SettingsError) naming every field in which `other`
        differs from these settings, with both values, in one message: videos made with
        `other` do not fit a student that reads inputs made with these. `mine` and
        `theirs` name the two sides in the message; `where` (a path) starts it."""
        wrong = self.differences(other, mine=mine, theirs=theirs)
        if wrong:
            raise error(f"{where + ': ' if where else ''}{theirs} were made with other settings than {mine} reads: "
                        f"{'; '.join(wrong)}; make them again with {mine}'s data.* values, or set those to "
                        f"{theirs}'s")


_KINDS = {"num_frames": int, "image_size": int, "num_motion_chunks": int, "motion_dim": int, "motion_features": str,
          "frame_times": str, "motion_min_chunks": int, "frame_format": str, "jpeg_quality": int, "distort_max_side": int, "distort_max_seconds": float,
          "slowfast_digest": str}
# The fields a run config sets (data.*), in order: all but the digest.
CONFIG_FIELDS = tuple(k for k in _KINDS if k != "slowfast_digest")
