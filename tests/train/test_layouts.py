"""How the train state holds the student: frozen groups in the compute dtype, and
checkpoints of one layer layout (model.scan_layers) read into the other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_vqa import sharding
from w2s_vqa.config import ConfigError, as_json, load_config
from w2s_vqa.convert import hf
from w2s_vqa.models import stack, student
from w2s_vqa.train import checkpoint as checkpoint_lib
from w2s_vqa.train import step as step_lib

FROZEN_DECODER = "optim.groups=[['^language_model\\\\.', 0.0], ['^vision_tower\\\\.', 1e-3]]"
LEVEL_IDS = (10, 11, 12, 13, 14)  # any five ids of the tiny vocabulary
PROMPT_LENGTH = 2 * (4 * 4 + 1 + 4) + 12  # two tiny videos' placeholders and some text


def config_of(*overrides):
    return load_config(None, ["data.batch_size=2", "train.num_steps=20", "mesh.shape=(1,1,1)", "mesh.num_devices=1",
                              "optim.warmup_fraction=0.0", "optim.learning_rate=1e-3", *overrides])


def one_device_mesh(config):
    return sharding.mesh_from_config(config)


def random_batch(config, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for key, struct in step_lib.abstract_batch(config, PROMPT_LENGTH).items():
        if key == "input_ids":
            value = rng.integers(5, 500, struct.shape)
            value[:, 3:3 + 21] = 4  # the tiny video token: first video's placeholders
            value[:, 26:26 + 21] = 4
        elif struct.dtype == jnp.bool_ or key == "attention_mask":
            value = np.ones(struct.shape)
        elif struct.dtype == jnp.uint8:
            value = rng.integers(0, 256, struct.shape)
        elif key in ("label", "origin"):
            value = rng.integers(0, 2, struct.shape)
        elif key == "target":
            value = np.full(struct.shape, 0.2)
        else:
            value = rng.normal(size=struct.shape) if key == "motion" else np.ones(struct.shape)
        out[key] = jnp.asarray(value, struct.dtype)
    return out


def test_frozen_groups_are_held_in_the_compute_dtype_with_no_optimizer_state():
    config = config_of(FROZEN_DECODER, "model.dtype='bfloat16'")
    layout = step_lib.state_layout(config, one_device_mesh(config))
    frozen, trainable = layout.abstract["frozen"], layout.abstract["trainable"]
    assert frozen and all(k.startswith("language_model.") for k in frozen)
    assert {s.dtype for s in frozen.values()} == {jnp.dtype(jnp.bfloat16)}
    assert {s.dtype for s in trainable.values()} == {jnp.dtype(jnp.float32)}
    keyed = {getattr(e, "key", None) for p, _ in jax.tree_util.tree_leaves_with_path(layout.abstract["opt_state"])
             for e in p}
    assert not keyed & set(frozen) and set(trainable) <= keyed
    # On device too, and a float32 copy when asked for.
    state = layout.init_state(layout.codec.to_dict(student.create(layout.model_cfg)))
    assert {a.dtype for a in state["frozen"].values()} == {jnp.dtype(jnp.bfloat16)}
    kept = config_of(FROZEN_DECODER, "model.dtype='bfloat16'", "model.frozen_in_compute_dtype=False")
    assert {s.dtype for s in step_lib.state_layout(kept, one_device_mesh(kept)).abstract["frozen"].values()} == {
        jnp.dtype(jnp.float32)}


def losses(config, steps: int):
    ts = step_lib.build_train_step(config, one_device_mesh(config), LEVEL_IDS)
    state = ts.layout.init_state(ts.layout.codec.to_dict(student.create(ts.layout.model_cfg, seed=0)))
    frozen_before = {k: np.asarray(v) for k, v in state["frozen"].items()}
    out = []
    for i in range(steps):
        state, metrics = ts.step(state, random_batch(config, i % 4))
        out.append(float(metrics["loss"]))
    assert all(np.array_equal(np.asarray(v), frozen_before[k]) for k, v in state["frozen"].items())
    return np.array(out)


def test_frozen_groups_train_the_rest_as_before_in_float32_compute():
    held = losses(config_of(FROZEN_DECODER), 20)
    kept = losses(config_of(FROZEN_DECODER, "model.frozen_in_compute_dtype=False"), 20)
    assert held[-1] != held[0]  # the trainable groups did train
    np.testing.assert_allclose(held, kept, rtol=0, atol=1e-5)


def test_groups_that_split_a_stack_are_refused_by_name():
    config = config_of("model.scan_layers=True", "optim.groups=[['^language_model\\\\.layers\\\\.1\\\\.', 0.0]]")
    with pytest.raises(ConfigError, match=r"language_model\.layers\.1\..* falls in group"):
        step_lib.state_layout(config, one_device_mesh(config))


@pytest.mark.parametrize("saved_scan", [False, True])
def test_a_checkpoint_resumes_exports_and_loads_in_the_other_layer_layout(tmp_path, saved_scan):
    saved_config = config_of(FROZEN_DECODER, f"model.scan_layers={saved_scan}")
    mesh = one_device_mesh(saved_config)
    ts = step_lib.build_train_step(saved_config, mesh, LEVEL_IDS)
    state = ts.layout.init_state(ts.layout.codec.to_dict(student.create(ts.layout.model_cfg, seed=0)))
    state, _ = ts.step(state, random_batch(saved_config, 0))  # moments that are not zero
    saved = jax.tree.map(np.asarray, state)
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    checkpointer.save(1, state, stream={"next_batch": 1}, config=as_json(saved_config))
    checkpointer.wait()

    other = config_of(FROZEN_DECODER, f"model.scan_layers={not saved_scan}")
    layout = step_lib.state_layout(other, mesh)
    assert checkpointer.saved_layout(1) == ("stacked" if saved_scan else "unrolled")
    restored = checkpointer.restore_state(1, layout.abstract)
    checkpointer.close()
    assert stack.tree_layout(restored) == ("unrolled" if saved_scan else "stacked")
    assert jax.tree.structure(restored) == jax.tree.structure(layout.abstract)
    back = stack.convert_tree(jax.tree.map(np.asarray, restored), stack.tree_layout(saved), stack=np.stack)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(saved), jax.tree.leaves(back)):
        assert np.array_equal(a, np.asarray(b)), path  # a reshuffle: bit for bit
    # The restored state trains in its new layout.
    step = step_lib.build_train_step(other, mesh, LEVEL_IDS).step
    _, metrics = step(restored, random_batch(other, 1))
    assert np.isfinite(float(metrics["loss"]))
    # Export and scoring read the checkpoint in the layout it was saved in; the files agree.
    model, _, _ = checkpoint_lib.load_checkpoint_student(str(tmp_path / "ckpt"))
    assert model.cfg.scan_layers == saved_scan
    reference = ts.layout.codec.merge({**saved["frozen"], **saved["trainable"]})
    ours, theirs = hf.export_tensors(model)[0], hf.export_tensors(reference)[0]
    assert sorted(ours) == sorted(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
