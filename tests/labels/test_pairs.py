"""Pair labels, sampling, the split and the pair table (METHOD.md "Labels")."""

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels.pairs import (
    PAIR_COLUMNS, PairTableError, five_way_labels, label_teacher_pairs, level_gap_labels, make_pair_table,
    random_swap, read_pairs, sample_teacher_pairs, soft_five_way_targets, split_pairs, student_origin,
    swap_pair, swap_pairs, synthetic_pairs, validate_pair_table, validation_sources, write_pairs)
from w2s_vqa.prompt import LEVEL_INDEX, LEVELS

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in
                                              ("superior", "better", "similar", "worse", "inferior"))


def words(labels) -> list[str]:
    return [LEVELS[i] for i in labels]


def random_fused(n: int, seed: int = 0) -> pd.DataFrame:
    """Fused teacher scores shaped like real ones: means on a 0-100 scale, a few points of disagreement."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mean": rng.uniform(20, 80, n), "var": rng.uniform(0, 60, n), "n_teachers": 5},
                        index=pd.Index([f"v{i:04d}" for i in range(n)], name="video_id"))


def store_index(sources=("s1", "s2", "s3"), simulators=(("blur", "spatial", 5), ("stutter", "temporal", 3),
                                                        ("h264", "compression", 4))) -> pd.DataFrame:
    """Variants as the video store's index lists them (id renamed to video_id): pristine at level 0."""
    rows = []
    for source in sources:
        rows.append({"video_id": source, "source_id": source, "distortion": "", "kind": "", "level": 0})
        for name, kind, levels in simulators:
            rows += [{"video_id": f"{source}~{name}{level}", "source_id": source, "distortion": name,
                      "kind": kind, "level": level} for level in range(1, levels + 1)]
    return pd.DataFrame(rows).astype({"level": "int32"})


def test_five_way_rule_at_and_around_every_boundary():
    s = 0.5  # exactly representable, so d = +-s, +-2s hit the boundaries exactly
    eps = 1e-9
    cases = {
        2 * s + eps: "superior", 2 * s: "better",
        s + eps: "better", s: "similar",
        0.0: "similar",
        -s + eps: "similar", -s: "worse",
        -2 * s + eps: "worse", -2 * s: "inferior", -2 * s - eps: "inferior",
        10.0: "superior", -10.0: "inferior",
    }
    d = np.array(list(cases))
    assert words(five_way_labels(d, s)) == list(cases.values())
    assert five_way_labels(d, s).dtype == np.int8


