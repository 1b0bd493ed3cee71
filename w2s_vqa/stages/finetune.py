"""MOS fine-tuning: a weak-to-strong student trained further on pairs of one MOS-labeled set,
evaluated on held-out videos of that set, over N random splits (`w2s-vqa finetune`).

METHOD.md (MOS fine-tuning, Compare2Score's recipe): pairs within one labeled set, labelled
by the five-way rule from MOS differences; random 80/20 splits by video; the field reports
the median over 10 splits. In a work directory W:

    W/finetune.json     what the run is (checkpoint and step, the set's table digest, the
                        split and pair settings, the config): a rerun that changes any
                        of them but SAFE_KEYS (more splits among them) is refused, naming
                        every difference; so is a work directory of `w2s-vqa stages`
    W/manifest.csv      the set's videos (id = the table's `file`), decoded once into
    W/store/            a store made with the weak-to-strong run's data settings (frames,
                        image size, motion features), pristine only
    W/split_NN/         per split s (labels.mos_pairs.split_by_video):
        train_pairs.parquet  MOS pairs among the training videos (labels.mos_pairs)
        test_pairs.parquet   MOS pairs among the test videos: validation while training
                             (config.evals "val"), never used to choose a checkpoint
        anchors/             K anchors picked among the TRAINING videos by their MOS
                             (score.anchors.pick_anchors): a test video is never an anchor
        train/               the Trainer's run: step 0 = the weak-to-strong checkpoint's
                             parameters (train.init_from), a fresh optimizer unless
                             finetune.fresh_optimizer is False
        w2s_scores.csv       the test videos scored by the weak-to-strong checkpoint and
        finetuned_scores.csv by the split's final student, against the split's anchors
                             (score.scorer, Thurstone scores on the anchors' MOS scale)
        eval/                score.evaluate's report of both on the test videos: SRCC,
                             PLCC, KRCC, fitted PLCC, intervals, plots
        result.json          the split's figures; written last: its presence marks the
                             split finished, and a rerun skips it
    W/results.json      every split's figures before and after, and their MEDIAN over the
    W/results.md        splits (the headline), rewritten after each split

Resuming: rerun the same command. The store keeps its finished shards, finished splits are
skipped, a split killed while training resumes from its own latest checkpoint (Trainer),
and scoring resumes shard by shard (score_store's parts). Raising finetune.splits (or
--splits) later adds splits: split s is the same draw whatever the number of splits.

Multi-host: every process runs this function; process 0 decodes the videos and writes
tables, the others wait for it (the work directory must be on a shared file system, as a
training run's is); training and scoring run on all processes.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
from typing import Any, Sequence

import ml_collections
import numpy as np
import pandas as pd

from w2s_vqa import config as config_lib
from w2s_vqa.labels import mos_pairs as mos_pairs_lib
from w2s_vqa.labels import origins
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.labels import pairs as pair_tables
from w2s_vqa.score import evaluate as evaluate_lib
from w2s_vqa.score.anchors import RULE as ANCHOR_RULE, DEFAULT_COVERAGE, AnchorError, AnchorSet, pick_anchors
from w2s_vqa.tables import read_csv

RUN_FILE = "finetune.json"
MANIFEST_FILE = "manifest.csv"
STORE_DIR = "store"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
SPLIT_RESULT = "result.json"
TRAIN_PAIRS = "train_pairs.parquet"
TEST_PAIRS = "test_pairs.parquet"
# The two rows of every split: the weak-to-strong checkpoint as given, and after fine-tuning.
BEFORE, AFTER = "w2s", "finetuned"
MODELS = (BEFORE, AFTER)
# The figures reported per split and as medians (score.metrics.mos_metrics' names).
FIGURES = ("srcc", "plcc", "krcc", "plcc_fitted")
# Data settings a fine-tuning run takes from the weak-to-strong run: they define the
# student's inputs and its architecture, which the checkpoint's parameters must fit.
RUN_KEYS = ("model.preset", "model.hf_dir", "model.tokenizer", "data.num_frames", "data.image_size",
            "data.num_motion_chunks", "data.motion_dim", "data.motion_features", "data.slowfast_weights",
            "data.frame_format", "data.jpeg_quality")
# Smallest test side: a correlation needs 2 videos.
MIN_TEST_VIDEOS = 2
# Config keys a rerun in the same work directory may change (RUN_FILE keeps the rest): those
# a training run may change on resume (config.RESUME_SAFE_KEYS) but the fine-tuning settings,
# which make other pairs and other training; more splits may be asked for (split s is the
# same draw whatever their number). data.store, data.pairs and train.best_metric are each
# split's own (split_config); the two num_steps keys are compared as the steps per split
# they give (_steps); seed, train_fraction, pairs_per_video and mos_std_fraction also stand
# in the run's identity (`spread`: unused where the table has a standard deviation column).
SAFE_KEYS = tuple(k for k in config_lib.RESUME_SAFE_KEYS if k != "finetune.*") + (
    "finetune.splits", "data.store", "data.pairs", "train.best_metric", "train.num_steps", "finetune.num_steps",
    "seed", "finetune.train_fraction", "finetune.pairs_per_video", "finetune.mos_std_fraction")
# The run's identity keys as a message names them: the option or config key that sets each.
IDENTITY_NAMES = {"checkpoint": "--checkpoint", "step": "--step", "set": "--name",
                  "table_sha256": "--mos (the table's sha256)", "seed": "seed",
                  "train_fraction": "finetune.train_fraction", "pairs_per_video": "finetune.pairs_per_video",
                  "spread": "MOS spread (a mos_std column, or finetune.mos_std_fraction)", "anchors": "--anchors"}


class FinetuneError(ValueError):
    """Fine-tuning inputs that cannot be used; the message names the file, row, split or setting."""


def check_inputs(config: ml_collections.ConfigDict, workdir: str, *, splits: int | None = None,
                 anchors_k: int = 5) -> None:
    """What can be checked before any work: the finetune.* settings, `splits` (--splits,
    when given: it replaces finetune.splits), `anchors_k` (--anchors), and that `workdir`
    is not another verb's.

    Raises config.ConfigError, one line naming every key (or option) out of range with its
    value and the valid range: finetune.num_steps an integer >= 0 (0: train.num_steps,
    then an integer >= 1), finetune.splits (or --splits) an integer >= 1,
    finetune.train_fraction in (0, 1), finetune.pairs_per_video and
    finetune.mos_std_fraction finite numbers > 0, finetune.fresh_optimizer a bool,
    --anchors an integer >= 2; FinetuneError for a work directory that holds a
    `w2s-vqa stages` run (its stages.json or stage_1/).
    """
    from w2s_vqa.stages import run as stages_run

    ft = config.finetune
    bad = []

    def integer(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

    def number(value) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
            and math.isfinite(float(value))

    steps = ft.get("num_steps")
    if not integer(steps) or steps < 0:
        bad.append(f"finetune.num_steps = {steps!r} (an integer >= 0: steps per split; 0 = train.num_steps)")
    elif steps == 0 and (not integer(config.train.num_steps) or config.train.num_steps < 1):
        bad.append(f"train.num_steps = {config.train.num_steps!r} (an integer >= 1: the steps per split while "
                   "finetune.num_steps is 0)")
    name, value = ("--splits", splits) if splits is not None else ("finetune.splits", ft.get("splits"))
    if not integer(value) or value < 1:
        bad.append(f"{name} = {value!r} (an integer >= 1: random splits by video)")
    value = ft.get("train_fraction")
    if not number(value) or not 0 < value < 1:
        bad.append(f"finetune.train_fraction = {value!r} (a number in (0, 1), both ends excluded: the share of a "
                   "set's videos each split trains on)")
    for key, what in (("pairs_per_video", "training pairs drawn per training video"),
                      ("mos_std_fraction", "a video's MOS spread as a fraction of the MOS range")):
        value = ft.get(key)
        if not number(value) or not value > 0:
            bad.append(f"finetune.{key} = {value!r} (a number > 0: {what})")
    value = ft.get("fresh_optimizer")
    if not isinstance(value, (bool, np.bool_)):
        bad.append(f"finetune.fresh_optimizer = {value!r} (True or False)")
    if not integer(anchors_k) or anchors_k < 2:
        bad.append(f"--anchors = {anchors_k!r} (an integer >= 2: a scale needs at least two anchors)")
    if bad:
        raise config_lib.ConfigError(f"finetune: {len(bad)} setting(s) out of range: {'; '.join(bad)}")
    held = [name for name in (stages_run.RUN_FILE, stages_run.STAGE_DIR.format(1) + "/")
            if os.path.exists(os.path.join(workdir, name.rstrip("/")))]
    if held:
        raise FinetuneError(f"{workdir}: holds a `w2s-vqa stages` run ({', '.join(held)}); give finetune another "
                            "--workdir")


def split_dir(workdir: str, split: int) -> str:
    """W/split_NN (NN from 00)."""
    return os.path.join(workdir, f"split_{split:02d}")


# ----------------------------------------------------------------------------- inputs
def read_set(videos: str, mos_table: str, name: str) -> pd.DataFrame:
    """A MOS-labeled set: columns id (= file: the store id), file (as the table names it),
    mos (float64), row (data rows from 1), path (absolute), and mos_std (float64) when the
    table has a standard deviation column (labels.mos_pairs.MOS_STD_COLUMNS, under its own
    name).

    A row's `file` names a video relative to `videos`, with or without its extension (as
    `w2s-vqa anchors` reads a MOS table): a name no file has is the one file of that
    folder whose name without extension it is (_locate).

    Raises FinetuneError for a set name that cannot name files, EvalError (score.evaluate)
    naming the table's videos the folder lacks, FinetuneError naming the rows whose name
    without extension fits several files (and the files), AnchorError for rows whose MOS
    is not a number or files named twice (score.anchors.read_mos_table), and FinetuneError
    naming the rows whose standard deviation is not a number >= 0.
    """
    if not name or not name.strip() or "/" in name or name != name.strip():
        raise FinetuneError(f"--name {name!r}: a set name is a non-empty word without '/' (it names files)")
    table = evaluate_lib.read_eval_set(evaluate_lib.EvalSet(name, videos, mos_table), check_files=False)
    table["path"] = _locate(table, videos, mos_table)
    table.insert(0, "id", table["file"])
    raw = read_csv(mos_table, what="MOS table", error=FinetuneError)
    column = mos_pairs_lib.std_column(list(raw.columns))
    if column is not None:
        values = raw[column].astype(object).where(raw[column].notna(), "")
        std = pd.to_numeric(raw[column], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~(np.isfinite(std) & (std >= 0)))
        if len(bad):
            shown = "; ".join(f"row {i + 1}: {values.iloc[i]!r}" for i in bad[:10])
            raise FinetuneError(f"{mos_table}: {len(bad)} row(s) have a {column} (the video's MOS standard "
                                f"deviation) that is not a number >= 0 ({shown}); fix them or drop the column to "
                                "use the constant spread (finetune.mos_std_fraction)")
        table[column] = std[table["row"].to_numpy() - 1]
    return table


def _locate(table: pd.DataFrame, videos: str, mos_table: str) -> list[str]:
    """Each row's video file (absolute path): table["path"] where that file exists, else the
    one file in its folder whose name without extension is the row's name (a `file` of
    `clip01` is `clip01.mp4`). Raises EvalError naming the rows no file fits, and
    FinetuneError naming the rows several files fit, with those files."""
    if not os.path.isdir(videos):
        raise evaluate_lib.EvalError(f"{videos}: no such folder of videos")
    listed: dict[str, list[str]] = {}
    paths, missing, ambiguous = [], [], []
    for file, row, path in zip(table["file"], table["row"], table["path"]):
        if os.path.isfile(path):
            paths.append(path)
            continue
        folder, stem = os.path.split(path)
        if folder not in listed:  # a folder is listed once, and only when a row's name misses
            listed[folder] = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        fits = [f for f in listed[folder] if os.path.splitext(f)[0] == stem and os.path.isfile(os.path.join(folder, f))]
        if len(fits) == 1:
            paths.append(os.path.join(folder, fits[0]))
            continue
        (ambiguous if fits else missing).append((file, row, fits))
        paths.append(path)
    if missing:
        named = ", ".join(f"'{f}' (row {r})" for f, r, _ in missing[:evaluate_lib.MAX_NAMED])
        more = f" and {len(missing) - evaluate_lib.MAX_NAMED} more" if len(missing) > evaluate_lib.MAX_NAMED else ""
        raise evaluate_lib.EvalError(
            f"{mos_table}: {len(missing)} of its {len(table)} videos are not in {videos}: {named}{more}; the `file` "
            "column names videos relative to the folder, with or without their extension")
    if ambiguous:
        named = "; ".join(f"row {r}: '{f}' -> {', '.join(fits)}" for f, r, fits in ambiguous[:evaluate_lib.MAX_NAMED])
        raise FinetuneError(f"{mos_table}: {len(ambiguous)} video name(s) without extension fit more than one file "
                            f"in {videos} ({named}); name the file with its extension")
    return paths


def resolve_checkpoint(path: str, step: int | str | None) -> tuple[int, ml_collections.ConfigDict]:
    """(the step number `step` names, that run's config) of a weak-to-strong run's
    workdir (or checkpoints/ folder), reading no parameters. `step`: a number, "latest"
    (also None) or "best" (the run's train.best_metric). Raises FileNotFoundError for a
    folder without checkpoints or without `step` (listing the saved steps)."""
    from w2s_vqa.train.checkpoint import Checkpointer, checkpoint_directory, parse_step, resolve_step

    directory = checkpoint_directory(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: no such checkpoint folder (--checkpoint names a weak-to-strong run's "
                                "workdir)")
    checkpointer = Checkpointer(directory, async_save=False, read_only=True)
    try:
        best_metric = None
        if parse_step(step) == "best" and checkpointer.latest_step() is not None:
            best_metric = checkpointer.restore_config(checkpointer.latest_step()).get("train", {}).get(
                "best_metric") or None
        resolved = resolve_step(checkpointer, step, best_metric)
        return resolved, ml_collections.ConfigDict(checkpointer.restore_config(resolved))
    finally:
        checkpointer.close()


def base_config(config: ml_collections.ConfigDict, run_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """This run's config with RUN_KEYS from the weak-to-strong run's (`run_config`, its
    checkpoint's) and no variants (data.distortions ""): the store and the student are made
    as that run's, whatever --config says of them. Every other key (optimizer, steps, mesh,
    finetune.*) is this run's."""
    config = config.copy_and_resolve_references()
    for key in RUN_KEYS:
        section, name = key.split(".")
        saved = run_config.get(section, {})
        if name in saved:
            value = saved[name]
            current = config[section][name]
            config[section][name] = tuple(value) if isinstance(current, tuple) else type(current)(value)
    config.data.distortions = ""
    return config


def split_config(base: ml_collections.ConfigDict, *, store: str, train_pairs: str, test_pairs: str,
                 checkpoint: str, step: int) -> ml_collections.ConfigDict:
    """The Trainer config of one split: its pairs on the set's store, starting from the
    weak-to-strong checkpoint's parameters, finetune.num_steps (or train.num_steps) steps,
    the test pairs as the only evaluation ("val": the run's own evaluations name another
    store's videos). No checkpoint is kept or chosen for its test-pair figures
    (train.best_metric ""): what is evaluated is the split's last step."""
    c = base.copy_and_resolve_references()
    c.data.store = store
    c.data.pairs = train_pairs
    c.evals = ml_collections.ConfigDict()
    c.evals[config_lib.SHORTHAND_EVAL] = config_lib.eval_entry(pairs=test_pairs)
    c.train.best_metric = ""
    c.train.num_steps = int(c.finetune.num_steps or c.train.num_steps)
    c.train.init_from = os.path.abspath(checkpoint)
    c.train.init_step = str(int(step))
    c.train.init_optimizer = not bool(c.finetune.fresh_optimizer)
    return c


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_counts(n: int, train_fraction: float, anchors_k: int, where: str) -> None:
    n_train = min(max(int(round(train_fraction * n)), 1), max(n - 1, 1))
    n_test = n - n_train
    if n_train < max(2, anchors_k) or n_test < MIN_TEST_VIDEOS:
        raise FinetuneError(
            f"{where}: {n} video(s) split by finetune.train_fraction={train_fraction:g} give {n_train} training and "
            f"{n_test} test video(s); a split needs at least {max(2, anchors_k)} training videos ({anchors_k} "
            f"anchors) and {MIN_TEST_VIDEOS} test videos")


# ----------------------------------------------------------------------------- multi-host
def _process_index() -> int:
    import jax

    return jax.process_index()


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"w2s_vqa.finetune.{name}")


def _agree(flag: bool) -> bool:
    """Process 0's `flag` (a file it sees) on every process."""
    import jax

    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(int(flag), np.int32)))


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def _steps(config: dict) -> int:
    """The steps per split a config (its JSON) gives: finetune.num_steps, 0 = train.num_steps."""
    return int(config.get("finetune", {}).get("num_steps") or config.get("train", {}).get("num_steps") or 0)


