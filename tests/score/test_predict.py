"""Per-pair inference: P per pair equals a direct forward of the student, a mesh of 8
devices gives what one gives, the pair table's order is kept, and Trainer.evaluate's
figures (the whole table, or train.eval_batches of it) are those their definitions give
from the student's own level logits."""

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


def _direct_logits(student, prompt, table, pool):  # noqa: F811
    """float32 [N, 5]: every pair in one batch, straight through the un-jitted, un-sharded student."""
    batch = next(pipeline.make_iterator(table, _store(pool), prompt, batch_size=len(table), seed=5, shard_index=0,
                                        shard_count=1, num_epochs=1))
    inputs = {k: jnp.asarray(batch[k]) for k in loop.MODEL_INPUTS}
    direct = np.empty((len(table), 5), np.float32)
    direct[batch["pair_index"]] = np.asarray(student.level_logits(prompt.level_token_ids, **inputs))
    return direct


def _figures(table, logits):
    """Trainer.evaluate's figures from their definitions, over the pairs of `table` (weight > 0)
    with their level logits [N, 5]: per origin group, the share of directional pairs whose P
    falls on the label's side of 0.5, the share whose largest logit is the label, the pair
    count (and the directional pairs'); and the weighted mean cross-entropy of the labels."""
    labels, weights = table["label"].to_numpy(), table["weight"].to_numpy()
    group = table["origin"].str.split(":").str[0].to_numpy()
    q = np.exp(logits - logits.max(-1, keepdims=True))
    p = (q / q.sum(-1, keepdims=True)) @ np.asarray(prompt_lib.ALPHA)
    want = {}
    for name in ("all", *ORIGINS):
        select = (weights > 0) & ((group == name) | (name == "all"))
        if not select.any():
            continue
        directional = select & (labels != 2)
        right = np.where(labels < 2, p > 0.5, p < 0.5)
        if directional.any():
            want[f"val/{name}/direction_accuracy"] = right[directional].mean()
        want[f"val/{name}/direction_pairs"] = float(directional.sum())  # the count the accuracy rests on
        want[f"val/{name}/five_way_accuracy"] = (logits.argmax(-1) == labels)[select].mean()
        want[f"val/{name}/pairs"] = float(select.sum())
    log_q = logits - logits.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    ce = -log_q[np.arange(len(labels)), labels]
    kept = weights > 0
    want["val/ce"] = (ce * weights)[kept].sum() / weights[kept].sum()
    return want


def test_evaluate_with_eval_batches_counts_the_pairs_of_those_batches_alone(trained, table, pool):  # noqa: F811
    # The 21 pairs padded to 3 global batches of 8 with zero-weight copies of the first 3;
    # the first 2 batches, in the pipeline's order (seed 0), hold 16 of those 24 rows.
    padded = pd.concat([table, table.iloc[:3].assign(weight=0.0)], ignore_index=True)
    batches = pipeline.make_iterator(padded, _store(pool), trained.prompt, batch_size=8, seed=0, shard_index=0,
                                     shard_count=1, num_epochs=1)
    rows = np.concatenate([next(batches)["pair_index"] for _ in range(2)])
    assert len(set(rows.tolist())) == 16
    rows = np.sort(rows[rows < len(table)])
    held = table.iloc[rows].reset_index(drop=True)
    want = _figures(held, _direct_logits(trained.student(), trained.prompt, table, pool)[rows])
    assert want["val/all/pairs"] == (held["weight"] > 0).sum() < 19  # some of the 19 weighted pairs unseen

    trained.config.train.eval_batches = 2
    try:
        got = trained.evaluate(trained.final_state, table)
    finally:
        trained.config.train.eval_batches = 0
    assert list(got) == list(want)
    assert got == pytest.approx(want, rel=1e-5)  # float32 logits on device against float32 here


def test_p_per_pair_is_the_students_own_forward_and_evaluate_counts_it(trained, table, pool):  # noqa: F811
    student, prompt = trained.student(), trained.prompt
    got = predict_pairs(student, table, _store(pool), prompt, _one_device(), batch_size=8)
    # The pair table comes back whole, in its order, with P and the logits added.
    pd.testing.assert_frame_equal(got[list(table.columns)], table)
    assert list(got.columns[len(table.columns):]) == ["p", *metrics.LOGIT_COLUMNS]

    direct = _direct_logits(student, prompt, table, pool)
    np.testing.assert_allclose(got[list(metrics.LOGIT_COLUMNS)].to_numpy(), direct, rtol=1e-5, atol=1e-5)
    q = np.exp(direct - direct.max(-1, keepdims=True))
    p = (q / q.sum(-1, keepdims=True)) @ np.asarray(prompt_lib.ALPHA)
    np.testing.assert_allclose(got["p"], p, rtol=1e-5)
    # On both sides of 0.5 and not at it: the accuracies below are not decided by rounding.
    assert p.min() < 0.5 < p.max() and np.abs(p - 0.5).min() > 1e-3

    # Evaluate's figures, recomputed here from those logits by their definitions.
    want = _figures(table, direct)
    assert want["val/all/pairs"] == 19.0  # the whole table but its two zero-weight pairs
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
    with pytest.raises(ValueError, match=r"batch_size=6 must be a positive multiple of 4, the devices the batch is split over \(mesh axes data=4\)"):
        predict_pairs(student, table, store, trained.prompt, sharding_lib.make_mesh((4, 1, 1), jax.devices()[:4]),
                      batch_size=6)
