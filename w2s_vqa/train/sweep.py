"""Sweeps of ahead-of-time plans: a grid of config overrides, one plan per point.

    points = grid_points([parse_grid("mesh.shape=(-1,8,1),(-1,16,1)"), parse_grid("model.remat=none,minimal,full")])
    rows = run_sweep(config_file, base_overrides, "v5p-64", points, out_dir)

Each point is compiled in a fresh Python process (plan.plan_in_subprocess), so its
memory is returned when it ends and a sweep of dozens of points runs on a small
machine. Finished points are appended to `points.jsonl` in the output directory as
they end; a rerun with the same config, target and overrides reuses them (and tries
the points that failed again). The sweep
writes `sweep.md`, `sweep.csv`, `sweep.json` and `sweep.png` (memory per device and
the estimated step time per point, the chip's memory as a line; what does not fit is
marked, and the fastest point that fits).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
from typing import Any, Sequence

from w2s_vqa import progress
from w2s_vqa.config import ConfigError, load_config
from w2s_vqa.models import config as model_config_lib
from w2s_vqa.train import hardware
from w2s_vqa.train import plan as plan_lib
from w2s_vqa.train.hardware import GIB

POINTS_FILE = "points.jsonl"
OUTPUTS = ("sweep.md", "sweep.csv", "sweep.json", "sweep.png")


def split_values(text: str) -> list[str]:
    """"(-1,8,1),(-1,16,1)" -> ["(-1,8,1)", "(-1,16,1)"]: commas inside brackets and
    quotes do not split."""
    values, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    return values


def parse_grid(text: str) -> tuple[str, list[str]]:
    """"KEY=V1,V2,..." -> (KEY, [V1, V2, ...]) (each value as written, a Python literal
    or a bare string, as --set takes it). Raises ConfigError naming the item."""
    key, sep, values = text.partition("=")
    key = key.strip()
    items = split_values(values) if sep else []
    if not key or not items or any(not v for v in items):
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,... (e.g. model.remat=none,minimal,full)")
    return key, items


def grid_points(grids: Sequence[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """The cross product of the grids, in order: [{key: value text}, ...]. Raises
    ConfigError when a key appears twice."""
    keys = [k for k, _ in grids]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(f"--grid names {', '.join(repeated)} more than once")
    return [dict(zip(keys, combo)) for combo in itertools.product(*[values for _, values in grids])]


def _point_key(config_file: str | None, target: str, overrides: Sequence[str]) -> str:
    return json.dumps([config_file or "", target, list(overrides)])


def _read_done(path: str) -> dict[str, dict]:
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a killed run: that point runs again
                if record.get("plan") is not None:  # a point that failed is tried again
                    done[record["key"]] = record
    return done


def run_sweep(config_file: str | None, base_overrides: Sequence[str], target: str, points: Sequence[dict[str, str]],
              out_dir: str, *, timeout: float | None = None, prompt_length: int | None = None,
              show_progress: bool = True) -> list[dict[str, Any]]:
    """Plan every point (base overrides, then the point's) for `target`, each in a fresh
    process, and write the tables and the plot into `out_dir`. Returns one record per
    point: {"point", "plan" (plan.plan's dict, or None), "error" (None or why the point
    could not be planned)}.

    Every point's config and model settings are read before anything compiles, so a bad key
    or model value (model.remat=...) fails the whole sweep at once (ConfigError); a point whose plan fails (a mesh the target cannot form,
    a batch the mesh cannot split, a timeout) becomes a row with its error.
    """
    parsed = hardware.parse_target(target)
    configs = [load_config(config_file, [*base_overrides, *(f"{k}={v}" for k, v in point.items())])
               for point in points]
    for config in configs:  # the model settings' values too (model.remat, ...): ConfigError naming the key
        model_config_lib.student_config(config)
    os.makedirs(out_dir, exist_ok=True)
    done_path = os.path.join(out_dir, POINTS_FILE)
    done = _read_done(done_path)
    records = []
    bar = progress.bar(total=len(points), desc=f"sweep {parsed.name}", unit="point", disable=not show_progress)
    with open(done_path, "a") as log:
        for point, config in zip(points, configs):
            overrides = [*base_overrides, *(f"{k}={v}" for k, v in point.items())]
            key = _point_key(config_file, parsed.name, overrides)
            if key in done:
                records.append({"point": point, "plan": done[key]["plan"], "error": done[key]["error"]})
                bar.update(1)
                continue
            try:
                result, error = plan_lib.plan_in_subprocess(config, parsed, prompt_length=prompt_length,
                                                            timeout=timeout), None
            except hardware.PlanError as e:
                result, error = None, str(e)
            except subprocess.TimeoutExpired:
                result, error = None, f"compilation took longer than {timeout:g} s"
            records.append({"point": point, "plan": result, "error": error})
            log.write(json.dumps({"key": key, "point": point, "plan": result, "error": error}) + "\n")
            log.flush()
            bar.update(1)
    bar.close()
    write_outputs(records, out_dir, target=parsed.name, config_file=config_file, base_overrides=base_overrides)
    return records


# ----------------------------------------------------------------------------- rows


def _gib(value) -> float | None:
    return None if value is None else value / GIB


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """One flat table row of a sweep record (sizes in GiB per device, times in ms)."""
    row: dict[str, Any] = dict(record["point"])
    plan = record["plan"]
    if plan is None:
        row.update({"status": f"error: {record['error']}", "fits": None})
        return row
    mem, analytic = plan.get("memory") or {}, plan["analytic"]
    estimate = plan.get("estimate") or {}
    collectives = plan.get("collectives") or {}
    total = mem.get("total", mem.get("needed"))
    row.update({
        "status": plan["status"], "fits": plan["fits"],
        "memory_gib": _gib(total), "capacity_gib": _gib(mem.get("capacity")), "margin_gib": _gib(mem.get("margin")),
        "parameters_gib": _gib(analytic["parameters"]), "optimizer_gib": _gib(analytic["optimizer"]),
        "activations_estimate_gib": _gib(analytic["activations_estimate"]), "temp_gib": _gib(mem.get("temp")),
        "tflops_per_device": (plan["flops"].get("compiler_per_device") or plan["flops"]["analytic_per_device"]) / 1e12,
        "collectives_gib": _gib(collectives.get("total", {}).get("moved")),
        "est_step_ms": estimate["step_s"] * 1e3 if estimate else None,
        "est_mfu": estimate["mfu"] if estimate else None,
        "est_lower_bound": bool(estimate.get("lower_bound")),
        "compile_s": plan.get("compile_s"), "host_peak_gib": _gib(plan.get("host_peak_bytes")),
    })
    return row


# A roofline estimate leaves out overlap, kernel choice and launch costs: points whose
# estimates lie within this fraction of the fastest are not told apart, only listed together.
ESTIMATE_TIES = 0.10


def _comparable(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the rows whose estimates can be ranked: those that fit with a whole-step
    estimate. A scanned point's estimate is a lower bound (`est_lower_bound`: each loop
    body's bytes and collectives counted once), by an amount that differs between points
    (remat changes what the body holds), so it is ranked against no other, scanned or not."""
    return [i for i, r in enumerate(rows) if r.get("fits") and r.get("est_step_ms") and not r.get("est_lower_bound")]


def fastest_fitting(rows: Sequence[dict[str, Any]]) -> int | None:
    """Index of the row that fits with the lowest estimated step time among `_comparable`
    rows (None if no row has both)."""
    candidates = [(rows[i]["est_step_ms"], i) for i in _comparable(rows)]
    return min(candidates)[1] if candidates else None


def mark_fastest(rows: Sequence[dict[str, Any]]) -> list[int]:
    """Set each row's `fastest_fitting`: True for the points that fit whose estimated step time
    lies within ESTIMATE_TIES of the fastest one's (the estimate cannot order them), else
    False. Returns their indices, fastest first."""
    best = fastest_fitting(rows)
    limit = None if best is None else rows[best]["est_step_ms"] * (1 + ESTIMATE_TIES)
    tied = sorted((rows[i]["est_step_ms"], i) for i in _comparable(rows)
                  if limit is not None and rows[i]["est_step_ms"] <= limit)
    for i, row in enumerate(rows):
        row["fastest_fitting"] = any(i == j for _, j in tied)
    return [i for _, i in tied]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def write_outputs(records: Sequence[dict[str, Any]], out_dir: str, *, target: str, config_file: str | None,
                  base_overrides: Sequence[str]) -> dict[str, str]:
    """sweep.md, sweep.csv, sweep.json and sweep.png in `out_dir`; returns their paths."""
    rows = [row_of(r) for r in records]
    mark_fastest(rows)
    grid_keys = list(records[0]["point"]) if records else []
    columns = grid_keys + [c for c in ("fits", "memory_gib", "capacity_gib", "margin_gib", "parameters_gib",
                                       "optimizer_gib", "activations_estimate_gib", "temp_gib", "tflops_per_device",
                                       "collectives_gib", "est_step_ms", "est_mfu", "est_lower_bound", "compile_s",
                                       "host_peak_gib", "fastest_fitting", "status") if any(c in r for r in rows)]
    paths = {name: os.path.join(out_dir, name) for name in OUTPUTS}
    header = (f"Sweep of `w2s-vqa plan` on {target}, config {config_file or 'default'}"
              f"{' with ' + ' '.join(f'--set {o}' for o in base_overrides) if base_overrides else ''}. "
              "Sizes in GiB per device; est_step_ms and est_mfu are a roofline estimate, not a measurement: "
              f"fastest_fitting marks every point that fits within {ESTIMATE_TIES:.0%} of the fastest estimate. "
              "A point with est_lower_bound (scanned layers: the compiler counts each loop body once) is never "
              "marked; plan it with model.scan_layers=False for a whole-step estimate.")
    with open(paths["sweep.md"], "w") as f:
        f.write(header + "\n\n" + markdown(rows, columns) + "\n")
    with open(paths["sweep.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["sweep.json"], "w") as f:
        json.dump({"target": target, "config": config_file, "overrides": list(base_overrides), "rows": rows,
                   "plans": [r["plan"] for r in records], "errors": [r["error"] for r in records]}, f, indent=1)
    plot(rows, grid_keys, paths["sweep.png"], title=f"{config_file or 'default config'} on {target}")
    return paths


def plot(rows: Sequence[dict[str, Any]], grid_keys: Sequence[str], path: str, *, title: str) -> None:
    """Bars: memory per device per point (hatched red where it does not fit); a dashed
    line: the device's memory; dots on the right axis: the estimated step time; a star on
    the fastest point that fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["\n".join(f"{k}={r[k]}" for k in grid_keys) for r in rows]
    memory = [r.get("memory_gib") or 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.8))
    x = list(range(len(rows)))
    colors = ["tab:blue" if r.get("fits") else "tab:red" for r in rows]
    bars = ax.bar(x, memory, color=colors)
    for bar_, r in zip(bars, rows):
        if not r.get("fits"):
            bar_.set_hatch("//")
            bar_.set_alpha(0.6)
        if r.get("fits") is None:
            ax.annotate("error", (bar_.get_x() + bar_.get_width() / 2, 0), ha="center", va="bottom", fontsize=8)
        else:
            text = f"{r['memory_gib']:.1f}" if r.get("memory_gib") else "does not fit"
            ax.annotate(text, (bar_.get_x() + bar_.get_width() / 2, bar_.get_height()), ha="center", va="bottom",
                        fontsize=8)
    capacities = [r["capacity_gib"] for r in rows if r.get("capacity_gib")]
    if capacities:
        ax.axhline(max(capacities), color="black", linestyle="--", linewidth=1,
                   label=f"device memory {max(capacities):.1f} GiB")
    ax.set_ylabel("memory per device (GiB)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:blue"), plt.Rectangle((0, 0), 1, 1, color="tab:red", hatch="//",
                                                                             alpha=0.6)]
    names = ["fits", "does not fit"]
    if capacities:
        handles.append(ax.get_lines()[0])
        names.append(ax.get_lines()[0].get_label())
    steps = [r.get("est_step_ms") for r in rows]
    if any(s is not None for s in steps):
        ax2 = ax.twinx()
        points = [(i, s) for i, s in enumerate(steps) if s is not None]
        (line,) = ax2.plot([i for i, _ in points], [s for _, s in points], "o", color="tab:orange")
        ax2.set_ylabel("estimated step time (ms, roofline)")
        ax2.set_ylim(bottom=0)
        handles.append(line)
        names.append("estimated step time")
        tied = mark_fastest([dict(r) for r in rows])
        if tied:
            (star,) = ax2.plot(tied, [steps[i] for i in tied], "*", color="gold", markeredgecolor="black",
                               markersize=16)
            handles.append(star)
            names.append(f"fits, within {ESTIMATE_TIES:.0%} of the fastest estimate")
    ax.legend(handles, names, fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the verb's JSON line: points, fitting, failing, the fastest that fits."""
    rows = [row_of(r) for r in records]
    tied = mark_fastest(rows)
    return {"points": len(rows), "fit": sum(1 for r in rows if r.get("fits")),
            "do_not_fit": sum(1 for r in rows if r.get("fits") is False),
            "errors": sum(1 for r in rows if r.get("fits") is None),
            "fastest_fitting": [rows[i] for i in tied]}

