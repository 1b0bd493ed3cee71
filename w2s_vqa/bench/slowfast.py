"""SlowFast motion features: chunks per second of our fast pathway against pytorchvideo's model.

    python -m w2s_vqa.bench.slowfast [--chunks 4] [--size 224] [--repeats 3] [--no-torch]

The same random SlowFast-R50 weights on both sides (pytorchvideo's
`create_slowfast(model_depth=50)`, converted by w2s_vqa.convert.slowfast), the
same uint8 chunks of 32 frames at size x size:
  ours       w2s_vqa.models.slowfast.Extractor (jit, normalization included), float32
  torch      pytorchvideo's full model on [slow, fast] as the authors run it
             (blocks[0..4]: both pathways and the lateral connections), float32,
             no_grad, normalization included
  torch_fast pytorchvideo's fast-pathway modules alone (what ours computes)
Each is the median of --repeats timed calls after one untimed call (compilation
for ours). Where JAX's default device is a GPU, ours also in bfloat16. Needs
torch and pytorchvideo (pip install -e '.[test]') unless --no-torch. Prints one
line per figure; the last line is one JSON object with all of them.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import sys
import tempfile
import types

import numpy as np

from w2s_vqa.bench import common


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="ours only, random weights of our own")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    runtime.tune_cpu_host()  # first, before anything starts JAX's backend

    import jax

    from w2s_vqa.models import slowfast

    rng = np.random.default_rng(0)
    chunks = rng.integers(0, 256, (args.chunks, args.frames, args.size, args.size, 3), dtype=np.uint8)
    results: dict = {"chunks": args.chunks, "frames": args.frames, "size": args.size,
                     "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
                     "cpus": os.cpu_count()}
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

    dtypes = ["float32"] + (["bfloat16"] if jax.default_backend() == "gpu" else [])
    for dtype in dtypes:
        extractor = slowfast.Extractor(model, max_batch=args.chunks, dtype=dtype)
        seconds, _ = common.median_seconds(lambda: extractor(chunks), repeats=args.repeats)
        results[f"ours_{dtype}_chunks_per_s"] = args.chunks / seconds
        print(f"ours ({dtype}, jit): {args.chunks / seconds:.2f} chunks/s")

    if reference is not None:
        import torch

        def normalized():
            x = torch.from_numpy(chunks).float().div(255.0).sub(slowfast.PIXEL_MEAN).div(slowfast.PIXEL_STD)
            return x.permute(0, 4, 1, 2, 3)

        def torch_full():
            with torch.no_grad():
                fast = normalized()
                slow = torch.index_select(fast, 2, torch.linspace(0, fast.shape[2] - 1, fast.shape[2] // 4).long())
                x = [slow, fast]
                for block in reference.blocks[:5]:
                    x = block(x)
                return x[1].mean(dim=(2, 3, 4))

        def torch_fast():
            with torch.no_grad():
                x = normalized()
                for block in reference.blocks[:5]:
                    x = block.multipathway_blocks[1](x)
                return x.mean(dim=(2, 3, 4))

        for name, fn in (("torch", torch_full), ("torch_fast", torch_fast)):
            seconds, _ = common.median_seconds(fn, repeats=args.repeats)
            results[f"{name}_float32_chunks_per_s"] = args.chunks / seconds
            print(f"{name} (float32, {torch.get_num_threads()} threads): {args.chunks / seconds:.2f} chunks/s")
        results["ours_over_torch"] = results["ours_float32_chunks_per_s"] / results["torch_float32_chunks_per_s"]
    print(json.dumps(results))
    return results


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
