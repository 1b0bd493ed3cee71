"""MOS fine-tuning (`w2s-vqa finetune`): splits by video never share a video; MOS pairs are
labelled by the five-way rule (re-implemented here from docs/method.md) at its boundaries; the
median over splits is what is reported; a tiny end-to-end run starts every split from a
weak-to-strong checkpoint trained here, resumes, and refuses bad inputs naming the file or row."""

import json
import os

import jax
import numpy as np
import pandas as pd
import pytest

from w2s_vqa import cli, video
from w2s_vqa.config import load_config
from w2s_vqa.labels import mos_pairs as mos_pairs_lib
from w2s_vqa.labels import pair_table
from w2s_vqa.prompt import LEVEL_INDEX
from w2s_vqa import config as config_lib
from w2s_vqa import finetune as finetune_lib

# docs/method.md "Labels", as written: superior if d > 2 s_d; better if s_d < d <= 2 s_d; similar
# if -s_d < d <= s_d; worse if -2 s_d < d <= -s_d; inferior if d <= -2 s_d.
def _rule(d, s_d):
    if d > 2 * s_d:
        return LEVEL_INDEX["superior"]
    if d > s_d:
        return LEVEL_INDEX["better"]
    if d > -s_d:
        return LEVEL_INDEX["similar"]
    if d > -2 * s_d:
        return LEVEL_INDEX["worse"]
    return LEVEL_INDEX["inferior"]


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("n", [2, 3, 5, 10, 37, 200])
@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.9])
def test_splits_never_share_a_video(n, fraction):
    ids = [f"clip{i}" for i in range(n)]
    for seed in (0, 1, 7):
        splits = mos_pairs_lib.split_by_video(ids, train_fraction=fraction, splits=4, seed=seed)
        assert len(splits) == 4
        for train, test in splits:
            assert not set(train) & set(test)
            assert sorted(train + test) == sorted(ids) and len(set(train)) == len(train)
            assert len(train) == min(max(round(fraction * n), 1), n - 1)
        # Split s is the same draw whatever the number of splits and the ids' order.
        more = mos_pairs_lib.split_by_video(ids[::-1], train_fraction=fraction, splits=6, seed=seed)
        assert more[:4] == splits
    if n >= 10:  # different splits draw different videos
        assert len({tuple(train) for train, _ in splits}) == 4


def test_split_inputs_are_checked():
    with pytest.raises(ValueError, match=r"listed twice: \['a'\]"):
        mos_pairs_lib.split_by_video(["a", "b", "a"], train_fraction=0.8, splits=1, seed=0)
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="train_fraction"):
            mos_pairs_lib.split_by_video(["a", "b"], train_fraction=fraction, splits=1, seed=0)
    with pytest.raises(ValueError, match="splits"):
        mos_pairs_lib.split_by_video(["a", "b"], train_fraction=0.5, splits=0, seed=0)
    with pytest.raises(ValueError, match="1 video"):
        mos_pairs_lib.split_by_video(["a"], train_fraction=0.5, splits=1, seed=0)


# ----------------------------------------------------------------------------- MOS pairs
def _all_pairs(table, **kwargs):
    """Every pair of the table, in the orders several draws give."""
    tables = [mos_pairs_lib.mos_pairs(table, pairs_per_video=len(table), rng=np.random.default_rng(seed), **kwargs)
              for seed in range(8)]
    return pd.concat(tables, ignore_index=True)


def test_labels_at_the_rules_boundaries_from_the_sets_standard_deviations():
    # s_d = sqrt(3^2 + 4^2) = 5 between a and b, c and d: differences of exactly 5 and 10 sit
    # on the rule's boundaries; e is 10.5 above a.
    table = pd.DataFrame({"id": list("abcde"), "mos": [50.0, 55.0, 60.0, 70.0, 60.5],
                          "mos_std": [3.0, 4.0, 4.0, 3.0, 4.0]})
    pairs = _all_pairs(table, mos_std="mos_std", std_fraction=0.05)
    mos = dict(zip(table["id"], table["mos"]))
    std = dict(zip(table["id"], table["mos_std"]))
    seen = set()
    for first, second, label, d, s_d in pairs[["first_id", "second_id", "label", "d", "s_d"]].itertuples(index=False):
        want_d, want_s = mos[second] - mos[first], float(np.hypot(std[first], std[second]))
        assert d == want_d and s_d == pytest.approx(want_s, rel=1e-15)
        assert label == _rule(want_d, want_s), (first, second)
        if want_s == 5.0:
            seen.add(want_d)
    assert {5.0, -5.0, 10.0, -10.0} <= seen  # each boundary met, both orders
    # At the boundaries as written: d = s_d is similar, -s_d worse, 2 s_d better, -2 s_d inferior.
    label_of = dict(zip(zip(pairs["first_id"], pairs["second_id"]), pairs["label"]))
    expected = {("a", "b"): "similar", ("b", "a"): "worse", ("a", "c"): "better", ("c", "a"): "inferior",
                ("a", "e"): "superior", ("e", "a"): "inferior"}
    assert {k: label_of[k] for k in expected} == {k: LEVEL_INDEX[v] for k, v in expected.items()}
    assert set(pairs["origin"]) == {"mos"}


