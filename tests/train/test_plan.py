"""Ahead-of-time plans: the real train step compiled for cpu:8 and (with libtpu) TPU slices,
and sweeps over a grid of meshes."""

import json
import math
import os

import numpy as np
import pytest

from w2s_vqa.config import load_config
from w2s_vqa.models import config as model_config
from w2s_vqa.train import plan as plan_lib
from w2s_vqa.train import sweep as sweep_lib

CONFIG_7B = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                         "w2s_llava_ov_7b.py")

try:
    import libtpu  # noqa: F401

    HAVE_LIBTPU = True
except ImportError:
    HAVE_LIBTPU = False
needs_libtpu = pytest.mark.skipif(not HAVE_LIBTPU, reason="libtpu is not installed (pip install '.[tpu]'); "
                                                          "TPU slices are compiled with its compile-only devices")


def small_config(*overrides):
    """The `small` preset (real 384x384 frames and patch grid, shallow towers)."""
    shape = model_config.preset("small")
    return load_config(None, ["model.preset='small'", f"data.image_size={shape.vision.image_size}", *overrides])


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


# ----------------------------------------------------------------------------- cpu:8


def test_parameter_memory_per_device_falls_as_the_fsdp_axis_grows():
    per_device = {}
    for n in (1, 2, 4, 8):
        result = plan_lib.plan(small_config(f"mesh.shape=(1,{n},1)", f"mesh.num_devices={n}", "data.batch_size=8"),
                               "cpu:8", compile=False)
        assert result["devices"] == n and result["mesh"]["fsdp"] == n
        per_device[n] = result["analytic"]["parameters"]
        total = result["model"]["parameters"] * 4  # float32 parameters
    assert per_device[1] == total
    for n in (2, 4, 8):
        # About 1/N: only small tensors whose dimensions carry no FSDP axis stay whole.
        assert total / n <= per_device[n] <= 1.05 * total / n, (n, per_device[n] / total)


def test_the_compiled_step_holds_exactly_the_state_and_batch_and_counts_the_analytic_flops():
    config = load_config(None, ["mesh.shape=(1,8,1)", "data.batch_size=8"])
    result = plan_lib.plan(config, "cpu:8")
    assert result["compiled"] and result["fits"] and result["platform"] == "cpu"
    analytic, memory = result["analytic"], result["memory"]
    # The step's arguments are the train state and the batch entries it reads, each sharded.
    assert memory["argument"] == analytic["parameters"] + analytic["optimizer"] + analytic["batch"]
    assert analytic["batch_unused"] == ["target"]  # read only with objective.soft_targets
    # The state is donated: every output but the replicated metrics reuses an argument's buffer.
    assert memory["alias"] == analytic["parameters"] + analytic["optimizer"]
    # FSDP gathers parameters and reduces gradients.
    assert result["collectives"]["all-gather"]["count"] > 0 and result["collectives"]["all-reduce"]["count"] > 0
    # The compiler counts elementwise work too; the tiny towers' widths (32, 64) make it a
    # larger share than at real sizes.
    model_cfg = model_config.student_config(config)
    forward, no_input_gradient = independent_forward_flops(model_cfg, 8, result["prompt_length"])
    # Everything trained: backward = 2 x forward, less the input gradients of pixels and motion.
    want = (3 * forward - no_input_gradient) / 8
    assert result["flops"]["analytic_per_device"] == pytest.approx(want, rel=1e-9)
    assert result["flops"]["compiler_per_device"] == pytest.approx(want, rel=0.15)


@pytest.mark.slow
def test_flops_of_a_frozen_decoder_with_remat_agree_with_the_compilers_count():
    # The paper's regime at small shapes: the decoder frozen (no weight gradients, input
    # gradients only), the vision tower trained, every layer rematerialized.
    config = small_config("mesh.shape=(2,2,2)", "data.batch_size=4", "model.remat=True",
                          "optim.groups=(('^language_model\\\\.|^lm_head\\\\.', 0.0),)")
    result = plan_lib.plan(config, "cpu:8")
    flops = result["flops"]
    assert result["model"]["trainable_parameters"] < result["model"]["parameters"] / 2
    model_cfg = model_config.student_config(config)
    forward, _ = independent_forward_flops(model_cfg, 4, result["prompt_length"])
    # frozen decoder: backward = 1x its forward (input gradients); trained tower: 2x; remat: +1x.
    assert flops["analytic_model"] < 3 * forward
    assert flops["analytic_step"] > flops["analytic_model"]
    assert flops["compiler_per_device"] == pytest.approx(flops["analytic_per_device"], rel=0.10)
    assert result["memory"]["argument"] == (result["analytic"]["parameters"] + result["analytic"]["optimizer"]
                                            + result["analytic"]["batch"])


