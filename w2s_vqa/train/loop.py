"""The training loop: a sharded, checkpointed, resumable pairwise-ranking run.

    config -> mesh -> train step (w2s_vqa.train.step, built from the config and the
    abstract state) -> state (the latest checkpoint, or a fresh student: scratch or
    Hugging Face) -> Grain batches -> evaluations (config.evals) -> metrics (JSON
    lines, TensorBoard), Orbax checkpoints

The step is train/step.py's; the loop owns what it does not: the data, the
checkpoints, the logs and the evaluations (their config: train/evals.py; the signals
that stop a run: train/signals.py; the data's fingerprints a resume compares:
train/fingerprint.py).

Resuming: the latest checkpoint in the workdir is restored into this run's mesh, on any
device count, mesh shape or process count, and the data stream continues at the saved
batch with any worker or process count. Its saved config must match this run's except
for config.RESUME_SAFE_KEYS (or what `allow_config_change` allows); the pair table and
the store are compared by content (SHA-256), so either may move to another path.
Stopping: SIGINT (Ctrl-C) and SIGTERM (preemption) finish the step under way, save it
and end the run with RunInfo.stopped naming the signal (train/signals.py).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from w2s_vqa import config as config_lib
from w2s_vqa import sharding as sharding_lib
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import config as model_config_lib
from w2s_vqa.models import stack as stack_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score import predict as predict_lib
from w2s_vqa.train import objective as objective_lib
from w2s_vqa.train import optim as optim_lib
from w2s_vqa.train import prompts as prompts_lib
from w2s_vqa.train import signals
from w2s_vqa.train import step as step_lib
from w2s_vqa.train.checkpoint import Checkpointer
from w2s_vqa.train.evals import EvalConfig, evals_from_config, make_eval_step
from w2s_vqa.train.fingerprint import data_fingerprints
from w2s_vqa.train.step import MODEL_INPUTS, TARGETS


class NonFiniteLossError(FloatingPointError):
    pass


class ConfigChangedError(config_lib.ConfigError):
    """A resume whose config differs from the checkpoint's in keys not safe to change."""


# ----------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class RunInfo:
    workdir: str
    checkpoint_dir: str
    steps: int  # the step the run ended at
    resumed_from: int | None
    wall_seconds: float
    last_metrics: dict
    last_eval: dict
    # What stopped the run before train.num_steps: "SIGINT", "SIGTERM", "signal to another process"
    # (a multi-process run's peer got it), "until" (Trainer.run's argument)
    stopped: str | None = None
    saved_step: int | None = None  # the latest complete checkpoint when the run ended

    @property
    def exit_status(self) -> int:
        """0 for a run that reached train.num_steps, STOP_EXIT_STATUS of its signal otherwise."""
        return signals.exit_status(self.stopped)


