"""The jitted train step, built from the config and abstract state alone.

    config + mesh -> student shapes (models.config.student_config) -> parameter codec
      -> trainable / frozen split (optim.groups) -> optimizer -> abstract train state
      (ShapeDtypeStructs with their shardings, by jax.eval_shape) -> jit(step)

Nothing here allocates parameters, reads a work directory or a checkpoint, or loads
a tokenizer (the five level token ids, and for objective.kind "released" the answer
sentence's, are arguments), so the step an ahead-of-time
compiler lowers is the very one the training loop runs:

    ts = build_train_step(config, mesh, level_ids)
    compiled = ts.step.lower(ts.abstract_state, abstract_batch(config, prompt_length)).compile()

`mesh` may be a jax.sharding.Mesh or an AbstractMesh: shardings only, for lowering to a
topology this host does not have, which names its platform:

    ts.step.trace(ts.abstract_state, batch).lower(lowering_platforms=("tpu",))

The train state is a plain dict keyed by parameter path
("language_model.layers.0.mlp.up_proj.kernel"), so the optimizer's groups, the
shardings and the checkpoint all read the same names:

    step       int32 []                   updates done; replicated
    trainable  {path: float32 array}      what the optimizer updates
    frozen     {path: array}              learning rate 0: never differentiated, no optimizer
                                          state; held in model.dtype (bfloat16 halves what
                                          each step reads of them) unless
                                          model.frozen_in_compute_dtype is False
    opt_state  optax state of `trainable`; each moment sharded as its parameter

With model.scan_layers the paths of layer parameters drop their index and the arrays
gain a leading layer axis (w2s_vqa.models.stack); `ParamCodec.to_dict` takes a student
of either layout.

Parameter shardings come from each parameter's logical axes through the config's
rules table (w2s_vqa.sharding); the batch's from the table's `batch` entry.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from w2s_vqa import prompt as prompt_lib
from w2s_vqa import sharding as sharding_lib
from w2s_vqa.models import config as model_config_lib
from w2s_vqa.models import stack as stack_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.train import objective as objective_lib
from w2s_vqa.train import optim as optim_lib

# Batch entries the objective reads beside the model's (student.MODEL_INPUTS); the
# pipeline's other entries (pair_index) stay on the host.
MODEL_INPUTS = student_lib.MODEL_INPUTS
TARGETS = ("label", "weight", "origin", "target")


# ----------------------------------------------------------------------------- params
class ParamCodec:
    """The student's parameters as a flat {path: array} dict, and back to a module.

    Built from an abstract student (`student.create_abstract`): `keys` (dotted paths, in
    the module's order), `shapes`, `dtypes` and `logical_axes` per key need no arrays.
    """

    def __init__(self, abstract_model: student_lib.Student):
        self.graphdef, state = nnx.split(abstract_model)
        self.variables = [(path, var) for path, var in nnx.to_flat_state(state)]
        self.keys = [".".join(str(p) for p in path) for path, _ in self.variables]
        self.logical_axes = {k: v.get_metadata().get("logical_axes") for k, (_, v) in zip(self.keys, self.variables)}
        self.shapes = {k: tuple(v.shape) for k, (_, v) in zip(self.keys, self.variables)}
        self.dtypes = {k: v.dtype for k, (_, v) in zip(self.keys, self.variables)}

    def to_dict(self, model: student_lib.Student) -> dict[str, jax.Array]:
        """{path: array} of a student, in this codec's layer layout whatever the student's
        (a layout change stacks or splits the layer parameters: a copy)."""
        flat = {".".join(str(p) for p in path): v[...] for path, v in nnx.to_flat_state(nnx.state(model))}
        flat = stack_lib.to_layout(flat, self.keys)
        return {k: flat[k] for k in self.keys}

    def merge(self, params: dict[str, jax.Array]) -> student_lib.Student:
        state = nnx.from_flat_state([(path, var.replace(params[k])) for k, (path, var) in zip(self.keys, self.variables)])
        return nnx.merge(self.graphdef, state)

    def shardings(self, mesh, rules) -> dict[str, NamedSharding]:
        """Each parameter's sharding: its logical axes through `rules` (w2s_vqa.sharding)."""
        return {k: sharding_lib.named_sharding(mesh, self.logical_axes[k], rules, self.shapes[k]) for k in self.keys}

    def abstract(self, shardings: dict[str, NamedSharding] | None = None) -> dict[str, jax.ShapeDtypeStruct]:
        """{path: ShapeDtypeStruct}, with `shardings[path]` where given."""
        shardings = shardings or {}
        return {k: jax.ShapeDtypeStruct(self.shapes[k], self.dtypes[k], sharding=shardings.get(k)) for k in self.keys}


# ----------------------------------------------------------------------------- state
def state_from_params(params: dict[str, jax.Array], trainable_keys: Sequence[str], tx,
                      frozen_dtype=jnp.float32) -> dict[str, Any]:
    """The initial train state of `params` (step 0, fresh optimizer state); the frozen
    parameters cast to `frozen_dtype`, the trainable ones kept float32."""
    trainable = {k: params[k].astype(jnp.float32) for k in trainable_keys}
    frozen = {k: v.astype(frozen_dtype) for k, v in params.items() if k not in trainable}
    return {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "frozen": frozen,
            "opt_state": tx.init(trainable)}


def opt_state_shardings(abstract_opt_state, param_shardings: dict[str, NamedSharding],
                        param_shapes: dict[str, tuple[int, ...]], replicated: NamedSharding):
    """Each optimizer moment takes the sharding of the parameter it mirrors (found by its
    key and shape in the optimizer state's tree); counters and the like are replicated."""
    def choose(path, leaf):
        for entry in reversed(path):
            key = getattr(entry, "key", None)
            if key in param_shardings and tuple(leaf.shape) == param_shapes[key]:
                return param_shardings[key]
        return replicated

    return jax.tree_util.tree_map_with_path(choose, abstract_opt_state)


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """What the train state of a config is made of, with no array allocated.

    abstract   the state as ShapeDtypeStructs carrying their shardings (the target of a
               checkpoint restore, the argument of an ahead-of-time lowering)
    shardings  the same tree of NamedShardings
    """

    model_cfg: model_config_lib.StudentConfig
    codec: ParamCodec
    frozen_dtype: Any  # what frozen parameters are held in (model.dtype, or float32)
    optim_cfg: optim_lib.OptimConfig
    tx: optax.GradientTransformation
    total_steps: int  # train.num_steps
    trainable_keys: tuple[str, ...]
    param_shardings: dict[str, NamedSharding]
    replicated: NamedSharding
    shardings: dict[str, Any]
    abstract: dict[str, Any]

    def init_state(self, params: dict[str, jax.Array]) -> dict[str, Any]:
        """The initial state of `params` (placed as `param_shardings`), in `shardings`.
        `params` is donated: its arrays become the state's."""
        init = jax.jit(functools.partial(state_from_params, trainable_keys=self.trainable_keys, tx=self.tx,
                                         frozen_dtype=self.frozen_dtype),
                       out_shardings=self.shardings, donate_argnums=(0,))
        return init(params)

    def params(self, state: dict[str, Any]) -> dict[str, jax.Array]:
        """{path: array}: a state's parameters, trainable and frozen."""
        return {**state["frozen"], **state["trainable"]}


def state_layout(config, mesh) -> StateLayout:
    """The train state of `config` on `mesh` (a Mesh or an AbstractMesh), abstract.

    Raises ValueError when optim.groups freezes every parameter, ConfigError when a
    group splits the layers of a stacked parameter (`optim.check_stacked_groups`), and
    what `models.config.student_config` and `OptimConfig.from_config` raise.
    """
    model_cfg = model_config_lib.student_config(config)
    codec = ParamCodec(student_lib.create_abstract(model_cfg))
    rules = sharding_lib.rules_from_config(config)
    optim_cfg = optim_lib.OptimConfig.from_config(config)
    total_steps = int(config.train.num_steps)
    optim_lib.check_stacked_groups(codec.shapes, optim_cfg)
    trainable_keys = tuple(k for k in codec.keys if not optim_lib.is_frozen(k, optim_cfg))
    if not trainable_keys:
        raise ValueError("every parameter is frozen: check optim.groups")
    labels = {k: optim_lib.group_of(k, optim_cfg.groups) for k in trainable_keys}
    tx = optim_lib.make_optimizer(optim_cfg, max(1, total_steps // optim_cfg.accumulate_steps), labels)

    param_shardings = codec.shardings(mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    frozen_dtype = frozen_dtype_of(config, model_cfg)
    abstract = jax.eval_shape(functools.partial(state_from_params, trainable_keys=trainable_keys, tx=tx,
                                                frozen_dtype=frozen_dtype), codec.abstract())
    shardings = {
        "step": replicated,
        "trainable": {k: param_shardings[k] for k in abstract["trainable"]},
        "frozen": {k: param_shardings[k] for k in abstract["frozen"]},
        "opt_state": opt_state_shardings(abstract["opt_state"], param_shardings, codec.shapes, replicated),
    }
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return StateLayout(model_cfg=model_cfg, codec=codec, frozen_dtype=frozen_dtype, optim_cfg=optim_cfg, tx=tx, total_steps=total_steps,
                       trainable_keys=trainable_keys, param_shardings=param_shardings, replicated=replicated,
                       shardings=shardings, abstract=abstract)


def frozen_dtype_of(config, model_cfg) -> Any:
    """The dtype frozen parameters are held in: model.dtype, or float32 when
    model.frozen_in_compute_dtype is False (and for configs saved before the key, whose
    checkpoints hold float32)."""
    if not config.model.get("frozen_in_compute_dtype", False):
        return jnp.dtype(jnp.float32)
    return jnp.dtype(model_cfg.dtype)


def switches(layout: StateLayout) -> dict[str, Any]:
    """How the state and step of a layout run, for reports (the planner's, the compile
    benchmark's): remat policy, scanned layers, the dtype frozen parameters are held in,
    and the parameter bytes frozen and trainable (per replica, unsharded)."""
    def nbytes(tree):
        return int(sum(np.prod(s.shape) * np.dtype(s.dtype).itemsize for s in jax.tree.leaves(tree)))

    return {"remat": str(layout.model_cfg.remat), "scan_layers": bool(layout.model_cfg.scan_layers),
            "frozen_dtype": str(np.dtype(layout.frozen_dtype)), "frozen_bytes": nbytes(layout.abstract["frozen"]),
            "trainable_bytes": nbytes(layout.abstract["trainable"])}


# ----------------------------------------------------------------------------- batch
def batch_sharding(config, mesh) -> NamedSharding:
    """The batch's sharding: its leading (pair) dimension over the mesh axes of the rules
    table's `batch` entry, the rest replicated."""
    return NamedSharding(mesh, sharding_lib.logical_to_spec(("batch",), sharding_lib.rules_from_config(config),
                                                            mesh=mesh))


def batch_shards(sharding: NamedSharding) -> int:
    """How many parts the batch dimension is split into."""
    entry = sharding.spec[0] if len(sharding.spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def abstract_batch(config, prompt_length: int, sharding: NamedSharding | None = None
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch the train step takes, as ShapeDtypeStructs (with `sharding` if given):
    the pipeline's entries (shapes and dtypes: w2s_vqa.pipeline) that the step reads, for
    B = data.batch_size pairs, F = data.num_frames, S = data.image_size, M =
    data.num_motion_chunks, D = data.motion_dim and L = `prompt_length` tokens."""
    d = config.data
    b, f, s, m = int(d.batch_size), int(d.num_frames), int(d.image_size), int(d.num_motion_chunks)
    shapes = {
        "input_ids": ((b, prompt_length), jnp.int32),
        "attention_mask": ((b, prompt_length), jnp.int32),
        "pixel_values": ((b, 2, f, s, s, 3), jnp.uint8),
        "frame_mask": ((b, 2, f), jnp.bool_),
        "motion": ((b, 2, m, int(d.motion_dim)), jnp.float32),
        "motion_mask": ((b, 2, m), jnp.bool_),
        "label": ((b,), jnp.int32),
        "weight": ((b,), jnp.float32),
        "origin": ((b,), jnp.int32),
        "target": ((b, 5), jnp.float32),
    }
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


# ----------------------------------------------------------------------------- step
def sentence_logits(model: student_lib.Student, batch: dict, level_ids: Sequence[int],
                    sentence: prompt_lib.AnswerSentence) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(token_logits [B, K, V], target_ids [B, K] int32, level_logits [B, 5] float32) of the
    released trainer's loss (objective.sentence_objective).

    Each pair's sequence is the prompt (the batch's first `sentence.prompt_length` tokens,
    identical in every row: w2s_vqa.pipeline), its label's level token and the sentence's
    suffix, so the answer tokens take the rotary positions they had in the authors'
    training. Vocabulary logits are built at the K positions before the targets only.
    """
    n = sentence.prompt_length
    if batch["input_ids"].shape[1] < n:
        raise ValueError(f"the batch's prompts have {batch['input_ids'].shape[1]} tokens, fewer than the "
                         f"{n} of the prompt the answer sentence was built for")
    ids = batch["input_ids"][:, :n]
    b, answer = ids.shape[0], 1 + len(sentence.suffix_ids)
    level = jnp.asarray(level_ids, ids.dtype)[batch["label"]]
    suffix = jnp.broadcast_to(jnp.asarray(sentence.suffix_ids, ids.dtype), (b, answer - 1))
    ext_ids = jnp.concatenate([ids, level[:, None], suffix], axis=1)
    mask = batch["attention_mask"][:, :n]
    ext_mask = jnp.concatenate([mask, jnp.ones((b, answer), mask.dtype)], axis=1)
    hidden = model.hidden_states(ext_ids, ext_mask, batch["pixel_values"], batch["motion"], batch["frame_mask"],
                                 batch["motion_mask"])
    positions = np.asarray(sentence.target_positions)
    token_logits = model.logits(hidden[:, positions - 1])
    level_logits = model.level_readout(level_ids, hidden[:, n - 1])
    return token_logits, ext_ids[:, positions], level_logits


def make_train_step(codec: ParamCodec, tx, obj_cfg: objective_lib.ObjectiveConfig, total_steps: int,
                    level_ids: Sequence[int], sentence: prompt_lib.AnswerSentence | None = None):
    """(state, batch) -> (state, metrics): one optimizer update on one global batch.

    metrics: the objective's terms ("loss", "ce", "confidence", "lambda"; with
    objective.kind "released" also "sentence_ce"), "grad_norm" and `objective.pair_metrics`
    sums ("all/direction_correct", ...), all scalars. `sentence` (prompt.answer_sentence)
    is required by objective.kind "released" (ValueError without it).
    """
    if obj_cfg.kind == "released" and sentence is None:
        raise ValueError("objective.kind='released' needs the answer sentence's tokens (prompt.answer_sentence)")

    def step(state, batch):
        def loss_fn(trainable):
            model = codec.merge({**state["frozen"], **trainable})
            if obj_cfg.kind == "released":
                token_logits, targets, logits = sentence_logits(model, batch, level_ids, sentence)
                loss, aux = objective_lib.sentence_objective(token_logits, targets, logits, batch)
            else:
                logits = model.level_logits(level_ids, **{k: batch[k] for k in MODEL_INPUTS})
                loss, aux = objective_lib.objective(logits, batch, state["step"], total_steps, obj_cfg)
            return loss, (aux, logits)

        (_, (aux, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        metrics = {**aux, "grad_norm": optax.tree.norm(grads),
                   **objective_lib.pair_metrics(logits, batch["label"], batch["origin"], batch["weight"])}
        new_state = {**state, "trainable": trainable, "opt_state": opt_state, "step": state["step"] + 1}
        return new_state, metrics

    return step


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A config's jitted train step and what it takes.

    step            jax.jit of `make_train_step`: (state, batch) -> (state, metrics); the
                    state is donated, the metrics come back replicated
    layout          the train state (StateLayout); `abstract_state` is `layout.abstract`
    batch_sharding  the global batch's sharding (every entry alike)
    """

    step: Any
    layout: StateLayout
    obj_cfg: objective_lib.ObjectiveConfig
    batch_sharding: NamedSharding

    @property
    def abstract_state(self) -> dict[str, Any]:
        return self.layout.abstract


def build_train_step(config, mesh, level_ids: Sequence[int],
                     sentence: prompt_lib.AnswerSentence | None = None) -> TrainStep:
    """The train step of `config` on `mesh` (a Mesh or an AbstractMesh); `level_ids` are the
    five level words' token ids in prompt.LEVELS order (`prompt.level_token_ids`);
    `sentence` (prompt.answer_sentence) the answer's tokens, which objective.kind
    "released" needs (ValueError without it) and "paper" ignores.

    `step.lower(abstract_state, abstract_batch(config, L)).compile()` compiles it with no
    array allocated.
    """
    layout = state_layout(config, mesh)
    obj_cfg = objective_lib.ObjectiveConfig.from_config(config)
    batch = batch_sharding(config, mesh)
    fn = make_train_step(layout.codec, layout.tx, obj_cfg, layout.total_steps, tuple(int(i) for i in level_ids),
                         sentence)
    # Scanned layers compute on their own pairs only with the batch split held in the loop.
    fn = stack_lib.batch_sharded(fn, batch)
    step = jax.jit(fn, in_shardings=(layout.shardings, batch), out_shardings=(layout.shardings, layout.replicated),
                   donate_argnums=(0,))
    return TrainStep(step=step, layout=layout, obj_cfg=obj_cfg, batch_sharding=batch)
