"""The ten evaluation sets as TFDS builders: a miniature of each release in its official
layout (real file names from the paper's lists, the real metadata formats and quirks),
built with TFDS, read through tfds.data_source + Grain and through the store's reading
API; the frames are those `w2s-vqa prepare` stores for the same clip; a missing video
and a malformed metadata file are named; `eval --sets` gives the weighted overall by hand
and scores a TFDS set with a tiny student exactly as the folder path does."""

import json
import os
import re
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.stats

tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds extra (make test installs it) is not installed")

from w2s_vqa import cli, video  # noqa: E402
from w2s_vqa import datasets  # noqa: E402
from w2s_vqa.datasets import builders, metadata  # noqa: E402

CLIPS = 3
FULL = "tiny_full"  # the miniatures hold a few videos, not the paper's lists
# Per set: which clip each miniature video is (live_vqc has 4 videos, so that the overall's weights differ).
CLIP_OF = {name: [0, 1, 2] for name in datasets.NAMES} | {"live_vqc": [0, 1, 2, 0]}
MOS = [61.25, 48.5, 72.125, 55.0]
STD = [0.5, 0.75, 1.0, 0.25]


def _names(set_name):
    count = len(CLIP_OF[set_name])
    return datasets.paper_list(set_name)["file"].tolist()[:count]


