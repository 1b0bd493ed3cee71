"""`w2s-vqa report WORKDIR [--out DIR]`: one static HTML page of a run (w2s_vqa.report).

WORKDIR: a `stages`, `train`, `eval` or `finetune` workdir, the demo's output folder, or a
score table CSV. The page and its images go to --out (default WORKDIR/report, or
<table>.report beside a score table); the run's own files are only read. The gallery's
random draws use the config's `seed`.
"""

from __future__ import annotations


from w2s_vqa.main.common import add_config_arguments, json_line, load_config, non_negative_int


def add_arguments(parser) -> None:
    parser.add_argument("workdir", metavar="WORKDIR", help="a run's folder (stages, train, eval, finetune, demo) "
                                                           "or a score table CSV")
    add_config_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="where index.html goes (default: WORKDIR/report)")
    parser.add_argument("--pairs", type=non_negative_int, default=8, metavar="N",
                        help="pairs shown per rule in each stage's gallery (default 8)")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="the video store the frames come from (default: the run's own data.store)")


def run(args) -> int:
    from w2s_vqa import report

    config = load_config(args)
    result = report.build_report(args.workdir, args.out, per_group=args.pairs, seed=int(config.seed),
                                 store=args.store)
    omitted = [name for name, filled in result["sections"].items() if not filled]
    print(f"{result['kind']} run: {result['pairs_shown']} pairs in the gallery, {result['images']} images"
          + (f"; nothing to show for: {', '.join(omitted)}" if omitted else ""))
    for note in result["notes"]:
        print(f"  note: {note}")
    print(f"report: {result['index']}")
    print(json_line({**result, "seconds": round(result["seconds"], 3)}))
    return 0
