"""The store format: records round-trip, frames survive their codecs, the reader refuses
what is not a finished store, and reading needs none of the writing side's imports."""

import json
import subprocess
import sys

import numpy as np
import pytest

from w2s_vqa.store import format as store_format
from w2s_vqa.store.format import StoreError, VideoStore, decode_frames, decode_record, encode_frames, encode_record


def test_records_round_trip_and_refuse_what_they_cannot_hold():
    arrays = {"frames": np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3), "mask": np.array([True, False]),
              "motion": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)}
    data = encode_record({"id": "a", "level": 2}, arrays)
    assert data == encode_record({"level": 2, "id": "a"}, arrays)  # deterministic
    meta, back = decode_record(data)
    assert meta == {"id": "a", "level": 2}
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype
    with pytest.raises(TypeError, match="unsupported dtype"):
        encode_record({}, {"x": np.array(["text"], dtype=object)})
    with pytest.raises(StoreError, match="magic"):
        decode_record(b"PK\x03\x04" + data[4:])


def test_frames_round_trip_exactly_raw_and_closely_as_jpeg_masked_slots_black():
    rng = np.random.default_rng(0)
    # Smooth frames: JPEG's error on noise would say nothing about the round trip.
    ramp = np.linspace(0, 255, 16, dtype=np.float32)
    frames = np.stack([np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128 + 0 * ramp[None, :]), -1)
                       + rng.integers(-8, 8, (1, 1, 3)) for _ in range(3)]).clip(0, 255).astype(np.uint8)
    mask = np.array([True, True, False])
    raw = encode_frames(frames, mask, "raw", 90)
    np.testing.assert_array_equal(decode_frames(raw, 3, 16), frames)
    jpeg = encode_frames(frames, mask, "jpeg", 95)
    assert jpeg["frame_sizes"].tolist()[2] == 0 and len(jpeg["frames_jpeg"]) == jpeg["frame_sizes"].sum()
    back = decode_frames(jpeg, 3, 16)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back[:2].astype(int) - frames[:2]).max() <= 8
    assert not back[2].any()


def test_an_unfinished_or_foreign_store_cannot_be_opened(tmp_path):
    with pytest.raises(StoreError, match="not a video store"):
        VideoStore(tmp_path)
    (tmp_path / store_format.STORE_FILE).write_text(json.dumps({"version": store_format.STORE_VERSION}))
    with pytest.raises(StoreError, match="incomplete"):
        VideoStore(tmp_path)
    (tmp_path / store_format.INDEX_FILE).write_bytes(b"")
    (tmp_path / store_format.STORE_FILE).write_text(json.dumps({"version": store_format.STORE_VERSION + 1}))
    with pytest.raises(StoreError, match=f"store version {store_format.STORE_VERSION + 1}, this code reads"):
        VideoStore(tmp_path)


def test_reading_a_store_imports_nothing_of_the_writing_side():
    """Grain worker processes import the format module; decoding, simulators and JAX stay out."""
    code = ("import sys, w2s_vqa.store.format; "
            "print([m for m in ('av', 'scipy', 'jax', 'PIL', 'w2s_vqa.video', 'w2s_vqa.store.prepare', "
            "'w2s_vqa.store.sources') if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
