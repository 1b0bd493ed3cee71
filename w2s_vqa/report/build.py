"""`build_report`: one static HTML page (Jinja2 template, autoescaped) with its images beside it."""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd

from w2s_vqa.report import frames as frames_lib
from w2s_vqa.report import gallery as gallery_lib
from w2s_vqa.report import plots
from w2s_vqa.report import runs as runs_lib
from w2s_vqa import workdir as workdir_lib

INDEX_FILE = "index.html"
IMAGES_DIR = "img"
REPORT_DIR = "report"


def default_out(path: str) -> str:
    """WORKDIR/report for a workdir; beside a score table, <table>.report."""
    path = workdir_lib.absolute(path)
    if os.path.isfile(path):
        return (path[:-4] if path.lower().endswith(".csv") else path) + ".report"
    return os.path.join(path, REPORT_DIR)


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))[:60] or "x"


def _count_rows(path: str | None) -> int | None:
    if not path or not os.path.exists(str(path)):
        return None
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    try:
        return int(len(gallery_lib.read_table(str(path))))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------ sections
def stage_table(run: runs_lib.Run) -> dict | None:
    """Rows per stage: steps, pairs, new pairs, last validation figures, each evaluated set's
    SRCC/PLCC with intervals and the paper's overall groups; the paper's rows when the sets are
    the paper's. Every figure keeps its value as read (the template prints 3 decimals)."""
    stages = run.stages
    if not stages:
        return None
    # Over all pairs here; per origin in `origin_accuracy`'s table.
    val_keys = sorted({k for s in stages for k in s.val if k.count("/") == 2 and k.split("/")[1] == "all"
                       and k.endswith(("direction_accuracy", "five_way_accuracy"))})
    sets = list(dict.fromkeys(n for s in stages if s.eval for n in s.eval.get("sets", {})))
    groups = list(dict.fromkeys(g for s in stages if s.eval for g in s.eval.get("overall", {}).get("student", {})))
    rows = []
    for i, s in enumerate(stages):
        previous = stages[i - 1] if i else None
        new = (previous.relabel or {}).get("pairs") if previous is not None and previous.relabel else None
        row = {"stage": s.number, "steps": s.steps, "stopped": s.stopped, "pairs": _count_rows(s.pairs),
               "new_pairs": new, "val": {k: _finite(s.val.get(k)) for k in val_keys}, "sets": {}, "overall": {}}
        for name in sets:
            f = ((s.eval or {}).get("sets", {}).get(name, {}).get("models", {}).get("student", {}))
            row["sets"][name] = {k: f.get(k) for k in ("srcc", "plcc", "srcc_ci", "plcc_ci", "videos")} \
                if "srcc" in f else None
        for g in groups:
            o = (s.eval or {}).get("overall", {}).get("student", {}).get(g)
            row["overall"][g] = {"srcc": o.get("srcc"), "plcc": o.get("plcc")} if o else None
        rows.append(row)
    paper = _paper_rows(sets, groups)
    return {"val_keys": val_keys, "sets": sets, "groups": groups, "rows": rows, "paper": paper}


def _paper_rows(sets: list[str], groups: list[str]) -> dict | None:
    """The paper's overall rows (score.evaluate.PAPER_OVERALL) when a set is one of the paper's."""
    try:
        from w2s_vqa.score import evaluate
        from w2s_vqa.score import overall as overall_lib
    except ImportError:
        return None
    paper_sets = {n for names in overall_lib.SET_GROUPS.values() for n in names}
    if not set(sets) & paper_sets or not groups:
        return None
    return {"rows": {m: {g: f.get(g) for g in groups} for m, f in evaluate.PAPER_OVERALL.items()},
            "source": evaluate.PAPER_SOURCE}


def short_rule(rule: str) -> str:
    """'gmad:noise:student_attacks' -> 'gMAD, student attacks noise'; 'misranked' -> 'misranked synthetic'."""
    if rule.startswith("gmad:") and rule.count(":") >= 2:
        _, teacher, direction = rule.split(":", 2)
        return (f"gMAD, student attacks {teacher}" if direction == "student_attacks"
                else f"gMAD, {teacher} attacks the student" if direction == "teacher_attacks"
                else f"gMAD {teacher} {direction}")
    return "misranked synthetic" if rule == "misranked" else rule


