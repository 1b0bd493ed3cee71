"""Import from and export to Hugging Face directories.

A transformers save_pretrained directory goes through our importer and our
exporter and comes back bit for bit; transformers loads our export with
nothing missing or unexpected; the PyTorch scorer on the export gives our P;
a broken directory gets one error that lists every problem.
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from transformers import LlavaOnevisionForConditionalGeneration

from tests.convert import hf_reference as ref
from w2s_vqa import prompt
from w2s_vqa.models import config as config_lib
from w2s_vqa.convert import export_files, hf
from w2s_vqa.models import stack, student
from w2s_vqa.convert.torch_scorer import TorchScorer


def saved_tensors(path):
    out = {}
    for name in os.listdir(path):
        if name.startswith("model") and name.endswith(".safetensors"):
            out.update(load_file(os.path.join(path, name)))
    return out


# Scanned layers: each layer's tensor is stacked into its parameter on import, split on export.
@pytest.mark.parametrize("tied,shard_bytes,scan", [(False, hf.MAX_SHARD_BYTES, False), (True, 20_000, False),
                                                   (False, 20_000, True)])
def test_round_trip_is_bit_identical(tmp_path, tied, shard_bytes, scan):
    base = config_lib.preset("tiny")
    cfg = base.replace(text=config_lib.TextConfig(**{**base.text.__dict__, "tie_word_embeddings": tied}))
    source = ref.save_hf(ref.hf_model(cfg), tmp_path / "hf")
    ours = hf.load_student(source, num_frames=cfg.num_frames, num_motion_chunks=cfg.num_motion_chunks,
                           scan_layers=scan)
    assert ours.cfg.scan_layers == scan and stack.layout_of(hf._flat_params(ours)) == ("stacked" if scan else "unrolled")
    written = hf.save_student(ours, tmp_path / "out", tokenizer_dir=ref.TINY_TOKENIZER, max_shard_bytes=shard_bytes)
    if shard_bytes < hf.MAX_SHARD_BYTES:
        assert export_files.WEIGHTS_INDEX in written and sum(n.endswith(".safetensors") for n in written) > 2

    before, after = saved_tensors(source), saved_tensors(tmp_path / "out")
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and after[name].shape == tensor.shape, name
        assert after[name].tobytes() == tensor.tobytes(), name

    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # Every file of the export, weights included, gets the mode the umask gives a new file:
    # colleagues on a shared disk can read the weights (safetensors alone writes 0600).
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_export_refuses_non_empty_directory(tmp_path):
    ours = student.create(config_lib.preset("tiny"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="--overwrite"):
        hf.save_student(ours, tmp_path / "out", tokenizer_dir=ref.TINY_TOKENIZER)
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"
    hf.save_student(ours, tmp_path / "out", tokenizer_dir=ref.TINY_TOKENIZER, overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()


def test_preference_matches_torch_scorer_with_motion(tmp_path):
    cfg = config_lib.preset("tiny")
    ours = student.create(cfg, seed=3)
    hf.save_student(ours, tmp_path / "export", tokenizer_dir=ref.TINY_TOKENIZER)
    reloaded = hf.load_student(tmp_path / "export")
    assert reloaded.cfg.num_motion_chunks == cfg.num_motion_chunks and reloaded.cfg.num_frames == cfg.num_frames

    rng = np.random.default_rng(0)
    pixels = ref.pixels(rng, 3, 2, cfg.num_frames, 32, 32, 3)
    motion = rng.normal(size=(3, 2, cfg.num_motion_chunks, cfg.motion_dim)).astype(np.float32)
    frame_mask = np.ones((3, 2, cfg.num_frames), bool)
    frame_mask[1, 0, 2:] = False  # a short first video in pair 1
    motion_mask = np.ones((3, 2, cfg.num_motion_chunks), bool)
    motion_mask[2, 1, 1:] = False

    tokenizer = prompt.load_tokenizer(ref.TINY_TOKENIZER)
    pp = prompt.build_pair_prompt(tokenizer, video_token_id=cfg.video_token_index,
                                  tokens_per_video=cfg.tokens_per_video)
    ids = jnp.asarray(np.repeat(pp.input_ids[None], 3, axis=0))
    mine = np.asarray(ours.preference(pp.level_token_ids, ids, None, jnp.asarray(pixels), jnp.asarray(motion),
                                      jnp.asarray(frame_mask), jnp.asarray(motion_mask)))
    scorer = TorchScorer(tmp_path / "export")
    theirs = scorer.preference(pixels, motion, frame_mask, motion_mask)
    assert np.max(np.abs(mine - theirs)) <= 1e-5
    # The motion features and the masks reach the answer: without them P moves.
    assert np.max(np.abs(theirs - scorer.preference(pixels, np.zeros_like(motion), frame_mask, motion_mask))) > 1e-4
    assert np.max(np.abs(theirs - scorer.preference(pixels, motion))) > 1e-4


def test_motion_projector_is_initialized_when_absent(tmp_path):
    cfg = config_lib.preset("tiny")
    source = ref.save_hf(ref.hf_model(cfg), tmp_path / "hf")
    a = hf.load_student(source, num_frames=4, num_motion_chunks=4, seed=1)
    b = hf.load_student(source, num_frames=4, num_motion_chunks=4, seed=2)
    ka, kb = a.motion_projector.linear_1.kernel[...], b.motion_projector.linear_1.kernel[...]
    assert ka.shape == (cfg.motion_dim, cfg.text.hidden_size) and float(jnp.abs(ka).max()) > 0
    assert not np.array_equal(np.asarray(ka), np.asarray(kb))


@pytest.fixture
def sharded_checkpoint(tmp_path):
    cfg = config_lib.preset("tiny")
    ours = student.create(cfg)
    path = tmp_path / "sharded"
    hf.save_student(ours, path, tokenizer_dir=ref.TINY_TOKENIZER, max_shard_bytes=20_000)
    return path


def test_bad_checkpoint_reports_every_problem_at_once(sharded_checkpoint):
    path = sharded_checkpoint
    index = json.loads((path / export_files.WEIGHTS_INDEX).read_text())
    shards = sorted(set(index["weight_map"].values()))
    os.remove(path / shards[-1])  # a missing shard
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["LlavaForConditionalGeneration"]  # a wrong architecture
    config["model_type"] = "llava"
    (path / "config.json").write_text(json.dumps(config))
    first = load_file(path / shards[0])  # a mis-shaped tensor
    victim = sorted(first)[0]
    first[victim] = np.zeros((3, 3), np.float32)
    save_file(first, path / shards[0], metadata={"format": "pt"})

    with pytest.raises(hf.CheckpointError) as error:
        hf.load_student(path)
    message = str(error.value)
    assert f"missing shard {shards[-1]}" in message
    assert "expected a LLaVA-OneVision checkpoint" in message
    assert f"mis-shaped tensor {victim}" in message
    assert "missing tensor" in message  # what the lost shard held is named too
    assert len(error.value.problems) >= 4


def test_a_scanned_import_names_each_missing_layer_tensor(tmp_path):
    path = tmp_path / "one"
    hf.save_student(student.create(config_lib.preset("tiny")), path, tokenizer_dir=ref.TINY_TOKENIZER)
    tensors = load_file(path / export_files.WEIGHTS_FILE)
    gone = "language_model.model.layers.1.mlp.up_proj.weight"
    del tensors[gone]
    save_file(tensors, path / export_files.WEIGHTS_FILE, metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError) as error:
        hf.load_student(path, scan_layers=True)
    assert error.value.problems == [f"missing tensor {gone} (ours: language_model.layers.1.mlp.up_proj.kernel)"]


def test_hub_layout_names_load(tmp_path):
    """Public checkpoints name SigLIP tensors vision_tower.vision_model.*: the same weights load."""
    cfg = config_lib.preset("tiny")
    source = ref.save_hf(ref.hf_model(cfg), tmp_path / "hf")
    hub = tmp_path / "hub"
    shutil.copytree(source, hub)
    tensors = load_file(hub / "model.safetensors")
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
               for k, v in tensors.items()}
    assert renamed != tensors
    save_file(renamed, hub / "model.safetensors", metadata={"format": "pt"})
    a = hf.load_student(source, num_frames=4, num_motion_chunks=4)
    b = hf.load_student(hub, num_frames=4, num_motion_chunks=4)
    for (pa, va), (pb, vb) in zip(hf._flat_params(a).items(), hf._flat_params(b).items()):
        if not pa.startswith("motion_projector"):
            assert pa == pb and np.array_equal(np.asarray(va[...]), np.asarray(vb[...])), pa


def test_import_into_a_mesh_shards_parameters(tmp_path):
    import jax

    from w2s_vqa import sharding

    cfg = config_lib.preset("tiny")
    source = ref.save_hf(ref.hf_model(cfg), tmp_path / "hf")
    mesh = sharding.make_mesh((1, 2, 4))
    ours = hf.load_student(source, num_frames=4, num_motion_chunks=4, mesh=mesh)
    q = ours.language_model.layers[0].self_attn.q_proj.kernel[...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (32, 16)
    plain = hf.load_student(source, num_frames=4, num_motion_chunks=4)
    np.testing.assert_array_equal(np.asarray(q), np.asarray(plain.language_model.layers[0].self_attn.q_proj.kernel[...]))


def test_export_over_its_own_source_keeps_the_tokenizer(tmp_path, capsys):
    """`export --hf T --out T --overwrite` reads T's tokenizer while it replaces T."""
    from w2s_vqa import cli

    target = tmp_path / "hf"
    assert cli.main(["export", "--preset", "tiny", "--out", str(target)]) == 0
    tokenizer = (target / "tokenizer.json").read_bytes()
    capsys.readouterr()
    assert cli.main(["export", "--hf", str(target), "--out", str(target), "--overwrite"]) == 0
    assert (target / "tokenizer.json").read_bytes() == tokenizer
    assert {"config.json", "model.safetensors", "w2s_vqa.json"} <= {p.name for p in target.iterdir()}
    # The tiny tokenizer has no vocab.json / merges.txt: the verb says so instead of dropping them silently.
    assert "vocab.json" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no staging directory left behind


