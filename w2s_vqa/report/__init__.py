"""`w2s-vqa report`: one static HTML page per run, to see what the student learned.

    w2s-vqa report WORKDIR [--out DIR]     ->  DIR/index.html, DIR/img/*.png, DIR/frames/*.jpg

WORKDIR is any folder a verb writes (a `stages` run, a `train` run, an `eval` output, a
`finetune` run, the demo's demo_out) or a score table (`w2s-vqa score --out`). The page
holds: the run in one paragraph; the stage table (validation figures, each evaluation
set's SRCC / PLCC with intervals, the in-domain and OOD overall beside the paper's rows
when the sets are the paper's) and what each stage changed; the training curves of every
stage on shared axes; the evaluation (eval's scatter plots with the fitted logistic, the
accuracy per pair origin, the demo's comparison); the pair gallery per stage (gMAD pairs
both ways per teacher, misranked synthetic pairs, a sample of the rest, each with the two
videos' frames from the store, both models' scores, the label and the rule, sortable by
the score gap); the score distribution and the extreme videos of a score table.

Parts: `runs` finds and reads a workdir's files (by their on-disk formats, read-only);
`gallery` samples the pairs and joins them with the score and teacher tables; `frames`
writes the strips of frames (Pillow JPEGs); `plots` draws with matplotlib; `build` fills
the Jinja2 templates in templates/ (autoescaped: ids and notes are shown as text).
"""

from w2s_vqa.report.build import build_report, default_out  # noqa: F401
from w2s_vqa.report.runs import ReportError  # noqa: F401
