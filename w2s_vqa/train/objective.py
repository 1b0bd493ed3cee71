"""The pairwise ranking objective and its metrics (docs/method.md "Objective").

L = (1 - lambda) * CE + lambda * L_conf, with L_conf the mean entropy of the
predicted five-level distribution. lambda = a * min(1, t / T_w): it ramps up over
the warm-up T_w (10% of the steps); a = exp(L_conf/T) / (exp(L_conf/T) + exp(CE/T)),
computed without gradient, weighs the term that is currently larger more; T
falls linearly from 0.5 to 0.1 over the warm-up. Per-pair weights scale each
pair's contribution. The soft variant replaces the one-hot label by a
five-way target distribution (w2s_vqa.labels.rules.soft_five_way_targets).

objective.kind = "released" is the loss of the authors' released trainer instead
(github.com/clh124/W2S-VQA, commit 2c7ca75: llava/train/train.py `preprocess_qwen` makes
the labels, transformers 4.44's Qwen2ForCausalLM.forward the loss): the language model's
next-token cross-entropy over the answer sentence "The quality of the second video is
{level} to the first video.<|im_end|>\n" with the assistant turn's header, and over every
"\n", "<|im_start|>" and "<|im_end|>" token of the prompt (their `unmask_tokens_idx`);
the mean over one pair's target tokens, then the weighted mean over pairs (their
per-device batch is one pair). No confidence term. Which tokens are targets:
prompt.answer_sentence.

Pure functions of arrays: the train step and the tests call them alike.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from w2s_vqa import config as config_lib
# ORIGINS: origin names in batch order (the pipeline's `origin` index); metrics are
# reported per origin.
from w2s_vqa.labels.origins import ORIGINS
from w2s_vqa.prompt import SECOND_BETTER, SECOND_WORSE, preference


# objective.kind: what each value trains with.
KINDS = {"paper": "five-way level cross-entropy plus the confidence term, docs/method.md",
         "released": "the released trainer's token cross-entropy over the answer sentence"}


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """The config's `objective` section, field for field; no defaults here: see
    w2s_vqa.config.defaults() (build one with `ObjectiveConfig.from_config(config)`)."""

    confidence: bool  # add the confidence (entropy) term
    warmup_fraction: float  # T_w as a fraction of the total steps
    temperature_start: float
    temperature_end: float
    soft_targets: bool  # cross-entropy against `batch["target"]` instead of one-hot labels
    kind: str  # a key of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise config_lib.ConfigError(f"objective.kind={self.kind!r}: choose one of " + ", ".join(
                f"{k!r} ({what})" for k, what in KINDS.items()))
        if self.kind == "released" and self.soft_targets:
            raise config_lib.ConfigError("objective.soft_targets=True needs objective.kind='paper': the released "
                                         "trainer's loss reads one answer sentence per pair, not a distribution")

    @classmethod
    def from_config(cls, config, **changes) -> "ObjectiveConfig":
        """From `config.objective`; ConfigError names unknown or missing keys, an unknown
        `kind`, and soft targets with the released loss."""
        if "kind" not in config.get("objective", {}):
            changes.setdefault("kind", "paper")  # a config saved before the key
        return config_lib.from_section(cls, config, "objective", **changes)


def confidence_schedule(step, total_steps: int, cfg: ObjectiveConfig) -> tuple[jax.Array, jax.Array]:
    """(ramp = min(1, t / T_w), temperature T) at `step`."""
    warmup = jnp.maximum(1.0, cfg.warmup_fraction * total_steps)
    progress = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)
    temperature = cfg.temperature_start + (cfg.temperature_end - cfg.temperature_start) * progress
    return progress, temperature


def _weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def loss_terms(level_logits: jax.Array, labels: jax.Array | None, weights: jax.Array,
               targets: jax.Array | None = None) -> dict[str, jax.Array]:
    """Weighted cross-entropy and mean entropy of the level distribution.

    level_logits [B, 5]; labels [B] (indices into LEVELS) or targets [B, 5]
    (probabilities); weights [B] (0 drops a pair, e.g. batch padding).
    """
    log_q = jax.nn.log_softmax(level_logits.astype(jnp.float32), axis=-1)
    if targets is None:
        targets = jax.nn.one_hot(labels, level_logits.shape[-1], dtype=jnp.float32)
    ce = -jnp.sum(targets * log_q, axis=-1)
    entropy = -jnp.sum(jnp.exp(log_q) * log_q, axis=-1)
    weights = weights.astype(jnp.float32)
    return {"ce": _weighted_mean(ce, weights), "confidence": _weighted_mean(entropy, weights)}


def objective(level_logits, batch: dict, step, total_steps: int, cfg: ObjectiveConfig):
    """(loss, aux): the paper's loss at `step`, and its parts for logging."""
    targets = batch.get("target") if cfg.soft_targets else None
    if cfg.soft_targets and targets is None:
        raise KeyError("soft_targets=True needs batch['target'], a [B, 5] distribution per pair")
    terms = loss_terms(level_logits, batch["label"], batch["weight"], targets)
    ce, conf = terms["ce"], terms["confidence"]
    if cfg.confidence:
        ramp, temperature = confidence_schedule(step, total_steps, cfg)
        a = jax.lax.stop_gradient(jax.nn.sigmoid((conf - ce) / temperature))  # = e^{c/T} / (e^{c/T} + e^{ce/T})
        lam = a * ramp
    else:
        lam = jnp.zeros((), jnp.float32)
    loss = (1.0 - lam) * ce + lam * conf
    return loss, {"loss": loss, "ce": ce, "confidence": conf, "lambda": lam}


