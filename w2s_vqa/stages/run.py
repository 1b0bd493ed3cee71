"""`w2s-vqa stages`: the weak-to-strong iterations in one resumable command.

    W/stage_1/           stage 1 trains on data.pairs (a `train` workdir: checkpoints/, metrics)
    W/stage_1/relabel/   the stage-1 student's scores of the pool, the new pairs, report.json
    W/stage_2/pairs_train.parquet
                         stage 1's table plus the new pairs (origin student:1 for gMAD
                         pairs, the simulator's kind for misranked synthetic pairs; stage 2)
    W/stage_2/           stage 2 trains from stage 1's final parameters (train.init_from;
                         a fresh optimizer unless stages.fresh_optimizer is False)
    ...
    W/stage_k/eval/      `eval` of the stage's student on stages.eval_sets (results.json, .md)
    W/results.md, W/results.json
                         one row per stage: its validation figures and each set's SRCC/PLCC

Resuming. Every step leaves a file that says it is done (the final checkpoint of a
stage, its relabel/report.json and the next stage's pair table, its eval/results.json);
a rerun of the same command skips what is done and continues where it stopped: inside a
stage's training from its last checkpoint (Trainer), inside relabeling from the last
scored shard (score.scorer). The parameters at the end equal an uninterrupted run's: the
training stream resumes at its position, scoring is deterministic and mining is seeded.

Multi-host: every process runs this sequence (training and scoring are collective);
process 0 writes the tables, and all wait for it before reading them.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys

from w2s_vqa import config as config_lib
from w2s_vqa import multihost
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.labels import pair_table
from w2s_vqa.store.settings import Settings

RESULTS_JSON = workdir_lib.RESULTS_JSON
RESULTS_MD = workdir_lib.RESULTS_MD
STAGE_DIR = workdir_lib.STAGE_DIR
RELABEL_DIR = "relabel"
EVAL_DIR = "eval"
TRAIN_PAIRS_FILE = workdir_lib.TRAIN_PAIRS_FILE
RUN_FILE = workdir_lib.STAGES_FILE  # the config a workdir's stages were run with
# Keys a rerun may change: those a training run may (config.RESUME_SAFE_KEYS) but the stage
# settings, which make other pairs; more stages may be asked for.
SAFE_KEYS = tuple(k for k in config_lib.RESUME_SAFE_KEYS if k not in ("stages.*", "finetune.*")) + (
    "stages.num_stages", "finetune.*")


class StagesError(config_lib.ConfigError):
    """A stages setting that cannot be used; the message names the key."""


@dataclasses.dataclass
class StageResult:
    stage: int
    workdir: str
    pairs: str  # the stage's training pair table
    steps: int
    trained_now: bool  # False when the stage was finished before this run
    stopped: str | None = None  # a signal stopped its training (the run stops there)
    exit_status: int = 0
    val: dict = dataclasses.field(default_factory=dict)  # the last validation figures
    relabel: dict | None = None  # the report of the relabeling that made stage + 1's pairs
    eval: dict | None = None  # eval's results of this stage's student


def stage_dir(workdir: str, stage: int) -> str:
    return workdir_lib.join(workdir_lib.absolute(workdir), STAGE_DIR.format(stage))


def stage_config(config, workdir: str, stage: int):
    """The training config of `stage`: stage 1 is `config` as given; a later stage trains on
    its own pair table for stages.num_steps (0: train.num_steps) from the stage before."""
    c = config.copy_and_resolve_references()
    if stage > 1:
        c.data.pairs = workdir_lib.join(stage_dir(workdir, stage), TRAIN_PAIRS_FILE)
        if int(config.stages.num_steps):
            c.train.num_steps = int(config.stages.num_steps)
        c.train.init_from = stage_dir(workdir, stage - 1)
        c.train.init_step = "latest"
        c.train.init_optimizer = not bool(config.stages.fresh_optimizer)
    return c


def check_config(config, num_stages: int) -> None:
    """StagesError naming the key for settings no stage can use, and AnchorError for
    stages.anchors made with other data settings than config.data (every one named),
    before anything runs."""
    s = config.stages
    if num_stages < 1:
        raise StagesError(f"--stages / stages.num_stages must be at least 1, got {num_stages}")
    if not config.data.store or not config.data.pairs:
        raise StagesError("stages need the pool and stage 1's pairs: data.store and data.pairs")
    if num_stages > 1:
        if not s.anchors:
            raise StagesError("relabeling scores the pool against anchors: set stages.anchors=DIR (`w2s-vqa anchors`)")
        if s.misranked not in ("direction", "level"):
            raise StagesError(f"stages.misranked must be 'direction' or 'level', got {s.misranked!r}")
        if s.misranked_by not in ("pairs", "scores"):
            raise StagesError(f"stages.misranked_by must be 'pairs' or 'scores', got {s.misranked_by!r}")
        for key in ("new_pairs", "gmad_levels"):
            if int(s[key]) < 1:
                raise StagesError(f"stages.{key} must be at least 1, got {s[key]}")
        if int(s.synthetic_per_kind) < 0:
            raise StagesError(f"stages.synthetic_per_kind must be >= 0, got {s.synthetic_per_kind}")
    for i, entry in enumerate(s.eval_sets):
        if len(entry) != 3:
            raise StagesError(f"stages.eval_sets[{i}] must be [name, folder, file,mos table], got {entry!r}")
    for key in ("anchors", "pool_ids", "teachers"):  # read only after stage 1 trains: checked now
        if (num_stages > 1 or key == "anchors") and s[key] and not os.path.exists(str(s[key])):
            raise StagesError(f"stages.{key}={s[key]}: no such {'folder' if key == 'anchors' else 'file'}")
    if tfds_names(config) and not s.manual_dir:
        raise StagesError("stages.eval_tfds needs stages.manual_dir (the sets' manual downloads, one folder per set)")
    if (len(s.eval_sets) or tfds_names(config)) and not s.anchors:
        raise StagesError("evaluating after each stage scores against anchors: set stages.anchors=DIR")
    if s.anchors:  # every stage's student reads videos as config.data says; the anchors must be made so
        from w2s_vqa.score.anchors import AnchorSet

        AnchorSet.load(str(s.anchors)).check_settings(Settings.from_json(config.data), mine="the config")


def tfds_names(config) -> list[str]:
    """The TFDS evaluation sets stages.eval_tfds names."""
    return [n.strip() for n in str(config.stages.eval_tfds).split(",") if n.strip()]


def evaluates(config) -> bool:
    """Whether each stage is evaluated on labeled sets (stages.eval_sets or eval_tfds)."""
    return bool(len(config.stages.eval_sets) or tfds_names(config))


def check_workdir(config, workdir: str, *, allow: bool | tuple[str, ...] = False) -> None:
    """Refuse a workdir whose stages ran with another config (W/stages.json; keys outside
    SAFE_KEYS, plus `allow` patterns, True for any), naming every difference, and a
    workdir another verb owns (a `finetune` run's finetune.json); record the config on the
    first run (process 0). Without it a rerun with other settings would return the old
    stages' results, or mix old and new stages. A workdir where no stage has saved a
    training step (`_saved_steps`: an earlier run refused or stopped before that) takes
    the new config instead, with a line on stderr: nothing made with the old one is kept
    there but the record."""
    if workdir_lib.exists(workdir_lib.join(workdir, workdir_lib.FINETUNE_FILE)):
        raise StagesError(f"{workdir}: holds a `w2s-vqa finetune` run ({workdir_lib.FINETUNE_FILE}); give stages "
                          "another --workdir")
    allowed = SAFE_KEYS + (() if allow is True else tuple(allow or ()))
    record = workdir_lib.RunRecord(workdir_lib.join(workdir, RUN_FILE), differences=lambda saved, now: (
        [] if allow is True else config_lib.config_differences(saved["config"], now["config"], allowed=allowed)))
    record.check({"config": config_lib.as_json(config)}, write=multihost.is_first(), error=StagesError,
                 finished=bool(_saved_steps(workdir)),
                 message="{dir}: its stages ran with another config: {changes}. Rerun with the saved values, use a "
                         "new --workdir, or pass --allow-config-change KEY ...")
    if record.replaced and multihost.is_first():
        print(f"note: {workdir}: no stage of its earlier run saved a step, so it takes this run's config "
              f"({'; '.join(record.replaced)})", file=sys.stderr, flush=True)


def _saved_steps(workdir: str) -> list[str]:
    """The stage checkpoint folders of `workdir` that hold a saved step (stage_k/checkpoints/<step>)."""
    held = []
    for stage in sorted(glob.glob(os.path.join(workdir, STAGE_DIR.format("[0-9]*")))):
        steps = os.path.join(stage, workdir_lib.CHECKPOINT_DIR)
        if os.path.isdir(steps) and any(name.isdigit() for name in os.listdir(steps)):
            held.append(steps)
    return held



def _finished(stage_workdir: str, num_steps: int) -> bool:
    from w2s_vqa.train.checkpoint import Checkpointer

    directory = workdir_lib.join(stage_workdir, workdir_lib.CHECKPOINT_DIR)
    if not workdir_lib.isdir(directory):
        return False
    checkpointer = Checkpointer(directory, async_save=False, read_only=True)
    try:
        return checkpointer.latest_step() == num_steps
    finally:
        checkpointer.close()


def _last_validation(stage_workdir: str) -> dict:
    """The last logged value of every evaluation metric (config.evals) of a stage's training."""
    from w2s_vqa.train.logging import read_metrics

    last: dict = {}
    if workdir_lib.exists(workdir_lib.join(stage_workdir, workdir_lib.METRICS_FILE)):
        for row in read_metrics(stage_workdir):
            last.update({k: v for k, v in row.items()
                         if k.count("/") >= 1 and not k.startswith(("train/", "learning_rate/"))})
    return last


def run_stages(config, workdir: str, *, num_stages: int | None = None, progress: bool = True,
               until: tuple[int, int] | None = None, allow_config_change: bool | tuple[str, ...] = False) -> dict:
    """Run (or finish) `num_stages` stages (default stages.num_stages) in `workdir`.

    `until` = (stage, step) stops that stage's training after that step as a signal would
    (tests and drills of resuming). `allow_config_change` lets a rerun differ from the
    workdir's config in those keys (True: any), as `train --allow-config-change`.
    Returns {"stages": [StageResult as dict], "results": path, "markdown": path,
    "stopped": stage or None, "exit_status", "notes"}. Raises StagesError for unusable
    settings, RelabelError for unusable relabel inputs, and what training, scoring and
    mining raise.
    """
    from w2s_vqa import sharding
    from w2s_vqa.score import anchors as anchors_lib
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.student_source import load_for_scoring
    from w2s_vqa.stages import relabel as relabel_lib
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.train import loop

    num_stages = int(config.stages.num_stages if num_stages is None else num_stages)
    check_config(config, num_stages)
    workdir = workdir_lib.absolute(workdir)
    if evaluates(config) and not workdir_lib.is_local(workdir):  # eval writes its outputs through local paths
        raise StagesError(f"--workdir {workdir}: stages.eval_sets / eval_tfds evaluate into the workdir through local "
                          "paths only; give a local or mounted (gcsfuse) workdir, or evaluate with `w2s-vqa eval`")
    first = multihost.is_first()
    check_workdir(config, workdir, allow=allow_config_change)
    multihost.barrier("stages.workdir")
    notes = relabel_lib.check_inputs(config) if num_stages > 1 else []
    anchors = anchors_lib.AnchorSet.load(config.stages.anchors) if config.stages.anchors else None
    mesh = sharding.mesh_from_config(config)
    results: list[StageResult] = []
    exit_status, stopped_at = 0, None

    for stage in range(1, num_stages + 1):
        c = stage_config(config, workdir, stage)
        here = stage_dir(workdir, stage)
        result = StageResult(stage=stage, workdir=here, pairs=str(c.data.pairs), steps=int(c.train.num_steps),
                             trained_now=False)
        # Training (resumes from its own checkpoints; a finished stage is only read).
        if not _finished(here, int(c.train.num_steps)):
            stop_after = until[1] if until and until[0] == stage else None
            info = loop.Trainer(c, here, allow_config_change=allow_config_change).run(until=stop_after)
            result.trained_now, result.steps = True, info.steps
            if info.stopped:
                result.stopped, result.exit_status = info.stopped, info.exit_status
                results.append(result)
                exit_status, stopped_at = info.exit_status, stage
                break
        result.val = _last_validation(here)

        student = key = None
        needs_student = stage < num_stages or evaluates(config)

        if needs_student:
            loaded = load_for_scoring(checkpoint=here, step="latest", mesh=mesh)
            student, prompt = loaded.student, loaded.prompt
            key = f"stage:{stage}:{here}:step {loaded.step}"  # what this stage's scoring parts are tied to

        # Evaluation on the configured sets, as `w2s-vqa eval` does.
        if evaluates(config):
            result.eval = _evaluate(config, c, here, student, prompt, mesh, key, write=first, progress=progress)

        # Relabeling: the pairs of the next stage.
        if stage < num_stages:
            next_pairs = workdir_lib.join(stage_dir(workdir, stage + 1), TRAIN_PAIRS_FILE)
            report_path = workdir_lib.join(here, RELABEL_DIR, relabel_lib.REPORT_FILE)
            if not (workdir_lib.exists(next_pairs) and workdir_lib.exists(report_path)):
                anchors.check_student(student.cfg, loaded.settings)
                scorer = scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=int(c.data.batch_size))
                previous = pair_table.read_pairs(c.data.pairs)
                with VideoStore(c.data.store) as store:
                    new, report = relabel_lib.relabel(scorer, store, config, stage=stage + 1, previous=previous,
                                                      out_dir=workdir_lib.join(here, RELABEL_DIR), student_key=key,
                                                      student=student, progress=progress)
                if first:
                    combined = _combine(previous, new)
                    if workdir_lib.is_local(next_pairs):
                        os.makedirs(os.path.dirname(next_pairs), exist_ok=True)
                        temporary = next_pairs.replace(".parquet", ".tmp.parquet")
                        pair_table.write_pairs(combined, temporary)
                        os.replace(temporary, next_pairs)
                    else:  # an object store: the final object is written whole (w2s_vqa.workdir)
                        pair_table.write_pairs(combined, next_pairs)
                multihost.barrier(f"stages.pairs_{stage + 1}")
            result.relabel = workdir_lib.read_json(report_path)
        results.append(result)

    summary = {"workdir": workdir, "stages": [dataclasses.asdict(r) for r in results],
               "stopped": stopped_at, "exit_status": exit_status, "notes": notes}
    if first:
        summary["results"] = workdir_lib.join(workdir, RESULTS_JSON)
        summary["markdown"] = workdir_lib.join(workdir, RESULTS_MD)
        workdir_lib.write_json(summary["results"], summary)
        workdir_lib.write_text(summary["markdown"], markdown(summary))
    return summary


