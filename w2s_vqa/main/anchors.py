"""`w2s-vqa anchors --store S --mos TABLE --k 5 --out DIR`: pick an anchor set from a labeled set.

The K anchors are the videos nearest to K evenly spaced MOS values over the middle
`--coverage` of the table's MOS (w2s_vqa.score.anchors.pick_anchors gives the rule and
why); their ids, MOS and student inputs go into DIR (anchors.json, videos.npz), which
`w2s-vqa score --anchors DIR` reads.
"""

from __future__ import annotations

from w2s_vqa.main.common import json_line
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    from w2s_vqa.score.anchors import DEFAULT_COVERAGE

    parser.add_argument("--store", required=True, metavar="DIR",
                        help="video store holding the labeled videos (`w2s-vqa prepare`)")
    parser.add_argument("--mos", required=True, metavar="TABLE",
                        help="CSV with a video column (file, id or video_id: store id, file name, or file name "
                             "without extension) and 'mos', e.g. w2s_vqa/datasets/lists/konvid_1k.csv")
    parser.add_argument("--k", type=int, default=5, help="number of anchors (default 5, as the paper)")
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE,
                        help=f"share of the table's videos the anchors' MOS targets span (default {DEFAULT_COVERAGE})")
    parser.add_argument("--out", required=True, metavar="DIR", help="anchor directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an anchor set already in --out")


def run(args) -> int:
    import sys

    from w2s_vqa.score.anchors import build_anchor_set
    from w2s_vqa.tables import collect_notes

    with collect_notes() as notes:  # still images left out of the candidates
        anchors = build_anchor_set(args.store, args.mos, args.k, coverage=args.coverage)
    for note in notes:
        print(f"w2s-vqa anchors: warning: {note}", file=sys.stderr)
    written = anchors.save(args.out, overwrite=args.overwrite)
    out = workdir_lib.absolute(args.out)
    print(f"{len(anchors)} anchors ({anchors.rule}):")
    for anchor_id, mos in zip(anchors.ids, anchors.mos):
        print(f"  {mos:10.4f}  {anchor_id}")
    print(f"anchors: {out} ({', '.join(written)})")
    print(json_line({"anchors": out, "k": len(anchors), "ids": list(anchors.ids), "notes": notes,
                      "mos": [float(m) for m in anchors.mos], "store": anchors.store}))
    return 0
