"""A store's train and val pair tables: teacher pairs and synthetic pairs, split by source.

    build_pair_tables(store.index, teachers.fuse(scores, normalize="zscore"), seed=0)

is what `w2s-vqa pairs` and the demo pool run. In order:

1. Sources go to validation by `sampling.validation_sources` (a hash of the source id and
   `salt`, about `val_fraction` of them); every video goes where its source goes, so a
   source and its distorted variants are never on both sides.
2. Synthetic pairs: every two distinct severity levels of one source under one
   simulator (`sampling.synthetic_pairs`); they follow their source.
3. Teacher pairs, drawn within each side among the videos the teachers scored
   (`sampling.sample_teacher_pairs`, round(n * pairs_per_video) of n videos), so none
   crosses the split and none is lost to it. A side with fewer distinct pairs than
   asked gets all it has, a side with under two scored videos none; each such
   shortfall is a line in `notes`.
4. Each pair's order is swapped with probability 1/2 (`sampling.random_swap`).

Randomness comes from one `np.random.default_rng(seed)`, drawn in this order (train
teacher pairs, train swaps, val teacher pairs, val swaps), so a seed gives the same
tables on every run.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.prompt import LEVELS
from w2s_vqa.tables import MAX_EXAMPLES

# The paper's ratio: 250k teacher pairs from 200k videos.
PAIRS_PER_VIDEO = 1.25
VAL_FRACTION = 0.2
SIDES = ("train", "val")
INDEX_COLUMNS = ("id", "source_id", "distortion", "kind", "level")


class PairTables(NamedTuple):
    train: pd.DataFrame
    val: pd.DataFrame
    notes: tuple[str, ...]  # each way the pool gave less than asked, one line each


def build_pair_tables(index: pd.DataFrame, fused: pd.DataFrame | None = None, *,
                      pairs_per_video: float = PAIRS_PER_VIDEO, teacher_weight: float = 1.0,
                      val_fraction: float = VAL_FRACTION, salt: str = "", stage: int = 1,
                      seed: int = 0) -> PairTables:
    """(train, val, notes) pair tables for the videos of a store (see the module docstring).

    `index` is a video store's index (`VideoStore.index`: columns id, source_id,
    distortion, kind, level, one row per video). `fused` is `teachers.fuse` output for
    some of its videos (index video_id; columns mean, var); None makes synthetic pairs
    only. Teacher pairs weigh `teacher_weight` in the loss, synthetic pairs 1; all
    pairs get `stage`.

    Raises ValueError when `index` lacks a column, `fused` names a video the index does
    not hold, pairs_per_video is not positive, teacher_weight is negative or not
    finite, or val_fraction is outside [0, 1].
    """
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"store index lacks column(s) {missing} (has {list(index.columns)})")
    if not (np.isfinite(pairs_per_video) and pairs_per_video > 0):
        raise ValueError(f"pairs_per_video must be a positive number, got {pairs_per_video}")
    if not (np.isfinite(teacher_weight) and teacher_weight >= 0):
        raise ValueError(f"teacher_weight must be a finite number >= 0, got {teacher_weight}")
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    rng = np.random.default_rng(seed)
    notes: list[str] = []

    sources = index["source_id"].astype(str).unique()
    sources_in_val = pair_sampling.validation_sources(sources, val_fraction=val_fraction, salt=salt)
    empty = {side for side, count in zip(SIDES, (int((~sources_in_val).sum()), int(sources_in_val.sum())))
             if count == 0}
    notes += [f"{side}: no source went to {side} (val_fraction {val_fraction}, {len(sources)} source(s)), "
              "so it has no pair" for side in SIDES if side in empty]

    synthetic = pair_sampling.split_pairs(
        pair_sampling.synthetic_pairs(index, stage=stage),
        val_fraction=val_fraction, salt=salt)
    if fused is None:
        fused = pd.DataFrame({"mean": [], "var": []}, index=pd.Index([], dtype=object, name="video_id"))
    source_of = index.set_index("id")["source_id"].astype(str)
    unknown = fused.index[~fused.index.isin(source_of.index)]
    if len(unknown):
        raise ValueError(f"{len(unknown)} scored video id(s) are not in the store: "
                         f"{', '.join(map(str, unknown[:MAX_EXAMPLES]))}")
    unscored = len(source_of) - len(fused)
    if len(fused) and unscored:
        notes.append(f"{unscored} of the store's {len(source_of)} videos have no teacher score: "
                     "they are in synthetic pairs only")
    in_val = pair_sampling.validation_sources(source_of.reindex(fused.index).to_numpy(),
                                            val_fraction=val_fraction, salt=salt)

    sides = []
    for side, side_fused, side_synthetic in (("train", fused[~in_val], synthetic.train),
                                             ("val", fused[in_val], synthetic.val)):
        tables = [side_synthetic]
        teacher, note = _teacher_pairs(side_fused, pairs_per_video=pairs_per_video, weight=teacher_weight,
                                       stage=stage, rng=rng)
        if teacher is not None:
            tables.insert(0, teacher)
        if note and len(fused) and side not in empty:
            notes.append(f"{side}: {note}")
        sides.append(pair_sampling.random_swap(pd.concat(tables, ignore_index=True), rng))
    return PairTables(sides[0], sides[1], tuple(notes))


def _teacher_pairs(fused: pd.DataFrame, *, pairs_per_video: float, weight: float, stage: int,
                   rng: np.random.Generator) -> tuple[pd.DataFrame | None, str | None]:
    """Teacher pairs among `fused`'s videos, and a note when they are fewer than asked."""
    n = len(fused)
    asked = round(n * pairs_per_video)
    if n < 2:
        return None, f"{n} scored video(s) make no teacher pair"
    if asked < 1:
        return None, f"{n} scored videos at {pairs_per_video} pairs per video ask for no teacher pair"
    table = pair_sampling.sample_teacher_pairs(fused, pairs_per_video=pairs_per_video, rng=rng, weight=weight,
                                             stage=stage, allow_fewer=True)
    if len(table) < asked:
        return table, (f"{n} scored videos have {len(table)} distinct teacher pairs, fewer than the "
                       f"{asked} asked ({pairs_per_video} per video); all {len(table)} are used")
    return table, None


def pair_counts(pairs: pd.DataFrame) -> dict:
    """{"pairs": N, "by_origin": {origin: {level word: count}}} of a pair table, level
    words in LEVELS order, origins sorted; levels with no pair are left out."""
    by_origin = {}
    for origin, labels in sorted(pairs.groupby(pairs["origin"].astype(str))["label"], key=lambda item: item[0]):
        counts = np.bincount(labels.to_numpy(np.int64), minlength=len(LEVELS))
        by_origin[origin] = {word: int(c) for word, c in zip(LEVELS, counts) if c}
    return {"pairs": len(pairs), "by_origin": by_origin}