def test_labels_without_standard_deviations_use_the_documented_constant():
    # s = 0.05 x (100 - 0) = 5 for every video, s_d = 5 sqrt(2) = 7.071...: 7.07 and 14.14 lie
    # just inside "similar" and "better", 7.08 and 14.15 just outside.
    table = pd.DataFrame({"id": ["lo", "s_in", "s_out", "b_in", "b_out", "hi"],
                          "mos": [0.0, 7.07, 7.08, 14.14, 14.15, 100.0]})
    pairs = _all_pairs(table, std_fraction=0.05)
    s_d = 5.0 * np.sqrt(2.0)
    np.testing.assert_allclose(pairs["s_d"], s_d, rtol=1e-15)
    mos = dict(zip(table["id"], table["mos"]))
    for first, second, label in pairs[["first_id", "second_id", "label"]].itertuples(index=False):
        assert label == _rule(mos[second] - mos[first], s_d), (first, second)
    label_of = dict(zip(zip(pairs["first_id"], pairs["second_id"]), pairs["label"]))
    expected = {("lo", "s_in"): "similar", ("lo", "s_out"): "better", ("lo", "b_in"): "better",
                ("lo", "b_out"): "superior", ("s_in", "lo"): "similar", ("s_out", "lo"): "worse",
                ("b_in", "lo"): "worse", ("b_out", "lo"): "inferior"}
    assert {k: label_of[k] for k in expected} == {k: LEVEL_INDEX[v] for k, v in expected.items()}
    assert "0.05 x MOS range 100" in mos_pairs_lib.mos_pairs(
        table, pairs_per_video=1, rng=np.random.default_rng(0), std_fraction=0.05).attrs["spread"]


def test_mos_pairs_are_distinct_pairs_of_distinct_videos_as_many_as_asked():
    n = 40
    table = pd.DataFrame({"id": [f"v{i}" for i in range(n)], "mos": np.random.default_rng(0).uniform(1, 5, n)})
    pairs = mos_pairs_lib.mos_pairs(table, pairs_per_video=2.5, rng=np.random.default_rng(3), std_fraction=0.05)
    assert len(pairs) == 100
    assert (pairs["first_id"] != pairs["second_id"]).all()
    unordered = {frozenset(p) for p in zip(pairs["first_id"], pairs["second_id"])}
    assert len(unordered) == len(pairs)
    pair_table.validate_pair_table(pairs, known_ids=set(table["id"]))
    # Fewer distinct pairs than asked: all of them.
    small = mos_pairs_lib.mos_pairs(table.head(4), pairs_per_video=10, rng=np.random.default_rng(0),
                                    std_fraction=0.05)
    assert len(small) == 6


def test_mos_pair_inputs_are_checked_naming_the_videos():
    good = pd.DataFrame({"id": ["a", "b", "c"], "mos": [1.0, 2.0, 3.0], "mos_std": [0.1, -0.2, "x"]})
    args = dict(pairs_per_video=1, rng=np.random.default_rng(0), std_fraction=0.05)
    with pytest.raises(ValueError, match=r"2 video\(s\) have a mos_std that is not a number >= 0: 'b' \(-0.2\), 'c'"):
        mos_pairs_lib.mos_pairs(good, mos_std="mos_std", **args)
    with pytest.raises(ValueError, match="no column 'sd'"):
        mos_pairs_lib.mos_pairs(good, mos_std="sd", **args)
    with pytest.raises(ValueError, match=r"listed twice.*'a'"):
        mos_pairs_lib.mos_pairs(good.assign(id=["a", "a", "c"]), **args)
    with pytest.raises(ValueError, match=r"not a finite number: \['b'\]"):
        mos_pairs_lib.mos_pairs(good.assign(mos=[1.0, np.nan, 3.0]), **args)
    with pytest.raises(ValueError, match="at least 2 videos"):
        mos_pairs_lib.mos_pairs(good.head(1), **args)
    with pytest.raises(ValueError, match="mos_std_fraction"):
        mos_pairs_lib.mos_pairs(good, **{**args, "std_fraction": -1.0})