def test_an_impossible_mesh_or_batch_is_refused_with_what_to_change():
    with pytest.raises(plan_lib.PlanError, match=r"mesh.shape=\(3, -1, 1\) on cpu:8 \(8 devices\)"):
        plan_lib.plan(load_config(None, ["mesh.shape=(3,-1,1)"]), "cpu:8", compile=False)
    with pytest.raises(plan_lib.PlanError, match=r"data.batch_size=4 does not split over the 8 batch shards"):
        plan_lib.plan(load_config(None, ["mesh.shape=(1,8,1)", "data.batch_size=4"]), "cpu:8", compile=False)
    with pytest.raises(plan_lib.PlanError, match="unknown target 'v9-8'"):
        plan_lib.parse_target("v9-8")


def test_collectives_are_read_in_each_replica_group_spelling():
    hlo = "\n".join([
        "  %ag = f32[64,128]{1,0} all-gather(f32[8,128]{1,0} %p), replica_groups=[1,8]<=[8], dimensions={0}",
        "  %ar = (f32[1024]{0}, bf16[512]{0}) all-reduce(%a, %b), replica_groups={{0,1},{2,3},{4,5},{6,7}}",
        "  %ags = (bf16[4,256]{1,0}, bf16[16,256]{1,0}) all-gather-start(%x), replica_groups=mesh['axis_0'=4,"
        "'axis_1'=2] {'axis_0'}, dimensions={0}",
        "  %agd = bf16[16,256]{1,0} all-gather-done(%ags)",
        "  %rs = f32[128]{0} reduce-scatter(%g), replica_groups=[2,4]<=[8], dimensions={0}",
        "  %cp = (s32[10]{0}, s32[10]{0}, u32[], u32[]) collective-permute-start(%y), source_target_pairs={{0,1}}",
    ])
    got = plan_lib.collective_bytes(hlo, 8)
    assert got["all-gather"]["count"] == 2
    assert got["all-gather"]["moved"] == pytest.approx(64 * 128 * 4 * 7 / 8 + 16 * 256 * 2 * 3 / 4)
    assert got["all-reduce"]["moved"] == pytest.approx(2 * (1024 * 4 + 512 * 2) * 1 / 2)
    assert got["reduce-scatter"]["moved"] == pytest.approx(128 * 4 * 3)
    assert got["collective-permute"]["moved"] == 40
    assert got["total"]["count"] == 5


def test_the_compilers_out_of_memory_figures_are_read_in_both_spellings():
    gib = 2**30
    assert plan_lib.oom_figures("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                                "temporaries (76.32G) exceeds available HBM (15.75G).") == (
        pytest.approx(76.32 * gib), pytest.approx(15.75 * gib), "HLO temporaries")
    assert plan_lib.oom_figures("Ran out of memory in memory space hbm. Used 110.97G of 95.74G hbm.")[:2] == (
        pytest.approx(110.97 * gib), pytest.approx(95.74 * gib))
    assert plan_lib.oom_figures("RESOURCE_EXHAUSTED: something else") is None


@pytest.mark.slow
def test_a_sweep_over_a_2x2_grid_writes_three_tables_and_a_plot(tmp_path, monkeypatch):
    points = sweep_lib.grid_points([sweep_lib.parse_grid("mesh.shape=(1,8,1),(2,4,1)"),
                                    sweep_lib.parse_grid("model.remat=True,False")])
    assert points[0] == {"mesh.shape": "(1,8,1)", "model.remat": "True"} and len(points) == 4
    records = sweep_lib.run_sweep(None, ["data.batch_size=8"], "cpu:8", points, str(tmp_path), show_progress=False)
    assert [r["error"] for r in records] == [None] * 4
    assert [r["plan"]["mesh"] for r in records][1:3] == [{"data": 1, "fsdp": 8, "tensor": 1},
                                                         {"data": 2, "fsdp": 4, "tensor": 1}]
    assert [r["plan"]["model"]["remat"] for r in records] == [True, False, True, False]
    # Rematerialization recomputes the forward pass: more FLOPs, fewer bytes kept.
    assert records[0]["plan"]["flops"]["compiler_per_device"] > records[1]["plan"]["flops"]["compiler_per_device"]
    for name in sweep_lib.OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0, name
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[2].startswith("| mesh.shape | model.remat | fits | memory_gib |") and len(table) == 4 + 4
    import pandas as pd

    csv = pd.read_csv(tmp_path / "sweep.csv")
    assert list(csv["model.remat"]) == [True, False, True, False] and csv["fits"].all()
    assert len(json.loads((tmp_path / "sweep.json").read_text())["plans"]) == 4
    from PIL import Image

    assert Image.open(tmp_path / "sweep.png").size[0] > 300
    # A rerun reuses the finished points: nothing is compiled again.
    monkeypatch.setattr(plan_lib, "plan_in_subprocess", lambda *a, **k: pytest.fail("recompiled a finished point"))
    again = sweep_lib.run_sweep(None, ["data.batch_size=8"], "cpu:8", points, str(tmp_path), show_progress=False)
    assert [r["plan"] for r in again] == [r["plan"] for r in records]


