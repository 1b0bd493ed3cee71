"""Student options that do not change the model: remat, bf16 compute, the level readout."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_vqa import prompt
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import student
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR


def pair_batch(cfg, batch=2, seed=0, size=32):
    tok = prompt.load_tokenizer(ASSET_DIR)
    pp = prompt.build_pair_prompt(tok, video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)
    rng = np.random.default_rng(seed)
    ids, mask = pp.padded(pp.length + 2)
    return pp, dict(
        input_ids=jnp.asarray(np.repeat(ids[None], batch, 0)),
        attention_mask=jnp.asarray(np.repeat(mask[None], batch, 0)),
        pixel_values=jnp.asarray(rng.integers(0, 256, (batch, 2, cfg.num_frames, size, size, 3), dtype=np.uint8)),
        motion=jnp.asarray(rng.normal(size=(batch, 2, cfg.num_motion_chunks, cfg.motion_dim)), jnp.float32),
    )


def loss_and_grads(model, level_ids, batch):
    def loss(m):
        return m.preference(level_ids, **batch).mean()

    return nnx.jit(nnx.value_and_grad(loss))(model)


def test_level_logits_are_the_vocabulary_logits_at_the_answer():
    cfg = config_lib.preset("tiny")
    model = student.create(cfg)
    pp, batch = pair_batch(cfg)
    full = model(**batch)
    answer = pp.length - 1  # right padding: the answer sits at the last real token
    expected = full[:, answer][:, list(pp.level_token_ids)]
    np.testing.assert_allclose(model.level_logits(pp.level_token_ids, **batch), expected, atol=1e-5)


def test_remat_changes_nothing_but_memory():
    cfg = config_lib.preset("tiny")
    pp, batch = pair_batch(cfg)
    plain = student.create(cfg, seed=1)
    remat = student.create(cfg.replace(remat="full"), seed=1)
    (v1, g1), (v2, g2) = loss_and_grads(plain, pp.level_token_ids, batch), loss_and_grads(remat, pp.level_token_ids, batch)
    # Recomputation may fuse differently: equal up to float32 rounding.
    assert abs(float(v1) - float(v2)) <= 1e-6
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_compute_keeps_float32_parameters_and_stays_close():
    cfg = config_lib.preset("tiny")
    pp, batch = pair_batch(cfg)
    fp32 = student.create(cfg, seed=2)
    bf16 = student.create(cfg.replace(dtype="bfloat16"), seed=2)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    hidden = bf16.hidden_states(**batch)
    assert hidden.dtype == jnp.bfloat16
    v32, g32 = loss_and_grads(fp32, pp.level_token_ids, batch)
    v16, g16 = loss_and_grads(bf16, pp.level_token_ids, batch)
    assert abs(float(v32) - float(v16)) < 1e-2
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))


def test_masked_frames_are_hidden_from_attention():
    cfg = config_lib.preset("tiny")
    model = student.create(cfg, seed=4)
    pp, batch = pair_batch(cfg)
    frame_mask = np.ones((2, 2, cfg.num_frames), bool)
    frame_mask[:, 1, 2:] = False
    masked = model.level_logits(pp.level_token_ids, **batch, frame_mask=jnp.asarray(frame_mask))
    # Changing the pixels of masked frames cannot change the answer; changing a visible one does.
    pixels = np.asarray(batch["pixel_values"]).copy()
    pixels[:, 1, 3] = 255 - pixels[:, 1, 3]
    changed = model.level_logits(pp.level_token_ids, **{**batch, "pixel_values": jnp.asarray(pixels)},
                                 frame_mask=jnp.asarray(frame_mask))
    np.testing.assert_allclose(masked, changed, atol=1e-6)
    pixels[:, 1, 0] = 255 - pixels[:, 1, 0]
    visible = model.level_logits(pp.level_token_ids, **{**batch, "pixel_values": jnp.asarray(pixels)},
                                 frame_mask=jnp.asarray(frame_mask))
    assert np.abs(np.asarray(visible) - np.asarray(masked)).max() > 1e-6
