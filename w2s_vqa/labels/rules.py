"""The labelling rules of a video pair: which of the five levels of prompt.LEVELS answers
"compared with the first video, how is the quality of the second?" (docs/method.md, "Labels").

Teacher pairs take the five-way rule on the fused scores' difference (`five_way_labels`,
`soft_five_way_targets`); two severity levels of one source take the level gap
(`level_gap_labels`); exchanging a pair's two videos mirrors its label (`swap_pair`).
Labels are int indices into prompt.LEVELS; the pair table that holds them is
labels/pair_table.py.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from w2s_vqa.prompt import LEVEL_INDEX, LEVELS, MIRROR

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (
    LEVEL_INDEX[word] for word in ("superior", "better", "similar", "worse", "inferior"))
_MIRROR = np.asarray(MIRROR, dtype=np.int64)
# Levels from the lowest to the highest d, the order of the five intervals of the rule.
_ASCENDING = np.array([INFERIOR, WORSE, SIMILAR, BETTER, SUPERIOR])


def five_way_labels(d, s_d) -> np.ndarray:
    """The five-way teacher rule: label index of (first A, second B) from d = m_B - m_A.

    s_d = sqrt(s_A^2 + s_B^2) is the spread of d across teachers. In LEVELS terms:
    superior if d > 2 s_d; better if s_d < d <= 2 s_d; similar if -s_d < d <= s_d;
    worse if -2 s_d < d <= -s_d; inferior if d <= -2 s_d (docs/method.md, "Labels",
    boundaries as written there). One exception: d == 0 is always "similar". The literal rule calls
    d = 0 with s_d = 0 (every teacher agrees the videos are equal, or one teacher scored
    both) "inferior", because no interval but the last is closed at 0; identical scores
    are the clearest case of "similar". With s_d = 0 any other difference counts as
    decisive: d > 0 is superior, d < 0 inferior.
    """
    d, s_d = _checked_difference(d, s_d)
    labels = np.select([d > 2 * s_d, d > s_d, d > -s_d, d > -2 * s_d],
                       [SUPERIOR, BETTER, SIMILAR, WORSE], default=INFERIOR)
    return np.where(d == 0, SIMILAR, labels).astype(np.int8)


def soft_five_way_targets(d, s_d, *, smoothing: float = 0.5) -> np.ndarray:
    """A distribution over LEVELS for each pair, shaped [..., 5] (float32).

    It mixes the hard label with the teachers' uncertainty:
    (1 - smoothing) * one_hot(five_way_labels(d, s_d)) + smoothing * g, where g is the
    probability that a N(d, s_d^2) difference falls into each of the rule's intervals
    (boundaries at +-s_d, +-2 s_d). g alone does not peak at the hard label near the
    better/worse boundaries (at d = 1.2 s_d, g gives "similar" 0.41 and "better" 0.37)
    because those intervals are only one s_d wide; with smoothing <= 0.5 the hard label
    keeps the largest share. With s_d = 0, g is a point mass and the target is one-hot.
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    d, s_d = _checked_difference(d, s_d)
    hard = five_way_labels(d, s_d)
    one_hot = np.eye(len(LEVELS))[hard]
    edges = np.array([-2.0, -1.0, 1.0, 2.0])
    spread = np.where(s_d > 0, s_d, 1.0)[..., None]
    cdf = ndtr((edges * spread - d[..., None]) / spread)
    below = np.concatenate([np.zeros_like(cdf[..., :1]), cdf, np.ones_like(cdf[..., :1])], axis=-1)
    gaussian = np.empty_like(one_hot)
    gaussian[..., _ASCENDING] = np.diff(below, axis=-1)
    gaussian = np.where(s_d[..., None] > 0, gaussian, one_hot)
    return ((1.0 - smoothing) * one_hot + smoothing * gaussian).astype(np.float32)


def level_gap_labels(first_level, second_level) -> np.ndarray:
    """Label index for two severity levels of one source (0 = pristine, higher = worse).

    gap = first_level - second_level, positive when the second video is less distorted:
    gap > 1 superior, gap == 1 better, gap == -1 worse, gap < -1 inferior. Equal levels
    are not a pair, so "similar" is never produced (docs/method.md, "Labels").
    """
    first = np.asarray(first_level)
    second = np.asarray(second_level)
    for name, level in (("first_level", first), ("second_level", second)):
        if not np.issubdtype(level.dtype, np.integer) or (level < 0).any():
            raise ValueError(f"{name} must hold non-negative integer severity levels")
    gap = first.astype(np.int64) - second.astype(np.int64)
    if (gap == 0).any():
        raise ValueError(f"{int((gap == 0).sum())} pair(s) compare a level with itself; "
                         "two videos at one severity level have no known order")
    return np.select([gap > 1, gap == 1, gap == -1], [SUPERIOR, BETTER, WORSE], default=INFERIOR).astype(np.int8)


def mirror_labels(labels) -> np.ndarray:
    """The labels (indices into LEVELS, any integer dtype, kept) of the same pairs with
    first and second exchanged: prompt.MIRROR applied to each."""
    labels = np.asarray(labels)
    return _MIRROR[labels].astype(labels.dtype)


def _checked_difference(d, s_d) -> tuple[np.ndarray, np.ndarray]:
    d, s_d = np.broadcast_arrays(np.asarray(d, dtype=np.float64), np.asarray(s_d, dtype=np.float64))
    if not (np.isfinite(d).all() and np.isfinite(s_d).all()):
        raise ValueError("d and s_d must be finite")
    if (s_d < 0).any():
        raise ValueError("s_d is a standard deviation and cannot be negative")
    return d, s_d


# The fields a swap changes; every other field of a pair (s_d, weight, origin, stage,
# source_id, ...) describes the pair whatever its order and stays.
SWAPPED_FIELDS = ("first_id", "second_id", "label", "d", "target")


def swap_pair(pair: dict) -> dict:
    """The same pair with its two videos exchanged: the one rule for mirroring a pair.

    `pair` maps field names to one pair's values or to equal-length columns of many
    pairs. first_id and second_id change places; label (index into LEVELS) becomes
    prompt.MIRROR[label], its dtype kept; d = m_second - m_first changes sign; target,
    a distribution over LEVELS in its last axis ([5] or [N, 5]), is reindexed by
    MIRROR. Other fields are kept as they are. KeyError if first_id, second_id or
    label is missing.
    """
    swapped = {**pair, "first_id": pair["second_id"], "second_id": pair["first_id"],
               "label": mirror_labels(pair["label"])}
    if "d" in pair:
        swapped["d"] = -pair["d"]
    if "target" in pair:
        swapped["target"] = np.asarray(pair["target"])[..., _MIRROR]
    return swapped
