"""Teacher score tables: every format and form reads the same, every problem is reported at once."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels.teachers import (
    TeacherTableError, consensus_spearman, fuse, parse_teacher_table, read_teacher_table, wide_scores)
from w2s_vqa.tables import MAX_EXAMPLES, TableWarning

# Three teachers, four videos; qalign did not score v3. Ids like "001" and "NA" must survive as text.
GOOD_LONG = pd.DataFrame({
    "video_id": ["001", "001", "001", "002", "002", "002", "v3", "v3", "NA", "NA", "NA"],
    "teacher": ["dover", "fast", "qalign", "dover", "fast", "qalign", "dover", "fast", "dover", "fast", "qalign"],
    "score": [60.0, 70.0, 65.0, 40.0, 40.0, 40.0, 80.0, 90.0, 10.0, 30.0, 50.0],
})
EXPECTED_FUSED = pd.DataFrame(
    {"mean": [65.0, 40.0, 30.0, 85.0],
     "var": [50.0 / 3.0, 0.0, 800.0 / 3.0, 25.0],  # population variance over the teachers present
     "n_teachers": [3, 3, 3, 2]},
    index=pd.Index(["001", "002", "NA", "v3"], name="video_id"))


def good_wide() -> pd.DataFrame:
    return GOOD_LONG.pivot(index="video_id", columns="teacher", values="score").reset_index()


def test_long_and_wide_csv_parquet_and_jsonl_fuse_to_the_same_means_and_variances(tmp_path):
    GOOD_LONG.to_csv(tmp_path / "long.csv", index=False)
    # Wide CSV: an empty cell is a teacher that did not score that video.
    good_wide().to_csv(tmp_path / "wide.csv", index=False)
    good_wide().to_parquet(tmp_path / "wide.parquet", index=False)
    GOOD_LONG.to_parquet(tmp_path / "long.pq", index=False)
    GOOD_LONG.to_json(tmp_path / "long.jsonl", orient="records", lines=True)
    for name in ("long.csv", "wide.csv", "wide.parquet", "long.pq", "long.jsonl"):
        scores = read_teacher_table(tmp_path / name, known_ids={"001", "002", "v3", "NA"})
        assert list(scores.columns) == ["video_id", "teacher", "score"], name
        assert len(scores) == len(GOOD_LONG), name
        pd.testing.assert_frame_equal(fuse(scores), EXPECTED_FUSED, check_dtype=False, obj=name)


def test_in_wide_form_an_empty_or_nan_cell_means_not_scored():
    table = pd.DataFrame({"video_id": ["a", "b", "c"], "dover": ["50", "", "NaN"], "fast": ["60", "70", "80"]})
    fused = fuse(parse_teacher_table(table))
    assert fused["n_teachers"].tolist() == [2, 1, 1]
    assert fused["mean"].tolist() == pytest.approx([55.0, 70.0, 80.0])  # computed means: a tolerance


def test_one_error_lists_every_problem_with_rows_ids_and_teachers(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "video_id,teacher,score\n"
        "a,dover,50\n"          # row 1: fine
        "a,fast,NaN\n"          # row 2: NaN score
        "b,dover,inf\n"         # row 3: infinite score
        "b,fast,excellent\n"    # row 4: non-numeric text
        "a,dover,51\n"          # row 5: (a, dover) again
        "ghost,dover,40\n"      # row 6: not in the store
        "c,qalign,70\n"         # row 7: qalign scores one video only
        "c,dover,60\n"
        "c,fast,\n"             # row 9: empty score
    )
    with pytest.raises(TeacherTableError) as caught:
        read_teacher_table(path, known_ids={"a", "b", "c"}, min_videos_per_teacher=2)
    message = str(caught.value)
    assert str(path) in message
    assert "missing or NaN score (2): row 2 (video a, teacher fast); row 9 (video c, teacher fast)" in message
    assert "infinite score (1): row 3 (video b, teacher dover)" in message
    assert "non-numeric score (1): row 4 (video b, teacher fast): 'excellent'" in message
    assert "video a, teacher dover at rows 1, 5" in message
    assert "video ids the video store does not hold (1): ghost (row 6)" in message
    assert "fewer than 2 video(s) (2): fast: 0 video(s); qalign: 1 video(s)" in message


def test_scores_that_are_no_number_are_skipped_and_reported_with_line_numbers(tmp_path):
    """A teacher that failed on some videos (NaN, Infinity, text) loses those scores only:
    the rest of the table is used, and one warning names every skipped score."""
    path = tmp_path / "scores.jsonl"
    rows = [{"video_id": "a", "teacher": "t", "score": 1.0},
            {"video_id": "b", "teacher": "t", "score": float("nan")},
            {"video_id": "c", "teacher": "t", "score": float("inf")},
            {"video_id": "d", "teacher": "t", "score": "high"},
            {"video_id": "e", "teacher": "t", "score": True},
            {"video_id": "b", "teacher": "u", "score": 2.5},
            {"video_id": "f", "teacher": "t", "score": -3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # json writes NaN and Infinity
    with pytest.warns(TableWarning) as caught:
        scores = read_teacher_table(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{path}: 4 score(s) left out of the teacher score table (rows are data rows")
    assert "missing or NaN score (1): row 2 (video b" in message
    assert "infinite score (1): row 3 (video c" in message
    assert "non-numeric score (2): row 4 (video d, teacher t): 'high'; row 5" in message
    assert scores.to_dict("list") == {"video_id": ["a", "b", "f"], "teacher": ["t", "u", "t"],
                                      "score": [1.0, 2.5, -3.0]}
    # Video b keeps its other teacher's score: the mean is 2.5, from u alone.
    assert fuse(scores).loc["b", "mean"] == pytest.approx(2.5) and fuse(scores).loc["b", "n_teachers"] == 1  # a computed mean


def test_structural_problems_missing_columns_empty_table_and_broken_json(tmp_path):
    with pytest.raises(TeacherTableError, match=r"missing required columns.*\(1\): 'score'"):
        parse_teacher_table(pd.DataFrame({"video_id": ["a"], "teacher": ["t"]}))
    with pytest.raises(TeacherTableError, match=r"missing required columns.*'video_id'"):
        parse_teacher_table(pd.DataFrame({"id": ["a"], "dover": [1.0]}))
    with pytest.raises(TeacherTableError, match="no teacher columns"):
        parse_teacher_table(pd.DataFrame({"video_id": ["a"]}))
    (tmp_path / "empty.csv").write_text("video_id,teacher,score\n")
    with pytest.raises(TeacherTableError, match="empty table"):
        read_teacher_table(tmp_path / "empty.csv")
    (tmp_path / "broken.jsonl").write_text('{"video_id": "a", "teacher": "t", "score": 1}\n{"video_id": \n[1]\n')
    with pytest.raises(TeacherTableError, match=r"\(2\): row 2: .*; row 3: a JSON list"):
        read_teacher_table(tmp_path / "broken.jsonl")
    (tmp_path / "scores.xlsx").write_text("")
    with pytest.raises(TeacherTableError, match="unknown teacher table format '.xlsx'"):
        read_teacher_table(tmp_path / "scores.xlsx")


def test_examples_are_capped_but_the_count_is_complete():
    table = pd.DataFrame({"video_id": [f"v{i}" for i in range(50)], "teacher": "t", "score": "bad"})
    with pytest.raises(TeacherTableError) as caught:
        parse_teacher_table(table, source="mem")
    message = str(caught.value)
    assert "non-numeric score (50)" in message
    assert f"row {MAX_EXAMPLES} (video v{MAX_EXAMPLES - 1}" in message
    assert f"row {MAX_EXAMPLES + 1} " not in message
    assert f"and {50 - MAX_EXAMPLES} more" in message


def test_normalization_puts_teachers_on_different_scales_in_agreement():
    # Teacher "x100" is teacher "unit" on another scale: after normalizing they agree exactly.
    unit = np.array([0.1, 0.5, 0.3, 0.9])
    table = pd.DataFrame({"video_id": list("abcd") * 2, "teacher": ["unit"] * 4 + ["x100"] * 4,
                          "score": np.concatenate([unit, 100 * unit + 7])})
    scores = parse_teacher_table(table)
    assert (fuse(scores)["var"] > 1).all()  # unnormalized (the default), the scales disagree
    for method in ("zscore", "minmax"):
        fused = fuse(scores, normalize=method)
        np.testing.assert_allclose(fused["var"], 0.0, atol=1e-12)
        assert list(fused["mean"].rank()) == [1, 3, 2, 4]
    np.testing.assert_allclose(fuse(scores, normalize="minmax")["mean"], (unit - 0.1) / 0.8)
    constant = parse_teacher_table(pd.DataFrame({"video_id": ["a", "b"], "teacher": "flat", "score": 5.0}))
    with pytest.raises(TeacherTableError, match="all equal: flat"):
        fuse(constant, normalize="zscore")
    with pytest.raises(ValueError, match="normalize must be one of"):
        fuse(scores, normalize="rank")


def test_wide_scores_keeps_each_teachers_score_for_gmad():
    table = wide_scores(parse_teacher_table(GOOD_LONG))
    assert list(table.columns) == ["dover", "fast", "qalign"]
    assert table.loc["NA", "fast"] == 30.0
    assert np.isnan(table.loc["v3", "qalign"])


# Issue 14's case: two teachers that rank six videos alike, NIQE on its own lower-is-better scale.
DOVER_NIQE = pd.DataFrame({"video_id": [f"v{i}" for i in range(1, 7)],
                           "dover": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                           "niqe": [7.0, 6.0, 5.0, 4.0, 3.0, 2.0]})


def test_a_declared_lower_is_better_teacher_is_negated_before_fusion():
    from w2s_vqa.labels.rules import SIMILAR, SUPERIOR, five_way_labels

    scores = parse_teacher_table(DOVER_NIQE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared, the two agree: no warning
        fused = fuse(scores, normalize="zscore", lower_is_better=["niqe"])
    # Both are linear in the video's rank, so z-scored they coincide: the rank, no spread.
    rank_z = (np.arange(6) - 2.5) / np.std(np.arange(6))
    np.testing.assert_allclose(fused["mean"], rank_z, atol=1e-12)
    np.testing.assert_allclose(fused["var"], 0.0, atol=1e-12)
    d = fused["mean"].to_numpy()[1:] - fused["mean"].to_numpy()[:-1]  # each video against the one below
    assert set(five_way_labels(d, np.sqrt(2 * fused["var"].to_numpy()[1:]))) == {SUPERIOR}
    # Unnormalized, NIQE's negated score dominates the mean and still ranks the videos alike.
    raw = fuse(scores, lower_is_better=["niqe"])
    np.testing.assert_allclose(raw["mean"], (DOVER_NIQE["dover"] - DOVER_NIQE["niqe"]).to_numpy() / 2)

    # Undeclared: z-scored, the two cancel and every pair is "similar"; both teachers are named.
    with pytest.warns(TableWarning) as caught:
        wrong = fuse(scores, normalize="zscore")
    np.testing.assert_allclose(wrong["mean"], 0.0, atol=1e-12)
    assert set(five_way_labels(wrong["mean"].diff().dropna(), np.sqrt(2 * wrong["var"].iloc[1:]))) == {SIMILAR}
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "teacher 'dover'" in messages[0] and "teacher 'niqe'" in messages[1]
    assert "Spearman -1.00" in messages[1] and "--lower-is-better niqe" in messages[1]
    assert "two equal camps: either may be the reversed one" in messages[1]
    # Unnormalized and undeclared, NIQE's scale wins and the ranking comes out inverted.
    with pytest.warns(TableWarning):
        assert (fuse(scores)["mean"].diff().dropna() < 0).all()


def test_the_teacher_against_the_consensus_is_the_one_named():
    three = DOVER_NIQE.assign(qalign=[2.0, 2.5, 2.4, 3.5, 4.0, 4.9])  # agrees with dover, not exactly
    scores = parse_teacher_table(three)
    spearman = consensus_spearman(scores)
    assert spearman["niqe"] < -0.9 and spearman["dover"] > 0.9 and spearman["qalign"] > 0.9
    with pytest.warns(TableWarning) as caught:
        fuse(scores, normalize="zscore")
    assert [str(w.message).split(" ranks")[0] for w in caught] == ["teacher 'niqe'"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = fuse(scores, normalize="zscore", lower_is_better=["niqe"])
    assert list(fused["mean"].rank()) == [1, 2, 3, 4, 5, 6]
    # Declared where it is not: the warning says to check the declaration.
    declared = r"'dover' ranks .* it is declared lower-is-better \(negated before fusion\): check"
    with pytest.warns(TableWarning, match=declared):
        fuse(scores, normalize="zscore", lower_is_better=["niqe", "dover"])


def test_lower_is_better_must_name_teachers_of_the_table():
    scores = parse_teacher_table(DOVER_NIQE)
    with pytest.raises(TeacherTableError, match="does not have: NIQE; its teachers: dover, niqe"):
        fuse(scores, lower_is_better=["NIQE"])
    table = wide_scores(scores, lower_is_better=["niqe"])
    np.testing.assert_allclose(table["niqe"], -DOVER_NIQE["niqe"].to_numpy())
