"""`w2s-vqa demo`, shrunk: pool, withheld kinds, two stages, the comparison, export, one JSON line last."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from w2s_vqa import cli
from w2s_vqa.labels import pair_table
from w2s_vqa.stages import run as stages_lib
from w2s_vqa.store.format import VideoStore


@pytest.mark.slow
def test_demo_runs_two_stages_end_to_end_and_reports_json(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--out", str(out), "--sources", "6", "--workers", "0",
                     "--set", "data.demo_distortions='blur:1,3,5;brighten:1,3,5'", "--set", "data.batch_size=8",
                     "--set", "train.num_steps=4", "--set", "stages.num_steps=2", "--set", "train.eval_every=2",
                     "--set", "train.log_every=2", "--set", "train.checkpoint_every=2",
                     "--set", "stages.new_pairs=12", "--set", "stages.synthetic_per_kind=2",
                     "--set", "stages.gmad_levels=2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["steps"] for s in summary["stages"]] == [4, 2]
    models = summary["models"]
    assert {"stage 1", "stage 2", "sharpness", "noise", "exposure", "fused"} <= set(models)
    teachers = [n for n in models if not n.startswith("stage ")]
    withheld = [models[f"stage {k}"]["direction_accuracy"]["withheld"] for k in (1, 2)]
    best = max(models[t]["direction_accuracy"]["withheld"] for t in teachers)
    assert summary["meets_target"] == (withheld[1] > withheld[0] and min(withheld) > best)
    assert summary["evaluation_pairs"]["withheld"] > 0 and summary["evaluation_pairs"]["trained"] > 0
    assert (out / "export" / "model.safetensors").exists()

    # No withheld video (brighten) in any table a stage trained on; stage 2 adds student:1 pairs.
    with VideoStore(out / "data" / "store") as store:
        index = store.index
    brighten = set(index.loc[index["distortion"] == "brighten", "id"])
    stage_2 = pair_table.read_pairs(os.path.join(stages_lib.stage_dir(out / "stages", 2), stages_lib.TRAIN_PAIRS_FILE))
    for table in (pair_table.read_pairs(summary["stages"][0]["pairs"]), stage_2):
        assert not (set(table["first_id"]) | set(table["second_id"])) & brighten
    assert "student:1" in set(stage_2["origin"])

    # The scoring figure, recomputed with scipy from the scores the demo wrote: the mean SRCC
    # with the known order over held-out (source, simulator) groups, trained and withheld apart.
    scores = pd.read_csv(models["stage 2"]["scores"])
    anchors = json.loads((out / "inputs" / "anchors" / "anchors.json").read_text())["anchors"]
    assert len(scores) > 0 and not set(scores["id"]) & {a["id"] for a in anchors}  # held out: no anchor among them
    groups = {"trained": [], "withheld": []}
    for _, rows in scores.groupby("source_id"):
        pristine = rows[rows["level"] == 0]
        for name, variants in rows[rows["level"] > 0].groupby("distortion"):
            group = pd.concat([pristine, variants])
            value = scipy.stats.spearmanr(group["score"], -group["level"]).statistic
            groups["withheld" if name == "brighten" else "trained"].append(0.0 if np.isnan(value) else value)
    for name, values in groups.items():
        if values:
            assert models["stage 2"]["scoring_srcc"][name] == pytest.approx(np.mean(values))


def _summary(stage_trained, teacher_trained, meets=False):
    models = {f"stage {k}": {"direction_accuracy": {"trained": v, "withheld": 0.3},
                             "scoring_srcc": {"trained": 0.5, "withheld": 0.4}}
              for k, v in enumerate(stage_trained, start=1)}
    models.update({name: {"direction_accuracy": {"trained": v, "withheld": 0.6},
                          "scoring_srcc": {"trained": 0.1, "withheld": 0.0}} for name, v in teacher_trained.items()})
    return {"withheld": ["brighten", "stutter"], "evaluation_pairs": {"trained": 100, "withheld": 90},
            "models": models, "target": "each stage above ...", "meets_target": meets,
            "stages": [{"stage": 1, "steps": 10, "pairs": "p.parquet", "relabel": None}],
            "data_seconds": 1.0, "evaluation_seconds": 1.0, "wall_seconds": 2.0, "results": "r.md", "export": "e"}


def test_the_demos_last_lines_read_the_run_in_words():
    from w2s_vqa.demo.run import format_summary

    text = format_summary(_summary([0.989, 0.993], {"fused": 0.757, "noise": 0.259}))
    lines = text.splitlines()
    assert "stretch target (each stage above ...): NOT met (expected on the tiny default: see the last lines)" in lines
    assert lines[-3] == ("reading: healthy: every stage ranks the trained kinds at 0.9 or better and above every "
                         "weak teacher (stage 1 0.989, stage 2 0.993; best teacher 0.757).")
    assert lines[-1].startswith("  Not expected: the stretch target on the withheld kinds.")
    # A stage near chance on the trained kinds, or not above the best teacher, reads as not healthy.
    for stages in ([0.51, 0.993], [0.95, 0.74]):
        reading = format_summary(_summary(stages, {"fused": 0.757})).splitlines()[-3]
        assert reading.startswith("reading: NOT healthy: stage ") and "metrics.jsonl" in reading