def test_a_sets_standard_deviation_column_is_read_row_by_row(tmp_path):
    (tmp_path / "videos" / "sub").mkdir(parents=True)
    for name in ("b.mp4", "sub/a.mp4"):
        (tmp_path / "videos" / name).write_bytes(b"")
    pd.DataFrame({"file": ["sub/a.mp4", "b.mp4"], "mos": [2.5, 4.0], "sd": [0.7, 0.25]}).to_csv(
        tmp_path / "set.csv", index=False)
    table = finetune_lib.read_set(str(tmp_path / "videos"), str(tmp_path / "set.csv"), "kvq")
    assert table[["id", "mos", "sd", "row"]].values.tolist() == [["sub/a.mp4", 2.5, 0.7, 1], ["b.mp4", 4.0, 0.25, 2]]
    assert table["path"].tolist() == [str(tmp_path / "videos" / "sub" / "a.mp4"), str(tmp_path / "videos" / "b.mp4")]
    assert mos_pairs_lib.std_column(list(table.columns)) == "sd"
    # Headers in capitals, as the sets' own files write them (KoNViD-1k: MOS, SD), are the same columns.
    (tmp_path / "caps.csv").write_text("File,MOS,SD\nsub/a.mp4,2.5,0.7\nb.mp4,4.0,0.25\n")
    table = finetune_lib.read_set(str(tmp_path / "videos"), str(tmp_path / "caps.csv"), "kvq")
    assert table[["id", "mos", "sd"]].values.tolist() == [["sub/a.mp4", 2.5, 0.7], ["b.mp4", 4.0, 0.25]]


# ----------------------------------------------------------------------------- the median
def test_the_median_over_splits_is_numpys_median_not_the_mean():
    splits = [{"w2s": {k: v for k in finetune_lib.FIGURES}, "finetuned": {k: v + g for k in finetune_lib.FIGURES}}
              for v, g in ((0.1, 0.5), (0.2, 0.0), (0.9, 0.1), (0.3, 0.2))]
    splits[1]["finetuned"]["plcc"] = float("nan")  # a split where PLCC is undefined is left out of its median
    median = finetune_lib.median_figures(splits)
    assert median["w2s"]["srcc"] == pytest.approx(np.median([0.1, 0.2, 0.9, 0.3])) == pytest.approx(0.25)
    assert median["finetuned"]["srcc"] == pytest.approx(np.median([0.6, 0.2, 1.0, 0.5]))
    assert median["finetuned"]["plcc"] == pytest.approx(np.median([0.6, 1.0, 0.5]))
    assert median["gain"]["srcc"] == pytest.approx(np.median([0.5, 0.0, 0.1, 0.2]))
    assert np.isnan(finetune_lib.median_figures([])["w2s"]["srcc"])


def test_figures_on_too_few_test_videos_are_null_with_a_note_naming_the_count():
    # Over 2 videos any correlation is +1 or -1: split 0's figures are left out (null), not
    # reported as a perfect before and a perfect-opposite after; split 1 has 4 test videos.
    from w2s_vqa.score import metrics

    def split(index, n, before, after):
        figures = lambda v: {"videos": n, **{k: v for k in finetune_lib.FIGURES}}
        return {"split": index, "train_videos": 6, "test_videos": n, "train_pairs": 12, "steps": 2,
                "w2s": figures(before), "finetuned": figures(after)}

    x = np.array([1.0, 2.0])
    m = metrics.mos_metrics(x, np.array([3.0, 1.0]), bootstrap=0)
    assert m["videos"] == 2 and all(np.isnan(m[k]) for k in ("srcc", "plcc", "krcc"))
    assert m["notes"][0].startswith("2 videos, fewer than 3: SRCC, PLCC and KRCC are left out (NaN)")
    per_split = [split(0, 2, None, None), split(1, 4, 0.4, 0.8)]
    median = finetune_lib.median_figures(per_split)
    assert median["finetuned"]["srcc"] == pytest.approx(0.8) and median["gain"]["srcc"] == pytest.approx(0.4)
    notes = finetune_lib.results.small_split_notes(per_split)
    assert notes[0].startswith("split 0: 2 test videos scored, fewer than 3: SRCC, PLCC, KRCC and PLCC (logistic) "
                               "are left out (null)")
    assert notes[1].startswith("split 1: 4 test videos scored, fewer than 20: PLCC (logistic) is left out")
    results = {"set": "kvq", "checkpoint": "w2s", "step": 2, "splits_done": 2, "splits_requested": 2, "videos": 8,
               "videos_used": 8, "splits": per_split, "median": median, "notes": notes}
    md = finetune_lib.markdown(results)
    assert "| 0 | 6 | 2 | 12 | 2 | - | - | - | - |" in md and "- split 0: 2 test videos scored" in md
    assert finetune_lib.results.finite_or_none(float("nan")) is None


# ----------------------------------------------------------------------------- end to end
N_VIDEOS = 12
ONE_DEVICE = ["mesh.shape=(1,1,1)", "mesh.num_devices=1", "data.batch_size=4", "train.log_every=1",
              "train.eval_every=0", "train.async_checkpoint=False"]


