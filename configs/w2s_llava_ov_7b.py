"""The paper's stage-1 run: LLaVA-OneVision-Chat 7B, the authors' regime (docs/method.md).

    w2s-vqa convert-slowfast --checkpoint SLOWFAST_8x8_R50.pyth --out slowfast_r50.safetensors
    w2s-vqa prepare --config configs/w2s_llava_ov_7b.py --inputs videos/ --out store \\
        --set data.slowfast_weights=slowfast_r50.safetensors
    w2s-vqa train --config configs/w2s_llava_ov_7b.py:tpu --workdir gs://bucket/w2s/stage1 \\
        --set model.hf_dir=/path/to/llava-onevision-qwen2-7b-ov-chat-hf \\
        --set data.store=... --set data.pairs=.../stage1_train.parquet --set evals.val.pairs=...

Regime: decoder frozen, vision tower at 2e-6, projector and motion projector at
1e-5 (the authors' code); AdamW, cosine with 3% warm-up, one epoch, bf16 compute.
Motion tokens are the paper's: SlowFast-R50 (Kinetics-400) fast-pathway features of
every video and every distorted variant, computed by `prepare` in JAX from the
weights file data.slowfast_weights names, which `prepare` requires (a ConfigError
without it). With features computed beforehand, set data.motion_features=precomputed
and give the manifest a 'motion' column instead.
Data mixture of stage 1 (the pair table is built to hold it): 250k teacher pairs
from 200k videos, 160k spatial, 40k temporal and 50k compression synthetic pairs.

`arg` picks the mesh:
  "tpu": a TPU v5p pod slice; FSDP over 8 chips, data parallel across the rest
         (launch/tpu_pod.sh starts one process per host).
  "gpu": one host with 8 GPUs, FSDP over all 8 (launch/gpu_slurm.sh for several hosts).
"""

from w2s_vqa.config import defaults

# The batch (16 pairs) is split over data x fsdp, so their product is at most 16; with the
# decoder frozen, data parallelism plus tensor parallelism over 2 sends the least over ICI
# (FSDP would gather the frozen float32 decoder every step): `w2s-vqa plan` on a v5p-64
# (docs/2026-11-plan-paper-configs.md). On a v6e-64 (32 GiB chips): --set "mesh.shape=(-1,1,4)".
MESHES = {
    "tpu": (-1, 1, 2),
    "gpu": (1, 8, 1),
}


def get_config(arg: str = "tpu"):
    c = defaults()
    c.model.preset = "llava-ov-7b"
    c.model.dtype = "bfloat16"
    c.model.remat = "full"  # only each layer's input kept for the backward pass
    # One layer body to compile per tower instead of one per layer (docs/2026-12-scan-layers.md);
    # checkpoints of either layout resume, export and score.
    c.model.scan_layers = True
    c.model.attention = "cudnn" if arg == "gpu" else "xla"  # cuDNN's fused kernel on NVIDIA GPUs

    c.data.num_frames = 8  # 1 fps, 384x384
    c.data.image_size = 384
    c.data.frame_format = "jpeg"  # a 384x384 frame is 432 KB raw
    c.data.num_motion_chunks = 10
    c.data.motion_features = "slowfast"  # SlowFast-R50 fast-pathway features of every video and variant
    c.data.slowfast_weights = ""  # required by prepare: --set data.slowfast_weights=FILE (convert-slowfast)
    c.data.batch_size = 16
    c.data.worker_count = 8
    c.data.augment = ""  # the paper trains on the frames as they are

    c.objective.confidence = True
    c.objective.warmup_fraction = 0.1

    c.optim.learning_rate = 1e-4  # the paper's base rate; the groups below override it
    c.optim.warmup_fraction = 0.03
    c.optim.groups = (
        ("^language_model\\.|^lm_head\\.", 0.0),  # the LLM stays frozen
        ("^vision_tower\\.", 2e-6),
        ("projector|^image_newline$", 1e-5),  # multimodal and motion projectors
    )

    c.train.num_steps = 500_000 // 16  # one epoch of stage 1's 500k pairs
    c.train.log_every = 50
    c.train.eval_every = 2000
    c.train.eval_batches = 200
    c.train.checkpoint_every = 1000
    c.train.keep_last = 3

    # Stages 2 and 3 (docs/method.md): 100k new pairs each, 5k misranked synthetic pairs per family
    # and 85k gMAD pairs, one epoch of the new pairs; `w2s-vqa stages --stages 3`.
    c.stages.num_stages = 3
    c.stages.new_pairs = 100_000
    c.stages.synthetic_per_kind = 5_000
    c.stages.num_steps = 100_000 // 16
    c.mesh.shape = MESHES[arg]
    c.distributed.auto = arg == "tpu"
    return c
