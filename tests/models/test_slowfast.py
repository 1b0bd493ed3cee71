"""SlowFast-R50's fast pathway against pytorchvideo's own model, and the checkpoint converter.

The reference is `pytorchvideo.models.slowfast.create_slowfast(model_depth=50)`
with random weights and random BatchNorm statistics (so that folding them is
tested), run in float32 on [slow, fast] inputs as the authors' extractor runs it:
slow = 8 frames of the 32 at torch.linspace(0, 31, 8), `blocks[0..4]`, then the
fast tensor averaged (AdaptiveAvgPool3d(1), the head's `output_pool`; at 224x224
also through `blocks[5].pool[1]`, the AvgPool3d(32, 7, 7) the authors apply first).

pytorchvideo.models imports torchvision.ops.RoIAlign (for its detection head),
and torchvision from the registry does not load against the CPU torch build.
SlowFast never calls RoIAlign, so a stand-in torchvision.ops lives in
sys.modules while pytorchvideo is imported, and is removed afterwards.
"""

import importlib.machinery
import json
import os
import sys
import types

import jax
import numpy as np
import pytest

from w2s_vqa.convert import slowfast as convert_lib
from w2s_vqa.models import slowfast
from w2s_vqa.sharding import make_mesh

torch = pytest.importorskip("torch", reason="the parity reference is PyTorch (pip install -e '.[test]')")


def _import_create_slowfast():
    try:
        import torchvision.ops  # noqa: F401  (a working torchvision needs no stand-in)
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_ins = {}
        for name in ("torchvision", "torchvision.ops"):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            stand_ins[name] = module
        stand_ins["torchvision.ops"].RoIAlign = type("RoIAlign", (), {})  # never instantiated by SlowFast
        stand_ins["torchvision"].ops = stand_ins["torchvision.ops"]
        sys.modules.update(stand_ins)
        try:
            from pytorchvideo.models.slowfast import create_slowfast
        finally:
            for name in stand_ins:
                sys.modules.pop(name, None)
        return create_slowfast
    from pytorchvideo.models.slowfast import create_slowfast

    return create_slowfast


