"""P per pair: the student's five level logits and its preference on every pair of a table.

    pair table (padded to whole global batches with zero-weight copies)
      -> Grain (w2s_vqa.pipeline): every process loads its slice of each global batch
      -> jit forward over the mesh, the batch split as the rules' "batch" entry says
         (data x fsdp by default)
      -> [B, 5] level logits and each row's pair index, gathered to every process
      -> rows put back in the table's order; P = prompt.preference(logits)

The pipeline shuffles, and which rows of a global batch a process holds depends on how
the mesh orders its devices; neither matters, because each row carries its place in the
table (`pair_index`) through the same sharding as its logits. Every process returns the
whole table.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from w2s_vqa import pipeline
from w2s_vqa import prompt as prompt_lib
from w2s_vqa import sharding as sharding_lib
from w2s_vqa.models import stack as stack_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.score.metrics import LOGIT_COLUMNS, P_COLUMN

# Batch entries the student reads.
MODEL_INPUTS = student_lib.MODEL_INPUTS

Forward = Callable[[Any, dict], jax.Array]


def make_forward(merge: Callable[[Any], Any], level_token_ids: Sequence[int]) -> Forward:
    """forward(params, batch) -> [B, 5] float32 level logits, one row per pair (no sums).

    merge(params) builds the Student (e.g. `nnx.merge(graphdef, state)`, or the training
    loop's codec from its state); batch holds MODEL_INPUTS as pipeline.make_dataset gives
    them. Pure: jit it with the mesh's shardings.
    """
    level_token_ids = tuple(int(i) for i in level_token_ids)

    def forward(params, batch):
        model = merge(params)
        logits = model.level_logits(level_token_ids, **{k: batch[k] for k in MODEL_INPUTS})
        return logits.astype(jnp.float32)

    return forward


def student_forward(student: nnx.Module, prompt: prompt_lib.PairPrompt,
                    mesh: jax.sharding.Mesh) -> tuple[Forward, Any]:
    """(jitted forward, params) for a Student: its state, placed on the mesh.

    Parameters already spread over the mesh's devices (a student created or loaded
    with the mesh's shardings) stay where they are; any other is replicated.
    """
    graphdef, state = nnx.split(student)
    devices, replicated = set(mesh.devices.flat), NamedSharding(mesh, PartitionSpec())

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.device_set == devices:
            return leaf
        return jax.device_put(leaf, replicated)

    forward = jax.jit(stack_lib.batch_sharded(make_forward(functools.partial(nnx.merge, graphdef),
                                                           prompt.level_token_ids), default_batch_sharding(mesh)),
                      out_shardings=replicated)
    return forward, jax.tree.map(place, state)


def _gather(x: jax.Array, mesh: jax.sharding.Mesh) -> np.ndarray:
    """A global array as numpy on every process (all-gathered first unless replicated)."""
    if not x.is_fully_replicated:
        x = _replicate(x, NamedSharding(mesh, PartitionSpec()))
    return np.asarray(jax.device_get(x))


@functools.partial(jax.jit, static_argnums=1)
def _replicate(x, sharding):
    return jax.lax.with_sharding_constraint(x, sharding)


def default_batch_sharding(mesh: jax.sharding.Mesh, rules=None) -> NamedSharding:
    """The batch's pair dimension over the mesh axes of the rules' "batch" entry
    (default sharding.DEFAULT_RULES: data x fsdp), everything else replicated."""
    return NamedSharding(mesh, sharding_lib.logical_to_spec(("batch",), rules, mesh=mesh))


def batch_parts(sharding: NamedSharding) -> int:
    """How many parts a batch's first dimension is split into under `sharding`: the
    product of the mesh axes of its spec's first entry (1 when replicated)."""
    entry = sharding.spec[0] if len(sharding.spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    return int(np.prod([sharding.mesh.shape[a] for a in axes]))


def batch_size_problem(batch_size: int, sharding: NamedSharding) -> str:
    """'' when a global batch of `batch_size` can be split under `sharding` and over the
    processes, else one plain sentence saying what it must be (for the caller's error):
    a positive multiple of the devices the batch is split over, with those mesh axes, and
    of the process count."""
    parts, processes = batch_parts(sharding), jax.process_count()
    if batch_size >= 1 and not batch_size % parts and not batch_size % processes:
        return ""
    entry = sharding.spec[0] if len(sharding.spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    over = (f"mesh axes {' x '.join(f'{a}={sharding.mesh.shape[a]}' for a in axes)}" if axes
            else "no mesh axis: every device takes the whole batch")
    return (f"batch_size={batch_size} must be a positive multiple of {parts}, the devices the batch is split over "
            f"({over}), and of the {processes} process(es)")


def predict_pairs(params, pairs: pd.DataFrame | str, store, prompt: prompt_lib.PairPrompt,
                  mesh: jax.sharding.Mesh, *, batch_size: int, forward: Forward | None = None,
                  batch_sharding: NamedSharding | None = None, max_batches: int = 0, worker_count: int = 0,
                  progress: bool = False) -> pd.DataFrame:
    """The student's level logits and P(second better) for every pair of a table.

    params: a Student, or (with `forward`) what forward takes, e.g. the training state.
    pairs: a pair table or its file (pipeline.load_pair_table); store: a VideoStore or its
    directory; prompt: the PairPrompt the student reads (build_pair_prompt).
    mesh: the device mesh.
    batch_size: the global batch, in pairs over all processes; a multiple of the parts
    the batch is split into and of the process count (ValueError otherwise).
    forward: a jitted `make_forward` (params, batch) -> [B, 5] logits on this mesh; pass one
    to reuse its compilation across calls (the training loop's). Default: built from the
    Student (`student_forward`), compiled on each call.
    batch_sharding: how a global batch lies on the mesh (the training step's); default
    `default_batch_sharding(mesh)`, the pair dimension over data x fsdp.
    max_batches: stop after that many global batches (0: the whole table); pairs not
    reached get NaN.
    worker_count: Grain reader processes per process (0 reads in this one).

    Returns the table (index reset, every column kept) in its own order, with float64
    `p` = prompt.preference(logits), in [0, 1], and float32 `logit_superior` ...
    `logit_inferior` (metrics.P_COLUMN, metrics.LOGIT_COLUMNS). Zero-weight pairs are
    predicted too. Every process returns the whole table. Errors: those of
    pipeline.make_dataset (MissingVideosError names the videos the store lacks,
    PairTableError the bad rows).
    """
    table = pipeline.load_pair_table(pairs)
    processes = jax.process_count()
    batch_sharding = batch_sharding if batch_sharding is not None else default_batch_sharding(mesh)
    problem = batch_size_problem(batch_size, batch_sharding)
    if problem:
        raise ValueError(problem)
    if forward is None:
        forward, params = student_forward(params, prompt, mesh)

    logits = np.full((len(table), len(LOGIT_COLUMNS)), np.nan, np.float32)
    if len(table):
        # Zero-weight copies of the first rows fill the last global batch; their pair_index
        # is past the table's end, so they are dropped below.
        padding = -len(table) % batch_size
        padded = table
        if padding:
            padded = pd.concat([table, table.iloc[np.arange(padding) % len(table)].assign(weight=0.0)],
                               ignore_index=True)
        batches = pipeline.make_iterator(
            padded, store, prompt, batch_size=batch_size // processes, seed=0,
            shard_index=jax.process_index(), shard_count=processes, num_epochs=1, worker_count=worker_count)
        total = len(padded) // batch_size
        total = min(total, max_batches) if max_batches else total
        try:
            _run(forward, params, batches, total, batch_sharding, logits, progress)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stops reader processes a partial read leaves running
                close()

    out = table.copy()
    with np.errstate(invalid="ignore"):  # rows not reached stay NaN
        out[P_COLUMN] = prompt_lib.preference(logits.astype(np.float64))
    for k, column in enumerate(LOGIT_COLUMNS):
        out[column] = logits[:, k]
    return out


def _run(forward, params, batches, total: int, sharding: NamedSharding, logits: np.ndarray,
         progress: bool) -> None:
    """Runs `total` batches through `forward`, writing each pair's logits into its row of `logits`.

    A batch's results are read back after the next batch is dispatched, so the host
    loads batch n+1 while the devices compute batch n.
    """
    from w2s_vqa import progress as progress_lib

    def collect(result, index):
        rows, values = _gather(index, sharding.mesh), _gather(result, sharding.mesh)
        real = rows < len(logits)
        logits[rows[real]] = values[real]

    pending = None
    with progress_lib.bar(total=total, unit="batch", desc="predict", disable=not progress or jax.process_index() != 0) as bar:
        for _, batch in zip(range(total), batches):
            device_batch = {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
                            for k in MODEL_INPUTS}
            index = jax.make_array_from_process_local_data(sharding, batch["pair_index"].astype(np.int32))
            result = forward(params, device_batch)
            if pending is not None:
                collect(*pending)
            pending = (result, index)
            bar.update(1)
        if pending is not None:
            collect(*pending)
