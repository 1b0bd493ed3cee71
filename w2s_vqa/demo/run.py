"""`w2s-vqa demo` (what `make demo` runs): two weak-to-strong stages on the tiny default.

    demo pool (real clips, variants, weak teachers, split pairs)
      -> withhold distortion kinds (WITHHELD) from all training, as unseen kinds of video
      -> anchors: K = 5 training videos by a stand-in MOS (below)
      -> `stages` with 2 stages: stage 1 trains the tiny student from scratch; its
         student scores the pool and labels hard cases (misranked synthetic pairs, gMAD
         pairs against each weak teacher); stage 2 trains from stage 1 on the larger table
      -> for stage 1, stage 2 and every weak teacher: direction accuracy on held-out
         pairs of the trained kinds and of the withheld kinds, and the scoring SRCC
      -> export the last stage's student to a Hugging Face directory
      -> summary.json (the figures) and the run's page, report/index.html (`w2s-vqa report`)

Withheld kinds and sources. Every variant made by a WITHHELD simulator is left out of
every pair table the stages train on (stage 1's teacher and synthetic pairs, and the
pool the stage-1 student relabels), and so are the validation sources (20%, the split
demo-data makes). The withheld simulators are the two that the best of the weak teachers
judges worst on the demo pool (its direction accuracy per simulator:
docs/2026-11-stages.md): against a simulator some teacher already ranks almost
perfectly, no student could be "above every teacher".

The figures. Direction accuracy on synthetic pairs whose level gap is above 1 (labels
superior or inferior), decisive pairs only: "trained kinds" over the validation
sources' pairs of the simulators the stages train on; "withheld kinds" over every
source's pairs of the withheld simulators (none of them in any training table). The
teachers are scored on exactly the same pairs (their score difference).

The scoring figure. The pool has no human scores, so the anchors carry a stand-in for
MOS built from what the pool does know, the distortion levels (`standin_mos`): a
training video at level l of a simulator with L levels gets 100 (1 - l / L), its
pristine source 100. `score.anchors.pick_anchors` picks K = 5 anchors among the training
videos of trained simulators by it (`w2s-vqa anchors`' rule); the same anchors serve
relabeling and the final scoring. Every held-out video (validation sources, every
simulator) is scored against them (`score.scorer`, the probit MAP on the stand-in's
scale); the figure is the mean, over held-out sources and simulators, of the SRCC
between the scores and the known order (level 0 best) inside each (source, simulator)
group (`labels.weak_teachers.srcc_report`), split into trained and withheld simulators.
The last printed line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from w2s_vqa import config as config_lib
from w2s_vqa import runtime
from w2s_vqa import tables
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.demo import pool as demo_data
from w2s_vqa.labels import origins
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.score import metrics

NUM_ANCHORS = 5  # the paper's K
NUM_STAGES = 2
# Simulators withheld from all training (the module docstring says why these).
WITHHELD = ("brighten", "stutter")
STAGES_DIR = "stages"
SCORING_DIR = "scoring"
SUMMARY_FILE = "summary.json"  # the figures of the last printed line, which `w2s-vqa report` shows
GROUPS = ("trained", "withheld")


def withheld_mask(index, withheld=WITHHELD) -> np.ndarray:
    """bool [N]: the index's videos made by a withheld simulator."""
    return index["distortion"].fillna("").astype(str).isin(list(withheld)).to_numpy()


