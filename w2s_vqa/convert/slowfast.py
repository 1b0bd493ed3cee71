"""pytorchvideo SlowFast-R50 checkpoints -> the fast pathway's weights file (safetensors).

The input is a checkpoint the user has (nothing is downloaded): pytorchvideo's
`SLOWFAST_8x8_R50.pyth` layout, a dict whose "model_state" holds the state dict
of `create_slowfast(model_depth=50)`, or that state dict itself. The output is
the file w2s_vqa.models.slowfast.load reads: the fast pathway's tensors under
our names, convolution kernels in channels-last DHWIO layout, BatchNorm
tensors unchanged (they are folded when the file is loaded).

`RULES` is the one key-mapping table (the templates of w2s_vqa.convert.hf_keys.KeyMap:
`{i}` an index, `{name:a|b}` one of the alternatives): it converts a checkpoint
(`fast_pathway_tensors`) and gives back pytorchvideo's names (`to_pytorchvideo`).
The slow pathway, the lateral (fast -> slow) connections, the classification
head and BatchNorm's `num_batches_tracked` counters are known and skipped
(`UNUSED`): the 256-d feature never reads them (w2s_vqa.models.slowfast).
Every missing, unexpected or mis-shaped tensor is reported in one error.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from typing import Any, Mapping

import numpy as np

from w2s_vqa import workdir as workdir_lib
from w2s_vqa.convert.hf_keys import IDENTITY, KeyMap, Transform
from w2s_vqa.models import slowfast
from w2s_vqa.models.slowfast import WeightsError

_log = logging.getLogger(__name__)

# torch Conv3d weight [out, in, kt, kh, kw] <-> our kernel [kt, kh, kw, in, out].
CONV3D = Transform(lambda x: x.transpose(2, 3, 4, 1, 0), lambda x: x.transpose(4, 3, 0, 1, 2),
                   lambda s: (s[2], s[3], s[4], s[1], s[0]))

_FAST = "blocks.{s}.multipathway_blocks.1.res_blocks.{i}"
_NORM = "{n:weight|bias|running_mean|running_var}"

# (pytorchvideo name, our name, transform). pytorchvideo's blocks[0] is the stem,
# blocks[1..4] the residual stages (stage1..stage4 here); pathway 1 is the fast one.
RULES: tuple[tuple[str, str, Transform], ...] = (
    ("blocks.0.multipathway_blocks.1.conv.weight", "stem.kernel", CONV3D),
    (f"blocks.0.multipathway_blocks.1.norm.{_NORM}", "stem.norm.{n}", IDENTITY),
    (f"{_FAST}.branch1_conv.weight", "stage{s}.{i}.shortcut.kernel", CONV3D),
    (f"{_FAST}.branch1_norm.{_NORM}", "stage{s}.{i}.shortcut.norm.{n}", IDENTITY),
    (f"{_FAST}.branch2.conv_{{c:a|b|c}}.weight", "stage{s}.{i}.conv_{c}.kernel", CONV3D),
    (f"{_FAST}.branch2.norm_{{c:a|b|c}}.{_NORM}", "stage{s}.{i}.conv_{c}.norm.{n}", IDENTITY),
)
KEYS = KeyMap(RULES)

# Tensors of the checkpoint the fast-pathway feature never reads: (pattern, what they are).
UNUSED: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"blocks\.\d+\.multipathway_blocks\.0\."), "slow pathway"),
    (re.compile(r"blocks\.\d+\.multipathway_fusion\."), "fast-to-slow lateral connections"),
    (re.compile(r"blocks\.6\.proj\.(weight|bias)\Z"), "classification head"),
    (re.compile(r"\.num_batches_tracked\Z"), "BatchNorm step counters"),
)
STATE_KEY = "model_state"


def _unused(key: str) -> str | None:
    return next((what for pattern, what in UNUSED if pattern.search(key)), None)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def fast_pathway_tensors(state: Mapping[str, Any], source: str = "state dict") -> dict[str, np.ndarray]:
    """pytorchvideo state dict (torch tensors or arrays) -> {our name: float32 array in our layout}.

    Raises WeightsError (naming `source`) listing every tensor that no rule and no
    UNUSED pattern knows, that maps to a name the fast pathway lacks, or whose
    shape differs from SlowFast-R50's, and every fast-pathway tensor missing.
    """
    wanted = slowfast.expected_tensors()
    tensors: dict[str, np.ndarray] = {}
    seen, problems, skipped = set(), [], {}
    for key, value in state.items():
        what = _unused(key)
        if what is not None:
            skipped[what] = skipped.get(what, 0) + 1
            continue
        mapped = KEYS.to_ours(key)
        if mapped is None:
            problems.append(f"unexpected tensor {key}")
            continue
        name, transform = mapped
        if name not in wanted:
            problems.append(f"unexpected tensor {key} (maps to {name}, which SlowFast-R50's fast pathway lacks)")
            continue
        seen.add(name)
        array = _numpy(value)
        if transform.shape(array.shape) != wanted[name]:
            expected = transform.save(np.empty(wanted[name], np.bool_)).shape
            problems.append(f"mis-shaped tensor {key}: {list(array.shape)}, expected {list(expected)}")
            continue
        tensors[name] = np.ascontiguousarray(transform.load(array).astype(np.float32))
    for name in wanted:
        if name not in seen:
            problems.append(f"missing tensor {KEYS.to_hf(name)[0]} (ours: {name})")
    if problems:
        raise WeightsError(source, problems)
    if skipped:
        _log.info("%s: skipped %s", source, ", ".join(f"{n} tensors of the {what}" for what, n in skipped.items()))
    return tensors


def to_pytorchvideo(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our tensors (as `fast_pathway_tensors` gives them) -> {pytorchvideo name: array in torch layout}."""
    out = {}
    for name, value in tensors.items():
        mapped = KEYS.to_hf(name)
        if mapped is None:
            raise KeyError(f"tensor {name} has no row in the SlowFast key-mapping table")
        out[mapped[0]] = np.ascontiguousarray(mapped[1].save(np.asarray(value)))
    return out


