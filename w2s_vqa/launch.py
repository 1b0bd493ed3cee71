"""Start any verb on every host of a TPU slice: over ssh (`tpu`) or as a GKE JobSet (`gke`).

    python -m w2s_vqa.launch tpu [--dry-run] [--accelerator-type v5p-64] TPU_NAME ZONE VERB [ARGS...]
    python -m w2s_vqa.launch gke --accelerator-type v5p-64 --image IMAGE [--xpk CLUSTER] NAME VERB [ARGS...]

`tpu` (launch/tpu_pod.sh) packs this checkout (the files git tracks, and untracked ones it
does not ignore), copies it to every worker of the TPU VM slice, installs it there into a
Python 3.11 virtual environment with the repository's requirements.lock as constraints (uv
fetches Python 3.11 where the image has another), then runs `w2s-vqa VERB ARGS --set
distributed.auto=True` on every worker at once (jax.distributed.initialize reads the slice
from the TPU environment), each worker's output in its own log file here; a verb that is
not one job over hosts (export, prepare, plan...) runs on worker 0 alone. `--dry-run`
prints every command, one per worker, instead of running them. Running the same command
again after a preemption resumes the run: checkpoints live in the run's --workdir (a gs://
URL every host and the next slice see), compiled programs in runtime.compilation_cache_dir.

`gke` writes a JobSet manifest (one Job of one pod per host, Indexed, restarted as a whole
on failure, which resumes from the workdir) for an image holding the package (launch/
Dockerfile), or with `--xpk CLUSTER` prints the `xpk workload create` line that does the same.

Only the standard library: this runs on the user's machine, where the package may not be
installed (launch/tpu_pod.sh puts the checkout on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTED = "distributed.auto=True"
# The verbs that run as one job over every host's processes (they call jax.distributed.initialize).
# Any other verb runs on worker 0 alone, as is: on every host it would write its outputs N times.
MULTI_HOST_VERBS = ("train", "stages", "finetune", "score", "eval")
REMOTE_HOME = "~/w2s-vqa"  # on every worker: src/ (the checkout), .venv/ (its install)
ARCHIVE = "w2s-vqa-src.tar.gz"
EXTRAS = "tpu,gcs"  # libtpu paired with jax; gcsfs for gs:// paths through etils.epath
UV = "uv==0.13.9"  # the Makefile's lock tool: makes the venv, fetching Python 3.11 if absent

# Accelerator type -> (TPU generation's GKE node label, what its size counts, chips per host).
# The size counts TensorCores on v2-v5p (two per chip from v4, one chip per host of 4 on
# v4/v5p, 8 cores per host on v2/v3) and chips on v5e/v6e (8 on a single host, 4 per host beyond).
_GENERATIONS = {
    "v2": ("", "cores", 4), "v3": ("", "cores", 4),
    "v4": ("tpu-v4-podslice", "cores", 4), "v5p": ("tpu-v5p-slice", "cores", 4),
    "v5litepod": ("tpu-v5-lite-podslice", "chips", 4), "v5e": ("tpu-v5-lite-podslice", "chips", 4),
    "v6e": ("tpu-v6e-slice", "chips", 4),
}


class Slice:
    """A TPU slice's shape from its accelerator type (e.g. "v5p-64"): chips, hosts, chips
    per host, GKE's node label and topology ("2x4x4"). Raises ValueError for a type it
    does not know."""

    def __init__(self, accelerator_type: str):
        generation, _, size = accelerator_type.rpartition("-")
        if generation not in _GENERATIONS or not size.isdigit() or int(size) < 1:
            raise ValueError(f"--accelerator-type {accelerator_type!r}: expected one of "
                             f"{', '.join(f'{g}-N' for g in _GENERATIONS)} (e.g. v5p-64, v6e-16)")
        self.accelerator_type, self.generation = accelerator_type, generation
        self.gke_accelerator, counts, per_host = _GENERATIONS[generation]
        size = int(size)
        if counts == "cores":
            self.chips = size // 2
            self.chips_per_host = min(per_host, self.chips)
        else:
            self.chips = size
            self.chips_per_host = size if size <= 8 else per_host
        self.hosts = max(1, self.chips // self.chips_per_host)

    @property
    def topology(self) -> str:
        """GKE's cloud.google.com/gke-tpu-topology: 3D on v4/v5p, 2D on v5e/v6e; each step
        doubles the last of the smallest sides ([2,2,2] -> [2,2,4] -> [2,4,4] -> [4,4,4])."""
        sides = [2, 2, 1] if self.generation in ("v4", "v5p", "v2", "v3") else [1, 1]
        while _product(sides) < self.chips:
            smallest = min(sides)
            last = max(i for i, s in enumerate(sides) if s == smallest)
            sides[last] *= 2
        return "x".join(map(str, sides))


def _product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def verb_command(verb: str, args: list[str], env: list[str] = (), *, executable: str = "w2s-vqa") -> str:
    """The shell line that runs `w2s-vqa VERB ARGS --set distributed.auto=True` (quoted; the
    --set only for MULTI_HOST_VERBS)."""
    distributed = ["--set", DISTRIBUTED] if verb in MULTI_HOST_VERBS else []
    words = [*(["env", *env] if env else []), executable, verb, *args, *distributed]
    return " ".join(shlex.quote(w) if not w.startswith(REMOTE_HOME) else w for w in words)


# ----------------------------------------------------------------------------- TPU VMs over ssh
def pack_command(archive: str) -> str:
    """Shell: the checkout's files (tracked, and untracked but not ignored) into `archive`."""
    return (f"git -C {shlex.quote(REPO)} ls-files -co --exclude-standard -z | "
            f"tar -czf {shlex.quote(archive)} -C {shlex.quote(REPO)} --null -T -")


