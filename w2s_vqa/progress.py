"""Progress bars that suit both a terminal and a log file (tqdm).

On an interactive terminal a tqdm bar redraws in place. Pod, SLURM and CI logs
are files, where every redraw would be one more carriage-return update: there
the same tqdm bar is printed as one plain line every `LOG_INTERVAL_SECONDS`
(and once at the end), with the same figures.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 30.0


class _Lines:
    """A file for tqdm that turns each redraw into one complete line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _interactive(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def bar(*, stream: TextIO | None = None, log_interval: float = LOG_INTERVAL_SECONDS, **kwargs) -> tqdm:
    """A tqdm bar over `kwargs` (total, desc, unit, initial, disable, ...) on `stream` (stderr).

    A terminal gets tqdm's redrawing bar; anything else gets one plain line at most
    every `log_interval` seconds, plus the final state when the bar closes.
    """
    stream = stream if stream is not None else sys.stderr
    if _interactive(stream):
        return tqdm(file=stream, dynamic_ncols=True, **kwargs)
    return tqdm(file=_Lines(stream), mininterval=log_interval, maxinterval=log_interval, ascii=True, ncols=100,
                **kwargs)
