"""`w2s-vqa prepare --inputs PATH --out DIR [--runner RUNNER]`: build (or resume) a video store.

Without --runner, this host's process pool (w2s_vqa.store.prepare); with it, the same
store as an Apache Beam pipeline (w2s_vqa.store.beam, imported only then). A store
inside the folder of videos it is made from is refused (its files would be read as inputs
next time). The last line is one JSON object: the store, its counts and where the skipped
list is.
"""

from __future__ import annotations

import os

from w2s_vqa.main.common import (add_beam_arguments, add_config_arguments, beam_function, json_line, load_config,
                                 refuse_outputs_inside)
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--inputs", required=True, metavar="PATH",
                        help="folder of videos (searched recursively) or a CSV/JSONL manifest with a 'path' "
                             "column and optional 'id', 'source_id', 'motion' (.npy [chunks, motion_dim])")
    parser.add_argument("--out", required=True, metavar="DIR", help="store directory; rerun to resume a killed run")
    add_beam_arguments(parser, "run as an Apache Beam pipeline on this runner; --out may then be any path "
                               "Beam's FileSystems writes (gs://, s3://, ...)")

def run(args) -> int:
    from w2s_vqa.store.format import ERRORS_FILE, INDEX_FILE, StoreError

    config = load_config(args)
    refuse_outputs_inside(args.inputs, {"--out": args.out})
    if args.runner is None:
        if args.beam_options:
            raise ValueError("--beam-option needs --runner")
        from w2s_vqa.store.prepare import prepare

        report = prepare(config, args.inputs, args.out, workers=args.workers)
        out = workdir_lib.absolute(args.out)
    else:
        prepare_beam = beam_function("w2s_vqa.store.beam", "prepare_beam", args.runner)
        report = prepare_beam(config, args.inputs, args.out, runner=args.runner, beam_options=args.beam_options,
                              workers=args.workers)
        out = args.out if "://" in args.out else workdir_lib.absolute(args.out)
    print(report.summary())
    print(f"store: {out}")
    print(f"index: {os.path.join(out, INDEX_FILE)}")
    print(f"skipped videos: {os.path.join(out, ERRORS_FILE)}")
    if report.records == 0:
        raise StoreError(f"{out}: no video could be written; see {ERRORS_FILE}")
    print(json_line({"store": out, "index": os.path.join(out, INDEX_FILE),
                     "skipped_list": os.path.join(out, ERRORS_FILE), "sources": report.sources,
                     "videos": report.videos_written, "images": report.images, "records": report.records,
                     "variants": report.variants, "skipped": len(report.errors), "shards": report.shards,
                     "shards_resumed": report.shards_resumed,
                     # The process pool counts the videos of kept shards; Beam counts only the shards.
                     "decoded_earlier": report.sources_resumed if args.runner is None else None}))
    return 0
