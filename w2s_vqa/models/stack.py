"""Layers stacked on a leading axis and run by one `lax.scan`; named remat policies.

With `model.scan_layers` the decoder's and the vision tower's layers are one module
each whose parameters carry a leading layer axis (logical name `LAYER_AXIS`), as
MaxText (`scan_layers`) and levanter (`Stacked`) hold them: XLA compiles one layer's
body instead of one copy per layer. Parameter paths then drop the layer index:

    unrolled  language_model.layers.3.mlp.up_proj.kernel   [896, 4864]
    stacked   language_model.layers.mlp.up_proj.kernel     [24, 896, 4864]

`stack_params` / `unstack_params` / `to_layout` convert a flat {path: array} dict
between the two (checkpoints of either layout, the Hugging Face key table).

`model.remat` names what each layer keeps for its backward pass (`REMAT_POLICIES`),
applied per layer with `jax.checkpoint`, inside the scan when layers are scanned.

`batch_sharded(fn, sharding)` traces `fn` with each scan step's carry held to the
batch's sharding: inside a loop body XLA's sharding propagation does not carry the
batch split over from the loop's inputs, and left alone it split the activations along
the embedding axis as the FSDP parameters are, computing every pair's attention on
every device (docs/2026-12-scan-layers.md, the 0.5B on a v5e-8).
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_vqa.models.config import REMAT_NAMES
from w2s_vqa.models.layers import PROJ  # every Linear's output: what "minimal" keeps

LAYER_AXIS = "layers"
# The module paths whose children are layers, unrolled ("...layers.<i>.") or stacked.
STACKS = ("vision_tower.layers", "language_model.layers")
_UNROLLED = re.compile(r"^(vision_tower\.layers|language_model\.layers)\.(\d+)\.(.+)\Z")

# The batch's sharding while a function wrapped by `batch_sharded` is traced (None: no constraint).
_BATCH_SHARDING: contextvars.ContextVar = contextvars.ContextVar("w2s_vqa_batch_sharding", default=None)

_cp = jax.checkpoint_policies
# name -> jax.checkpoint policy (None: no checkpoint at all). MaxText's names where it has one.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": _cp.nothing_saveable,  # only each layer's input is kept; everything else recomputed
    "minimal": _cp.save_only_these_names(PROJ),  # the projections' outputs kept, the rest recomputed
    "save_dots": _cp.dots_saveable,  # every matmul's output kept (attention's too)
    # As "minimal", the projections' outputs moved to host memory (TPU, GPU; not XLA:CPU).
    "minimal_offloaded": _cp.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=[PROJ], offload_src="device",
        offload_dst="pinned_host"),
}
assert tuple(REMAT_POLICIES) == REMAT_NAMES
def checkpointed(fn: Callable, remat: str, *, in_scan: bool) -> Callable:
    """`fn` under `jax.checkpoint` with the policy `remat` names ("none": `fn` itself).

    `in_scan`: `fn` is a scan's body. Only there may common-subexpression elimination be
    left unprevented (jax.checkpoint's `prevent_cse`, whose documentation says so): a loop
    body's recomputation cannot be merged with the forward pass's. An unrolled layer needs
    it prevented, or XLA merges the recomputation into the forward pass and keeps every
    layer's activations, as if there were no remat at all (the 7B step's temporaries on a
    v5p-64, docs/2026-12-scan-layers.md)."""
    if remat == "none":
        return fn
    return jax.checkpoint(fn, policy=REMAT_POLICIES[remat], prevent_cse=not in_scan)


def batch_sharded(fn: Callable, sharding: jax.sharding.NamedSharding | None) -> Callable:
    """`fn` whose every `scan` holds each step's carry to `sharding` (a NamedSharding whose
    spec splits the leading, batch axis: the train step's batch sharding), so a scanned
    layer computes on its devices' pairs (or frames) alone. Leaves whose leading size the
    split does not divide are left as they are. The constraint applies while `fn` is
    traced: wrap the function that `jax.jit` takes. `sharding` None returns `fn`."""
    if sharding is None:
        return fn

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        token = _BATCH_SHARDING.set(sharding)
        try:
            return fn(*args, **kwargs)
        finally:
            _BATCH_SHARDING.reset(token)

    return traced


def _hold_to_batch(carry):
    """`carry` with each leaf's leading axis constrained to the batch sharding in effect."""
    sharding = _BATCH_SHARDING.get()
    if sharding is None:
        return carry
    entry = sharding.spec[0] if len(sharding.spec) else None
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    parts = math.prod(sharding.mesh.shape[a] for a in axes)
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding)
                        if a.ndim and a.shape[0] % parts == 0 else a, carry)


