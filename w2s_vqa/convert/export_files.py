"""What an export directory holds beside the weights, readable without JAX.

    config.json                      LLaVA-OneVision (models.config.StudentConfig.to_hf_config)
    model.safetensors (or shards)    transformers' tensor names (convert/hf.py)
    motion_projector.safetensors     our motion projector, torch layout
    tokenizer files                  copied from the source
    preprocessor_config.json         LLaVA-OneVision image processor settings
    video_preprocessor_config.json   LLaVA-OneVision video processor settings
    processor_config.json            LlavaOnevisionProcessor (tokens per image, video token)
    chat_template.jinja              a chat template that renders the pair prompt
    w2s_vqa.json                     ours: prompt, levels, and how a video file becomes the
                                     student's inputs (`input_settings`)

So `transformers.AutoProcessor.from_pretrained(DIR)` gives a LLaVA-OneVision processor
whose video processor resizes to the tower's size and normalizes as SigLIP does, and
whose chat template renders our pair prompt from ordinary chat messages. What it cannot
know is ours: frames are sampled by our rule (1 fps, mid-second, spread uniformly over
long clips; `w2s_vqa.video.sample_frames`) rather than transformers' frame sampling,
which is therefore off (`do_sample_frames: false`), and each video's tokens are followed
by its motion tokens. `w2s_vqa.json` records both, and `convert.torch_scorer.TorchScorer`
applies them to video files.

This module imports neither JAX nor transformers: export writes these files without
PyTorch, and the PyTorch scorer reads them without JAX.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from w2s_vqa import prompt
from w2s_vqa.models.config import HF_CONFIG_FILE, PIXEL_MEAN, PIXEL_STD, StudentConfig
from w2s_vqa.store.settings import Settings

CONFIG_FILE = HF_CONFIG_FILE
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
MOTION_FILE = "motion_projector.safetensors"
SETTINGS_FILE = "w2s_vqa.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
PROCESSOR_FILES = (IMAGE_PROCESSOR_FILE, VIDEO_PROCESSOR_FILE, PROCESSOR_FILE, CHAT_TEMPLATE_FILE)

def chat_template(image_token: str = "<image>", video_token: str = "<video>") -> str:
    """The Qwen chat format (jinja, as transformers renders chat templates), a message's
    content either text or a list of parts rendered in order ({"type": "text", "text": ...},
    {"type": "video"} -> `video_token`, {"type": "image"} -> `image_token`), so the pair
    prompt's two videos sit inside the question where prompt.QUESTION puts them. With
    `continue_final_message=True` and an assistant message holding prompt.ANSWER_PREFIX
    (`pair_messages`) it ends where the student reads its answer: prompt.chat_text()."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'text' %}{{ part['text'] }}"
        f"{{% elif part['type'] == 'video' %}}{{{{ '{video_token}' }}}}"
        f"{{% elif part['type'] == 'image' %}}{{{{ '{image_token}' }}}}"
        "{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


# transformers' PILImageResampling.BICUBIC: the filter w2s_vqa.video resizes with.
BICUBIC = 3
SAMPLE_FPS = 1.0
FRAME_SAMPLING = (
    "w2s_vqa.video.sample_frames: frames upright (display rotation applied) at sample_fps; with "
    "frame_times 'centered', at (k + 0.5) / sample_fps seconds from the first frame (with 'released', "
    "frame index k * round(fps / sample_fps) from frame 0, thinned uniformly past num_frames); a clip longer than num_frames / sample_fps "
    "seconds has its num_frames times spread uniformly over its duration, (k + 0.5) * duration / "
    "num_frames; a shorter one fills the first slots and masks the rest; the frame on screen at each "
    "time is taken; PIL bicubic resize to image_size x image_size, aspect not kept")
MOTION_RULE = {
    "none": "no motion: zeros, every motion slot masked",
    "frame_stats": ("w2s_vqa.video.motion.frame_statistics over the clip decoded with its longer side at most "
                    "distort_max_side pixels (0: native) and its first distort_max_seconds seconds (0: all); "
                    "one-second chunks chosen by w2s_vqa.video.chunk_choice"),
    "precomputed": ("the video's own per-second features [seconds, motion_dim] (e.g. SlowFast-R50), rows "
                    "chosen by w2s_vqa.video.chunk_choice; the user supplies them"),
}


