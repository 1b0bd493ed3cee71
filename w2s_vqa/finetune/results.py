"""A fine-tuning run's figures: per split before and after (FIGURES of MODELS), their
medians over the splits (the headline) and results.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from w2s_vqa import workdir as workdir_lib

RESULTS_JSON = workdir_lib.RESULTS_JSON
RESULTS_MD = workdir_lib.RESULTS_MD
# The two rows of every split: the weak-to-strong checkpoint as given, and after fine-tuning.
BEFORE, AFTER = "w2s", "finetuned"
MODELS = (BEFORE, AFTER)
# The figures reported per split and as medians (score.metrics.mos_metrics' names).
FIGURES = ("srcc", "plcc", "krcc", "plcc_fitted")


def median_figures(per_split: Sequence[dict]) -> dict:
    """{BEFORE: {figure: median}, AFTER: {...}, "gain": {figure: median of AFTER - BEFORE}}
    over the splits' figures (numpy's median over the splits where the figure is a number;
    NaN when none is), and "splits": how many splits entered."""
    out: dict = {"splits": len(per_split)}
    for model in MODELS:
        out[model] = {k: _median([s[model][k] for s in per_split]) for k in FIGURES}
    out["gain"] = {k: _median([s[AFTER][k] - s[BEFORE][k] for s in per_split]) for k in FIGURES}
    return out


def _median(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def text(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _start(results: dict) -> str:
    """The student fine-tuning started from: a checkpoint and step, or a model directory."""
    if results.get("hf"):
        return results["hf"]
    return f"{results['checkpoint']} step {results['step']}"


def markdown(results: dict) -> str:
    """results.md: the medians (the headline) and one row per split."""
    median = results["median"]
    lines = [f"## MOS fine-tuning on {results['set']}: median over {results['splits_done']} of "
             f"{results['splits_requested']} splits", "",
             f"From {_start(results)}; {results['videos_used']} of {results['videos']} "
             "videos; test videos scored against anchors among each split's training videos.", "",
             "| model | SRCC | PLCC | KRCC | PLCC (logistic) |", "|---|---|---|---|---|"]
    names = {BEFORE: "weak-to-strong checkpoint (before)" if not results.get("hf") else "the model as given (before)", AFTER: "fine-tuned (after)",
             "gain": "gain (median of per-split gains)"}
    for row in (BEFORE, AFTER, "gain"):
        lines.append(f"| {names[row]} | " + " | ".join(text(median[row][k]) for k in FIGURES) + " |")
    lines += ["", "| split | train videos | test videos | train pairs | steps | SRCC before | SRCC after | "
              "PLCC before | PLCC after |", "|---|---|---|---|---|---|---|---|---|"]
    for s in results["splits"]:
        lines.append(f"| {s['split']} | {s['train_videos']} | {s['test_videos']} | {s['train_pairs']} | {s['steps']} | "
                     f"{text(s[BEFORE]['srcc'])} | {text(s[AFTER]['srcc'])} | {text(s[BEFORE]['plcc'])} | "
                     f"{text(s[AFTER]['plcc'])} |")
    return "\n".join(lines) + "\n"
