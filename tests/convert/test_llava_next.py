"""The paper's released checkpoint (LLaVA-NeXT `llava_qwen` layout with a SlowFast projector):
imported, it computes what transformers' LLaVA-OneVision computes from the same weights
converted by transformers' own script; it is asked the authors' exact prompt; it exports
to a directory transformers loads whole; what it cannot run is refused by name.

Stand-ins are tiny and random (tests/convert/llava_qwen_reference.py cites the authors'
module names they use). Float32 with the highest matmul precision: outputs within 1e-4.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.convert import llava_qwen_reference as ref
from w2s_vqa import prompt
from w2s_vqa.convert import hf, llava_next

TOL = 1e-4
FRAMES, CHUNKS = 2, 8  # at least 8 motion chunks, as the authors' feature extractor pads them


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return ref.write_released(tmp_path_factory.mktemp("released"))


def released_prompt(directory, cfg) -> prompt.PairPrompt:
    return prompt.build_pair_prompt(prompt.load_tokenizer(directory), video_token_id=cfg.video_token_index,
                                    tokens_per_video=cfg.tokens_per_video, question=prompt.RELEASED_QUESTION)


def inputs(cfg, seed=0, batch=2):
    rng = np.random.default_rng(seed)
    size = cfg.vision.image_size
    pixels = rng.integers(0, 256, (batch, 2, cfg.num_frames, size, size, 3), dtype=np.uint8)
    motion = rng.normal(size=(batch, 2, cfg.num_motion_chunks, cfg.motion_dim)).astype(np.float32)
    return pixels, motion


def test_level_logits_equal_transformers_on_the_scripts_conversion(released, tmp_path):
    ours = hf.load_student(released, num_frames=FRAMES, num_motion_chunks=CHUNKS)
    cfg = ours.cfg
    assert (cfg.vision.num_hidden_layers, cfg.vision_feature_layer, cfg.text.vocab_size) == (2, -1, 512)
    model, projector = ref.transformers_reference(released, tmp_path / "transformers")
    assert model.config.text_config.vocab_size == 576  # 512 + <image>, <video>, padded to 64
    pp = released_prompt(released, cfg)
    pixels, motion = inputs(cfg)
    ids = np.repeat(pp.input_ids[None], 2, axis=0)
    theirs = ref.reference_logits(model, projector, ids, pixels, motion)
    mine = np.asarray(ours(jnp.asarray(ids), None, jnp.asarray(pixels), jnp.asarray(motion)))
    # Every real token's logit (the padding rows past 512 hold no token).
    assert np.max(np.abs(theirs[..., :512] - mine)) <= TOL
    levels = np.asarray(ours.level_logits(pp.level_token_ids, jnp.asarray(ids), None, jnp.asarray(pixels),
                                          jnp.asarray(motion)))
    assert np.max(np.abs(theirs[:, -1, list(pp.level_token_ids)] - levels)) <= TOL
    # The motion tokens matter: other motion features change the answer.
    other = ref.reference_logits(model, projector, ids, pixels, motion[:, :, ::-1].copy())
    assert np.max(np.abs(other[:, -1] - theirs[:, -1])) > 100 * TOL


def test_student_config_of_a_released_hf_dir_is_the_imported_ones(released):
    from w2s_vqa import config as config_lib
    from w2s_vqa.models import config as model_config

    run = config_lib.defaults()
    run.model.hf_dir = released
    run.data.num_frames, run.data.num_motion_chunks = FRAMES, CHUNKS
    cfg = model_config.student_config(run)
    assert cfg == hf.load_student(released, num_frames=FRAMES, num_motion_chunks=CHUNKS).cfg


# ----------------------------------------------------------------------------- the authors' prompt
IMAGE_TOKEN_INDEX = -200  # llava/constants.py


def authors_input_ids(tokenizer, system_message="You are a helpful assistant."):
    """infer_pair.py `preprocess_qwen` (clh124/W2S-VQA 2c7ca75, lines of `eval_model` and
    `preprocess_qwen`), as it runs for one pair: the user turn is `inp`, the assistant turn
    "The quality of the second video is"; each `<image>` becomes IMAGE_TOKEN_INDEX."""
    inp = ("Now you will receive two videos. The first video:\n <image><image>. The second video:\n "
           "<image><image>. Please watch these videos carefully, and then answer the following question: "
           "Comparing with the first video, how do you assess the quality of the second video?")
    # Qwen2's tokenizer under transformers 4.44: additional_special_tokens_ids = the chat markers
    # (transformers 5 no longer has that attribute).
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    nl_tokens = tokenizer("\n").input_ids
    _system = tokenizer("system").input_ids + nl_tokens
    input_id = [im_start] + _system + tokenizer(system_message).input_ids + [im_end] + nl_tokens
    # j == 0: the user turn, with images
    texts = inp.split("<image>")
    _input_id = tokenizer("<|im_start|>user").input_ids + nl_tokens
    for i, text in enumerate(texts):
        _input_id += tokenizer(text).input_ids
        if i < len(texts) - 1:
            _input_id += [IMAGE_TOKEN_INDEX]
    input_id += _input_id + [im_end] + nl_tokens
    # j == 1: the assistant turn, {"value": "The quality of the second video is"}
    input_id += (tokenizer("<|im_start|>assistant").input_ids + nl_tokens
                 + tokenizer("The quality of the second video is").input_ids + [im_end] + nl_tokens)
    return input_id


def expand(ids, frame_tokens: int, motion_tokens: int, placeholder: int):
    """llava_arch.py (video modality, one_token): the k-th IMAGE_TOKEN_INDEX takes the k-th entry of
    new_image_features, which per video is [frames + image_newline], then [its motion features]."""
    out, k = [], 0
    for token in ids:
        if token == IMAGE_TOKEN_INDEX:
            out += [placeholder] * (frame_tokens + 1 if k % 2 == 0 else motion_tokens)
            k += 1
        else:
            out.append(token)
    assert k == 4
    return out


def test_released_prompt_is_token_for_token_the_authors(released):
    from transformers import PreTrainedTokenizerFast

    from w2s_vqa.models import llava_qwen_config

    cfg = llava_qwen_config.student_config(json.load(open(f"{released}/config.json")), num_frames=3,
                                           num_motion_chunks=CHUNKS)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(released)
    theirs = expand(authors_input_ids(tokenizer), cfg.num_frames * cfg.tokens_per_frame, cfg.num_motion_chunks,
                    cfg.video_token_index)
    pp = released_prompt(released, cfg)
    after = tokenizer(prompt.RELEASED_AFTER_ANSWER).input_ids
    assert len(after) == 2
    assert pp.input_ids.tolist() + after == theirs
    # infer_pair.py reads `output_logits[:, -3]`: the last token of ours.
    assert len(theirs) - 3 == pp.length - 1
    assert tokenizer.convert_ids_to_tokens(int(pp.input_ids[-1])).endswith("is")
    # Their level ids are " superior", " better", ... of their tokenizer, as ours.
    assert pp.level_token_ids == tuple(tokenizer(" " + w).input_ids[0] for w in prompt.LEVELS)


def test_the_two_tokens_after_the_read_position_change_nothing_there(released):
    ours = hf.load_student(released, num_frames=FRAMES, num_motion_chunks=CHUNKS)
    pp = released_prompt(released, ours.cfg)
    tok = prompt.load_tokenizer(released)
    full = np.concatenate([pp.input_ids, tok.encode(prompt.RELEASED_AFTER_ANSWER, add_special_tokens=False).ids])
    pixels, motion = inputs(ours.cfg, batch=1)
    args = (None, jnp.asarray(pixels), jnp.asarray(motion))
    at_minus_3 = np.asarray(ours(jnp.asarray(full[None]), *args))[:, -3]
    at_last = np.asarray(ours(jnp.asarray(pp.input_ids[None]), *args))[:, -1]
    assert np.max(np.abs(at_minus_3 - at_last)) <= TOL


# ----------------------------------------------------------------------------- refusals
def _rewrite(directory, drop=(), add=None):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(f"{directory}/model.safetensors")
    tensors = {k: v for k, v in tensors.items() if k not in drop} | (add or {})
    save_file(tensors, f"{directory}/model.safetensors", metadata={"format": "pt"})


def test_missing_motion_projector_and_unknown_tensors_are_listed_in_one_error(tmp_path):
    directory = ref.write_released(tmp_path)
    _rewrite(directory, drop=("model.slowfast_projector.0.weight", "model.slowfast_projector.2.bias"),
             add={"model.mystery.weight": np.zeros((3,), np.float32)})
    with pytest.raises(hf.CheckpointError) as error:
        hf.load_student(directory, num_frames=FRAMES, num_motion_chunks=CHUNKS)
    message = str(error.value)
    assert "missing tensor model.slowfast_projector.0.weight" in message
    assert "missing tensor model.slowfast_projector.2.bias" in message
    assert "unexpected tensor model.mystery.weight" in message
    assert len(error.value.problems) == 3


def test_without_the_unused_slowfast_trunk_it_imports(tmp_path):
    directory = ref.write_released(tmp_path)
    _rewrite(directory, drop=[k for k in ref.released_tensors() if k.startswith("model.slowfast.")])
    hf.load_student(directory, num_frames=FRAMES, num_motion_chunks=CHUNKS)


def test_a_missing_language_model_tensor_is_named_as_stored(tmp_path):
    directory = ref.write_released(tmp_path)
    _rewrite(directory, drop=("model.layers.1.self_attn.k_proj.bias", "model.mm_projector.2.weight",
                              "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"))
    with pytest.raises(hf.CheckpointError) as error:
        hf.load_student(directory, num_frames=FRAMES, num_motion_chunks=CHUNKS)
    names = sorted(re.findall(r"missing tensor (\S+)", str(error.value)))
    assert names == ["model.layers.1.self_attn.k_proj.bias", "model.mm_projector.2.weight",
                     "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"]


@pytest.mark.parametrize("key, value", [("mm_patch_merge_type", "flat"), ("mm_newline_position", "grid"),
                                        ("mm_spatial_pool_mode", "average"), ("mm_projector_type", "linear"),
                                        ("mm_vision_select_layer", -1)])
def test_what_the_student_cannot_run_is_refused_by_name(tmp_path, key, value):
    directory = ref.write_released(tmp_path, **{key: value})
    with pytest.raises(hf.CheckpointError, match=f"config.json: {key}="):
        hf.load_student(directory, num_frames=FRAMES, num_motion_chunks=CHUNKS)


def test_key_table_follows_transformers_script():
    """Each family of the authors' names lands where the script's table puts it."""
    assert llava_next.transformers_name("model.vision_tower.vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight") \
        == "vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight"
    assert llava_next.transformers_name("model.layers.0.self_attn.q_proj.bias") \
        == "language_model.model.layers.0.self_attn.q_proj.bias"
    assert llava_next.transformers_name("model.mm_projector.2.weight") == "multi_modal_projector.linear_2.weight"
    assert llava_next.transformers_name("model.image_newline") == "image_newline"
    assert llava_next.transformers_name("lm_head.weight") == "language_model.lm_head.weight"
    for key in ref.released_tensors():
        ours = llava_next.transformers_name(key)
        theirs = key
        for old, new in ref.KEYS_TO_MODIFY_MAPPING.items():
            theirs = theirs.replace(old, new) if old in theirs else theirs
        assert ours == theirs


# ----------------------------------------------------------------------------- export to plain transformers
def test_import_export_loads_whole_in_transformers_and_scores_as_jax(released, tmp_path, capsys):
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    from w2s_vqa import cli
    from w2s_vqa.convert import anchor_scores, export_files
    from w2s_vqa.convert.torch_scorer import TorchScorer

    out = tmp_path / "export"
    assert cli.main(["export", "--hf", released, "--out", str(out), "--num-frames", str(FRAMES),
                     "--num-motion-chunks", str(CHUNKS)]) == 0
    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    settings = export_files.read_settings(out)
    assert settings["question"] == prompt.RELEASED_QUESTION
    assert (settings["num_frames"], settings["num_motion_chunks"], settings["motion_features"]) \
        == (FRAMES, CHUNKS, "precomputed")

    ours = hf.load_student(released, num_frames=FRAMES, num_motion_chunks=CHUNKS)
    scorer = TorchScorer(out)
    pp = released_prompt(released, ours.cfg)
    assert scorer.prompt.input_ids.tolist() == pp.input_ids.tolist()
    # The paper's five anchors and three test videos: every (first, second) pair through both.
    k, tests = 5, 3
    rng = np.random.default_rng(7)
    size = ours.cfg.vision.image_size
    videos = rng.integers(0, 256, (k + tests, FRAMES, size, size, 3), dtype=np.uint8)
    motion = rng.normal(size=(k + tests, CHUNKS, 256)).astype(np.float32)
    firsts, seconds = zip(*[(i, j) for i in range(k) for j in range(k + tests)])
    pixels = np.stack([videos[list(firsts)], videos[list(seconds)]], axis=1)
    moving = np.stack([motion[list(firsts)], motion[list(seconds)]], axis=1)
    ids = np.repeat(pp.input_ids[None], len(firsts), axis=0)
    mine = np.asarray(ours.level_logits(pp.level_token_ids, jnp.asarray(ids), None, jnp.asarray(pixels),
                                        jnp.asarray(moving))).reshape(k, k + tests, 5)
    with torch.no_grad():
        theirs = scorer.level_logits(pixels, moving).reshape(k, k + tests, 5)
    assert np.max(np.abs(mine - theirs)) <= TOL
    mos = np.array([39.56, 50.23, 60.62, 69.43, 78.03])  # the paper's anchors' MOS
    for mode in ("map", "paper"):
        for t in range(tests):
            a = anchor_scores.score(mine[:, :k], mine[:, k + t], mos, mode=mode)["score"]
            b = anchor_scores.score(theirs[:, :k], theirs[:, k + t], mos, mode=mode)["score"]
            assert abs(a - b) <= 1e-3  # the MOS scale (0-100 in paper mode)


def test_a_qwen2_sized_checkpoint_whose_tokenizer_misplaces_the_level_words_is_refused(tmp_path):
    """At Qwen2-7B's vocabulary the authors read rows 16353, 2664, 4428, 10960, 37179; the stand-in's
    tokenizer gives other ids, so at that size it is refused, naming the ids."""
    from w2s_vqa.convert.llava_next import AUTHORS_LEVEL_IDS, level_id_problems

    directory = ref.write_released(tmp_path)
    assert level_id_problems(directory, 512) == []
    (problem,) = level_id_problems(directory, 152064)
    assert str(AUTHORS_LEVEL_IDS) in problem and problem.startswith("tokenizer.json: the level words")


def test_the_pytorch_scorer_sends_the_authors_layout_to_export(released):
    from w2s_vqa.convert.torch_scorer import TorchScorer

    with pytest.raises(ValueError, match=r"llava_qwen layout, which transformers does not load; export it first"):
        TorchScorer(released)
