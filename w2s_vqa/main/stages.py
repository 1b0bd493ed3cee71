"""`w2s-vqa stages --workdir W [--stages N]`: the weak-to-strong iterations, resumable.

    w2s-vqa stages --config configs/w2s_llava_ov_7b.py:tpu --workdir gs://bucket/w2s \\
        --set data.store=... --set data.pairs=stage1_train.parquet --set evals.val.pairs=... \\
        --set stages.anchors=anchors/ --set stages.teachers=teachers.csv --stages 3

Stage 1 trains on data.pairs; the stage-k student scores the pool (data.store) against
stages.anchors and labels stage k+1's hard cases (misranked synthetic pairs, gMAD pairs
against each teacher of stages.teachers); stage k+1 trains from stage k. Rerunning the
same command after a kill continues where it stopped (w2s_vqa.stages.run).

--hf DIR starts stage 1 from a model directory (it sets model.hf_dir, as `finetune --hf` and
`score --hf` name theirs): a Hugging Face or export directory, the authors' released
llava_qwen checkpoint (with configs/w2s_released.py: its inputs, its question, and with
objective.kind "released" its trainer's loss), or a hub id. Every stage's student is asked
the question its training asked (train.prompts), relabeling included.
"""

from __future__ import annotations

import sys

from w2s_vqa.main.common import add_config_arguments, json_line, load_config, resolve_model_dirs


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--hf", metavar="DIR", default=None,
                        help="stage 1 starts from this model directory (sets model.hf_dir): Hugging Face, export "
                             "or the authors' released llava_qwen checkpoint, or a hub id")
    parser.add_argument("--workdir", required=True, help="W/stage_k per stage, W/results.md at the end; rerun resumes")
    parser.add_argument("--stages", type=int, default=None, metavar="N",
                        help="how many stages (default stages.num_stages: 2 on the tiny default, 3 in the paper's "
                             "config)")
    parser.add_argument("--allow-config-change", nargs="*", metavar="KEY", default=None,
                        help="rerun although the config differs from the workdir's: in the KEYs named (fnmatch "
                             "patterns) or in any key without KEYs")


def run(args) -> int:
    from w2s_vqa import runtime

    config = load_config(args)
    if args.hf:
        config.model.hf_dir = args.hf
    resolve_model_dirs(config)  # hub ids -> local snapshots, before anything reads them
    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    import jax

    from w2s_vqa import multihost
    from w2s_vqa.stages import run as stages_lib

    num_stages = int(config.stages.num_stages if args.stages is None else args.stages)
    stages_lib.check_config(config, num_stages)
    if num_stages > 1:  # the pool and teacher table, read now rather than after stage 1
        from w2s_vqa.stages import relabel

        for note in relabel.check_inputs(config):
            print(f"w2s-vqa stages: warning: {note}", file=sys.stderr)
    multihost.initialize(config)
    allow = args.allow_config_change
    allow = False if allow is None else (tuple(allow) or True)
    summary = stages_lib.run_stages(config, args.workdir, num_stages=args.stages, allow_config_change=allow)
    if jax.process_index() == 0:
        print(stages_lib.markdown(summary), end="")
        if summary["stopped"]:
            print(f"stopped in stage {summary['stopped']}; run the same command again to resume (--workdir "
                  f"{args.workdir})")
        print(f"table:   {summary['markdown']}\nresults: {summary['results']}")
        print(json_line({"workdir": summary["workdir"], "stopped": summary["stopped"],
                          "stages": [{k: s[k] for k in ("stage", "steps", "pairs", "val")} for s in summary["stages"]],
                          "results": summary["results"]}))
    return summary["exit_status"]