def test_grid_values_split_at_top_level_commas_only():
    assert sweep_lib.parse_grid("mesh.shape=(-1,8,1),(-1,16,1),(-1,4,2)") == (
        "mesh.shape", ["(-1,8,1)", "(-1,16,1)", "(-1,4,2)"])
    assert sweep_lib.parse_grid("model.attention='xla','cudnn'")[1] == ["'xla'", "'cudnn'"]
    with pytest.raises(ValueError, match="expected KEY=V1,V2"):
        sweep_lib.parse_grid("model.remat")


# ----------------------------------------------------------------------------- TPU (libtpu)


@needs_libtpu
def test_the_tiny_step_compiles_for_a_v5p_8_and_reports_per_chip_figures():
    result = plan_lib.plan(load_config(None, ["mesh.shape=(1,-1,1)", "data.batch_size=8"]), "v5p-8")
    assert result["platform"] == "tpu" and result["device_kind"] == "TPU v5" and result["devices"] == 4
    assert result["compiled"] and result["fits"]
    assert result["memory"]["capacity"] == 95 * 2**30
    # TPU layouts pad small arrays to tiles: at least the analytic bytes.
    assert result["memory"]["argument"] >= result["analytic"]["arguments"]
    assert result["collectives"]["total"]["count"] > 0
    assert result["flops"]["compiler_per_device"] > 0
    estimate = result["estimate"]
    assert estimate["step_s"] == pytest.approx(estimate["compute_s"] + estimate["collective_s"])
    assert 0 < estimate["mfu"] < 1


@needs_libtpu
def test_the_7b_config_on_a_single_v5e_chip_does_not_fit():
    config = load_config(CONFIG_7B, ["mesh.shape=(1,1,1)"])
    result = plan_lib.plan(config, "v5e-1")
    assert result["fits"] is False and not result["compiled"]
    assert result["status"].startswith("does not fit: the parameters, optimizer state and batch alone need")
    assert result["analytic"]["parameters"] > 16e9  # 8 B float32 parameters on one 16 GB chip


def test_named_slices_follow_the_cloud_tables():
    assert plan_lib.tpu_topology("v5p-64").libtpu_name == "v5:2x4x4"
    assert plan_lib.tpu_topology("v5p-64").num_chips == 32 and plan_lib.tpu_topology("v5p-64").hosts == 8
    assert plan_lib.tpu_topology("v5litepod-8").libtpu_name == "v5e:2x4"
    assert plan_lib.tpu_topology("v6e-64").hosts == 16
    assert plan_lib.tpu_topology("v4:2x2x2").num_chips == 8
    assert math.isclose(plan_lib.CHIPS["v6e"].peak_flops, 918e12)
    assert np.all([r["chips"] * 2 == int(r["name"].split("-")[1]) for r in plan_lib.topology_table()
                   if r["chip"] in ("v4", "v5p")])


def test_the_plan_verb_prints_a_table_and_one_json_line_and_names_bad_input(capsys):
    from w2s_vqa import cli

    assert cli.main(["plan", "--topology", "cpu:8", "--no-compile", "--set", "data.batch_size=8"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("target      cpu:8: 8 x cpu; mesh data 1 x fsdp 8 x tensor 1")
    assert json.loads(out[-1])["analytic"]["parameters"] > 0
    assert cli.main(["plan", "--topologies"]) == 0
    assert "v5p-64      v5p   v5:2x4x4       32      8" in capsys.readouterr().out
    assert cli.main(["plan", "--topology", "v9-8"]) == 2
    assert "w2s-vqa plan: error: unknown target 'v9-8'" in capsys.readouterr().err
