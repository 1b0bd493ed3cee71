"""What every verb that reads a config shares: the --config and --set flags and their reading."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --set, which every verb that reads a config takes."""
    parser.add_argument("--config", default=None,
                        help="a config file with get_config(), or a shipped config by name from any directory "
                             "(tiny_cpu, llava_ov_0_5b, w2s_llava_ov_7b); FILE:ARG or NAME:ARG passes ARG to "
                             "get_config, e.g. w2s_llava_ov_7b:tpu (default: tiny_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_frames=8 (repeatable)")


def load_config(args: argparse.Namespace):
    """The config that --config and --set name."""
    from w2s_vqa.config import load_config as load

    return load(args.config, args.overrides)


def json_line(summary) -> str:
    """A verb's closing JSON line: paths and ids as they are (UTF-8), not as \\u escapes,
    so that a path with non-ASCII letters can be found by the text a user knows."""
    import json

    return json.dumps(summary, ensure_ascii=False)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (argparse names the option and exits 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value
