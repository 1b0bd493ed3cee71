"""Ahead-of-time plans of the train step: what each device holds, computes and sends.

`plan(config, target)` builds the very step `w2s-vqa train` runs (train.step.
build_train_step: the same shardings, donation, remat, dtype and global batch) over
abstract state and batch (ShapeDtypeStructs: nothing is allocated, no checkpoint is
read), compiles it for a target, and reads back per device:

    memory       the compiler's argument / output / aliased / temporary / generated-code
                 bytes (`Compiled.memory_analysis()`); total = argument + output - alias
                 + temp + code, against the chip's memory (fits, margin)
    analytic     parameter, optimizer-state and batch bytes from the shardings and
                 shapes; an activation estimate (cost_model.activation_bytes)
    flops        the analytic count (cost_model.step_flops) and the compiler's
                 (`Compiled.cost_analysis()`, which counts a loop body once)
    collectives  bytes each kind of collective moves, read from the compiled HLO
                 (hlo_text.collective_bytes)
    estimate     a roofline step time and MFU (cost_model.roofline): an estimate, not a
                 measurement; with scanned layers "lower_bound" true, as the compiler
                 counts each loop body's bytes and collectives once

Targets (hardware.parse_target):
    v5p-64, v6e-8, v4-16, v5e-4, v5p:2x4x4 ...  a TPU slice (hardware.TOPOLOGIES), compiled for
        libtpu's compile-only devices on this CPU machine (`pip install '.[tpu]'`);
    cpu:N   N simulated CPU devices (no extra needed; compiled in a subprocess with
            XLA_FLAGS=--xla_force_host_platform_device_count=N when this process has
            another number of CPU devices);
    local   this process's own devices (a GPU host: its accelerators).

A compile that runs out of device memory is a result (`fits` false, "does not fit:
needs X GiB of Y GiB"), not an exception. So is a state that cannot fit before any
compilation (its parameters, optimizer state and batch alone exceed the chip): the
planner says so without compiling.

`python -m w2s_vqa.train.plan` plans one point read as JSON from stdin ({"config":
..., "target": ..., "prompt_length": ...}) and prints the plan as one JSON line: the
fresh process a sweep (train.sweep) or a cpu:N plan runs each point in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import time
from typing import Any

from w2s_vqa.models import stack
from w2s_vqa.train import cost_model, hlo_text
from w2s_vqa.train.hardware import GIB, PlanError, Target, device_chip, devices_for, environment_for, parse_target


def format_bytes(value: float) -> str:
    """Bytes in the unit that suits them: '1.25 GiB', '310.40 MiB', '96.00 KiB', '12 B'."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


# ----------------------------------------------------------------------------- the prompt


def prompt_shape(config, model_cfg) -> tuple[int, tuple[int, ...], str, object]:
    """(prompt length L, the five level token ids, where L came from, the answer sentence
    of objective.kind "released" or None), as the training loop builds the prompt
    (train.prompts.training_prompt): the tokenizer of `models.config.tokenizer_dir(config)`
    and the model's question.

    When that tokenizer is not on this machine (model.hf_dir names a pod's path), the
    length is estimated with the tiny tokenizer shipped for the presets: its text
    tokens plus the model's 2 x tokens_per_video video tokens. The video tokens are
    exact and dominate (3158 of the 7B config's tokens); Qwen2's own tokenizer splits
    the chat text into fewer pieces than the tiny one, so the estimate errs long, on the
    side of memory.
    """
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.train import prompts as prompts_lib

    directory = model_config_lib.tokenizer_dir(config)
    source = f"tokenizer {directory}"
    try:
        tokenizer = prompt_lib.load_tokenizer(directory)
    except FileNotFoundError:
        tokenizer = prompt_lib.load_tokenizer(model_config_lib.TINY_TOKENIZER)
        source = (f"estimate: {directory} has no tokenizer.json here; text tokens of the tiny tokenizer "
                  "plus the video tokens")
    training = prompts_lib.training_prompt(config, model_cfg, tokenizer)
    return training.pair.length, training.pair.level_token_ids, source, training.sentence


