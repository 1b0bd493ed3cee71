"""The pair prompt, the five level words (their order, direction and mirror) and the preference readout.

One definition for the whole project: the data pipeline tokenizes with it, the
student reads its answer with it, the objective, the metrics and the labels use
its order, each level's direction (DIRECTION, SECOND_BETTER, SECOND_WORSE) and the
level of a swapped pair (MIRROR).
Text follows docs/method.md ("Student"): the Qwen chat template, the system prompt
"You are a helpful assistant.", and the answer "The quality of the second video
is {level} to the first video.". The student is asked for the next token after
"The quality of the second video is"; the logits of the five level tokens at
that position are its answer.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

# Label order everywhere: index 0 = the second video is much better.
LEVELS: tuple[str, ...] = ("superior", "better", "similar", "worse", "inferior")
# Weight of each level in P(second better than first).
ALPHA: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
LEVEL_INDEX = {word: i for i, word in enumerate(LEVELS)}
# Direction of each level, in LEVELS order: +1 the second video is better than the
# first, 0 similar, -1 worse.
DIRECTION: tuple[int, ...] = (1, 1, 0, -1, -1)
# Levels saying the second video is better (worse); "similar" is in neither.
SECOND_BETTER: tuple[int, ...] = tuple(k for k, sign in enumerate(DIRECTION) if sign > 0)
SECOND_WORSE: tuple[int, ...] = tuple(k for k, sign in enumerate(DIRECTION) if sign < 0)
# MIRROR[k]: the level of the pair (B, A) when (A, B) has level k; the word with the
# opposite direction and the same strength. An involution: MIRROR[MIRROR[k]] == k.
_MIRROR_WORD = {"superior": "inferior", "better": "worse", "similar": "similar",
                "worse": "better", "inferior": "superior"}
MIRROR: tuple[int, ...] = tuple(LEVEL_INDEX[_MIRROR_WORD[word]] for word in LEVELS)

SYSTEM_PROMPT = "You are a helpful assistant."
VIDEO_PLACEHOLDER = "<video>"
QUESTION = (
    "Now you will receive two videos. The first video: <video>. The second video: <video>. "
    "Please watch these videos carefully, and then answer the following question: "
    "Comparing with the first video, how do you assess the quality of the second video?"
)
ANSWER_PREFIX = "The quality of the second video is"
# The question the paper's released model was trained and is scored with (github.com/clh124/W2S-VQA,
# commit 2c7ca75, infer_pair.py `inp`). There each video is two `<image>` placeholders with no
# text between them, the first filled with its frame tokens and image newline, the second with
# its motion tokens: one run of our video tokens, so one <video> here. Their prompt goes on after
# the answer prefix with RELEASED_AFTER_ANSWER and reads the level logits at position -3, which
# is the last token of ours: under causal attention the two tokens after it change nothing there.
RELEASED_QUESTION = (
    "Now you will receive two videos. The first video:\n <video>. The second video:\n <video>. "
    "Please watch these videos carefully, and then answer the following question: "
    "Comparing with the first video, how do you assess the quality of the second video?"
)
RELEASED_AFTER_ANSWER = "<|im_end|>\n"
# Questions by name (config model.prompt, w2s_vqa.json "question").
QUESTIONS = {"w2s": QUESTION, "released": RELEASED_QUESTION}
ANSWER_TEMPLATE = "The quality of the second video is {level} to the first video."
VIDEOS_PER_PROMPT = 2


def chat_text(question: str = QUESTION, answer_prefix: str = ANSWER_PREFIX) -> str:
    """The Qwen chat rendering of the pair prompt, ending where the level word goes."""
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer_prefix}"
    )


class PromptError(ValueError):
    """The tokenizer cannot express the prompt as the readout needs it."""


@dataclasses.dataclass(frozen=True)
class PairPrompt:
    """Token ids of the pair prompt with each <video> expanded to its tokens.

    `input_ids` holds `tokens_per_video` copies of `video_token_id` per video;
    the student writes frame, newline and motion features there. The answer is
    read at the last position.
    """

    input_ids: np.ndarray  # [L] int32
    level_token_ids: tuple[int, ...]  # five ids, in LEVELS order
    video_token_id: int
    tokens_per_video: int
    pad_token_id: int

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    def padded(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), right-padded to `length`."""
        if length < self.length:
            raise PromptError(f"prompt has {self.length} tokens, more than the {length} asked for")
        ids = np.full((length,), self.pad_token_id, np.int32)
        ids[: self.length] = self.input_ids
        mask = np.zeros((length,), np.int32)
        mask[: self.length] = 1
        return ids, mask


def load_tokenizer(path: str | os.PathLike):
    """A `tokenizers.Tokenizer` from a directory holding tokenizer.json, or the file itself."""
    import tokenizers

    path = os.fspath(path)
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"{file}: no tokenizer.json (the student needs the checkpoint's fast tokenizer)")
    return tokenizers.Tokenizer.from_file(file)


def level_token_ids(tokenizer) -> tuple[int, ...]:
    """Ids of " superior", " better", ... ; each word must be exactly one token."""
    ids, problems = [], []
    for word in LEVELS:
        pieces = tokenizer.encode(" " + word, add_special_tokens=False).ids
        if len(pieces) != 1:
            problems.append(f"' {word}' -> {len(pieces)} tokens {pieces}")
        ids.append(pieces[0] if pieces else -1)
    if problems:
        raise PromptError("each level word must be a single token; " + "; ".join(problems))
    if len(set(ids)) != len(ids):
        raise PromptError(f"level words share token ids: {dict(zip(LEVELS, ids))}")
    return tuple(ids)