def input_settings(cfg: StudentConfig, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What w2s_vqa.json records to rebuild the student's inputs from a video file: the
    student's store.settings.Settings (`to_json`) and the rules in words.

    cfg gives the shapes (frames, image size, motion chunks and size); `data` (a run
    config's `data` section, a Settings, or a mapping with data.* keys) the rest: the
    motion feature kind, how the store kept frames (frame_format, jpeg_quality: the
    student learnt from JPEG-decoded frames when "jpeg") and the decoding caps
    (distort_max_side, distort_max_seconds), each defaulting to
    w2s_vqa.config.defaults().data's. Keys: Settings' fields and sample_fps,
    frame_sampling (the rule, in words), pixel_mean, pixel_std, motion_rule
    (convert.video_inputs reads them). Raises ValueError for a motion feature kind a
    video file cannot be turned into here (MOTION_RULE's are).
    """
    from w2s_vqa import config as config_lib

    defaults = Settings.from_config(config_lib.defaults())
    given = Settings.from_json({k: data[k] for k in data.keys()} if data is not None else None)
    settings = Settings.from_student(cfg).merged(given).merged(defaults)
    kind = settings.motion_features
    if kind not in MOTION_RULE:
        raise ValueError(f"data.motion_features={kind!r}: expected one of {sorted(MOTION_RULE)}")
    return {**settings.to_json(), "sample_fps": SAMPLE_FPS, "frame_sampling": FRAME_SAMPLING,
            "pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD, "motion_rule": MOTION_RULE[kind]}


def data_of_settings(settings: Mapping[str, Any]) -> Settings:
    """The Settings a w2s_vqa.json records (older exports' decode_max_* names included),
    to write the same settings again; nothing recorded for a directory without them."""
    return Settings.from_json(settings)


def processor_files(cfg: StudentConfig, tokenizer) -> dict[str, str]:
    """{file name: text} of the processor files, for a `tokenizers.Tokenizer` holding the
    image and video tokens at cfg's ids.

    preprocessor_config.json: transformers' LlavaOnevisionImageProcessor at the tower's
    size, SigLIP's mean and std, bicubic, and "anyres" grid points in multiples of the
    size up to 6 x 6 (the public checkpoints' 384..2304). video_preprocessor_config.json:
    LlavaOnevisionVideoProcessor with the same size and normalization and
    do_sample_frames false (module docstring). processor_config.json: patches per image
    (`num_image_tokens`), the feature strategy and the token strings. Raises ValueError
    when the tokenizer has no token at the image or video token id.
    """
    size = cfg.vision.image_size
    tokens = {}
    for name, token_id in (("image_token", cfg.image_token_index), ("video_token", cfg.video_token_index)):
        text = tokenizer.id_to_token(token_id)
        if text is None:
            raise ValueError(f"the tokenizer has no token with id {token_id} (config {name}_index)")
        tokens[name] = text
    normalization = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                     "image_mean": [PIXEL_MEAN] * 3, "image_std": [PIXEL_STD] * 3}
    image = {"image_processor_type": "LlavaOnevisionImageProcessor", "processor_class": "LlavaOnevisionProcessor",
             "do_convert_rgb": True, "do_resize": True, "size": {"height": size, "width": size},
             "resample": BICUBIC, **normalization, "do_pad": True,
             "image_grid_pinpoints": [[size * i, size * j] for i in range(1, 7) for j in range(1, 7)]}
    video = {"video_processor_type": "LlavaOnevisionVideoProcessor", "processor_class": "LlavaOnevisionProcessor",
             "do_convert_rgb": True, "do_resize": True, "size": {"height": size, "width": size},
             "resample": BICUBIC, **normalization, "do_sample_frames": False}
    processor = {"processor_class": "LlavaOnevisionProcessor", "num_image_tokens": cfg.vision.num_patches,
                 "vision_feature_select_strategy": cfg.vision_feature_select_strategy, **tokens}
    return {IMAGE_PROCESSOR_FILE: json.dumps(image, indent=2), VIDEO_PROCESSOR_FILE: json.dumps(video, indent=2),
            PROCESSOR_FILE: json.dumps(processor, indent=2),
            CHAT_TEMPLATE_FILE: chat_template(tokens["image_token"], tokens["video_token"])}


def pair_messages(question: str = prompt.QUESTION) -> list[dict]:
    """The pair prompt as chat messages for the processor's chat template: the system prompt,
    the question with its two videos as parts, and the answer's start. Rendered with
    `continue_final_message=True` it is prompt.chat_text()."""
    pieces = question.split(prompt.VIDEO_PLACEHOLDER)
    parts: list[dict] = []
    for i, text in enumerate(pieces):
        if text:
            parts.append({"type": "text", "text": text})
        if i < len(pieces) - 1:
            parts.append({"type": "video"})
    return [{"role": "system", "content": prompt.SYSTEM_PROMPT}, {"role": "user", "content": parts},
            {"role": "assistant", "content": prompt.ANSWER_PREFIX}]


def read_settings(hf_dir: str) -> dict:
    """w2s_vqa.json of a directory as a dict; {} when there is none (a plain Hugging Face
    checkpoint). Raises ValueError naming the file when it is not a JSON object."""
    path = os.path.join(os.fspath(hf_dir), SETTINGS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            settings = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(settings).__name__}")
    return settings


def prompt_question(model_dir: str | None, choice: str = "") -> str:
    """The pair prompt's question for the model in `model_dir` (a Hugging Face or export
    directory, or None): `choice` when set ("w2s" or "released", prompt.QUESTIONS; config
    model.prompt); else the directory's w2s_vqa.json "question"; else the authors' question
    (prompt.RELEASED_QUESTION) for their released LLaVA-NeXT layout; else prompt.QUESTION.
    Raises ValueError for an unknown `choice`."""
    from w2s_vqa.models import llava_qwen_config

    if choice:
        if choice not in prompt.QUESTIONS:
            raise ValueError(f"model.prompt={choice!r}: choose one of {sorted(prompt.QUESTIONS)} or '' (the model's)")
        return prompt.QUESTIONS[choice]
    if not model_dir:
        return prompt.QUESTION
    settings = read_settings(model_dir)
    if "question" in settings:
        return str(settings["question"])
    path = os.path.join(os.fspath(model_dir), CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            if llava_qwen_config.is_llava_qwen(json.load(f)):
                return prompt.RELEASED_QUESTION
    return prompt.QUESTION