def run_differences(saved: dict, identity: dict) -> list[str]:
    """What `identity` (this run's: the checkpoint, step, set, table digest, split and pair
    settings, and "config": the run's config JSON, base_config's) changes from `saved` (a
    RUN_FILE's): one "key: saved -> now" entry per difference, keys named as the command
    line sets them (IDENTITY_NAMES). Config keys matching SAFE_KEYS are left out
    (config.config_differences), but finetune.num_steps and train.num_steps are listed
    where the steps per split they give differ. An identity key `saved` lacks (a file
    written before the key was recorded) is not compared."""
    changes: dict[str, str] = {}
    for key, value in identity.items():
        if key != "config" and key in saved and saved[key] != value:
            name = IDENTITY_NAMES.get(key, key)
            changes[name] = f"{name}: {saved[key]!r} -> {value!r}"
    old, new = saved.get("config"), identity.get("config")
    if old is not None and new is not None:
        for entry in config_lib.config_differences(old, new, allowed=SAFE_KEYS):
            changes.setdefault(entry.split(":", 1)[0], entry)
        if _steps(old) != _steps(new):
            for section in ("finetune", "train"):
                was, now = old.get(section, {}).get("num_steps"), new[section]["num_steps"]
                if was != now:
                    changes[f"{section}.num_steps"] = f"{section}.num_steps: {was!r} -> {now!r}"
    return [changes[k] for k in sorted(changes)]