def _csv(path, columns, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


# ----------------------------------------------------------------------------- the miniature releases
def _release(name, root, clips):
    """Write set `name`'s miniature release into `root`; returns [(key, video path, mos, mos std)]
    in the metadata's order (std NaN where the set's file has none)."""
    files = _names(name)
    n = len(files)
    expected = []
    os.makedirs(root, exist_ok=True)

    def put(rel, i):
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(clips[CLIP_OF[name][i]], path)
        return rel

    if name in ("lsvq_test", "lsvq_1080p"):
        table = "LSVQ_whole_test.csv" if name == "lsvq_test" else "LSVQ_whole_test_1080p.csv"
        stems = [f[:-len(".mp4")] for f in files]  # the sheet's `name` has no extension
        _csv(os.path.join(root, table), ["name", "p1", "p2", "p3", "height", "width", "mos_p1", "mos_p2", "mos_p3",
                                         "mos", "frame_number"],
             [(s, 0, 0, 0, 48, 64, 1, 2, 3, MOS[i], 12) for i, s in enumerate(stems)])
        expected = [(f, put(f, i), MOS[i], np.nan) for i, f in enumerate(files)]
    elif name == "konvid_1k":
        ids = [f[:-len(".mp4")] for f in files]
        old = [f"{i}_original_centercrop_960x540_8s.mp4" for i in ids]
        _csv(os.path.join(root, "KoNViD_1k_metadata", "KoNViD_1k_attributes.csv"),
             ["video_id", "flickr_id", "file_name", "MOS", "SD", "n"],
             [(k + 1, ids[k], old[k], MOS[k] / 20, STD[k], 50) for k in range(n)])
        # The last video only under the older release's name (the sheet's file_name): still found.
        videos = [put(f"KoNViD_1k_videos/{files[i]}", i) for i in range(n - 1)] + [
            put(f"KoNViD_1k_videos/{old[-1]}", n - 1)]
        expected = [(files[i], videos[i], MOS[i] / 20, STD[i]) for i in range(n)]
    elif name == "live_vqc":
        folder = os.path.join(root, metadata.LIVE_VQC_FOLDER)
        os.makedirs(folder)
        cells = np.empty((n, 1), dtype=object)
        for i, f in enumerate(files):
            cells[i, 0] = np.array([f])
        scipy.io.savemat(os.path.join(folder, "data.mat"), {"video_list": cells,
                                                             "mos": np.asarray(MOS[:n], np.float64)[:, None]})
        expected = [(f, put(f"{metadata.LIVE_VQC_FOLDER}/Video/{f}", i), MOS[i], np.nan) for i, f in enumerate(files)]
    elif name == "youtube_ugc":
        vids = [f[:-len(metadata.YOUTUBE_UGC_SUFFIX)] for f in files]
        with pd.ExcelWriter(os.path.join(root, "original_videos_MOS_for_YouTube_UGC_dataset.xlsx")) as book:
            pd.DataFrame({"note": ["MOS differences"]}).to_excel(book, sheet_name="diff", index=False)
            pd.DataFrame({"vid": vids, "category": [v.split("_")[0] for v in vids], "resolution": 1080,
                          "MOS full": [m / 20 for m in MOS[:n]], "MOS chunk00": 3.0}).to_excel(
                book, sheet_name="MOS", index=False)
        expected = [(f, put(f"h264_transcodes/{vids[i].split('_')[0]}/{f}", i), MOS[i] / 20, np.nan)
                    for i, f in enumerate(files)]
    elif name == "live_yt_gaming":
        _csv(os.path.join(root, "LIVE-YT-Gaming_MOS.csv"), ["File", "MOS", "std"],
             [(f, MOS[i], STD[i]) for i, f in enumerate(files)])
        expected = [(f, put(f"videos/{f}", i), MOS[i], STD[i]) for i, f in enumerate(files)]
    elif name == "cgvds":
        stems = [f[:-len(".mp4")] for f in files]  # names without extension, videos in a folder per game
        _csv(os.path.join(root, "CGVDS_MOS.csv"), ["filename", "MOS"], [(s, MOS[i] / 20) for i, s in enumerate(stems)])
        expected = [(f, put(f"Materials/{f.split('_')[0]}/{f}", i), MOS[i] / 20, np.nan) for i, f in enumerate(files)]
    elif name == "live_yt_hfr":
        stems = [f[:-len(".mp4")] for f in files]
        path = os.path.join(root, "subjective_scores", "subject_MOS.csv")
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as out:  # transposed, as the release ships it
            out.write(",".join(["File Names", *stems]) + "\n")
            out.write(",".join(["MOS", *map(str, MOS[:n])]) + "\n")
            out.write(",".join(["std", *map(str, STD[:n])]) + "\n")
        expected = [(f, put(f"videos/{f}", i), MOS[i], STD[i]) for i, f in enumerate(files)]
    elif name == "waterloo_ivc_4k":
        pd.DataFrame({"File": files, "MOS": MOS[:n]}).to_excel(os.path.join(root, "MOS.xlsx"), index=False)
        expected = [(f, put(f"{f.split('_')[0]}/{f}", i), MOS[i], np.nan) for i, f in enumerate(files)]
    elif name == "kvq":
        _csv(os.path.join(root, "train_data.csv"), ["filename", "score"],
             [(f"train/{f}", MOS[i] / 20) for i, f in enumerate(files)])
        expected = [(f, put(f"train/{f}", i), MOS[i] / 20, np.nan) for i, f in enumerate(files)]
    return expected


def _corrupt(name, root):
    """Break set `name`'s metadata file in `root` as users do; returns what the error must say."""
    def edit_csv(rel, change):
        path = os.path.join(root, rel)
        table = pd.read_csv(path, dtype=str)
        changed = change(table)
        (table if changed is None else changed).to_csv(path, index=False)
        return path

    if name in ("lsvq_test", "lsvq_1080p"):
        rel = "LSVQ_whole_test.csv" if name == "lsvq_test" else "LSVQ_whole_test_1080p.csv"
        edit_csv(rel, lambda t: t.__setitem__("mos", ["70.1", "n/a", "66"]))
        return rf"{rel}.*'mos' that is not a finite number \(1\): row 2: 'n/a'"
    if name == "konvid_1k":
        edit_csv("KoNViD_1k_metadata/KoNViD_1k_attributes.csv", lambda t: t.drop(columns="flickr_id"))
        return r"KoNViD_1k_attributes.csv: no column 'flickr_id'; its columns are"
    if name == "live_vqc":
        scipy.io.savemat(os.path.join(root, metadata.LIVE_VQC_FOLDER, "data.mat"), {"video_list": np.zeros((1, 1))})
        return r"data.mat: no variable 'mos'"
    if name == "youtube_ugc":
        path = os.path.join(root, "original_videos_MOS_for_YouTube_UGC_dataset.xlsx")
        table = pd.read_excel(path, sheet_name="MOS")
        table["MOS full"] = table["MOS full"].astype(object)
        table.loc[2, "MOS full"] = "bad"
        with pd.ExcelWriter(path) as book:
            table.to_excel(book, sheet_name="MOS", index=False)
        return r"xlsx.*'MOS full' that is not a finite number \(1\): row 3: 'bad'"
    if name == "live_yt_gaming":
        edit_csv("LIVE-YT-Gaming_MOS.csv", lambda t: t.__setitem__("MOS", ["1", "2", "x"]))
        return r"LIVE-YT-Gaming_MOS.csv.*'MOS' that is not a finite number \(1\): row 3: 'x'"
    if name == "cgvds":
        edit_csv("CGVDS_MOS.csv", lambda t: t.__setitem__("filename", [t["filename"][0]] * 3))
        return r"CGVDS_MOS.csv.*video named twice \(2\): '.*' in rows 1 and 2"
    if name == "live_yt_hfr":
        path = os.path.join(root, "subjective_scores", "subject_MOS.csv")
        lines = open(path).read().splitlines()
        cells = lines[1].split(",")
        cells[2] = "?"
        lines[1] = ",".join(cells)
        open(path, "w").write("\n".join(lines) + "\n")
        return r"subject_MOS.csv.*'MOS' that is not a finite number \(1\): column 3: '\?'"
    if name == "waterloo_ivc_4k":
        pd.DataFrame({"File": ["a.mp4", None, "c.mp4"], "MOS": [1, 2, 3]}).to_excel(
            os.path.join(root, "MOS.xlsx"), index=False)
        return r"MOS.xlsx.*empty video name \(1\): row 2"
    if name == "kvq":
        edit_csv("train_data.csv", lambda t: t.rename(columns={"score": "quality"}))
        return r"train_data.csv: no column 'score' or 'mos'"
    raise AssertionError(name)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 3-second clips of different scenes (64x48 at 4 fps) and the store `w2s-vqa
    prepare` makes of them with the tiny defaults (ids c0, c1, c2)."""
    from w2s_vqa.config import defaults
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.store.prepare import prepare

    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(CLIPS):
        scene = rng.integers(0, 256, (1, 48, 64, 3)).astype(np.float64)
        drift = np.linspace(0, 60 * (i + 1), 12)[:, None, None, None]
        frames = np.clip(scene + drift + rng.normal(0, 8 * i, (12, 48, 64, 3)), 0, 255).astype(np.uint8)
        paths.append(str(root / f"c{i}.mp4"))
        video.write_video(paths[-1], frames, 4.0)
    pd.DataFrame({"path": paths, "id": [f"c{i}" for i in range(CLIPS)]}).to_csv(root / "manifest.csv", index=False)
    config = defaults()
    config.data.distortions = ""
    prepare(config, str(root / "manifest.csv"), str(root / "store"), workers=0, progress=False)
    return paths, VideoStore(str(root / "store"))


@pytest.fixture(scope="module")
def built(clips, tmp_path_factory):
    """Every set's miniature release under manual/<set>/, built with TFDS into data/."""
    root = tmp_path_factory.mktemp("tfds")
    manual, data_dir = root / "manual", root / "data"
    expected = {}
    for name in datasets.NAMES:
        expected[name] = _release(name, str(manual / name), clips[0])
        datasets.build(name, str(manual), FULL, data_dir=str(data_dir))
    return {"manual": str(manual), "data_dir": str(data_dir), "expected": expected, "root": root}


# ----------------------------------------------------------------------------- the builders
def test_the_builders_are_registered_under_the_papers_set_names():
    from w2s_vqa.score import overall as overall_lib

    names = [n for group in overall_lib.SET_GROUPS.values() for n in group]
    assert sorted(datasets.NAMES) == sorted(names)
    for name in names:
        assert tfds.builder_cls(name) is datasets.BUILDERS[name]
        assert name in datasets.BUILDERS[name].MANUAL_DOWNLOAD_INSTRUCTIONS or True
        assert len(datasets.paper_list(name)) == overall_lib.SET_GROUPS[
            "in_domain" if name in overall_lib.IN_DOMAIN_SETS else "out_of_distribution"][name]
    # The shipped lists are the shared ones, byte for byte, where the shared folder is beside the checkout.
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "eval_sets")
    if os.path.isdir(shared):
        lists = os.path.join(os.path.dirname(datasets.__file__), "lists")
        for name in names:
            assert open(os.path.join(lists, f"{name}.csv"), "rb").read() == \
                open(os.path.join(shared, f"{name}.csv"), "rb").read()


