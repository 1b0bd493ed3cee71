"""Run plumbing every verb shares: the workdir's file names, writing a file so a reader
never sees half of it, a file's digest, and the record that makes a directory serve one run.

Paths go through etils.epath, so a local path behaves as it always did (a `str` or
`os.PathLike` is a local file) and a URL with a scheme epath knows (gs://, s3://) is an
object in that store, once a caller routes it here.

Atomic writes, by kind of path:
- local: the content goes to `<name>.tmp` beside the file, which is then renamed over it
  (`os.replace`): a reader sees the old file or the new one, never a part; a killed
  writer leaves `<name>.tmp`, which the next write replaces.
- an object store (gs://, s3://): rename is a copy there, not atomic. The final object
  is written directly: an object appears whole when its upload completes and readers
  see the previous version until then, which is what the rename gives locally.

Nothing here imports JAX or the package's other modules (the bottom layer).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
from typing import Any, Callable, Iterator

from etils import epath

# ------------------------------------------------------------------ the workdir's files
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged training step or evaluation
CHECKPOINT_DIR = "checkpoints"  # Orbax checkpoints, one folder per step
TRAIN_PAIRS_FILE = "pairs_train.parquet"  # a training pair table (`w2s-vqa pairs`, each stage)
STAGES_FILE = "stages.json"  # the config a workdir's stages ran with
STAGE_DIR = "stage_{}"  # stage k's own workdir inside a stages workdir (k from 1)
FINETUNE_FILE = "finetune.json"  # the fine-tuning run a workdir serves
STORE_DIR = "store"  # a video store made inside a workdir
MANIFEST_FILE = "manifest.csv"  # the videos a workdir decodes into its store
RESULTS_JSON = "results.json"  # a verb's figures (eval, stages, finetune)
RESULTS_MD = "results.md"  # and their tables
TEMP_SUFFIX = ".tmp"

PathLike = str | os.PathLike


def path(value: PathLike) -> epath.Path:
    """`value` as an epath.Path: a local path, or an object store URL (gs://...)."""
    return epath.Path(value)


def is_local(value: PathLike) -> bool:
    """Whether `value` names a file on a local (or mounted) file system, not a URL."""
    return "://" not in os.fspath(value)


def _temp(value: PathLike) -> str:
    return os.fspath(value) + TEMP_SUFFIX


@contextlib.contextmanager
def atomic_open(target: PathLike, mode: str = "w") -> Iterator[Any]:
    """A file object whose content replaces `target` whole when the block ends without
    an exception (module docstring: temporary file + rename locally, the final object on
    an object store). mode "w" (text, UTF-8) or "wb". On an exception the target is
    untouched and the partial temporary file removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    if not is_local(target):
        with path(target).open(mode) as f:
            yield f
        return
    temp = _temp(target)
    try:
        with open(temp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    os.replace(temp, os.fspath(target))


def write_text(target: PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically (`atomic_open`)."""
    with atomic_open(target, "w") as f:
        f.write(text)


def write_bytes(target: PathLike, data: bytes) -> None:
    """Write `data` to `target` atomically (`atomic_open`)."""
    with atomic_open(target, "wb") as f:
        f.write(data)


def write_json(target: PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False) -> None:
    """Write `obj` as JSON to `target` atomically; NaN and infinities are written as JSON's
    common extension (NaN, Infinity), as json.dump does by default."""
    with atomic_open(target, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=sort_keys)


def read_json(source: PathLike) -> Any:
    """The JSON value of a file (raises FileNotFoundError, json.JSONDecodeError)."""
    return json.loads(path(source).read_text(encoding="utf-8"))


def exists(value: PathLike) -> bool:
    return path(value).exists()


def file_digest(source: PathLike) -> str:
    """SHA-256 of a file's bytes, as lowercase hex (hashlib.file_digest: read in chunks)."""
    with path(source).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------ one run per directory
def flat_differences(saved: dict, now: dict, *, allowed: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """One "key: saved -> now" entry per leaf (nested dicts joined with ".") that `now`
    holds differently from `saved`, sorted by key; keys matching an `allowed` fnmatch
    pattern are left out, and so is a key `saved` lacks (recorded before it existed)."""
    out = []
    for key in sorted(now):
        name = f"{prefix}{key}"
        if any(fnmatch.fnmatchcase(name, p) for p in allowed) or key not in saved:
            continue
        old, new = saved[key], now[key]
        if isinstance(old, dict) and isinstance(new, dict):
            out += flat_differences(old, new, allowed=allowed, prefix=name + ".")
        elif old != new:
            out.append(f"{name}: {old!r} -> {new!r}")
    return out


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The top-level keys either record holds and the two hold differently, sorted: for
    records whose values mean nothing to a reader (digests, plans)."""
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


class RunError(ValueError):
    """A directory holds another run's record; the message names every difference."""


class RunRecord:
    """The JSON file by which a directory serves one run and refuses another.

    `path`: the record file (e.g. W/finetune.json). `allowed`: fnmatch patterns of keys a
    later run in the same directory may change (e.g. "train.num_steps", "log.*").
    `differences(saved, now) -> ["key: old -> new", ...]` compares two records; the
    default is `flat_differences` with `allowed`, and a caller whose records hold a run
    config passes one that reads config keys as the config does.
    """

    def __init__(self, record_path: PathLike, *, allowed: tuple[str, ...] = (),
                 differences: Callable[[dict, dict], list[str]] | None = None):
        self.path = os.fspath(record_path)
        self.allowed = tuple(allowed)
        self._differences = differences or (lambda saved, now: flat_differences(saved, now, allowed=self.allowed))
        # The differences of the last `check` that replaced the record (nothing finished under it).
        self.replaced: list[str] = []

    def read(self) -> dict | None:
        """The saved record, or None when the directory has none yet."""
        return read_json(self.path) if exists(self.path) else None

    def write(self, record: dict) -> None:
        """Save `record` atomically (its folder is created), keys sorted: the same record
        gives the same bytes."""
        path(self.path).parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, record, sort_keys=True)

    def differences(self, saved: dict, now: dict) -> list[str]:
        return self._differences(saved, now)

    def check(self, record: dict, *, write: bool = True,
              message: str = "{dir}: holds another run: {changes}. Rerun with its settings, choose another "
                             "directory, or delete it",
              sep: str = "; ", error: type[Exception] = RunError, finished: bool = True) -> dict | None:
        """Refuse a directory whose record differs from `record`: raise `error` with
        `message` ({dir}: the directory, {changes}: every difference joined by `sep`), or,
        when it has none, save `record` if `write` (False on processes other than 0).
        `finished` False says no unit of work finished under the saved record (a run
        refused, or stopped, before its first): a differing record is then replaced by
        `record` (saved if `write`) instead of refused, and `self.replaced` lists the
        differences, for the caller to say so and to drop what the earlier settings made.
        Returns the saved record (None when there was none)."""
        self.replaced = []
        saved = self.read()
        if saved is None:
            if write:
                self.write(record)
            return None
        changed = self.differences(saved, record)
        if changed and not finished:
            self.replaced = list(changed)
            if write:
                self.write(record)
            return saved
        if changed:
            raise error(message.format(dir=os.path.dirname(self.path) or ".", changes=sep.join(changed)))
        return saved
