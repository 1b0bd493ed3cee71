"""Evaluation on labeled sets: the student's scores, and any teacher's, against human MOS.

A labeled set is a folder of videos plus a MOS table (`file,mos`, the format of
w2s_vqa/datasets/lists/*.csv: `file` names a video relative to the folder). For each set:

    student    every video scored against an anchor set (score.scorer: decoded as
               `w2s-vqa prepare` decodes, compared with the anchors, Thurstone scores);
               videos that cannot be decoded are skipped and listed
    teachers   a user's score tables (DOVER, Q-Align, ...; labels.teachers' long or wide
               format), matched to the set's rows by video id: the table's `file`, that
               name without its extension, or either without its folders
    compared   per set, every model on the videos all of its models scored (the student's
               skipped files and a teacher table's gaps shrink it for every model, and
               the set's notes name what each model lacks), or with `subsets` each
               model on its own videos
    metrics    per model and set, on those videos (metrics.mos_metrics):
               SRCC, KRCC, PLCC raw (as the paper reports), PLCC and RMSE after the
               4-parameter logistic, 95% bootstrap intervals; per model the paper's
               in-domain and out-of-distribution "overall" (means weighted by the videos
               evaluated) over the sets named as the paper's (overall_lib.SET_GROUPS)

`write_report` writes results.json (every figure), results.md (the tables), one scatter
plot per set (prediction against MOS, one panel per model, with the fitted logistic
curve; PNG through matplotlib's Agg canvas, no display needed), predictions.csv and
skipped.csv.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.score import metrics
from w2s_vqa.score import overall as overall_lib
from w2s_vqa.score.metric_warnings import MetricsWarning
from w2s_vqa.tables import TableWarning
from w2s_vqa.video.decode import IMAGE, is_image_reason
# The sets themselves (their tables, the TFDS sets): one module, its names used by the verbs through this one.
from w2s_vqa.score.eval_sets import EvalError, EvalSet, read_eval_set, tfds_eval_sets, write_manifest  # noqa: F401

STUDENT = "student"
RESULTS_JSON = workdir_lib.RESULTS_JSON
RESULTS_MD = workdir_lib.RESULTS_MD
PREDICTIONS_FILE = "predictions.csv"
SKIPPED_FILE = "skipped.csv"
PLOTS_DIR = "plots"
# Files named in one error before the rest are only counted.
MAX_NAMED = 10


def _keys(name: str) -> list[str]:
    """The names a score table may use for a video file: as given, without extension,
    without folders, without both."""
    base = name.rsplit("/", 1)[-1]
    return list(dict.fromkeys([name, os.path.splitext(name)[0], base, os.path.splitext(base)[0]]))


def teacher_predictions(scores: pd.DataFrame, table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{teacher: DataFrame(file, prediction)} for the set's rows each teacher scored.

    scores: a long teacher table (video_id, teacher, score; labels.teachers). A row's video
    matches the first of `_keys(file)` that the teacher scored. Teachers that scored none
    of the set's videos are left out.
    """
    out = {}
    for teacher, rows in scores.groupby("teacher", sort=True):
        by_id = dict(zip(rows["video_id"].astype(str), rows["score"].astype(np.float64)))
        files, values = [], []
        for file in table["file"]:
            key = next((k for k in _keys(file) if k in by_id), None)
            if key is not None:
                files.append(file)
                values.append(by_id[key])
        if files:
            out[str(teacher)] = pd.DataFrame({"file": files, "prediction": values})
    return out


# Ids named in a note on the videos a model lacks before the rest are only counted.
MAX_LACKING_NAMED = 5