def sentence_objective(token_logits: jax.Array, target_ids: jax.Array, level_logits: jax.Array, batch: dict):
    """(loss, aux): the released trainer's loss, and the paper's terms for logging.

    token_logits [B, K, V]: the vocabulary logits at the K positions before the K target
    tokens target_ids [B, K] int (prompt.answer_sentence's `target_positions`, the
    sequence shifted by one as Qwen2ForCausalLM shifts it); level_logits [B, 5]: the level
    tokens' logits at the answer position. loss = sum_b w_b mean_k(-log softmax(token_logits)
    [b, k, target_ids[b, k]]) / sum_b w_b, w = batch["weight"] (0 drops a pair). aux has
    the keys of `objective`: "loss", "ce" and "confidence" (the five-way cross-entropy and
    mean entropy of level_logits, unused by the loss: figures to compare with the paper's
    runs), "lambda" 0, and "sentence_ce" (= loss).
    """
    log_p = jax.nn.log_softmax(token_logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_p, target_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
    loss = _weighted_mean(jnp.mean(nll, axis=-1), batch["weight"].astype(jnp.float32))
    terms = loss_terms(level_logits, batch["label"], batch["weight"])
    return loss, {"loss": loss, "ce": terms["ce"], "confidence": terms["confidence"],
                  "lambda": jnp.zeros((), jnp.float32), "sentence_ce": loss}


def pair_metrics(level_logits: jax.Array, labels: jax.Array, origins: jax.Array, weights: jax.Array) -> dict:
    """Sums (not means) for accumulation across batches, overall and per origin: the
    training log's running figures.

    The definitions are score.metrics' (direction_outcomes, five_way_accuracy,
    by_origin), taken on device so that a train step returns scalars only:
    direction: P > 0.5 when the label says the second video is better, P < 0.5
    when worse (prompt.SECOND_BETTER / SECOND_WORSE); "similar" pairs are left out.
    five_way: argmax == label. Pairs of weight 0 are left out. A test holds the two
    implementations to the same figures.
    """
    p = preference(level_logits.astype(jnp.float32))
    better = jnp.isin(labels, jnp.asarray(SECOND_BETTER))
    worse = jnp.isin(labels, jnp.asarray(SECOND_WORSE))
    directional = (better | worse) & (weights > 0)
    correct_dir = directional & jnp.where(better, p > 0.5, p < 0.5)
    counted = weights > 0
    correct_5 = counted & (jnp.argmax(level_logits, axis=-1) == labels)
    out = {}
    for name, select in [("all", counted)] + [(o, counted & (origins == i)) for i, o in enumerate(ORIGINS)]:
        out[f"{name}/direction_correct"] = jnp.sum(correct_dir & select)
        out[f"{name}/direction_count"] = jnp.sum(directional & select)
        out[f"{name}/five_way_correct"] = jnp.sum(correct_5 & select)
        out[f"{name}/count"] = jnp.sum(select)
    return out


def summarize_metrics(sums: dict) -> dict[str, float]:
    """Accuracies from accumulated `pair_metrics` sums; origins with no pairs are left out."""
    out = {}
    for name in ["all", *ORIGINS]:
        count = float(sums.get(f"{name}/count", 0))
        if not count:
            continue
        direction = float(sums[f"{name}/direction_count"])
        if direction:
            out[f"{name}/direction_accuracy"] = float(sums[f"{name}/direction_correct"]) / direction
        out[f"{name}/direction_pairs"] = direction  # the count each figure rests on (score.metrics.by_origin)
        out[f"{name}/five_way_accuracy"] = float(sums[f"{name}/five_way_correct"]) / count
        out[f"{name}/pairs"] = count
    return out
