"""Per-pair inference: P per pair equals a direct forward of the student, a mesh of 8
devices gives what one gives, the pair table's order is kept, and Trainer.evaluate keeps
the figures its former summed-metrics code gave."""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tests.train.conftest import pool, train_config  # noqa: F401 (pool is a fixture)
from w2s_vqa import pipeline
from w2s_vqa import prompt as prompt_lib
from w2s_vqa import sharding as sharding_lib
from w2s_vqa.labels import pair_table
from w2s_vqa.score import metrics
from w2s_vqa.score.predict import predict_pairs
from w2s_vqa.pipeline import VideoStore
from w2s_vqa.train import loop

ORIGINS = ("teacher", "spatial", "temporal", "compression", "student")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ----------------------------------------------------------------------------- the former code, as the reference
# Trainer.evaluate, make_eval_step and objective.pair_metrics / summarize_metrics as they
# were before w2s_vqa.score existed (summed on device, batch by batch), copied unchanged
# but for names, so the new path is checked against what users got before.
def _old_pair_metrics(level_logits, labels, origins, weights):
    q = jax.nn.softmax(level_logits.astype(jnp.float32), axis=-1)
    p = q @ jnp.asarray((1.0, 0.75, 0.5, 0.25, 0.0), jnp.float32)
    better = jnp.isin(labels, jnp.asarray((0, 1)))
    worse = jnp.isin(labels, jnp.asarray((3, 4)))
    directional = (better | worse) & (weights > 0)
    correct_dir = directional & jnp.where(better, p > 0.5, p < 0.5)
    counted = weights > 0
    correct_5 = counted & (jnp.argmax(level_logits, axis=-1) == labels)
    out = {}
    for name, select in [("all", counted)] + [(o, counted & (origins == i)) for i, o in enumerate(ORIGINS)]:
        out[f"{name}/direction_correct"] = jnp.sum(correct_dir & select)
        out[f"{name}/direction_count"] = jnp.sum(directional & select)
        out[f"{name}/five_way_correct"] = jnp.sum(correct_5 & select)
        out[f"{name}/count"] = jnp.sum(select)
    return out


def _old_summarize(sums):
    out = {}
    for name in ["all", *ORIGINS]:
        count = float(sums.get(f"{name}/count", 0))
        if not count:
            continue
        direction = float(sums[f"{name}/direction_count"])
        if direction:
            out[f"{name}/direction_accuracy"] = float(sums[f"{name}/direction_correct"]) / direction
        out[f"{name}/five_way_accuracy"] = float(sums[f"{name}/five_way_correct"]) / count
        out[f"{name}/pairs"] = count
    return out


def _old_eval_step(codec, level_ids):
    def step(state, batch):
        model = codec.merge({**state["frozen"], **state["trainable"]})
        logits = model.level_logits(level_ids, **{k: batch[k] for k in loop.MODEL_INPUTS})
        log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        ce = -jnp.sum(jax.nn.one_hot(batch["label"], 5) * log_q, axis=-1)
        w = batch["weight"].astype(jnp.float32)
        mean_ce = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1e-12)
        count = jnp.sum(batch["weight"] > 0)
        return {"ce_sum": mean_ce * count, **_old_pair_metrics(logits, batch["label"], batch["origin"],
                                                                batch["weight"])}

    return step


def old_evaluate(trainer, state, pairs):
    table = pipeline.load_pair_table(pairs)
    global_batch = trainer.local_batch * jax.process_count()
    padding = -len(table) % global_batch
    if padding:
        table = pd.concat([table, table.iloc[np.arange(padding) % len(table)].assign(weight=0.0)],
                          ignore_index=True)
    step = jax.jit(_old_eval_step(trainer.codec, trainer.prompt.level_token_ids), out_shardings=trainer.replicated)
    sums = {}
    for i, batch in enumerate(trainer.data_iterator(table, seed=0, num_epochs=1)):
        if trainer.config.train.eval_batches and i >= trainer.config.train.eval_batches:
            break
        for k, v in jax.device_get(step(state, trainer.to_device(batch))).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    summary = _old_summarize(sums)
    summary["ce"] = sums["ce_sum"] / max(sums["all/count"], 1.0)
    return {f"val/{k}": v for k, v in summary.items()}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def table(pool):  # noqa: F811
    """21 pairs of the pool (not a whole number of batches of 8) with every origin, two
    "similar" labels and two zero-weight pairs."""
    base = pair_table.read_pairs(pool / "pairs.parquet").iloc[:21].reset_index(drop=True)
    origins = ["teacher", "spatial", "compression", "student:2", "temporal", "spatial", "spatial"] * 3
    table = base.assign(origin=origins)
    table.loc[[4, 11], "label"] = prompt_lib.LEVEL_INDEX["similar"]
    table.loc[[6, 15], "weight"] = 0.0
    return table


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):  # noqa: F811
    """A student trained a few steps on one device, so that its P are spread out."""
    config = train_config(pool, "train.num_steps=6", "mesh.shape=(1,1,1)", "mesh.num_devices=1")
    trainer = loop.Trainer(config, tmp_path_factory.mktemp("trained"))
    trainer.run()
    return trainer


