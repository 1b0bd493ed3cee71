"""`w2s-vqa curate --pool P --reference R --k K --out DIR`: pick K pool videos whose metric histograms
match the reference's (w2s_vqa.curate).

P and R are each a metrics table (.parquet, or .csv with metric columns; `w2s-vqa curate-metrics`
writes one) or videos (a folder, a manifest, a video store), measured first into OUT/pool_metrics
and OUT/reference_metrics (resumable).
"""

from __future__ import annotations

import os

from w2s_vqa.main.common import (add_config_arguments, is_store, json_line, load_config, non_negative_int,
                                 refuse_outputs_inside)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--pool", required=True, metavar="PATH", help="the candidates: metrics table or videos")
    parser.add_argument("--reference", required=True, metavar="PATH",
                        help="the set to match: metrics table or videos")
    parser.add_argument("--k", type=int, required=True, help="how many videos to pick")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="selection.csv (a manifest prepare reads), report.json, histograms.png")
    parser.add_argument("--metrics", default="", metavar="A,B,...",
                        help="columns to match (default: the nine built-in metrics; a table may add its own, "
                             "e.g. a NIQE column)")
    parser.add_argument("--weights", default="", metavar="A=W,...", help="weight of each metric (default 1)")
    parser.add_argument("--cap-column", default=None, metavar="COLUMN",
                        help="a pool column (source, uploader, channel) to cap with --cap")
    parser.add_argument("--cap", type=int, default=None, metavar="N", help="at most N videos per --cap-column value")
    parser.add_argument("--keep", default=None, metavar="FILE", help="ids that must be chosen (one per line)")
    parser.add_argument("--drop", default=None, metavar="FILE", help="ids that must not be chosen (one per line)")
    parser.add_argument("--workers", type=non_negative_int, default=os.cpu_count() or 1, metavar="N",
                        help="processes for measuring videos (default: all CPUs)")


def _ids(path: str | None, option: str) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise OSError(f"{option} {path}: {e.strerror}") from None


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights: {item!r} is not METRIC=NUMBER") from None
        if not sep or weights[name.strip()] < 0:
            raise ValueError(f"--weights: {item!r} is not METRIC=NUMBER with a number >= 0")
    return weights


def run(args) -> int:
    from w2s_vqa.curate import extract, report, select
    from w2s_vqa.curate.metrics import METRICS

    config = load_config(args)
    for option, path in (("--pool", args.pool), ("--reference", args.reference)):
        if not is_store(path):  # both refused before either is measured; a store is read by its index
            refuse_outputs_inside(path, {"--out": args.out}, option=option)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] or list(METRICS)
    settings = select.SelectionSettings(
        k=args.k, bins=config.curate.bins, binning=config.curate.binning, weights=_weights(args.weights),
        cap_column=args.cap_column, cap=args.cap, time_limit=config.curate.time_limit, seed=config.curate.seed)
    measure = extract.MetricSettings(work_height=config.curate.work_height,
                                     max_seconds=config.curate.max_seconds or None)
    tables = {}
    for name, path in (("pool", args.pool), ("reference", args.reference)):
        tables[name] = extract.read_or_measure(path, os.path.join(args.out, f"{name}_metrics"), metrics,
                                               settings=measure, workers=args.workers, what=f"--{name}")
    chosen = select.select(tables["pool"], tables["reference"], metrics, settings, keep=_ids(args.keep, "--keep"),
                           drop=_ids(args.drop, "--drop"))
    paths = report.write(chosen, args.out)
    summary = report.summary(chosen)
    print(f"curate: chose {summary['k']} of {summary['pool_videos']} videos over {summary['cells']} cells "
          f"({summary['status']}, gap {summary['gap']:.2%}); mean L1 to the reference {summary['mean_l1']:.3f} "
          f"against {summary['mean_l1_random']:.3f} for a random subset")
    if summary["dropped_missing_metrics"]:
        print(f"curate: {summary['dropped_missing_metrics']} pool video(s) left out for a missing metric")
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(json_line({"verb": "curate", **{k: summary[k] for k in ("k", "pool_videos", "cells", "status", "gap",
                                                                  "mean_l1", "mean_l1_random")},
                      "selection": paths["selection"]}))
    return 0
