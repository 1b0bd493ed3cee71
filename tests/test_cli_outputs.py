"""Output folders given as URLs are refused before any work, in one line, and nothing is
written under the working directory (a URL would otherwise become a local folder "gs:")."""

import os

import pytest

from w2s_vqa import cli


@pytest.mark.parametrize("argv", [
    ["export", "--preset", "tiny", "--out", "gs://bucket/tiny_hf"],
    ["curate-metrics", "--inputs", "videos", "--out", "gs://bucket/metrics"],
    ["train", "--workdir", "s3://bucket/run"],
    ["stages", "--workdir", "gs://bucket/w2s"],
])
def test_a_url_output_is_refused_in_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "writes to local paths only" in err and argv[-1] in err, err
    assert os.listdir(tmp_path) == []
