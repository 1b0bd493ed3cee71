"""The model verbs a user runs: export a tiny student, check it against transformers, refuse to clobber."""

import json

from w2s_vqa import cli


def test_export_then_check_parity(tmp_path, capsys):
    out = tmp_path / "tiny_hf"
    assert cli.main(["export", "--preset", "tiny", "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "motion_projector.safetensors", "w2s_vqa.json",
            "tokenizer.json"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(["check-parity", "--hf", str(out), "--pairs", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["max_abs_logit_diff"] <= 1e-4 and report["positions_compared"] > 1

    # A tolerance the run cannot meet makes the check fail.
    assert cli.main(["check-parity", "--hf", str(out), "--pairs", "1", "--tolerance", "0"]) == 1


def test_export_refuses_a_non_empty_directory(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["export", "--preset", "tiny", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").exists()
    assert cli.main(["export", "--preset", "tiny", "--out", str(out), "--overwrite"]) == 0
