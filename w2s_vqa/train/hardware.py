"""Chips, TPU slices and plan targets: the published figures a plan and a roofline read.

    CHIPS, GPUS      each chip's memory, dense bf16 peak, HBM and interconnect bandwidth,
                     with the source of the figures
    TOPOLOGIES       the named TPU slices of the Cloud docs' tables (`tpu_topology`)
    Target           where a plan compiles (`parse_target`): a TPU slice through libtpu's
                     compile-only devices, cpu:N simulated CPU devices, or local devices

`devices_for(target)` gives the devices and `device_chip` their figures and memory;
`environment_for(target)` the environment a fresh planning process needs before JAX
starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

GIB = 2**30
GB = 1e9


# ----------------------------------------------------------------------------- chips


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's published figures.

    hbm_bytes      memory per chip, bytes
    peak_flops     dense bf16 FLOP/s per chip
    hbm_bandwidth  bytes/s per chip
    ici_bandwidth  bidirectional inter-chip interconnect bytes/s per chip (all links)
    source         where the figures come from
    """

    kind: str
    hbm_bytes: float
    peak_flops: float
    hbm_bandwidth: float
    ici_bandwidth: float
    source: str
    # libtpu's device configuration: v4 and v5p chips hold two TensorCores that JAX
    # drives as one device ("megacore"); v5e and v6e chips hold one.
    chip_config: str = "default"


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32 * GIB, 275e12, 1200 * GB, 6 * 90 * GB,
               "Cloud TPU docs, 'TPU v4' (275 TFLOPs bf16; 32 GiB HBM2 at 1200 GBps); ICI: 'How to Scale "
               "Your Model', chapter 'How to Think About TPUs' (6 links x 9e10 B/s bidirectional)",
               chip_config="megacore"),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2765 * GB, 1200 * GB,
                "Cloud TPU docs, 'TPU v5p' (459 TFLOPs bf16; 95 GiB HBM2e at 2765 GBps; bidirectional ICI "
                "1200 GBps per chip)", chip_config="megacore"),
    # The docs write "16 GB" and "32 GB"; the chips hold 16 and 32 GiB: libtpu's compiler
    # reports 15.75 GiB of a v5e's HBM available to a program, more than 16e9 bytes.
    "v5e": Chip("v5e", 16 * GIB, 197e12, 819 * GB, 400 * GB,
                "Cloud TPU docs, 'TPU v5e' (197 TFLOPs bf16; 16 GB HBM2 at 819 GBps; bidirectional ICI "
                "400 GBps per chip)"),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1638 * GB, 800 * GB,
                "Cloud TPU docs, 'TPU v6e' (918 TFLOPs bf16; 32 GB HBM at 1638 GBps; bidirectional ICI "
                "800 GBps per chip)"),
}

