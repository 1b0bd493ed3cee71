"""`w2s-vqa demo` (what `make demo` runs): the whole job on the tiny default, end to end.

    demo pool (real clips, variants, weak teachers, split pairs)
      -> train the tiny student from scratch on CPU, validating as it goes
      -> held-out accuracy of the student and of each weak teacher
      -> export to a Hugging Face directory

The headline figure is direction accuracy on held-out synthetic pairs whose
level gap is above 1 (labels superior or inferior): the student is compared
with every weak teacher on exactly those pairs. The last printed line is one
JSON object with the figures and where the checkpoint and the export went.
"""

from __future__ import annotations

import os
import time

from w2s_vqa import config as config_lib
from w2s_vqa import runtime
from w2s_vqa.demo import pool as demo_data
from w2s_vqa.labels import pairs as pair_tables
from w2s_vqa.score import metrics

TARGET_ACCURACY = 0.8


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
                    extra_settings={"checkpoint": info.checkpoint_dir, "step": info.steps})

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
        "wall_seconds": time.time() - start,
        "checkpoint": info.checkpoint_dir,
        "export": export_dir,
        "metrics": os.path.join(info.workdir, "metrics.jsonl"),
        "data": os.path.dirname(paths["store"]),
    }
    return summary


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
    lines.append(f"{summary['steps']} steps; data {summary['data_seconds']:.0f} s, training "
                 f"{summary['train_seconds']:.0f} s, total {summary['wall_seconds']:.0f} s")
    lines.append(f"checkpoint: {summary['checkpoint']}\nexport:     {summary['export']}\n"
                 f"metrics:    {summary['metrics']}")
    return "\n".join(lines)
