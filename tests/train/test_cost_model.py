"""The analytic cost model (train.cost_model) against counts written out by hand from the
model's shapes. The compiler's own count is compared in test_plan."""

import pytest

from tests.train.conftest import independent_forward_flops
from w2s_vqa.models import config as model_config
from w2s_vqa.train import cost_model


def test_the_forward_and_a_full_training_step_match_the_count_by_hand():
    cfg = model_config.preset("small", attention="blocked")
    length = 600  # longer than one 256-row query block: the blocked causal count matters
    forward, no_input_gradient = independent_forward_flops(cfg, 3, length)
    parts = cost_model.forward_flops(cfg, 3, length)
    # Integer counts in float64: exact up to rounding of the last digit.
    assert parts["total"] == pytest.approx(forward, rel=1e-12)
    assert parts["total"] == pytest.approx(parts["vision"] + parts["projector"] + parts["motion"] + parts["decoder"])
    step = cost_model.step_flops(cfg, None, (), 3, length)
    # Every weight trained: backward = 2 x forward, less the input gradients of pixels and motion features.
    assert step["model"] == pytest.approx(3 * forward - no_input_gradient, rel=1e-12)
    assert step["recompute"] == 0 and step["total"] == step["model"]


def test_nothing_trained_means_no_backward_and_remat_recomputes_only_what_a_backward_needs():
    cfg = model_config.preset("tiny", remat=True)
    keys = ["vision_tower.layers.0.mlp.fc1.kernel", "language_model.layers.0.mlp.down_proj.kernel"]
    frozen = cost_model.step_flops(cfg, [], keys, 2, 100)
    assert frozen["backward"] == 0 and frozen["recompute"] == 0 and frozen["model"] == frozen["forward"]
    decoder_only = cost_model.step_flops(cfg, keys[1:], keys, 2, 100)
    vision = cost_model.forward_flops(cfg, 2, 100)["vision"]
    # Only the decoder's layer 0 trains: nothing upstream of it is differentiated or recomputed.
    assert 0 < decoder_only["recompute"] < cost_model.forward_flops(cfg, 2, 100)["decoder"]
    assert decoder_only["backward"] < 2 * (decoder_only["forward"] - vision)


def test_causal_pairs_follow_the_kernels_blocks():
    assert cost_model.causal_pairs(5, "cudnn") == 15  # the triangle
    assert cost_model.causal_pairs(100, "xla") == 100 * 100  # one block: all of it
    assert cost_model.causal_pairs(300, "blocked") == 256 * 256 + 44 * 300
    assert cost_model.causal_pairs(10, "xla", prefix=7) == 10 * 7 + 10 * 10


def test_a_continuation_after_a_cached_prefix_is_counted_by_hand():
    cfg = model_config.preset("tiny")
    t = cfg.text
    h, kv = t.hidden_size, t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)
    sequences, tokens, prefix = 3, 40, 120
    per_layer = (2 * tokens * (2 * h * h + 2 * h * kv + 3 * h * t.intermediate_size)  # q, o; k, v; gate, up, down
                 + 2 * 2 * tokens * (prefix + tokens) * h)  # one query block: every prefix key and its own
    assert cost_model.decoder_flops(cfg, sequences, tokens, prefix=prefix) == pytest.approx(
        sequences * t.num_hidden_layers * per_layer, rel=1e-12)


def test_each_remat_policy_keeps_what_it_saves_per_layer():
    # Differences between policies, counted by hand from the layer shapes: "minimal" keeps
    # every projection's output on top of "full"'s layer input (SigLIP: Q, K, V, out, fc1,
    # fc2; Qwen2: Q, K, V, O, gate, up, down); "save_dots" adds the attention scores and the
    # attention output; "minimal_offloaded" keeps on the device what "full" keeps.
    base = model_config.preset("small", attention="xla")
    pairs, length = 2, 300
    keys = ["vision_tower.layers.0.mlp.fc1.kernel", "language_model.layers.0.mlp.down_proj.kernel"]
    kept = {policy: cost_model.activation_bytes(base.replace(remat=policy), keys, keys, pairs, length)
            for policy in ("none", "full", "minimal", "save_dots", "minimal_offloaded")}
    v, t = base.vision, base.text
    frames, n, d = pairs * 2 * base.num_frames, v.grid_size ** 2, v.hidden_size
    h, kv = t.hidden_size, t.num_key_value_heads * t.head_dim
    itemsize = 4  # float32 compute
    projections = (v.num_hidden_layers * frames * n * (5 * d + v.intermediate_size)
                   + t.num_hidden_layers * pairs * length * (3 * h + 2 * kv + 2 * t.intermediate_size))
    dots = (v.num_hidden_layers * frames * (n * d + v.num_attention_heads * n * n)
            + t.num_hidden_layers * pairs * (length * h + t.num_attention_heads * cost_model.causal_pairs(length, "xla")))
    # Integer element counts times 4 in float64: exact.
    assert kept["minimal"] - kept["full"] == pytest.approx(itemsize * projections, rel=1e-12)
    assert kept["save_dots"] - kept["minimal"] == pytest.approx(itemsize * dots, rel=1e-12)
    assert kept["minimal_offloaded"] == kept["full"] < kept["minimal"] < kept["save_dots"]
    # Any policy adds the one layer whose whole set its backward rebuilds: with the small
    # preset's few layers "save_dots" (which drops only the MLP product and the norms) can
    # exceed "none"; "minimal" does not.
    assert kept["minimal"] < kept["none"]
    # With cuDNN's fused attention there are no separate score matmuls to keep.
    cudnn = base.replace(attention="cudnn", dtype="bfloat16")
    assert (cost_model.activation_bytes(cudnn.replace(remat="save_dots"), keys, keys, pairs, length)
            == cost_model.activation_bytes(cudnn.replace(remat="minimal"), keys, keys, pairs, length))
