"""Hard-case mining (labels/mining.py): gMAD picks the extreme pairs inside each level of the
defender, in both directions, against a brute-force reference written here; the misranked
synthetic pairs are exactly those the student orders wrongly (both rules), with their
level-gap labels; student labels at the five-way rule's boundaries; a stage's mixture,
without repeats or earlier stages' pairs, deterministic and independent of row order."""

import json

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels import mining
from w2s_vqa.labels import pairs as pair_tables
from w2s_vqa.prompt import LEVEL_INDEX

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in ("superior", "better", "similar", "worse",
                                                                       "inferior"))
DISTORTIONS = (("blur", "spatial"), ("stutter", "temporal"), ("h264", "compression"))


# ---------------------------------------------------------------- gMAD

def reference_gmad(attacker, defender, levels, count, exclude=()):
    """Brute force, written from the definition: drop unscored videos, sort by the defender,
    cut into `levels` chunks of equal size (n divisible by levels here); in each chunk the
    ladder pairs the attacker's i-th lowest with its i-th highest, skipping `exclude`
    (unordered pairs). Shares are dealt one pair at a time, bin after bin, round after
    round, to the bins with ladder left, until `count` are dealt."""
    videos = [v for v in range(len(attacker)) if np.isfinite(attacker[v]) and np.isfinite(defender[v])]
    assert len(videos) % levels == 0
    by_defender = sorted(videos, key=lambda v: (defender[v], v))
    size = len(videos) // levels
    exclude = {frozenset(p) for p in exclude}
    ladders = []
    for b in range(levels):
        chunk = sorted(by_defender[b * size:(b + 1) * size], key=lambda v: (attacker[v], v))
        ladders.append([(chunk[i], chunk[-1 - i]) for i in range(size // 2)
                        if frozenset((chunk[i], chunk[-1 - i])) not in exclude])
    shares = [0] * levels
    while sum(shares) < count and any(shares[b] < len(ladders[b]) for b in range(levels)):
        for b in range(levels):
            if sum(shares) < count and shares[b] < len(ladders[b]):
                shares[b] += 1
    return [pair for b in range(levels) for pair in ladders[b][:shares[b]]]


def as_pairs(first, second):
    return list(zip(first.tolist(), second.tolist()))


def test_gmad_on_a_hand_built_table_picks_the_extreme_pair_of_each_level():
    # Defender: videos 0-3 low, 4-7 high. Attacker: inside the low level it separates
    # 2 (lowest) from 0 (highest), then 1 from 3; inside the high level 5 from 7, then 6 from 4.
    defender = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 12.0, 13.0])
    attacker = np.array([9.0, 5.0, 1.0, 6.0, 7.0, 0.0, 3.0, 8.0])
    assert as_pairs(*mining.gmad_pairs(attacker, defender, levels=2, count=2)) == [(2, 0), (5, 7)]
    assert as_pairs(*mining.gmad_pairs(attacker, defender, levels=2, count=4)) == [(2, 0), (1, 3), (5, 7), (6, 4)]
    # Three pairs: the first level takes the odd one.
    assert as_pairs(*mining.gmad_pairs(attacker, defender, levels=2, count=3)) == [(2, 0), (1, 3), (5, 7)]


@pytest.mark.parametrize("levels,count", [(4, 10), (5, 5), (1, 3), (8, 7), (4, 100)])
def test_gmad_equals_the_brute_force_reference_in_both_directions(levels, count):
    rng = np.random.default_rng(levels * 100 + count)
    student, teacher = rng.normal(size=40), rng.normal(size=40)
    for attacker, defender in ((student, teacher), (teacher, student)):
        got = as_pairs(*mining.gmad_pairs(attacker, defender, levels=levels, count=count))
        want = reference_gmad(attacker, defender, levels, count)
        assert got == want
        assert len(got) == min(count, 20)
        # Inside one level of the defender, the attacker separates each pair as far as the level allows.
        for first, second in got:
            assert attacker[first] < attacker[second]


