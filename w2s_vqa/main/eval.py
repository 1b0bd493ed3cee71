"""`w2s-vqa eval`: the student's (and teachers') SRCC/PLCC/KRCC on labeled sets, tables and plots.

    w2s-vqa eval --checkpoint RUN | --hf DIR --anchors A \\
        --eval-set konvid_1k /data/KoNViD_1k_videos eval_sets/konvid_1k.csv \\
        --eval-set kvq /data/KVQ eval_sets/kvq.csv [--teachers dover.csv] --out eval/

Each set is a folder of videos and a `file,mos` table (w2s_vqa/datasets/lists/*.csv); its
videos are scored against the anchor set A as `w2s-vqa score` scores them, and a teacher
table's scores of the same files sit beside the student's. Without a student, only the
teacher tables are evaluated. Every model of a set is evaluated on the videos all of them
scored (the table says how many, per model and set, and a note names what each model
lacks: its count and first ids); `--allow-subsets` evaluates each on its own videos
instead, figures then not comparable side by side. Writes OUT/results.md, results.json, predictions.csv,
skipped.csv and OUT/plots/<set>.png; decoded videos and finished shards stay in OUT/work,
so a rerun resumes. Sets named as the paper's (lsvq_test, lsvq_1080p, konvid_1k, live_vqc,
youtube_ugc; live_yt_gaming, cgvds, live_yt_hfr, waterloo_ivc_4k, kvq) enter its in-domain
and out-of-distribution overall.

Still images in a set (a JPEG or PNG, any one-frame stream) are handled as `score` handles
them: left out by default (`--images skip`), listed in skipped.csv with the reason and
counted per set; `--images score` scores them as the paper does images (one frame, zero
motion, docs/method.md). results.json's "images" gives both counts per set.

A set is `--eval-set NAME FOLDER TABLE`, not `--set NAME=FOLDER:TABLE`: every verb that
reads a config already takes `--set key=value`, and a colon may be part of a path.

The paper's ten sets come as TFDS datasets (w2s_vqa.datasets) from their manual downloads:

    w2s-vqa eval --sets konvid_1k,live_vqc --manual-dir DIR [--data-dir TFDS_DIR] [--subset full] \\
        (--checkpoint RUN | --hf DIR) --anchors A --out OUT

builds each set not built yet (with the anchors' settings) and scores its records as they
are; a set built from another state of its manual download (another MOS, videos added,
gone or replaced: datasets.build compares what it was built from) is built again, with a
line on stderr saying why. Without a student, only the sets' metadata is read for the
teacher tables. A set none of whose videos a teacher table names gets a warning (its
per-set row reads "0 of N"); when no set matches and there is no student, an error. The table
printed ends with the paper-style table: SRCC / PLCC per set, the weighted overall, and
the paper's own overall figures beside them (score.evaluate.PAPER_OVERALL).
"""

from __future__ import annotations

import sys

from w2s_vqa.main.common import (add_config_arguments, check_checkpoint, finite, json_line, load_config,
                                 non_negative_int, note_replaced_data_keys)
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a training run's workdir (or its checkpoints/ folder)")
    source.add_argument("--hf", help="an exported / Hugging Face LLaVA-OneVision directory")
    parser.add_argument("--step", type=int, default=None, help="with --checkpoint: the step (default: latest)")
    parser.add_argument("--anchors", metavar="DIR", help="anchor directory (`w2s-vqa anchors`); needed with a student")
    parser.add_argument("--eval-set", dest="eval_sets", nargs=3, action="append", default=[],
                        metavar=("NAME", "FOLDER", "TABLE"),
                        help="a labeled set: its name, its folder of videos, its file,mos table (repeatable)")
    parser.add_argument("--sets", default="", metavar="NAME,NAME",
                        help="the paper's evaluation sets as TFDS datasets (w2s_vqa.datasets: lsvq_test, lsvq_1080p, "
                             "konvid_1k, live_vqc, youtube_ugc, live_yt_gaming, cgvds, live_yt_hfr, waterloo_ivc_4k, "
                             "kvq), built from --manual-dir where not built yet; combinable with --eval-set")
    parser.add_argument("--manual-dir", metavar="DIR",
                        help="with --sets: the manual downloads, one folder per set named as the set")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="with --sets: TFDS's data directory (default ~/tensorflow_datasets)")
    parser.add_argument("--subset", choices=("paper", "full"), default="paper",
                        help="with --sets: the paper's lists (default) or every video of each release")
    parser.add_argument("--teachers", action="append", default=[], metavar="TABLE",
                        help="a teacher score table (long or wide, as `pairs` reads them) to evaluate beside the "
                             "student (repeatable)")
    parser.add_argument("--lower-is-better", default="", metavar="T1,T2",
                        help="teachers whose scores fall as quality rises (NIQE, BRISQUE): negated first")
    parser.add_argument("--allow-subsets", action="store_true",
                        help="evaluate each model on the videos it scored, even where another model of the set "
                             "scored others (default: every model on the videos all of them scored)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the tables, plots and work go")
    parser.add_argument("--mode", choices=("map", "paper"), default="map",
                        help="the student's scores: map (default, the anchors' MOS scale) or paper (0-100)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, metavar="N",
                        help="resamples for the 95%% intervals (0: no intervals)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--batch-size", type=non_negative_int, default=0, metavar="N",
                        help="test videos per global batch, a multiple of the devices the batch is split over "
                             "(0, the default: 8 rounded up to one, as `score`)")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="processes decoding videos (default 0; 0 or 1: this process)")
    parser.add_argument("--images", choices=("skip", "score"), default="skip",
                        help="still images in a set (JPEG, PNG, any one-frame stream): skip (default) leaves them "
                             "out and lists them in skipped.csv; score scores them as images (one frame, zero motion)")


