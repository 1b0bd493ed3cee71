"""The pair prompt and the readout: one definition of words, order and weights."""

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from w2s_vqa import prompt
from w2s_vqa.models import config as config_lib
from w2s_vqa.models.tiny_tokenizer import ASSET_DIR


def test_tiny_tokenizer_has_single_token_level_words_and_the_chat_tokens():
    tok = prompt.load_tokenizer(ASSET_DIR)
    ids = prompt.level_token_ids(tok)
    assert len(set(ids)) == 5
    assert [tok.decode([i]).strip() for i in ids] == list(prompt.LEVELS)
    assert tok.token_to_id("<video>") == config_lib.TINY_VIDEO_TOKEN
    assert tok.token_to_id("<image>") == config_lib.TINY_IMAGE_TOKEN
    assert tok.get_vocab_size() <= config_lib.preset("tiny").text.vocab_size


def test_pair_prompt_expands_each_video_and_ends_at_the_answer():
    tok = prompt.load_tokenizer(ASSET_DIR)
    pp = prompt.build_pair_prompt(tok, video_token_id=4, tokens_per_video=7)
    assert int((pp.input_ids == 4).sum()) == 14
    text = tok.decode([int(i) for i in pp.input_ids if i != 4], skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\nThe quality of the second video is")
    ids, mask = pp.padded(pp.length + 3)
    assert ids.shape == mask.shape == (pp.length + 3,) and mask.sum() == pp.length
    with pytest.raises(prompt.PromptError):
        pp.padded(pp.length - 1)


def test_level_word_split_into_pieces_is_a_clear_error():
    vocab = {"[UNK]": 0, "superior": 1, "better": 2, "similar": 3, "worse": 4}  # no "inferior"
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_tokens(["in", "ferior"])
    with pytest.raises(prompt.PromptError, match="inferior"):
        prompt.level_token_ids(tok)


def test_preference_weights_levels_by_alpha():
    sure = np.full((5, 5), -1e4)
    np.fill_diagonal(sure, 0.0)
    np.testing.assert_allclose(prompt.preference(sure), prompt.ALPHA, atol=1e-12)
    assert prompt.preference(np.zeros(5)) == pytest.approx(0.5)
    assert prompt.LEVELS[0] == "superior" and prompt.ALPHA[0] == 1.0


def test_mirror_is_an_involution_that_swaps_the_opposite_words():
    assert [prompt.MIRROR[prompt.MIRROR[k]] for k in range(5)] == list(range(5))
    mirrored = {prompt.LEVELS[k]: prompt.LEVELS[prompt.MIRROR[k]] for k in range(5)}
    assert mirrored == {"superior": "inferior", "better": "worse", "similar": "similar",
                        "worse": "better", "inferior": "superior"}


def test_directions_agree_with_the_words_the_mirror_and_the_readout():
    # The readout's weight says the direction: above 1/2 the second video is better.
    assert prompt.DIRECTION == tuple(int(np.sign(a - 0.5)) for a in prompt.ALPHA)
    assert prompt.SECOND_BETTER == (prompt.LEVEL_INDEX["superior"], prompt.LEVEL_INDEX["better"])
    assert prompt.SECOND_WORSE == (prompt.LEVEL_INDEX["worse"], prompt.LEVEL_INDEX["inferior"])
    for k in range(5):
        assert prompt.DIRECTION[prompt.MIRROR[k]] == -prompt.DIRECTION[k]
    # Reading a pair the other way round gives P(first better) = 1 - P(second better).
    logits = np.random.default_rng(0).normal(size=(6, 5))
    np.testing.assert_allclose(prompt.preference(logits[:, list(prompt.MIRROR)]), 1.0 - prompt.preference(logits),
                               rtol=1e-12)
