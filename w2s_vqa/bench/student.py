"""Forward+backward of the student: ours under jit against transformers in PyTorch.

    python -m w2s_vqa.bench.student --preset small

Same config, same weights (ours are imported from the transformers model's
save_pretrained directory), same inputs, float32. The loss is the mean of P over
the pairs, so both sides run the vision tower, the projector and pooling, the
decoder and the level readout, and back. Motion tokens are left out (transformers
has no motion branch). Prints both medians, the ratio PyTorch/ours (above 1:
ours is faster), and each side's model FLOPs utilization (train.cost_model.step_flops'
model FLOPs, forward and backward) against this machine's matmul peak, measured here in
the same run; then each tower alone, single
kernels, and one vision layer's attention and MLP, both sides, to show where the
difference lies.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from w2s_vqa import prompt
from w2s_vqa.bench import common
from w2s_vqa.models import config as config_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.train import cost_model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attention", default="blocked", choices=config_lib.ATTENTION_KERNELS,
                        help="our attention kernel (blocked: the CPU schedule; xla: the plain one)")
    args = parser.parse_args(argv)

    from w2s_vqa import runtime

    # First, before anything starts JAX's backend. Both frameworks run in this
    # process: the setting is theirs alike.
    runtime.tune_cpu_host()

    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from w2s_vqa.convert import hf
    jax.config.update("jax_default_matmul_precision", "highest")
    cfg = config_lib.preset(args.preset, num_motion_chunks=0)
    torch.manual_seed(0)
    hf_config = LlavaOnevisionConfig(**cfg.to_hf_config())
    hf_config._attn_implementation = "sdpa"
    torch_model = LlavaOnevisionForConditionalGeneration(hf_config).train()
    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        ours = hf.load_student(tmp, num_frames=cfg.num_frames, num_motion_chunks=0, attention=args.attention)

    tok = prompt.load_tokenizer(TINY_TOKENIZER)
    pp = prompt.build_pair_prompt(tok, video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)
    rng = np.random.default_rng(0)
    size = cfg.vision.image_size
    pixels = rng.integers(0, 256, (args.pairs, 2, cfg.num_frames, size, size, 3), dtype=np.uint8)
    ids = np.repeat(pp.input_ids[None], args.pairs, axis=0)
    level_ids = list(pp.level_token_ids)

    # Ours: jit of value_and_grad over the model's parameters, uint8 pixels normalized
    # inside. The model is split once, as the training loop does, so that NNX's Python
    # walk of the module graph (about 0.1 s a call here under nnx.jit) is not timed.
    graphdef, params = nnx.split(ours)

    def loss(params, ids, pixels):
        return nnx.merge(graphdef, params).preference(level_ids, ids, None, pixels).mean()

    step = jax.jit(jax.value_and_grad(loss))
    j_ids, j_pixels = jnp.asarray(ids), jnp.asarray(pixels)

    def run_ours():
        value, grads = step(params, j_ids, j_pixels)
        jax.block_until_ready((value, grads))

    # transformers: the same loss through LlavaOnevisionForConditionalGeneration.forward.
    t_ids = torch.as_tensor(ids).long()
    t_pixels = ((torch.as_tensor(pixels).float() / 255.0 - 0.5) / 0.5).reshape(
        args.pairs * 2, cfg.num_frames, size, size, 3).permute(0, 1, 4, 2, 3).contiguous()
    t_level = torch.as_tensor(level_ids)
    alpha = torch.as_tensor(prompt.ALPHA)

    def run_torch():
        torch_model.zero_grad(set_to_none=True)
        logits = torch_model(input_ids=t_ids, pixel_values_videos=t_pixels, logits_to_keep=1).logits[:, -1]
        p = (torch.softmax(logits[:, t_level], -1) * alpha).sum(-1).mean()
        p.backward()

    kernels = kernel_figures(cfg, args.pairs, args.attention)
    towers = tower_figures(ours, torch_model, cfg, args.pairs, pp.length, args.repeats)
    ours_s, ours_all = common.median_seconds(run_ours, repeats=args.repeats)
    torch_s, torch_all = common.median_seconds(run_torch, repeats=args.repeats)
    jax_peak, torch_peak = common.jax_matmul_peak(), common.torch_matmul_peak()
    peak = max(jax_peak, torch_peak)
    # Model FLOPs (train.cost_model, the plan's count): every weight trained, pixels not differentiated.
    flops = cost_model.step_flops(cfg.replace(attention=args.attention), None, (), args.pairs, pp.length)["model"]
    figures = {
        "benchmark": "student_forward_backward",
        "preset": args.preset,
        "pairs": args.pairs,
        "attention": args.attention,
        "frames_per_video": cfg.num_frames,
        "sequence_length": pp.length,
        "machine": common.machine(),
        "device": jax.devices()[0].device_kind,
        "model_gflops_per_step": flops / 1e9,
        "ours_median_s": ours_s,
        "torch_median_s": torch_s,
        "ratio_torch_over_ours": torch_s / ours_s,
        "jax_matmul_peak_gflops": jax_peak / 1e9,
        "torch_matmul_peak_gflops": torch_peak / 1e9,
        "machine_peak_gflops": peak / 1e9,
        "ours_gflops": flops / ours_s / 1e9,
        "torch_gflops": flops / torch_s / 1e9,
        "ours_mfu": flops / ours_s / peak,
        "torch_mfu": flops / torch_s / peak,
        "ours_times_s": ours_all,
        "torch_times_s": torch_all,
        "kernels": kernels,
        "towers": towers,
    }
    print(f"{args.preset}: ours ({args.attention} attention) {ours_s:.3f} s, transformers {torch_s:.3f} s "
          f"per forward+backward (ratio PyTorch/ours {torch_s / ours_s:.2f}); MFU ours {figures['ours_mfu']:.1%}, "
          f"PyTorch {figures['torch_mfu']:.1%} of {peak / 1e9:.0f} GFLOP/s measured matmul peak")
    for name, row in towers.items():
        print(f"  {name} forward+backward: ours {row['ours_s']:.2f} s, transformers {row['torch_s']:.2f} s")
    for name, row in kernels.items():
        print(f"  kernel {name}: JAX {row['jax_s'] * 1e3:.1f} ms, PyTorch {row['torch_s'] * 1e3:.1f} ms")
    common.emit(figures)
    return figures


def kernel_figures(cfg, pairs: int, attention: str) -> dict:
    """Single kernels and one vision layer's two blocks, the same in both frameworks, at
    the vision tower's shapes: where the forward+backward time goes, kernel by kernel.

    `attention_forward_backward` is our attention kernel (`attention`) against
    PyTorch's scaled_dot_product_attention (what transformers' SigLIP runs, a fused
    flash kernel on CPU); `mlp_forward_backward` is our SigLIP MLP against
    transformers'. Each covers one layer over every frame of the step.
    """
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipMLP as TorchSiglipMLP

    from w2s_vqa.models import layers, siglip

    v = cfg.vision
    n = v.grid_size**2
    heads, d = v.num_attention_heads, v.hidden_size // v.num_attention_heads
    frames = pairs * 2 * cfg.num_frames
    rng = np.random.default_rng(0)
    q = rng.normal(size=(frames * heads, n, d)).astype(np.float32)
    scores = rng.normal(size=(frames, heads, n, n)).astype(np.float32)
    acts = rng.normal(size=(frames * n, v.hidden_size)).astype(np.float32)
    w = rng.normal(size=(v.hidden_size, v.intermediate_size)).astype(np.float32)
    jq, js, ja, jw = map(jnp.asarray, (q, scores, acts, w))
    tq, ts, ta, tw = map(torch.as_tensor, (q, scores, acts, w))

    # One layer's attention, [frames, tokens, heads, head_dim] (torch: heads second).
    qkv = [rng.normal(size=(frames, n, heads, d)).astype(np.float32) for _ in range(4)]
    attend = {"cudnn": layers.fused_attention, "blocked": layers.blocked_attention}.get(attention, layers.attention)
    j_qkv, j_cot = [jnp.asarray(x) for x in qkv[:3]], jnp.asarray(qkv[3])
    attention_grad = jax.jit(jax.grad(lambda q, k, v: (attend(q, k, v, None, d**-0.5) * j_cot).sum(),
                                      argnums=(0, 1, 2)))
    t_qkv = [torch.as_tensor(x.transpose(0, 2, 1, 3).copy()).requires_grad_() for x in qkv[:3]]
    t_cot = torch.as_tensor(qkv[3].transpose(0, 2, 1, 3).copy())

    def torch_attention():
        for x in t_qkv:
            x.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(*t_qkv, scale=d**-0.5)
        (out * t_cot).sum().backward()

    # One layer's MLP (fc1, GELU, fc2), gradients for its input and weights; the input
    # doubles as the output's cotangent.
    hidden = rng.normal(size=(frames, n, v.hidden_size)).astype(np.float32)
    graphdef, mlp_params = nnx.split(siglip.SiglipMLP(v, dtype=jnp.float32, rngs=nnx.Rngs(0)))
    j_hidden = jnp.asarray(hidden)
    mlp_grad = jax.jit(jax.grad(lambda p, x: (nnx.merge(graphdef, p)(x) * x).sum(), argnums=(0, 1)))
    torch_mlp = TorchSiglipMLP(SiglipVisionConfig(**cfg.to_hf_config()["vision_config"]))
    t_hidden = torch.as_tensor(hidden).requires_grad_()

    def torch_mlp_step():
        torch_mlp.zero_grad(set_to_none=True)
        t_hidden.grad = None
        (torch_mlp(t_hidden) * t_hidden.detach()).sum().backward()

    bmm_qk, exp, matmul = jax.jit(lambda x: jnp.matmul(x, x.transpose(0, 2, 1))), jax.jit(jnp.exp), jax.jit(jnp.matmul)
    cases = {
        "attention_bmm_qk": (lambda: bmm_qk(jq).block_until_ready(), lambda: torch.bmm(tq, tq.transpose(1, 2))),
        "attention_exp": (lambda: exp(js).block_until_ready(), lambda: torch.exp(ts)),
        "mlp_matmul": (lambda: matmul(ja, jw).block_until_ready(), lambda: ta @ tw),
        "attention_forward_backward": (lambda: jax.block_until_ready(attention_grad(*j_qkv)), torch_attention),
        "mlp_forward_backward": (lambda: jax.block_until_ready(mlp_grad(mlp_params, j_hidden)), torch_mlp_step),
    }
    out = {}
    for name, (jax_fn, torch_fn) in cases.items():
        jax_s, _ = common.median_seconds(jax_fn, repeats=5, warmup=2)
        torch_s, _ = common.median_seconds(torch_fn, repeats=5, warmup=2)
        out[name] = {"jax_s": jax_s, "torch_s": torch_s}
    return out


def tower_figures(ours, torch_model, cfg, pairs: int, seq_len: int, repeats: int) -> dict:
    """Forward+backward of each tower alone, ours under jit against transformers', on the
    same random inputs (the pair's frames; embeddings of the pair prompt's length):
    which tower the whole-model gap comes from."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    rng = np.random.default_rng(1)
    size = cfg.vision.image_size
    frames = rng.normal(size=(pairs * 2 * cfg.num_frames, size, size, 3)).astype(np.float32)
    embeds = rng.normal(size=(pairs, seq_len, cfg.text.hidden_size)).astype(np.float32)
    t_frames, t_embeds = torch.as_tensor(frames.transpose(0, 3, 1, 2).copy()), torch.as_tensor(embeds)
    j_frames, j_embeds = jnp.asarray(frames), jnp.asarray(embeds)
    graphdef, params = nnx.split(ours)
    vision = jax.jit(jax.grad(lambda p, x: nnx.merge(graphdef, p).vision_tower(x).mean()))
    text = jax.jit(jax.grad(lambda p, e: nnx.merge(graphdef, p).language_model(e).mean()))

    def torch_backward(module, **inputs):
        torch_model.zero_grad(set_to_none=True)
        module(**inputs).last_hidden_state.mean().backward()

    cases = {
        "vision_tower": (lambda: jax.block_until_ready(vision(params, j_frames)),
                         lambda: torch_backward(torch_model.model.vision_tower, pixel_values=t_frames)),
        "language_model": (lambda: jax.block_until_ready(text(params, j_embeds)),
                           lambda: torch_backward(torch_model.model.language_model, inputs_embeds=t_embeds)),
    }
    out = {}
    for name, (ours_fn, torch_fn) in cases.items():
        ours_s, _ = common.median_seconds(ours_fn, repeats=repeats)
        torch_s, _ = common.median_seconds(torch_fn, repeats=repeats)
        out[name] = {"ours_s": ours_s, "torch_s": torch_s}
    return out


if __name__ == "__main__":
    main()
