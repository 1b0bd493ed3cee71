"""Drawing pairs (labels/sampling.py): teacher pairs, balanced or not; synthetic pairs of a
store's index; the split by source; swapping the order of pairs."""

import numpy as np
import pandas as pd
import pytest

from tests.labels.test_rules import words
from w2s_vqa.labels.pair_table import make_pair_table, validate_pair_table
from w2s_vqa.labels.rules import five_way_labels, swap_pair
from w2s_vqa.labels.sampling import (label_teacher_pairs, random_swap, sample_teacher_pairs, split_pairs, swap_pairs,
                                     synthetic_pairs, validation_sources)
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in
                                              ("superior", "better", "similar", "worse", "inferior"))


def random_fused(n: int, seed: int = 0) -> pd.DataFrame:
    """Fused teacher scores shaped like real ones: means on a 0-100 scale, a few points of disagreement."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mean": rng.uniform(20, 80, n), "var": rng.uniform(0, 60, n), "n_teachers": 5},
                        index=pd.Index([f"v{i:04d}" for i in range(n)], name="video_id"))


def store_index(sources=("s1", "s2", "s3"), simulators=(("blur", "spatial", 5), ("stutter", "temporal", 3),
                                                        ("h264", "compression", 4))) -> pd.DataFrame:
    """Variants as the video store's index lists them: pristine at level 0."""
    rows = []
    for source in sources:
        rows.append({"id": source, "source_id": source, "distortion": "", "kind": "", "level": 0})
        for name, kind, levels in simulators:
            rows += [{"id": f"{source}~{name}{level}", "source_id": source, "distortion": name,
                      "kind": kind, "level": level} for level in range(1, levels + 1)]
    return pd.DataFrame(rows).astype({"level": "int32"})


def test_label_teacher_pairs_uses_mean_difference_and_combined_spread():
    fused = pd.DataFrame({"mean": [50.0, 53.0, 58.0, 50.0], "var": [4.0, 5.0, 0.0, 0.0]},
                         index=pd.Index(["a", "b", "c", "d"], name="video_id"))
    pairs = label_teacher_pairs(fused, ["a", "a", "b", "d"], ["b", "c", "a", "c"])
    np.testing.assert_allclose(pairs["d"], [3.0, 8.0, -3.0, 8.0])
    np.testing.assert_allclose(pairs["s_d"], [3.0, 2.0, 3.0, 0.0])  # sqrt(4 + 5), sqrt(4 + 0), ...
    assert words(pairs["label"]) == ["similar", "superior", "worse", "superior"]
    assert set(pairs["origin"]) == {"teacher"}
    with pytest.raises(ValueError, match="no fused teacher score: zz"):
        label_teacher_pairs(fused, ["a"], ["zz"])


def test_swap_mirrors_labels_and_exchanges_videos():
    pairs = make_pair_table(["a", "b", "c", "d", "e"], ["f", "g", "h", "i", "j"], [0, 1, 2, 3, 4],
                            origin="teacher", stage=1, d=[3.0, 1.5, 0.1, -1.5, -3.0], s_d=1.0)
    swapped = swap_pairs(pairs)
    assert words(swapped["label"]) == ["inferior", "worse", "similar", "better", "superior"]
    assert list(swapped["first_id"]) == list(pairs["second_id"])
    assert list(swapped["second_id"]) == list(pairs["first_id"])
    np.testing.assert_array_equal(swapped["d"], -pairs["d"])
    # After the swap the stored d and label still agree with the rule.
    np.testing.assert_array_equal(five_way_labels(swapped["d"], swapped["s_d"]), swapped["label"])
    pd.testing.assert_frame_equal(swap_pairs(swapped), pairs)


def test_a_table_swaps_as_each_of_its_rows_does():
    pairs = make_pair_table(["a", "b", "c"], ["f", "g", "h"], [0, 2, 3], origin="teacher", stage=2,
                            weight=0.5, d=[3.0, 0.0, -1.5], s_d=1.0, source_id=["s", "t", "u"])
    swapped = swap_pairs(pairs)
    for row, swapped_row in zip(pairs.to_dict("records"), swapped.to_dict("records")):
        assert swap_pair(row) == swapped_row
    # The one-row form keeps a label's dtype and mirrors a soft target over the levels.
    row = {"first_id": "a", "second_id": "b", "label": np.int32(BETTER), "d": 1.2,
           "target": np.array([0.1, 0.6, 0.2, 0.1, 0.0], np.float32)}
    back = swap_pair(row)
    assert back["label"].dtype == np.int32 and words([back["label"]]) == ["worse"] and back["d"] == -1.2
    np.testing.assert_array_equal(back["target"], row["target"][::-1])
    assert {k: np.asarray(v).tolist() for k, v in swap_pair(back).items()} == \
        {k: np.asarray(v).tolist() for k, v in row.items()}