def stage_changes(run: runs_lib.Run) -> list[dict]:
    """Per stage, in words: what it trained on and from what, and what its student picked for the
    next stage ("lines"), and the shortfalls relabeling noted ("notes")."""
    out = []
    for i, s in enumerate(run.stages):
        lines = []
        if i == 0:
            lines.append(f"trains from the config's starting point on {s.pairs or 'its pair table'}")
        else:
            lines.append(f"starts from stage {run.stages[i - 1].number}'s final parameters and trains on "
                         f"stage {run.stages[i - 1].number}'s table plus the pairs its student picked")
        r = s.relabel or {}
        if r:
            rules = ", ".join(f"{n} {short_rule(k)}" for k, n in (r.get("by_rule") or {}).items())
            lines.append(f"its student scored {r.get('scored', '?')} of {r.get('pool_videos', '?')} pool videos and "
                         f"picked {r.get('pairs', '?')} pairs for stage {r.get('stage', s.number + 1)}: {rules}")
            agreement = {t: a for t, a in (r.get("teacher_agreement") or {}).items()
                         if a and a.get("direction_agreement") is not None}
            if agreement:
                lines.append("the new real pairs' labels agree in direction with " + ", ".join(
                    f"{t} on {a['direction_agreement']:.0%} of {a.get('pairs', '?')}" for t, a in agreement.items()))
        out.append({"stage": s.number, "lines": lines, "notes": [str(n) for n in r.get("notes", [])]})
    return out


def finetune_table(run: runs_lib.Run) -> dict | None:
    """A finetune run's splits (results.json "splits") and their medians: SRCC / PLCC of the
    weak-to-strong checkpoint ("w2s") and of the fine-tuned student ("finetuned")."""
    if run.kind != "finetune" or not run.results:
        return None
    rows = [{"split": s.get("split"), "train_videos": s.get("train_videos"), "test_videos": s.get("test_videos"),
             "train_pairs": s.get("train_pairs"), "steps": s.get("steps"),
             "before": s.get("w2s") or {}, "after": s.get("finetuned") or {}} for s in run.results.get("splits", [])]
    median = run.results.get("median") or {}
    return {"rows": rows, "median": {"before": median.get("w2s") or {}, "after": median.get("finetuned") or {},
                                     "gain": median.get("gain") or {}},
            "set": run.results.get("set"), "done": run.results.get("splits_done"),
            "requested": run.results.get("splits_requested")}


def curves(run: runs_lib.Run, out_dir: str) -> str | None:
    series = [(f"{'split' if run.kind == 'finetune' else 'stage'} {s.number}", s.metrics)
              for s in run.stages if s.metrics is not None and len(s.metrics)]
    if not series:
        return None
    path = plots.training_curves(series, os.path.join(out_dir, IMAGES_DIR, "curves.png"),
                                 chain=run.kind != "finetune")
    return os.path.relpath(path, out_dir).replace(os.sep, "/") if path else None


def origin_accuracy(run: runs_lib.Run) -> dict | None:
    """The last validation direction accuracy per pair origin (val/<origin>/direction_accuracy) per stage."""
    origins = sorted({k.split("/")[1] for s in run.stages for k in s.val
                      if k.count("/") == 2 and k.endswith("/direction_accuracy")})
    if not origins:
        return None
    prefixes = sorted({k.split("/")[0] for s in run.stages for k in s.val if k.count("/") == 2})
    rows = [{"stage": s.number, "values": {(p, o): _finite(s.val.get(f"{p}/{o}/direction_accuracy"))
                                           for p in prefixes for o in origins}} for s in run.stages]
    return {"origins": origins, "prefixes": prefixes, "rows": rows}


def evaluations(run: runs_lib.Run, out_dir: str) -> list[dict]:
    """Per evaluated stage (or the eval run itself): the set table and the scatter plots eval drew
    (plots/<set>.png, prediction against MOS with the fitted logistic), copied beside the report."""
    entries = [(f"stage {s.number}" if run.kind != "finetune" else f"split {s.number}", s.eval, s.eval_dir)
               for s in run.stages if s.eval]
    if run.eval:
        entries.append(("evaluation", run.eval, run.eval_dir))
    out = []
    for name, results, folder in entries:
        sets = []
        for set_name, entry in results.get("sets", {}).items():
            models = [{"model": m, **{k: f.get(k) for k in ("videos", "srcc", "plcc", "krcc", "plcc_fitted",
                                                            "rmse_fitted", "srcc_ci", "plcc_ci", "error")}}
                      for m, f in entry.get("models", {}).items()]
            plot = os.path.join(folder, "plots", f"{set_name}.png") if folder else ""
            image = None
            if os.path.isfile(plot):
                target = os.path.join(out_dir, IMAGES_DIR, f"eval_{_slug(name)}_{_slug(set_name)}.png")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(plot, target)
                image = os.path.relpath(target, out_dir).replace(os.sep, "/")
            sets.append({"name": set_name, "videos": entry.get("videos"), "models": models, "plot": image})
        overall = [{"model": m, "group": g, **{k: o.get(k) for k in ("sets", "videos", "srcc", "plcc")}}
                   for m, groups in results.get("overall", {}).items() for g, o in groups.items()]
        out.append({"name": name, "sets": sets, "overall": overall})
    return out