def _check_run(workdir: str, identity: dict) -> None:
    """A work directory serves one fine-tuning run (RUN_FILE): refuse another one, naming
    every difference (run_differences) in one line; record this one on the first run.
    A RUN_FILE without a config (written before the config was recorded) gets this run's,
    with a warning: its finished splits cannot be checked against it."""
    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        changed = run_differences(existing, identity)
        if changed:
            raise FinetuneError(f"{workdir}: holds another fine-tuning run, made with other settings: "
                                f"{'; '.join(changed)}. Rerun with its settings (only --splits / finetune.splits "
                                "and the keys a training run may change on resume may differ), choose another "
                                "--workdir, or delete it")
        if "config" not in existing and _process_index() == 0:
            print(f"warning: {path} recorded no config (written by an earlier version); recording this run's: "
                  "its finished splits are not checked against it", file=sys.stderr, flush=True)
            _write_json(path, {**existing, **identity})
    elif _process_index() == 0:
        _write_json(path, identity)


# ----------------------------------------------------------------------------- the run
@dataclasses.dataclass
class _Split:
    index: int
    directory: str
    train_ids: list[str]
    test_ids: list[str]
    anchors: AnchorSet | None = None
    done: bool = False


def finetune(config: ml_collections.ConfigDict, *, checkpoint: str, step: int | str | None, videos: str,
             mos_table: str, set_name: str, workdir: str, anchors_k: int = 5, splits: int | None = None,
             bootstrap: int = 1000, batch_size: int = 0, workers: int = 0, mode: str = "map",
             progress: bool = True) -> dict:
    """Fine-tune the weak-to-strong run `checkpoint` (its `step`: a number, "latest" or
    "best") on the MOS-labeled set (`videos` folder, `mos_table` file,mos CSV, named
    `set_name`) over `splits` random splits (default finetune.splits), in `workdir`: see
    the module docstring for what each split does and writes.

    config: this run's config (optimizer, steps, mesh, finetune.*: splits, train_fraction,
    pairs_per_video, mos_std_fraction, num_steps, fresh_optimizer); the student and data
    settings (RUN_KEYS) are the checkpoint's. anchors_k: anchors per split (K); bootstrap:
    resamples of the 95% intervals (0: none); batch_size: test videos per scoring call
    (0: 8 rounded up to the batch's parts and the processes); workers: processes decoding
    videos; mode: "map" or "paper" (score.thurstone).

    Returns the results: {"set", "checkpoint", "step", "splits": [per split: train and
    test videos, pairs, anchors, steps, and per model (BEFORE, AFTER) the FIGURES],
    "median": {BEFORE: {...}, AFTER: {...}, "gain": median over splits of AFTER - BEFORE},
    "splits_done", "splits_requested", "stopped": None or what stopped training}, also
    written as W/results.json and results.md by process 0. A split whose training a signal
    stops ends the run there ("stopped" says which); rerun to continue.

    Raises config.ConfigError for finetune.* settings, `splits` or anchors_k out of range
    (check_inputs, before any work); FinetuneError for a bad set name, too few videos for
    a split (checked on the table before decoding and again on the videos that decoded), a
    `stages` run's work directory, or another fine-tuning run's: W/finetune.json records
    the checkpoint, the set and this run's config, and a rerun that changes any of them
    but SAFE_KEYS (more splits among them) is refused naming every difference;
    EvalError / AnchorError for a table or folder that does not fit (read_set); FileNotFoundError for a checkpoint folder without the step.
    """
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa import sharding as sharding_lib
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.store.format import ERRORS_FILE, VideoStore
    from w2s_vqa.store.prepare import prepare

    workdir = os.path.abspath(workdir)
    ft = config.finetune
    check_inputs(config, workdir, splits=splits, anchors_k=anchors_k)
    splits = int(ft.splits if splits is None else splits)
    table = read_set(videos, mos_table, set_name)
    _check_counts(len(table), float(ft.train_fraction), anchors_k, mos_table)
    std_col = mos_pairs_lib.std_column(list(table.columns))
    resolved, run_config = resolve_checkpoint(checkpoint, step)
    base = base_config(config, run_config)
    from w2s_vqa.train.checkpoint import checkpoint_directory

    identity = {"checkpoint": os.path.abspath(checkpoint_directory(checkpoint)), "step": resolved, "set": set_name,
                "table_sha256": _digest(mos_table), "seed": int(config.seed),
                "train_fraction": float(ft.train_fraction), "pairs_per_video": float(ft.pairs_per_video),
                "spread": f"column {std_col}" if std_col else f"mos_std_fraction {float(ft.mos_std_fraction):g}",
                "anchors": int(anchors_k), "config": config_lib.as_json(base)}
    os.makedirs(workdir, exist_ok=True)
    _check_run(workdir, identity)
    _barrier("run")

    # The set's videos, decoded once as the weak-to-strong run's were.
    store_dir = os.path.join(workdir, STORE_DIR)
    if _process_index() == 0:
        manifest = evaluate_lib.write_manifest(table, os.path.join(workdir, MANIFEST_FILE))
        prepare(base, manifest, store_dir, workers=workers, distortions="", progress=progress)
    _barrier("prepare")
    store = VideoStore(store_dir)
    held = set(store.index.loc[store.index["distortion"] == "", "id"].astype(str))
    reasons = {}
    errors_path = os.path.join(store_dir, ERRORS_FILE)
    if os.path.exists(errors_path):
        with open(errors_path) as f:
            reasons = {e.get("id", ""): e.get("reason", "") for e in map(json.loads, filter(str.strip, f))}
    skipped = [{"file": f, "path": p, "reason": reasons.get(f, "not in the store")}
               for f, p in zip(table["file"], table["path"]) if f not in held]
    table = table[table["id"].isin(held)].reset_index(drop=True)
    _check_counts(len(table), float(ft.train_fraction), anchors_k,
                  f"{mos_table} ({len(skipped)} video(s) could not be decoded: {store_dir}/{ERRORS_FILE})")

    # Splits, pairs and anchors: cheap, all made first.
    by_id = table.set_index("id")
    parts = mos_pairs_lib.split_by_video(table["id"].tolist(), train_fraction=float(ft.train_fraction),
                                         splits=splits, seed=int(config.seed))
    runs = []
    for s, (train_ids, test_ids) in enumerate(parts):
        run = _Split(s, split_dir(workdir, s), train_ids, test_ids)
        run.done = _agree(os.path.exists(os.path.join(run.directory, SPLIT_RESULT)))
        if not run.done:
            _prepare_split(run, by_id, ft, std_col, store, anchors_k, seed=int(config.seed))
        runs.append(run)
    _barrier("pairs")

    mesh = sharding_lib.mesh_from_config(base)
    model_cfg = model_config_lib.student_config(base)
    prompt = prompt_lib.build_pair_prompt(prompt_lib.load_tokenizer(model_config_lib.tokenizer_dir(base)),
                                          video_token_id=model_cfg.video_token_index,
                                          tokens_per_video=model_cfg.tokens_per_video)
    batch_size = batch_size or _default_batch(mesh)
    score = dict(prompt=prompt, mesh=mesh, batch_size=batch_size, store=store, mode=mode, progress=progress)
    say = _say if progress else (lambda text: None)

    # Before: the weak-to-strong checkpoint on every split's test videos, loaded once.
    from w2s_vqa.train import loop
    from w2s_vqa.train.checkpoint import load_checkpoint_student

    todo = [r for r in runs if not r.done and not _agree(os.path.exists(_scores_path(r, BEFORE)))]
    if todo:
        student, _, _ = load_checkpoint_student(checkpoint, resolved, mesh=mesh)
        key = f"checkpoint:{os.path.abspath(checkpoint)}:step {resolved}"
        for run in todo:
            say(f"finetune split {run.index}: scoring {len(run.test_ids)} test videos with the weak-to-strong "
                f"checkpoint (step {resolved})")
            _score(run, BEFORE, student, key, **score)
        del student
        gc.collect()

    results = _results(runs, workdir, set_name, checkpoint, resolved, splits, table, skipped, identity)
    stopped = None
    for run in runs:
        if run.done:
            continue
        train_dir = os.path.join(run.directory, "train")
        cfg = split_config(base, store=store_dir, train_pairs=os.path.join(run.directory, TRAIN_PAIRS),
                           test_pairs=os.path.join(run.directory, TEST_PAIRS), checkpoint=checkpoint, step=resolved)
        say(f"finetune split {run.index}: training {cfg.train.num_steps} steps on {len(run.train_ids)} videos "
            f"from {checkpoint} step {resolved}")
        trainer = loop.Trainer(cfg, train_dir)
        info = trainer.run()
        del trainer
        gc.collect()
        if info.stopped:
            stopped = info.stopped
            break
        student, _, final = load_checkpoint_student(train_dir, info.steps, mesh=mesh)
        _score(run, AFTER, student, f"checkpoint:{train_dir}:step {final}", parts=str(final), **score)
        del student
        gc.collect()
        if _process_index() == 0:
            _evaluate_split(run, table, set_name, bootstrap=bootstrap, seed=int(config.seed), steps=final)
        run.done = True
        results = _results(runs, workdir, set_name, checkpoint, resolved, splits, table, skipped, identity)
        for done in (s for s in results["splits"] if s["split"] == run.index):  # process 0 reads them
            say(f"finetune split {run.index}: test SRCC " + ", ".join(
                f"{model} {_text(done[model]['srcc'])}" for model in MODELS))
    _barrier("done")
    store.close()
    results["stopped"] = stopped
    return results


