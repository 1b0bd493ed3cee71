"""Frame strips: a video's sampled frames, side by side, as one small JPEG beside the report.

The frames are the ones the student saw: the store's records (w2s_vqa.store.format.
VideoStore.get, uint8 [F, S, S, 3], upright, sampled by `prepare`), not the source
file, which a report may no longer reach. Up to `frames` of the valid frames, evenly
spaced, each scaled to `height` pixels (Pillow, Lanczos), joined left to right, JPEG
quality 80: a strip of 4 frames 72 px high is a few kilobytes.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

FRAMES_DIR = "frames"


def file_name(video_id: str) -> str:
    """A strip's file name: a digest of the id, so any id (slashes, '<script>') makes a safe name."""
    return "v_" + hashlib.sha1(str(video_id).encode("utf-8")).hexdigest()[:20] + ".jpg"


class FrameStrips:
    """Writes and remembers strips of one store's videos under out_dir/frames.

    store: a store folder (`w2s-vqa prepare`) or None; `strip(id)` is then None for
    every id, as for ids the store lacks or records that cannot be read (counted in
    `missing`, their reason in `errors`)."""

    def __init__(self, store: str | None, out_dir: str, *, frames: int = 4, height: int = 72):
        self.out_dir, self.frames, self.height = out_dir, frames, height
        self.missing = 0
        self.errors: list[str] = []
        self._done: dict[str, str | None] = {}
        self._store = None
        if store:
            from w2s_vqa.store.format import VideoStore

            try:
                self._store = VideoStore(store)
            except (OSError, ValueError) as e:
                self.errors.append(str(e))

    @property
    def available(self) -> bool:
        return self._store is not None

    def strip(self, video_id: str) -> str | None:
        """The strip's path relative to out_dir ("frames/v_....jpg"), None when it cannot be made."""
        video_id = str(video_id)
        if video_id in self._done:
            return self._done[video_id]
        path = None
        if self._store is not None and video_id in self._store:
            try:
                path = self._write(video_id)
            except (OSError, ValueError, KeyError) as e:  # a damaged record: the card says "no frames"
                self.errors.append(f"{video_id}: {e}")
        if path is None:
            self.missing += 1
        self._done[video_id] = path
        return path

    def _write(self, video_id: str) -> str:
        from PIL import Image

        record = self._store.get(video_id)
        frames, mask = np.asarray(record["frames"]), np.asarray(record["frame_mask"], bool)
        valid = np.flatnonzero(mask) if mask.any() else np.arange(len(frames))
        take = valid[np.unique(np.linspace(0, len(valid) - 1, min(self.frames, len(valid))).round().astype(int))]
        tiles = []
        for frame in frames[take]:
            image = Image.fromarray(frame)
            width = max(1, round(image.width * self.height / image.height))
            tiles.append(image.resize((width, self.height), Image.Resampling.LANCZOS))
        strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), self.height), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width + 2
        relative = os.path.join(FRAMES_DIR, file_name(video_id))
        os.makedirs(os.path.join(self.out_dir, FRAMES_DIR), exist_ok=True)
        strip.save(os.path.join(self.out_dir, relative), format="JPEG", quality=80)
        return relative.replace(os.sep, "/")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