def install_script() -> str:
    """Shell run on each worker: unpack the checkout over a fresh src/, install it with
    requirements.lock as constraints into .venv (kept between launches, so a relaunch only
    reinstalls the package)."""
    return " && ".join([
        f"mkdir -p {REMOTE_HOME}",
        f"rm -rf {REMOTE_HOME}/src",
        f"mkdir {REMOTE_HOME}/src",
        f"tar -xzf ~/{ARCHIVE} -C {REMOTE_HOME}/src",
        # pip 23.0+ on Debian/Ubuntu 24.04 refuses --user installs without --break-system-packages,
        # which older pips do not know: try both.
        f"(test -x ~/.local/bin/uv || python3 -m pip install --user -q {UV} "
        f"|| python3 -m pip install --user -q --break-system-packages {UV})",
        f"(test -x {REMOTE_HOME}/.venv/bin/python || ~/.local/bin/uv venv -q --python 3.11 {REMOTE_HOME}/.venv)",
        f"~/.local/bin/uv pip install -q --python {REMOTE_HOME}/.venv/bin/python "
        f"-c {REMOTE_HOME}/src/requirements.lock {REMOTE_HOME}/src'[{EXTRAS}]'",  # ~ outside the quotes
    ])


def tpu_commands(args) -> tuple[list[list[str]], list[tuple[list[str], str]]]:
    """(commands run first, in order; [(per-worker command, its log file)], run at once)."""
    gcloud = ["gcloud", "compute", "tpus", "tpu-vm"]
    where = ["--zone", args.zone, *(["--project", args.project] if args.project else [])]
    archive = os.path.join(args.logs, ARCHIVE)
    first, workers = [], []
    if not args.no_install:
        first.append(["bash", "-c", pack_command(archive)])
        first += [[*gcloud, "scp", archive, f"{args.tpu}:~/{ARCHIVE}", *where, f"--worker={i}"]
                  for i in range(args.workers)]
    run = f"cd {REMOTE_HOME}/src && " + verb_command(args.verb, args.args, args.env,
                                                       executable=f"{REMOTE_HOME}/.venv/bin/w2s-vqa")
    remote = run if args.no_install else f"{install_script()} && {run}"
    for i in range(args.workers if args.verb in MULTI_HOST_VERBS else 1):
        workers.append(([*gcloud, "ssh", args.tpu, *where, f"--worker={i}", "--command", remote],
                        os.path.join(args.logs, f"worker-{i}.log")))
    return first, workers


