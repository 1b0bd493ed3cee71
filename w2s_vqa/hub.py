"""Model directories named by Hugging Face hub id: `org/name` or `org/name@revision`.

`model.hf_dir`, `model.tokenizer` and `--hf` (export, check-parity) take either a
directory or a hub id. `resolve` turns a hub id into the local
snapshot directory that `huggingface_hub.snapshot_download` fills (HF_HOME / HF_HUB_CACHE
say where, HF_HUB_OFFLINE=1 reads the cache only, HF_TOKEN or `hf auth login` open private
and gated repos), fetching only the files the student reads (`ALLOW_PATTERNS`). A bucket
directory (gs://..., any URL etils.epath serves) is copied, the same files only, to a local
cache (`remote_cache_dir()`; w2s_vqa.workdir.local_copy: downloaded again only when an
object changed), because transformers' tokenizer and safetensors read local files. A local
directory or a path that exists is returned unchanged.

Several processes: every process resolves for itself, before jax.distributed joins them.
On a pod each host keeps its own cache (its boot disk, or a shared HF_HOME), and the
processes of one host share theirs: huggingface_hub locks each file while it downloads
(<cache>/.locks), so a host fetches every file once and its other processes wait for it.
No barrier is needed, and a host never reads a half-written file.
"""

from __future__ import annotations

import os
import re

# What the student reads from a LLaVA-OneVision directory (w2s_vqa.convert.hf,
# convert.export_files, convert.llava_next, prompt.load_tokenizer): config.json, the
# safetensors weights and their index, the motion projector, w2s_vqa.json, the tokenizer
# (tokenizer.json, tokenizer_config.json, special_tokens_map.json, added_tokens.json,
# vocab.json, merges.txt) and the processor files (*_config.json, chat_template.jinja).
# Not: PyTorch .bin / .pt duplicates, ONNX, GGUF, images of the model card.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "merges.txt", "*.jinja")

# org/name or org/name@revision (a branch, a tag or a commit hash), as the hub spells repo ids.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+)(?:@(?P<revision>[A-Za-z0-9._/-]+))?$")


def parse_hub_id(value: str) -> tuple[str, str | None] | None:
    """(repo_id, revision or None) when `value` reads as a hub id and is not a path that
    exists here nor a URL; None otherwise. A relative path that does not exist and has the
    form org/name reads as a hub id (as transformers' from_pretrained reads it)."""
    if not value or "://" in value or value.startswith(("/", ".", "~")) or os.path.exists(value):
        return None
    match = _HUB_ID.match(value)
    if not match:
        return None
    return match["repo"], match["revision"]


def resolve(value: str, *, what: str = "model directory") -> str:
    """The local directory for `value`: a hub id is downloaded (or found in the cache) and
    its snapshot directory returned; anything else comes back unchanged.

    `what` names the setting in error messages (e.g. "model.hf_dir", "--hf"). Raises
    ValueError, one line naming the repo: the repo does not exist (or is private and no
    token opens it), the revision does not exist, or with HF_HUB_OFFLINE=1 (or no network)
    the cache lacks the snapshot; ImportError naming the package when huggingface_hub is
    not installed.
    """
    if value and "://" in value:
        return _bucket_copy(value, what)
    parsed = parse_hub_id(value)
    if parsed is None:
        return value
    repo_id, revision = parsed
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError as e:
        raise ImportError(f"{what} {value!r} is a Hugging Face hub id: pip install huggingface_hub") from e
    name = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=list(ALLOW_PATTERNS))
    except errors.RevisionNotFoundError:
        raise ValueError(f"{what}: the Hugging Face hub repo {repo_id} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:  # GatedRepoError included
        raise ValueError(f"{what}: {value!r} is not a local directory, and the Hugging Face hub has no model repo "
                         f"{repo_id} that this machine may read (private or gated: set HF_TOKEN or run "
                         f"`hf auth login`)") from None
    except errors.LocalEntryNotFoundError:
        offline = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise ValueError(f"{what}: {value!r} is not a local directory, and the Hugging Face cache "
                         f"{constants.HF_HUB_CACHE} holds no complete snapshot of {name} ({offline}): "
                         f"download it on a machine with network or give a directory") from None


def remote_cache_dir() -> str:
    """Where bucket model directories are copied: $W2S_VQA_REMOTE_CACHE, else
    $XDG_CACHE_HOME/w2s-vqa/models (~/.cache/w2s-vqa/models by the XDG default)."""
    if os.environ.get("W2S_VQA_REMOTE_CACHE"):
        return os.environ["W2S_VQA_REMOTE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "w2s-vqa", "models")


def _bucket_copy(url: str, what: str) -> str:
    """The local copy of the model directory `url` (workdir.local_copy). The processes of a
    host share the copy: a file lock (filelock, which huggingface_hub brings) lets one
    download while the others wait, then find it complete. Raises FileNotFoundError naming
    `what` when `url` holds no model file, OSError when no file system serves its scheme."""
    import filelock

    from w2s_vqa import workdir

    root = remote_cache_dir()
    os.makedirs(root, exist_ok=True)
    with filelock.FileLock(os.path.join(root, ".lock")):
        try:
            return workdir.local_copy(url, root, patterns=ALLOW_PATTERNS)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{what}: {e}") from None