class Trainer:
    """Builds everything a run needs from its config; `run()` trains to `train.num_steps`."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
                 allow_config_change: bool | tuple[str, ...] = False):
        """allow_config_change: True resumes whatever the saved config says; a tuple of keys
        (fnmatch patterns) adds them to config.RESUME_SAFE_KEYS."""
        self.config = config
        self.allow_config_change = allow_config_change
        self.workdir = workdir_lib.absolute(workdir)  # a local folder or a bucket URL (gs://...)
        workdir_lib.makedirs(self.workdir)
        self.mesh = sharding_lib.mesh_from_config(config)
        self.rules = sharding_lib.rules_from_config(config)
        self.evals = evals_from_config(config)
        model_cfg = model_config_lib.student_config(config)
        # The question the model was trained with (an imported released model's is the authors').
        training = prompts_lib.training_prompt(config, model_cfg)
        self.prompt = training.pair
        # The jitted step and the state it takes, from the config and the prompt's token ids alone.
        self.train_step = step_lib.build_train_step(config, self.mesh, self.prompt.level_token_ids,
                                                    training.sentence)
        self.layout = self.train_step.layout
        self.model_cfg, self.codec, self.tx = self.layout.model_cfg, self.layout.codec, self.layout.tx
        self.optim_cfg, self.obj_cfg = self.layout.optim_cfg, self.train_step.obj_cfg
        self.total_steps, self.trainable_keys = self.layout.total_steps, list(self.layout.trainable_keys)
        self.param_shardings, self.replicated = self.layout.param_shardings, self.layout.replicated
        self.batch_sharding = self.train_step.batch_sharding
        self.local_batch = self._local_batch_size()
        self.checkpointer = Checkpointer(
            workdir_lib.join(self.workdir, workdir_lib.CHECKPOINT_DIR), keep_last=config.train.keep_last,
            keep_best=config.train.keep_best,
            best_metric=(config.train.best_metric or None) if self.evals else None,  # metrics come from evaluations
            async_save=config.train.async_checkpoint)
        self._eval_tables: dict[str, Any] = {}  # evaluation name -> its (subset of the) pair table
        self.eval_step = jax.jit(stack_lib.batch_sharded(make_eval_step(self.codec, self.prompt.level_token_ids),
                                                         self.batch_sharding),
                                 out_shardings=self.replicated)

    # ------------------------------------------------------------------ set-up
    def _local_batch_size(self) -> int:
        global_batch = int(self.config.data.batch_size)
        shards = step_lib.batch_shards(self.batch_sharding)
        if global_batch < 1 or global_batch % shards or global_batch % jax.process_count():
            raise ValueError(f"data.batch_size={global_batch} must be a positive multiple of the batch's mesh axes "
                             f"({self.batch_sharding.spec}: {shards} parts) and of the {jax.process_count()} "
                             f"processes")
        return global_batch // jax.process_count()

    def initial_params(self) -> dict[str, jax.Array]:
        """Parameters placed in their shardings: from the HF directory, or freshly initialized."""
        if self.config.model.hf_dir:
            model = hf.load_student(self.config.model.hf_dir, num_frames=self.model_cfg.num_frames,
                                    num_motion_chunks=self.model_cfg.num_motion_chunks, dtype=self.model_cfg.dtype,
                                    remat=self.model_cfg.remat, attention=self.model_cfg.attention,
                                    scan_layers=self.model_cfg.scan_layers, mesh=self.mesh, rules=self.rules,
                                    seed=self.config.seed)
            return self.codec.to_dict(model)
        return self.codec.to_dict(student_lib.create(self.model_cfg, self.config.seed, self.param_shardings))

    def initial_state(self) -> dict[str, Any]:
        """Step 0, in the step's shardings: `initial_params` and a fresh optimizer state, or,
        with train.init_from, that run's parameters (and with train.init_optimizer its
        optimizer state, step counts reset to 0)."""
        if not self.config.train.init_from:
            return self.layout.init_state(self.initial_params())
        from w2s_vqa.train import checkpoint as checkpoint_lib

        return checkpoint_lib.init_state_from(self.config.train.init_from, self.config.train.init_step, self.layout,
                                              self.mesh, keep_optimizer=bool(self.config.train.init_optimizer))

    def data_iterator(self, pairs: str, *, seed: int, num_epochs: int | None, augment: bool | str = False,
                      start: int = 0):
        """This process's slice of the global batches from batch `start` on."""
        from w2s_vqa import pipeline

        d = self.config.data
        pipeline.require_inputs({"data.store": d.store, "data.pairs": pairs})
        return pipeline.make_iterator(
            pairs, d.store, self.prompt, batch_size=self.local_batch, seed=seed,
            shard_index=jax.process_index(), shard_count=jax.process_count(), num_epochs=num_epochs,
            worker_count=d.worker_count, read_threads=d.read_threads, augment=augment, start=start)

    def check_resume(self, step: int, fingerprints: dict[str, str]) -> None:
        """Raise ConfigChangedError, one line listing every difference, when this run's config
        differs from the one checkpoint `step` was saved with in keys not safe to change
        (config.RESUME_SAFE_KEYS, plus allow_config_change). data.pairs and data.store count
        by content where the checkpoint holds their fingerprints."""
        if self.allow_config_change is True:
            return
        allowed = config_lib.RESUME_SAFE_KEYS + tuple(self.allow_config_change or ())
        saved = self.checkpointer.restore_config(step)
        stream = self.checkpointer.restore_stream(step) or {}
        changes = config_lib.config_differences(saved, self.config, allowed=allowed)
        saved_data = saved.get("data", {})
        for key, name in (("pairs", "pairs_sha256"), ("store", "store_sha256")):
            if not stream.get(name) or any(fnmatch.fnmatchcase(f"data.{key}", p) for p in allowed):
                continue
            changes = [c for c in changes if not c.startswith(f"data.{key}:")]
            if stream[name] != fingerprints[name]:
                was, now = saved_data.get(key), self.config.data[key]
                changes.append(f"data.{key}: {was!r} -> {now!r}, other content" if was != now
                               else f"data.{key}: {now!r} changed since")
        if changes:
            raise ConfigChangedError(
                f"{self.checkpointer.directory} step {step} was saved with another config: "
                f"{'; '.join(sorted(changes))}. Rerun with the saved values, use a new --workdir, or pass "
                "--allow-config-change (README, Train: keys safe to change on resume)")

    def to_device(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        keys = [k for k in MODEL_INPUTS + TARGETS if k in batch]
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(batch[k])) for k in keys}

    # ------------------------------------------------------------------ run
    def evaluate(self, state, pairs, *, max_batches: int | None = None) -> dict:
        """Metrics over a whole pair table (a path or DataFrame), prefixed "val/".

        P per pair from score.predict.predict_pairs (the table padded to whole global
        batches with zero-weight copies, each pair predicted once); from them, per origin,
        score.metrics.by_origin's direction and five-way accuracy and pair count (pairs of
        weight 0 left out), and "val/ce", the weighted mean cross-entropy of the labels
        (score.metrics.cross_entropy). `max_batches` > 0 (default: train.eval_batches)
        stops after that many global batches; only the pairs they held count.
        """
        from w2s_vqa.score import metrics

        if max_batches is None:
            max_batches = int(self.config.train.eval_batches or 0)
        predictions = predict_lib.predict_pairs(
            state, pairs, self.config.data.store, self.prompt, self.mesh,
            batch_size=self.local_batch * jax.process_count(), forward=self.eval_step,
            batch_sharding=self.batch_sharding, max_batches=max_batches,
            worker_count=self.config.data.worker_count)
        seen = predictions[(predictions["weight"] > 0) & predictions[metrics.P_COLUMN].notna()]
        if seen.empty:
            return {}
        summary = metrics.by_origin(seen)
        summary["ce"] = metrics.cross_entropy(seen["label"].to_numpy(), seen[list(metrics.LOGIT_COLUMNS)].to_numpy(),
                                              seen["weight"].to_numpy())
        return {f"val/{k}": v for k, v in summary.items()}

    def run_eval(self, state, entry: EvalConfig) -> dict:
        """One entry of config.evals: `evaluate` over its pair table (a seeded random subset
        of `entry.batches` global batches when that is fewer pairs), the metrics named
        "<entry.name>/<metric>" (evaluate's "val/" prefix replaced by the name)."""
        from w2s_vqa import pipeline

        table = self._eval_tables.get(entry.name)
        if table is None:
            table = pipeline.load_pair_table(entry.pairs)
            wanted = entry.batches * self.local_batch * jax.process_count()
            if entry.batches and wanted < len(table):
                # Every process draws the same subset (fixed seed); kept in table order.
                table = table.sample(n=wanted, random_state=0).sort_index().reset_index(drop=True)
            self._eval_tables[entry.name] = table
        results = self.evaluate(state, table, max_batches=0)  # the table is already cut to entry.batches
        return {f"{entry.name}/{key.partition('/')[2]}": value for key, value in results.items()}

    def run(self, *, until: int | None = None) -> RunInfo:
        """Train to train.num_steps from the latest checkpoint in the workdir (or from step
        0), evaluating config.evals as they fall due and saving every
        train.checkpoint_every steps, at the end, and on SIGINT / SIGTERM (signals.StopSignals).
        `until` stops after that step as a signal would (saved; RunInfo.stopped "until"):
        drills and tests of resuming, on the schedules of the whole run.

        Raises ConfigChangedError before anything is restored when the checkpoint's config
        differs in keys not safe to change (`check_resume`), NonFiniteLossError on a
        non-finite loss (nothing saved for that step).
        """
        from w2s_vqa import pipeline
        from w2s_vqa.train.logging import MetricWriter, progress, trim_metrics

        config, t0 = self.config, time.time()
        train_step = self.train_step.step
        pipeline.require_inputs({"data.store": config.data.store, "data.pairs": config.data.pairs})
        pipeline.check_store_fits(config.data.store, config.data)
        fingerprints = data_fingerprints(config)
        config_json = config_lib.as_json(config)
        stop = signals.StopSignals(multiprocess=jax.process_count() > 1)
        iterator = writer = bar = None
        stopped = None
        try:
            resumed_from = self.checkpointer.latest_step()
            if resumed_from is not None:  # the abstract state is the restore target: no fresh student is made
                self.check_resume(resumed_from, fingerprints)
                state = self.checkpointer.restore_state(resumed_from, self.layout.abstract)
                saved_stream = self.checkpointer.restore_stream(resumed_from)
                position = int(saved_stream["next_batch"]) if saved_stream else int(resumed_from)
            else:
                state, position = self.initial_state(), 0
            step = int(jax.device_get(state["step"]))
            iterator = self.data_iterator(config.data.pairs, seed=config.seed, num_epochs=None,
                                          augment=config.data.augment, start=position)
            if jax.process_index() == 0:
                trim_metrics(self.workdir, step)
            writer = MetricWriter(self.workdir, enabled=jax.process_index() == 0)
            last_metrics, last_eval, sums, window_start, window_steps = {}, {}, {}, time.time(), 0
            bar = progress(self.total_steps, step, enabled=jax.process_index() == 0)

            def stream() -> dict:
                return {"next_batch": position, "global_batch_size": int(config.data.batch_size),
                        "worker_count": int(config.data.worker_count), "process_count": jax.process_count(),
                        **fingerprints}

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
                    # The rate the update of this step used (the schedule at the step before it).
                    last_metrics.update(optim_lib.learning_rates(self.optim_cfg, self.total_steps, step - 1))
                    writer.write(step, last_metrics)
                    bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", step_s=f"{last_metrics['step_seconds']:.2f}",
                                    pairs_s=f"{last_metrics['pairs_per_second']:.1f}", refresh=False)
                    sums, window_start, window_steps = {}, time.time(), 0
                bar.update(1)

            # A step's metrics are read back while the next step runs, so the host prepares
            # batch n+1 as the device computes step n; before anything is evaluated, saved or
            # logged, the step's own metrics are read (a non-finite loss is never saved).
            pending = None
            while step < self.total_steps and not (stop.received and not stop.sync):
                batch = self.to_device(next(iterator))
                position += 1
                state, metrics = train_step(state, batch)
                step += 1
                window_steps += 1
                if pending is not None:
                    record(*pending)
                pending = (step, metrics)
                # Every step asks: a multi-process run's sync point needs each step's call.
                if stop.reached(step) and step < self.total_steps:
                    stopped = stop.name
                elif until is not None and step == until and step < self.total_steps:
                    stopped = "until"
                due = [e for e in self.evals if e.every and (step % e.every == 0 or step == self.total_steps)]
                evaluate_now = bool(due)
                save_now = (step % config.train.checkpoint_every == 0 or step == self.total_steps
                            or stopped is not None)
                halt_now = config.train.halt_after_step and step == config.train.halt_after_step
                if evaluate_now or save_now or halt_now or step % config.train.log_every == 0:
                    record(*pending)
                    pending = None
                evaluated = {}
                for entry in due:
                    evaluated.update(self.run_eval(state, entry))
                if evaluated:
                    writer.write(step, evaluated)
                    last_eval.update(evaluated)
                if save_now:
                    self.checkpointer.save(step, state, stream(), config_json, evaluated or None)
                if halt_now:
                    # A preemption drill: die as a killed process would, after the checkpoint is on disk.
                    self.checkpointer.wait()
                    os._exit(17)
                if stopped is not None:
                    break
            if pending is not None:
                record(*pending)
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
            self.checkpointer.close()
            if writer is not None:
                writer.close()
            if iterator is not None and hasattr(iterator, "close"):
                iterator.close()  # worker processes, if any
        self.final_state = state
        if stopped is None and step < self.total_steps:  # a signal before the first step: nothing new to save
            stopped = stop.name
        return RunInfo(workdir=self.workdir, checkpoint_dir=self.checkpointer.directory, steps=step,
                       resumed_from=resumed_from, wall_seconds=time.time() - t0, last_metrics=last_metrics,
                       last_eval=last_eval, stopped=stopped, saved_step=self.checkpointer.latest_step())

    def student(self, state=None) -> student_lib.Student:
        """The student with a state's parameters (default: the last run's)."""
        state = state if state is not None else self.final_state
        return self.codec.merge({**state["frozen"], **state["trainable"]})
