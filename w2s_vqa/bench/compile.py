"""Scanned against unrolled layers: compile seconds, host peak memory and the CPU train step.

    python -m w2s_vqa.bench.compile                          # small preset on this CPU
    python -m w2s_vqa.bench.compile --points configs/w2s_llava_ov_7b.py@v5p-64 \\
        --set "mesh.shape=(16,1,2)" --repeats 0                      # libtpu, compile-only
    python -m w2s_vqa.bench.compile --points configs/w2s_llava_ov_7b.py@v5p-64 \\
        --set "mesh.shape=(16,1,2)" --repeats 0 --variants \\
        "unrolled:model.scan_layers=False" \\
        "unrolled-frozen-f32:model.scan_layers=False;model.frozen_in_compute_dtype=False"

Two parts, each variant (default: scanned, model.scan_layers=True, against unrolled) in
the same run:

  compile  each (config, target) point planned (`w2s_vqa.train.plan`: the train step
           lowered and compiled for the target, nothing run) in a fresh process per
           variant, so each compile starts cold and its peak resident memory is its own
           (ru_maxrss of the child); reports compile seconds, host peak, the compiler's
           per-device memory and bytes accessed, and the roofline estimate's step time,
           and each variant's ratios to the first variant. XLA's cost analysis counts a
           loop body once, so compare bytes accessed between unrolled variants only.
  step     the `small` preset's jitted train step on this CPU (training loop's own
           step, synthetic batch), scanned and unrolled steps interleaved, `--repeats`
           rounds; min / median / max seconds per step each. `--repeats 0` skips it.

The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from w2s_vqa.bench import common

LAYOUTS = (("unrolled", False), ("scanned", True))


# ----------------------------------------------------------------------------- compile
def compile_point(config_path: str, target: str, overrides: list[str]) -> dict:
    """One plan in this process (the child's side): the plan's figures and this process's peak RSS."""
    from w2s_vqa.config import load_config
    from w2s_vqa.train import plan as plan_lib

    config = load_config(config_path or None, overrides)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = plan_lib.plan(config, target)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    flops = result.get("flops") or {}
    estimate = result.get("estimate") or {}
    return {"compiled": result.get("compiled"), "fits": result.get("fits"), "status": result.get("status"),
            # CPU seconds (all threads) move less than wall seconds with a shared machine's load.
            "compile_s": result.get("compile_s"), "plan_wall_s": wall, "plan_cpu_s": cpu,
            # ru_maxrss is in KiB on Linux; a plan that runs in its own child counts there.
            "host_peak_gib": max(resource.getrusage(who).ru_maxrss for who in (
                resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) * 1024 / 2**30,
            "device_memory": result.get("memory"), "bytes_accessed_per_device": flops.get("bytes_accessed_per_device"),
            "estimate": estimate}


def compile_in_child(config_path: str, target: str, overrides: list[str], timeout: float) -> dict:
    command = [sys.executable, "-m", "w2s_vqa.bench.compile", "--child", config_path, target, "--set", *overrides]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


DEFAULT_VARIANTS = tuple(f"{name}:model.scan_layers={scan}" for name, scan in LAYOUTS)


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """`NAME:KEY=VALUE;KEY=VALUE` specs -> [(name, overrides)]; ValueError names the bad spec."""
    variants = []
    for spec in specs:
        name, sep, rest = spec.partition(":")
        overrides = [item.strip() for item in rest.split(";") if item.strip()]
        if not sep or not name or not all("=" in item for item in overrides):
            raise ValueError(f"--variants: {spec!r} is not NAME:KEY=VALUE[;KEY=VALUE...]")
        if name in {n for n, _ in variants}:
            raise ValueError(f"--variants: the name {name!r} is given twice")
        variants.append((name, overrides))
    return variants


def ratios(row: dict, names: list[str]) -> dict:
    """Each later variant's compile seconds, host peak and bytes accessed over the first variant's."""
    keys = ("compile_s", "plan_cpu_s", "host_peak_gib", "bytes_accessed_per_device")
    base = row[names[0]]
    out = {}
    for name in names[1:]:
        out[name] = {key: row[name][key] / base[key] for key in keys if row[name].get(key) and base.get(key)}
    return out


def compile_rows(points: list[str], overrides: list[str], timeout: float,
                 variants: list[tuple[str, list[str]]]) -> list[dict]:
    rows = []
    for point in points:
        config_path, _, target = point.rpartition("@")
        row = {"point": point}
        for name, extra in variants:
            row[name] = compile_in_child(config_path, target, [*overrides, *extra], timeout)
            row[name]["overrides"] = extra
            print(f"{point} {name}: {json.dumps(row[name])}", flush=True)
        row["over_" + variants[0][0]] = ratios(row, [name for name, _ in variants])
        unrolled, scanned = row.get("unrolled", {}).get("compile_s"), row.get("scanned", {}).get("compile_s")
        if unrolled and scanned:
            row["compile_speedup"] = unrolled / scanned
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- step
def step_setup(preset: str, pairs: int, scan: bool, attention: str):
    """(run one step, state holder) of the training loop's jitted step for `preset`."""
    import jax

    from w2s_vqa.config import defaults
    from w2s_vqa.models import config as config_lib
    from w2s_vqa.models import student
    from w2s_vqa.train import step as step_lib

    shape = config_lib.preset(preset)
    config = defaults()
    config.model.preset = preset
    config.model.attention = attention
    config.model.scan_layers = scan
    config.data.image_size = shape.vision.image_size
    config.data.num_frames = shape.num_frames
    config.data.num_motion_chunks = shape.num_motion_chunks
    config.data.batch_size = pairs
    config.mesh.shape = (1, 1, 1)
    config.mesh.num_devices = 1
    config.train.num_steps = 1000
    from w2s_vqa import sharding

    ts = step_lib.build_train_step(config, sharding.mesh_from_config(config), (10, 11, 12, 13, 14))
    state = ts.layout.init_state(ts.layout.codec.to_dict(student.create(ts.layout.model_cfg, seed=0)))
    rng = np.random.default_rng(0)
    batch = {}
    for key, struct in step_lib.abstract_batch(config, 64).items():
        if struct.dtype == np.uint8:
            value = rng.integers(0, 256, struct.shape)
        elif key in ("label", "origin", "input_ids"):
            value = rng.integers(0, 5, struct.shape)
        elif key == "motion":
            value = rng.normal(size=struct.shape)
        else:
            value = np.ones(struct.shape)
        batch[key] = jax.device_put(np.asarray(value, struct.dtype))
    holder = {"state": state}

    def run():
        holder["state"], metrics = ts.step(holder["state"], batch)
        jax.block_until_ready(metrics)

    return run


def step_rows(preset: str, pairs: int, repeats: int, attention: str) -> dict:
    runs, first = {}, {}
    for name, scan in LAYOUTS:
        runs[name] = step_setup(preset, pairs, scan, attention)
        start = time.perf_counter()
        runs[name]()  # compiles
        first[name] = time.perf_counter() - start
        print(f"{preset} {name}: first step (compilation included) {first[name]:.1f} s", flush=True)
    times = {name: [] for name, _ in LAYOUTS}
    for _ in range(repeats):  # interleaved, so drift on a shared machine falls on both
        for name, _ in LAYOUTS:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    out = {"preset": preset, "pairs_per_step": pairs, "attention": attention, "repeats": repeats}
    for name, _ in LAYOUTS:
        t = times[name]
        out[name] = {"first_step_s": first[name], "min_s": min(t), "median_s": float(np.median(t)), "max_s": max(t),
                     "times_s": t}
    out["scanned_over_unrolled"] = out["scanned"]["median_s"] / out["unrolled"]["median_s"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs="*", default=["@cpu:1"],
                        help="CONFIG@TARGET to compile both ways (target as `w2s-vqa plan`; empty config: "
                             "defaults with --set); default: the --set config on one CPU device")
    parser.add_argument("--set", nargs="*", default=None, dest="overrides",
                        help="config overrides of every compile point (default: the small preset's shapes)")
    parser.add_argument("--preset", default="small", help="the CPU step's model preset")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="CPU step rounds; 0 skips the CPU step")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help="compile variants, each NAME:KEY=VALUE[;KEY=VALUE...] (config overrides on top of "
                             "--set), compiled in this order, ratios against the first; default: "
                             + " ".join(DEFAULT_VARIANTS))
    parser.add_argument("--attention", default="blocked", help="the CPU step's attention kernel")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per compile point")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variants)
    except ValueError as err:
        parser.error(str(err))
    if args.child:
        print(json.dumps(compile_point(args.child[0], args.child[1], args.overrides or [])), flush=True)
        return {}

    from w2s_vqa import runtime

    runtime.tune_cpu_host()
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    overrides = args.overrides if args.overrides is not None else [
        "model.preset='small'", "data.image_size=384", "data.batch_size=1", "model.attention='blocked'"]
    figures = {"benchmark": "compile", "machine": common.machine(), "device": jax.devices()[0].device_kind,
               "compile": compile_rows(args.points, overrides, args.timeout, variants)}
    if args.repeats > 0:
        figures["step"] = step_rows(args.preset, args.pairs, args.repeats, args.attention)
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
