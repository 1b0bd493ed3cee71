"""One process of a two-process relabeling (test_stages): the stage-1 student of a finished
run relabels the pool; process 0 writes the new pairs.

    python -m tests.stages.relabel_worker RUN_DIR CONFIG_JSON OUT PORT RANK
"""

import json
import sys


def main(run_dir: str, config_json: str, out: str, port: str, rank: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(rank))
    jax.config.update("jax_default_matmul_precision", "highest")

    import ml_collections

    from w2s_vqa import sharding
    from w2s_vqa.labels import pair_table
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.score.student_source import load_for_scoring
    from w2s_vqa.stages import relabel, run
    from w2s_vqa.store.format import VideoStore

    with open(config_json) as f:
        config = ml_collections.ConfigDict(json.load(f))
    mesh = sharding.make_mesh((1, -1, 1))  # 8 devices over the two processes
    loaded = load_for_scoring(checkpoint=run.stage_dir(run_dir, 1), step="latest", mesh=mesh)
    scorer = scorer_lib.Scorer(loaded.student, loaded.prompt, AnchorSet.load(config.stages.anchors), mesh,
                               batch_size=8)
    with VideoStore(config.data.store) as store:
        relabel.relabel(scorer, store, config, stage=2, previous=pair_table.read_pairs(config.data.pairs),
                        student=loaded.student, out_dir=out, student_key=f"stage 1 step {loaded.step}",
                        progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
