"""The PyTorch side of an export: transformers loads its processor settings, video files
become exactly the inputs `prepare` stores, and TorchScorer's scores against an anchor
directory equal the JAX scorer's, without importing JAX."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from w2s_vqa import prompt, video
from w2s_vqa.convert import anchor_scores, export_files
from w2s_vqa.convert.video_inputs import ARRAYS, video_inputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _clips(folder, sizes, seed=0):
    """Clips of one scene with rising noise, one per (width, height, seconds) in `sizes`, 8 fps."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (width, height, seconds) in enumerate(sizes):
        scene = rng.integers(0, 256, (int(8 * seconds), height, width, 3)).astype(np.float64)
        frames = np.clip(scene + rng.normal(0, 15 * i, scene.shape), 0, 255).astype(np.uint8)
        video.write_video(os.path.join(folder, f"v{i}.mp4"), frames, 8.0)
    return [os.path.join(folder, f"v{i}.mp4") for i in range(len(sizes))]


def _pictures(folder, seed=0):
    """A JPEG and a PNG, as thumbnails lie among the videos of a dataset folder; their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = [os.path.join(folder, "thumb.jpg"), os.path.join(folder, "still.png")]
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(paths[0], quality=90)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(paths[1])
    return paths


@pytest.fixture(scope="module")
def tiny_student():
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models import student as student_lib

    return student_lib.create(model_config.preset("tiny"), seed=5)


def _export(model, path, data=None):
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config

    hf.save_student(model, str(path), tokenizer_dir=model_config.TINY_TOKENIZER, data=data)
    return model


# ----------------------------------------------------------------------------- the export as transformers sees it
def test_an_export_records_its_inputs_and_transformers_reads_its_processor_settings(tmp_path, tiny_student):
    from transformers import AutoImageProcessor, AutoTokenizer

    _export(tiny_student, tmp_path / "export", data={"motion_features": "frame_stats", "frame_format": "jpeg",
                                                     "jpeg_quality": 90, "distort_max_side": 640})
    settings = export_files.read_settings(str(tmp_path / "export"))
    assert {k: settings[k] for k in ("image_size", "num_frames", "sample_fps", "num_motion_chunks", "motion_dim",
                                     "motion_features", "frame_format", "jpeg_quality", "distort_max_side",
                                     "distort_max_seconds", "pixel_mean", "pixel_std")} == {
        "image_size": 32, "num_frames": 4, "sample_fps": 1.0, "num_motion_chunks": 4, "motion_dim": 256,
        "motion_features": "frame_stats", "frame_format": "jpeg", "jpeg_quality": 90, "distort_max_side": 640,
        "distort_max_seconds": 20.0, "pixel_mean": 0.5, "pixel_std": 0.5}
    assert "w2s_vqa.video.sample_frames" in settings["frame_sampling"]

    # The image processor: transformers' own code normalizes a frame as our student does.
    image_processor = AutoImageProcessor.from_pretrained(tmp_path / "export")
    assert type(image_processor).__name__.startswith("LlavaOnevisionImageProcessor")
    assert image_processor.size == {"height": 32, "width": 32} and list(image_processor.image_mean) == [0.5] * 3
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pixels = np.asarray(image_processor(images=frame, return_tensors="np")["pixel_values"])[0, 0]
    np.testing.assert_allclose(pixels, (frame.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, atol=1e-6)
    # The chat template renders the pair prompt from plain chat messages.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    text = tokenizer.apply_chat_template(export_files.pair_messages(), continue_final_message=True, tokenize=False)
    assert text == prompt.chat_text()
    processor = json.loads((tmp_path / "export" / export_files.PROCESSOR_FILE).read_text())
    assert processor["num_image_tokens"] == 16 and processor["video_token"] == "<video>"  # 32 px / patch 8, squared
    videos = json.loads((tmp_path / "export" / export_files.VIDEO_PROCESSOR_FILE).read_text())
    assert videos["size"] == {"height": 32, "width": 32} and videos["do_sample_frames"] is False
    # Re-exporting keeps the input settings.
    from w2s_vqa.convert import hf

    hf.save_student(hf.load_student(str(tmp_path / "export")), str(tmp_path / "again"),
                    tokenizer_dir=str(tmp_path / "export"))
    assert export_files.read_settings(str(tmp_path / "again"))["frame_format"] == "jpeg"


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a CUDA build that cannot load beside the CPU torch
        return False
    return True


@pytest.mark.skipif(not _torchvision_works(),
                    reason="transformers' LlavaOnevisionVideoProcessor, which AutoProcessor builds for every "
                           "LLaVA-OneVision directory, needs torchvision; no CPU build of it for torch 2.13 is "
                           "installed here (the PyPI wheel is a CUDA build)")
def test_auto_processor_loads_an_export(tmp_path, tiny_student):
    from transformers import AutoProcessor

    model = _export(tiny_student, tmp_path / "export")
    processor = AutoProcessor.from_pretrained(tmp_path / "export")
    assert type(processor).__name__ == "LlavaOnevisionProcessor"
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    text = processor.apply_chat_template(export_files.pair_messages(), continue_final_message=True, tokenize=False)
    assert text == prompt.chat_text()
    out = processor(text=text, videos=[frames, frames], return_tensors="np")
    np.testing.assert_allclose(np.asarray(out["pixel_values_videos"])[0],
                               (frames.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5, atol=1e-6)
    # transformers' video tokens are ours but for the motion tokens the student adds after each.
    tokens = int((np.asarray(out["input_ids"]) == model.cfg.video_token_index).sum())
    assert tokens == 2 * (model.cfg.tokens_per_video - model.cfg.num_motion_chunks)


# ----------------------------------------------------------------------------- video files -> inputs
@pytest.mark.parametrize("frame_format,motion_features", [("raw", "frame_stats"), ("jpeg", "none")])
def test_video_inputs_are_the_records_prepare_writes(tmp_path, frame_format, motion_features):
    from w2s_vqa import config as config_lib
    from w2s_vqa.store import prepare as prepare_lib
    from w2s_vqa.store.format import VideoStore

    # 6 s of 80x60 (4 frames spread over it), 2.5 s (fewer seconds than frame slots), a side
    # above the decoding cap (so frame_stats decodes it reduced).
    paths = _clips(str(tmp_path / "videos"), [(80, 60, 6), (48, 32, 2.5), (144, 96, 3)])
    pictures = _pictures(str(tmp_path / "videos"))
    config = config_lib.defaults()
    config.data.update(distortions="", frame_format=frame_format, motion_features=motion_features,
                       jpeg_quality=80, distort_max_side=128)
    prepare_lib.prepare(config, str(tmp_path / "videos"), str(tmp_path / "store"), workers=0, progress=False)
    settings = {**{k: config.data[k] for k in ("num_frames", "image_size", "num_motion_chunks", "motion_dim",
                                               "motion_features", "frame_format", "jpeg_quality")},
                "distort_max_side": 128, "distort_max_seconds": config.data.distort_max_seconds}
    with VideoStore(str(tmp_path / "store")) as store:
        media = store.index.set_index("id")["media"]
        for path in pictures + paths:
            record = store.get(os.path.splitext(os.path.basename(path))[0])
            ours = video_inputs(path, settings)
            for name in ARRAYS:
                np.testing.assert_array_equal(ours[name], record[name], err_msg=f"{path}: {name}")
            assert ours["media"] == media[os.path.splitext(os.path.basename(path))[0]]
            if path in pictures:  # the paper's rule for images: one frame, all-zero motion (docs/method.md)
                assert ours["media"] == "image" and ours["frame_mask"].tolist() == [True, False, False, False]
                assert not ours["motion"].any()
                assert ours["motion_mask"].tolist() == ([True, False, False, False] if motion_features != "none"
                                                        else [False] * 4)
            else:
                assert ours["media"] == "video"
    assert not ours["frame_mask"].all() or motion_features == "none"  # the short clip left slots masked
    with pytest.raises(video.VideoError):
        (tmp_path / "broken.mp4").write_bytes(b"nothing")
        video_inputs(str(tmp_path / "broken.mp4"), settings)


# ----------------------------------------------------------------------------- scores
def test_the_numpy_thurstone_solution_is_the_jax_one():
    from w2s_vqa.score import thurstone

    rng = np.random.default_rng(0)
    anchor_logits, test_logits = rng.normal(size=(5, 5, 5)) * 2, rng.normal(size=(6, 5, 5)) * 2
    mos = np.array([39.56, 50.23, 60.62, 69.43, 78.03])
    for mode, tolerance in (("map", 1e-6), ("paper", 1e-3)):
        theirs = thurstone.scores(anchor_logits, test_logits, mos, mode=mode)
        ours = [anchor_scores.score(anchor_logits, t, mos, mode=mode) for t in test_logits]
        np.testing.assert_allclose([o["score"] for o in ours], theirs.score, atol=tolerance)
        if mode == "map":
            np.testing.assert_allclose([o["stderr"] for o in ours], theirs.stderr, atol=tolerance)
            np.testing.assert_allclose([o["p"] for o in ours], theirs.p, atol=1e-12)


TORCH_SCRIPT = """
import json, sys, warnings
from w2s_vqa.convert.torch_scorer import TorchScorer
export, anchors, anchor_file, out, folder, duplicate, *paths = sys.argv[1:]
scorer = TorchScorer(export)
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    result = scorer.score(paths, anchors)
    with_images = scorer.score(paths, anchors, images="score")
    of_folder = scorer.score(folder, anchors, images="score")  # a folder, as `w2s-vqa score --inputs` lists it
    one_file = scorer.score(paths[0], anchors)  # one file: one row, not one per letter
