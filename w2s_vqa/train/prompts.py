"""The pair prompt a run trains with, and the answer sentence its loss reads.

The question is the one the model was trained or is scored with
(convert.export_files.prompt_question: config model.prompt, else the model directory's
own, else the project's), so a student imported from the authors' released checkpoint is
trained, fine-tuned and scored with the prompt it learnt (docs/2026-12-released-model.md).
"""

from __future__ import annotations

import dataclasses

from w2s_vqa import prompt as prompt_lib
from w2s_vqa.convert import export_files
from w2s_vqa.models import config as model_config_lib


@dataclasses.dataclass(frozen=True)
class TrainingPrompt:
    """pair: the pair prompt; sentence: its answer sentence (prompt.answer_sentence) when
    objective.kind is "released", else None; question: the question asked."""

    pair: prompt_lib.PairPrompt
    sentence: prompt_lib.AnswerSentence | None
    question: str


def question(config) -> str:
    """The question `config`'s model is asked (export_files.prompt_question of its
    tokenizer directory and model.prompt). Raises ValueError for an unknown model.prompt."""
    return export_files.prompt_question(model_config_lib.tokenizer_dir(config), config.model.get("prompt", ""))


def training_prompt(config, model_cfg: model_config_lib.StudentConfig, tokenizer=None) -> TrainingPrompt:
    """The pair prompt of `config` for the student `model_cfg`, with `tokenizer` (default:
    the config's, prompt.load_tokenizer(models.config.tokenizer_dir(config))).

    Raises what prompt.load_tokenizer, build_pair_prompt and answer_sentence raise.
    """
    if tokenizer is None:
        tokenizer = prompt_lib.load_tokenizer(model_config_lib.tokenizer_dir(config))
    asked = question(config)
    pair = prompt_lib.build_pair_prompt(tokenizer, video_token_id=model_cfg.video_token_index,
                                        tokens_per_video=model_cfg.tokens_per_video, question=asked)
    sentence = None
    if config.objective.get("kind", "paper") == "released":
        sentence = prompt_lib.answer_sentence(tokenizer, pair, asked)
    return TrainingPrompt(pair=pair, sentence=sentence, question=asked)
