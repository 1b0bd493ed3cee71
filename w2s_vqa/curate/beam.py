"""The metrics table on Apache Beam: `w2s-vqa curate-metrics --runner RUNNER`.

The unit of work is the local path's part (w2s_vqa.curate.extract): each part's videos are
measured by the same function, ``measure_part``, and written as the same part file, so the
pipeline only fills ``OUT/parts/``; the local :func:`~w2s_vqa.curate.extract.compute_metrics`
then finds every part finished and writes ``metrics.parquet`` and ``skipped.csv``. A killed
pipeline, rerun, measures only the parts it lacks. The pipeline options and runners are
``prepare``'s (w2s_vqa.store.beam.pipeline_options).

    Create(part numbers not yet finished) | Reshuffle | ParDo(_MeasurePart)

OUT and the videos are plain paths: on a cluster they must lie on a file system every worker
mounts at the same path. This module imports apache_beam (pip install 'w2s-vqa[beam]').
"""

from __future__ import annotations

import os
from typing import Sequence

import apache_beam as beam

from w2s_vqa import workdir
from w2s_vqa.curate import extract
from w2s_vqa.curate.metrics import MetricSettings
from w2s_vqa.store.beam import PipelineFailed, pipeline_options
from w2s_vqa.store.sources import Source


class _MeasurePart(beam.DoFn):
    """A part number -> its part file in OUT/parts (left as it is when an earlier attempt wrote it)."""

    def __init__(self, out: str, parts: list[list[Source]], settings: MetricSettings):
        self.out = out
        self.parts = parts
        self.settings = settings

    def process(self, part: int):
        path = extract.part_path(self.out, part)
        if not os.path.exists(path):
            workdir.write_json(path, extract.measure_part(self.parts[part], self.settings), indent=None)
        yield part


def compute_metrics_beam(inputs: str, out: str, *, runner: str, beam_options: Sequence[str] = (),
                         settings: MetricSettings = MetricSettings(), workers: int = 1,
                         part_size: int = 64) -> extract.MetricsReport:
    """:func:`w2s_vqa.curate.extract.compute_metrics` with the parts measured by a Beam pipeline.

    Raises what ``compute_metrics`` raises, BeamOptionError for bad options and
    PipelineFailed when the pipeline fails (rerun to resume).
    """
    options = pipeline_options(runner, beam_options, workers=workers)
    sources, parts = extract.plan(inputs, out, settings, part_size)
    todo = [i for i in range(len(parts)) if not os.path.exists(extract.part_path(out, i))]
    if todo:
        pipeline = beam.Pipeline(options=options)
        _ = (pipeline
             | "Parts" >> beam.Create(todo)
             | "Spread" >> beam.Reshuffle()
             | "Measure" >> beam.ParDo(_MeasurePart(out, parts, settings)))
        try:
            pipeline.run().wait_until_finish()
        except Exception as e:  # each runner raises its own types; every one is a failed run here
            kept = sum(os.path.exists(extract.part_path(out, i)) for i in range(len(parts)))
            raise PipelineFailed(f"{runner}: the pipeline failed ({e}); {kept} of {len(parts)} parts are "
                                 f"finished in {out} and kept: rerun the same command to finish the rest") from e
    report = extract.compute_metrics(inputs, out, settings=settings, part_size=part_size, progress=False)
    report.parts_resumed = len(parts) - len(todo)
    return report
