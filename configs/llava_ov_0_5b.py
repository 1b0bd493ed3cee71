"""LLaVA-OneVision 0.5B student, fully fine-tuned: the small sibling of the paper's run.

    w2s-vqa train --config configs/llava_ov_0_5b.py --workdir runs/ov05 \\
        --set model.hf_dir=/path/to/llava-onevision-qwen2-0.5b-ov-hf \\
        --set data.store=/path/to/store --set data.pairs=/path/to/pairs_train.parquet

`arg` picks the mesh: "gpu" (default; one host, 8 GPUs, FSDP over all of them) or
"cpu" (a smoke run of the same shapes on one CPU host).
"""

from w2s_vqa.config import defaults


def get_config(arg: str = "gpu"):
    c = defaults()
    c.model.preset = "llava-ov-0.5b"  # shapes; weights come from model.hf_dir when set
    c.model.dtype = "bfloat16"
    c.model.remat = "full"  # only each layer's input kept for the backward pass
    # One layer body to compile per tower instead of one per layer (docs/2026-12-scan-layers.md);
    # checkpoints of either layout resume, export and score.
    c.model.scan_layers = True
    # cuDNN's fused attention on NVIDIA GPUs: XLA's materializes every frame's 729x729 scores,
    # which the fused kernel never writes (docs/2026-11-gpu-sessions.md); CPU runs keep XLA's.
    c.model.attention = "cudnn" if arg == "gpu" else "xla"

    c.data.num_frames = 8
    c.data.image_size = 384
    c.data.frame_format = "jpeg"  # a 384x384 frame is 432 KB raw
    c.data.num_motion_chunks = 10  # the authors' training code caps motion at 10 chunks
    c.data.motion_features = "precomputed"
    c.data.batch_size = 16
    c.data.worker_count = 8
    c.data.augment = ""  # the paper trains on the frames as they are

    c.optim.learning_rate = 1e-5  # full fine-tuning of a small model
    c.optim.warmup_fraction = 0.03
    c.optim.groups = ()

    c.train.num_steps = 500_000 // 16  # one epoch of a 500k-pair stage
    c.train.log_every = 50
    c.train.eval_every = 2000
    c.train.eval_batches = 200
    c.train.checkpoint_every = 2000

    c.mesh.shape = {"gpu": (1, -1, 1), "cpu": (1, -1, 1)}[arg]
    return c