def _combine(previous, new):
    """The earlier tables plus the new pairs, columns of both kept (missing values blank)."""
    import pandas as pd

    return pd.concat([previous, new], ignore_index=True)


def _evaluate(config, stage_config_, here, student, prompt, mesh, key, *, write: bool, progress: bool) -> dict:
    """`eval` of one stage's student on stages.eval_sets against stages.anchors, into here/eval
    (resumable: the sets' stores and scored shards stay in here/eval/work)."""
    from w2s_vqa.score import evaluate
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.anchors import AnchorSet

    out = os.path.join(here, EVAL_DIR)
    done = os.path.join(out, evaluate.RESULTS_JSON)
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    anchors = AnchorSet.load(config.stages.anchors)
    scorer = scorer_lib.Scorer(student, prompt, anchors, mesh, batch_size=int(stage_config_.data.batch_size))
    sets = [evaluate.EvalSet(str(n), str(folder), str(table)) for n, folder, table in config.stages.eval_sets]
    if tfds_names(config):  # built once (the first stage), with the anchors' settings
        sets += evaluate.tfds_eval_sets(tfds_names(config), str(config.stages.manual_dir),
                                        data_dir=str(config.stages.data_dir) or None, settings=anchors.settings,
                                        subset=str(config.stages.eval_subset),
                                        slowfast_weights=str(config.data.slowfast_weights))
    score_set = evaluate.student_score_set(scorer, os.path.join(out, "work"), stage_config_, student_key=key,
                                           progress=progress)
    return evaluate.run_eval(sets, out, score_set=score_set, bootstrap=0, write=write)["results"]


