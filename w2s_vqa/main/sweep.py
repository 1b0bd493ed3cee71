"""`w2s-vqa sweep --topology NAME --grid KEY=V1,V2 ...`: plan every point of a grid of
config overrides, each in a fresh process; tables (markdown, CSV, JSON) and a plot."""

from __future__ import annotations

import os

from w2s_vqa.main.common import add_config_arguments, json_line
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--topology", required=True, help="as `w2s-vqa plan --topology`: v5p-64, cpu:8, local, ...")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", required=True,
                        help="values of one config key, e.g. --grid mesh.shape=(-1,8,1),(-1,16,1) "
                             "--grid model.remat=none,minimal,full (repeatable: the cross product is planned)")
    parser.add_argument("--out", required=True, help="directory for sweep.md, sweep.csv, sweep.json, sweep.png "
                                                     "and points.jsonl (a rerun reuses finished points)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds one point may compile (default: no limit)")
    parser.add_argument("--prompt-length", type=int, default=None,
                        help="tokens per pair prompt (default: from the config's tokenizer)")


def run(args) -> int:
    from w2s_vqa.train import sweep as sweep_lib

    grids = [sweep_lib.parse_grid(text) for text in args.grid]
    points = sweep_lib.grid_points(grids)
    records = sweep_lib.run_sweep(args.config, args.overrides, args.topology, points, args.out,
                                  timeout=args.timeout, prompt_length=args.prompt_length)
    rows = [sweep_lib.row_of(r) for r in records]
    sweep_lib.mark_fastest(rows)
    keys = [k for k, _ in grids]
    columns = keys + ["fits", "memory_gib", "capacity_gib", "est_step_ms", "est_mfu", "compile_s", "fastest_fitting",
                      "status"]
    print(sweep_lib.markdown(rows, [c for c in columns if any(c in r for r in rows)]))
    for name in sweep_lib.OUTPUTS:
        print(f"{name[len('sweep.'):]:<4} {workdir_lib.absolute(os.path.join(args.out, name))}")
    summary = sweep_lib.summary(records)
    print(json_line({**summary, "out": workdir_lib.absolute(args.out)}))
    # 1 when no point could be planned at all (every row an error), as prepare's empty run.
    return 1 if summary["errors"] == summary["points"] else 0
