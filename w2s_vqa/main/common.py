"""What every verb that reads a config shares: the --config and --set flags and their reading."""

from __future__ import annotations

import argparse
import os
import posixpath


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --set, which every verb that reads a config takes."""
    parser.add_argument("--config", default=None,
                        help="a config file with get_config(), or a shipped config by name from any directory "
                             "(the configs/ folder: tiny_cpu, llava_ov_0_5b, w2s_llava_ov_7b, w2s_released, ...); "
                             "FILE:ARG or NAME:ARG passes ARG to "
                             "get_config, e.g. w2s_llava_ov_7b:tpu (default: tiny_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_frames=8 (repeatable)")


def load_config(args: argparse.Namespace):
    """The config that --config and --set name; its runtime.* keys are applied (JAX's
    persistent compilation cache: w2s_vqa.runtime.configure_compilation_cache)."""
    from w2s_vqa import runtime
    from w2s_vqa.config import load_config as load

    config = load(args.config, args.overrides)
    if getattr(args, "verb", None) not in runtime.COMPILE_ONLY_VERBS:
        runtime.configure_compilation_cache_from(config)
    return config


def check_checkpoint(args: argparse.Namespace) -> None:
    """Refuse, before other inputs are read, a --checkpoint that names a `w2s-vqa stages`
    workdir rather than one of its stages (w2s_vqa.workdir.refuse_stages_run, which
    train.checkpoint.checkpoint_directory applies too): FileNotFoundError, one line."""
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint:
        from w2s_vqa import workdir  # etils.epath, no JAX

        workdir.refuse_stages_run(checkpoint)


def resolve_model_dirs(config) -> None:
    """model.hf_dir and model.tokenizer given as Hugging Face hub ids (org/name[@revision])
    become their local snapshot directories, downloaded or found in the cache (w2s_vqa.hub);
    directories stay as they are. In place, before anything reads them."""
    from w2s_vqa import hub

    for key in ("hf_dir", "tokenizer"):
        value = str(config.model.get(key, "") or "")
        resolved = hub.resolve(value, what=f"model.{key}")
        if resolved != value:
            config.model[key] = resolved


def _plain(value):
    """A setting as compared: tuples as lists (an anchor set's JSON keeps a tuple as a list)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def replaced_data_keys(overrides, asked, used, anchors_settings) -> list[str]:
    """'KEY=ASKED (VALUE, the anchors')' for each data.* key given with --set (`overrides`,
    KEY=VALUE strings) whose value in `asked` (the config --set made) is not the one the
    inputs are decoded with (`used`: score.batch.input_config): the anchors' input
    settings (`anchors_settings`) or the checkpoint's run config decide those."""
    out = []
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if not key.startswith("data.") or key.count(".") != 1:
            continue
        name = key.split(".", 1)[1]
        if name not in asked.data or name not in used.data or _plain(asked.data[name]) == _plain(used.data[name]):
            continue
        whose = "the anchors'" if anchors_settings.get(name) is not None else "the checkpoint's run config"
        entry = f"{key}={asked.data[name]!r} ({used.data[name]!r}, {whose})"
        if entry not in out:
            out.append(entry)
    return out


def note_replaced_data_keys(overrides, asked, used, anchors_settings) -> list[str]:
    """Print one `note:` line naming each `replaced_data_keys` entry (none: nothing printed);
    returns them. The inputs must be decoded as the anchors were, so such a --set has no effect."""
    replaced = replaced_data_keys(overrides, asked, used, anchors_settings)
    if replaced:
        print(f"note: {len(replaced)} --set data.* value(s) replaced, the inputs being decoded as the anchors were: "
              f"{'; '.join(replaced)}")
    return replaced


def json_line(summary, *, allow_nan: bool = True) -> str:
    """A verb's closing JSON line: paths and ids as they are (UTF-8), not as \\u escapes,
    so that a path with non-ASCII letters can be found by the text a user knows.
    `allow_nan=False` raises ValueError for a NaN or infinity (strict JSON)."""
    import json

    return json.dumps(summary, ensure_ascii=False, allow_nan=allow_nan)


def finite(value):
    """`value` with every NaN or infinite float, at any depth of dicts, lists and tuples,
    made None: a figure that could not be computed (a logistic fit omitted on few videos, a
    split not run) is null in a strict JSON line, which parsers other than Python's accept."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (argparse names the option and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


# The runners `prepare --runner` and `curate-metrics --runner` take, spelled out rather than read
# from w2s_vqa.store.beam: that module imports Beam, which a verb's --help must not need.
BEAM_RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")


def add_beam_arguments(parser: argparse.ArgumentParser, runner_help: str) -> None:
    """--workers, --runner and --beam-option, which the verbs that can run on Apache Beam take."""
    parser.add_argument("--workers", type=non_negative_int, default=os.cpu_count() or 1, metavar="N",
                        help="worker processes (default: all CPUs; 0 or 1: this process); with --runner "
                             "DirectRunner, its direct_num_workers")
    parser.add_argument("--runner", default=None, metavar="RUNNER", choices=BEAM_RUNNERS,
                        help=f"{runner_help} ({', '.join(BEAM_RUNNERS)}; needs pip install 'w2s-vqa[beam]')")
    parser.add_argument("--beam-option", dest="beam_options", action="append", default=[], metavar="KEY=VALUE",
                        help="a Beam pipeline option, e.g. project=my-project, region=us-central1, "
                             "temp_location=gs://b/tmp, flink_master=host:8081 (KEY alone for a flag; repeatable)")


def beam_function(module: str, name: str, runner: str):
    """`name` of the module `module`, which imports Apache Beam: OSError naming the extra to
    install when Beam is missing (any other missing module is not ours to explain)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("apache_beam"):
            raise
        raise OSError(f"--runner {runner} needs Apache Beam: pip install 'w2s-vqa[beam]' ({e})") from e


def _url(path: str) -> tuple[str, str] | None:
    """(scheme, normalized path) of a URL such as gs://bucket/videos; None for a local path."""
    scheme, sep, rest = path.partition("://")
    return (scheme.lower(), posixpath.normpath("/" + rest)) if sep else None


def is_store(path: str) -> bool:
    """Whether `path` is a local video store (`w2s-vqa prepare`'s folder, read by its index,
    not listed): it holds the store's store.json."""
    from w2s_vqa.store.format import STORE_FILE

    return _url(path) is None and os.path.isfile(os.path.join(path, STORE_FILE))


def refuse_outputs_inside(inputs: str, outputs: dict[str, str], *, option: str = "--inputs") -> None:
    """Refuse outputs written inside the folder of videos a verb reads.

    A folder's every file is an input (store.sources.find_sources: what is not a video is
    skipped and listed), so a score table, a skipped list, a work folder or a store left
    inside it would be read as inputs by the next run of that folder, whose store would no
    longer fit its inputs. `inputs`: the path the verb's `option` (--inputs, --pool, ...)
    gave (a local one is checked only when it is a folder); `outputs`: {option as the user gave it, e.g. "--out": path}. A URL
    (gs://...) is compared with URLs alone, as text: it is never inside a local folder, and
    nothing under a URL that names a file can be written. Raises ValueError, one line
    naming the option, the path and the folder.
    """
    remote = _url(inputs)
    if remote is None and not os.path.isdir(inputs):
        return
    folder = os.path.realpath(inputs) if remote is None else remote[1]
    for output, path in outputs.items():
        if not path:
            continue
        target = _url(path)
        if (target is None) != (remote is None) or (target and target[0] != remote[0]):
            continue  # a local path and a URL, or two schemes: never one inside the other
        where = os.path.realpath(path) if target is None else target[1]
        paths = os.path if target is None else posixpath
        if paths.commonpath([folder, where]) == folder:
            outside = paths.join(paths.dirname(folder), paths.basename(where))
            if remote is not None:
                outside = f"{remote[0]}://{outside.lstrip('/')}"
            raise ValueError(f"{output} {path}: inside the folder of videos {option} {inputs}, whose every file the "
                             f"next run of that folder would read as an input; write it outside the folder "
                             f"(e.g. {outside})")
