"""A store's pair tables: split by source, counts, any pool size, the same tables for a seed."""

import itertools

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels.build import build_pair_tables, pair_counts
from w2s_vqa.labels import origins
from w2s_vqa.labels.pair_table import validate_pair_table
from w2s_vqa.labels.sampling import validation_sources

VARIANTS = (("blur", "spatial", 2), ("h264", "compression", 1))  # 4 videos per source; 3 + 1 pairs


def sources_split(train: int, val: int, *, val_fraction: float = 0.2) -> list[str]:
    """Source ids of which exactly `train` land in training and `val` in validation."""
    names = [f"src{i}" for i in range(200)]
    in_val = validation_sources(names, val_fraction=val_fraction)
    chosen = [n for n, v in zip(names, in_val) if not v][:train] + [n for n, v in zip(names, in_val) if v][:val]
    assert len(chosen) == train + val
    return chosen


def store_index(sources, variants=VARIANTS) -> pd.DataFrame:
    """A video store's index: each source pristine (level 0) and its variants."""
    rows = []
    for source in sources:
        rows.append({"id": source, "source_id": source, "distortion": "", "kind": "", "level": 0})
        rows += [{"id": f"{source}-{name}{level}", "source_id": source, "distortion": name, "kind": kind,
                  "level": level} for name, kind, levels in variants for level in range(1, levels + 1)]
    return pd.DataFrame(rows).astype({"level": "int32"})


def fused_scores(ids, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mean": rng.normal(size=len(ids)), "var": rng.uniform(0, 0.3, len(ids))},
                        index=pd.Index(sorted(ids), name="video_id"))


def sources_of(table: pd.DataFrame, index: pd.DataFrame) -> set[str]:
    source = index.set_index("id")["source_id"]
    return set(source[table["first_id"]]) | set(source[table["second_id"]])


def test_tables_are_split_by_source_with_the_asked_counts_and_repeat_for_a_seed():
    index = store_index(sources_split(8, 3))
    fused = fused_scores(index["id"])
    train, val, notes = build_pair_tables(index, fused, teacher_weight=0.5, seed=3)
    assert notes == ()
    for table in (train, val):
        validate_pair_table(table)
        assert set(table["origin"]) == {"teacher", "spatial", "compression"}
        assert (table.loc[table["origin"] == "teacher", "weight"] == 0.5).all()
        assert (table.loc[table["origin"] != "teacher", "weight"] == 1.0).all()
    assert not sources_of(train, index) & sources_of(val, index)
    for table, sources in ((train, 8), (val, 3)):
        counts = table["origin"].value_counts()
        assert counts["spatial"] == 3 * sources and counts["compression"] == sources
        assert counts["teacher"] == round(4 * sources * 1.25)
    again = build_pair_tables(index, fused, teacher_weight=0.5, seed=3)
    pd.testing.assert_frame_equal(again.train, train)
    pd.testing.assert_frame_equal(again.val, val)
    assert not build_pair_tables(index, fused, teacher_weight=0.5, seed=4).train.equals(train)
    # Orders are mixed: the synthetic rule alone puts the less distorted video first.
    synthetic = train[train["origin"].isin(origins.SYNTHETIC)]
    assert 0 < (synthetic["label"] <= 1).sum() < len(synthetic)


def test_a_small_side_gives_the_pairs_it_has_and_says_so_once():
    # The case that stopped the demo's builder: 3 videos on one side, round(3 * 1.25) = 4 asked.
    index = store_index(sources_split(6, 1), variants=(("blur", "spatial", 2),))
    train, val, notes = build_pair_tables(index, fused_scores(index["id"]), seed=0)
    teacher = val[val["origin"] == "teacher"]
    assert len(teacher) == 3 and len({frozenset(p) for p in zip(teacher["first_id"], teacher["second_id"])}) == 3
    assert len(notes) == 1 and notes[0].startswith("val: 3 scored videos have 3 distinct teacher pairs")
    assert "fewer than the 4 asked" in notes[0]
    assert (train["origin"] == "teacher").sum() == round(18 * 1.25)


def test_a_single_video_on_a_side_has_synthetic_pairs_only_there():
    index = store_index(sources_split(4, 1), variants=())
    train, val, notes = build_pair_tables(index, fused_scores(index["id"]), seed=0)
    assert len(val) == 0 and len(train) == round(4 * 1.25)
    assert notes == ("val: 1 scored video(s) make no teacher pair",)
    validate_pair_table(val)


@pytest.mark.parametrize("val_fraction, empty", [(0.0, "val"), (1.0, "train")])
def test_one_side_with_no_source_is_empty_and_said_once(val_fraction, empty):
    index = store_index([f"s{i}" for i in range(5)])
    tables = build_pair_tables(index, fused_scores(index["id"]), val_fraction=val_fraction, seed=0)
    full = "train" if empty == "val" else "val"
    assert len(getattr(tables, empty)) == 0 and len(getattr(tables, full)) == 5 * 4 + round(5 * 4 * 1.25)
    assert len(tables.notes) == 1 and tables.notes[0].startswith(f"{empty}: no source went to {empty}")


def test_without_teachers_only_synthetic_pairs_and_unscored_videos_are_noted():
    index = store_index(sources_split(3, 2))
    train, val, notes = build_pair_tables(index, None, seed=0)
    assert set(train["origin"]) | set(val["origin"]) == {"spatial", "compression"} and notes == ()
    assert len(train) + len(val) == 5 * 4
    scored = fused_scores(index["id"][::2])
    notes = build_pair_tables(index, scored, seed=0).notes
    assert notes == (f"{len(index) - len(scored)} of the store's {len(index)} videos have no teacher score: "
                     "they are in synthetic pairs only",)


def test_bad_input_is_named():
    index = store_index(["a", "b"])
    with pytest.raises(ValueError, match="not in the store: ghost"):
        build_pair_tables(index, fused_scores(["a", "ghost"]))
    with pytest.raises(ValueError, match="lacks column.*'kind'"):
        build_pair_tables(index.drop(columns="kind"))
    for bad in ({"pairs_per_video": 0}, {"teacher_weight": -1.0}, {"val_fraction": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_pair_tables(index, **bad)


def test_counts_are_per_origin_and_level_word():
    index = store_index(sources_split(3, 0))
    train, _, _ = build_pair_tables(index, None, seed=0)
    counts = pair_counts(train)
    assert counts["pairs"] == len(train) == sum(itertools.chain.from_iterable(
        c.values() for c in counts["by_origin"].values()))
    assert list(counts["by_origin"]) == ["compression", "spatial"]
    assert set(counts["by_origin"]["spatial"]) <= {"superior", "better", "worse", "inferior"}