@pytest.mark.parametrize("name", datasets.NAMES)
def test_a_built_set_reads_through_tfds_and_grain_as_the_store_keeps_its_clips(name, built, clips):
    import grain

    expected = built["expected"][name]
    store = clips[1]
    source = tfds.data_source(f"{name}/{FULL}", split="test", data_dir=built["data_dir"])
    examples = list(grain.MapDataset.source(source))
    assert [e["id"].decode() for e in examples] == [key for key, *_ in expected]
    assert [e["video"].decode() for e in examples] == [rel for _, rel, *_ in expected]
    np.testing.assert_array_equal([e["mos"] for e in examples], [m for *_, m, _ in expected])
    np.testing.assert_array_equal([e["mos_std"] for e in examples], [s for *_, s in expected])
    assert all(np.isnan(e["paper_mos"]) for e in examples)  # the full config: no paper list
    for example, clip in zip(examples, CLIP_OF[name]):
        record = store.get(f"c{clip}")
        for key in ("frames", "frame_mask", "motion", "motion_mask"):
            np.testing.assert_array_equal(example[key], record[key], err_msg=f"{name}: {key}")
        assert example["frames"].shape == (4, 32, 32, 3) and example["frames"].dtype == np.uint8
        assert (example["width"], example["height"], example["rotation"]) == (64, 48, 0)
        assert example["fps"] == pytest.approx(4.0) and example["duration"] == pytest.approx(record["duration"])

    # The store's reading API over the same files: what the scorer and the pipeline read.
    reader = datasets.TfdsVideoSource(name, FULL, data_dir=built["data_dir"])
    assert reader.ids == [key for key, *_ in expected] and reader.unknown_ids(["nope", reader.ids[0]]) == ["nope"]
    assert (reader.num_frames, reader.image_size, reader.num_motion_chunks, reader.motion_dim) == (4, 32, 4, 256)
    for key, clip in zip(reader.ids, CLIP_OF[name]):
        got, want = reader.get(key), store.get(f"c{clip}")
        for array in ("frames", "frame_mask", "motion", "motion_mask"):
            np.testing.assert_array_equal(got[array], want[array])
    table = reader.mos_table()
    assert table["file"].tolist() == reader.ids and table["row"].tolist() == list(range(1, len(expected) + 1))


