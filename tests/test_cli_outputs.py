"""Output folders given as URLs to verbs that write through local paths are refused before
any work, in one line, and nothing is written under the working directory (a URL would
otherwise become a local folder "gs:"). train, stages and export take gs:// (tests/io/
test_gcs_runs.py); a scheme whose file system is not installed is refused naming it."""

import os

import pytest

from w2s_vqa import cli


@pytest.mark.parametrize("argv", [
    ["curate-metrics", "--inputs", "videos", "--out", "gs://bucket/metrics"],
    ["pairs", "--store", "store", "--out", "gs://bucket/pairs"],
    ["finetune", "--workdir", "gs://bucket/ft", "--checkpoint", "run", "--videos", "v", "--mos", "m.csv", "--name", "n"],
])
def test_a_url_output_is_refused_in_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writes to local paths only" in err and argv[-1] in err, err
    if argv[0] == "finetune":  # the reason it cannot follow the others into a bucket
        assert "holds the set's decoded video store, ArrayRecord files read by seeking" in err, err
    assert os.listdir(tmp_path) == []


def _clips(folder, count):
    """`count` 1 s clips of noise, 32x32 at 8 fps, written with PyAV."""
    import numpy as np

    from w2s_vqa import video

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        video.write_video(str(folder / f"c{i}.mp4"), rng.integers(0, 256, (8, 32, 32, 3), np.uint8), 8.0)


TINY_STORE = ["--set", "data.num_frames=2", "--set", "data.image_size=32", "--set", "data.num_motion_chunks=1",
              "--set", "data.distortions=''", "--set", "data.sources_per_shard=2"]


