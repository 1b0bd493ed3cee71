"""`w2s-vqa train --workdir DIR`: train the student on a pair table (sharded, checkpointed, resumable)."""

from __future__ import annotations

import os

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.main.common import add_config_arguments, json_line, load_config


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl and TensorBoard events; a rerun resumes from here")
    parser.add_argument("--allow-config-change", nargs="*", metavar="KEY", default=None,
                        help="resume although the config differs from the checkpoint's: in the KEYs named "
                             "(fnmatch patterns, e.g. optim.learning_rate 'data.*'), or in any key without KEYs")


def run(args) -> int:
    from w2s_vqa import runtime

    config = load_config(args)
    from w2s_vqa import pipeline

    # Before the trainer starts compiling and its checkpointer's threads: unset inputs are one line.
    pipeline.require_inputs({"data.store": config.data.store, "data.pairs": config.data.pairs})
    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    import jax

    from w2s_vqa import multihost
    from w2s_vqa.train import loop

    multihost.initialize(config)
    allow = args.allow_config_change
    allow = False if allow is None else (tuple(allow) or True)
    info = loop.Trainer(config, args.workdir, allow_config_change=allow).run()
    if jax.process_index() == 0:
        metrics = os.path.join(info.workdir, workdir_lib.METRICS_FILE)
        if info.stopped:
            saved = (f"checkpoint saved: step {info.saved_step} in {info.checkpoint_dir}" if info.saved_step is not None
                     else "no checkpoint saved (stopped before the first step)")
            print(f"stopped by {info.stopped} at step {info.steps} of {config.train.num_steps}; {saved}; "
                  f"metrics in {metrics}. To resume, run the same command again (--workdir {args.workdir})")
        elif info.resumed_from == info.steps:
            print(f"nothing to train: {info.workdir} is at step {info.steps} and train.num_steps is "
                  f"{config.train.num_steps}; raise it (--set train.num_steps=N) to train on")
        else:
            print(f"trained {info.steps} steps in {info.wall_seconds:.1f} s"
                  f"{f' (resumed from step {info.resumed_from})' if info.resumed_from is not None else ''}; "
                  f"checkpoints in {info.checkpoint_dir}, metrics in {metrics}")
        print(json_line({"steps": info.steps, "resumed_from": info.resumed_from, "stopped": info.stopped,
                          "saved_step": info.saved_step, "wall_seconds": info.wall_seconds,
                          "checkpoints": info.checkpoint_dir, **info.last_metrics, **info.last_eval}))
    return info.exit_status
