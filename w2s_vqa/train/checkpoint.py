"""Training checkpoints with Orbax: state, data iterator and config in one step directory.

Each saved step holds three items:
  state   parameters (trainable and frozen), optimizer state and step, sharded
          arrays written asynchronously (Orbax's StandardCheckpointHandler);
  data    every host's Grain iterator state (Grain's own Orbax handler writes
          one JSON file per process), so a restart sees the batches an
          uninterrupted run would have seen;
  config  the run's config as JSON, which export and resume read back.
The manager keeps the last `keep_last` steps plus the `keep_best` best by a
validation metric; Orbax writes a step under a temporary name and renames it
when complete, so a killed run never leaves a half-written latest step.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


class Checkpointer:
    def __init__(self, directory: str, *, keep_last: int = 2, keep_best: int = 1,
                 best_metric: str | None = None, best_mode: str = "max", async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        preserve = [policies.LatestN(n=keep_last)]
        if best_metric and keep_best > 0:
            preserve.append(policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                                           n=keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_names=("state", "data", "config"),
            item_handlers={"data": grain.checkpoint.CheckpointHandler()},
            options=options,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, iterator, config: dict, metrics: dict | None = None) -> bool:
        """Start saving `step` (asynchronously for the arrays); True if a save began."""
        metrics = None if metrics is None or self.best_metric not in metrics else metrics
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(iterator),
                config=ocp.args.JsonSave(config),
            ),
            metrics=metrics,
            force=True,
        )

    def restore(self, step: int, abstract_state: Any, iterator) -> tuple[Any, dict]:
        """(state placed as `abstract_state`'s shardings say, config); `iterator` is set in place."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(iterator),
                config=ocp.args.JsonRestore(),
            ),
        )
        return restored.state, restored.config

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Only the state (for export and scoring, which need no data iterator)."""
        return self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state))).state

    def restore_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree) -> Any:
    """ShapeDtypeStructs with the shardings of `tree`'s arrays: the restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
