"""Labelled video pairs: the labelling rules, pair sampling, the split and the pair table.

A training example is a pair (first video, second video) with one of the five levels
of prompt.LEVELS, answering "compared with the first video, how is the quality of the
second?" (METHOD.md "Labels"). Pairs come from the weak teachers' fused scores
(teachers.py), from distortion levels of one source video, and in later stages from
the previous stage's student. All of them meet in one pair table:

    first_id, second_id  str    video ids in the video store
    label                int8   index into prompt.LEVELS
    origin               str    "teacher", "spatial", "temporal", "compression",
                                "student:<stage>" for pairs a stage's student labelled,
                                or "mos" for pairs of one MOS-labeled set
                                (labels/origins.py)
    stage                int32  the training stage (1, 2, 3, ...) the pair belongs to
    weight               float32 per-pair loss weight

and, where known, `d` and `s_d` (teacher pairs: score difference and its spread) and
`source_id` (synthetic pairs: the source both videos were made from).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Collection, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr

from w2s_vqa.labels import origins
from w2s_vqa.labels.origins import student_origin  # noqa: F401 (callers import it from here)
from w2s_vqa.tables import MAX_EXAMPLES, ProblemReport, read_csv, read_jsonl
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS, MIRROR

PAIR_COLUMNS = ("first_id", "second_id", "label", "origin", "stage", "weight")
OPTIONAL_COLUMNS = ("d", "s_d", "source_id")
# The origin names' home is labels/origins.py; these names are kept for the callers.
TEACHER_ORIGIN = origins.TEACHER
SYNTHETIC_ORIGINS = origins.SYNTHETIC
_DTYPES = {
    "first_id": "str", "second_id": "str", "label": np.int8, "origin": "str",
    "stage": np.int32, "weight": np.float32, "d": np.float64, "s_d": np.float64, "source_id": "str",
}

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (
    LEVEL_INDEX[word] for word in ("superior", "better", "similar", "worse", "inferior"))
_MIRROR = np.asarray(MIRROR, dtype=np.int64)
# Levels from the lowest to the highest d, the order of the five intervals of the rule.
_ASCENDING = np.array([INFERIOR, WORSE, SIMILAR, BETTER, SUPERIOR])

# Balanced sampling labels this many candidate pairs per pair it keeps.
_BALANCE_POOL_FACTOR = 10


class PairTableError(ValueError):
    """A pair table cannot be used; the message lists every problem found.

    `unknown_ids` lists every video id the table names that the store does not hold,
    when the check had the store's ids (`validate_pair_table(known_ids=...)`).
    """

    def __init__(self, message: str, unknown_ids: Sequence[str] = ()):
        super().__init__(message)
        self.unknown_ids = list(unknown_ids)


# ---------------------------------------------------------------- labelling rules

def five_way_labels(d, s_d) -> np.ndarray:
    """The five-way teacher rule: label index of (first A, second B) from d = m_B - m_A.

    s_d = sqrt(s_A^2 + s_B^2) is the spread of d across teachers. In LEVELS terms:
    superior if d > 2 s_d; better if s_d < d <= 2 s_d; similar if -s_d < d <= s_d;
    worse if -2 s_d < d <= -s_d; inferior if d <= -2 s_d (METHOD.md, boundaries as
    written there). One exception: d == 0 is always "similar". The literal rule calls
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
    are not a pair, so "similar" is never produced (METHOD.md "Labels").
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


# ---------------------------------------------------------------- teacher pairs

