"""From logical axis names to mesh shardings: one rules table.

Parameters name their axes logically (`embed`, `mlp`, `heads`, `kv_heads`,
`vocab`, `vision_embed`, ...; see w2s_vqa.models.layers). A rules table maps each
logical name to mesh axes (`data`, `fsdp`, `tensor`), so a new parallelism
layout is a config edit, as in MaxText's `logical_axis_rules`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# The mesh axes and the default rules table live in w2s_vqa.config: they are config
# defaults, and config stays free of JAX so that the PyTorch side can read its defaults.
from w2s_vqa.config import DEFAULT_RULES, MESH_AXES


def make_mesh(shape: Sequence[int] | dict[str, int], devices=None) -> Mesh:
    """A mesh over axes (data, fsdp, tensor); one size may be -1 to take the remaining devices."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    sizes = [shape[a] for a in MESH_AXES] if isinstance(shape, dict) else list(shape)
    if len(sizes) != len(MESH_AXES):
        raise ValueError(f"mesh shape {sizes}: expected sizes for {MESH_AXES}")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh shape {sizes}: at most one -1")
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        sizes[sizes.index(-1)] = devices.size // known
    if int(np.prod(sizes)) != devices.size:
        raise ValueError(f"mesh shape {sizes} needs {int(np.prod(sizes))} devices; {devices.size} are present")
    return Mesh(devices.reshape(sizes), MESH_AXES)


def rules_from_config(config) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """The rules table of a run config (`mesh.rules`, lists from a config file or JSON) as tuples."""
    return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in config.mesh.rules)


def mesh_from_config(config, devices=None) -> Mesh:
    """The mesh of a run config: `mesh.shape` over `devices` (default: every device, or the
    first `mesh.num_devices` of them for sharding experiments)."""
    devices = list(devices if devices is not None else jax.devices())
    if config.mesh.get("num_devices", 0):
        devices = devices[: config.mesh.num_devices]
    return make_mesh(tuple(config.mesh.shape), devices)


def logical_to_spec(axes: Sequence[str | None] | None, rules=DEFAULT_RULES, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for logical `axes`. A mesh axis is used at most once per array, and
    (given `shape` and `mesh`) only where it divides the dimension; else that
    dimension is replicated. With `mesh` (a Mesh or an AbstractMesh), axes of size 1
    are left out."""
    if axes is None:
        return PartitionSpec()
    table = dict(rules if rules is not None else DEFAULT_RULES)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
        mesh_axes = tuple(a for a in mesh_axes if a not in used)
        if mesh is not None:
            mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
        if shape is not None and mesh is not None and mesh_axes:
            if shape[dim] % int(np.prod([mesh.shape[a] for a in mesh_axes])):
                mesh_axes = ()
        used.update(mesh_axes)
        spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, axes: Sequence[str | None] | None, rules=None,
                   shape: Sequence[int] | None = None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules, shape, mesh))