def prepare_stage_inputs(index, paths: dict, out_dir: str, *, withheld=WITHHELD) -> dict:
    """The stage-1 tables without a withheld video, the relabel pool's ids (training-side
    sources, no withheld video) and the anchors. Returns their paths, the anchor set and
    the held-out masks."""
    import pandas as pd

    from w2s_vqa.store.format import VideoStore

    os.makedirs(out_dir, exist_ok=True)
    excluded = set(index.loc[withheld_mask(index, withheld), "id"].astype(str))
    files = {}
    for side in ("train", "val"):
        table = pair_table.read_pairs(paths[f"pairs_{side}"])
        keep = ~(table["first_id"].astype(str).isin(excluded) | table["second_id"].astype(str).isin(excluded))
        files[side] = os.path.join(out_dir, f"pairs_{side}_stage1.parquet")
        pair_table.write_pairs(table[keep].reset_index(drop=True), files[side])
    heldout = pair_sampling.validation_sources(index["source_id"].astype(str), val_fraction=demo_data.VAL_FRACTION)
    trained = ~withheld_mask(index, withheld)
    files["pool_ids"] = os.path.join(out_dir, "pool_ids.csv")
    pd.DataFrame({"id": index.loc[~heldout & trained, "id"].astype(str)}).to_csv(files["pool_ids"], index=False)
    with VideoStore(paths["store"]) as store:
        anchors = make_anchors(store, index[~heldout & trained], os.path.join(out_dir, "anchors"))
    files["anchors"] = os.path.join(out_dir, "anchors")
    return {"files": files, "anchors": anchors, "heldout": heldout}


def make_anchors(store, candidates, directory: str, k: int = NUM_ANCHORS):
    """K anchors among `candidates` (index rows) by their stand-in MOS, saved to `directory`."""
    from w2s_vqa.score import anchors as anchors_lib

    table = candidates.assign(mos=standin_mos(candidates))[["id", "mos"]]
    k = min(k, int(table["mos"].nunique()))
    if k < 2:
        raise ValueError(f"the demo pool's training videos have {k} distinct stand-in MOS values; anchors need 2")
    picked = anchors_lib.pick_anchors(table, k)
    coverage = anchors_lib.DEFAULT_COVERAGE
    rule = ("stand-in MOS 100 (1 - level / levels) of the demo pool's training videos (w2s_vqa.demo.run); "
            + anchors_lib.RULE.format(lo=(1 - coverage) / 2, hi=(1 + coverage) / 2))
    anchor_set = anchors_lib.AnchorSet.from_store(store, picked["id"], picked["mos"], rule=rule)
    anchor_set.save(directory, overwrite=True)
    return anchor_set


def evaluation_pairs(index, val_table, *, heldout, withheld=WITHHELD) -> dict:
    """{"trained": held-out sources' decisive synthetic pairs of trained simulators,
    "withheld": every source's decisive synthetic pairs of withheld simulators}."""
    kinds = origins.SYNTHETIC
    excluded = set(index.loc[withheld_mask(index, withheld), "id"].astype(str))
    val = val_table[val_table["origin"].isin(kinds) & val_table["label"].isin(metrics.DECISIVE)]
    trained = val[~(val["first_id"].astype(str).isin(excluded) | val["second_id"].astype(str).isin(excluded))]
    rows = index[withheld_mask(index, withheld) | (index["level"] == 0)]
    unseen = pair_sampling.synthetic_pairs(rows)
    unseen = unseen[unseen["label"].isin(metrics.DECISIVE)]
    return {"trained": trained.reset_index(drop=True), "withheld": unseen.reset_index(drop=True)}


