#!/usr/bin/env bash
# A multi-host TPU VM run: the same command on every worker of the slice; each
# process calls jax.distributed.initialize() from the TPU environment
# (distributed.auto=True) and feeds its own slice of every global batch.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--set key=value ...]
# WORKDIR must be a file system path every worker sees (e.g. a gcsfuse mount of a
# bucket): checkpoints, with the data stream's position, go there.
set -euo pipefail
dry=""
if [[ "${1:-}" == "--dry-run" ]]; then dry=echo; shift; fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--set key=value ...]" >&2; exit 2
fi
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
remote="cd ~/w2s-vqa && .venv/bin/w2s-vqa train --config $config --workdir $workdir --set distributed.auto=True"
for arg in "$@"; do remote+=" $(printf '%q' "$arg")"; done
$dry gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote"