@pytest.mark.parametrize("name", datasets.NAMES)
def test_a_missing_video_and_a_malformed_metadata_file_are_named(name, built, tmp_path):
    release = tmp_path / name
    shutil.copytree(os.path.join(built["manual"], name), release)
    key, rel, *_ = built["expected"][name][1]
    os.remove(release / rel)
    count = len(built["expected"][name])
    # Named by its path where the layout fixes one, else by its name (found anywhere below).
    with pytest.raises(datasets.MissingVideosError, match=rf"{name}: 1 of the {count} full videos are not in the "
                                                          rf"manual download {re.escape(str(release))}: "
                                                          rf"'(?:[^']*/)?{re.escape(os.path.basename(rel))}'"
                       ) as caught:
        datasets.build(name, str(release), FULL, data_dir=str(tmp_path / "data"))
    assert caught.value.missing == [key]
    assert not os.path.exists(tmp_path / "data" / name / FULL / "1.0.0")  # refused before any example is written

    pattern = _corrupt(name, str(release))
    with pytest.raises(datasets.MetadataError, match=f"(?s){name}: .*{pattern}"):
        datasets.build(name, str(release), FULL, data_dir=str(tmp_path / "data"))


def test_the_papers_list_is_checked_against_the_download_in_one_message(built, tmp_path):
    # A KVQ release whose train_data.csv names every video of the paper's list but holds 3 of them.
    listed = datasets.paper_list("kvq")
    release = tmp_path / "kvq"
    shutil.copytree(os.path.join(built["manual"], "kvq"), release)
    _csv(str(release / "train_data.csv"), ["filename", "score"], [(f"train/{f}", 3.0) for f in listed["file"]])
    missing = len(listed) - 3
    with pytest.raises(datasets.MissingVideosError, match=rf"kvq: {missing} of the {len(listed)} paper videos are not "
                                                          rf"in the manual download .*'train/0004.mp4'.* and "
                                                          rf"{missing - metadata.MAX_NAMED} more") as caught:
        datasets.build("kvq", str(release), "tiny", data_dir=str(tmp_path / "data"))
    assert len(caught.value.missing) == missing
    chosen = datasets.select("kvq", str(built["manual"]) + "/kvq", "full")
    assert chosen["key"].tolist() == listed["file"].tolist()[:3]
    # The miniature's own metadata lacks the list's other videos: named as such, with the way out.
    with pytest.raises(datasets.MetadataError, match=r"2923 of the paper's 2926 listed videos are not in the metadata "
                                                     r"file .*`w2s-vqa eval --subset full`.*'tiny_full'"):
        datasets.select("kvq", os.path.join(built["manual"], "kvq"), "paper")


