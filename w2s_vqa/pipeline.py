"""Grain input pipeline: pair table + video store -> fixed-shape numpy batches.

    pairs -> shuffle (reseeded every epoch) -> repeat -> global batches of pair rows
          -> this host's slice -> look up both videos -> prompt ids -> worker processes

Every batch has the same shapes, so the jitted train step compiles once:

    input_ids      [B, L]            int32    the pair prompt, identical in every row
    attention_mask [B, L]            int32
    pixel_values   [B, 2, F, S, S, 3] uint8   first video, second video
    frame_mask     [B, 2, F]         bool     False where a clip is shorter than F seconds
    motion         [B, 2, M, D]      float32  per-second motion features
    motion_mask    [B, 2, M]         bool     False where a chunk has no features
    label          [B]               int32    index into prompt.LEVELS
    target         [B, 5]            float32  soft five-way target from the teachers' d and s_d
                                              (rules.soft_five_way_targets); one-hot label
                                              where a pair has no d (synthetic, student)
    weight         [B]               float32
    origin         [B]               int32    index into ORIGINS
    pair_index     [B]               int64    row of the pair in the pair table

Every host walks the same shuffled stream of global batches (batch_size x hosts
pairs) and loads only its own contiguous slice of each: no host sees another's
pairs, none needs to talk to the others, and the global batch at each step does
not depend on how many hosts share it, so one process with 8 devices and two
with 4 train on the same batches (and a run can resume on another host count). A training
checkpoint keeps the stream's position, the global batches consumed; `make_dataset(...,
start=position)` continues there exactly, with any worker or host count (Grain's own
iterator state would tie the resume to the worker count that saved it).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Sequence

import grain
import numpy as np
import pandas as pd

from w2s_vqa.labels import pair_table
from w2s_vqa.labels import rules as label_rules
from w2s_vqa.prompt import LEVELS
# A batch's `origin` indexes labels.origins.ORIGINS; origin_codes maps origin strings to those codes.
from w2s_vqa.labels.origins import origin_codes
from w2s_vqa.store.format import VideoStore
from w2s_vqa.store.settings import Settings
from w2s_vqa.prompt import PairPrompt


class MissingVideosError(pair_table.PairTableError):
    """Pairs name videos the store does not hold; `.ids` lists all of them. The message
    is the table's whole report: other problems of the table are in it too."""

    def __init__(self, message: str, ids: list[str]):
        super().__init__(message, ids)
        self.ids = ids


# The config keys every training run needs, with the value each names, for the error
# that says which is unset and how to set it.
REQUIRED_INPUTS = {
    "data.store": ("DIR", "the video store (`w2s-vqa prepare --out DIR`)"),
    "data.pairs": ("TABLE", "the training pair table (`w2s-vqa pairs --out DIR` writes DIR/pairs_train.parquet)"),
}


def require_inputs(values: dict[str, Any]) -> None:
    """ConfigError naming every key of REQUIRED_INPUTS whose value in `values` is unset
    (None or an empty string), what it names and how to set it (`--set KEY=VALUE`).

    Without it an unset data.store reads as the store at "" and an unset data.pairs as
    a table of unknown format ''.
    """
    from w2s_vqa.config import ConfigError

    unset = [key for key in REQUIRED_INPUTS if values.get(key) is None
             or (isinstance(values.get(key), (str, os.PathLike)) and not os.fspath(values[key]).strip())]
    if unset:
        raise ConfigError("; ".join(f"{key} is not set: it names {REQUIRED_INPUTS[key][1]}; set it with "
                                    f"--set {key}={REQUIRED_INPUTS[key][0]} (or in the config file)" for key in unset))


def check_store_fits(store: VideoStore | str | os.PathLike, data_config) -> None:
    """ConfigError when the store's videos are not made as `data_config` (config.data) says
    the student reads them, naming every differing setting (store.settings.Settings: frames,
    frame size, motion chunks and width, motion kind, frame format, decoding caps). Without
    it a run on a store prepared with other settings would fail deep in the model, pad and
    crop its videos silently, or learn from inputs it is never scored on."""
    from w2s_vqa.config import ConfigError

    store = store if isinstance(store, VideoStore) else VideoStore(store)
    Settings.from_config(data_config).check_fits(store.settings, mine="the config", theirs="the store's videos",
                                                 where=store.path, error=ConfigError)


