"""w2s-vqa-torch: the PyTorch side of w2s-vqa alone (TorchScorer on an export), without JAX.

    pip install ./torch_scorer        # from a clone of the repository

installs torch, transformers and the few modules of the w2s_vqa package that
w2s_vqa.convert.torch_scorer imports, read from the package folder beside this one
(`..`), so there is one copy of the code. It provides the package `w2s_vqa` in part:
install it in an environment of its own, not beside the full w2s-vqa (which holds
TorchScorer too). tests/convert/test_torch_install.py builds this wheel and scores
videos from its files alone with JAX made unimportable.
"""

import os

from setuptools import setup

# Every module TorchScorer imports, at import time or when it scores (each package's
# __init__.py comes with its modules). A module added to that import surface belongs here;
# the test above fails otherwise.
MODULES = [
    "w2s_vqa.config.schema",  # the defaults of the decoding caps (ml_collections, no JAX)
    "w2s_vqa.config.files",  # the config package's face imports it
    "w2s_vqa.prompt",
    "w2s_vqa.models.config",
    "w2s_vqa.models.tiny_tokenizer",
    "w2s_vqa.models.llava_qwen_config",
    "w2s_vqa.store.listing",  # a folder of videos, listed as the CLI lists it
    "w2s_vqa.store.settings",
    "w2s_vqa.video.decode",
    "w2s_vqa.video.encode",
    "w2s_vqa.video.frames",
    "w2s_vqa.video.media",
    "w2s_vqa.video.motion",
    "w2s_vqa.video.sample",
    "w2s_vqa.convert.anchor_scores",
    "w2s_vqa.convert.export_files",
    "w2s_vqa.convert.torch_scorer",
    "w2s_vqa.convert.video_inputs",
]

# The versions the main distribution pins, where it pins them (../setup.py).
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "transformers==5.23.0",
    "safetensors>=0.6",
    "tokenizers>=0.22",
    "numpy>=2.0",
    "scipy>=1.13",
    "pandas>=2.2",
    "pillow>=10",
    "av==18.1.0",
    "ml-collections>=1.1",
]

if __name__ == "__main__":
    setup(
        name="w2s-vqa-torch",
        version="0.1.0",
        description="The PyTorch side of w2s-vqa: TorchScorer on an exported student, without JAX",
        py_modules=MODULES,
        package_dir={"": os.path.relpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))},
        python_requires=">=3.11",
        install_requires=INSTALL_REQUIRES,
    )
