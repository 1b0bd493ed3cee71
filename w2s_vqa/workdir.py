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
  A directory of several objects (an export) is uploaded with one object written last
  (`upload_dir`'s `last`), whose presence says the others are complete.

A URL whose scheme has no file system installed here is refused in one line naming the
package to install (`check_url`); `absolute` is what a verb records of a path it was
given: a local path made absolute, a URL as it is.

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


# The URL schemes etils.epath serves (through fsspec), and the package each needs.
FILESYSTEM_PACKAGES = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs", "hf": "huggingface_hub"}


def path(value: PathLike) -> epath.Path:
    """`value` as an epath.Path: a local path, or an object store URL (gs://...). Raises
    OSError, one line, for a URL no installed file system serves (`check_url`)."""
    check_url(value)
    return epath.Path(value)


def is_local(value: PathLike) -> bool:
    """Whether `value` names a file on a local (or mounted) file system, not a URL."""
    return "://" not in os.fspath(value)


def scheme(value: PathLike) -> str | None:
    """The URL scheme of `value` ("gs" for gs://b/x), None for a local path."""
    text = os.fspath(value)
    return text.split("://", 1)[0].lower() if "://" in text else None


_checked: set[str] = set()


def check_url(value: PathLike) -> None:
    """Nothing for a local path or a URL whose file system is installed; OSError, one line,
    naming the package to install (gs:// -> gcsfs, s3:// -> s3fs, ...) or the schemes
    served, otherwise."""
    name = scheme(value)
    if name is None or name in _checked:
        return
    package = FILESYSTEM_PACKAGES.get(name)
    if package is None:
        raise OSError(f"{os.fspath(value)}: no file system serves {name}:// URLs here (served: "
                      f"{', '.join(s + '://' for s in FILESYSTEM_PACKAGES)}, through etils.epath and fsspec)")
    import fsspec

    try:
        fsspec.get_filesystem_class(name)
    except (ImportError, ValueError):
        raise OSError(f"{os.fspath(value)}: {name}:// URLs need a file system package: pip install {package}") from None
    _checked.add(name)


def absolute(value: PathLike) -> str:
    """`value` as a verb records it: a local path made absolute (os.path.abspath), a URL
    as given (checked by `check_url`, without a trailing "/")."""
    text = os.fspath(value)
    if is_local(text):
        return os.path.abspath(text)
    check_url(text)
    return text.rstrip("/") if not text.endswith("://") else text


def join(base: PathLike, *parts: str) -> str:
    """`base`/`parts` as a string: os.path.join for a local path, "/" for a URL."""
    text = os.fspath(base)
    if is_local(text):
        return os.path.join(text, *parts)
    return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])


def parent(value: PathLike) -> str:
    """The directory holding `value`: os.path.dirname for a local path, the URL up to its
    last "/" for a URL (gs://b/x/y.csv -> gs://b/x)."""
    text = os.fspath(value)
    if is_local(text):
        return os.path.dirname(text)
    head, _, _ = text.rstrip("/").rpartition("/")
    return head if not head.endswith(":/") else head + "/"


def scratch_dir(url: PathLike, kind: str) -> str:
    """A local folder for the part of a URL's run that must sit on a file system (a video
    store decoded for a score work folder in a bucket: ArrayRecord files are read by
    seeking): $W2S_VQA_SCRATCH/<kind>/<digest of url>, else under $XDG_CACHE_HOME/w2s-vqa
    (~/.cache/w2s-vqa). The same URL gives the same folder, so a rerun on the same host
    finds what an earlier run left there. Created; returns its path."""
    base = os.environ.get("W2S_VQA_SCRATCH") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "w2s-vqa")
    folder = os.path.join(base, kind, hashlib.sha256(absolute(url).encode()).hexdigest()[:16])
    os.makedirs(folder, exist_ok=True)
    return folder


def remove(value: PathLike) -> None:
    """Delete the file `value` (nothing when it does not exist)."""
    p = path(value)
    if p.exists():
        p.unlink()


def isdir(value: PathLike) -> bool:
    """Whether `value` is a directory (on an object store: a prefix holding objects)."""
    return path(value).is_dir()


def makedirs(value: PathLike) -> None:
    """Create the directory `value` and its parents (on an object store: nothing to
    create; an object's "folders" exist as its name's prefix)."""
    if is_local(value):
        os.makedirs(os.fspath(value), exist_ok=True)
    else:
        check_url(value)


def listdir(value: PathLike) -> list[str]:
    """The names in directory `value`, sorted ([] for one that does not exist)."""
    p = path(value)
    return sorted(child.name for child in p.iterdir()) if p.is_dir() else []


