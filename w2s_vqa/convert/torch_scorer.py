"""PyTorch inference on an exported student directory: P(second video better), and scores.

For users who take the trained student back to PyTorch. transformers'
LlavaOnevisionForConditionalGeneration computes the video features exactly as
it always does; the motion tokens, which transformers does not know, are
projected here and placed after each video's newline token, and the whole
sequence goes to the model through `inputs_embeds`.

Video files become the student's inputs by the rule w2s_vqa.json records
(convert.video_inputs: the same sampling, motion features and frame format as
`w2s-vqa prepare`), and `TorchScorer.score` scores them against an anchor directory
(`w2s-vqa anchors`) with the Thurstone solution of the JAX scorer, in numpy and scipy
(convert.anchor_scores). Nothing here imports JAX or the training code.

Needs the `torch` extra (torch and transformers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import LlavaOnevisionForConditionalGeneration

from w2s_vqa import prompt
from w2s_vqa import video as video_lib
from w2s_vqa.convert import anchor_scores
from w2s_vqa.convert.export_files import MOTION_FILE, SETTINGS_FILE, prompt_question
from w2s_vqa.convert.video_inputs import ARRAYS, video_inputs
from w2s_vqa.models.config import HF_CONFIG_FILE, PIXEL_MEAN, PIXEL_STD, StudentConfig
from w2s_vqa.models.llava_qwen_config import is_llava_qwen
from w2s_vqa.store.listing import duplicate_ids, folder_files
from w2s_vqa.store.settings import Settings

# An anchor directory (w2s_vqa.score.anchors, read here without it): its files and version.
ANCHORS_FILE = "anchors.json"
ANCHOR_VIDEOS_FILE = "videos.npz"
ANCHORS_VERSION = 1


class SkippedVideosWarning(UserWarning):
    """Some files were left out of a score table (undecodable, or still images with
    images="skip"); one line says how many and that `TorchScores.skipped` lists them."""


# TorchScores.skipped's columns; TorchScores.table's columns before the P columns.
SKIPPED_COLUMNS = ("id", "path", "reason")
TABLE_COLUMNS = ("id", "path", "kind", "score", "stderr", "low", "high", "latent")
IMAGES_CHOICES = ("skip", "score")


@dataclasses.dataclass
class TorchScores:
    """What `TorchScorer.score` returns.

    table: one row per file scored, in input order: id, path, kind ("video", or "image"
    for a still image scored with images="score"), score, stderr, low, high, latent
    (float64; stderr, low, high NaN in mode "paper"), then p_vs_<anchor id> per anchor.
    skipped: one row per file left out, in input order: id, path, reason (strings); the
    reason of a still image left out by images="skip" is w2s_vqa.video.IMAGE_REASON, any
    other names why the file could not be decoded. No rows when nothing was skipped.
    """

    table: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def images_scored(self) -> int:
        """Still images in the table (kind "image")."""
        return int((self.table["kind"] == video_lib.IMAGE).sum())

    @property
    def images_skipped(self) -> int:
        """Still images left out (images="skip")."""
        return int(self.skipped["reason"].map(video_lib.is_image_reason).sum()) if len(self.skipped) else 0


class TorchScorer:
    """transformers' LLaVA-OneVision plus our motion projector, on any directory transformers loads.

    Frames and motion chunks come from the arguments, else from w2s_vqa.json (our
    export writes it), else from StudentConfig's defaults; a directory without
    motion_projector.safetensors (a plain Hugging Face checkpoint) has no motion
    tokens. Raises FileNotFoundError for a missing config.json or tokenizer.json,
    ValueError for motion chunks asked of a directory without a motion projector.
    """

    def __init__(self, hf_dir: str, *, num_frames: int | None = None, num_motion_chunks: int | None = None,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", attn_implementation: str = "eager"):
        self.hf_dir = os.fspath(hf_dir)
        # What w2s_vqa.json records (store.settings.Settings); nothing for a plain HF directory.
        self.settings = Settings.from_json(_read_json(os.path.join(self.hf_dir, SETTINGS_FILE), missing_ok=True))
        config_json = _read_json(os.path.join(self.hf_dir, HF_CONFIG_FILE), missing_ok=False)
        if is_llava_qwen(config_json):
            raise ValueError(f"{self.hf_dir}: the authors' LLaVA-NeXT llava_qwen layout, which transformers does "
                             f"not load; export it first: w2s-vqa export --hf {self.hf_dir} --out DIR")
        motion_path = os.path.join(self.hf_dir, MOTION_FILE)
        has_motion = os.path.exists(motion_path)
        num_frames = num_frames if num_frames is not None else self.settings.get("num_frames")
        if num_motion_chunks is None:
            num_motion_chunks = self.settings.get("num_motion_chunks") if has_motion else 0
        if num_motion_chunks and not has_motion:
            raise ValueError(f"{motion_path}: missing, so the student has no motion tokens; "
                             f"num_motion_chunks={num_motion_chunks} cannot be honoured")
        ours = {k: v for k, v in dict(num_frames=num_frames, num_motion_chunks=num_motion_chunks,
                                      motion_dim=self.settings.get("motion_dim")).items() if v is not None}
        self.cfg = StudentConfig.from_hf_config(config_json, strict=False, **ours)
        self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            self.hf_dir, dtype=dtype, attn_implementation=attn_implementation).to(device).eval()
        self.device, self.dtype = device, dtype
        hidden = self.model.config.text_config.hidden_size
        self.motion_projector = torch.nn.Sequential(
            torch.nn.Linear(self.cfg.motion_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
        if has_motion:
            weights = load_file(motion_path)
            self.motion_projector.load_state_dict({
                "0.weight": weights["linear_1.weight"], "0.bias": weights["linear_1.bias"],
                "2.weight": weights["linear_2.weight"], "2.bias": weights["linear_2.bias"]})
        self.motion_projector.to(device=device, dtype=dtype).eval()
        self.num_frames = self.cfg.num_frames
        self.num_motion_chunks = self.cfg.num_motion_chunks
        self.tokens_per_frame = self.cfg.tokens_per_frame
        tokenizer = prompt.load_tokenizer(self.hf_dir)
        self.prompt = prompt.build_pair_prompt(tokenizer, video_token_id=self.cfg.video_token_index,
                                               tokens_per_video=self.cfg.tokens_per_video,
                                               question=prompt_question(self.hf_dir))

    @torch.no_grad()
    def logits(self, pixel_values: np.ndarray, motion: np.ndarray | None = None,
               frame_mask: np.ndarray | None = None, motion_mask: np.ndarray | None = None) -> torch.Tensor:
        """pixel_values [B, 2, F, H, W, 3] uint8, motion [B, 2, M, 256] -> vocabulary logits [B, L, V]
        over the pair prompt (`self.prompt.input_ids`)."""
        b, nv, f = pixel_values.shape[:3]
        m = self.num_motion_chunks
        if f != self.num_frames:
            raise ValueError(f"pixel_values hold {f} frames per video; the student takes {self.num_frames}")
        config = self.model.config
        pixels = torch.as_tensor(np.asarray(pixel_values), device=self.device)
        pixels = (pixels.to(self.dtype) / 255.0 - PIXEL_MEAN) / PIXEL_STD
        pixels = pixels.reshape(b * nv, f, *pixels.shape[3:]).permute(0, 1, 4, 2, 3)
        video = self.model.model.get_video_features(
            pixels, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy).pooler_output
        parts = [video]
        if m:
            motion = np.zeros((b, nv, m, self.cfg.motion_dim), np.float32) if motion is None else motion
            motion = torch.as_tensor(np.asarray(motion), device=self.device, dtype=self.dtype)
            parts.append(self.motion_projector(motion.reshape(b * nv, m, -1)))
        tokens = torch.cat(parts, dim=1).reshape(-1, video.shape[-1])

        ids = torch.as_tensor(np.repeat(self.prompt.input_ids[None], b, axis=0), device=self.device).long()
        embeds = self.model.get_input_embeddings()(ids)
        is_video = ids == config.video_token_index
        embeds = embeds.masked_scatter(is_video[..., None], tokens.to(embeds.dtype))

        frame_mask = np.ones((b, nv, f), bool) if frame_mask is None else np.asarray(frame_mask, bool)
        motion_mask = np.ones((b, nv, m), bool) if motion_mask is None else np.asarray(motion_mask, bool)
        valid = np.concatenate([np.repeat(frame_mask, self.tokens_per_frame, axis=-1),
                                np.ones((b, nv, 1), bool), motion_mask], axis=-1).reshape(b, -1)
        attention_mask = torch.ones_like(ids)
        attention_mask[is_video] = torch.as_tensor(valid.reshape(-1), device=self.device).long()

        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits

    def level_logits(self, *args, **kwargs) -> np.ndarray:
        """Logits [B, 5] of the level tokens at the answer position (the prompt's last token)."""
        logits = self.logits(*args, **kwargs)[:, -1]
        level_ids = torch.as_tensor(self.prompt.level_token_ids, device=self.device)
        return logits[:, level_ids].float().cpu().numpy()

    def preference(self, *args, **kwargs) -> np.ndarray:
        """P(second video better than first) per pair, [B]."""
        return prompt.preference(self.level_logits(*args, **kwargs).astype(np.float64))

    # ------------------------------------------------------------------ video files
    @property
    def input_settings(self) -> Settings:
        """How a video file becomes the student's inputs: the student's shapes, then
        w2s_vqa.json's settings (an export writes them, export_files.input_settings); a
        directory without them computes frame statistics when it has motion tokens."""
        kind = "frame_stats" if self.num_motion_chunks else "none"
        return Settings.from_student(self.cfg).merged(self.settings).merged(Settings(motion_features=kind))

    def video_inputs(self, path: str, *, settings: dict | None = None, features: np.ndarray | None = None) -> dict:
        """One video file as the student's inputs (convert.video_inputs; `settings` default
        `input_settings`): frames uint8 [F, S, S, 3], frame_mask [F], motion float32 [M, D],
        motion_mask [M]. Raises w2s_vqa.video.VideoError for a file that cannot be decoded."""
        return video_inputs(path, {**self.input_settings, **(settings or {})}, features=features)

    def _pair_logits(self, firsts: Sequence[dict], seconds: Sequence[dict], batch_size: int) -> np.ndarray:
        """Level logits float32 [N, 5] of the pairs (firsts[n], seconds[n]), `batch_size` per forward."""
        out = []
        for start in range(0, len(firsts), batch_size):
            pairs = list(zip(firsts[start:start + batch_size], seconds[start:start + batch_size]))
            stacked = {k: np.stack([np.stack([a[k], b[k]]) for a, b in pairs]) for k in ARRAYS}
            out.append(self.level_logits(stacked["frames"], stacked["motion"], stacked["frame_mask"],
                                         stacked["motion_mask"]))
        return np.concatenate(out) if out else np.zeros((0, len(prompt.LEVELS)), np.float32)

    def preference_of_files(self, first: str, second: str) -> float:
        """P(the video file `second` is better than `first`)."""
        return float(prompt.preference(self._pair_logits([self.video_inputs(first)], [self.video_inputs(second)],
                                                         1).astype(np.float64))[0])

    # ------------------------------------------------------------------ scores against anchors
    def anchor_logits(self, anchors: "Anchors", *, batch_size: int = 8) -> np.ndarray:
        """float32 [K, K, 5]: the level logits of every anchor pair (first anchor i, second
        anchor j, i < j; zeros elsewhere), the anchors ordered by MOS, as the JAX scorer asks them."""
        k = len(anchors.ids)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        videos = anchors.video_list()
        logits = self._pair_logits([videos[i] for i, _ in pairs], [videos[j] for _, j in pairs], batch_size)
        out = np.zeros((k, k, len(prompt.LEVELS)), np.float32)
        for (i, j), row in zip(pairs, logits):
            out[i, j] = row
        return out

    def score(self, paths: "str | os.PathLike | Sequence[str | os.PathLike]", anchors: "str | Anchors", *,
              mode: str = "map",
              ids: Sequence[str] | None = None, features: Sequence[np.ndarray] | None = None,
              batch_size: int = 8, images: str = "skip") -> TorchScores:
        """Scores of video files against an anchor directory, as `w2s-vqa score` gives them.

        The anchors must have been made as the student reads videos (every setting both
        record: `Anchors.check_fits`); each video is decoded so, compared with every anchor (anchor first, the video
        second) and scored by convert.anchor_scores (mode "map": the MOS scale with a
        standard error and 95% interval; "paper": the authors' 0-100).
        `paths`: a list of video files, one video file, or a folder, every file under which
        is tried (as `w2s-vqa score --inputs FOLDER` lists it: store.listing.folder_files).
        ids default to the file names without extension, for a folder to paths relative to
        it without extension (sub/a for sub/a.mp4), as the CLI names them.
        Still images (a JPEG, PNG, any one-frame stream: w2s_vqa.video.is_still_image):
        `images="skip"` (default, as `w2s-vqa score`) leaves them out, listed with
        IMAGE_REASON; "score" scores them by the paper's rule for images, one frame and
        all-zero motion features (docs/method.md; convert.video_inputs), kind "image".
        Returns a TorchScores: `table`, one row per file scored, and `skipped`, the files
        left out with the reason of each (undecodable, or still images); when any was
        left out, one SkippedVideosWarning line says how many of each and where the list is.
        `features`: per video its own per-second motion features [seconds, D], needed when
        the anchors were made with motion_features "precomputed" (e.g. SlowFast).
        Raises TypeError for `paths` neither a path nor a list of paths, FileNotFoundError
        for a path that is neither a file nor a folder, ValueError for two videos with one id
        (give `ids`, or a folder), an anchor directory that does not fit the student,
        precomputed motion without `features`, or `images` not "skip" or "score".
        """
        if images not in IMAGES_CHOICES:
            raise ValueError(f"images={images!r}: expected one of {', '.join(IMAGES_CHOICES)}")
        paths, listed_ids = _listed(paths)
        ids = [str(i) for i in ids] if ids is not None else listed_ids
        if len(ids) != len(paths) or (features is not None and len(features) != len(paths)):
            raise ValueError(f"{len(ids)} ids and {'no' if features is None else len(features)} feature arrays "
                             f"for {len(paths)} videos")
        duplicates = duplicate_ids(zip(ids, paths))
        if duplicates:  # one id, two rows: a table joined by id would mix them up
            raise ValueError(f"TorchScorer.score: {duplicates}; give ids=[...], or their folder (ids are then paths "
                             "relative to it, as `w2s-vqa score` names them)")
        anchors = anchors if isinstance(anchors, Anchors) else Anchors.load(anchors)
        anchors.check_fits(self)
        settings = self.input_settings.merged(anchors.settings)
        anchor_logits = self.anchor_logits(anchors, batch_size=batch_size)
        anchor_videos = anchors.video_list()
        rows, skipped = [], []
        for n, (video_id, path) in enumerate(zip(ids, paths)):
            try:
                inputs = video_inputs(path, settings, features=None if features is None else features[n])
            except (video_lib.VideoError, OSError) as e:  # a broken video costs itself only
                # The path has its own column: the reason is worded as `w2s-vqa score`'s skipped table words it.
                skipped.append({"id": video_id, "path": path, "reason": video_lib.skip_reason(e)})
                continue
            if inputs["media"] == video_lib.IMAGE and images == "skip":
                skipped.append({"id": video_id, "path": path, "reason": video_lib.IMAGE_REASON})
                continue
            test_logits = self._pair_logits(anchor_videos, [inputs] * len(anchor_videos), batch_size)
            result = anchor_scores.score(anchor_logits, test_logits, anchors.mos, mode=mode)
            rows.append({"id": video_id, "path": path, "kind": inputs["media"],
                         **{k: result[k] for k in ("score", "stderr", "low", "high", "latent")},
                         **{f"p_vs_{a}": float(p) for a, p in zip(anchors.ids, result["p"])}})
        out = TorchScores(pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *(f"p_vs_{a}" for a in anchors.ids)]),
                          pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)))
        if skipped:
            warnings.warn(_skipped_line(out, len(paths)), SkippedVideosWarning, stacklevel=2)
        return out