def run_demo(config, out_dir: str, *, workers: int = 2, num_sources: int | None = None,
             num_stages: int = NUM_STAGES) -> dict:
    from w2s_vqa.convert import hf
    from w2s_vqa.labels import teachers as teacher_tables
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.stages import run as stages_lib
    from w2s_vqa.store.format import VideoStore

    runtime.tune_cpu_host()  # first: before anything starts JAX's backend
    start = time.time()
    out_dir = workdir_lib.absolute(out_dir)
    data = demo_data.build_demo(config, os.path.join(out_dir, "data"), workers=workers, num_sources=num_sources)
    paths = data["paths"]
    with VideoStore(paths["store"]) as store:
        index = store.index.copy()
    inputs = prepare_stage_inputs(index, paths, os.path.join(out_dir, "inputs"))
    files = inputs["files"]
    config.data.store, config.data.pairs = paths["store"], files["train"]
    config_lib.ensure_eval(config, config_lib.SHORTHAND_EVAL).pairs = files["val"]  # logs "val/..."
    config.stages.anchors, config.stages.teachers, config.stages.pool_ids = (
        files["anchors"], paths["teachers"], files["pool_ids"])
    config.stages.val_fraction = demo_data.VAL_FRACTION
    data_seconds = time.time() - start

    stages = stages_lib.run_stages(config, os.path.join(out_dir, STAGES_DIR), num_stages=num_stages)
    if stages["stopped"]:
        return {"stopped": stages["stopped"], "stages": stages, "exit_status": stages["exit_status"]}

    start_eval = time.time()
    teachers = teacher_tables.read_teacher_table(paths["teachers"])
    with warnings.catch_warnings():  # demo-data has said how the teachers disagree
        warnings.simplefilter("ignore", tables.TableWarning)
        fused = teacher_tables.fuse(teachers, normalize=demo_data.NORMALIZE)["mean"].rename("score").reset_index()
    import pandas as pd

    teachers = pd.concat([teachers, fused.assign(teacher="fused")], ignore_index=True)
    pairs = evaluation_pairs(index, pair_table.read_pairs(paths["pairs_val"]), heldout=inputs["heldout"])
    direction = {group: metrics.teacher_direction_accuracy(table, teachers, decisive_only=True)
                 for group, table in pairs.items()}
    models = {}
    for stage in range(1, num_stages + 1):
        stage_workdir = stages_lib.stage_dir(os.path.join(out_dir, STAGES_DIR), stage)
        models[f"stage {stage}"] = _stage_figures(config, stage_workdir, pairs, index, inputs, paths["store"],
                                                  os.path.join(out_dir, SCORING_DIR, f"stage_{stage}"))
    scoring_teachers = _scoring_srcc(teachers, index, inputs["heldout"])
    for name in sorted(set(teachers["teacher"])):
        models[name] = {"direction_accuracy": {g: direction[g].get(name, float("nan")) for g in GROUPS},
                        "scoring_srcc": scoring_teachers.get(name, {})}
    eval_seconds = time.time() - start_eval

    last = stages_lib.stage_dir(os.path.join(out_dir, STAGES_DIR), num_stages)
    export_dir = os.path.join(out_dir, "export")
    from w2s_vqa.train.checkpoint import load_checkpoint_student

    student, _, step = load_checkpoint_student(last, "latest")
    hf.save_student(student, export_dir, tokenizer_dir=model_config_lib.tokenizer_dir(config), overwrite=True,
                    extra_settings={"checkpoint": os.path.join(last, workdir_lib.CHECKPOINT_DIR), "step": step},
                    data=config.data)

    students = [models[f"stage {k}"]["direction_accuracy"]["withheld"] for k in range(1, num_stages + 1)]
    teacher_names = [n for n in models if not n.startswith("stage ")]
    best_teacher = max(models[n]["direction_accuracy"]["withheld"] for n in teacher_names)
    summary = {
        "withheld": list(WITHHELD),
        "models": models,
        "evaluation_pairs": {g: len(t) for g, t in pairs.items()},
        "target": ("each stage above the one before on the withheld kinds, and every stage above every weak "
                   "teacher there"),
        "meets_target": bool(all(b > a for a, b in zip(students, students[1:]))
                             and all(s > best_teacher for s in students)),
        "stages": [{k: s[k] for k in ("stage", "steps", "pairs", "val", "relabel")} for s in stages["stages"]],
        "data_seconds": data_seconds,
        "evaluation_seconds": eval_seconds,
        "wall_seconds": time.time() - start,
        "results": stages.get("markdown"),
        "export": export_dir,
        "data": os.path.dirname(paths["store"]),
        "anchors": files["anchors"],
    }
    summary["report"] = write_report(out_dir, summary)
    return summary


