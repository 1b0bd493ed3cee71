"""The PyTorch-only install (torch_scorer/, the distribution w2s-vqa-torch): its wheel is built
from this checkout, and TorchScorer scores video files from the wheel's files alone while
every JAX package is unimportable."""

import json
import os
import runpy
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from w2s_vqa import video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUP = os.path.join(REPO, "torch_scorer", "setup.py")
# The packages of the JAX side; none may be imported, nor required by the wheel.
JAX_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax", "grain", "array_record", "tensorflow", "libtpu")

# Runs with `python -S` (no site-packages, no .pth files, so no editable install of the full
# package) in an environment whose only w2s_vqa is the wheel's: sys.path holds the unpacked
# wheel and links to the test environment's packages less the JAX ones (`_environment`).
SCRIPT = r"""
import json, os, sys

SITE, BLOCKED = sys.argv[1], tuple(sys.argv[2].split(","))
import numpy as np
from w2s_vqa.convert.torch_scorer import TorchScorer
from w2s_vqa.convert.video_inputs import ARRAYS, video_inputs

export, anchors_dir, out, *paths = sys.argv[3:]
anchor_paths, test_paths = paths[:3], paths[3:]
scorer = TorchScorer(export)
# An anchor directory made on this side: the anchors' inputs as TorchScorer makes them.
inputs = [scorer.video_inputs(p) for p in anchor_paths]
os.makedirs(anchors_dir)
np.savez(os.path.join(anchors_dir, "videos.npz"), **{k: np.stack([i[k] for i in inputs]) for k in ARRAYS})
json.dump({"version": 1, "settings": scorer.input_settings.to_json(),
           "anchors": [{"id": f"a{n}", "mos": 30.0 + 20 * n} for n in range(3)]},
          open(os.path.join(anchors_dir, "anchors.json"), "w"))
result = scorer.score(test_paths, anchors_dir)
table = result.table
# Settings without the decoding caps: their defaults come from w2s_vqa.config.
bare = {k: scorer.input_settings[k] for k in ("num_frames", "image_size", "num_motion_chunks", "motion_dim")}
capped = video_inputs(test_paths[0], {**bare, "motion_features": "frame_stats"})
json.dump({"ids": table["id"].tolist(), "scores": table["score"].tolist(),
           "skipped": result.skipped["id"].tolist(),
           "kinds": table["kind"].tolist(), "frames": list(capped["frames"].shape),
           "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
           "outside": sorted(m for m, v in sys.modules.items() if m.startswith("w2s_vqa")
                             and getattr(v, "__file__", None) and not v.__file__.startswith(SITE))},
          open(out, "w"))
"""


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> str:
    """The wheel of torch_scorer/ built from a copy of this checkout (the build writes into its
    source folder); its files unpacked into a folder, whose path is returned."""
    pytest.importorskip("setuptools", reason="building the wheel without build isolation (no package index in "
                                             "the tests) needs setuptools in the test environment")
    tmp_path = tmp_path_factory.mktemp("torch_wheel")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(os.path.join(REPO, "w2s_vqa"), source / "w2s_vqa", ignore=ignore)
    shutil.copytree(os.path.join(REPO, "torch_scorer"), source / "torch_scorer", ignore=ignore)
    # No build isolation: the build needs setuptools only, which the test environment has,
    # and the tests reach no package index.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(source / "torch_scorer")], check=True, timeout=300)
    (wheel,) = os.listdir(tmp_path / "wheel")
    site = tmp_path / "site"
    with zipfile.ZipFile(tmp_path / "wheel" / wheel) as archive:
        archive.extractall(site)
    return str(site)


def _environment(tmp_path) -> str:
    """A folder of links to every installed package of this environment except the JAX side and
    w2s_vqa itself: the packages a PyTorch-only environment holds. Returns its path."""
    import sysconfig

    packages = sysconfig.get_paths()["purelib"]
    folder = tmp_path / "packages"
    folder.mkdir()
    for name in os.listdir(packages):
        stem = name.split("-")[0].split(".")[0].lower()
        if stem in JAX_PACKAGES or stem.startswith(("jax", "flax", "orbax", "w2s_vqa", "__editable__")) \
                or name.endswith(".pth"):
            continue
        os.symlink(os.path.join(packages, name), folder / name)
    return str(folder)


def test_the_wheel_lists_no_jax_package_and_holds_its_modules(wheel_site):
    site = wheel_site
    (info,) = [d for d in os.listdir(site) if d.endswith(".dist-info")]
    assert info.startswith("w2s_vqa_torch-")
    with open(os.path.join(site, info, "METADATA")) as f:
        requires = [line.split(":", 1)[1].strip() for line in f if line.startswith("Requires-Dist:")]
    names = {r.split("=")[0].split(">")[0].split("<")[0].strip().lower().replace("-", "_") for r in requires}
    assert {"torch", "transformers", "av", "scipy"} <= names
    assert not names & {p.lower() for p in JAX_PACKAGES} and "orbax_checkpoint" not in names
    modules = runpy.run_path(SETUP, run_name="torch_scorer_setup")["MODULES"]
    for module in modules:
        assert os.path.isfile(os.path.join(site, *module.split(".")) + ".py"), module
    assert not os.path.exists(os.path.join(site, "w2s_vqa", "sharding.py"))  # the JAX side stays out


def test_torch_scorer_scores_from_the_wheel_alone_without_jax(tmp_path, wheel_site):
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models import student as student_lib

    site = wheel_site
    model = student_lib.create(model_config.preset("tiny"), seed=5)
    hf.save_student(model, str(tmp_path / "export"), tokenizer_dir=model_config.TINY_TOKENIZER)
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height, seconds) in enumerate([(64, 48, 2), (64, 48, 2), (64, 48, 2), (80, 60, 3), (48, 48, 1)]):
        frames = rng.integers(0, 256, (8 * seconds, height, width, 3)).astype(np.uint8)
        paths.append(str(tmp_path / "clips" / f"c{i}.mp4"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        video.write_video(paths[-1], frames, 8.0)
    broken = tmp_path / "clips" / "broken.mp4"
    broken.write_bytes(b"not a video")
    from PIL import Image

    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "clips" / "thumb.jpg")

    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, _environment(tmp_path)])}
    subprocess.run([sys.executable, "-S", "-c", SCRIPT, site, ",".join(JAX_PACKAGES), str(tmp_path / "export"),
                    str(tmp_path / "anchors"), str(out), *paths, str(tmp_path / "clips" / "thumb.jpg"), str(broken)],
                   check=True, env=env, cwd=str(tmp_path), timeout=600)
    result = json.loads(out.read_text())
    assert result["loaded"] == [] and result["outside"] == []
    assert result["ids"] == ["c3", "c4"] and result["skipped"] == ["thumb", "broken"]  # a still image by default
    assert result["kinds"] == ["video", "video"]
    # Scores on the MOS scale of the anchors (30 to 70), extended by at most the anchors' span.
    assert all(np.isfinite(s) and -10.0 < s < 110.0 for s in result["scores"])
    assert result["frames"] == [4, 32, 32, 3]  # the tiny student's 4 frames of 32 px
