"""The paper's released stage-3 model, asked as the authors ask it (docs/method.md).

    huggingface-cli download kkkkkklinhan/llava_qwen_slowfast_w2s_stage3 --local-dir w2s_stage3
    w2s-vqa convert-slowfast --checkpoint SLOWFAST_8x8_R50.pyth --out slowfast_r50.safetensors
    w2s-vqa prepare --config configs/w2s_released.py --inputs anchor_videos/ --out anchor_store \\
        --set data.slowfast_weights=slowfast_r50.safetensors
    w2s-vqa anchors --store anchor_store --mos anchor_mos.csv --out anchors
    w2s-vqa score --config configs/w2s_released.py --hf w2s_stage3 --anchors anchors \\
        --inputs my_videos/ --out scores.csv --set data.slowfast_weights=slowfast_r50.safetensors
        [--mode paper]

Fine-tune it on a MOS set (random splits, scored before and after), with the released
trainer's loss and learning rates (below):

    w2s-vqa finetune --config configs/w2s_released.py --hf w2s_stage3 --videos my_set/ \\
        --mos my_set.csv --name my_set --workdir ft --set data.slowfast_weights=slowfast_r50.safetensors

Continue its weak-to-strong stages on a pool (a store `prepare` made with this config and
data.distortions, its `pairs` table, anchors and teacher scores); stage 1 trains from it:

    w2s-vqa stages --config configs/w2s_released.py --hf w2s_stage3 --workdir w2s --stages 2 \\
        --set data.store=pool_store --set data.pairs=pairs/pairs_train.parquet \\
        --set stages.anchors=anchors --set stages.teachers=teachers.csv \\
        --set data.slowfast_weights=slowfast_r50.safetensors

The directory is the authors' LLaVA-NeXT `llava_qwen` checkpoint, read as it is
(convert/llava_next.py); `w2s-vqa export --hf w2s_stage3 --out DIR` writes it for plain
transformers. What this config sets, from the authors' inference (github.com/clh124/W2S-VQA,
commit 2c7ca75, infer_pair.py and extract_motion_feature/):
- the prompt: their question, the second video after the first, the level logits read
  after "The quality of the second video is" (model.prompt = "released");
- frames at 1 fps by frame index, k * round(fps) from frame 0 (data.frame_times = "released"),
  384x384 bicubic, SigLIP's mean and std 0.5, kept losslessly ("raw");
- motion: SlowFast-R50 fast-pathway features of one 32-frame chunk per whole second
  (data.motion_features = "slowfast", computed by `prepare` in JAX);
- scoring: `--mode paper` is the authors' procedure (0-100), `--mode map` ours (anchors' MOS).

Where our store cannot give their inputs exactly (measured on real clips by
`python -m w2s_vqa.bench.released_inputs`, table in docs/2026-12-released-model.md): the authors take every video's own frame count (frame
k * round(fps) for every k, no cap) and 8 to 10 motion chunks; a store holds a fixed
`num_frames` and `num_motion_chunks` per video: a clip longer than 10 s gets 10 of their
frames and chunks chosen uniformly, a shorter one masked frame slots (a masked slot still
takes its rotary position). Frames of clips up to 10 s are theirs, frame for frame
(data.frame_times), and motion chunks too: at least 8, the last repeated
(data.motion_min_chunks).
"""

from w2s_vqa.config import defaults


def get_config(arg: str = ""):
    c = defaults()
    c.model.preset = "llava-ov-7b"  # shapes when model.hf_dir is unset (plan, tests)
    c.model.hf_dir = ""  # the downloaded checkpoint: --set model.hf_dir=w2s_stage3 (or score --hf)
    c.model.prompt = "released"
    c.model.dtype = "bfloat16"  # the authors score in float16
    c.model.attention = "xla"

    c.data.num_frames = 10
    c.data.frame_times = "released"  # frame k * round(fps) from frame 0, as infer_pair.py's load_video
    c.data.image_size = 384
    c.data.frame_format = "raw"  # their frames are decoded once, never re-encoded
    c.data.num_motion_chunks = 10
    c.data.motion_min_chunks = 8  # their data_loader.py pads a clip to 8 chunks, the last repeated
    c.data.motion_features = "slowfast"
    c.data.slowfast_weights = ""  # required: --set data.slowfast_weights=FILE (convert-slowfast)
    c.data.distortions = ""  # scoring: the videos as they are
    c.data.augment = ""
    c.data.batch_size = 8

    # Fine-tuning it (`finetune --hf`) or continuing its stages trains as the authors' released
    # trainer did (docs/2026-12-released-model.md): the language model's cross-entropy over the
    # answer sentence, no confidence term, the language model frozen, the vision tower at 2e-6 and
    # the projectors at 1e-5, 3% warm-up. --set objective.kind=paper for the paper's loss.
    c.objective.kind = "released"
    c.optim.learning_rate = 1e-5
    c.optim.warmup_fraction = 0.03
    c.optim.groups = (
        ("^language_model\\.|^lm_head\\.", 0.0),
        ("^vision_tower\\.", 2e-6),
        ("projector|^image_newline$", 1e-5),  # multimodal and motion projectors
    )
    return c
