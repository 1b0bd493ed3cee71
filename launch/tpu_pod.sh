#!/usr/bin/env bash
# Any verb on every worker of a TPU VM slice (w2s_vqa/launch.py, `tpu` route): packs this
# checkout, copies it to each worker, installs it there with requirements.lock as
# constraints, runs `w2s-vqa VERB ARGS --set distributed.auto=True` on all workers at once,
# one log per worker under logs/TPU_NAME/<time>/ (here, on this machine).
#   launch/tpu_pod.sh [--dry-run] [--accelerator-type v5p-64] [--no-install] [--env K=V] \
#       TPU_NAME ZONE VERB [ARGS...]
# e.g. launch/tpu_pod.sh my-v5p us-east5-a train --config configs/w2s_llava_ov_7b.py:tpu \
#          --workdir gs://BUCKET/runs/w2s-7b --set data.store=/mnt/store ...
# Give the run's --workdir as a gs:// URL: every worker writes the same checkpoints there,
# and the same command run again (after a preemption, on a new slice) resumes from it.
# Only the Python standard library runs here: the package need not be installed locally.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m w2s_vqa.launch tpu "$@"
