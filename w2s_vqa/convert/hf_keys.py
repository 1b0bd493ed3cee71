"""The Hugging Face key table: one table for import and export (w2s_vqa.convert.hf).

Each row of `RULES` pairs a transformers parameter name with ours and names the
transform between their layouts. Templates hold `{i}` (a layer index) and
`{name:a|b}` (one of the alternatives); the same row matches a key on either
side and formats its counterpart, so import and export cannot drift apart.

Our names are those of the unrolled student ("language_model.layers.3.mlp..."); a
student with scanned layers holds layer i of "language_model.layers.mlp..." at index
i of its leading axis (w2s_vqa.models.stack.layer_of / layer_key), which import and
export translate, so the files on disk are the same for either layout.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Transform:
    """Layout change from the transformers tensor to ours (`load`) and back (`save`)."""

    load: Callable[[Any], Any]
    save: Callable[[Any], Any]
    shape: Callable[[tuple], tuple]


IDENTITY = Transform(lambda x: x, lambda x: x, lambda s: tuple(s))
# torch Linear weight [out, in] <-> our kernel [in, out].
LINEAR = Transform(lambda x: x.T, lambda x: x.T, lambda s: tuple(s)[::-1])
# torch Conv2d weight [out, in, kh, kw] <-> our kernel [kh, kw, in, out].
CONV = Transform(lambda x: x.transpose(2, 3, 1, 0), lambda x: x.transpose(3, 2, 0, 1),
                 lambda s: (s[2], s[3], s[1], s[0]))

_V = "model.vision_tower"
_T = "model.language_model"
_VISION_LINEAR = "self_attn.q_proj|self_attn.k_proj|self_attn.v_proj|self_attn.out_proj|mlp.fc1|mlp.fc2"
_TEXT_LINEAR = ("self_attn.q_proj|self_attn.k_proj|self_attn.v_proj|self_attn.o_proj|"
                "mlp.gate_proj|mlp.up_proj|mlp.down_proj")

# (transformers name, our name, transform). One table for import and export.
RULES: tuple[tuple[str, str, Transform], ...] = (
    (f"{_V}.embeddings.patch_embedding.weight", "vision_tower.embeddings.patch_embedding.kernel", CONV),
    (f"{_V}.embeddings.patch_embedding.bias", "vision_tower.embeddings.patch_embedding.bias", IDENTITY),
    (f"{_V}.embeddings.position_embedding.weight", "vision_tower.embeddings.position_embedding", IDENTITY),
    (f"{_V}.encoder.layers.{{i}}.{{m:{_VISION_LINEAR}}}.weight", "vision_tower.layers.{i}.{m}.kernel", LINEAR),
    (f"{_V}.encoder.layers.{{i}}.{{m:{_VISION_LINEAR}}}.bias", "vision_tower.layers.{i}.{m}.bias", IDENTITY),
    (f"{_V}.encoder.layers.{{i}}.{{n:layer_norm1|layer_norm2}}.weight", "vision_tower.layers.{i}.{n}.scale", IDENTITY),
    (f"{_V}.encoder.layers.{{i}}.{{n:layer_norm1|layer_norm2}}.bias", "vision_tower.layers.{i}.{n}.bias", IDENTITY),
    (f"{_V}.post_layernorm.weight", "vision_tower.post_layernorm.scale", IDENTITY),
    (f"{_V}.post_layernorm.bias", "vision_tower.post_layernorm.bias", IDENTITY),
    ("model.multi_modal_projector.{l:linear_1|linear_2}.weight", "multi_modal_projector.{l}.kernel", LINEAR),
    ("model.multi_modal_projector.{l:linear_1|linear_2}.bias", "multi_modal_projector.{l}.bias", IDENTITY),
    ("model.image_newline", "image_newline", IDENTITY),
    (f"{_T}.embed_tokens.weight", "language_model.embed_tokens.embedding", IDENTITY),
    (f"{_T}.layers.{{i}}.{{m:{_TEXT_LINEAR}}}.weight", "language_model.layers.{i}.{m}.kernel", LINEAR),
    (f"{_T}.layers.{{i}}.{{m:self_attn.q_proj|self_attn.k_proj|self_attn.v_proj}}.bias",
     "language_model.layers.{i}.{m}.bias", IDENTITY),
    (f"{_T}.layers.{{i}}.{{n:input_layernorm|post_attention_layernorm}}.weight",
     "language_model.layers.{i}.{n}.scale", IDENTITY),
    (f"{_T}.norm.weight", "language_model.norm.scale", IDENTITY),
    ("lm_head.weight", "lm_head.kernel", LINEAR),
)

# The motion projector lives in its own file, named like the multimodal projector.
MOTION_RULES: tuple[tuple[str, str, Transform], ...] = (
    ("{l:linear_1|linear_2}.weight", "motion_projector.{l}.kernel", LINEAR),
    ("{l:linear_1|linear_2}.bias", "motion_projector.{l}.bias", IDENTITY),
)

# The table speaks transformers' in-memory names (`model.state_dict()`). On disk,
# transformers 5 writes the older layout that the public hub checkpoints use,
# except that the hub's SigLIP keys still hold `vision_model.`; both load here.
# Export writes what transformers' own save_pretrained writes.
DISK_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
)
HUB_PREFIXES = (("vision_tower.vision_model.", "model.vision_tower."),
                ("model.vision_tower.vision_model.", "model.vision_tower."))


_FIELD = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _template_regex(template: str, alternatives: dict[str, str]) -> re.Pattern:
    """`{i}` matches a layer index; `{name}` one of the alternatives given for it (on either side)."""
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        name = m.group(1)
        choices = alternatives.get(name)
        body = r"\d+" if choices is None else "|".join(re.escape(a) for a in choices.split("|"))
        out.append(f"(?P<{name}>{body})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


def _template_format(template: str, groups: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: groups[m.group(1)], template)


class KeyMap:
    """Matches names on one side of a rules table and gives the other side's name."""

    def __init__(self, rules):
        self.rules = []
        for hf_template, our_template, transform in rules:
            alternatives = {m.group(1): m.group(2) for t in (hf_template, our_template)
                            for m in _FIELD.finditer(t) if m.group(2)}
            self.rules.append((_template_regex(hf_template, alternatives), hf_template,
                               _template_regex(our_template, alternatives), our_template, transform))

    def to_ours(self, hf_key: str) -> tuple[str, Transform] | None:
        for hf_re, _, _, ours, transform in self.rules:
            if m := hf_re.match(hf_key):
                return _template_format(ours, m.groupdict()), transform
        return None

    def to_hf(self, our_key: str) -> tuple[str, Transform] | None:
        for _, hf_template, our_re, _, transform in self.rules:
            if m := our_re.match(our_key):
                return _template_format(hf_template, m.groupdict()), transform
        return None


MODEL_KEYS = KeyMap(RULES)
MOTION_KEYS = KeyMap(MOTION_RULES)


def _swap_prefix(key: str, pairs) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def canonical_name(disk_key: str) -> str:
    """The in-memory transformers name of a tensor name found on disk (any layout)."""
    for old, new in HUB_PREFIXES:
        if disk_key.startswith(old):
            return new + disk_key[len(old):]
    if disk_key.startswith(("model.", "lm_head.")):
        return disk_key
    return _swap_prefix(disk_key, [(d, m) for m, d in DISK_PREFIXES])


def disk_name(canonical: str) -> str:
    return _swap_prefix(canonical, DISK_PREFIXES)
