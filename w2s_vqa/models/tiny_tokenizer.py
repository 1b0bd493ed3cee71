"""The small byte-level BPE tokenizer that tiny configurations ship with.

Real checkpoints bring their own tokenizer.json; tiny random students need one
that speaks the same chat template and has each level word as a single token.
Built with the `tokenizers` library (the same byte-level BPE family as Qwen2's)
from the prompt texts; `python -m w2s_vqa.models.tiny_tokenizer` rebuilds the
shipped asset.
"""

from __future__ import annotations

import json
import os

from w2s_vqa import prompt

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny_tokenizer")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
VOCAB_SIZE = 512

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    lines = [prompt.chat_text()]
    lines += [prompt.ANSWER_TEMPLATE.format(level=w) for w in prompt.LEVELS]
    lines += [prompt.SYSTEM_PROMPT, prompt.QUESTION]
    # Enough repetitions that every word of the prompt becomes one merged token.
    return lines * 50


def build(out_dir: str = ASSET_DIR) -> str:
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 32768,
        "chat_template": QWEN_CHAT_TEMPLATE,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out_dir


if __name__ == "__main__":
    print(build())