def _listed(paths) -> tuple[list[str], list[str]]:
    """(paths, default ids) of what `TorchScorer.score` is given: one path (a video file, or
    a folder listed as the CLI lists it) or a list of paths (ids: file names without
    extension). Raises TypeError for anything else, naming what to give, and
    FileNotFoundError for a single path that does not exist."""
    if isinstance(paths, (str, os.PathLike)):
        path = os.fspath(paths)
        if isinstance(path, bytes):
            raise TypeError(f"paths={paths!r}: give a str path, not bytes")
        if os.path.isdir(path):
            listed = folder_files(path)
            return [p for _, p in listed], [i for i, _ in listed]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such video file or folder")
        return [path], [os.path.splitext(os.path.basename(path))[0]]
    if isinstance(paths, (bytes, bytearray, dict)) or not hasattr(paths, "__iter__"):
        raise TypeError(f"paths: give a video file, a folder or a list of video files (str or os.PathLike), not "
                        f"{type(paths).__name__}")
    paths = list(paths)
    wrong = next((p for p in paths if not isinstance(p, (str, os.PathLike))), None)
    if wrong is not None:
        raise TypeError(f"paths: every item must be a video file's path (str or os.PathLike); found "
                        f"{type(wrong).__name__} {wrong!r}")
    paths = [os.fspath(p) for p in paths]
    return paths, [os.path.splitext(os.path.basename(p))[0] for p in paths]


