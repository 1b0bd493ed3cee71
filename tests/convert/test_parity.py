"""Our Flax student against transformers' PyTorch LLaVA-OneVision, module by module.

Tiny random configurations, float32, highest matmul precision: every output
within 1e-4 of transformers'. The reference is transformers' own code
(`LlavaOnevisionForConditionalGeneration`); our weights come from its
save_pretrained directory through our importer, so the key map is tested too.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from tests.convert import hf_reference as ref
from w2s_vqa.models import config as config_lib
from w2s_vqa.convert import hf
from w2s_vqa.models import student

TOL = 1e-4


def build(tmp_path, attention="xla", scan_layers=False, **changes):
    """(transformers model, our student with the given attention kernel and layer loop) with the
    same weights."""
    text_changes = changes.pop("text", {})
    cfg = config_lib.preset("tiny", num_motion_chunks=0, **changes)
    if text_changes:
        cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, **text_changes}))
    torch_model = ref.hf_model(cfg)
    ours = hf.load_student(ref.save_hf(torch_model, tmp_path / "hf"), num_motion_chunks=0,
                           num_frames=cfg.num_frames, attention=attention, scan_layers=scan_layers)
    assert ours.cfg.scan_layers == scan_layers
    return cfg, torch_model, ours


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# Scanned layers: every hidden state read between scans of the stack (models.stack).
@pytest.mark.parametrize("feature_layer, scan", [(-1, False), (-2, False), (-2, True)])
def test_vision_tower_hidden_states(tmp_path, feature_layer, scan):
    cfg, torch_model, ours = build(tmp_path, scan_layers=scan, vision_feature_layer=feature_layer)
    frames = ref.pixels(np.random.default_rng(0), 3, 1, 32, 32, 3)
    with torch.no_grad():
        out = torch_model.model.vision_tower(ref.to_torch_video(frames)[:, 0], output_hidden_states=True)
    x = student.normalize_pixels(jnp.asarray(frames[:, 0]))
    layers = cfg.vision.num_hidden_layers
    mine = ours.vision_tower.hidden_states(x, list(range(layers + 1)))
    assert len(out.hidden_states) == layers + 1
    for theirs, ours_h in zip(out.hidden_states, mine):
        assert max_diff(theirs, ours_h) <= TOL
    assert max_diff(out.last_hidden_state, ours.vision_tower(x)) <= TOL


def test_projector_output(tmp_path):
    cfg, torch_model, ours = build(tmp_path)
    x = np.random.default_rng(1).normal(size=(2, 16, cfg.vision.hidden_size)).astype(np.float32)
    with torch.no_grad():
        theirs = torch_model.model.multi_modal_projector(torch.as_tensor(x))
    assert max_diff(theirs, ours.multi_modal_projector(jnp.asarray(x))) <= TOL


@pytest.mark.parametrize("attention, tied, scan", [("xla", False, False), ("xla", True, False),
                                                   ("blocked", False, False), ("blocked", True, False),
                                                   ("xla", False, True)])
def test_qwen2_logits_padded_batch(tmp_path, tied, attention, scan):
    cfg, torch_model, ours = build(tmp_path, attention, scan, text={"tie_word_embeddings": tied})
    assert (ours.lm_head is None) == tied
    rng = np.random.default_rng(2)
    ids = rng.integers(5, cfg.text.vocab_size, size=(3, 12))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, 5:] = 0
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits.numpy()
    mine = np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask)))
    assert cfg.text.num_key_value_heads < cfg.text.num_attention_heads
    real = mask.astype(bool)
    assert max_diff(theirs[real], mine[real]) <= TOL


def video_prompt(cfg, rng, batch, pad):
    """Text with two expanded video placeholders per sample, right-padded by `pad` tokens."""
    tpv = cfg.tokens_per_video
    head, middle, tail = 6, 4, 5
    length = head + tpv + middle + tpv + tail
    ids = rng.integers(5, cfg.text.vocab_size, size=(batch, length + pad))
    ids[:, head:head + tpv] = cfg.video_token_index
    ids[:, head + tpv + middle:head + 2 * tpv + middle] = cfg.video_token_index
    mask = np.ones_like(ids)
    if pad:
        mask[0, length:] = 0
    return ids, mask


@pytest.mark.parametrize("feature_layer, attention, scan", [(-1, "xla", False), (-2, "xla", False),
                                                            ((-2, -1), "xla", False), (-2, "blocked", False),
                                                            ((-2, -1), "xla", True)])
def test_video_forward_logits(tmp_path, feature_layer, attention, scan):
    cfg, torch_model, ours = build(tmp_path, attention, scan, vision_feature_layer=feature_layer)
    rng = np.random.default_rng(3)
    ids, mask = video_prompt(cfg, rng, batch=2, pad=3)
    video = ref.pixels(rng, 2, 2, cfg.num_frames, 32, 32, 3)  # [B, videos, F, H, W, C]
    assert cfg.num_frames > 1
    with torch.no_grad():
        theirs = torch_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                             pixel_values_videos=ref.to_torch_video(video.reshape(4, *video.shape[2:]))).logits
    mine = np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(video)))
    real = mask.astype(bool)
    assert max_diff(theirs.numpy()[real], mine[real]) <= TOL


def test_bilinear_pooling_odd_grid_matches_torch():
    """SigLIP at 384/14 has a 27x27 grid: pooling to 14x14 is not a plain 2x2 average."""
    x = np.random.default_rng(4).normal(size=(2, 27, 27, 5)).astype(np.float32)
    theirs = torch.nn.functional.interpolate(torch.as_tensor(x).permute(0, 3, 1, 2), size=[14, 14],
                                             mode="bilinear").permute(0, 2, 3, 1).numpy()
    pool = student.bilinear_matrix(27, 14)
    mine = np.einsum("oh,nhwd,pw->nopd", pool, x, pool)
    assert max_diff(theirs, mine) <= 1e-5


def _declare_tie(directory, top: bool, text: bool, drop_lm_head: bool) -> None:
    """Rewrite a saved directory's two tie flags (top level, text_config) and maybe drop lm_head.weight."""
    from safetensors.numpy import load_file, save_file

    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["tie_word_embeddings"] = top
    config["text_config"]["tie_word_embeddings"] = text
    path.write_text(json.dumps(config))
    if drop_lm_head:
        weights = directory / "model.safetensors"
        tensors = load_file(weights)
        tensors = {k: v for k, v in tensors.items() if not k.endswith("lm_head.weight")}
        save_file(tensors, weights, metadata={"format": "pt"})


