"""A fine-tuning run's inputs: its settings (`check_inputs`), the MOS-labeled set
(`read_set`), the weak-to-strong checkpoint (`resolve_checkpoint`), and the configs of the
run (`base_config`) and of each split (`split_config`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import ml_collections
import numpy as np
import pandas as pd

from w2s_vqa import config as config_lib
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.labels import mos_pairs as mos_pairs_lib
from w2s_vqa.score.anchors import read_mos_table
from w2s_vqa.store.settings import Settings
from w2s_vqa.tables import ProblemReport, read_csv

MANIFEST_FILE = workdir_lib.MANIFEST_FILE
STORE_DIR = workdir_lib.STORE_DIR
SPLIT_RESULT = "result.json"
TRAIN_PAIRS = "train_pairs.parquet"
TEST_PAIRS = "test_pairs.parquet"
# The student's architecture a fine-tuning run takes from the weak-to-strong run, which the
# checkpoint's parameters must fit; its input settings come with it (base_config).
MODEL_KEYS = ("model.preset", "model.hf_dir", "model.tokenizer")
# Smallest test side a split is run with: 2 videos can be scored and evaluated, but their
# SRCC, PLCC and KRCC need score.metrics.MIN_VIDEOS_CORRELATION videos and are left out
# (null, with a note: finetune.results.small_split_notes) below it.
MIN_TEST_VIDEOS = 2


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
    held = [name for name in (workdir_lib.STAGES_FILE, workdir_lib.STAGE_DIR.format(1) + "/")
            if os.path.exists(os.path.join(workdir, name.rstrip("/")))]
    if held:
        raise FinetuneError(f"{workdir}: holds a `w2s-vqa stages` run ({', '.join(held)}); give finetune another "
                            "--workdir")


def split_dir(workdir: str, split: int) -> str:
    """W/split_NN (NN from 00)."""
    return os.path.join(workdir, f"split_{split:02d}")


def read_set(videos: str, mos_table: str, name: str) -> pd.DataFrame:
    """A MOS-labeled set: columns id (= file: the store id), file (as the table names it),
    mos (float64), row (data rows from 1), path (absolute), and mos_std (float64) when the
    table has a standard deviation column (labels.mos_pairs.MOS_STD_COLUMNS, under its own
    name).

    A row's `file` names a video relative to `videos`, with or without its extension (as
    `w2s-vqa anchors` reads a MOS table): a name no file has is the one file of that
    folder whose name without extension it is (score.anchors.locate_files).

    Raises FinetuneError for a set name that cannot name files, a missing table or
    folder, and then one FinetuneError listing every problem of the table at once
    (score.anchors.read_mos_table): rows whose MOS is not a number, files named twice,
    videos the folder lacks, names without extension that fit several files (with the
    files), and standard deviations that are not a number >= 0.
    """
    if not name or not name.strip() or "/" in name or name != name.strip():
        raise FinetuneError(f"--name {name!r}: a set name is a non-empty word without '/' (it names files)")
    if not os.path.isfile(mos_table):
        raise FinetuneError(f"{mos_table}: no such MOS table (set {name})")
    if not os.path.isdir(videos):
        raise FinetuneError(f"{videos}: no such folder of videos (set {name})")
    # "SD", "Std" as well as "sd": a header in capitals is the same column, not a missing one.
    raw = read_csv(mos_table, what="MOS table", error=FinetuneError, columns=mos_pairs_lib.MOS_STD_COLUMNS)
    column = mos_pairs_lib.std_column(list(raw.columns))
    problems = ProblemReport(mos_table, "MOS table")
    std = None
    if column is not None:
        values = raw[column].astype(object).where(raw[column].notna(), "")
        std = pd.to_numeric(raw[column], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~(np.isfinite(std) & (std >= 0)))
        problems.add(f"{column} (the video's MOS standard deviation) that is not a number >= 0", len(bad),
                     [f"row {i + 1}: {values.iloc[i]!r}" for i in bad],
                     "fix them or drop the column to use the constant spread (finetune.mos_std_fraction)")
    # Every problem of the table in one error: MOS, names twice, files the folder lacks, spreads.
    table = read_mos_table(mos_table, folder=videos, stems=True, problems=problems,
                           error=FinetuneError).rename(columns={"id": "file"})
    table.insert(0, "id", table["file"])
    if std is not None:
        table[column] = std[table["row"].to_numpy() - 1]
    return table


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
    """This run's config with the weak-to-strong run's student (MODEL_KEYS, from
    `run_config`, its checkpoint's) and input settings (store.settings.Settings of its
    data.*, the SlowFast weights file included), and no variants (data.distortions ""):
    the store and the student are made as that run's, whatever --config says of them.
    Every other key (optimizer, steps, mesh, finetune.*) is this run's."""
    config = config.copy_and_resolve_references()
    for key in MODEL_KEYS:
        section, name = key.split(".")
        saved = run_config.get(section, {})
        if name in saved:
            value = saved[name]
            current = config[section][name]
            config[section][name] = tuple(value) if isinstance(current, tuple) else type(current)(value)
    data = run_config.get("data", {})
    settings = Settings.from_json(data)
    if data.get("slowfast_weights"):
        settings = dataclasses.replace(settings, slowfast_weights=str(data["slowfast_weights"]))
    settings.apply_to(config)
    config.data.distortions = ""
    return config