def write_report(out_dir: str, summary: dict) -> str:
    """out_dir/summary.json, then the run's page (w2s_vqa.report) in out_dir/report; returns its index.html."""
    from w2s_vqa import report

    path = os.path.join(out_dir, SUMMARY_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)
    return report.build_report(out_dir)["index"]


def _stage_figures(config, stage_workdir: str, pairs: dict, index, inputs: dict, store_path: str,
                   out_dir: str) -> dict:
    """One stage's student: direction accuracy per group, scoring SRCC per group."""
    from w2s_vqa import sharding
    from w2s_vqa.score import batch as batch_lib
    from w2s_vqa.score import predict
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.student_source import load_for_scoring
    from w2s_vqa.store.format import VideoStore

    mesh = sharding.mesh_from_config(config)
    loaded = load_for_scoring(checkpoint=stage_workdir, step="latest", mesh=mesh)
    student, prompt = loaded.student, loaded.prompt
    batch = int(config.data.batch_size)
    accuracy = {}
    for group, table in pairs.items():
        if not len(table):  # a pool made without a withheld (or any trained) simulator
            accuracy[group] = float("nan")
            continue
        predicted = predict.predict_pairs(student, table, store_path, prompt, mesh, batch_size=batch)
        accuracy[group] = metrics.direction_accuracy(predicted["label"].to_numpy(),
                                                     predicted[metrics.P_COLUMN].to_numpy(), decisive_only=True)
    ids = index.loc[inputs["heldout"], "id"].astype(str).tolist()
    scorer = scorer_lib.Scorer(student, prompt, inputs["anchors"], mesh, batch_size=batch)
    with VideoStore(store_path) as store:
        table = batch_lib.score_store(scorer, store, ids=ids).table
    os.makedirs(out_dir, exist_ok=True)
    table.merge(index[["id", "source_id", "distortion", "kind", "level"]], on="id").to_csv(
        os.path.join(out_dir, "heldout_scores.csv"), index=False)
    long = table[["id", "score"]].rename(columns={"id": "video_id"}).assign(teacher="student")
    return {"direction_accuracy": accuracy,
            "scoring_srcc": _scoring_srcc(long, index, inputs["heldout"]).get("student", {}),
            "scores": os.path.join(out_dir, "heldout_scores.csv")}


def _scoring_srcc(long, index, heldout) -> dict:
    """{model: {"trained": x, "withheld": x}}: the mean SRCC with the known order over the
    held-out (source, simulator) groups of trained and of withheld simulators."""
    from w2s_vqa.labels import weak_teachers

    held = index[heldout]
    table = weak_teachers.group_srcc(long[long["video_id"].isin(set(held["id"].astype(str)))], held)
    table = table.assign(group=np.where(table["distortion"].isin(list(WITHHELD)), "withheld", "trained"))
    return {str(model): {str(g): float(v) for g, v in rows.groupby("group")["srcc"].mean().items()}
            for model, rows in table.groupby("teacher")}


def standin_mos(index):
    """The stand-in MOS (module docstring) of a store index's videos: float64 [N], 100 for a
    pristine video, 100 (1 - level / levels) for a variant of a simulator with that many levels."""
    import numpy as np

    from w2s_vqa.video import distort

    levels = index["distortion"].map(lambda name: len(distort.get(name).levels) if name else 1)
    return 100.0 * (1.0 - index["level"].to_numpy(np.float64) / levels.to_numpy(np.float64))


