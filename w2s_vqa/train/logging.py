"""Training metrics: JSON lines and TensorBoard events in the workdir, and a progress bar."""

from __future__ import annotations

import json
import os

from tqdm import tqdm

from w2s_vqa import progress as progress_lib
from w2s_vqa import workdir as workdir_lib



class MetricWriter:
    """Appends {"step": s, ...} lines to metrics.jsonl and scalars to TensorBoard (tensorboardX)."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
        self._file = open(self.path, "a") if enabled else None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._file.flush()
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def progress(total: int, initial: int, *, enabled: bool = True) -> tqdm:
    return progress_lib.bar(total=total, initial=initial, disable=not enabled, desc="train", unit="step")


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, workdir_lib.METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def trim_metrics(workdir: str, step: int) -> None:
    """Drop metrics.jsonl rows past `step` (the checkpoint a run resumes from): a killed run
    logged steps it will redo. Rewritten beside and swapped in, so a kill keeps one whole file."""
    path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) == len(lines) and all(a == b for a, b in zip(kept, lines)):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
