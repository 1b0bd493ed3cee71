"""Every config key with its default (`defaults()`, the tiny CPU run), the constants configs
share (the mesh axes and the logical-axis rules table, the keys a resume may change, the
name-list keys), and ConfigError. Free of JAX, so that the PyTorch side can read defaults.
"""

from __future__ import annotations

import os
import ml_collections

# The shipped configs: the repository's configs/ folder, which the package carries as
# w2s_vqa/configs (a link in the repository, package data once installed), so that
# `--config NAME` finds them from any directory.
SHIPPED_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = os.path.join(SHIPPED_CONFIGS, "tiny_cpu.py")

# `--set data.val_pairs=X` (the key before config.evals existed) is shorthand for
# `--set evals.val.pairs=X`; the entry "val" is added if the config has none.
VAL_PAIRS_SHORTHAND = "data.val_pairs"
SHORTHAND_EVAL = "val"
EVAL_KINDS = ("pairs",)  # "pairs": direction and five-way accuracy over a pair table


# Keys a resumed run may change from the checkpoint's saved config (fnmatch patterns): how
# long, how often to log, evaluate and save, what to keep, how data is read, the mesh and
# the processes, how attention, remat and the layer loop compute and how frozen weights are
# held (the same numbers within float tolerance; a checkpoint converts to the layer layout).
# Any other difference (pair table, store, batch, seed, model, optimizer, objective,
# augmentation) makes a different run: a resume refuses it unless allowed.
# train.num_steps re-times the schedules (warm-up, cosine, confidence ramp) to the new length.
RESUME_SAFE_KEYS = (
    "train.num_steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.checkpoint_every",
    "train.keep_last", "train.keep_best", "train.async_checkpoint", "train.halt_after_step",
    "train.init_from", "train.init_step", "train.init_optimizer",  # read at step 0 only
    "evals.*", "data.worker_count", "data.read_threads", "mesh.*", "distributed.*",
    "model.attention", "model.remat", "model.scan_layers", "model.frozen_in_compute_dtype", "stages.*",
    "finetune.*", "curate.*", "runtime.*",
)


MESH_AXES = ("data", "fsdp", "tensor")  # w2s_vqa.sharding builds meshes over these

# logical name -> mesh axis (or tuple of axes). FSDP shards the model dimension;
# tensor parallelism shards heads, MLP width and vocabulary.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vision_embed", "fsdp"),
    ("mlp", "tensor"),
    ("vision_mlp", "tensor"),
    ("heads", "tensor"),
    ("vision_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    # The leading axis of scanned layers (models.stack): every step of the scan reads one
    # layer whole, so the axis stays unsharded.
    ("layers", None),
)


class ConfigError(ValueError):
    """A config (file, --set override or section) the code cannot use; the message names the key."""


# Keys that hold a list of names. Each takes them comma-separated ("niqe,brisque") or as a
# list or tuple (["niqe", "brisque"], in a config file or --set), and holds the
# comma-separated string once the config is read (`normalize_name_lists`).
NAME_LIST_KEYS = ("data.augment", "stages.lower_is_better", "stages.eval_tfds")


def _names(default: str):
    """A NAME_LIST_KEYS field: any type may be assigned (ConfigDict otherwise refuses a
    list where the default is a string); `normalize_name_lists` checks and joins it."""
    return ml_collections.FieldReference(default, field_type=object)


def normalize_name_lists(config: ml_collections.ConfigDict) -> None:
    """Each NAME_LIST_KEYS value given as a list or tuple of names joined into the
    comma-separated string the code reads; a bool is left for data.augment (True: every
    augmentation). Raises ConfigError naming the key for any other value."""
    for key in NAME_LIST_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node.get(name) if node is not None else None
        if node is None or leaf not in node:
            continue
        value = node[leaf]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            node[leaf] = ",".join(v.strip() for v in value)
        elif not isinstance(value, str) and not (key == "data.augment" and isinstance(value, bool)):
            raise ConfigError(f"{key}: expected names, comma-separated ('a,b') or a list (['a', 'b']), got "
                              f"{value!r}")