# ----------------------------------------------------------------------------- modules
def stacked(make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int, rngs: nnx.Rngs) -> nnx.Module:
    """One module holding `num_layers` layers' parameters on a leading axis: `make_layer`
    run under `nnx.vmap`, each layer drawn from its own split of `rngs`. Every
    parameter's logical axes gain `LAYER_AXIS` in front (never sharded by the default
    rules table, w2s_vqa.sharding)."""
    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def build(layer_rngs):
        return make_layer(layer_rngs)

    module = build(rngs)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param):
            node.set_metadata(logical_axes=(LAYER_AXIS, *node.get_metadata()["logical_axes"]))
    return module


def scan(layers: nnx.Module, fn: Callable, carry, xs=None, *, remat: str = "none", start: int = 0,
         stop: int | None = None):
    """`lax.scan` of `fn(layer, carry, x) -> (carry, y)` over the stacked `layers` [start:stop]
    (and `xs`, leading axis the same length), each step under `checkpointed(.., remat, in_scan=True)`
    and its carry held to the batch sharding of `batch_sharded`, if any. Returns (carry, ys stacked)."""
    graphdef, state = nnx.split(layers)
    if start or stop is not None:
        state = jax.tree.map(lambda a: a[start:stop], state)

    def body(carry, inputs):
        layer_state, x = inputs
        carry, y = fn(nnx.merge(graphdef, layer_state), _hold_to_batch(carry), x)
        return _hold_to_batch(carry), y

    return jax.lax.scan(checkpointed(body, remat, in_scan=True), carry, (state, xs))


def call(layer: nnx.Module, fn: Callable, x, *, remat: str = "none"):
    """`fn(layer, x)` for one unrolled layer under `checkpointed(.., remat, in_scan=False)`; the layer's
    parameters enter as arguments, so the recomputation reads them rather than constants."""
    if remat == "none":
        return fn(layer, x)
    graphdef, state = nnx.split(layer)
    return checkpointed(lambda s, h: fn(nnx.merge(graphdef, s), h), remat, in_scan=False)(state, x)


def num_layers(layers) -> int:
    """Layers in a stack (the leading axis) or an unrolled list."""
    if isinstance(layers, nnx.List):
        return len(layers)
    return int(jax.tree.leaves(nnx.state(layers, nnx.Param))[0].shape[0])


# ----------------------------------------------------------------------------- flat dicts
def layer_of(key: str) -> tuple[str, int] | None:
    """(stacked path, layer index) of an unrolled layer parameter's path, else None."""
    m = _UNROLLED.match(key)
    return (f"{m.group(1)}.{m.group(3)}", int(m.group(2))) if m else None


def layer_key(stacked_key: str, index: int) -> str:
    """The unrolled path of layer `index` of a stacked parameter."""
    for stack in STACKS:
        if stacked_key.startswith(stack + "."):
            return f"{stack}.{index}.{stacked_key[len(stack) + 1:]}"
    raise KeyError(f"{stacked_key} is not a layer parameter")


def is_stacked(key: str) -> bool:
    return key.startswith(tuple(s + "." for s in STACKS)) and layer_of(key) is None


