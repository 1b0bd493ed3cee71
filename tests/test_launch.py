"""Launchers, by their dry runs (no cloud reached): every worker of a v5p-64 (8 hosts) gets the
checkout, the install with requirements.lock and the verb with distributed.auto=True, each
with its own log; the GKE JobSet manifest parses as YAML with the slice's shape; SLURM runs
any verb."""

import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from w2s_vqa import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run_tpu(*args):
    done = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_pod.sh"), "--dry-run", *args],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("kind,hosts,chips,per_host,topology", [
    ("v5p-64", 8, 32, 4, "2x4x4"), ("v5p-8", 1, 4, 4, "2x2x1"), ("v4-32", 4, 16, 4, "2x2x4"),
    ("v5p-1024", 128, 512, 4, "8x8x8"), ("v5litepod-16", 4, 16, 4, "4x4"), ("v6e-8", 1, 8, 8, "2x4"),
    ("v6e-256", 64, 256, 4, "16x16"), ("v3-32", 4, 16, 4, "2x2x4"),
])
def test_slice_shapes_are_gcloud_and_gke_s(kind, hosts, chips, per_host, topology):
    """Hosts and topologies as Cloud TPU's and GKE's documentation list them."""
    tpu = launch.Slice(kind)
    assert (tpu.hosts, tpu.chips, tpu.chips_per_host) == (hosts, chips, per_host)
    if tpu.gke_accelerator:
        assert tpu.topology == topology


def test_the_v5p_64_dry_run_names_every_worker_the_install_the_verb_and_distributed_auto(tmp_path):
    logs = str(tmp_path / "logs")
    lines = dry_run_tpu("--accelerator-type", "v5p-64", "--logs", logs, "--env", "HF_TOKEN=secret",
                        "my-v5p", "us-east5-a", "stages", "--config", "configs/w2s_llava_ov_7b.py:tpu",
                        "--workdir", "gs://bucket/runs/w2s", "--set", "model.hf_dir='llava-hf/m@v1'")
    assert lines[0].startswith("bash -c 'git -C") and "ls-files -co --exclude-standard" in lines[0]
    archive = f"{logs}/{launch.ARCHIVE}"
    scp = [line for line in lines if " scp " in line]
    ssh = [line for line in lines if " ssh " in line]
    assert [re.search(r"--worker=(\d+)", line)[1] for line in scp] == [str(i) for i in range(8)]
    assert [re.search(r"--worker=(\d+)", line)[1] for line in ssh] == [str(i) for i in range(8)]
    assert all(archive in line and "my-v5p:~/" in line for line in scp)
    assert lines[-1] == "wait"
    logs_seen = []
    for i, line in enumerate(ssh):
        words = shlex.split(line)
        assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5p"]
        assert words[-4:] == [">", f"{logs}/worker-{i}.log", "2>&1", "&"]
        logs_seen.append(words[-3])
        remote = words[words.index("--command") + 1]
        install, run = remote.rsplit(" && cd ", 1)
        assert f"tar -xzf ~/{launch.ARCHIVE}" in install
        assert "uv pip install" in install and "-c ~/w2s-vqa/src/requirements.lock" in install
        assert "~/w2s-vqa/src'[tpu,gcs]'" in install
        run_words = shlex.split(run.split(" && ", 1)[1])
        assert run_words == ["env", "HF_TOKEN=secret", "~/w2s-vqa/.venv/bin/w2s-vqa", "stages", "--config",
                             "configs/w2s_llava_ov_7b.py:tpu", "--workdir", "gs://bucket/runs/w2s", "--set",
                             "model.hf_dir='llava-hf/m@v1'", "--set", "distributed.auto=True"]
        # The remote line is valid shell (bash parses it without running it).
        assert subprocess.run(["bash", "-n", "-c", remote]).returncode == 0
    assert len(set(logs_seen)) == 8