def hf_base_config(config: ml_collections.ConfigDict, hf_dir: str) -> ml_collections.ConfigDict:
    """This run's config with model.hf_dir = `hf_dir` (a Hugging Face, export or released
    llava_qwen directory: the student to fine-tune), the input settings its w2s_vqa.json
    records (an export's; none for the authors' released directory, whose inputs the config
    gives: configs/w2s_released.py), and no variants (data.distortions ""). Raises
    FileNotFoundError for a missing directory, ValueError for a bad w2s_vqa.json."""
    from w2s_vqa.convert import export_files

    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"{hf_dir}: no such model directory (--hf names a Hugging Face, export or "
                                "released llava_qwen directory)")
    config = config.copy_and_resolve_references()
    config.model.hf_dir = workdir_lib.absolute(hf_dir)
    recorded = export_files.read_settings(hf_dir)
    if recorded:
        Settings.from_json(recorded).apply_to(config)
    config.data.distortions = ""
    return config


def split_config(base: ml_collections.ConfigDict, *, store: str, train_pairs: str, test_pairs: str,
                 checkpoint: str | None, step: int | None) -> ml_collections.ConfigDict:
    """The Trainer config of one split: its pairs on the set's store, starting from the
    weak-to-strong checkpoint's parameters (checkpoint None: from base's model.hf_dir), finetune.num_steps (or train.num_steps) steps,
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
    if checkpoint is not None:
        c.train.init_from = workdir_lib.absolute(checkpoint)
        c.train.init_step = str(int(step))
        c.train.init_optimizer = not bool(c.finetune.fresh_optimizer)
    return c


def train_pairs_per_split(n_train: int, pairs_per_video: float) -> int:
    """The MOS pairs a split's `n_train` training videos give: round(n_train x
    pairs_per_video) distinct pairs, or every distinct pair when there are fewer
    (labels.mos_pairs.mos_pairs, sampling.sample_teacher_pairs with allow_fewer)."""
    return min(round(n_train * pairs_per_video), n_train * (n_train - 1) // 2)


def check_counts(n: int, train_fraction: float, anchors_k: int, where: str, *, pairs_per_video: float | None = None,
                 batch_size: int | None = None) -> None:
    """Refuse a set of `n` videos that cannot make a split: FinetuneError naming `where`
    when round(train_fraction x n) training videos (labels.mos_pairs.split_by_video's
    count) are fewer than max(2, anchors_k) or the test videos fewer than
    MIN_TEST_VIDEOS, and, with `pairs_per_video` and `batch_size` (data.batch_size: the
    global batch), when the training pairs of a split (`train_pairs_per_split`) are
    fewer than one global batch, which training cannot be fed from. Counts only: called
    on the table before anything is decoded, and again on the videos that decoded."""
    n_train = min(max(int(round(train_fraction * n)), 1), max(n - 1, 1))
    n_test = n - n_train
    if n_train < max(2, anchors_k) or n_test < MIN_TEST_VIDEOS:
        fixes = []
        if n_train < max(2, anchors_k):
            if anchors_k > 2:
                fixes.append(f"lower --anchors (now {anchors_k}; at least 2) to at most {max(n_train, 2)}")
            if n_test > MIN_TEST_VIDEOS:
                fixes.append(f"raise finetune.train_fraction (now {train_fraction:g})")
        if n_test < MIN_TEST_VIDEOS and n_train > max(2, anchors_k):
            fixes.append(f"lower finetune.train_fraction (now {train_fraction:g})")
        fixes.append("add videos to the table")
        raise FinetuneError(
            f"{where}: {n} video(s) split by finetune.train_fraction={train_fraction:g} give {n_train} training and "
            f"{n_test} test video(s); a split needs at least {max(2, anchors_k)} training videos ({anchors_k} "
            f"anchors, --anchors) and {MIN_TEST_VIDEOS} test videos: {', or '.join(fixes)}")
    if pairs_per_video is None or batch_size is None:
        return
    pairs = train_pairs_per_split(n_train, pairs_per_video)
    if pairs < batch_size:
        every = n_train * (n_train - 1) // 2
        if pairs < every:  # more pairs per video can still reach a batch
            more = (f"raise finetune.pairs_per_video (to at least {batch_size / n_train:g} for {batch_size} pairs)"
                    if every >= batch_size else
                    f"raise finetune.pairs_per_video (up to every distinct pair, {every}) and add videos")
        else:  # every distinct pair is drawn already: only more videos give more pairs
            more = (f"add videos (every distinct pair of {n_train} training videos, n(n-1)/2 = {every}, is drawn "
                    "already, so finetune.pairs_per_video cannot add any)")
        raise FinetuneError(
            f"{where}: {n} video(s) give each split {n_train} training videos and {pairs} MOS pairs "
            f"(finetune.pairs_per_video={pairs_per_video:g}), fewer than one global batch of data.batch_size="
            f"{batch_size}; lower data.batch_size to at most {pairs} (a multiple of the mesh's batch parts) or {more}")