def _sentence_at(sentence, length: int):
    """`sentence` (prompt.AnswerSentence) moved to a prompt of `length` tokens: the same
    targets counted from the prompt's end (a given prompt length has no tokens to read)."""
    shift = length - sentence.prompt_length
    return dataclasses.replace(sentence, prompt_length=length, target_positions=tuple(
        t + shift for t in sentence.target_positions if t + shift >= 1))




# ----------------------------------------------------------------------------- plan


def _cpu_devices_here() -> int | None:
    """How many CPU devices this process has, or None when JAX has not started a CPU
    backend and can still be told a count (never for an imported, initialized JAX)."""
    import jax

    try:
        return len(jax.devices("cpu"))
    except RuntimeError:
        return None


def _unused_batch_entries(lowered, abstract_state, batch) -> list[str]:
    """Batch entries jit pruned from the compiled step's arguments because the step does
    not read them (jax keeps the kept inputs' indices in the lowering's compile args; []
    where this jax does not say)."""
    import jax

    try:
        kept = lowered._lowering.compile_args["kept_var_idx"]
    except (AttributeError, KeyError, TypeError):
        return []
    offset = len(jax.tree.leaves(abstract_state))
    names = list(batch)  # a dict flattens in sorted key order
    return [name for i, name in enumerate(sorted(names)) if offset + i not in kept]


def _check_mesh(config, mesh, batch_sharding) -> None:
    from w2s_vqa.train import step as step_lib

    shards = step_lib.batch_shards(batch_sharding)
    pairs = int(config.data.batch_size)
    if pairs < 1:
        raise PlanError(f"data.batch_size={pairs}: the global batch must be at least 1 pair (a multiple of the "
                        f"{shards} batch shards of mesh {dict(mesh.shape)})")
    if pairs % shards:
        raise PlanError(f"data.batch_size={pairs} does not split over the {shards} batch shards of mesh "
                        f"{dict(mesh.shape)} (the rules table's batch axes): choose a batch size divisible by "
                        f"{shards} or a mesh with fewer data x fsdp devices")