def test_gmad_leaves_out_unscored_videos_and_skips_excluded_pairs():
    rng = np.random.default_rng(1)
    attacker, defender = rng.normal(size=44), rng.normal(size=44)
    attacker[[3, 17]] = np.nan
    defender[[5, 40]] = np.nan
    got = as_pairs(*mining.gmad_pairs(attacker, defender, levels=4, count=8))
    assert got == reference_gmad(attacker, defender, 4, 8)
    assert not {3, 5, 17, 40} & {v for pair in got for v in pair}
    # Excluding a level's most separated pair: that level gives its next rungs instead.
    excluded = got[0]
    again = as_pairs(*mining.gmad_pairs(attacker, defender, levels=4, count=8,
                                        exclude=mining.pair_keys([excluded[1]], [excluded[0]], 44)))
    assert excluded not in again and len(again) == 8
    assert again[:2] == reference_gmad(attacker, defender, 4, 12)[1:3]


@pytest.mark.parametrize("excluded,count", [(30, 10), (98, 10), (100, 7), (5, 300)])
def test_gmad_skips_many_excluded_pairs_of_a_level_as_the_reference_does(excluded, count):
    # Two levels of 200 videos, 100 rungs each; the first `excluded` rungs of the low level
    # are taken already: that level gives what is left, the other level the rest.
    rng = np.random.default_rng(excluded)
    attacker, defender = rng.normal(size=400), rng.normal(size=400)
    ladder = reference_gmad(attacker, defender, 2, 400)
    taken = ladder[:excluded]
    first, second = zip(*taken)
    got = as_pairs(*mining.gmad_pairs(attacker, defender, levels=2, count=count,
                                      exclude=mining.pair_keys(second, first, 400)))
    assert got == reference_gmad(attacker, defender, 2, count, exclude=taken)
    assert len(got) == min(count, 200 - excluded)


def test_spread_count_fills_small_bins_and_gives_the_rest_to_the_others():
    assert mining.spread_count(7, [10, 10, 10]).tolist() == [3, 2, 2]
    assert mining.spread_count(10, [1, 10, 10]).tolist() == [1, 5, 4]
    assert mining.spread_count(50, [1, 2, 3]).tolist() == [1, 2, 3]
    assert mining.spread_count(0, [4, 4]).tolist() == [0, 0]


def test_gmad_with_small_bins_gives_what_they_hold():
    # 10 videos in 3 levels of sizes 4, 3, 3: at most 2 + 1 + 1 disjoint pairs.
    rng = np.random.default_rng(2)
    first, second = mining.gmad_pairs(rng.normal(size=10), rng.normal(size=10), levels=3, count=9)
    assert len(first) == 4
    assert len(set(first.tolist()) | set(second.tolist())) == 8  # disjoint, nobody with itself


# ---------------------------------------------------------------- student labels

def test_student_labels_at_the_rule_boundaries():
    # stderr 3 and 4: s_d = 5 exactly. d on each boundary and beside it.
    d = np.array([11.0, 10.0, 6.0, 5.0, 0.0, -4.0, -5.0, -9.0, -10.0, -11.0])
    labels = mining.student_labels(np.full(10, 50.0), np.full(10, 3.0), 50.0 + d, np.full(10, 4.0))
    assert labels.dtype == np.int8
    assert labels.tolist() == [SUPERIOR, BETTER, BETTER, SIMILAR, SIMILAR, SIMILAR, WORSE, WORSE, INFERIOR, INFERIOR]
    # No spread: equal scores are similar, any difference decisive.
    zero = np.zeros(3)
    assert mining.student_labels(np.full(3, 50.0), zero, np.array([50.0, 50.5, 49.5]), zero).tolist() == [
        SIMILAR, SUPERIOR, INFERIOR]


def test_student_labels_refuse_a_paper_mode_table():
    with pytest.raises(ValueError, match="'paper' mode"):
        mining.student_labels([1.0], [np.nan], [2.0], [0.1])
    with pytest.raises(ValueError, match="not finite"):
        mining.student_labels([np.nan], [0.1], [2.0], [0.1])


# ---------------------------------------------------------------- misranked synthetic pairs

