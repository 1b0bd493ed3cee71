"""`w2s-vqa export --out DIR`: write a student as a Hugging Face / PyTorch directory.

The source is a training checkpoint (`--checkpoint WORKDIR [--step N|latest|best]`, the
latest step by default; `best` is the step with the highest train.best_metric, read
into host memory whatever devices wrote it), a Hugging Face directory (`--hf`, e.g. to add our
motion projector and settings to a public checkpoint) or a preset with random
weights (`--preset`, for trying the tools on the tiny configuration). The last line is one
JSON object: the directory, the files written and the source.
"""

from __future__ import annotations

import shutil
import tempfile

from w2s_vqa import prompt
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.models import config as config_lib
from w2s_vqa.convert import hf, llava_next
from w2s_vqa.main.common import check_checkpoint, json_line
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a training run's workdir (or its checkpoints/ folder)")
    source.add_argument("--hf", help="Hugging Face LLaVA-OneVision directory, or hub id org/name[@revision], to start from")
    source.add_argument("--preset", choices=sorted(config_lib.PRESETS), help="random weights of a preset")
    parser.add_argument("--out", required=True, help="directory to write (must be empty or absent); a bucket URL "
                        "(gs://...) is uploaded, config.json last")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")
    parser.add_argument("--tokenizer", default=None,
                        help="directory with tokenizer.json (default: the source's, or the tiny tokenizer)")
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--num-motion-chunks", type=int, default=None)
    parser.add_argument("--step", default=None, metavar="N|latest|best",
                        help="with --checkpoint: a step number, latest (the default) or best (highest "
                             "train.best_metric among saved steps)")
    parser.add_argument("--seed", type=int, default=0, help="initialization seed for random weights")


def run(args) -> int:
    from w2s_vqa import hub
    from w2s_vqa.models import student

    check_checkpoint(args)  # a stages workdir: one line naming its stages, before other inputs
    # Hugging Face hub ids (org/name[@revision]) become their local snapshot directories.
    if args.hf:
        args.hf = hub.resolve(args.hf, what="--hf")
    if args.tokenizer:
        args.tokenizer = hub.resolve(args.tokenizer, what="--tokenizer")

    ours_video = {k: v for k, v in dict(num_frames=args.num_frames,
                                        num_motion_chunks=args.num_motion_chunks).items() if v is not None}
    extra, data, staging = {}, None, None
    if args.checkpoint:
        from w2s_vqa.train.checkpoint import host_mesh, load_checkpoint_student

        if ours_video:
            raise ValueError("--num-frames and --num-motion-chunks come from the checkpoint's config")
        model, run_config, step = load_checkpoint_student(args.checkpoint, args.step, mesh=host_mesh())
        tokenizer = args.tokenizer or config_lib.tokenizer_dir(run_config)
        extra = {"checkpoint": workdir_lib.absolute(args.checkpoint), "step": step}
    elif args.hf:
        model = hf.load_student(args.hf, seed=args.seed, **ours_video)
        tokenizer = args.tokenizer or args.hf
        if llava_next.is_llava_qwen_dir(args.hf):
            # The authors' released layout: the export records the question it was trained with,
            # and its motion tokens are SlowFast features the user brings (precomputed).
            extra = {"question": prompt.RELEASED_QUESTION, "source_layout": "llava_qwen"}
            data = {"motion_features": "precomputed"}
    else:
        model = student.create(config_lib.preset(args.preset, **ours_video), seed=args.seed)
        tokenizer = args.tokenizer or TINY_TOKENIZER
    source_tokenizer = tokenizer
    try:
        if llava_next.is_llava_qwen_dir(tokenizer):
            # The authors' Qwen2 tokenizer gains <image> and <video>, as transformers' conversion adds them.
            staging = tempfile.mkdtemp(prefix="w2s_vqa_tokenizer_")
            tokenizer = llava_next.write_export_tokenizer(tokenizer, staging, model.cfg)
        written = hf.save_student(model, args.out, tokenizer_dir=tokenizer, overwrite=args.overwrite,
                                  extra_settings=extra, data=data)
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"exported to {workdir_lib.absolute(args.out)}: {', '.join(written)}")
    missing = hf.missing_tokenizer_files(source_tokenizer)
    if missing:
        print(f"not in {source_tokenizer}, so not exported: {', '.join(missing)}")
    source = {"checkpoint": workdir_lib.absolute(args.checkpoint)} if args.checkpoint else \
        {"hf": args.hf} if args.hf else {"preset": args.preset}
    print(json_line({"out": workdir_lib.absolute(args.out), "files": list(written), **source, **extra,
                     "tokenizer_missing": list(missing)}))
    return 0
