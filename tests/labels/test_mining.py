"""A stage's new pairs (labels/mining.py): the mixture of misranked synthetic pairs and gMAD
real pairs, without repeats or earlier stages' pairs, labelled by the student, deterministic
and independent of row order; bad input named."""

import json

import numpy as np
import pandas as pd
import pytest

from tests.labels.test_misranked import make_pool, synthetic_candidates
from w2s_vqa.labels import gmad, mining, misranked
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.prompt import LEVEL_INDEX

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in ("superior", "better", "similar", "worse",
                                                                       "inferior"))


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
    assert misranked.misranked_synthetic(synthetic, student).misranked.all()
    # Real labels are the student's five-way labels in the pair's order, with d and s_d.
    by_id = student.set_index("id")
    a, b = by_id.loc[real["first_id"]], by_id.loc[real["second_id"]]
    want = misranked.student_labels(a["score"], a["stderr"], b["score"], b["stderr"])
    assert (real["label"].to_numpy() == want).all()
    np.testing.assert_allclose(real["d"], b["score"].to_numpy() - a["score"].to_numpy())
    # Every real pair lies inside one level of its defender: here, the first slot's pairs
    # are exactly gmad_pairs(student, dover), skipping the synthetic pairs already taken.
    ids = np.sort(index["id"].to_numpy().astype(str))
    position = pd.Index(ids)
    s = by_id["score"].reindex(ids).to_numpy()
    t = teachers[teachers["teacher"] == "dover"].set_index("video_id")["score"].reindex(ids).to_numpy()
    taken = gmad.pair_keys(position.get_indexer(synthetic["first_id"]), position.get_indexer(synthetic["second_id"]),
                             len(ids))
    first, second = gmad.gmad_pairs(s, t, levels=4, count=15, exclude=taken)
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
    earlier = [pair_sampling.random_swap(synthetic_candidates(index), np.random.default_rng(1)), first_run]
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
    stage_one = pair_sampling.random_swap(synthetic_candidates(index).assign(stage=1), np.random.default_rng(0))
    combined = pd.concat([stage_one, table], ignore_index=True)
    for suffix in ("parquet", "csv", "jsonl"):
        path = tmp_path / f"pairs.{suffix}"
        pair_table.write_pairs(combined, path)
        back = pair_table.read_pairs(path)
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
