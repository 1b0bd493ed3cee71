"""The train step from the config and abstract state alone, and the loop's evaluations."""

import jax
import numpy as np
from jax.sharding import PartitionSpec

from tests.train.conftest import train_config
from w2s_vqa import prompt as prompt_lib
from w2s_vqa import sharding
from w2s_vqa.config import eval_entry, load_config
from w2s_vqa.labels import pair_table
from w2s_vqa.models import config as model_config
from w2s_vqa.train import loop
from w2s_vqa.train import step as step_lib
from w2s_vqa.train.logging import read_metrics


def tiny_prompt(config) -> prompt_lib.PairPrompt:
    cfg = model_config.student_config(config)
    return prompt_lib.build_pair_prompt(prompt_lib.load_tokenizer(model_config.tokenizer_dir(config)),
                                        video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)


def test_the_step_compiles_from_abstract_state_alone_on_8_devices():
    config = load_config(None, ["mesh.shape=(2,2,2)", "data.batch_size=8"])
    mesh = sharding.mesh_from_config(config)
    prompt = tiny_prompt(config)
    before = {id(a) for a in jax.live_arrays()}
    ts = step_lib.build_train_step(config, mesh, prompt.level_token_ids)
    compiled = ts.step.lower(ts.abstract_state, step_lib.abstract_batch(config, prompt.length)).compile()
    # Nothing was placed on a device: no parameter, no optimizer moment.
    assert [a for a in jax.live_arrays() if id(a) not in before] == []

    state_in, batch_in = compiled.input_shardings[0]
    layout = ts.layout
    assert jax.tree.leaves(state_in) == jax.tree.leaves(layout.shardings)
    q = "language_model.layers.0.self_attn.q_proj.kernel"
    assert layout.abstract["trainable"][q].sharding.spec == PartitionSpec("fsdp", "tensor")
    # An Adam moment lives where its parameter does.
    moments = [s for p, s in jax.tree_util.tree_leaves_with_path(layout.shardings["opt_state"])
               if any(getattr(e, "key", None) == q for e in p)]
    assert len(moments) == 2 and all(s.spec == PartitionSpec("fsdp", "tensor") for s in moments)
    # The batch splits over the rules table's `batch` axes (data x fsdp), 4 ways here.
    assert ts.batch_sharding.spec == PartitionSpec(("data", "fsdp"))
    assert all(s.spec == PartitionSpec(("data", "fsdp")) for s in jax.tree.leaves(batch_in))


def test_the_batch_sharding_follows_the_rules_table():
    config = load_config(None, ["mesh.shape=(2,2,2)", "data.batch_size=8",
                                "mesh.rules=[['batch', 'data'], ['embed', 'fsdp'], ['mlp', 'tensor']]"])
    mesh = sharding.mesh_from_config(config)
    sharding_ = step_lib.batch_sharding(config, mesh)
    assert sharding_.spec == PartitionSpec("data") and step_lib.batch_shards(sharding_) == 2


def test_the_compiled_step_gives_the_loops_losses_on_the_same_batches(pool, tmp_path):
    config = train_config(pool, "train.num_steps=2", "mesh.shape=(2,2,2)")
    trainer = loop.Trainer(config, tmp_path / "run")
    trainer.run()
    rows = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    want_loss, want_grad = [r["loss"] for r in rows], [r["grad_norm"] for r in rows]

    # A separate step, compiled ahead of time from the abstract state, on the loop's own
    # first batches and initial parameters.
    ts = step_lib.build_train_step(config, sharding.mesh_from_config(config), trainer.prompt.level_token_ids)
    compiled = ts.step.lower(ts.abstract_state, step_lib.abstract_batch(config, trainer.prompt.length)).compile()
    state = ts.layout.init_state(trainer.initial_params())
    iterator = trainer.data_iterator(config.data.pairs, seed=config.seed, num_epochs=None,
                                     augment=config.data.augment)
    got_loss, got_grad = [], []
    for _ in range(2):
        batch = trainer.to_device(next(iterator))
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            k: (v.shape, v.dtype) for k, v in step_lib.abstract_batch(config, trainer.prompt.length).items()}
        state, metrics = compiled(state, batch)
        got_loss.append(float(metrics["loss"]))
        got_grad.append(float(metrics["grad_norm"]))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6)
    for key, value in trainer.final_state["trainable"].items():
        np.testing.assert_allclose(np.asarray(state["trainable"][key]), np.asarray(value), rtol=1e-6, err_msg=key)


def test_each_evaluation_runs_on_its_own_schedule_and_logs_under_its_name(pool, tmp_path):
    pairs = str(pool / "pairs.parquet")
    config = train_config(pool, "train.num_steps=2", "train.eval_every=1", f"data.val_pairs='{pairs}'")
    config.evals.held = eval_entry(pairs=pairs, every=2, batches=1)
    loop.Trainer(config, tmp_path / "run").run()
    evals = {r["step"]: r for r in read_metrics(tmp_path / "run") if any(k.endswith("/pairs") for k in r
                                                                          if not k.startswith("train/"))}
    assert sorted(evals) == [1, 2]
    table = pair_table.read_pairs(pairs)
    # "val" (the data.val_pairs shorthand) every step over the whole table, under today's keys.
    assert evals[1]["val/all/pairs"] == evals[2]["val/all/pairs"] == len(table)
    assert 0 <= evals[2]["val/all/direction_accuracy"] <= 1 and "val/ce" in evals[2]
    # "held" every second step, over one global batch.
    assert not any(k.startswith("held/") for k in evals[1])
    assert evals[2]["held/all/pairs"] == config.data.batch_size