def _store(pool):  # noqa: F811
    return VideoStore(pool / "store")


def _one_device():
    return sharding_lib.make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("eval_batches", [0, 2])
def test_evaluate_gives_the_figures_of_the_former_summed_code(trained, table, eval_batches):
    trained.config.train.eval_batches = eval_batches
    try:
        got = trained.evaluate(trained.final_state, table)
        want = old_evaluate(trained, trained.final_state, table)
    finally:
        trained.config.train.eval_batches = 0
    assert list(got) == list(want)
    assert (want["val/all/pairs"] == 19.0) == (eval_batches == 0)  # 2 of 3 batches: some pairs unseen
    for key, value in want.items():
        if key == "val/ce":  # float32 sums on device then, float64 on the host now
            assert got[key] == pytest.approx(value, rel=1e-6)
        else:
            assert got[key] == value, key


def test_p_per_pair_is_the_students_own_forward_and_evaluate_counts_it(trained, table, pool):  # noqa: F811
    student, prompt = trained.student(), trained.prompt
    got = predict_pairs(student, table, _store(pool), prompt, _one_device(), batch_size=8)
    # The pair table comes back whole, in its order, with P and the logits added.
    pd.testing.assert_frame_equal(got[list(table.columns)], table)
    assert list(got.columns[len(table.columns):]) == ["p", *metrics.LOGIT_COLUMNS]

    # The reference: every pair in one batch, straight through the un-jitted, un-sharded student.
    batch = next(pipeline.make_iterator(table, _store(pool), prompt, batch_size=len(table), seed=5, shard_index=0,
                                        shard_count=1, num_epochs=1))
    inputs = {k: jnp.asarray(batch[k]) for k in loop.MODEL_INPUTS}
    direct = np.empty((len(table), 5), np.float32)
    direct[batch["pair_index"]] = np.asarray(student.level_logits(prompt.level_token_ids, **inputs))
    np.testing.assert_allclose(got[list(metrics.LOGIT_COLUMNS)].to_numpy(), direct, rtol=1e-5, atol=1e-5)
    q = np.exp(direct - direct.max(-1, keepdims=True))
    p = (q / q.sum(-1, keepdims=True)) @ np.asarray(prompt_lib.ALPHA)
    np.testing.assert_allclose(got["p"], p, rtol=1e-5)
    # On both sides of 0.5 and not at it: the accuracies below are not decided by rounding.
    assert p.min() < 0.5 < p.max() and np.abs(p - 0.5).min() > 1e-3

    # Evaluate's figures, recomputed here from those P by their definitions.
    labels, weights = table["label"].to_numpy(), table["weight"].to_numpy()
    group = table["origin"].str.split(":").str[0].to_numpy()
    want = {}
    for name in ("all", *ORIGINS):
        select = (weights > 0) & ((group == name) | (name == "all"))
        if not select.any():
            continue
        directional = select & (labels != 2)
        right = np.where(labels < 2, p > 0.5, p < 0.5)
        if directional.any():
            want[f"val/{name}/direction_accuracy"] = right[directional].mean()
        want[f"val/{name}/five_way_accuracy"] = (direct.argmax(-1) == labels)[select].mean()
        want[f"val/{name}/pairs"] = float(select.sum())
    log_q = direct - direct.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    ce = -log_q[np.arange(len(labels)), labels]
    want["val/ce"] = (ce * weights).sum() / weights.sum()
    got_eval = trained.evaluate(trained.final_state, table)
    assert got_eval == pytest.approx(want, rel=1e-5)
    assert list(got_eval) == list(want)