def slice_workers(args) -> int:
    """--workers, else the hosts of --accelerator-type, else of the TPU as gcloud describes it."""
    if args.workers:
        return args.workers
    accelerator = args.accelerator_type
    if not accelerator:
        if args.dry_run:
            raise ValueError("--dry-run needs --accelerator-type (e.g. v5p-64) or --workers N: it asks gcloud nothing")
        where = ["--zone", args.zone, *(["--project", args.project] if args.project else [])]
        accelerator = subprocess.run(["gcloud", "compute", "tpus", "tpu-vm", "describe", args.tpu, *where,
                                      "--format=value(acceleratorType)"], check=True, capture_output=True,
                                     text=True).stdout.strip().rsplit("/", 1)[-1]
    return Slice(accelerator).hosts


def run_tpu(args) -> int:
    args.workers = slice_workers(args)
    args.logs = args.logs or os.path.join(
        "logs", args.tpu, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S"))
    first, workers = tpu_commands(args)
    if args.dry_run:
        for command in first:
            print(shlex.join(command))
        for command, log in workers:
            print(f"{shlex.join(command)} > {shlex.quote(log)} 2>&1 &")
        print("wait")
        return 0
    os.makedirs(args.logs, exist_ok=True)
    for command in first:
        print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
    procs = []
    for command, log in workers:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    print(f"w2s-vqa launch: {args.verb} on {len(procs)} workers of {args.tpu}; logs in {args.logs}/worker-*.log",
          flush=True)
    codes = [p.wait() for p in procs]
    failed = [i for i, c in enumerate(codes) if c]
    for i in failed:
        print(f"worker {i} exited with {codes[i]}: {workers[i][1]}", file=sys.stderr)
    print(f"w2s-vqa launch: {len(codes) - len(failed)} of {len(codes)} workers finished; logs in {args.logs}")
    return max(codes, default=0)


# ----------------------------------------------------------------------------- GKE
def jobset_manifest(name: str, tpu: Slice, image: str, verb: str, args: list[str], env: list[str] = (),
                    max_restarts: int = 4) -> str:
    """A JobSet (jobset.x-k8s.io/v1alpha2) running the verb on every host of one slice: an
    Indexed Job of `tpu.hosts` pods, each with the host's chips; GKE sets the TPU worker
    environment jax.distributed.initialize reads. The JobSet restarts all pods together
    (up to max_restarts times) when one fails, so a preempted run resumes from its workdir.
    Returned as YAML text (JSON is YAML: every value is written as a JSON string)."""
    import json

    command = verb_command(verb, args, env)
    container = {
        "name": "w2s-vqa", "image": image, "command": ["bash", "-c", command],
        "ports": [{"containerPort": 8471}, {"containerPort": 8080}],  # TPU runtime, JAX coordinator
        "securityContext": {"privileged": True},
        "resources": {"limits": {"google.com/tpu": tpu.chips_per_host}},
    }
    manifest = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": name, "annotations": {
            "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}},
        "spec": {"failurePolicy": {"maxRestarts": max_restarts}, "replicatedJobs": [{
            "name": "slice", "replicas": 1, "template": {"spec": {
                "parallelism": tpu.hosts, "completions": tpu.hosts, "backoffLimit": 0,
                "completionMode": "Indexed",
                "template": {"spec": {
                    "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet", "restartPolicy": "Never",
                    "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": tpu.gke_accelerator,
                                     "cloud.google.com/gke-tpu-topology": tpu.topology},
                    "containers": [container]}}}}}]},
    }
    return json.dumps(manifest, indent=2) + "\n"


