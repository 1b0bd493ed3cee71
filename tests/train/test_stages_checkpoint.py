"""A `w2s-vqa stages` workdir given where one training run's checkpoint is read."""

import subprocess
import sys

import pytest

from w2s_vqa.train.checkpoint import checkpoint_directory
from w2s_vqa.workdir import stage_folders


@pytest.fixture
def stages_run(tmp_path):
    """A stages workdir as `w2s-vqa stages` lays it out: stage_k/checkpoints/<step>, stages.json."""
    run = tmp_path / "stages"
    for stage in (1, 2, 10):
        (run / f"stage_{stage}" / "checkpoints" / "4").mkdir(parents=True)
    (run / "stages.json").write_text("{}")
    (run / "stage_notes").mkdir()  # not a stage folder: no number
    return run


def test_checkpoint_directory_names_the_stages(stages_run):
    assert stage_folders(str(stages_run)) == ["stage_1", "stage_2", "stage_10"]  # by number, not by text
    with pytest.raises(FileNotFoundError) as e:
        checkpoint_directory(str(stages_run))
    assert str(e.value) == (f"{stages_run}: is a stages run (stage_1, stage_2, stage_10), not one training run: give "
                            f"one stage, e.g. {stages_run / 'stage_10'}")
    # One stage is a training run.
    assert checkpoint_directory(str(stages_run / "stage_2")) == str(stages_run / "stage_2" / "checkpoints")
    assert stage_folders(str(stages_run / "stage_2")) == []


@pytest.mark.parametrize("verb,extra", [
    ("score", ["--anchors", "{tmp}/anchors", "--inputs", "{tmp}/videos", "--out", "{tmp}/out.csv"]),
    ("export", ["--out", "{tmp}/export"]),
    ("eval", ["--anchors", "{tmp}/anchors", "--out", "{tmp}/eval"]),
    ("finetune", ["--videos", "{tmp}/videos", "--mos", "{tmp}/mos.csv", "--name", "set", "--workdir", "{tmp}/ft"]),
])
def test_verbs_refuse_a_stages_run_in_one_line(stages_run, tmp_path, verb, extra):
    (tmp_path / "videos").mkdir()
    (tmp_path / "anchors").mkdir()
    (tmp_path / "mos.csv").write_text("id,mos\na,1\n")
    args = [a.format(tmp=tmp_path) for a in extra]
    done = subprocess.run([sys.executable, "-m", "w2s_vqa.cli", verb, "--checkpoint", str(stages_run), *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"w2s-vqa {verb}: error: {stages_run}: is a stages run (stage_1, stage_2, stage_10), not one "
                     f"training run: give one stage, e.g. {stages_run / 'stage_10'}"], done.stderr
    assert "{" not in done.stdout  # no closing JSON line: nothing was done