def read_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> Mapping[str, Any]:
    """The state dict of a pytorchvideo checkpoint file (its "model_state", or the file's dict itself).

    Loaded once with torch.load(weights_only=True), which reads tensors, dicts,
    lists, strings and numbers (what PySlowFast's checkpoints hold: model_state,
    optimizer_state, epoch, the config as YAML text) and runs no code. A file
    that pickles other Python objects needs `trust_pickle` (weights_only=False),
    which can run code the file holds: only for a file from a source you trust.
    Raises FileNotFoundError (checked before torch is imported), ModuleNotFoundError
    without torch, or WeightsError naming the file for one torch cannot read or without
    a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):  # before torch is imported: a wrong path is named even without it
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(str(e))
        if "Unsupported global" in reason:  # a pickle of objects the weights-only reader does not allow
            raise WeightsError(path, [
                f"holds Python objects beyond tensors, which torch.load(weights_only=True) refuses ({reason}); "
                "if the file comes from a source you trust, convert with --trust-pickle"]) from None
        raise WeightsError(path, [f"not a PyTorch checkpoint ({reason})"]) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise WeightsError(path, [f"not a readable PyTorch checkpoint ({type(e).__name__}: {e})"]) from None
    state = checkpoint.get(STATE_KEY, checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(hasattr(v, "shape") for v in state.values()):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise WeightsError(path, [f"holds no state dict: expected a dict with '{STATE_KEY}' (pytorchvideo's "
                                  f"SLOWFAST_8x8_R50.pyth) or a dict of tensors; found {found}"])
    return state


def _unpickling_reason(message: str) -> str:
    """The line of torch's weights-only message that says what it met (e.g. "Unsupported global:
    GLOBAL numpy...", "Unsupported operand 110" for bytes that are no pickle), else the first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    found = next((line[line.index("Unsupported"):] for line in lines if "Unsupported" in line),
                 lines[0] if lines else "")
    return found.split(" was not an allowed global")[0][:200] or "unreadable"


def convert(checkpoint: str | os.PathLike, out: str | os.PathLike, *, trust_pickle: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
    """Write the fast pathway's weights of `checkpoint` to the safetensors file `out`.

    Written atomically (workdir.write_bytes). Returns {"out",
    "tensors", "parameters", "skipped"}. Raises FileExistsError for an existing
    `out` without `overwrite`, and what `read_checkpoint` and
    `fast_pathway_tensors` raise; nothing is written then.
    """
    from safetensors.numpy import save

    checkpoint, out = os.fspath(checkpoint), os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
    state = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    tensors = fast_pathway_tensors(state, checkpoint)
    os.makedirs(os.path.dirname(workdir_lib.absolute(out)), exist_ok=True)
    workdir_lib.write_bytes(out, save(tensors, metadata={"format": "w2s_vqa.slowfast_fast_pathway",
                                                         "source": os.path.basename(checkpoint),
                                                         "batch_norm_eps": repr(slowfast.BN_EPS)}))
    return {"out": workdir_lib.absolute(out), "tensors": len(tensors),
            "parameters": int(sum(t.size for t in tensors.values())),
            "skipped": sum(1 for key in state if _unused(key) is not None)}
