"""`w2s-vqa demo` (what `make demo` runs): the whole job on the tiny default, end to end.

    demo pool (real clips, variants, weak teachers, split pairs)
      -> train the tiny student from scratch on CPU, validating as it goes
      -> held-out accuracy of the student and of each weak teacher
      -> export to a Hugging Face directory
      -> score every held-out video against anchors, as `w2s-vqa score` does

The headline figure is direction accuracy on held-out synthetic pairs whose
level gap is above 1 (labels superior or inferior): the student is compared
with every weak teacher on exactly those pairs. The last printed line is one
JSON object with the figures and where the checkpoint and the export went.

The scoring step. The pool has no human scores, so the anchors carry a stand-in for
MOS built from what the pool does know, the distortion levels (`standin_mos`): a
training video at level l of a simulator with L levels gets 100 (1 - l / L), its
pristine source 100. Within one source and simulator it follows the known order;
across simulators it takes "the same share of a simulator's severity range" as the
same quality, an assumption made for the stand-in only. `score.anchors.pick_anchors`
picks K = 5 anchors among the training videos by it (`w2s-vqa anchors`' rule), and every
held-out video, pristine and distorted, is scored against them
(`score.scorer`, the probit MAP on the stand-in's scale). The figure reported does not
depend on the stand-in: the mean, over held-out sources and simulators, of the SRCC
between the scores and the known order (level 0 best) inside each (source, simulator)
group, `labels.weak_teachers.srcc_report`, the figure demo-data reports for each weak
teacher, here on the same held-out videos for the student and every teacher. The
scatter plot (held-out scores against the stand-in, with the fitted logistic) shows
the scale.
"""

from __future__ import annotations

import os
import time
import warnings

from w2s_vqa import config as config_lib
from w2s_vqa import runtime
from w2s_vqa.demo import pool as demo_data
from w2s_vqa.labels import pairs as pair_tables
from w2s_vqa.score import metrics

TARGET_ACCURACY = 0.8
NUM_ANCHORS = 5  # the paper's K
SCORING_DIR = "scoring"


def run_demo(config, out_dir: str, *, workers: int = 2, num_sources: int | None = None) -> dict:
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.score import predict
    from w2s_vqa.train import loop

    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    start = time.time()
    out_dir = os.path.abspath(out_dir)
    data = demo_data.build_demo(config, os.path.join(out_dir, "data"), workers=workers, num_sources=num_sources)
    paths = data["paths"]
    config.data.store, config.data.pairs = paths["store"], paths["pairs_train"]
    config_lib.ensure_eval(config, config_lib.SHORTHAND_EVAL).pairs = paths["pairs_val"]  # logs "val/..."
    data_seconds = time.time() - start

    trainer = loop.Trainer(config, os.path.join(out_dir, "run"))
    info = trainer.run()

    val = pair_tables.read_pairs(paths["pairs_val"])
    decisive = val[val["origin"].isin(pair_tables.SYNTHETIC_ORIGINS) & val["label"].isin(metrics.DECISIVE)]
    predictions = predict.predict_pairs(
        trainer.final_state, decisive, config.data.store, trainer.prompt, trainer.mesh,
        batch_size=int(config.data.batch_size), forward=trainer.eval_step, batch_sharding=trainer.batch_sharding,
        worker_count=config.data.worker_count)
    student = _student_report(predictions)
    teachers = data["val_direction_accuracy_level_gap_above_1"]

    export_dir = os.path.join(out_dir, "export")
    hf.save_student(trainer.student(), export_dir, tokenizer_dir=model_config_lib.tokenizer_dir(config), overwrite=True,
                    extra_settings={"checkpoint": info.checkpoint_dir, "step": info.steps}, data=config.data)

    start_scoring = time.time()
    scoring = score_heldout(trainer.student(), trainer.prompt, trainer.mesh, paths["store"], paths["teachers"],
                            os.path.join(out_dir, SCORING_DIR), batch_size=int(config.data.batch_size))
    scoring["seconds"] = time.time() - start_scoring

    best_teacher = max(v["all"] for v in teachers.values())
    summary = {
        "student_val_direction_accuracy": {k.split("/")[1]: v for k, v in info.last_eval.items()
                                           if k.endswith("/direction_accuracy")},
        "student_heldout_synthetic_gap_gt1_direction_accuracy": student,
        "teachers_heldout_synthetic_gap_gt1_direction_accuracy": teachers,
        "heldout_synthetic_gap_gt1_pairs": len(decisive),
        "target": TARGET_ACCURACY,
        "meets_target": student["all"] >= TARGET_ACCURACY and student["all"] > best_teacher,
        "steps": info.steps,
        "resumed_from": info.resumed_from,
        "data_seconds": data_seconds,
        "train_seconds": info.wall_seconds,
        "scoring": scoring,
        "wall_seconds": time.time() - start,
        "checkpoint": info.checkpoint_dir,
        "export": export_dir,
        "metrics": os.path.join(info.workdir, "metrics.jsonl"),
        "data": os.path.dirname(paths["store"]),
    }
    return summary


