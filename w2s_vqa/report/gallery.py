"""The pair gallery: which pairs a stage picked and why, with both videos' frames and scores.

A stage k of a stages run leaves (w2s_vqa.stages.run's layout):

    stage_k/relabel/new_pairs.parquet   the pairs it picked for stage k+1, column `rule`:
                                        "misranked" (a synthetic pair whose known order the
                                        stage-k student got wrong) or "gmad:<teacher>:<direction>"
    stage_k/relabel/scores.csv          the stage-k student's scores of the pool (id, score, stderr)
    the pool's teacher table            video_id, teacher, score (long) or one column per teacher

The gallery shows, per rule, `per_group` pairs: for gMAD the ones the attacker separates
most (the rule's reason to pick them), for misranked ones a seeded random draw; then a
seeded random draw of the stage's own training pairs ("the rest"). A table of 100k pairs
costs a read and a sample: only the shown pairs' videos are decoded.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from w2s_vqa.prompt import LEVELS

GMAD_TEXT = {
    "student_attacks": "gMAD, the student attacks, {teacher} defends: pairs {teacher} scores alike that the "
                       "student scores far apart",
    "teacher_attacks": "gMAD, {teacher} attacks, the student defends: pairs the student scores alike that "
                       "{teacher} scores far apart",
}
MISRANKED_TEXT = "misranked synthetic pairs: two levels of one simulator on one source, whose known order the " \
                 "student got wrong"
REST_TEXT = "a random sample of the pairs this stage trained on"


def read_table(path: str) -> pd.DataFrame:
    """A pair or score table by its extension (parquet, CSV, JSON lines); id columns as text."""
    ids = {c: str for c in ("id", "video_id", "first_id", "second_id", "source_id", "teacher")}
    if path.endswith(".parquet"):
        table = pd.read_parquet(path)
        return table.astype({c: str for c in ids if c in table.columns})
    if path.endswith((".jsonl", ".json")):
        table = pd.read_json(path, lines=True, dtype=ids)
        return table.astype({c: str for c in ids if c in table.columns})
    return pd.read_csv(path, dtype=ids, keep_default_na=False, na_values=[""])


def read_teachers(path: str | None) -> pd.DataFrame:
    """The teacher table in long form (video_id, teacher, score), as the file gives the scores
    (not re-oriented); empty when there is none. Wide tables (an id column, one column per
    teacher) are melted."""
    empty = pd.DataFrame({"video_id": pd.Series([], dtype=str), "teacher": pd.Series([], dtype=str),
                          "score": pd.Series([], dtype=np.float64)})
    if not path or not os.path.isfile(path):
        return empty
    table = read_table(path)
    if {"video_id", "teacher", "score"} <= set(table.columns):
        return table[["video_id", "teacher", "score"]].astype({"score": np.float64})
    key = next((c for c in ("video_id", "id", "file") if c in table.columns), None)
    if key is None:
        return empty
    long = table.melt(id_vars=[key], var_name="teacher", value_name="score").rename(columns={key: "video_id"})
    long["score"] = pd.to_numeric(long["score"], errors="coerce")
    return long.astype({"video_id": str, "teacher": str})


def describe_rule(rule: str) -> str:
    if rule == "misranked":
        return MISRANKED_TEXT
    if rule.startswith("gmad:"):
        _, teacher, direction = (rule.split(":", 2) + ["", ""])[:3]
        return GMAD_TEXT.get(direction, "gMAD ({direction}), teacher {teacher}").format(
            teacher=teacher, direction=direction)
    return rule


def _teacher_of(rule: str) -> str | None:
    return rule.split(":")[1] if rule.startswith("gmad:") and rule.count(":") >= 2 else None


def label_text(label: Any) -> str:
    """'second superior to first' for a five-way label index (prompt.LEVELS)."""
    try:
        return f"second {LEVELS[int(label)]}"
    except (ValueError, TypeError, IndexError):
        return str(label)


def pick(table: pd.DataFrame, rule: str, count: int, rng: np.random.Generator,
         student: pd.Series, teachers: dict[str, pd.Series]) -> pd.DataFrame:
    """The rows of `table` (one rule) the gallery shows: gMAD by the attacker's gap, largest
    first; otherwise a random draw, in table order."""
    if len(table) <= count:
        return table
    teacher = _teacher_of(rule)
    if teacher is not None:
        attacker = student if rule.endswith("student_attacks") else teachers.get(teacher)
        if attacker is not None:
            gap = (table["second_id"].map(attacker) - table["first_id"].map(attacker)).abs().fillna(-1.0)
            return table.loc[gap.sort_values(ascending=False, kind="stable").index[:count]]
    return table.iloc[np.sort(rng.choice(len(table), size=count, replace=False))]


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def cards(rows: pd.DataFrame, rule: str, strips, student: pd.Series, teachers: dict[str, pd.Series],
          student_name: str, lower_is_better=()) -> list[dict]:
    """One dict per pair, what the template shows (ids, strips, both models' scores, gaps, label, rule)."""
    teacher = _teacher_of(rule)
    teacher_scores = teachers.get(teacher) if teacher else None
    out = []
    for row in rows.itertuples(index=False):
        first, second = str(row.first_id), str(row.second_id)
        s1, s2 = _number(student.get(first)), _number(student.get(second))
        card = {"first_id": first, "second_id": second, "first_strip": strips.strip(first),
                "second_strip": strips.strip(second), "label": label_text(row.label),
                "origin": str(getattr(row, "origin", "")), "rule": rule, "student": student_name,
                "student_first": s1, "student_second": s2,
                "student_gap": None if s1 is None or s2 is None else s2 - s1,
                "teacher": teacher, "teacher_lower": teacher in set(lower_is_better), "teacher_first": None, "teacher_second": None, "teacher_gap": None}
        if teacher_scores is not None:
            t1, t2 = _number(teacher_scores.get(first)), _number(teacher_scores.get(second))
            card.update(teacher_first=t1, teacher_second=t2, teacher_gap=None if t1 is None or t2 is None else t2 - t1)
        out.append(card)
    return out


def stage_gallery(stage, strips, teachers: pd.DataFrame, *, per_group: int = 8, seed: int = 0,
                  lower_is_better=()) -> dict | None:
    """The gallery of one stage (runs.Stage): {"groups": [{rule, title, count, cards}],
    "summary": {rule: count}, "pairs": rows of the new table, "notes"}; None when the stage
    picked no pairs and has no training table. `lower_is_better`: teachers whose scores the
    run turned around (stages.lower_is_better); their cards say so."""
    rng = np.random.default_rng([seed, int(stage.number)])
    student = pd.Series(dtype=np.float64)
    if stage.scores:
        scores = read_table(stage.scores)
        student = scores.drop_duplicates("id").set_index("id")["score"].astype(np.float64)
    by_teacher = {str(t): rows.drop_duplicates("video_id").set_index("video_id")["score"]
                  for t, rows in teachers.groupby("teacher")}
    name = f"stage {stage.number} student"
    groups, summary, notes, total = [], {}, [], 0
    if stage.new_pairs:
        new = read_table(stage.new_pairs)
        total = len(new)
        rules = new["rule"].astype(str) if "rule" in new.columns else new["origin"].astype(str)
        counts = rules.value_counts(sort=False)
        order = sorted(counts.index, key=lambda r: (r != "misranked", r))
        for rule in order:
            summary[rule] = int(counts[rule])
            rows = pick(new[rules == rule], rule, per_group, rng, student, by_teacher)
            groups.append({"rule": rule, "title": describe_rule(rule), "count": int(counts[rule]),
                           "cards": cards(rows, rule, strips, student, by_teacher, name, lower_is_better)})
    if stage.pairs and os.path.exists(str(stage.pairs)):
        try:
            trained = read_table(str(stage.pairs))
        except (OSError, ValueError) as e:
            notes.append(f"{stage.pairs}: could not be read ({e})")
        else:
            rows = pick(trained, "rest", per_group, rng, student, by_teacher)
            groups.append({"rule": "rest", "title": REST_TEXT, "count": int(len(trained)),
                           "cards": cards(rows, "rest", strips, student, by_teacher, name)})
    if not groups:
        return None
    if not len(student):
        notes.append(f"No relabeling scored the pool with the stage-{stage.number} student (no relabel/scores.csv; "
                     "the last stage relabels nothing): its cards show the labels without student scores.")
    return {"groups": groups, "summary": summary, "pairs": total, "notes": notes}


def score_extremes(table: pd.DataFrame, strips, *, count: int = 4) -> dict:
    """The `count` lowest and highest scored videos of a score table, with strips."""
    scored = table[np.isfinite(pd.to_numeric(table["score"], errors="coerce"))].sort_values("score", kind="stable")

    def one(row) -> dict:
        low, high = _number(getattr(row, "low", None)), _number(getattr(row, "high", None))
        return {"id": str(row.id), "score": float(row.score), "low": low, "high": high, "strip": strips.strip(row.id)}

    return {"lowest": [one(r) for r in scored.head(count).itertuples(index=False)],
            "highest": [one(r) for r in scored.tail(count).iloc[::-1].itertuples(index=False)]}