def test_random_swap_is_seeded_and_touches_only_the_swapped_rows():
    pairs = sample_teacher_pairs(random_fused(300), pairs_per_video=1, rng=np.random.default_rng(0))
    mixed = random_swap(pairs, np.random.default_rng(1))
    pd.testing.assert_frame_equal(mixed, random_swap(pairs, np.random.default_rng(1)))
    swapped = (mixed["first_id"] != pairs["first_id"]).to_numpy()
    assert 0.4 < swapped.mean() < 0.6
    pd.testing.assert_frame_equal(mixed[~swapped], pairs[~swapped])
    pd.testing.assert_frame_equal(mixed[swapped], swap_pairs(pairs[swapped]))


def test_synthetic_pairs_cover_every_level_pair_of_each_source_and_simulator():
    pairs = synthetic_pairs(store_index())
    # The pristine video joins each simulator's levels: C(6,2) + C(4,2) + C(5,2) pairs per source.
    assert len(pairs) == 3 * (15 + 6 + 10)
    assert SIMILAR not in set(pairs["label"])
    assert pairs["origin"].value_counts().to_dict() == {"spatial": 45, "compression": 30, "temporal": 18}
    assert (pairs["source_id"] == pairs["first_id"].str.split("~").str[0]).all()
    assert (pairs["source_id"] == pairs["second_id"].str.split("~").str[0]).all()
    # The pristine source against its worst blur, and two neighbouring blur levels.
    row = pairs.set_index(["first_id", "second_id"])["label"]
    assert LEVELS[row[("s1", "s1~blur5")]] == "inferior"
    assert LEVELS[row[("s1~blur2", "s1~blur3")]] == "worse"
    assert ("s1~blur1", "s1~stutter1") not in row.index  # different simulators are not ordered


def test_synthetic_pairs_sampled_per_group_and_bad_variant_tables():
    sampled = synthetic_pairs(store_index(), pairs_per_group=4, rng=np.random.default_rng(0))
    per_group = sampled.groupby(["source_id", "origin"]).size()
    assert (per_group == 4).all() and len(per_group) == 9
    bad = pd.concat([store_index(), store_index(sources=("s1",))]).astype({"level": "int32"})
    bad.loc[bad["distortion"] == "h264", "kind"] = "codec"
    with pytest.raises(ValueError) as caught:
        synthetic_pairs(bad)
    message = str(caught.value)
    assert "source s1: more than one pristine" in message
    assert "source s1, blur level 1: more than one video" in message
    assert "kind 'codec'" in message


def test_sampled_teacher_pairs_are_distinct_labelled_and_reproducible():
    fused = random_fused(200)
    pairs = sample_teacher_pairs(fused, pairs_per_video=1.25, rng=np.random.default_rng(7))
    assert len(pairs) == 250
    validate_pair_table(pairs)
    unordered = {frozenset(p) for p in zip(pairs["first_id"], pairs["second_id"])}
    assert len(unordered) == 250 and all(len(p) == 2 for p in unordered)
    np.testing.assert_array_equal(pairs["label"], five_way_labels(pairs["d"], pairs["s_d"]))
    assert pairs["first_id"].value_counts().between(1, 2).all()  # each video first once or twice
    pd.testing.assert_frame_equal(pairs, sample_teacher_pairs(fused, pairs_per_video=1.25,
                                                              rng=np.random.default_rng(7)))
    # Few videos: all C(5,2) pairs are the only distinct ones.
    assert len(sample_teacher_pairs(random_fused(5), pairs_per_video=2, rng=np.random.default_rng(0))) == 10
    with pytest.raises(ValueError, match="cannot draw 15 distinct pairs from 5 videos"):
        sample_teacher_pairs(random_fused(5), pairs_per_video=3, rng=np.random.default_rng(0))
    every = sample_teacher_pairs(random_fused(5), pairs_per_video=3, rng=np.random.default_rng(0), allow_fewer=True)
    assert len({frozenset(p) for p in zip(every["first_id"], every["second_id"])}) == len(every) == 10


