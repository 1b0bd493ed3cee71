"""gMAD (labels/gmad.py): the extreme pairs inside each level of the defender, in both
directions, against a brute-force reference written here; shares spread over small bins."""

import numpy as np
import pytest

from w2s_vqa.labels import gmad


def reference_gmad(attacker, defender, levels, count, exclude=()):
    """Brute force, written from the definition: drop unscored videos, sort by the defender,
    cut into `levels` chunks of equal size (n divisible by levels here); in each chunk the
    ladder pairs the attacker's i-th lowest with its i-th highest, skipping `exclude`
    (unordered pairs). Shares are dealt one pair at a time, bin after bin, round after
    round, to the bins with ladder left, until `count` are dealt."""
    videos = [v for v in range(len(attacker)) if np.isfinite(attacker[v]) and np.isfinite(defender[v])]
    assert len(videos) % levels == 0
    by_defender = sorted(videos, key=lambda v: (defender[v], v))
    size = len(videos) // levels
    exclude = {frozenset(p) for p in exclude}
    ladders = []
    for b in range(levels):
        chunk = sorted(by_defender[b * size:(b + 1) * size], key=lambda v: (attacker[v], v))
        ladders.append([(chunk[i], chunk[-1 - i]) for i in range(size // 2)
                        if frozenset((chunk[i], chunk[-1 - i])) not in exclude])
    shares = [0] * levels
    while sum(shares) < count and any(shares[b] < len(ladders[b]) for b in range(levels)):
        for b in range(levels):
            if sum(shares) < count and shares[b] < len(ladders[b]):
                shares[b] += 1
    return [pair for b in range(levels) for pair in ladders[b][:shares[b]]]


def as_pairs(first, second):
    return list(zip(first.tolist(), second.tolist()))


def test_gmad_on_a_hand_built_table_picks_the_extreme_pair_of_each_level():
    # Defender: videos 0-3 low, 4-7 high. Attacker: inside the low level it separates
    # 2 (lowest) from 0 (highest), then 1 from 3; inside the high level 5 from 7, then 6 from 4.
    defender = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 12.0, 13.0])
    attacker = np.array([9.0, 5.0, 1.0, 6.0, 7.0, 0.0, 3.0, 8.0])
    assert as_pairs(*gmad.gmad_pairs(attacker, defender, levels=2, count=2)) == [(2, 0), (5, 7)]
    assert as_pairs(*gmad.gmad_pairs(attacker, defender, levels=2, count=4)) == [(2, 0), (1, 3), (5, 7), (6, 4)]
    # Three pairs: the first level takes the odd one.
    assert as_pairs(*gmad.gmad_pairs(attacker, defender, levels=2, count=3)) == [(2, 0), (1, 3), (5, 7)]


@pytest.mark.parametrize("levels,count", [(4, 10), (5, 5), (1, 3), (8, 7), (4, 100)])
def test_gmad_equals_the_brute_force_reference_in_both_directions(levels, count):
    rng = np.random.default_rng(levels * 100 + count)
    student, teacher = rng.normal(size=40), rng.normal(size=40)
    for attacker, defender in ((student, teacher), (teacher, student)):
        got = as_pairs(*gmad.gmad_pairs(attacker, defender, levels=levels, count=count))
        want = reference_gmad(attacker, defender, levels, count)
        assert got == want
        assert len(got) == min(count, 20)
        # Inside one level of the defender, the attacker separates each pair as far as the level allows.
        for first, second in got:
            assert attacker[first] < attacker[second]


def test_gmad_leaves_out_unscored_videos_and_skips_excluded_pairs():
    rng = np.random.default_rng(1)
    attacker, defender = rng.normal(size=44), rng.normal(size=44)
    attacker[[3, 17]] = np.nan
    defender[[5, 40]] = np.nan
    got = as_pairs(*gmad.gmad_pairs(attacker, defender, levels=4, count=8))
    assert got == reference_gmad(attacker, defender, 4, 8)
    assert not {3, 5, 17, 40} & {v for pair in got for v in pair}
    # Excluding a level's most separated pair: that level gives its next rungs instead.
    excluded = got[0]
    again = as_pairs(*gmad.gmad_pairs(attacker, defender, levels=4, count=8,
                                        exclude=gmad.pair_keys([excluded[1]], [excluded[0]], 44)))
    assert excluded not in again and len(again) == 8
    assert again[:2] == reference_gmad(attacker, defender, 4, 12)[1:3]


@pytest.mark.parametrize("excluded,count", [(30, 10), (98, 10), (100, 7), (5, 300)])
def test_gmad_skips_many_excluded_pairs_of_a_level_as_the_reference_does(excluded, count):
    # Two levels of 200 videos, 100 rungs each; the first `excluded` rungs of the low level
    # are taken already: that level gives what is left, the other level the rest.
    rng = np.random.default_rng(excluded)
    attacker, defender = rng.normal(size=400), rng.normal(size=400)
    ladder = reference_gmad(attacker, defender, 2, 400)
    taken = ladder[:excluded]
    first, second = zip(*taken)
    got = as_pairs(*gmad.gmad_pairs(attacker, defender, levels=2, count=count,
                                      exclude=gmad.pair_keys(second, first, 400)))
    assert got == reference_gmad(attacker, defender, 2, count, exclude=taken)
    assert len(got) == min(count, 200 - excluded)


def test_spread_count_fills_small_bins_and_gives_the_rest_to_the_others():
    assert gmad.spread_count(7, [10, 10, 10]).tolist() == [3, 2, 2]
    assert gmad.spread_count(10, [1, 10, 10]).tolist() == [1, 5, 4]
    assert gmad.spread_count(50, [1, 2, 3]).tolist() == [1, 2, 3]
    assert gmad.spread_count(0, [4, 4]).tolist() == [0, 0]


def test_gmad_with_small_bins_gives_what_they_hold():
    # 10 videos in 3 levels of sizes 4, 3, 3: at most 2 + 1 + 1 disjoint pairs.
    rng = np.random.default_rng(2)
    first, second = gmad.gmad_pairs(rng.normal(size=10), rng.normal(size=10), levels=3, count=9)
    assert len(first) == 4
    assert len(set(first.tolist()) | set(second.tolist())) == 8  # disjoint, nobody with itself
