"""Training checkpoints with Orbax: state, data position and config in one step directory.

Each saved step holds three items:
  state   parameters (trainable and frozen), optimizer state and step, sharded
          arrays written asynchronously (Orbax's StandardCheckpointHandler); they
          keep no tie to the devices that wrote them: every restore names its target
          shardings (or host memory), so a run saved on 8 devices resumes on a (2,2,2)
          mesh, on another process count, or exports on a 1-device workstation;
  stream  where the run's data stream stands, as JSON: `next_batch` (global batches
          consumed; the pipeline restarts there with any worker or process count,
          pipeline.make_dataset's `start`), with the global batch size, worker and
          process counts and the pair table's and store's fingerprints it was saved with;
  config  the run's config as JSON, which export and resume read back.
The manager keeps the last `keep_last` steps plus the `keep_best` best by a
validation metric. Orbax writes a step under a temporary name and renames it when
complete, so a killed run never leaves a half-written latest step; a writer
(`read_only=False`) deletes at start the temporary directories a killed save left,
only those Orbax names as its own.

`load_checkpoint_student` reads a saved step back as a student (export, scoring).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.models import stack

ITEMS = ("state", "stream", "config")
STEP_CHOICES = ("latest", "best")


# Orbax's absl warning on a save without metrics while a best metric is tracked. Saves of
# steps that were not evaluated (the last step, checkpoint_every between eval_every) have
# none by design: BestN keeps only steps that do, so the warning would be noise on every run.
UNSCORED_SAVE_WARNING = "Requested `tracked_metric`; did not provide metrics."


class _UnscoredSaveFilter:
    """Drops UNSCORED_SAVE_WARNING only; every other absl record passes."""

    def filter(self, record) -> bool:
        return record.getMessage() != UNSCORED_SAVE_WARNING


def _quiet_unscored_saves() -> None:
    """Installs _UnscoredSaveFilter on the "absl" logger (Orbax logs through absl), once."""
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _UnscoredSaveFilter) for f in logger.filters):
        logger.addFilter(_UnscoredSaveFilter())


class Checkpointer:
    """One run's checkpoints folder.

    best_metric / best_mode  the metric that BestN keeps `keep_best` of, higher ("max")
                             or lower ("min") better
    read_only                a reader (export, scoring, evaluation): never creates the
                             folder, never cleans temporary directories a live run may be
                             writing; `save` is refused
    """

    def __init__(self, directory: str, *, keep_last: int = 2, keep_best: int = 1,
                 best_metric: str | None = None, best_mode: str = "max", async_save: bool = True,
                 read_only: bool = False):
        self.directory = workdir_lib.absolute(directory)  # Orbax writes gs:// through tensorstore
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.read_only = read_only
        preserve = [policies.LatestN(n=keep_last)]
        if best_metric and keep_best > 0:
            preserve.append(policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                                           n=keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=None if read_only else policies.AnyPreservationPolicy(preserve),
            # The preservation policy decides what is kept; best_fn only makes Orbax write each
            # step's metrics beside it, without which a resumed run's BestN sees none and deletes
            # the best steps of the run before it.
            best_fn=(lambda m: m[best_metric]) if best_metric else None,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            create=not read_only,
            # A reader never saves, so never deletes; Orbax's own read_only mode would say
            # so in two warnings on every export.
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)
        if best_metric:
            _quiet_unscored_saves()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def metrics(self, step: int) -> dict:
        """The metrics saved with `step` ({} if none)."""
        return dict(self.manager.metrics(step) or {})

    def best_step(self, metric: str | None = None, mode: str | None = None) -> int | None:
        """The saved step whose `metric` (default: best_metric) is highest ("max") or lowest
        ("min"), later steps winning ties, as BestN ranks them; None when no saved step
        has that metric."""
        metric, mode = metric or self.best_metric, mode or self.best_mode
        scored = [(float(m[metric]), s) for s in self.all_steps() if metric in (m := self.metrics(s))]
        if not scored:
            return None
        sign = -1.0 if mode == "min" else 1.0
        return max(scored, key=lambda vs: (sign * vs[0], vs[1]))[1]

    def save(self, step: int, state: Any, stream: dict, config: dict, metrics: dict | None = None) -> bool:
        """Start saving `step` (asynchronously for the arrays); True if a save began.
        `stream` and `config` are JSON-able dicts."""
        if self.read_only:
            raise PermissionError(f"{self.directory}: opened to read, not to save")
        metrics = None if metrics is None or self.best_metric not in metrics else metrics
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                stream=ocp.args.JsonSave(stream),
                config=ocp.args.JsonSave(config),
            ),
            metrics=metrics,
            force=True,
        )

    def restore_state(self, step: int, abstract_state: Any, *, partial: bool = False) -> Any:
        """The state of `step` laid out as `abstract_state` says: each leaf a
        ShapeDtypeStruct with a sharding (restored into it, whatever devices wrote it) or
        without one (a numpy array in host memory). `partial`: `abstract_state` may leave
        out parts of the saved state, which are not read (Orbax's partial restore).

        The layer layout (model.scan_layers, recorded in the saved config) may differ from
        `abstract_state`'s: the saved layout is read, then its layer parameters, and the
        optimizer moments keyed like them, are stacked or split (models.stack) and placed
        as `abstract_state` says.
        """
        saved = self.saved_layout(step)
        wanted = stack.tree_layout(abstract_state)
        if "none" in (saved, wanted) or saved == wanted:
            return self._restore_state(step, abstract_state, partial)
        source = stack.convert_tree(abstract_state, saved, stack=_stacked_struct, take=_layer_struct)
        state = stack.convert_tree(self._restore_state(step, source, partial), wanted)
        return jax.tree.map(_place_like, state, abstract_state)

    def saved_layout(self, step: int) -> str:
        """"stacked" or "unrolled": the layer layout `step` was saved in (its config's
        model.scan_layers; configs saved before the key were unrolled)."""
        return "stacked" if self.restore_config(step).get("model", {}).get("scan_layers") else "unrolled"

    def _restore_state(self, step: int, abstract_state: Any, partial: bool) -> Any:
        if partial:
            args = ocp.args.PyTreeRestore(item=abstract_state, partial_restore=True,
                                          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))
        else:
            args = ocp.args.StandardRestore(abstract_state)
        return self.manager.restore(step, args=ocp.args.Composite(state=args)).state

    def restore_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def restore_stream(self, step: int) -> dict | None:
        """The data stream's position at `step`; None for a checkpoint that has none (one
        written before positions were saved: its position is its step)."""
        if not workdir_lib.isdir(workdir_lib.join(self.directory, str(step), "stream")):
            return None
        return self.manager.restore(step, args=ocp.args.Composite(stream=ocp.args.JsonRestore())).stream

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _stacked_struct(layers):
    """The ShapeDtypeStruct of a stack of layers' structs: a leading unsharded layer axis."""
    first = layers[0]
    sharding = first.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(None, *sharding.spec))
    return jax.ShapeDtypeStruct((len(layers), *first.shape), first.dtype, sharding=sharding)


