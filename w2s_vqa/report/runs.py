"""What a workdir holds, read from its files alone (read-only).

Every verb leaves its evidence in files of known names; this module finds them and reads
them with pandas and json, never through the code that wrote them, so a report can be
made of any run on disk, also one made by an older release. Recognized workdirs, in
the order they are tried:

    demo      demo_out/: stages/ (a stages run), data/store, scoring/stage_k/heldout_scores.csv,
              summary.json (the demo's figures)
    finetune  finetune.json, results.json, split_NN/{train/metrics.jsonl, eval/}
    stages    stages.json and/or results.json with "stages", stage_k/ (a train run each),
              stage_k/relabel/{scores.csv, new_pairs.parquet, report.json}, stage_k/eval/
    eval      results.json with "sets", predictions.csv, plots/<set>.png
    train     metrics.jsonl and/or checkpoints/<step>/
    scores    a score table (CSV with id and score columns), as `w2s-vqa score` writes

A missing part is None (or empty): the report says so in one sentence.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import pandas as pd
from w2s_vqa import workdir as workdir_lib

KINDS = ("demo", "finetune", "stages", "eval", "train", "scores")


class ReportError(ValueError):
    """A path that holds no run the report knows; the message names the path and what was looked for."""


@dataclasses.dataclass
class Stage:
    """One stage of a stages run (or the one run of a `train` workdir, stage 1)."""

    number: int
    workdir: str
    steps: int | None = None  # from results.json, else the last metrics row, else the latest checkpoint
    checkpoints: list[int] = dataclasses.field(default_factory=list)
    metrics: pd.DataFrame | None = None  # metrics.jsonl rows (step + one column per key)
    val: dict = dataclasses.field(default_factory=dict)  # the last validation figures (results.json)
    pairs: str | None = None  # the stage's training pair table
    relabel: dict | None = None  # relabel/report.json: how this stage's student made the next stage's pairs
    new_pairs: str | None = None  # relabel/new_pairs.parquet
    scores: str | None = None  # relabel/scores.csv: this stage's student's scores of the pool
    eval: dict | None = None  # eval/results.json
    eval_dir: str | None = None
    stopped: str | None = None


@dataclasses.dataclass
class Run:
    kind: str  # one of KINDS
    path: str
    config: dict = dataclasses.field(default_factory=dict)  # the run's saved config (JSON), {} when none
    stages: list[Stage] = dataclasses.field(default_factory=list)
    results: dict | None = None  # stages' or finetune's results.json
    eval: dict | None = None  # an eval output's results.json
    eval_dir: str | None = None
    store: str | None = None  # the video store the frames come from
    teachers: str | None = None  # the pool's teacher table
    lower_is_better: list[str] = dataclasses.field(default_factory=list)
    scores: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> score table (CSV)
    demo: dict | None = None  # the demo's summary.json
    notes: list[str] = dataclasses.field(default_factory=list)  # what could not be read, one line each


def read_json(path: str) -> dict | None:
    """The JSON object in `path`, None when the file is missing; ReportError naming a file that is not JSON."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ReportError(f"{path}: not JSON ({e})") from None