def make_pool(sources=30, seed=0, teachers=("dover", "qalign")):
    """A pool of `sources` sources, each with 3 simulators x 3 levels; the student's and the
    teachers' scores fall with the level, with noise, so some synthetic pairs are misranked."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sources):
        rows.append((f"src{s}", f"src{s}", "", "", 0))
        rows += [(f"src{s}~{name}-{level}", f"src{s}", name, kind, level)
                 for name, kind in DISTORTIONS for level in (1, 2, 3)]
    index = pd.DataFrame(rows, columns=["id", "source_id", "distortion", "kind", "level"]).astype({"level": "int32"})
    quality = np.repeat(rng.normal(size=sources), 10) - 0.4 * index["level"].to_numpy()
    student = pd.DataFrame({"id": index["id"], "score": 60 + 10 * (quality + rng.normal(scale=0.4, size=len(index))),
                            "stderr": rng.uniform(0.5, 3.0, size=len(index))})
    teacher = pd.concat([pd.DataFrame({"video_id": index["id"], "teacher": name,
                                       "score": quality + rng.normal(scale=0.8, size=len(index))})
                         for name in teachers], ignore_index=True)
    return index, student, teacher


def synthetic_candidates(index):
    return pair_tables.synthetic_pairs(index.rename(columns={"id": "video_id"}), stage=2)


@pytest.mark.parametrize("rule", ["direction", "level"])
def test_misranked_synthetic_pairs_are_exactly_those_the_student_gets_wrong(rule):
    index, student, _ = make_pool(sources=6)
    candidates = pair_tables.random_swap(synthetic_candidates(index), np.random.default_rng(0))
    student.loc[3, "score"] = np.nan  # one video unscored: its pairs are neither kept nor misranked
    student.loc[4, "score"] = student.loc[0, "score"]  # a tie with its pristine source
    by_id = student.set_index("id")
    expected = []
    for row in candidates.itertuples():
        a, b = by_id.loc[row.first_id], by_id.loc[row.second_id]
        if np.isnan(a.score) or np.isnan(b.score):
            continue
        if rule == "direction":
            says_better = row.label in (SUPERIOR, BETTER)
            wrong = not (b.score > a.score) if says_better else not (b.score < a.score)
        else:
            d, s_d = b.score - a.score, np.sqrt(a.stderr**2 + b.stderr**2)
            level = (SUPERIOR if d > 2 * s_d else BETTER if d > s_d else SIMILAR if d > -s_d
                     else WORSE if d > -2 * s_d else INFERIOR)
            wrong = level != row.label
        if wrong:
            expected.append((row.first_id, row.second_id, row.label))
    found = mining.misranked_synthetic(candidates, student, rule=rule)
    got = list(zip(found.pairs["first_id"], found.pairs["second_id"], found.pairs["label"]))
    assert got == expected and 0 < len(got) < len(candidates)
    # Video 3, src0~blur-3, is in three pairs: with the pristine src0, blur-1 and blur-2.
    assert found.scored.sum() == len(candidates) - 3
    assert list(found.pairs.columns) == list(candidates.columns)
    assert (found.pairs["origin"] == candidates["origin"][found.misranked].to_numpy()).all()
    if rule == "direction":
        tie = (candidates["first_id"].isin([student.id[0], student.id[4]])
               & candidates["second_id"].isin([student.id[0], student.id[4]])).to_numpy()
        assert found.misranked[tie].all()


def test_misranked_synthetic_refuses_an_unknown_rule_and_a_missing_column():
    index, student, _ = make_pool(sources=2)
    with pytest.raises(ValueError, match="misranked rule"):
        mining.misranked_synthetic(synthetic_candidates(index), student, rule="sign")
    with pytest.raises(ValueError, match=r"student score table lacks column\(s\) \['stderr'\]"):
        mining.misranked_synthetic(synthetic_candidates(index), student.drop(columns="stderr"), rule="level")


# ---------------------------------------------------------------- a stage's new pairs

MINE = dict(stage=2, new_pairs=75, synthetic_per_kind=5, gmad_levels=4)


def unordered(table):
    return {frozenset(p) for p in zip(table["first_id"], table["second_id"])}


def test_mine_stage_pairs_mixture_labels_and_uniqueness():
    index, student, teachers = make_pool()
    table, report = mining.mine_stage_pairs(index, student, teachers, **MINE)
    json.dumps(report)  # JSON-able
    assert len(table) == 75 and report["pairs"] == 75
    rules = table["rule"].value_counts().to_dict()
    assert rules == {"misranked": 15, "gmad:dover:student_attacks": 15, "gmad:dover:teacher_attacks": 15,
                     "gmad:qalign:student_attacks": 15, "gmad:qalign:teacher_attacks": 15}
    assert report["by_rule"] == rules
    assert (table["stage"] == 2).all()
    synthetic, real = table[table["rule"] == "misranked"], table[table["rule"] != "misranked"]
    assert synthetic["origin"].value_counts().to_dict() == {"spatial": 5, "temporal": 5, "compression": 5}
    assert (real["origin"] == "student:1").all()
    # No pair twice, no video with itself.
    assert len(unordered(table)) == 75 and (table["first_id"] != table["second_id"]).all()
    # Orders mixed: both directions of label among the real pairs and the synthetic ones.
    assert real["label"].isin([SUPERIOR, BETTER]).any() and real["label"].isin([WORSE, INFERIOR]).any()
    assert synthetic["label"].isin([SUPERIOR, BETTER]).any() and synthetic["label"].isin([WORSE, INFERIOR]).any()
    # Synthetic labels are the level gap, in the pair's order, and the student misranks every one.
    level = index.set_index("id")["level"]
    gap = level.loc[synthetic["first_id"]].to_numpy() - level.loc[synthetic["second_id"]].to_numpy()
    want = np.select([gap > 1, gap == 1, gap == -1], [SUPERIOR, BETTER, WORSE], INFERIOR)
    assert (synthetic["label"].to_numpy() == want).all()
    assert mining.misranked_synthetic(synthetic, student).misranked.all()
    # Real labels are the student's five-way labels in the pair's order, with d and s_d.
    by_id = student.set_index("id")
    a, b = by_id.loc[real["first_id"]], by_id.loc[real["second_id"]]
    assert (real["label"].to_numpy() == mining.student_labels(a["score"], a["stderr"], b["score"], b["stderr"])).all()
    np.testing.assert_allclose(real["d"], b["score"].to_numpy() - a["score"].to_numpy())
    # Every real pair lies inside one level of its defender: here, the first slot's pairs
    # are exactly gmad_pairs(student, dover), skipping the synthetic pairs already taken.
    ids = np.sort(index["id"].to_numpy().astype(str))
    position = pd.Index(ids)
    s = by_id["score"].reindex(ids).to_numpy()
    t = teachers[teachers["teacher"] == "dover"].set_index("video_id")["score"].reindex(ids).to_numpy()
    taken = mining.pair_keys(position.get_indexer(synthetic["first_id"]), position.get_indexer(synthetic["second_id"]),
                             len(ids))
    first, second = mining.gmad_pairs(s, t, levels=4, count=15, exclude=taken)
    slot = table[table["rule"] == "gmad:dover:student_attacks"]
    assert unordered(slot) == {frozenset((ids[i], ids[j])) for i, j in zip(first, second)}
    # The report's agreement with each teacher, recomputed here.
    for name in ("dover", "qalign"):
        score = teachers[teachers["teacher"] == name].set_index("video_id")["score"]
        diff = score.loc[real["first_id"]].to_numpy() - score.loc[real["second_id"]].to_numpy()
        sign = np.select([real["label"].isin([SUPERIOR, BETTER]), real["label"].isin([WORSE, INFERIOR])], [1, -1], 0)
        counted = sign != 0
        assert report["teacher_agreement"][name]["pairs"] == counted.sum()
        assert report["teacher_agreement"][name]["direction_agreement"] == pytest.approx(
            np.mean(-np.sign(diff[counted]) == sign[counted]))
    assert report["notes"] == []


def test_mine_stage_pairs_is_deterministic_and_ignores_row_order():
    index, student, teachers = make_pool(sources=20)
    table, report = mining.mine_stage_pairs(index, student, teachers, **MINE, seed=4)
    again, _ = mining.mine_stage_pairs(index, student, teachers, **MINE, seed=4)
    shuffled, shuffled_report = mining.mine_stage_pairs(
        index.sample(frac=1, random_state=1), student.sample(frac=1, random_state=2),
        teachers.sample(frac=1, random_state=3), **MINE, seed=4)
    pd.testing.assert_frame_equal(table, again)
    pd.testing.assert_frame_equal(table, shuffled)
    assert report == shuffled_report
    other, _ = mining.mine_stage_pairs(index, student, teachers, **MINE, seed=5)
    assert not table.equals(other)


def test_mine_stage_pairs_avoids_earlier_pairs_and_repeats_synthetic_ones_when_it_must():
    index, student, teachers = make_pool(sources=20)
    first_run, _ = mining.mine_stage_pairs(index, student, teachers, **MINE)
    # Earlier stages: every synthetic pair (a small pool's stage-1 table) and stage 2's pairs.
    earlier = [pair_tables.random_swap(synthetic_candidates(index), np.random.default_rng(1)), first_run]
    table, report = mining.mine_stage_pairs(index, student, teachers, **{**MINE, "stage": 3}, previous=earlier)
    real = table[table["rule"] != "misranked"]
    assert not unordered(real) & (unordered(earlier[0]) | unordered(earlier[1]))
    assert len(real) == 60 and (real["origin"] == "student:2").all() and (table["stage"] == 3).all()
    synthetic = table[table["rule"] == "misranked"]
    assert len(synthetic) == 15  # all repeats of stage-1 pairs, said so
    assert all(report["synthetic"][kind]["repeats"] == 5 and report["synthetic"][kind]["new"] == 0
               for kind in ("spatial", "temporal", "compression"))
    assert sum("repeated" in note for note in report["notes"]) == 3


def test_mine_stage_pairs_reports_shortfalls_and_unscored_videos():
    index, student, teachers = make_pool(sources=4)  # 40 videos: at most 20 disjoint pairs per gMAD slot
    student.loc[:3, "score"] = np.nan
    teachers = teachers[teachers["teacher"] == "dover"]
    table, report = mining.mine_stage_pairs(index, student, teachers, stage=2, new_pairs=3 * 50 + 100,
                                            synthetic_per_kind=50, gmad_levels=2)
    assert report["left_out"]["pool_videos_without_student_score"] == 4
    assert report["left_out"]["synthetic_candidates_unscored"] > 0
    assert report["real"]["asked"] == 100 and report["real"]["found"] < 100
    assert all(report["real"]["by_slot"][r]["eligible_videos"] == 36 for r in report["real"]["by_slot"])
    assert any("fewer than the 50 asked" in note for note in report["notes"])
    assert any("gmad:dover:teacher_attacks" in note for note in report["notes"])
    assert len(unordered(table)) == len(table)
    assert not set(student["id"][:4]) & (set(table["first_id"]) | set(table["second_id"]))


def test_mined_tables_write_and_read_with_their_rule_and_beside_older_tables(tmp_path):
    index, student, teachers = make_pool(sources=10)
    table, _ = mining.mine_stage_pairs(index, student, teachers, **MINE)
    stage_one = pair_tables.random_swap(synthetic_candidates(index).assign(stage=1), np.random.default_rng(0))
    combined = pd.concat([stage_one, table], ignore_index=True)
    for suffix in ("parquet", "csv", "jsonl"):
        path = tmp_path / f"pairs.{suffix}"
        pair_tables.write_pairs(combined, path)
        back = pair_tables.read_pairs(path)
        assert back["rule"].isna().sum() == len(stage_one)
        assert back["rule"].iloc[len(stage_one):].tolist() == table["rule"].tolist()
        assert back["label"].tolist() == combined["label"].tolist()


def test_mine_stage_pairs_bad_input_names_what_is_wrong():
    index, student, teachers = make_pool(sources=3)
    with pytest.raises(ValueError, match=r"student score table lacks column\(s\) \['stderr'\]"):
        mining.mine_stage_pairs(index, student.drop(columns="stderr"), teachers, **MINE)
    paper = student.assign(stderr=np.nan)
    with pytest.raises(ValueError, match="column 'stderr': NaN for 30 scored video.*'map' mode"):
        mining.mine_stage_pairs(index, paper, teachers, **MINE)
    with pytest.raises(ValueError, match=r"column 'stderr'.*negative.*'src0'"):
        mining.mine_stage_pairs(index, student.assign(stderr=-1.0), teachers, **MINE)
    with pytest.raises(ValueError, match="student score table: 1 id.*more than once: 'src1'"):
        mining.mine_stage_pairs(index, pd.concat([student, student.iloc[[10]]]), teachers, **MINE)
    with pytest.raises(ValueError, match="column 'score'.*not numbers"):
        mining.mine_stage_pairs(index, student.astype({"score": object}).assign(
            score=["x"] + student["score"].tolist()[1:]), teachers, **MINE)
    with pytest.raises(ValueError, match=r"teacher score table: 1 \(video_id, teacher\).*src0 by dover"):
        mining.mine_stage_pairs(index, student, pd.concat([teachers, teachers.iloc[[0]]]), **MINE)
    with pytest.raises(ValueError, match=r"store index lacks column\(s\) \['kind'\]"):
        mining.mine_stage_pairs(index.drop(columns="kind"), student, teachers, **MINE)
    with pytest.raises(ValueError, match="store index: 1 video id.*more than once: 'src2'"):
        mining.mine_stage_pairs(pd.concat([index, index.iloc[[20]]]), student, teachers, **MINE)
    with pytest.raises(ValueError, match=r"previous pair table 1 lacks column\(s\) \['second_id'\]"):
        mining.mine_stage_pairs(index, student, teachers, **MINE,
                                previous=[synthetic_candidates(index), synthetic_candidates(index)[["first_id"]]])
    with pytest.raises(ValueError, match="stage must be an integer >= 2"):
        mining.mine_stage_pairs(index, student, teachers, **{**MINE, "stage": 1})
    with pytest.raises(ValueError, match=r"stages.new_pairs \(10\) is below stages.synthetic_per_kind \(5\) x the "
                                         r"pool's 3 synthetic kind"):
        mining.mine_stage_pairs(index, student, teachers, **{**MINE, "new_pairs": 10})
    with pytest.raises(ValueError, match="stages.misranked must be one of"):
        mining.mine_stage_pairs(index, student, teachers, **MINE, misranked="wrong")


def test_misranked_by_pairs_reads_the_students_own_verdict():
    """'direction': P on the wrong side of 0.5 (0.5 itself wrong); 'level': the argmax logit
    differs from the level-gap label; a candidate without a prediction is not scored."""
    from w2s_vqa.prompt import LEVELS

    index = pd.DataFrame({"id": ["s", "s~blur-1", "s~blur-3"], "source_id": ["s"] * 3,
                          "distortion": [None, "blur", "blur"], "kind": [None, "spatial", "spatial"],
                          "level": [0, 1, 3]})
    candidates = mining.synthetic_candidates(index)
    assert list(zip(candidates.first_id, candidates.second_id)) == [("s", "s~blur-1"), ("s", "s~blur-3"),
                                                                    ("s~blur-1", "s~blur-3")]
    # Less distorted first: every label says the second is worse (worse / inferior / inferior).
    logits = np.full((3, 5), -5.0)
    logits[0, LEVELS.index("worse")] = 1.0        # right level
    logits[1, LEVELS.index("worse")] = 1.0        # right direction, wrong level (inferior)
    logits[2, LEVELS.index("better")] = 1.0       # wrong direction
    predictions = pd.DataFrame({"first_id": candidates.first_id, "second_id": candidates.second_id,
                                "p": [0.2, 0.5, 0.9],
                                **{f"logit_{w}": logits[:, i] for i, w in enumerate(LEVELS)}})
    wrong, scored = mining.misranked_by_pairs(candidates, predictions, rule="direction")
    assert wrong.tolist() == [False, True, True] and scored.all()
    wrong, _ = mining.misranked_by_pairs(candidates, predictions, rule="level")
    assert wrong.tolist() == [False, True, True]
    wrong, scored = mining.misranked_by_pairs(candidates, predictions.iloc[:1], rule="direction")
    assert scored.tolist() == [True, False, False] and not wrong.any()
    with pytest.raises(mining.MiningError, match="predicted twice"):
        mining.misranked_by_pairs(candidates, pd.concat([predictions, predictions.iloc[:1]]))