def test_an_empty_mos_cell_is_named_empty(built, tmp_path):
    release = tmp_path / "kvq"
    shutil.copytree(os.path.join(built["manual"], "kvq"), release)
    table = pd.read_csv(release / "train_data.csv", dtype=str)
    table.loc[1, "score"] = None
    table.to_csv(release / "train_data.csv", index=False)
    with pytest.raises(datasets.MetadataError, match=r"'score' that is not a finite number \(1\): row 2: empty$"):
        datasets.select("kvq", str(release), "full")


def test_konvid_finds_the_older_file_names_without_the_sheets_file_name_column(built, tmp_path):
    release = tmp_path / "konvid_1k"
    shutil.copytree(os.path.join(built["manual"], "konvid_1k"), release)
    sheet = release / "KoNViD_1k_metadata" / "KoNViD_1k_attributes.csv"
    pd.read_csv(sheet, dtype=str).drop(columns="file_name").to_csv(sheet, index=False)
    expected = built["expected"]["konvid_1k"]
    old = expected[-1][1]
    assert old.endswith("_original_centercrop_960x540_8s.mp4")  # the miniature keeps one video under that name
    chosen = datasets.select("konvid_1k", str(release), "full")
    assert chosen["video"].tolist() == [rel for _, rel, *_ in expected]
    # Two candidates for one id: neither is guessed; the error's layout names the older naming.
    shutil.copyfile(release / old, release / "KoNViD_1k_videos" / f"{expected[-1][0][:-4]}_copy.mp4")
    with pytest.raises(datasets.MissingVideosError, match=r"1 of the 3 full videos .*expected layout: .*"
                                                          r"<flickr_id>_original_centercrop_960x540_8s.mp4"):
        datasets.select("konvid_1k", str(release), "full")


