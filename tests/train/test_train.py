"""Training runs: sharding changes nothing, frozen groups stay put, checkpoints export to
transformers, a diverging run stops with its last good checkpoint. Resuming, kills, lost
processes and signals: test_resume.py."""

import json

import jax
import numpy as np
import optax
import pytest

from tests.train.conftest import train_config
from w2s_vqa import cli
from w2s_vqa.train import loop
from w2s_vqa.train.checkpoint import load_checkpoint_student
from w2s_vqa.train.step import MODEL_INPUTS
from w2s_vqa.train.logging import read_metrics


def losses(workdir):
    rows = [r for r in read_metrics(workdir) if "loss" in r]
    return np.array([r["loss"] for r in rows]), np.array([r["grad_norm"] for r in rows])


@pytest.mark.slow
def test_meshes_give_the_losses_and_gradients_of_one_device(pool, tmp_path):
    steps = "train.num_steps=3"
    loop.Trainer(train_config(pool, steps, "mesh.shape=(1,1,1)", "mesh.num_devices=1"), tmp_path / "one").run()
    want_loss, want_grad = losses(tmp_path / "one")
    assert len(want_loss) == 3 and np.all(np.isfinite(want_loss))
    for shape in ["(8,1,1)", "(1,8,1)", "(2,2,2)", "(1,2,4)"]:
        workdir = tmp_path / shape.strip("()").replace(",", "x")
        trainer = loop.Trainer(train_config(pool, steps, f"mesh.shape={shape}"), workdir)
        trainer.run()
        got_loss, got_grad = losses(workdir)
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, err_msg=shape)
        np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, err_msg=shape)
    # The last mesh really did shard: a decoder kernel is split over fsdp and tensor.
    q = trainer.final_state["trainable"]["language_model.layers.0.self_attn.q_proj.kernel"]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_frozen_groups_do_not_move(pool, tmp_path):
    groups = "optim.groups=(('^language_model\\\\.', 0.0), ('projector', 1e-2))"
    trainer = loop.Trainer(train_config(pool, "train.num_steps=2", groups), tmp_path / "frozen")
    initial = {k: np.asarray(v) for k, v in trainer.initial_params().items()}
    trainer.run()
    state = trainer.final_state
    assert all(k.startswith("language_model.") for k in state["frozen"]) and state["frozen"]
    for key, value in state["frozen"].items():
        assert np.array_equal(np.asarray(value), initial[key]), key
    moved = [k for k, v in state["trainable"].items() if not np.array_equal(np.asarray(v), initial[k])]
    assert any(k.startswith("multi_modal_projector.") for k in moved)
    assert any(k.startswith("vision_tower.") for k in moved)
    # Each logged step names the rate its update used: optax's warm-up-cosine schedule at the
    # step before, per trained group; the frozen group has none; `learning_rate` is the highest.
    cfg = trainer.optim_cfg
    for row in (r for r in read_metrics(tmp_path / "frozen") if "loss" in r):
        want = {name: float(optax.warmup_cosine_decay_schedule(
            0.0, rate, max(1, round(cfg.warmup_fraction * 2)), max(2, max(1, round(cfg.warmup_fraction * 2)) + 1),
            rate * cfg.min_lr_ratio)(row["step"] - 1)) for name, rate in (("projector", 1e-2), ("default", cfg.learning_rate))}
        assert row["learning_rate/projector"] == pytest.approx(want["projector"], rel=1e-6)
        assert row["learning_rate/default"] == pytest.approx(want["default"], rel=1e-6)
        assert row["learning_rate"] == pytest.approx(max(want.values()), rel=1e-6)
        assert not any("language_model" in k for k in row if k.startswith("learning_rate/"))