def unrolled_names(keys, shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Parameter paths in the unrolled layout, in order: each stacked path becomes its
    layers' paths (shapes[path][0] of them). For code that reads layers by index
    ("vision_tower.layers.3."), such as the planner's per-layer FLOP count."""
    out = []
    for key in keys:
        out.extend([layer_key(key, i) for i in range(shapes[key][0])] if is_stacked(key) else [key])
    return out


def stack_params(flat: Mapping[str, Any], stack: Callable = jnp.stack) -> dict[str, Any]:
    """An unrolled {path: array} dict in the stacked layout (other paths unchanged); `stack`
    joins a list of layers' values (a value with no array in it, such as optax's
    MaskedNode, stays as it is). Raises KeyError naming the first missing layer of a stack."""
    out, layers = {}, {}
    for key, value in flat.items():
        found = layer_of(key)
        if found is None:
            out[key] = value
        else:
            layers.setdefault(found[0], {})[found[1]] = value
    for key, by_index in layers.items():
        missing = [i for i in range(len(by_index)) if i not in by_index]
        if missing:
            raise KeyError(f"{layer_key(key, missing[0])}: missing, so {key} cannot be stacked")
        values = [by_index[i] for i in range(len(by_index))]
        out[key] = stack(values) if jax.tree.leaves(values[0]) else values[0]
    return out


def unstack_params(flat: Mapping[str, Any], take: Callable = lambda value, i: value[i],
                   num: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A stacked {path: array} dict in the unrolled layout (other paths unchanged); `take`
    gives layer i of a value (a value with no array in it stays as it is, for each layer
    of `num[path]`)."""
    out = {}
    for key, value in flat.items():
        if is_stacked(key):
            if not jax.tree.leaves(value):
                out.update({layer_key(key, i): value for i in range(num[key])})
            else:
                out.update({layer_key(key, i): take(value, i) for i in range(value.shape[0])})
        else:
            out[key] = value
    return out


def layout_of(keys) -> str:
    """"stacked", "unrolled" or "none" (no layer parameters) of a set of parameter paths."""
    keys = list(keys)
    if any(is_stacked(k) for k in keys):
        return "stacked"
    return "unrolled" if any(layer_of(k) for k in keys) else "none"


def to_layout(flat: Mapping[str, Any], like, stack: Callable = jnp.stack) -> dict[str, Any]:
    """`flat` in the layout of the paths `like` (either layout in, either out)."""
    have, want = layout_of(flat), layout_of(like)
    if have == want or "none" in (have, want):
        return dict(flat)
    return stack_params(flat, stack) if want == "stacked" else unstack_params(flat)


def _param_dicts(tree):
    """Every {parameter path: value} dict in a pytree of dicts, lists and (named) tuples."""
    if isinstance(tree, Mapping):
        if any(layer_of(k) or is_stacked(k) for k in tree):
            yield tree
        else:
            for value in tree.values():
                yield from _param_dicts(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _param_dicts(value)


def tree_layout(tree) -> str:
    """layout_of the first parameter dict in `tree` (a train state or a part of it)."""
    return next((layout_of(d) for d in _param_dicts(tree)), "none")


def convert_tree(tree, layout: str, stack: Callable = jnp.stack, take: Callable = lambda value, i: value[i]):
    """`tree` (a train state: parameter dicts, optax states holding dicts keyed like the
    parameters) with every parameter dict in `layout` ("stacked" or "unrolled"). The
    layers of a stacked entry with no array (optax's MaskedNode) are counted from the
    entries of the same path that have one."""
    sizes = {}
    for d in _param_dicts(tree):
        sizes.update({k: int(v.shape[0]) for k, v in d.items() if is_stacked(k) and jax.tree.leaves(v)})

    def convert(node):
        if isinstance(node, Mapping):
            if any(layer_of(k) or is_stacked(k) for k in node):
                if layout_of(node) == layout:
                    return dict(node)
                return stack_params(node, stack) if layout == "stacked" else unstack_params(node, take, sizes)
            return {k: convert(v) for k, v in node.items()}
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*[convert(v) for v in node])
        if isinstance(node, (list, tuple)):
            return type(node)(convert(v) for v in node)
        return node

    return convert(tree)
