"""The grouped selection program: exact on a pool whose optimum is known, equal to the
one-variable-per-video program of Vonikakis et al., and clear on bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.curate.select import CurateError, SelectionSettings, select

METRICS = ["a", "b", "c"]


def table(values, prefix="v"):
    t = pd.DataFrame(values, columns=METRICS)
    t["id"] = [f"{prefix}{i}" for i in range(len(t))]
    return t


@pytest.fixture
def pools():
    rng = np.random.default_rng(1)
    reference = table(rng.normal(0.0, 1.0, size=(200, 3)), "r")
    # The pool holds a copy of the reference plus 600 videos from a shifted, skewed law.
    others = rng.gamma(2.0, 1.0, size=(600, 3)) - 1.0
    pool = table(np.concatenate([reference[METRICS].to_numpy(), others]))
    return pool, reference


def test_an_exact_subset_is_found(pools):
    pool, reference = pools
    chosen = select(pool, reference, METRICS, SelectionSettings(k=200, bins=5, time_limit=60))
    assert len(chosen.chosen) == 200 and len(set(chosen.chosen)) == 200
    assert chosen.status == "optimal"
    # The reference itself is a K-subset of the pool, so a perfect histogram match exists.
    assert chosen.objective == pytest.approx(0.0, abs=1e-9)
    for metric in METRICS:
        assert chosen.l1[metric] == pytest.approx(0.0, abs=1e-12)
        assert chosen.l1_random[metric] > 0.05


def test_grouped_and_per_video_programs_reach_the_same_optimum():
    rng = np.random.default_rng(2)
    pool = table(rng.gamma(1.5, 1.0, size=(240, 3)))
    reference = table(rng.normal(1.5, 0.5, size=(100, 3)), "r")
    settings = SelectionSettings(k=50, bins=4, time_limit=60)
    grouped = select(pool, reference, METRICS, settings)
    per_video = select(pool, reference, METRICS, settings, group=False)
    assert grouped.status == per_video.status == "optimal"
    assert grouped.cells < per_video.cells == 240
    # HiGHS's default relative MIP gap is 1e-4: both optima agree within it.
    assert grouped.objective == pytest.approx(per_video.objective, abs=1e-4 * max(1.0, per_video.objective))


def test_keep_drop_and_cap(pools):
    pool, reference = pools
    pool["uploader"] = [f"u{i % 40}" for i in range(len(pool))]
    keep, drop = ["v700", "v701"], ["v0", "v1", "v2"]
    chosen = select(pool, reference, METRICS, SelectionSettings(k=100, bins=5, cap_column="uploader", cap=3),
                    keep=keep, drop=drop)
    ids = set(chosen.pool["id"].iloc[chosen.chosen])
    assert set(keep) <= ids and not ids & set(drop)
    assert chosen.pool["uploader"].iloc[chosen.chosen].value_counts().max() <= 3
    assert chosen.dropped_by_request == 3


def test_the_seed_decides_which_videos_fill_a_cell(pools):
    pool, reference = pools
    runs = [set(select(pool, reference, METRICS, SelectionSettings(k=100, bins=3, seed=s)).chosen) for s in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


def test_missing_metrics_are_dropped_and_counted(pools):
    pool, reference = pools
    pool.loc[[5, 9], "b"] = np.nan
    pool.loc[11, "c"] = np.inf
    chosen = select(pool, reference, METRICS, SelectionSettings(k=100, bins=5))
    assert chosen.dropped_nan == 3
    assert not {"v5", "v9", "v11"} & set(chosen.pool["id"])


def test_bad_input_is_named(pools):
    pool, reference = pools
    with pytest.raises(CurateError, match="--k 900 is more than the pool's 800"):
        select(pool, reference, METRICS, SelectionSettings(k=900))
    with pytest.raises(CurateError, match="reference table has no column 'c'"):
        select(pool, reference.drop(columns="c"), METRICS, SelectionSettings(k=10))
    pool["uploader"] = "same"
    with pytest.raises(CurateError, match="allows at most 5 videos, fewer than --k 10"):
        select(pool, reference, METRICS, SelectionSettings(k=10, cap_column="uploader", cap=5))
    with pytest.raises(CurateError, match="not in the pool: nope"):
        select(pool, reference, METRICS, SelectionSettings(k=10), keep=["nope"])
    with pytest.raises(CurateError, match="curate.binning"):
        SelectionSettings(k=10, binning="log")


def test_rounding_the_relaxation_stays_within_its_reported_gap():
    rng = np.random.default_rng(3)
    pool = table(rng.gamma(1.5, 1.0, size=(400, 3)))
    reference = table(rng.normal(1.5, 0.5, size=(100, 3)), "r")
    settings = SelectionSettings(k=80, bins=5, time_limit=60)
    exact = select(pool, reference, METRICS, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rounded selection above the bound warns; here that is expected
        rounded = select(pool, reference, METRICS, settings, exact_cells=0)
    assert exact.status == "optimal" and len(rounded.chosen) == 80
    # The rounded program can only be worse than the exact optimum, and the relaxation's bound
    # (rounded.objective * (1 - gap)) can only be below it.
    assert rounded.objective >= exact.objective - 1e-9
    assert rounded.objective * (1 - rounded.gap) <= exact.objective + 1e-9

