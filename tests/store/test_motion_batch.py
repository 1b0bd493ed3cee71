"""Batched motion features (w2s_vqa.store.motion_batch) with the real SlowFast fast pathway.

Random weights (BatchNorm as initialized) at 8 frames of 32x32, so that compiling stays
cheap: what is checked is the batching, against the same network run one video at a time.
"""

import numpy as np
import pytest

from w2s_vqa.bench.slowfast import _random_weights
from w2s_vqa.models import slowfast
from w2s_vqa.store.motion_batch import MotionThroughput, batched_features, worker_extractor


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "fast.safetensors"
    _random_weights(str(path), np.random.default_rng(0))
    return slowfast.Extractor(slowfast.load(path), max_batch=4)


def _video(rng, used: int, slots: int = 4, size: int = 32):
    chunks = np.zeros((slots, 8, size, size, 3), np.uint8)
    chunks[:used] = rng.integers(0, 256, (used, 8, size, size, 3), dtype=np.uint8)
    return chunks, np.arange(slots) < used


def test_batches_across_videos_in_order(extractor):
    rng = np.random.default_rng(1)
    a, b, d = _video(rng, 3), _video(rng, 0), _video(rng, 4)
    bad_mask = np.array([False, True, False, False])  # a used slot after an unused one
    throughput = MotionThroughput()
    out = list(batched_features(extractor, [("a", *a), ("b", *b), ("c", a[0], bad_mask), ("d", *d)],
                                max_chunks=4, throughput=throughput))
    assert [r.key for r in out] == ["a", "b", "c", "d"]
    # a, b and c wait (3 used chunks < 4); d brings 7: one call for all of them.
    assert (throughput.chunks, throughput.calls) == (7, 1) and throughput.seconds > 0
    assert out[2].features is None and out[2].error == "c: mask must mark the used slots first"
    for result, (chunks, mask) in zip([out[0], out[1], out[3]], [a, b, d]):
        assert result.error is None and result.features.shape == (4, 256)
        np.testing.assert_array_equal(result.mask, mask)
        used = int(mask.sum())
        assert not result.features[used:].any()  # unused slots stay zero
        if used:
            # The same network on this video's chunks alone. Batch composition changes how XLA
            # groups the sums, so float32 rounding may differ: a tolerance, not equality.
            np.testing.assert_allclose(result.features[:used], extractor(chunks[:used]), rtol=1e-5, atol=1e-6)
    assert "7 SlowFast chunks" in throughput.summary() and "1 calls" in throughput.summary()


def test_other_sizes_and_bad_chunks_never_share_a_call(extractor):
    rng = np.random.default_rng(2)
    small, large = _video(rng, 2), _video(rng, 2, size=48)
    throughput = MotionThroughput()
    out = list(batched_features(extractor, [("s", *small), ("x", small[0].astype(np.float32), small[1]),
                                            ("l", *large)], max_chunks=8, throughput=throughput))
    assert [r.key for r in out] == ["s", "x", "l"] and throughput.calls == 2 and throughput.chunks == 4
    assert out[1].error.startswith("x: chunks must be uint8 RGB [M, T, H, W, 3], got float32")
    np.testing.assert_allclose(out[2].features[:2], extractor(large[0][:2]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="max_chunks must be at least 1"):
        list(batched_features(extractor, [], max_chunks=0))


def test_throughput_adds_up_and_round_trips():
    total = MotionThroughput()
    for part in (MotionThroughput(10, 2.0, 1), MotionThroughput.from_json({"chunks": 30, "seconds": 3.0, "calls": 2}),
                 MotionThroughput.from_json(None)):
        total.add(part)
    assert total.to_json() == {"chunks": 40, "seconds": 5.0, "calls": 3}
    assert total.chunks_per_s == pytest.approx(8.0) and MotionThroughput().chunks_per_s == 0.0


def test_worker_extractor_reports_a_bad_weights_file(tmp_path):
    (tmp_path / "bad.safetensors").write_text("not safetensors")
    with pytest.raises(slowfast.WeightsError, match="(?s)bad.safetensors: 1 problem.*not a safetensors file"):
        worker_extractor(str(tmp_path / "bad.safetensors"), 4)
