"""Labeled evaluation sets: a folder of videos plus a MOS table, or a built TFDS set.

`EvalSet` names one; `read_eval_set` reads its MOS table (every problem of it in one
error); `write_manifest` makes the `prepare` manifest of its videos; `tfds_eval_sets`
checks, builds and opens the TFDS evaluation sets (w2s_vqa.datasets). score.evaluate
scores and evaluates them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from w2s_vqa import multihost
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.score.anchors import AnchorError, read_mos_table
from w2s_vqa.store.settings import Settings


class EvalError(ValueError):
    """An evaluation input that cannot be used; the message names the file, row or set."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A labeled set: `name` (one of overall_lib.SET_GROUPS' names to count in the paper's
    overall, e.g. konvid_1k), `folder` of videos, `table` (file,mos CSV).

    `source`, when given, holds the set's labels and videos instead of `table` and the
    folder: an object with `mos_table()` (columns file, mos, row, path), and, to be
    scored, the video store's reading API (w2s_vqa.datasets.TfdsVideoSource: a built TFDS
    evaluation set), whose records the student scores as they are (`tfds_eval_sets`)."""

    name: str
    folder: str
    table: str
    source: Any = None


def read_eval_set(eval_set: EvalSet, *, check_files: bool = True) -> pd.DataFrame:
    """The set's MOS table: columns file (str, as the table names it), mos (float64), row
    (data rows from 1), path (the video's absolute path).

    Raises EvalError for a missing table or (with `check_files`) folder, then one error
    listing every problem of the table at once (score.anchors.read_mos_table): rows whose
    MOS is not a number, files named twice, and, with `check_files`, the files the folder
    lacks (scoring a set with holes would report figures on another subset than the
    table's); EvalError with `check_files`, AnchorError (a ValueError) without. A set with a `source` gives its own table, checked when it was built.
    """
    if eval_set.source is not None:
        return eval_set.source.mos_table()
    if not os.path.isfile(eval_set.table):
        raise EvalError(f"{eval_set.table}: no such MOS table (set {eval_set.name})")
    folder = workdir_lib.absolute(eval_set.folder)
    if check_files and not os.path.isdir(folder):
        raise EvalError(f"{eval_set.folder}: no such folder of videos (set {eval_set.name})")
    # One pass reports every kind of problem: bad MOS, names twice and files the folder lacks.
    table = read_mos_table(eval_set.table, folder=folder if check_files else None,
                           error=EvalError if check_files else AnchorError).rename(columns={"id": "file"})
    if not check_files:
        table["path"] = [os.path.join(folder, *f.split("/")) for f in table["file"]]
    return table


def write_manifest(table: pd.DataFrame, path: str) -> str:
    """A prepare manifest (path, id) of a set's videos, ids = the table's `file`; returns `path`."""
    os.makedirs(os.path.dirname(workdir_lib.absolute(path)), exist_ok=True)
    table[["path", "file"]].rename(columns={"file": "id"}).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- the TFDS evaluation sets
@dataclasses.dataclass(frozen=True)
class _Labels:
    """A set's labels without its videos (teacher tables need no frames)."""

    table: pd.DataFrame

    def mos_table(self) -> pd.DataFrame:
        return self.table


def tfds_eval_sets(names: Sequence[str], manual_dir: str, *, data_dir: str | None = None, subset: str = "paper",
                   settings: Mapping | None = None, build: bool = True, slowfast_weights: str = "",
                   workers: int = 0) -> list[EvalSet]:
    """The EvalSets of TFDS evaluation sets `names` (w2s_vqa.datasets: lsvq_test, ..., kvq)
    whose releases lie in `manual_dir` (one folder per set named as the set, or one set's).

    Every set's metadata and videos are checked first (datasets.select: one error naming
    the set, file, rows or missing videos), before anything is built. With `build`, each
    set is built unless it is already, in `data_dir` (TFDS's; default
    ~/tensorflow_datasets), with the builder config of store `settings` (an anchor set's,
    so test videos are made as the anchors were; datasets.config_for), and read through
    TfdsVideoSource; a build made from another state of the manual download (another
    MOS, videos added, gone or replaced) is built again, with one line on stderr
    (datasets.build); on several processes, process 0 builds while the others wait. Without
    `build`, only the labels are read (MOS from the set's own metadata; nothing decoded),
    enough for teacher tables. subset: "paper" (the paper's lists) or "full".
    """
    from w2s_vqa import datasets

    roots = {}
    for name in names:
        roots[name] = datasets.metadata.set_root(manual_dir, name)
        chosen = datasets.select(name, roots[name], subset)
        if not build:
            roots[name] = (roots[name], chosen)
    if not build:
        return [EvalSet(name, root, "", _Labels(pd.DataFrame({
            "file": chosen["key"].astype(str), "mos": chosen["mos"].to_numpy(np.float64),
            "row": np.arange(1, len(chosen) + 1), "path": chosen["path"]})))
            for name, (root, chosen) in roots.items()]
    config = datasets.config_for(settings or {}, subset)
    if multihost.is_first():
        for name in names:
            datasets.build(name, manual_dir, config, data_dir=data_dir, slowfast_weights=slowfast_weights,
                           workers=workers)
    multihost.barrier("score.tfds_build")
    sets = [EvalSet(name, roots[name], "", datasets.TfdsVideoSource(name, config, data_dir=data_dir))
            for name in names]
    wanted = Settings.from_json(settings)
    for eval_set in sets:  # a build's recorded settings, against those asked for
        wanted.check_fits(eval_set.source.settings, mine="the anchors", theirs=f"TFDS set {eval_set.name}",
                          where=eval_set.source.path, error=EvalError)
    return sets
