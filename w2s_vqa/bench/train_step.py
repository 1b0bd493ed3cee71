"""Train-step throughput: step time, pairs/s and model FLOPs utilization.

    python -m w2s_vqa.bench.train_step                       # tiny and small, float32, this CPU
    python -m w2s_vqa.bench.train_step --presets small llava-ov-0.5b --dtype bfloat16 \
        --attention cudnn                                    # on an NVIDIA GPU

The whole jitted train step (forward, backward, AdamW update, metrics) of a
full fine-tuning run, on a synthetic batch of the real shapes, over every local
device (mesh (1, -1, 1)). MFU = model FLOPs per step (train.cost_model.step_flops:
forward and backward matmuls, recomputation left out, as a plan counts them) / step time /
this device's matmul peak, which the benchmark measures itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from w2s_vqa.bench import common
from w2s_vqa.models import config as config_lib
from w2s_vqa.train import cost_model


def measure(preset: str, pairs: int, dtype: str, repeats: int, attention: str = "xla", remat: bool = False) -> dict:
    import jax

    from w2s_vqa.config import defaults
    from w2s_vqa.train import loop

    shape = config_lib.preset(preset)
    config = defaults()
    config.model.preset = preset
    config.model.dtype = dtype
    config.model.attention = attention
    config.model.remat = "full" if remat else "none"
    config.data.image_size = shape.vision.image_size
    config.data.num_frames = shape.num_frames
    config.data.num_motion_chunks = shape.num_motion_chunks
    config.data.batch_size = pairs
    config.train.num_steps = 1000
    with tempfile.TemporaryDirectory() as workdir:
        # Phases are printed as they end, so a run stopped by a time limit still shows where the time went.
        start = time.perf_counter()
        trainer = loop.Trainer(config, workdir)
        state = jax.block_until_ready(trainer.initial_state())
        init_s = time.perf_counter() - start
        print(f"{preset}: initialized in {init_s:.1f} s", flush=True)
        step = trainer.train_step.step  # the training loop's own jitted step (w2s_vqa.train.step)
        cfg = trainer.model_cfg
        rng = np.random.default_rng(0)
        ids, mask = trainer.prompt.padded(trainer.prompt.length)
        size, f, m = cfg.vision.image_size, cfg.num_frames, cfg.num_motion_chunks
        batch = trainer.to_device({
            "input_ids": np.repeat(ids[None], pairs, 0), "attention_mask": np.repeat(mask[None], pairs, 0),
            "pixel_values": rng.integers(0, 256, (pairs, 2, f, size, size, 3), dtype=np.uint8),
            "frame_mask": np.ones((pairs, 2, f), bool),
            "motion": rng.normal(size=(pairs, 2, m, cfg.motion_dim)).astype(np.float32),
            "motion_mask": np.ones((pairs, 2, m), bool),
            "label": rng.integers(0, 5, pairs).astype(np.int32), "weight": np.ones(pairs, np.float32),
            "origin": np.zeros(pairs, np.int32)})
        holder = {"state": state}

        def run():
            holder["state"], metrics = step(holder["state"], batch)
            jax.block_until_ready(metrics)

        start = time.perf_counter()
        run()
        first_s = time.perf_counter() - start
        print(f"{preset}: first step (compilation included) {first_s:.1f} s", flush=True)
        seconds, times = common.median_seconds(run, repeats=repeats, warmup=1)
        flops = cost_model.step_flops(cfg, trainer.layout.trainable_keys, trainer.layout.codec.keys, pairs,
                                      trainer.prompt.length)["model"]
    return {"preset": preset, "dtype": dtype, "attention": attention, "remat": remat, "pairs_per_step": pairs,
            "sequence_length": trainer.prompt.length, "init_s": init_s, "first_step_s": first_s,
            "step_s": seconds, "step_times_s": times, "pairs_per_s": pairs / seconds,
            "model_gflops_per_step": flops / 1e9, "achieved_gflops": flops / seconds / 1e9}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attention", default=None, choices=config_lib.ATTENTION_KERNELS,
                        help="default: blocked on CPU, xla elsewhere")
    parser.add_argument("--remat", action="store_true",
                        help="rematerialize each layer (model FLOPs leave the recomputation out)")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    runtime.tune_cpu_host()  # first: before anything starts JAX's backend

    import jax

    jax.config.update("jax_default_matmul_precision", "highest" if args.dtype == "float32" else "default")
    if args.attention is None:
        args.attention = "blocked" if jax.default_backend() == "cpu" else "xla"
    peak = common.jax_matmul_peak(8192 if jax.default_backend() == "gpu" else 2048, args.dtype)
    rows = []
    for preset in args.presets:
        row = measure(preset, args.pairs, args.dtype, args.repeats, args.attention, args.remat)
        row["mfu"] = row["achieved_gflops"] * 1e9 / peak
        rows.append(row)
        print(f"{preset} ({args.dtype}, {args.attention} attention): {row['step_s']:.3f} s/step, "
              f"{row['pairs_per_s']:.2f} pairs/s, "
              f"{row['achieved_gflops']:.1f} GFLOP/s = {row['mfu']:.1%} of the {peak / 1e9:.0f} GFLOP/s matmul peak")
    figures = {"benchmark": "train_step", "machine": common.machine(), "device": jax.devices()[0].device_kind,
               "devices": jax.device_count(), "matmul_peak_gflops": peak / 1e9, "rows": rows}
    common.emit(figures)
    return figures


if __name__ == "__main__":
    main()