def _labeled_set(root):
    """N_VIDEOS clips of one scene with rising noise, MOS falling with it, and their table."""
    folder = root / "videos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (16, 48, 64, 3)).astype(np.float64)
    for i in range(N_VIDEOS):
        frames = np.clip(scene + rng.normal(0, 6 * i, scene.shape), 0, 255).astype(np.uint8)
        video.write_video(str(folder / f"v{i:02d}.mp4"), frames, 8.0)
    table = pd.DataFrame({"file": [f"v{i:02d}.mp4" for i in range(N_VIDEOS)],
                          "mos": [90.0 - 7 * i for i in range(N_VIDEOS)]})
    table.to_csv(root / "set.csv", index=False)
    return folder, root / "set.csv"


def _finetune_args(root, workdir, *extra):
    return ["finetune", "--checkpoint", str(root / "w2s"), "--videos", str(root / "videos"), "--mos",
            str(root / "set.csv"), "--name", "konvid_1k", "--workdir", str(workdir), "--splits", "2", "--anchors",
            "3", "--bootstrap", "20", "--set", "finetune.num_steps=2", "--set", "finetune.train_fraction=0.7",
            *[a for item in ONE_DEVICE for a in ("--set", item)], *extra]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """XLA's persistent compilation cache, for this module only: each split's Trainer and
    Scorer builds a new jit of the same program as the weak-to-strong run's and the first
    split's, so the later ones load it rather than compile it again (test time only)."""
    from jax.experimental.compilation_cache import compilation_cache

    keys = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache")),
            "jax_persistent_cache_min_compile_time_secs": 0.0}
    before = {key: getattr(jax.config, key) for key in keys}
    for key, value in keys.items():
        jax.config.update(key, value)
    compilation_cache.reset_cache()
    yield
    for key, value in before.items():
        jax.config.update(key, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, compile_cache):
    """A weak-to-strong checkpoint trained here for 2 steps (seed 5: its parameters differ from
    a fresh seed-0 student), then `w2s-vqa finetune` on 12 clips, 2 splits of 2 steps each."""
    from w2s_vqa.store.prepare import prepare
    from w2s_vqa.train import loop

    root = tmp_path_factory.mktemp("finetune")
    folder, table_path = _labeled_set(root)
    prepare(load_config(None, ["data.distortions=''"]), str(folder), str(root / "w2s_store"), workers=0,
            progress=False)
    table = pd.read_csv(table_path)
    pairs = mos_pairs_lib.mos_pairs(pd.DataFrame({"id": table["file"].str[:-4], "mos": table["mos"]}),
                                    pairs_per_video=2, rng=np.random.default_rng(0), std_fraction=0.05)
    pair_table.write_pairs(pairs, root / "w2s_pairs.parquet")
    config = load_config(None, [f"data.store='{root / 'w2s_store'}'", f"data.pairs='{root / 'w2s_pairs.parquet'}'",
                                "train.num_steps=2", "seed=5", *ONE_DEVICE])
    loop.Trainer(config, str(root / "w2s")).run()
    return root


