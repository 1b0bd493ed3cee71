"""Pairs within one MOS-labeled set, and random splits of a set by video: MOS fine-tuning.

docs/method.md ("Metrics in practice", MOS fine-tuning, Compare2Score's recipe, from which
the paper's label rule comes): pairs of videos of one labeled set, labelled by the
five-way rule (rules.five_way_labels) with d = MOS_second - MOS_first and
s_d = sqrt(s_first^2 + s_second^2), s a video's MOS standard deviation; the field
reports the median over 10 random 80/20 splits by video.

Where s comes from:

    a column      the set's own per-video standard deviation of the ratings, a column
                  of the MOS table named as in MOS_STD_COLUMNS. Of the paper's ten sets,
                  LIVE-YT-HFR publishes one (its subject_MOS.csv: MOS and standard
                  deviation per video); the KoNViD-1k and YouTube-UGC releases carry SD
                  columns beside MOS in some versions (check the download); LSVQ and
                  LIVE-VQC publish MOS only. The tables in w2s_vqa/datasets/lists hold
                  file,mos only.
    a constant    otherwise: std_fraction x (max - min) of the MOS of the videos given,
                  the same s for every video (config finetune.mos_std_fraction). A
                  constant keeps the rule's shape: |d| <= s sqrt(2) is "similar", above
                  2 s sqrt(2) "superior"/"inferior". It is a choice, not the paper's: the
                  paper fine-tunes on sets where it does not say which s it used.

Pairs carry origin "mos" (labels/origins.py): human labels, reported apart from the
teachers' and the student's in every per-origin metric.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from w2s_vqa.labels import origins
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.tables import MAX_EXAMPLES

# MOS table columns read as a video's standard deviation of ratings, first found first.
MOS_STD_COLUMNS = ("mos_std", "std", "sd")


def std_column(columns: Sequence[str]) -> str | None:
    """The first of MOS_STD_COLUMNS among `columns`, or None."""
    return next((c for c in MOS_STD_COLUMNS if c in columns), None)


def mos_spread(table: pd.DataFrame, *, mos_std: str | None, std_fraction: float) -> np.ndarray:
    """float64 [N]: each video's s, from the column `mos_std` of `table` or, when None, the
    constant std_fraction x (max - min of table["mos"]).

    Raises ValueError naming the videos (`id`) whose standard deviation is missing, not a
    number or negative, a `mos_std` the table lacks, or a negative std_fraction.
    """
    if mos_std is None:
        if not np.isfinite(std_fraction) or std_fraction < 0:
            raise ValueError(f"finetune.mos_std_fraction must be a number >= 0, got {std_fraction}")
        mos = table["mos"].to_numpy(np.float64)
        return np.full(len(table), std_fraction * float(np.ptp(mos)) if len(mos) else 0.0)
    if mos_std not in table.columns:
        raise ValueError(f"the MOS table has no column {mos_std!r} (it has {list(table.columns)})")
    std = pd.to_numeric(table[mos_std], errors="coerce").to_numpy(np.float64)
    bad = ~(np.isfinite(std) & (std >= 0))
    if bad.any():
        shown = ", ".join(f"'{i}' ({v!r})" for i, v in zip(table["id"][bad][:MAX_EXAMPLES],
                                                          table[mos_std][bad][:MAX_EXAMPLES].tolist()))
        raise ValueError(f"{int(bad.sum())} video(s) have a {mos_std} that is not a number >= 0: {shown}")
    return std


def mos_pairs(table: pd.DataFrame, *, pairs_per_video: float, rng: np.random.Generator, mos_std: str | None = None,
              std_fraction: float, stage: int = 1, weight: float = 1.0) -> pd.DataFrame:
    """A pair table of videos of one MOS-labeled set, labelled by the five-way rule.

    table: columns id (str, the store's video ids) and mos (float), and, when `mos_std`
    names it, that column (the per-video standard deviation, MOS units). Draws
    round(N x pairs_per_video) distinct pairs among the N videos (each video first in
    floor or ceil(pairs_per_video) of them, its partner uniform; no video with itself,
    no unordered pair twice; every distinct pair when there are fewer:
    sampling.sample_teacher_pairs with allow_fewer), labelled with
    d = mos[second] - mos[first] and s_d = sqrt(s_first^2 + s_second^2), s from
    `mos_spread`. Columns: the pair table's (origin "mos", `stage`, `weight`) with d and
    s_d. `.attrs["spread"]` says where s came from.

    Raises ValueError for a table without id or mos, a repeated id, a MOS that is not a
    finite number, fewer than 2 videos, and as `mos_spread` does.
    """
    missing = [c for c in ("id", "mos") if c not in table.columns]
    if missing:
        raise ValueError(f"the MOS table lacks column(s) {missing} (it has {list(table.columns)})")
    ids = table["id"].astype(str)
    repeated = ids[ids.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"video(s) listed twice in the MOS table: {repeated[:MAX_EXAMPLES]}")
    mos = pd.to_numeric(table["mos"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(mos).all():
        bad = ids[~np.isfinite(mos)].tolist()
        raise ValueError(f"{len(bad)} video(s) have a MOS that is not a finite number: {bad[:MAX_EXAMPLES]}")
    if len(table) < 2:
        raise ValueError(f"{len(table)} video(s) make no pair; MOS pairs need at least 2 videos")
    spread = mos_spread(table.assign(mos=mos), mos_std=mos_std, std_fraction=std_fraction)
    fused = pd.DataFrame({"mean": mos, "var": spread ** 2}, index=pd.Index(ids.to_numpy(), name="video_id"))
    pairs = pair_sampling.sample_teacher_pairs(fused, pairs_per_video=pairs_per_video, rng=rng, origin=origins.MOS,
                                             stage=stage, weight=weight, allow_fewer=True)
    pairs.attrs["spread"] = (f"column {mos_std}" if mos_std is not None else
                             f"{std_fraction:g} x MOS range {np.ptp(mos):g} = {spread[0]:g} for every video")
    return pairs


def split_by_video(ids: Sequence[str], *, train_fraction: float, splits: int, seed: int
                   ) -> list[tuple[list[str], list[str]]]:
    """`splits` random splits of a set's videos: [(train_ids, test_ids), ...].

    Split s puts round(train_fraction x N) videos, drawn without replacement, in train
    (at least 1, at most N - 1) and the rest in test: no video on both sides, every video
    on one. The draw of split s depends on (seed, s) and on the set of ids only (they are
    sorted first): the same split s whatever `splits` is and whatever the table's row
    order. Each side keeps the sorted order.

    Raises ValueError for fewer than 2 videos, a repeated id, train_fraction outside
    (0, 1), or splits < 1.
    """
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        seen, twice = set(), []
        for i in ids:
            if i in seen and i not in twice:
                twice.append(i)
            seen.add(i)
        raise ValueError(f"video(s) listed twice: {twice[:MAX_EXAMPLES]}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"finetune.train_fraction must be in (0, 1), got {train_fraction}")
    if int(splits) != splits or splits < 1:
        raise ValueError(f"the number of splits must be an integer >= 1, got {splits}")
    if len(ids) < 2:
        raise ValueError(f"{len(ids)} video(s) cannot be split into a training and a test part")
    ordered = np.asarray(sorted(ids), dtype=object)
    n_train = min(max(int(round(train_fraction * len(ordered))), 1), len(ordered) - 1)
    out = []
    for s in range(int(splits)):
        chosen = np.zeros(len(ordered), bool)
        chosen[np.random.default_rng([int(seed), s]).permutation(len(ordered))[:n_train]] = True
        out.append((ordered[chosen].tolist(), ordered[~chosen].tolist()))
    return out