def defaults() -> ml_collections.ConfigDict:
    """Every config key with its default: the tiny CPU run. Config files start here."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # w2s_vqa.models.config.PRESETS
    c.model.hf_dir = ""  # a Hugging Face LLaVA-OneVision directory to start from instead
    c.model.dtype = "float32"  # compute dtype; trainable parameters stay float32
    # What each layer keeps for its backward pass: "none", "full" (recompute the layer),
    # "minimal" (keep the projections' outputs), "save_dots" (keep every matmul's output),
    # "minimal_offloaded" (minimal's, in host memory; TPU/GPU). True/False: "full"/"none".
    c.model.remat = "none"
    # Each tower's layers stacked and run by one lax.scan: one layer body to compile
    # (checkpoints of either layout resume, export and score; w2s_vqa.models.stack).
    c.model.scan_layers = False
    # Parameters of learning-rate-0 groups (optim.groups) held in model.dtype, with no
    # optimizer state; False keeps them float32 (w2s_vqa.train.step).
    c.model.frozen_in_compute_dtype = True
    # "xla" anywhere, "cudnn" (fused flash attention; NVIDIA GPU, bf16), or "blocked"
    # (a few heads at a time, recomputed in the backward pass; CPU, one device)
    c.model.attention = "xla"
    c.model.tokenizer = ""  # default: the HF directory's, or the tiny tokenizer for presets
    # The pair prompt's question when scoring: "" = the model directory's own (w2s_vqa.json, or the
    # authors' for their released checkpoint), "w2s" (ours) or "released" (the authors' inference
    # question): w2s_vqa.prompt.QUESTIONS.
    c.model.prompt = ""

    c.data = ml_collections.ConfigDict()
    c.data.num_frames = 4  # frames per video, sampled at 1 fps (uniformly when longer)
    c.data.image_size = 32  # must match the vision tower
    c.data.num_motion_chunks = 4  # one-second chunks, one motion token each
    c.data.motion_dim = 256
    # One motion token per one-second chunk: "none" (zeros, masked out), "precomputed" (the
    # source's own .npy, e.g. SlowFast features; variants repeat their source's),
    # "frame_stats" (frame-difference statistics of every video, variants included:
    # w2s_vqa.video.motion), or "slowfast" (the paper's: SlowFast-R50's 256-d fast-pathway
    # feature of every video, variants included, computed in JAX: w2s_vqa.models.slowfast).
    # Without them a student cannot see stutter, jitter or per-frame noise
    # (docs/2026-11-motion-features.md).
    c.data.motion_features = "frame_stats"
    # Which frames: "centered" (at (k + 0.5) s, mid-way through each second) or "released"
    # (frame index k * round(fps) from frame 0, as the authors' released inference takes them;
    # configs/w2s_released.py). w2s_vqa.video.sample; recorded in store.settings.Settings.
    c.data.frame_times = "centered"
    # Motion slots used at least, the last chunk repeated (0: one per whole second, the rest
    # masked); the authors' released motion pads a clip to 8 (configs/w2s_released.py).
    c.data.motion_min_chunks = 0
    # motion_features="slowfast": the weights file `w2s-vqa convert-slowfast` writes from a
    # pytorchvideo SlowFast-R50 checkpoint (SLOWFAST_8x8_R50.pyth); required then.
    c.data.slowfast_weights = ""
    # How the store keeps frames: "raw" (exact) or "jpeg" (4:4:4 at jpeg_quality). The tiny run's
    # 32x32 frames take 3 KB raw; at that size JPEG at 95 erases the finest distortions. The
    # 384x384 configs use JPEG: its re-encoding loss is below any level-1 distortion but the
    # near-invisible blur:1, and a raw frame would take 432 KB (docs/2026-11-store-and-pipeline.md).
    c.data.frame_format = "raw"
    c.data.jpeg_quality = 95
    # Variants `prepare` makes of every source: "name:levels;..." (levels 1-based; a bare
    # name = all levels; "" = pristine only). Names: w2s_vqa.video.distort.SIMULATORS.
    c.data.distortions = "resize:1,3,5;stutter:1,3;h264:1,3"
    # What `w2s-vqa demo-data` makes of every demo source (w2s_vqa.demo.pool explains the choice).
    c.data.demo_distortions = "resize;blur;noise;darken;brighten;jitter;stutter:1,3;h264;h265:1,4"
    c.data.distort_seed = 0  # variants are seeded by hash(distort_seed, variant id)
    # Simulators hold the whole clip in memory: sources are decoded with the longer side
    # at most this many pixels (0 = native) and only their first distort_max_seconds
    # (0 = all). Stores without variants sample while decoding and ignore both.
    c.data.distort_max_side = 1280
    c.data.distort_max_seconds = 20.0
    c.data.sources_per_shard = 16  # sources per ArrayRecord shard: the unit of parallel work and of resuming
    c.data.read_threads = 2  # threads per pipeline process that read and decode batches
    c.data.store = ""  # prepared video store directory
    c.data.pairs = ""  # training pair table (w2s_vqa.labels.pair_table format)
    c.data.batch_size = 16  # global: split over processes and the data x fsdp mesh axes
    c.data.worker_count = 0  # Grain worker processes per host (0 = read in the main process)
    # Training pairs drawn afresh each epoch in a form of the same quality, both videos alike:
    # a comma-separated subset of w2s_vqa.pipeline.AUGMENTATIONS, "" for none.
    #   views     one of the frame's 8 symmetric views (quarter turns, mirrors)
    #   channels  one of the 6 orders of the RGB channels
    #   swap      the two videos in either order, the label mirrored
    # The tiny demo's 76 training sources (cut from 3 clips) are otherwise memorized.
    c.data.augment = _names("views")

    # The paper's objective (docs/method.md "Objective").
    c.objective = ml_collections.ConfigDict()
    # "paper": the five-way level cross-entropy plus the confidence term below; "released":
    # the authors' released trainer's loss, the language model's token cross-entropy over
    # the whole answer sentence, no confidence term (the confidence keys are then unread).
    c.objective.kind = "paper"
    c.objective.confidence = True
    c.objective.warmup_fraction = 0.1
    c.objective.temperature_start = 0.5
    c.objective.temperature_end = 0.1
    c.objective.soft_targets = False

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 5e-4  # a tiny random student learns from scratch: higher than the paper's 1e-4
    c.optim.warmup_fraction = 0.03
    c.optim.min_lr_ratio = 0.0
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.grad_clip_norm = 1.0
    c.optim.accumulate_steps = 1
    # (regex over parameter paths, learning rate); 0 freezes. () trains everything at learning_rate.
    c.optim.groups = ()

    # Mesh axes (data, fsdp, tensor); one -1 takes the remaining devices.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (1, -1, 1)
    c.mesh.rules = [list(rule) for rule in DEFAULT_RULES]
    c.mesh.num_devices = 0  # 0 = every device; else the first N (sharding experiments)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # host:port of process 0; "" = single process
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.local_device_ids = ()
    c.distributed.auto = False  # jax.distributed.initialize() from the TPU / SLURM environment
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process runs on CPU
    # Seconds, as jax.distributed.initialize names them (its defaults). Every process must
    # join within initialization_timeout; a process silent for heartbeat_timeout_seconds
    # (killed, host lost) ends the others with a non-zero exit and JAX's line "another task
    # died"; a finished process waits shutdown_timeout_seconds for the others.
    c.distributed.initialization_timeout = 300
    c.distributed.heartbeat_timeout_seconds = 100
    c.distributed.shutdown_timeout_seconds = 300

    # Process-wide settings (w2s_vqa.runtime), applied before the first compilation.
    c.runtime = ml_collections.ConfigDict()
    # JAX's persistent compilation cache: a restarted run (after a preemption, a rerun, the
    # next stage) loads its compiled programs instead of compiling them again. "auto": JAX's
    # own JAX_COMPILATION_CACHE_DIR where set, else $XDG_CACHE_HOME/w2s-vqa/jax
    # (~/.cache/w2s-vqa/jax); "" = off; else a directory or a gs:// URL (shared by a pod's
    # hosts; only process 0 writes). A cache is trusted code: no directory others may write.
    c.runtime.compilation_cache_dir = "auto"
    c.runtime.compilation_cache_min_compile_seconds = 1.0  # faster-compiling programs are not kept (JAX's default)
    c.runtime.compilation_cache_min_entry_bytes = 0  # smaller executables are not kept; 0 = JAX's choice
    # A local cache's bound: least recently used entries go past it; -1 = none (a gs:// cache has none).
    c.runtime.compilation_cache_max_bytes = 16 << 30

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 6000  # the demo's stage 1, within its time budget on 2 CPU cores (docs/2026-11-stages.md)
    c.train.log_every = 50
    c.train.eval_every = 1000  # the default of every evaluation's `every`; 0 = never
    c.train.eval_batches = 0  # the default of every evaluation's `batches`; 0 = the whole table
    c.train.checkpoint_every = 1000
    c.train.keep_last = 2
    c.train.keep_best = 1
    c.train.best_metric = "val/all/direction_accuracy"
    c.train.async_checkpoint = True
    c.train.halt_after_step = 0  # preemption drill: exit abruptly after saving this step (0 = off)
    # Start from another run's parameters instead of model.hf_dir or a fresh student (a
    # later stage from the stage before, MOS fine-tuning from a weak-to-strong run): that
    # run's workdir or checkpoints/ folder, and its step ("latest", "best" or a number). Read
    # at step 0 only; a resumed run continues from its own checkpoint.
    c.train.init_from = ""
    c.train.init_step = "latest"
    # With init_from: also take its optimizer state (Adam's moments; the step counts that time
    # the schedules start again from 0). False starts a fresh optimizer.
    c.train.init_optimizer = False

    # Evaluations during training, as big_vision's config.evals: name -> eval_entry(...).
    # Each logs "<name>/<metric>" (e.g. "val/all/direction_accuracy", which
    # train.best_metric names). An entry whose `pairs` is "" is skipped: the default
    # "val" waits for `--set evals.val.pairs=TABLE` (or its shorthand data.val_pairs).
    c.evals = ml_collections.ConfigDict()
    c.evals[SHORTHAND_EVAL] = eval_entry()

    # Weak-to-strong stages (`w2s-vqa stages`, w2s_vqa.stages; docs/method.md "Iterative
    # weak-to-strong stages"): stage 1 trains on data.pairs; the stage-k student then scores
    # the pool (data.store) against stages.anchors and labels the hard cases that become
    # stage k+1's new pairs, added to the earlier tables.
    c.stages = ml_collections.ConfigDict()
    c.stages.num_stages = 2  # the demo's (the paper's 3: configs/w2s_llava_ov_7b.py); --stages N overrides
    c.stages.anchors = ""  # anchor directory (`w2s-vqa anchors`) the pool is scored against
    c.stages.teachers = ""  # the pool's weak-teacher score table (as `w2s-vqa pairs` reads it)
    # A file of video ids (one per line, or a CSV with an `id` column) to relabel; "" = every
    # video of a training-side source (stages.val_fraction) in data.store
    c.stages.pool_ids = ""
    c.stages.lower_is_better = _names("")  # teachers whose scores fall as quality rises
    # New pairs per stage after the first, and of them the misranked synthetic pairs per
    # family: the paper's 100k and 5k, on 500k stage-1 pairs, scaled to the demo's stage-1 table.
    c.stages.new_pairs = 2_000
    c.stages.synthetic_per_kind = 100
    # the rest (85k in the paper) are real pairs mined by gMAD, split evenly over teachers and
    # over the two directions (student attacks / teacher attacks)
    c.stages.gmad_levels = 10  # xi: bins of the defender's score (equal-count quantile bins)
    # "direction": a synthetic pair is hard when the student orders it the wrong way round
    # (ties included); "level": when the student's five-way label differs from the level-gap label
    c.stages.misranked = "direction"
    # How the student's verdict on a synthetic pair is read: "pairs" asks it about the pair
    # (one forward pass per candidate); "scores" compares the two videos' anchor scores
    c.stages.misranked_by = "pairs"
    c.stages.num_steps = 3000  # training steps of each stage after the first; 0 = train.num_steps
    c.stages.fresh_optimizer = True  # stage k+1 starts from stage k's parameters with a new optimizer state
    c.stages.val_fraction = 0.2  # new pairs of sources split off for validation (sampling.validation_sources)
    c.stages.eval_sets = []  # [name, folder, file,mos table] triples evaluated after each stage
    # and/or the TFDS evaluation sets (w2s_vqa.datasets; "konvid_1k,live_vqc"), built from
    # their manual downloads in stages.manual_dir (one folder per set) into stages.data_dir
    # ("" = TFDS's default), the paper's lists
    c.stages.eval_tfds = _names("")
    c.stages.manual_dir = ""
    c.stages.data_dir = ""
    c.stages.eval_subset = "paper"  # "paper" (the paper's exact lists) or "full" (every video of the release)

    # MOS fine-tuning (`w2s-vqa finetune`, w2s_vqa.finetune): pairs within a MOS-labeled
    # set, random splits by video, each trained from a weak-to-strong checkpoint.
    c.finetune = ml_collections.ConfigDict()
    c.finetune.splits = 10  # the field's convention; the median over splits is reported
    c.finetune.train_fraction = 0.8
    c.finetune.pairs_per_video = 4.0  # training pairs drawn per training video
    # Spread of a video's MOS where the set gives no per-video standard deviation (a mos_std
    # column), as a fraction of the MOS range (max - min) of a split's training videos:
    # s_d = sqrt(s_A^2 + s_B^2) in the five-way rule. 0.05 gives every level pairs on each of
    # the paper's ten sets (docs/2026-11-mos-finetuning.md); the paper does not say its own.
    c.finetune.mos_std_fraction = 0.05
    c.finetune.num_steps = 0  # steps per split; 0 = train.num_steps
    c.finetune.fresh_optimizer = True

    # Pool curation (`w2s-vqa curate-metrics`, `w2s-vqa curate`, w2s_vqa.curate; docs/method.md
    # "Pool"): nine cheap metrics per video, then K videos whose histograms match a reference's.
    c.curate = ml_collections.ConfigDict()
    c.curate.work_height = 360  # frames taller than this are measured scaled down (pixels)
    c.curate.max_seconds = 10.0  # seconds of each video measured; 0 = all of it
    c.curate.bins = 10  # bins per metric, as in the reference selection program (Vonikakis et al.)
    c.curate.binning = "quantile"  # "quantile" (of the reference) or "uniform" (over its range)
    c.curate.time_limit = 120.0  # solver seconds; the best selection found by then is kept
    c.curate.seed = 0  # which videos fill each chosen cell, and the random baseline
    return c


def eval_entry(kind: str = "pairs", pairs: str = "", every: int = 0, batches: int = 0) -> ml_collections.ConfigDict:
    """One entry of config.evals; add one in a config file as `c.evals.NAME = eval_entry(pairs=...)`.

    kind     what is measured: "pairs" (direction and five-way accuracy, CE, per origin,
             over a pair table); later kinds add MOS sets
    pairs    the pair table (w2s_vqa.labels.pair_table format); "" skips the entry
    every    steps between evaluations; 0 = train.eval_every (which 0 turns off)
    batches  global batches evaluated, a seeded random subset of the table's
             pairs; 0 = train.eval_batches (which 0 makes the whole table)
    """
    return ml_collections.ConfigDict(dict(kind=kind, pairs=pairs, every=every, batches=batches))


def ensure_eval(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """config.evals[name], added as a default `eval_entry()` if the config has none."""
    if "evals" not in config:
        config.evals = ml_collections.ConfigDict()
    if name not in config.evals:
        config.evals[name] = eval_entry()
    return config.evals[name]