@pytest.mark.slow
def test_finetune_end_to_end(finetuned, tmp_path, capsys):
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.models.config import preset
    from w2s_vqa.train.checkpoint import load_checkpoint_student

    root = finetuned
    workdir = tmp_path / "ft"
    assert cli.main(_finetune_args(root, workdir)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((workdir / "results.json").read_text())
    assert summary["results"] == str(workdir / "results.json") and summary["splits"] == 2 and summary["step"] == 2

    # The reported figures are numpy's median of the per-split figures written beside them.
    assert [s["split"] for s in results["splits"]] == [0, 1]
    for model in ("w2s", "finetuned"):
        for figure in ("srcc", "plcc", "krcc"):
            assert results["median"][model][figure] == np.median([s[model][figure] for s in results["splits"]])
    assert summary["srcc"] == results["median"]["finetuned"]["srcc"]
    assert summary["w2s_plcc"] == results["median"]["w2s"]["plcc"]
    assert "| fine-tuned (after) |" in (workdir / "results.md").read_text()
    # 4 test videos a split: the fitted PLCC (20 needed) is null, and each split says so with its count.
    assert all(s[model]["plcc_fitted"] is None for s in results["splits"] for model in ("w2s", "finetuned"))
    assert summary["notes"] == results["notes"] and [n[:34] for n in results["notes"]] == [
        "split 0: 4 test videos scored, few", "split 1: 4 test videos scored, few"]
    assert "- split 1: 4 test videos scored, fewer than 20" in (workdir / "results.md").read_text()

    everything = {f"v{i:02d}.mp4" for i in range(N_VIDEOS)}
    for split in results["splits"]:
        where = workdir / f"split_{split['split']:02d}"
        train_pairs = pd.read_parquet(where / "train_pairs.parquet")
        test_pairs = pd.read_parquet(where / "test_pairs.parquet")
        train = set(train_pairs["first_id"]) | set(train_pairs["second_id"])
        test = set(test_pairs["first_id"]) | set(test_pairs["second_id"])
        # No video on both sides; the anchors are training videos; every test video is scored by both models.
        assert not train & test and train | test == everything
        assert (split["train_videos"], split["test_videos"]) == (8, 4) and len(train_pairs) == split["train_pairs"]
        assert {a["id"] for a in split["anchors"]} <= train
        for model in ("w2s", "finetuned"):
            scores = pd.read_csv(where / f"{model}_scores.csv")
            assert set(scores["id"]) == test and split[model]["videos"] == 4
        evaluated = json.loads((where / "eval" / "results.json").read_text())["sets"]["konvid_1k"]["models"]
        assert evaluated["finetuned"]["srcc"] == pytest.approx(split["finetuned"]["srcc"])

        # Step 0 of the split was the checkpoint: 2 Adam steps move no parameter by more than
        # 2 x lr x (1 - b1) / sqrt(1 - b2) (Kingma and Ba 2015, section 2.1), while a fresh
        # student (seed 0) lies much further from the checkpoint (seed 5).
        config = load_config(None, [])
        bound = 2 * config.optim.learning_rate * (1 - config.optim.b1) / np.sqrt(1 - config.optim.b2) * 1.001
        w2s, _, _ = load_checkpoint_student(str(root / "w2s"))
        tuned, _, step = load_checkpoint_student(str(where / "train"))
        fresh = student_lib.create(preset("tiny"), seed=0)
        assert step == 2
        moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(w2s)))
        apart = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(w2s)))
        assert 0 < moved <= bound < apart

    # Rerun: nothing is trained or scored again, the same figures come back.
    stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("split_*/*.csv")}
    assert cli.main(_finetune_args(root, workdir)) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    assert {p: p.stat().st_mtime_ns for p in workdir.glob("split_*/*.csv")} == stamps

    # A split killed after training, before its evaluation: its run is at its last step, so
    # the rerun scores and evaluates it without training, to the same figures.
    (workdir / "split_01" / "result.json").unlink()
    (workdir / "split_01" / "finetuned_scores.csv").unlink()
    metrics = (workdir / "split_01" / "train" / "metrics.jsonl").read_text()
    assert cli.main(_finetune_args(root, workdir)) == 0
    again = json.loads((workdir / "results.json").read_text())
    assert again["splits"] == results["splits"]
    assert (workdir / "split_01" / "train" / "metrics.jsonl").read_text() == metrics

    # The same work directory with other pair settings is another run: refused, nothing touched.
    capsys.readouterr()
    assert cli.main(_finetune_args(root, workdir, "--set", "finetune.pairs_per_video=2.0")) == 2
    assert "holds another fine-tuning run" in capsys.readouterr().err

    # Other training settings with more splits (the fresh-user trial): refused in one line naming
    # every difference, before a new split is made.
    err = _error(capsys, _finetune_args(root, workdir, "--set", "optim.learning_rate=0.01", "--set",
                                        "finetune.num_steps=40", "--splits", "4"))
    assert len(err.strip().splitlines()) == 1
    assert f"optim.learning_rate: {config.optim.learning_rate!r} -> 0.01" in err
    assert "finetune.num_steps: 2 -> 40" in err and "finetune.splits:" not in err
    assert not (workdir / "split_02").exists()

    # More splits with the same settings: the new one is trained, the finished ones are kept.
    stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("split_*/*.csv")}
    assert cli.main(_finetune_args(root, workdir, "--splits", "3")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    more = json.loads((workdir / "results.json").read_text())
    assert summary["splits"] == 3 and more["splits"][:2] == results["splits"]
    assert {p: p.stat().st_mtime_ns for p in workdir.glob("split_0[01]/*.csv")} == stamps
    assert more["splits"][2]["steps"] == 2 and (workdir / "split_02" / "finetuned_scores.csv").exists()


def _error(capsys, args):
    assert cli.main(args) == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_naming_the_file_or_row(tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(4):
        (folder / f"v{i}.mp4").write_bytes(b"never decoded: the checks come first")

    def args(rows, *extra, columns=("file", "mos")):
        pd.DataFrame(rows, columns=list(columns)).to_csv(tmp_path / "set.csv", index=False)
        return ["finetune", "--checkpoint", str(tmp_path / "no_run"), "--videos", str(folder), "--mos",
                str(tmp_path / "set.csv"), "--name", "kvq", "--workdir", str(tmp_path / "w"), *extra]

    err = _error(capsys, args([("v0.mp4", 3.0), ("v7.mp4", 2.0)]))
    assert "lacks (1), e.g. row 2: 'v7.mp4'" in err
    # Names twice, files the folder lacks and bad spreads of one table: one error, not one per run.
    err = _error(capsys, args([("v0.mp4", 3.0, 0.2), ("v0.mp4", 2.0, 0.1), ("v7.mp4", 1.0, -1.0)],
                              columns=("file", "mos", "mos_std")))
    first = err.splitlines()[0]
    assert "3 problem(s)" in first and "named twice (1)" in first and "lacks (1), e.g. row 3: 'v7.mp4'" in first
    assert "mos_std (the video's MOS standard deviation) that is not a number >= 0 (1), e.g. row 3: '-1.0'" in first
    err = _error(capsys, args([("v0.mp4", 3.0), ("v1.mp4", "good")]))
    assert "row 2: 'good'" in err
    err = _error(capsys, args([("v0.mp4", 3.0, 0.2), ("v1.mp4", 2.0, -0.5)], columns=("file", "mos", "mos_std")))
    assert "row 2: '-0.5'" in err and "mos_std" in err
    err = _error(capsys, args([("v0.mp4", 3.0), ("v1.mp4", 2.0), ("v2.mp4", 1.0)]))
    assert "3 video(s)" in err and "at least 5 training videos" in err
    assert "lower --anchors (now 5; at least 2) to at most 2" in err  # the option that fixes it is named
    err = _error(capsys, args([("v0.mp4", 3.0), ("v1.mp4", 2.0), ("v2.mp4", 1.0), ("v3.mp4", 0.5)], "--anchors",
                              "2", "--set", "finetune.train_fraction=0.5", "--set", "data.batch_size=1"))
    assert "no_run" in err  # the table is fine; the checkpoint is not
    # 8 videos, 6 of them training, 1 pair per video: 6 pairs a split, fewer than one global batch of 16.
    # Refused from the table alone, before the checkpoint is read or anything decoded (the files are not videos).
    for i in range(4, 8):
        (folder / f"v{i}.mp4").write_bytes(b"never decoded")
    eight = [(f"v{i}.mp4", float(i)) for i in range(8)]
    err = _error(capsys, args(eight, "--anchors", "2", "--set", "finetune.train_fraction=0.75", "--set",
                              "finetune.pairs_per_video=1.0", "--set", "data.batch_size=16"))
    assert "8 video(s) give each split 6 training videos and 6 MOS pairs (finetune.pairs_per_video=1), fewer " \
           "than one global batch of data.batch_size=16; lower data.batch_size to at most 6" in err, err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "set.csv") in err
    # With pairs_per_video 10, every distinct pair (15 of 6 videos), still fewer than 16.
    err = _error(capsys, args(eight, "--anchors", "2", "--set", "finetune.train_fraction=0.75", "--set",
                              "finetune.pairs_per_video=10.0", "--set", "data.batch_size=16"))
    assert "6 training videos and 15 MOS pairs" in err
    # Every distinct pair is drawn (15 = 6 x 5 / 2): more pairs per video cannot help, so it is not suggested.
    assert "pairs_per_video cannot add any" in err and "or add videos" in err and "raise finetune.pairs" not in err
    # Short of the cap it is: 6 pairs of 6 videos, 12 asked for needs 2 pairs per video.
    err = _error(capsys, args(eight, "--anchors", "2", "--set", "finetune.train_fraction=0.75", "--set",
                              "finetune.pairs_per_video=1.0", "--set", "data.batch_size=12"))
    assert "raise finetune.pairs_per_video (to at least 2 for 12 pairs)" in err
    # Too few test videos: the fraction is what to lower.
    err = _error(capsys, args(eight[:4], "--anchors", "2", "--set", "finetune.train_fraction=0.9"))
    assert "give 3 training and 1 test video(s)" in err and "lower finetune.train_fraction (now 0.9)" in err
    err = _error(capsys, args(eight, "--anchors", "2", "--set", "finetune.train_fraction=0.75", "--set",
                              "finetune.pairs_per_video=1.0", "--set", "data.batch_size=4"))
    assert "no_run" in err  # 6 pairs feed a batch of 4: the checkpoint is what is wrong
    err = _error(capsys, args([("v0.mp4", 3.0)], "--name", "a/b"))
    assert "--name 'a/b'" in err

    # Settings out of range are refused before any work (the table here is not even usable),
    # naming the key, its value and the valid range; every bad one in one line.
    err = _error(capsys, args([("v0.mp4", 3.0)], "--set", "finetune.num_steps=-5"))
    assert "finetune.num_steps = -5 (an integer >= 0" in err
    err = _error(capsys, args([("v0.mp4", 3.0)], "--set", "finetune.train_fraction=1.5"))
    assert "finetune.train_fraction = 1.5 (a number in (0, 1)" in err and "split 1.5" not in err
    err = _error(capsys, args([("v0.mp4", 3.0)], "--splits", "0", "--anchors", "1", "--set",
                              "finetune.pairs_per_video=0.0", "--set", "finetune.mos_std_fraction=-0.1"))
    assert len(err.strip().splitlines()) == 1 and "4 setting(s)" in err
    for named in ("--splits = 0 (an integer >= 1", "finetune.pairs_per_video = 0.0 (a number > 0",
                  "finetune.mos_std_fraction = -0.1 (a number > 0", "--anchors = 1 (an integer >= 2"):
        assert named in err
    assert not (tmp_path / "w").exists()

    # A work directory of `w2s-vqa stages` is not taken over.
    for made in ("stages.json", "stage_1"):
        workdir = tmp_path / f"stages_{made}"
        workdir.mkdir()
        (workdir / made).mkdir() if made == "stage_1" else (workdir / made).write_text("{}")
        good = args([(f"v{i}.mp4", float(i)) for i in range(4)], "--anchors", "2", "--set",
                     "finetune.train_fraction=0.5")
        err = _error(capsys, [str(workdir) if a == str(tmp_path / "w") else a for a in good])
        assert "holds a `w2s-vqa stages` run" in err and made in err and str(workdir) in err
        assert sorted(p.name for p in workdir.iterdir()) == [made]


def test_a_table_may_name_videos_without_their_extension(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for name in ("clip01.mp4", "sub/clip02.mkv", "clip03.mp4", "clip03.mp4.txt", "clip04", "twin.mp4", "twin.avi"):
        (folder / name).write_bytes(b"")
    (folder / "clip05").mkdir()  # a folder is not a video
    (folder / "clip05.webm").write_bytes(b"")

    def read(names):
        pd.DataFrame({"file": names, "mos": np.arange(len(names), dtype=float)}).to_csv(tmp_path / "set.csv",
                                                                                       index=False)
        return finetune_lib.read_set(str(folder), str(tmp_path / "set.csv"), "kvq")

    table = read(["clip01", "sub/clip02", "clip03", "clip03.mp4", "clip04", "clip05"])
    # The store id stays the table's name; the path is the one file of that name.
    assert table["id"].tolist() == ["clip01", "sub/clip02", "clip03", "clip03.mp4", "clip04", "clip05"]
    assert [os.path.relpath(p, folder) for p in table["path"]] == [
        "clip01.mp4", os.path.join("sub", "clip02.mkv"), "clip03.mp4", "clip03.mp4", "clip04", "clip05.webm"]
    with pytest.raises(finetune_lib.FinetuneError, match=r"row 2: 'twin' -> twin.avi, twin.mp4"):
        read(["clip01", "twin"])
    with pytest.raises(finetune_lib.FinetuneError, match=r"lacks \(1\), e.g. row 2: 'clip09'"):
        read(["clip01", "clip09"])
    # Every kind of problem in one error: a name twice, a file the folder lacks, a name that fits two files.
    with pytest.raises(finetune_lib.FinetuneError) as caught:
        read(["clip01", "clip01", "clip09", "twin"])
    first = str(caught.value).splitlines()[0]
    assert "3 problem(s)" in first and "video named twice (1), e.g. 'clip01' in rows 1 and 2" in first
    assert "lacks (1), e.g. row 3: 'clip09'" in first and "fits more than one file (1), e.g. row 4: 'twin'" in first


def test_a_rerun_may_change_only_the_safe_keys_and_the_number_of_splits():
    base = load_config(None, ["finetune.num_steps=2"])
    identity = {"checkpoint": "/w2s/checkpoints", "step": 2, "set": "kvq", "train_fraction": 0.8,
                "config": config_lib.as_json(base)}

    def differences(*overrides, **changed):
        now = load_config(None, ["finetune.num_steps=2", *overrides])
        return finetune_lib.run_differences(identity, {**identity, **changed,
                                                      "config": config_lib.as_json(now)})

    assert differences("finetune.splits=4", "mesh.num_devices=1", "train.log_every=3", "evals.val.pairs='x'") == []
    # train.num_steps gives no split its steps while finetune.num_steps is set; it does at 0.
    assert differences("train.num_steps=7") == []
    assert differences("train.num_steps=7", "finetune.num_steps=0") == [
        "finetune.num_steps: 2 -> 0", f"train.num_steps: {base.train.num_steps} -> 7"]
    assert differences("finetune.num_steps=40", "optim.learning_rate=0.01", "finetune.fresh_optimizer=False",
                       step=3) == [
        "--step: 2 -> 3", "finetune.fresh_optimizer: True -> False", "finetune.num_steps: 2 -> 40",
        f"optim.learning_rate: {base.optim.learning_rate!r} -> 0.01"]
    # A run file written before the config was recorded: what it holds is still compared.
    old = {k: v for k, v in identity.items() if k != "config"}
    assert finetune_lib.run_differences(old, {**identity, "train_fraction": 0.7}) == [
        "finetune.train_fraction: 0.8 -> 0.7"]


def test_the_last_line_is_strict_json_when_stopped_before_any_split(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(4):
        (folder / f"v{i}.mp4").write_bytes(b"")
    pd.DataFrame({"file": [f"v{i}.mp4" for i in range(4)], "mos": [1.0, 2.0, 3.0, 4.0]}).to_csv(tmp_path / "set.csv",
                                                                                          index=False)

    def stopped_at_once(config, *, workdir, splits, **kwargs):  # a signal during the first split's training
        return {"set": "kvq", "checkpoint": "/w2s", "step": 2, "videos": 4, "videos_used": 4, "skipped": [],
                "splits_requested": splits, "splits_done": 0, "splits": [],
                "median": finetune_lib.median_figures([]), "workdir": str(workdir), "stopped": "SIGINT"}

    monkeypatch.setattr(finetune_lib, "finetune", stopped_at_once)
    assert cli.main(["finetune", "--checkpoint", "/w2s", "--videos", str(folder), "--mos", str(tmp_path / "set.csv"),
                     "--name", "kvq", "--workdir", str(tmp_path / "w"), "--splits", "2", "--anchors", "2"]) == 130
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last, parse_constant=lambda name: pytest.fail(f"{name} in {last}"))
    assert summary["srcc"] is None and summary["w2s_plcc"] is None and summary["stopped"] == "SIGINT"


@pytest.mark.slow
def test_a_workdir_that_finished_nothing_takes_a_changed_setting(finetuned, tmp_path, capsys):
    """The fresh-user trial: a set whose broken files leave, after decoding, fewer MOS pairs than
    one global batch is refused then (its table alone had enough); the rerun with a smaller
    data.batch_size in the same work directory is accepted, since no split finished, and keeps
    the decoded store; once a split has finished, a changed setting is refused again."""
    import shutil

    root = finetuned
    folder = tmp_path / "videos"
    shutil.copytree(root / "videos", folder)
    for name in ("broken1.mp4", "broken2.mp4"):
        (folder / name).write_bytes(b"not a video")
    table = pd.read_csv(root / "set.csv")
    table = pd.concat([table, pd.DataFrame({"file": ["broken1.mp4", "broken2.mp4"], "mos": [50.0, 40.0]})])
    table.to_csv(tmp_path / "set.csv", index=False)
    workdir = tmp_path / "ft"

    def args(*extra):
        argv = _finetune_args(root, workdir, "--splits", "1", "--set", "finetune.pairs_per_video=0.4", *extra)
        return [str(folder) if a == str(root / "videos") else str(tmp_path / "set.csv")
                if a == str(root / "set.csv") else a for a in argv]

    # 14 rows: 10 training videos, 4 pairs, one batch of 4. 12 decode: 8 training videos, 3 pairs.
    err = _error(capsys, args())
    assert "(2 video(s) could not be decoded" in err and "8 training videos and 3 MOS pairs" in err, err
    assert "data.batch_size=4" in err
    recorded = json.loads((workdir / "finetune.json").read_text())
    assert recorded["config"]["data"]["batch_size"] == 4
    shards = {p: p.stat().st_mtime_ns for p in (workdir / "store").iterdir() if p.name.startswith("shard")}
    assert shards

    assert cli.main(args("--set", "data.batch_size=2")) == 0
    captured = capsys.readouterr()
    assert "its earlier run finished no split, so it takes this run's settings (data.batch_size: 4 -> 2)" \
        in captured.err, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["splits"] == 1
    assert json.loads((workdir / "finetune.json").read_text())["config"]["data"]["batch_size"] == 2
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # decoded once

    err = _error(capsys, args("--set", "data.batch_size=1"))
    assert "holds another fine-tuning run" in err and "data.batch_size: 2 -> 1" in err


def test_a_batch_the_mesh_does_not_divide_is_refused_before_any_decoding(finetuned, tmp_path):
    """On 8 host devices a mesh.shape of (4, 2, 1) splits the batch in 8 (the mesh.rules
    "batch" entry: data x fsdp), so data.batch_size=6 cannot be placed: `w2s-vqa finetune`
    refuses it in one line naming the keys, before the work directory (the decoded store,
    finetune.json) is made. The set itself is fine: 12 videos give 8 training videos and
    32 pairs, more than a batch, so the count check passes and the mesh check is the one met."""
    import subprocess
    import sys

    workdir = tmp_path / "ft"
    argv = _finetune_args(finetuned, workdir, "--set", "mesh.shape=(4,2,1)", "--set", "mesh.num_devices=8",
                          "--set", "data.batch_size=6")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "w2s_vqa.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err, done.stderr
    assert "data.batch_size = 6" in err and "mesh parts (8: mesh axes data=4 x fsdp=2 of mesh.shape (4, 2, 1)" in err
    assert "of the processes (1)" in err and err.endswith("e.g. data.batch_size=8"), err
    assert not workdir.exists()  # nothing decoded, nothing recorded
    # The check itself, on this process's 8 host devices (tests/conftest.py): multiples of 8 pass.
    from w2s_vqa import sharding
    from w2s_vqa.finetune.run import check_batch

    config = load_config(None, ["mesh.shape=(4,2,1)", "mesh.num_devices=8"])
    mesh = sharding.mesh_from_config(config)
    for batch, fits in ((8, True), (16, True), (12, False), (0, False)):
        config.data.batch_size = batch
        if fits:
            check_batch(config, mesh)
        else:
            with pytest.raises(config_lib.ConfigError, match=f"^data.batch_size = {batch}: .*data.batch_size="
                                                             f"{max(8, -(-batch // 8) * 8)}$"):
                check_batch(config, mesh)
