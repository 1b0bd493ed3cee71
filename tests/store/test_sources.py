"""Store inputs: folder ids, manifest columns, and the checks that refuse a manifest
before any video is decoded (one pristine video per source_id, one video per id)."""

import json

import pandas as pd
import pytest

from w2s_vqa import cli
from w2s_vqa.store.format import StoreError
from w2s_vqa.store.sources import Source, find_sources, read_manifest


def touch(*paths):
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # find_sources never opens a video


def test_a_folder_gives_one_source_per_file_named_by_its_relative_path(tmp_path):
    """Every file is accounted for: the decoder, not the extension, decides what is a video.
    A file sharing its name with a video (b.json beside b.mp4) keeps its extension in its id."""
    touch(tmp_path / "b.mp4", tmp_path / "b.json", tmp_path / "sub" / "a.MKV", tmp_path / "notes.txt",
          tmp_path / "sub" / "deep" / "c.Y4M")
    sources = find_sources(str(tmp_path))
    assert [(s.id, s.source_id) for s in sources] == [
        ("b", "b"), ("b.json", "b.json"), ("notes", "notes"), ("sub/a", "sub/a"), ("sub/deep/c", "sub/deep/c")]
    assert sources[3].path == str(tmp_path / "sub" / "a.MKV") and sources[3].motion == ""
    with pytest.raises(StoreError, match="'motion' column"):
        find_sources(str(tmp_path), require_motion=True)


def test_a_folder_with_two_videos_of_one_name_is_refused(tmp_path):
    touch(tmp_path / "clip.mp4", tmp_path / "clip.MOV")
    with pytest.raises(StoreError, match="1 id.s. name more than one video: 'clip': .*clip.MOV, .*clip.mp4.*manifest"):
        find_sources(str(tmp_path))


def test_a_manifest_brings_ids_source_ids_and_paths_relative_to_it(tmp_path):
    pd.DataFrame({"path": ["v/one.mp4", "/abs/two.mp4", "v/NA.mp4"], "id": ["", "second", ""],
                  "source_id": ["content1", "", ""], "motion": ["m/one.npy", "", ""]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    sources = read_manifest(str(tmp_path / "manifest.csv"))
    assert sources == [
        Source(id="one", source_id="content1", path=str(tmp_path / "v" / "one.mp4"), motion=str(tmp_path / "m" / "one.npy")),
        Source(id="second", source_id="second", path="/abs/two.mp4"),
        Source(id="NA", source_id="NA", path=str(tmp_path / "v" / "NA.mp4")),  # "NA" is an id, not a missing value
    ]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_source_id_held_by_two_manifest_rows_is_refused_naming_rows_and_source(tmp_path, suffix):
    """Every manifest row is a pristine video; synthetic pairs need one pristine video
    per source_id, so a shared source_id is refused when the manifest is read."""
    rows = [{"path": "ref.mp4", "id": "ref", "source_id": "carphone"},
            {"path": "other.mp4", "id": "other", "source_id": ""},
            {"path": "dist.mp4", "id": "dist", "source_id": "carphone"},
            {"path": "x.mp4", "id": "x", "source_id": "other"}]  # source_id "other" = the id of row 2
    manifest = tmp_path / f"manifest.{suffix}"
    if suffix == "csv":
        pd.DataFrame(rows).to_csv(manifest, index=False)
    else:
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(StoreError) as error:
        find_sources(str(manifest))
    message = str(error.value)
    assert message.startswith(f"{manifest}: 2 problem(s) in the manifest (rows are data rows counted from 1, "
                              "the header not counted):")
    assert "source_id held by more than one row (2): source_id 'carphone' in rows 1, 3; " \
           "source_id 'other' in rows 2, 4" in message
    assert "A source_id groups one pristine video" in message


def test_a_shared_source_id_fails_the_verb_before_anything_is_written(tmp_path, capsys):
    pd.DataFrame({"path": ["a.mp4", "b.mp4"], "source_id": ["s", "s"]}).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "store"
    assert cli.main(["prepare", "--inputs", str(tmp_path / "m.csv"), "--out", str(out)]) == 2
    assert "source_id 's' in rows 1, 2" in capsys.readouterr().err
    assert not out.exists()


def test_manifest_rows_with_one_id_are_refused(tmp_path):
    # Distinct source_ids, so the id check is the one that fires.
    pd.DataFrame({"path": ["a/clip.mp4", "b/clip.mp4"], "source_id": ["s1", "s2"]}).to_csv(
        tmp_path / "m.csv", index=False)
    with pytest.raises(StoreError, match=r"id 'clip' in rows 1 \(.*a/clip.mp4\), 2 \(.*b/clip.mp4\)\n.*'id' column"):
        find_sources(str(tmp_path / "m.csv"))


def test_unusable_manifests_are_refused_with_file_and_row(tmp_path):
    (tmp_path / "m.txt").write_text("path\nx.mp4\n")
    how = ("give a folder that holds the video(s) (one of its own for a single video) or a manifest listing them: "
           "a .csv with a 'path' column, or .jsonl")
    with pytest.raises(StoreError) as error:
        find_sources(str(tmp_path / "m.txt"))
    assert str(error.value) == (f"{tmp_path / 'm.txt'}: not a manifest (a manifest is .csv or .jsonl; this file is "
                                f".txt); {how}")
    # A single video, an image or a workbook given as the inputs: named as what it is.
    for name, what in (("a.mp4", "a single video"), ("clip.MOV", "a single video"), ("still.jpg", "a single image"),
                       ("scores.xlsx", "a spreadsheet workbook, not a manifest (save it as 'CSV UTF-8')")):
        (tmp_path / name).write_bytes(b"\x00" * 16)
        with pytest.raises(StoreError) as error:
            find_sources(str(tmp_path / name))
        assert str(error.value).startswith(f"{tmp_path / name}: {what}") and str(error.value).endswith(how)
        assert "\n" not in str(error.value)
    pd.DataFrame({"file": ["x.mp4"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(StoreError, match="needs a 'path' column"):
        find_sources(str(tmp_path / "nopath.csv"))
    # Every problem of the rows in one report: two empty paths and a shared id.
    pd.DataFrame({"path": ["x.mp4", "", "sub/x.mp4", ""]}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(StoreError) as error:
        find_sources(str(tmp_path / "empty.csv"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'empty.csv'}: 3 problem(s) in the manifest (rows are data rows")
    assert "empty path (2): row 2; row 4" in message and "id 'x' in rows 1 (" in message
    pd.DataFrame({"path": ["x.mp4"]}).to_csv(tmp_path / "nomotion.csv", index=False)
    with pytest.raises(StoreError, match="needs a 'motion' column"):
        find_sources(str(tmp_path / "nomotion.csv"), require_motion=True)
    with pytest.raises(StoreError, match="no such folder or manifest"):
        find_sources(str(tmp_path / "nowhere"))
