"""`w2s-vqa demo`, shrunk: pool, training, held-out comparison, export, one JSON line last."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from w2s_vqa import cli


def test_demo_runs_end_to_end_and_reports_json(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path / "demo"), "--sources", "6", "--workers", "0",
                     "--set", "data.demo_distortions='blur:1,3,5;noise:1,3,5'", "--set", "data.batch_size=8",
                     "--set", "train.num_steps=4", "--set", "train.eval_every=2", "--set", "train.log_every=2",
                     "--set", "train.checkpoint_every=2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 4
    student = summary["student_heldout_synthetic_gap_gt1_direction_accuracy"]
    assert 0.0 <= student["all"] <= 1.0 and summary["heldout_synthetic_gap_gt1_pairs"] > 0
    assert set(summary["teachers_heldout_synthetic_gap_gt1_direction_accuracy"]) >= {"sharpness", "noise", "fused"}
    assert (tmp_path / "demo" / "export" / "model.safetensors").exists()
    best_teacher = max(t["all"] for t in summary["teachers_heldout_synthetic_gap_gt1_direction_accuracy"].values())
    assert summary["meets_target"] == (student["all"] >= 0.8 and student["all"] > best_teacher)

    # The scoring step: anchors from training videos, every held-out video scored, and the
    # SRCC with the known order per (source, simulator) group, recomputed here with scipy.
    scoring = summary["scoring"]
    assert list(scoring["srcc_vs_known_order"])[0] == "student"
    assert set(scoring["srcc_vs_known_order"]) >= {"student", "sharpness", "noise", "exposure", "fused"}
    anchors = json.loads((tmp_path / "demo" / "scoring" / "anchors" / "anchors.json").read_text())
    stand_in = [a["mos"] for a in anchors["anchors"]]
    assert [a["standin_mos"] for a in scoring["anchors"]] == stand_in and stand_in == sorted(stand_in)
    assert len(stand_in) == 4  # levels 1, 3, 5 of 5 and pristine: 4 distinct stand-in values, K shrinks to 4
    scores = pd.read_csv(scoring["scores"])
    assert len(scores) == scoring["heldout_videos"] > 0 and scoring["skipped"] == 0
    assert not set(scores["id"]) & {a["id"] for a in anchors["anchors"]}  # held out: no anchor among them
    groups = []
    for source, rows in scores.groupby("source_id"):
        pristine = rows[rows["level"] == 0]
        for _, variants in rows[rows["level"] > 0].groupby("distortion"):
            group = pd.concat([pristine, variants])
            groups.append(scipy.stats.spearmanr(group["score"], -group["level"]).statistic)
    assert scoring["srcc_vs_known_order"]["student"]["all"] == pytest.approx(np.mean(groups))
    assert (tmp_path / "demo" / "scoring" / "heldout_scores.png").stat().st_size > 0
