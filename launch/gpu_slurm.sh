#!/usr/bin/env bash
# A multi-node GPU run under SLURM: one process per node, each driving its 8 GPUs;
# jax.distributed.initialize() reads the SLURM environment (distributed.auto=True).
#   launch/gpu_slurm.sh [--dry-run] NODES CONFIG WORKDIR [--set key=value ...]
# Submits itself with sbatch; WORKDIR must be on a file system every node sees.
set -euo pipefail
dry=""
if [[ "${1:-}" == "--dry-run" ]]; then dry=echo; shift; fi
if [[ $# -lt 3 ]]; then echo "usage: $0 [--dry-run] NODES CONFIG WORKDIR [--set key=value ...]" >&2; exit 2; fi
nodes=$1; config=$2; workdir=$3; shift 3
train=(w2s-vqa train --config "$config" --workdir "$workdir" --set distributed.auto=True "$@")
$dry sbatch --nodes "$nodes" --ntasks-per-node 1 --gpus-per-node 8 --job-name w2s-vqa \
  --output "$workdir/slurm-%j.out" --wrap "srun $(printf '%q ' "${train[@]}")"
