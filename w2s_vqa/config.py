"""Experiment configs: Python files with a `get_config()` that returns a ConfigDict.

As in big_vision, a config is a small program; the run on a pod and the run on a
laptop share the file and differ by `--set key=value` overrides.
"""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tiny_cpu.py")


class ConfigError(ValueError):
    pass


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Run `path`'s get_config() (default: configs/tiny_cpu.py) and apply `key.sub=value` overrides."""
    path = path or DEFAULT_CONFIG
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"w2s_vqa_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    config = module.get_config()
    apply_overrides(config, overrides)
    return config


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            problems.append(f"'{item}': expected key=value")
            continue
        *parents, leaf = key.strip().split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
        except (KeyError, TypeError):
            problems.append(f"'{key}': no such config key")
            continue
        value = parse_value(text)
        old = node[leaf]
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            problems.append(f"'{key}': {e}")
    if problems:
        raise ConfigError("bad --set overrides: " + "; ".join(problems))
