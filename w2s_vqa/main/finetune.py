"""`w2s-vqa finetune`: a weak-to-strong student fine-tuned on one MOS-labeled set, over random splits.

    w2s-vqa finetune (--checkpoint W2S_RUN [--step latest|best|N] | --hf DIR) --videos FOLDER --mos TABLE \\
        --name SET --workdir W [--splits N] [--anchors K] [--config C] [--set key=value]

--hf starts from a model directory instead of a training run: a Hugging Face or export
directory, or the authors' released llava_qwen checkpoint (with configs/w2s_released.py,
which gives its inputs, prompt and, with objective.kind "released", its loss), or a hub id.

The set is a folder of videos and a `file,mos` table (w2s_vqa/datasets/lists/*.csv; `file` names
a video relative to the folder, with or without its extension; an optional `mos_std`, `std`
or `sd` column gives each video's standard deviation of ratings). Each of N random
splits by video (finetune.splits, default the field's 10; finetune.train_fraction 0.8)
trains from the checkpoint on MOS pairs of its training videos (five-way labels from MOS
differences) and scores its test videos, before and after, against K anchors chosen among
its training videos. Writes W/results.md and W/results.json (per split SRCC/PLCC/KRCC before
and after, and their median over the splits, the figure the field reports); rerun the
same command to resume, or with a larger --splits to add splits; a rerun with other settings
is refused, naming each (w2s_vqa/finetune/__init__.py says what each file is). The last line printed
is one JSON object (figures not yet known are null).
"""

from __future__ import annotations

import math
import os

from w2s_vqa.main.common import (add_config_arguments, check_checkpoint, json_line, load_config, non_negative_int,
                                 resolve_model_dirs)
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    from w2s_vqa.train.checkpoint import parse_step

    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="W2S_RUN",
                        help="the weak-to-strong run's workdir (or its checkpoints/ folder) to start from")
    source.add_argument("--hf", metavar="DIR",
                        help="or a model directory to start from: Hugging Face, export or the authors' released "
                             "llava_qwen checkpoint, or a hub id")
    parser.add_argument("--step", type=parse_step, default="latest",
                        help="its step: latest (default), best (its train.best_metric) or a number")
    parser.add_argument("--videos", required=True, metavar="FOLDER", help="the set's folder of videos")
    parser.add_argument("--mos", required=True, metavar="TABLE",
                        help="the set's file,mos table (file relative to FOLDER, with or without its extension; "
                             "an optional mos_std, std or sd column: each video's standard deviation of ratings)")
    parser.add_argument("--name", required=True, metavar="SET", help="the set's name (konvid_1k, kvq, ...)")
    parser.add_argument("--workdir", required=True, metavar="W",
                        help="store, splits, runs and results; a rerun resumes from here (refused if its settings "
                             "differ, but for --splits)")
    parser.add_argument("--splits", type=int, default=None, metavar="N",
                        help="random splits by video (default: finetune.splits, the field's 10); a rerun with more "
                             "adds splits")
    parser.add_argument("--anchors", type=int, default=5, metavar="K",
                        help="anchors per split, picked among its training videos by MOS (default 5, the paper's)")
    parser.add_argument("--mode", choices=("map", "paper"), default="map",
                        help="test scores: map (default, the anchors' MOS scale) or paper (0-100)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, metavar="N",
                        help="resamples for each split's 95%% intervals (0: none)")
    parser.add_argument("--batch-size", type=non_negative_int, default=0, metavar="N",
                        help="test videos per scoring call (default 0: 8, rounded up to the mesh's batch parts)")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="processes decoding videos (default 0; 0 or 1: in this process)")


def run(args) -> int:
    from w2s_vqa import runtime

    config = load_config(args)
    check_checkpoint(args)  # a stages workdir: one line naming its stages, before other inputs
    resolve_model_dirs(config)  # hub ids -> local snapshots, before anything reads them
    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    import jax

    from w2s_vqa import finetune, multihost
    from w2s_vqa.train import signals

    # Settings, the work directory, the set's table and folder fail here, before JAX's
    # processes join or a checkpoint is read.
    finetune.check_inputs(config, workdir_lib.absolute(args.workdir), splits=args.splits, anchors_k=args.anchors)
    finetune.read_set(args.videos, args.mos, args.name)
    multihost.initialize(config)
    hf_dir = None
    if args.hf:
        from w2s_vqa import hub

        hf_dir = hub.resolve(args.hf, what="--hf")
    results = finetune.finetune(config, checkpoint=args.checkpoint, hf_dir=hf_dir, step=args.step, videos=args.videos,
                                mos_table=args.mos, set_name=args.name, workdir=args.workdir,
                                anchors_k=args.anchors, splits=args.splits, bootstrap=args.bootstrap,
                                batch_size=args.batch_size, workers=args.workers, mode=args.mode, progress=True)
    stopped = results["stopped"]
    if jax.process_index() == 0:
        workdir = results["workdir"]
        print(finetune.markdown(results), end="")
        for entry in results["skipped"][:10]:
            print(f"skipped {entry['file']}: {entry['reason']}")
        if len(results["skipped"]) > 10:
            print(f"... {len(results['skipped']) - 10} more in {os.path.join(workdir, finetune.RESULTS_JSON)}")
        if stopped:
            print(f"stopped by {stopped} after {results['splits_done']} of {results['splits_requested']} splits; "
                  f"rerun the same command to resume (--workdir {args.workdir})")
        print(f"tables:  {os.path.join(workdir, finetune.RESULTS_MD)}\n"
              f"results: {os.path.join(workdir, finetune.RESULTS_JSON)}")
        median = results["median"]
        summary = {
            "workdir": workdir, "results": os.path.join(workdir, finetune.RESULTS_JSON), "set": results["set"],
            "checkpoint": results["checkpoint"], "step": results["step"], "hf": results.get("hf"),
            "splits": results["splits_done"],
            "splits_requested": results["splits_requested"], "stopped": stopped,
            "srcc": median[finetune.AFTER]["srcc"], "plcc": median[finetune.AFTER]["plcc"],
            "w2s_srcc": median[finetune.BEFORE]["srcc"], "w2s_plcc": median[finetune.BEFORE]["plcc"],
            "skipped": len(results["skipped"]), "notes": results.get("notes", [])}
        # Strict JSON: a figure no split has yet (stopped before the first) is null, not NaN.
        print(json_line({k: None if isinstance(v, float) and not math.isfinite(v) else v
                          for k, v in summary.items()}, allow_nan=False))
    return signals.exit_status(stopped)