def per_distortion(table: pd.DataFrame) -> list[dict] | None:
    """Per simulator: the mean over sources of the SRCC between the scores and the known order
    (level 0 best) of the source's pristine video and its variants (scipy.stats.spearmanr; a
    group whose SRCC is undefined counts as 0, as the demo counts it). None without the columns."""
    if not {"source_id", "distortion", "level", "score"} <= set(table.columns):
        return None
    import scipy.stats

    values: dict[str, list[float]] = {}
    for _, rows in table.groupby("source_id"):
        pristine = rows[rows["level"] == 0]
        for name, variants in rows[rows["level"] > 0].groupby("distortion"):
            group = pd.concat([pristine, variants])
            if len(group) < 2:
                continue
            value = scipy.stats.spearmanr(group["score"], -group["level"]).statistic
            values.setdefault(str(name), []).append(0.0 if not np.isfinite(value) else float(value))
    return [{"distortion": k, "sources": len(v), "srcc": float(np.mean(v))} for k, v in sorted(values.items())]


def score_sections(run: runs_lib.Run, out_dir: str, strips) -> list[dict]:
    out = []
    for name, path in run.scores.items():
        try:
            table = gallery_lib.read_table(path)
        except (OSError, ValueError) as e:
            run.notes.append(f"{path}: could not be read ({e})")
            continue
        if "score" not in table.columns or not len(table):
            continue
        image = plots.score_histogram(table["score"].to_numpy(np.float64),
                                      os.path.join(out_dir, IMAGES_DIR, f"scores_{_slug(name)}.png"),
                                      title=f"{name}: {len(table)} videos")
        scores = pd.to_numeric(table["score"], errors="coerce")
        out.append({"name": name, "path": path, "videos": int(len(table)), "scored": int(scores.notna().sum()),
                    "plot": os.path.relpath(image, out_dir).replace(os.sep, "/"),
                    "extremes": gallery_lib.score_extremes(table, strips),
                    "per_distortion": per_distortion(table)})
    return out


def overview(run: runs_lib.Run) -> dict:
    """The run in one paragraph's facts."""
    c = run.config
    facts: dict[str, Any] = {"kind": run.kind, "path": run.path}
    model = c.get("model", {})
    facts["model"] = model.get("preset") or model.get("hf_dir") or None
    data = c.get("data", {})
    facts["store"] = run.store
    facts["videos"] = None
    if run.store and os.path.isfile(os.path.join(run.store, "index.parquet")):
        import pyarrow.parquet as pq

        facts["videos"] = int(pq.ParquetFile(os.path.join(run.store, "index.parquet")).metadata.num_rows)
    facts["frames"] = data.get("num_frames")
    facts["image_size"] = data.get("image_size")
    facts["batch_size"] = data.get("batch_size")
    facts["stages"] = [{"number": s.number, "steps": s.steps, "pairs": _count_rows(s.pairs),
                        "checkpoints": os.path.join(s.workdir, "checkpoints") if s.checkpoints else None,
                        "saved": s.checkpoints} for s in run.stages]
    facts["finetune"] = facts["median"] = None
    if run.kind == "finetune" and run.results:
        facts["finetune"] = {k: run.results.get(k) for k in ("set", "checkpoint", "step", "videos_used",
                                                              "splits_done", "splits_requested")}
        facts["median"] = run.results.get("median")
    return facts


# ------------------------------------------------------------------------ the page
GENERATOR = '<meta name="generator" content="w2s-vqa report">'


