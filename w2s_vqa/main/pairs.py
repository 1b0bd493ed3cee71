"""`w2s-vqa pairs --store DIR [--teachers TABLE] --out DIR`: a store's train and val pair tables.

Writes DIR/pairs_train.parquet and DIR/pairs_val.parquet (teacher pairs and synthetic
pairs, split by source: `w2s_vqa.labels.build`) and DIR/pairs.json, a summary with the
settings, the pair counts per origin and level, and every shortfall of the pool. The
notes (printed as warnings and kept in pairs.json) also hold the teacher table's
skipped scores and every teacher that ranks videos against the others
(w2s_vqa.labels.teachers).
"""

from __future__ import annotations

import os
import sys

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.main.common import add_config_arguments, json_line, load_config

TRAIN_FILE = workdir_lib.TRAIN_PAIRS_FILE
VAL_FILE = "pairs_val.parquet"
SUMMARY_FILE = "pairs.json"
NORMALIZE_CHOICES = ("zscore", "minmax", "none")


def add_arguments(parser) -> None:
    from w2s_vqa.labels import build

    add_config_arguments(parser)
    parser.add_argument("--store", required=True, metavar="DIR", help="a video store (`w2s-vqa prepare`)")
    parser.add_argument("--teachers", default=None, metavar="TABLE",
                        help="teacher scores of the store's videos (.csv/.parquet/.jsonl, long or wide form); "
                             "without it, synthetic pairs only")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help=f"output folder for {TRAIN_FILE}, {VAL_FILE} and {SUMMARY_FILE}")
    parser.add_argument("--val-fraction", type=float, default=build.VAL_FRACTION, metavar="F",
                        help=f"about this fraction of the sources, with all their variants, go to validation "
                             f"(default {build.VAL_FRACTION})")
    parser.add_argument("--pairs-per-video", type=float, default=build.PAIRS_PER_VIDEO, metavar="R",
                        help=f"teacher pairs per scored video, drawn within each side of the split "
                             f"(default {build.PAIRS_PER_VIDEO}, the paper's ratio)")
    parser.add_argument("--teacher-weight", type=float, default=1.0, metavar="W",
                        help="loss weight of teacher pairs; synthetic pairs weigh 1 (default 1)")
    parser.add_argument("--normalize", choices=NORMALIZE_CHOICES, default="zscore",
                        help="rescale each teacher's scores before averaging them (default zscore)")
    parser.add_argument("--lower-is-better", default="", metavar="NAMES",
                        help="comma-separated teachers whose scores fall as quality rises (NIQE, BRISQUE, ...): "
                             "negated before fusion (default: none)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed of the teacher-pair draw and the order swaps (default: the config's seed)")


def no_pairs_reason(store, fused, teachers_path) -> str:
    """Why a store and a teacher table give no pair at all, in one line, with what makes pairs."""
    index = store.index
    sources = index["source_id"].astype(str).nunique()
    variants = int((index["level"].to_numpy() > 0).sum())
    why = [f"{len(index)} video(s) of {sources} source(s) in {store.path}"]
    why.append(f"{variants} distorted variant(s)" + (
        "" if variants else " (synthetic pairs need them: run prepare with data.distortions, e.g. "
                            "--set data.distortions='blur:1,3')"))
    if teachers_path is None:
        why.append("no --teachers table (teacher pairs need one scoring at least 2 videos of one side)")
    else:
        scored = 0 if fused is None else len(fused)
        why.append(f"the teacher table {teachers_path} scores {scored} of the store's videos (teacher pairs need "
                   f"at least 2 of one side)")
    return "no pair to write, nothing written: " + "; ".join(why)


def run(args) -> int:
    from w2s_vqa.labels import build, pair_table, teachers
    from w2s_vqa.labels import sampling as pair_sampling
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.tables import collect_notes

    seed = int(load_config(args).seed) if args.seed is None else args.seed
    store = VideoStore(args.store)
    normalize = None if args.normalize == "none" else args.normalize
    lower_is_better = [name.strip() for name in args.lower_is_better.split(",") if name.strip()]
    if lower_is_better and args.teachers is None:
        raise ValueError("--lower-is-better names teachers, which only a --teachers table has")
    fused = None
    with collect_notes() as table_notes:  # skipped scores, teachers against the others
        if args.teachers is not None:
            scores = teachers.read_teacher_table(args.teachers, known_ids=store.ids)
            fused = teachers.fuse(scores, normalize=normalize, lower_is_better=lower_is_better)
    train, val, notes = build.build_pair_tables(
        store.index, fused, pairs_per_video=args.pairs_per_video, teacher_weight=args.teacher_weight,
        val_fraction=args.val_fraction, seed=seed)
    if not len(train) and not len(val):  # refused before anything is written
        raise ValueError(no_pairs_reason(store, fused, args.teachers))
    notes = tuple(table_notes) + tuple(notes) + tuple(
        f"{side}: 0 pairs written ({reason})" for side, table, reason in (
            ("train", train, "training has nothing to learn from; see the notes above"),
            ("val", val, "training will report no validation figure"))
        if not len(table) and not any(n.startswith(f"{side}:") for n in notes))
    for note in notes:
        print(f"w2s-vqa pairs: warning: {note}", file=sys.stderr)

    out = workdir_lib.absolute(args.out)
    paths = {"train": os.path.join(out, TRAIN_FILE), "val": os.path.join(out, VAL_FILE),
             "summary": os.path.join(out, SUMMARY_FILE)}
    pair_table.write_pairs(train, paths["train"])
    pair_table.write_pairs(val, paths["val"])
    in_val = pair_sampling.validation_sources(store.index["source_id"].astype(str).unique(),
                                              val_fraction=args.val_fraction)
    summary = {
        "store": workdir_lib.absolute(args.store),
        "teachers": None if args.teachers is None else workdir_lib.absolute(args.teachers),
        "settings": {"val_fraction": args.val_fraction, "pairs_per_video": args.pairs_per_video,
                     "teacher_weight": args.teacher_weight, "normalize": normalize,
                     "lower_is_better": lower_is_better, "seed": seed},
        "videos": len(store),
        "sources": {"train": int((~in_val).sum()), "val": int(in_val.sum())},
        "train": build.pair_counts(train),
        "val": build.pair_counts(val),
        "notes": list(notes),
        "paths": paths,
    }
    workdir_lib.write_json(paths["summary"], summary)

    for name, path in paths.items():
        print(f"{name + ':':<9}{path}")
    print(json_line({"train_pairs": len(train), "val_pairs": len(val), "notes": len(notes),
                      "summary": paths["summary"]}))
    return 0