pytest.importorskip("pytorchvideo", reason="the parity reference is pytorchvideo (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def reference():
    """pytorchvideo's SlowFast-R50 (the hub's slowfast_r50 architecture), random weights and BN statistics."""
    torch.manual_seed(0)
    model = _import_create_slowfast()(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1)).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                c = module.num_features
                # Smaller scales where a residual branch ends keep features of order 1, as trained
                # ResNets have them, so that the 1e-4 tolerance below is one in absolute terms too.
                low, high = (0.3, 0.6) if name.endswith(("norm_c", "branch1_norm")) else (0.5, 1.5)
                module.weight.copy_(low + (high - low) * torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
    return model


@pytest.fixture(scope="module")
def weights_file(reference, tmp_path_factory):
    """The reference's checkpoint as the hub's .pyth holds it, converted by our converter."""
    folder = tmp_path_factory.mktemp("slowfast")
    checkpoint = folder / "SLOWFAST_8x8_R50.pyth"
    torch.save({"model_state": reference.state_dict(), "epoch": 196, "cfg": "MODEL:\n  ARCH: slowfast\n"},
               checkpoint)
    out = folder / "fast.safetensors"
    result = convert_lib.convert(checkpoint, out)
    assert result["tensors"] == len(slowfast.expected_tensors())
    return out


def _pack_pathways(chunks: np.ndarray) -> list:
    """uint8 [N, T, H, W, 3] -> [slow, fast] normalized torch inputs, as the authors' extractor packs them."""
    x = torch.from_numpy(chunks).float().div(255.0).sub(0.45).div(0.225).permute(0, 4, 1, 2, 3)
    slow = torch.index_select(x, 2, torch.linspace(0, x.shape[2] - 1, x.shape[2] // 4).long())
    return [slow, x]


def _their_fast_feature(model, pathways: list) -> np.ndarray:
    x = [p.clone() for p in pathways]  # MultiPathWayWithFuse writes into the list it gets
    with torch.no_grad():
        for block in model.blocks[:5]:
            x = block(x)
        return model.blocks[6].output_pool(x[1]).flatten(1).numpy()


def _chunks(size: int, seed: int) -> np.ndarray:
    """Two chunks: random frames, and 20 moving frames padded with the last one (a clip's end)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    base = rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)
    moving = np.stack([base[:, 2 * t:2 * t + size] for t in range(20)])
    padded = np.concatenate([moving, np.repeat(moving[-1:], 12, axis=0)])
    return np.stack([noise, padded])


def test_fast_pathway_equals_pytorchvideo(reference, weights_file):
    chunks = _chunks(64, seed=0)
    extractor = slowfast.Extractor(slowfast.load(weights_file), max_batch=2)
    ours = extractor(chunks)
    pathways = _pack_pathways(chunks)
    theirs = _their_fast_feature(reference, pathways)
    assert ours.shape == theirs.shape == (2, 256)
    assert np.abs(theirs).max() < 10 and np.abs(theirs[0] - theirs[1]).max() > 1e-2  # two different features
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)

    # The claim behind the port: the slow input never reaches the fast feature.
    other_slow = [torch.randn_like(pathways[0]) * 3, pathways[1]]
    np.testing.assert_array_equal(_their_fast_feature(reference, other_slow), theirs)

    # Sharded over the data axes of 8 devices, the same numbers.
    mesh = make_mesh((8, 1, 1), jax.devices()[:8])
    sharded = slowfast.Extractor(slowfast.load(weights_file), max_batch=2, mesh=mesh)
    assert sharded.batch_sizes == [8]
    np.testing.assert_allclose(sharded(chunks), ours, rtol=1e-5, atol=1e-5)


def test_both_lowerings_equal_pytorchvideo(reference, weights_file):
    """The "stacked" lowering (GPU and TPU backends) against pytorchvideo too: the test above runs
    the CPU's default, "taps". Same tolerance as above: float32 sums in another order."""
    assert slowfast.default_lowering("cpu") == "taps" and slowfast.default_lowering("gpu") == "stacked"
    chunks = _chunks(64, seed=2)
    theirs = _their_fast_feature(reference, _pack_pathways(chunks))
    model = slowfast.load(weights_file)
    for lowering in slowfast.LOWERINGS:
        ours = slowfast.Extractor(model, max_batch=2, lowering=lowering)(chunks)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4, err_msg=lowering)
    with pytest.raises(ValueError, match="lowering must be one of taps, stacked, not 'conv3d'"):
        slowfast.Extractor(model, lowering="conv3d")


def test_authors_input_size(reference, weights_file):
    """One 32 x 224 x 224 chunk, pooled as the authors pool: AvgPool3d(32, 7, 7), then adaptive.

    Only pytorchvideo's fast-pathway modules run here (`multipathway_blocks[1]` of
    blocks 0..4): the test above shows the slow pathway cannot change the result.
    """
    chunk = _chunks(224, seed=1)[1:]
    ours = slowfast.Extractor(slowfast.load(weights_file), max_batch=1)(chunk)
    with torch.no_grad():
        x = _pack_pathways(chunk)[1]
        for block in reference.blocks[:5]:
            x = block.multipathway_blocks[1](x)
        assert tuple(x.shape) == (1, 256, 32, 7, 7)
        theirs = reference.blocks[6].output_pool(reference.blocks[5].pool[1](x)).flatten(1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_converter_round_trips_the_fast_pathway(reference):
    state = reference.state_dict()
    ours = convert_lib.fast_pathway_tensors(state)
    back = convert_lib.to_pytorchvideo(ours)
    fast = {k: v for k, v in state.items() if ".multipathway_blocks.1." in k and "num_batches_tracked" not in k}
    assert sorted(back) == sorted(fast)
    for key, value in fast.items():
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    # Every other tensor is one the feature never reads: slow pathway, fusions, head, counters.
    assert all(convert_lib._unused(k) for k in set(state) - set(fast))


def test_convert_slowfast_verb(weights_file, tmp_path, capsys):
    from w2s_vqa import cli

    checkpoint = weights_file.parent / "SLOWFAST_8x8_R50.pyth"
    out = tmp_path / "fast.safetensors"
    assert cli.main(["convert-slowfast", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["out"] == str(out) and result["tensors"] == len(slowfast.expected_tensors())
    from safetensors.numpy import load_file

    written, expected = load_file(out), load_file(weights_file)
    assert sorted(written) == sorted(expected)
    assert all(np.array_equal(written[k], expected[k]) for k in expected)
    # An existing file is kept unless --overwrite: the error names it, exit status 2.
    assert cli.main(["convert-slowfast", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert f"{out}: exists" in capsys.readouterr().err


def test_converter_reports_a_broken_checkpoint_in_one_error(reference, tmp_path):
    state = dict(reference.state_dict())
    del state["blocks.2.multipathway_blocks.1.res_blocks.3.branch2.conv_b.weight"]
    state["blocks.3.multipathway_blocks.1.res_blocks.0.branch2.norm_a.running_var"] = torch.ones(5)
    state["blocks.1.multipathway_blocks.1.res_blocks.9.branch2.conv_a.weight"] = torch.ones(8, 32, 3, 1, 1)
    state["blocks.0.multipathway_blocks.1.extra.weight"] = torch.ones(3)
    path = tmp_path / "broken.pyth"
    torch.save({"model_state": state}, path)
    with pytest.raises(slowfast.WeightsError) as info:
        convert_lib.convert(path, tmp_path / "out.safetensors")
    message = str(info.value)
    assert str(path) in message and "4 problem(s)" in message and "\n" not in message  # one line
    assert "missing tensor blocks.2.multipathway_blocks.1.res_blocks.3.branch2.conv_b.weight" in message
    assert "mis-shaped tensor blocks.3.multipathway_blocks.1.res_blocks.0.branch2.norm_a.running_var: [5]" in message
    assert "res_blocks.9.branch2.conv_a.weight (maps to stage1.9.conv_a.kernel" in message
    assert "unexpected tensor blocks.0.multipathway_blocks.1.extra.weight" in message
    assert not (tmp_path / "out.safetensors").exists()


class _Opaque:
    """An object torch.load(weights_only=True) refuses to unpickle."""


def test_checkpoint_with_python_objects_needs_trust(reference, tmp_path):
    path = tmp_path / "pickled.pyth"
    torch.save({"model_state": reference.state_dict(), "extra": _Opaque()}, path)
    with pytest.raises(slowfast.WeightsError, match="Unsupported global.*_Opaque.*--trust-pickle"):
        convert_lib.read_checkpoint(path)
    assert len(convert_lib.read_checkpoint(path, trust_pickle=True)) == len(reference.state_dict())
    (tmp_path / "text.pyth").write_text("not a checkpoint")
    for trust in (False, True):
        with pytest.raises(slowfast.WeightsError, match="not a PyTorch checkpoint"):
            convert_lib.read_checkpoint(tmp_path / "text.pyth", trust_pickle=trust)
    with pytest.raises(FileNotFoundError):
        convert_lib.read_checkpoint(tmp_path / "absent.pyth")


def test_loader_reports_every_problem(weights_file, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(weights_file)
    tensors.pop("stage4.2.conv_c.kernel")
    tensors["stem.kernel"] = tensors["stem.kernel"][:, :, :, :, :4].copy()
    tensors["stage9.0.conv_a.kernel"] = np.zeros(3, np.float32)
    save_file(tensors, tmp_path / "broken.safetensors")
    with pytest.raises(slowfast.WeightsError) as info:
        slowfast.load(tmp_path / "broken.safetensors")
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "missing tensor stage4.2.conv_c.kernel" in message
    assert "mis-shaped tensor stem.kernel: [5, 7, 7, 3, 4], expected [5, 7, 7, 3, 8]" in message
    assert "unexpected tensor stage9.0.conv_a.kernel" in message

    tensors = load_file(weights_file)
    tensors["stage2.1.conv_b.norm.running_var"][0] = np.nan
    save_file(tensors, tmp_path / "nan.safetensors")
    with pytest.raises(slowfast.WeightsError, match="stage2.1.conv_b.norm.running_var: NaN"):
        slowfast.load(tmp_path / "nan.safetensors")
    with pytest.raises(slowfast.WeightsError, match="no such file"):
        slowfast.check_weights(tmp_path / "absent.safetensors")
    assert os.path.exists(weights_file)
