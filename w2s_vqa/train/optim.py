"""Optax optimizer: AdamW, warm-up then cosine, parameter groups by name pattern.

A group is (regex over the parameter's dotted path, learning rate); the first
matching group wins, unmatched parameters use the base rate, and a rate of 0
freezes the group: frozen parameters are not differentiated at all (the train
step splits them off), so a frozen 7B decoder costs no gradient memory.

The paper's regime (docs/method.md "Objective"): decoder frozen, vision tower 2e-6,
projectors 1e-5, expressed as
    groups = (("^language_model\\.|^lm_head\\.", 0.0), ("^vision_tower\\.", 2e-6), ("projector", 1e-5))
Full fine-tuning is `groups = ()` with the base rate.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import optax

from w2s_vqa import config as config_lib

DEFAULT_GROUP = "default"


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The config's `optim` section, field for field; no defaults here: see
    w2s_vqa.config.defaults() (build one with `OptimConfig.from_config(config)`)."""

    learning_rate: float  # peak rate of the default group
    warmup_fraction: float  # linear warm-up, as a fraction of the optimizer updates
    min_lr_ratio: float  # the cosine ends at learning_rate * min_lr_ratio
    weight_decay: float  # AdamW's decoupled decay
    b1: float
    b2: float
    eps: float
    grad_clip_norm: float  # 0 disables clipping
    accumulate_steps: int  # micro-batches per optimizer update
    groups: tuple[tuple[str, float], ...]  # (regex over parameter paths, learning rate); 0 freezes

    def __post_init__(self):
        # A config holds groups as lists (a --set literal, a JSON round trip); a pattern
        # must compile before any parameter is matched against it.
        groups = []
        for i, group in enumerate(self.groups):
            if len(group) != 2:
                raise config_lib.ConfigError(f"optim.groups[{i}]={group!r}: expected (regex, learning rate)")
            pattern, rate = str(group[0]), float(group[1])
            try:
                re.compile(pattern)
            except re.error as e:
                raise config_lib.ConfigError(f"optim.groups[{i}]: bad regex {pattern!r}: {e}") from None
            groups.append((pattern, rate))
        object.__setattr__(self, "groups", tuple(groups))

    @classmethod
    def from_config(cls, config, **changes) -> "OptimConfig":
        """From `config.optim`; ConfigError names unknown or missing keys."""
        return config_lib.from_section(cls, config, "optim", **changes)


def group_of(path: str, groups: Sequence[tuple[str, float]]) -> str:
    for pattern, _ in groups:
        if re.search(pattern, path):
            return pattern
    return DEFAULT_GROUP


def group_rates(cfg: OptimConfig) -> dict[str, float]:
    rates = {DEFAULT_GROUP: cfg.learning_rate}
    rates.update({pattern: float(rate) for pattern, rate in cfg.groups})
    return rates


def is_frozen(path: str, cfg: OptimConfig) -> bool:
    return group_rates(cfg)[group_of(path, cfg.groups)] == 0.0


def check_stacked_groups(shapes: dict[str, tuple[int, ...]], cfg: OptimConfig) -> None:
    """Refuse groups that would give the layers of one stacked parameter (model.scan_layers,
    w2s_vqa.models.stack) different rates: a stacked tensor has one rate. Each stacked path
    must fall in the group of every one of its unrolled layer paths; raises ConfigError
    naming the first pattern and parameter that split."""
    from w2s_vqa.models import stack

    for key, shape in shapes.items():
        if not stack.is_stacked(key):
            continue
        group = group_of(key, cfg.groups)
        for i in range(shape[0]):
            layer = stack.layer_key(key, i)
            if group_of(layer, cfg.groups) != group:
                raise config_lib.ConfigError(
                    f"optim.groups: {layer} falls in group {group_of(layer, cfg.groups)!r} but the stacked {key} "
                    f"(model.scan_layers=True) in {group!r}; one rate per stack, or set model.scan_layers=False")


def schedule(peak: float, total_steps: int, cfg: OptimConfig) -> optax.Schedule:
    warmup = max(1, int(round(cfg.warmup_fraction * total_steps)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=peak * cfg.min_lr_ratio)


def learning_rates(cfg: OptimConfig, total_steps: int, step: int) -> dict[str, float]:
    """The learning rate of every trained group at training step `step` (0-based) of a run of
    `total_steps`, as the optimizer's schedules give it: {"learning_rate": the highest group's, "learning_rate/<group>":
    each group's}. With gradient accumulation the schedule advances once per update."""
    every = max(1, cfg.accumulate_steps)
    updates = max(1, total_steps // every)  # the schedule's length, as train.step builds the optimizer
    rates = {name: float(schedule(rate, updates, cfg)(step // every)) for name, rate in group_rates(cfg).items()
             if rate > 0}
    if not rates:
        return {}
    peak_group = max(group_rates(cfg), key=lambda name: group_rates(cfg)[name])
    return {"learning_rate": rates[peak_group], **{f"learning_rate/{name}": lr for name, lr in rates.items()}}


def make_optimizer(cfg: OptimConfig, total_steps: int, labels) -> optax.GradientTransformation:
    """AdamW per group over the trainable parameters; `labels` is a pytree of group names
    matching the trainable parameter tree (see `group_of`)."""
    rates = group_rates(cfg)
    transforms = {
        name: optax.adamw(schedule(rate, total_steps, cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                          weight_decay=cfg.weight_decay)
        for name, rate in rates.items() if rate > 0
    }
    chain = [optax.clip_by_global_norm(cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else []
    chain.append(optax.multi_transform(transforms, labels))
    tx = optax.chain(*chain)
    if cfg.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.accumulate_steps)
    return tx