def _scored(table: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """The set's rows (file, mos, prediction) that `predicted` scores with a finite number, in table order."""
    merged = table[["file", "mos"]].merge(predicted, on="file", how="inner")
    return merged[np.isfinite(merged["prediction"].to_numpy(np.float64))].reset_index(drop=True)


def _lacking_note(set_name: str, lacking: Mapping[str, Mapping], compared_on: int, subsets: bool) -> str:
    """One sentence: which models lack which videos the others scored, and what was compared."""
    parts = []
    for model, entry in lacking.items():
        named = ", ".join(entry["first"]) + (f" and {entry['count'] - len(entry['first'])} more"
                                             if entry["count"] > len(entry["first"]) else "")
        parts.append(f"{model} lacks {entry['count']} ({named})")
    if subsets:
        how = ("each model is evaluated on its own videos (subsets allowed), so the figures of models with "
               "different counts are not comparable")
    else:
        how = f"every model is evaluated on the {compared_on} videos all of them scored"
    return f"set {set_name}: {'; '.join(parts)} of the videos another model scored; {how}"


def evaluate(predictions: Mapping[str, Mapping[str, pd.DataFrame]], tables: Mapping[str, pd.DataFrame], *,
             bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0, subsets: bool = False) -> dict:
    """Every figure of every model on every set.

    predictions: {model: {set: DataFrame(file, prediction)}}; tables: {set: read_eval_set
    table}. The models of a set are those with an entry for it. A model's scored videos
    are the set's rows it predicts with a finite number. By default every model of a set
    is evaluated on the videos all of them scored (their intersection), so that the
    figures side by side rest on the same videos; `subsets` True evaluates each on its own
    scored videos instead. Fewer than 2 videos are reported as too few (an "error").

    Returns {"sets": {set: {"videos": table rows, "compared_on": videos every model
    scored (the intersection), "subsets": `subsets`, "lacking": {model: {"count", "first"
    (the first MAX_LACKING_NAMED ids, table order)}: the videos another model of the set
    scored that this one did not}, "notes": [sentences, each said once for the models it
    concerns: the lacking videos, and mos_metrics' notes (figures left out on a small set,
    library warnings) grouped by text], "models": {model: metrics.mos_metrics(...) +
    {"scored": its scored videos, "missing": table rows it did not score}}}}, "overall":
    {model: overall_lib.overall_by_group(...)}} ("videos" of a model: the videos its
    figures rest on). mos_metrics' own warnings are not raised again: they stand in the
    set's notes, which `eval` prints.
    """
    results: dict = {"sets": {}, "overall": {}}
    for set_name, table in tables.items():
        scored = {model: _scored(table, by_set[set_name]) for model, by_set in predictions.items()
                  if set_name in by_set}
        own = {model: set(rows["file"]) for model, rows in scored.items()}
        common = set.intersection(*own.values()) if own else set()
        union = set.union(*own.values()) if own else set()
        lacking = {}
        for model, files in own.items():
            gone = [f for f in table["file"] if f in union and f not in files]
            if gone:
                lacking[model] = {"count": len(gone), "first": [str(f) for f in gone[:MAX_LACKING_NAMED]]}
        entry = {"videos": int(len(table)), "compared_on": int(len(common)), "subsets": bool(subsets),
                 "lacking": lacking, "notes": [], "models": {}}
        if lacking:
            entry["notes"].append(_lacking_note(set_name, lacking, len(common), subsets))
        grouped: dict[str, list[str]] = {}
        for model, rows in scored.items():
            used = rows if subsets else rows[rows["file"].isin(common)]
            counts = {"scored": int(len(rows)), "missing": int(len(table) - len(rows))}
            if len(used) < 2:
                why = "fewer than 2 videos scored" if subsets or len(rows) < 2 else \
                    "fewer than 2 videos scored by every model"
                entry["models"][model] = {"videos": int(len(used)), **counts, "error": why}
                continue
            with warnings.catch_warnings(record=True) as said:  # their sentences are in the figures' notes
                warnings.simplefilter("always", MetricsWarning)
                figures = metrics.mos_metrics(used["prediction"], used["mos"], bootstrap=bootstrap,
                                              confidence=confidence, seed=seed, what=f"{set_name}, {model}")
            for record in said:
                if not issubclass(record.category, MetricsWarning):
                    warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
            for note in figures["notes"]:
                grouped.setdefault(note, []).append(model)
            entry["models"][model] = {**figures, **counts}
        entry["notes"] += [f"set {set_name} ({', '.join(models)}): {note}" for note, models in grouped.items()]
        results["sets"][set_name] = entry
    for model in predictions:
        per_set = {s: e["models"][model] for s, e in results["sets"].items()
                   if model in e["models"] and "srcc" in e["models"][model]}
        overall = overall_lib.overall_by_group(per_set)
        if overall:
            results["overall"][model] = overall
    return results


# ----------------------------------------------------------------------------- report
def _figure(value: float) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _with_interval(figures: Mapping, name: str) -> str:
    interval = figures.get(f"{name}_ci")
    text = _figure(figures.get(name))
    if interval and all(np.isfinite(interval)):
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def _count(f: Mapping, entry: Mapping) -> str:
    """"n of N" (the videos the figures rest on, of the set's), and the model's own count where it differs."""
    scored = f.get("scored", f["videos"])
    return f"{f['videos']} of {entry['videos']}" + (f" ({scored} scored)" if scored != f["videos"] else "")


def markdown(results: Mapping, *, notes: bool = True) -> str:
    """results.md: a per-set table (every model's figures, 95% intervals in brackets; the
    videos column says how many videos each figure rests on, of the set's, and the model's
    own count where it differs), the sets' notes (unless `notes` is False: the verb says
    them on stderr) and the paper's overall per model."""
    lines = ["## Per set", "",
             "| set | model | videos | SRCC | KRCC | PLCC | PLCC (logistic) | RMSE (logistic) |",
             "|---|---|---|---|---|---|---|---|"]
    for set_name, entry in results["sets"].items():
        for teacher, count in entry.get("teacher_videos", {}).items():
            if not count:  # a teacher with no row here has no figures, but the table says so
                lines.append(f"| {set_name} | {teacher} | 0 of {entry['videos']} | no video of the set in the "
                             "teacher table |||||")
        for model, f in entry["models"].items():
            if "srcc" not in f:
                lines.append(f"| {set_name} | {model} | {_count(f, entry)} | {f['error']} |||||")
                continue
            lines.append(f"| {set_name} | {model} | {_count(f, entry)} | "
                         + " | ".join(_with_interval(f, n) for n in ("srcc", "krcc", "plcc", "plcc_fitted",
                                                                     "rmse_fitted")) + " |")
    said = [note for entry in results["sets"].values() for note in entry.get("notes", [])]
    if notes and said:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in said]
    if results["overall"]:
        lines += ["", "## Overall (means over sets weighted by videos evaluated, as the paper's)", "",
                  "| model | group | sets | videos | SRCC | KRCC | PLCC | PLCC (logistic) |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, groups in results["overall"].items():
            for group, o in groups.items():
                sets = ", ".join(o["sets"]) + (f" (missing: {', '.join(o['missing'])})" if o["missing"] else "")
                lines.append(f"| {model} | {group.replace('_', '-')} | {sets} | {o['videos']} | "
                             + " | ".join(_figure(o[n]) for n in ("srcc", "krcc", "plcc", "plcc_fitted")) + " |")
    lines += paper_table(results)
    return "\n".join(lines) + "\n"


# The paper's overall SRCC / PLCC (means over its sets weighted by video count: in-domain over
# LSVQ-test, LSVQ-1080p, KoNViD-1k, LIVE-VQC, YouTube-UGC; out-of-distribution over LIVE-YT-Gaming,
# CGVDS, LIVE-YT-HFR, Waterloo-IVC-4K, KVQ). Source: docs/method.md, "Evaluation sets and
# headline numbers", from the paper (arXiv 2505.03631). docs/method.md gives no per-set rows, so the
# table shows none for these models.
PAPER_OVERALL: dict[str, dict[str, tuple[float, float]]] = {
    "final student (stage 3)": {"in_domain": (0.865, 0.872), "out_of_distribution": (0.745, 0.789)},
    "DOVER": {"in_domain": (0.842, 0.845), "out_of_distribution": (0.519, 0.569)},
    "Q-Align": {"in_domain": (0.844, 0.861), "out_of_distribution": (0.555, 0.606)},
    "FAST-VQA": {"in_domain": (0.838, 0.849), "out_of_distribution": (0.486, 0.512)},
    "MinimalisticVQA(IX)": {"in_domain": (0.849, 0.859), "out_of_distribution": (0.574, 0.622)},
}
PAPER_SOURCE = "docs/method.md 'Evaluation sets and headline numbers' (arXiv 2505.03631); overall rows only"


def paper_table(results: Mapping) -> list[str]:
    """The paper-style table as markdown lines: per model evaluated, SRCC / PLCC on each of the
    paper's sets present (overall_lib.SET_GROUPS order) and the in-domain and out-of-distribution
    overall (weighted by videos evaluated), then PAPER_OVERALL's rows beside them. No lines
    when no set is named as one of the paper's."""
    order = [name for names in overall_lib.SET_GROUPS.values() for name in names if name in results["sets"]]
    if not order:
        return []

    def pair(figures) -> str:
        if not figures or "srcc" not in figures:
            return "-"
        return f"{_figure(figures['srcc'])} / {_figure(figures['plcc'])}"

    groups = list(overall_lib.SET_GROUPS)
    lines = ["", "## Paper-style table (SRCC / PLCC; overall = mean weighted by videos)", "",
             "| model | " + " | ".join(order) + " | " + " | ".join(f"{g.replace('_', '-')} overall" for g in groups)
             + " |", "|---|" + "---|" * (len(order) + len(groups))]
    models = list(dict.fromkeys(m for entry in results["sets"].values() for m in entry["models"]))
    for model in models:
        cells = [pair(results["sets"][name]["models"].get(model)) for name in order]
        overall = results["overall"].get(model, {})
        cells += [pair(overall.get(group)) for group in groups]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    for model, figures in PAPER_OVERALL.items():
        cells = ["-"] * len(order) + [" / ".join(f"{v:.3f}" for v in figures[g]) for g in groups]
        lines.append(f"| {model} (paper) | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{n} {c}" for names in overall_lib.SET_GROUPS.values() for n, c in names.items())
    lines += ["", f"Paper rows: {PAPER_SOURCE}; on the paper's lists ({counts} videos)."]
    return lines


def plot_set(set_name: str, table: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], results: Mapping,
             path: str, *, mos_label: str = "MOS", title: str | None = None) -> str:
    """One PNG for a set: per model a panel of prediction (x) against MOS (y, `mos_label`) with
    the fitted map (metrics.fit_logistic) drawn over the predictions' range; returns `path`."""
    from matplotlib.figure import Figure  # the object interface: no pyplot state, Agg by savefig

    models = [m for m in predictions if "fit" in results["sets"][set_name]["models"].get(m, {})]
    compared = _compared_files(table, predictions, results["sets"][set_name])
    figure = Figure(figsize=(4.2 * max(1, len(models)), 4.0), layout="constrained")
    axes = figure.subplots(1, max(1, len(models)), squeeze=False)[0]
    for axis, model in zip(axes, models):
        merged = _scored(table, predictions[model])
        if compared is not None:
            merged = merged[merged["file"].isin(compared)]
        x, y = merged["prediction"].to_numpy(np.float64), merged["mos"].to_numpy(np.float64)
        f = results["sets"][set_name]["models"][model]
        axis.scatter(x, y, s=8 if len(x) > 200 else 20, alpha=0.6, edgecolors="none")
        grid = np.linspace(x.min(), x.max(), 200)
        fit = metrics.MosFit(f["fit"]["kind"], tuple(f["fit"]["params"]))
        axis.plot(grid, fit(grid), color="C3", linewidth=1.5, label=f"{f['fit']['kind']} fit")
        axis.set_title(f"{model}: SRCC {_figure(f['srcc'])}, PLCC {_figure(f['plcc'])}", fontsize=10)
        axis.set_xlabel("prediction")
        axis.set_ylabel(mos_label)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(title or f"{set_name} ({len(table)} videos)")
    workdir_lib.makedirs(workdir_lib.parent(workdir_lib.absolute(path)))
    with workdir_lib.atomic_open(path, "wb") as f:  # a local file, or the object itself in a bucket
        figure.savefig(f, format="png", dpi=100)
    return path