def label_teacher_pairs(fused: pd.DataFrame, first_ids: Sequence[str], second_ids: Sequence[str], *,
                        stage: int = 1, origin: str = TEACHER_ORIGIN, weight: float = 1.0) -> pd.DataFrame:
    """Pair table for given pairs, labelled by `five_way_labels` from fused scores.

    `fused` is `teachers.fuse` output (index video_id; columns mean and var); a
    student's scores fit too, as mean with var 0 and origin `student_origin(stage)`.
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
                         balance: bool = False, stage: int = 1, origin: str = TEACHER_ORIGIN,
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
    """Pairs of distinct severity levels of one source, labelled by `level_gap_labels`.

    `variants` lists videos with the columns video_id, source_id, distortion, kind and
    level, as the video store's index does (rename its `id` to video_id). Level 0 is
    the pristine source; a row with level >= 1 is a copy distorted by the simulator
    `distortion`, whose family `kind` (spatial, temporal or compression) becomes the
    pair's origin. Pairs form within a group, one source under one simulator, and the
    pristine video takes part in every group of its source. Each group gives all pairs
    of its distinct levels or, with `pairs_per_group` (needs `rng`), that many of them
    drawn at random (all when fewer).

    Every pair puts the less distorted video first, so labels are "worse" or "inferior"
    until `random_swap` mixes the orders. The table keeps source_id for the split.
    """
    missing = [c for c in ("video_id", "source_id", "distortion", "kind", "level") if c not in variants.columns]
    if missing:
        raise ValueError(f"variants table lacks column(s) {missing} (has {list(variants.columns)})")
    if pairs_per_group is not None and rng is None:
        raise ValueError("sampling pairs_per_group needs an rng")
    level = variants["level"]
    if not pd.api.types.is_integer_dtype(level) or (level < 0).any():
        raise ValueError("variants' levels must be non-negative integers (0 = pristine)")
    pristine = variants.loc[level == 0, ["source_id", "video_id", "level"]]
    distorted = variants.loc[level > 0, ["source_id", "distortion", "kind", "video_id", "level"]]
    problems = []
    twice = pristine["source_id"][pristine["source_id"].duplicated()].unique()
    problems += [f"source {s}: more than one pristine (level 0) video" for s in twice]
    group = ["source_id", "distortion", "kind"]
    clashes = distorted[distorted.duplicated(["source_id", "distortion", "level"])]
    problems += [f"source {s}, {d} level {k}: more than one video"
                 for s, d, k in clashes[["source_id", "distortion", "level"]].drop_duplicates().itertuples(index=False)]
    odd_kinds = sorted(set(distorted["kind"]) - set(SYNTHETIC_ORIGINS), key=str)
    problems += [f"kind {k!r} is not one of {SYNTHETIC_ORIGINS}" for k in odd_kinds]
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
    return make_pair_table(pairs["video_id_first"], pairs["video_id_second"], labels, origin=pairs["kind"],
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
    unsourced = pairs["origin"].isin(SYNTHETIC_ORIGINS).to_numpy() & ~shared
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


def swap_pairs(pairs: pd.DataFrame, mask=None) -> pd.DataFrame:
    """The pair table with the rows where `mask` (all by default) swapped by `swap_pair`."""
    swap = np.ones(len(pairs), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    columns = {c: pairs[c].to_numpy() for c in SWAPPED_FIELDS if c in pairs.columns}
    swapped = swap_pair(columns)
    return _canonical(pairs.assign(**{c: np.where(swap, swapped[c], columns[c]) for c in columns}))


def random_swap(pairs: pd.DataFrame, rng: np.random.Generator, *, probability: float = 0.5) -> pd.DataFrame:
    """Swap each pair's order with `probability`, so that neither position favours better videos."""
    return swap_pairs(pairs, rng.random(len(pairs)) < probability)


# ---------------------------------------------------------------- the pair table

def make_pair_table(first_id, second_id, label, *, origin, stage: int, weight=1.0, **optional) -> pd.DataFrame:
    """A pair table in canonical column order and dtypes; `optional` takes d, s_d, source_id.

    Scalars (origin, stage, weight) are repeated over all pairs.
    """
    unknown = set(optional) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown optional pair column(s) {sorted(unknown)}; known: {OPTIONAL_COLUMNS}")
    columns = {"first_id": first_id, "second_id": second_id, "label": label,
               "origin": origin, "stage": stage, "weight": weight, **optional}
    as_arrays = {name: value.to_numpy() if isinstance(value, pd.Series) else value
                 for name, value in columns.items()}
    length = len(np.asarray(as_arrays["first_id"]))
    table = pd.DataFrame(as_arrays, index=pd.RangeIndex(length))
    return _canonical(table)