@pytest.fixture(scope="module")
def on_one_device(pool, table, tmp_path_factory):  # noqa: F811
    """A freshly initialized training state's predictions on one device, and its trainer."""
    trainer = loop.Trainer(train_config(pool, "mesh.shape=(1,1,1)", "mesh.num_devices=1"),
                           tmp_path_factory.mktemp("one"))
    return predict_pairs(trainer.initial_state(), table, _store(pool), trainer.prompt, trainer.mesh,
                         batch_size=8, forward=trainer.eval_step), trainer


def _shuffled(table):
    order = np.random.default_rng(1).permutation(len(table))
    return table.iloc[order].reset_index(drop=True), order


def _assert_same_predictions(got, want):
    np.testing.assert_allclose(got[list(metrics.LOGIT_COLUMNS)], want[list(metrics.LOGIT_COLUMNS)], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(got["p"], want["p"], rtol=1e-5)


@pytest.mark.parametrize("shape", ["(8,1,1)", "(2,4,1)", "(1,2,4)"])
def test_a_mesh_of_8_devices_predicts_what_one_does_in_the_tables_order(pool, table, on_one_device, tmp_path,  # noqa: F811
                                                                      shape):
    want, _ = on_one_device
    shuffled, order = _shuffled(table)
    trainer = loop.Trainer(train_config(pool, f"mesh.shape={shape}"), tmp_path)
    assert trainer.mesh.devices.size == 8
    got = predict_pairs(trainer.initial_state(), shuffled, _store(pool), trainer.prompt, trainer.mesh,
                        batch_size=8, forward=trainer.eval_step)
    pd.testing.assert_frame_equal(got[list(table.columns)], shuffled)  # the order given, whatever it is
    _assert_same_predictions(got, want.iloc[order].reset_index(drop=True))
    assert got["p"].notna().all()  # zero-weight pairs are predicted too


def test_a_student_on_one_device_is_placed_on_the_mesh_and_any_batch_sharding_works(pool, table, on_one_device):  # noqa: F811
    want, one = on_one_device
    state = one.initial_state()
    student = one.codec.merge({**state["frozen"], **state["trainable"]})  # its arrays live on device 0
    mesh = sharding_lib.make_mesh((2, 2, 2))
    pairs_over = NamedSharding(mesh, PartitionSpec(("data", "tensor")))  # not the default data x fsdp
    _assert_same_predictions(predict_pairs(student, table, _store(pool), one.prompt, mesh, batch_size=16,
                                           batch_sharding=pairs_over), want)


def test_two_processes_predict_what_one_does(pool, table, on_one_device, tmp_path):  # noqa: F811
    want, _ = on_one_device
    shuffled, order = _shuffled(table)
    pair_table.write_pairs(shuffled, tmp_path / "pairs.parquet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.score.predict_worker", str(pool),
                               str(tmp_path / "pairs.parquet"), str(tmp_path / "out"), str(port), str(rank)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for rank in range(2):  # each process got the whole table, in its order
        got = pd.read_parquet(tmp_path / f"out-{rank}.parquet")
        pd.testing.assert_frame_equal(got[list(table.columns)], pair_table.read_pairs(tmp_path / "pairs.parquet"))
        _assert_same_predictions(got, want.iloc[order].reset_index(drop=True))


def test_max_batches_leaves_the_pairs_not_reached_nan_and_a_short_table_works(trained, table, pool):  # noqa: F811
    mesh, store, student = _one_device(), _store(pool), trained.student()
    full = predict_pairs(student, table, store, trained.prompt, mesh, batch_size=8)
    part = predict_pairs(student, table, store, trained.prompt, mesh, batch_size=8, max_batches=1)
    reached = part["p"].notna().to_numpy()
    assert 0 < reached.sum() <= 8  # one batch of 8, which may hold some of the padding copies
    np.testing.assert_allclose(part["p"][reached], full["p"][reached], rtol=1e-6)
    short = predict_pairs(student, table.iloc[[3, 0, 5]], store, trained.prompt, mesh, batch_size=8)
    np.testing.assert_allclose(short["p"], full["p"].iloc[[3, 0, 5]], rtol=1e-6)
    empty = predict_pairs(student, table.iloc[:0], store, trained.prompt, mesh, batch_size=8)
    assert len(empty) == 0 and "p" in empty.columns
    with pytest.raises(ValueError, match=r"batch_size=6 must be a positive multiple of the 4 parts the batch is split into"):
        predict_pairs(student, table, store, trained.prompt, sharding_lib.make_mesh((4, 1, 1), jax.devices()[:4]),
                      batch_size=6)