def _teacher_scores(args):
    if not args.teachers:
        return None
    import pandas as pd

    from w2s_vqa.labels import teachers

    tables = [teachers.read_teacher_table(path) for path in args.teachers]
    scores = pd.concat(tables, ignore_index=True)
    twice = scores.duplicated(["video_id", "teacher"])
    if twice.any():
        raise ValueError(f"{', '.join(args.teachers)}: teacher '{scores['teacher'][twice].iloc[0]}' scores video "
                         f"'{scores['video_id'][twice].iloc[0]}' in two tables")
    lower = [t.strip() for t in args.lower_is_better.split(",") if t.strip()]
    unknown = sorted(set(lower) - set(scores["teacher"]))
    if unknown:
        raise ValueError(f"--lower-is-better names {unknown}, which no teacher table holds")
    return teachers.orient(scores, lower)


def _score_set_function(args, config):
    """The student's score_set (score.evaluate.run_eval) and a description of it, or (None, None)."""
    if not (args.checkpoint or args.hf):
        if args.anchors:
            raise ValueError("--anchors without a student: give --checkpoint or --hf")
        return None, None
    if not args.anchors:
        raise ValueError("scoring the student needs an anchor set: --anchors DIR (`w2s-vqa anchors`)")
    from w2s_vqa import runtime

    runtime.tune_cpu_host()  # before anything starts JAX's backend
    from w2s_vqa import multihost
    from w2s_vqa import sharding
    from w2s_vqa.score import evaluate
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.score.scorer import Scorer
    from w2s_vqa.score.student_source import load_for_scoring

    anchors = AnchorSet.load(args.anchors)
    multihost.initialize(config)
    mesh = sharding.mesh_from_config(config)
    from w2s_vqa import hub

    loaded = load_for_scoring(checkpoint=args.checkpoint, hf_dir=args.hf and hub.resolve(args.hf, what="--hf"), step=args.step, mesh=mesh, config=config)
    anchors.check_student(loaded.student.cfg, loaded.settings)
    # One Scorer for every set: the anchors' tokens and matrix, and the compiled step, once.
    scorer = Scorer(loaded.student, loaded.prompt, anchors, mesh, batch_size=args.batch_size or None)
    work_root = workdir_lib.join(workdir_lib.absolute(args.out), "work")
    if multihost.is_first():
        from w2s_vqa.score.batch import input_config

        note_replaced_data_keys(args.overrides, config, input_config(anchors, loaded.run_config or config),
                                anchors.settings)
    # Folder sets are decoded into work/<set>/store; TFDS sets (--sets) are scored from their records.
    score_set = evaluate.student_score_set(scorer, work_root, loaded.run_config or config, mode=args.mode,
                                           student_key=loaded.key, workers=args.workers, progress=True,
                                           images=args.images)
    return score_set, {"student": loaded.key, "anchors": workdir_lib.absolute(args.anchors), "mode": args.mode}