def standin_mos(index):
    """The stand-in MOS (module docstring) of a store index's videos: float64 [N], 100 for a
    pristine video, 100 (1 - level / levels) for a variant of a simulator with that many levels."""
    import numpy as np

    from w2s_vqa.video import distort

    levels = index["distortion"].map(lambda name: len(distort.get(name).levels) if name else 1)
    return 100.0 * (1.0 - index["level"].to_numpy(np.float64) / levels.to_numpy(np.float64))


def score_heldout(student, prompt, mesh, store_path: str, teachers_path: str, out_dir: str, *,
                  batch_size: int = 8, k: int = NUM_ANCHORS) -> dict:
    """The demo's scoring step (module docstring): anchors from the training videos, every
    held-out video scored, SRCC against the known order for the student and each teacher.

    Writes OUT/anchors (an anchor directory), OUT/heldout_scores.csv and OUT/heldout_scores.png.
    Returns {"anchors": [{id, standin_mos}], "heldout_videos", "skipped",
    "srcc_vs_known_order": {model: {"all", <kind>: ...}}, "srcc_vs_standin_mos":
    {model: x}, "plot", "scores", "note"}. K shrinks to the number of distinct stand-in
    values where the pool has fewer (a pool made with few levels); with no held-out or
    too few training videos the step is skipped and "note" says why.
    """
    import pandas as pd

    from w2s_vqa.labels import teachers as teacher_tables
    from w2s_vqa.labels import weak_teachers
    from w2s_vqa.score import anchors as anchors_lib
    from w2s_vqa.score import evaluate
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.store.format import VideoStore

    store = VideoStore(store_path)
    index = store.index.copy()
    index["standin_mos"] = standin_mos(index)
    heldout = pair_tables.validation_sources(index["source_id"], val_fraction=demo_data.VAL_FRACTION)
    train = index[~heldout]
    distinct = int(train["standin_mos"].nunique())
    if not heldout.any() or distinct < 2:
        return {"note": f"skipped: {int(heldout.sum())} held-out videos, {distinct} distinct stand-in MOS values "
                        "among the training videos"}
    k = min(k, distinct)
    picked = anchors_lib.pick_anchors(train.rename(columns={"standin_mos": "mos"})[["id", "mos"]], k)
    coverage = anchors_lib.DEFAULT_COVERAGE
    rule = ("stand-in MOS 100 (1 - level / levels) of the demo pool's training videos (w2s_vqa.demo.run); "
            + anchors_lib.RULE.format(lo=(1 - coverage) / 2, hi=(1 + coverage) / 2))
    anchor_set = anchors_lib.AnchorSet.from_store(store, picked["id"], picked["mos"], rule=rule)
    os.makedirs(out_dir, exist_ok=True)
    anchor_set.save(os.path.join(out_dir, "anchors"), overwrite=True)

    ids = index.loc[heldout, "id"].astype(str).tolist()
    scorer = scorer_lib.Scorer(student, prompt, anchor_set, mesh, batch_size=batch_size)
    table = scorer_lib.score_store(scorer, store, ids=ids)
    store.close()
    scores_path = os.path.join(out_dir, "heldout_scores.csv")
    table.merge(index[["id", "source_id", "distortion", "kind", "level", "standin_mos"]], on="id").to_csv(
        scores_path, index=False)

    teachers = teacher_tables.read_teacher_table(teachers_path)
    with warnings.catch_warnings():  # demo-data has said how the teachers disagree
        warnings.simplefilter("ignore", teacher_tables.TableWarning)
        fused = teacher_tables.fuse(teachers, normalize=demo_data.NORMALIZE)["mean"].rename("score").reset_index()
    long = pd.concat([table[["id", "score"]].rename(columns={"id": "video_id"}).assign(teacher=evaluate.STUDENT),
                      teachers, fused.assign(teacher="fused")], ignore_index=True)
    long = long[long["video_id"].isin(ids)]
    report = weak_teachers.srcc_report(long, index[heldout])
    order = [evaluate.STUDENT, *sorted(set(teachers["teacher"])), "fused"]
    known_order = {model: {key: value for key, value in report[model].items() if key != "by_distortion"}
                   for model in order if model in report}

    mos_table = index.loc[heldout, ["id", "standin_mos"]].rename(columns={"id": "file", "standin_mos": "mos"})
    predictions = {model: {"heldout": rows[["video_id", "score"]].rename(
        columns={"video_id": "file", "score": "prediction"})} for model, rows in long.groupby("teacher", sort=False)}
    against_standin = evaluate.evaluate(predictions, {"heldout": mos_table}, bootstrap=0)
    plot = evaluate.plot_set("heldout", mos_table, {m: p["heldout"] for m, p in predictions.items()
                                                    if m == evaluate.STUDENT}, against_standin,
                             os.path.join(out_dir, "heldout_scores.png"), mos_label="stand-in MOS (distortion levels)",
                             title=f"demo pool: {len(ids)} held-out videos against {k} anchors")
    return {
        "anchors": [{"id": i, "standin_mos": float(m)} for i, m in zip(anchor_set.ids, anchor_set.mos)],
        "heldout_videos": len(ids),
        "skipped": len(table.attrs["skipped"]),
        "srcc_vs_known_order": known_order,
        "srcc_vs_standin_mos": {m: f.get("srcc") for m, f in against_standin["sets"]["heldout"]["models"].items()},
        "scores": scores_path,
        "plot": plot,
        "anchor_dir": os.path.join(out_dir, "anchors"),
        "note": "",
    }


