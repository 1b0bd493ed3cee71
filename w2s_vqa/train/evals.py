"""The evaluations a training run makes as it goes: config.evals, resolved.

Each entry names a pair table evaluated every `every` steps (Trainer.run_eval), its
metrics logged as "<name>/<metric>"; `make_eval_step` is the jitted forward that
predicts its pairs from the training state.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from w2s_vqa import config as config_lib
from w2s_vqa.score import predict as predict_lib
from w2s_vqa.train.step import ParamCodec


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """One entry of config.evals (w2s_vqa.config.eval_entry), resolved: `every` 0 is
    train.eval_every and `batches` 0 is train.eval_batches."""

    name: str  # its metrics log as "<name>/<metric>"
    kind: str  # config.EVAL_KINDS
    pairs: str  # pair table path
    every: int  # steps between evaluations; 0 = never
    batches: int  # global batches (a seeded random subset of the pairs); 0 = the whole table


def evals_from_config(config) -> list[EvalConfig]:
    """config.evals in name order, leaving out entries whose `pairs` is "".

    Raises ConfigError naming the entry: unknown or missing keys, an unknown kind, a
    name that holds "/" or is "train" (the running training metrics' prefix).
    """
    entries = []
    for name in config.get("evals", ml_collections.ConfigDict()).keys():
        entry = config_lib.from_section(EvalConfig, config, f"evals.{name}", name=name)
        if entry.kind not in config_lib.EVAL_KINDS:
            raise config_lib.ConfigError(f"evals.{name}.kind={entry.kind!r}: choose one of {config_lib.EVAL_KINDS}")
        if "/" in name or name == "train":
            raise config_lib.ConfigError(f"evals.{name}: an evaluation's name may not hold '/' or be 'train'")
        if entry.every < 0 or entry.batches < 0:
            raise config_lib.ConfigError(f"evals.{name}: every and batches must be >= 0")
        if entry.pairs:
            entries.append(dataclasses.replace(entry, pairs=str(entry.pairs),
                                               every=int(entry.every or config.train.eval_every),
                                               batches=int(entry.batches or config.train.eval_batches)))
    return entries


def make_eval_step(codec: ParamCodec, level_ids):
    """step(state, batch) -> [B, 5] float32 level logits per pair (score.predict.make_forward
    over the training state); the metrics are taken on the host (score.metrics)."""
    return predict_lib.make_forward(lambda state: codec.merge({**state["frozen"], **state["trainable"]}), level_ids)
