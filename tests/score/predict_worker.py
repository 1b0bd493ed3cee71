"""One process of a two-process predict_pairs run (test_predict): every process writes
the whole prediction table it got.

    python -m tests.score.predict_worker POOL TABLE OUT_PREFIX PORT RANK
"""

import pathlib
import sys


def main(pool: str, table: str, out_prefix: str, port: str, rank: str) -> None:
    from tests.train.conftest import train_config
    from w2s_vqa import multihost
    from w2s_vqa.score.predict import predict_pairs
    from w2s_vqa.train import loop

    config = train_config(pathlib.Path(pool), "mesh.shape=(1,-1,1)",
                          f"distributed.coordinator_address='127.0.0.1:{port}'", "distributed.num_processes=2",
                          f"distributed.process_id={rank}", "distributed.cpu_collectives='gloo'")
    multihost.initialize(config)
    trainer = loop.Trainer(config, f"{out_prefix}-run{rank}")
    predictions = predict_pairs(trainer.initial_state(), table, config.data.store, trainer.prompt, trainer.mesh,
                                batch_size=8, forward=trainer.eval_step)
    predictions.to_parquet(f"{out_prefix}-{rank}.parquet")


if __name__ == "__main__":
    main(*sys.argv[1:])
