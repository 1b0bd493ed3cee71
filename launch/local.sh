#!/usr/bin/env bash
# One host, all its devices: w2s-vqa train with the given config.
#   launch/local.sh [--dry-run] CONFIG WORKDIR [--set key=value ...]
set -euo pipefail
dry=""
if [[ "${1:-}" == "--dry-run" ]]; then dry=echo; shift; fi
if [[ $# -lt 2 ]]; then echo "usage: $0 [--dry-run] CONFIG WORKDIR [--set key=value ...]" >&2; exit 2; fi
config=$1; workdir=$2; shift 2
$dry w2s-vqa train --config "$config" --workdir "$workdir" "$@"
