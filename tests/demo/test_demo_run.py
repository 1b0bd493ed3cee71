"""`w2s-vqa demo`, shrunk: pool, training, held-out comparison, export, one JSON line last."""

import json

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