def format_summary(summary: dict) -> str:
    """The demo's table for the terminal: per model, direction accuracy and scoring SRCC on
    the trained and the withheld kinds; then the stages' counts, timings and paths."""
    if summary.get("stopped"):
        return f"stopped in stage {summary['stopped']}; run the same command again to resume"
    n = summary["evaluation_pairs"]
    lines = [f"withheld from all training: {', '.join(summary['withheld'])} (and the held-out sources)",
             f"{'':<12} direction accuracy, level gap > 1        scoring SRCC vs known order",
             f"{'':<12} trained ({n['trained']:>4}) withheld ({n['withheld']:>4})    trained   withheld"]
    for name, figures in summary["models"].items():
        d, r = figures["direction_accuracy"], figures["scoring_srcc"]
        lines.append(f"  {name:<10} {d.get('trained', float('nan')):>14.3f} {d.get('withheld', float('nan')):>15.3f}"
                     f"    {r.get('trained', float('nan')):>+7.3f}   {r.get('withheld', float('nan')):>+7.3f}")
    lines.append(f"stretch target ({summary['target']}): {'met' if summary['meets_target'] else 'NOT met'}"
                 + ("" if summary["meets_target"] else " (expected on the tiny default: see the last lines)"))
    for stage in summary["stages"]:
        relabel = stage.get("relabel") or {}
        made = (f"; relabeled {relabel.get('scored', 0)} pool videos -> {relabel.get('pairs', 0)} "
                "new pairs for the next stage") if relabel else ""
        lines.append(f"stage {stage['stage']}: {stage['steps']} steps on {stage['pairs']}{made}")
    lines.append(f"data {summary['data_seconds']:.0f} s, evaluation {summary['evaluation_seconds']:.0f} s, "
                 f"total {summary['wall_seconds']:.0f} s")
    lines.append(f"stages table: {summary['results']}\nexport:       {summary['export']}")
    lines += health_lines(summary)
    if summary.get("report"):
        lines.append(f"report:       open {summary['report']}")
    return "\n".join(lines)


# A healthy run's stages rank the trained kinds' decisive pairs at least this well (the runs
# of docs/2026-11-stages.md and docs/2026-12-readme-figures.md: 0.987-0.993).
HEALTHY_TRAINED_ACCURACY = 0.9


def health_lines(summary: dict) -> list[str]:
    """The demo's last lines before the JSON: in words, whether this run looks healthy on the
    tiny default, what is expected to hold and what is not, and why."""
    models = summary["models"]
    stages = [n for n in models if n.startswith("stage ")]
    teachers = [n for n in models if not n.startswith("stage ")]
    trained = {n: models[n]["direction_accuracy"].get("trained", float("nan")) for n in models}
    best = max((trained[t] for t in teachers if np.isfinite(trained[t])), default=float("nan"))
    failing = [n for n in stages if not (trained[n] >= HEALTHY_TRAINED_ACCURACY and trained[n] > best)]
    figures = ", ".join(f"{n} {trained[n]:.3f}" for n in stages)
    verdict = (f"healthy: every stage ranks the trained kinds at {HEALTHY_TRAINED_ACCURACY} or better and above "
               f"every weak teacher ({figures}; best teacher {best:.3f})" if not failing else
               f"NOT healthy: {', '.join(failing)} ranks the trained kinds below {HEALTHY_TRAINED_ACCURACY} or not "
               f"above the best weak teacher ({figures}; best teacher {best:.3f}); a healthy run gives 0.98-0.99 "
               f"there, so look at the stages' training logs (metrics.jsonl) before anything else")
    return [
        f"reading: {verdict}.",
        "  Expected on the tiny default: on the trained kinds, each stage near 0.99 direction accuracy, far above "
        "the weak teachers, and a positive scoring SRCC.",
        "  Not expected: the stretch target on the withheld kinds. The student starts random and is tiny (2 "
        "layers); it never saw brightening or stuttering, so it orders unseen stutter well but unseen brightening "
        "backwards (it learned that darker is worse), and stage 2, trained on its own labels, leans further that "
        "way: withheld accuracy between about 0.15 and 0.45 is the usual outcome, not a fault "
        "(docs/2026-11-stages.md).",
    ]
