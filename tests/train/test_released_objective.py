"""objective.kind = "released": the authors' released trainer's loss, the language model's
token cross-entropy over the answer sentence, against their label rule and torch's
cross-entropy; gradients, the refused values, and a training run with it."""

import jax
import numpy as np
import pytest
import torch

from tests.train.conftest import train_config
from w2s_vqa import prompt as prompt_lib
from w2s_vqa.config import ConfigError, load_config
from w2s_vqa.models import config as model_config
from w2s_vqa.models import student as student_lib
from w2s_vqa.train import loop
from w2s_vqa.train import objective as objective_lib
from w2s_vqa.train import step as step_lib
from w2s_vqa.train.logging import read_metrics

IGNORE_INDEX = -100  # llava.constants.IGNORE_INDEX
# The authors' chat template (github.com/clh124/W2S-VQA, commit 2c7ca75, llava/train/train.py
# preprocess_qwen, line 586).
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")


def authors_ids_and_labels(question: str, level: str, tokens_per_video: int):
    """input_ids and labels of one pair as the authors' preprocess_qwen makes them (2c7ca75,
    llava/train/train.py lines 568-641), rewritten with transformers' tokenizer and
    apply_chat_template: the system turn and the user turn ignored, the assistant turn all
    targets, then [198 ("\\n"), <|im_start|>, <|im_end|>] unmasked wherever they stand. Their
    <image> placeholder becomes IMAGE_TOKEN_INDEX and its features get IGNORE_INDEX labels
    (llava_arch.py prepare_inputs_labels_for_multimodal); here the placeholder is our
    <video>, expanded to tokens_per_video copies of its id."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_config.TINY_TOKENIZER}/tokenizer.json")
    tok.add_tokens(["<video>"], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    video = tok.convert_tokens_to_ids("<video>")
    # Their `tokenizer.additional_special_tokens_ids`: Qwen2's are these two (transformers 5
    # names the attribute otherwise).
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    newline = tok("\n").input_ids  # 198 in Qwen2's vocabulary
    assert len(newline) == 1
    unmask = [newline[0], im_start, im_end]

    def encode(role, content):
        return list(tok.apply_chat_template([{"role": role, "content": content}], tokenize=True, return_dict=False))

    input_id = encode("system", prompt_lib.SYSTEM_PROMPT)
    target = [IGNORE_INDEX] * len(input_id)
    user = encode("user", question)
    input_id += user
    target += [IGNORE_INDEX] * len(user)
    answer = encode("assistant", prompt_lib.ANSWER_TEMPLATE.format(level=level))
    input_id += answer
    target += answer
    target = [i if i in unmask else t for i, t in zip(input_id, target)]
    ids, labels = [], []
    for i, t in zip(input_id, target):
        count = tokens_per_video if i == video else 1
        ids += [i] * count
        labels += [IGNORE_INDEX if i == video else t] * count
    return np.asarray(ids), np.asarray(labels)


def tiny(question: str = prompt_lib.QUESTION, *overrides):
    config = load_config(None, ["objective.kind='released'", "mesh.shape=(1,1,1)", "mesh.num_devices=1",
                                "data.batch_size=3", *overrides])
    cfg = model_config.student_config(config)
    tok = prompt_lib.load_tokenizer(model_config.tokenizer_dir(config))
    pair = prompt_lib.build_pair_prompt(tok, video_token_id=cfg.video_token_index,
                                        tokens_per_video=cfg.tokens_per_video, question=question)
    return config, cfg, pair, prompt_lib.answer_sentence(tok, pair, question)


def random_batch(cfg, pair, labels, weights, seed=0, pad=5):
    rng = np.random.default_rng(seed)
    b, f, m = len(labels), cfg.num_frames, cfg.num_motion_chunks
    ids, mask = pair.padded(pair.length + pad)  # right padding, as the pipeline pads
    frame_mask = np.ones((b, 2, f), bool)
    frame_mask[1, 0, -1] = False  # a masked frame slot: hidden, as in a short clip
    return {
        "input_ids": np.tile(ids, (b, 1)), "attention_mask": np.tile(mask, (b, 1)),
        "pixel_values": rng.integers(0, 256, (b, 2, f, cfg.vision.image_size, cfg.vision.image_size, 3), np.uint8),
        "frame_mask": frame_mask,
        "motion": rng.normal(size=(b, 2, m, cfg.motion_dim)).astype(np.float32),
        "motion_mask": np.ones((b, 2, m), bool),
        "label": np.asarray(labels, np.int32), "weight": np.asarray(weights, np.float32),
        "origin": np.zeros((b,), np.int32), "target": np.zeros((b, 5), np.float32),
    }


@pytest.mark.parametrize("question", [prompt_lib.QUESTION, prompt_lib.RELEASED_QUESTION])
def test_the_released_loss_is_the_authors_labels_under_torch_cross_entropy(question):
    config, cfg, pair, sentence = tiny(question)
    model = student_lib.create(cfg, seed=0)
    labels, weights = [0, 3, 2], [1.0, 0.5, 2.0]
    batch = random_batch(cfg, pair, labels, weights)
    token_logits, targets, level_logits = step_lib.sentence_logits(model, batch, pair.level_token_ids, sentence)
    loss, aux = objective_lib.sentence_objective(token_logits, targets, level_logits, batch)

    # Reference: each pair's sequence and labels from the authors' rule, the model's full
    # vocabulary logits over it, and the loss of transformers 4.44's Qwen2ForCausalLM.forward
    # (shift by one, torch cross_entropy, mean over the labels that are not IGNORE_INDEX),
    # then the pairs' weighted mean (their per-device batch is one pair).
    per_pair = []
    for b, label in enumerate(labels):
        ids, want = authors_ids_and_labels(question, prompt_lib.LEVELS[label], cfg.tokens_per_video)
        one = {k: v[b:b + 1] for k, v in batch.items()}
        logits = model(ids[None].astype(np.int32), np.ones((1, len(ids)), np.int32), one["pixel_values"],
                       one["motion"], one["frame_mask"], one["motion_mask"])
        logits = torch.from_numpy(np.array(logits, np.float32)[0])  # a writable copy
        per_pair.append(torch.nn.functional.cross_entropy(logits[:-1], torch.from_numpy(want[1:]),
                                                          ignore_index=IGNORE_INDEX).item())
        # The same tokens and the same targets as ours.
        assert len(ids) == sentence.length
        # (Position 0 has no token before it: the shift drops its label.)
        np.testing.assert_array_equal(np.flatnonzero(want[1:] != IGNORE_INDEX) + 1, sentence.target_positions)
        np.testing.assert_array_equal(want[list(sentence.target_positions)], np.asarray(targets)[b])
    reference = np.dot(per_pair, weights) / np.sum(weights)
    # float32 logits summed in another order by torch: agreement to 1e-5 relative.
    np.testing.assert_allclose(float(loss), reference, rtol=1e-5)
    np.testing.assert_allclose(float(aux["sentence_ce"]), reference, rtol=1e-5)
    # The level logits read at the answer position are the readout's on the prompt alone.
    want_levels = model.level_logits(pair.level_token_ids, **{k: batch[k] for k in step_lib.MODEL_INPUTS})
    np.testing.assert_allclose(np.asarray(level_logits), np.asarray(want_levels), rtol=1e-4, atol=1e-5)
    assert float(aux["lambda"]) == 0.0


def test_a_released_step_sends_gradients_to_the_tower_and_projectors():
    config, cfg, pair, sentence = tiny()
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1])
    ts = step_lib.build_train_step(config, mesh, pair.level_token_ids, sentence)
    codec = ts.layout.codec
    params = codec.to_dict(student_lib.create(cfg, seed=0))
    batch = random_batch(cfg, pair, [1, 4, 0], [1.0, 1.0, 0.0])

    def loss_of(p):
        model = codec.merge(p)
        return objective_lib.sentence_objective(*step_lib.sentence_logits(model, batch, pair.level_token_ids,
                                                                          sentence), batch)[0]

    grads = jax.grad(loss_of)(params)
    for part in ("vision_tower", "multi_modal_projector", "motion_projector", "image_newline", "language_model",
                 "lm_head"):
        norm = sum(float(np.sum(np.square(np.asarray(g)))) for k, g in grads.items() if k.startswith(part))
        assert np.isfinite(norm) and norm > 0, part
    state, metrics = ts.step(ts.layout.init_state(params), batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    # Without the sentence the released step cannot be built.
    with pytest.raises(ValueError, match="released"):
        step_lib.build_train_step(config, mesh, pair.level_token_ids)


def test_unknown_objective_kinds_and_soft_targets_with_the_released_loss_are_refused():
    with pytest.raises(ConfigError, match="objective.kind='sentence'"):
        objective_lib.ObjectiveConfig.from_config(load_config(None, ["objective.kind='sentence'"]))
    with pytest.raises(ConfigError, match="objective.soft_targets"):
        objective_lib.ObjectiveConfig.from_config(load_config(None, ["objective.kind='released'",
                                                                     "objective.soft_targets=True"]))
    # A config saved before the key trains with the paper's loss.
    old = load_config(None, [])
    del old.objective["kind"]
    assert objective_lib.ObjectiveConfig.from_config(old).kind == "paper"


def test_the_answer_sentence_refuses_a_prompt_of_another_question():
    config, cfg, pair, _ = tiny(prompt_lib.QUESTION)
    tok = prompt_lib.load_tokenizer(model_config.tokenizer_dir(config))
    with pytest.raises(prompt_lib.PromptError, match="another question"):
        prompt_lib.answer_sentence(tok, pair, prompt_lib.QUESTION.replace("assess", "rate"))


def test_training_with_the_released_loss_runs_and_lowers_it(pool, tmp_path):
    config = train_config(pool, "train.num_steps=4", "mesh.shape=(1,1,1)", "mesh.num_devices=1",
                          "objective.kind='released'", "optim.learning_rate=3e-3")
    trainer = loop.Trainer(config, tmp_path / "run")
    assert trainer.train_step.obj_cfg.kind == "released"
    info = trainer.run()
    rows = [r for r in read_metrics(tmp_path / "run") if "sentence_ce" in r]
    assert info.steps == 4 and len(rows) == 4
    losses = np.array([r["loss"] for r in rows])
    assert np.all(np.isfinite(losses)) and all(r["lambda"] == 0 for r in rows)
    np.testing.assert_allclose(losses, [r["sentence_ce"] for r in rows], rtol=1e-6)
    # The answer sentence is mostly fixed text: a few steps learn it.
    assert losses[-1] < losses[0]
