"""`w2s-vqa report` on a real two-stage run and a real evaluation: the page's figures, gallery
pairs and scores equal the run's own files, every image it links exists and decodes, the run
is left as it was, missing parts are one sentence, ids are shown as text, and a 100k-pair
table is sampled, not drawn whole."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.report.conftest import read_page, tree_digest
from w2s_vqa import cli
from w2s_vqa.report import build_report, runs

# Figures travel through the page as repr(float) text: the same double back, up to the last bit
# at most (rel 1e-12 leaves room for nothing but formatting).
EXACT = dict(rel=1e-12, abs=0.0)


@pytest.fixture(scope="module")
def stages_report(stages_run, tmp_path_factory):
    before = tree_digest(stages_run)
    out = tmp_path_factory.mktemp("page") / "report"
    result = build_report(str(stages_run), str(out))
    return stages_run, result, before


def _images_exist_and_decode(index):
    page = read_page(index)
    sources = [e["attrs"]["src"] for e in page.find("img")]
    assert sources
    for src in sources:
        path = os.path.join(os.path.dirname(index), src)
        assert os.path.isfile(path), src
        with Image.open(path) as image:
            image.load()  # decodes every pixel: a truncated file raises here
            assert image.width > 0 and image.height > 0
    return sources


def test_stage_table_gallery_and_images_equal_the_run_files(stages_report):
    run_dir, result, _ = stages_report
    assert result["kind"] == "stages" and all(result["sections"][k] for k in ("stage_table", "curves", "gallery"))
    page = read_page(result["index"])
    saved = json.loads((run_dir / "results.json").read_text())

    # The stage table: every validation figure of every stage as results.json holds it.
    for stage in saved["stages"]:
        row = next(e for e in page.find("tr") if e["attrs"].get("data-stage") == str(stage["stage"]))
        cells = {}
        for element in page.elements[page.elements.index(row) + 1:]:
            if element["tag"] == "tr":
                break
            if element["tag"] == "td" and "data-key" in element["attrs"]:
                cells[element["attrs"]["data-key"]] = element["attrs"]["data-value"]
        assert int(cells["steps"]) == stage["steps"]
        shown = {k: v for k, v in cells.items() if k.startswith("val/")}
        assert shown, "no validation figure in the stage table"
        for key, text in shown.items():
            assert float(text) == pytest.approx(stage["val"][key], **EXACT), key

    # The gallery: each card's ids are a row of its table (new pairs by rule, or the stage's
    # training table), its student scores the stage's score table's, its teacher scores the teacher table's.
    teachers = pd.read_csv(run_dir.parent / "teachers.csv", dtype={"video_id": str})
    teacher_score = {(r.teacher, r.video_id): r.score for r in teachers.itertuples()}
    stage_1 = run_dir / "stage_1"
    new = pd.read_parquet(stage_1 / "relabel" / "new_pairs.parquet")
    scores = pd.read_csv(stage_1 / "relabel" / "scores.csv", dtype={"id": str}).set_index("id")["score"]
    config = json.loads((run_dir / "stages.json").read_text())["config"]
    tables = {1: pd.read_parquet(config["data"]["pairs"]), 2: pd.read_parquet(run_dir / "stage_2" / "pairs_train.parquet")}
    cards = [e for e in page.elements if e["tag"] == "li" and "data-first-id" in e["attrs"]]
    assert len(cards) == result["pairs_shown"] > 0
    rules_seen = set()
    for card in cards:
        a = card["attrs"]
        first, second, rule = a["data-first-id"], a["data-second-id"], a["data-rule"]
        rules_seen.add(rule)
        stage = int(a["data-stage"])
        table = tables[stage] if rule == "rest" else new[new["rule"] == rule]
        assert stage == 1 or rule == "rest"  # the last stage relabels nothing
        assert ((table["first_id"] == first) & (table["second_id"] == second)).any(), (rule, first, second)
        if stage == 1:
            assert float(a["data-student-first"]) == pytest.approx(scores[first], **EXACT)
            assert float(a["data-student-second"]) == pytest.approx(scores[second], **EXACT)
        if rule.startswith("gmad:"):
            teacher = rule.split(":")[1]
            assert a["data-teacher"] == teacher
            assert float(a["data-teacher-first"]) == pytest.approx(teacher_score[(teacher, first)], **EXACT)
            assert float(a["data-teacher-second"]) == pytest.approx(teacher_score[(teacher, second)], **EXACT)
    assert "misranked" in rules_seen or any(r.startswith("gmad:") for r in rules_seen)
    assert {r for r in new["rule"].unique()} <= rules_seen  # every rule of the new table has its group
    assert "rest" in rules_seen

    # Every linked image exists and decodes; a frame strip is as high as asked (72 px).
    sources = _images_exist_and_decode(result["index"])
    strips = [s for s in sources if s.startswith("frames/")]
    assert strips and all(Image.open(os.path.join(os.path.dirname(result["index"]), s)).height == 72 for s in strips)


def test_reading_a_run_changes_none_of_its_files(stages_report, tmp_path):
    run_dir, _, before = stages_report
    build_report(str(run_dir))  # the default place: WORKDIR/report
    assert (run_dir / "report" / "index.html").exists()
    assert tree_digest(run_dir, skip=("report",)) == before
    shutil.rmtree(run_dir / "report")


def test_a_stage_folder_reads_as_a_training_run(stages_run, tmp_path):
    result = build_report(str(stages_run / "stage_2"), str(tmp_path / "r"))
    assert result["kind"] == "train" and result["sections"]["curves"]
    page = read_page(result["index"])
    assert any(e["text"].startswith("Direction accuracy by pair origin") for e in page.find("h3"))  # its validation
    assert any(e["text"].startswith("No score table") for e in page.find("p"))


def test_eval_output_shows_its_sets_plots_and_the_papers_rows(eval_run, tmp_path):
    result = build_report(str(eval_run), str(tmp_path / "r"))
    saved = json.loads((eval_run / "results.json").read_text())
    assert result["kind"] == "eval" and result["sections"]["evaluation"]
    text = open(result["index"], encoding="utf-8").read()
    page = read_page(result["index"])
    for model, figures in saved["sets"]["konvid_1k"]["models"].items():
        row = next(e for e in page.find("tr") if e["text"].strip().startswith(model))
        assert f"{figures['srcc']:.3f}" in row["text"] and f"{figures['plcc']:.3f}" in row["text"]
    sources = _images_exist_and_decode(result["index"])
    copied = [s for s in sources if "konvid_1k" in s]
    assert len(copied) == 1
    with open(os.path.join(tmp_path / "r", copied[0]), "rb") as a, open(eval_run / "plots" / "konvid_1k.png", "rb") as b:
        assert a.read() == b.read()
    assert "No pairs to show" in text and "No training metrics" in text and "No score table" in text


def _handmade_stages(root, *, pairs: int, video_ids):
    """A stages workdir written by hand: stage 1's relabel outputs with `pairs` new pairs
    among `video_ids`, a score table, a teacher table, and nothing else (no checkpoints,
    no metrics, no eval, no store)."""
    rng = np.random.default_rng(1)
    relabel = root / "stage_1" / "relabel"
    relabel.mkdir(parents=True)
    ids = np.asarray(video_ids, dtype=object)
    first, second = rng.integers(0, len(ids), pairs), rng.integers(0, len(ids), pairs)
    rules = np.where(np.arange(pairs) % 2 == 0, "misranked", "gmad:sharp:student_attacks")
    pd.DataFrame({"first_id": ids[first], "second_id": ids[second], "label": rng.integers(0, 5, pairs).astype(np.int8),
                  "origin": "student:1", "stage": np.int32(2), "weight": np.float32(1), "rule": rules}).to_parquet(
        relabel / "new_pairs.parquet", index=False)
    pd.DataFrame({"id": ids, "score": rng.normal(50, 10, len(ids)), "stderr": 1.0}).to_csv(relabel / "scores.csv",
                                                                                          index=False)
    teachers = pd.DataFrame({"video_id": ids, "teacher": "sharp", "score": rng.normal(0, 1, len(ids))})
    teachers.to_csv(root / "teachers.csv", index=False)
    (root / "stages.json").write_text(json.dumps({"config": {"data": {"store": "", "pairs": ""},
                                                             "stages": {"teachers": str(root / "teachers.csv")}}}))
    (relabel / "report.json").write_text(json.dumps({"stage": 2, "pairs": pairs, "scored": len(ids),
                                                     "pool_videos": len(ids), "by_rule": {}}))


def test_an_id_with_markup_is_shown_as_text(tmp_path):
    evil = '<script>alert("x")</script>&amp;'
    _handmade_stages(tmp_path / "w", pairs=6, video_ids=[evil, "plain", "other"])
    result = build_report(str(tmp_path / "w"), str(tmp_path / "r"))
    text = open(result["index"], encoding="utf-8").read()
    assert '<script>alert("x")' not in text
    assert "&lt;script&gt;alert(" in text
    page = read_page(result["index"])
    # The only scripts are the page's own two; the id is in the text and in attributes, as it is.
    assert len(page.find("script")) == 2
    assert any(e["text"] == evil for e in page.find("code"))
    assert evil in {e["attrs"].get("data-first-id") for e in page.elements} | \
        {e["attrs"].get("data-second-id") for e in page.elements}


def test_missing_parts_are_one_sentence_and_a_big_table_is_sampled(tmp_path):
    _handmade_stages(tmp_path / "w", pairs=100_000, video_ids=[f"v{i}" for i in range(500)])
    result = build_report(str(tmp_path / "w"), str(tmp_path / "r"), per_group=5)
    assert result["pairs_shown"] == 10  # 5 per rule, 2 rules, no training table named
    page = read_page(result["index"])
    headings = [e["text"] for e in page.find("h4")]
    assert any("showing 5 of 50000" in h for h in headings)
    missing = [e["text"].strip() for e in page.elements if e["attrs"].get("class") == "missing"]
    assert any(m.startswith("No training metrics") for m in missing)
    assert any(m.startswith("No evaluation") for m in missing)
    assert not result["sections"]["curves"] and not result["sections"]["evaluation"]
    # No store: the cards say so, and no frame file is linked.
    assert result["frames_missing"] == 500 or result["frames_missing"] > 0
    assert not page.find("img")


def test_the_verb_prints_the_page_and_one_json_line(eval_run, tmp_path, capsys):
    assert cli.main(["report", str(eval_run), "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == f"report: {tmp_path / 'r' / 'index.html'}"
    assert json.loads(lines[-1])["index"] == str(tmp_path / "r" / "index.html")
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", str(tmp_path / "empty")]) == 2
    assert "no run found" in capsys.readouterr().err
    # A rerun replaces its own report; a folder of other pictures is refused, not emptied.
    assert cli.main(["report", str(eval_run), "--out", str(tmp_path / "r")]) == 0
    (tmp_path / "mine" / "img").mkdir(parents=True)
    (tmp_path / "mine" / "img" / "holiday.png").write_bytes(b"x")
    assert cli.main(["report", str(eval_run), "--out", str(tmp_path / "mine")]) == 2
    assert "give --out an empty or new folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "img" / "holiday.png").exists()


def test_a_score_table_gives_its_distribution_and_extremes(tmp_path):
    table = pd.DataFrame({"id": [f"v{i}" for i in range(20)], "score": np.linspace(10, 90, 20),
                          "stderr": 1.0, "low": np.linspace(8, 88, 20), "high": np.linspace(12, 92, 20)})
    table.to_csv(tmp_path / "scores.csv", index=False)
    result = build_report(str(tmp_path / "scores.csv"))
    assert result["kind"] == "scores" and result["index"] == str(tmp_path / "scores.report" / "index.html")
    page = read_page(result["index"])
    listed = [(e["attrs"]["data-id"], float(e["attrs"]["data-score"])) for e in page.having("data-id")]
    assert [i for i, _ in listed[:4]] == ["v0", "v1", "v2", "v3"]  # lowest first
    assert [i for i, _ in listed[4:]] == ["v19", "v18", "v17", "v16"]  # then highest first
    for video_id, score in listed:
        assert score == pytest.approx(table.set_index("id").loc[video_id, "score"], **EXACT)
    assert runs.read_run(str(tmp_path / "scores.csv")).store is None


def test_a_finetune_run_shows_its_splits_and_medians(tmp_path, eval_run):
    """finetune's on-disk layout (w2s_vqa.stages.finetune's docstring): finetune.json,
    results.json with the splits, split_NN/eval (here a copy of a real eval output)."""
    work = tmp_path / "ft"
    (work / "split_00").mkdir(parents=True)
    shutil.copytree(eval_run, work / "split_00" / "eval")
    (work / "finetune.json").write_text(json.dumps({"config": {"data": {"store": ""}}}))
    splits = [{"split": i, "train_videos": 40, "test_videos": 10, "train_pairs": 300, "steps": 20,
               "w2s": {"srcc": 0.5 + i / 10, "plcc": 0.55}, "finetuned": {"srcc": 0.7 + i / 20, "plcc": 0.72}}
              for i in range(3)]
    (work / "results.json").write_text(json.dumps({
        "set": "konvid_1k", "checkpoint": "/x", "step": 4, "videos_used": 50, "splits_done": 3, "splits_requested": 3,
        "splits": splits, "median": {"w2s": {"srcc": 0.6}, "finetuned": {"srcc": 0.75}, "gain": {"srcc": 0.15}}}))
    result = build_report(str(work), str(tmp_path / "r"))
    assert result["kind"] == "finetune" and result["sections"]["stage_table"] and result["sections"]["evaluation"]
    page = read_page(result["index"])
    for split in splits:
        row = next(e for e in page.find("tr") if e["attrs"].get("data-split") == str(split["split"]))
        start = page.elements.index(row)
        values = {e["attrs"]["data-key"]: float(e["attrs"]["data-value"])
                  for e in page.elements[start + 1:start + 12] if "data-key" in e["attrs"]}
        assert values["before/srcc"] == pytest.approx(split["w2s"]["srcc"], **EXACT)
        assert values["after/srcc"] == pytest.approx(split["finetuned"]["srcc"], **EXACT)
    _images_exist_and_decode(result["index"])
