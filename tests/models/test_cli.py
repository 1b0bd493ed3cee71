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


def test_check_parity_and_export_take_a_plain_hugging_face_directory(tmp_path, capsys, caplog):
    """A user's own hub checkpoint: no w2s_vqa.json, no motion projector, and a SigLIP config that
    carries the pooling head LLaVA-OneVision never runs (vision_use_head, vision_tower.head.*)."""
    import shutil

    from tests.convert import hf_reference as ref
    from w2s_vqa.models import config as config_lib

    cfg = config_lib.preset("tiny", num_motion_chunks=0)
    hf_config = cfg.to_hf_config()
    hf_config["vision_config"]["vision_use_head"] = True
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig(**hf_config)).eval()
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    shutil.copy(f"{ref.TINY_TOKENIZER}/tokenizer.json", plain)
    assert any("head" in name for name in model.state_dict() if "vision" in name)
    assert not (plain / "w2s_vqa.json").exists() and not (plain / "motion_projector.safetensors").exists()

    capsys.readouterr()
    with caplog.at_level("WARNING"):
        code = cli.main(["check-parity", "--hf", str(plain), "--pairs", "1", "--num-frames", "2"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["ok"], report
    assert any("pooling head" in r.getMessage() for r in caplog.records)

    out = tmp_path / "ours"
    assert cli.main(["export", "--hf", str(plain), "--out", str(out), "--num-frames", "2"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert written["vision_config"]["vision_use_head"] is False