def _with_pairs(val: dict, key: str) -> str:
    """A validation accuracy with the pairs it rests on ("0.750 (12 pairs)"), "-" when absent."""
    if key not in val:
        return "-"
    pairs = val.get(key.replace("direction_accuracy", "direction_pairs"))
    return f"{val[key]:.3f}" + (f" ({int(pairs)} pair{'s' if int(pairs) != 1 else ''})" if pairs is not None else "")


def markdown(summary: dict) -> str:
    """One table, a row per stage: steps, its last validation figures and each evaluated
    set's SRCC / PLCC (with the in-domain and OOD overall where the sets give one)."""
    stages = summary["stages"]
    val_keys = sorted({k for s in stages for k in s["val"] if k.endswith("direction_accuracy")})
    set_names = list(dict.fromkeys(n for s in stages if s.get("eval") for n in s["eval"]["sets"]))
    groups = list(dict.fromkeys(g for s in stages if s.get("eval") for g in
                                s["eval"].get("overall", {}).get("student", {})))
    header = ["stage", "steps", "new pairs", *val_keys, *(f"{n} SRCC / PLCC" for n in set_names),
              *(f"{g.replace('_', '-')} overall" for g in groups)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in stages:
        new = "" if s["stage"] == 1 else "-"
        previous = next((p for p in stages if p["stage"] == s["stage"] - 1), None)
        if previous and previous.get("relabel"):
            new = str(previous["relabel"].get("pairs", "-"))
        row = [str(s["stage"]), str(s["steps"]) + (f" (stopped: {s['stopped']})" if s["stopped"] else ""),
               new or "stage 1 table", *(_with_pairs(s["val"], k) for k in val_keys)]
        for n in set_names:
            f = (s.get("eval") or {}).get("sets", {}).get(n, {}).get("models", {}).get("student", {})
            row.append(f"{f['srcc']:.3f} / {f['plcc']:.3f}" if "srcc" in f else "-")
        for g in groups:
            o = (s.get("eval") or {}).get("overall", {}).get("student", {}).get(g)
            row.append(f"{o['srcc']:.3f} / {o['plcc']:.3f}" if o else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
