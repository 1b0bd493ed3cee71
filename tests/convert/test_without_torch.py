"""The PyTorch-side verbs in an environment without PyTorch: one line and exit status 2."""

import subprocess
import sys

import pytest

from w2s_vqa.cli import TORCH_INSTALL, missing_torch

# Runs the CLI with the named modules unimportable (None in sys.modules makes `import torch`
# raise ModuleNotFoundError, as an environment without the package does).
WITHOUT = ("import sys\n"
           "for name in sys.argv.pop(1).split(','):\n"
           "    sys.modules[name] = None\n"
           "from w2s_vqa.cli import main\n"
           "sys.exit(main())\n")


def w2s_without(modules, *args, cwd):
    return subprocess.run([sys.executable, "-c", WITHOUT, ",".join(modules), *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


NEEDS = f"needs PyTorch and transformers ({TORCH_INSTALL})"


@pytest.mark.parametrize("missing", [("torch",), ("transformers",)])
def test_check_parity_without_torch_is_one_line(tmp_path, missing):
    done = w2s_without(missing, "check-parity", "--hf", str(tmp_path), cwd=tmp_path)
    # 2, the status of bad input, not 1, which says the parity check ran and failed.
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"w2s-vqa check-parity: error: {NEEDS}"], done.stderr
    assert "Traceback" not in done.stderr


def test_convert_slowfast_names_a_missing_file_first_then_torch(tmp_path):
    out = str(tmp_path / "fast.safetensors")
    missing = w2s_without(("torch",), "convert-slowfast", "--checkpoint", str(tmp_path / "nope.pyth"), "--out", out,
                          cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"w2s-vqa convert-slowfast: error: {tmp_path / 'nope.pyth'}: no such checkpoint file"], missing.stderr
    (tmp_path / "model.pyth").write_bytes(b"not read without torch")
    done = w2s_without(("torch",), "convert-slowfast", "--checkpoint", str(tmp_path / "model.pyth"), "--out", out,
                       cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"w2s-vqa convert-slowfast: error: {NEEDS}"], done.stderr
    assert not (tmp_path / "fast.safetensors").exists()


def test_only_torch_and_transformers_are_explained():
    assert missing_torch(ModuleNotFoundError("No module named 'torch.nn'", name="torch.nn")) == NEEDS
    # Any other missing module is a broken install, not ours to explain: its traceback stays.
    assert missing_torch(ModuleNotFoundError("No module named 'scipy'", name="scipy")) is None
    assert missing_torch(ModuleNotFoundError("No module named 'torchvision'", name="torchvision")) is None
