"""Pick K pool videos whose metric histograms match a reference set's, by mixed-integer programming.

The method curates its unlabeled pool this way (docs/method.md, "Pool"); the program is the
one of Vonikakis et al. ("Shaping datasets: optimal data selection for specific target
distributions across dimensions", ICIP 2016; KoNViD-1k was sampled with it): each metric is
cut into bins, and the selection minimizes the summed absolute deviation of its per-bin
counts from K times the reference's per-bin shares, subject to exactly K videos.

Their program holds one binary variable per candidate, which does not scale to millions.
The objective depends on a video only through its bin signature (its bin in every metric,
and its cap group when a cap is set), so videos of one signature are interchangeable: here
one integer variable per occupied signature counts how many of its videos are taken, and
the program's size depends on the occupied cells, not on the videos. Which videos fill a
cell's count is drawn with the seed (must-keep videos first). Both programs have the same
optimum (tests/curate/test_select.py solves both).

Solver: ``scipy.optimize.milp`` (HiGHS), already a dependency; HiGHS is a maintained LP and
branch-and-cut solver. With only ``metrics x bins + 1`` equality rows, a vertex of the LP
relaxation has at most that many fractional cells; those are then solved exactly as a small
MILP (``_solve``), and the result's gap to the relaxation's bound is reported.

Bins: ``quantile`` (default) cuts each metric at the reference's quantiles, so every bin
holds about the same share of the reference; ``uniform`` cuts the reference's range into
equal widths. The outer bins are open: pool values beyond the reference's range count in
the first or last bin.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, sparse

BINNINGS = ("quantile", "uniform")
# HiGHS's status codes as scipy.optimize.milp returns them.
# Up to this many cells, branch-and-cut proves the optimum in seconds; beyond, the relaxation
# is rounded (``_solve``).
EXACT_CELLS = 5_000
_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "error"}


class CurateError(ValueError):
    """An unusable pool, reference or option; the message names the table, metric or option."""


@dataclasses.dataclass(frozen=True)
class SelectionSettings:
    """The program's options.

    ``k``: videos to pick. ``bins``: bins per metric. ``binning``: one of :data:`BINNINGS`.
    ``weights``: metric -> weight of its deviation in the objective (default 1 each).
    ``cap_column`` / ``cap``: at most ``cap`` videos per value of that pool column (a
    source, an uploader, a channel). ``time_limit``: solver seconds. ``seed``: which videos
    fill each cell's count, and the random baseline.
    """

    k: int
    bins: int = 10
    binning: str = "quantile"
    weights: dict[str, float] | None = None
    cap_column: str | None = None
    cap: int | None = None
    time_limit: float = 120.0
    seed: int = 0

    def __post_init__(self):
        if self.k < 1:
            raise CurateError(f"--k must be at least 1, got {self.k}")
        if self.bins < 2:
            raise CurateError(f"curate.bins must be at least 2, got {self.bins}")
        if self.binning not in BINNINGS:
            raise CurateError(f"curate.binning must be one of {', '.join(BINNINGS)}, got {self.binning!r}")
        if (self.cap_column is None) != (self.cap is None):
            raise CurateError("--cap and --cap-column go together")
        if self.cap is not None and self.cap < 1:
            raise CurateError(f"--cap must be at least 1, got {self.cap}")
        if not self.time_limit > 0:
            raise CurateError(f"curate.time_limit must be positive, got {self.time_limit}")


@dataclasses.dataclass
class Selection:
    """The chosen videos and how well they match.

    ``chosen``: pool row positions ``[k]`` (int64, into the pool after NaN and must-drop rows
    were removed: ``pool``). ``l1``: metric -> sum over bins of |selection share - reference
    share| (0 to 2), and ``l1_random`` the same for a random K-subset drawn with the seed.
    ``shares``: metric -> ``{"reference", "pool", "selection", "random"}`` -> per-bin shares.
    """

    pool: pd.DataFrame
    chosen: np.ndarray
    status: str
    gap: float
    objective: float
    cells: int
    l1: dict[str, float]
    l1_random: dict[str, float]
    shares: dict[str, dict[str, np.ndarray]]
    edges: dict[str, np.ndarray]
    dropped_nan: int
    dropped_by_request: int


def bin_edges(values: np.ndarray, bins: int, binning: str) -> np.ndarray:
    """Interior edges ``[bins - 1]`` (float64) of one metric from the reference's ``values``."""
    values = np.asarray(values, np.float64)
    if binning == "quantile":
        return np.quantile(values, np.arange(1, bins) / bins)
    lo, hi = float(values.min()), float(values.max())
    return np.linspace(lo, hi, bins + 1)[1:-1]


def bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index ``[n]`` (int64, 0..len(edges)) of each value: bin i holds edges[i-1] < v <= edges[i]."""
    return np.searchsorted(edges, np.asarray(values, np.float64), side="left").astype(np.int64)


def shares_of(bins: np.ndarray, num_bins: int) -> np.ndarray:
    """Per-bin shares ``[num_bins]`` (float64, summing to 1) of bin indices ``[n]``."""
    return np.bincount(bins, minlength=num_bins) / max(len(bins), 1)


def _clean(table: pd.DataFrame, metrics: Sequence[str], what: str) -> tuple[pd.DataFrame, int]:
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise CurateError(f"the {what} has no column {', '.join(repr(m) for m in missing)} "
                          f"(it has: {', '.join(map(str, table.columns))})")
    values = table[list(metrics)].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | ~np.isfinite(values.to_numpy(np.float64)).all(axis=1)
    cleaned = table.loc[~bad].copy()
    cleaned[list(metrics)] = values.loc[~bad].astype(np.float64)
    return cleaned.reset_index(drop=True), int(bad.sum())


def _program(cell_rows: np.ndarray, targets: np.ndarray, weights: np.ndarray, k: int,
             cap_rows: np.ndarray | None, cap: int | None):
    """Objective, constraint matrix and row bounds of the grouped program over variables
    ``[x (cells), u (rows), v (rows)]``: per bin, ``sum x - u + v = target``; ``sum x = k``;
    per cap group, ``sum x <= cap``. Minimizes ``sum weight (u + v) / k``."""
    num_cells, num_metrics = cell_rows.shape
    num_rows = len(targets)
    cols = np.repeat(np.arange(num_cells), num_metrics)
    hist = sparse.csr_matrix((np.ones(cols.size), (cell_rows.ravel(), cols)), shape=(num_rows, num_cells))
    eye = sparse.identity(num_rows, format="csr")
    blocks = [[hist, -eye, eye], [sparse.csr_matrix(np.ones((1, num_cells))), None, None]]
    lo, hi = [targets, [k]], [targets, [k]]
    if cap_rows is not None:
        groups = int(cap_rows.max()) + 1
        caps = sparse.csr_matrix((np.ones(num_cells), (cap_rows, np.arange(num_cells))), shape=(groups, num_cells))
        blocks.append([caps, None, None])
        lo.append(np.zeros(groups))
        hi.append(np.full(groups, float(cap)))
    objective = np.concatenate([np.zeros(num_cells), weights / k, weights / k])
    return objective, sparse.bmat(blocks, format="csr"), np.concatenate(lo), np.concatenate(hi)


def _solve(cell_rows: np.ndarray, counts: np.ndarray, lower: np.ndarray, targets: np.ndarray,
           weights: np.ndarray, k: int, cap_rows: np.ndarray | None, cap: int | None,
           time_limit: float, exact_cells: int) -> tuple[np.ndarray, str, float, float]:
    """Counts per cell ``[cells]`` (int64), status, relative gap and objective of the grouped program.

    ``cell_rows``: ``[cells, metrics]`` row (metric * bins + bin) of each cell; ``counts`` /
    ``lower``: videos and must-keep videos per cell; ``targets``: ``[metrics * bins]`` K x the
    reference's shares; ``weights``: per row; ``cap_rows``: cap group per cell.

    Up to ``exact_cells`` cells, HiGHS's branch-and-cut solves the program exactly. Beyond,
    two steps, because a branch-and-bound over hundreds of thousands of integer columns finds
    no incumbent in minutes while the LP relaxation solves in seconds: (1) the LP relaxation,
    whose vertex has at most as many fractional columns as the program has rows; (2) the
    exact MILP over those columns between their floor and ceiling, the others fixed at their
    LP values. The gap is measured against the LP bound, so "optimal" means proven optimal.
    """
    num_cells = len(counts)
    num_rows = len(targets)
    objective, matrix, lo, hi = _program(cell_rows, targets, weights, k, cap_rows, cap)
    bounds_lo = np.concatenate([lower, np.zeros(2 * num_rows)])
    bounds_hi = np.concatenate([counts, np.full(2 * num_rows, np.inf)])
    constraint = optimize.LinearConstraint(matrix, lo, hi)
    integrality = np.concatenate([np.ones(num_cells), np.zeros(2 * num_rows)])
    if num_cells <= exact_cells:
        result = optimize.milp(objective, integrality=integrality, bounds=optimize.Bounds(bounds_lo, bounds_hi),
                               constraints=constraint, options={"time_limit": float(time_limit), "disp": False})
        status = _STATUS.get(result.status, "error")
        if result.x is None:
            raise CurateError(f"no selection satisfies the constraints ({status}: {result.message}); "
                              + ("check --cap and the must-keep list" if status == "infeasible" else
                                 "raise curate.time_limit"))
        gap = float(getattr(result, "mip_gap", 0.0) or 0.0)
        return np.rint(result.x[:num_cells]).astype(np.int64), status, gap, float(result.fun)
    started = time.monotonic()
    # The interior-point method with crossover: on these wide programs (few rows, a column per
    # cell) HiGHS's dual simplex is orders of magnitude slower; crossover returns a vertex.
    equal = lo == hi
    relaxed = optimize.linprog(objective, A_eq=matrix[equal], b_eq=lo[equal],
                               A_ub=matrix[~equal] if (~equal).any() else None,
                               b_ub=hi[~equal] if (~equal).any() else None,
                               bounds=np.stack([bounds_lo, bounds_hi], axis=1), method="highs-ipm",
                               options={"time_limit": float(time_limit), "disp": False})
    if relaxed.x is None:
        status = {2: "infeasible", 1: "time_limit"}.get(relaxed.status, "error")
        raise CurateError(f"no selection satisfies the constraints ({status}: {relaxed.message}); "
                          + ("check --cap and the must-keep list" if status == "infeasible" else
                             "raise curate.time_limit"))
    x = relaxed.x[:num_cells]
    fractional = np.flatnonzero(np.abs(x - np.rint(x)) > 1e-6)
    fixed = np.rint(x)
    # Step 2 over the fractional columns (and the deviation columns), the rest fixed.
    bounds_lo[:num_cells] = fixed
    bounds_hi[:num_cells] = fixed
    bounds_lo[fractional] = np.floor(x[fractional])
    bounds_hi[fractional] = np.ceil(x[fractional])
    remaining = max(1.0, float(time_limit) - (time.monotonic() - started))
    result = optimize.milp(objective, integrality=integrality, bounds=optimize.Bounds(bounds_lo, bounds_hi),
                           constraints=constraint, options={"time_limit": remaining, "disp": False})
    if result.x is None:
        raise CurateError(f"rounding the relaxed selection found no integer solution ({result.message}); "
                          "raise curate.time_limit")
    best = float(result.fun)
    gap = 0.0 if best <= relaxed.fun + 1e-9 else (best - float(relaxed.fun)) / max(best, 1e-12)
    status = "optimal" if gap <= 1e-4 else ("time_limit" if result.status == 1 else "rounded")
    return np.rint(result.x[:num_cells]).astype(np.int64), status, gap, best


def _fill(cells: np.ndarray, take: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row positions: in each cell c, its must-keep rows and then random others, ``take[c]`` in all."""
    priority = rng.random(len(cells))
    priority[keep] = -1.0
    order = np.lexsort((priority, cells))
    sorted_cells = cells[order]
    starts = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(len(order)) - starts
    return np.sort(order[rank < take[sorted_cells]])