def soft_targets(table: pd.DataFrame) -> np.ndarray:
    """[N, 5] targets for the soft-target objective: from d and s_d where a row has both,
    else the one-hot label."""
    targets = np.eye(len(LEVELS), dtype=np.float32)[table["label"].to_numpy(np.int64)]
    if "d" in table and "s_d" in table:
        d, s_d = table["d"].to_numpy(np.float64), table["s_d"].to_numpy(np.float64)
        known = np.isfinite(d) & np.isfinite(s_d)
        if known.any():
            targets[known] = label_rules.soft_five_way_targets(d[known], s_d[known])
    return targets


class _PairSource:
    """Random access to pair rows as numpy scalars (what Grain's source needs)."""

    def __init__(self, table: pd.DataFrame):
        self._first = table["first_id"].astype(str).to_numpy(dtype=object)
        self._second = table["second_id"].astype(str).to_numpy(dtype=object)
        self._label = table["label"].to_numpy(np.int32)
        self._target = soft_targets(table)
        self._weight = table["weight"].to_numpy(np.float32)
        self._origin = origin_codes(table["origin"])

    def __len__(self) -> int:
        return len(self._first)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "first_id": self._first[index],
            "second_id": self._second[index],
            "label": self._label[index],
            "target": self._target[index],
            "weight": self._weight[index],
            "origin": self._origin[index],
            "pair_index": np.int64(index),
        }


NUM_VIEWS = 8  # the square's symmetries: four quarter turns, each mirrored or not
CHANNEL_ORDERS = tuple(itertools.permutations(range(3)))  # RGB channel orders, identity first
# What `augment` may name; each changes content and keeps every pair's label true:
#   views     one of the square frame's NUM_VIEWS symmetric views, both videos alike
#   channels  one of the six orders of the RGB channels, both videos alike
#   swap      the two videos in either order, the label (and soft target) mirrored
AUGMENTATIONS = ("views", "channels", "swap")


def parse_augment(augment: bool | str | Sequence[str]) -> tuple[str, ...]:
    """`augment` as a tuple of AUGMENTATIONS: True is all of them, False or "" none, a
    string is a comma-separated list."""
    if isinstance(augment, (bool, np.bool_)):
        return AUGMENTATIONS if augment else ()
    names = [n.strip() for n in augment.split(",")] if isinstance(augment, str) else list(augment)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; known: {list(AUGMENTATIONS)}")
    return tuple(n for n in AUGMENTATIONS if n in names)


