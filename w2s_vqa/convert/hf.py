"""Hugging Face checkpoints in and out: one key-mapping table serves both
(w2s_vqa.convert.hf_keys: RULES, KeyMap, the on-disk prefixes).

A student with scanned layers (model.scan_layers) stacks each layer's tensor into its
parameter's leading axis on import and splits it on export: the files are the same
as an unrolled student's.

Import builds the student abstractly (`nnx.eval_shape`), streams tensors one at
a time from the safetensors files, and places each straight into its sharding
when a mesh is given: a 7B model never sits twice in host memory. Every missing,
unexpected or mis-shaped key, and every config problem, is reported in one error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.convert import export_files
from w2s_vqa.convert.hf_keys import IDENTITY, MODEL_KEYS, MOTION_KEYS, Transform, canonical_name, disk_name
# The file names live in the JAX-free export_files, which the PyTorch scorer reads.
from w2s_vqa.convert.export_files import (CONFIG_FILE, MOTION_FILE, SETTINGS_FILE, WEIGHTS_FILE,  # noqa: F401
                                          WEIGHTS_INDEX, read_settings)
from w2s_vqa.models import stack
from w2s_vqa.models import student as student_lib
from w2s_vqa.models.config import ConfigError, StudentConfig, hf_config_problems

# Copied from the tokenizer's directory. A source's chat template is not: the export writes
# its own, which renders the pair prompt (export_files.chat_template).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json")
MAX_SHARD_BYTES = 5 * 2**30
# SigLIP's attention-pooling head (config vision_use_head=true): transformers loads it,
# LLaVA-OneVision reads the encoder's patch features and never runs it.
UNUSED_VISION_HEAD = "model.vision_tower.head."

_log = logging.getLogger(__name__)


# Problems a CheckpointError names in its message before the rest are only counted.
MAX_PROBLEMS_NAMED = 20


class CheckpointError(ValueError):
    """A checkpoint directory that does not fit the student; lists every problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path, self.problems = path, problems
        # One line (a log or `grep` shows it whole): each problem's own line breaks folded, the
        # first MAX_PROBLEMS_NAMED named and the rest counted; `problems` keeps every one.
        named = "; ".join(" ".join(str(p).split()) for p in problems[:MAX_PROBLEMS_NAMED])
        more = f"; and {len(problems) - MAX_PROBLEMS_NAMED} more" if len(problems) > MAX_PROBLEMS_NAMED else ""
        super().__init__(f"{path}: {len(problems)} problem(s): {named}{more}")


def _path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _flat_params(module: nnx.Module) -> dict[str, nnx.Variable]:
    return {_path_str(p): v for p, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


# ----------------------------------------------------------------------------- import
def weight_files(hf_dir: str, problems: list[str]) -> dict[str, list[str]]:
    """safetensors file -> its keys (from the index when sharded); missing files, and files
    whose header cannot be read (truncated, not safetensors), are problems."""
    index_path = os.path.join(hf_dir, WEIGHTS_INDEX)
    single = os.path.join(hf_dir, WEIGHTS_FILE)

    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f).get("weight_map", {})
        files: dict[str, list[str]] = {}
        for key, name in weight_map.items():
            files.setdefault(name, []).append(key)
        readable = {}
        for name in sorted(files):
            if not os.path.exists(os.path.join(hf_dir, name)):
                problems.append(f"missing shard {name} (listed in {WEIGHTS_INDEX} for {len(files[name])} tensors)")
            elif _safetensors_keys(os.path.join(hf_dir, name), problems) is not None:
                readable[name] = files[name]
        return readable
    if os.path.exists(single):
        keys = _safetensors_keys(single, problems)
        return {} if keys is None else {WEIGHTS_FILE: keys}
    problems.append(f"no {WEIGHTS_FILE} nor {WEIGHTS_INDEX}")
    return {}


