"""The motion features of a store record: a source's precomputed per-second features
(`load_precomputed`, `choose_chunks`) or SlowFast-R50's, computed from the record's own
frames (`slowfast_motion`). Frame statistics are w2s_vqa.video.motion's; store.prepare
picks among the kinds by data.motion_features (store.settings).
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np

from w2s_vqa import video, workdir
from w2s_vqa.store.format import StoreError
from w2s_vqa.store.motion_batch import MotionThroughput
from w2s_vqa.store.settings import Settings
from w2s_vqa.store.sources import Source
from w2s_vqa.video import motion as motion_lib


class MotionFeaturesError(ValueError):
    """A precomputed motion feature file that cannot be used; the message names the file."""


def load_precomputed(source: Source, settings: Settings) -> np.ndarray | None:
    """The source's precomputed motion features float32 [chunks, D], row j for second j
    (rows counted from 0); None unless data.motion_features is "precomputed".

    Raises MotionFeaturesError naming the file for: no file given, a file that is
    missing or not a .npy array, a shape other than [chunks >= 1, data.motion_dim],
    a dtype that is not a real number (bool, integer or float), and values that are
    NaN or infinite as float32 (a float64 beyond float32's range included), listing
    the rows that hold them: training would otherwise stop later on a non-finite loss.
    """
    if settings.motion_features != "precomputed":  # none, or computed per video from its frames
        return None
    if not source.motion:
        raise MotionFeaturesError("no motion features given (data.motion_features='precomputed'); "
                                  "set the manifest's 'motion' column")
    name = f"motion features {source.motion}"
    try:
        features = np.load(source.motion, allow_pickle=False)
    except FileNotFoundError:
        raise MotionFeaturesError(f"{name}: no such file") from None
    except (OSError, ValueError, EOFError) as e:  # not .npy, truncated, or an object array (pickle refused)
        raise MotionFeaturesError(f"{name}: not a readable .npy array ({e})") from None
    if not isinstance(features, np.ndarray):  # an .npz archive loads as a mapping
        raise MotionFeaturesError(f"{name}: not a .npy array but {type(features).__name__}")
    d = settings.motion_dim
    if features.ndim != 2 or features.shape[1] != d or features.shape[0] == 0:
        raise MotionFeaturesError(f"{name}: shape {list(features.shape)}, expected [chunks, {d}] "
                                  "(one row per second, at least one; data.motion_dim columns)")
    if features.dtype.kind not in "biuf":
        raise MotionFeaturesError(f"{name}: dtype {features.dtype} is not a real number type "
                                  "(bool, integer or float)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported below
        features = features.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad_rows):
        shown = ", ".join(map(str, bad_rows[:10].tolist())) + (", ..." if len(bad_rows) > 10 else "")
        raise MotionFeaturesError(f"{name}: NaN or infinite values (as float32) in {len(bad_rows)} of "
                                  f"{len(features)} chunk rows: {shown} (row j = second j, counted from 0)")
    return features


def choose_chunks(features: np.ndarray | None, seconds: float, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Motion float32 [M, D] and mask bool [M] from per-second `features` (or zeros for None).

    The chunks are those `video.chunk_choice` picks, the rule frame statistics
    and SlowFast chunks follow, over the first `seconds` of the clip (the span
    its frames were sampled from) or the rows the file has, if fewer. So for a
    file with one row per whole second, the chosen seconds are the ones
    data.motion_features='frame_stats' would describe.
    """
    m, d = settings.num_motion_chunks, settings.motion_dim
    motion, mask = np.zeros((m, d), np.float32), np.zeros((m,), bool)
    if features is None:
        return motion, mask
    chosen = features[video.chunk_choice(min(seconds, len(features)), m)]
    motion[: len(chosen)] = chosen
    mask[: len(chosen)] = True
    return motion, mask


@functools.lru_cache(maxsize=1)
def _slowfast_extractor(path: str, digest: str, max_batch: int):
    """The SlowFast fast pathway of `path`, loaded once per process (each prepare worker)."""
    # Worker processes share one accelerator: each takes the memory it uses, not the 75%
    # JAX reserves by default (unless the user says otherwise; read when the backend starts).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from w2s_vqa.store.motion_batch import worker_extractor

    if workdir.file_digest(path) != digest:
        raise StoreError(f"{path}: data.slowfast_weights changed since this prepare run started")
    return worker_extractor(path, max_batch)


# Chunks through the network in this process and the seconds they took: write_shard reports
# each shard's share, prepare's summary their chunks per second.
THROUGHPUT = MotionThroughput()


def slowfast_motion(frames: np.ndarray, times: np.ndarray, seconds: float,
                     settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Motion float32 [M, 256] and mask bool [M] of one video: SlowFast-R50's fast-pathway
    feature of each chunk `motion_lib.slowfast_chunks` cuts from its own frames."""
    chunks, mask = motion_lib.slowfast_chunks(frames, times, seconds, settings.num_motion_chunks)
    features = np.zeros((settings.num_motion_chunks, settings.motion_dim), np.float32)
    used = int(mask.sum())  # the used slots come first
    if used:
        extractor = _slowfast_extractor(settings.slowfast_weights, settings.slowfast_digest,
                                        settings.num_motion_chunks)
        started = time.perf_counter()
        features[:used] = extractor(chunks[:used])
        THROUGHPUT.add(MotionThroughput(used, time.perf_counter() - started, 1))
    return features, mask
