"""The demo pool: the source plan, a small build end to end, and a rerun that reuses it."""

import itertools
import json
import os

import numpy as np
import pytest

from w2s_vqa import cli
from w2s_vqa.config import load_config
from w2s_vqa.demo import pool as demo
from w2s_vqa.labels import origins
from w2s_vqa.labels.pair_table import read_pairs
from w2s_vqa.store.format import VideoStore
from w2s_vqa.labels.teachers import read_teacher_table
from w2s_vqa.labels.weak_teachers import TEACHERS

SOURCES = 10
DISTORTIONS = "blur:3,5;noise:5;stutter:3;h264:4"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = demo.build_demo(load_config(None), str(out), workers=0, num_sources=SOURCES,
                              distortions=DISTORTIONS, progress=False)
    return out, summary


def test_the_plan_cuts_over_a_hundred_sources_that_share_no_pixel():
    cuts = demo.plan_sources()
    assert len(cuts) >= 100 and len({cut.id for cut in cuts}) == len(cuts)
    assert {cut.clip for cut in cuts} == set(demo.CLIP_PLANS)
    for a, b in itertools.combinations(cuts, 2):
        if a.clip != b.clip:
            continue
        apart_in_time = (a.first_frame + a.num_frames <= b.first_frame or b.first_frame + b.num_frames <= a.first_frame)
        apart_in_space = (a.x + a.width <= b.x or b.x + b.width <= a.x
                          or a.y + a.height <= b.y or b.y + b.height <= a.y)
        assert apart_in_time or apart_in_space, (a.id, b.id)
    chosen = demo.choose_sources(cuts, SOURCES, seed=0)
    assert chosen == demo.choose_sources(cuts, SOURCES, seed=0) and len(chosen) == SOURCES
    with pytest.raises(ValueError, match="sources"):
        demo.choose_sources(cuts, len(cuts) + 1, seed=0)
    assert demo.source_size(demo.SourceCut("x", "c", 0, 1, 0, 0, 213, 180), 32) == (54, 64)
    assert demo.source_size(demo.SourceCut("x", "c", 0, 1, 0, 0, 88, 72), 384) == (72, 88)  # never enlarged


def test_a_small_build_writes_store_teacher_table_split_pairs_and_summary(built):
    out, summary = built
    store = VideoStore(out / demo.STORE_DIR)
    sources = store.index.loc[store.index["level"] == 0, "source_id"]
    assert len(sources) == SOURCES and len(store) == SOURCES * 6
    assert summary["counts"]["sources"] == SOURCES and summary["counts"]["skipped"] == 0

    scores = read_teacher_table(out / demo.TEACHERS_FILE, known_ids=store.ids, min_videos_per_teacher=len(store))
    assert set(scores["teacher"]) == set(TEACHERS) and np.isfinite(scores["score"]).all()

    source_of = store.index.set_index("id")["source_id"]
    train, val = read_pairs(out / demo.TRAIN_PAIRS_FILE), read_pairs(out / demo.VAL_PAIRS_FILE)
    assert len(val) > 0 and len(train) > 0
    sides = [set(source_of[table["first_id"]]) | set(source_of[table["second_id"]]) for table in (train, val)]
    assert not sides[0] & sides[1]
    for table in (train, val):
        assert set(table["origin"]) == {"teacher", *origins.SYNTHETIC}
        assert (table["stage"] == 1).all()
        synthetic = table[table["origin"] != "teacher"]
        assert (table.loc[table["origin"] == "teacher", "weight"] == demo.TEACHER_PAIR_WEIGHT).all()
        assert (synthetic["weight"] == 1.0).all()
        assert (source_of[synthetic["first_id"]].to_numpy() == source_of[synthetic["second_id"]].to_numpy()).all()

    written = json.loads((out / demo.SUMMARY_FILE).read_text())
    assert written["counts"] == summary["counts"]
    for teacher in (*TEACHERS, "fused"):
        srcc = written["srcc_vs_known_order"][teacher]
        assert {"all", *origins.SYNTHETIC} <= set(srcc) and -1.0 <= srcc["all"] <= 1.0
        assert set(srcc["by_distortion"]) == {"blur", "noise", "stutter", "h264"}
        assert 0.0 <= written["val_direction_accuracy_level_gap_above_1"][teacher]["all"] <= 1.0


def test_the_verb_reruns_on_a_finished_pool_reusing_it(built, capsys):
    out, summary = built
    teachers_written = os.path.getmtime(out / demo.TEACHERS_FILE)
    status = cli.main(["demo-data", "--out", str(out), "--workers", "0", "--sources", str(SOURCES),
                       "--distortions", DISTORTIONS])
    assert status == 0
    assert os.path.getmtime(out / demo.TEACHERS_FILE) == teachers_written
    rerun = json.loads((out / demo.SUMMARY_FILE).read_text())
    assert rerun["srcc_vs_known_order"] == summary["srcc_vs_known_order"]
    assert rerun["seconds"]["prepare"] < summary["seconds"]["prepare"]
    printed = capsys.readouterr().out
    assert "sharpness" in printed and str(out / demo.SUMMARY_FILE) in printed
    last = json.loads(printed.strip().splitlines()[-1])  # one JSON line last, as every verb
    assert last["out"] == str(out) and last["counts"] == rerun["counts"]
