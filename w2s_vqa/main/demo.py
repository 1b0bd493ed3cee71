"""`w2s-vqa demo` (what `make demo` runs): the whole job on the tiny default, end to end."""

from __future__ import annotations

import json

from w2s_vqa.main.common import add_config_arguments, load_config


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default="demo_out", help="where the pool, the run and the export go")
    parser.add_argument("--workers", type=int, default=2, help="processes that prepare the video store")
    parser.add_argument("--sources", type=int, default=None, help="use this many demo sources (default: all 103)")


def run(args) -> int:
    from w2s_vqa.demo import run as demo_run

    summary = demo_run.run_demo(load_config(args), args.out, workers=args.workers, num_sources=args.sources)
    print(demo_run.format_summary(summary))
    print(json.dumps(summary))
    return 0
