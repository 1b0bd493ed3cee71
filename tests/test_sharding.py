"""The sharding rules table alone: the 7B student's parameter specs on abstract meshes.

No devices and no training: the specs of the abstract student of
configs/w2s_llava_ov_7b.py, through the config's rules table, on AbstractMeshes of
(data, fsdp, tensor) shapes.
"""

import os

import numpy as np
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from w2s_vqa import sharding
from w2s_vqa.config import load_config
from w2s_vqa.models import config as model_config
from w2s_vqa.models import student
from w2s_vqa.train.step import ParamCodec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = "language_model.layers.0."
VISION = "vision_tower.layers.0."


def codec_of(scan_layers: bool):
    config = load_config(os.path.join(REPO, "configs", "w2s_llava_ov_7b.py") + ":gpu",
                         [f"model.scan_layers={scan_layers}"])
    return ParamCodec(student.create_abstract(model_config.student_config(config))), sharding.rules_from_config(config)


@pytest.fixture(scope="module")
def seven_b():
    """The 7B config's student with its layers unrolled (per-layer paths, as EXPECTED names them)."""
    return codec_of(False)


def mesh(shape) -> AbstractMesh:
    return AbstractMesh(tuple(shape), sharding.MESH_AXES)


def axes_of(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


EXPECTED = {
    # FSDP over 4, data over 2: the model dimension is split, tensor axes are size 1 and drop out.
    (2, 4, 1): {
        "language_model.embed_tokens.embedding": P(None, "fsdp"),
        LAYER + "mlp.up_proj.kernel": P("fsdp", None),
        LAYER + "mlp.down_proj.kernel": P(None, "fsdp"),
        LAYER + "self_attn.q_proj.kernel": P("fsdp", None),
        LAYER + "self_attn.o_proj.kernel": P(None, "fsdp"),
        LAYER + "input_layernorm.scale": P("fsdp"),
        "lm_head.kernel": P("fsdp", None),
        VISION + "mlp.fc1.kernel": P("fsdp", None),
        "vision_tower.embeddings.patch_embedding.kernel": P(None, None, None, "fsdp"),
        "vision_tower.embeddings.position_embedding": P(None, "fsdp"),
    },
    # FSDP over 2, tensor parallel over 4: heads, MLP width and vocabulary over `tensor`.
    (1, 2, 4): {
        "language_model.embed_tokens.embedding": P("tensor", "fsdp"),
        LAYER + "mlp.up_proj.kernel": P("fsdp", "tensor"),
        LAYER + "mlp.down_proj.kernel": P("tensor", "fsdp"),
        LAYER + "self_attn.q_proj.kernel": P("fsdp", "tensor"),
        LAYER + "self_attn.k_proj.kernel": P("fsdp", "tensor"),  # 4 kv heads x 128 = 512 columns
        LAYER + "self_attn.k_proj.bias": P("tensor"),
        LAYER + "self_attn.o_proj.kernel": P("tensor", "fsdp"),
        "lm_head.kernel": P("fsdp", "tensor"),
        VISION + "mlp.fc1.kernel": P("fsdp", "tensor"),  # 4304 = 4 x 1076
        VISION + "self_attn.out_proj.kernel": P("tensor", "fsdp"),
        "motion_projector.linear_1.kernel": P(None, "tensor"),
    },
    # FSDP over 3: the decoder's 3584 does not divide, so it stays whole; SigLIP's 1152 does.
    (1, 3, 1): {
        LAYER + "input_layernorm.scale": P(None),
        LAYER + "mlp.up_proj.kernel": P(None, None),
        "language_model.embed_tokens.embedding": P(None, None),
        VISION + "mlp.fc1.kernel": P("fsdp", None),
        "multi_modal_projector.linear_1.kernel": P("fsdp", None),
    },
}


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_the_7b_parameters_shard_as_the_rules_say(seven_b, shape):
    codec, rules = seven_b
    shardings = codec.shardings(mesh(shape), rules)
    assert {k: shardings[k].spec for k in EXPECTED[shape]} == EXPECTED[shape]


@pytest.mark.parametrize("shape", [(2, 4, 1), (1, 2, 4), (1, 3, 1), (1, 8, 1)])
def test_every_7b_spec_is_valid_and_follows_its_logical_axes(seven_b, shape):
    codec, rules = seven_b
    table, m = dict(rules), mesh(shape)
    per_device = 0
    for key, spec in ((k, s.spec) for k, s in codec.shardings(m, rules).items()):
        dims, axes = codec.shapes[key], codec.logical_axes[key]
        used = [a for entry in spec for a in axes_of(entry)]
        assert len(used) == len(set(used)), f"{key}: {spec} uses a mesh axis twice"
        for size, name, entry in zip(dims, axes or (None,) * len(dims), tuple(spec) + (None,) * len(dims)):
            parts = int(np.prod([m.shape[a] for a in axes_of(entry)]))
            assert size % parts == 0, f"{key}: {size} does not split {parts} ways ({spec})"
            assert set(axes_of(entry)) <= set(axes_of(table.get(name))), f"{key}: {spec} against rule of {name}"
            # Whole only where the rule's axes (of size > 1, not yet used) do not divide.
            wanted = [a for a in axes_of(table.get(name)) if m.shape[a] > 1]
            if not entry and wanted and not set(wanted) & set(used):
                assert size % int(np.prod([m.shape[a] for a in wanted])), f"{key}: {name} left whole ({spec})"
        per_device += int(np.prod(dims)) // int(np.prod([m.shape[a] for a in used]))
    total = sum(int(np.prod(d)) for d in codec.shapes.values())
    if shape != (1, 3, 1):
        # Where every weight matrix divides, a device holds 1/(fsdp x tensor) of them; a
        # vector over a tensor-mapped name (a bias) is whole when tensor is 1.
        assert per_device < 1.01 * total / (m.shape["fsdp"] * m.shape["tensor"])


def test_a_mesh_axis_serves_one_dimension_of_a_tensor(seven_b):
    codec, rules = seven_b
    # A table that maps both the model and the MLP dimension to fsdp: the first dimension takes it.
    both = tuple((name, ("fsdp", "tensor") if name == "mlp" else axes) for name, axes in rules)
    shardings = codec.shardings(mesh((1, 2, 4)), both)
    assert shardings[LAYER + "mlp.up_proj.kernel"].spec == P("fsdp", "tensor")
    assert shardings[LAYER + "mlp.down_proj.kernel"].spec == P(("fsdp", "tensor"), None)


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_scanned_layers_shard_as_their_layers_with_the_layer_axis_whole(seven_b, shape):
    # The shipped config scans: each stacked tensor's spec is its layers' spec behind an
    # unsharded leading `layers` axis (the rules table's ("layers", None)).
    codec, rules = codec_of(True)
    unrolled = seven_b[0].shardings(mesh(shape), seven_b[1])
    stacked = codec.shardings(mesh(shape), rules)
    for key in (k for k in EXPECTED[shape] if ".layers.0." in k):
        assert stacked[key.replace(".layers.0.", ".layers.")].spec == P(None, *unrolled[key].spec), key
