"""Output folders given as URLs to verbs that write through local paths are refused before
any work, in one line, and nothing is written under the working directory (a URL would
otherwise become a local folder "gs:"). train, stages and export take gs:// (tests/io/
test_gcs_runs.py); a scheme whose file system is not installed is refused naming it."""

import os

import pytest

from w2s_vqa import cli


@pytest.mark.parametrize("argv", [
    ["curate-metrics", "--inputs", "videos", "--out", "gs://bucket/metrics"],
    ["anchors", "--store", "store", "--mos", "mos.csv", "--out", "gs://bucket/anchors"],
    ["finetune", "--workdir", "gs://bucket/ft", "--checkpoint", "run", "--videos", "v", "--mos", "m.csv", "--name", "n"],
    ["eval", "--out", "gs://bucket/eval"],
])
def test_a_url_output_is_refused_in_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writes to local paths only" in err and argv[-1] in err, err
    assert os.listdir(tmp_path) == []


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
