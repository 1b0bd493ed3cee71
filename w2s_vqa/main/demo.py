"""`w2s-vqa demo` (what `make demo` runs): the whole job on the tiny default, end to end."""

from __future__ import annotations

from w2s_vqa.main.common import add_config_arguments, json_line, load_config, non_negative_int


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", default="demo_out", help="where the pool, the run and the export go")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="processes that prepare the video store")
    parser.add_argument("--sources", type=int, default=None, help="use this many demo sources (default: all 103)")
    parser.add_argument("--stages", type=int, default=None, metavar="N",
                        help="weak-to-strong stages (default: stages.num_stages, 2 on the tiny default)")


def run(args) -> int:
    from w2s_vqa.demo import run as demo_run

    config = load_config(args)
    stages = int(config.stages.num_stages if args.stages is None else args.stages)
    summary = demo_run.run_demo(config, args.out, workers=args.workers, num_sources=args.sources, num_stages=stages)
    print(demo_run.format_summary(summary))
    print(json_line(summary))
    return int(summary.get("exit_status", 0))