def _safetensors_keys(path: str, problems: list[str]) -> list[str] | None:
    """The tensor names of a safetensors file, or None with a problem noted when its header
    cannot be read (safetensors raises its own error type, not an OSError)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="flax") as f:
            return list(f.keys())
    except Exception as e:  # noqa: BLE001 (SafetensorError derives from Exception only)
        problems.append(f"{os.path.basename(path)}: not a readable safetensors file ({e})")
        return None


def check_readable(hf_dir: str) -> None:
    """Raise CheckpointError when `hf_dir`'s config.json or weight files cannot be read, naming
    every problem; for verbs that hand the directory to transformers first."""
    problems: list[str] = []
    if not os.path.isdir(hf_dir):
        raise CheckpointError(hf_dir, ["no such directory"])
    if not os.path.exists(os.path.join(hf_dir, CONFIG_FILE)):
        problems.append(f"no {CONFIG_FILE}")
    weight_files(hf_dir, problems)
    if problems:
        raise CheckpointError(hf_dir, problems)


def _sharding_for(variable, mesh, rules):
    if mesh is None:
        return None
    from w2s_vqa.sharding import named_sharding

    return named_sharding(mesh, variable.get_metadata().get("logical_axes"), rules, variable.shape)


def load_student(hf_dir: str, *, num_frames: int | None = None, num_motion_chunks: int | None = None,
                 dtype: str | None = None, remat: str | bool | None = None, attention: str | None = None,
                 scan_layers: bool | None = None,
                 mesh: jax.sharding.Mesh | None = None,
                 rules=None, seed: int = 0) -> student_lib.Student:
    """A Student with the weights of a Hugging Face LLaVA-OneVision directory.

    Frames and motion chunks default to the directory's w2s_vqa.json (written by
    our export), else to the preset values. The motion projector comes from
    motion_projector.safetensors when present, else is initialized from `seed`.
    With `mesh`, each tensor goes straight to its sharding (logical axes through
    `rules`, see w2s_vqa.sharding).
    """
    from safetensors import safe_open

    hf_dir = os.fspath(hf_dir)
    problems: list[str] = []
    if not os.path.isdir(hf_dir):
        raise CheckpointError(hf_dir, ["no such directory"])
    config_path = os.path.join(hf_dir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise CheckpointError(hf_dir, [f"no {CONFIG_FILE}"])
    with open(config_path) as f:
        hf_config = json.load(f)
    from w2s_vqa.convert import llava_next  # the authors' LLaVA-NeXT layout has its own key table

    if llava_next.is_llava_qwen(hf_config):
        return llava_next.load_student(hf_dir, num_frames=num_frames, num_motion_chunks=num_motion_chunks,
                                       dtype=dtype, remat=remat, attention=attention, mesh=mesh, rules=rules)
    problems += hf_config_problems(hf_config)
    settings = read_settings(hf_dir)
    ours = {k: v for k, v in dict(
        num_frames=num_frames if num_frames is not None else settings.get("num_frames"),
        num_motion_chunks=num_motion_chunks if num_motion_chunks is not None else settings.get("num_motion_chunks"),
        dtype=dtype, remat=remat, attention=attention, scan_layers=scan_layers).items() if v is not None}
    try:
        cfg = StudentConfig.from_hf_config(hf_config, strict=False, **ours)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(hf_dir, problems + [f"config.json: {e}"]) from e

    abstract = student_lib.create_abstract(cfg)
    graphdef, abstract_state = nnx.split(abstract)
    wanted = _flat_params(abstract)
    loaded: dict[str, jax.Array] = {}
    layers_loaded: dict[str, set[int]] = {}  # a stacked parameter's layers placed so far
    unused_head: list[str] = []

    def place(our_key: str, value, transform: Transform, source: str):
        target_key, index = our_key, None
        if our_key not in wanted and (layer := stack.layer_of(our_key)) and layer[0] in wanted:
            target_key, index = layer  # scanned layers: layer `index` of a stacked parameter
        target = wanted.get(target_key)
        if target is None or (index is not None and index >= target.shape[0]):
            problems.append(f"unexpected tensor {source} (maps to {our_key}, which this config does not have)")
            return
        target_shape = tuple(target.shape) if index is None else tuple(target.shape[1:])
        shape = transform.shape(value.shape)
        if shape != target_shape:
            problems.append(f"mis-shaped tensor {source}: {tuple(value.shape)}, this config expects "
                            f"{_hf_shape(target_shape, transform)}")
            return
        if index is not None:
            layers_loaded.setdefault(target_key, set()).add(index)
        if problems:  # Keep checking, but stop moving data once the load is doomed.
            loaded[target_key] = None
            return
        array = transform.load(value).astype(jnp.float32)
        sharding = _sharding_for(target, mesh, rules)
        if index is None:
            loaded[target_key] = jax.device_put(array, sharding) if sharding is not None else array
        else:  # written into the stack where it lies: one layer on the host at a time
            if loaded.get(target_key) is None:
                loaded[target_key] = _zeros(tuple(target.shape), sharding)()
            loaded[target_key] = _set_layer(sharding)(loaded[target_key], array, index)

    for name, keys in weight_files(hf_dir, problems).items():
        with safe_open(os.path.join(hf_dir, name), framework="flax") as f:
            available = set(f.keys())
            for key in keys:
                if key not in available:
                    problems.append(f"{name} lacks {key}, which the index lists there")
                    continue
                canonical = canonical_name(key)
                if canonical.startswith(UNUSED_VISION_HEAD):
                    unused_head.append(key)
                    continue
                mapped = MODEL_KEYS.to_ours(canonical)
                if mapped is None:
                    problems.append(f"unexpected tensor {key} in {name}")
                    continue
                if mapped[0] == "lm_head.kernel" and cfg.tie_word_embeddings:
                    continue  # A tied output layer is the embedding table.
                place(mapped[0], f.get_tensor(key), mapped[1], f"{key} in {name}")

    motion_path = os.path.join(hf_dir, MOTION_FILE)
    if os.path.exists(motion_path):
        with safe_open(motion_path, framework="flax") as f:
            for key in f.keys():
                mapped = MOTION_KEYS.to_ours(key)
                if mapped is None:
                    problems.append(f"unexpected tensor {key} in {MOTION_FILE}")
                    continue
                place(mapped[0], f.get_tensor(key), mapped[1], f"{key} in {MOTION_FILE}")
    else:
        fresh = student_lib.Projector(cfg.motion_dim, cfg.text.hidden_size, act="gelu", bias=True, in_axis=None,
                                      dtype=jnp.dtype(cfg.dtype), std=cfg.text.initializer_range,
                                      rngs=nnx.Rngs(seed))
        for key, variable in _flat_params(fresh).items():
            place(f"motion_projector.{key}", variable[...], IDENTITY, f"initialized motion_projector.{key}")

    if unused_head:
        _log.warning("%s: skipped %d tensors of SigLIP's pooling head (%s...), which LLaVA-OneVision never runs",
                     hf_dir, len(unused_head), unused_head[0])
    absent = [key for key in wanted if key not in loaded]
    absent += [stack.layer_key(key, i) for key in wanted if stack.is_stacked(key)
               for i in range(wanted[key].shape[0]) if i not in layers_loaded.get(key, ())]
    for key in sorted(absent):
        hf_key = (MOTION_KEYS if key.startswith("motion_projector.") else MODEL_KEYS).to_hf(key)
        name = hf_key[0] if key.startswith("motion_projector.") else disk_name(hf_key[0])
        problems.append(f"missing tensor {name} (ours: {key})")
    if problems:
        raise CheckpointError(hf_dir, problems)

    state = nnx.from_flat_state([(path, var.replace(loaded[_path_str(path)]))
                                 for path, var in nnx.to_flat_state(abstract_state)
                                 if _path_str(path) in loaded] +
                                [(path, var) for path, var in nnx.to_flat_state(abstract_state)
                                 if _path_str(path) not in loaded])
    return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=None)
def _zeros(shape: tuple[int, ...], sharding):
    return jax.jit(lambda: jnp.zeros(shape, jnp.float32), out_shardings=sharding)


@functools.lru_cache(maxsize=None)
def _set_layer(sharding):
    """(stack, layer, i) -> stack with `layer` at index i; the stack's buffer is reused."""
    return jax.jit(lambda buf, x, i: jax.lax.dynamic_update_index_in_dim(buf, x, i, 0), donate_argnums=(0,),
                   out_shardings=sharding)