# NVIDIA GPUs by jax's device_kind, for `local` plans on a GPU host: dense bf16 tensor-core
# peak (without sparsity), HBM and NVLink bandwidth from NVIDIA's data sheets (H100 SXM,
# H200 SXM, A100 SXM 80GB). Memory comes from the device itself (memory_stats).
GPUS: dict[str, Chip] = {
    "H100": Chip("H100", 80 * GB, 989e12, 3350 * GB, 900 * GB, "NVIDIA H100 Tensor Core GPU data sheet (SXM)"),
    "H200": Chip("H200", 141 * GB, 989e12, 4800 * GB, 900 * GB, "NVIDIA H200 Tensor Core GPU data sheet (SXM)"),
    "A100": Chip("A100", 80 * GB, 312e12, 2039 * GB, 600 * GB, "NVIDIA A100 Tensor Core GPU data sheet (SXM 80GB)"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A TPU slice by its Cloud name: chip, libtpu topology string, hosts."""

    name: str  # "v5p-64"
    chip: Chip
    shape: tuple[int, ...]  # chips along each torus axis, (2, 4, 4)
    chips_per_host: tuple[int, int, int]  # libtpu's chips_per_host_bounds

    @property
    def num_chips(self) -> int:
        return math.prod(self.shape)

    @property
    def hosts(self) -> int:
        return max(1, self.num_chips // math.prod(self.chips_per_host))

    @property
    def libtpu_name(self) -> str:
        """libtpu's topology name: "v5:2x4x4" (v5p's chips are "v5"), "v6e:8x8"."""
        prefix = {"v5p": "v5"}.get(self.chip.kind, self.chip.kind)
        return f"{prefix}:{'x'.join(str(s) for s in self.shape)}"


# Slice shapes, chips per axis, as the Cloud TPU docs' configuration tables list them
# ('TPU v4', 'TPU v5p': 3D tori named by TensorCores, two per chip; 'TPU v5e', 'TPU v6e':
# 2D tori named by chips).
_SHAPES_3D = [(2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8),
              (8, 8, 16), (8, 16, 16), (16, 16, 16), (16, 16, 24)]
_SHAPES_2D = [(1, 1), (2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)]


def _topologies() -> dict[str, Topology]:
    table = {}
    for kind in ("v4", "v5p"):
        for shape in _SHAPES_3D:
            if kind == "v4" and math.prod(shape) > 4096:
                continue  # a v4 pod has 4096 chips
            # Four chips per host (a 2x2x1 tray), per the docs' hosts column.
            table[f"{kind}-{2 * math.prod(shape)}"] = Topology(f"{kind}-{2 * math.prod(shape)}", CHIPS[kind], shape,
                                                               (2, 2, 1))
    for kind in ("v5e", "v6e"):
        for shape in _SHAPES_2D:
            n = math.prod(shape)
            # Up to 8 chips: one host; larger slices: hosts of 4 chips (2x2).
            host = (shape[0], shape[1], 1) if n <= 8 else (2, 2, 1)
            table[f"{kind}-{n}"] = Topology(f"{kind}-{n}", CHIPS[kind], shape, host)
    return table


TOPOLOGIES: dict[str, Topology] = _topologies()
_ALIASES = {"v5litepod": "v5e"}


class PlanError(ValueError):
    """A target, mesh or batch the planner cannot use; the message says what to change."""


def tpu_topology(name: str) -> Topology:
    """A TPU slice by Cloud name ("v5p-64", "v5litepod-8", "v6e-16") or chip:shape
    ("v5p:2x4x4", "v6e:4x4"). Raises PlanError for anything else, listing the names."""
    text = name.strip().lower()
    for alias, kind in _ALIASES.items():
        text = text.replace(alias, kind)
    if text in TOPOLOGIES:
        return TOPOLOGIES[text]
    match = re.fullmatch(r"(v4|v5p|v5e|v6e):(\d+(?:x\d+)+)", text)
    if match:
        kind, dims = match.group(1), tuple(int(x) for x in match.group(2).split("x"))
        want = 3 if kind in ("v4", "v5p") else 2
        if len(dims) != want or 0 in dims:
            raise PlanError(f"topology {name!r}: {kind} slices have {want} axes (e.g. "
                            f"{'2x4x4' if want == 3 else '4x4'})")
        n = math.prod(dims)
        host = (2, 2, 1) if want == 3 else ((dims[0], dims[1], 1) if n <= 8 else (2, 2, 1))
        if want == 3 and n < 4:
            host = (dims[0], dims[1], dims[2])
        return Topology(name, CHIPS[kind], dims, host)
    raise PlanError(f"unknown target {name!r}: a TPU slice ({', '.join(sorted(TOPOLOGIES, key=_topology_order))}; "
                    "or chip:shape such as v5p:2x4x4), cpu:N, or local")


def _topology_order(name: str):
    kind, _, count = name.partition("-")
    return kind, int(count)


# ----------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan compiles: kind "tpu" (a Topology), "cpu" (N simulated devices), "local"."""

    kind: str
    name: str
    topology: Topology | None = None
    num_devices: int = 0

    def to_text(self) -> str:
        return self.name


def parse_target(text: str) -> Target:
    """"cpu:8", "local", or a TPU slice name (`tpu_topology`). Raises PlanError."""
    text = str(text).strip()
    match = re.fullmatch(r"cpu:(\d+)", text)
    if match:
        n = int(match.group(1))
        if n < 1:
            raise PlanError(f"target {text!r}: at least one CPU device")
        return Target("cpu", text, num_devices=n)
    if text == "local":
        return Target("local", text)
    topology = tpu_topology(text)
    return Target("tpu", topology.name, topology=topology, num_devices=topology.num_chips)


def topology_table() -> list[dict[str, Any]]:
    """Every named TPU slice with its chip's figures, for `w2s-vqa plan --topologies`."""
    rows = []
    for name in sorted(TOPOLOGIES, key=_topology_order):
        t = TOPOLOGIES[name]
        rows.append({"name": name, "chip": t.chip.kind, "topology": t.libtpu_name, "chips": t.num_chips,
                     "hosts": t.hosts, "chips_per_host": math.prod(t.chips_per_host),
                     "hbm_gib_per_chip": t.chip.hbm_bytes / GIB, "peak_bf16_tflops": t.chip.peak_flops / 1e12,
                     "hbm_gbps": t.chip.hbm_bandwidth / GB, "ici_gbps_bidirectional": t.chip.ici_bandwidth / GB})
    return rows


# libtpu looks for a Cloud TPU VM's metadata when it starts; on any other machine it
# prints warnings about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES that do not
# concern a compile-only topology. Naming a single local worker silences them. libtpu
# also takes /tmp/libtpu_lockfile so that one process owns the host's chips; compile-only
# devices own nothing, and several plans (a test run, a sweep) may load it at once.
LIBTPU_QUIET_ENV = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0",
                    "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def tpu_devices(topology: Topology) -> list:
    """libtpu's compile-only devices of `topology` (no TPU needed). Raises PlanError when
    libtpu is not installed."""
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise PlanError(f"planning for {topology.name} needs libtpu: pip install 'w2s-vqa[tpu]' "
                        "(libtpu 0.0.42.*, the release that pairs with jax 0.10.2)") from None
    for key, value in LIBTPU_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.chip.kind}-{topology.num_chips}")
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.libtpu_name,
                                        chip_config_name=topology.chip.chip_config,
                                        chips_per_host_bounds=topology.chips_per_host, num_slices=1)
    devices = list(desc.devices)
    if len(devices) != topology.num_chips:
        raise PlanError(f"libtpu made {len(devices)} devices for {topology.name} ({topology.libtpu_name}); "
                        f"expected {topology.num_chips}")
    return devices