def validate_pair_table(pairs: pd.DataFrame, path: str | os.PathLike | None = None, *,
                        known_ids: Collection[str] | None = None, rows: Sequence[int] | None = None) -> None:
    """Raise PairTableError listing every problem of a pair table in one message.

    Checked: missing columns, missing or equal ids, labels outside 0..len(LEVELS)-1,
    unknown origins, stages that are not integers >= 1, weights that are not finite
    numbers >= 0, d that is not a number or infinite, s_d that is not a number,
    infinite or negative (d and s_d may be missing: pairs without a teacher
    difference), and, with `known_ids` (the store's ids), video ids the store does not
    hold, with the rows that name them (also in the error's `unknown_ids`).

    A pair table is refused whole, never used with bad rows left out: every row is one
    training example with its loss weight, and a run on a silently shrunk table could
    not be compared with another on the same file.

    Rows are data rows counted from 1, the header not counted (`rows` gives each row's
    number where they differ, as JSON lines with blank lines do).
    """
    source = os.fspath(path) if path is not None else "<pair table>"
    problems = ProblemReport(source, "pair table")
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    problems.add(f"missing columns (the table has {list(pairs.columns)})", len(missing), map(repr, missing))
    rows = np.arange(1, len(pairs) + 1) if rows is None else np.asarray(rows)

    def report(kind: str, bad: np.ndarray, values: pd.Series | None = None) -> None:
        where = np.flatnonzero(bad)[:MAX_EXAMPLES]
        if values is None:
            shown = [f"row {rows[i]}" for i in where]
        else:  # tolist() gives Python scalars, which print plainly
            shown = [f"row {rows[i]}: {value!r}" for i, value in zip(where, values.iloc[where].tolist())]
        problems.add(kind, int(bad.sum()), shown)

    def numbers(column: str) -> tuple[np.ndarray, np.ndarray]:
        """(values as float64, blank mask): text that is no number becomes NaN, not blank."""
        values = pairs[column]
        blank = (values.isna() | (values.astype("str").str.strip() == "")).to_numpy()
        if pd.api.types.is_bool_dtype(values):
            return np.full(len(values), np.nan), blank
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan), blank

    blank = {}
    for column in ("first_id", "second_id"):
        if column in pairs.columns:
            values = pairs[column]
            blank[column] = (values.isna() | (values.astype("str").str.strip() == "")).to_numpy()
            report(f"empty {column}", blank[column])
    if len(blank) == 2:
        same = (pairs["first_id"].astype("str") == pairs["second_id"].astype("str")).to_numpy()
        report("a video compared with itself", same & ~blank["first_id"], pairs["first_id"])
    if "label" in pairs.columns:
        label, _ = numbers("label")
        bad = ~(np.isin(label, np.arange(len(LEVELS))))
        report(f"label not an index into LEVELS (0..{len(LEVELS) - 1})", bad, pairs["label"])
    if "origin" in pairs.columns:
        origin = pairs["origin"]
        text = origin.astype("str")
        known = text.isin([o for o in text.unique() if origins.is_known(o)]).to_numpy()
        bad = ~(known & origin.notna().to_numpy())
        report(f"unknown origin (expected {origins.EXPECTED})", bad, origin)
    if "stage" in pairs.columns:
        stage, _ = numbers("stage")
        bad = ~((stage >= 1) & (stage == np.round(stage)))
        report("stage not an integer >= 1", bad, pairs["stage"])
    if "weight" in pairs.columns:
        weight, _ = numbers("weight")
        report("weight not a finite number", ~np.isfinite(weight), pairs["weight"])
        report("negative weight", weight < 0, pairs["weight"])
    for column in ("d", "s_d"):
        if column in pairs.columns:
            value, empty = numbers(column)
            report(f"{column} not a finite number (leave it empty where a pair has none)",
                   ~np.isfinite(value) & ~empty, pairs[column])
            if column == "s_d":
                report("negative s_d (a standard deviation)", value < 0, pairs[column])

    unknown = []
    if known_ids is not None and len(blank) == 2:
        known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
        ids = {column: pairs[column].astype("str").to_numpy() for column in blank}
        outside = {column: ~pd.Series(ids[column]).isin(known).to_numpy() & ~blank[column] for column in blank}
        unknown = list(pd.unique(np.concatenate([ids[c][outside[c]] for c in blank])))
        using = outside["first_id"] | outside["second_id"]
        rows_of: dict[str, list[int]] = {}
        for i in np.flatnonzero(using):
            for column in blank:
                if outside[column][i]:
                    rows_of.setdefault(ids[column][i], []).append(int(rows[i]))

        def example(video_id: str) -> str:
            used = rows_of[video_id]
            shown = ", ".join(map(str, used[:MAX_EXAMPLES])) + (", ..." if len(used) > MAX_EXAMPLES else "")
            return f"{video_id!r} (row{'s' if len(used) > 1 else ''} {shown})"

        problems.add(f"video ids the video store does not hold (used by {int(using.sum())} pair(s))", len(unknown),
                     map(example, unknown))
    if problems:
        raise PairTableError(problems.message(), unknown)


