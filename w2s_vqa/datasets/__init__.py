"""The ten evaluation sets as tensorflow-datasets builders, read by Grain and the scorer.

Importing this package registers the builders (w2s_vqa.datasets.builders), so that
`tfds.builder("konvid_1k")` and `tfds.data_source("konvid_1k/tiny", split="test")` find
them; it needs the `tfds` extra (`pip install 'w2s-vqa[tfds]'`: tensorflow-datasets
without TensorFlow). The parts:

    metadata   each set's own metadata file read into one table; the paper's lists
               (lists/NAME.csv, shipped in the package); which videos a config selects
    official_table  the table every reader returns, its errors and shared checks
    builders   one GeneratorBasedBuilder per set, examples made by the video store's
               own per-video path (store.prepare.video_records), ArrayRecord files
    source     TfdsVideoSource: a built set read through VideoStore's API, so the
               scorer and the pipeline read TFDS sets and stores alike
"""

try:
    import tensorflow_datasets  # noqa: F401
except ImportError as e:  # the package is an extra: name it instead of a bare ModuleNotFoundError
    raise ImportError("w2s_vqa.datasets needs tensorflow-datasets: pip install 'w2s-vqa[tfds]'") from e

from w2s_vqa.datasets.builders import (BUILDERS, CONFIGS, SPLIT, DatasetError, VqaConfig, build,  # noqa: E402
                                       builder, config_for)
from w2s_vqa.datasets.metadata import SETS, paper_list, select  # noqa: E402
from w2s_vqa.datasets.official_table import MetadataError, MissingVideosError  # noqa: E402
from w2s_vqa.datasets.source import SourceError, TfdsVideoSource  # noqa: E402

NAMES = tuple(BUILDERS)

__all__ = ["BUILDERS", "CONFIGS", "NAMES", "SETS", "SPLIT", "DatasetError", "MetadataError", "MissingVideosError",
           "SourceError", "TfdsVideoSource", "VqaConfig", "build", "builder", "config_for", "paper_list", "select"]
