"""Config files, overrides and launch scripts: what a user edits and runs."""

import os
import subprocess

import numpy as np
import pytest

from w2s_vqa.config import ConfigError, load_config
from w2s_vqa.models import student
from w2s_vqa.train import loop, optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo(path: str) -> str:
    return os.path.join(REPO, path)


def test_the_7b_config_is_the_papers_regime():
    config = load_config(repo("configs/w2s_llava_ov_7b.py") + ":gpu")
    cfg = loop.student_config(config)
    codec = loop.ParamCodec(student.create_abstract(cfg))
    assert 7.9e9 < sum(int(np.prod(s)) for s in codec.shapes.values()) < 8.2e9
    oc = loop.optim_config(config)
    rates = optim.group_rates(oc)
    by_rate = {}
    for key in codec.keys:
        by_rate.setdefault(rates[optim.group_of(key, oc.groups)], set()).add(key.split(".")[0])
    assert by_rate == {0.0: {"language_model", "lm_head"}, 2e-6: {"vision_tower"},
                       1e-5: {"multi_modal_projector", "motion_projector", "image_newline"}}
    assert cfg.tokens_per_video == 8 * 14 * 14 + 1 + 10
    assert tuple(load_config(repo("configs/w2s_llava_ov_7b.py") + ":tpu").mesh.shape) == (-1, 8, 1)


def test_every_config_file_builds_its_student_shapes():
    for path in ["configs/tiny_cpu.py", "configs/llava_ov_0_5b.py", "configs/w2s_llava_ov_7b.py"]:
        config = load_config(repo(path))
        assert loop.student_config(config).vision.image_size == config.data.image_size


def test_overrides_are_typed_and_bad_ones_all_reported():
    config = load_config(None, ["train.num_steps=7", "optim.learning_rate=1", "data.store=/x"])
    assert config.train.num_steps == 7 and config.optim.learning_rate == 1.0 and config.data.store == "/x"
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.nope=1", "model", "data.num_frames=1"])
    assert "'train.nope': no such config key" in str(error.value) and "'model': expected key=value" in str(error.value)


@pytest.mark.parametrize("script,args,expected", [
    ("launch/local.sh", ["configs/tiny_cpu.py", "runs/t"], "w2s-vqa train --config configs/tiny_cpu.py --workdir runs/t"),
    ("launch/tpu_pod.sh", ["v5p-64", "us-east5-a", "configs/w2s_llava_ov_7b.py:tpu", "/mnt/run", "--set", "data.store=/s"],
     "tpu-vm ssh v5p-64 --zone us-east5-a --worker=all --command cd ~/w2s-vqa && .venv/bin/w2s-vqa train "
     "--config configs/w2s_llava_ov_7b.py:tpu --workdir /mnt/run --set distributed.auto=True --set data.store=/s"),
    ("launch/gpu_slurm.sh", ["2", "configs/w2s_llava_ov_7b.py:gpu", "/shared/run"],
     "sbatch --nodes 2 --ntasks-per-node 1 --gpus-per-node 8"),
])
def test_launch_scripts_dry_run(script, args, expected):
    out = subprocess.run(["bash", repo(script), "--dry-run", *args], capture_output=True, text=True,
                         check=True).stdout
    assert expected in out
    usage = subprocess.run(["bash", repo(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