def _compared_files(table: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], entry: Mapping) -> set | None:
    """The files every model of a set scored (what `evaluate` compared them on), or None
    when each model was evaluated on its own (`subsets`)."""
    if entry.get("subsets", False) or not predictions:
        return None
    return set.intersection(*(set(_scored(table, p)["file"]) for p in predictions.values()))


def write_report(results: Mapping, predictions: Mapping[str, Mapping[str, pd.DataFrame]],
                 tables: Mapping[str, pd.DataFrame], out_dir: str,
                 skipped: Sequence[Mapping] = ()) -> dict[str, str]:
    """Write results.json, results.md, predictions.csv (set, model, file, prediction, mos,
    compared: whether the row is among the videos the model's figures rest on),
    skipped.csv (set, file, path, reason) and plots/<set>.png into `out_dir`; returns
    {"json", "markdown", "predictions", "skipped", "plots": {set: path}}. `out_dir` may be
    a URL (gs://...): each file is written through w2s_vqa.workdir, results.json last, so
    that a reader who finds it finds the rest."""
    workdir_lib.makedirs(out_dir)
    paths = {"json": workdir_lib.join(out_dir, RESULTS_JSON), "markdown": workdir_lib.join(out_dir, RESULTS_MD),
             "predictions": workdir_lib.join(out_dir, PREDICTIONS_FILE),
             "skipped": workdir_lib.join(out_dir, SKIPPED_FILE)}
    workdir_lib.write_text(paths["markdown"], markdown(results))
    rows = []
    for s in tables:
        present = {m: by_set[s] for m, by_set in predictions.items() if s in by_set}
        compared = _compared_files(tables[s], present, results["sets"][s])
        for m, predicted in present.items():
            used = set(_scored(tables[s], predicted)["file"])
            rows.append(predicted.merge(tables[s][["file", "mos"]], on="file", how="left").assign(
                set=s, model=m, compared=lambda d: d["file"].isin(used if compared is None else used & compared)))
    columns = ["set", "model", "file", "prediction", "mos", "compared"]
    with workdir_lib.atomic_open(paths["predictions"]) as f:
        (pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)).to_csv(f, index=False)
    with workdir_lib.atomic_open(paths["skipped"]) as f:
        pd.DataFrame(list(skipped), columns=["set", "file", "path", "reason"]).to_csv(f, index=False)
    paths["plots"] = {s: plot_set(s, tables[s], {m: p[s] for m, p in predictions.items() if s in p}, results,
                                  workdir_lib.join(out_dir, PLOTS_DIR, f"{s}.png")) for s in tables}
    workdir_lib.write_json(paths["json"], results)
    return paths


