"""What a resume compares of a run's data: the pair table and the store by content.

A checkpoint's data stream (train.checkpoint) saves these digests; a resumed run
recomputes them and refuses another content under the same or another path, so the
files may move but not change. The values are part of every saved checkpoint: their
recipe (SHA-256 over the files' bytes, in this order) may not change.
"""

from __future__ import annotations

import hashlib
import os

from w2s_vqa import workdir as workdir_lib


def data_fingerprints(config) -> dict[str, str]:
    """SHA-256 of the pair table file (data.pairs) and of the store's index.parquet and
    store.json (data.store): what a resume compares, so either may move to another path
    but not change. "" for a path that is not a file / store."""
    def digest(paths):
        h = hashlib.sha256()
        for path in paths:
            if not workdir_lib.path(path).is_file():  # a local file or an object (a stage's gs:// table)
                return ""
            with workdir_lib.path(path).open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()

    store = str(config.data.store)
    return {"pairs_sha256": digest([str(config.data.pairs)]),
            "store_sha256": digest([os.path.join(store, "index.parquet"), os.path.join(store, "store.json")])}
