"""`w2s-vqa eval`: two tiny labeled sets scored by a tiny student and read from a teacher
table; the tables, JSON and plots hold the figures scipy gives on the same predictions;
bad inputs fail with one clear error before any scoring."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from w2s_vqa import cli, video
from w2s_vqa.score import evaluate
from w2s_vqa.score import overall as overall_lib


def _clips(folder, count, seed=0):
    """`count` short clips of one scene with rising noise (v0 cleanest), 64x48, 2 s at 8 fps."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (16, 48, 64, 3)).astype(np.float64)
    for i in range(count):
        frames = np.clip(scene + rng.normal(0, 12 * i, scene.shape), 0, 255).astype(np.uint8)
        video.write_video(os.path.join(folder, f"v{i}.mp4"), frames, 8.0)


def _table(path, rows):
    pd.DataFrame(rows, columns=["file", "mos"]).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """A folder of 5 clips and a broken file, an anchor set and an export of a tiny random student."""
    from w2s_vqa import config as config_lib
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.store import prepare as prepare_lib

    root = tmp_path_factory.mktemp("labeled")
    videos = root / "videos"
    _clips(str(videos), 5)
    anchor_clips = root / "anchor_clips"
    _clips(str(anchor_clips), 3, seed=1)
    config = config_lib.defaults()
    config.data.distortions = ""
    prepare_lib.prepare(config, str(anchor_clips), str(root / "store"), workers=0, progress=False)
    AnchorSet.from_store(str(root / "store"), ["v0", "v1", "v2"], [70.0, 50.0, 30.0]).save(str(root / "anchors"))
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    model = student_lib.create(model_config.preset("tiny"), seed=3)
    hf.save_student(model, str(root / "export"), tokenizer_dir=model_config.TINY_TOKENIZER)
    return root


