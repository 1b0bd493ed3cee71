"""`w2s-vqa score --checkpoint RUN | --hf DIR --anchors A --inputs VIDEOS --out scores.csv`: score videos.

Every input video is compared with every anchor of A (`w2s-vqa anchors`) and given a
Thurstone score (w2s_vqa.score.thurstone; `--mode map` on the anchors' MOS scale with a
95% interval, or `--mode paper`, the authors' 0-100). Inputs are a folder of videos or a
manifest, decoded as `prepare` decodes them with the anchors' settings, or a store: a
`--set data.KEY=...` the anchors' settings (or the checkpoint's run config) replace is named
in one note line before decoding, since it has no effect.
Intermediate results go to `--work` (default: beside --out); rerun the same command to
resume a killed run: finished store shards are kept and not scored again. --out, --work and
--anchors may be URLs (gs://...; docs/2026-12-cloud-storage.md): the table, the skipped list
and the scored parts go to the bucket through w2s_vqa.workdir, and a folder's decoded store,
which must sit on a file system, to this host's scratch folder (score.batch.decode_dir).

Still images among the inputs (a JPEG or PNG, any one-frame stream) are told apart from
videos: by default (`--images skip`) they are left out, listed in the .skipped.csv with
the reason and counted in one line, so that thumbnails never enter an SRCC unseen;
`--images score` scores them by the paper's rule for images, one frame and all-zero
motion features (docs/method.md, "Student"), with kind "image" in the table.
"""

from __future__ import annotations

import os
import sys
import time

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.main.common import (add_config_arguments, check_checkpoint, json_line, load_config,
                                 non_negative_int, note_replaced_data_keys, refuse_outputs_inside)


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a training run's workdir (or its checkpoints/ folder)")
    source.add_argument("--hf", help="an exported / Hugging Face LLaVA-OneVision directory")
    parser.add_argument("--step", type=int, default=None, help="with --checkpoint: the step (default: latest)")
    parser.add_argument("--anchors", required=True, metavar="DIR", help="anchor directory (`w2s-vqa anchors`)")
    parser.add_argument("--inputs", required=True, metavar="PATH",
                        help="a folder of videos, a CSV/JSONL manifest (as `prepare` takes), or a video store")
    parser.add_argument("--out", required=True, metavar="CSV", help="score table to write")
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="decoded videos and finished shards, for resuming (default: OUT without .csv + '.work')")
    parser.add_argument("--mode", choices=("map", "paper"), default="map",
                        help="map: probit MAP on the anchors' MOS scale with an interval (default); paper: the "
                             "authors' procedure, 0-100")
    parser.add_argument("--batch-size", type=non_negative_int, default=0, metavar="N",
                        help="test videos per global batch, a multiple of the devices the batch is split over and "
                             "of the process count (0, the default: 8 rounded up to such a multiple)")
    parser.add_argument("--images", choices=("skip", "score"), default="skip",
                        help="still images among the inputs (JPEG, PNG, any one-frame stream): skip (default) leaves "
                             "them out and lists them in the .skipped.csv; score scores them as the paper does "
                             "images, one frame and zero motion, with kind 'image' in the table")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="processes decoding a folder or manifest (default 0; 0 or 1: this process)")


