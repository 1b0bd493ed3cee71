"""The training loop: a sharded, checkpointed, resumable pairwise-ranking run.

    config -> mesh -> student (scratch or Hugging Face) -> parameters split into
    trainable and frozen -> jit train step (donated state) over Grain batches ->
    validation, metrics (JSON lines, TensorBoard), Orbax checkpoints

The training state is a plain dict of arrays keyed by parameter path
("language_model.layers.0.mlp.up_proj.kernel"), so the optimizer's groups,
the shardings and the checkpoint all read the same names. Shardings come from
each parameter's logical axes through the config's rules table; the optimizer
state takes its shardings from the parameters it mirrors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from w2s_vqa import prompt as prompt_lib
from w2s_vqa import runtime
from w2s_vqa.models import config as model_config_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import student as student_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.train import objective as objective_lib
from w2s_vqa.train import optim as optim_lib
from w2s_vqa import sharding as sharding_lib
from w2s_vqa.train.checkpoint import Checkpointer, abstract_like

# Batch entries the model and the objective read; the rest stay on the host.
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "frame_mask", "motion", "motion_mask")
TARGETS = ("label", "weight", "origin", "target")


class NonFiniteLossError(FloatingPointError):
    pass


# ----------------------------------------------------------------------------- config
def student_config(config: ml_collections.ConfigDict) -> model_config_lib.StudentConfig:
    """The student's shape: the preset (or the HF directory's config) with the data's video shape."""
    m, d = config.model, config.data
    ours = dict(num_frames=d.num_frames, num_motion_chunks=d.num_motion_chunks, motion_dim=d.motion_dim,
                dtype=m.dtype, remat=m.remat, attention=m.attention)
    if m.hf_dir:
        with open(os.path.join(m.hf_dir, hf.CONFIG_FILE)) as f:
            cfg = model_config_lib.StudentConfig.from_hf_config(json.load(f), **ours)
    else:
        cfg = model_config_lib.preset(m.preset, **ours)
    if cfg.vision.image_size != d.image_size:
        raise ValueError(f"data.image_size={d.image_size} but the vision tower takes {cfg.vision.image_size}")
    return cfg


def tokenizer_dir(config) -> str:
    return config.model.get("tokenizer", "") or config.model.hf_dir or TINY_TOKENIZER


def optim_config(config) -> optim_lib.OptimConfig:
    o = config.optim
    return optim_lib.OptimConfig(
        learning_rate=o.learning_rate, warmup_fraction=o.warmup_fraction, min_lr_ratio=o.min_lr_ratio,
        weight_decay=o.weight_decay, b1=o.b1, b2=o.b2, eps=o.eps, grad_clip_norm=o.grad_clip_norm,
        accumulate_steps=o.accumulate_steps, groups=tuple((str(p), float(r)) for p, r in o.groups))


def objective_config(config) -> objective_lib.ObjectiveConfig:
    o = config.objective
    return objective_lib.ObjectiveConfig(
        confidence=o.confidence, warmup_fraction=o.warmup_fraction, temperature_start=o.temperature_start,
        temperature_end=o.temperature_end, soft_targets=o.soft_targets)


def mesh_from_config(config) -> jax.sharding.Mesh:
    devices = jax.devices()
    if config.mesh.get("num_devices", 0):
        devices = devices[: config.mesh.num_devices]  # sharding experiments on a subset
    return sharding_lib.make_mesh(tuple(config.mesh.shape), devices)


def rules_from_config(config):
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in config.mesh.rules)


def maybe_initialize_distributed(config) -> None:
    """jax.distributed.initialize from the config, or from the environment on TPU pods / SLURM."""
    dist = config.get("distributed", ml_collections.ConfigDict())
    if (dist.get("coordinator_address") or dist.get("auto")) and dist.get("cpu_collectives"):
        # CPU-only multi-process runs (tests, laptops) need a collectives backend.
        jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    if dist.get("coordinator_address"):
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address, num_processes=dist.num_processes,
            process_id=dist.process_id, local_device_ids=list(dist.local_device_ids) or None)
    elif dist.get("auto", False):
        jax.distributed.initialize()  # Cloud TPU and SLURM publish the topology in the environment.


