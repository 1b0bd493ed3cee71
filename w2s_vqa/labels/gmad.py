"""gMAD real pairs for a weak-to-strong stage: where two models disagree most.

gMAD (`gmad_pairs`; Ma et al., "Group MAximum Differentiation Competition", ECCV
2016 and TPAMI 2020). The defender's scores split the videos into `levels`
equal-count bins (by rank: bin = floor(levels * rank / n), rank 0 the lowest score,
ties by position), videos the defender cannot tell far apart. Inside a bin the
attacker's most separated pairs are the extreme ones: its i-th lowest video with its
i-th highest, i = 0, 1, ... (disjoint pairs, the most separated first). gMAD's
original picks one pair per level (i = 0); a stage needs thousands, so the ladder
continues inward. Pairs go to the bins evenly, count / levels each, the remainder to
the first bins, and a bin with fewer pairs than its share gives the rest to bins that
have more. The student attacks with each weak teacher defending (pairs the teacher
holds equal that the student separates most), then the teacher attacks with the
student defending: both directions of the paper's "and the reverse".

The stage mixture (labels/mining.py) takes its real hard cases from here; `gmad_rule`
names the (teacher, direction) that picked a pair in its `rule` column.
"""

from __future__ import annotations

import numpy as np

from w2s_vqa.labels.mining_inputs import MiningError

GMAD_DIRECTIONS = ("student_attacks", "teacher_attacks")


def gmad_rule(teacher: str, direction: str) -> str:
    """The `rule` value of a gMAD pair: "gmad:<teacher>:<direction>", direction one of GMAD_DIRECTIONS."""
    if direction not in GMAD_DIRECTIONS:
        raise MiningError(f"gMAD direction must be one of {GMAD_DIRECTIONS}, got {direction!r}")
    return f"gmad:{teacher}:{direction}"


def pair_keys(first, second, n: int) -> np.ndarray:
    """int64 [N]: a key per unordered pair of indices below n, min * n + max (the same for (a, b) and (b, a))."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    return np.minimum(first, second) * np.int64(n) + np.maximum(first, second)


def is_member(keys, sorted_keys) -> np.ndarray:
    """bool [N]: whether each of `keys` (int64 [N]) is in `sorted_keys` (int64, ascending).

    A binary search: np.isin, which sorts or hashes both arrays on every call, took
    several times longer on the pool sizes a stage mines.
    """
    keys = np.asarray(keys, np.int64)
    if not len(sorted_keys):
        return np.zeros(keys.shape, dtype=bool)
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[where] == keys


def spread_count(count: int, capacity) -> np.ndarray:
    """int64 [B]: `count` items over B bins holding at most capacity[b] each, as evenly as they allow.

    Every bin gets q or q + 1 (q the largest level that fits), the extra ones to the
    first bins with room; a bin whose capacity is below q is full and the others
    take its share. The total is min(count, sum(capacity)).
    """
    capacity = np.asarray(capacity, np.int64)
    total = min(int(count), int(capacity.sum()))
    low, high = 0, int(capacity.max(initial=0))
    while low < high:  # the largest q with sum(min(capacity, q)) <= total: a bisection over q, not items
        mid = (low + high + 1) // 2
        if np.minimum(capacity, mid).sum() <= total:
            low = mid
        else:
            high = mid - 1
    quota = np.minimum(capacity, low)
    room = np.flatnonzero(capacity > low)
    quota[room[:total - int(quota.sum())]] += 1
    return quota


def gmad_pairs(attacker, defender, *, levels: int, count: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): int64 [M] indices into the inputs of up to `count` gMAD pairs.

    attacker, defender: float [N] scores of the same N videos (higher = better), NaN
    (or infinite) where a model did not score a video; such videos are left out.
    The defender's scores split the rest, n videos, into `levels` equal-count bins,
    bin = floor(levels * rank / n) (rank from 0 in ascending defender score, ties in
    position order; sizes differ by at most one). Inside a bin, sorted by the
    attacker's score (ties in position order), rung i pairs the i-th lowest video
    with the i-th highest, i < size // 2: disjoint pairs, the attacker's most separated
    first. Each bin gives its lowest rungs, the bins' shares spread by `spread_count`
    (count / levels each, the remainder to the first bins, a small bin's shortfall to
    the others); M = min(count, the rungs there are), fewer than `count` when the bins
    are small. `exclude`: int64 keys (`pair_keys(.., N)`) of unordered pairs not to
    give (already chosen); their rungs are skipped and the bin's next rungs are used.

    first is the video the attacker scores lower, second the higher; pairs come bin by
    bin (lowest defender bin first), the most separated first in each. Sorting is
    O(N log N); no loop over videos or pairs (Ma et al., "Group MAximum
    Differentiation Competition", 2016/2020, with a ladder of pairs per level).
    MiningError for unequal lengths, levels < 1 or count < 0.
    """
    attacker = np.asarray(attacker, np.float64)
    defender = np.asarray(defender, np.float64)
    if attacker.ndim != 1 or attacker.shape != defender.shape:
        raise MiningError(f"attacker and defender must be [N] scores of the same videos, got shapes "
                          f"{attacker.shape} and {defender.shape}")
    if int(levels) != levels or levels < 1:
        raise MiningError(f"gMAD levels must be an integer >= 1, got {levels!r}")
    if int(count) != count or count < 0:
        raise MiningError(f"gMAD count must be an integer >= 0, got {count!r}")
    levels, count = int(levels), int(count)
    videos = np.flatnonzero(np.isfinite(attacker) & np.isfinite(defender))
    n = len(videos)
    empty = np.zeros(0, np.int64)
    if n < 2 or count == 0:
        return empty, empty
    # Stable sorts of `videos` (ascending) break ties by position.
    bins = np.empty(n, np.int64)
    bins[np.argsort(defender[videos], kind="stable")] = np.arange(n, dtype=np.int64) * levels // n
    by_attacker = np.argsort(attacker[videos], kind="stable")
    ranked = videos[by_attacker[np.argsort(bins[by_attacker], kind="stable")]]  # by bin, then attacker score
    sizes = np.bincount(bins, minlength=levels)
    starts = np.cumsum(sizes) - sizes
    rungs = sizes // 2
    excluded = None
    if exclude is not None and len(exclude):
        excluded = np.sort(np.asarray(exclude, np.int64), kind="stable")  # a sorted input: one pass
    # With exclusions, only the first rungs of each bin are looked up at first, as many as
    # could be needed; more only when a bin runs out (the checks cost more than the ladder).
    limit = rungs if excluded is None else np.minimum(rungs, 2 * -(-count // levels) + 16)
    while True:
        bin_of = np.repeat(np.arange(levels), limit)
        rung = np.arange(len(bin_of)) - np.repeat(np.cumsum(limit) - limit, limit)
        first = ranked[starts[bin_of] + rung]
        second = ranked[starts[bin_of] + sizes[bin_of] - 1 - rung]
        if excluded is not None:
            keep = ~is_member(pair_keys(first, second, len(attacker)), excluded)
            first, second, bin_of = first[keep], second[keep], bin_of[keep]
        available = np.bincount(bin_of, minlength=levels)
        quota = spread_count(count, available)
        # A cut-off bin with rungs to spare leaves spread_count's result as the whole ladder's.
        short = (limit < rungs) & (quota >= available)
        if not short.any():
            break
        limit = np.where(short, np.minimum(rungs, 2 * limit), limit)
    within = np.arange(len(bin_of)) - (np.cumsum(available) - available)[bin_of]
    take = within < quota[bin_of]
    return first[take].astype(np.int64), second[take].astype(np.int64)
