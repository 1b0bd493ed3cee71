"""The cuDNN attention option: refused where it cannot run, and on an NVIDIA GPU the
same model as the XLA path.

The GPU tests run only where JAX's default backend is a GPU (the suite pins CPU
unless JAX_PLATFORMS is set, e.g. `JAX_PLATFORMS=cuda pytest tests/models/test_cudnn_attention.py`):
cuDNN's fused kernel exists nowhere else.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models.test_student import loss_and_grads, pair_batch
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import layers, student

needs_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")


def test_cudnn_attention_needs_half_precision_compute():
    with pytest.raises(config_lib.ConfigError, match="bfloat16"):
        config_lib.preset("tiny", attention="cudnn")
    with pytest.raises(config_lib.ConfigError, match="choose"):
        config_lib.preset("tiny", attention="flash")
    assert config_lib.preset("tiny", attention="cudnn", dtype="bfloat16").attention == "cudnn"


@pytest.mark.parametrize("t", [7, 8])
@pytest.mark.parametrize("masked", [True, False])
def test_odd_lengths_are_padded_without_changing_the_result(t, masked):
    # The padding that cuDNN's backward needs (masked: in the mask; unmasked, as SigLIP's
    # 729 patches: through sequence lengths), checked on XLA's kernel (any backend).
    keys = jax.random.split(jax.random.key(1), 3)
    q, k, v = (jax.random.normal(key, (2, t, h, 16)) for key, h in zip(keys, (4, 2, 2)))
    if masked:
        mask = jnp.asarray(np.tril(np.ones((t, t), bool))[None, None] & (np.arange(t) < t - 2)[None, None, None])
    else:
        mask = None

    def loss(fn, q, k, v):
        return (fn(q, k, v) ** 2).sum()

    fused = lambda q, k, v: layers.fused_attention(q, k, v, mask, 0.25, causal=masked,  # noqa: E731
                                                   implementation="xla")
    plain = lambda q, k, v: layers.attention(q, k, v, mask, 0.25)  # noqa: E731
    np.testing.assert_allclose(fused(q, k, v), plain(q, k, v), atol=1e-5)
    grads = jax.grad(loss, argnums=(1, 2, 3))
    for got, ref in zip(grads(fused, q, k, v), grads(plain, q, k, v)):
        assert np.isfinite(np.asarray(got)).all()
        np.testing.assert_allclose(got, ref, atol=1e-4)


@needs_gpu
@pytest.mark.parametrize("causal", [False, True])
def test_fused_attention_matches_the_matmul_kernel(causal):
    b, t, n, kv, d = 2, 301, 8, 2, 64
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (b, t, h, d), jnp.bfloat16) for key, h in zip(keys, (n, kv, kv)))
    mask = np.ones((b, 1, t, t), bool)
    mask[1, ..., 250:] = False  # padded keys in the second row
    if causal:
        mask &= np.tril(np.ones((t, t), bool))
    mask = jnp.asarray(mask)
    want = layers.attention(q, k, v, mask, d**-0.5)
    np.testing.assert_allclose(np.asarray(layers.fused_attention(q, k, v, mask, d**-0.5, causal=causal), np.float32),
                               np.asarray(want, np.float32), atol=2e-2)
    grad = jax.grad(lambda q: layers.fused_attention(q, k, v, mask, d**-0.5, causal=causal).astype(jnp.float32).sum())
    assert np.isfinite(np.asarray(grad(q), np.float32)).all()


@needs_gpu
def test_cudnn_student_matches_the_xla_student():
    cfg = config_lib.preset("tiny", dtype="bfloat16")
    pp, batch = pair_batch(cfg)
    xla = student.create(cfg, seed=3)
    cudnn = student.create(cfg.replace(attention="cudnn"), seed=3)
    p_xla, g_xla = loss_and_grads(xla, pp.level_token_ids, batch)
    p_cudnn, g_cudnn = loss_and_grads(cudnn, pp.level_token_ids, batch)
    assert abs(float(p_xla) - float(p_cudnn)) < 1e-2
    # Each gradient within 10% of its own scale, except SigLIP's key biases: a key bias shifts
    # every score of a query alike (no rotary embedding there), so its exact gradient is 0 and
    # what either kernel gives is bf16 rounding (measured on an H100: up to 1.4e-4, 0.27 of
    # its own scale, while every other gradient agreed within 1.3%).
    flat_xla, flat_cudnn = (dict(nnx.to_flat_state(g)) for g in (g_xla, g_cudnn))
    for path, a in flat_xla.items():
        name = ".".join(map(str, path))
        if name.startswith("vision_tower.") and name.endswith("k_proj.bias"):
            continue
        a, b = a[...], flat_cudnn[path][...]
        assert float(jnp.abs(a - b).max()) / (float(jnp.abs(a).max()) + 1e-6) < 0.1, name