def plan(config, target: Target | str, *, prompt_length: int | None = None, compile: bool = True) -> dict[str, Any]:
    """Compile `config`'s train step for `target` ahead of time and report per device.

    Returns a JSON-ready dict: target, device kind and count, mesh, the config's model
    settings and prompt length, "fits" (bool), "status" ("fits", "does not fit: needs X
    GiB of Y GiB", ...), "memory" (compiler bytes and capacity), "analytic" (bytes from
    shapes and shardings), "flops", "collectives", "compile_s" and "estimate"
    (`roofline`, or None where the chip's peaks are unknown). All byte and FLOP figures
    are per device.

    Raises PlanError for an unknown target, a mesh the target's devices cannot form or a
    batch the mesh cannot split (each naming what to change), and what the config's
    readers raise (ConfigError naming the key). A cpu:N target with another number of
    CPU devices in this process is planned in a subprocess (`plan_in_subprocess`).
    With compile=False only the analytic figures are given ("compiled" false, "fits"
    None): seconds for any model.
    """
    target = parse_target(target) if isinstance(target, str) else target
    if target.kind == "cpu":
        here = _cpu_devices_here()
        if here != target.num_devices:
            return plan_in_subprocess(config, target, prompt_length=prompt_length, compile=compile)
    from w2s_vqa import sharding as sharding_lib
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.train import step as step_lib

    model_cfg = model_config_lib.student_config(config)
    if prompt_length is None:
        length, level_ids, length_source, sentence = prompt_shape(config, model_cfg)
    else:
        length, level_ids, length_source = int(prompt_length), (0, 1, 2, 3, 4), "given"
        sentence = prompt_shape(config, model_cfg)[3]
        sentence = None if sentence is None else _sentence_at(sentence, length)
        length_needed = 2 * model_cfg.tokens_per_video + 1
        if length < length_needed:
            raise PlanError(f"prompt length {length}: the two videos alone take {length_needed - 1} tokens")
    devices = devices_for(target)
    try:
        mesh = sharding_lib.mesh_from_config(config, devices=devices)
    except ValueError as e:
        raise PlanError(f"mesh.shape={tuple(config.mesh.shape)} on {target.name} ({len(devices)} devices): {e}") \
            from None
    chip, capacity = device_chip(target, devices)

    _check_mesh(config, mesh, step_lib.batch_sharding(config, mesh))
    ts = step_lib.build_train_step(config, mesh, level_ids, sentence)
    batch = step_lib.abstract_batch(config, length, ts.batch_sharding)
    state = cost_model.state_bytes(ts.abstract_state)
    batch_bytes = sum(cost_model.shard_bytes(a) for a in batch.values())
    pairs = int(config.data.batch_size)
    local_pairs = pairs // step_lib.batch_shards(ts.batch_sharding)
    layout = ts.layout
    # The cost model reads layers by index ("decoder.layers.3."): a scanned layout's stacked
    # paths are counted as the layers they hold.
    trainable_names = stack.unrolled_names(layout.trainable_keys, layout.codec.shapes)
    all_names = stack.unrolled_names(layout.codec.keys, layout.codec.shapes)
    flops = cost_model.step_flops(model_cfg, trainable_names, all_names, pairs, length)
    n_dev = mesh.devices.size
    parameters_global = sum(math.prod(s) for s in layout.codec.shapes.values())
    trainable_global = sum(math.prod(layout.codec.shapes[k]) for k in layout.trainable_keys)
    result: dict[str, Any] = {
        "target": target.name, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
        "devices": n_dev, "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "hosts": target.topology.hosts if target.topology else 1,
        "model": {"preset": config.model.preset, "hf_dir": config.model.hf_dir, "dtype": model_cfg.dtype,
                  **step_lib.switches(layout), "attention": model_cfg.attention,
                  "parameters": parameters_global, "trainable_parameters": trainable_global},
        "batch_size": pairs, "pairs_per_device": local_pairs, "prompt_length": length,
        "prompt_length_source": length_source,
        "chip": dataclasses.asdict(chip) if chip else None,
        "analytic": {"parameters": state["parameters"], "optimizer": state["optimizer"], "batch": batch_bytes,
                     "arguments": state["parameters"] + state["optimizer"] + batch_bytes,
                     "activations_estimate": cost_model.activation_bytes(
                         model_cfg, trainable_names, all_names, local_pairs, length)},
        "flops": {"analytic_step": flops["total"], "analytic_model": flops["model"],
                  "analytic_per_device": flops["total"] / n_dev, "analytic_model_per_device": flops["model"] / n_dev},
        "memory": {"capacity": capacity},
    }

    if result["analytic"]["arguments"] > capacity > 0 and target.kind != "cpu":
        need = result["analytic"]["arguments"]
        return {**result, "compiled": False, "fits": False,
                "status": f"does not fit: the parameters, optimizer state and batch alone need "
                          f"{format_bytes(need)} of {format_bytes(capacity)} per device (not compiled)",
                "collectives": None, "compile_s": 0.0, "estimate": None}

    if not compile:
        return {**result, "compiled": False, "fits": None, "status": "not compiled: analytic figures only",
                "collectives": None, "compile_s": 0.0, "estimate": None}

    start = time.perf_counter()
    lowered = ts.step.lower(ts.abstract_state, batch)
    unused = _unused_batch_entries(lowered, ts.abstract_state, batch)
    if unused:
        # jit drops inputs the step never reads (e.g. `target` without soft targets): they
        # are not the compiled step's arguments.
        used_batch = sum(cost_model.shard_bytes(a) for k, a in batch.items() if k not in unused)
        result["analytic"].update({"batch": used_batch, "batch_unused": unused,
                                   "arguments": state["parameters"] + state["optimizer"] + used_batch})
    try:
        compiled = lowered.compile()
    except Exception as e:  # the compiler's out-of-memory verdict is a result
        message = str(e)
        if not hlo_text.is_out_of_memory(message):
            raise
        figures = hlo_text.oom_figures(message)
        status = (f"does not fit: needs {format_bytes(figures[0])} of {format_bytes(figures[1])}"
                  f"{f' for {figures[2]}' if figures[2] else ''} (the compiler's figures)"
                  if figures else "does not fit: " + message.strip().splitlines()[0][:300])
        return {**result, "compiled": False, "fits": False, "status": status,
                "memory": {**result["memory"], **({"needed": figures[0], "compiler_capacity": figures[1]}
                                                  if figures else {})},
                "collectives": None, "compile_s": time.perf_counter() - start, "estimate": None}
    compile_s = time.perf_counter() - start

    mem = compiled.memory_analysis()
    memory = {"argument": int(mem.argument_size_in_bytes), "output": int(mem.output_size_in_bytes),
              "alias": int(mem.alias_size_in_bytes), "temp": int(mem.temp_size_in_bytes),
              "generated_code": int(mem.generated_code_size_in_bytes)}
    memory["total"] = (memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
                       + memory["generated_code"])
    memory["capacity"] = capacity
    memory["margin"] = capacity - memory["total"] if capacity else None
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    collectives = hlo_text.collective_bytes(compiled.as_text(), n_dev)
    compiler_flops = float(cost.get("flops", 0.0))
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    result["flops"].update({"compiler_per_device": compiler_flops, "bytes_accessed_per_device": bytes_accessed})
    fits = memory["margin"] is None or memory["margin"] >= 0
    status = (f"fits: {format_bytes(memory['total'])} of {format_bytes(capacity)}" if fits
              else f"does not fit: needs {format_bytes(memory['total'])} of {format_bytes(capacity)}")
    estimate = cost_model.roofline(chip, max(compiler_flops, result["flops"]["analytic_per_device"]), bytes_accessed,
                        collectives["total"]["moved"], result["flops"]["analytic_model_per_device"])
    if estimate and layout.model_cfg.scan_layers:
        # The bytes and collectives of a layer body are counted once, not once per layer.
        estimate["lower_bound"] = True
    return {**result, "compiled": True, "fits": fits, "status": status, "memory": memory,
            "collectives": collectives, "compile_s": compile_s, "host_peak_bytes": _host_peak_bytes(),
            "estimate": estimate}