refused = []
for given in ([paths[0], duplicate], 42, [paths[0], 42]):
    try:
        scorer.score(given, anchors)
    except (TypeError, ValueError) as e:
        refused.append(f"{type(e).__name__}: {e}")
json.dump({"table": result.table.to_dict("list"), "skipped": result.skipped.to_dict("records"),
           "of_folder": of_folder.table.to_dict("list"), "folder_skipped": of_folder.skipped.to_dict("records"),
           "one_file": one_file.table.to_dict("list"), "refused": refused,
           "images_skipped": result.images_skipped, "said": [str(w.message) for w in said],
           "with_images": with_images.table.to_dict("list"), "images_scored": with_images.images_scored,
           "skipped_with_images": with_images.skipped.to_dict("records"),
           "p_file": scorer.preference_of_files(anchor_file, paths[0]),
           "jax_imported": any(m == "jax" or m.startswith("jax.") for m in sys.modules)}, open(out, "w"))
"""


def test_jax_and_pytorch_scores_of_an_export_agree(tmp_path, tiny_student):
    from w2s_vqa import config as config_lib
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa import sharding
    from w2s_vqa.models import config as model_config
    from w2s_vqa.score import batch
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.store import prepare as prepare_lib

    _clips(str(tmp_path / "anchor_clips"), [(64, 48, 2)] * 3, seed=1)
    config = config_lib.defaults()
    config.data.distortions = ""
    prepare_lib.prepare(config, str(tmp_path / "anchor_clips"), str(tmp_path / "store"), workers=0, progress=False)
    anchors = AnchorSet.from_store(str(tmp_path / "store"), ["v0", "v1", "v2"], [70.0, 50.0, 30.0])
    anchors.save(str(tmp_path / "anchors"))
    paths = _clips(str(tmp_path / "videos"), [(64, 48, 3), (80, 60, 2), (64, 48, 5), (48, 48, 1)])
    pictures = _pictures(str(tmp_path / "videos"))
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video")
    model = _export(tiny_student, tmp_path / "export")

    # PyTorch, in a process of its own: no JAX may be imported on that side.
    out = tmp_path / "torch.json"
    env = {**os.environ, "PYTHONPATH": REPO}
    broken = str(tmp_path / "videos" / "broken.mp4")
    duplicate = tmp_path / "elsewhere" / "v0.mp4"  # a second file whose name gives the id v0
    duplicate.parent.mkdir()
    duplicate.write_bytes(open(paths[0], "rb").read())
    subprocess.run([sys.executable, "-c", TORCH_SCRIPT, str(tmp_path / "export"), str(tmp_path / "anchors"),
                    str(tmp_path / "anchor_clips" / "v2.mp4"), str(out), str(tmp_path / "videos"), str(duplicate),
                    *paths, *pictures, broken],
                   check=True, env=env, cwd=REPO, timeout=600)
    torch_side = json.loads(out.read_text())
    assert not torch_side["jax_imported"]
    theirs = pd.DataFrame(torch_side["table"]).set_index("id")
    # By default the pictures are left out beside the broken file, each listed with its reason, in one line.
    assert [(s["id"], s["path"]) for s in torch_side["skipped"]] == [
        ("thumb", pictures[0]), ("still", pictures[1]), ("broken", broken)]
    # The reason as `w2s-vqa score`'s skipped table words it: the path is in its own column, not repeated.
    assert torch_side["skipped"][2]["reason"].startswith("VideoError: ")
    assert broken not in torch_side["skipped"][2]["reason"]
    # One file given as a string is one row; a second file with its id, or no paths, is refused in one line.
    assert torch_side["one_file"]["id"] == ["v0"] and torch_side["one_file"]["path"] == [paths[0]]
    assert torch_side["refused"] == [
        f"ValueError: TorchScorer.score: 1 id(s) name more than one video: 'v0': {paths[0]}, {duplicate}; give "
        "ids=[...], or their folder (ids are then paths relative to it, as `w2s-vqa score` names them)",
        "TypeError: paths: give a video file, a folder or a list of video files (str or os.PathLike), not int",
        "TypeError: paths: every item must be a video file's path (str or os.PathLike); found int 42"]
    assert [s["reason"] for s in torch_side["skipped"][:2]] == [video.IMAGE_REASON] * 2
    assert torch_side["images_skipped"] == 2 and set(theirs["kind"]) == {"video"}
    said = [m for m in torch_side["said"] if m.startswith("TorchScorer.score: skipped")]
    assert len(said) == 3 and said[2].startswith("TorchScorer.score: skipped 1 of 7 files")  # the folder's
    assert said[:2] == [f"TorchScorer.score: skipped 3 of 7 files: 1 that could not be decoded (first: {broken}: "
                    f"{torch_side['skipped'][2]['reason']}); 2 still image(s) (images='score' scores them: one "
                    "frame, zero motion); the result's .skipped lists each with its reason",
                    f"TorchScorer.score: skipped 1 of 7 files: 1 that could not be decoded (first: {broken}: "
                    f"{torch_side['skipped'][2]['reason']}); the result's .skipped lists each with its reason"]
    assert [s["id"] for s in torch_side["skipped_with_images"]] == ["broken"]
    with_images = pd.DataFrame(torch_side["with_images"]).set_index("id")
    assert torch_side["images_scored"] == 2
    assert with_images["kind"].to_dict() == {"v0": "video", "v1": "video", "v2": "video", "v3": "video",
                                             "thumb": "image", "still": "image"}

    tokenizer = prompt_lib.load_tokenizer(model_config.TINY_TOKENIZER)
    pair_prompt = prompt_lib.build_pair_prompt(tokenizer, video_token_id=model.cfg.video_token_index,
                                               tokens_per_video=model.cfg.tokens_per_video)
    result = batch.score_videos(model, pair_prompt, AnchorSet.load(str(tmp_path / "anchors")),
                                str(tmp_path / "videos"), sharding.make_mesh((1, -1, 1)), batch_size=8,
                                images="score")
    assert [s["id"] for s in result.skipped] == ["broken"]
    # The folder, given to TorchScorer as a string: the files, ids and skipped entries the CLI's listing gives.
    assert torch_side["folder_skipped"] == result.skipped
    assert sorted(torch_side["of_folder"]["id"]) == sorted(result.table["id"])
    of_folder = pd.DataFrame(torch_side["of_folder"]).set_index("id")
    np.testing.assert_allclose(of_folder.loc[result.table["id"], "score"], result.table["score"], atol=1e-3)
    ours = result.table.set_index("id")
    assert sorted(ours.index) == sorted(with_images.index) == ["still", "thumb", "v0", "v1", "v2", "v3"]
    assert ours["kind"].to_dict() == with_images["kind"].to_dict()
    # Still images, scored by the one rule on both sides: the same scores (tolerance: float32 on two libraries).
    np.testing.assert_allclose(with_images.loc[ours.index, "score"], ours["score"], atol=1e-3)
    ours = ours.loc[["v0", "v1", "v2", "v3"]]
    assert sorted(theirs.index) == ["v0", "v1", "v2", "v3"]
    theirs = theirs.loc[ours.index]
    np.testing.assert_allclose(theirs["score"], ours["score"], atol=1e-3)  # the MOS scale
    np.testing.assert_allclose(theirs["stderr"], ours["stderr"], atol=1e-3)
    p_columns = [c for c in ours.columns if c.startswith("p_vs_")]
    assert p_columns == [c for c in theirs.columns if c.startswith("p_vs_")] == ["p_vs_v2", "p_vs_v1", "p_vs_v0"]
    np.testing.assert_allclose(theirs[p_columns], ours[p_columns], atol=1e-5)
    # Two files straight from disk: the anchor v2's own clip first, v0 second.
    assert torch_side["p_file"] == pytest.approx(ours.loc["v0", "p_vs_v2"], abs=1e-5)


def test_a_broken_anchor_directory_is_refused_by_name(tmp_path):
    from w2s_vqa.convert.torch_scorer import Anchors

    with pytest.raises(FileNotFoundError, match="anchors.json: missing; expected an anchor directory"):
        Anchors.load(str(tmp_path))
    (tmp_path / "anchors.json").write_text(json.dumps({"version": 1, "anchors": [{"id": "a", "mos": 50.0},
                                                                                 {"id": "b", "mos": 40.0}]}))
    with pytest.raises(FileNotFoundError, match="videos.npz: missing"):
        Anchors.load(str(tmp_path))
    np.savez(tmp_path / "videos.npz", frames=np.zeros((2, 4, 32, 32, 3), np.uint8), frame_mask=np.ones((2, 4), bool),
             motion=np.zeros((2, 4, 256), np.float32), motion_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="increasing MOS"):
        Anchors.load(str(tmp_path))
