"""Reading the compiler's text: collectives in a compiled HLO module, figures in an
out-of-memory error.

    collective_bytes(hlo_text, n)   per kind of collective: ops, bytes carried, bytes a
                                    device sends (ring algorithms)
    oom_figures(message)            (bytes needed, bytes available, what needs them)
    is_out_of_memory(message)       whether a compile error is XLA's out-of-memory verdict
"""

from __future__ import annotations

import math
import re


# ----------------------------------------------------------------------------- collectives

_ITEMSIZE = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1,
             "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
             "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
_SHAPE = re.compile(r"\b(" + "|".join(sorted(_ITEMSIZE, key=len, reverse=True)) + r")\[([0-9,]*)\]")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.+?)\s+(?P<op>(?:" + "|".join(COLLECTIVES) +
                 r"|ragged-all-to-all)(?:-start)?)\(")


def _arrays(type_text: str) -> list[tuple[str, int]]:
    """(dtype, bytes) of every array in an HLO type: one shape or a tuple of them."""
    out = []
    for dtype, dims in _SHAPE.findall(type_text):
        count = math.prod(int(x) for x in dims.split(",") if x) if dims else 1
        out.append((dtype, count * _ITEMSIZE[dtype]))
    return out


def _group_size(line: str, num_devices: int) -> int:
    """Participants per group of a collective, from its replica_groups in any of XLA's
    three spellings: explicit ({{0,1},{2,3}}), iota ([2,4]<=[8]) or mesh
    (mesh['axis_0'=4,'axis_1'=2] {'axis_0'})."""
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if mesh:
        sizes = dict((name, int(size)) for name, size in re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
        chosen = re.findall(r"'([^']+)'", mesh.group(2))
        return math.prod(sizes[a] for a in chosen) if chosen else 1
    iota = re.search(r"replica_groups=\[([0-9,]+)\]<=", line)
    if iota:
        dims = [int(x) for x in iota.group(1).split(",")]
        return math.prod(dims[1:]) if len(dims) > 1 else dims[0]
    explicit = re.search(r"replica_groups=\{(\{[0-9,]*\})?", line)
    if explicit:
        first = explicit.group(1)
        if first and first != "{}":
            return len([x for x in first.strip("{}").split(",") if x])
    return num_devices


def collective_bytes(hlo_text: str, num_devices: int) -> dict[str, dict[str, float]]:
    """Per kind of collective in a compiled (partitioned) HLO module: {"count", "bytes",
    "moved"} per device, and "total" summed over kinds.

    bytes  the data the op carries (all-gather: its gathered result; reduce-scatter:
           its scattered result; the rest: their result)
    moved  what one device sends with the bandwidth-optimal ring algorithms, for a
           group of n: all-gather S (n-1)/n, reduce-scatter S (n-1), all-reduce
           2 S (n-1)/n, all-to-all S (n-1)/n, collective-permute S

    Ops inside a loop body count once, as in cost analysis. Async pairs count at
    their -start op.
    """
    kinds = {k: {"count": 0, "bytes": 0.0, "moved": 0.0} for k in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _OP.match(line)
        if not match:
            continue
        op = match.group("op")
        kind = op[: -len("-start")] if op.endswith("-start") else op
        kind = "all-to-all" if kind == "ragged-all-to-all" else kind
        arrays = _arrays(match.group("type"))
        if op in ("all-gather-start", "collective-permute-start"):
            # (operands..., results...[, u32 contexts]): the results are the second half.
            data = [b for dtype, b in arrays if not (dtype == "u32" and b == 4)]
            data = data[len(data) // 2:] if len(data) > 1 else data
        else:
            data = [b for _, b in arrays]
        size = float(sum(data))
        n = _group_size(line, num_devices)
        moved = {"all-gather": size * (n - 1) / n, "reduce-scatter": size * (n - 1),
                 "all-reduce": 2 * size * (n - 1) / n, "all-to-all": size * (n - 1) / n,
                 "collective-permute": size}[kind] if n > 0 else 0.0
        kinds[kind]["count"] += 1
        kinds[kind]["bytes"] += size
        kinds[kind]["moved"] += moved
    kinds["total"] = {key: sum(kinds[k][key] for k in COLLECTIVES) for key in ("count", "bytes", "moved")}
    return kinds


# ----------------------------------------------------------------------------- roofline



# ----------------------------------------------------------------------------- out of memory

_OOM = re.compile(r"(?:RESOURCE_EXHAUSTED|[Rr]an out of memory|Out of memory|exceeds the memory)")
# XLA's two spellings of an out-of-memory verdict: "Used 110.97G of 95.74G hbm" and "the total
# memory required for HLO temporaries (76.32G) exceeds available HBM (15.75G)".
_OOM_FIGURES = (re.compile(r"Used\s+([0-9.]+)([KMGT]?)i?B?\s+of\s+([0-9.]+)([KMGT]?)i?B?"),
                re.compile(r"required for ([\w ]+?) \(([0-9.]+)([KMGT]?)i?B?\) exceeds available \w+ "
                           r"\(([0-9.]+)([KMGT]?)i?B?\)"))
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def oom_figures(message: str) -> tuple[float, float, str] | None:
    """(bytes needed, bytes available, what needs them: "" or e.g. "HLO temporaries") from
    an XLA out-of-memory error, or None where it gives no figures."""
    used = _OOM_FIGURES[0].search(message)
    if used:
        return float(used.group(1)) * _UNITS[used.group(2)], float(used.group(3)) * _UNITS[used.group(4)], ""
    required = _OOM_FIGURES[1].search(message)
    if required:
        return (float(required.group(2)) * _UNITS[required.group(3)],
                float(required.group(4)) * _UNITS[required.group(5)], required.group(1))
    return None


def is_out_of_memory(message: str) -> bool:
    """Whether a compile error's text is XLA's out-of-memory verdict (a plan's result, not a failure)."""
    return bool(_OOM.search(message))