def test_class_balancing_gives_equal_counts():
    fused = random_fused(400, seed=3)
    unbalanced = sample_teacher_pairs(fused, pairs_per_video=1, rng=np.random.default_rng(0))
    counts = np.bincount(unbalanced["label"], minlength=5)
    assert counts.max() > 2 * counts.min()  # random pairs are far from balanced
    balanced = sample_teacher_pairs(fused, pairs_per_video=1, rng=np.random.default_rng(0), balance=True)
    assert len(balanced) == 400
    assert np.bincount(balanced["label"], minlength=5).tolist() == [80] * 5
    np.testing.assert_array_equal(balanced["label"], five_way_labels(balanced["d"], balanced["s_d"]))
    # 402 pairs: the two extra go to two different levels.
    odd = sample_teacher_pairs(fused, pairs_per_video=402 / 400, rng=np.random.default_rng(1), balance=True)
    assert sorted(np.bincount(odd["label"], minlength=5)) == [80, 80, 80, 81, 81]


def test_class_balancing_oversamples_rare_levels_and_refuses_absent_ones():
    # Nine equal videos and one far above: no pair is "better" or "worse" (s_d = sqrt(2)).
    fused = pd.DataFrame({"mean": [50.0] * 9 + [90.0], "var": [1.0] * 10},
                         index=pd.Index([f"v{i}" for i in range(10)], name="video_id"))
    pairs = sample_teacher_pairs(fused, pairs_per_video=4, rng=np.random.default_rng(0))
    assert set(words(pairs["label"])) == {"superior", "similar", "inferior"}
    with pytest.raises(ValueError, match="no candidate pair is labelled better, worse"):
        sample_teacher_pairs(fused, pairs_per_video=1, rng=np.random.default_rng(0), balance=True)
    # Spread means: of all 45 pairs only 5 are "similar" and 8 "better" or "worse", fewer
    # than the quota of 10 each, so those pairs repeat.
    fused["mean"] = [50.0, 50.5, 51.0, 52.0, 53.0, 54.5, 56.0, 58.0, 61.0, 65.0]
    balanced = sample_teacher_pairs(fused, pairs_per_video=5, rng=np.random.default_rng(0), balance=True)
    assert np.bincount(balanced["label"], minlength=5).tolist() == [10] * 5
    similar = balanced[balanced["label"] == SIMILAR]
    assert len({frozenset(p) for p in zip(similar["first_id"], similar["second_id"])}) == 5


def test_split_keeps_every_source_and_its_variants_on_one_side():
    teacher = sample_teacher_pairs(random_fused(300), pairs_per_video=1, rng=np.random.default_rng(0))
    index = store_index(sources=tuple(f"v{i:04d}" for i in range(0, 300, 3)))  # sources are teacher videos too
    pairs = random_swap(pd.concat([teacher, synthetic_pairs(index)], ignore_index=True), np.random.default_rng(0))
    split = split_pairs(pairs, val_fraction=0.2, salt="test")

    def sources(table):
        ids = pd.concat([table["first_id"], table["second_id"]])
        return set(ids.str.split("~").str[0])

    assert len(split.train) + len(split.val) + len(split.crossing) == len(pairs)
    assert sources(split.train).isdisjoint(sources(split.val))
    assert {"spatial", "temporal", "compression", "teacher"} <= set(split.val["origin"])
    # Crossing pairs join one training and one validation video, hence are in neither set.
    assert all(len(set(validation_sources(list(p), val_fraction=0.2, salt="test"))) == 2
               for p in zip(split.crossing["first_id"], split.crossing["second_id"]))
    in_val = validation_sources([f"v{i:04d}" for i in range(300)], val_fraction=0.2, salt="test")
    assert 0.12 < in_val.mean() < 0.28
    # Deterministic per source: the same id lands on the same side in any table, any call.
    np.testing.assert_array_equal(validation_sources(["v0003", "v0000"], val_fraction=0.2, salt="test"),
                                  in_val[[3, 0]])


def test_split_refuses_synthetic_pairs_without_a_source():
    pairs = synthetic_pairs(store_index(sources=("s1",))).drop(columns="source_id")
    with pytest.raises(ValueError, match="synthetic pair"):
        split_pairs(pairs, val_fraction=0.5)