def test_a_failed_export_leaves_the_old_directory_intact(tmp_path, monkeypatch):
    ours = student.create(config_lib.preset("tiny"))
    hf.save_student(ours, tmp_path / "out", tokenizer_dir=ref.TINY_TOKENIZER)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}

    def fail(model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf, "export_tensors", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        hf.save_student(ours, tmp_path / "out", tokenizer_dir=ref.TINY_TOKENIZER, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_truncated_weight_file_is_one_checkpoint_error_for_every_verb(tmp_path, capsys):
    from w2s_vqa import cli

    ours = student.create(config_lib.preset("tiny"))
    hf.save_student(ours, tmp_path / "ok", tokenizer_dir=ref.TINY_TOKENIZER)
    shutil.copytree(tmp_path / "ok", tmp_path / "broken")
    data = (tmp_path / "ok" / export_files.WEIGHTS_FILE).read_bytes()
    (tmp_path / "broken" / export_files.WEIGHTS_FILE).write_bytes(data[:1000])
    with pytest.raises(hf.CheckpointError, match="model.safetensors: not a readable safetensors file"):
        hf.load_student(tmp_path / "broken")
    capsys.readouterr()
    for verb in (["export", "--hf", str(tmp_path / "broken"), "--out", str(tmp_path / "x")],
                 ["check-parity", "--hf", str(tmp_path / "broken")],
                 ["export", "--hf", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]):
        assert cli.main(verb) == 2
    err = capsys.readouterr().err
    assert err.count("not a readable safetensors file") == 2 and "no such directory" in err


def test_a_checkpoint_with_many_problems_is_one_line_through_the_verb(tmp_path, capsys):
    """Every problem stays in `.problems`; the message is one line naming the directory, the
    count, the first hf.MAX_PROBLEMS_NAMED problems and how many more (the CLI prints it whole)."""
    from w2s_vqa import cli

    path = tmp_path / "one"
    hf.save_student(student.create(config_lib.preset("tiny")), path, tokenizer_dir=ref.TINY_TOKENIZER)
    tensors = load_file(path / export_files.WEIGHTS_FILE)
    gone = sorted(k for k in tensors if k.startswith("language_model."))
    assert len(gone) > hf.MAX_PROBLEMS_NAMED
    save_file({k: v for k, v in tensors.items() if k not in gone}, path / export_files.WEIGHTS_FILE,
              metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError) as error:
        hf.load_student(path)
    assert len(error.value.problems) == len(gone)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: {len(gone)} problem(s): missing tensor ")
    assert message.endswith(f"; and {len(gone) - hf.MAX_PROBLEMS_NAMED} more")
    assert message.count("missing tensor") == hf.MAX_PROBLEMS_NAMED
    assert cli.main(["export", "--hf", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"w2s-vqa export: error: {path}: {len(gone)} problem(s)")
