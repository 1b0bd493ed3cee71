"""README's "Score videos with the paper's model", run end to end on a tiny stand-in of the
released checkpoint (tests/convert/llava_qwen_reference.py) with configs/w2s_released.py.

Two steps are stood in for, nothing else: the download (the stand-in directory is what
`huggingface-cli download` leaves, in the authors' layout) and `convert-slowfast` (random
weights in the file format it writes; the verb itself is tested in
tests/models/test_slowfast.py against pytorchvideo). Frames are 32x32, the stand-in's tower.
"""

import json
import os

import numpy as np
import pandas as pd

from tests.convert import llava_qwen_reference as ref
from w2s_vqa import cli, video
from w2s_vqa.models import slowfast

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "w2s_released.py")


def _clips(folder, count, seed):
    """`count` 2-second 8 fps clips of one scene with rising noise."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (16, 48, 64, 3)).astype(np.float64)
    for i in range(count):
        frames = np.clip(scene + rng.normal(0, 12 * i, scene.shape), 0, 255).astype(np.uint8)
        video.write_video(os.path.join(folder, f"v{i}.mp4"), frames, 8.0)
    return str(folder)


def _slowfast_weights(path):
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
    return str(path)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_score_videos_with_the_papers_model_in_the_readme_commands(tmp_path, capsys):
    stage3 = ref.write_released(tmp_path / "w2s_stage3")  # huggingface-cli download ... --local-dir w2s_stage3
    weights = _slowfast_weights(tmp_path / "slowfast_r50.safetensors")  # w2s-vqa convert-slowfast ...
    sets = ["--set", f"data.slowfast_weights={weights}", "--set", "data.image_size=32"]
    anchor_videos = _clips(tmp_path / "anchor_videos", 5, seed=1)
    pd.DataFrame({"file": [f"v{i}.mp4" for i in range(5)], "mos": [78.0, 69.4, 60.6, 50.2, 39.6]}).to_csv(
        tmp_path / "anchor_mos.csv", index=False)

    assert cli.main(["prepare", "--config", CONFIG, "--inputs", anchor_videos, "--out", str(tmp_path / "anchor_store"),
                     "--workers", "0", *sets]) == 0
    assert cli.main(["anchors", "--store", str(tmp_path / "anchor_store"), "--mos", str(tmp_path / "anchor_mos.csv"),
                     "--out", str(tmp_path / "anchors")]) == 0
    capsys.readouterr()
    my_videos = _clips(tmp_path / "my_videos", 2, seed=2)
    tables = {}
    for mode in ("map", "paper"):
        out = tmp_path / f"scores_{mode}.csv"
        assert cli.main(["score", "--config", CONFIG, "--hf", stage3, "--anchors", str(tmp_path / "anchors"),
                         "--inputs", my_videos, "--out", str(out), "--mode", mode, *sets]) == 0
        result = _last_json(capsys)
        assert (result["scores"], result["videos"], result["skipped"], result["mode"]) == (str(out), 2, 0, mode)
        tables[mode] = pd.read_csv(out).set_index("id")
        assert sorted(tables[mode].index) == ["v0", "v1"]
        assert np.isfinite(tables[mode]["score"]).all()
    assert ((tables["paper"]["score"] >= 0) & (tables["paper"]["score"] <= 100)).all()
    # map: on the anchors' MOS scale, with a 95% interval around each score.
    assert (tables["map"]["low"] <= tables["map"]["score"]).all() and (tables["map"]["score"] <= tables["map"]["high"]).all()
