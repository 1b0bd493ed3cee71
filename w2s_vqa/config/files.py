"""Reading configs: a config file (a path, or a shipped config by name) with `--set`
overrides, checked against the known keys; flattening, JSON and the differences between two
configs (what a resumed run may change). Config files are Python programs with a
`get_config(arg)` that returns a ConfigDict, as in big_vision.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import fnmatch
import importlib.util
import json
import os
from typing import Any, TypeVar

import ml_collections

from w2s_vqa.config.schema import (DEFAULT_CONFIG, RESUME_SAFE_KEYS, SHIPPED_CONFIGS, SHORTHAND_EVAL,
                                   VAL_PAIRS_SHORTHAND, ConfigError, defaults, ensure_eval, normalize_name_lists)

T = TypeVar("T")


def from_section(cls: type[T], config: ml_collections.ConfigDict, section: str, **changes: Any) -> T:
    """`cls(**config[section])`, every field from the config (a dataclass without defaults of
    its own: defaults() is the one home of a default). `changes` replace single values.

    Raises ConfigError naming the section's keys the dataclass does not know and the
    fields the section lacks.
    """
    node = config
    for name in section.split("."):
        if name not in node:
            raise ConfigError(f"config has no section '{section}'")
        node = node[name]
    values = {**(node.to_dict() if isinstance(node, ml_collections.ConfigDict) else dict(node)), **changes}
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    missing = [f for f in fields if f not in values]
    if unknown or missing:
        problems = ([f"unknown keys {', '.join(f'{section}.{k}' for k in unknown)}"] if unknown else []) + (
            [f"missing keys {', '.join(f'{section}.{k}' for k in missing)}"] if missing else [])
        raise ConfigError(f"config section '{section}' does not fit {cls.__name__}: " + "; ".join(problems))
    return cls(**values)


def shipped_configs() -> list[str]:
    """The names of the shipped configs (`--config NAME` from anywhere), sorted."""
    if not os.path.isdir(SHIPPED_CONFIGS):
        return []
    return sorted(n[:-3] for n in os.listdir(SHIPPED_CONFIGS) if n.endswith(".py") and not n.startswith("_"))


def resolve_config_path(path: str) -> str:
    """The config file `path` names (without its ":arg").

    A path that exists is taken as given. Else a shipped config: by its name
    (`w2s_llava_ov_7b`, `tiny_cpu.py`) or by the repository-relative path README uses
    (`configs/tiny_cpu.py`, from a directory other than the clone). Raises ConfigError
    naming the shipped configs and their folder otherwise.
    """
    if os.path.exists(path):
        return path
    folder, name = os.path.split(path)
    name = name if name.endswith(".py") else f"{name}.py"
    shipped = os.path.join(SHIPPED_CONFIGS, name)
    if os.path.isfile(shipped) and (not folder or (not os.path.isabs(path)
                                                   and os.path.basename(os.path.normpath(folder)) == "configs")):
        return shipped
    names = shipped_configs()
    known = (f"; the shipped configs, found by name from any directory: {', '.join(names)} (in {SHIPPED_CONFIGS}), "
             f"e.g. --config {'tiny_cpu' if 'tiny_cpu' in names else names[0]}" if names else "")
    raise ConfigError(f"{path}: no such config file{known}")


def _one_line(error: BaseException, path: str, what: str) -> str:
    """`FILE:LINE: WHAT failed: Type: message` on one line, LINE the deepest line of `path`
    in the traceback (none where the failure is not on a line of the file)."""
    import traceback

    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    where = f"{path}:{lines[-1]}" if lines else path
    return f"{where}: {what} failed: {type(error).__name__}: {' '.join(str(error).split())}"


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    # `path` may end in ":arg", passed to get_config(arg) (e.g. w2s_llava_ov_7b:gpu).
    """Run `path`'s get_config() and apply `key.sub=value` overrides.

    `path`: a config file, or a shipped config by name (resolve_config_path), either
    with an optional ":arg"; default the shipped tiny_cpu, or `defaults()` where the
    package has no shipped configs. Raises ConfigError in one line naming the file (and
    the line, for a file that fails to import or to build its config) and the problem.
    """
    if path is None and not os.path.exists(DEFAULT_CONFIG):
        config = defaults()
        apply_overrides(config, overrides)
        normalize_name_lists(config)
        return config
    path = path or DEFAULT_CONFIG
    path, _, arg = path.partition(":")  # big_vision's "file.py:arg" form
    path = resolve_config_path(path)
    spec = importlib.util.spec_from_file_location(f"w2s_vqa_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python: {e.msg}") from e
    except Exception as e:  # noqa: BLE001  (a config is a program: any failure is the file's, said in one line)
        raise ConfigError(_one_line(e, path, "importing the config file")) from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # noqa: BLE001
        # A wrong-typed value (ConfigDict refuses it), an argument the file does not know, a bug.
        what = f"get_config({arg!r})" if arg else "get_config()"
        raise ConfigError(_one_line(e, path, what)) from e
    check_known_keys(config, source=path)
    apply_overrides(config, overrides)
    normalize_name_lists(config)
    return config


# Sections whose keys a config file names itself (one entry per evaluation).
_OPEN_SECTIONS = ("evals.",)


def check_known_keys(config: ml_collections.ConfigDict, *, source: str) -> None:
    """Refuse keys that defaults() does not have (a typo in a config file would otherwise be
    ignored silently); raises ConfigError naming `source`, every unknown key and the closest
    known ones."""
    known = flatten(defaults())
    problems = []
    for key in flatten(config):
        if key in known or key.startswith(_OPEN_SECTIONS):
            continue
        close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.8)
        problems.append(f"'{key}'" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    present = flatten(config)
    # A key defaults() has but the file lost (deleted, or a section replaced by hand): the
    # code would fail later on an attribute lookup, far from the file.
    missing = sorted(k for k in known if k not in present and not k.startswith(_OPEN_SECTIONS)
                     and not any(p.startswith(k + ".") for p in present))
    if problems or missing:
        parts = ([f"unknown config key(s): {'; '.join(problems)}"] if problems else []) + (
            [f"missing config key(s), which defaults() has: {', '.join(missing)} (start the file from "
             "w2s_vqa.config.defaults())"] if missing else [])
        raise ConfigError(f"{source}: " + "; ".join(parts))


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
    """Set each `key.sub=value` (a Python literal, else a string); raises ConfigError listing
    every bad item. `data.val_pairs=X` is shorthand for `evals.val.pairs=X`."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            problems.append(f"'{item}': expected key=value")
            continue
        if key.strip() == VAL_PAIRS_SHORTHAND:
            ensure_eval(config, SHORTHAND_EVAL)
            key = f"evals.{SHORTHAND_EVAL}.pairs"
        *parents, leaf = key.strip().split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
        except (KeyError, TypeError):
            close = difflib.get_close_matches(key.strip(), list(flatten(config)), n=3, cutoff=0.8)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            problems.append(f"'{key}': no such config key{hint}")
            continue
        value = parse_value(text)
        old = node[leaf]
        if isinstance(old, str) and isinstance(value, bool) and key.strip() == "model.remat":
            value = text.strip()  # the deprecated boolean form, read by models.config.remat_policy
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            # ml_collections names the types; say what to write instead.
            want = {bool: "True or False", int: "an integer", float: "a number", str: "a string",
                    tuple: "a tuple such as (1, 8, 1)", list: "a list"}.get(type(old))
            problems.append(f"'{key}={text}': expects {want} (the default is {old!r})" if want
                            else f"'{key}': {e}")
    if problems:
        raise ConfigError("bad --set overrides: " + "; ".join(problems))


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """{"section.key": value} for every leaf of a config (or its JSON dict); lists, tuples
    and other values are leaves."""
    items = config.items() if isinstance(config, (dict, ml_collections.ConfigDict)) else ()
    flat = {}
    for name, value in items:
        key = f"{prefix}{name}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def as_json(config: ml_collections.ConfigDict | dict) -> dict:
    """The config as the JSON a checkpoint keeps (tuples become lists)."""
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json())
    return json.loads(json.dumps(config))


def config_differences(saved: dict, current: ml_collections.ConfigDict | dict, *,
                       allowed: tuple[str, ...] = RESUME_SAFE_KEYS) -> list[str]:
    """What `current` changes from `saved` (a checkpoint's config JSON): one "key: saved ->
    now" entry per changed leaf, sorted by key, leaving out keys matching an `allowed`
    fnmatch pattern. A key the saved config lacks counts only where `current` holds
    something other than its default (it was added to defaults() after the checkpoint);
    a key only the saved config has is ignored (removed since)."""
    old, new = flatten(as_json(saved)), flatten(as_json(current))
    default = flatten(as_json(defaults()))
    changes = []
    for key in sorted(set(new) | set(old)):
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed) or key not in new:
            continue
        if key not in old:
            if key not in default or new[key] != default[key]:
                changes.append(f"{key}: not in the saved config -> {new[key]!r}")
        elif old[key] != new[key]:
            changes.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return changes
