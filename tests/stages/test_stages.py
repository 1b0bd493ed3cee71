"""`w2s-vqa stages` on a tiny pool: two stages, resumed after kills between and inside
stages, stage 2 from stage 1's parameters, and relabeling on two processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import pool, train_config  # noqa: F401  (the session's small real store)
from w2s_vqa import cli
from w2s_vqa import config as config_lib
from w2s_vqa.demo.run import standin_mos
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import weak_teachers
from w2s_vqa.score.anchors import AnchorSet
from w2s_vqa.stages import relabel
from w2s_vqa.stages import run as stages_lib
from w2s_vqa.store.format import VideoStore
from w2s_vqa.train import loop
from w2s_vqa.train.checkpoint import load_checkpoint_student

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = ("train.num_steps=4", "stages.num_steps=3", "train.checkpoint_every=2", "stages.val_fraction=0.0",
            "stages.new_pairs=14", "stages.synthetic_per_kind=2", "stages.gmad_levels=2",
            "mesh.shape=(1,1,1)", "mesh.num_devices=1")


@pytest.fixture(scope="module")
def inputs(pool, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("stages")
    with VideoStore(pool / "store") as store:
        index = store.index
        weak_teachers.score_store(store).to_csv(root / "teachers.csv", index=False)
        mos = standin_mos(index)
        pick = [int(np.argmin(mos)), int(np.argmax(mos))]
        AnchorSet.from_store(store, index["id"].iloc[pick], mos[pick]).save(str(root / "anchors"))
    return root


def stage_config(pool, inputs, *more):  # noqa: F811
    return train_config(pool, *SETTINGS, f"stages.anchors='{inputs / 'anchors'}'",
                        f"stages.teachers='{inputs / 'teachers.csv'}'", *more)


def params(run_dir, stage):
    student, _, step = load_checkpoint_student(stages_lib.stage_dir(run_dir, stage), "latest")
    from w2s_vqa.train.step import ParamCodec

    return {k: np.asarray(v) for k, v in ParamCodec(student).to_dict(student).items()}


@pytest.fixture(scope="module")
def uninterrupted(pool, inputs):  # noqa: F811
    run_dir = inputs / "whole"
    summary = stages_lib.run_stages(stage_config(pool, inputs), str(run_dir), num_stages=2, progress=False)
    assert summary["stopped"] is None and [s["steps"] for s in summary["stages"]] == [4, 3]
    return run_dir, summary


@pytest.mark.slow
def test_two_stages_resume_after_kills_to_the_same_parameters(pool, inputs, uninterrupted):  # noqa: F811
    whole, summary = uninterrupted
    # The stage-2 table: stage 1's pairs, then the new ones (gMAD pairs labelled by the stage-1
    # student, misranked synthetic pairs with their level gap), all marked stage 2.
    first = pair_table.read_pairs(pool / "pairs.parquet")
    second = pair_table.read_pairs(os.path.join(stages_lib.stage_dir(whole, 2), stages_lib.TRAIN_PAIRS_FILE))
    new = second.iloc[len(first):]
    pd.testing.assert_frame_equal(second.iloc[:len(first)][list(first.columns)].reset_index(drop=True), first)
    assert len(new) == summary["stages"][0]["relabel"]["pairs"] > 0 and (new["stage"] == 2).all()
    assert set(new["origin"]) <= {"student:1", "spatial"} and "student:1" in set(new["origin"])

    # Killed between the stages (stage 1 done, nothing relabeled), then inside stage 2.
    resumed = inputs / "resumed"
    assert stages_lib.run_stages(stage_config(pool, inputs), str(resumed), num_stages=1,
                                 progress=False)["stopped"] is None
    stopped = stages_lib.run_stages(stage_config(pool, inputs), str(resumed), num_stages=2, until=(2, 1),
                                    progress=False)
    assert stopped["stopped"] == 2 and stopped["stages"][-1]["steps"] == 1
    finished = stages_lib.run_stages(stage_config(pool, inputs), str(resumed), num_stages=2, progress=False)
    assert [s["trained_now"] for s in finished["stages"]] == [False, True]
    for stage in (1, 2):
        want, got = params(whole, stage), params(resumed, stage)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"stage {stage} {key}")
    table = json.loads((resumed / stages_lib.RESULTS_JSON).read_text())
    assert [s["stage"] for s in table["stages"]] == [1, 2]
    assert "| 2 | 3 |" in (resumed / stages_lib.RESULTS_MD).read_text()


def test_stage_two_starts_from_stage_ones_parameters(pool, inputs, uninterrupted, tmp_path):  # noqa: F811
    whole, _ = uninterrupted
    config = stages_lib.stage_config(stage_config(pool, inputs), str(whole), 2)
    assert config.train.init_from == stages_lib.stage_dir(whole, 1) and not config.train.init_optimizer
    state = loop.Trainer(config, tmp_path / "fresh").initial_state()
    start = {k: np.asarray(v) for k, v in {**state["frozen"], **state["trainable"]}.items()}
    end_of_stage_1 = params(whole, 1)
    for key, value in end_of_stage_1.items():
        np.testing.assert_array_equal(start[key], value, err_msg=key)
    # ... and it moved from there.
    end_of_stage_2 = params(whole, 2)
    assert any(not np.array_equal(end_of_stage_2[k], v) for k, v in end_of_stage_1.items())


@pytest.mark.slow
def test_relabeling_on_two_processes_equals_one(pool, inputs, uninterrupted, tmp_path):  # noqa: F811
    whole, _ = uninterrupted
    config = stage_config(pool, inputs)
    (tmp_path / "config.json").write_text(json.dumps(config_lib.as_json(config)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.stages.relabel_worker", str(whole),
                               str(tmp_path / "config.json"), str(tmp_path / "out"), str(port), str(rank)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    one = pair_table.read_pairs(os.path.join(stages_lib.stage_dir(whole, 1), stages_lib.RELABEL_DIR,
                                              relabel.NEW_PAIRS_FILE))
    two = pair_table.read_pairs(tmp_path / "out" / relabel.NEW_PAIRS_FILE)
    # The same pairs and labels; the scores behind them agree to float32 summation order.
    exact = [c for c in one.columns if c not in ("d", "s_d", "weight")]
    pd.testing.assert_frame_equal(two[exact], one[exact])
    pd.testing.assert_frame_equal(two, one, check_exact=False, rtol=1e-4)


def test_the_stages_verb_refuses_unusable_settings(pool, inputs, tmp_path, capsys):  # noqa: F811
    base = ["stages", "--workdir", str(tmp_path / "w"), "--set", f"data.store='{pool / 'store'}'",
            "--set", f"data.pairs='{pool / 'pairs.parquet'}'"]
    assert cli.main(base + ["--stages", "2"]) == 2
    assert "stages.anchors" in capsys.readouterr().err
    assert cli.main(base + ["--stages", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert cli.main(base + ["--stages", "2", "--set", f"stages.anchors='{inputs / 'anchors'}'",
                            "--set", "stages.misranked='sideways'"]) == 2
    assert "stages.misranked" in capsys.readouterr().err
    with pytest.raises(relabel.RelabelError, match="no such file"):
        relabel.pool_ids(pd.DataFrame({"id": ["a"], "source_id": ["a"]}), val_fraction=0.0,
                         ids_file=str(tmp_path / "x"))


def test_a_workdir_refuses_another_config_and_a_teacher_table_of_other_videos(pool, inputs, uninterrupted,  # noqa: F811
                                                                              tmp_path):
    whole, _ = uninterrupted
    changed = stage_config(pool, inputs, "optim.learning_rate=0.01", "stages.new_pairs=10")
    with pytest.raises(stages_lib.StagesError, match=r"another config: optim.learning_rate: .*stages.new_pairs"):
        stages_lib.run_stages(changed, str(whole), num_stages=2, progress=False)
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "finetune.json").write_text("{}")
    with pytest.raises(stages_lib.StagesError, match="holds a `w2s-vqa finetune` run"):
        stages_lib.run_stages(stage_config(pool, inputs), str(tmp_path / "ft"), num_stages=1, progress=False)
    pd.DataFrame({"video_id": ["elsewhere"], "teacher": ["t"], "score": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    other = stage_config(pool, inputs, f"stages.teachers='{tmp_path / 't.csv'}'")
    with pytest.raises(relabel.RelabelError, match="scores none of the .* pool videos"):
        stages_lib.run_stages(other, str(tmp_path / "w"), num_stages=2, progress=False)
    assert not (tmp_path / "w" / "stage_1").exists()  # refused before stage 1 trained


def test_the_stage_table_says_the_pairs_each_validation_accuracy_rests_on():
    summary = {"stages": [
        {"stage": 1, "steps": 10, "stopped": "", "val": {"val/all/direction_accuracy": 0.0,
                                                         "val/all/direction_pairs": 1.0}},
        {"stage": 2, "steps": 10, "stopped": "", "val": {"val/all/direction_accuracy": 0.75,
                                                         "val/all/direction_pairs": 12.0}},
        {"stage": 3, "steps": 10, "stopped": "", "val": {}}]}
    rows = stages_lib.markdown(summary).splitlines()[2:]
    assert [row.split(" | ")[3].rstrip(" |") for row in rows] == ["0.000 (1 pair)", "0.750 (12 pairs)", "-"]


def test_a_workdir_where_no_stage_saved_a_step_takes_another_config(tmp_path, capsys):
    """stages.json refuses another config once a stage has saved a step; before that (a run
    refused or stopped early), the new config is recorded and said on stderr."""
    from w2s_vqa.config import load_config

    workdir = tmp_path / "w"
    first, second = load_config(None, ["stages.new_pairs=10"]), load_config(None, ["stages.new_pairs=20"])
    stages_lib.check_workdir(first, str(workdir))
    stages_lib.check_workdir(second, str(workdir))
    assert "no stage of its earlier run saved a step, so it takes this run's config (stages.new_pairs: 10 -> 20)" \
        in capsys.readouterr().err
    assert json.loads((workdir / "stages.json").read_text())["config"]["stages"]["new_pairs"] == 20
    (workdir / "stage_1" / "checkpoints" / "3").mkdir(parents=True)  # stage 1 saved step 3
    with pytest.raises(stages_lib.StagesError, match=r"another config: stages.new_pairs: 20 -> 10"):
        stages_lib.check_workdir(first, str(workdir))
