#!/usr/bin/env bash
# prepare on Google Cloud Dataflow: the store as an Apache Beam pipeline (w2s_vqa.store.beam),
# the same store the local `w2s-vqa prepare` writes; rerun the same command to resume.
#   launch/beam_dataflow.sh [--dry-run] PROJECT REGION INPUTS OUT [--set key=value ...] [--beam-option KEY=VALUE ...]
# OUT is a gs:// folder; Beam's staging and temporary files go to OUT-beam-tmp. INPUTS (a
# manifest, its videos and motion files) must be readable at the same paths on every worker.
# Needs apache-beam[gcp] here (pip install 'apache-beam[gcp]==2.77.0'). Workers install this
# repository from its setup.py; for a large pool, build a worker image once instead and add
# --beam-option sdk_container_image=IMAGE. Scale with e.g. --beam-option max_num_workers=500.
#
# Flink or Spark: the same verb with that runner (inputs and store on a file system every
# worker mounts; the SDK workers need this package: setup_file or an image as above):
#   w2s-vqa prepare --inputs /shared/pool.csv --out /shared/store --runner FlinkRunner \
#     --beam-option flink_master=HOST:8081 --beam-option parallelism=64 \
#     --beam-option environment_type=DOCKER --beam-option sdk_container_image=IMAGE
#   w2s-vqa prepare --inputs /shared/pool.csv --out /shared/store --runner SparkRunner \
#     --beam-option spark_master_url=spark://HOST:7077 \
#     --beam-option environment_type=DOCKER --beam-option sdk_container_image=IMAGE
set -euo pipefail
dry=""
if [[ "${1:-}" == "--dry-run" ]]; then dry=echo; shift; fi
if [[ $# -lt 4 ]]; then
  echo "usage: $0 [--dry-run] PROJECT REGION INPUTS OUT [--set key=value ...] [--beam-option KEY=VALUE ...]" >&2
  exit 2
fi
project=$1; region=$2; inputs=$3; out=${4%/}; shift 4
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
$dry w2s-vqa prepare --inputs "$inputs" --out "$out" --runner DataflowRunner \
  --beam-option "project=$project" --beam-option "region=$region" \
  --beam-option "temp_location=$out-beam-tmp" --beam-option "setup_file=$repo/setup.py" "$@"
