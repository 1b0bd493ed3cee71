"""The report's figures, drawn with matplotlib's object interface (no pyplot state, Agg canvas)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
from w2s_vqa import workdir as workdir_lib

# Panels of the training curves: (title, candidate columns of metrics.jsonl, first found wins per
# line; "{split}" is train and val).
CURVES = (
    ("loss", ("loss",)),
    ("direction accuracy (all pairs)", ("{split}/all/direction_accuracy",)),
    ("five-way accuracy (all pairs)", ("{split}/all/five_way_accuracy",)),
    ("learning rate", ("learning_rate", "lr", "learning_rate/default")),
)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def training_curves(runs: Sequence[tuple[str, pd.DataFrame]], path: str, *, chain: bool = True) -> str | None:
    """One PNG: a panel per CURVES entry the metrics hold, one line per run (stage) on shared
    axes; `chain` puts stage k after stage k-1 on the step axis (each stage's steps offset by
    the steps before it), else every run starts at 0 (splits). None when no panel has data."""
    panels = []
    for title, names in CURVES:
        lines = []
        for label, metrics in runs:
            for split in ("train", "val") if any("{split}" in n for n in names) else ("",):
                column = next((n.format(split=split) for n in names if n.format(split=split) in metrics.columns), None)
                if column is not None and metrics[column].notna().any():
                    lines.append((label, split, column))
        if lines:
            panels.append((title, lines))
    if not panels:
        return None
    offsets, total = {}, 0
    for label, metrics in runs:
        offsets[label] = total if chain else 0
        total += int(metrics["step"].max()) if len(metrics) else 0
    figure = _figure(4.0 * len(panels), 3.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = {label: f"C{i % 10}" for i, (label, _) in enumerate(runs)}
    frames = dict(runs)
    for axis, (title, lines) in zip(axes, panels):
        for label, split, column in lines:
            rows = frames[label][["step", column]].dropna()
            axis.plot(rows["step"] + offsets[label], rows[column], color=colors[label],
                      linestyle="--" if split == "val" else "-", marker="o" if len(rows) < 12 else None,
                      markersize=3, label=f"{label} {split}".strip())
        if chain:
            for label, _ in runs[1:]:
                axis.axvline(offsets[label], color="0.8", linewidth=0.8, zorder=0)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step" + (" (stages one after another)" if chain and len(runs) > 1 else ""), fontsize=9)
        axis.tick_params(labelsize=8)
        axis.legend(fontsize=7)
    return _save(figure, path)


def score_histogram(scores: np.ndarray, path: str, *, title: str, label: str = "score") -> str:
    """One PNG: the histogram of the finite `scores` (float [N])."""
    scores = np.asarray(scores, np.float64)
    scores = scores[np.isfinite(scores)]
    figure = _figure(5.0, 3.0)
    axis = figure.subplots()
    axis.hist(scores, bins=max(5, min(40, len(scores) // 3 or 1)), color="C0", alpha=0.8)
    axis.set_xlabel(label, fontsize=9)
    axis.set_ylabel("videos", fontsize=9)
    axis.set_title(title, fontsize=10)
    return _save(figure, path)


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(workdir_lib.absolute(path)), exist_ok=True)
    figure.savefig(path, dpi=90)
    return path