def _layer_struct(struct, index):
    """The ShapeDtypeStruct of one layer of a stacked struct (its layer axis dropped)."""
    sharding = struct.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec[1:]))
    return jax.ShapeDtypeStruct(tuple(struct.shape[1:]), struct.dtype, sharding=sharding)


def _place_like(value, struct):
    """`value` where `struct` (a ShapeDtypeStruct) says: its sharding, else host memory."""
    value = value.astype(struct.dtype)
    sharding = getattr(struct, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else np.asarray(value)


def checkpoint_directory(path: str) -> str:
    """A run's workdir or its checkpoints/ folder -> the checkpoints folder.

    Raises FileNotFoundError for a `w2s-vqa stages` workdir, which holds one run per
    stage (stage_k/) rather than checkpoints of its own: the message names the stages
    present, so that --checkpoint can name one (every verb that reads a checkpoint
    resolves it here)."""
    nested = workdir_lib.join(path, workdir_lib.CHECKPOINT_DIR)
    if workdir_lib.isdir(nested):
        return nested
    workdir_lib.refuse_stages_run(path)
    return os.fspath(path)


def parse_step(text: str | int | None) -> int | str | None:
    """A --step value: an integer, "latest" or "best" (None stays None). Raises ValueError
    naming the value otherwise; argparse uses it as a `type`."""
    if text is None or isinstance(text, int):
        return text
    if text.strip().lower() in STEP_CHOICES:
        return text.strip().lower()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--step {text!r}: give a step number, 'latest' or 'best'") from None


def resolve_step(checkpointer: Checkpointer, step: int | str | None, best_metric: str | None) -> int:
    """The saved step that `step` (a number, "latest", "best" or None = latest) names.

    "best" is the highest `best_metric` among saved steps (train.best_metric of the run,
    the metric BestN keeps checkpoints by). Raises FileNotFoundError listing the saved
    steps when there is no such step, and for "best" when no saved step has the metric.
    """
    steps = checkpointer.all_steps()
    if not steps:
        raise FileNotFoundError(f"{checkpointer.directory}: no checkpoints")
    step = parse_step(step)
    if step is None or step == "latest":
        return steps[-1]
    if step == "best":
        best = checkpointer.best_step(best_metric) if best_metric else None
        if best is None:
            raise FileNotFoundError(
                f"{checkpointer.directory}: no saved step has a value of train.best_metric "
                f"{best_metric!r} (it comes from evaluations, config.evals); saved steps: {steps}; "
                "give --step latest or a step number")
        return best
    if step not in steps:
        raise FileNotFoundError(f"{checkpointer.directory}: no checkpoint for step {step}; saved steps: {steps}")
    return step


def host_mesh():
    """A one-device mesh on the host's CPU (the first local device where JAX has no CPU
    backend): where export restores parameters, whatever accelerator wrote them."""
    from w2s_vqa import sharding

    try:
        device = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        device = jax.local_devices()[0]
    return sharding.make_mesh((1, 1, 1), [device])


def load_checkpoint_student(path: str, step: int | str | None = None, *, mesh=None):
    """(student, run config, step) from a training checkpoint; `path` is a run's workdir or
    its checkpoints/ folder, `step` a number, "latest" (also None) or "best" (the saved
    step with the highest train.best_metric of the run).

    Only the parameters are read (trainable float32, frozen as the run held them:
    train.step's `frozen_dtype`), in the layer layout the run saved (model.scan_layers), into the shardings the run config's rules
    give on `mesh` (default: a one-device mesh on the first local device; `host_mesh()`
    for host memory), whatever devices, mesh and process count wrote them. Raises
    FileNotFoundError when the folder holds no checkpoint or not `step` (the message
    lists the saved steps), ConfigError when the saved config no longer describes a state.
    """
    from w2s_vqa import sharding
    from w2s_vqa.train import step as step_lib

    directory = checkpoint_directory(path)
    if not workdir_lib.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such checkpoint folder")
    checkpointer = Checkpointer(directory, async_save=False, read_only=True)
    try:
        latest = checkpointer.latest_step()
        best_metric = None
        if parse_step(step) == "best" and latest is not None:
            best_metric = checkpointer.restore_config(latest).get("train", {}).get("best_metric") or None
        step = resolve_step(checkpointer, step, best_metric)
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        mesh = mesh if mesh is not None else sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])
        layout = step_lib.state_layout(config, mesh)
        # The optimizer's moments (twice the parameters under Adam) are left unread.
        target = {key: value for key, value in layout.abstract.items() if key != "opt_state"}
        state = checkpointer.restore_state(step, target, partial=True)
    finally:
        checkpointer.close()
    return layout.codec.merge(layout.params(state)), config, step