@pytest.mark.parametrize("top, text", [(False, True), (True, False)])
def test_tie_declared_in_one_of_two_places_imports_tied_as_transformers_does(tmp_path, top, text):
    """The public 0.5b checkpoint: untied at the top level, tied in text_config, no lm_head.weight
    (and its mirror image). Both import tied, with transformers' logits."""
    cfg = config_lib.preset("tiny", num_motion_chunks=0)
    cfg = cfg.replace(text=cfg.text.__class__(**{**cfg.text.__dict__, "tie_word_embeddings": True}))
    directory = tmp_path / "hf"
    ref.save_hf(ref.hf_model(cfg), directory)
    _declare_tie(directory, top, text, drop_lm_head=True)
    theirs_model = LlavaOnevisionForConditionalGeneration.from_pretrained(directory).eval()
    ours = hf.load_student(directory, num_motion_chunks=0, num_frames=cfg.num_frames)
    assert ours.lm_head is None
    ids = np.random.default_rng(4).integers(5, cfg.text.vocab_size, size=(2, 10))
    mask = np.ones_like(ids)
    with torch.no_grad():
        theirs = theirs_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)).logits.numpy()
    assert max_diff(theirs, np.asarray(ours(jnp.asarray(ids), jnp.asarray(mask)))) <= TOL


def test_untied_on_both_flags_without_lm_head_is_refused_by_name(tmp_path):
    cfg = config_lib.preset("tiny", num_motion_chunks=0)
    directory = tmp_path / "hf"
    ref.save_hf(ref.hf_model(cfg), directory)
    _declare_tie(directory, False, False, drop_lm_head=True)
    with pytest.raises(hf.CheckpointError, match="lm_head.weight"):
        hf.load_student(directory, num_motion_chunks=0, num_frames=cfg.num_frames)
