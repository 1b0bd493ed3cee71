"""`finetune`: the splits of a fine-tuning run, each trained from the weak-to-strong
checkpoint and scored before and after (the package docstring says what each file is).

Multi-host: every process runs `finetune`; process 0 decodes the videos and writes
tables, the others wait for it (the work directory must be on a shared file system, as a
training run's is); training and scoring run on all processes.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys

import ml_collections
import numpy as np
import pandas as pd

from w2s_vqa import config as config_lib
from w2s_vqa import multihost
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.finetune.inputs import (MANIFEST_FILE, SPLIT_RESULT, STORE_DIR, TEST_PAIRS, TRAIN_PAIRS, FinetuneError,
                                     base_config, check_counts, check_inputs, hf_base_config, read_set,
                                     resolve_checkpoint, split_config, split_dir)
from w2s_vqa.finetune.record import check_run
from w2s_vqa.finetune.results import (AFTER, BEFORE, FIGURES, MODELS, RESULTS_JSON, RESULTS_MD, finite_or_none,
                                      markdown, small_split_notes,
                                      median_figures, text)
from w2s_vqa.labels import mos_pairs as mos_pairs_lib
from w2s_vqa.labels import origins
from w2s_vqa.labels import pair_table
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels.build import pair_counts
from w2s_vqa.score import evaluate as evaluate_lib
from w2s_vqa.score.anchors import RULE as ANCHOR_RULE, DEFAULT_COVERAGE, AnchorError, AnchorSet, pick_anchors
from w2s_vqa.train import prompts as prompts_lib


@dataclasses.dataclass
class _Split:
    index: int
    directory: str
    train_ids: list[str]
    test_ids: list[str]
    anchors: AnchorSet | None = None
    done: bool = False


def finetune(config: ml_collections.ConfigDict, *, checkpoint: str | None, step: int | str | None, videos: str,
             mos_table: str, set_name: str, workdir: str, anchors_k: int = 5, splits: int | None = None,
             bootstrap: int = 1000, batch_size: int = 0, workers: int = 0, mode: str = "map",
             progress: bool = True, hf_dir: str | None = None) -> dict:
    """Fine-tune the weak-to-strong run `checkpoint` (its `step`: a number, "latest" or
    "best"), or the student of `hf_dir` (exactly one of the two: a Hugging Face, export or
    the authors' released llava_qwen directory, as score --hf reads it; `step` unused), on
    the MOS-labeled set (`videos` folder, `mos_table` file,mos CSV, named
    `set_name`) over `splits` random splits (default finetune.splits), in `workdir`: see
    the module docstring for what each split does and writes.

    config: this run's config (optimizer, steps, mesh, finetune.*: splits, train_fraction,
    pairs_per_video, mos_std_fraction, num_steps, fresh_optimizer); the student and data
    settings (inputs.base_config) are the checkpoint's; with `hf_dir` they are this config's
    with model.hf_dir set to it (and the data settings of its w2s_vqa.json, if any:
    inputs.hf_base_config). anchors_k: anchors per split (K); bootstrap:
    resamples of the 95% intervals (0: none); batch_size: test videos per scoring call
    (0: 8 rounded up to the batch's parts and the processes); workers: processes decoding
    videos; mode: "map" or "paper" (score.thurstone).

    Returns the results: {"set", "checkpoint", "step", "splits": [per split: train and
    test videos, pairs, anchors, steps, and per model (BEFORE, AFTER) the FIGURES],
    "median": {BEFORE: {...}, AFTER: {...}, "gain": median over splits of AFTER - BEFORE},
    "splits_done", "splits_requested", "stopped": None or what stopped training}, also
    written as W/results.json and results.md by process 0. A split whose training a signal
    stops ends the run there ("stopped" says which); rerun to continue.

    Raises config.ConfigError for finetune.* settings, `splits` or anchors_k out of range
    (check_inputs, before any work); FinetuneError for a bad set name, too few videos for
    a split (checked on the table before decoding and again on the videos that decoded), a
    `stages` run's work directory, or another fine-tuning run's: W/finetune.json records
    the checkpoint, the set and this run's config, and a rerun that changes any of them
    but SAFE_KEYS (more splits among them) is refused naming every difference;
    EvalError / AnchorError for a table or folder that does not fit (read_set); FileNotFoundError for a checkpoint folder without the step.
    ValueError unless exactly one of `checkpoint` and `hf_dir` is given.
    """
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa import sharding as sharding_lib
    from w2s_vqa.models import config as model_config_lib
    from w2s_vqa.store.format import ERRORS_FILE, VideoStore
    from w2s_vqa.store.prepare import prepare

    workdir = workdir_lib.absolute(workdir)
    ft = config.finetune
    check_inputs(config, workdir, splits=splits, anchors_k=anchors_k)
    splits = int(ft.splits if splits is None else splits)
    table = read_set(videos, mos_table, set_name)
    counts = dict(pairs_per_video=float(ft.pairs_per_video), batch_size=int(config.data.batch_size))
    check_counts(len(table), float(ft.train_fraction), anchors_k, mos_table, **counts)
    std_col = mos_pairs_lib.std_column(list(table.columns))
    if (checkpoint is None) == (hf_dir is None):
        raise ValueError(f"finetune starts from a checkpoint or an hf_dir, exactly one (got checkpoint={checkpoint!r}, "
                         f"hf_dir={hf_dir!r})")
    if hf_dir is not None:
        resolved, base = None, hf_base_config(config, hf_dir)
        source = {"checkpoint": None, "step": None, "hf": workdir_lib.absolute(hf_dir)}
        started = source
    else:
        from w2s_vqa.train.checkpoint import checkpoint_directory

        resolved, run_config = resolve_checkpoint(checkpoint, step)
        base = base_config(config, run_config)
        source = {"checkpoint": workdir_lib.absolute(checkpoint_directory(checkpoint)), "step": resolved, "hf": None}
        started = {"checkpoint": workdir_lib.absolute(checkpoint), "step": int(resolved), "hf": None}
    # The mesh, and whether the global batch divides over it: before anything is decoded or recorded.
    mesh = sharding_lib.mesh_from_config(base)
    check_batch(base, mesh)
    identity = {**source, "set": set_name,
                "table_sha256": workdir_lib.file_digest(mos_table), "seed": int(config.seed),
                "train_fraction": float(ft.train_fraction), "pairs_per_video": float(ft.pairs_per_video),
                "spread": f"column {std_col}" if std_col else f"mos_std_fraction {float(ft.mos_std_fraction):g}",
                "anchors": int(anchors_k), "config": config_lib.as_json(base)}
    os.makedirs(workdir, exist_ok=True)
    check_run(workdir, identity, write=multihost.is_first())
    multihost.barrier("finetune.run")

    # The set's videos, decoded once as the weak-to-strong run's were.
    store_dir = os.path.join(workdir, STORE_DIR)
    if multihost.is_first():
        manifest = evaluate_lib.write_manifest(table, os.path.join(workdir, MANIFEST_FILE))
        prepare(base, manifest, store_dir, workers=workers, distortions="", progress=progress)
    multihost.barrier("finetune.prepare")
    store = VideoStore(store_dir)
    held = set(store.index.loc[store.index["distortion"] == "", "id"].astype(str))
    reasons = {}
    errors_path = os.path.join(store_dir, ERRORS_FILE)
    if os.path.exists(errors_path):
        with open(errors_path) as f:
            reasons = {e.get("id", ""): e.get("reason", "") for e in map(json.loads, filter(str.strip, f))}
    skipped = [{"file": f, "path": p, "reason": reasons.get(f, "not in the store")}
               for f, p in zip(table["file"], table["path"]) if f not in held]
    table = table[table["id"].isin(held)].reset_index(drop=True)
    check_counts(len(table), float(ft.train_fraction), anchors_k,
                 f"{mos_table} ({len(skipped)} video(s) could not be decoded: {store_dir}/{ERRORS_FILE})", **counts)

    # Splits, pairs and anchors: cheap, all made first.
    by_id = table.set_index("id")
    parts = mos_pairs_lib.split_by_video(table["id"].tolist(), train_fraction=float(ft.train_fraction),
                                         splits=splits, seed=int(config.seed))
    runs = []
    for s, (train_ids, test_ids) in enumerate(parts):
        run = _Split(s, split_dir(workdir, s), train_ids, test_ids)
        run.done = bool(multihost.broadcast(os.path.exists(os.path.join(run.directory, SPLIT_RESULT))))
        if not run.done:
            _prepare_split(run, by_id, ft, std_col, store, anchors_k, seed=int(config.seed))
        runs.append(run)
    multihost.barrier("finetune.pairs")

    model_cfg = model_config_lib.student_config(base)
    # The question the student was trained with: the training splits ask it too (train.prompts).
    prompt = prompt_lib.build_pair_prompt(prompt_lib.load_tokenizer(model_config_lib.tokenizer_dir(base)),
                                          video_token_id=model_cfg.video_token_index,
                                          tokens_per_video=model_cfg.tokens_per_video,
                                          question=prompts_lib.question(base))
    from w2s_vqa.score.scorer import default_batch_size

    batch_size = batch_size or default_batch_size(mesh)
    score = dict(prompt=prompt, mesh=mesh, batch_size=batch_size, store=store, mode=mode, progress=progress)
    say = _say if progress else (lambda text: None)

    # Before: the weak-to-strong checkpoint on every split's test videos, loaded once.
    from w2s_vqa.train import loop
    from w2s_vqa.train.checkpoint import load_checkpoint_student

    todo = [r for r in runs if not r.done and not bool(multihost.broadcast(os.path.exists(_scores_path(r, BEFORE))))]
    start = f"{hf_dir}" if hf_dir is not None else f"{checkpoint} step {resolved}"
    if todo:
        if hf_dir is not None:
            from w2s_vqa.score.student_source import load_for_scoring

            loaded = load_for_scoring(hf_dir=hf_dir, mesh=mesh, config=base)
            student, key = loaded.student, loaded.key
        else:
            student, _, _ = load_checkpoint_student(checkpoint, resolved, mesh=mesh)
            key = f"checkpoint:{workdir_lib.absolute(checkpoint)}:step {resolved}"
        for run in todo:
            say(f"finetune split {run.index}: scoring {len(run.test_ids)} test videos with the student to start "
                f"from ({start})")
            _score(run, BEFORE, student, key, **score)
        del student
        gc.collect()

    results = _results(runs, workdir, set_name, started, splits, table, skipped, identity)
    stopped = None
    for run in runs:
        if run.done:
            continue
        train_dir = os.path.join(run.directory, "train")
        cfg = split_config(base, store=store_dir, train_pairs=os.path.join(run.directory, TRAIN_PAIRS),
                           test_pairs=os.path.join(run.directory, TEST_PAIRS), checkpoint=checkpoint, step=resolved)
        say(f"finetune split {run.index}: training {cfg.train.num_steps} steps on {len(run.train_ids)} videos "
            f"from {start}")
        trainer = loop.Trainer(cfg, train_dir)
        info = trainer.run()
        del trainer
        gc.collect()
        if info.stopped:
            stopped = info.stopped
            break
        student, _, final = load_checkpoint_student(train_dir, info.steps, mesh=mesh)
        _score(run, AFTER, student, f"checkpoint:{train_dir}:step {final}", parts=str(final), **score)
        del student
        gc.collect()
        if multihost.is_first():
            _evaluate_split(run, table, set_name, bootstrap=bootstrap, seed=int(config.seed), steps=final)
        run.done = True
        results = _results(runs, workdir, set_name, started, splits, table, skipped, identity)
        for done in (s for s in results["splits"] if s["split"] == run.index):  # process 0 reads them
            say(f"finetune split {run.index}: test SRCC " + ", ".join(
                f"{model} {text(done[model]['srcc'])}" for model in MODELS))
    multihost.barrier("finetune.done")
    store.close()
    results["stopped"] = stopped
    return results


def check_batch(config: ml_collections.ConfigDict, mesh) -> None:
    """Refuse (config.ConfigError, one line naming data.batch_size, the mesh axes that split
    the batch, mesh.shape and the processes, and the nearest batch size that fits) a
    data.batch_size that does not divide over the batch's mesh axes and the processes, as
    the Trainer would refuse it, but before any work."""
    import math

    import jax

    from w2s_vqa.train import step as step_lib

    global_batch = int(config.data.batch_size)
    sharding = step_lib.batch_sharding(config, mesh)
    shards = step_lib.batch_shards(sharding)
    processes = jax.process_count()
    if global_batch < 1 or global_batch % shards or global_batch % processes:
        entry = sharding.spec[0] if len(sharding.spec) else None
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        split = " x ".join(f"{a}={mesh.shape[a]}" for a in axes) or "none"
        unit = math.lcm(shards, processes)
        fits = unit * max(1, math.ceil(global_batch / unit))
        raise config_lib.ConfigError(
            f"data.batch_size = {global_batch}: the global batch must be a positive multiple of the batch's mesh "
            f"parts ({shards}: mesh axes {split} of mesh.shape {tuple(mesh.shape.values())}, the mesh.rules "
            f"'batch' entry) and of the processes ({processes}); e.g. data.batch_size={fits}")


def _say(text: str) -> None:
    if multihost.is_first():
        print(text, file=sys.stderr, flush=True)


def _prepare_split(run: _Split, by_id: pd.DataFrame, ft, std_col: str | None, store, anchors_k: int, *,
                   seed: int) -> None:
    """The split's pair tables (written by process 0 when absent) and its anchors (picked
    among the training videos; saved by process 0 when absent)."""
    if multihost.is_first():
        os.makedirs(run.directory, exist_ok=True)
    for name, ids, stream in ((TRAIN_PAIRS, run.train_ids, 1), (TEST_PAIRS, run.test_ids, 2)):
        path = os.path.join(run.directory, name)
        if multihost.is_first() and not os.path.exists(path):
            videos = by_id.loc[ids].reset_index()
            pairs = mos_pairs_lib.mos_pairs(videos, pairs_per_video=float(ft.pairs_per_video),
                                            rng=np.random.default_rng([seed, run.index, stream]), mos_std=std_col,
                                            std_fraction=float(ft.mos_std_fraction))
            pair_table.write_pairs(pair_sampling.random_swap(pairs, np.random.default_rng([seed, run.index,
                                                                                          stream + 2])), path)
    training = by_id.loc[run.train_ids].reset_index()[["id", "mos"]]
    try:
        picked = pick_anchors(training, anchors_k)
    except AnchorError as e:
        raise FinetuneError(f"split {run.index}: no anchors among its {len(run.train_ids)} training videos: {e}") \
            from None
    coverage = DEFAULT_COVERAGE
    run.anchors = AnchorSet.from_store(store, picked["id"], picked["mos"],
                                       rule=ANCHOR_RULE.format(lo=(1 - coverage) / 2, hi=(1 + coverage) / 2)
                                       + f"; among split {run.index}'s training videos")
    anchors_dir = os.path.join(run.directory, "anchors")
    if multihost.is_first() and not os.path.exists(os.path.join(anchors_dir, "anchors.json")):
        run.anchors.save(anchors_dir)


def _scores_path(run: _Split, model: str) -> str:
    return os.path.join(run.directory, f"{model}_scores.csv")


def _score(run: _Split, model: str, student, key: str, *, prompt, mesh, batch_size: int, store, mode: str,
           progress: bool, parts: str = "") -> None:
    """Score the split's test videos with `student` against its anchors into
    W/split_NN/<model>_scores.csv (score.scorer; parts kept for resuming in
    W/split_NN/<model>_parts/<parts>, one folder per student)."""
    from w2s_vqa.score import batch as batch_lib
    from w2s_vqa.score import scorer as scorer_lib

    scorer = scorer_lib.Scorer(student, prompt, run.anchors, mesh, batch_size=batch_size)
    table = batch_lib.score_store(scorer, store, mode=mode, ids=run.test_ids,
                                  parts_dir=os.path.join(run.directory, f"{model}_parts", parts), student_key=key,
                                  progress=progress).table
    if multihost.is_first():
        path = _scores_path(run, model)
        with workdir_lib.atomic_open(path) as f:
            table.to_csv(f, index=False)
    multihost.barrier(f"finetune.scored-{run.index}-{model}")


def _evaluate_split(run: _Split, table: pd.DataFrame, set_name: str, *, bootstrap: int, seed: int,
                    steps: int) -> None:
    """score.evaluate's figures of both models on the split's test videos: W/split_NN/eval
    (tables, plots) and W/split_NN/result.json (written last)."""
    test = table[table["id"].isin(run.test_ids)].reset_index(drop=True)
    predictions = {}
    for model in MODELS:
        scores = pd.read_csv(_scores_path(run, model), dtype={"id": str}, keep_default_na=False, na_values=[""])
        predictions[model] = {set_name: pd.DataFrame({"file": scores["id"].astype(str),
                                                      "prediction": scores["score"].astype(np.float64)})}
    tables = {set_name: test}
    results = evaluate_lib.evaluate(predictions, tables, bootstrap=bootstrap, seed=seed)
    evaluate_lib.write_report(results, predictions, tables, os.path.join(run.directory, "eval"))
    pairs = pd.read_parquet(os.path.join(run.directory, TRAIN_PAIRS))
    figures = {}
    for model in MODELS:
        entry = results["sets"][set_name]["models"][model]
        # A figure left out (too few test videos: score.metrics' small-set rules) is null, not NaN.
        figures[model] = {"videos": int(entry["videos"]), **{k: finite_or_none(entry.get(k)) for k in FIGURES}}
    with open(os.path.join(run.directory, "anchors", "anchors.json")) as f:
        anchors = json.load(f)["anchors"]
    workdir_lib.write_json(os.path.join(run.directory, SPLIT_RESULT), {
        "split": run.index, "train_videos": len(run.train_ids), "test_videos": len(run.test_ids),
        "train_pairs": len(pairs), "train_labels": pair_counts(pairs)["by_origin"].get(origins.MOS, {}),
        "steps": int(steps),
        "anchors": [{"id": a["id"], "mos": a["mos"]} for a in anchors], **figures,
        "eval": os.path.join(run.directory, "eval", evaluate_lib.RESULTS_JSON)})


def _results(runs, workdir, set_name, source, splits, table, skipped, identity) -> dict:
    """Every finished split's result.json and their medians; written (process 0) as
    W/results.json and W/results.md."""
    per_split = []
    for run in runs:
        path = os.path.join(run.directory, SPLIT_RESULT)
        if multihost.is_first() and os.path.exists(path):
            with open(path) as f:
                per_split.append(json.load(f))
    # source: "checkpoint" and "step", or "hf" (the others None).
    results = {"set": set_name, **source,
               "videos": int(len(table) + len(skipped)), "videos_used": int(len(table)), "skipped": list(skipped),
               "settings": {k: v for k, v in identity.items() if k != "config"}, "splits_requested": int(splits),
               "splits_done": len(per_split),
               "splits": per_split, "median": median_figures(per_split), "notes": small_split_notes(per_split),
               "workdir": workdir}
    if multihost.is_first():
        workdir_lib.write_json(os.path.join(workdir, RESULTS_JSON), results)
        workdir_lib.write_text(os.path.join(workdir, RESULTS_MD), markdown(results))
    return results
