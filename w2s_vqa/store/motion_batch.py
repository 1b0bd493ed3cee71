"""SlowFast features of many videos' chunks, batched across videos: the motion step of `prepare`.

With data.motion_features = "slowfast", every video and variant has up to
data.num_motion_chunks chunks (w2s_vqa.video.motion.slowfast_chunks), of which a
short clip uses only the first few. Running the network once per video pads each
call up to one of the extractor's batch sizes and pays one call's overhead per
video; `batched_features` instead collects the used chunks of consecutive videos
until `max_chunks` are waiting and runs one extractor call over all of them (the
extractor splits a call into batches of its own: one chunk per compiled call on
the CPU, where that was fastest, `max_batch` on accelerators), then gives each
video its features back, in input order. `MotionThroughput` counts the chunks
and the seconds spent in the network, for the summary's chunks per second.
`worker_extractor` builds the network in a worker process with the CPU settings
of w2s_vqa.runtime, which cut its CPU time per chunk by about a quarter
(docs/2026-12-slowfast-speed.md).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Hashable, Iterable, Iterator, NamedTuple

import numpy as np


@dataclasses.dataclass
class MotionThroughput:
    """Chunks through the motion network and the wall seconds its calls took (compilation
    of each batch shape included, once per process), summed over videos, shards and workers."""

    chunks: int = 0
    seconds: float = 0.0
    calls: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: "MotionThroughput") -> None:
        self.chunks += other.chunks
        self.seconds += other.seconds
        self.calls += other.calls

    def to_json(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "seconds": self.seconds, "calls": self.calls}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "MotionThroughput":
        """The counts `to_json` wrote; zeros for None (e.g. a shard written before they were kept)."""
        data = data or {}
        return cls(int(data.get("chunks", 0)), float(data.get("seconds", 0.0)), int(data.get("calls", 0)))

    def summary(self) -> str:
        """One line, e.g. "motion: 120 SlowFast chunks in 40.1 s, 3.0 chunks/s (12 calls)"."""
        return (f"motion: {self.chunks} SlowFast chunks in {self.seconds:.1f} s, "
                f"{self.chunks_per_s:.1f} chunks/s ({self.calls} calls)")


def worker_extractor(weights: str, max_chunks: int):
    """A w2s_vqa.models.slowfast.Extractor of the weights file `weights` with max_batch =
    `max_chunks`, after `runtime.tune_cpu_host()` (glibc keeps freed memory, XLA:CPU runs
    on the calling thread): call it in a process before anything there starts JAX's
    backend, as a spawned prepare worker is. Raises WeightsError (w2s_vqa.models.slowfast)
    for a weights file that does not fit."""
    from w2s_vqa import runtime

    runtime.tune_cpu_host()
    from w2s_vqa.models import slowfast

    return slowfast.Extractor(slowfast.load(weights), max_batch=max_chunks)


class VideoFeatures(NamedTuple):
    """One video's result: float32 features [M, D] (zeros in unused slots) and its bool mask [M],
    or, for input that could not be used, None and None with `error` saying why."""

    key: Hashable
    features: np.ndarray | None
    mask: np.ndarray | None
    error: str | None = None


def batched_features(extractor: Callable[[np.ndarray], np.ndarray],
                     videos: Iterable[tuple[Hashable, np.ndarray, np.ndarray]], *, max_chunks: int,
                     dim: int = 256, throughput: MotionThroughput | None = None) -> Iterator[VideoFeatures]:
    """Yield a VideoFeatures per (key, chunks, mask) of `videos`, in the same order.

    `chunks` are uint8 [M, T, H, W, 3] and `mask` bool [M] with the used slots
    first, as `slowfast_chunks` gives them. The used chunks of consecutive videos
    wait until at least `max_chunks` of them do (or `videos` ends); then one call
    `extractor(uint8 [n, T, H, W, 3]) -> [n, dim]` (a w2s_vqa.models.slowfast.
    Extractor, best built with max_batch = max_chunks) computes them all, and the
    waiting videos are yielded. So a consumer holds at most about `max_chunks`
    chunks plus one video's. Chunks of different frame counts or sizes never share
    a call. A video whose chunks or mask do not fit is yielded with `error` set
    (naming its key and what is wrong) and costs no other video anything; errors
    of the extractor itself propagate. `throughput`, when given, is increased by
    each call's chunks and wall seconds. Raises ValueError for max_chunks < 1.
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    pending: list[tuple[Hashable, np.ndarray | None, np.ndarray | None, int, str | None]] = []
    waiting = 0
    for key, chunks, mask in videos:
        used, error = _used_chunks(chunks, mask)
        if error is not None:
            pending.append((key, None, None, 0, f"{key}: {error}"))
            continue
        shape = next((c.shape[1:] for _, c, _, u, _ in pending if c is not None and u), None)
        if used and shape is not None and shape != chunks.shape[1:]:  # another size: run what waits first
            yield from _run(extractor, pending, dim, throughput)
            pending, waiting = [], 0
        pending.append((key, chunks, mask, used, None))
        waiting += used
        if waiting >= max_chunks:
            yield from _run(extractor, pending, dim, throughput)
            pending, waiting = [], 0
    yield from _run(extractor, pending, dim, throughput)


def _used_chunks(chunks, mask) -> tuple[int, str | None]:
    """(number of used slots, None), or (0, what is wrong)."""
    chunks, mask = np.asarray(chunks), np.asarray(mask)
    if chunks.dtype != np.uint8 or chunks.ndim != 5 or chunks.shape[-1] != 3:
        return 0, f"chunks must be uint8 RGB [M, T, H, W, 3], got {chunks.dtype} {list(chunks.shape)}"
    if mask.dtype != np.bool_ or mask.shape != chunks.shape[:1]:
        return 0, f"mask must be bool [{len(chunks)}], got {mask.dtype} {list(mask.shape)}"
    used = int(mask.sum())
    if not mask[:used].all():
        return 0, "mask must mark the used slots first"
    return used, None


def _run(extractor, pending, dim: int, throughput: MotionThroughput | None) -> Iterator[VideoFeatures]:
    used = [(c[:u] if u else None) for _, c, _, u, _ in pending]
    parts = [u for u in used if u is not None]
    features = np.zeros((0, dim), np.float32)
    if parts:
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        start = time.perf_counter()
        features = np.asarray(extractor(batch), np.float32)
        if throughput is not None:
            throughput.add(MotionThroughput(len(batch), time.perf_counter() - start, 1))
        if features.shape != (len(batch), dim):
            raise ValueError(f"the motion extractor gave features {list(features.shape)} for {len(batch)} chunks, "
                             f"expected [{len(batch)}, {dim}]")
    offset = 0
    for key, chunks, mask, n, error in pending:
        if error is not None:
            yield VideoFeatures(key, None, None, error)
            continue
        out = np.zeros((len(mask), dim), np.float32)
        out[:n] = features[offset:offset + n]
        offset += n
        yield VideoFeatures(key, out, np.asarray(mask, bool))
