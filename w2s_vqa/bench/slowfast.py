"""SlowFast motion features: chunks per second of our fast pathway against pytorchvideo's, on equal work.

    python -m w2s_vqa.bench.slowfast [--chunks 4] [--size 224] [--frames 32] [--repeats 5]
                                     [--all-lowerings] [--no-torch]

The same random SlowFast-R50 weights on both sides (pytorchvideo's
`create_slowfast(model_depth=50)`, converted by w2s_vqa.convert.slowfast), the
same uint8 chunks of `frames` frames at size x size, one call = `chunks` chunks:
  ours        w2s_vqa.models.slowfast.Extractor (jit, normalization included), in
              the backend's default lowering; with --all-lowerings every lowering
              (ours_<lowering>), e.g. the "stacked" one that was the default before
  torch_fast  pytorchvideo's fast-pathway modules alone (`multipathway_blocks[1]` of
              blocks 0..4, then the global average): the computation ours does,
              on all chunks in one call and (torch_fast_per_chunk) one chunk per
              call; the headline takes the faster of the two
  torch_full  pytorchvideo's whole model on [slow, fast] as the authors run it (both
              pathways and the lateral connections), the fast tensor averaged
PyTorch runs no_grad with normalization included, on torch.get_num_threads() threads.
Ours runs as `Extractor` runs it (on the CPU one chunk per compiled call).
The headline is `ours_over_torch_fast` (equal work, float32); `ours_over_torch_full`
follows. After one untimed call each (compilation for ours), every repeat calls each
of them once, in turn (interleaved), so that a change in the machine's load reaches
all of them; each figure is given as min/median/max chunks per second over the
repeats, and the ratios are of medians. Process CPU seconds per chunk (all threads,
median) are given beside wall time: on a machine that other jobs share they move
less than wall time. Where JAX's default device is a GPU, ours also runs in bfloat16
(`ours_bfloat16_*`; PyTorch stays float32 on the CPU). Needs torch and pytorchvideo
(pip install -e '.[test]') unless --no-torch. Prints one line per figure; the last
line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import statistics
import sys
import tempfile
import time
import types

import numpy as np



def import_create_slowfast():
    """pytorchvideo's create_slowfast. pytorchvideo.models imports torchvision.ops.RoIAlign (for its
    detection head), and torchvision from the registry does not load against the CPU torch build:
    a stand-in torchvision.ops stands in sys.modules during the import (SlowFast never calls it)."""
    try:
        import torchvision.ops  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_ins = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.ops")}
        for name, module in stand_ins.items():
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        stand_ins["torchvision.ops"].RoIAlign = type("RoIAlign", (), {})
        stand_ins["torchvision"].ops = stand_ins["torchvision.ops"]
        sys.modules.update(stand_ins)
        try:
            from pytorchvideo.models.slowfast import create_slowfast
        finally:
            for name in stand_ins:
                sys.modules.pop(name, None)
        return create_slowfast
    from pytorchvideo.models.slowfast import create_slowfast

    return create_slowfast


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=4, help="chunks per call (the batch)")
    parser.add_argument("--size", type=int, default=224, help="frame side (the authors': 224)")
    parser.add_argument("--frames", type=int, default=32, help="frames per chunk (the authors': 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--all-lowerings", action="store_true", help="time every lowering of ours, not the default only")
    parser.add_argument("--no-torch", action="store_true", help="ours only, random weights of our own")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    runtime.tune_cpu_host()  # first, before anything starts JAX's backend

    import jax

    from w2s_vqa.models import slowfast

    rng = np.random.default_rng(0)
    chunks = rng.integers(0, 256, (args.chunks, args.frames, args.size, args.size, 3), dtype=np.uint8)
    results: dict = {"chunks": args.chunks, "frames": args.frames, "size": args.size, "repeats": args.repeats,
                     "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                     "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(), "default_lowering": slowfast.default_lowering()}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "fast.safetensors")
        reference = None
        if args.no_torch:
            _random_weights(weights, rng)
        else:
            import torch

            from w2s_vqa.convert import slowfast as convert_lib

            torch.manual_seed(0)
            reference = import_create_slowfast()(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1)).eval()
            checkpoint = os.path.join(tmp, "SLOWFAST_8x8_R50.pyth")
            torch.save({"model_state": reference.state_dict()}, checkpoint)
            convert_lib.convert(checkpoint, weights)
        model = slowfast.load(weights)

    runs: dict = {}  # name -> (label, call)
    lowerings = slowfast.LOWERINGS if args.all_lowerings else (slowfast.default_lowering(),)
    dtypes = ["float32"] + (["bfloat16"] if jax.default_backend() == "gpu" else [])
    results["bfloat16"] = "measured" if "bfloat16" in dtypes else "not measured: JAX's default device is no GPU"
    for dtype in dtypes:
        for lowering in lowerings:
            extractor = slowfast.Extractor(model, max_batch=args.chunks, dtype=dtype, lowering=lowering)
            name = f"ours_{dtype}" if lowering == slowfast.default_lowering() else f"ours_{lowering}_{dtype}"
            runs[name] = (f"ours ({dtype}, jit, {lowering})", lambda e=extractor: e(chunks))

    if reference is not None:
        import torch

        def normalized(chunks=chunks):
            x = torch.from_numpy(chunks).float().div(255.0).sub(slowfast.PIXEL_MEAN).div(slowfast.PIXEL_STD)
            return x.permute(0, 4, 1, 2, 3)

        def torch_fast(chunks=chunks):
            with torch.no_grad():
                x = normalized(chunks)
                for block in reference.blocks[:5]:
                    x = block.multipathway_blocks[1](x)
                return x.mean(dim=(2, 3, 4))

        def torch_full():
            with torch.no_grad():
                fast = normalized()
                slow = torch.index_select(fast, 2, torch.linspace(0, fast.shape[2] - 1, fast.shape[2] // 4).long())
                x = [slow, fast]
                for block in reference.blocks[:5]:
                    x = block(x)
                return x[1].mean(dim=(2, 3, 4))

        threads = torch.get_num_threads()
        runs["torch_fast_float32"] = (f"pytorchvideo fast pathway (float32, {threads} threads)", torch_fast)
        runs["torch_fast_per_chunk_float32"] = (f"pytorchvideo fast pathway, one chunk per call (float32, "
                                                f"{threads} threads)", lambda: [torch_fast(c) for c in chunks[:, None]])
        runs["torch_full_float32"] = (f"pytorchvideo full model (float32, {threads} threads)", torch_full)
        results["torch_threads"] = threads

    wall, cpu = interleaved({name: call for name, (_, call) in runs.items()}, repeats=args.repeats)
    for name, (label, _) in runs.items():
        rates = sorted(args.chunks / s for s in wall[name])
        results[f"{name}_chunks_per_s"] = statistics.median(rates)
        results[f"{name}_chunks_per_s_min_median_max"] = [rates[0], statistics.median(rates), rates[-1]]
        results[f"{name}_cpu_s_per_chunk"] = statistics.median(cpu[name]) / args.chunks
        print(f"{label}: {rates[0]:.2f} / {statistics.median(rates):.2f} / {rates[-1]:.2f} chunks/s "
              f"(min / median / max of {args.repeats}); {results[f'{name}_cpu_s_per_chunk']:.3f} CPU s per chunk")
    if reference is not None:
        ours = results["ours_float32_chunks_per_s"]
        # Equal work at PyTorch's best: the faster of its two call sizes.
        results["torch_fast_best_float32_chunks_per_s"] = max(
            results["torch_fast_float32_chunks_per_s"], results["torch_fast_per_chunk_float32_chunks_per_s"])
        for other in ("torch_fast_best", "torch_full"):
            results[f"ours_over_{other}"] = ours / results[f"{other}_float32_chunks_per_s"]
        results["ours_over_torch_fast"] = results.pop("ours_over_torch_fast_best")
        print(f"ours over pytorchvideo's fast pathway (equal work, the headline): {results['ours_over_torch_fast']:.2f}")
        print(f"ours over pytorchvideo's full model: {results['ours_over_torch_full']:.2f}")
    print(json.dumps(results))
    return results


def interleaved(calls: dict, *, repeats: int) -> tuple[dict, dict]:
    """({name: [wall seconds]}, {name: [process CPU seconds]}) of `repeats` rounds that call
    each function once, in turn, after one untimed call each; each call must block until
    its result is ready."""
    for call in calls.values():
        call()
    wall: dict = {name: [] for name in calls}
    cpu: dict = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def _random_weights(path: str, rng: np.random.Generator) -> None:
    from safetensors.numpy import save_file

    from w2s_vqa.models import slowfast

    tensors = {}
    for name, shape in slowfast.expected_tensors().items():
        if name.endswith(".kernel"):
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        else:  # BatchNorm as initialized: the identity
            value = np.ones(shape) if name.endswith(("weight", "var")) else np.zeros(shape)
        tensors[name] = value.astype(np.float32)
    save_file(tensors, path)


if __name__ == "__main__":
    main()