def init_state_from(path: str, step: int | str | None, layout, mesh, *, keep_optimizer: bool = False) -> dict:
    """Step 0 of a run that starts from another run's checkpoint (train.init_from): a state
    laid out as `layout` (train.step.StateLayout) on `mesh`.

    The parameters of `path`'s `step` (a number, "latest" or "best", read as
    `load_checkpoint_student` reads them, whatever mesh wrote them) with a fresh optimizer
    state; with `keep_optimizer`, the saved optimizer state too, its integer counters (the
    schedules' and Adam's bias correction's) set to 0 so that the new run's schedules start
    from their beginning. Raises FileNotFoundError as `load_checkpoint_student`, and
    ConfigError when the saved student's parameters differ in names or shapes from this
    run's model, or (keep_optimizer) when the saved run trains other parameters.
    """
    import jax.numpy as jnp

    from w2s_vqa import config as config_lib
    from w2s_vqa.train import step as step_lib

    student, saved_config, saved_step = load_checkpoint_student(path, step, mesh=mesh)
    saved_layout = step_lib.state_layout(saved_config, mesh)
    saved = stack.to_layout(saved_layout.codec.to_dict(student), layout.codec.keys)  # either layer layout
    theirs = {k: tuple(v.shape) for k, v in saved.items()}
    ours = dict(layout.codec.shapes)
    if theirs != ours:
        differ = sorted(set(theirs) ^ set(ours)) or sorted(k for k in ours if theirs[k] != ours[k])
        raise config_lib.ConfigError(
            f"train.init_from={path} (step {saved_step}): its student does not fit this run's model "
            f"({len(differ)} parameter(s) differ in name or shape, e.g. {', '.join(differ[:3])})")
    params = {k: jax.device_put(v.astype(jnp.float32), layout.param_shardings[k]) for k, v in saved.items()}
    if not keep_optimizer:
        return layout.init_state(params)
    def stacked_names(keys):  # either layout's paths, by their stacked names
        return {layer[0] if (layer := stack.layer_of(k)) else k for k in keys}

    if stacked_names(saved_layout.trainable_keys) != stacked_names(layout.trainable_keys):
        raise config_lib.ConfigError(
            f"train.init_from={path}: train.init_optimizer needs the same trainable parameters, but the saved run "
            f"trains {len(saved_layout.trainable_keys)} and this one {len(layout.trainable_keys)} (optim.groups "
            "differ); set train.init_optimizer=False for a fresh optimizer")
    directory = checkpoint_directory(path)
    checkpointer = Checkpointer(directory, async_save=False, read_only=True)
    try:
        opt_state = checkpointer.restore_state(saved_step, {"opt_state": layout.abstract["opt_state"]},
                                               partial=True)["opt_state"]
    finally:
        checkpointer.close()
    state = layout.init_state(params)

    def restart(leaf):
        return jax.device_put(jnp.zeros_like(leaf), leaf.sharding) if jnp.issubdtype(leaf.dtype, jnp.integer) else leaf

    state["opt_state"] = jax.tree.map(restart, opt_state)
    return state
