"""Drawing labelled pairs, splitting them by source and mixing their order.

Teacher pairs: distinct pairs among the fused videos (`sample_teacher_pairs`, optionally
balanced over the five levels) or given ones (`label_teacher_pairs`), labelled by the
five-way rule. Synthetic pairs: distinct severity levels of one source under one
simulator (`synthetic_pairs`), labelled by the level gap. The split keeps a source and
its variants on one side (`split_pairs`, `validation_sources`); `random_swap` mixes the
order of the two videos so that neither position favours better videos. Every function
returns a pair table (labels/pair_table.py).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from w2s_vqa.labels import origins
from w2s_vqa.labels.pair_table import canonical, make_pair_table
from w2s_vqa.labels.rules import SWAPPED_FIELDS, five_way_labels, level_gap_labels, swap_pair
from w2s_vqa.prompt import LEVELS
from w2s_vqa.tables import MAX_EXAMPLES

# Balanced sampling labels this many candidate pairs per pair it keeps.
_BALANCE_POOL_FACTOR = 10


# ---------------------------------------------------------------- teacher pairs

def label_teacher_pairs(fused: pd.DataFrame, first_ids: Sequence[str], second_ids: Sequence[str], *,
                        stage: int = 1, origin: str = origins.TEACHER, weight: float = 1.0) -> pd.DataFrame:
    """Pair table for given pairs, labelled by `rules.five_way_labels` from fused scores.

    `fused` is `teachers.fuse` output (index video_id; columns mean and var); a
    student's scores fit too, as mean with var 0 and origin `origins.student_origin(stage)`.
    The table keeps d and s_d.
    """
    first_ids = np.asarray(first_ids, dtype=object)
    second_ids = np.asarray(second_ids, dtype=object)
    first = fused.index.get_indexer(first_ids)
    second = fused.index.get_indexer(second_ids)
    unknown = pd.unique(np.concatenate([first_ids[first < 0], second_ids[second < 0]]))
    if len(unknown):
        raise ValueError(f"{len(unknown)} video id(s) have no fused teacher score: "
                         f"{', '.join(map(str, unknown[:MAX_EXAMPLES]))}")
    return _teacher_table(fused, first, second, stage=stage, origin=origin, weight=weight)


def sample_teacher_pairs(fused: pd.DataFrame, *, pairs_per_video: float, rng: np.random.Generator,
                         balance: bool = False, stage: int = 1, origin: str = origins.TEACHER,
                         weight: float = 1.0, allow_fewer: bool = False) -> pd.DataFrame:
    """Draw round(len(fused) * pairs_per_video) distinct pairs among the fused videos and label them.

    Without `balance`, every video is the first video of floor or ceil(pairs_per_video)
    pairs and its partner is drawn uniformly (the paper: 250k pairs from 200k videos,
    1.25 per video). No unordered pair is drawn twice.

    With `balance`, the five levels get equal counts (up to one pair, when the total is
    not a multiple of five): a pool of distinct candidate pairs, ten times the number
    asked for (or all pairs, when there are fewer), is labelled, and
    each level takes its quota from the pool without replacement. A level rarer than
    its quota is oversampled: all its candidates, then repeats drawn at random. A level
    with no candidate at all cannot be balanced and raises ValueError. Per-video usage
    is no longer even in this mode.

    When fewer distinct pairs exist than asked (n (n - 1) / 2 of them), ValueError,
    or with `allow_fewer` every distinct pair; compare the table's length with
    round(n * pairs_per_video) to tell.
    """
    n = len(fused)
    count = round(n * pairs_per_video)
    if allow_fewer:
        count = min(count, n * (n - 1) // 2)
    if n < 2 or count < 1:
        raise ValueError(f"{n} video(s) at {pairs_per_video} pairs per video make no pair")
    if not balance:
        first, second = _distinct_pairs(n, count, rng)
        return _teacher_table(fused, first, second, stage=stage, origin=origin, weight=weight)
    first, second = _distinct_pairs(n, min(n * (n - 1) // 2, _BALANCE_POOL_FACTOR * count), rng)
    pool = _teacher_table(fused, first, second, stage=stage, origin=origin, weight=weight)
    keep = _balanced_choice(pool["label"].to_numpy(), count, rng)
    return pool.iloc[keep].reset_index(drop=True)


def _teacher_table(fused: pd.DataFrame, first: np.ndarray, second: np.ndarray, *,
                   stage: int, origin: str, weight: float) -> pd.DataFrame:
    if (first == second).any():
        raise ValueError("a teacher pair compares a video with itself")
    mean = fused["mean"].to_numpy(dtype=np.float64)
    var = fused["var"].to_numpy(dtype=np.float64)
    d = mean[second] - mean[first]
    s_d = np.sqrt(var[first] + var[second])
    ids = fused.index.to_numpy()
    return make_pair_table(ids[first], ids[second], five_way_labels(d, s_d), origin=origin,
                           stage=stage, weight=weight, d=d, s_d=s_d)


def _distinct_pairs(n: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct unordered pairs of indices below n, each in a random order."""
    all_pairs = n * (n - 1) // 2
    if count > all_pairs:
        raise ValueError(f"cannot draw {count} distinct pairs from {n} videos (there are {all_pairs})")
    if 2 * count > all_pairs:
        # Dense: redrawing collisions would crawl, so choose among all pairs directly.
        low, high = np.triu_indices(n, k=1)
        pick = rng.choice(all_pairs, size=count, replace=False)
        flip = rng.random(count) < 0.5
        return np.where(flip, high[pick], low[pick]), np.where(flip, low[pick], high[pick])
    # Sparse: each video is first equally often; partners that repeat a pair are redrawn.
    first = np.resize(rng.permutation(n), count)
    second = (first + rng.integers(1, n, size=count)) % n
    while True:
        key = np.minimum(first, second).astype(np.int64) * n + np.maximum(first, second)
        repeated = np.ones(count, dtype=bool)
        repeated[np.unique(key, return_index=True)[1]] = False
        if not repeated.any():
            return first, second
        second[repeated] = (first[repeated] + rng.integers(1, n, size=int(repeated.sum()))) % n