def stage_folders(value: PathLike) -> list[str]:
    """The stage folders (stage_1, stage_2, ...) of a `w2s-vqa stages` workdir, by stage
    number; [] for any other folder."""
    prefix = STAGE_DIR.format("")
    names = [n for n in listdir(value) if n.startswith(prefix) and n[len(prefix):].isdigit()]
    return sorted(names, key=lambda n: int(n[len(prefix):]))


def refuse_stages_run(value: PathLike) -> None:
    """Raise FileNotFoundError when `value`, given where one training run's checkpoints are
    read (--checkpoint), is a `w2s-vqa stages` workdir: it holds one run per stage, and the
    message names the stages present so that the user can name one."""
    stages = stage_folders(value) if not isdir(join(value, CHECKPOINT_DIR)) else []
    if stages:
        raise FileNotFoundError(f"{os.fspath(value)}: is a stages run ({', '.join(stages)}), not one training run: "
                                f"give one stage, e.g. {join(value, stages[-1])}")


def stamp(value: PathLike) -> int:
    """What changes when `value` is written again: a local file's or folder's modification
    time (ns); for an object store URL, the checksum fsspec gives of the object, or of a
    folder's Orbax step record (_CHECKPOINT_METADATA, written last in a step; folders
    themselves have no time there); 0 when there is neither."""
    text = os.fspath(value)
    if is_local(text):
        return os.stat(text).st_mtime_ns if os.path.exists(text) else 0
    import fsspec

    fs, root = fsspec.core.url_to_fs(absolute(text))
    for candidate in (root, root.rstrip("/") + "/_CHECKPOINT_METADATA"):
        if fs.isfile(candidate):
            return int(fs.checksum(candidate))
    return 0


def read_parquet(source: PathLike, **kwargs):
    """pandas.read_parquet of a local file, or of an object read through etils.epath: a
    URL given to pandas goes to pyarrow's own file systems, whose GCS client looks for
    credentials and endpoints of its own (it hangs on a host without them)."""
    import pandas as pd

    if is_local(source):
        return pd.read_parquet(source, **kwargs)
    with path(source).open("rb") as f:
        return pd.read_parquet(f, **kwargs)


def refuse_url(value: PathLike, what: str, why: str) -> None:
    """ValueError, one line, when `value` is a URL: `what` (e.g. "data.store") cannot be
    one, because `why`."""
    if not is_local(value):
        raise ValueError(f"{what} {os.fspath(value)}: {why}")


def upload_dir(local_dir: PathLike, url: PathLike, *, last: str | None = None) -> list[str]:
    """Copy the files of `local_dir` (recursively) to the directory `url`, the file named
    `last` (relative to `local_dir`) after all the others, so that a reader that finds
    `last` finds the whole directory. Returns the names copied, relative, sorted."""
    root = os.fspath(local_dir)
    names = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
    order = [n for n in names if n != last] + ([last] if last in names else [])
    for name in order:
        target = path(join(url, *name.split(os.sep)))
        with open(os.path.join(root, name), "rb") as source, target.open("wb") as f:
            while chunk := source.read(1 << 24):
                f.write(chunk)
    return names


def remove_tree(value: PathLike) -> None:
    """Delete the directory `value` and everything in it (nothing when it does not exist)."""
    p = path(value)
    if p.exists():
        p.rmtree()


def local_copy(url: PathLike, cache_root: PathLike, *, patterns: tuple[str, ...] = ("*",)) -> str:
    """A local directory holding the files of the directory `url` whose names match an
    fnmatch pattern (its top level only): for libraries that read local files (transformers'
    tokenizer, safetensors). Kept under `cache_root`, in a folder named by the URL's digest,
    with a record of each object's checksum (fsspec's): a later call downloads again only
    when an object changed, so the copy keeps its file times (and what is keyed on them).
    Raises FileNotFoundError when `url` holds no matching file."""
    import fsspec

    text = absolute(url)
    fs, root = fsspec.core.url_to_fs(text)
    entries = {os.path.basename(e["name"].rstrip("/")): e for e in fs.ls(root, detail=True)
               if e.get("type") == "file"} if fs.isdir(root) else {}
    wanted = {n: e for n, e in entries.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    if not wanted:
        raise FileNotFoundError(f"{text}: no such directory, or it holds no model file ({', '.join(patterns)})")
    sums = {n: str(fs.checksum(e["name"])) for n, e in sorted(wanted.items())}
    target = os.path.join(os.fspath(cache_root), hashlib.sha256(text.encode()).hexdigest()[:16])
    record = os.path.join(target, ".source.json")
    if os.path.exists(record) and read_json(record) == {"url": text, "checksums": sums}:
        return target
    staging = f"{target}.staging-{os.getpid()}"
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        for name, entry in wanted.items():
            fs.get_file(entry["name"], os.path.join(staging, name))
        write_json(os.path.join(staging, ".source.json"), {"url": text, "checksums": sums})
        old = f"{target}.old-{os.getpid()}"
        if os.path.exists(target):
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
