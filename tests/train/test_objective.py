"""The ranking objective on cases computed by hand, its schedule, and the metrics."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from w2s_vqa.config import defaults
from w2s_vqa.train import objective as obj


def objective_config(**changes) -> obj.ObjectiveConfig:
    """The default objective (config.defaults()) with `changes`."""
    return obj.ObjectiveConfig.from_config(defaults(), **changes)


def test_cross_entropy_and_entropy_by_hand():
    logits = jnp.asarray([[0.0, 0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0, 0.0]])
    labels = jnp.asarray([2, 0])
    terms = obj.loss_terms(logits, labels, jnp.ones(2))
    # Uniform: CE = log 5, entropy = log 5. Second: q = (3,1,1,1,1)/7, CE = -log(3/7).
    q = np.array([3, 1, 1, 1, 1]) / 7
    assert float(terms["ce"]) == pytest.approx((math.log(5) - math.log(3 / 7)) / 2, rel=1e-6)
    assert float(terms["confidence"]) == pytest.approx((math.log(5) - np.sum(q * np.log(q))) / 2, rel=1e-6)


def test_pair_weights_scale_each_pair():
    logits = jnp.asarray([[2.0, 0, 0, 0, 0], [0, 0, 0, 0, 2.0]])
    labels = jnp.asarray([0, 0])
    only_first = obj.loss_terms(logits, labels, jnp.asarray([1.0, 0.0]))["ce"]
    alone = obj.loss_terms(logits[:1], labels[:1], jnp.ones(1))["ce"]
    assert float(only_first) == pytest.approx(float(alone), rel=1e-6)


def test_confidence_weight_schedule():
    cfg = objective_config(warmup_fraction=0.1, temperature_start=0.5, temperature_end=0.1)
    ramp0, t0 = obj.confidence_schedule(0, 1000, cfg)
    ramp50, t50 = obj.confidence_schedule(50, 1000, cfg)
    ramp200, t200 = obj.confidence_schedule(200, 1000, cfg)
    assert (float(ramp0), float(t0)) == (0.0, pytest.approx(0.5))
    assert float(ramp50) == pytest.approx(0.5) and float(t50) == pytest.approx(0.3)
    assert float(ramp200) == 1.0 and float(t200) == pytest.approx(0.1)


def test_objective_mixes_terms_with_the_adaptive_weight():
    logits = jnp.asarray([[1.0, 0.5, 0.0, -0.5, -1.0]])
    batch = {"label": jnp.asarray([3]), "weight": jnp.ones(1)}
    cfg = objective_config(confidence=True, warmup_fraction=0.1, temperature_end=0.1)
    loss, aux = obj.objective(logits, batch, step=100, total_steps=1000, cfg=cfg)
    ce, conf = float(aux["ce"]), float(aux["confidence"])
    a = math.exp(conf / 0.1) / (math.exp(conf / 0.1) + math.exp(ce / 0.1))  # past warm-up: T = 0.1, ramp 1
    assert float(aux["lambda"]) == pytest.approx(a, rel=1e-5)
    assert float(loss) == pytest.approx((1 - a) * ce + a * conf, rel=1e-5)
    loss0, aux0 = obj.objective(logits, batch, step=0, total_steps=1000, cfg=cfg)
    assert float(aux0["lambda"]) == 0.0 and float(loss0) == pytest.approx(ce, rel=1e-6)
    plain, _ = obj.objective(logits, batch, step=100, total_steps=1000, cfg=objective_config(confidence=False))
    assert float(plain) == pytest.approx(ce, rel=1e-6)


def test_soft_targets_replace_the_one_hot_label():
    logits = jnp.asarray([[0.3, 0.1, 0.0, -0.2, 0.4]])
    target = jnp.asarray([[0.5, 0.5, 0.0, 0.0, 0.0]])
    cfg = objective_config(soft_targets=True, confidence=False)
    loss, _ = obj.objective(logits, {"label": jnp.asarray([0]), "weight": jnp.ones(1), "target": target}, 0, 10, cfg)
    log_q = np.log(np.exp(np.asarray(logits[0])) / np.exp(np.asarray(logits[0])).sum())
    assert float(loss) == pytest.approx(-(0.5 * log_q[0] + 0.5 * log_q[1]), rel=1e-6)
    with pytest.raises(KeyError, match="target"):
        obj.objective(logits, {"label": jnp.asarray([0]), "weight": jnp.ones(1)}, 0, 10, cfg)


def test_direction_and_five_way_accuracy_per_origin():
    big = 10.0
    logits = jnp.asarray([
        [big, 0, 0, 0, 0],  # P ~ 1: second better
        [0, 0, 0, 0, big],  # P ~ 0
        [0, 0, big, 0, 0],  # P = 0.5, "similar"
        [0, big, 0, 0, 0],  # P ~ 0.75
    ])
    labels = jnp.asarray([1, 1, 2, 4])  # better, better, similar, inferior
    origins = jnp.asarray([0, 1, 1, 3])  # teacher, spatial, spatial, compression
    sums = obj.pair_metrics(logits, labels, origins, jnp.ones(4))
    m = obj.summarize_metrics({k: np.asarray(v) for k, v in sums.items()})
    assert m["all/direction_accuracy"] == pytest.approx(1 / 3)  # the similar pair is left out
    assert m["all/five_way_accuracy"] == pytest.approx(1 / 4)
    # Ratios of counts, computed in float32 under jit: compared with a tolerance, as every float.
    assert m["teacher/direction_accuracy"] == pytest.approx(1.0)
    assert m["spatial/direction_accuracy"] == pytest.approx(0.0) and m["spatial/pairs"] == 2
    assert m["compression/direction_accuracy"] == pytest.approx(0.0)
    assert "temporal/pairs" not in m