def _balanced_choice(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into `labels` giving each level count // 5 or one more (see sample_teacher_pairs)."""
    quotas = np.full(len(LEVELS), count // len(LEVELS))
    quotas[rng.choice(len(LEVELS), size=count % len(LEVELS), replace=False)] += 1
    found = np.bincount(labels, minlength=len(LEVELS))
    absent = [LEVELS[k] for k in range(len(LEVELS)) if quotas[k] and not found[k]]
    if absent:
        raise ValueError(
            f"cannot balance levels: no candidate pair is labelled {', '.join(absent)} "
            f"(candidates per level: {dict(zip(LEVELS, found.tolist()))})")
    chosen = []
    for level, quota in enumerate(quotas):
        members = np.flatnonzero(labels == level)
        if len(members) >= quota:
            chosen.append(rng.choice(members, size=quota, replace=False))
        else:
            chosen.append(np.concatenate([members, rng.choice(members, size=quota - len(members))]))
    return rng.permutation(np.concatenate(chosen))


# ---------------------------------------------------------------- synthetic pairs

def synthetic_pairs(variants: pd.DataFrame, *, stage: int = 1, pairs_per_group: int | None = None,
                    rng: np.random.Generator | None = None, weight: float = 1.0) -> pd.DataFrame:
    """Pairs of distinct severity levels of one source, labelled by `rules.level_gap_labels`.

    `variants` lists videos with the columns id, source_id, distortion, kind and level:
    the video store's index, or some of its rows. Level 0 is
    the pristine source; a row with level >= 1 is a copy distorted by the simulator
    `distortion`, whose family `kind` (spatial, temporal or compression) becomes the
    pair's origin. Pairs form within a group, one source under one simulator, and the
    pristine video takes part in every group of its source. Each group gives all pairs
    of its distinct levels or, with `pairs_per_group` (needs `rng`), that many of them
    drawn at random (all when fewer).

    Every pair puts the less distorted video first, so labels are "worse" or "inferior"
    until `random_swap` mixes the orders. The table keeps source_id for the split.
    """
    missing = [c for c in ("id", "source_id", "distortion", "kind", "level") if c not in variants.columns]
    if missing:
        raise ValueError(f"variants table lacks column(s) {missing} (has {list(variants.columns)})")
    if pairs_per_group is not None and rng is None:
        raise ValueError("sampling pairs_per_group needs an rng")
    level = variants["level"]
    if not pd.api.types.is_integer_dtype(level) or (level < 0).any():
        raise ValueError("variants' levels must be non-negative integers (0 = pristine)")
    pristine = variants.loc[level == 0, ["source_id", "id", "level"]]
    distorted = variants.loc[level > 0, ["source_id", "distortion", "kind", "id", "level"]]
    problems = []
    twice = pristine["source_id"][pristine["source_id"].duplicated()].unique()
    problems += [f"source {s}: more than one pristine (level 0) video" for s in twice]
    group = ["source_id", "distortion", "kind"]
    clashes = distorted[distorted.duplicated(["source_id", "distortion", "level"])]
    problems += [f"source {s}, {d} level {k}: more than one video"
                 for s, d, k in clashes[["source_id", "distortion", "level"]].drop_duplicates().itertuples(index=False)]
    odd_kinds = sorted(set(distorted["kind"]) - set(origins.SYNTHETIC), key=str)
    problems += [f"kind {k!r} is not one of {origins.SYNTHETIC}" for k in odd_kinds]
    if problems:
        shown = problems[:MAX_EXAMPLES] + ([f"... and {len(problems) - MAX_EXAMPLES} more"]
                                           if len(problems) > MAX_EXAMPLES else [])
        raise ValueError("variants table: " + "; ".join(shown))

    groups = distorted[group].drop_duplicates()
    members = pd.concat([distorted, groups.merge(pristine, on="source_id")], ignore_index=True)
    pairs = members.merge(members, on=group, suffixes=("_first", "_second"))
    pairs = pairs[pairs["level_first"] < pairs["level_second"]]
    if pairs_per_group is not None:
        pairs = pairs.iloc[rng.permutation(len(pairs))].groupby(group, sort=False).head(pairs_per_group)
    pairs = pairs.sort_values(["source_id", "distortion", "level_first", "level_second"])
    labels = level_gap_labels(pairs["level_first"].to_numpy(), pairs["level_second"].to_numpy())
    return make_pair_table(pairs["id_first"], pairs["id_second"], labels, origin=pairs["kind"],
                           stage=stage, weight=weight, source_id=pairs["source_id"])


# ---------------------------------------------------------------- split and order

class PairSplit(NamedTuple):
    train: pd.DataFrame
    val: pd.DataFrame
    crossing: pd.DataFrame  # pairs with one video on each side: in neither set


def validation_sources(source_ids, *, val_fraction: float, salt: str = "") -> np.ndarray:
    """True for the sources that belong to validation.

    A hash of (salt, source id) decides, not a random draw: the same source lands on
    the same side in every table (teacher, synthetic, a later stage's) and every run,
    which is what keeps a source and its distorted variants out of training once it
    is in validation. About `val_fraction` of the sources go to validation.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    unique, inverse = np.unique(np.asarray(source_ids, dtype=str), return_inverse=True)
    position = np.array([
        int.from_bytes(hashlib.blake2b(f"{salt}\0{source}".encode(), digest_size=8).digest(), "big") / 2.0**64
        for source in unique])
    return (position < val_fraction)[inverse] if len(unique) else np.zeros(0, dtype=bool)


def split_pairs(pairs: pd.DataFrame, *, val_fraction: float, salt: str = "") -> PairSplit:
    """Split a pair table by source video so that no source is on both sides.

    A pair's two sources are its source_id where one is given (synthetic pairs: both
    videos come from it), otherwise the two videos themselves. A pair goes to a side
    when both sources are on it; a teacher pair between a training and a validation
    video is in `crossing` and used by neither. To lose no teacher pairs, split the
    videos with `validation_sources` first and draw pairs within each side.
    """
    first = pairs["first_id"].astype("str")
    second = pairs["second_id"].astype("str")
    if "source_id" in pairs.columns:
        shared = pairs["source_id"].notna().to_numpy()
        first = first.where(~shared, pairs["source_id"])
        second = second.where(~shared, pairs["source_id"])
    else:
        shared = np.zeros(len(pairs), dtype=bool)
    unsourced = pairs["origin"].isin(origins.SYNTHETIC).to_numpy() & ~shared
    if unsourced.any():
        raise ValueError(f"{int(unsourced.sum())} synthetic pair(s) have no source_id; without it "
                         "a distorted variant could land on the other side from its source")
    in_val = validation_sources(np.concatenate([first.to_numpy(), second.to_numpy()]),
                                val_fraction=val_fraction, salt=salt)
    first_val, second_val = in_val[:len(pairs)], in_val[len(pairs):]
    return PairSplit(train=pairs[~first_val & ~second_val].reset_index(drop=True),
                     val=pairs[first_val & second_val].reset_index(drop=True),
                     crossing=pairs[first_val != second_val].reset_index(drop=True))


# The fields a swap changes; every other field of a pair (s_d, weight, origin, stage,


def swap_pairs(pairs: pd.DataFrame, mask=None) -> pd.DataFrame:
    """The pair table with the rows where `mask` (all by default) swapped by `rules.swap_pair`."""
    swap = np.ones(len(pairs), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    columns = {c: pairs[c].to_numpy() for c in SWAPPED_FIELDS if c in pairs.columns}
    swapped = swap_pair(columns)
    return canonical(pairs.assign(**{c: np.where(swap, swapped[c], columns[c]) for c in columns}))


def random_swap(pairs: pd.DataFrame, rng: np.random.Generator, *, probability: float = 0.5) -> pd.DataFrame:
    """Swap each pair's order with `probability`, so that neither position favours better videos."""
    return swap_pairs(pairs, rng.random(len(pairs)) < probability)