def _clear_previous(out_dir: str) -> None:
    """Remove the pictures of an earlier report in out_dir (a rerun leaves no stale one); refuse
    a folder whose img/ or frames/ this module did not write (ReportError naming it)."""
    ours = False
    index = os.path.join(out_dir, INDEX_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8", errors="replace") as f:
            ours = GENERATOR in f.read(4096)
    subs = [os.path.join(out_dir, sub) for sub in (IMAGES_DIR, frames_lib.FRAMES_DIR)]
    if not ours and any(os.path.exists(p) for p in subs + [index]):
        raise runs_lib.ReportError(f"{out_dir}: holds files a report did not write (index.html, img/ or frames/); "
                                   "give --out an empty or new folder")
    os.makedirs(out_dir, exist_ok=True)
    for path in subs:
        shutil.rmtree(path, ignore_errors=True)


def build_report(path: str, out_dir: str | None = None, *, per_group: int = 8, seed: int = 0,
                 store: str | None = None, frames: int = 4) -> dict:
    """Write out_dir/index.html (default: `default_out(path)`) for the run at `path`, with its
    images in out_dir/img and frame strips in out_dir/frames. Reads the run, never writes
    into it (but for out_dir, when that lies inside). `store` overrides the store the frames
    come from. Returns {"index", "kind", "sections": {name: bool}, "images", "pairs_shown",
    "frames_missing", "notes", "seconds"}. Raises ReportError for a path that holds no run."""
    import jinja2

    start = time.time()
    run = runs_lib.read_run(path)
    out_dir = workdir_lib.absolute(out_dir or default_out(path))
    if store:
        run.store = store
    _clear_previous(out_dir)
    strips = frames_lib.FrameStrips(run.store, out_dir, frames=frames)
    try:
        teachers = gallery_lib.read_teachers(run.teachers)
        galleries = []
        for stage in run.stages:
            if run.kind == "finetune":
                continue
            g = gallery_lib.stage_gallery(stage, strips, teachers, per_group=per_group, seed=seed,
                                          lower_is_better=run.lower_is_better)
            if g:
                galleries.append({"stage": stage.number, **g})
        context = {
            "run": run, "overview": overview(run), "table": stage_table(run) if run.kind != "finetune" else None,
            "finetune": finetune_table(run),
            "changes": stage_changes(run) if run.kind in ("stages", "demo") else [],
            "curves": curves(run, out_dir), "origins": origin_accuracy(run),
            "evaluations": evaluations(run, out_dir), "galleries": galleries,
            "scores": score_sections(run, out_dir, strips), "demo": run.demo,
            "frames_available": strips.available, "frames_errors": strips.errors[:5],
            "frames_missing": strips.missing, "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        strips.close()
    environment = jinja2.Environment(loader=jinja2.PackageLoader("w2s_vqa.report", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["num"] = _format_number
    environment.filters["ci"] = _format_interval
    environment.filters["metric"] = metric_name
    environment.filters["exact"] = lambda v: "" if _finite(v) is None else repr(float(v))
    html = environment.get_template("index.html.j2").render(**context)
    index = os.path.join(out_dir, INDEX_FILE)
    with open(index + ".tmp", "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(index + ".tmp", index)
    images = sum(len(files) for sub in (IMAGES_DIR, frames_lib.FRAMES_DIR)
                 for _, _, files in os.walk(os.path.join(out_dir, sub)))
    sections = {"overview": True, "stage_table": context["table"] is not None or context["finetune"] is not None, "curves": bool(context["curves"]),
                "evaluation": bool(context["evaluations"] or context["origins"] or context["demo"]),
                "gallery": bool(galleries), "scores": bool(context["scores"])}
    return {"index": index, "kind": run.kind, "sections": sections, "images": images,
            "pairs_shown": sum(len(g["cards"]) for gallery in galleries for g in gallery["groups"]),
            "frames_missing": strips.missing, "notes": run.notes, "seconds": time.time() - start}


def metric_name(key: str) -> str:
    """'val/all/direction_accuracy' -> 'val direction accuracy (all)'."""
    parts = str(key).split("/")
    if len(parts) != 3:
        return str(key)
    return f"{parts[0]} {parts[2].replace('_', ' ')} ({parts[1]})"


def _format_number(value, digits: int = 3, signed: bool = False) -> str:
    value = _finite(value)
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _format_interval(interval) -> str:
    if not interval or len(interval) != 2 or any(_finite(v) is None for v in interval):
        return ""
    return f"[{float(interval[0]):.3f}, {float(interval[1]):.3f}]"
