"""Relabeling: the stage-k student scores the pool and labels the hard cases of stage k+1.

    pool (store + teacher table) --score.scorer (anchors, sharded, resumable)--> scores
        --labels.mining (misranked synthetic pairs, gMAD per teacher)--> new pairs + report

Which synthetic pairs are misranked (stages.misranked_by): "pairs" (the default) asks the
student about each synthetic pair of the pool, as training does, and takes the ones it
gets wrong (the paper's "synthetic pairs the student gets wrong"); "scores" compares the
two videos' scores against the anchors instead, with no extra forward passes, but a
small student's scores across contents are coarse and call many correct pairs wrong.

The pool's videos are scored as `w2s-vqa score` scores them (score.batch.score_store:
shard by shard into OUT/parts, so a killed run loses at most one shard; every process
of a multi-host run takes its slice of each batch). Mining is deterministic for the
seed, so every process computes the same table; process 0 writes it.

Only videos of training-side sources are mined (sampling.validation_sources with
stages.val_fraction, the split `pairs`/demo-data made): the validation table stays the
stage-1 one, labeled by teachers and level gaps, not by a student grading itself.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.labels import mining, misranked
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels import teachers as teacher_tables

SCORES_FILE = "scores.csv"
NEW_PAIRS_FILE = "new_pairs.parquet"
REPORT_FILE = "report.json"
PARTS_DIR = "parts"
PREDICTIONS_FILE = "synthetic_predictions.parquet"


class RelabelError(ValueError):
    """A relabeling input that cannot be used; the message names the file or key."""


def pool_ids(index: pd.DataFrame, *, val_fraction: float, ids_file: str = "") -> np.ndarray:
    """The ids (str) of the videos to relabel: those `ids_file` lists (one per line, or a
    CSV with an `id` column; stages.pool_ids), else every video whose source is on the
    training side of the split. Raises RelabelError for a missing file or ids the store
    does not hold (named)."""
    if ids_file:
        if not os.path.isfile(ids_file):
            raise RelabelError(f"stages.pool_ids={ids_file}: no such file")
        with open(ids_file, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f if line.strip()]
        wanted = lines[1:] if lines and lines[0] == "id" else lines
        wanted = [w.split(",")[0] for w in wanted]
        unknown = sorted(set(wanted) - set(index["id"].astype(str)))
        if unknown:
            raise RelabelError(f"{ids_file}: {len(unknown)} id(s) the store does not hold, e.g. {unknown[:5]}")
        return index.loc[index["id"].astype(str).isin(set(wanted)), "id"].astype(str).to_numpy()
    held_out = pair_sampling.validation_sources(index["source_id"].astype(str), val_fraction=val_fraction)
    return index.loc[~held_out, "id"].astype(str).to_numpy()


def read_teachers(path: str, lower_is_better: str = "") -> pd.DataFrame:
    """The pool's teacher table (long: video_id, teacher, score), oriented higher = better;
    an empty table for `path` "" (no gMAD pairs then)."""
    if not path:
        return pd.DataFrame({"video_id": pd.Series([], dtype=str), "teacher": pd.Series([], dtype=str),
                             "score": pd.Series([], dtype=np.float64)})
    if not os.path.isfile(path):
        raise RelabelError(f"stages.teachers={path}: no such teacher table")
    table = teacher_tables.read_teacher_table(path)
    lower = [t.strip() for t in lower_is_better.split(",") if t.strip()]
    unknown = sorted(set(lower) - set(table["teacher"]))
    if unknown:
        raise RelabelError(f"stages.lower_is_better names {unknown}, which {path} does not hold")
    return teacher_tables.orient(table, lower)


def check_inputs(config) -> list[str]:
    """Read what relabeling will read (the pool's ids, the teacher table) before any stage
    trains, so that a bad table fails in seconds, not after stage 1. Returns the teacher
    table's notes (TableWarnings: rows left out, and why). Raises RelabelError for a
    missing file, ids the store lacks, and a teacher table that scores none of the pool's
    videos (it would give no gMAD pair at all)."""
    from w2s_vqa import tables
    from w2s_vqa.store.format import VideoStore

    s = config.stages
    with VideoStore(config.data.store) as store:
        ids = pool_ids(store.index, val_fraction=float(s.val_fraction), ids_file=str(s.pool_ids))
    if not len(ids):
        raise RelabelError(f"{config.data.store}: no video of a training-side source to relabel "
                           f"(stages.val_fraction={s.val_fraction})")
    with tables.collect_notes() as notes:
        teachers = read_teachers(str(s.teachers), str(s.lower_is_better))
    if len(teachers) and not teachers["video_id"].isin(set(ids)).any():
        raise RelabelError(f"stages.teachers={s.teachers}: scores none of the {len(ids)} pool videos (its ids, e.g. "
                           f"{teachers['video_id'].iloc[0]!r}, are not the store's, e.g. {ids[0]!r}); check the table "
                           "and stages.pool_ids")
    return list(notes)


def predict_candidates(student, scorer, store, pool: pd.DataFrame, *, path: str, batch_size: int,
                       progress: bool = True) -> pd.DataFrame:
    """The student's answer on every synthetic pair of the pool (labels.misranked.synthetic_candidates),
    predicted pair by pair (score.predict.predict_pairs: p and the level logits); kept in `path`
    (process 0 writes it once done) so a rerun does not predict them again."""
    import jax

    from w2s_vqa.score import predict

    if workdir_lib.exists(path):
        return workdir_lib.read_parquet(path)  # a local file or an object (etils.epath)
    candidates = misranked.synthetic_candidates(pool)
    if not len(candidates):
        return candidates.assign(p=pd.Series([], dtype=np.float64))
    predicted = predict.predict_pairs(student, candidates, store, scorer.prompt, scorer.mesh, batch_size=batch_size,
                                      batch_sharding=scorer.batch_sharding, progress=progress)
    if jax.process_index() == 0:
        workdir_lib.makedirs(os.path.dirname(path))
        with workdir_lib.atomic_open(path, "wb") as f:
            predicted.to_parquet(f, index=False)
    return predicted


def relabel(scorer, store, config, *, stage: int, previous: pd.DataFrame, out_dir: str, student_key: str,
            student=None, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """The new pairs of stage `stage` (= k + 1), labeled by the stage-k student `scorer` holds.

    scorer: score.scorer.Scorer of the stage-k student and stages.anchors; store: the
    pool (VideoStore); config: the run config (stages.* says how many pairs of each
    kind, data.store which pool, stages.teachers its teacher table); previous: the
    earlier stages' training pairs (no new pair repeats one of them unless the report
    says so). Writes OUT/scores.csv, OUT/new_pairs.parquet and OUT/report.json (process
    0) and returns (new pairs, report). Raises RelabelError for a missing teacher table.
    """
    import jax

    from w2s_vqa.score import batch as batch_lib

    s = config.stages
    index = store.index
    ids = pool_ids(index, val_fraction=float(s.val_fraction), ids_file=str(s.pool_ids))
    if not len(ids):
        raise RelabelError(f"{store.path}: no video of a training-side source to relabel "
                           f"(stages.val_fraction={s.val_fraction})")
    from w2s_vqa import tables

    with tables.collect_notes() as table_notes:  # said once by check_inputs; kept in the report
        teachers = read_teachers(str(s.teachers), str(s.lower_is_better))
    teachers = teachers[teachers["video_id"].isin(set(ids))]
    # images="score": a still image the pool store holds is training data the student labels
    # like any other (kind "image" in scores.csv), not a figure to keep out of an SRCC.
    scored = batch_lib.score_store(scorer, store, ids=ids, parts_dir=os.path.join(out_dir, PARTS_DIR),
                                   student_key=student_key, progress=progress, images="score")
    scores = scored.table
    pool = index[index["id"].astype(str).isin(set(ids))]
    by_pairs = str(s.misranked_by) == "pairs"
    if by_pairs and student is None:
        raise RelabelError("stages.misranked_by='pairs' asks the student about each synthetic pair: pass the student")
    predictions = predict_candidates(student, scorer, store, pool, path=os.path.join(out_dir, PREDICTIONS_FILE),
                                     batch_size=scorer.batch_size, progress=progress) if by_pairs else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        new, report = mining.mine_stage_pairs(
            pool, scores, teachers, stage=stage, new_pairs=int(s.new_pairs),
            synthetic_per_kind=int(s.synthetic_per_kind), gmad_levels=int(s.gmad_levels),
            misranked=str(s.misranked), previous=previous, seed=int(config.seed) + stage,
            pair_predictions=predictions)
    report = {"stage": stage, "labeled_by": f"stage {stage - 1} student", "misranked_by": str(s.misranked_by),
              "pool_videos": int(len(ids)),
              "scored": int(len(scores)), "skipped": len(scored.skipped),
              "scoring_seconds": float(scored.seconds), **report}
    report["notes"] = list(table_notes) + list(report.get("notes", []))
    if jax.process_index() == 0:
        workdir_lib.makedirs(out_dir)
        with workdir_lib.atomic_open(os.path.join(out_dir, SCORES_FILE)) as f:
            scores.to_csv(f, index=False)
        pair_table.write_pairs(new, os.path.join(out_dir, NEW_PAIRS_FILE))
        workdir_lib.write_json(os.path.join(out_dir, REPORT_FILE), report)
    return new, report