def run(args) -> int:
    from w2s_vqa import runtime

    started = time.perf_counter()
    config = load_config(args)
    check_checkpoint(args)  # a stages workdir: one line naming its stages, before other inputs
    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    import jax

    from w2s_vqa import multihost
    from w2s_vqa import sharding
    from w2s_vqa.score import batch as batch_lib
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.score.student_source import load_for_scoring

    anchors = AnchorSet.load(args.anchors)  # before any model work: a bad anchor set fails fast
    if not os.path.exists(args.inputs):
        raise FileNotFoundError(f"{args.inputs}: no such folder, manifest or store")
    if workdir_lib.isdir(args.out):  # found now, not after the scoring
        raise IsADirectoryError(f"--out {args.out}: is a folder; name the CSV file to write, "
                                f"e.g. {args.out}/scores.csv")
    out = workdir_lib.absolute(args.out)
    stem = out[:-4] if out.lower().endswith(".csv") else out
    work = args.work or stem + ".work"
    if not batch_lib.is_store(args.inputs):  # a store is read by its index, not listed
        refuse_outputs_inside(args.inputs, {"--out": args.out, "--work": work})
    multihost.initialize(config)
    mesh = sharding.mesh_from_config(config)
    from w2s_vqa import hub

    loaded = load_for_scoring(checkpoint=args.checkpoint, hf_dir=args.hf and hub.resolve(args.hf, what="--hf"), step=args.step, mesh=mesh, config=config)
    anchors.check_student(loaded.student.cfg, loaded.settings)
    decode_config = loaded.run_config or config
    if not batch_lib.is_store(args.inputs) and jax.process_index() == 0:
        note_replaced_data_keys(args.overrides, config, batch_lib.input_config(anchors, decode_config),
                                anchors.settings)
    result = batch_lib.score_videos(loaded.student, loaded.prompt, anchors, args.inputs, mesh,
                                    batch_size=args.batch_size or None, mode=args.mode,
                                    work_dir=work, config=decode_config, student_key=loaded.key,
                                    workers=args.workers, progress=True, images=args.images)
    table, skipped = result.table, result.skipped
    skipped_path = (out[:-4] if out.lower().endswith(".csv") else out) + ".skipped.csv"
    if jax.process_index() == 0:
        workdir_lib.makedirs(workdir_lib.parent(out))
        with workdir_lib.atomic_open(out) as f:  # a local file, or the object itself in a bucket
            table.to_csv(f, index=False)
        with workdir_lib.atomic_open(skipped_path) as f:
            result.skipped_table().to_csv(f, index=False)
        _save_matrix(anchors, loaded.key, result.anchor_logits)
        seconds, now = result.seconds, result.scored_now
        rate = now / seconds if seconds > 0 and now else 0.0  # scoring alone: decoding is in decoding_seconds
        wall = time.perf_counter() - started
        decoded = (f"; decoded {result.decoded_now} now, {result.decoded_earlier} by an earlier run"
                   if result.decoded_now or result.decoded_earlier else "")  # a store is not decoded
        images, images_skipped = result.images_scored, result.images_skipped
        failed = [e for e in skipped if not batch_lib.is_image_reason(e["reason"])]
        print(f"scored {len(table) - images} videos and {images} still images ({now} now, {len(table) - now} from "
              f"an earlier run{decoded}) against {len(anchors)} anchors, mode {args.mode}; skipped {len(skipped)} "
              f"({len(failed)} unreadable, {images_skipped} still images); scoring {rate:.2f} videos/s, decoding "
              f"{result.prepare_seconds:.1f} s, {wall:.1f} s in all")
        if skipped:
            print(f"skipped {len(skipped)}, each with its reason, in {skipped_path}")
        if images_skipped:
            print(f"left out {images_skipped} still image(s) (one-frame files such as JPEG or PNG); "
                  f"--images score scores them as images (one frame, zero motion)")
        for entry in failed[:10]:
            print(f"  skipped {entry['path'] or entry['id']}: {entry['reason']}")
        if len(failed) > 10:
            print(f"  ... {len(failed) - 10} more in {skipped_path}")
        print(f"scores:  {out}")
        print(f"skipped: {skipped_path}")
        print(json_line({"scores": out, "videos": len(table) - images, "images": images,
                          "images_skipped": images_skipped, "images_mode": args.images,
                          "skipped": len(skipped), "scored_now": now,
                          "decoded_now": result.decoded_now, "decoded_earlier": result.decoded_earlier,
                          "mode": args.mode, "anchors": workdir_lib.absolute(anchors.path), "scoring_seconds": round(seconds, 3),
                          "decoding_seconds": round(result.prepare_seconds, 3), "wall_seconds": round(wall, 3),
                          "scoring_videos_per_second": round(rate, 4), "skipped_list": skipped_path, "work": work}))
    if not len(table):
        print(f"w2s-vqa score: no video could be scored; see {skipped_path}", file=sys.stderr)
        return 1
    return 0


def _save_matrix(anchors, student_key: str, logits) -> None:
    """Keep the anchors' matrix for this student in the anchor set, for the record and for
    PyTorch scoring: a local folder when it is writable; a bucket's folder is tried (no
    permission test exists short of writing), and a refusal there only warns."""
    if workdir_lib.is_local(anchors.path):
        if os.access(anchors.path, os.W_OK):
            anchors.save_matrix(student_key, logits)
        return
    try:
        anchors.save_matrix(student_key, logits)
    except OSError as e:
        print(f"w2s-vqa score: warning: the anchors' matrix not kept in {anchors.path} ({e})", file=sys.stderr)
