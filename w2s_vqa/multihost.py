"""Several processes as one run: joining them, and what they exchange outside the step.

    initialize(config)    jax.distributed.initialize from config.distributed, or from a
                          TPU pod's / SLURM job's environment; nothing for one process
    is_first()            whether this is process 0, the one that writes shared files
    barrier(name)         every process waits here for the others
    broadcast(value)      process 0's array (bool, int or float) on every process
    gather_json(value)    every process's JSON value, in process order, on every process

Each is a no-op (or the value itself) in a single-process run, so callers need no
branch of their own. JAX is imported when a function runs, not with this module: a
verb sets up the runtime (w2s_vqa.runtime) before JAX starts. Every process must make
the same calls in the same order: a barrier or exchange that one process skips leaves
the others waiting until JAX's coordination service ends the run
(distributed.heartbeat_timeout_seconds).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np


def initialize(config) -> None:
    """jax.distributed.initialize from the config, or from the environment on TPU pods / SLURM.

    config.distributed: coordinator_address, num_processes, process_id,
    local_device_ids (a job started by hand); auto (Cloud TPU and SLURM publish the
    topology in the environment); cpu_collectives (a CPU-only multi-process run's
    collectives backend, e.g. "gloo"). Neither coordinator_address nor auto: nothing.

    The timeouts (seconds) come from distributed.initialization_timeout,
    heartbeat_timeout_seconds and shutdown_timeout_seconds: a process that never joins ends
    the others after initialization_timeout; one that dies (kill -9, lost host) makes JAX's
    coordination service end every other process within the heartbeat timeout (at once
    when the coordinator, process 0, is the one lost), rather than leaving them waiting in
    a collective. Either way the others exit with status 134 (SIGABRT) and JAX's line
    "... another task died ...". Complete checkpoints stay intact; rerun every process to
    resume. Each process first says on stderr whom it joins and these bounds.
    """
    import jax
    import ml_collections

    dist = config.get("distributed", ml_collections.ConfigDict())
    if (dist.get("coordinator_address") or dist.get("auto")) and dist.get("cpu_collectives"):
        # CPU-only multi-process runs (tests, laptops) need a collectives backend.
        jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
    timeouts = {key: int(dist[key]) for key in ("initialization_timeout", "heartbeat_timeout_seconds",
                                                "shutdown_timeout_seconds") if key in dist}
    if dist.get("coordinator_address") or dist.get("auto", False):
        # Said before joining: if a peer never comes or dies, JAX's abort follows this line in the log.
        who = (f"process {dist.process_id} of {dist.num_processes} joining {dist.coordinator_address}"
               if dist.get("coordinator_address") else "joining the TPU / SLURM job's processes")
        bounds = (f": every process must join within {timeouts['initialization_timeout']} s; one silent for "
                  f"{timeouts['heartbeat_timeout_seconds']} s (lost) ends the others"
                  if {"initialization_timeout", "heartbeat_timeout_seconds"} <= set(timeouts) else "")
        print(f"w2s-vqa: {who}{bounds}", file=sys.stderr, flush=True)
    if dist.get("coordinator_address"):
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address, num_processes=dist.num_processes,
            process_id=dist.process_id, local_device_ids=list(dist.local_device_ids) or None, **timeouts)
    elif dist.get("auto", False):
        jax.distributed.initialize(**timeouts)  # Cloud TPU and SLURM publish the topology in the environment.


def is_first() -> bool:
    """Whether this is process 0: the process that writes what all of them share."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (the same name on each; a
    mismatch is JAX's error). Nothing in a single-process run."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"w2s_vqa.{name}")


def broadcast(value) -> np.ndarray:
    """Process 0's `value` (a bool, int or float, or a NumPy array of them; the same shape
    and dtype on every process) on every process, as a NumPy array of its dtype: what
    process 0 read from its disk (which parts are done), agreed by all."""
    import jax

    array = np.asarray(value)
    if jax.process_count() == 1:
        return array
    from jax.experimental import multihost_utils

    # Booleans travel as int32: the collectives carry numbers.
    sent = array.astype(np.int32) if array.dtype == bool else array
    return np.asarray(multihost_utils.broadcast_one_to_all(sent)).astype(array.dtype)


def gather_json(value: Any) -> list[Any]:
    """Every process's JSON-serializable `value`, in process order, on every process
    ([value] in a single-process run). Each process's JSON text travels as UTF-8 bytes
    padded to the longest (the collectives exchange arrays of one shape)."""
    import jax

    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    text = json.dumps(value).encode()
    length = int(np.max(multihost_utils.process_allgather(np.asarray([len(text)], np.int32))))
    buffer = np.zeros((max(length, 1),), np.uint8)
    buffer[:len(text)] = np.frombuffer(text, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buffer)).reshape(jax.process_count(), -1)
    return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in rows]
