"""W/finetune.json: the fine-tuning run a work directory serves (workdir.RunRecord).

It holds the run's identity (the checkpoint and step, the set's table digest, the split
and pair settings) and its config (inputs.base_config's); a rerun that changes any of
them but SAFE_KEYS is refused, naming every difference.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from w2s_vqa import config as config_lib
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.finetune.inputs import SPLIT_RESULT, FinetuneError

# Config keys a rerun in the same work directory may change (finetune.json keeps the rest): those
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
IDENTITY_NAMES = {"checkpoint": "--checkpoint", "step": "--step", "hf": "--hf", "set": "--name",
                  "table_sha256": "--mos (the table's sha256)", "seed": "seed",
                  "train_fraction": "finetune.train_fraction", "pairs_per_video": "finetune.pairs_per_video",
                  "spread": "MOS spread (a mos_std column, or finetune.mos_std_fraction)", "anchors": "--anchors"}


def _steps(config: dict) -> int:
    """The steps per split a config (its JSON) gives: finetune.num_steps, 0 = train.num_steps."""
    return int(config.get("finetune", {}).get("num_steps") or config.get("train", {}).get("num_steps") or 0)


def run_differences(saved: dict, identity: dict) -> list[str]:
    """What `identity` (this run's: the checkpoint, step, set, table digest, split and pair
    settings, and "config": the run's config JSON, base_config's) changes from `saved` (a
    finetune.json's): one "key: saved -> now" entry per difference, keys named as the command
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


def finished_work(workdir: str) -> list[str]:
    """What a fine-tuning work directory holds that a change of settings would throw away:
    each split's result.json and each split's training run with a saved step
    (split_NN/train/checkpoints/<step>), as paths relative to `workdir`. The store, the
    pair tables, the anchors and the "before" scores are made again in minutes."""
    held = []
    for split in sorted(glob.glob(os.path.join(workdir, "split_[0-9]*"))):
        if os.path.exists(os.path.join(split, SPLIT_RESULT)):
            held.append(os.path.relpath(os.path.join(split, SPLIT_RESULT), workdir))
        steps = os.path.join(split, "train", workdir_lib.CHECKPOINT_DIR)
        if os.path.isdir(steps) and any(name.isdigit() for name in os.listdir(steps)):
            held.append(os.path.relpath(steps, workdir))
    return held


def check_run(workdir: str, identity: dict, *, write: bool) -> None:
    """A work directory serves one fine-tuning run (W/finetune.json): refuse another one,
    naming every difference (run_differences) in one line; record this one on the first
    run (`write`: on process 0). A work directory where no split has finished or saved a
    training step (`finished_work`: an earlier run refused or stopped before that) takes
    the new settings instead, says so on stderr, and its split folders, made with the
    earlier settings, are removed (process 0) to be made again; the decoded store stays.
    A record without a config (written before the config was recorded) gets this run's,
    with a warning: its finished splits cannot be checked against it."""
    record = workdir_lib.RunRecord(os.path.join(workdir, workdir_lib.FINETUNE_FILE), allowed=SAFE_KEYS,
                                   differences=run_differences)
    saved = record.check(identity, write=write, error=FinetuneError, finished=bool(finished_work(workdir)), message=(
        "{dir}: holds another fine-tuning run, made with other settings: {changes}. Rerun with its settings (only "
        "--splits / finetune.splits and the keys a training run may change on resume may differ), choose another "
        "--workdir, or delete it"))
    if record.replaced:
        if write:
            for split in glob.glob(os.path.join(workdir, "split_[0-9]*")):
                shutil.rmtree(split)
            print(f"note: {workdir}: its earlier run finished no split, so it takes this run's settings "
                  f"({'; '.join(record.replaced)}); its split folders are made again", file=sys.stderr, flush=True)
        return
    if saved is not None and "config" not in saved and write:
        print(f"warning: {record.path} recorded no config (written by an earlier version); recording this run's: "
              "its finished splits are not checked against it", file=sys.stderr, flush=True)
        record.write({**saved, **identity})
