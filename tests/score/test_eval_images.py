"""`w2s-vqa eval` on a set holding still images (a JPEG and a PNG among its clips): left out,
listed with the reason and counted by default; scored as images with `--images score`."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from w2s_vqa import cli, video


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A folder of 4 clips, a JPEG and a PNG with a MOS table naming all six, an anchor set and
    an export of a tiny random student."""
    from PIL import Image

    from w2s_vqa import config as config_lib
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.store import prepare as prepare_lib

    root = tmp_path_factory.mktemp("labeled_images")
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (16, 48, 64, 3)).astype(np.float64)
    for folder, count in (("videos", 4), ("anchor_clips", 3)):
        os.makedirs(root / folder)
        for i in range(count):
            frames = np.clip(scene + rng.normal(0, 12 * i, scene.shape), 0, 255).astype(np.uint8)
            video.write_video(str(root / folder / f"v{i}.mp4"), frames, 8.0)
    Image.fromarray(scene[0].astype(np.uint8)).save(root / "videos" / "thumb.jpg", quality=90)
    Image.fromarray(scene[1].astype(np.uint8)).save(root / "videos" / "still.png")
    pd.DataFrame({"file": ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4", "thumb.jpg", "still.png"],
                  "mos": [4.5, 3.9, 3.1, 2.0, 3.0, 2.5]}).to_csv(root / "mos.csv", index=False)
    config = config_lib.defaults()
    config.data.distortions = ""
    prepare_lib.prepare(config, str(root / "anchor_clips"), str(root / "store"), workers=0, progress=False)
    AnchorSet.from_store(str(root / "store"), ["v0", "v1", "v2"], [70.0, 50.0, 30.0]).save(str(root / "anchors"))
    hf.save_student(student_lib.create(model_config.preset("tiny"), seed=3), str(root / "export"),
                    tokenizer_dir=model_config.TINY_TOKENIZER)
    return root


def _eval(root, out, capsys, *extra):
    assert cli.main(["eval", "--hf", str(root / "export"), "--anchors", str(root / "anchors"),
                     "--eval-set", "konvid_1k", str(root / "videos"), str(root / "mos.csv"),
                     "--out", str(out), "--bootstrap", "0", *extra]) == 0
    printed = capsys.readouterr().out
    return printed, json.loads(printed.strip().splitlines()[-1]), json.loads((out / "results.json").read_text())


def test_still_images_in_a_set_are_left_out_and_counted_by_default(labeled, tmp_path, capsys):
    printed, summary, results = _eval(labeled, tmp_path / "eval", capsys)
    assert results["images"] == summary["images"] == {"konvid_1k": {"scored": 0, "skipped": 2}}
    assert results["skipped"] == {"konvid_1k": 2}
    skipped = pd.read_csv(tmp_path / "eval" / "skipped.csv")
    assert sorted(skipped["file"]) == ["still.png", "thumb.jpg"]
    assert (skipped["reason"] == video.IMAGE_REASON).all()
    assert results["sets"]["konvid_1k"]["models"]["student"]["videos"] == 4
    assert (f"skipped 2 (0 unreadable, 2 still images), each with its reason, in {tmp_path / 'eval' / 'skipped.csv'}"
            in printed)
    assert "left out 2 still image(s)" in printed and "--images score" in printed


def test_still_images_in_a_set_are_scored_as_images_on_request(labeled, tmp_path, capsys):
    printed, summary, results = _eval(labeled, tmp_path / "eval", capsys, "--images", "score")
    assert results["images"] == {"konvid_1k": {"scored": 2, "skipped": 0}}
    assert results["skipped"] == {"konvid_1k": 0}
    assert results["sets"]["konvid_1k"]["models"]["student"]["videos"] == 6
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert set(predictions["file"]) == {"v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4", "thumb.jpg", "still.png"}
    assert np.isfinite(predictions["prediction"]).all()
    # The store eval decoded them into holds one frame and all-zero motion per picture (docs/method.md).
    from w2s_vqa.store.format import VideoStore

    with VideoStore(str(tmp_path / "eval" / "work" / "konvid_1k" / "store")) as store:
        media = store.index.set_index("id")["media"].to_dict()
        assert {k: media[k] for k in ("thumb.jpg", "still.png", "v0.mp4")} == {
            "thumb.jpg": "image", "still.png": "image", "v0.mp4": "video"}
        for picture in ("thumb.jpg", "still.png"):
            record = store.get(picture)
            assert record["frame_mask"].sum() == 1 and not record["motion"].any()
            assert record["motion_mask"].tolist() == [True, False, False, False]
