"""`w2s-vqa curate-metrics --inputs PATH --out DIR`: the nine curation metrics of every video.

PATH is a folder, a CSV/JSONL manifest or a video store; DIR receives metrics.parquet (one row
per video) and skipped.csv; a rerun resumes (w2s_vqa.curate.extract).
"""

from __future__ import annotations

import os

from w2s_vqa.main.common import (add_beam_arguments, add_config_arguments, beam_function, is_store, json_line,
                                 load_config, refuse_outputs_inside)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--inputs", required=True, metavar="PATH", help="folder, manifest or video store")
    parser.add_argument("--out", required=True, metavar="DIR", help="metrics.parquet and skipped.csv go here")
    add_beam_arguments(parser, "measure as an Apache Beam pipeline on this runner, as `prepare --runner` "
                               "(--out and the videos on a file system every worker mounts)")

def run(args) -> int:
    from w2s_vqa.curate.extract import SKIPPED_FILE, MetricSettings, compute_metrics

    config = load_config(args)
    if not is_store(args.inputs):  # a store is read by its index, not listed
        refuse_outputs_inside(args.inputs, {"--out": args.out})
    settings = MetricSettings(work_height=config.curate.work_height, max_seconds=config.curate.max_seconds or None)
    if args.runner is None:
        if args.beam_options:
            raise ValueError("--beam-option needs --runner")
        report = compute_metrics(args.inputs, args.out, settings=settings, workers=args.workers)
    else:
        compute_metrics_beam = beam_function("w2s_vqa.curate.beam", "compute_metrics_beam", args.runner)
        report = compute_metrics_beam(args.inputs, args.out, runner=args.runner, beam_options=args.beam_options,
                                      settings=settings, workers=args.workers)
    print(report.summary())
    print(f"metrics: {report.table}")
    print(f"skipped videos: {os.path.join(args.out, SKIPPED_FILE)}")
    print(json_line({"verb": "curate-metrics", "videos": report.videos, "measured": report.measured,
                      "skipped": len(report.skipped), "table": report.table}))
    return 0 if report.measured else 2