class _Augment(grain.transforms.RandomMap):
    """Draws each pair's augmentation (seeded by the pair's place in the stream, so a
    resumed run draws the same ones). A swap is done here, on the row; the view and the
    channel order are applied to the pixels when they are read."""

    def __init__(self, kinds: tuple[str, ...]):
        self._kinds = kinds

    def random_map(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        view, channels, swap = rng.integers(NUM_VIEWS), rng.integers(len(CHANNEL_ORDERS)), rng.integers(2)
        row = {**row, "view": int(view) if "views" in self._kinds else 0,
               "channels": int(channels) if "channels" in self._kinds else 0}
        if "swap" in self._kinds and swap:
            row = label_rules.swap_pair(row)
        return row


def apply_view(frames: np.ndarray, view: int) -> np.ndarray:
    """frames [..., H, W, C] turned `view % 4` quarter turns, then mirrored if `view >= 4`."""
    turned = np.rot90(frames, view % 4, axes=(-3, -2))
    return np.ascontiguousarray(turned[..., ::-1, :] if view >= 4 else turned)


class _LoadHostSlice(grain.transforms.Map):
    """A global batch of pair rows -> this host's slice as a batch: both videos read from
    the store, the shared prompt ids."""

    def __init__(self, store: VideoStore, input_ids: np.ndarray, attention_mask: np.ndarray,
                 shard_index: int, batch_size: int):
        self._store = store
        self._input_ids = input_ids
        self._attention_mask = attention_mask
        self._rows = slice(shard_index * batch_size, (shard_index + 1) * batch_size)

    def map(self, pairs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        examples = [self._load(pair) for pair in pairs[self._rows]]
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}

    def _load(self, pair: dict[str, Any]) -> dict[str, np.ndarray]:
        first = self._store.get(pair["first_id"])
        second = self._store.get(pair["second_id"])
        pixels = np.stack([first["frames"], second["frames"]])
        if pair.get("view"):  # both videos alike: a pair of one source stays aligned
            pixels = apply_view(pixels, pair["view"])
        if pair.get("channels"):
            pixels = np.ascontiguousarray(pixels[..., CHANNEL_ORDERS[pair["channels"]]])
        return {
            "input_ids": self._input_ids,
            "attention_mask": self._attention_mask,
            "pixel_values": pixels,
            "frame_mask": np.stack([first["frame_mask"], second["frame_mask"]]),
            "motion": np.stack([first["motion"], second["motion"]]),
            "motion_mask": np.stack([first["motion_mask"], second["motion_mask"]]),
            "label": pair["label"],
            "target": pair["target"],
            "weight": pair["weight"],
            "origin": pair["origin"],
            "pair_index": pair["pair_index"],
        }


def load_pair_table(pairs: pd.DataFrame | str | os.PathLike, store: VideoStore | None = None) -> pd.DataFrame:
    """A checked pair table from a DataFrame or a file `pair_table.write_pairs` understands.

    With `store`, ids the store does not hold are among the problems, so one error lists
    every problem of the table (`pairs.validate_pair_table`); when there are such ids,
    the error is a MissingVideosError whose `.ids` lists them all.
    """
    known = None if store is None else store.ids
    try:
        if isinstance(pairs, pd.DataFrame):
            pair_table.validate_pair_table(pairs, known_ids=known)
            return pairs.reset_index(drop=True)
        return pair_table.read_pairs(pairs, known_ids=known)
    except pair_table.PairTableError as e:
        if e.unknown_ids and not isinstance(e, MissingVideosError):
            raise MissingVideosError(f"{e}\n  (the store: {store.path})", e.unknown_ids) from None
        raise


def make_dataset(pairs: pd.DataFrame | str | os.PathLike, store: VideoStore | str | os.PathLike,
                 prompt: PairPrompt, *, batch_size: int, seed: int, shard_index: int | None = None,
                 shard_count: int | None = None, num_epochs: int | None = None, worker_count: int = 0,
                 read_threads: int = 2, max_length: int | None = None,
                 augment: bool | str | Sequence[str] = False, start: int = 0) -> grain.IterDataset:
    """The batched pipeline for one host.

    pairs: a pair table (see w2s_vqa.labels.pair_table) or its path; store: a VideoStore or its
    directory; prompt: `build_pair_prompt` output, whose tokens_per_video the student
    chose. batch_size is this host's share of the global batch (batch_size x
    shard_count). shard_index/shard_count default to this JAX process and the process count.
    num_epochs None repeats forever (train by step count); batches may span epochs and
    a last partial batch is dropped. worker_count > 0 reads in that many processes;
    read_threads is per process. max_length pads the prompt (default: its length).
    augment (`parse_augment`: True, False, or names from AUGMENTATIONS) draws afresh, per
    pair and epoch, a symmetric view of the frame, an order of the RGB channels (both
    videos alike) and the order of the two videos: quality does not change under them,
    content does, which keeps a small pool of sources from being memorized.
    start skips that many global batches: the stream begins at its batch `start`, the same
    batch whatever worker_count and shard_count are (how a resumed run continues).
    """
    if isinstance(store, (str, os.PathLike)):
        store = VideoStore(store)
    if shard_index is None or shard_count is None:
        sharding = grain.sharding.ShardByJaxProcess()
        shard_index, shard_count = sharding.shard_index, sharding.shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} is not in 0..{shard_count - 1}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")

    table = load_pair_table(pairs, store)
    input_ids, attention_mask = prompt.padded(max_length or prompt.length)

    global_batch = batch_size * shard_count
    if len(table) < global_batch:
        raise ValueError(f"the pair table has {len(table)} pairs, fewer than one global batch of {global_batch}")
    dataset = grain.MapDataset.source(_PairSource(table)).shuffle(seed=seed).repeat(num_epochs)
    kinds = parse_augment(augment)
    if kinds:  # store frames are image_size x image_size
        dataset = dataset.random_map(_Augment(kinds), seed=seed)
    dataset = (dataset.batch(global_batch, drop_remainder=True, batch_fn=list)
               .map(_LoadHostSlice(store, input_ids, attention_mask, shard_index, batch_size)))
    if start:
        # A slice of the random-access dataset, before the worker split: Grain's iterator state
        # would tie a resume to the worker count that saved it.
        dataset = dataset[int(start):]
    # The default prefetch buffer (500 elements) would hold 500 batches of video.
    read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
    iterable = dataset.to_iter_dataset(read_options)
    if worker_count > 0:
        _let_grain_read_absl_flags()
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iterable


def _let_grain_read_absl_flags() -> None:
    """Grain reads absl flags when it starts workers (with JAX loaded), and absl refuses
    reads before parsing; programs not started by absl.app never parse. Defaults it is."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_iterator(*args, **kwargs) -> grain.DatasetIterator:
    """`iter(make_dataset(...))`: call `get_state()` / `set_state()` on it to checkpoint."""
    return iter(make_dataset(*args, **kwargs))
