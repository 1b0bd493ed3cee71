"""A student meets an anchor set made another way: every verb refuses it, naming the setting.

The case: anchors made from a store prepared with data.motion_features='none' (zeros,
every motion slot masked) have the tiny student's shapes (4 frames of 32x32, 4 motion
chunks of 256), so a comparison of shapes alone accepts them; but a student trained with
frame-statistics motion reads every test video with motion, so its scores against these
anchors compare videos made two ways. Each path that pairs a student with anchors must
refuse them, naming motion_features with both values, before any video is scored.
"""

import json

import numpy as np
import pytest

from w2s_vqa import cli
from w2s_vqa import config as config_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import config as model_config
from w2s_vqa.models import student as student_lib
from w2s_vqa.score.anchors import AnchorError, AnchorSet
from w2s_vqa.store.settings import Settings

CLI_MESH = ["--set", "mesh.shape=(1,1,1)", "--set", "mesh.num_devices=1"]
MESSAGE = "motion_features: 'frame_stats' (the student) vs 'none' (the anchors' videos)"


def _anchors_without_motion(directory) -> AnchorSet:
    """Three anchors with the tiny student's shapes, recorded as made with motion_features 'none'."""
    data = config_lib.defaults().data
    assert data.motion_features == "frame_stats"  # the student below is trained (configured) with motion
    settings = {**Settings.from_config(config_lib.defaults()).to_json(), "motion_features": "none"}
    k, f, s, m, d = 3, data.num_frames, data.image_size, data.num_motion_chunks, data.motion_dim
    rng = np.random.default_rng(0)
    videos = {"frames": rng.integers(0, 256, (k, f, s, s, 3), dtype=np.uint8), "frame_mask": np.ones((k, f), bool),
              "motion": np.zeros((k, m, d), np.float32), "motion_mask": np.zeros((k, m), bool)}
    anchors = AnchorSet(ids=("a", "b", "c"), mos=np.array([20.0, 50.0, 80.0]), videos=videos, settings=settings)
    anchors.save(directory)
    return AnchorSet.load(str(directory))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchor_settings")
    anchors = _anchors_without_motion(root / "anchors")
    student = student_lib.create(model_config.preset("tiny"), seed=1)
    hf.save_student(student, str(root / "export"), tokenizer_dir=model_config.TINY_TOKENIZER,
                    data=config_lib.defaults().data)  # its w2s_vqa.json records motion_features 'frame_stats'
    videos = root / "videos"
    videos.mkdir()
    for name in ("v0.mp4", "v1.mp4"):  # never decoded: the refusal comes first
        (videos / name).write_bytes(b"not decoded")
    (root / "set.csv").write_text("file,mos\nv0.mp4,3.0\nv1.mp4,4.0\n")
    return root, anchors, student


def test_shapes_alone_would_accept_them(setup):
    _, anchors, student = setup
    anchors.check_student(student.cfg)  # the student's config knows shapes only: they fit
    with pytest.raises(AnchorError, match=MESSAGE.replace("(", r"\(").replace(")", r"\)")):
        anchors.check_student(student.cfg, Settings.from_config(config_lib.defaults()))


def test_the_score_verb_refuses_them(setup, tmp_path, capsys):
    root, anchors, _ = setup
    code = cli.main(["score", "--hf", str(root / "export"), "--anchors", anchors.path, "--inputs",
                     str(root / "videos"), "--out", str(tmp_path / "scores.csv"), *CLI_MESH])
    assert code == 2
    assert MESSAGE in capsys.readouterr().err
    assert not (tmp_path / "scores.csv").exists()


def test_the_eval_verb_refuses_them(setup, tmp_path, capsys):
    root, anchors, _ = setup
    code = cli.main(["eval", "--hf", str(root / "export"), "--anchors", anchors.path, "--eval-set", "kvq",
                     str(root / "videos"), str(root / "set.csv"), "--out", str(tmp_path / "eval"), *CLI_MESH])
    assert code == 2
    assert MESSAGE in capsys.readouterr().err
    assert not (tmp_path / "eval" / "results.json").exists()


def test_the_stages_verb_refuses_them_before_training(setup, tmp_path, capsys):
    root, anchors, _ = setup
    code = cli.main(["stages", "--workdir", str(tmp_path / "w"), "--stages", "2",
                     "--set", f"data.store='{tmp_path / 'no_store'}'", "--set", f"data.pairs='{tmp_path / 'p.parquet'}'",
                     "--set", f"stages.anchors='{anchors.path}'", *CLI_MESH])
    assert code == 2
    err = capsys.readouterr().err
    assert "motion_features: 'frame_stats' (the config) vs 'none' (the anchors' videos)" in err
    assert not (tmp_path / "w" / "stage_1").exists()


def test_torch_scorer_refuses_them(setup):
    from w2s_vqa.convert.torch_scorer import TorchScorer

    root, anchors, _ = setup
    scorer = TorchScorer(str(root / "export"))
    assert scorer.input_settings.motion_features == "frame_stats"
    with pytest.raises(ValueError, match=MESSAGE.replace("(", r"\(").replace(")", r"\)")):
        scorer.score([str(root / "videos" / "v0.mp4")], anchors.path)


def test_an_older_anchor_set_compares_what_it_recorded(setup, tmp_path):
    """anchors.json written before the decoding caps were recorded: those are not compared,
    the rest is."""
    _, anchors, student = setup
    anchors.save(tmp_path / "old")
    record = json.loads((tmp_path / "old" / "anchors.json").read_text())
    for key in ("distort_max_side", "distort_max_seconds"):
        del record["settings"][key]
    (tmp_path / "old" / "anchors.json").write_text(json.dumps(record))
    old = AnchorSet.load(str(tmp_path / "old"))
    assert old.settings.distort_max_side is None
    student_settings = Settings.from_config(config_lib.defaults())
    other_caps = Settings(**{**student_settings.to_json(), "motion_features": "none", "distort_max_side": 7})
    old.check_student(student.cfg, other_caps)  # caps unrecorded: not compared; motion kind equal
    with pytest.raises(AnchorError, match="motion_features"):
        old.check_student(student.cfg, student_settings)


def test_anchors_taken_at_other_frame_times_are_refused_naming_the_key(setup, tmp_path):
    """Anchors made with data.frame_times 'released' (the authors' frames) against a student
    that reads (k + 0.5) s frames: same shapes, same motion, other frames; and anchors
    written before the key was recorded read as 'centered'."""
    _, anchors, student = setup
    student_settings = Settings.from_config(config_lib.defaults())
    anchors.save(tmp_path / "released")
    record = json.loads((tmp_path / "released" / "anchors.json").read_text())
    record["settings"].update(motion_features="frame_stats", frame_times="released")
    (tmp_path / "released" / "anchors.json").write_text(json.dumps(record))
    released = AnchorSet.load(str(tmp_path / "released"))
    with pytest.raises(AnchorError, match=r"frame_times: 'centered' \(the student\) vs 'released' \(the anchors' "):
        released.check_student(student.cfg, student_settings)
    del record["settings"]["frame_times"]
    (tmp_path / "released" / "anchors.json").write_text(json.dumps(record))
    AnchorSet.load(str(tmp_path / "released")).check_student(student.cfg, student_settings)  # old: centered