# ----------------------------------------------------------------------------- the whole evaluation
ScoreSet = Callable[[EvalSet, pd.DataFrame], tuple[pd.DataFrame, list[dict]]]


def run_eval(sets: Sequence[EvalSet], out_dir: str, *, score_set: ScoreSet | None = None,
             teacher_scores: pd.DataFrame | None = None, bootstrap: int = 1000, seed: int = 0,
             write: bool = True, teacher_source: str = "", subsets: bool = False) -> dict:
    """Evaluate the student (`score_set`) and the teachers (`teacher_scores`) on `sets`.

    score_set(eval_set, table) -> (DataFrame(file, prediction), skipped [{file, path,
    reason}]) scores one set's videos (main/eval.py builds it from score.scorer); None
    evaluates the teachers alone, and then the folders are not read. teacher_scores: a
    long teacher table (labels.teachers.read_teacher_table); `teacher_source` names the
    file(s) it was read from, for messages. Every set's table is read and checked before
    anything is scored, so a bad table costs no scoring time. `write` False computes
    without writing (the other processes of a multi-host run). `subsets`: as `evaluate`
    (False: every model of a set on the videos all of them scored).

    results["sets"][set]["teacher_videos"] gives, per teacher, how many of the set's videos
    its rows matched (`teacher_predictions`). A set none of whose videos any teacher row
    names gets one `tables.TableWarning` naming the table and the set (the verb prints it
    as a warning); when that holds for every set and there is no student, EvalError
    naming the table: there would be nothing to report.

    results["images"][set] = {"scored", "skipped"}: the set's still images the student
    scored and left out (student_score_set's `images`).

    Returns {"results", "paths" (empty unless written), "skipped"}. Raises EvalError for
    repeated set names, nothing to evaluate, and as `read_eval_set` does.
    """
    names = [s.name for s in sets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EvalError(f"set name(s) given twice: {repeated}")
    if score_set is None and teacher_scores is None:
        raise EvalError("nothing to evaluate: give a student (--checkpoint or --hf) or a teacher table (--teachers)")
    if teacher_scores is not None and STUDENT in set(teacher_scores["teacher"].astype(str)):
        raise EvalError(f"a teacher table names a teacher '{STUDENT}', the name of the student's row; rename it")
    tables = {s.name: read_eval_set(s, check_files=score_set is not None) for s in sets}
    teacher_found = {} if teacher_scores is None else _match_teachers(
        teacher_scores, tables, teacher_source or "the teacher table", student=score_set is not None)
    predictions: dict[str, dict[str, pd.DataFrame]] = {}
    skipped: list[dict] = []
    if score_set is not None:
        predictions[STUDENT] = {}
        for s in sets:
            scored, lost = score_set(s, tables[s.name])
            predictions[STUDENT][s.name] = scored
            skipped += [{"set": s.name, **entry} for entry in lost]
    for set_name, found in teacher_found.items():
        for teacher, scored in found.items():
            predictions.setdefault(teacher, {})[set_name] = scored
    results = evaluate(predictions, tables, bootstrap=bootstrap, seed=seed, subsets=subsets)
    if teacher_scores is not None:
        teachers = sorted(set(teacher_scores["teacher"].astype(str)))
        for set_name, found in teacher_found.items():
            results["sets"][set_name]["teacher_videos"] = {t: int(len(found[t])) if t in found else 0
                                                           for t in teachers}
    results["skipped"] = {s.name: sum(1 for e in skipped if e["set"] == s.name) for s in sets}
    # Still images per set: scored (the student's predictions' "kind") and left out (images="skip").
    student_rows = predictions.get(STUDENT, {})
    results["images"] = {s.name: {
        "scored": int((student_rows[s.name]["kind"] == IMAGE).sum()) if "kind" in student_rows.get(s.name, ()) else 0,
        "skipped": sum(1 for e in skipped if e["set"] == s.name and is_image_reason(e.get("reason", "")))}
        for s in sets}
    paths = write_report(results, predictions, tables, out_dir, skipped) if write else {}
    return {"results": results, "paths": paths, "skipped": skipped}


def _match_teachers(teacher_scores: pd.DataFrame, tables: Mapping[str, pd.DataFrame], source: str, *,
                    student: bool) -> dict[str, dict[str, pd.DataFrame]]:
    """{set: teacher_predictions(...)}; one TableWarning per set no teacher row names, and
    EvalError naming `source` when no set has any and there is no `student`."""
    found = {name: teacher_predictions(teacher_scores, table) for name, table in tables.items()}
    unmatched = [name for name, by_teacher in found.items() if not by_teacher]
    if not unmatched:
        return found
    ids = pd.unique(teacher_scores["video_id"].astype(str))
    seen = ", ".join(f"'{i}'" for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    how = "a set's video is matched by its file name, without its extension or its folders"

    def example(name: str) -> str:
        files = tables[name]["file"]
        return f"e.g. {' or '.join(repr(k) for k in _keys(str(files.iloc[0])))}" if len(files) else "no videos"

    if not student and len(unmatched) == len(found):
        sets = ", ".join(f"{name} ({len(tables[name])} videos)" for name in unmatched)
        raise EvalError(f"{source}: the teacher table names none of the videos of {sets}, and there is no student "
                        f"to evaluate; {how} ({example(unmatched[0])}), and the table's ids are {seen}")
    for name in unmatched:
        warnings.warn(f"teacher table {source} names none of set {name}'s {len(tables[name])} videos; {how} "
                      f"({example(name)}), and the table's ids are {seen}; no teacher figures for {name}",
                      TableWarning, stacklevel=3)
    return found


def student_score_set(scorer, work_root: str, config=None, *, mode: str = "map", student_key: str = "",
                      workers: int = 0, progress: bool = True, images: str = "skip") -> ScoreSet:
    """The ScoreSet of a student (`run_eval`'s score_set): each set's videos decoded into
    work_root/<set>/store as the scorer's anchors were (batch.prepare_inputs), scored
    against them (batch.score_store, shard by shard into work_root/<set>/parts, so a rerun
    resumes), `mode` "map" or "paper". `config` gives the rest of data.* (a run config;
    default config.defaults()). `images`: a set's still images are skipped (listed with
    video.IMAGE_REASON) or scored as images, as `score` does (batch.score_store); the
    predictions carry a `kind` column. `eval` and `stages` evaluate through it."""
    from w2s_vqa.score import batch as batch_lib

    def score_set(eval_set: EvalSet, table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        work = workdir_lib.join(work_root, eval_set.name)
        if eval_set.source is not None:  # a built TFDS set: its records are scored as they are, no decoding
            store, lost = eval_set.source, list(getattr(eval_set.source, "skipped", []))
        else:  # the manifest and store on a file system (this host's scratch folder for a work root in a bucket)
            local = batch_lib.decode_dir(work)
            manifest = write_manifest(table, os.path.join(local, workdir_lib.MANIFEST_FILE))
            store, lost = batch_lib.prepare_inputs(manifest, local, scorer.anchors, config, workers=workers,
                                                   progress=progress)
        result = batch_lib.score_store(scorer, store, mode=mode, parts_dir=workdir_lib.join(work, "parts"),
                                       student_key=student_key, progress=progress, images=images)
        if eval_set.source is None:
            store.close()
        skipped = [{"file": e.get("id", ""), "path": e.get("path", ""), "reason": e.get("reason", "")}
                   for e in list(lost) + result.skipped]
        return pd.DataFrame({"file": result.table["id"].astype(str), "prediction": result.table["score"],
                             "kind": result.table["kind"]}), skipped

    return score_set