def test_prepare_and_export_end_with_one_json_line(tmp_path, capsys):
    import json

    _clips(tmp_path / "clips", 3)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    store = tmp_path / "store"
    assert cli.main(["prepare", "--inputs", str(tmp_path / "clips"), "--out", str(store), "--workers", "0",
                     *TINY_STORE]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["store"] == str(store) and (summary["videos"], summary["skipped"], summary["sources"]) == (3, 1, 4)
    # The skip summary names the file skipped, beside its reason.
    assert [line for line in out.splitlines() if " x VideoError: cannot open" in line][0].endswith(
        str(tmp_path / "clips" / "broken.mp4")), out
    assert summary["decoded_earlier"] == 0 and summary["shards"] == 2
    # A rerun keeps both shards: the 4 files (the broken one included) were decoded by the earlier run.
    assert cli.main(["prepare", "--inputs", str(tmp_path / "clips"), "--out", str(store), "--workers", "0",
                     *TINY_STORE]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["shards_resumed"], again["decoded_earlier"], again["videos"]) == (2, 4, 3)

    assert cli.main(["export", "--preset", "tiny", "--out", str(tmp_path / "export")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "export") and summary["preset"] == "tiny"
    assert {"config.json", "model.safetensors"} <= set(summary["files"])
    assert set(summary["files"]) <= {p.name for p in (tmp_path / "export").iterdir()}


@pytest.mark.parametrize("verb", ["prepare", "score", "curate-metrics", "curate --pool", "curate --reference"])
def test_an_output_inside_the_folder_of_videos_is_refused_in_one_line(verb, tmp_path, capsys):
    """Every file of an input folder is an input: a store, a score table, its work folder or a
    metrics folder left there would be read by the next run of that folder. Refused before
    anything is read or measured."""
    _clips(tmp_path / "clips", 1)
    option = "--inputs"
    if verb in ("prepare", "curate-metrics"):
        argv = [verb, "--inputs", str(tmp_path / "clips"), "--out", str(tmp_path / "clips" / "out")]
    elif verb.startswith("curate"):  # the other set is a folder of videos outside: never measured
        _clips(tmp_path / "other", 1)
        option = verb.split()[1]
        sets = {"--pool": str(tmp_path / "other"), "--reference": str(tmp_path / "other"), option: str(tmp_path / "clips")}
        argv = ["curate", *[x for kv in sets.items() for x in kv], "--k", "1", "--out", str(tmp_path / "clips" / "sel")]
    else:  # a real anchor set (read first); the student is never read: the refusal comes before it
        from w2s_vqa.config import load_config
        from w2s_vqa.score.anchors import AnchorSet
        from w2s_vqa.store import prepare as prepare_lib

        config = load_config(None, [s for s in TINY_STORE if s != "--set"])
        _clips(tmp_path / "anchor_clips", 2)
        prepare_lib.prepare(config, str(tmp_path / "anchor_clips"), str(tmp_path / "anchor_store"), workers=0,
                            progress=False)
        AnchorSet.from_store(str(tmp_path / "anchor_store"), ["c0", "c1"], [60.0, 40.0]).save(
            str(tmp_path / "anchors"))
        argv = ["score", "--hf", str(tmp_path / "never_read"), "--anchors", str(tmp_path / "anchors"),
                "--inputs", str(tmp_path / "clips"), "--out", str(tmp_path / "clips" / "scores.csv")]
    before = sorted(os.listdir(tmp_path / "clips"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"inside the folder of videos {option} {tmp_path / 'clips'}" in err, err
    assert argv[-1] in err and f"e.g. {tmp_path / os.path.basename(argv[-1])}" in err, err
    assert sorted(os.listdir(tmp_path / "clips")) == before
    if verb.startswith("curate "):
        assert sorted(os.listdir(tmp_path / "other")) == ["c0.mp4"]
    if verb == "score":  # the work folder alone inside it is refused too, naming --work
        assert cli.main(argv[:-1] + [str(tmp_path / "scores.csv"), "--work", str(tmp_path / "clips" / "w")]) == 2
        assert "--work " in capsys.readouterr().err


def test_a_url_is_never_inside_a_local_folder_and_urls_compare_as_text(tmp_path, monkeypatch):
    """A URL output is not a path under the working directory (os.path.realpath would make
    gs://b/x one: ./gs:/b/x), and a URL folder of videos refuses URLs under it alone."""
    from w2s_vqa.main.common import refuse_outputs_inside

    monkeypatch.chdir(tmp_path)
    refuse_outputs_inside(".", {"--out": "gs://bucket/store", "--work": "s3://bucket/work"})
    refuse_outputs_inside("gs://bucket/videos", {"--out": str(tmp_path / "videos" / "store")})
    refuse_outputs_inside("gs://bucket/videos", {"--out": "gs://bucket/videos_store", "--work": "s3://bucket/videos/w"})
    with pytest.raises(ValueError, match=r"^--out gs://bucket/videos/./store: inside the folder of videos --inputs "
                                         r"gs://bucket/videos/, .*\(e.g. gs://bucket/store\)$"):
        refuse_outputs_inside("gs://bucket/videos/", {"--out": "gs://bucket/videos/./store"})
    with pytest.raises(ValueError, match=r"^--out GS://bucket/videos: inside"):  # the folder itself
        refuse_outputs_inside("gs://bucket/videos", {"--out": "GS://bucket/videos"})


def test_evals_json_line_is_strict_json_with_null_for_a_figure_not_computed(tmp_path, capsys):
    """On 4 videos the logistic-fitted PLCC is not computed (too few for the fit): the JSON
    line says null, not NaN, which strict parsers (jq, JavaScript) refuse."""
    import json

    (tmp_path / "set.csv").write_text("File,MOS\nv0.mp4,80\nv1.mp4,60\nv2.mp4,40\nv3.mp4,20\n")
    (tmp_path / "t.csv").write_text("video_id,teacher,score\nv0,dover,0.9\nv1,dover,0.7\nv2,dover,0.75\n"
                                    "v3,dover,0.1\n")
    assert cli.main(["eval", "--eval-set", "mine", str(tmp_path / "videos"), str(tmp_path / "set.csv"), "--teachers",
                     str(tmp_path / "t.csv"), "--out", str(tmp_path / "ev"), "--bootstrap", "0"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]

    def refuse(constant):
        raise ValueError(f"{constant} in the JSON line")

    figures = json.loads(line, parse_constant=refuse)["sets"]["mine"]["dover"]
    assert figures["plcc_fitted"] is None and figures["videos"] == 4
    assert figures["srcc"] == pytest.approx(0.8, abs=1e-12)  # ranks 4,2,3,1 against 4,3,2,1: 1 - 6*2/60
@pytest.mark.parametrize("argv", [
    ["export", "--preset", "tiny", "--out", "s3://bucket/tiny_hf"],
    ["train", "--workdir", "s3://bucket/run"],
    ["stages", "--workdir", "s3://bucket/w2s"],
])
def test_a_url_whose_file_system_is_missing_names_the_package(argv, tmp_path, monkeypatch, capsys):
    pytest.importorskip("etils.epath")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed here: s3:// has its file system")
    except ImportError:
        pass
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"w2s-vqa {argv[0]}: error: {argv[-1]}: s3:// URLs need a file system package: pip install s3fs\n"
    assert os.listdir(tmp_path) == []