def pad_token_id(tokenizer) -> int:
    for name in ("<|endoftext|>", "<pad>", "<|im_end|>"):
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return int(token_id)
    return 0


def build_pair_prompt(tokenizer, *, video_token_id: int, tokens_per_video: int,
                      question: str = QUESTION) -> PairPrompt:
    """Tokenize the pair prompt; the text between placeholders is encoded piece by piece."""
    pieces = chat_text(question).split(VIDEO_PLACEHOLDER)
    if len(pieces) != VIDEOS_PER_PROMPT + 1:
        raise PromptError(f"the question must hold {VIDEOS_PER_PROMPT} '{VIDEO_PLACEHOLDER}' placeholders")
    ids: list[int] = []
    for i, text in enumerate(pieces):
        ids.extend(tokenizer.encode(text, add_special_tokens=False).ids)
        if i < VIDEOS_PER_PROMPT:
            ids.extend([video_token_id] * tokens_per_video)
    return PairPrompt(
        input_ids=np.asarray(ids, np.int32),
        level_token_ids=level_token_ids(tokenizer),
        video_token_id=int(video_token_id),
        tokens_per_video=int(tokens_per_video),
        pad_token_id=pad_token_id(tokenizer),
    )


@dataclasses.dataclass(frozen=True)
class AnswerSentence:
    """The tokens the released trainer's loss predicts for a pair prompt (objective.kind =
    "released"; train.objective.sentence_objective).

    The sequence is the prompt's `prompt_length` tokens, the pair's level token, then
    `suffix_ids` (" to the first video.<|im_end|>\n"): `length` tokens. The loss predicts
    the token at each of `target_positions` (indices into that sequence, each >= 1) from
    the position before it.
    """

    prompt_length: int
    suffix_ids: tuple[int, ...]
    target_positions: tuple[int, ...]

    @property
    def length(self) -> int:
        return self.prompt_length + 1 + len(self.suffix_ids)


def answer_sentence(tokenizer, pair: PairPrompt, question: str = QUESTION) -> AnswerSentence:
    """The answer sentence after `pair` (built by build_pair_prompt with `question`) and
    its targets, as the authors' trainer makes labels (github.com/clh124/W2S-VQA, commit
    2c7ca75, llava/train/train.py `preprocess_qwen`): every token of the assistant turn
    ("<|im_start|>assistant\n" + ANSWER_TEMPLATE + "<|im_end|>\n", their training answers'
    sentence, example.json), and wherever it stands the "\n", "<|im_start|>" and
    "<|im_end|>" tokens (their `unmask_tokens_idx` = [198, im_start, im_end]; 198 is
    Qwen2's "\n", read here from the tokenizer). Video tokens are never targets.

    Raises PromptError when the tokenizer lacks those tokens, when `pair` does not end with
    the question's answer prefix, or when the sentence tokenized whole differs from the
    prompt, the level token and the suffix tokenized apart (the loss would then train
    other tokens than the authors').
    """
    special = {name: tokenizer.token_to_id(name) for name in ("<|im_start|>", "<|im_end|>")}
    newline = tokenizer.encode("\n", add_special_tokens=False).ids
    if None in special.values() or len(newline) != 1:
        raise PromptError(f"the answer sentence's loss needs single tokens for '\\n' (got {newline}) and "
                          f"<|im_start|>, <|im_end|> (got {special})")
    tail = chat_text(question).split(VIDEO_PLACEHOLDER)[-1]
    tail_ids = tokenizer.encode(tail, add_special_tokens=False).ids
    ids = [int(t) for t in pair.input_ids]
    if ids[len(ids) - len(tail_ids):] != tail_ids:
        raise PromptError("the pair prompt does not end with the question's text and the answer prefix "
                          f"{ANSWER_PREFIX!r}: built with another question?")
    suffix_text = ANSWER_TEMPLATE.split("{level}")[1] + RELEASED_AFTER_ANSWER
    suffix = tokenizer.encode(suffix_text, add_special_tokens=False).ids
    for word, level_id in zip(LEVELS, pair.level_token_ids):
        whole = tokenizer.encode(tail + " " + word + suffix_text, add_special_tokens=False).ids
        if whole != tail_ids + [level_id] + suffix:
            raise PromptError(f"the answer sentence with {word!r} tokenizes differently whole ({whole[-12:]}) "
                              f"than in parts ({(tail_ids + [level_id] + suffix)[-12:]})")
    unmask = {newline[0], *special.values()}
    assistant = max(i for i, t in enumerate(ids) if t == special["<|im_start|>"])
    n = len(ids)
    positions = [t for t in range(1, n) if t >= assistant or ids[t] in unmask]
    positions += range(n, n + 1 + len(suffix))
    return AnswerSentence(prompt_length=n, suffix_ids=tuple(int(t) for t in suffix),
                          target_positions=tuple(positions))


def preference(level_logits, alpha: Sequence[float] = ALPHA):
    """P(second video better than first) = sum_k alpha_k softmax(level_logits)_k.

    Works on numpy or jax arrays of shape [..., 5].
    """
    if isinstance(level_logits, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    z = level_logits - level_logits.max(axis=-1, keepdims=True)
    q = xp.exp(z)
    q = q / q.sum(axis=-1, keepdims=True)
    return (q * xp.asarray(alpha, dtype=q.dtype)).sum(axis=-1)