# ----------------------------------------------------------------------------- params
class ParamCodec:
    """The student's parameters as a flat {path: array} dict, and back to a module."""

    def __init__(self, abstract_model: student_lib.Student):
        self.graphdef, state = nnx.split(abstract_model)
        self.variables = [(path, var) for path, var in nnx.to_flat_state(state)]
        self.keys = [".".join(str(p) for p in path) for path, _ in self.variables]
        self.logical_axes = {k: v.get_metadata().get("logical_axes") for k, (_, v) in zip(self.keys, self.variables)}
        self.shapes = {k: tuple(v.shape) for k, (_, v) in zip(self.keys, self.variables)}

    def to_dict(self, model: student_lib.Student) -> dict[str, jax.Array]:
        flat = dict(nnx.to_flat_state(nnx.state(model)))
        return {k: flat[path][...] for k, (path, _) in zip(self.keys, self.variables)}

    def merge(self, params: dict[str, jax.Array]) -> student_lib.Student:
        state = nnx.from_flat_state([(path, var.replace(params[k])) for k, (path, var) in zip(self.keys, self.variables)])
        return nnx.merge(self.graphdef, state)

    def shardings(self, mesh, rules) -> dict[str, NamedSharding]:
        return {k: sharding_lib.named_sharding(mesh, self.logical_axes[k], rules, self.shapes[k]) for k in self.keys}


