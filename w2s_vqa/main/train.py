"""`w2s-vqa train --workdir DIR`: train the student on a pair table (sharded, checkpointed, resumable)."""

from __future__ import annotations

import os

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.main.common import add_config_arguments, json_line, load_config, resolve_model_dirs


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
    resolve_model_dirs(config)  # hub ids -> local snapshots, before anything reads them
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
        cache = compilation_cache_report(jax.config.jax_compilation_cache_dir)
        print(cache["line"])
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
                          "checkpoints": info.checkpoint_dir, "compilation_cache": cache["json"],
                          **info.last_metrics, **info.last_eval}))
    return info.exit_status


# The jitted train step's program name, as JAX logs it: jit_ + the function's name
# (w2s_vqa.train.step.make_train_step's `step`).
TRAIN_STEP_PROGRAM = "jit_step"


def compilation_cache_report(directory: str | None) -> dict:
    """Whether this process's train step came from JAX's persistent compilation cache
    (w2s_vqa.runtime.cache_events): {"line": one line for the log, "json": {"dir", "step",
    "hits", "misses", "not_written"}}, "step" one of "cache" (loaded), "compiled" (compiled
    and written for the next launch), "compiled, not kept" (under runtime.compilation_cache_min_*),
    "off" (no cache) or "unknown" (no train step compiled in this process: nothing to train)."""
    from w2s_vqa import runtime

    events = runtime.cache_events().summary()
    if not directory:
        step = "off"
    elif TRAIN_STEP_PROGRAM in events["hits"]:
        step = "cache"
    elif TRAIN_STEP_PROGRAM in events["not_written"]:
        step = "compiled, not kept"
    elif TRAIN_STEP_PROGRAM in events["misses"]:
        step = "compiled"
    else:
        step = "unknown"
    where = {"off": "no compilation cache (runtime.compilation_cache_dir is \"\")",
             "cache": f"train step loaded from the compilation cache {directory}",
             "compiled": f"train step compiled and written to the compilation cache {directory}",
             "compiled, not kept": (f"train step compiled, not written to the compilation cache {directory} "
                                    "(under runtime.compilation_cache_min_compile_seconds or _min_entry_bytes)"),
             "unknown": f"no train step compiled (compilation cache {directory})"}[step]
    others = len(events["hits"]) - (step == "cache")
    line = where + (f"; {others} other programs loaded from it" if others > 0 else "")
    return {"line": line, "json": {"dir": directory, "step": step, **events}}