def _skipped_line(scores: TorchScores, total: int) -> str:
    """One line: how many files `score` left out, of which kind, the first failure, and where the list is."""
    still = scores.images_skipped
    failed = scores.skipped[~scores.skipped["reason"].map(video_lib.is_image_reason)]
    parts = []
    if len(failed):
        first = failed.iloc[0]
        parts.append(f"{len(failed)} that could not be decoded (first: {first['path']}: {first['reason']})")
    if still:
        parts.append(f"{still} still image(s) (images='score' scores them: one frame, zero motion)")
    return (f"TorchScorer.score: skipped {len(scores.skipped)} of {total} files: {'; '.join(parts)}; "
            "the result's .skipped lists each with its reason")


class Anchors:
    """An anchor directory (`w2s-vqa anchors`; format in w2s_vqa.score.anchors), read without
    JAX: ids and MOS (increasing), the Settings the anchors' videos were made with, and
    their inputs (ARRAYS, K rows each)."""

    def __init__(self, ids: Sequence[str], mos, settings, videos: dict, path: str = ""):
        self.ids, self.mos, self.videos, self.path = list(ids), np.asarray(mos, np.float64), videos, path
        self.settings = settings if isinstance(settings, Settings) else Settings.from_json(settings)

    @classmethod
    def load(cls, directory: str) -> "Anchors":
        """Raises FileNotFoundError for a missing anchors.json or videos.npz, ValueError for
        another version, fewer than two anchors, MOS that do not increase, or videos that
        do not match the anchors."""
        directory = os.fspath(directory)
        meta = _read_json(os.path.join(directory, ANCHORS_FILE), missing_ok=False,
                          what="an anchor directory (make one with `w2s-vqa anchors`)")
        if meta.get("version") != ANCHORS_VERSION:
            raise ValueError(f"{directory}/{ANCHORS_FILE}: version {meta.get('version')!r}, this code reads "
                             f"{ANCHORS_VERSION}")
        ids = [str(a["id"]) for a in meta.get("anchors", [])]
        mos = np.asarray([float(a["mos"]) for a in meta.get("anchors", [])], np.float64)
        videos_path = os.path.join(directory, ANCHOR_VIDEOS_FILE)
        if not os.path.exists(videos_path):
            raise FileNotFoundError(f"{videos_path}: missing; the anchors' videos are part of an anchor directory")
        with np.load(videos_path, allow_pickle=False) as data:
            videos = {k: np.asarray(data[k]) for k in ARRAYS if k in data.files}
        if len(ids) < 2 or not (np.diff(mos) > 0).all():
            raise ValueError(f"{directory}: an anchor set needs at least two anchors of increasing MOS, has "
                             f"{list(zip(ids, mos.tolist()))}")
        short = [k for k in ARRAYS if k not in videos or len(videos[k]) != len(ids)]
        if short:
            raise ValueError(f"{videos_path}: {', '.join(short)} missing or not one row per anchor ({len(ids)})")
        return cls(ids, mos, Settings.from_json(meta.get("settings")), videos, directory)

    def video_list(self) -> list[dict]:
        return [{k: self.videos[k][i] for k in ARRAYS} for i in range(len(self.ids))]

    def check_fits(self, scorer: TorchScorer) -> None:
        """ValueError naming every setting in which the anchors' videos (their shapes, then
        anchors.json's settings) differ from how the student reads a video
        (`TorchScorer.input_settings`), with both values."""
        frames, motion = self.videos["frames"], self.videos["motion"]
        shapes = Settings(num_frames=frames.shape[1], image_size=frames.shape[2], num_motion_chunks=motion.shape[1],
                          motion_dim=motion.shape[2])
        scorer.input_settings.check_fits(shapes.merged(self.settings), mine="the student",
                                         theirs="the anchors' videos", where=self.path or "anchors", error=ValueError)


def _read_json(path: str, *, missing_ok: bool, what: str = "a Hugging Face LLaVA-OneVision directory") -> dict:
    if not os.path.exists(path):
        if missing_ok:
            return {}
        raise FileNotFoundError(f"{path}: missing; expected {what}")
    with open(path) as f:
        return json.load(f)