def test_a_single_host_verb_runs_on_worker_0_alone_and_no_install_skips_the_copy():
    lines = dry_run_tpu("--workers", "8", "--no-install", "--logs", "L", "my-v5p", "z", "export", "--preset", "tiny",
                        "--out", "gs://b/tiny_hf")
    assert lines == ["gcloud compute tpus tpu-vm ssh my-v5p --zone z --worker=0 --command 'cd ~/w2s-vqa/src && "
                     "~/w2s-vqa/.venv/bin/w2s-vqa export --preset tiny --out gs://b/tiny_hf' > L/worker-0.log 2>&1 &",
                     "wait"]


def test_the_dry_run_needs_the_slice_size_and_the_usage_is_one_line():
    done = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_pod.sh"), "--dry-run", "t", "z", "train"],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert done.returncode == 2 and "--accelerator-type" in done.stderr
    done = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_pod.sh")],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


def test_the_gke_jobset_manifest_has_the_slice_s_shape(tmp_path):
    out = tmp_path / "jobset.yaml"
    assert launch.main(["gke", "--accelerator-type", "v5p-64", "--image", "us-docker.pkg.dev/p/r/w2s-vqa:1",
                        "--out", str(out), "w2s-7b", "train", "--workdir", "gs://bucket/runs/w2s"]) == 0
    manifest = yaml.safe_load(out.read_text())
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
    assert manifest["metadata"]["name"] == "w2s-7b" and manifest["spec"]["failurePolicy"]["maxRestarts"] == 4
    (replicated,) = manifest["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 8 and job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                   "cloud.google.com/gke-tpu-topology": "2x4x4"}
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["google.com/tpu"] == 4
    assert shlex.split(container["command"][2]) == ["w2s-vqa", "train", "--workdir", "gs://bucket/runs/w2s", "--set",
                                                    "distributed.auto=True"]


def test_the_xpk_line_names_the_slice_image_and_verb(capsys):
    assert launch.main(["gke", "--accelerator-type", "v5p-64", "--image", "img:1", "--xpk", "my-cluster", "w2s-7b",
                        "finetune", "--checkpoint", "gs://b/w2s"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[:3] == ["xpk", "workload", "create"]
    flags = dict(zip(words[3::2], words[4::2]))
    assert flags["--cluster"] == "my-cluster" and flags["--tpu-type"] == "v5p-64" and flags["--docker-image"] == "img:1"
    assert flags["--command"] == "w2s-vqa finetune --checkpoint gs://b/w2s --set distributed.auto=True"


def test_slurm_runs_any_verb_one_log_per_node():
    out = subprocess.run(["bash", os.path.join(REPO, "launch", "gpu_slurm.sh"), "--dry-run", "4", "score", "--hf",
                          "org/model", "--anchors", "/shared/anchors"], capture_output=True, text=True, check=True)
    sbatch = out.stdout.splitlines()[-1]
    assert sbatch.startswith("sbatch --nodes 4 --ntasks-per-node 1 --gpus-per-node 8")
    assert "srun --output logs/slurm-%j-node%n.log w2s-vqa score --hf org/model --anchors /shared/anchors " \
           "--set distributed.auto=True" in sbatch


def test_readme_s_pod_command_runs_as_written_in_a_dry_run():
    """README's "On a TPU pod" command, taken from README itself, with --dry-run added: every
    worker runs the verb with README's arguments (its gs:// work directory included) and
    distributed.auto=True."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## On a TPU pod", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[0] == "launch/tpu_pod.sh"
    lines = dry_run_tpu(*words[1:])
    verb_at = words.index("stages")
    ssh = [line for line in lines if " ssh " in line]
    assert len(ssh) == 8  # a v5p-64: 8 hosts
    for line in ssh:
        remote = shlex.split(line)
        remote = remote[remote.index("--command") + 1]
        run_words = shlex.split(remote.rsplit(" && cd ", 1)[1].split(" && ", 1)[1])
        assert run_words[run_words.index("stages"):] == [*words[verb_at:], "--set", "distributed.auto=True"]
        assert "gs://BUCKET/runs/w2s-7b" in run_words
