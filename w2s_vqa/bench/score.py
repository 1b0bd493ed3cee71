"""Scoring throughput: the scoring path against the naive path, videos per second.

    python -m w2s_vqa.bench.score --preset small

Same student (random weights), same K anchors and test videos (random pixels and motion
features), same process. The scoring path (w2s_vqa.score.scorer.Scorer) runs each test
video's frames through the vision tower once and each pair's decoder from the anchor's
cached prompt prefix; the naive path (score.reference.naive_level_logits) runs every
test-anchor pair as a full forward of both videos. Both take `--batch` test videos (K
times as many pairs) per jitted call. The anchors' own work (their tokens, prefixes and
K x K matrix), done once per run, is timed apart and left out of the rate. Each repeat
times both paths back to back (interleaved), after one untimed warm-up call each; the
figures are medians with the spread over repeats. Model FLOPs of each path (matmuls
only, train.cost_model's count: causal attention over the (query, key) pairs its kernel
computes) and this machine's matmul peak, measured in the same run, give each path's
utilization. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from w2s_vqa.bench import common
from w2s_vqa.models import config as config_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.train import cost_model


def scoring_flops(cfg, anchors: int, videos: int, prefix: int, suffix: int) -> float:
    """Matmul FLOPs the scoring path spends on `videos` test videos against `anchors`
    anchors: one video's tokens each, then per pair the decoder on the `suffix` tokens
    after a `prefix`-token cached prefix (the prefix's keys are attended, not recomputed)."""
    per_video = cost_model.forward_flops(cfg, 1, 0)["total"] / 2  # one video's tokens: vision, projectors
    return float(videos * per_video + cost_model.decoder_flops(cfg, videos * anchors, suffix, prefix=prefix))


def naive_flops(cfg, pairs: int, length: int) -> float:
    """Matmul FLOPs of `pairs` full forward passes of `length` tokens (train.cost_model)."""
    return cost_model.forward_flops(cfg, pairs, length)["total"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--k", type=int, default=5, help="anchors (the paper: 5)")
    parser.add_argument("--videos", type=int, default=4, help="test videos per repeat")
    parser.add_argument("--batch", type=int, default=2, help="test videos per jitted call, both paths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--attention", default="xla", choices=config_lib.ATTENTION_KERNELS,
                        help="the student's attention kernel, both paths (cudnn: NVIDIA GPUs, bfloat16)")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    runtime.tune_cpu_host()  # first, before anything starts JAX's backend
    import jax

    from w2s_vqa import prompt, sharding
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.score import reference
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.anchors import AnchorSet

    jax.config.update("jax_default_matmul_precision", "highest")
    if args.videos % args.batch:
        parser.error(f"--videos {args.videos} must be a multiple of --batch {args.batch}")
    cfg = config_lib.preset(args.preset, dtype=args.dtype, attention=args.attention)
    model = student_lib.create(cfg, seed=0)
    tok = prompt.load_tokenizer(TINY_TOKENIZER)  # level and prompt ids; a preset's vocabulary holds them
    pp = prompt.build_pair_prompt(tok, video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)
    rng = np.random.default_rng(0)

    def videos(n):
        f, s, m = cfg.num_frames, cfg.vision.image_size, cfg.num_motion_chunks
        return {"frames": rng.integers(0, 256, (n, f, s, s, 3), dtype=np.uint8),
                "frame_mask": np.ones((n, f), bool),
                "motion": rng.normal(size=(n, m, cfg.motion_dim)).astype(np.float32),
                "motion_mask": np.ones((n, m), bool)}

    anchors = AnchorSet(ids=tuple(f"anchor{i}" for i in range(args.k)), mos=np.linspace(40.0, 80.0, args.k),
                        videos=videos(args.k), settings={})
    tests = videos(args.videos)
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])

    start = time.perf_counter()
    scorer = scorer_lib.Scorer(model, pp, anchors, mesh, batch_size=args.batch)
    anchor_seconds = time.perf_counter() - start  # compilation included: once per run
    start = time.perf_counter()
    naive_forward = reference.naive_forward(model, pp)

    def run_scoring():
        return scorer.level_logits_of(tests)

    def run_naive():
        return reference.naive_level_logits(model, pp, anchors, tests, pairs_per_call=args.batch * args.k,
                                            forward=naive_forward)

    ours, naive = run_scoring(), run_naive()  # warm-up: compiles both
    warmup_seconds = time.perf_counter() - start
    difference = float(np.abs(ours - naive).max())
    times = {"scoring": [], "naive": []}
    for _ in range(args.repeats):
        for name, fn in (("scoring", run_scoring), ("naive", run_naive)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rates = {name: [args.videos / t for t in ts] for name, ts in times.items()}
    ratios = [n / s for s, n in zip(times["scoring"], times["naive"])]
    split = student_lib.split_pair_prompt(pp.input_ids, pp.video_token_id, pp.tokens_per_video)
    flops = {"scoring": scoring_flops(cfg, args.k, args.videos, split, pp.length - split),
             "naive": naive_flops(cfg, args.videos * args.k, pp.length)}
    peak = common.jax_matmul_peak(dtype=args.dtype)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    figures = {
        "benchmark": "score",
        "preset": args.preset,
        "dtype": args.dtype,
        "attention": args.attention,
        "anchors": args.k,
        "test_videos": args.videos,
        "batch_videos": args.batch,
        "sequence_length": pp.length,
        "prefix_length": split,
        "machine": common.machine(),
        "device": jax.devices()[0].device_kind,
        "scoring_videos_per_s": args.videos / median["scoring"],
        "naive_videos_per_s": args.videos / median["naive"],
        "speedup": median["naive"] / median["scoring"],
        "speedup_per_repeat": ratios,
        "scoring_videos_per_s_all": rates["scoring"],
        "naive_videos_per_s_all": rates["naive"],
        "scoring_seconds_all": times["scoring"],
        "naive_seconds_all": times["naive"],
        "anchor_setup_s": anchor_seconds,
        "warmup_s": warmup_seconds,
        "model_gflops_scoring": flops["scoring"] / 1e9,
        "model_gflops_naive": flops["naive"] / 1e9,
        "flops_ratio": flops["naive"] / flops["scoring"],
        "matmul_peak_gflops": peak / 1e9,
        "scoring_mfu": flops["scoring"] / median["scoring"] / peak,
        "naive_mfu": flops["naive"] / median["naive"] / peak,
        "max_abs_logit_difference": difference,
    }
    print(f"{args.preset}, K={args.k}, {args.videos} test videos, {args.batch} per call, {args.dtype}: scoring "
          f"{figures['scoring_videos_per_s']:.3f} videos/s ({min(rates['scoring']):.3f}-{max(rates['scoring']):.3f}), "
          f"naive {figures['naive_videos_per_s']:.3f} ({min(rates['naive']):.3f}-{max(rates['naive']):.3f}); "
          f"speedup {figures['speedup']:.2f}x (per repeat {min(ratios):.2f}-{max(ratios):.2f}; model FLOPs "
          f"{figures['flops_ratio']:.2f}x fewer); MFU scoring {figures['scoring_mfu']:.1%}, naive "
          f"{figures['naive_mfu']:.1%}; anchors once {anchor_seconds:.1f} s; max logit difference {difference:.1e}")
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
