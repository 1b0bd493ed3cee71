"""`w2s-vqa plan --topology NAME`: compile the train step ahead of time for a TPU slice,
cpu:N or this host's devices, and say what each device holds, computes and sends."""

from __future__ import annotations

import json
import os
import sys

from w2s_vqa.main.common import add_config_arguments, json_line, load_config
from w2s_vqa import workdir as workdir_lib


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--topology", default=None,
                        help="v5p-64, v6e-8, v4-16, v5e-4, ... (see --topologies), chip:shape such as v5p:2x4x4, "
                             "cpu:N (N simulated CPU devices) or local (this host's devices)")
    parser.add_argument("--topologies", action="store_true", help="list the named TPU slices and their chips, then exit")
    parser.add_argument("--prompt-length", type=int, default=None,
                        help="tokens per pair prompt (default: from the config's tokenizer, as training builds it)")
    parser.add_argument("--no-compile", action="store_true",
                        help="analytic figures only (parameters, optimizer state, batch, FLOPs): seconds for any model")
    parser.add_argument("--out", default=None, help="also write the plan's JSON to this file")


def prepare_environment(target_text: str) -> None:
    """Before JAX starts: compile-only targets run on the CPU backend, cpu:N with N devices."""
    if "jax" in sys.modules:
        return
    from w2s_vqa.train import hardware

    target = hardware.parse_target(target_text)
    env = hardware.environment_for(target)
    for key in ("JAX_PLATFORMS", "XLA_FLAGS", *hardware.LIBTPU_QUIET_ENV):
        if key in env:
            os.environ[key] = env[key]


def _size(value) -> str:
    from w2s_vqa.train.plan import format_bytes

    return "-" if value is None else format_bytes(value)


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def format_plan(result: dict) -> str:
    """The human table of one plan."""
    mem, analytic, flops = result.get("memory") or {}, result["analytic"], result["flops"]
    mesh = " x ".join(f"{k} {v}" for k, v in result["mesh"].items())
    hosts = f", {result['hosts']} hosts" if result.get("hosts", 1) > 1 else ""
    lines = [
        f"target      {result['target']}: {result['devices']} x {result['device_kind']}{hosts}; mesh {mesh}",
        f"model       {result['model']['preset'] or result['model']['hf_dir']}, {result['model']['dtype']}, "
        f"remat {result['model']['remat']}, layers {'scanned' if result['model'].get('scan_layers') else 'unrolled'}; "
        f"{_count(result['model']['parameters'])} parameters "
        f"({_count(result['model']['trainable_parameters'])} trainable)",
        f"batch       {result['batch_size']} pairs ({result['pairs_per_device']} per device), "
        f"{result['prompt_length']} tokens per pair ({result['prompt_length_source']})",
        f"verdict     {result['status']}",
        "",
        "per device",
        f"  parameters (analytic)        {_size(analytic['parameters'])}",
        f"  optimizer state (analytic)   {_size(analytic['optimizer'])}",
        f"  batch (analytic)             {_size(analytic['batch'])}",
        f"  activations (estimate)       {_size(analytic['activations_estimate'])}",
    ]
    if result.get("compiled"):
        lines += [
            f"  compiler: arguments          {_size(mem['argument'])}",
            f"            outputs            {_size(mem['output'])}",
            f"            aliased (donated)  {_size(mem['alias'])}",
            f"            temporaries        {_size(mem['temp'])}",
            f"            generated code     {_size(mem['generated_code'])}",
            f"            total              {_size(mem['total'])}",
        ]
    lines += [f"  memory of a device           {_size(mem.get('capacity'))}"
              + (f"   (margin {_size(mem['margin'])})" if mem.get("margin") is not None else "")]
    lines += ["", f"FLOPs per device per step: analytic {flops['analytic_per_device']:.4g}"
              + (f", compiler {flops['compiler_per_device']:.4g}"
                 + (" (counts each loop body once)" if result["model"].get("scan_layers") else "")
                 if "compiler_per_device" in flops else "")]
    if result.get("collectives"):
        parts = [f"{kind} {v['count']} ops, {_size(v['moved'])}" for kind, v in result["collectives"].items()
                 if kind != "total" and v["count"]]
        once = " (each loop body once)" if result["model"].get("scan_layers") else ""
        lines.append(f"collectives per device (sent, ring algorithms){once}: " + ("; ".join(parts) or "none"))
    if result.get("compiled"):
        peak = result.get("host_peak_bytes")
        lines.append(f"compile time {result['compile_s']:.1f} s" + (f"; this process's peak host memory {_size(peak)}"
                                                                  if peak else ""))
    estimate = result.get("estimate")
    if estimate:
        lines.append(f"estimated step (roofline, not a measurement): {_ms(estimate['step_s'])} = compute "
                     f"{_ms(estimate['compute_s'])} + collectives {_ms(estimate['collective_s'])}; "
                     f"MFU {estimate['mfu']:.1%}")
        if estimate.get("lower_bound"):
            lines.append("  a lower bound (and the MFU an upper one): with scanned layers the compiler counts each "
                         "loop body's bytes and collectives once; plan with --set model.scan_layers=False for the "
                         "whole step's")
    elif result.get("compiled"):
        lines.append("estimated step: none (no published peak for this device)")
    return "\n".join(lines)


def format_topologies() -> str:
    from w2s_vqa.train import hardware

    rows = hardware.topology_table()
    lines = ["name        chip  topology    chips  hosts  HBM GiB/chip  bf16 TFLOP/s  HBM GB/s  ICI GB/s (bidir.)"]
    for r in rows:
        lines.append(f"{r['name']:<11} {r['chip']:<5} {r['topology']:<11} {r['chips']:>5}  {r['hosts']:>5}  "
                     f"{r['hbm_gib_per_chip']:>12.1f}  {r['peak_bf16_tflops']:>12.0f}  {r['hbm_gbps']:>8.0f}  "
                     f"{r['ici_gbps_bidirectional']:>8.0f}")
    lines.append("sources: " + "; ".join(f"{c.kind}: {c.source}" for c in hardware.CHIPS.values()))
    return "\n".join(lines)


def run(args) -> int:
    if args.topologies:
        print(format_topologies())
        return 0
    if not args.topology:
        raise ValueError("--topology is required (a TPU slice such as v5p-64, cpu:N or local; --topologies lists them)")
    prepare_environment(args.topology)
    config = load_config(args)
    from w2s_vqa.train import plan as plan_lib

    result = plan_lib.plan(config, args.topology, prompt_length=args.prompt_length, compile=not args.no_compile)
    print(format_plan(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"plan: {workdir_lib.absolute(args.out)}")
    print(json_line(result))
    # 1 when it does not fit, so a launch script can stop on it; the plan is printed either way.
    return 1 if result["fits"] is False else 0