def test_five_way_rule_when_teachers_agree_exactly():
    # s_d == 0: any difference is decisive; no difference at all is "similar" (the literal
    # rule would say "inferior", since d <= -2 * 0 is the only interval that holds d = 0).
    assert words(five_way_labels([0.0, 1e-9, -1e-9, 3.0], 0.0)) == ["similar", "superior", "inferior", "superior"]
    with pytest.raises(ValueError, match="negative"):
        five_way_labels(1.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        five_way_labels(np.nan, 1.0)


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


def test_soft_targets_sum_to_one_and_peak_at_the_hard_label():
    s = 0.5
    d = np.concatenate([np.linspace(-5, 5, 401), [s, -s, 2 * s, -2 * s]])
    for smoothing in (0.0, 0.25, 0.5):
        targets = soft_five_way_targets(d, s, smoothing=smoothing)
        assert targets.shape == (len(d), 5) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(-1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(targets.argmax(-1), five_way_labels(d, s))
    # Pure Gaussian mass (smoothing 1) at d = 0: one s_d either side is "similar".
    gaussian = soft_five_way_targets(0.0, 1.0, smoothing=1.0)
    np.testing.assert_allclose(gaussian[SIMILAR], 0.682689, atol=1e-6)
    np.testing.assert_allclose(gaussian[[SUPERIOR, INFERIOR]], 0.022750, atol=1e-6)
    # Swapping the pair mirrors the distribution.
    np.testing.assert_allclose(soft_five_way_targets(-0.7, 0.5)[::-1], soft_five_way_targets(0.7, 0.5))


def test_soft_targets_are_one_hot_when_teachers_agree_exactly():
    targets = soft_five_way_targets([0.0, 2.0, -2.0], 0.0)
    np.testing.assert_array_equal(targets, np.eye(5)[[SIMILAR, SUPERIOR, INFERIOR]])


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


def test_level_gap_rule_never_says_similar():
    first, second = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    distinct = first != second
    labels = level_gap_labels(first[distinct], second[distinct])
    gap = (first - second)[distinct]
    expected = np.where(gap > 1, SUPERIOR, np.where(gap == 1, BETTER, np.where(gap == -1, WORSE, INFERIOR)))
    np.testing.assert_array_equal(labels, expected)
    assert SIMILAR not in labels
    assert words(level_gap_labels([0, 3, 0], [1, 1, 2])) == ["worse", "superior", "inferior"]
    with pytest.raises(ValueError, match="compare a level with itself"):
        level_gap_labels([2], [2])


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


def test_pair_table_validation_lists_every_problem():
    bad = pd.DataFrame({
        "first_id": ["a", "", "c", "d", "e", "f"],
        "second_id": ["b", "b", "c", None, "x", "y"],
        "label": [0, 2, 5, 1, -1, 3],
        "origin": ["teacher", "spatial", "student:2", "student:", "blur", "compression"],
        "stage": [1, 1, 2, 0, 1, 1],
        "weight": [1.0, np.nan, 1.0, 1.0, -0.5, np.inf],
        "d": [0.5, np.nan, np.inf, "high", None, -1.0],
        "s_d": [0.1, np.nan, 0.2, -0.3, None, np.nan],
    })
    with pytest.raises(PairTableError) as caught:
        validate_pair_table(bad, "pairs.parquet", known_ids={"a", "b", "c", "d", "f", "y"})
    message = str(caught.value)
    assert message.startswith("pairs.parquet: 16 problem(s) in the pair table (rows are data rows counted from 1, "
                              "the header not counted):")
    assert "empty first_id (1): row 2" in message
    assert "empty second_id (1): row 4" in message
    assert "a video compared with itself (1): row 3: 'c'" in message
    assert "(2): row 3: 5; row 5: -1" in message  # labels
    assert "(2): row 4: 'student:'; row 5: 'blur'" in message  # origins
    assert "stage not an integer >= 1 (1): row 4: 0" in message
    assert "weight not a finite number (2): row 2: nan; row 6: inf" in message
    assert "negative weight (1): row 5: -0.5" in message
    assert "d not a finite number (leave it empty where a pair has none) (2): row 3: inf; row 4: 'high'" in message
    assert "negative s_d (a standard deviation) (1): row 4: -0.3" in message
    # Ids the store lacks are in the same report as the bad labels, not a later round.
    assert "video ids the video store does not hold (used by 1 pair(s)) (2): 'e' (row 5); 'x' (row 5)" in message
    assert caught.value.unknown_ids == ["e", "x"]
    with pytest.raises(PairTableError, match=r"missing columns.*\(2\): 'stage'; 'weight'"):
        validate_pair_table(bad.drop(columns=["stage", "weight"]))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_pair_tables_round_trip_through_every_format(tmp_path, suffix):
    teacher = label_teacher_pairs(random_fused(4), ["v0000", "v0001"], ["v0002", "v0003"], stage=2,
                                  origin=student_origin(1), weight=0.5)
    synthetic = synthetic_pairs(store_index(sources=("007", "NA"), simulators=(("blur", "spatial", 2),)))
    pairs = pd.concat([teacher, synthetic], ignore_index=True)  # d, s_d, source_id missing in some rows
    path = tmp_path / f"pairs{suffix}"
    write_pairs(pairs, path)
    back = read_pairs(path)
    assert list(back.columns[:len(PAIR_COLUMNS)]) == list(PAIR_COLUMNS)
    pd.testing.assert_frame_equal(back, pairs, check_exact=True)
    assert back["label"].dtype == np.int8 and back["weight"].dtype == np.float32
    with pytest.raises(PairTableError, match="unknown pair table format"):
        write_pairs(pairs, tmp_path / "pairs.xlsx")