def test_eval_sets_rebuild_a_set_whose_metadata_changed_since_it_was_built(built, tmp_path, capsys):
    """The fresh-user trial: every MOS of KoNViD's sheet reversed and the same data dir
    reused. The build is made again (one line says why) and holds the new MOS; an
    unchanged download is not rebuilt; the labels-only path reads the new sheet too."""
    from w2s_vqa.score import evaluate

    manual, data_dir = tmp_path / "manual", str(tmp_path / "data")
    shutil.copytree(os.path.join(built["manual"], "konvid_1k"), manual / "konvid_1k")
    mos = [m for *_, m, _ in built["expected"]["konvid_1k"]]

    def labels(**kwargs):
        sets = evaluate.tfds_eval_sets(["konvid_1k"], str(manual), data_dir=data_dir, subset="full", **kwargs)
        return sets[0].source.mos_table()["mos"].tolist()

    assert labels() == mos
    info = os.path.join(data_dir, "konvid_1k", FULL, "1.0.0", "dataset_info.json")
    first_build = os.stat(info).st_mtime_ns
    capsys.readouterr()
    assert labels() == mos and "rebuilding" not in capsys.readouterr().err
    assert os.stat(info).st_mtime_ns == first_build  # the same build, read again

    sheet = manual / "konvid_1k" / "KoNViD_1k_metadata" / "KoNViD_1k_attributes.csv"
    table = pd.read_csv(sheet, dtype=str)
    table["MOS"] = table["MOS"].tolist()[::-1]
    table.to_csv(sheet, index=False)
    assert labels() == mos[::-1]
    err = capsys.readouterr().err
    assert re.search(rf"rebuilding konvid_1k/{FULL} in .*: its manual download changed since it was built: 2 "
                     r"video\(s\) with another MOS", err), err  # the middle video's MOS is its own reverse
    assert labels(build=False) == mos[::-1]
    scores = [1.0, 2.0, 3.0]  # SRCC against the new labels is the old one's negative
    assert scipy.stats.spearmanr(scores, labels()).statistic == pytest.approx(
        -scipy.stats.spearmanr(scores, mos).statistic)


def test_jpeg_frames_are_kept_as_the_store_keeps_them(built, clips, tmp_path):
    """Another config (JPEG frames, no motion), as an anchor set's settings name it: examples
    hold the store's JPEG bytes, read back as the store reads them; the reader pickles."""
    import pickle

    from w2s_vqa.config import defaults
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.store.prepare import prepare

    settings = dict(num_frames=4, image_size=32, num_motion_chunks=4, motion_dim=256, motion_features="none",
                    frame_format="jpeg", jpeg_quality=80)
    config = datasets.config_for(settings, "full")
    datasets.build("kvq", os.path.join(built["manual"], "kvq"), config, data_dir=str(tmp_path / "data"))
    c = defaults()
    c.data.distortions = ""
    for key, value in settings.items():
        c.data[key] = value
    manifest = os.path.join(os.path.dirname(clips[0][0]), "manifest.csv")
    prepare(c, manifest, str(tmp_path / "store"), workers=0, progress=False)
    store = VideoStore(str(tmp_path / "store"))
    reader = pickle.loads(pickle.dumps(datasets.TfdsVideoSource("kvq", config, data_dir=str(tmp_path / "data"))))
    raw = tfds.data_source(f"kvq/{config.name}", split="test", data_dir=str(tmp_path / "data"))[0]
    assert "frames" not in raw and raw["frames_jpeg"].dtype == np.uint8 and raw["frame_sizes"].shape == (4,)
    for key, clip in zip(reader.ids, CLIP_OF["kvq"]):
        got, want = reader.get(key), store.get(f"c{clip}")
        np.testing.assert_array_equal(got["frames"], want["frames"])
        assert not got["motion_mask"].any()


def test_config_for_finds_the_named_configs_and_names_others():
    tiny = dict(num_frames=4, image_size=32, num_motion_chunks=4, motion_dim=256, motion_features="frame_stats",
                frame_format="raw", jpeg_quality=95)
    assert datasets.config_for(tiny).name == "tiny" and datasets.config_for(tiny, "full").name == "tiny_full"
    other = datasets.config_for({**tiny, "image_size": 64, "frame_format": "jpeg"})
    assert other.name == "paper_f4_s64_m4_d256_frame_stats_jpeg95_max1280x20" and other.image_size == 64
    with pytest.raises(datasets.DatasetError, match="precomputed"):
        datasets.config_for({**tiny, "motion_features": "precomputed"})


