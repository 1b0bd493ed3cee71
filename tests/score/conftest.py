"""The scoring tests' student and anchors: the tiny preset (seed 3) and three videos of the
training tests' small store (tests.train.conftest.pool) as anchors."""

import pytest

from tests.train.conftest import pool  # noqa: F401 (a fixture)
from w2s_vqa import prompt as prompt_lib
from w2s_vqa.models import config as config_lib
from w2s_vqa.models import student as student_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR as TINY_TOKENIZER
from w2s_vqa.score.anchors import AnchorSet
from w2s_vqa.store.format import VideoStore

ANCHOR_IDS = ("bikes~resize-5", "carphone_pristine~resize-3", "bikes")


def tiny_student_and_prompt():
    """The tiny preset with seed 3 (what the two-process worker builds too) and its prompt."""
    cfg = config_lib.preset("tiny")
    tokenizer = prompt_lib.load_tokenizer(TINY_TOKENIZER)
    return student_lib.create(cfg, seed=3), prompt_lib.build_pair_prompt(
        tokenizer, video_token_id=cfg.video_token_index, tokens_per_video=cfg.tokens_per_video)


@pytest.fixture(scope="module")
def model():
    return tiny_student_and_prompt()


@pytest.fixture(scope="module")
def anchors(pool, tmp_path_factory):  # noqa: F811
    directory = tmp_path_factory.mktemp("anchors")
    AnchorSet.from_store(VideoStore(pool / "store"), ANCHOR_IDS, [20.0, 50.0, 80.0]).save(directory)
    return AnchorSet.load(str(directory))
