"""Where a pair's label came from: the origin names, their batch codes, and parsing.

Every pair table row has an `origin` string, one of

    "teacher"                               the weak teachers' fused scores
    "spatial", "temporal", "compression"    two severity levels of one source under a
                                            simulator of that kind (video.distort.KINDS)
    "student:<stage>"                       the student trained in stage <stage>
    "mos"                                   human ratings: two videos of one MOS-labeled
                                            set, labelled from their MOS difference
                                            (MOS fine-tuning, labels/mos_pairs.py)

In a batch the origin is an int32 code, its index in ORIGINS; every "student:<stage>"
shares the code of "student". Metrics are reported per entry of ORIGINS. "mos" comes
last so that the codes of the others stay what they were before it existed.

The synthetic origin names are the simulators' kinds, whose home is video.distort
(the lowest layer: a simulator declares its kind there, and video/ must not import
labels/); this module takes them from there rather than spelling them again.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from w2s_vqa.video.distort import KINDS

TEACHER = "teacher"
SYNTHETIC: tuple[str, ...] = tuple(KINDS)
STUDENT = "student"
MOS = "mos"
# Origin names in batch order: a batch's `origin` code indexes this tuple.
ORIGINS: tuple[str, ...] = (TEACHER, *SYNTHETIC, STUDENT, MOS)
_STUDENT_PATTERN = re.compile(rf"{STUDENT}:(\d+)")
EXPECTED = f"{TEACHER!r}, one of {SYNTHETIC}, '{STUDENT}:<stage>' or {MOS!r}"


class OriginError(ValueError):
    """An origin string is not one of the known origins."""


def student_origin(stage: int) -> str:
    """The origin of pairs labelled by the student trained in `stage` (an integer >= 1)."""
    if int(stage) != stage or stage < 1:
        raise OriginError(f"a student's stage is an integer >= 1, got {stage!r}")
    return f"{STUDENT}:{int(stage)}"


def parse(origin: str) -> tuple[str, int | None]:
    """(name in ORIGINS, stage) of an origin string; the stage is None except for students.

    Raises OriginError for anything else (including "student" without a stage and
    "student:0").
    """
    text = str(origin)
    if text in (TEACHER, *SYNTHETIC, MOS):
        return text, None
    match = _STUDENT_PATTERN.fullmatch(text)
    if match and int(match.group(1)) >= 1:
        return STUDENT, int(match.group(1))
    raise OriginError(f"unknown pair origin {origin!r}; expected {EXPECTED}")


def is_known(origin) -> bool:
    """Whether `origin` is a valid origin string (see `parse`)."""
    try:
        parse(origin)
    except OriginError:
        return False
    return True


def origin_codes(origins: Iterable[str]) -> np.ndarray:
    """int32 [N] codes (indices into ORIGINS) of N origin strings; OriginError names a bad one."""
    names = {}
    codes = []
    for origin in origins:
        if origin not in names:
            names[origin] = ORIGINS.index(parse(origin)[0])
        codes.append(names[origin])
    return np.asarray(codes, np.int32)
