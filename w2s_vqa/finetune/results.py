"""A fine-tuning run's figures: per split before and after (FIGURES of MODELS), their
medians over the splits (the headline) and results.md.

A split's figure resting on too few test videos is null (score.metrics' small-set rules:
SRCC, PLCC and KRCC below metrics.MIN_VIDEOS_CORRELATION videos, the fitted PLCC below
metrics.MIN_VIDEOS_FITTED), left out of the medians, and named with its count in the
run's notes (`small_split_notes`), which results.md and the verb's JSON line carry.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.score import metrics

RESULTS_JSON = workdir_lib.RESULTS_JSON
RESULTS_MD = workdir_lib.RESULTS_MD
# The two rows of every split: the weak-to-strong checkpoint as given, and after fine-tuning.
BEFORE, AFTER = "w2s", "finetuned"
MODELS = (BEFORE, AFTER)
# The figures reported per split and as medians (score.metrics.mos_metrics' names).
FIGURES = ("srcc", "plcc", "krcc", "plcc_fitted")


def finite_or_none(value) -> float | None:
    """A figure as JSON keeps it: a finite float, or None for a figure left out (NaN, None)."""
    return None if value is None or not np.isfinite(float(value)) else float(value)


def _value(value) -> float:
    return float("nan") if value is None else float(value)


def small_split_notes(per_split: Sequence[dict]) -> list[str]:
    """One sentence per split whose test videos are too few for a figure: the count and
    the figures left out (null), by score.metrics' minimums."""
    notes = []
    for s in per_split:
        n = min(int(s[model].get("videos", s["test_videos"])) for model in MODELS)
        if n < metrics.MIN_VIDEOS_CORRELATION:
            notes.append(f"split {s['split']}: {n} test videos scored, fewer than {metrics.MIN_VIDEOS_CORRELATION}: "
                         f"SRCC, PLCC, KRCC and PLCC (logistic) are left out (null), since over {n} videos a "
                         "correlation is always +1 or -1; use more videos or a lower finetune.train_fraction")
        elif n < metrics.MIN_VIDEOS_FITTED:
            notes.append(f"split {s['split']}: {n} test videos scored, fewer than {metrics.MIN_VIDEOS_FITTED}: PLCC "
                         "(logistic) is left out (null); SRCC, PLCC and KRCC on so few videos vary widely between "
                         "splits")
    return notes


def median_figures(per_split: Sequence[dict]) -> dict:
    """{BEFORE: {figure: median}, AFTER: {...}, "gain": {figure: median of AFTER - BEFORE}}
    over the splits' figures (numpy's median over the splits where the figure is a number,
    not null or NaN; NaN when none is), and "splits": how many splits entered."""
    out: dict = {"splits": len(per_split)}
    for model in MODELS:
        out[model] = {k: _median([_value(s[model][k]) for s in per_split]) for k in FIGURES}
    out["gain"] = {k: _median([_value(s[AFTER][k]) - _value(s[BEFORE][k]) for s in per_split]) for k in FIGURES}
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
    notes = results.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