def test_the_pipeline_reads_pairs_from_a_tfds_set(built):
    from w2s_vqa.models.tiny_tokenizer import ASSET_DIR
    from w2s_vqa.pipeline import make_dataset
    from w2s_vqa.prompt import build_pair_prompt, load_tokenizer

    reader = datasets.TfdsVideoSource("konvid_1k", FULL, data_dir=built["data_dir"])
    ids = reader.ids
    pairs = pd.DataFrame({"first_id": [ids[0], ids[1]], "second_id": [ids[2], ids[0]], "label": [0, 4],
                          "origin": "teacher", "stage": 1, "weight": 1.0})
    tokenizer = load_tokenizer(ASSET_DIR)
    prompt = build_pair_prompt(tokenizer, video_token_id=tokenizer.token_to_id("<video>"), tokens_per_video=5)
    batch = next(iter(make_dataset(pairs, reader, prompt, batch_size=2, seed=0, shard_index=0, shard_count=1,
                                   num_epochs=1)))
    first = {int(i): row for row, i in enumerate(batch["pair_index"])}
    for index in (0, 1):
        row = first[index]
        np.testing.assert_array_equal(batch["pixel_values"][row, 0], reader.get(pairs["first_id"][index])["frames"])
        np.testing.assert_array_equal(batch["motion"][row, 1], reader.get(pairs["second_id"][index])["motion"])