def test_eval_writes_tables_json_and_plots_with_scipys_figures(labeled, tmp_path, capsys):
    root = labeled
    konvid = _table(tmp_path / "konvid.csv", [("v0.mp4", 4.5), ("v1.mp4", 3.9), ("v2.mp4", 3.1), ("v3.mp4", 2.0),
                                              ("broken.mp4", 1.0)])
    kvq = _table(tmp_path / "kvq.csv", [("v4.mp4", 1.2), ("v2.mp4", 2.8), ("v0.mp4", 4.1)])
    # A user's wide teacher table keyed by file name without extension; v3 unscored by dover.
    pd.DataFrame({"video_id": ["v0", "v1", "v2", "v3", "v4"], "dover": [0.9, 0.7, 0.75, np.nan, 0.1],
                  "qalign": [4.1, 3.0, 3.2, 2.2, 1.5]}).to_csv(tmp_path / "teachers.csv", index=False)
    out = tmp_path / "eval"
    code = cli.main(["eval", "--hf", str(root / "export"), "--anchors", str(root / "anchors"),
                     "--eval-set", "konvid_1k", str(root / "videos"), konvid,
                     "--eval-set", "kvq", str(root / "videos"), kvq,
                     "--teachers", str(tmp_path / "teachers.csv"), "--out", str(out), "--bootstrap", "50"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    results = json.loads((out / "results.json").read_text())
    assert summary["results"] == str(out / "results.json")

    # The broken file is skipped and reported; the others are scored.
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped[["set", "file"]].values.tolist() == [["konvid_1k", "broken.mp4"]]
    assert results["skipped"] == {"konvid_1k": 1, "kvq": 0}
    student = results["sets"]["konvid_1k"]["models"]["student"]
    # The student scored 4 of 5, but dover lacks v3: every model is compared on the 3 all scored.
    assert (student["videos"], student["scored"], student["missing"]) == (3, 4, 1)
    assert results["sets"]["konvid_1k"]["compared_on"] == 3
    assert results["sets"]["konvid_1k"]["lacking"] == {"dover": {"count": 1, "first": ["v3.mp4"]}}
    assert results["sets"]["kvq"]["lacking"] == {} and results["sets"]["kvq"]["compared_on"] == 3
    assert summary["compared_on"] == {"konvid_1k": 3, "kvq": 3} and summary["subsets"] is False
    assert summary["sets"]["konvid_1k"]["student"]["scored"] == 4
    # Said once each on stderr, in our words, naming the set and the models: what dover lacks, and the
    # small-set note shared by the three models of each set.
    notes = [line for line in captured.err.splitlines() if line.startswith("w2s-vqa eval: note: ")]
    assert notes.count("w2s-vqa eval: note: set konvid_1k: dover lacks 1 (v3.mp4) of the videos another model "
                       "scored; every model is evaluated on the 3 videos all of them scored") == 1
    small = [n for n in notes if n.startswith("w2s-vqa eval: note: set kvq (student, dover, qalign): 3 videos, "
                                              "fewer than 20")]
    assert len(small) == 1, captured.err
    assert "Notes:" not in captured.out  # said on stderr, not twice

    # Every figure is scipy's on the predictions written beside it (the rows compared).
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions.loc[~predictions["compared"], "file"]) == {"v3.mp4"}
    for (set_name, model), rows in predictions[predictions["compared"]].groupby(["set", "model"]):
        figures = results["sets"][set_name]["models"][model]
        x, y = rows["prediction"].to_numpy(), rows["mos"].to_numpy()
        assert figures["videos"] == len(rows)
        assert figures["srcc"] == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
        assert figures["plcc"] == pytest.approx(scipy.stats.pearsonr(x, y).statistic)
        assert figures["krcc"] == pytest.approx(scipy.stats.kendalltau(x, y).statistic)
        # At most 5 videos a set: below metrics.MIN_VIDEOS_BOOTSTRAP, so no interval, and the notes say why.
        assert np.isnan(figures["srcc_ci"]).all() and np.isnan(figures["plcc_fitted"])
        assert any(note.startswith(f"{len(rows)} videos, fewer than 20") for note in figures["notes"])
    # The teachers' predictions are their table's scores, matched by file stem (dover lacks v3).
    dover = predictions[(predictions["model"] == "dover") & (predictions["set"] == "konvid_1k")]
    assert dict(zip(dover["file"], dover["prediction"])) == {"v0.mp4": 0.9, "v1.mp4": 0.7, "v2.mp4": 0.75}
    assert results["sets"]["konvid_1k"]["models"]["dover"]["missing"] == 2
    # The student's predictions are its scores against the anchors (the anchors' MOS scale).
    assert set(predictions.loc[predictions["model"] == "student", "file"]) == {"v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4",
                                                                              "v4.mp4"}

    # konvid_1k is in-domain and kvq out of distribution: one set each, so each overall is that set's.
    for model in ("student", "dover", "qalign"):
        overall = results["overall"][model]
        assert overall["in_domain"]["sets"] == ["konvid_1k"]
        assert overall["in_domain"]["srcc"] == pytest.approx(results["sets"]["konvid_1k"]["models"][model]["srcc"])
        assert overall["out_of_distribution"]["plcc"] == pytest.approx(results["sets"]["kvq"]["models"][model]["plcc"])

    table = (out / "results.md").read_text()
    assert "| konvid_1k | student | 3 of 5 (4 scored) |" in table and "| kvq | qalign | 3 of 3 |" in table
    assert "- set konvid_1k: dover lacks 1 (v3.mp4) of the videos another model scored; every model is " \
           "evaluated on the 3 videos all of them scored" in table
    from PIL import Image

    for name in ("konvid_1k", "kvq"):
        with Image.open(out / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 300  # one panel per model: student, dover, qalign


def test_the_weighted_overall_and_teacher_only_runs(tmp_path):
    # Two in-domain sets of 4 and 2 videos; the folders are never read without a student.
    a = _table(tmp_path / "a.csv", [("x1.mp4", 1.0), ("x2.mp4", 2.0), ("x3.mp4", 3.0), ("x4.mp4", 4.0)])
    # 3 videos: the fewest a correlation is reported on (metrics.MIN_VIDEOS_CORRELATION).
    b = _table(tmp_path / "b.csv", [("sub/y1.mp4", 1.0), ("sub/y2.mp4", 2.0), ("sub/y3.mp4", 3.0)])
    scores = pd.DataFrame({"video_id": ["x1", "x2", "x3", "x4", "y1", "y2", "y3"], "teacher": "t",
                           "score": [1.0, 3.0, 2.0, 4.0, 2.0, 1.0, 0.5]})
    sets = [evaluate.EvalSet("live_vqc", "nowhere", a), evaluate.EvalSet("konvid_1k", "nowhere", b)]
    out = evaluate.run_eval(sets, str(tmp_path / "out"), teacher_scores=scores, bootstrap=0)
    figures = out["results"]["sets"]
    assert figures["live_vqc"]["models"]["t"]["srcc"] == pytest.approx(0.8)
    assert figures["konvid_1k"]["models"]["t"]["srcc"] == pytest.approx(-1.0)
    assert out["results"]["overall"]["t"]["in_domain"]["srcc"] == pytest.approx((0.8 * 4 - 1.0 * 3) / 7)
    assert out["results"]["overall"]["t"]["in_domain"]["videos"] == 7
    assert "out_of_distribution" not in out["results"]["overall"]["t"]
    assert os.path.exists(out["paths"]["plots"]["live_vqc"])


def test_a_mos_table_naming_missing_files_is_one_clear_error_before_any_scoring(tmp_path, capsys):
    folder = tmp_path / "videos"
    _clips(str(folder), 1)
    table = _table(tmp_path / "set.csv", [("v0.mp4", 3.0), ("gone.mp4", 2.0), ("also/gone.mkv", 1.0)])
    calls = []
    with pytest.raises(evaluate.EvalError, match=r"video the folder .* lacks \(2\): row 2: 'gone.mp4'; "
                                                 r"row 3: 'also/gone.mkv'"):
        evaluate.run_eval([evaluate.EvalSet("s", str(folder), table)], str(tmp_path / "out"),
                          score_set=lambda *a: calls.append(a))
    assert not calls
    # Through the verb: one line, exit status 2, before the student (here no directory at all) is loaded.
    code = cli.main(["eval", "--hf", str(tmp_path / "no-such-export"), "--anchors", str(tmp_path / "no-anchors"),
                     "--eval-set", "s", str(folder), table, "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    # The first line stands alone (tables.ProblemReport): the table, the count and each kind.
    first = error.splitlines()[0]
    assert first.startswith("w2s-vqa eval: error: ") and "lacks (2), e.g. row 2: 'gone.mp4'" in first
    # Every kind of problem of the table in one error, not one per run: a MOS that is not a
    # number, a video named twice and a video the folder lacks.
    bad = _table(tmp_path / "bad.csv", [("v0.mp4", "n/a"), ("v0.mp4", 2.0), ("gone.mp4", 1.0)])
    with pytest.raises(evaluate.EvalError) as caught:
        evaluate.read_eval_set(evaluate.EvalSet("s", str(folder), bad))
    first = str(caught.value).splitlines()[0]
    assert "3 problem(s)" in first and "not a finite number (1), e.g. row 1: 'n/a'" in first
    assert "video named twice (1), e.g. 'v0.mp4' in rows 1 and 2" in first
    assert "lacks (1), e.g. row 3: 'gone.mp4'" in first
    # Without the folder check (eval of score tables alone) the table's own problems still come at once.
    with pytest.raises(ValueError, match="(?s)not a finite number.*row 1.*named twice"):
        evaluate.read_eval_set(evaluate.EvalSet("s", str(folder), bad), check_files=False)
    with pytest.raises(evaluate.EvalError, match="nothing to evaluate"):
        evaluate.run_eval([evaluate.EvalSet("s", str(folder), table)], str(tmp_path / "out"))


def test_the_set_names_of_the_paper_are_its_eval_lists():
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "eval_sets")
    if not os.path.isdir(shared):
        pytest.skip("../shared/eval_sets is not beside this checkout")
    for name, count in {**overall_lib.IN_DOMAIN_SETS, **overall_lib.OUT_OF_DISTRIBUTION_SETS}.items():
        assert len(pd.read_csv(os.path.join(shared, f"{name}.csv"))) == count, name


def test_a_teacher_table_naming_none_of_a_sets_videos_is_warned_and_counted(tmp_path, capsys):
    """A set the teacher table does not name is a warning naming both, with a "0 of N" row;
    with no student and no set matched, one error naming the table."""
    a = _table(tmp_path / "a.csv", [("x1.mp4", 1.0), ("x2.mp4", 2.0), ("x3.mp4", 3.0)])
    b = _table(tmp_path / "b.csv", [("y1.mp4", 1.0), ("y2.mp4", 2.0)])
    teachers = tmp_path / "dover.csv"
    pd.DataFrame({"video_id": ["x1", "x2", "x3"], "dover": [0.1, 0.3, 0.2]}).to_csv(teachers, index=False)
    out = tmp_path / "out"
    code = cli.main(["eval", "--eval-set", "konvid_1k", "nowhere", a, "--eval-set", "kvq", "nowhere", b,
                     "--teachers", str(teachers), "--bootstrap", "0", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("w2s-vqa eval: warning: ")]
    assert len(warned) == 1, captured.err
    assert warned[0].startswith(f"w2s-vqa eval: warning: teacher table {teachers} names none of set kvq's 2 videos; ")
    assert "'y1'" in warned[0] and "'x1'" in warned[0]  # how a video is matched, and the table's ids
    results = json.loads((out / "results.json").read_text())
    assert results["sets"]["konvid_1k"]["teacher_videos"] == {"dover": 3}
    assert results["sets"]["kvq"]["teacher_videos"] == {"dover": 0}
    assert "| kvq | dover | 0 of 2 | no video of the set in the teacher table |" in captured.out
    assert results["sets"]["konvid_1k"]["models"]["dover"]["srcc"] == pytest.approx(0.5)

    # No set matched and no student: nothing to report, one error naming the table (exit 2 through the verb).
    with pytest.raises(evaluate.EvalError, match=rf"{teachers}: the teacher table names none of the videos of kvq "
                                                 r"\(2 videos\), and there is no student"):
        evaluate.run_eval([evaluate.EvalSet("kvq", "nowhere", b)], str(tmp_path / "none"),
                          teacher_scores=pd.DataFrame({"video_id": ["x1"], "teacher": "dover", "score": [0.1]}),
                          teacher_source=str(teachers))
    code = cli.main(["eval", "--eval-set", "kvq", "nowhere", b, "--teachers", str(teachers), "--out",
                     str(tmp_path / "none")])
    assert code == 2 and f"w2s-vqa eval: error: {teachers}: the teacher table names none" in capsys.readouterr().err
    assert not (tmp_path / "none" / "results.json").exists()


def test_models_are_compared_on_the_videos_all_of_them_scored_unless_subsets_are_allowed(tmp_path, capsys):
    """A teacher table covering 13 of 19 videos: by default both teachers are evaluated on those
    13 (scipy's figures on them), the table says n per model, and one note names the count and
    the first missing ids; --allow-subsets evaluates each on its own videos and says so."""
    rng = np.random.default_rng(5)
    files = [f"clip{i:02d}.mp4" for i in range(19)]
    mos = rng.uniform(1, 5, 19)
    table = _table(tmp_path / "set.csv", list(zip(files, mos)))
    full = mos + rng.normal(0, 0.8, 19)
    partial = mos + rng.normal(0, 0.5, 19)
    covered = [i for i in range(19) if i not in (1, 4, 6, 9, 12, 17)]  # 13 of 19
    pd.concat([pd.DataFrame({"video_id": [f"clip{i:02d}" for i in range(19)], "teacher": "full", "score": full}),
               pd.DataFrame({"video_id": [f"clip{i:02d}" for i in covered], "teacher": "partial",
                             "score": partial[covered]})]).to_csv(tmp_path / "teachers.csv", index=False)
    argv = ["eval", "--eval-set", "kvq", "nowhere", table, "--teachers", str(tmp_path / "teachers.csv"),
            "--bootstrap", "0"]

    assert cli.main(argv + ["--out", str(tmp_path / "common")]) == 0
    captured = capsys.readouterr()
    results = json.loads((tmp_path / "common" / "results.json").read_text())
    entry = results["sets"]["kvq"]
    assert entry["compared_on"] == 13
    assert entry["lacking"] == {"partial": {"count": 6, "first": ["clip01.mp4", "clip04.mp4", "clip06.mp4",
                                                                  "clip09.mp4", "clip12.mp4"]}}
    for model, scores in (("full", full), ("partial", partial)):
        figures = entry["models"][model]
        assert figures["videos"] == 13
        # The same 13 videos for both: scipy's SRCC on them (a tolerance: float sums differ across CPUs).
        assert figures["srcc"] == pytest.approx(scipy.stats.spearmanr(scores[covered], mos[covered]).statistic)
        assert figures["plcc"] == pytest.approx(scipy.stats.pearsonr(scores[covered], mos[covered]).statistic)
    assert (entry["models"]["full"]["scored"], entry["models"]["partial"]["scored"]) == (19, 13)
    assert "| kvq | full | 13 of 19 (19 scored) |" in captured.out and "| kvq | partial | 13 of 19 |" in captured.out
    lacking = [line for line in captured.err.splitlines() if "lacks" in line]
    assert lacking == ["w2s-vqa eval: note: set kvq: partial lacks 6 (clip01.mp4, clip04.mp4, clip06.mp4, "
                       "clip09.mp4, clip12.mp4 and 1 more) of the videos another model scored; every model is "
                       "evaluated on the 13 videos all of them scored"]
    # The out-of-distribution overall rests on the 13 compared videos.
    assert results["overall"]["full"]["out_of_distribution"]["videos"] == 13

    assert cli.main(argv + ["--allow-subsets", "--out", str(tmp_path / "own")]) == 0
    captured = capsys.readouterr()
    entry = json.loads((tmp_path / "own" / "results.json").read_text())["sets"]["kvq"]
    assert (entry["models"]["full"]["videos"], entry["models"]["partial"]["videos"]) == (19, 13)
    assert entry["models"]["full"]["srcc"] == pytest.approx(scipy.stats.spearmanr(full, mos).statistic)
    assert json.loads(captured.out.strip().splitlines()[-1])["subsets"] is True
    assert "each model is evaluated on its own videos (subsets allowed), so the figures of models with " \
           "different counts are not comparable" in captured.err
    assert "| kvq | full | 19 of 19 |" in captured.out