def write_pairs(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Check `pairs` and write it as Parquet (.parquet/.pq), CSV (.csv) or JSON lines (.jsonl)."""
    path = os.fspath(path)
    validate_pair_table(pairs)
    table = _canonical(pairs)
    kind = _format(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if kind == "parquet":
        table.to_parquet(path, index=False)
    elif kind == "csv":
        table.to_csv(path, index=False)
    else:
        # json.dumps writes floats exactly (pandas' to_json rounds to 10 decimals).
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)


def read_pairs(path: str | os.PathLike, *, known_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Read a pair table written by `write_pairs` (or by hand), check it, return canonical dtypes.

    Text (CSV, JSON lines) is UTF-8 with or without a byte-order mark; other encodings
    and CSV separated by ';' or tabs are refused naming what was found (w2s_vqa.tables).
    Every problem, ids the store does not hold included when `known_ids` is given, is
    in one PairTableError (`validate_pair_table`). FileNotFoundError for a missing file;
    PairTableError for an empty path or an unknown extension.
    """
    path = os.fspath(path)
    if not path.strip():
        raise PairTableError("no pair table given (the path is empty)")
    kind = _format(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such pair table")
    text_columns = {c: str for c, t in _DTYPES.items() if t == "str"}
    rows = None
    if kind == "parquet":
        table = pd.read_parquet(path)
    elif kind == "csv":
        # Text, only empty cells missing: a video id such as "NA" stays an id.
        table = read_csv(path, what="pair table", error=PairTableError)
    else:
        # The json module, not pandas: NaN and Infinity reach the checks, floats stay exact.
        table, rows = read_jsonl(path, what="pair table", error=PairTableError)
        for column in (c for c in text_columns if c in table.columns):
            table[column] = table[column].astype(object).map(_as_text)
    validate_pair_table(table, path, known_ids=known_ids, rows=rows)
    # Checked: the numeric columns hold numbers (or, for d and s_d, nothing), whatever their type.
    numeric = [c for c, t in _DTYPES.items() if t != "str" and c in table.columns]
    return _canonical(table.assign(**{c: pd.to_numeric(table[c]) for c in numeric}))


def _as_text(value):
    """A JSON id as text (7 -> "7"); missing (None, or NaN where a record lacks the key) stays missing."""
    if value is None or isinstance(value, str) or (isinstance(value, float) and np.isnan(value)):
        return value
    return str(value)


def _format(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    formats = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
    if suffix not in formats:
        raise PairTableError(f"{path}: unknown pair table format {suffix!r}; expected one of {sorted(formats)}")
    return formats[suffix]


def _canonical(pairs: pd.DataFrame) -> pd.DataFrame:
    """Required columns first, then the optional ones present, then any others; canonical dtypes."""
    order = [c for c in PAIR_COLUMNS + OPTIONAL_COLUMNS if c in pairs.columns]
    order += [c for c in pairs.columns if c not in order]
    return pairs[order].astype({c: t for c, t in _DTYPES.items() if c in pairs.columns})
