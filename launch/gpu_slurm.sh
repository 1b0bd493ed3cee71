#!/usr/bin/env bash
# Any verb on a multi-node GPU job under SLURM: one process per node, each driving its 8
# GPUs; jax.distributed.initialize() reads the SLURM environment (distributed.auto=True).
#   launch/gpu_slurm.sh [--dry-run] NODES VERB [ARGS...]
# e.g. launch/gpu_slurm.sh 2 train --config configs/w2s_llava_ov_7b.py:gpu --workdir /shared/run
# Submits itself with sbatch; the package must be installed on every node (w2s-vqa on PATH),
# the workdir on a file system every node sees (or gs://). One log per node:
# logs/slurm-<job>-node<N>.log in the submitting directory (a directory every node sees).
set -euo pipefail
dry=""
if [[ "${1:-}" == "--dry-run" ]]; then dry=echo; shift; fi
if [[ $# -lt 2 ]]; then echo "usage: $0 [--dry-run] NODES VERB [ARGS...]" >&2; exit 2; fi
nodes=$1; verb=$2; shift 2
run=(w2s-vqa "$verb" "$@")
case "$verb" in  # the verbs that run as one job over every node's processes
  train|stages|finetune|score|eval) run+=(--set distributed.auto=True) ;;
  *) nodes=1 ;;  # any other verb runs on one node: on every node it would write its outputs N times
esac
$dry mkdir -p logs
$dry sbatch --nodes "$nodes" --ntasks-per-node 1 --gpus-per-node 8 --job-name "w2s-vqa-$verb" \
  --output "logs/slurm-%j.out" --wrap "srun --output logs/slurm-%j-node%n.log $(printf '%q ' "${run[@]}")"
