"""Hugging Face hub ids (w2s_vqa.hub) against a pre-filled cache, offline (HF_HUB_OFFLINE=1):
no network. The cache is laid out as huggingface_hub writes it (blobs/, snapshots/<commit>/
links, refs/<branch>), and huggingface_hub's own scan_cache_dir must read it back."""

import fnmatch
import hashlib
import os
import subprocess
import sys

import pytest

from w2s_vqa import cli, hub

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ID = "w2s-test/tiny-student"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a commit hash: 40 hex digits, as the hub's


def fill_cache(hf_home, repo_id, commit, source_dir, branch="main"):
    """Put `source_dir`'s files into the hub cache under HF_HOME as huggingface_hub lays it out
    (docs: "Understand caching"): models--org--name/blobs/<sha256>, snapshots/<commit>/<file>
    as relative links to the blobs, refs/<branch> holding the commit."""
    from huggingface_hub.file_download import repo_folder_name

    storage = os.path.join(hf_home, "hub", repo_folder_name(repo_id=repo_id, repo_type="model"))
    snapshot = os.path.join(storage, "snapshots", commit)
    os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(storage, "refs"), exist_ok=True)
    for name in sorted(os.listdir(source_dir)):
        data = open(os.path.join(source_dir, name), "rb").read()
        blob = hashlib.sha256(data).hexdigest()
        with open(os.path.join(storage, "blobs", blob), "wb") as f:
            f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snapshot, name))
    with open(os.path.join(storage, "refs", branch), "w") as f:
        f.write(commit)
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """HF_HOME holding REPO_ID at COMMIT (branch main): the tiny preset's export."""
    root = tmp_path_factory.mktemp("hub")
    export = root / "export"
    assert cli.main(["export", "--preset", "tiny", "--out", str(export)]) == 0
    snapshot = fill_cache(str(root / "hf_home"), REPO_ID, COMMIT, str(export))
    return root / "hf_home", export, snapshot


def run_offline(hf_home, *args):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "w2s_vqa.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_cache_reads_back_through_huggingface_hub(hub_cache):
    from huggingface_hub import scan_cache_dir

    hf_home, export, _ = hub_cache
    info = scan_cache_dir(str(hf_home / "hub"))
    assert not info.warnings, info.warnings
    (repo,) = [r for r in info.repos if r.repo_id == REPO_ID]
    (revision,) = repo.revisions
    assert revision.commit_hash == COMMIT and revision.refs == frozenset({"main"})
    assert sorted(f.file_name for f in revision.files) == sorted(os.listdir(export))


def test_allow_patterns_take_every_file_an_export_holds_and_nothing_else():
    from w2s_vqa.convert import export_files, hf

    wanted = [hf.CONFIG_FILE, hf.WEIGHTS_FILE, export_files.WEIGHTS_INDEX, hf.MOTION_FILE, hf.SETTINGS_FILE,
              "model-00001-of-00004.safetensors", *hf.TOKENIZER_FILES, *export_files.PROCESSOR_FILES]
    for name in wanted:
        assert any(fnmatch.fnmatch(name, p) for p in hub.ALLOW_PATTERNS), name
    for name in ("pytorch_model.bin", "model.onnx", "consolidated.pth", "README.md", "image.png"):
        assert not any(fnmatch.fnmatch(name, p) for p in hub.ALLOW_PATTERNS), name


def test_hub_ids_and_paths_are_told_apart(tmp_path):
    assert hub.parse_hub_id("llava-hf/llava-onevision-qwen2-7b-ov-hf") == ("llava-hf/llava-onevision-qwen2-7b-ov-hf",
                                                                          None)
    assert hub.parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub.parse_hub_id(str(tmp_path / "org" / "name")) is None  # absolute, and it exists
    for value in ("", "gs://bucket/tiny_hf", "./org/name", "~/org/name", "just_a_folder", "a/b/c"):
        assert hub.parse_hub_id(value) is None, value
    assert hub.resolve(str(tmp_path / "org" / "name")) == str(tmp_path / "org" / "name")


def test_export_takes_a_hub_id_from_the_cache_offline(hub_cache, tmp_path):
    hf_home, export, snapshot = hub_cache
    for hub_id in (REPO_ID, f"{REPO_ID}@{COMMIT}", f"{REPO_ID}@main"):
        out = tmp_path / hub_id.replace("/", "_").replace("@", "_")
        done = run_offline(hf_home, "export", "--hf", hub_id, "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        assert (out / "model.safetensors").read_bytes() == (export / "model.safetensors").read_bytes()
        assert sorted(os.listdir(out)) == sorted(os.listdir(export))


def test_the_verbs_config_takes_model_hf_dir_as_a_hub_id(hub_cache, monkeypatch):
    """train, stages and finetune resolve model.hf_dir and model.tokenizer at their entry
    (main.common.resolve_model_dirs): the trainer then reads the snapshot directory."""
    from huggingface_hub import constants

    from w2s_vqa.config import load_config
    from w2s_vqa.main import common

    hf_home, _, snapshot = hub_cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))  # what HF_HOME set at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = load_config(None, [f"model.hf_dir='{REPO_ID}@{COMMIT}'", f"model.tokenizer='{REPO_ID}'"])
    common.resolve_model_dirs(config)
    assert os.path.samefile(config.model.hf_dir, snapshot) and os.path.samefile(config.model.tokenizer, snapshot)
    config = load_config(None, ["model.hf_dir='w2s-test/absent@v2'"])
    with pytest.raises(ValueError, match="model.hf_dir: .*w2s-test/absent@v2"):
        common.resolve_model_dirs(config)


def test_a_missing_repo_is_one_line_naming_it(hub_cache, tmp_path):
    hf_home, _, _ = hub_cache
    done = run_offline(hf_home, "export", "--hf", "w2s-test/absent", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "w2s-test/absent" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