def test_checkpoint_exports_to_transformers_with_the_same_preference(pool, tmp_path):
    from w2s_vqa import pipeline
    from w2s_vqa.convert.torch_scorer import TorchScorer

    trainer = loop.Trainer(train_config(pool, "train.num_steps=2"), tmp_path / "run")
    trainer.run()
    out = tmp_path / "export"
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]) == 0
    settings = json.loads((out / "w2s_vqa.json").read_text())
    assert settings["step"] == 2

    batch = next(pipeline.make_iterator(str(pool / "pairs.parquet"), str(pool / "store"), trainer.prompt,
                                        batch_size=4, seed=1, shard_index=0, shard_count=1))
    model, _, step = load_checkpoint_student(str(tmp_path / "run"))
    assert step == 2
    ours = np.asarray(model.preference(trainer.prompt.level_token_ids, **{k: batch[k] for k in MODEL_INPUTS}))
    theirs = TorchScorer(out).preference(batch["pixel_values"], batch["motion"], batch["frame_mask"],
                                         batch["motion_mask"])
    assert np.max(np.abs(ours - theirs)) <= 1e-5


def test_a_diverging_run_stops_with_its_last_good_checkpoint(pool, tmp_path):
    config = train_config(pool, "train.num_steps=20", "train.checkpoint_every=1", "optim.learning_rate=1e15",
                          "optim.warmup_fraction=0.0", "optim.grad_clip_norm=0.0")
    with pytest.raises(loop.NonFiniteLossError, match="last good checkpoint is step") as error:
        loop.Trainer(config, tmp_path / "nan").run()
    bad_step = int(str(error.value).split(" at step ")[1].split(";")[0])
    model, _, step = load_checkpoint_student(str(tmp_path / "nan"))
    assert step == bad_step - 1
    assert all(np.all(np.isfinite(np.asarray(v[...]))) for v in jax.tree.leaves(model))


def test_a_run_starts_from_another_runs_parameters(pool, tmp_path):
    """train.init_from: step 0 holds the named run's parameters (read on another mesh), with a
    fresh optimizer or, with train.init_optimizer, the saved moments and zeroed counters."""
    first = loop.Trainer(train_config(pool, "train.num_steps=2", "mesh.shape=(1,1,1)", "mesh.num_devices=1"),
                         tmp_path / "first")
    first.run()
    saved = {k: np.asarray(v) for k, v in {**first.final_state["frozen"], **first.final_state["trainable"]}.items()}
    second = loop.Trainer(train_config(pool, "train.num_steps=1", "mesh.shape=(2,2,2)",
                                       f"train.init_from='{tmp_path / 'first'}'"), tmp_path / "second")
    state = second.initial_state()
    assert int(state["step"]) == 0
    for key, value in {**state["frozen"], **state["trainable"]}.items():
        np.testing.assert_array_equal(np.asarray(value), saved[key], err_msg=key)
    assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(state["opt_state"])
               if np.asarray(leaf).dtype.kind == "f")  # a fresh Adam: zero moments
    kept = loop.Trainer(train_config(pool, "train.num_steps=1", f"train.init_from='{tmp_path / 'first'}'",
                                     "train.init_optimizer=True"), tmp_path / "kept").initial_state()
    leaves = jax.tree.leaves(kept["opt_state"])
    assert any(np.any(np.asarray(leaf)) for leaf in leaves if np.asarray(leaf).dtype.kind == "f")
    assert all(not np.any(np.asarray(leaf)) for leaf in leaves if np.asarray(leaf).dtype.kind in "iu")
    with pytest.raises(ValueError, match="does not fit this run's model"):
        loop.Trainer(train_config(pool, "train.num_steps=1", "model.preset='tiny'", "data.motion_dim=128",
                                  f"train.init_from='{tmp_path / 'first'}'"), tmp_path / "other").initial_state()


def test_a_store_made_with_other_settings_is_refused_by_name(pool, tmp_path):
    """A run whose data settings differ from the store's (a shape, or how its videos were
    made: here motion features the store's videos do not have) stops before training,
    naming the store and every setting that differs with both values."""
    trainer = loop.Trainer(train_config(pool, "train.num_steps=1", "data.num_frames=8", "data.motion_features='none'"),
                           tmp_path / "run")
    with pytest.raises(ValueError, match=r"store: the store's videos were made with other settings than the config "
                                         r"reads: num_frames: 8 \(the config\) vs 4 \(the store's videos\); "
                                         r"motion_features: 'none' \(the config\) vs 'frame_stats'"):
        trainer.run()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())
