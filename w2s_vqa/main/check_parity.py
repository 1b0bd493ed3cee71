"""`w2s-vqa check-parity --hf DIR`: compare our student with transformers on a checkpoint."""

from __future__ import annotations

from w2s_vqa.main.common import json_line


def _positive(text: str) -> int:
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_arguments(parser) -> None:
    from w2s_vqa.convert import parity

    parser.add_argument("--hf", required=True, help="Hugging Face LLaVA-OneVision directory (ours or transformers'), or hub id org/name[@revision]")
    parser.add_argument("--pairs", type=_positive, default=2, help="random video pairs to run (at least 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames per video (default: the directory's w2s_vqa.json, else the student's default)")
    parser.add_argument("--num-motion-chunks", type=int, default=None,
                        help="motion tokens per video (default: w2s_vqa.json's; 0 without a motion projector)")
    parser.add_argument("--tolerance", type=float, default=parity.DEFAULT_LOGIT_TOLERANCE,
                        help="max abs logit difference")
    parser.add_argument("--kl-tolerance", type=float, default=parity.DEFAULT_KL_TOLERANCE,
                        help="max KL of the level distribution")


def run(args) -> int:
    from w2s_vqa import hub
    from w2s_vqa.convert import parity

    args.hf = hub.resolve(args.hf, what="--hf")  # a hub id org/name[@revision] -> its local snapshot

    report = parity.check_parity(args.hf, pairs=args.pairs, seed=args.seed, num_frames=args.num_frames,
                                  num_motion_chunks=args.num_motion_chunks)
    ok = report["max_abs_logit_diff"] <= args.tolerance and report["level_kl"] <= args.kl_tolerance
    report.update(tolerance=args.tolerance, kl_tolerance=args.kl_tolerance, ok=ok)
    print(f"max abs logit difference {report['max_abs_logit_diff']:.3g} (tolerance {args.tolerance:g}), "
          f"level KL {report['level_kl']:.3g} (tolerance {args.kl_tolerance:g}): {'OK' if ok else 'FAILED'}")
    print(json_line(report))
    return 0 if ok else 1
