"""The paper's "overall" figures: each metric's mean over a group of evaluation sets, weighted
by their video counts (docs/method.md, "Evaluation sets and headline numbers").
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# The paper's evaluation sets (docs/method.md "Evaluation sets"; w2s_vqa/datasets/lists/*.csv by
# these names) and the videos it evaluated of each.
IN_DOMAIN_SETS: dict[str, int] = {"lsvq_test": 7182, "lsvq_1080p": 3573, "konvid_1k": 1200, "live_vqc": 585,
                                  "youtube_ugc": 1020}
OUT_OF_DISTRIBUTION_SETS: dict[str, int] = {"live_yt_gaming": 600, "cgvds": 357, "live_yt_hfr": 480,
                                            "waterloo_ivc_4k": 1200, "kvq": 2926}
SET_GROUPS: dict[str, dict[str, int]] = {"in_domain": IN_DOMAIN_SETS, "out_of_distribution": OUT_OF_DISTRIBUTION_SETS}
OVERALL_METRICS = ("srcc", "krcc", "plcc", "plcc_fitted")


def weighted_overall(per_set: Mapping[str, Mapping], names: Sequence[str],
                     metrics: Sequence[str] = OVERALL_METRICS) -> dict | None:
    """The paper's "overall": each metric's mean over the sets `names`, weighted by video count.

    per_set: {set name: {"videos": count, metric: value, ...}} (e.g. `mos_metrics`
    results); sets of `names` absent from it are left out and listed, so a group of
    which the user has 2 of 5 sets gets the overall of those 2, marked so. Weights are
    the videos each set was evaluated on (the paper's counts when a set is complete).
    Returns {"sets": [present], "missing": [absent], "videos": total, metric: mean}
    (a metric NaN on some present set is NaN), or None when no set of `names` is present.
    """
    present = [n for n in names if n in per_set]
    if not present:
        return None
    weights = np.asarray([float(per_set[n]["videos"]) for n in present])
    out: dict = {"sets": present, "missing": [n for n in names if n not in per_set], "videos": int(weights.sum())}
    for metric in metrics:
        values = np.asarray([float(per_set[n][metric]) for n in present])
        out[metric] = float(np.sum(values * weights) / weights.sum())
    return out


def overall_by_group(per_set: Mapping[str, Mapping], groups: Mapping[str, Sequence[str]] = SET_GROUPS,
                     metrics: Sequence[str] = OVERALL_METRICS) -> dict[str, dict]:
    """{group: `weighted_overall`} for each group (default: the paper's in-domain and
    out-of-distribution sets) with at least one set in `per_set`."""
    out = {}
    for group, names in groups.items():
        result = weighted_overall(per_set, list(names), metrics)
        if result is not None:
            out[group] = result
    return out