def _host_peak_bytes() -> int | None:
    """This process's peak resident memory so far (the compile's, in a fresh process), bytes."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
    except (ImportError, OSError):
        return None


# ----------------------------------------------------------------------------- in a fresh process


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*: ")


def error_line(stderr: str) -> str:
    """The line of a failed child's stderr that says what failed: its last "error: ..."
    line or exception line ("ZeroDivisionError: ..."), not JAX's note on the filtered
    traceback that follows an exception; else its last line ("" when empty)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    raised = [line for line in lines if line.startswith("error: ") or _EXCEPTION_LINE.match(line)]
    return (raised or lines or [""])[-1]


def plan_in_subprocess(config, target: Target | str, *, prompt_length: int | None = None, compile: bool = True,
                       timeout: float | None = None) -> dict[str, Any]:
    """`plan` in a fresh Python process (its memory is freed when it exits; cpu:N gets its
    device count). Raises PlanError with the child's last error line when it fails,
    subprocess.TimeoutExpired after `timeout` seconds."""
    target = parse_target(target) if isinstance(target, str) else target
    request = json.dumps({"config": json.loads(config.to_json()), "target": target.name,
                          "prompt_length": prompt_length, "compile": compile})
    proc = subprocess.run([sys.executable, "-m", "w2s_vqa.train.plan"], input=request, capture_output=True,
                          text=True, env=environment_for(target), timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode < 0:
        # SIGKILL from outside is most often the kernel's out-of-memory killer: compiling a
        # large model's step holds much of a small host's memory (README gives figures).
        hint = " (the kernel's out-of-memory killer, most often: free host memory or plan fewer points at once)" \
            if proc.returncode == -9 else ""
        raise PlanError(f"planning for {target.name} was killed by signal {-proc.returncode}{hint}")
    if proc.returncode != 0 or not lines:
        last = error_line(proc.stderr) or f"exit status {proc.returncode}"
        raise PlanError(last[len("error: "):] if last.startswith("error: ") else
                        f"planning for {target.name} failed: {last}")
    return json.loads(lines[-1])


def _main() -> int:
    import ml_collections

    request = json.loads(sys.stdin.read())
    config = ml_collections.ConfigDict(request["config"])
    target = parse_target(request["target"])
    try:
        result = plan(config, target, prompt_length=request.get("prompt_length"),
                      compile=request.get("compile", True))
    except ValueError as e:  # PlanError, ConfigError: the message is the user's to read
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