def _student_report(predictions) -> dict[str, float]:
    """{"all": x, "<kind>": x}: the student's direction accuracy (metrics.direction_accuracy,
    decisive pairs only) on the synthetic pairs of `predictions`, as pool._direction_report
    gives each weak teacher's; a kind with no pair is left out."""
    report = {}
    for name, origins in (("all", pair_tables.SYNTHETIC_ORIGINS),
                          *((kind, (kind,)) for kind in pair_tables.SYNTHETIC_ORIGINS)):
        rows = predictions[predictions["origin"].isin(origins)]
        if len(rows):
            report[name] = metrics.direction_accuracy(rows["label"].to_numpy(), rows[metrics.P_COLUMN].to_numpy(),
                                                      decisive_only=True)
    return report


def format_summary(summary: dict) -> str:
    student = summary["student_heldout_synthetic_gap_gt1_direction_accuracy"]
    lines = [f"held-out synthetic pairs with level gap > 1 ({summary['heldout_synthetic_gap_gt1_pairs']}): "
             "direction accuracy, all / " + " / ".join(pair_tables.SYNTHETIC_ORIGINS),
             "  student       " + " / ".join(f"{student.get(k, float('nan')):.3f}"
                                           for k in ("all", *pair_tables.SYNTHETIC_ORIGINS))]
    for name, acc in summary["teachers_heldout_synthetic_gap_gt1_direction_accuracy"].items():
        lines.append(f"  {name:<13} " + " / ".join(f"{acc.get(k, float('nan')):.3f}"
                                                  for k in ("all", *pair_tables.SYNTHETIC_ORIGINS)))
    lines.append(f"target {summary['target']} and above every weak teacher: "
                 f"{'met' if summary['meets_target'] else 'NOT met'}")
    scoring = summary.get("scoring", {})
    if scoring.get("srcc_vs_known_order"):
        lines.append(f"held-out videos ({scoring['heldout_videos']}) scored against {len(scoring['anchors'])} anchors: "
                     "mean SRCC with the known order within each source and simulator, all / "
                     + " / ".join(pair_tables.SYNTHETIC_ORIGINS))
        for name, srcc in scoring["srcc_vs_known_order"].items():
            lines.append(f"  {name:<13} " + " / ".join(f"{srcc.get(k, float('nan')):.3f}"
                                                      for k in ("all", *pair_tables.SYNTHETIC_ORIGINS)))
        lines.append(f"scores: {scoring['scores']}\nplot:   {scoring['plot']}")
    elif scoring.get("note"):
        lines.append(f"scoring {scoring['note']}")
    lines.append(f"{summary['steps']} steps; data {summary['data_seconds']:.0f} s, training "
                 f"{summary['train_seconds']:.0f} s, scoring {scoring.get('seconds', 0):.0f} s, "
                 f"total {summary['wall_seconds']:.0f} s")
    lines.append(f"checkpoint: {summary['checkpoint']}\nexport:     {summary['export']}\n"
                 f"metrics:    {summary['metrics']}")
    return "\n".join(lines)