def xpk_command(cluster: str, name: str, tpu: Slice, image: str, verb: str, args: list[str],
                env: list[str] = (), max_restarts: int = 4) -> list[str]:
    """`xpk workload create` for the same run (xpk makes the JobSet itself)."""
    return ["xpk", "workload", "create", "--cluster", cluster, "--workload", name,
            "--tpu-type", tpu.accelerator_type, "--num-slices", "1", "--docker-image", image,
            "--max-restarts", str(max_restarts), "--command", verb_command(verb, args, env)]


def run_gke(args) -> int:
    tpu = Slice(args.accelerator_type)
    if not tpu.gke_accelerator:
        raise ValueError(f"--accelerator-type {args.accelerator_type}: GKE offers v4, v5e, v5p and v6e slices")
    if args.verb not in MULTI_HOST_VERBS:
        raise ValueError(f"{args.verb} runs on one host, not a slice: GKE runs {', '.join(MULTI_HOST_VERBS)}")
    if args.xpk:
        print(shlex.join(xpk_command(args.xpk, args.name, tpu, args.image, args.verb, args.args, args.env,
                                     args.max_restarts)))
        return 0
    text = jobset_manifest(args.name, tpu, args.image, args.verb, args.args, args.env, args.max_restarts)
    if args.out in ("", "-"):
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"JobSet for {tpu.hosts} hosts of {tpu.accelerator_type} written to {args.out}; start it with:\n"
              f"  kubectl apply -f {shlex.quote(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_vqa.launch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="route", required=True)
    tpu = sub.add_parser("tpu", help="TPU VMs over gcloud ssh: copy, install, run on every worker")
    tpu.add_argument("--dry-run", action="store_true", help="print every command instead of running it")
    tpu.add_argument("--accelerator-type", default="", help="e.g. v5p-64: the worker count without asking gcloud")
    tpu.add_argument("--workers", type=int, default=0, help="the worker count (default: from the accelerator type)")
    tpu.add_argument("--project", default="", help="gcloud --project (default: gcloud's)")
    tpu.add_argument("--logs", default="", help="local folder for worker-<i>.log (default logs/TPU_NAME/<UTC time>)")
    tpu.add_argument("--no-install", action="store_true",
                     help="run the installed checkout as it is (skip copying and installing)")
    gke = sub.add_parser("gke", help="a GKE JobSet manifest, or with --xpk the xpk command line")
    gke.add_argument("--accelerator-type", required=True, help="e.g. v5p-64")
    gke.add_argument("--image", required=True, help="a container image with the package installed (launch/Dockerfile)")
    gke.add_argument("--xpk", default="", metavar="CLUSTER", help="print `xpk workload create` for this cluster")
    gke.add_argument("--out", default="-", help="manifest file (default: standard output)")
    gke.add_argument("--max-restarts", type=int, default=4, help="restarts of the whole slice after a failure")
    for p in (tpu, gke):
        p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                       help="environment for the verb on every host, e.g. HF_TOKEN=... (repeatable)")
    tpu.add_argument("tpu", metavar="TPU_NAME")
    tpu.add_argument("zone", metavar="ZONE")
    gke.add_argument("name", metavar="NAME", help="the JobSet's (workload's) name")
    for p in (tpu, gke):
        p.add_argument("verb", metavar="VERB", help="any w2s-vqa verb: train, stages, finetune, score, eval, ...")
        p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the verb's arguments")
    args = parser.parse_args(argv)
    for item in args.env:
        if "=" not in item:
            parser.error(f"--env {item!r}: expected KEY=VALUE")
    try:
        return run_tpu(args) if args.route == "tpu" else run_gke(args)
    except (ValueError, subprocess.CalledProcessError) as e:
        print(f"w2s-vqa launch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
