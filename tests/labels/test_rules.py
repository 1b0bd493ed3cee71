"""The labelling rules (labels/rules.py; docs/method.md, "Labels"): the five-way teacher rule
at its boundaries, soft targets, the level gap and mirroring a pair."""

import numpy as np
import pytest

from w2s_vqa.labels.rules import five_way_labels, level_gap_labels, soft_five_way_targets
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in
                                              ("superior", "better", "similar", "worse", "inferior"))


def words(labels) -> list[str]:
    return [LEVELS[i] for i in labels]


def test_five_way_rule_at_and_around_every_boundary():
    s = 0.5  # exactly representable, so d = +-s, +-2s hit the boundaries exactly
    eps = 1e-9
    cases = {
        2 * s + eps: "superior", 2 * s: "better",
        s + eps: "better", s: "similar",
        0.0: "similar",
        -s + eps: "similar", -s: "worse",
        -2 * s + eps: "worse", -2 * s: "inferior", -2 * s - eps: "inferior",
        10.0: "superior", -10.0: "inferior",
    }
    d = np.array(list(cases))
    assert words(five_way_labels(d, s)) == list(cases.values())
    assert five_way_labels(d, s).dtype == np.int8


def test_five_way_rule_when_teachers_agree_exactly():
    # s_d == 0: any difference is decisive; no difference at all is "similar" (the literal
    # rule would say "inferior", since d <= -2 * 0 is the only interval that holds d = 0).
    assert words(five_way_labels([0.0, 1e-9, -1e-9, 3.0], 0.0)) == ["similar", "superior", "inferior", "superior"]
    with pytest.raises(ValueError, match="negative"):
        five_way_labels(1.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        five_way_labels(np.nan, 1.0)


def test_soft_targets_sum_to_one_and_peak_at_the_hard_label():
    s = 0.5
    d = np.concatenate([np.linspace(-5, 5, 401), [s, -s, 2 * s, -2 * s]])
    for smoothing in (0.0, 0.25, 0.5):
        targets = soft_five_way_targets(d, s, smoothing=smoothing)
        assert targets.shape == (len(d), 5) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(targets.argmax(-1), five_way_labels(d, s))
    # Pure Gaussian mass (smoothing 1) at d = 0: one s_d either side is "similar".
    gaussian = soft_five_way_targets(0.0, 1.0, smoothing=1.0)
    np.testing.assert_allclose(gaussian[SIMILAR], 0.682689, atol=1e-6)
    np.testing.assert_allclose(gaussian[[SUPERIOR, INFERIOR]], 0.022750, atol=1e-6)
    # Swapping the pair mirrors the distribution.
    np.testing.assert_allclose(soft_five_way_targets(-0.7, 0.5)[::-1], soft_five_way_targets(0.7, 0.5))


def test_soft_targets_are_one_hot_when_teachers_agree_exactly():
    targets = soft_five_way_targets([0.0, 2.0, -2.0], 0.0)
    np.testing.assert_array_equal(targets, np.eye(5)[[SIMILAR, SUPERIOR, INFERIOR]])


def test_level_gap_rule_never_says_similar():
    first, second = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    distinct = first != second
    labels = level_gap_labels(first[distinct], second[distinct])
    gap = (first - second)[distinct]
    expected = np.where(gap > 1, SUPERIOR, np.where(gap == 1, BETTER, np.where(gap == -1, WORSE, INFERIOR)))
    np.testing.assert_array_equal(labels, expected)
    assert SIMILAR not in labels
    assert words(level_gap_labels([0, 3, 0], [1, 1, 2])) == ["worse", "superior", "inferior"]
    with pytest.raises(ValueError, match="compare a level with itself"):
        level_gap_labels([2], [2])
