"""The blocked attention kernel (the CPU schedule): the same attention as PyTorch's
scaled_dot_product_attention, forward and backward, and the same student as the
plain kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from tests.models.test_student import loss_and_grads, pair_batch
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import layers, student


def causal_padding_mask(b, t, s, pad):
    """[B,1,T,S]: causal (queries at the end of the keys) with the last `pad` keys of sample 0 hidden."""
    mask = np.tril(np.ones((t, s), bool), k=s - t)[None, None].repeat(b, 0)
    mask[0, :, :, s - pad:] = False
    return mask


@pytest.mark.parametrize("shape", [
    # (batch, queries, keys, heads, kv heads, masked): GQA, cross lengths, odd sizes
    (2, 9, 9, 4, 2, True), (3, 13, 13, 2, 2, False), (2, 5, 11, 6, 3, True), (1, 7, 7, 8, 1, False)])
@pytest.mark.parametrize("heads_per_step", [1, 4])
def test_matches_torch_sdpa_forward_and_backward(shape, heads_per_step):
    b, t, s, n, kv, masked = shape
    d, scale = 16, 0.3
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.normal(size=size).astype(np.float32) for size in
                  ((b, t, n, d), (b, s, kv, d), (b, s, kv, d), (b, t, n, d)))
    mask = causal_padding_mask(b, t, s, pad=2) if masked else None

    tq, tk, tv = (torch.tensor(x.transpose(0, 2, 1, 3), requires_grad=True) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.as_tensor(mask), scale=scale, enable_gqa=True)
    (out * torch.as_tensor(g.transpose(0, 2, 1, 3))).sum().backward()

    def loss(q, k, v):
        y = layers.blocked_attention(q, k, v, None if mask is None else jnp.asarray(mask), scale,
                                     heads_per_step=heads_per_step)
        return (y * g).sum(), y

    (_, ours), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    np.testing.assert_allclose(ours, out.detach().numpy().transpose(0, 2, 1, 3), atol=1e-5)
    for got, theirs in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(got, theirs.grad.numpy().transpose(0, 2, 1, 3), atol=1e-4)


def test_a_query_that_sees_no_key_behaves_as_in_the_plain_kernel():
    # A padded query row with every key masked: uniform weights forward, no gradient
    # through its scores (PyTorch's SDPA gives NaN here, so the plain kernel is the reference).
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 6, 4, 8)), jnp.float32) for _ in range(3))
    mask = np.ones((2, 1, 6, 6), bool)
    mask[1, :, 2, :] = False

    def loss(fn, q, k, v):
        return (fn(q, k, v, jnp.asarray(mask), 0.5) ** 2).sum()

    np.testing.assert_allclose(layers.blocked_attention(q, k, v, jnp.asarray(mask), 0.5),
                               layers.attention(q, k, v, jnp.asarray(mask), 0.5), atol=1e-6)
    grad = jax.grad(loss, argnums=(1, 2, 3))
    for got, ref in zip(grad(layers.blocked_attention, q, k, v), grad(layers.attention, q, k, v)):
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_student_gradients_match_the_plain_kernel():
    cfg = config_lib.preset("tiny")
    plain, blocked = student.create(cfg), student.create(cfg.replace(attention="blocked"))
    pp, batch = pair_batch(cfg)
    p_plain, g_plain = loss_and_grads(plain, list(pp.level_token_ids), batch)
    p_blocked, g_blocked = loss_and_grads(blocked, list(pp.level_token_ids), batch)
    assert abs(float(p_plain) - float(p_blocked)) < 1e-6
    flat_plain, flat_blocked = (dict(nnx.to_flat_state(g)) for g in (g_plain, g_blocked))
    assert flat_plain.keys() == flat_blocked.keys()
    for key, value in flat_plain.items():
        np.testing.assert_allclose(flat_blocked[key][...], value[...], atol=1e-6, err_msg=str(key))
    assert max(float(jnp.abs(v[...]).max()) for v in flat_plain.values()) > 0
