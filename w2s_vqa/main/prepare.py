"""`w2s-vqa prepare --inputs PATH --out DIR`: build (or resume) a video store."""

from __future__ import annotations

import os
import sys

from w2s_vqa.main.common import add_config_arguments, load_config


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--inputs", required=True, metavar="PATH",
                        help="folder of videos (searched recursively) or a CSV/JSONL manifest with a 'path' "
                             "column and optional 'id', 'source_id', 'motion' (.npy [chunks, motion_dim])")
    parser.add_argument("--out", required=True, metavar="DIR", help="store directory; rerun to resume a killed run")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes, one shard each at a time (default: all CPUs; 0 or 1: this process)")


def run(args) -> int:
    from w2s_vqa.store.format import ERRORS_FILE, INDEX_FILE, StoreError
    from w2s_vqa.store.prepare import prepare

    config = load_config(args)
    report = prepare(config, args.inputs, args.out, workers=args.workers)
    out = os.path.abspath(args.out)
    print(report.summary())
    print(f"store: {out}")
    print(f"index: {os.path.join(out, INDEX_FILE)}")
    print(f"skipped videos: {os.path.join(out, ERRORS_FILE)}")
    if report.records == 0:
        raise StoreError(f"{out}: no video could be written; see {ERRORS_FILE}")
    return 0