def environment_for(target: Target) -> dict[str, str]:
    """This process's environment as a process planning for `target` needs it before JAX
    starts: the CPU backend for compile-only targets, N devices for cpu:N, libtpu quiet."""
    env = dict(os.environ)
    if target.kind in ("cpu", "tpu"):
        env["JAX_PLATFORMS"] = "cpu"
    if target.kind == "cpu":
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={target.num_devices}".strip()
    if target.kind == "tpu":
        for key, value in LIBTPU_QUIET_ENV.items():
            env.setdefault(key, value)
    return env


# ----------------------------------------------------------------------------- devices


def devices_for(target: Target) -> list:
    """The devices a plan for `target` compiles for: libtpu's compile-only devices, this
    process's CPU devices (PlanError when there are not target.num_devices of them), or
    its default devices for `local`."""
    import jax

    if target.kind == "tpu":
        return tpu_devices(target.topology)
    if target.kind == "cpu":
        devices = jax.devices("cpu")
        if len(devices) != target.num_devices:
            raise PlanError(f"this process has {len(devices)} CPU devices, not {target.num_devices}: "
                            "plan() runs cpu:N in a subprocess then")
        return devices
    return jax.devices()


def gpu_chip(device_kind: str) -> Chip | None:
    """The GPUS entry whose kind jax's device_kind names ("NVIDIA H100 80GB HBM3" -> H100), or None."""
    return next((chip for kind, chip in GPUS.items() if kind in device_kind), None)


def _host_memory() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_chip(target: Target, devices) -> tuple[Chip | None, float]:
    """(the chip's figures or None, memory per device in bytes) of a target's devices."""
    if target.kind == "tpu":
        return target.topology.chip, target.topology.chip.hbm_bytes
    device = devices[0]
    if device.platform == "cpu":
        # Simulated devices share the host's memory.
        return None, _host_memory() / len(devices)
    chip = gpu_chip(device.device_kind)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    capacity = float((stats or {}).get("bytes_limit", 0)) or (chip.hbm_bytes if chip else 0.0)
    return chip, capacity
