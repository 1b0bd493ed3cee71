"""The data fingerprints a resume compares (train.fingerprint). Saved checkpoints hold
them, so their recipe is fixed: SHA-256 of the pair table's bytes, and of the store's
index.parquet bytes followed by its store.json bytes."""

import hashlib

from w2s_vqa.config import load_config
from w2s_vqa.train.fingerprint import data_fingerprints


def test_fingerprints_are_the_sha256_of_the_files_bytes_and_empty_for_what_is_missing(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    index, meta, pairs = b"PAR1 index rows" * 100_000, b'{"num_frames": 8}', b"PAR1 pairs"  # index: several chunks
    (store / "index.parquet").write_bytes(index)
    (store / "store.json").write_bytes(meta)
    (tmp_path / "pairs.parquet").write_bytes(pairs)
    config = load_config(None, [f"data.store='{store}'", f"data.pairs='{tmp_path / 'pairs.parquet'}'"])
    assert data_fingerprints(config) == {"pairs_sha256": hashlib.sha256(pairs).hexdigest(),
                                         "store_sha256": hashlib.sha256(index + meta).hexdigest()}
    (store / "store.json").unlink()
    config = load_config(None, [f"data.store='{store}'", f"data.pairs='{tmp_path / 'missing.parquet'}'"])
    assert data_fingerprints(config) == {"pairs_sha256": "", "store_sha256": ""}
