"""The distorted variants a store makes of each source: the `data.distortions` spec, each
variant's id and the seed its simulator draws from (w2s_vqa.store.prepare makes them)."""

from __future__ import annotations

import collections
import hashlib
from typing import Sequence

from w2s_vqa.store.format import StoreError
from w2s_vqa.video import distort


def parse_distortions(spec: str | Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Variants to make per source, e.g. "resize:1,3,5;h264:1,2;stutter" -> ((resize,1), ...).

    A name without levels means all its levels. Levels are 1-based, as
    `Simulator.apply` takes them. An empty spec means pristine videos only.
    Raises StoreError naming every unknown name, bad level and repeated variant at once.
    """
    items = spec.split(";") if isinstance(spec, str) else spec
    variants, problems = [], []
    for item in (s.strip() for s in items):
        if not item:
            continue
        name, _, levels_text = item.partition(":")
        name = name.strip()
        if name not in distort.SIMULATORS:
            problems.append(f"unknown distortion '{name}' (known: {', '.join(sorted(distort.SIMULATORS))})")
            continue
        count = len(distort.get(name).levels)
        try:
            levels = [int(x) for x in levels_text.split(",") if x.strip()] or list(range(1, count + 1))
        except ValueError:
            problems.append(f"'{item}': levels must be integers")
            continue
        bad = [level for level in levels if not 1 <= level <= count]
        if bad:
            problems.append(f"'{item}': {name} has levels 1..{count}, not {bad}")
        variants += [(name, level) for level in levels if 1 <= level <= count]
    duplicates = [v for v, n in collections.Counter(variants).items() if n > 1]
    if duplicates:
        problems.append(f"variants listed twice: {duplicates}")
    if problems:
        raise StoreError("data.distortions: " + "; ".join(problems))
    return tuple(variants)


def variant_id(video_id: str, distortion: str, level: int) -> str:
    """Id of a variant, e.g. "clip~h264-3": the dash keeps "h264-3" apart from "h2643"."""
    return f"{video_id}~{distortion}-{level}"


def variant_seed(video_id: str, distort_seed: int) -> int:
    """A seed that depends on the id only, so results do not depend on order or worker."""
    digest = hashlib.sha256(f"{distort_seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
