"""The default config: a tiny random student trained on the demo pool, on one CPU."""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # w2s_vqa.models.config.PRESETS
    c.model.hf_dir = ""  # a Hugging Face LLaVA-OneVision directory to start from instead
    c.model.dtype = "float32"  # compute dtype; parameters stay float32
    c.model.remat = False

    c.data = ml_collections.ConfigDict()
    c.data.num_frames = 4  # frames per video, sampled at 1 fps (uniformly when longer)
    c.data.image_size = 32  # must match the vision tower
    c.data.num_motion_chunks = 4  # one-second chunks, one motion token each
    c.data.motion_dim = 256
    c.data.motion_features = "none"  # "none" (zeros) or "precomputed"
    c.data.frame_format = "jpeg"  # how the store keeps frames: "jpeg" or "raw"
    c.data.store = ""  # prepared video store directory
    c.data.pairs = ""  # pair table
    c.data.batch_size = 4
    c.data.worker_count = 0
    return c
