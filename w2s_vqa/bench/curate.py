"""Pool curation at the paper's scale: K videos of a million whose metric histograms match a reference.

    python -m w2s_vqa.bench.curate [--candidates 1000000] [--k 200000] [--reference 20000] [--repeats 1]

The pool: ``--candidates`` videos with the nine metrics of w2s_vqa.curate.metrics drawn from a
skewed law (gamma, shape 2, each metric scaled to its own range), correlated through a shared
latent "quality" as real metrics are; the reference: ``--reference`` videos from another law
(normal, shifted and narrower), the reference set a pool is curated towards. Generation is not
timed; ``select`` is (binning, grouping into cells, the HiGHS program and filling the cells).
The figure of merit is the mean over metrics of the L1 distance between the selection's and
the reference's bin shares, against the same for a random K-subset of the pool drawn in the
same run. Each repeat draws a new pool (seeded by the repeat). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from w2s_vqa.bench import common
from w2s_vqa.curate.metrics import METRICS
from w2s_vqa.curate.select import SelectionSettings, select


def synthetic(n: int, seed: int, *, skewed: bool) -> pd.DataFrame:
    """``n`` rows of the nine metrics: skewed (the crawled pool) or not (the reference)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 1))
    if skewed:
        values = rng.gamma(2.0, 1.0, size=(n, len(METRICS))) + 0.5 * latent
    else:
        values = rng.normal(2.5, 0.8, size=(n, len(METRICS))) + 0.3 * latent
    table = pd.DataFrame(values * np.linspace(1.0, 50.0, len(METRICS)), columns=list(METRICS))
    table["id"] = [f"v{i}" for i in range(n)]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=200_000)
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=240.0)
    args = parser.parse_args()

    seconds, ratios, rows = [], [], []
    for repeat in range(args.repeats):
        pool = synthetic(args.candidates, 2 * repeat, skewed=True)
        reference = synthetic(args.reference, 2 * repeat + 1, skewed=False)
        start = time.perf_counter()
        chosen = select(pool, reference, list(METRICS),
                        SelectionSettings(k=args.k, time_limit=args.time_limit, seed=repeat))
        seconds.append(time.perf_counter() - start)
        mean, mean_random = np.mean(list(chosen.l1.values())), np.mean(list(chosen.l1_random.values()))
        ratios.append(mean / mean_random)
        rows.append({"seconds": round(seconds[-1], 1), "cells": chosen.cells, "status": chosen.status,
                     "gap": chosen.gap, "mean_l1": round(float(mean), 4),
                     "mean_l1_random": round(float(mean_random), 4)})
        print(f"repeat {repeat}: {rows[-1]}")
    common.emit({
        "bench": "curate", "machine": common.machine(), "candidates": args.candidates, "k": args.k,
        "reference": args.reference, "repeats": args.repeats,
        "solve_seconds_median": round(statistics.median(seconds), 1),
        "solve_seconds_min_max": [round(min(seconds), 1), round(max(seconds), 1)],
        "l1_ratio_to_random_median": round(statistics.median(ratios), 4),
        "runs": rows,
    })


if __name__ == "__main__":
    main()
