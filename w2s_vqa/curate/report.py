"""What `w2s-vqa curate` writes: the chosen videos as a manifest, report.json and the histogram figure.

Layout of ``OUT``::

    selection.csv     the chosen videos: id, path, source_id (a manifest `w2s-vqa prepare` reads)
    report.json       solver status and gap, cells, counts, per-metric L1 of selection and random
    histograms.png    per metric: the reference's, the pool's and the selection's bin shares
"""

from __future__ import annotations

import os

import numpy as np

from w2s_vqa import workdir
from w2s_vqa.curate.select import Selection

SELECTION_FILE = "selection.csv"
REPORT_FILE = "report.json"
FIGURE_FILE = "histograms.png"


def summary(selection: Selection) -> dict:
    """The report as a JSON-ready dict (report.json's content)."""
    mean = float(np.mean(list(selection.l1.values())))
    mean_random = float(np.mean(list(selection.l1_random.values())))
    return {
        "k": int(len(selection.chosen)),
        "pool_videos": int(len(selection.pool)),
        "dropped_missing_metrics": selection.dropped_nan,
        "dropped_by_request": selection.dropped_by_request,
        "cells": selection.cells,
        "status": selection.status,
        "gap": selection.gap,
        "objective": selection.objective,
        "l1": selection.l1,
        "l1_random": selection.l1_random,
        "mean_l1": mean,
        "mean_l1_random": mean_random,
    }


def plot(selection: Selection, path: str) -> None:
    """One panel per metric: bin shares of reference, pool, selection and a random K-subset."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = list(selection.shares)
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        shares = selection.shares[metric]
        x = np.arange(len(shares["reference"]))
        ax.bar(x, shares["reference"], color="0.8", label="reference")
        for name, style in (("pool", ":"), ("random", "--"), ("selection", "-")):
            ax.step(x, shares[name], where="mid", linestyle=style, label=name)
        ax.set_title(f"{metric}  L1 {selection.l1[metric]:.3f} (random {selection.l1_random[metric]:.3f})",
                     fontsize=9)
        ax.set_xlabel("bin (reference quantiles)" if len(x) else "")
        ax.set_ylabel("share")
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    with workdir.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def write(selection: Selection, out: str) -> dict[str, str]:
    """Write the three files of the module docstring into ``out``; returns their paths by name."""
    os.makedirs(out, exist_ok=True)
    paths = {"selection": os.path.join(out, SELECTION_FILE), "report": os.path.join(out, REPORT_FILE),
             "figure": os.path.join(out, FIGURE_FILE)}
    chosen = selection.pool.iloc[selection.chosen]
    columns = [c for c in ("id", "path", "source_id") if c in chosen.columns]
    with workdir.atomic_open(paths["selection"]) as f:
        chosen[columns].to_csv(f, index=False)
    workdir.write_json(paths["report"], summary(selection))
    plot(selection, paths["figure"])
    return paths