def _hf_shape(our_shape, transform: Transform) -> tuple:
    """The transformers-side shape of one of our parameters."""
    probe = np.empty(our_shape, np.bool_)
    return tuple(transform.save(probe).shape)


# ----------------------------------------------------------------------------- export
def export_tensors(model: student_lib.Student) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(transformers tensors, motion projector tensors) of a student, as float32 numpy arrays
    (parameters held in bfloat16 are widened exactly); a scanned student's stacked
    parameters are written one tensor per layer, as an unrolled student's."""
    model_tensors, motion_tensors = {}, {}
    for stacked_key, variable in _flat_params(model).items():
        value = np.asarray(jax.device_get(variable[...]).astype(np.float32))
        for key, layer_value in stack.unstack_params({stacked_key: value}).items():
            is_motion = key.startswith("motion_projector.")
            mapped = (MOTION_KEYS if is_motion else MODEL_KEYS).to_hf(key)
            if mapped is None:
                raise KeyError(f"parameter {key} has no row in the key-mapping table")
            name = mapped[0] if is_motion else disk_name(mapped[0])
            (motion_tensors if is_motion else model_tensors)[name] = np.ascontiguousarray(mapped[1].save(layer_value))
    return model_tensors, motion_tensors


def _save_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, path, metadata={"format": "pt"})
    # safetensors creates its files 0600; weights are shared like every other file of an
    # export, so they get the mode the user's umask gives a new file (0644 under 022).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_weights(tensors: dict[str, np.ndarray], out_dir: str, max_shard_bytes: int) -> list[str]:
    total = sum(t.nbytes for t in tensors.values())
    if total <= max_shard_bytes:
        _save_safetensors(tensors, os.path.join(out_dir, WEIGHTS_FILE))
        return [WEIGHTS_FILE]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for key in sorted(tensors):
        if shards[-1] and size + tensors[key].nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += tensors[key].nbytes
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        _save_safetensors(shard, os.path.join(out_dir, name))
        weight_map.update({key: name for key in shard})
    with open(os.path.join(out_dir, WEIGHTS_INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    return names + [WEIGHTS_INDEX]


def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse a non-empty `out_dir` unless `overwrite`; raises FileExistsError."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: not empty; pass --overwrite to replace its contents")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir}: exists and is not a directory")


