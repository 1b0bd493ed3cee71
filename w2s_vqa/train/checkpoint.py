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

`load_checkpoint_student` reads a saved step back as a student (export, scoring):
the run's config says what the state holds (train.step.state_layout), and the
state is restored into that layout on one local device.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import ml_collections
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


def checkpoint_directory(path: str) -> str:
    """A run's workdir or its checkpoints/ folder -> the checkpoints folder."""
    nested = os.path.join(path, "checkpoints")
    return nested if os.path.isdir(nested) else path


def load_checkpoint_student(path: str, step: int | None = None):
    """(student, run config, step) from a training checkpoint; `path` is a run's workdir or
    its checkpoints/ folder, `step` defaults to the latest saved.

    The parameters come back float32 on the first local device. Raises
    FileNotFoundError when the folder holds no checkpoint or not `step` (the message
    lists the saved steps), ConfigError when the saved config no longer describes a state.
    """
    from w2s_vqa import sharding
    from w2s_vqa.train import step as step_lib

    directory = checkpoint_directory(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such checkpoint folder")
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory}: no checkpoints")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"{directory}: no checkpoint for step {step}; saved steps: {steps}")
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        mesh = sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])
        layout = step_lib.state_layout(config, mesh)
        state = checkpointer.restore_state(step, layout.abstract)
    finally:
        checkpointer.close()
    return layout.codec.merge(layout.params(state)), config, step