def read_metrics(path: str) -> pd.DataFrame | None:
    """metrics.jsonl as a table (step + one column per logged key, NaN where a row lacks it);
    lines cut short by a kill are skipped. None when the file is missing or empty."""
    if not os.path.isfile(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return pd.DataFrame(rows).sort_values("step", kind="stable").reset_index(drop=True) if rows else None


def checkpoint_steps(workdir: str) -> list[int]:
    """The saved steps under workdir/checkpoints (Orbax's one folder per step)."""
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def saved_config(workdir: str, steps: list[int]) -> dict:
    """The config a training run saved with its latest checkpoint (Orbax's JSON item
    checkpoints/<step>/config/...), {} when none can be read."""
    for step in reversed(steps):
        for path in sorted(glob.glob(os.path.join(workdir, "checkpoints", str(step), "config", "*"))):
            try:
                with open(path) as f:
                    value = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(value, dict) and "data" in value:
                return value
    return {}


def read_stage(number: int, workdir: str, entry: dict | None = None) -> Stage:
    """A stage (or a train run) from its folder and, when given, its row of results.json."""
    entry = entry or {}
    stage = Stage(number=number, workdir=workdir, checkpoints=checkpoint_steps(workdir))
    stage.metrics = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    stage.steps = entry.get("steps")
    if stage.steps is None and stage.metrics is not None:
        stage.steps = int(stage.metrics["step"].max())
    if stage.steps is None and stage.checkpoints:
        stage.steps = stage.checkpoints[-1]
    stage.val = dict(entry.get("val") or {})
    if not stage.val and stage.metrics is not None:  # the last logged value of every validation key
        for key in (k for k in stage.metrics.columns if "/" in k and not k.startswith(("train/", "learning_rate/"))):
            values = stage.metrics[key].dropna()
            if len(values):
                stage.val[key] = float(values.iloc[-1])
    stage.pairs = entry.get("pairs")
    stage.stopped = entry.get("stopped")
    relabel = os.path.join(workdir, "relabel")
    stage.relabel = read_json(os.path.join(relabel, "report.json"))
    stage.new_pairs = _existing(os.path.join(relabel, "new_pairs.parquet"))
    stage.scores = _existing(os.path.join(relabel, "scores.csv"))
    stage.eval = read_json(os.path.join(workdir, "eval", "results.json"))
    stage.eval_dir = os.path.join(workdir, "eval") if stage.eval else None
    return stage


def _existing(path: str) -> str | None:
    return path if os.path.exists(path) else None


def _stage_folders(path: str) -> dict[int, str]:
    found = {}
    for name in os.listdir(path):
        match = re.fullmatch(r"stage_(\d+)", name)
        if match and os.path.isdir(os.path.join(path, name)):
            found[int(match.group(1))] = os.path.join(path, name)
    return dict(sorted(found.items()))


def read_stages(path: str, kind: str = "stages") -> Run:
    run = Run(kind=kind, path=path)
    run.config = (read_json(os.path.join(path, "stages.json")) or {}).get("config", {})
    run.results = read_json(os.path.join(path, "results.json"))
    entries = {int(s["stage"]): s for s in (run.results or {}).get("stages", [])}
    folders = _stage_folders(path)
    for number in sorted(set(folders) | set(entries)):
        stage = read_stage(number, folders.get(number, os.path.join(path, f"stage_{number}")), entries.get(number))
        if stage.pairs is None:
            stage.pairs = (run.config.get("data", {}).get("pairs") if number == 1
                           else _existing(os.path.join(stage.workdir, "pairs_train.parquet")))
        run.stages.append(stage)
    data, stages = run.config.get("data", {}), run.config.get("stages", {})
    run.store = data.get("store") or None
    run.teachers = stages.get("teachers") or None
    run.lower_is_better = [t.strip() for t in str(stages.get("lower_is_better", "")).split(",") if t.strip()]
    return run


def read_run(path: str) -> Run:
    """The run at `path` (a workdir of any verb, or a score table). Raises ReportError
    naming the path and what was looked for when it holds none."""
    path = workdir_lib.absolute(os.fspath(path))
    if not os.path.exists(path):
        raise ReportError(f"{path}: no such file or folder")
    if os.path.isfile(path):
        return _read_scores_file(path)
    results = read_json(os.path.join(path, "results.json"))
    if os.path.isdir(os.path.join(path, "stages")) and os.path.isdir(os.path.join(path, "data")):
        return _read_demo(path)
    if os.path.exists(os.path.join(path, "finetune.json")):
        return _read_finetune(path, results)
    if os.path.exists(os.path.join(path, "stages.json")) or (results and "stages" in results) or _stage_folders(path):
        return read_stages(path)
    if results and "sets" in results:
        run = Run(kind="eval", path=path, eval=results, eval_dir=path)
        return run
    if os.path.exists(os.path.join(path, "metrics.jsonl")) or os.path.isdir(os.path.join(path, "checkpoints")):
        run = Run(kind="train", path=path)
        stage = read_stage(1, path)
        run.config = saved_config(path, stage.checkpoints)
        stage.pairs = run.config.get("data", {}).get("pairs") or None
        run.stages = [stage]
        run.store = run.config.get("data", {}).get("store") or None
        return run
    raise ReportError(f"{path}: no run found (looked for a stages run's stages.json or stage_1/, a training run's "
                      "metrics.jsonl or checkpoints/, an eval's or finetune's results.json, the demo's stages/ and "
                      "data/, or a score table CSV)")


def _read_demo(path: str) -> Run:
    run = read_stages(os.path.join(path, "stages"), kind="demo")
    run.path = path
    run.demo = read_json(os.path.join(path, "summary.json"))
    store = os.path.join(path, "data", "store")
    run.store = store if os.path.isdir(store) else run.store
    teachers = os.path.join(path, "data", "teachers.csv")
    run.teachers = teachers if os.path.isfile(teachers) else run.teachers
    for name, scores in sorted(_demo_scores(path).items()):
        run.scores[name] = scores
    return run


def _demo_scores(path: str) -> dict[str, str]:
    found = {}
    for scores in glob.glob(os.path.join(path, "scoring", "stage_*", "heldout_scores.csv")):
        number = os.path.basename(os.path.dirname(scores)).split("_")[-1]
        found[f"stage {number}"] = scores
    return found


def _read_finetune(path: str, results: dict | None) -> Run:
    run = Run(kind="finetune", path=path, results=results)
    run.config = (read_json(os.path.join(path, "finetune.json")) or {}).get("config", {})
    for folder in sorted(glob.glob(os.path.join(path, "split_*"))):
        number = int(folder.rsplit("_", 1)[-1]) if folder.rsplit("_", 1)[-1].isdigit() else len(run.stages)
        stage = read_stage(number, os.path.join(folder, "train"))
        stage.eval = read_json(os.path.join(folder, "eval", "results.json"))
        stage.eval_dir = os.path.join(folder, "eval") if stage.eval else None
        stage.pairs = _existing(os.path.join(folder, "train_pairs.parquet"))
        run.stages.append(stage)
    store = os.path.join(path, "store")
    run.store = store if os.path.isdir(store) else None
    return run


def _read_scores_file(path: str) -> Run:
    try:
        head = pd.read_csv(path, nrows=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a score table CSV ({e})") from None
    missing = sorted({"id", "score"} - set(head.columns))
    if missing:
        raise ReportError(f"{path}: a score table needs columns id and score; missing {missing}")
    run = Run(kind="scores", path=path, scores={"student": path})
    work = (path[:-4] if path.lower().endswith(".csv") else path) + ".work"
    store = os.path.join(work, "store")
    run.store = store if os.path.isdir(store) else None
    return run
