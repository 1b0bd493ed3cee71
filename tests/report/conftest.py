"""A small real stages run (two stages on the training tests' store) and a teacher-only
evaluation, made once for the report tests; and an HTML reader for the pages."""

import html.parser
import os

import numpy as np
import pandas as pd
import pytest

from tests.train.conftest import pool, train_config  # noqa: F401  (the session's small real store)
from w2s_vqa.demo.run import standin_mos
from w2s_vqa.labels import weak_teachers
from w2s_vqa.score.anchors import AnchorSet
from w2s_vqa.store.format import VideoStore

SETTINGS = ("train.num_steps=4", "stages.num_steps=3", "train.checkpoint_every=2", "stages.val_fraction=0.0",
            "stages.new_pairs=14", "stages.synthetic_per_kind=2", "stages.gmad_levels=2", "train.eval_every=2",
            "mesh.shape=(1,1,1)", "mesh.num_devices=1")


@pytest.fixture(scope="session")
def stages_run(pool, tmp_path_factory):  # noqa: F811
    """A finished two-stage run: stage 1 relabels the pool (gMAD against the weak teachers,
    misranked synthetic pairs), stage 2 trains on the result; validation every 2 steps."""
    from w2s_vqa.stages import run as stages_lib

    root = tmp_path_factory.mktemp("report_stages")
    with VideoStore(pool / "store") as store:
        index = store.index
        weak_teachers.score_store(store).to_csv(root / "teachers.csv", index=False)
        mos = standin_mos(index)
        pick = [int(np.argmin(mos)), int(np.argmax(mos))]
        AnchorSet.from_store(store, index["id"].iloc[pick], mos[pick]).save(str(root / "anchors"))
    config = train_config(pool, *SETTINGS, f"stages.anchors='{root / 'anchors'}'",
                          f"stages.teachers='{root / 'teachers.csv'}'", f"evals.val.pairs='{pool / 'pairs.parquet'}'")
    summary = stages_lib.run_stages(config, str(root / "run"), num_stages=2, progress=False)
    assert summary["stopped"] is None
    return root / "run"


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory):
    """`eval`'s output for two teachers on a set named as one of the paper's (konvid_1k):
    results.json, predictions.csv, plots/konvid_1k.png (teachers only: no videos are read)."""
    from w2s_vqa.score import evaluate

    root = tmp_path_factory.mktemp("report_eval")
    rng = np.random.default_rng(0)
    files = [f"v{i}.mp4" for i in range(24)]
    mos = rng.uniform(1, 5, len(files))
    pd.DataFrame({"file": files, "mos": mos}).to_csv(root / "konvid.csv", index=False)
    teachers = pd.concat([pd.DataFrame({"video_id": files, "teacher": name,
                                        "score": mos * 10 + rng.normal(0, noise, len(files))})
                          for name, noise in (("dover", 5.0), ("qalign", 15.0))], ignore_index=True)
    evaluate.run_eval([evaluate.EvalSet("konvid_1k", str(root / "videos"), str(root / "konvid.csv"))],
                      str(root / "eval"), teacher_scores=teachers, bootstrap=50)
    return root / "eval"


class Page(html.parser.HTMLParser):
    """The elements of a page as (tag, attributes, text) in document order; text is the
    element's own text and its children's, entities decoded (what a reader sees)."""

    VOID = {"img", "br", "meta", "link", "input", "hr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements, self._open = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i]["tag"] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data

    def find(self, tag=None, **attrs):
        return [e for e in self.elements if (tag is None or e["tag"] == tag)
                and all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def having(self, attribute: str):
        return [e for e in self.elements if attribute in e["attrs"]]


def read_page(path) -> Page:
    with open(path, encoding="utf-8") as f:
        return Page(f.read())


def tree_digest(root, skip=()) -> dict:
    """{relative path: (size, mtime_ns, sha1)} of every file under root but the `skip` folders."""
    import hashlib

    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in {os.path.join(root, s) for s in skip}]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = (os.path.getsize(path), os.stat(path).st_mtime_ns,
                                                     hashlib.sha1(f.read()).hexdigest())
    return out
