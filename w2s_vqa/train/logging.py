"""Training metrics: JSON lines and TensorBoard events in the workdir, and a progress bar."""

from __future__ import annotations

import json
import time

from tqdm import tqdm

from w2s_vqa import progress as progress_lib
from w2s_vqa import workdir as workdir_lib



class MetricWriter:
    """Appends {"step": s, ...} lines to metrics.jsonl and scalars to TensorBoard (tensorboardX).

    In a bucket workdir (gs://...) an object cannot be appended to: the lines are kept and
    the whole object rewritten (workdir.write_text: the object is replaced whole) at most
    every UPLOAD_SECONDS and at close; a killed run loses at most those seconds' lines,
    which the resumed run logs again. tensorboardX writes gs:// event files itself
    (google-cloud-storage)."""

    UPLOAD_SECONDS = 30.0

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self.path = workdir_lib.join(workdir, workdir_lib.METRICS_FILE)
        self._local = workdir_lib.is_local(self.path)
        self._file = self._lines = None
        self._uploaded = time.monotonic()
        self._tb = None
        if enabled:
            if self._local:
                self._file = open(self.path, "a")
            else:
                self._lines = workdir_lib.path(self.path).read_text().splitlines(keepends=True) \
                    if workdir_lib.exists(self.path) else []
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(workdir_lib.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}}) + "\n"
        if self._local:
            self._file.write(line)
            self._file.flush()
        else:
            self._lines.append(line)
            if time.monotonic() - self._uploaded >= self.UPLOAD_SECONDS:
                self._upload()
        for k, v in metrics.items():
            self._tb.add_scalar(k, float(v), int(step))

    def _upload(self) -> None:
        workdir_lib.write_text(self.path, "".join(self._lines))
        self._uploaded = time.monotonic()

    def close(self) -> None:
        if self.enabled:
            if self._local:
                self._file.close()
            else:
                self._upload()
            self._tb.close()


def progress(total: int, initial: int, *, enabled: bool = True) -> tqdm:
    return progress_lib.bar(total=total, initial=initial, disable=not enabled, desc="train", unit="step")


def read_metrics(workdir: str) -> list[dict]:
    text = workdir_lib.path(workdir_lib.join(workdir, workdir_lib.METRICS_FILE)).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def trim_metrics(workdir: str, step: int) -> None:
    """Drop metrics.jsonl rows past `step` (the checkpoint a run resumes from): a killed run
    logged steps it will redo. Rewritten whole (workdir.write_text), so a kill keeps one whole file."""
    path = workdir_lib.join(workdir, workdir_lib.METRICS_FILE)
    if not workdir_lib.exists(path):
        return
    lines = workdir_lib.path(path).read_text().splitlines(keepends=True)
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
    workdir_lib.write_text(path, "".join(kept))