def select(pool: pd.DataFrame, reference: pd.DataFrame, metrics: Sequence[str], settings: SelectionSettings, *,
           keep: Sequence[str] = (), drop: Sequence[str] = (), group: bool = True,
           exact_cells: int = EXACT_CELLS) -> Selection:
    """Choose ``settings.k`` rows of ``pool`` (module docstring: the program).

    ``pool`` and ``reference``: tables with the ``metrics`` columns (float); the pool also
    needs ``id`` (and ``settings.cap_column`` with a cap). Rows with a NaN or infinite metric
    are dropped and counted. ``keep``/``drop``: pool ids that must / must not be chosen.
    ``group=False`` solves the one-variable-per-video program (for tests and small pools);
    programs of more than ``exact_cells`` cells are solved by relaxation and rounding (``_solve``).
    Raises :class:`CurateError` for a missing column or id, K beyond the pool, an infeasible
    cap or must-keep list, or a solver that finds no selection in the time limit.
    """
    metrics = list(metrics)
    if not metrics:
        raise CurateError("no metric to match: name at least one with --metrics")
    pool, nan_pool = _clean(pool, metrics, "pool table")
    reference, _ = _clean(reference, metrics, "reference table")
    if len(reference) < 2:
        raise CurateError(f"the reference has {len(reference)} usable video(s); histograms need at least 2")
    if "id" not in pool.columns:
        raise CurateError("the pool table has no 'id' column")
    ids = pool["id"].astype(str)
    for name, listed in (("must-keep (--keep)", keep), ("must-drop (--drop)", drop)):
        unknown = sorted(set(map(str, listed)) - set(ids))
        if unknown:
            raise CurateError(f"{len(unknown)} {name} id(s) are not in the pool: {', '.join(unknown[:5])}")
    both = sorted(set(map(str, keep)) & set(map(str, drop)))
    if both:
        raise CurateError(f"{len(both)} id(s) are both must-keep and must-drop: {', '.join(both[:5])}")
    dropped = ids.isin(set(map(str, drop)))
    pool = pool.loc[~dropped].reset_index(drop=True)
    k = settings.k
    if k > len(pool):
        raise CurateError(f"--k {k} is more than the pool's {len(pool)} usable videos "
                          f"({nan_pool} dropped for missing metrics, {int(dropped.sum())} by --drop)")
    keep_mask = pool["id"].astype(str).isin(set(map(str, keep))).to_numpy()
    if keep_mask.sum() > k:
        raise CurateError(f"{int(keep_mask.sum())} must-keep videos are more than --k {k}")

    weights = dict.fromkeys(metrics, 1.0) | (settings.weights or {})
    unknown_weights = sorted(set(weights) - set(metrics))
    if unknown_weights:
        raise CurateError(f"weights name metric(s) not matched: {', '.join(unknown_weights)}")
    nb = settings.bins
    edges = {m: bin_edges(reference[m].to_numpy(), nb, settings.binning) for m in metrics}
    pool_bins = np.stack([bin_of(pool[m].to_numpy(), edges[m]) for m in metrics], axis=1)
    ref_shares = np.stack([shares_of(bin_of(reference[m].to_numpy(), edges[m]), nb) for m in metrics])

    signature = pool_bins
    cap_codes = None
    if settings.cap_column is not None:
        if settings.cap_column not in pool.columns:
            raise CurateError(f"the pool table has no column {settings.cap_column!r} for --cap-column")
        cap_codes = pd.factorize(pool[settings.cap_column].astype(str))[0].astype(np.int64)
        groups = int(cap_codes.max()) + 1
        if groups * settings.cap < k:
            raise CurateError(f"--cap {settings.cap} per {settings.cap_column!r} over its {groups} value(s) "
                              f"allows at most {groups * settings.cap} videos, fewer than --k {k}")
        signature = np.concatenate([signature, cap_codes[:, None]], axis=1)
    if group:
        cell_keys, cells, counts = np.unique(signature, axis=0, return_inverse=True, return_counts=True)
        cells = cells.ravel()
    else:
        cell_keys, cells, counts = signature, np.arange(len(pool)), np.ones(len(pool), np.int64)
    lower = np.bincount(cells, weights=keep_mask, minlength=len(counts))
    cell_rows = cell_keys[:, :len(metrics)] + np.arange(len(metrics)) * nb
    cap_rows = cell_keys[:, len(metrics)] if cap_codes is not None else None
    row_weights = np.repeat([float(weights[m]) for m in metrics], nb)
    take, status, gap, objective = _solve(cell_rows, counts.astype(np.float64), lower, k * ref_shares.ravel(),
                                          row_weights, k, cap_rows, settings.cap, settings.time_limit,
                                          exact_cells)
    rng = np.random.default_rng(settings.seed)
    chosen = _fill(cells, take, keep_mask, rng)
    random_rows = np.sort(rng.choice(len(pool), size=k, replace=False))

    shares, l1, l1_random = {}, {}, {}
    for j, m in enumerate(metrics):
        shares[m] = {"reference": ref_shares[j], "pool": shares_of(pool_bins[:, j], nb),
                     "selection": shares_of(pool_bins[chosen, j], nb),
                     "random": shares_of(pool_bins[random_rows, j], nb)}
        l1[m] = float(np.abs(shares[m]["selection"] - ref_shares[j]).sum())
        l1_random[m] = float(np.abs(shares[m]["random"] - ref_shares[j]).sum())
    if status != "optimal":
        warnings.warn(f"curate: the selection is {gap:.2%} above the relaxation's bound ({status}); "
                      "raise curate.time_limit or curate.bins may close it", stacklevel=2)
    return Selection(pool=pool, chosen=chosen, status=status, gap=gap, objective=objective, cells=len(counts),
                     l1=l1, l1_random=l1_random, shares=shares, edges=edges, dropped_nan=nan_pool,
                     dropped_by_request=int(dropped.sum()))
