"""`w2s-vqa train --workdir DIR`: train the student on a pair table (sharded, checkpointed, resumable)."""

from __future__ import annotations

import json
import os

from w2s_vqa.main.common import add_config_arguments, load_config


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--workdir", required=True,
                        help="checkpoints, metrics.jsonl and TensorBoard events; a rerun resumes from here")


def run(args) -> int:
    from w2s_vqa import runtime

    config = load_config(args)
    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    import jax

    from w2s_vqa.train import loop

    loop.maybe_initialize_distributed(config)
    info = loop.Trainer(config, args.workdir).run()
    if jax.process_index() == 0:
        print(f"trained {info.steps} steps in {info.wall_seconds:.1f} s"
              f"{f' (resumed from step {info.resumed_from})' if info.resumed_from is not None else ''}; "
              f"checkpoints in {info.checkpoint_dir}, metrics in {os.path.join(info.workdir, 'metrics.jsonl')}")
        print(json.dumps({"steps": info.steps, "resumed_from": info.resumed_from, "wall_seconds": info.wall_seconds,
                          "checkpoints": info.checkpoint_dir, **info.last_metrics, **info.last_eval}))
    return 0