def _say(text: str) -> None:
    if _process_index() == 0:
        print(text, file=sys.stderr, flush=True)


def _default_batch(mesh) -> int:
    """8 test videos per scoring call, rounded up to a multiple of the batch's parts (data
    x fsdp) and of the process count, as `w2s-vqa score` chooses."""
    import jax

    from w2s_vqa.score.predict import default_batch_sharding

    spec = default_batch_sharding(mesh).spec
    entry = spec[0] if len(spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    unit = math.lcm(math.prod(mesh.shape[a] for a in axes), jax.process_count())
    return unit * -(-8 // unit)


def _prepare_split(run: _Split, by_id: pd.DataFrame, ft, std_col: str | None, store, anchors_k: int, *,
                   seed: int) -> None:
    """The split's pair tables (written by process 0 when absent) and its anchors (picked
    among the training videos; saved by process 0 when absent)."""
    if _process_index() == 0:
        os.makedirs(run.directory, exist_ok=True)
    for name, ids, stream in ((TRAIN_PAIRS, run.train_ids, 1), (TEST_PAIRS, run.test_ids, 2)):
        path = os.path.join(run.directory, name)
        if _process_index() == 0 and not os.path.exists(path):
            videos = by_id.loc[ids].reset_index()
            pairs = mos_pairs_lib.mos_pairs(videos, pairs_per_video=float(ft.pairs_per_video),
                                            rng=np.random.default_rng([seed, run.index, stream]), mos_std=std_col,
                                            std_fraction=float(ft.mos_std_fraction))
            pair_tables.write_pairs(pair_tables.random_swap(pairs, np.random.default_rng([seed, run.index,
                                                                                          stream + 2])), path)
    training = by_id.loc[run.train_ids].reset_index()[["id", "mos"]]
    try:
        picked = pick_anchors(training, anchors_k)
    except AnchorError as e:
        raise FinetuneError(f"split {run.index}: no anchors among its {len(run.train_ids)} training videos: {e}") \
            from None
    coverage = DEFAULT_COVERAGE
    run.anchors = AnchorSet.from_store(store, picked["id"], picked["mos"],
                                       rule=ANCHOR_RULE.format(lo=(1 - coverage) / 2, hi=(1 + coverage) / 2)
                                       + f"; among split {run.index}'s training videos")
    anchors_dir = os.path.join(run.directory, "anchors")
    if _process_index() == 0 and not os.path.exists(os.path.join(anchors_dir, "anchors.json")):
        run.anchors.save(anchors_dir)


def _scores_path(run: _Split, model: str) -> str:
    return os.path.join(run.directory, f"{model}_scores.csv")


def _score(run: _Split, model: str, student, key: str, *, prompt, mesh, batch_size: int, store, mode: str,
           progress: bool, parts: str = "") -> None:
    """Score the split's test videos with `student` against its anchors into
    W/split_NN/<model>_scores.csv (score.scorer; parts kept for resuming in
    W/split_NN/<model>_parts/<parts>, one folder per student)."""
    from w2s_vqa.score import scorer as scorer_lib

    scorer = scorer_lib.Scorer(student, prompt, run.anchors, mesh, batch_size=batch_size)
    table = scorer_lib.score_store(scorer, store, mode=mode, ids=run.test_ids,
                                   parts_dir=os.path.join(run.directory, f"{model}_parts", parts), student_key=key,
                                   progress=progress)
    if _process_index() == 0:
        path = _scores_path(run, model)
        table.to_csv(path + ".tmp", index=False)
        os.replace(path + ".tmp", path)
    _barrier(f"scored-{run.index}-{model}")


def _evaluate_split(run: _Split, table: pd.DataFrame, set_name: str, *, bootstrap: int, seed: int,
                    steps: int) -> None:
    """score.evaluate's figures of both models on the split's test videos: W/split_NN/eval
    (tables, plots) and W/split_NN/result.json (written last)."""
    test = table[table["id"].isin(run.test_ids)].reset_index(drop=True)
    predictions = {}
    for model in MODELS:
        scores = pd.read_csv(_scores_path(run, model), dtype={"id": str}, keep_default_na=False, na_values=[""])
        predictions[model] = {set_name: pd.DataFrame({"file": scores["id"].astype(str),
                                                      "prediction": scores["score"].astype(np.float64)})}
    tables = {set_name: test}
    results = evaluate_lib.evaluate(predictions, tables, bootstrap=bootstrap, seed=seed)
    evaluate_lib.write_report(results, predictions, tables, os.path.join(run.directory, "eval"))
    pairs = pd.read_parquet(os.path.join(run.directory, TRAIN_PAIRS))
    figures = {}
    for model in MODELS:
        entry = results["sets"][set_name]["models"][model]
        figures[model] = {"videos": int(entry["videos"]), **{k: float(entry.get(k, float("nan"))) for k in FIGURES}}
    with open(os.path.join(run.directory, "anchors", "anchors.json")) as f:
        anchors = json.load(f)["anchors"]
    _write_json(os.path.join(run.directory, SPLIT_RESULT), {
        "split": run.index, "train_videos": len(run.train_ids), "test_videos": len(run.test_ids),
        "train_pairs": len(pairs), "train_labels": pair_counts(pairs)["by_origin"].get(origins.MOS, {}),
        "steps": int(steps),
        "anchors": [{"id": a["id"], "mos": a["mos"]} for a in anchors], **figures,
        "eval": os.path.join(run.directory, "eval", evaluate_lib.RESULTS_JSON)})


def median_figures(per_split: Sequence[dict]) -> dict:
    """{BEFORE: {figure: median}, AFTER: {...}, "gain": {figure: median of AFTER - BEFORE}}
    over the splits' figures (numpy's median over the splits where the figure is a number;
    NaN when none is), and "splits": how many splits entered."""
    out: dict = {"splits": len(per_split)}
    for model in MODELS:
        out[model] = {k: _median([s[model][k] for s in per_split]) for k in FIGURES}
    out["gain"] = {k: _median([s[AFTER][k] - s[BEFORE][k] for s in per_split]) for k in FIGURES}
    return out


def _median(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def _results(runs, workdir, set_name, checkpoint, step, splits, table, skipped, identity) -> dict:
    """Every finished split's result.json and their medians; written (process 0) as
    W/results.json and W/results.md."""
    per_split = []
    for run in runs:
        path = os.path.join(run.directory, SPLIT_RESULT)
        if _process_index() == 0 and os.path.exists(path):
            with open(path) as f:
                per_split.append(json.load(f))
    results = {"set": set_name, "checkpoint": os.path.abspath(checkpoint), "step": int(step),
               "videos": int(len(table) + len(skipped)), "videos_used": int(len(table)), "skipped": list(skipped),
               "settings": {k: v for k, v in identity.items() if k != "config"}, "splits_requested": int(splits),
               "splits_done": len(per_split),
               "splits": per_split, "median": median_figures(per_split), "workdir": workdir}
    if _process_index() == 0:
        _write_json(os.path.join(workdir, RESULTS_JSON), results)
        with open(os.path.join(workdir, RESULTS_MD), "w") as f:
            f.write(markdown(results))
    return results


def _text(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def markdown(results: dict) -> str:
    """results.md: the medians (the headline) and one row per split."""
    median = results["median"]
    lines = [f"## MOS fine-tuning on {results['set']}: median over {results['splits_done']} of "
             f"{results['splits_requested']} splits", "",
             f"From {results['checkpoint']} step {results['step']}; {results['videos_used']} of {results['videos']} "
             "videos; test videos scored against anchors among each split's training videos.", "",
             "| model | SRCC | PLCC | KRCC | PLCC (logistic) |", "|---|---|---|---|---|"]
    names = {BEFORE: "weak-to-strong checkpoint (before)", AFTER: "fine-tuned (after)",
             "gain": "gain (median of per-split gains)"}
    for row in (BEFORE, AFTER, "gain"):
        lines.append(f"| {names[row]} | " + " | ".join(_text(median[row][k]) for k in FIGURES) + " |")
    lines += ["", "| split | train videos | test videos | train pairs | steps | SRCC before | SRCC after | "
              "PLCC before | PLCC after |", "|---|---|---|---|---|---|---|---|---|"]
    for s in results["splits"]:
        lines.append(f"| {s['split']} | {s['train_videos']} | {s['test_videos']} | {s['train_pairs']} | {s['steps']} | "
                     f"{_text(s[BEFORE]['srcc'])} | {_text(s[AFTER]['srcc'])} | {_text(s[BEFORE]['plcc'])} | "
                     f"{_text(s[AFTER]['plcc'])} |")
    return "\n".join(lines) + "\n"