def _swap_in(staging: str, out_dir: str) -> None:
    """Put the complete `staging` directory at `out_dir`, replacing what was there.

    Two renames on one file system: the old directory moves aside only once the new
    one is complete, so an export that fails, or reads from `out_dir` itself (e.g.
    the tokenizer), never leaves `out_dir` half-written or empty.
    """
    old = None
    if os.path.exists(out_dir):
        old = f"{staging}.old"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def missing_tokenizer_files(tokenizer_dir: str) -> list[str]:
    """The names of TOKENIZER_FILES that `tokenizer_dir` lacks (an export copies the others)."""
    return [name for name in TOKENIZER_FILES if not os.path.exists(os.path.join(tokenizer_dir, name))]


def save_student(model: student_lib.Student, out_dir: str, *, tokenizer_dir: str, overwrite: bool = False,
                 max_shard_bytes: int = MAX_SHARD_BYTES, extra_settings: dict | None = None,
                 data=None) -> list[str]:
    """Write a complete transformers checkpoint of the student, plus ours.

    Files: config.json, model.safetensors (or shards and an index past
    `max_shard_bytes`), the tokenizer files found in `tokenizer_dir`, the processor
    files (`export_files.processor_files`: transformers' AutoProcessor loads a
    LLaVA-OneVision processor from them), motion_projector.safetensors and w2s_vqa.json
    (prompt, levels, level token ids and `export_files.input_settings`: how a video file
    becomes the student's inputs; `data` is the run config's `data` section that sets
    the motion feature kind and decoding caps, default: the settings already in
    `tokenizer_dir`'s w2s_vqa.json, else config.defaults()). Returns the written names.

    Everything is written into a staging directory beside `out_dir` and swapped in
    when complete, so `out_dir` may also be the source of the tokenizer (export over
    a Hugging Face directory), and a failed export leaves the old directory intact.
    Raises FileExistsError for a non-empty `out_dir` without `overwrite`.

    Precision: every tensor is written float32, holding the values the student holds. A
    run whose frozen groups were held in bfloat16 (model.frozen_in_compute_dtype) exports
    those bfloat16 values widened exactly, not the float32 values it started from: the
    values its trained groups were trained against (model.frozen_in_compute_dtype=False
    keeps the source's float32 values through training and export).
    """
    from w2s_vqa import prompt

    if not workdir_lib.is_local(out_dir):
        return _save_student_to_url(model, workdir_lib.absolute(out_dir), tokenizer_dir=tokenizer_dir,
                                    overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                    extra_settings=extra_settings, data=data)
    out_dir = workdir_lib.absolute(os.fspath(out_dir))
    tokenizer_dir = os.fspath(tokenizer_dir)
    tokenizer = prompt.load_tokenizer(tokenizer_dir)  # Fails before anything is written.
    level_ids = prompt.level_token_ids(tokenizer)
    if data is None:  # re-exporting one of ours keeps its input settings
        data = export_files.data_of_settings(read_settings(tokenizer_dir))
    inputs = export_files.input_settings(model.cfg, data)
    processor = export_files.processor_files(model.cfg, tokenizer)
    check_out_dir(out_dir, overwrite)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = f"{out_dir}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # a killed export's leftovers
    os.makedirs(staging)
    try:
        written = _write_export(model, staging, tokenizer_dir, level_ids, max_shard_bytes,
                                {**inputs, **(extra_settings or {})}, processor)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _save_student_to_url(model, url: str, *, overwrite: bool, **kwargs) -> list[str]:
    """save_student into a bucket directory (gs://...): the export is written to a local
    temporary directory, then uploaded with config.json last (workdir.upload_dir): an
    object store has no directory rename, and a directory without config.json is no model
    directory to a reader, so a reader never takes a half-uploaded export for one. With
    `overwrite`, the old objects are deleted first (config.json first, for the same reason)."""
    import tempfile

    if workdir_lib.listdir(url):
        if not overwrite:
            raise FileExistsError(f"{url}: not empty; pass --overwrite to replace its contents")
        old_config = workdir_lib.path(workdir_lib.join(url, CONFIG_FILE))
        if old_config.exists():
            old_config.unlink()
        workdir_lib.remove_tree(url)
    with tempfile.TemporaryDirectory(prefix="w2s_vqa_export_") as local:
        written = save_student(model, os.path.join(local, "export"), overwrite=False, **kwargs)
        workdir_lib.upload_dir(os.path.join(local, "export"), url, last=CONFIG_FILE)
    return written


def _write_export(model, out_dir: str, tokenizer_dir: str, level_ids, max_shard_bytes: int,
                  extra_settings: dict, processor: dict[str, str]) -> list[str]:
    cfg = model.cfg
    model_tensors, motion_tensors = export_tensors(model)
    written = _write_weights(model_tensors, out_dir, max_shard_bytes)
    _save_safetensors(motion_tensors, os.path.join(out_dir, MOTION_FILE))
    written.append(MOTION_FILE)
    hf_config = cfg.to_hf_config()
    hf_config["dtype"] = "float32"
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2)
    written.append(CONFIG_FILE)
    for name in TOKENIZER_FILES:
        source = os.path.join(tokenizer_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(out_dir, name))
            written.append(name)
    for name, text in processor.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
        written.append(name)
    settings = {**cfg.video_settings(), "level_token_ids": list(level_ids), **extra_settings}
    with open(os.path.join(out_dir, SETTINGS_FILE), "w") as f:
        json.dump(settings, f, indent=2)
    written.append(SETTINGS_FILE)
    return written