def run(args) -> int:
    from w2s_vqa.score import evaluate
    from w2s_vqa.tables import collect_notes
    from w2s_vqa.video import is_image_reason

    config = load_config(args)
    check_checkpoint(args)  # a stages workdir: one line naming its stages, before other inputs
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    if not names and not args.eval_sets:
        raise ValueError("nothing to evaluate on: give --eval-set NAME FOLDER TABLE or --sets NAME,... "
                         "--manual-dir DIR")
    if names and not args.manual_dir:
        raise ValueError("--sets needs --manual-dir DIR (the sets' manual downloads, one folder per set)")
    sets = [evaluate.EvalSet(name, folder, table) for name, folder, table in args.eval_sets]
    for eval_set in sets:  # a bad table or a missing video fails here, before a student is loaded
        evaluate.read_eval_set(eval_set, check_files=bool(args.checkpoint or args.hf))
    if names:  # metadata and videos checked (nothing decoded) before a student is loaded; labels only
        labels_only = evaluate.tfds_eval_sets(names, args.manual_dir, subset=args.subset, build=False)
    with collect_notes() as notes:  # scores a teacher table's reader skipped
        teacher_scores = _teacher_scores(args)
    for note in notes:
        print(f"w2s-vqa eval: warning: {note}", file=sys.stderr)
    score_set, student = _score_set_function(args, config)
    if names and score_set is not None:  # built with the anchors' settings, read as they are
        from w2s_vqa.score.anchors import AnchorSet

        sets += evaluate.tfds_eval_sets(names, args.manual_dir, data_dir=args.data_dir, subset=args.subset,
                                        settings=AnchorSet.load(args.anchors).settings,
                                        slowfast_weights=config.data.slowfast_weights, workers=args.workers)
    elif names:
        sets += labels_only
    first = True
    if score_set is not None:
        import jax

        first = jax.process_index() == 0
    with collect_notes() as notes:  # sets none of whose videos a teacher table names
        out = evaluate.run_eval(sets, workdir_lib.absolute(args.out), score_set=score_set, teacher_scores=teacher_scores,
                                bootstrap=args.bootstrap, seed=args.seed, write=first,
                                teacher_source=", ".join(args.teachers), subsets=args.allow_subsets)
    if not first:
        return 0
    for note in notes:
        print(f"w2s-vqa eval: warning: {note}", file=sys.stderr)
    results, paths = out["results"], out["paths"]
    for entry in results["sets"].values():  # once each: the figures' caveats and what each model lacks
        for note in entry["notes"]:
            print(f"w2s-vqa eval: note: {note}", file=sys.stderr)
    print(evaluate.markdown(results, notes=False), end="")
    images = results.get("images", {})
    images_skipped = sum(n["skipped"] for n in images.values())
    images_scored = sum(n["scored"] for n in images.values())
    failed = [e for e in out["skipped"] if not is_image_reason(e["reason"])]
    print(f"skipped {len(out['skipped'])} ({len(failed)} unreadable, {images_skipped} still images), each with "
          f"its reason, in {paths['skipped']}; still images scored: {images_scored}")
    if images_skipped:
        print(f"left out {images_skipped} still image(s) (one-frame files such as JPEG or PNG); --images score "
              "scores them as images (one frame, zero motion)")
    for entry in failed[:10]:
        print(f"skipped {entry['set']}/{entry['file']}: {entry['reason']}")
    if len(failed) > 10:
        print(f"... {len(failed) - 10} more in {paths['skipped']}")
    print(f"tables:  {paths['markdown']}\nresults: {paths['json']}\n"
          f"plots:   {workdir_lib.parent(paths['plots'][sets[0].name])}")
    summary = {"out": workdir_lib.absolute(args.out), "results": paths["json"], **(student or {}),
               "sets": {s: {m: {k: f.get(k) for k in ("videos", "scored", "srcc", "plcc", "plcc_fitted", "krcc")}
                            for m, f in e["models"].items()} for s, e in results["sets"].items()},
               "compared_on": {s: e["compared_on"] for s, e in results["sets"].items()},
               "subsets": bool(args.allow_subsets),
               "overall": {m: {g: {k: o[k] for k in ("srcc", "plcc")} for g, o in groups.items()}
                           for m, groups in results["overall"].items()},
               "skipped": results["skipped"], "images": images, "skipped_list": paths["skipped"]}
    print(json_line(finite(summary), allow_nan=False))  # strict JSON: a figure not computed is null
    return 0