# ----------------------------------------------------------------------------- eval --sets
def test_eval_on_two_sets_gives_the_weighted_overall_by_hand(built, tmp_path, capsys):
    expected = built["expected"]
    rng = np.random.default_rng(1)
    rows = []
    for name in ("konvid_1k", "live_vqc"):
        for key, *_ in expected[name]:
            rows.append((os.path.splitext(key)[0], "dover", float(rng.normal())))
    pd.DataFrame(rows, columns=["video_id", "teacher", "score"]).to_csv(tmp_path / "dover.csv", index=False)
    out = tmp_path / "eval"
    code = cli.main(["eval", "--sets", "konvid_1k,live_vqc", "--manual-dir", built["manual"], "--subset", "full",
                     "--teachers", str(tmp_path / "dover.csv"), "--bootstrap", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    by_id = {r[0]: r[2] for r in rows}
    srcc, counts = {}, {}
    for name in ("konvid_1k", "live_vqc"):
        mos = [m for *_, m, _ in expected[name]]
        scores = [by_id[os.path.splitext(key)[0]] for key, *_ in expected[name]]
        srcc[name] = scipy.stats.spearmanr(scores, mos).statistic
        counts[name] = len(mos)
        assert results["sets"][name]["models"]["dover"]["srcc"] == pytest.approx(srcc[name])
    overall = results["overall"]["dover"]["in_domain"]
    assert overall["videos"] == 7
    assert overall["srcc"] == pytest.approx((srcc["konvid_1k"] * 3 + srcc["live_vqc"] * 4) / 7)
    # The paper-style table: per set SRCC / PLCC, the overall, and the paper's own figures beside them.
    assert "## Paper-style table" in printed and "| DOVER (paper) | - | - | 0.842 / 0.845 | 0.519 / 0.569 |" in printed
    assert f"| dover | {srcc['konvid_1k']:.3f} / " in printed


def test_eval_scores_a_tfds_set_with_a_student_as_the_folder_path_does(built, clips, tmp_path, capsys):
    from w2s_vqa.convert import hf
    from w2s_vqa.models import config as model_config
    from w2s_vqa.models import student as student_lib
    from w2s_vqa.score.anchors import AnchorSet

    store = clips[1]
    AnchorSet.from_store(store, ["c0", "c1", "c2"], [30.0, 50.0, 70.0]).save(str(tmp_path / "anchors"))
    model = student_lib.create(model_config.preset("tiny"), seed=5)
    hf.save_student(model, str(tmp_path / "export"), tokenizer_dir=model_config.TINY_TOKENIZER)
    common = ["--hf", str(tmp_path / "export"), "--anchors", str(tmp_path / "anchors"), "--bootstrap", "0"]
    # The TFDS set (built already with the anchors' settings: nothing is decoded again) ...
    code = cli.main(["eval", *common, "--sets", "live_vqc", "--manual-dir", built["manual"],
                     "--data-dir", built["data_dir"], "--subset", "full", "--out", str(tmp_path / "tfds")])
    assert code == 0
    # ... and the same videos as a folder and a file,mos table, decoded by the eval verb.
    expected = built["expected"]["live_vqc"]
    table = tmp_path / "live_vqc.csv"
    pd.DataFrame({"file": [rel for _, rel, *_ in expected], "mos": [m for *_, m, _ in expected]}).to_csv(table,
                                                                                                       index=False)
    code = cli.main(["eval", *common, "--eval-set", "live_vqc", os.path.join(built["manual"], "live_vqc"),
                     str(table), "--out", str(tmp_path / "folder")])
    assert code == 0
    capsys.readouterr()
    from_tfds = pd.read_csv(tmp_path / "tfds" / "predictions.csv")
    from_folder = pd.read_csv(tmp_path / "folder" / "predictions.csv")
    assert len(from_tfds) == len(expected) and not (tmp_path / "tfds" / "work" / "live_vqc" / "store").exists()
    by_rel = dict(zip(from_folder["file"], from_folder["prediction"]))
    np.testing.assert_allclose(from_tfds["prediction"], [by_rel[rel] for _, rel, *_ in expected], rtol=1e-6)
    tfds_results = json.loads((tmp_path / "tfds" / "results.json").read_text())
    folder_results = json.loads((tmp_path / "folder" / "results.json").read_text())
    assert tfds_results["sets"]["live_vqc"]["models"]["student"]["srcc"] == pytest.approx(
        folder_results["sets"]["live_vqc"]["models"]["student"]["srcc"])


def test_building_and_reading_never_import_tensorflow(built):
    datasets.TfdsVideoSource("kvq", FULL, data_dir=built["data_dir"]).get(built["expected"]["kvq"][0][0])
    tfds.data_source(f"kvq/{FULL}", split="test", data_dir=built["data_dir"])[0]
    assert "tensorflow" not in sys.modules


@pytest.mark.slow
def test_stages_evaluate_each_stage_on_tfds_sets(built, clips, tmp_path):
    """stages.eval_tfds: after its training, a stage's student is scored on a built set and
    the stage table carries the set's SRCC / PLCC."""
    from w2s_vqa.config import load_config
    from w2s_vqa.labels import pair_table
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.stages import run as stages_lib

    store = clips[1]
    AnchorSet.from_store(store, ["c0", "c2"], [30.0, 70.0]).save(str(tmp_path / "anchors"))
    pair_table.write_pairs(pair_table.make_pair_table(["c0", "c1", "c2", "c0"], ["c1", "c2", "c0", "c2"],
                                                        [0, 1, 3, 4], origin="teacher", stage=1),
                            tmp_path / "pairs.parquet")
    config = load_config(None, [f"data.store='{store.path}'", f"data.pairs='{tmp_path / 'pairs.parquet'}'",
                                "data.batch_size=4", "train.num_steps=2", "train.eval_every=0",
                                "train.async_checkpoint=False", "mesh.shape=(1,1,1)", "mesh.num_devices=1",
                                f"stages.anchors='{tmp_path / 'anchors'}'", "stages.eval_tfds='live_vqc'",
                                f"stages.manual_dir='{built['manual']}'", f"stages.data_dir='{built['data_dir']}'",
                                "stages.eval_subset='full'"])
    summary = stages_lib.run_stages(config, str(tmp_path / "w"), num_stages=1, progress=False)
    figures = summary["stages"][0]["eval"]["sets"]["live_vqc"]["models"]["student"]
    assert figures["videos"] == len(built["expected"]["live_vqc"]) and np.isfinite(figures["srcc"])
    assert "live_vqc SRCC / PLCC" in (tmp_path / "w" / stages_lib.RESULTS_MD).read_text()