# ----------------------------------------------------------------------------- steps
def make_train_step(codec: ParamCodec, tx, obj_cfg, total_steps: int, level_ids):
    def step(state, batch):
        def loss_fn(trainable):
            model = codec.merge({**state["frozen"], **trainable})
            logits = model.level_logits(level_ids, **{k: batch[k] for k in MODEL_INPUTS})
            loss, aux = objective_lib.objective(logits, batch, state["step"], total_steps, obj_cfg)
            return loss, (aux, logits)

        (_, (aux, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        metrics = {**aux, "grad_norm": optax.tree.norm(grads),
                   **objective_lib.pair_metrics(logits, batch["label"], batch["origin"], batch["weight"])}
        new_state = {**state, "trainable": trainable, "opt_state": opt_state, "step": state["step"] + 1}
        return new_state, metrics

    return step


def make_eval_step(codec: ParamCodec, level_ids):
    def step(state, batch):
        model = codec.merge({**state["frozen"], **state["trainable"]})
        logits = model.level_logits(level_ids, **{k: batch[k] for k in MODEL_INPUTS})
        terms = objective_lib.loss_terms(logits, batch["label"], batch["weight"])
        count = jnp.sum(batch["weight"] > 0)
        return {"ce_sum": terms["ce"] * count, **objective_lib.pair_metrics(
            logits, batch["label"], batch["origin"], batch["weight"])}

    return step


# ----------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class RunInfo:
    workdir: str
    checkpoint_dir: str
    steps: int
    resumed_from: int | None
    wall_seconds: float
    last_metrics: dict
    last_eval: dict


class Trainer:
    """Builds everything a run needs from its config; `run()` trains to `train.num_steps`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config = config
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.mesh = mesh_from_config(config)
        self.rules = rules_from_config(config)
        self.model_cfg = student_config(config)
        self.total_steps = int(config.train.num_steps)
        self.obj_cfg = objective_config(config)
        self.optim_cfg = optim_config(config)

        tok = prompt_lib.load_tokenizer(tokenizer_dir(config))
        self.prompt = prompt_lib.build_pair_prompt(tok, video_token_id=self.model_cfg.video_token_index,
                                                   tokens_per_video=self.model_cfg.tokens_per_video)
        self.codec = ParamCodec(student_lib.create_abstract(self.model_cfg))
        self.param_shardings = self.codec.shardings(self.mesh, self.rules)
        self.trainable_keys = [k for k in self.codec.keys if not optim_lib.is_frozen(k, self.optim_cfg)]
        if not self.trainable_keys:
            raise ValueError("every parameter is frozen: check optim.groups")
        labels = {k: optim_lib.group_of(k, self.optim_cfg.groups) for k in self.trainable_keys}
        self.tx = optim_lib.make_optimizer(self.optim_cfg, max(1, self.total_steps // self.optim_cfg.accumulate_steps),
                                           labels)
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(("data", "fsdp")))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.local_batch = self._local_batch_size()
        self.checkpointer = Checkpointer(
            os.path.join(self.workdir, "checkpoints"), keep_last=config.train.keep_last,
            keep_best=config.train.keep_best, best_metric=config.train.best_metric or None,
            async_save=config.train.async_checkpoint)
        self._stop_requested = False
        self.eval_step = jax.jit(make_eval_step(self.codec, self.prompt.level_token_ids),
                                 out_shardings=self.replicated)

    # ------------------------------------------------------------------ set-up
    def _local_batch_size(self) -> int:
        global_batch = int(self.config.data.batch_size)
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        if global_batch % shards or global_batch % jax.process_count():
            raise ValueError(f"data.batch_size={global_batch} must divide over the data x fsdp mesh axes ({shards}) "
                             f"and the {jax.process_count()} processes")
        return global_batch // jax.process_count()

    def initial_params(self) -> dict[str, jax.Array]:
        """Parameters placed in their shardings: from the HF directory, or freshly initialized."""
        if self.config.model.hf_dir:
            model = hf.load_student(self.config.model.hf_dir, num_frames=self.model_cfg.num_frames,
                                    num_motion_chunks=self.model_cfg.num_motion_chunks, dtype=self.model_cfg.dtype,
                                    remat=self.model_cfg.remat, attention=self.model_cfg.attention,
                                    mesh=self.mesh, rules=self.rules,
                                    seed=self.config.seed)
            return self.codec.to_dict(model)
        return self.codec.to_dict(student_lib.create(self.model_cfg, self.config.seed, self.param_shardings))

    def initial_state(self) -> dict[str, Any]:
        params = self.initial_params()
        trainable = {k: params[k] for k in self.trainable_keys}
        frozen = {k: v for k, v in params.items() if k not in trainable}
        init = jax.jit(self.tx.init, out_shardings=self.opt_state_shardings(trainable))
        return {"step": jax.device_put(jnp.zeros((), jnp.int32), self.replicated), "trainable": trainable,
                "frozen": frozen, "opt_state": init(trainable)}

    def opt_state_shardings(self, trainable):
        """Each optimizer moment takes the sharding of the parameter it mirrors (found by its
        key and shape in the optimizer state's tree); counters and the like are replicated."""
        def choose(path, leaf):
            for entry in reversed(path):
                key = getattr(entry, "key", None)
                if key in self.param_shardings and tuple(leaf.shape) == self.codec.shapes[key]:
                    return self.param_shardings[key]
            return self.replicated

        return jax.tree_util.tree_map_with_path(choose, jax.eval_shape(self.tx.init, trainable))

    def data_iterator(self, pairs: str, *, seed: int, num_epochs: int | None, augment: bool | str = False):
        from w2s_vqa import pipeline

        d = self.config.data
        return pipeline.make_iterator(
            pairs, d.store, self.prompt, batch_size=self.local_batch, seed=seed,
            shard_index=jax.process_index(), shard_count=jax.process_count(), num_epochs=num_epochs,
            worker_count=d.worker_count, augment=augment)

    def to_device(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        keys = [k for k in MODEL_INPUTS + TARGETS if k in batch]
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(batch[k])) for k in keys}

    # ------------------------------------------------------------------ run
    def _request_stop(self, signum, frame):  # noqa: ARG002
        self._stop_requested = True

    def evaluate(self, state, pairs=None) -> dict:
        """Metrics over a whole pair table (default: data.val_pairs), prefixed "val/".

        The table is padded to whole global batches with zero-weight copies of its
        first rows, which the metrics leave out, so every pair counts exactly once.
        """
        from w2s_vqa import pipeline

        pairs = pairs if pairs is not None else self.config.data.get("val_pairs")
        if pairs is None or (isinstance(pairs, str) and not pairs):
            return {}
        table = pipeline.load_pair_table(pairs)
        global_batch = self.local_batch * jax.process_count()
        padding = -len(table) % global_batch
        if padding:
            table = pd.concat([table, table.iloc[np.arange(padding) % len(table)].assign(weight=0.0)],
                              ignore_index=True)
        sums: dict[str, float] = {}
        for i, batch in enumerate(self.data_iterator(table, seed=0, num_epochs=1)):
            if self.config.train.eval_batches and i >= self.config.train.eval_batches:
                break
            out = jax.device_get(self.eval_step(state, self.to_device(batch)))
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if not sums:
            return {}
        summary = objective_lib.summarize_metrics(sums)
        summary["ce"] = sums["ce_sum"] / max(sums["all/count"], 1.0)
        return {f"val/{k}": v for k, v in summary.items()}

    def run(self) -> RunInfo:
        from w2s_vqa.train.logging import MetricWriter, progress

        config, t0 = self.config, time.time()
        state = self.initial_state()
        state_shardings = jax.tree.map(lambda x: x.sharding, state)
        level_ids = self.prompt.level_token_ids
        train_step = jax.jit(make_train_step(self.codec, self.tx, self.obj_cfg, self.total_steps, level_ids),
                             donate_argnums=(0,), out_shardings=(state_shardings, self.replicated))
        iterator = self.data_iterator(config.data.pairs, seed=config.seed, num_epochs=None,
                                      augment=config.data.augment)
        config_json = json.loads(config.to_json())

        resumed_from = self.checkpointer.latest_step()
        if resumed_from is not None:
            state, _ = self.checkpointer.restore(resumed_from, abstract_like(state), iterator)
        step = int(jax.device_get(state["step"]))

        previous = signal.signal(signal.SIGTERM, self._request_stop)
        writer = MetricWriter(self.workdir, enabled=jax.process_index() == 0)
        last_metrics, last_eval, sums, window_start, window_steps = {}, {}, {}, time.time(), 0
        bar = progress(self.total_steps, step, enabled=jax.process_index() == 0)

        def record(step: int, metrics: dict) -> None:
            """Reads back one step's metrics: the non-finite check, the running sums, the log line."""
            nonlocal last_metrics, sums, window_start, window_steps
            metrics = jax.device_get(metrics)
            if not math.isfinite(float(metrics["loss"])):
                self.checkpointer.wait()
                raise NonFiniteLossError(
                    f"loss is {float(metrics['loss'])} at step {step}; stopped without saving. The last good "
                    f"checkpoint is step {self.checkpointer.latest_step()} in {self.checkpointer.directory}")
            for k, v in metrics.items():
                if "/" in k:
                    sums[k] = sums.get(k, 0) + float(v)
            if step % config.train.log_every == 0 or step == self.total_steps:
                elapsed = time.time() - window_start
                last_metrics = {k: float(v) for k, v in metrics.items() if "/" not in k}
                last_metrics.update({f"train/{k}": v for k, v in objective_lib.summarize_metrics(sums).items()})
                last_metrics.update(step_seconds=elapsed / window_steps,
                                    pairs_per_second=window_steps * config.data.batch_size / elapsed)
                writer.write(step, last_metrics)
                bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", step_s=f"{last_metrics['step_seconds']:.2f}",
                                pairs_s=f"{last_metrics['pairs_per_second']:.1f}")
                sums, window_start, window_steps = {}, time.time(), 0
            bar.update(1)

        # A step's metrics are read back while the next step runs, so the host prepares
        # batch n+1 as the device computes step n; before anything is evaluated, saved or
        # logged, the step's own metrics are read (a non-finite loss is never saved).
        pending = None
        try:
            while step < self.total_steps and not self._stop_requested:
                batch = self.to_device(next(iterator))
                state, metrics = train_step(state, batch)
                step += 1
                window_steps += 1
                if pending is not None:
                    record(*pending)
                pending = (step, metrics)
                evaluate_now = config.train.eval_every and (step % config.train.eval_every == 0
                                                             or step == self.total_steps)
                save_now = (step % config.train.checkpoint_every == 0 or step == self.total_steps
                            or self._stop_requested)
                halt_now = config.train.halt_after_step and step == config.train.halt_after_step
                if evaluate_now or save_now or halt_now or step % config.train.log_every == 0:
                    record(*pending)
                    pending = None
                if evaluate_now:
                    last_eval = self.evaluate(state)
                    if last_eval:
                        writer.write(step, last_eval)
                if save_now:
                    self.checkpointer.save(step, state, iterator, config_json, last_eval if evaluate_now else None)
                if halt_now:
                    # A preemption drill: die as a killed process would, after the checkpoint is on disk.
                    self.checkpointer.wait()
                    os._exit(17)
            if pending is not None:
                record(*pending)
            if self._stop_requested and self.checkpointer.latest_step() != step:
                self.checkpointer.save(step, state, iterator, config_json)
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
            self.checkpointer.close()
            writer.close()
        self.final_state = state
        return RunInfo(workdir=self.workdir, checkpoint_dir=self.checkpointer.directory, steps=step,
                       resumed_from=resumed_from, wall_seconds=time.time() - t0, last_metrics=last_metrics,
                       last_eval=last_eval)

    def student(self, state=None) -> student_lib.Student:
        """The student with a state's parameters (default: the last run's)."""
        state = state if state is not None else self.final_state
        return self.codec.merge({**state["frozen"], **state["trainable"]})


# ----------------------------------------------------------------------------- from a checkpoint
def checkpoint_directory(path: str) -> str:
    """A run's workdir or its checkpoints/ folder -> the checkpoints folder."""
    nested = os.path.join(path, "checkpoints")
    return nested if os.path.isdir(nested) else path


def load_checkpoint_student(path: str, step: int | None = None) -> tuple[student_lib.Student, ml_collections.ConfigDict, int]:
    """(student, run config, step) from a training checkpoint; `step` defaults to the latest."""
    import orbax.checkpoint as ocp

    directory = checkpoint_directory(path)
    checkpointer = Checkpointer(directory, async_save=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise FileNotFoundError(f"{directory}: no checkpoints")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise FileNotFoundError(f"{directory}: no checkpoint for step {step}; saved steps: {steps}")
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        saved = checkpointer.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    finally:
        checkpointer.close()
    codec = ParamCodec(student_lib.create_abstract(student_config(config)))
    params = {k: jnp.asarray(v) for k, v in {**saved["frozen"], **saved["trainable"]}.items()}
    return codec.merge(params), config, step
