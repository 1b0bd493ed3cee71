"""One process of a two-process scoring run (test_batch): every process writes the whole
score table it got.

    python -m tests.score.score_worker STORE ANCHORS WORK OUT_PREFIX PORT RANK
"""

import sys


def main(store: str, anchors: str, work: str, out_prefix: str, port: str, rank: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(rank))
    jax.config.update("jax_default_matmul_precision", "highest")

    from tests.score.conftest import tiny_student_and_prompt
    from w2s_vqa import sharding
    from w2s_vqa.score import batch
    from w2s_vqa.score.anchors import AnchorSet

    student, prompt = tiny_student_and_prompt()
    mesh = sharding.make_mesh((1, -1, 1))
    result = batch.score_videos(student, prompt, AnchorSet.load(anchors), store, mesh, batch_size=8,
                                work_dir=work, student_key="tiny seed 3")
    result.table.to_parquet(f"{out_prefix}-{rank}.parquet")


if __name__ == "__main__":
    main(*sys.argv[1:])
